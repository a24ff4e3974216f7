"""A triangle rasteriser in plain PyTorch: perspective cameras, a z-buffer, per-pixel triangle ids.

No compiled extension (users of 3D packs ask for installs without nvdiffrast/pytorch3d, see
REFERENCE.md). Scanline rasterisation, vectorised: every (view, triangle) pair is expanded into the
pixel rows of its screen bounding box, each row into the pixel centres between the triangle's left
and right edges on that row, and the nearest fragment per pixel wins through one
``scatter_reduce("amin")`` over a packed ``(depth bits << 32) | pair index`` key. Pairs are processed in
chunks whose bounding boxes hold at most ``max_fragments`` pixels, so memory stays bounded whatever
the mesh. The same code runs on CPU and CUDA.

Conventions: world points and OpenGL camera-to-world matrices (camera looks down its -z, y up); the
image has row 0 at the top and pixel ``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)``;
square images with a symmetric field of view ``fov_deg`` (InstantMesh's ``FOV_to_intrinsics``).
Triangles with a vertex closer than ``near`` to the camera plane are dropped, not clipped: the
cameras here orbit a normalised object and never come that close.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

_NO_HIT = torch.iinfo(torch.int64).max
_SPAN_TOLERANCE = 1e-4  # pixels of slack on each row span, so float error opens no cracks along shared edges
_PAIR_BITS = 32  # low bits of the z-buffer key: which (view, triangle) pair of the setup drew the pixel


@dataclass(frozen=True)
class Rasterized:
    """What is seen at each pixel of ``V`` square views of side ``S``.

    triangle: ``[V,S,S]`` int64 index into ``faces``, -1 where no triangle covers the pixel centre.
    barycentric: ``[V,S,S,3]`` perspective-correct barycentric weights of the triangle's vertices
        (zero where nothing is hit).
    depth: ``[V,S,S]`` distance along the camera's viewing axis (``-z`` in camera space), 0 where
        nothing is hit.
    """

    triangle: torch.Tensor
    barycentric: torch.Tensor
    depth: torch.Tensor

    @property
    def hit(self) -> torch.Tensor:
        return self.triangle >= 0


def focal_pixels(fov_deg: float, size: int) -> float:
    """Focal length in pixels of a square image of ``size`` pixels with field of view ``fov_deg``."""
    return 0.5 / math.tan(math.radians(fov_deg) * 0.5) * size


def project(vertices: torch.Tensor, c2w: torch.Tensor, fov_deg: float, size: int,
            pixel_offset: tuple[float, float] = (0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """World points ``[N,3]`` → pixel coordinates ``[V,N,2]`` (x right, y down) and depths ``[V,N]``.

    ``pixel_offset`` (dx, dy) moves the sampling grid: pixel ``(row, col)`` then samples the image plane
    at ``(col + 0.5 + dx, row + 0.5 + dy)``. Supersampling renders one pass per sub-pixel offset
    instead of one image s times larger, so its memory does not grow with s².
    """
    w2c = torch.linalg.inv(c2w.double()).to(vertices.dtype)  # (V, 4, 4)
    camera = vertices[None] @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # (V, N, 3)
    depth = -camera[..., 2]  # OpenGL cameras look down -z
    focal = focal_pixels(fov_deg, size)
    safe = torch.where(depth.abs() > 1e-12, depth, torch.full_like(depth, 1e-12))
    x = camera[..., 0] / safe * focal + 0.5 * size - pixel_offset[0]
    y = 0.5 * size - camera[..., 1] / safe * focal - pixel_offset[1]  # image rows grow downwards, camera y points up
    return torch.stack([x, y], dim=-1), depth


@dataclass(frozen=True)
class _Setup:
    """Per (view, triangle) pair that covers at least one pixel centre."""

    pair: torch.Tensor  # (E,) index v * M + f
    x0: torch.Tensor  # (E,) first pixel column of the bounding box
    y0: torch.Tensor  # (E,) first pixel row
    width: torch.Tensor  # (E,) bounding-box width in pixels
    height: torch.Tensor  # (E,) bounding-box height in pixels
    count: torch.Tensor  # (E,) width * height
    edges: torch.Tensor  # (E, 3, 4) per edge: lowest y, highest y, x at that lowest y, dx/dy (box-local)
    plane: torch.Tensor  # (E, 9) l0, l1 and 1/depth as A*x + B*y + C in box-local pixel coordinates
    origin: torch.Tensor  # (E,) flat index of the box's first pixel in the [V,S,S] z-buffer


def _setup_pairs(screen: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, size: int, near: float,
                 cull_backfaces: bool) -> _Setup:
    v, m = screen.shape[0], faces.shape[0]
    corners = screen[:, faces].double()  # (V, M, 3, 2)
    corner_depth = depth[:, faces].double()  # (V, M, 3)
    valid = (corner_depth > near).all(-1)
    lo = corners.amin(2).clamp(-1.0, size + 1.0)
    hi = corners.amax(2).clamp(-1.0, size + 1.0)
    # pixel centres c + 0.5 inside [lo, hi]: c in [ceil(lo - 0.5), floor(hi - 0.5)]
    first = (lo - 0.5).ceil().clamp(min=0)
    last = (hi - 0.5).floor().clamp(max=size - 1)
    extent = (last - first + 1).clamp(min=0)
    valid &= (extent > 0).all(-1)

    # Corners relative to the box's first pixel keep the plane coefficients small and precise.
    local = corners - first[:, :, None, :]
    (ax, ay), (bx, by), (cx, cy) = [local[:, :, i].unbind(-1) for i in range(3)]
    area2 = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)  # twice the signed area, y down
    valid &= area2.abs() > 1e-12
    if cull_backfaces:
        valid &= area2 < 0  # counter-clockwise in the camera (y up) is clockwise with y down

    pair = valid.reshape(-1).nonzero().squeeze(1)
    view_index = pair // m
    take = lambda t: t.reshape(v * m, *t.shape[2:])[pair]  # noqa: E731
    ax, ay, bx, by, cx, cy, area2 = (take(t) for t in (ax, ay, bx, by, cx, cy, area2))
    inv_depth = 1.0 / take(corner_depth)  # (E, 3)

    def edge(px, py, qx, qy):
        """Coefficients of E(p, q, x) = (qx - px)(y - py) - (qy - py)(x - px) = A x + B y + C."""
        return -(qy - py), (qx - px), (qy - py) * px - (qx - px) * py

    a0, b0, c0 = (t / area2 for t in edge(bx, by, cx, cy))  # weight of corner a
    a1, b1, c1 = (t / area2 for t in edge(cx, cy, ax, ay))  # weight of corner b
    q0, q1, q2 = inv_depth.unbind(-1)
    # 1/depth is affine in screen space: l0 q0 + l1 q1 + (1 - l0 - l1) q2
    az = a0 * (q0 - q2) + a1 * (q1 - q2)
    bz = b0 * (q0 - q2) + b1 * (q1 - q2)
    cz = c0 * (q0 - q2) + c1 * (q1 - q2) + q2
    plane = torch.stack([a0, b0, c0, a1, b1, c1, az, bz, cz], dim=-1).float()

    # Edges for the row spans, each stored from its lower end; horizontal edges never match a row.
    starts, ends = torch.stack([ax, bx, cx, ay, by, cy], -1).view(-1, 2, 3), torch.stack([bx, cx, ax, by, cy, ay], -1).view(-1, 2, 3)
    low_is_start = starts[:, 1] <= ends[:, 1]
    low = torch.where(low_is_start[:, None], starts, ends)  # (E, 2, 3) x/y of each edge's lower end
    high = torch.where(low_is_start[:, None], ends, starts)
    rise = high[:, 1] - low[:, 1]
    flat = rise <= 0
    slope = (high[:, 0] - low[:, 0]) / torch.where(flat, torch.ones_like(rise), rise)
    y_low = torch.where(flat, torch.full_like(rise, math.inf), low[:, 1])
    edges = torch.stack([y_low, high[:, 1], low[:, 0], slope], dim=-1).float()  # (E, 3, 4)

    first, extent = take(first).long(), take(extent).long()
    origin = (view_index * size + first[:, 1]) * size + first[:, 0]
    return _Setup(pair=pair, x0=first[:, 0], y0=first[:, 1], width=extent[:, 0], height=extent[:, 1],
                  count=extent[:, 0] * extent[:, 1], edges=edges, plane=plane, origin=origin)


def _setup_views(screen: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, size: int, near: float,
                 cull_backfaces: bool) -> _Setup:
    """``_setup_pairs`` one view at a time (its temporaries are O(triangles), not O(views x triangles))."""
    per_view = []
    for view in range(screen.shape[0]):
        setup = _setup_pairs(screen[view:view + 1], depth[view:view + 1], faces, size, near, cull_backfaces)
        per_view.append(dataclasses.replace(setup, pair=setup.pair + view * faces.shape[0],
                                            origin=setup.origin + view * size * size))
    return _Setup(**{f.name: torch.cat([getattr(s, f.name) for s in per_view]) for f in dataclasses.fields(_Setup)})


def _chunks(count: torch.Tensor, max_fragments: int) -> list[tuple[int, int]]:
    """Consecutive pair ranges whose candidate pixels add up to at most ``max_fragments`` (a single
    pair larger than that forms its own chunk)."""
    inclusive = count.cumsum(0)
    bounds, start, total = [], 0, count.shape[0]
    while start < total:
        before = int(inclusive[start - 1]) if start else 0
        end = int(torch.searchsorted(inclusive, before + max_fragments, right=True))
        end = max(end, start + 1)
        bounds.append((start, end))
        start = end
    return bounds


def _plane_at(plane: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(l0, l1, 1/depth) of each fragment from its pair's plane coefficients."""
    l0 = plane[:, 0] * x + plane[:, 1] * y + plane[:, 2]
    l1 = plane[:, 3] * x + plane[:, 4] * y + plane[:, 5]
    inv_depth = plane[:, 6] * x + plane[:, 7] * y + plane[:, 8]
    return l0, l1, inv_depth


