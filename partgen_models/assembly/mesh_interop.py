"""Parts ↔ the plain tensors of a host's batched mesh type (ComfyUI's ``MESH``), without ComfyUI.

A batched mesh is ``vertices [B,N,3]`` and ``faces [B,M,3]``: every item of the batch has the same
N and M. Parts rarely do, so a batch of parts is zero-cost only where the host also carries the real
per-item lengths (``vertex_counts``/``face_counts``, newer ComfyUI). Rows past an item's length are
padding: padded vertices repeat the item's last vertex (so bounds and accessor min/max do not move)
and padded faces are degenerate triangles on that vertex (they cover no area). Where the host has no
counts, :func:`strip_padding` recovers the real lengths from exactly that pattern.

The alternative, :func:`merge_parts`, makes one item of all parts: no padding, but part boundaries
survive only as connected components (:func:`split_components`).

Newer hosts' MESH also carries UVs ``[B,N,2]``, one texture per item ``[B,H,W,3]`` and an ``unlit``
flag; they travel through parts (``Part.uvs``/``texture``/``unlit``) and back. A batch has one texture
size and one flag: textures are kept where every part has one of the same size (merged: the same
texture), else dropped with a warning; the batch is unlit only when every part is.
"""

from __future__ import annotations

from dataclasses import dataclass
import inspect
import logging
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..parts import Part, placed_mesh

logger = logging.getLogger(__name__)

DEFAULT_COLOR = (0.5, 0.5, 0.5)  # mid grey, for meshes that carry no vertex colours
MESH_LAYOUTS = ("per part", "merged")
MESH_SPLITS = ("batch items", "connected components")


class MeshConversionError(ValueError):
    """The parts or the mesh cannot be converted; the message says which item and why."""


@dataclass(frozen=True)
class MeshBatch:
    """vertices ``[B,N,3]`` float32, faces ``[B,M,3]`` int64, vertex_colors ``[B,N,3]`` in 0..1,
    vertex_counts / face_counts ``[B]`` int64: the real lengths of each zero-cost padded item; uvs,
    texture and unlit where the parts have them (see the module docstring)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor
    vertex_counts: torch.Tensor
    face_counts: torch.Tensor
    uvs: Optional[torch.Tensor] = None      # [B,N,2], padded like the vertices
    texture: Optional[torch.Tensor] = None  # [B,H,W,3] in 0..1
    unlit: bool = False

    @property
    def is_padded(self) -> bool:
        return bool((self.vertex_counts < self.vertices.shape[1]).any() or (self.face_counts < self.faces.shape[1]).any())


def placed_vertices(part: Part) -> torch.Tensor:
    """The part's vertices in the object frame (a mesh batch has no per-item transform)."""
    return placed_mesh(part)[0].float()


def _placed_faces(part: Part) -> torch.Tensor:
    return placed_mesh(part)[1]


def check_parts(parts: Sequence[Part]) -> None:
    if not parts:
        raise MeshConversionError("there are no parts to convert; check the node that produced them")
    for part in parts:
        if part.vertices.shape[0] == 0 or part.faces.shape[0] == 0:
            raise MeshConversionError(f"part {part.name!r} has no faces")
        if not torch.isfinite(part.vertices).all() or not torch.isfinite(part.transform).all():
            raise MeshConversionError(f"part {part.name!r} has NaN or infinite vertices")
        if part.faces.min() < 0 or part.faces.max() >= part.vertices.shape[0]:
            raise MeshConversionError(f"part {part.name!r} has faces that index missing vertices")


