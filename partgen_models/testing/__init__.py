"""Tiny, seeded, random checkpoints in the exact on-disk layout of the real ones.

Tests, smoke runs and golden-parity scripts load these through the real loaders. ``python -m
partgen_models.testing MODELS_DIR`` writes a whole tiny model set into a ComfyUI ``models/partgen``
folder (or any folder).
"""

from .tiny_models import (
    REAL_ZERO123PP_CONFIGS,
    TINY_ZERO123PP_CONFIGS,
    write_tiny_instantmesh_unet,
    write_tiny_models,
    write_tiny_zero123plus,
    write_zero123plus_folder,
)

__all__ = [
    "REAL_ZERO123PP_CONFIGS",
    "TINY_ZERO123PP_CONFIGS",
    "write_tiny_instantmesh_unet",
    "write_tiny_models",
    "write_tiny_zero123plus",
    "write_zero123plus_folder",
]
