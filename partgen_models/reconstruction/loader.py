"""Loading InstantMesh checkpoints (``instant_{mesh,nerf}_{base,large}.ckpt``).

Lightning files: the tensors sit under ``["state_dict"]`` with the prefix ``lrm_generator.``; other
keys (``lpips.*`` of training, ``source_camera``) are not part of the generator and are dropped, as
upstream's ``run.py``/``app.py`` do. Read with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..modules import build_on_meta, load_strict
from ..weights import WeightsError, load_state_dict
from .lrm import LargeReconstructionModel, LRMConfig, infer_config

PREFIX = "lrm_generator."
EXPECTED = "an InstantMesh checkpoint (instant_mesh_*.ckpt or instant_nerf_*.ckpt)"


def generator_state_dict(raw: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    state = {k[len(PREFIX):]: v for k, v in raw.items() if k.startswith(PREFIX) and "source_camera" not in k}
    if not state:
        raise WeightsError(f"{path} has no '{PREFIX}*' tensors: it is not {EXPECTED}")
    return state


def load_instantmesh(path: Path, dtype: torch.dtype = torch.float32) -> LargeReconstructionModel:
    """Build the LRM whose sizes the checkpoint's shapes say, and load it strictly (CPU, ``dtype``)."""
    path = Path(path)
    state = generator_state_dict(load_state_dict(path, EXPECTED, container_key="state_dict"), path)
    try:
        config: LRMConfig = infer_config(state)
    except (KeyError, IndexError) as error:
        raise WeightsError(f"{path} is not {EXPECTED}: tensor {error} is missing") from error
    model = build_on_meta(lambda: LargeReconstructionModel(config))
    return load_strict(model, state, path, EXPECTED, dtype)