def pad_parts(parts: Sequence[Part]) -> MeshBatch:
    """One batch item per part, padded to the largest part (see the module docstring)."""
    check_parts(parts)
    vertex_counts = torch.tensor([p.vertices.shape[0] for p in parts], dtype=torch.long)
    face_counts = torch.tensor([p.faces.shape[0] for p in parts], dtype=torch.long)
    n, m = int(vertex_counts.max()), int(face_counts.max())
    vertices = torch.empty(len(parts), n, 3)
    colors = torch.empty(len(parts), n, 3)
    faces = torch.empty(len(parts), m, 3, dtype=torch.long)
    for i, part in enumerate(parts):
        count, face_count = part.vertices.shape[0], part.faces.shape[0]
        placed = placed_vertices(part)
        vertices[i, :count], vertices[i, count:] = placed, placed[-1]
        colors[i, :count], colors[i, count:] = part.vertex_colors.float().clamp(0, 1), part.vertex_colors[-1].float().clamp(0, 1)
        faces[i, :face_count], faces[i, face_count:] = _placed_faces(part), count - 1
    uvs = None
    if all(p.uvs is not None for p in parts):
        uvs = torch.empty(len(parts), n, 2)
        for i, part in enumerate(parts):
            count = part.vertices.shape[0]
            uvs[i, :count], uvs[i, count:] = part.uvs.float(), part.uvs[-1].float()
    return MeshBatch(vertices, faces, colors, vertex_counts, face_counts, uvs=uvs,
                     texture=_batch_textures(parts), unlit=all(p.unlit for p in parts))


def _batch_textures(parts: Sequence[Part]) -> Optional[torch.Tensor]:
    """One texture per part, stacked ``[B,H,W,3]``: only when every part has one and all share a size."""
    textures = [p.texture for p in parts]
    if all(t is None for t in textures):
        return None
    if any(t is None for t in textures) or len({tuple(t.shape) for t in textures}) != 1:
        logger.warning("textures dropped: a MESH batch holds one texture size and %s; vertex colours remain",
                       "some parts have none" if any(t is None for t in textures) else "the parts' sizes differ")
        return None
    return torch.stack([t.float().clamp(0, 1) for t in textures])


def _shared_texture(parts: Sequence[Part]) -> Optional[torch.Tensor]:
    """The one texture a merged mesh can keep: the same texture on every part (e.g. components of one item)."""
    textures = [p.texture for p in parts]
    if all(t is None for t in textures):
        return None
    first = textures[0]
    if any(t is None or (t is not first and (t.shape != first.shape or not torch.equal(t, first))) for t in textures):
        logger.warning("textures dropped: a merged MESH holds one texture and the parts have different ones; "
                       "vertex colours remain (use layout 'per part' to keep them)")
        return None
    return first.float().clamp(0, 1)[None]


def merge_parts(parts: Sequence[Part]) -> MeshBatch:
    """All parts as one batch item (indices offset per part), no padding."""
    check_parts(parts)
    offsets = np.cumsum([0] + [p.vertices.shape[0] for p in parts[:-1]])
    vertices = torch.cat([placed_vertices(p) for p in parts])
    faces = torch.cat([_placed_faces(p) + int(offset) for p, offset in zip(parts, offsets)])
    colors = torch.cat([p.vertex_colors.float().clamp(0, 1) for p in parts])
    uvs = torch.cat([p.uvs.float() for p in parts])[None] if all(p.uvs is not None for p in parts) else None
    return MeshBatch(vertices[None], faces[None], colors[None],
                     torch.tensor([vertices.shape[0]]), torch.tensor([faces.shape[0]]),
                     uvs=uvs, texture=_shared_texture(parts), unlit=all(p.unlit for p in parts))


def parts_to_mesh_batch(parts: Sequence[Part], layout: str = "per part") -> MeshBatch:
    if layout not in MESH_LAYOUTS:
        raise MeshConversionError(f"layout must be one of {MESH_LAYOUTS}, got {layout!r}")
    return pad_parts(parts) if layout == "per part" else merge_parts(parts)


