"""Render part-structured meshes at a layout's cameras: RGB on white, alpha, depth, visible-part ids.

Frames. Parts are in the glTF object frame (Y up, front +Z; :mod:`partgen_models.parts`); cameras are
InstantMesh's z-up world with OpenGL camera-to-world matrices (:mod:`partgen_models.cameras`). The
renderer moves the parts into the cameras' world with :func:`gltf_to_zup`, the inverse of
:func:`~partgen_models.parts.zup_to_gltf`. ``reconstruct_parts`` applies ``zup_to_gltf`` to the
surfaces it extracts in the cameras' world, so rendering a reconstruction's parts at its views'
cameras with ``normalization="none"`` lines up with those views pixel for pixel.

Scale. ``normalization="fit"`` centres the object's bounding box on the origin and scales it so its
bounding sphere (about the box centre) has radius ``distance * tan(fov / 2)``. Zero123++ v1.2 renders
objects normalised into a sphere of radius 0.5 seen from ``0.5 / tan(15°)`` with a 30° field of view;
at InstantMesh's camera radius 4 that is a sphere of radius ``4 tan(15°) ≈ 1.072``. The sphere's
silhouette is a little wider than the frame (asin(tan 15°) = 15.5° against 15°), so only near-round
objects touch the border, as in Zero123++'s own training renders.

Shading. ``"lambert"``: a headlight (a light at each camera) on flat faces, two-sided:
``colour * (ambient + (1 - ambient) * |n · v|)`` with ``v`` the direction from the face to the camera,
ambient 0.4 by default. ``"unlit"``: the interpolated vertex colours as they are (for colour-coded
maps). Background is white, alpha is the covered share of each pixel (0/1 unless supersampled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..checks import refuse_non_finite
from ..cameras import LAYOUTS, ViewLayout, look_at_origin
from ..parts import Part, placed_mesh
from ..views import MultiView
from .rasterizer import rasterize

WHITE = (1.0, 1.0, 1.0)
PartsSource = Union[Sequence[Part], str, Path]  # parts, or a GLB/glTF/OBJ file with one node (object) per part
SHADINGS = ("lambert", "unlit")
MAX_SUPERSAMPLE = 15  # time grows with its square; memory does not (one sample pass at a time)


class RenderError(ValueError):
    """The meshes or cameras cannot be rendered; the message says why."""


def gltf_to_zup(points: torch.Tensor) -> torch.Tensor:
    """glTF (y up, front +z) → InstantMesh world (z up, input camera on +x); inverse of ``zup_to_gltf``."""
    return points[..., [2, 0, 1]]


@dataclass(frozen=True)
class RenderCameras:
    """Square pinhole cameras: ``c2w [V,4,4]`` OpenGL camera-to-world in InstantMesh's z-up world,
    a symmetric field of view, ``size`` pixels per side."""

    c2w: torch.Tensor
    fov_deg: float
    size: int

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (4, 4):
            raise RenderError(f"cameras need c2w [V,4,4], got {tuple(self.c2w.shape)}")
        if not 0.0 < self.fov_deg < 180.0 or self.size < 1:
            raise RenderError(f"cameras need 0 < fov_deg < 180 and size >= 1, got {self.fov_deg} and {self.size}")

    @classmethod
    def from_layout(cls, layout: Union[str, ViewLayout] = "zero123pp_v12", size: Optional[int] = None) -> "RenderCameras":
        """The cameras of a view layout (``LAYOUTS``), at its view size unless ``size`` is given."""
        if isinstance(layout, str):
            if layout not in LAYOUTS:
                raise RenderError(f"unknown view layout {layout!r}; known: {sorted(LAYOUTS)}")
            layout = LAYOUTS[layout]
        return cls(layout.camera_to_world(), layout.fov_deg, size or layout.view_size)

    @classmethod
    def from_views(cls, views: MultiView) -> "RenderCameras":
        """The cameras that ``views`` were produced at, at their resolution."""
        if views.images.shape[1] != views.images.shape[2]:
            raise RenderError(f"the renderer draws square views, got {views.images.shape[2]}x{views.images.shape[1]}")
        return cls(views.c2w, views.fov_deg, views.images.shape[1])

    @classmethod
    def orbit(cls, azimuths_deg: Sequence[float], elevations_deg: Sequence[float], *, radius: float = 4.0,
              fov_deg: float = 30.0, size: int = 320) -> "RenderCameras":
        """Cameras looking at the origin, placed as InstantMesh places them (``look_at_origin``)."""
        c2w = look_at_origin(torch.tensor(list(azimuths_deg), dtype=torch.float64),
                             torch.tensor(list(elevations_deg), dtype=torch.float64), radius).float()
        return cls(c2w, fov_deg, size)

    @property
    def num_views(self) -> int:
        return self.c2w.shape[0]

    @property
    def distance(self) -> float:
        """Mean distance of the cameras from the world origin."""
        return float(self.c2w[:, :3, 3].norm(dim=-1).mean())


@dataclass(frozen=True)
class Normalization:
    """``(p - center) * scale`` in the glTF frame, applied to every part alike."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        return (points - torch.tensor(self.center, dtype=points.dtype, device=points.device)) * self.scale


