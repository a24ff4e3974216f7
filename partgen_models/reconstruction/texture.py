"""Baked base-colour textures for reconstructed parts: a UV atlas per part and a texture filled from
the part's views and, where no view sees the surface, from the reconstruction model's colour field.

Steps per part (all in InstantMesh's z-up world, where the views' cameras live):
1. UV atlas with xatlas (charts + packing; a maintained C++ library with wheels for Linux, Windows
   and macOS). Its vertex map splits vertices along chart seams.
2. Every texel's 3D point and normal: the atlas triangles rasterised in UV space by the pack's own
   rasteriser (a camera looking straight at the UV square, all vertices at one depth, so the
   perspective-correct weights are exactly the affine UV-space ones).
3. Colour from the views (``source`` "views" or "views+field"): each texel's point projected into
   every view; visible where its depth matches that view's depth map of the part (rasterised too),
   weighted by how squarely the view sees the surface (cos^``view_sharpness``), blended.
4. Colour from the field for texels no view sees ("field", or the remainder in "views+field"): the
   model's colour head at the texel's point, as InstantMesh's texture-map export queries it.
5. Empty texels around the charts are filled from their neighbours (``dilation`` pixels), so
   mip-mapping and bilinear filtering do not bleed the background into the seams.

Bad input never fails the part: a degenerate atlas, a part with no faces of any area or a part no
view sees gets a named warning and falls back (to the field, or to vertex colours).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..rendering.rasterizer import rasterize

logger = logging.getLogger(__name__)

TEXTURE_SOURCES = ("views+field", "views", "field")
TEXTURE_SIZES = (512, 4096)
_UV_CAMERA_DISTANCE = 1.0
_UV_FOV_DEG = 2 * math.degrees(math.atan(0.5 / _UV_CAMERA_DISTANCE))  # the unit UV square fills the frame


class TextureError(ValueError):
    """The texture options are invalid."""


@dataclass(frozen=True)
class TextureOptions:
    """How to bake.

    size: texture side in pixels (512..4096). Memory about ``size² x 200`` bytes while baking
        (1024: 0.2 GB, 4096: 3.1 GB, measured by benchmarks/bench_memory.py: mostly the UV raster and
        the dilation; view colours are computed in chunks); time grows with size².
    source: "views+field" (views where seen, the colour field elsewhere), "views" (texels no view
        sees take the nearest seen colour through dilation) or "field" (InstantMesh's texture path).
    dilation: pixels of padding grown around each chart.
    view_sharpness: exponent k of the cos^k weight of a view; higher favours the view that faces the
        surface most squarely (fewer blurred blends, sharper seams between views).
    depth_tolerance: share of the object's size by which a texel may lie behind the view's depth
        map and still count as seen.
    """

    size: int = 1024
    source: str = "views+field"
    dilation: int = 8
    view_sharpness: float = 4.0
    depth_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not TEXTURE_SIZES[0] <= self.size <= TEXTURE_SIZES[1]:
            raise TextureError(f"texture size must be an integer within {TEXTURE_SIZES[0]}..{TEXTURE_SIZES[1]}, got {self.size!r}")
        if self.source not in TEXTURE_SOURCES:
            raise TextureError(f"texture source must be one of {TEXTURE_SOURCES}, got {self.source!r}")
        if not 0 <= self.dilation <= 64:
            raise TextureError(f"dilation must be within 0..64 pixels, got {self.dilation}")
        for name in ("view_sharpness", "depth_tolerance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise TextureError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class PartViewsOfOne:
    """One part's views: images ``[V,H,W,3]`` sRGB 0..1, alpha ``[V,H,W]``, OpenGL c2w ``[V,4,4]``."""

    images: torch.Tensor
    alpha: torch.Tensor
    c2w: torch.Tensor
    fov_deg: float


@dataclass(frozen=True)
class BakedTexture:
    """vertices ``[K,3]`` (split along chart seams), faces ``[M,3]``, uvs ``[K,2]`` (v down),
    source_vertex ``[K]`` (the input vertex each came from), texture ``[S,S,3]`` sRGB, and the share of
    covered texels coloured from views and from the field."""

    vertices: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    source_vertex: torch.Tensor
    texture: torch.Tensor
    from_views: float
    from_field: float


def uv_atlas(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """xatlas charts and packing → (source vertex ``[K]``, faces ``[M,3]``, uvs ``[K,2]`` in 0..1, v down)."""
    try:
        import xatlas
    except ImportError as error:
        raise ImportError("baking textures needs xatlas: pip install xatlas (or set texture to 'off' "
                          "to keep vertex colours)") from error
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.double().cpu().numpy(), faces.long().cpu().numpy().astype("uint32"))
    chart_options = xatlas.ChartOptions()
    pack_options = xatlas.PackOptions()
    pack_options.padding = 2
    pack_options.bilinear = True
    atlas.generate(chart_options, pack_options)
    source, new_faces, uvs = atlas[0]
    # xatlas puts v = 0 at the bottom (OpenGL); glTF's texture origin is the top-left
    uvs = torch.from_numpy(uvs.astype("float32"))
    uvs[:, 1] = 1.0 - uvs[:, 1]
    return torch.from_numpy(source.astype("int64")), torch.from_numpy(new_faces.astype("int64")), uvs


def rasterize_uv(uvs: torch.Tensor, faces: torch.Tensor, size: int, device: torch.device):
    """Which triangle covers each texel centre ``[S,S]`` (-1: none) and its weights ``[S,S,3]``."""
    flat = torch.cat([uvs[:, :1], 1.0 - uvs[:, 1:2], torch.zeros_like(uvs[:, :1])], dim=1).to(device)  # row 0 = v 0
    camera = torch.eye(4, device=device)[None]
    camera[0, :3, 3] = torch.tensor([0.5, 0.5, _UV_CAMERA_DISTANCE], device=device)
    raster = rasterize(flat, faces.to(device), camera, _UV_FOV_DEG, size)
    return raster.triangle[0], raster.barycentric[0]


def _face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    corners = vertices[faces]
    return F.normalize(torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1), dim=-1)