def strip_padding(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[int, int]:
    """(vertex count, face count) of one item whose host gave no counts: trailing degenerate faces
    and the vertices past the last one still referenced are padding."""
    degenerate = (faces[:, 0] == faces[:, 1]) & (faces[:, 1] == faces[:, 2])
    real = torch.nonzero(~degenerate)
    face_count = int(real[-1]) + 1 if len(real) else 0
    vertex_count = int(faces[:face_count].max()) + 1 if face_count else 0
    return vertex_count, face_count


def _item_colors(colors: Optional[torch.Tensor], index: int, count: int) -> torch.Tensor:
    if colors is None:
        return torch.tensor(DEFAULT_COLOR).expand(count, 3).clone()
    item = colors[index, :count, :3].float()
    if not colors.is_floating_point():  # 8-bit colours
        item = item / 255.0
    return item.clamp(0, 1)


def _compact(vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, uvs: Optional[torch.Tensor] = None):
    """Keep only the vertices the faces use, in their original order."""
    used = torch.unique(faces)
    remap = torch.full((vertices.shape[0],), -1, dtype=torch.long)
    remap[used] = torch.arange(used.shape[0])
    return vertices[used], remap[faces], colors[used], (None if uvs is None else uvs[used])


def split_components(vertices: torch.Tensor, faces: torch.Tensor) -> list[torch.Tensor]:
    """Face indices of each connected component (faces sharing a vertex), largest first."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = vertices.shape[0]
    f = faces.numpy()
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_labels = torch.from_numpy(labels[f[:, 0]])
    groups = [torch.nonzero(face_labels == label).flatten() for label in torch.unique(face_labels)]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))


def _check_counts(counts, items: int, padded: int, kind: str) -> None:
    """A MESH's per-item ``{kind}_counts``: one per batch item, each within the padded size."""
    values = torch.as_tensor(counts).flatten()
    if values.shape[0] != items or (items and (int(values.min()) < 0 or int(values.max()) > padded)):
        raise MeshConversionError(
            f"the MESH's {kind}_counts {values.tolist()[:8]} do not fit its {items} item(s) of {padded} "
            f"{'vertices' if kind == 'vertex' else 'faces'}; "
            f"the node that made the MESH set them wrongly (or changed its tensors without them)"
        )


def mesh_batch_to_parts(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    *,
    vertex_counts: Optional[torch.Tensor] = None,
    face_counts: Optional[torch.Tensor] = None,
    vertex_colors: Optional[torch.Tensor] = None,
    split: str = "batch items",
    name_prefix: str = "part",
    uvs: Optional[torch.Tensor] = None,
    texture: Optional[torch.Tensor] = None,
    unlit: bool = False,
) -> list[Part]:
    """A host mesh batch → parts named ``{name_prefix}_00``...; colours grey where the mesh has none;
    uvs, texture and unlit carried to every part of the item they belong to."""
    if split not in MESH_SPLITS:
        raise MeshConversionError(f"split must be one of {MESH_SPLITS}, got {split!r}")
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or faces.ndim != 3 or faces.shape[-1] != 3:
        raise MeshConversionError(
            f"a MESH holds vertices [B,N,3] and faces [B,M,3]; got {tuple(vertices.shape)} and {tuple(faces.shape)}")
    if vertices.shape[0] != faces.shape[0]:
        raise MeshConversionError(f"MESH batch sizes differ: {vertices.shape[0]} vertex items, {faces.shape[0]} face items")
    if vertex_colors is not None and (vertex_colors.ndim != 3 or vertex_colors.shape[:2] != vertices.shape[:2]):
        raise MeshConversionError(f"MESH vertex colours {tuple(vertex_colors.shape)} do not match vertices {tuple(vertices.shape)}")
    if uvs is not None and (uvs.ndim != 3 or uvs.shape[-1] != 2 or uvs.shape[:2] != vertices.shape[:2]):
        raise MeshConversionError(f"MESH uvs {tuple(uvs.shape)} do not match vertices {tuple(vertices.shape)}")
    if texture is not None and (texture.ndim != 4 or texture.shape[-1] < 3 or texture.shape[0] not in (1, vertices.shape[0])):
        raise MeshConversionError(f"a MESH texture is [B,H,W,3] with B = 1 or {vertices.shape[0]}; got {tuple(texture.shape)}")
    if vertices.shape[0] == 0:
        raise MeshConversionError("the MESH is an empty batch")
    if (vertex_counts is None) != (face_counts is None):
        vertex_counts = face_counts = None  # one without the other says nothing: padding is stripped instead
    if vertex_counts is not None:
        _check_counts(vertex_counts, vertices.shape[0], vertices.shape[1], "vertex")
        _check_counts(face_counts, vertices.shape[0], faces.shape[1], "face")
    pieces = []
    for i in range(vertices.shape[0]):
        item_vertices, item_faces = vertices[i].detach().cpu().float(), faces[i].detach().cpu().long()
        if vertex_counts is not None and face_counts is not None:
            vertex_count, face_count = int(vertex_counts[i]), int(face_counts[i])
        else:
            vertex_count, face_count = strip_padding(item_vertices, item_faces)
        item_vertices, item_faces = item_vertices[:vertex_count], item_faces[:face_count]
        if face_count == 0:
            raise MeshConversionError(f"MESH item {i} has no faces")
        if not torch.isfinite(item_vertices).all():
            raise MeshConversionError(f"MESH item {i} has NaN or infinite vertices")
        if item_faces.min() < 0 or item_faces.max() >= vertex_count:
            raise MeshConversionError(f"MESH item {i} has faces that index missing vertices (it has {vertex_count})")
        colors = _item_colors(None if vertex_colors is None else vertex_colors.detach().cpu(), i, vertex_count)
        item_uvs = None if uvs is None else uvs[i, :vertex_count].detach().cpu().float()
        item_texture = None if texture is None else texture[i if texture.shape[0] > 1 else 0, ..., :3].detach().cpu().float()
        if split == "batch items":
            pieces.append((item_vertices, item_faces, colors, item_uvs, item_texture))
        else:
            for group in split_components(item_vertices, item_faces):
                pieces.append((*_compact(item_vertices, item_faces[group], colors, item_uvs), item_texture))
    width = max(2, len(str(len(pieces) - 1)))
    return [Part(f"{name_prefix}_{k:0{width}d}", v.contiguous(), f.contiguous(), c.contiguous(),
                 uvs=None if uv is None else uv.contiguous(), texture=tex, unlit=bool(unlit))
            for k, (v, f, c, uv, tex) in enumerate(pieces)]


# ---------------------------------------------------------------------------------------------
# The host's MESH class, whichever it is (passed in: this module never imports ComfyUI)
# ---------------------------------------------------------------------------------------------

def host_mesh_has_counts(mesh_class: type) -> bool:
    """Newer ComfyUI's MESH takes per-item ``vertex_counts``/``face_counts`` and ``vertex_colors``;
    0.3.x's takes only ``vertices, faces``."""
    return "vertex_counts" in inspect.signature(mesh_class.__init__).parameters


def resolve_layout(layout: str, mesh_class: type) -> str:
    """"auto": one item per part where the host can say how long each item is, else one merged mesh
    (so that core nodes of older hosts never see padding)."""
    if layout == "auto":
        return "per part" if host_mesh_has_counts(mesh_class) else "merged"
    return layout


def to_host_mesh(batch: MeshBatch, mesh_class: type) -> Any:
    accepted = inspect.signature(mesh_class.__init__).parameters
    extras = {"uvs": batch.uvs, "texture": batch.texture, "unlit": batch.unlit}
    if host_mesh_has_counts(mesh_class):
        mesh = mesh_class(batch.vertices, batch.faces, vertex_colors=batch.vertex_colors,
                          vertex_counts=batch.vertex_counts, face_counts=batch.face_counts,
                          **{name: value for name, value in extras.items() if name in accepted})
    else:
        mesh = mesh_class(batch.vertices, batch.faces)
        # 0.3.x core nodes read only vertices and faces; under the newer class's attribute names
        # mesh_batch_to_parts gets the exact lengths and the colours back.
        mesh.vertex_colors, mesh.vertex_counts, mesh.face_counts = batch.vertex_colors, batch.vertex_counts, batch.face_counts
    for name, value in extras.items():  # likewise for fields this host's class does not take
        if name not in accepted:
            setattr(mesh, name, value)
    return mesh


def parts_from_host_mesh(mesh: Any, split: str = "batch items", name_prefix: str = "part") -> list[Part]:
    """Any MESH object with ``vertices``/``faces`` and, where present, counts and colours."""
    return mesh_batch_to_parts(
        mesh.vertices, mesh.faces,
        vertex_counts=getattr(mesh, "vertex_counts", None), face_counts=getattr(mesh, "face_counts", None),
        vertex_colors=getattr(mesh, "vertex_colors", None), split=split, name_prefix=name_prefix,
        uvs=getattr(mesh, "uvs", None), texture=getattr(mesh, "texture", None),
        unlit=bool(getattr(mesh, "unlit", False)),
    )