def _placed_vertices(part: Part) -> torch.Tensor:
    """A part's vertices in the object frame (its ``transform`` applied)."""
    return placed_mesh(part)[0]


def fit_normalization(parts: Sequence[Part], cameras: RenderCameras, fill: float = 1.0) -> Normalization:
    """Centre the parts' joint bounding box and scale its bounding sphere to radius
    ``fill * distance * tan(fov / 2)``, Zero123++ v1.2's framing (see the module docstring)."""
    points = torch.cat([_placed_vertices(p) for p in parts if p.vertices.shape[0]])
    low, high = points.amin(0), points.amax(0)
    center = (low + high) / 2
    radius = float((points - center).norm(dim=-1).max())
    if radius <= 0.0 or not math.isfinite(radius):
        raise RenderError(f"the parts have no extent to normalise (bounding radius {radius})")
    target = fill * cameras.distance * math.tan(math.radians(cameras.fov_deg) / 2)
    return Normalization(center=tuple(float(c) for c in center), scale=target / radius)


@dataclass(frozen=True)
class RenderOptions:
    """How to draw.

    shading: "lambert" (headlight, flat faces, two-sided) or "unlit" (vertex colours as they are).
    ambient: the share of light that does not depend on the face's angle (lambert only).
    supersample: odd factor s; colours and alpha are averaged over s x s samples per pixel, part ids
        and depth come from the sample at the pixel centre (so ids stay exact ground truth). Costs s²
        in time; memory stays that of one view at the output size (samples are rendered one at a time).
    fill: with ``normalization="fit"``, the bounding sphere's radius relative to the frame (1.0 = Zero123++).
    cull_backfaces: skip triangles facing away (only for closed, consistently wound meshes; faster).
    max_fragments: candidate pixels (triangle bounding boxes) handled at once; bounds the rasteriser's
        working memory (about 100 MB at the default 2^20 for meshes up to 100k faces at 320 px).
    """

    shading: str = "lambert"
    ambient: float = 0.4
    supersample: int = 1
    fill: float = 1.0
    cull_backfaces: bool = False
    max_fragments: int = 1 << 20

    def __post_init__(self) -> None:
        refuse_non_finite(self, RenderError)
        if self.shading not in SHADINGS:
            raise RenderError(f"shading must be one of {SHADINGS}, got {self.shading!r}")
        if not 1 <= self.supersample <= MAX_SUPERSAMPLE or self.supersample % 2 == 0:
            raise RenderError(f"supersample must be an odd factor within 1..{MAX_SUPERSAMPLE}, got {self.supersample}")
        if not 0.0 <= self.ambient <= 1.0:
            raise RenderError(f"ambient must be within 0..1, got {self.ambient}")


@dataclass(frozen=True)
class Rendering:
    """Views of a part-structured mesh, float32 on the CPU.

    images ``[V,H,W,3]`` on white; alpha ``[V,H,W]``; depth ``[V,H,W]`` along each camera's viewing
    axis in normalised units (0 on background); part_ids ``[V,H,W]`` int64 index into ``part_names``
    of the part seen at each pixel centre, -1 on background. c2w/fov_deg are the cameras (z-up
    world); normalization is what was applied to the parts (glTF frame) before rendering.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    part_ids: torch.Tensor
    part_names: tuple[str, ...]
    c2w: torch.Tensor
    fov_deg: float
    normalization: Normalization

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    def part_masks(self) -> torch.Tensor:
        """Visible (modal) mask of every part, ``[P,V,H,W]`` bool, in ``part_names`` order."""
        return self.part_ids[None] == torch.arange(len(self.part_names))[:, None, None, None]

    def to_multiview(self, layout: str, input_image: Optional[torch.Tensor] = None) -> MultiView:
        """These views as the pipeline's ``MultiView`` (white background)."""
        return MultiView(images=self.images, alpha=self.alpha, c2w=self.c2w, fov_deg=self.fov_deg,
                         layout=layout, background=WHITE, input_image=input_image)