def _sample(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``images`` ``[V,H,W,C]`` at pixel coordinates ``[V,P,2]`` (x, y) → ``[V,P,C]``."""
    v, h, w, _ = images.shape
    grid = torch.stack([pixels[..., 0] / w * 2 - 1, pixels[..., 1] / h * 2 - 1], dim=-1)[:, None]  # (V, 1, P, 2)
    sampled = F.grid_sample(images.permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=False, padding_mode="border")
    return sampled[:, :, 0].permute(0, 2, 1)


# Texels whose view colours are computed together: each holds ~40 floats per view of temporaries
# (pixels, depths, samples, weights), so 2^18 texels x 6 views stay near 250 MB whatever the size.
VIEW_CHUNK_TEXELS = 1 << 18


def colors_from_views(points: torch.Tensor, normals: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                      views: PartViewsOfOne, options: TextureOptions,
                      chunk: int = VIEW_CHUNK_TEXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Blended view colour ``[P,3]`` of each point and its total weight ``[P]`` (0: no view sees it).

    Points are handled ``chunk`` at a time (each point's colour depends on that point alone), so the
    memory is bounded whatever the texture size."""
    size = views.images.shape[1]
    c2w = views.c2w.to(points.device, torch.float32)
    depth_maps = rasterize(vertices, faces, c2w, views.fov_deg, size).depth  # (V, S, S)
    extent = float((vertices.amax(0) - vertices.amin(0)).norm())
    alpha_maps = views.alpha.to(points.device, torch.float32)[..., None]
    images = views.images.to(points.device, torch.float32)
    blended, total = [], []
    for start in range(0, points.shape[0], chunk):
        part_blended, part_total = _view_colors(points[start : start + chunk], normals[start : start + chunk], c2w,
                                                depth_maps, alpha_maps, images, views.fov_deg, extent, options)
        blended.append(part_blended)
        total.append(part_total)
    if not blended:
        return points.new_zeros((0, 3)), points.new_zeros((0,))
    return torch.cat(blended), torch.cat(total)


def _view_colors(points, normals, c2w, depth_maps, alpha_maps, images, fov_deg, extent, options):
    from ..rendering.rasterizer import project

    size = images.shape[1]
    pixels, depth = project(points, c2w, fov_deg, size)  # (V, P, 2), (V, P)
    seen_depth = _sample(depth_maps[..., None], pixels)[..., 0]
    inside = (pixels[..., 0] >= 0) & (pixels[..., 0] < size) & (pixels[..., 1] >= 0) & (pixels[..., 1] < size)
    visible = inside & (seen_depth > 0) & (depth <= seen_depth + options.depth_tolerance * extent)
    alpha = _sample(alpha_maps, pixels)[..., 0]
    to_camera = F.normalize(c2w[:, None, :3, 3] - points[None], dim=-1)
    facing = (to_camera * normals[None]).sum(-1).clamp(min=0)
    weight = facing.pow(options.view_sharpness) * alpha * visible  # (V, P)
    colors = _sample(images, pixels)  # (V, P, 3)
    total = weight.sum(0)
    blended = (colors * weight[..., None]).sum(0) / total.clamp(min=1e-12)[:, None]
    return blended, total


def dilate(texture: torch.Tensor, filled: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow filled texels ``[S,S]`` into empty neighbours ``pixels`` times (mean of filled 3x3 neighbours)."""
    image = texture.permute(2, 0, 1)[None] * filled[None, None]
    mask = filled[None, None].float()
    kernel = torch.ones(1, 1, 3, 3, device=texture.device)
    for _ in range(pixels):
        count = F.conv2d(mask, kernel, padding=1)
        summed = F.conv2d(image, kernel.expand(3, 1, 3, 3), padding=1, groups=3)
        grow = (mask == 0) & (count > 0)
        image = torch.where(grow, summed / count.clamp(min=1), image)
        mask = torch.where(grow, torch.ones_like(mask), mask)
    return image[0].permute(1, 2, 0)


def bake_texture(
    name: str,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    options: TextureOptions,
    field_color: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    views: Optional[PartViewsOfOne] = None,
) -> Optional[BakedTexture]:
    """One part (z-up world) → atlas and texture; None (with a warning naming the part) when the
    part cannot be textured, so the caller keeps its vertex colours."""
    device = vertices.device
    if faces.shape[0] == 0 or float(_face_normals(vertices.float(), faces).norm(dim=-1).sum()) == 0.0:
        logger.warning("part %r: no face has any area, so there is nothing to texture; keeping vertex colours", name)
        return None
    source, atlas_faces, uvs = uv_atlas(vertices.cpu(), faces.cpu())
    if not torch.isfinite(uvs).all() or float(uvs.amax(0).sub(uvs.amin(0)).min()) <= 0:
        logger.warning("part %r: the UV atlas is degenerate; keeping vertex colours", name)
        return None
    atlas_vertices = vertices[source.to(device)].float()
    atlas_faces = atlas_faces.to(device)
    triangle, weights = rasterize_uv(uvs, atlas_faces, options.size, device)
    covered = triangle >= 0
    if not bool(covered.any()):
        logger.warning("part %r: its UV charts cover no texel at %d px; keeping vertex colours", name, options.size)
        return None
    texel_face = triangle[covered]
    points = (atlas_vertices[atlas_faces[texel_face]] * weights[covered][..., None]).sum(1)  # (P, 3)
    normals = _face_normals(atlas_vertices, atlas_faces)[texel_face]

    colors = torch.zeros_like(points)
    seen = torch.zeros(points.shape[0], dtype=torch.bool, device=device)
    if options.source != "field":
        if views is not None:
            blended, total = colors_from_views(points, normals, atlas_vertices, atlas_faces, views, options)
            seen = total > 1e-6
            colors[seen] = blended[seen]
        if not bool(seen.any()):
            logger.warning("part %r: none of its views sees its surface; %s", name,
                           "using the colour field" if field_color is not None else "keeping vertex colours")
    use_field = field_color is not None and (options.source != "views" or not bool(seen.any()))
    if not use_field and not bool(seen.any()):
        return None
    from_field = ~seen if use_field else torch.zeros_like(seen)
    if bool(from_field.any()):
        colors[from_field] = field_color(points[from_field]).to(colors)
    filled_texels = seen | from_field
    texture = torch.zeros(options.size, options.size, 3, device=device)
    covered_index = covered.reshape(-1).nonzero().squeeze(1)
    texture.view(-1, 3)[covered_index[filled_texels]] = colors[filled_texels].clamp(0, 1)
    filled = torch.zeros(options.size * options.size, dtype=torch.bool, device=device)
    filled[covered_index[filled_texels]] = True
    # "views" alone leaves unseen texels inside the charts: grow the seen colours across them too
    grow = options.dilation + (options.size // 32 if not use_field else 0)
    texture = dilate(texture, filled.view(options.size, options.size), grow)
    count = max(1, points.shape[0])
    return BakedTexture(vertices=atlas_vertices.cpu(), faces=atlas_faces.cpu(), uvs=uvs, source_vertex=source,
                        texture=texture.cpu(), from_views=float(seen.sum()) / count,
                        from_field=float(from_field.sum()) / count)
