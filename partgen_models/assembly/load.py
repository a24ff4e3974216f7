"""Reading a mesh file with several parts (GLB, glTF, OBJ) back into :class:`~partgen_models.parts.Part` s.

What becomes a part:
- GLB / glTF: every node that has a mesh, named after the node. A mesh with several primitives
  (e.g. one per material) is one part; a mesh used by several nodes gives one part per node.
- OBJ: every object (``o``) and group (``g``); trimesh names a group inside an object
  ``object_group``. A file with neither is one part named after the file.

Frame: the glTF frame of :mod:`partgen_models.parts` (Y up). glTF files are in it by definition; OBJ
has no convention and is taken as Y up (what Blender and most tools export).

Transforms: each node's world transform is applied to its vertices (a mirroring one also flips the
winding, so normals stay outward), and ``Part.transform`` is the identity: parts come back in the
object frame, the same convention reconstruction uses, so a saved and reloaded scene keeps its layout.

Colours: per-vertex colours where the file has them (``COLOR_0``, OBJ ``v x y z r g b``), else the
texture or material colour sampled per vertex, else mid grey. Vertices are kept as stored (no
welding), so vertex counts match the file.

Bad input raises :class:`LoadPartsError` naming the file and the part; nothing is ever written.
Non-manifold meshes (an edge shared by more than two triangles, after identical positions are
welded) are refused by default because later stages assume a surface; ``non_manifold="keep"`` loads
them unchanged with a warning.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..checks import refuse_non_finite
from ..parts import Part
from .mesh_interop import DEFAULT_COLOR

logger = logging.getLogger(__name__)

LOADABLE_SUFFIXES = (".glb", ".gltf", ".obj")
NON_MANIFOLD_POLICIES = ("error", "keep")


class LoadPartsError(ValueError):
    """The file cannot become parts; the message says which file, which part and what is wrong."""


@dataclass(frozen=True)
class LoadOptions:
    """non_manifold: "error" refuses meshes with edges shared by more than two triangles; "keep"
    loads them unchanged and logs a warning (rendering views does not need a manifold surface)."""

    non_manifold: str = "error"

    def __post_init__(self) -> None:
        refuse_non_finite(self, LoadPartsError)
        if self.non_manifold not in NON_MANIFOLD_POLICIES:
            raise LoadPartsError(f"non_manifold must be one of {NON_MANIFOLD_POLICIES}, got {self.non_manifold!r}")


@dataclass
class _Piece:
    """One mesh of the file in the object frame, before it becomes (part of) a Part."""

    key: str
    order: tuple
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray


def load_parts(path: Path, options: LoadOptions = LoadOptions()) -> list[Part]:
    path = Path(path)
    if not path.is_file():
        raise LoadPartsError(f"{path.name}: no such file ({path})")
    suffix = path.suffix.lower()
    if suffix not in LOADABLE_SUFFIXES:
        raise LoadPartsError(f"{path.name}: unsupported file type {suffix or '(none)'}; Load Parts reads {', '.join(LOADABLE_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise LoadPartsError(f"{path.name}: the file is empty")
    scene = _read_scene(path, suffix)
    pieces = _gltf_pieces(scene, path, suffix) if suffix != ".obj" else _obj_pieces(scene, path)
    if not pieces:
        raise LoadPartsError(f"{path.name}: the file contains no meshes")
    parts = [_to_part(name, group, path, options) for name, group in _group_pieces(pieces, path)]
    logger.info("loaded %d parts from %s", len(parts), path.name)
    return parts


def _read_scene(path: Path, suffix: str):
    import trimesh

    kwargs = {}
    if suffix == ".obj":  # one mesh per object and group, faces and vertices in file order
        kwargs = dict(split_objects=True, split_groups=True, group_material=False, maintain_order=True)
    try:
        return trimesh.load(str(path), force="scene", process=False, **kwargs)
    # trimesh's parsers fail with whatever their input trips (struct, json, key, index, value errors)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file's name
        raise LoadPartsError(f"{path.name}: could not be read as {suffix[1:].upper()}: {type(exc).__name__}: {exc}") from exc


def _gltf_node_index(path: Path, suffix: str) -> dict[str, int]:
    """trimesh's node name → index of the file's glTF node, so parts keep the file's order."""
    try:
        raw = path.read_bytes()
        if suffix == ".glb":
            json_length = struct.unpack_from("<I", raw, 12)[0]
            raw = raw[20 : 20 + json_length]
        nodes = json.loads(raw).get("nodes", [])
    except (ValueError, struct.error, UnicodeDecodeError):
        return {}
    index = {}
    for i, node in enumerate(nodes):
        index.setdefault(node.get("name") or str(i), i)  # trimesh names an unnamed node by its index
    return index


def _world_pieces(scene, path: Path, key_of, order_of) -> list[_Piece]:
    import trimesh

    pieces = []
    loaded_order = {name: i for i, name in enumerate(scene.geometry)}  # primitives in file order
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        key = key_of(node, geometry)
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            kind = type(geometry).__name__
            raise LoadPartsError(f"{path.name}: {key!r} has no triangles (it is a {kind}); Load Parts needs triangle meshes")
        vertices = np.asarray(geometry.vertices, dtype=np.float64)
        faces = np.asarray(geometry.faces, dtype=np.int64)
        if not np.allclose(transform, np.eye(4)):
            vertices = vertices @ transform[:3, :3].T + transform[:3, 3]
            if np.linalg.det(transform[:3, :3]) < 0:
                faces = faces[:, ::-1]
        order = (*order_of(key, faces), loaded_order[geometry_name])
        pieces.append(_Piece(key, order, vertices, faces, _vertex_colors(geometry)))
    return pieces