def _resolve_normalization(parts: Sequence[Part], cameras: RenderCameras,
                           normalization: Union[Normalization, str], fill: float) -> Normalization:
    if isinstance(normalization, Normalization):
        return normalization
    if normalization == "fit":
        return fit_normalization(parts, cameras, fill)
    if normalization == "none":
        return Normalization()
    raise RenderError(f"normalization must be 'fit', 'none' or a Normalization, got {normalization!r}")


def load_scene_parts(source: PartsSource) -> list[Part]:
    """Parts as given, or read from a file with one node per part (:mod:`partgen_models.assembly.load`;
    non-manifold meshes are kept: drawing them needs no closed surface)."""
    if isinstance(source, (str, Path)):
        from ..assembly.load import LoadOptions, load_parts

        return load_parts(Path(source), LoadOptions(non_manifold="keep"))
    return list(source)


def _check_parts(parts: Sequence[Part]) -> None:
    if not parts:
        raise RenderError("there are no parts to render")
    for part in parts:
        if part.faces.shape[0] and (part.faces.min() < 0 or part.faces.max() >= part.vertices.shape[0]):
            raise RenderError(f"part {part.name!r} has faces that index missing vertices")
        if not torch.isfinite(part.vertices).all():
            raise RenderError(f"part {part.name!r} has NaN or infinite vertices")
        # checked here, or they surface later as a NaN in the rendered front view ("image 0")
        for label, values in (("transform", part.transform), ("vertex colours", part.vertex_colors),
                              ("texture coordinates", part.uvs), ("texture", part.texture)):
            if values is not None and not bool(torch.isfinite(values).all()):
                raise RenderError(f"part {part.name!r} has NaN or infinite values in its {label}; check the node that made it")
    if all(part.faces.shape[0] == 0 for part in parts):
        raise RenderError("none of the parts has any faces")


def _merged_mesh(parts: Sequence[Part], selected: Sequence[int], normalization: Normalization, device: torch.device):
    """One mesh of the selected parts in the cameras' world: vertices, faces, colours, part of each face."""
    vertices, faces, colors, owner, offset = [], [], [], [], 0
    for index in selected:
        part = parts[index]
        if part.faces.shape[0] == 0:
            continue
        placed, placed_faces = placed_mesh(part)
        vertices.append(gltf_to_zup(normalization.apply(placed)).float())
        faces.append(placed_faces + offset)
        colors.append(part.vertex_colors.float().clamp(0, 1))
        owner.append(torch.full((part.faces.shape[0],), index, dtype=torch.int64))
        offset += part.vertices.shape[0]
    return (torch.cat(vertices).to(device), torch.cat(faces).to(device), torch.cat(colors).to(device),
            torch.cat(owner).to(device))


def _shade(vertices, faces, colors, c2w, raster, options: RenderOptions) -> torch.Tensor:
    """Colour of every hit pixel ``[P,3]`` (P = number of hit pixels, in ``raster.hit`` order)."""
    hit = raster.hit
    face = raster.triangle[hit]
    weights = raster.barycentric[hit]  # (P, 3)
    color = (colors[faces[face]] * weights[..., None]).sum(1)  # (P, 3)
    if options.shading == "unlit":
        return color
    corners = vertices[faces]  # (M, 3, 3)
    normal = F.normalize(torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1), dim=-1)
    view = hit.nonzero()[:, 0]
    to_camera = F.normalize(c2w[view, :3, 3] - corners.mean(1)[face], dim=-1)
    light = options.ambient + (1.0 - options.ambient) * (normal[face] * to_camera).sum(-1).abs()
    return color * light[:, None]


