"""Views of P parts → one vertex-coloured mesh per part, all in one object frame.

Numbered steps: check and prepare the views, encode all parts in batches (encoder + transformer),
then per part query the fields on a grid in chunks bounded by the memory budget and extract the
surface (FlexiCubes for the mesh variant, marching cubes for the NeRF variant), colour the vertices,
move them to the glTF frame and optionally decimate.
"""

from __future__ import annotations

import functools
from dataclasses import replace
import logging
from typing import Optional

import torch
import torch.nn.functional as F

from ..cameras import LAYOUTS, instantmesh_camera_vectors
from ..parts import Part, zup_to_gltf
from ..runtime import Runtime, default_runtime
from ..views import PartViews
from .lrm import LargeReconstructionModel, sample_triplanes
from .options import DEFAULT_RESOLUTION, VIEW_SUBSETS, ReconstructionOptions

logger = logging.getLogger(__name__)

LRM_VIEW_SIZE = 320  # InstantMesh's run.py resizes the Zero123++ views to 320 (bicubic, antialiased)
GRID_SCALE = 2.1  # configs/instant-mesh-*.yaml grid_scale: the FlexiCubes grid spans [-1.05, 1.05]
DEFORMATION_MULTIPLIER = 4.0  # lrm_mesh.py: deformation = tanh(d) / (grid_res * 4)
_EMPTY_ALPHA = 0.5


class NoSurface(Exception):
    """The field of one part has no iso-surface; the message says what the field held (internal)."""


class ReconstructionError(ValueError):
    """The views cannot be reconstructed; the message says why."""


def _check_views(views: PartViews) -> None:
    if views.layout not in LAYOUTS:
        raise ReconstructionError(f"unknown view layout {views.layout!r}; reconstruction accepts {sorted(LAYOUTS)}")
    if views.images.shape[1] != LAYOUTS[views.layout].num_views:
        raise ReconstructionError(
            f"{views.images.shape[1]} views given; InstantMesh reconstructs from the 6 Zero123++ views "
            f"(layouts {sorted(LAYOUTS)}), optionally using the 4-view subset 0,2,4,5"
        )
    if not (torch.isfinite(views.images).all() and torch.isfinite(views.alpha).all()):
        raise ReconstructionError("the views contain NaN or infinite values; check the node that produced them")


