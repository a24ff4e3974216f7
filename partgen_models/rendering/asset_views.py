"""Views of an existing 3D asset for the PartGen pipeline: PartGen's "existing 3D asset" input.

PartGen (Sec. 3.1) segments and completes parts of a 3D asset the same way as of a generated object:
from its views at the multi-view model's cameras. This renders the asset at a layout's cameras with
Zero123++ v1.2's framing (:mod:`.renderer`) on white, plus the view at azimuth 0 as the input image
that segmentation and completion condition on, framed exactly as the other views (the same
normalisation), as :func:`partgen_models.evaluation.evaluate.prepare_sample` renders its objects.
That input view is then prepared as *PartGen Multi-View* prepares an uploaded image (crop to the
object, 85% of the side, 512 px), so the conditioning looks the same on both paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..checks import refuse_non_finite
from ..cameras import LAYOUTS
from ..multiview.preprocess import prepare_condition_images
from ..parts import Part
from ..views import MultiView
from .renderer import WHITE, PartsSource, RenderCameras, RenderError, RenderOptions, load_scene_parts, render_parts

# Faces drawn at most: the rasteriser's per-view setup holds ~1 KB a face (936 MB for 1M faces at
# 320 px, benchmarks/bench_memory.py), so 10M faces stay near 10 GB.
MAX_FACES = 10_000_000
INPUT_SIZE = 512  # Zero123++'s conditioning resolution (its feature extractors resize to 512 anyway)
_FOREGROUND_RATIO = 0.85  # InstantMesh's resize_foreground, as PartGen Multi-View prepares images


@dataclass(frozen=True)
class AssetViewOptions:
    """How to render an asset's views.

    layout: the view layout whose cameras and framing the views follow (``zero123pp_v12``: 6 views,
        FoV 30°, elevations 20/-10, what PartGen's models and InstantMesh expect).
    view_size: pixels per view; None uses the layout's (320).
    input_elevation_deg: elevation of the input view (azimuth 0, the view the layout's azimuths are
        relative to); 0 looks at the object's front (+Z in the glTF frame) level.
    render: shading and antialiasing. Supersampling 3x3 by default: generated views are antialiased,
        and hard staircase edges would read as texture to the segmenter.
    """

    layout: str = "zero123pp_v12"
    view_size: Optional[int] = None
    input_elevation_deg: float = 0.0
    render: RenderOptions = field(default_factory=lambda: RenderOptions(supersample=3))

    def __post_init__(self) -> None:
        refuse_non_finite(self, RenderError)
        if self.layout not in LAYOUTS:
            raise RenderError(f"unknown view layout {self.layout!r}; known: {', '.join(sorted(LAYOUTS))}")
        if self.view_size is not None and not 16 <= self.view_size <= 2048:
            raise RenderError(f"view_size must be within 16..2048 pixels, got {self.view_size}")
        if not -89.0 <= self.input_elevation_deg <= 89.0:
            raise RenderError(f"input_elevation_deg must be within -89..89, got {self.input_elevation_deg}")


def asset_parts(file: Optional[Union[str, Path]] = None, parts: Optional[Sequence[Part]] = None,
                mesh_parts: Optional[Sequence[Part]] = None) -> list[Part]:
    """The parts of exactly one source: a mesh file (GLB/glTF/OBJ), parts, or parts converted from a MESH."""
    given = [name for name, value in (("file", file), ("parts", parts), ("mesh", mesh_parts)) if value is not None]
    if len(given) != 1:
        detail = f"got {' and '.join(given)}" if given else "got none"
        raise RenderError(f"give exactly one mesh to render: a file, parts or a MESH ({detail})")
    return load_scene_parts(file if file is not None else (parts if parts is not None else mesh_parts))


@torch.no_grad()
def render_asset_views(source: PartsSource, options: AssetViewOptions = AssetViewOptions(),
                       device: Optional[Union[str, torch.device]] = None) -> MultiView:
    """Render ``source`` (parts in the glTF frame, or a GLB/glTF/OBJ path) into the pipeline's views.

    Returns a :class:`MultiView` in ``options.layout`` on white, with ``input_image`` set (see the
    module docstring). ``device``: where to rasterise (CPU by default); outputs are on the CPU.
    """
    parts = load_scene_parts(source)
    faces = sum(int(part.faces.shape[0]) for part in parts)
    if faces > MAX_FACES:
        raise RenderError(
            f"the mesh has {faces:,} faces; Render Views draws at most {MAX_FACES:,} (about 1 KB of memory each "
            f"while rendering). Decimate it first (e.g. Blender's Decimate modifier)"
        )
    layout = LAYOUTS[options.layout]
    cameras = RenderCameras.from_layout(layout, options.view_size)
    rendering = render_parts(parts, cameras, normalization="fit", options=options.render, device=device)
    input_camera = RenderCameras.orbit([0.0], [options.input_elevation_deg], radius=layout.radius,
                                       fov_deg=layout.fov_deg, size=INPUT_SIZE)
    front = render_parts(parts, input_camera, normalization=rendering.normalization, options=options.render,
                         device=device)
    rgba = torch.cat([front.images, front.alpha[..., None]], dim=-1)  # (1, S, S, 4)
    input_image = prepare_condition_images(rgba, None, background=WHITE[0], foreground_ratio=_FOREGROUND_RATIO,
                                           size=INPUT_SIZE)[0]
    return rendering.to_multiview(options.layout, input_image=input_image.contiguous())