def _spread(count: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For items with ``count`` slots each: the item of every slot and the slot's rank within its item."""
    owner = torch.repeat_interleave(torch.arange(count.shape[0], device=device), count)
    rank = torch.arange(owner.shape[0], device=device) - (count.cumsum(0) - count)[owner]
    return owner, rank


def _depth_test(setup: _Setup, size: int, views: int, max_fragments: int) -> torch.Tensor:
    """The z-buffer ``[V*S*S]`` of packed keys (``_NO_HIT`` where empty)."""
    device = setup.plane.device
    zbuffer = torch.full((views * size * size,), _NO_HIT, dtype=torch.int64, device=device)
    for start, end in _chunks(setup.count, max_fragments):
        # 1. rows: every pixel row of every pair's bounding box, and the span of centres the triangle covers
        pair_of_row, row = _spread(setup.height[start:end], device)
        pair_of_row += start
        y = row.float() + 0.5  # box-local y of the row's pixel centres
        edges = setup.edges[pair_of_row]  # (R, 3, 4)
        crosses = (y[:, None] >= edges[..., 0]) & (y[:, None] <= edges[..., 1])
        x = edges[..., 2] + (y[:, None] - edges[..., 0]) * edges[..., 3]  # (R, 3)
        left = torch.where(crosses, x, torch.full_like(x, math.inf)).amin(-1)
        right = torch.where(crosses, x, torch.full_like(x, -math.inf)).amax(-1)
        first = (left - 0.5 - _SPAN_TOLERANCE).ceil().clamp(min=0)
        last = torch.minimum((right - 0.5 + _SPAN_TOLERANCE).floor(), setup.width[pair_of_row].float() - 1)
        span = (last - first + 1).clamp(min=0).long()
        # 1/depth along the row is affine in x: base + slope * x
        depth_plane = setup.plane[pair_of_row, 6:]
        base = depth_plane[:, 1] * y + depth_plane[:, 2]
        row_origin = setup.origin[pair_of_row] + row * size + first.long()

        # 2. fragments: every covered pixel centre, depth-tested in one scatter
        row_of_fragment, column = _spread(span, device)
        x = first[row_of_fragment] + column.float() + 0.5
        inv_depth = (base[row_of_fragment] + depth_plane[row_of_fragment, 0] * x).clamp(min=1e-20)
        pixel = row_origin[row_of_fragment] + column
        # Positive float32 depths order like their bit patterns, so one integer min is the z-test;
        # ties go to the lower pair index, which keeps the result deterministic.
        depth_bits = (1.0 / inv_depth).view(torch.int32).long()
        zbuffer.scatter_reduce_(0, pixel, (depth_bits << _PAIR_BITS) | pair_of_row[row_of_fragment], reduce="amin")
    return zbuffer


@torch.no_grad()
def rasterize(vertices: torch.Tensor, faces: torch.Tensor, c2w: torch.Tensor, fov_deg: float, size: int, *,
              near: float = 1e-3, cull_backfaces: bool = False, max_fragments: int = 1 << 20,
              pixel_offset: tuple[float, float] = (0.0, 0.0)) -> Rasterized:
    """Rasterise one triangle mesh into ``V`` square views.

    vertices ``[N,3]`` in the cameras' world frame; faces ``[M,3]`` int; c2w ``[V,4,4]`` OpenGL
    camera-to-world. ``max_fragments`` bounds how many bounding-box pixels are handled at once, and so
    the working memory. ``pixel_offset`` shifts where each pixel samples (see :func:`project`). ``cull_backfaces`` drops triangles wound clockwise as seen by the camera (only safe
    for closed, consistently wound meshes).
    """
    if vertices.ndim != 2 or vertices.shape[-1] != 3 or faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize wants vertices [N,3] and faces [M,3], got {tuple(vertices.shape)} and {tuple(faces.shape)}")
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"rasterize wants camera-to-world matrices [V,4,4], got {tuple(c2w.shape)}")
    device = vertices.device
    views = c2w.shape[0]
    vertices = vertices.float()
    faces = faces.long().to(device)
    if views * faces.shape[0] >= 1 << (_PAIR_BITS - 1):
        raise ValueError(f"{views} views x {faces.shape[0]} triangles exceed the rasteriser's {1 << (_PAIR_BITS - 1)} pairs")

    screen, depth = project(vertices, c2w.to(device), fov_deg, size, pixel_offset)
    setup = _setup_views(screen, depth, faces, size, near, cull_backfaces)
    zbuffer = _depth_test(setup, size, views, max_fragments)

    hit = zbuffer != _NO_HIT
    pixel = hit.nonzero().squeeze(1)
    owner = (zbuffer[pixel] & ((1 << _PAIR_BITS) - 1))  # index into setup
    x = pixel % size - setup.x0[owner]
    y = (pixel // size) % size - setup.y0[owner]
    l0, l1, _ = _plane_at(setup.plane[owner], x.float() + 0.5, y.float() + 0.5)
    screen_weights = torch.stack([l0, l1, 1.0 - l0 - l1], dim=-1).clamp(min=0)  # (P, 3)
    face = setup.pair[owner] % faces.shape[0]
    view = setup.pair[owner] // faces.shape[0]
    corner_depth = depth[view[:, None], faces[face]]  # (P, 3)
    # Perspective-correct weights: screen-space weights divided by each corner's depth, renormalised.
    weights = screen_weights / corner_depth
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-20)

    triangle = torch.full((views * size * size,), -1, dtype=torch.int64, device=device)
    triangle[pixel] = face
    barycentric = torch.zeros(views * size * size, 3, device=device)
    barycentric[pixel] = weights
    depth_map = torch.zeros(views * size * size, device=device)
    depth_map[pixel] = (zbuffer[pixel] >> _PAIR_BITS).int().view(torch.float32)
    return Rasterized(triangle=triangle.view(views, size, size), barycentric=barycentric.view(views, size, size, 3),
                      depth=depth_map.view(views, size, size))