def prepare_views(views: PartViews, subset: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Views on white at 320 px, ``[P,V',3,320,320]``, and their camera vectors ``[V',16]``."""
    images = views.images[:, list(subset)].float()
    alpha = views.alpha[:, list(subset)].float()[..., None]
    background = torch.tensor(views.background, dtype=images.dtype)
    # InstantMesh was trained on white backgrounds: move any other plain background to white.
    images = (images + (1.0 - alpha) * (1.0 - background)).clamp(0.0, 1.0)
    p, v, h, w, _ = images.shape
    images = images.permute(0, 1, 4, 2, 3).reshape(p * v, 3, h, w)
    if (h, w) != (LRM_VIEW_SIZE, LRM_VIEW_SIZE):
        logger.info("resizing %dx%d views to %d px for the reconstruction model", w, h, LRM_VIEW_SIZE)
        images = F.interpolate(images, size=(LRM_VIEW_SIZE, LRM_VIEW_SIZE), mode="bicubic", antialias=True, align_corners=False)
    images = images.clamp(0.0, 1.0).reshape(p, v, 3, LRM_VIEW_SIZE, LRM_VIEW_SIZE)
    cameras = instantmesh_camera_vectors(views.c2w[list(subset)], views.fov_deg)
    return images, cameras


def _points_per_chunk(model: LargeReconstructionModel, budget_mb: int, width_factor: int = 1) -> int:
    """Grid points whose features and MLP activations fit in the budget (about 2x for safety)."""
    features = 3 * model.config.triplane_dim * width_factor
    per_point = (features + 4 * model.config.decoder_hidden) * 4 * 2
    return max(4096, budget_mb * 2**20 // per_point)


def encode_parts(
    model: LargeReconstructionModel, images: torch.Tensor, cameras: torch.Tensor, options: ReconstructionOptions, runtime: Runtime
) -> torch.Tensor:
    """Triplanes ``[P,3,C,H,W]`` for all parts, in batches as large as the memory budget allows."""
    # Activation memory of one part through the transformer, roughly: tokens x width x layers x 4 bytes x 8.
    tokens = images.shape[1] * (1 + (LRM_VIEW_SIZE // model.config.patch_size) ** 2) + 3 * model.config.triplane_low_res**2
    per_part = tokens * max(model.config.encoder_dim, model.config.transformer_dim) * 4 * 8
    batch = max(1, min(images.shape[0], options.memory_budget_mb * 2**20 // per_part))
    planes = []
    for start in range(0, images.shape[0], batch):
        runtime.check_interrupt()
        chunk = images[start : start + batch].to(runtime.device, model.dtype)
        cams = cameras[None].expand(chunk.shape[0], -1, -1).to(runtime.device, model.dtype)
        planes.append(model.forward_planes(chunk, cams))
    return torch.cat(planes)


@functools.lru_cache(maxsize=2)
def _cached_grid(resolution: int, device: str):
    # The grid is geometry, not a model: building it once per resolution saves most of the setup.
    from .flexicubes import make_grid

    return make_grid(resolution, GRID_SCALE, torch.device(device))


def _query_chunks(fn, points: torch.Tensor, chunk: int, runtime: Runtime) -> list:
    outputs = []
    for start in range(0, points.shape[0], chunk):
        runtime.check_interrupt()
        outputs.append(fn(points[start : start + chunk]))
    return outputs


def _features(model: LargeReconstructionModel, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return sample_triplanes(planes, points[None].to(planes.dtype))[0]  # (M, 3C)


# Memory of surface extraction. Grid, per point: the SDF (float32) and the boolean volumes of
# surface_cubes (measured ~11 bytes at R=256), or the NeRF density field, its concatenation and the
# closed copy. Surface: what FlexiCubes holds per cube the surface crosses (corner ids, crossing edges,
# dual vertices, weights, faces; measured up to ~900 bytes), or per grid edge marching cubes crosses,
# and in both cases the decimation of the ~2 faces each gives (~1 KB a face). The queries get the
# rest of the budget, at least MIN_QUERY_MB. Measured with benchmarks/bench_memory.py.
GRID_BYTES_PER_POINT = {"mesh": 12, "nerf": 16}
SURFACE_BYTES_PER_CUBE = 2048
MIN_QUERY_MB = 64


class OverBudget(ReconstructionError):
    """Extraction at this resolution would need more than memory_budget_mb; the message says how much."""


def grid_bytes(resolution: int, variant: str) -> int:
    """Bytes the extraction grid holds at ``resolution`` (before the surface is known)."""
    points = (resolution + 1) ** 3 if variant == "mesh" else resolution**3
    return points * GRID_BYTES_PER_POINT[variant]


def check_grid_budget(resolution: int, variant: str, options: ReconstructionOptions) -> None:
    """Refuse, before anything is allocated, a resolution whose grid alone exceeds the budget."""
    budget = options.memory_budget_mb * 2**20
    needed = grid_bytes(resolution, variant) + MIN_QUERY_MB * 2**20
    if needed > budget:
        fits = max((r for r in range(16, resolution, 8) if grid_bytes(r, variant) + MIN_QUERY_MB * 2**20 <= budget),
                   default=None)
        raise OverBudget(
            f"resolution {resolution} needs about {_mb(needed)} MB for its {resolution}^3 extraction grid and "
            f"queries, over memory_budget_mb={options.memory_budget_mb}. Raise memory_budget_mb to at least "
            f"{_mb(needed)} (plus ~2 KB per cell the surface crosses) if that much memory is free on the device"
            + (f", or lower resolution to {fits} or less" if fits else ", or lower resolution")
        )


def _check_surface_budget(resolution: int, surface: int, options: ReconstructionOptions, variant: str = "mesh") -> None:
    needed = grid_bytes(resolution, variant) + surface * SURFACE_BYTES_PER_CUBE
    what = "cells" if variant == "mesh" else "edges"
    total = resolution**3 if variant == "mesh" else 3 * resolution**3
    if needed > options.memory_budget_mb * 2**20:
        raise OverBudget(
            f"the surface crosses {surface} of the {resolution}^3 grid's {what} (a {100 * surface / total:.1f}% "
            f"share); extracting it needs about {_mb(needed)} MB, over memory_budget_mb={options.memory_budget_mb}. "
            f"Raise memory_budget_mb to at least {_mb(needed) + MIN_QUERY_MB} if that much memory is free on the device, or "
            f"lower resolution (the cells on the surface fall with its square)"
        )


def _mb(size: int) -> int:
    return -(-size // 2**20)


def _query_budget_mb(resolution: int, variant: str, options: ReconstructionOptions) -> int:
    """What the grid leaves of the budget for query chunks (check_grid_budget keeps it >= MIN_QUERY_MB)."""
    return max(MIN_QUERY_MB, options.memory_budget_mb - _mb(grid_bytes(resolution, variant)))


def extract_flexicubes(
    model: LargeReconstructionModel, planes: torch.Tensor, resolution: int, options: ReconstructionOptions, runtime: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """One part's triplanes ``[1,3,C,H,W]`` → (vertices, faces) in InstantMesh's z-up frame.

    Memory: the SDF over the ``(R+1)^3`` grid (no vertex table: positions are computed per chunk),
    then only the surface cubes' corners are deformed and weighted. The grid and the surface are
    checked against ``memory_budget_mb`` (:class:`OverBudget`); queries run in chunks within it.
    """
    from .flexicubes import cube_corner_ids, extract_mesh, surface_cubes

    grid = _cached_grid(resolution, str(planes.device))
    decoder = model.decoder
    chunk = _points_per_chunk(model, _query_budget_mb(resolution, "mesh", options))
    device = planes.device

    # 1. SDF at every grid vertex, in chunks of positions computed from the vertex ids.
    sdf = torch.empty(grid.num_vertices, device=device)
    for start in range(0, grid.num_vertices, chunk):
        runtime.check_interrupt()
        ids = torch.arange(start, min(start + chunk, grid.num_vertices), device=device)
        sdf[start : start + ids.shape[0]] = decoder.sdf(_features(model, planes, grid.positions(ids))).float().reshape(-1)
    if options.watertight:
        sdf = close_at_grid_boundary_sdf(sdf, resolution, in_place=True)
    cube_ids = surface_cubes(grid, sdf)
    if cube_ids.numel() == 0:
        side = "positive" if float(sdf.min()) > 0 else "negative"
        raise NoSurface(
            f"the predicted signed distance never changes sign on the {resolution}^3 grid (every value is {side}: "
            f"{float(sdf.min()):.3g}..{float(sdf.max()):.3g}), so there is no surface between inside and outside. "
            f"Upstream InstantMesh would output the grid's bounding box here"
        )
    _check_surface_budget(resolution, cube_ids.numel(), options)

    # 2. Deformation only at the surface cubes' corners (FlexiCubes reads no other vertex).
    corner_ids = torch.unique(cube_corner_ids(grid, cube_ids))  # sorted
    offsets = torch.cat(_query_chunks(lambda ids: decoder.deformation(_features(model, planes, grid.positions(ids))).float(),
                                      corner_ids, chunk, runtime))
    corner_vertices = grid.positions(corner_ids) + torch.tanh(offsets) / (resolution * DEFORMATION_MULTIPLIER)
    del offsets

    # 3. Weights only for cubes on the surface (upstream evaluates all); corner features are sampled
    # per chunk of cubes rather than kept for every corner.
    cube_chunk = max(1, chunk // 8)

    def cube_weights(ids: torch.Tensor) -> torch.Tensor:
        corners = cube_corner_ids(grid, ids)  # (S', 8), corners in grid order
        features = _features(model, planes, grid.positions(corners.reshape(-1)))
        return decoder.cube_weights(features.reshape(ids.shape[0], -1)).float()  # (S', 21)

    weights = torch.cat(_query_chunks(cube_weights, cube_ids, cube_chunk, runtime))
    return extract_mesh(grid, sdf, corner_vertices, cube_ids, weights, vertex_ids=corner_ids)


def close_at_grid_boundary_sdf(sdf: torch.Tensor, resolution: int, in_place: bool = False) -> torch.Tensor:
    """``((R+1)^3,)`` SDF with every grid vertex on the grid's faces made outside (positive).

    A field still inside where the grid ends (a part touching the box, or any field from untrained
    weights) would leave the extracted surface open along the box; outside there, the surface closes
    on the box instead, so every part is watertight whatever the weights. The magnitude is kept, so
    the crossing still lies between the two samples (vertices ordered x-major as in ``make_grid``).
    """
    n = resolution + 1
    field = sdf.reshape(n, n, n) if in_place else sdf.reshape(n, n, n).clone()
    for axis in range(3):
        for index in (0, n - 1):
            face = field.select(axis, index)
            face.copy_(face.abs().clamp_min(1e-6))
    return field.reshape(sdf.shape)


def close_at_grid_boundary_density(field, threshold: float):
    """The density grid with its outermost samples set below ``threshold`` (outside): the surface
    closes inside the grid instead of ending open at its boundary (see the SDF version)."""
    field = field.copy()
    outside = min(float(threshold) - 1.0, float(field.min()))
    for axis in range(3):
        for index in (0, -1):
            slicer = [slice(None)] * 3
            slicer[axis] = index
            field[tuple(slicer)] = outside
    return field


def extract_marching_cubes(
    model: LargeReconstructionModel, planes: torch.Tensor, resolution: int, options: ReconstructionOptions, runtime: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeRF density on a ``resolution``³ grid over [-1,1]³ → iso-surface at ``density_threshold``."""
    from skimage.measure import marching_cubes

    axis = torch.linspace(-1.0, 1.0, resolution, device=planes.device)
    chunk = _points_per_chunk(model, _query_budget_mb(resolution, "nerf", options))
    densities = []
    for x_start in range(0, resolution, max(1, chunk // resolution**2)):
        runtime.check_interrupt()
        xs = axis[x_start : x_start + max(1, chunk // resolution**2)]
        points = torch.stack(torch.meshgrid(xs, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        density, _ = model.decoder.density_and_color(_features(model, planes, points))
        densities.append(density.float().reshape(len(xs), resolution, resolution).cpu())
    field = torch.cat(densities).numpy()
    if options.watertight:
        field = close_at_grid_boundary_density(field, options.density_threshold)
    if not (field.min() < options.density_threshold < field.max()):
        # Upstream's marching cubes raises here (IndexError in InstantNeRF.extract_mesh).
        raise NoSurface(
            f"the predicted density never crosses density_threshold {options.density_threshold:g} on the "
            f"{resolution}^3 grid (it spans {float(field.min()):.3g}..{float(field.max()):.3g}), so there is no surface"
        )
    inside = field > options.density_threshold
    crossings = sum(int((inside.take(range(1, resolution), axis) != inside.take(range(resolution - 1), axis)).sum())
                    for axis in range(3))
    del inside
    _check_surface_budget(resolution, crossings, options, "nerf")
    # Density grows inwards; "ascent" orients the faces so their normals point out of the object.
    vertices, faces, _, _ = marching_cubes(field, level=options.density_threshold, gradient_direction="ascent")
    vertices = torch.from_numpy(vertices.copy()).float() / (resolution - 1) * 2 - 1
    return vertices.to(planes.device), torch.from_numpy(faces.astype("int64"))


def vertex_colors(model: LargeReconstructionModel, planes: torch.Tensor, vertices: torch.Tensor, options, runtime) -> torch.Tensor:
    chunk = _points_per_chunk(model, options.memory_budget_mb)
    if model.config.variant == "mesh":
        color = lambda p: model.decoder.color(_features(model, planes, p)).float()  # noqa: E731
    else:
        color = lambda p: model.decoder.density_and_color(_features(model, planes, p))[1].float()  # noqa: E731
    return torch.cat(_query_chunks(color, vertices.to(planes.device), chunk, runtime)).clamp(0, 1).cpu()


def decimate(vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, target_faces: int):
    """Quadric decimation (fast-simplification); colours follow the nearest kept vertex."""
    import fast_simplification
    from scipy.spatial import cKDTree

    if faces.shape[0] <= target_faces:
        return vertices, faces, colors
    reduction = 1.0 - target_faces / faces.shape[0]
    new_vertices, new_faces = fast_simplification.simplify(vertices.numpy(), faces.numpy().astype("int32"), reduction)
    _, nearest = cKDTree(vertices.numpy()).query(new_vertices)
    return torch.from_numpy(new_vertices).float(), torch.from_numpy(new_faces.astype("int64")), colors[torch.from_numpy(nearest)]


def textured_part(model: LargeReconstructionModel, planes: torch.Tensor, part: Part, views: PartViews, index: int,
                  options: ReconstructionOptions, runtime: Runtime) -> Part:
    """The part with a baked base-colour texture (:mod:`.texture`), or unchanged when it cannot be
    textured (the bake logs why). Baking happens in InstantMesh's z-up world, where the cameras are."""
    from .texture import PartViewsOfOne, bake_texture

    chunk = _points_per_chunk(model, options.memory_budget_mb)
    device = planes.device

    def field_color(points: torch.Tensor) -> torch.Tensor:
        if model.config.variant == "mesh":
            color = lambda p: model.decoder.color(_features(model, planes, p)).float()  # noqa: E731
        else:
            color = lambda p: model.decoder.density_and_color(_features(model, planes, p))[1].float()  # noqa: E731
        return torch.cat(_query_chunks(color, points.to(device), chunk, runtime)).clamp(0, 1)

    part_views = PartViewsOfOne(views.images[index].float(), views.alpha[index].float(), views.c2w.float(), views.fov_deg)
    zup = part.vertices[:, [2, 0, 1]].to(device)  # glTF → z up, the inverse of zup_to_gltf
    runtime.check_interrupt()
    baked = bake_texture(part.name, zup, part.faces.to(device), options.texture_options(), field_color, part_views)
    if baked is None:
        return part
    return replace(part, vertices=zup_to_gltf(baked.vertices).contiguous(), faces=baked.faces.contiguous(),
                   vertex_colors=part.vertex_colors[baked.source_vertex].contiguous(), uvs=baked.uvs, texture=baked.texture)


@torch.no_grad()
def reconstruct_parts(
    model: LargeReconstructionModel,
    views: PartViews,
    options: ReconstructionOptions = ReconstructionOptions(),
    runtime: Optional[Runtime] = None,
) -> list[Part]:
    """Each part's views → a watertight, vertex-coloured mesh in the glTF object frame."""
    runtime = runtime or default_runtime("cpu", torch.float32)
    # 1. check inputs and the grid's memory (before anything is allocated), drop parts without foreground
    _check_views(views)
    resolution = options.resolution or DEFAULT_RESOLUTION[model.config.variant]
    check_grid_budget(resolution, model.config.variant, options)
    subset = VIEW_SUBSETS[options.views]
    keep = [i for i in range(views.num_parts) if views.alpha[i, list(subset)].amax().item() >= _EMPTY_ALPHA]
    for i in sorted(set(range(views.num_parts)) - set(keep)):
        logger.warning("part %r has no foreground in its views and is skipped", views.names[i])
    if not keep:
        raise ReconstructionError(
            f"none of the {views.num_parts} parts has any foreground in its views ({', '.join(views.names)}); "
            "check the part masks or the completion step"
        )
    runtime.prepare(model)
    images, cameras = prepare_views(views, subset)

    # 2. encoder + transformer, batched over parts
    planes = encode_parts(model, images[keep], cameras, options, runtime)
    extract = extract_flexicubes if model.config.variant == "mesh" else extract_marching_cubes

    # 3. surface, colours, frame, decimation per part
    parts = []
    for done, (index, part_planes) in enumerate(zip(keep, planes)):
        name = views.names[index]
        try:
            vertices, faces = extract(model, part_planes[None], resolution, options, runtime)
        except NoSurface as empty:
            logger.warning(
                "part %r is skipped: %s. The model did not see a solid object in its views. Try: check that the "
                "part's views show it clearly on white (its masks, or Complete Parts with another seed), use all "
                "6 views, a higher resolution for a thin part%s", name, empty,
                ", or a lower density_threshold" if model.config.variant == "nerf" else "",
            )
            runtime.progress(done + 1, len(keep), None)
            continue
        colors = vertex_colors(model, part_planes[None], vertices, options, runtime)
        vertices = zup_to_gltf(vertices.float().cpu())
        faces = faces.cpu()
        if options.target_faces:
            vertices, faces, colors = decimate(vertices, faces, colors, options.target_faces)
        display_color = tuple(views.colors[index]) if views.colors is not None else None
        part = Part(name=name, vertices=vertices.contiguous(), faces=faces.contiguous(), vertex_colors=colors,
                    source="reconstruction", display_color=display_color)
        if options.texture != "off":
            part = textured_part(model, part_planes[None], part, views, index, options, runtime)
        parts.append(part)
        runtime.progress(done + 1, len(keep), None)
    if not parts:
        raise ReconstructionError(
            "no part produced a surface: the reconstruction model saw nothing it could close (see the warnings "
            "for each part); check the views that reach Reconstruct and the part masks"
        )
    return parts
