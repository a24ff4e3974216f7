"""Rendering part-structured meshes without compiled extensions (plain PyTorch, CPU or CUDA).

Ground truth for evaluation (visible-part id maps, amodal part masks), and views of meshes for the
rest of the pipeline. See :mod:`.renderer` for the frame, scale and shading conventions. GLB files
with one node per part are read by :func:`partgen_models.assembly.load.load_parts`.
"""

from .rasterizer import Rasterized, rasterize
from .renderer import (
    Normalization,
    RenderCameras,
    RenderError,
    Rendering,
    RenderOptions,
    fit_normalization,
    gltf_to_zup,
    load_scene_parts,
    render_part_alone,
    render_parts,
)

__all__ = [
    "Normalization",
    "Rasterized",
    "RenderCameras",
    "RenderError",
    "RenderOptions",
    "Rendering",
    "fit_normalization",
    "gltf_to_zup",
    "load_scene_parts",
    "rasterize",
    "render_part_alone",
    "render_parts",
]