def _gltf_pieces(scene, path: Path, suffix: str) -> list[_Piece]:
    index = _gltf_node_index(path, suffix)
    parents = scene.graph.transforms.parents

    def key_of(node, geometry):
        # trimesh hangs each primitive of a multi-primitive mesh under its node as a child
        if geometry.metadata.get("from_gltf_primitive") and node in parents:
            return parents[node]
        return node

    def order_of(key, faces):
        return (index.get(key, len(index)), key)

    pieces = _world_pieces(scene, path, key_of, order_of)
    unnamed = {str(i) for name, i in index.items() if name == str(i)}
    for piece in pieces:  # an unnamed node: trimesh calls it by its index
        if piece.key in unnamed:
            piece.key = f"part_{int(piece.key):02d}"
    return pieces


def _obj_pieces(scene, path: Path) -> list[_Piece]:
    def key_of(node, geometry):
        return path.stem if node == path.name else node

    def order_of(key, faces):  # file order: the first vertex an object's faces use
        return (int(faces.min()) if len(faces) else 0, key)

    pieces = _world_pieces(scene, path, key_of, order_of)
    for piece in pieces:  # trimesh hands every OBJ object all of the file's vertices
        used, faces = np.unique(piece.faces, return_inverse=True)
        piece.vertices, piece.colors, piece.faces = piece.vertices[used], piece.colors[used], faces.reshape(-1, 3)
    return pieces


def _vertex_colors(geometry) -> np.ndarray:
    """Colours in 0..1 per vertex (trimesh keeps them as 8-bit RGBA)."""
    count = len(geometry.vertices)
    visual = geometry.visual
    kind = getattr(visual, "kind", None)
    colors = None
    if kind in ("vertex", "face"):
        colors = np.asarray(visual.vertex_colors)
    elif kind == "texture":
        try:  # the texture (or the material's base colour) sampled at each vertex's UV
            colors = np.asarray(visual.to_color().vertex_colors)
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            logger.warning("could not sample a texture (%s); that mesh is grey", exc)
    if colors is not None and colors.ndim == 1:  # one colour for the whole mesh (a material without texture)
        colors = np.tile(colors, (count, 1))
    if colors is None or colors.ndim != 2 or colors.shape[0] != count:
        return np.tile(np.asarray(DEFAULT_COLOR, dtype=np.float64), (count, 1))
    return colors[:, :3].astype(np.float64) / 255.0


def _group_pieces(pieces: list[_Piece], path: Path) -> list[tuple[str, list[_Piece]]]:
    """Primitives of one node together, nodes in file order, names unique ("leg", "leg_1")."""
    groups: dict[str, list[_Piece]] = {}
    for piece in sorted(pieces, key=lambda p: p.order):
        groups.setdefault(piece.key, []).append(piece)
    named, seen = [], set()
    for key, group in groups.items():
        name, counter = key, 1
        while name in seen:
            name, counter = f"{key}_{counter}", counter + 1
        seen.add(name)
        named.append((name, group))
    return named


def _to_part(name: str, group: list[_Piece], path: Path, options: LoadOptions) -> Part:
    offsets = np.cumsum([0] + [len(p.vertices) for p in group[:-1]])
    vertices = np.concatenate([p.vertices for p in group])
    faces = np.concatenate([p.faces + offset for p, offset in zip(group, offsets)])
    colors = np.concatenate([p.colors for p in group])
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise LoadPartsError(f"{path.name}: part {name!r} has {bad} vertices with NaN or infinite coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise LoadPartsError(f"{path.name}: part {name!r} has faces that index missing vertices")
    shared = non_manifold_edges(vertices, faces)
    if shared:
        message = f"{path.name}: part {name!r} is not manifold: {shared} edges are shared by more than two triangles"
        if options.non_manifold == "error":
            raise LoadPartsError(message + "; repair it (e.g. Blender: Select > All by Trait > Non Manifold) "
                                 "or set non_manifold to 'keep' to load it as it is")
        logger.warning("%s; loaded as it is", message)
    return Part(
        name=name,
        vertices=torch.from_numpy(vertices.astype(np.float32)),
        faces=torch.from_numpy(faces.astype(np.int64)),
        vertex_colors=torch.from_numpy(colors.astype(np.float32)).clamp(0, 1),
    )


def non_manifold_edges(vertices: np.ndarray, faces: np.ndarray, decimals: Optional[int] = None) -> int:
    """How many edges are shared by more than two triangles once identical positions are welded
    (files split vertices along UV and normal seams, which must not hide or fake a shared edge)."""
    points = vertices if decimals is None else np.round(vertices, decimals)
    _, welded = np.unique(points, axis=0, return_inverse=True)
    welded_faces = welded.reshape(-1)[faces]
    edges = np.sort(np.concatenate([welded_faces[:, [0, 1]], welded_faces[:, [1, 2]], welded_faces[:, [2, 0]]]), axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]  # degenerate triangles add no real edge
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts > 2).sum())