@torch.no_grad()
def _render(parts: Sequence[Part], selected: Sequence[int], cameras: RenderCameras,
            normalization: Union[Normalization, str], options: RenderOptions,
            device: Optional[Union[str, torch.device]]) -> Rendering:
    _check_parts(parts)
    device = torch.device(device) if device is not None else torch.device("cpu")
    resolved = _resolve_normalization(parts, cameras, normalization, options.fill)
    vertices, faces, colors, owner = _merged_mesh(parts, selected, resolved, device)
    s = options.supersample
    size = cameras.size
    c2w = cameras.c2w.to(device).float()
    v = cameras.num_views
    images = torch.empty(v, size, size, 3)
    alpha = torch.empty(v, size, size)
    part_ids = torch.empty(v, size, size, dtype=torch.int64)
    depth = torch.empty(v, size, size)
    # One view and one sub-pixel sample at a time: working memory is that of a single view at the
    # output size (about 50 bytes a pixel plus the rasteriser's fragment chunk), whatever the number
    # of views and the supersampling factor. Sample (i, j) of s x s sits at ((i + 0.5) / s, (j + 0.5) / s)
    # inside its pixel, as in a render s times larger averaged over s x s blocks; ids and depth come
    # from the centre sample (offset 0 for odd s), so they stay exact ground truth.
    offsets = [((i + 0.5) / s - 0.5, (j + 0.5) / s - 0.5) for j in range(s) for i in range(s)]
    for view in range(v):
        colour_sum = torch.zeros(size, size, 3, device=device)
        coverage_sum = torch.zeros(size, size, device=device)
        for offset in offsets:
            raster = rasterize(vertices, faces, c2w[view:view + 1], cameras.fov_deg, size,
                               cull_backfaces=options.cull_backfaces, max_fragments=options.max_fragments,
                               pixel_offset=offset)
            hit = raster.hit[0]
            colour = torch.ones(size, size, 3, device=device)
            colour[hit] = _shade(vertices, faces, colors, c2w[view:view + 1], raster, options)
            colour_sum += colour
            coverage_sum += hit.float()
            if offset == (0.0, 0.0):
                part_ids[view] = torch.where(hit, owner[raster.triangle[0].clamp(min=0)],
                                             torch.full_like(raster.triangle[0], -1)).cpu()
                depth[view] = raster.depth[0].cpu()
            del raster, hit, colour
        images[view] = (colour_sum / len(offsets)).cpu()
        alpha[view] = (coverage_sum / len(offsets)).cpu()
    return Rendering(images=images, alpha=alpha, depth=depth, part_ids=part_ids, part_names=tuple(p.name for p in parts),
                     c2w=cameras.c2w.float().cpu(), fov_deg=cameras.fov_deg, normalization=resolved)


def render_parts(parts: PartsSource, cameras: RenderCameras, *, normalization: Union[Normalization, str] = "fit",
                 options: RenderOptions = RenderOptions(), device: Optional[Union[str, torch.device]] = None) -> Rendering:
    """Render all ``parts`` (glTF frame; or the path of a GLB with one node per part) together at ``cameras``.

    normalization: "fit" frames the object as Zero123++ v1.2 does (module docstring), "none" renders the
    parts where they are (e.g. a reconstruction, already in its views' frame), or an explicit
    :class:`Normalization`. device: where to rasterise (CPU by default; outputs come back on the CPU).
    """
    parts = load_scene_parts(parts)
    return _render(parts, range(len(parts)), cameras, normalization, options, device)


def render_part_alone(parts: PartsSource, part: Union[int, str], cameras: RenderCameras, *,
                      normalization: Union[Normalization, str] = "fit", options: RenderOptions = RenderOptions(),
                      device: Optional[Union[str, torch.device]] = None) -> Rendering:
    """Render one part without the others (amodal ground truth), framed exactly as the whole object.

    ``part`` is an index into ``parts`` or a part name. The normalisation is computed from all
    ``parts``, so the part lands where it is in :func:`render_parts`; ``part_ids`` keep the part's
    index in ``parts`` and ``part_names`` lists all parts, so masks compare directly.
    """
    parts = load_scene_parts(parts)
    names = [p.name for p in parts]
    if isinstance(part, str):
        if part not in names:
            raise RenderError(f"no part named {part!r}; parts are {names}")
        part = names.index(part)
    if not 0 <= part < len(parts):
        raise RenderError(f"part index {part} is out of range for {len(parts)} parts")
    if parts[part].faces.shape[0] == 0:
        raise RenderError(f"part {names[part]!r} has no faces to render")
    return _render(parts, [part], cameras, normalization, options, device)
