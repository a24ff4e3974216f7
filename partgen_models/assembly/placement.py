"""MMPart placement: put separately reconstructed parts back together as they sit in the input image.

MMPart (arXiv 2509.16768, §3.3) reconstructs every isolated part on its own, each normalised by the
multi-view stage's crop, and then places the parts relative to each other. Here every part gets one
similarity transform (uniform scale + translation) in a common frame, the *assembly frame*: glTF
axes with the input image's camera at ``(0, 0, D)`` looking down -Z, ``D = 4`` and a field of view of
``input_fov_deg`` (30°, Zero123++'s) over the image's longer side. Rotation is not estimated: every part
is reconstructed from an image in the input's own view direction, so all parts already share the
input camera's orientation (the multi-view stage puts the conditioning view at azimuth 0).

1. **Crop box.** Multi-View cropped a square ``(top, left, side)`` around the part and Zero123++ /
   InstantMesh see that square through a 30° camera at distance 4. Undoing it maps the part's
   normalised frame to the assembly frame by ``s = side/L · tan(fov_in/2)/tan(15°)`` (L = the longer image
   side) and a lateral offset of the square's centre from the image centre; depth offset 0.
2. **Silhouette.** Each placed part is rendered alone from the input camera and its silhouette is
   compared with the part's mask from the isolation step; the scale and image-plane offset are
   corrected by matching the silhouettes' areas and centroids, a few rounds, keeping the transform
   with the best IoU (reconstructions are not exactly as wide as their crop).
3. **Depth.** Image position fixes a part only up to its distance along the viewing ray. A similarity
   about the camera centre (scale by k about ``(0, 0, D)``) moves a part along its rays without changing
   its image, so depth is fitted with that one factor per part: against a *reference* (the whole object
   reconstructed from the input image, placed by its own crop box) k is the median ratio of the
   reference's depth to the part's depth over the part's visible pixels; against a *depth map* IMAGE
   (relative depth from MoGe, Depth Anything...) the k of all parts and an affine map from the map's
   values to depth are fitted jointly by least squares, keeping the mean k at 1.
4. **Interpenetration.** Each part's extent along the view axis is measured per pixel (front and back
   depth from two near-orthographic cameras); where two parts overlap by more than
   ``max_penetration`` of the smaller one's volume, the part further back is pushed back along its
   rays (again without changing its image) until they do not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..multiview.preprocess import square_crop_box
from ..parts import Part
from ..rendering.renderer import Normalization, RenderCameras, RenderOptions, render_parts
from ..runtime import Runtime, default_runtime
from ..views import MultiView
from .isolation import IsolatedParts

logger = logging.getLogger(__name__)

CAMERA_DISTANCE = 4.0  # InstantMesh's camera radius: the distance the parts' own views were taken from
PART_FOV_DEG = 30.0  # Zero123++ v1.2 / InstantMesh field of view of the conditioning view
FOREGROUND_RATIO = 0.85  # Multi-View's crop: the object spans 85% of the square (InstantMesh resize_foreground)
DEPTH_SOURCES = ("auto", "reference", "depth map", "none")
DEPTH_MAP_ENCODINGS = ("near is bright", "far is bright")
_ORTHO_DISTANCE = 100.0  # front/back cameras for per-pixel extents: far enough that rays are near parallel
_MIN_DEPTH_PIXELS = 16
_MAX_DEPTH_SAMPLES = 4096
_MAX_PUSH_ROUNDS = 6
_UNLIT = RenderOptions(shading="unlit")


class PlacementError(ValueError):
    """The parts cannot be placed; the message names the part or input and says how to fix it."""


@dataclass(frozen=True)
class PlacementOptions:
    """How to place the parts.

    silhouette_rounds: rounds of silhouette matching per part (0 keeps the crop-box placement). Each
        round renders every part once at ``render_size``.
    render_size: side in pixels of the square renders used for silhouettes and depth (the input image
        is resampled into it). Time and memory grow with its square: 256 takes ~0.1 s per part on a CPU.
    depth_source: "auto" (the reference when connected, else the depth map, else none), "reference",
        "depth map" or "none" (all parts at the same distance).
    depth_map_encoding: how the depth map IMAGE encodes depth: "near is bright" (Depth Anything, MiDaS,
        ComfyUI's depth preprocessors) or "far is bright".
    max_penetration: largest share of the smaller part's volume two parts may share before the one
        further back is pushed back (0.5: only gross overlaps, such as a part left inside another for lack of
        depth; the procedural set's own parts overlap, see the README). 1.0 turns the step off.
    input_fov_deg: assumed field of view of the input image over its longer side (30°, as Zero123++
        renders); a wider lens exaggerates the depth differences between parts.
    """

    silhouette_rounds: int = 3
    render_size: int = 256
    depth_source: str = "auto"
    depth_map_encoding: str = "near is bright"
    max_penetration: float = 0.5
    input_fov_deg: float = PART_FOV_DEG

    def __post_init__(self) -> None:
        if not isinstance(self.silhouette_rounds, int) or not 0 <= self.silhouette_rounds <= 10:
            raise PlacementError(f"silhouette_rounds must be an integer within 0..10, got {self.silhouette_rounds!r}")
        if not isinstance(self.render_size, int) or not 32 <= self.render_size <= 1024:
            raise PlacementError(f"render_size must be an integer within 32..1024 pixels, got {self.render_size!r}")
        if self.depth_source not in DEPTH_SOURCES:
            raise PlacementError(f"depth_source must be one of {DEPTH_SOURCES}, got {self.depth_source!r}")
        if self.depth_map_encoding not in DEPTH_MAP_ENCODINGS:
            raise PlacementError(f"depth_map_encoding must be one of {DEPTH_MAP_ENCODINGS}, got {self.depth_map_encoding!r}")
        if not math.isfinite(self.max_penetration) or not 0.0 <= self.max_penetration <= 1.0:
            raise PlacementError(f"max_penetration must be a finite share within 0..1, got {self.max_penetration!r}")
        if not math.isfinite(self.input_fov_deg) or not 5.0 <= self.input_fov_deg <= 120.0:
            raise PlacementError(f"input_fov_deg must be within 5..120 degrees, got {self.input_fov_deg!r}")


@dataclass(frozen=True)
class PartPlacement:
    """What placement did to one part: IoU of its silhouette with its mask after the crop box and at the
    end, the depth factor (1 = where the crop box put it) and how far it was pushed back."""

    name: str
    box_iou: float
    silhouette_iou: float
    depth_factor: float
    pushed: float


@dataclass(frozen=True)
class PlacementResult:
    """The placed parts (vertices as given, ``transform`` set; names from the isolation step), one report
    per part, the depth source used and a preview ``[H,W,3]`` of the assembly from the input camera."""

    parts: list[Part]
    report: tuple[PartPlacement, ...]
    depth_source: str
    preview: torch.Tensor


# ----------------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class AssemblyFrame:
    """The input camera: image (H, W), square render frame of side L = max(H, W) centred on the image."""

    height: int
    width: int
    fov_deg: float

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def half_extent(self) -> float:
        """Half the width of the square frame at the camera distance, in assembly units."""
        return CAMERA_DISTANCE * math.tan(math.radians(self.fov_deg) / 2)

    def cameras(self, size: int) -> RenderCameras:
        return RenderCameras.orbit([0.0], [0.0], radius=CAMERA_DISTANCE, fov_deg=self.fov_deg, size=size)

    def box_transform(self, crop_box: Sequence[int]) -> torch.Tensor:
        """The similarity taking a part normalised by the square crop ``(top, left, side)`` into this frame."""
        top, left, side = (float(v) for v in crop_box)
        units_per_pixel = 2 * self.half_extent / self.side
        scale = side / self.side * math.tan(math.radians(self.fov_deg) / 2) / math.tan(math.radians(PART_FOV_DEG) / 2)
        transform = torch.eye(4, dtype=torch.float64)
        transform[:3, :3] *= scale
        transform[0, 3] = (left + side / 2 - self.width / 2) * units_per_pixel
        transform[1, 3] = -(top + side / 2 - self.height / 2) * units_per_pixel  # image rows grow downwards
        return transform

    def to_square(self, values: torch.Tensor, size: int) -> torch.Tensor:
        """Image-frame maps ``[N,H,W]`` → the square render frame ``[N,size,size]`` (zeros outside)."""
        side = self.side
        centres = (torch.arange(size, dtype=torch.float32) + 0.5) * side / size
        xs = (centres - (side - self.width) / 2) / self.width * 2 - 1
        ys = (centres - (side - self.height) / 2) / self.height * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (size, size, 2) as (x, y)
        grid = grid[None].expand(values.shape[0], -1, -1, -1)
        return F.grid_sample(values[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]

    def from_square(self, values: torch.Tensor) -> torch.Tensor:
        """Square-frame images ``[S,S,C]`` → the image's own aspect, ``[h,w,C]`` at the square's scale."""
        size = values.shape[0]
        rows = round(size * self.height / self.side)
        cols = round(size * self.width / self.side)
        top, left = (size - rows) // 2, (size - cols) // 2
        return values[top:top + rows, left:left + cols]


def about_camera(factor: float) -> torch.Tensor:
    """Scale by ``factor`` about the camera centre: moves points along their rays, keeps the image."""
    transform = torch.eye(4, dtype=torch.float64)
    transform[:3, :3] *= factor
    transform[2, 3] = CAMERA_DISTANCE * (1.0 - factor)
    return transform


def _with_transform(part: Part, transform: torch.Tensor) -> Part:
    return replace(part, transform=transform.float())


def _placed_center(part: Part, transform: torch.Tensor) -> torch.Tensor:
    low, high = part.vertices.double().amin(0), part.vertices.double().amax(0)
    center = (low + high) / 2
    return transform[:3, :3] @ center + transform[:3, 3]


def normalise_like_reconstruction(part: Part) -> torch.Tensor:
    """For meshes with no recorded crop (core MESH from another reconstructor): centre the bounding box and
    scale so its image-plane half-extent is what a reconstruction of an 85% crop has (``0.85·4·tan 15°``)."""
    vertices = part.vertices.double()
    low, high = vertices.amin(0), vertices.amax(0)
    extent = float((high - low)[:2].max()) / 2
    if not math.isfinite(extent) or extent <= 0:
        raise PlacementError(f"part {part.name!r} has no extent in the image plane; it cannot be placed")
    scale = FOREGROUND_RATIO * CAMERA_DISTANCE * math.tan(math.radians(PART_FOV_DEG) / 2) / extent
    transform = torch.eye(4, dtype=torch.float64)
    transform[:3, :3] *= scale
    transform[:3, 3] = -scale * (low + high) / 2
    return transform


# ----------------------------------------------------------------------------------------------------
# Rendering helpers


def _render_alone(part: Part, transform: torch.Tensor, cameras: RenderCameras, runtime: Runtime):
    runtime.check_interrupt()
    rendering = render_parts([_with_transform(part, transform)], cameras, normalization=Normalization(),
                             options=_UNLIT, device=runtime.device)
    return rendering.alpha[0] > 0.5, rendering.depth[0]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 0.0


def _centroid(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return torch.stack([cols.double().mean(), rows.double().mean()]) + 0.5  # (x, y) pixel centres


def _refine_silhouette(part: Part, transform: torch.Tensor, target: torch.Tensor, frame: AssemblyFrame,
                       options: PlacementOptions, runtime: Runtime) -> tuple[torch.Tensor, float, float]:
    """Match area and centroid of the rendered silhouette to ``target`` (square frame, bool) a few rounds."""
    size = options.render_size
    cameras = frame.cameras(size)
    mask, _ = _render_alone(part, transform, cameras, runtime)
    box_iou = _iou(mask, target)
    best, best_iou = transform, box_iou
    units_per_pixel = 2 * math.tan(math.radians(frame.fov_deg) / 2) / size  # lateral units per pixel at depth 1
    for _ in range(options.silhouette_rounds):
        if not bool(mask.any()):
            break
        ratio = math.sqrt(float(target.sum()) / float(mask.sum()))
        shift = _centroid(target) - _centroid(mask)  # (dx, dy) pixels
        center = _placed_center(part, transform)
        depth = CAMERA_DISTANCE - float(center[2])
        step = torch.eye(4, dtype=torch.float64)
        step[:3, :3] *= ratio
        step[:3, 3] = center * (1 - ratio)
        step[0, 3] += float(shift[0]) * units_per_pixel * depth
        step[1, 3] -= float(shift[1]) * units_per_pixel * depth
        transform = step @ transform
        mask, _ = _render_alone(part, transform, cameras, runtime)
        iou = _iou(mask, target)
        if iou > best_iou:
            best, best_iou = transform, iou
    return best, box_iou, best_iou


def _reference_depth(reference: Sequence[Part], transform: torch.Tensor, cameras: RenderCameras,
                     runtime: Runtime) -> torch.Tensor:
    placed = [_with_transform(p, transform @ p.transform.double()) for p in reference]
    rendering = render_parts(placed, cameras, normalization=Normalization(), options=_UNLIT, device=runtime.device)
    return torch.where(rendering.alpha[0] > 0.5, rendering.depth[0], torch.zeros_like(rendering.depth[0]))


def _depth_factors_from_reference(part_depths: list[torch.Tensor], visible: torch.Tensor, reference_depth: torch.Tensor,
                                  names: Sequence[str]) -> list[float]:
    factors = []
    for name, depth, seen in zip(names, part_depths, visible):
        valid = seen & (depth > 0) & (reference_depth > 0)
        if int(valid.sum()) < _MIN_DEPTH_PIXELS:
            logger.warning("part %r: fewer than %d visible pixels on the reference; its depth is left as the crop "
                           "box put it", name, _MIN_DEPTH_PIXELS)
            factors.append(1.0)
            continue
        factors.append(float((reference_depth[valid] / depth[valid]).median()))
    return factors


def _depth_factors_from_map(part_depths: list[torch.Tensor], visible: torch.Tensor, depth_map: torch.Tensor,
                            names: Sequence[str]) -> Optional[list[float]]:
    """Fit ``k_i · z_i(x) = a · g(x) + b``: the slope ``a`` from the depth variation *within* parts (pooled,
    where k ≈ 1), then each part's ``k_i`` from its mean, with ``b`` chosen so that the mean k is 1."""
    samples = []
    generator = torch.Generator().manual_seed(0)
    for name, depth, seen in zip(names, part_depths, visible):
        valid = torch.nonzero((seen & (depth > 0)).flatten()).flatten()
        if valid.numel() < _MIN_DEPTH_PIXELS:
            logger.warning("part %r has no visible pixels for the depth map; it keeps its crop-box depth", name)
            samples.append(None)
            continue
        if valid.numel() > _MAX_DEPTH_SAMPLES:
            valid = valid[torch.randperm(valid.numel(), generator=generator)[:_MAX_DEPTH_SAMPLES]]
        samples.append((depth.flatten()[valid].double(), depth_map.flatten()[valid].double()))
    used = [s for s in samples if s is not None]
    if len(used) < 2:
        logger.warning("fewer than two parts have visible pixels, so the depth map cannot order them; depth is left "
                       "as the crop boxes put it")
        return None
    dz = torch.cat([z - z.mean() for z, _ in used])
    dg = torch.cat([g - g.mean() for _, g in used])
    slope = float((dz * dg).sum() / (dg * dg).sum().clamp(min=1e-12))
    if slope <= 0 or not math.isfinite(slope):
        logger.warning("the depth map does not agree with the parts' own depth (fitted slope %.3g); check "
                       "depth_map_encoding. Depth is left as the crop boxes put it", slope)
        return None
    means = [(float(z.mean()), float(g.mean())) for z, g in used]
    offset = (len(used) - sum(slope * g / z for z, g in means)) / sum(1.0 / z for z, _ in means)
    fitted = iter((slope * g + offset) / z for z, g in means)
    factors = [next(fitted) if s is not None else 1.0 for s in samples]
    if not all(f > 0 and math.isfinite(f) for f in factors):
        logger.warning("the depth map puts some parts behind the camera; depth is left as the crop boxes put it")
        return None
    return factors


def _extents(part: Part, transform: torch.Tensor, frame: AssemblyFrame, size: int, runtime: Runtime):
    """Per-pixel front and back z of the placed part seen along the view axis: ``[S,S]`` each, NaN outside."""
    fov = 2 * math.degrees(math.atan(frame.half_extent / _ORTHO_DISTANCE))
    cameras = RenderCameras.orbit([0.0, 180.0], [0.0, 0.0], radius=_ORTHO_DISTANCE, fov_deg=fov, size=size)
    rendering = render_parts([_with_transform(part, transform)], cameras, normalization=Normalization(),
                             options=_UNLIT, device=runtime.device)
    hit = rendering.alpha > 0.5
    front = torch.where(hit[0], _ORTHO_DISTANCE - rendering.depth[0], torch.nan)
    back = torch.where(hit[1], rendering.depth[1] - _ORTHO_DISTANCE, torch.nan).flip(-1)  # the back camera mirrors x
    return front, back


def _shared_volume(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float, torch.Tensor]:
    """Volume (pixel·units) both parts occupy, the smaller part's volume, and the per-pixel overlap."""
    overlap = torch.minimum(a[0], b[0]) - torch.maximum(a[1], b[1])
    overlap = torch.nan_to_num(overlap, nan=0.0).clamp(min=0.0)
    volume_a = torch.nan_to_num(a[0] - a[1], nan=0.0).clamp(min=0.0).sum()
    volume_b = torch.nan_to_num(b[0] - b[1], nan=0.0).clamp(min=0.0).sum()
    return float(overlap.sum()), float(torch.minimum(volume_a, volume_b)), overlap


def _separate(parts: Sequence[Part], transforms: list[torch.Tensor], frame: AssemblyFrame, options: PlacementOptions,
              runtime: Runtime) -> list[float]:
    """Push parts further back along their rays until no pair shares more than ``max_penetration``."""
    pushed = [0.0] * len(parts)
    if options.max_penetration >= 1.0 or len(parts) < 2:
        return pushed
    size = options.render_size
    order = sorted(range(len(parts)), key=lambda i: -float(_placed_center(parts[i], transforms[i])[2]))  # front first
    extents = {order[0]: _extents(parts[order[0]], transforms[order[0]], frame, size, runtime)}
    for position, index in enumerate(order[1:], start=1):
        for _ in range(_MAX_PUSH_ROUNDS):
            mine = _extents(parts[index], transforms[index], frame, size, runtime)
            worst, push = 0.0, 0.0
            for other in order[:position]:
                shared, smaller, overlap = _shared_volume(mine, extents[other])
                if smaller > 0 and shared / smaller > options.max_penetration:
                    worst = max(worst, shared / smaller)
                    push = max(push, float(overlap[overlap > 0].median()))
            if worst == 0.0:
                break
            center = _placed_center(parts[index], transforms[index])
            depth = CAMERA_DISTANCE - float(center[2])
            factor = (depth + push) / depth
            transforms[index] = about_camera(factor) @ transforms[index]
            pushed[index] += push
        extents[index] = _extents(parts[index], transforms[index], frame, size, runtime)
    return pushed


# ----------------------------------------------------------------------------------------------------
# Entry point


def single_parts(items: Sequence[Sequence[Part]]) -> list[Part]:
    """One part from each reconstruction run (a graph runs Reconstruct once per part's views)."""
    parts = [part for item in items for part in item]
    if len(parts) != len(items):
        raise PlacementError(
            f"the connected parts hold {len(parts)} meshes in {len(items)} items; Place Parts expects one part per "
            f"Reconstruct run (Reconstruct fed by the Multi-View of the isolated images)"
        )
    return parts


def crop_boxes_from_views(isolated: IsolatedParts, views: Optional[Sequence[MultiView]],
                          what: str = "parts") -> list[tuple[int, int, int]]:
    """Each view's recorded Multi-View crop, checked to come from images of the isolated parts' size."""
    if views is None:
        raise PlacementError(f"connect the Multi-View views the {what} were reconstructed from: they record where "
                             f"each was cropped from the input image")
    if what == "parts" and len(views) != isolated.num_parts:
        raise PlacementError(f"{len(views)} views for {isolated.num_parts} parts ({', '.join(isolated.names)}); connect "
                             f"the Multi-View output that feeds Reconstruct")
    names = isolated.names if what == "parts" else ("reference",)
    boxes = []
    for name, view in zip(names, views):
        if view.crop_box is None or tuple(view.source_size or ()) != isolated.image_size:
            raise PlacementError(
                f"{name!r}: its views were not made by PartGen Multi-View from an image of the input's size (crop box "
                f"{view.crop_box}, image size {view.source_size}, input {isolated.image_size}); connect the Multi-View "
                f"run on the collected isolated images (or, for the reference, on the input image)"
            )
        boxes.append(tuple(int(v) for v in view.crop_box))
    return boxes


def _check_inputs(parts: Sequence[Part], isolated: IsolatedParts, crop_boxes: Sequence[Optional[Sequence[int]]],
                  reference: Optional[Sequence[Part]], reference_box: Optional[Sequence[int]],
                  depth_map: Optional[torch.Tensor], options: PlacementOptions) -> None:
    if len(parts) != isolated.num_parts:
        raise PlacementError(
            f"{len(parts)} reconstructed parts for {isolated.num_parts} isolated parts ({', '.join(isolated.names)}); "
            f"connect the reconstructions of exactly these isolated images, in the same order"
        )
    if len(crop_boxes) != isolated.num_parts:
        raise PlacementError(f"{len(crop_boxes)} crop boxes for {isolated.num_parts} parts; give one per part")
    for name, part in zip(isolated.names, parts):
        if part.faces.shape[0] == 0 or not torch.isfinite(part.vertices).all():
            raise PlacementError(f"part {name!r}: its mesh is empty or has NaN/infinite vertices; check its reconstruction")
    for name, box in zip(isolated.names, crop_boxes):
        if box is not None and (len(box) != 3 or int(box[2]) < 1):
            raise PlacementError(f"part {name!r}: a crop box is (top, left, side) with side >= 1, got {tuple(box)}")
    if options.depth_source == "reference" and reference is None:
        raise PlacementError("depth_source is 'reference' but no reference is connected; connect the whole object's "
                             "reconstruction (and its views), or choose another depth source")
    if options.depth_source == "depth map" and depth_map is None:
        raise PlacementError("depth_source is 'depth map' but no depth map is connected; connect a depth IMAGE "
                             "(MoGe, Depth Anything) or choose another depth source")
    if reference is not None and reference_box is None:
        raise PlacementError("the reference has no crop box; connect the Multi-View views it was reconstructed from")
    if depth_map is not None:
        if depth_map.ndim == 4:
            depth_map = depth_map[0]
        if depth_map.ndim != 3 or tuple(depth_map.shape[:2]) != isolated.image_size:
            raise PlacementError(
                f"the depth map has shape {tuple(depth_map.shape)} but the input image is "
                f"{isolated.image_size[1]}x{isolated.image_size[0]}; connect the depth of the same input image (any "
                f"resolution of the same aspect ratio is resized)"
            )
        if not torch.isfinite(depth_map).all():
            raise PlacementError("the depth map contains NaN or infinite values")


def _depth_map_at_input_size(depth_map: Optional[torch.Tensor], image_size: tuple[int, int]) -> Optional[torch.Tensor]:
    """A depth map of the input image at another resolution (depth preprocessors work at their own, e.g.
    512 px) resized to the input image's size when the aspect ratio is the same; anything else is left
    for :func:`_check_inputs` to refuse."""
    if depth_map is None or depth_map.ndim not in (3, 4) or (depth_map.ndim == 4 and depth_map.shape[0] != 1):
        return depth_map
    values = depth_map[0] if depth_map.ndim == 4 else depth_map  # (h, w, C)
    (h, w), (height, width) = values.shape[:2], image_size
    if (h, w) == (height, width) or min(h, w) < 1 or abs((w / h) / (width / height) - 1.0) > 0.02:
        return depth_map
    logger.info("resizing the %dx%d depth map to the %dx%d input image", w, h, width, height)
    resized = F.interpolate(values.permute(2, 0, 1)[None].float(), size=(height, width), mode="bilinear",
                            align_corners=False)
    return resized[0].permute(1, 2, 0)


def _resolve_depth_source(options: PlacementOptions, reference, depth_map) -> str:
    if options.depth_source != "auto":
        return options.depth_source
    if reference is not None:
        return "reference"
    return "depth map" if depth_map is not None else "none"


@torch.no_grad()
def place_parts(
    parts: Sequence[Part],
    isolated: IsolatedParts,
    crop_boxes: Sequence[Optional[Sequence[int]]],
    options: PlacementOptions = PlacementOptions(),
    reference: Optional[Sequence[Part]] = None,
    reference_box: Optional[Sequence[int]] = None,
    depth_map: Optional[torch.Tensor] = None,
    runtime: Optional[Runtime] = None,
) -> PlacementResult:
    """Place ``parts`` (one per isolated part, in its order) into the input image's assembly frame.

    crop_boxes: per part the Multi-View crop ``(top, left, side)`` in input pixels (``MultiView.crop_box``),
        or None for a mesh that did not come through Multi-View (then it is normalised like a
        reconstruction and its crop box is recomputed from its mask). reference / reference_box: the
        whole object reconstructed from the input image and its Multi-View crop box. depth_map: an
        IMAGE ``[1,H,W,3]`` of relative depth of the input image. Returns the parts with transforms set.
    """
    runtime = runtime or default_runtime("cpu", torch.float32)
    depth_map = _depth_map_at_input_size(depth_map, isolated.image_size)
    _check_inputs(parts, isolated, crop_boxes, reference, reference_box, depth_map, options)
    height, width = isolated.image_size
    frame = AssemblyFrame(height, width, options.input_fov_deg)
    size = options.render_size
    targets = frame.to_square(isolated.masks, size) > 0.5  # (P, S, S)
    visible = frame.to_square(isolated.visible.float(), size) > 0.5
    total = isolated.num_parts * (2 if options.max_penetration < 1.0 else 1) + 1
    runtime.progress(0, total, None)

    # 1-2. crop box, then silhouette matching, per part
    transforms, box_ious, ious = [], [], []
    for index, (name, part, box) in enumerate(zip(isolated.names, parts, crop_boxes)):
        base = part.transform.double()
        if box is None:
            base = normalise_like_reconstruction(_with_transform(part, base)) @ base
            box = square_crop_box(isolated.masks[index], FOREGROUND_RATIO, index)
        transform = frame.box_transform(box) @ base
        transform, box_iou, iou = _refine_silhouette(part, transform, targets[index], frame, options, runtime)
        if options.silhouette_rounds and iou < 0.3:
            logger.warning("part %r: its rendered silhouette matches its mask poorly (IoU %.2f); its reconstruction "
                           "may not show the same part", name, iou)
        transforms.append(transform)
        box_ious.append(box_iou)
        ious.append(iou)
        runtime.progress(index + 1, total, None)

    # 3. depth along the rays
    source = _resolve_depth_source(options, reference, depth_map)
    factors = [1.0] * len(parts)
    if source != "none":
        cameras = frame.cameras(size)
        depths = [_render_alone(part, transform, cameras, runtime)[1] for part, transform in zip(parts, transforms)]
        if source == "reference":
            reference_depth = _reference_depth(reference, frame.box_transform(reference_box), cameras, runtime)
            factors = _depth_factors_from_reference(depths, visible, reference_depth, isolated.names)
        else:
            values = depth_map[0] if depth_map.ndim == 4 else depth_map
            values = values[..., :3].float().mean(-1)
            if options.depth_map_encoding == "near is bright":
                values = 1.0 - values
            square = frame.to_square(values[None], size)[0]
            fitted = _depth_factors_from_map(depths, visible, square, isolated.names)
            factors = fitted if fitted is not None else factors
        transforms = [about_camera(k) @ t for k, t in zip(factors, transforms)]

    # 4. interpenetration
    pushed = _separate(parts, transforms, frame, options, runtime)
    runtime.progress(total - 1, total, None)

    placed = [Part(name=name, vertices=part.vertices, faces=part.faces, vertex_colors=part.vertex_colors,
                   transform=transform.float(), display_color=part.display_color)
              for name, part, transform in zip(isolated.names, parts, transforms)]
    preview = render_parts(placed, frame.cameras(size), normalization=Normalization(), device=runtime.device).images[0]
    runtime.progress(total, total, preview)
    report = tuple(PartPlacement(name, b, i, k, p) for name, b, i, k, p in zip(isolated.names, box_ious, ious, factors, pushed))
    return PlacementResult(parts=placed, report=report, depth_source=source, preview=frame.from_square(preview).contiguous())
