"""Reading a mesh file with several parts (GLB, glTF, OBJ) back into :class:`~partgen_models.parts.Part` s.

What becomes a part:
- GLB / glTF: every node that has a mesh, named after the node. A mesh with several primitives
  (e.g. one per material) is one part; a mesh used by several nodes gives one part per node.
- OBJ: every object (``o``) and group (``g``); trimesh names a group inside an object
  ``object_group``. A file with neither is one part named after the file.

Frame: the glTF frame of :mod:`partgen_models.parts` (Y up). glTF files are in it by definition; OBJ
has no convention and is taken as Y up (what Blender and most tools export).

Names: a node's name exactly as the file spells it (``world``, ``scene``, non-ASCII included); an
unnamed node is ``part_<index>``; a name used by several nodes gets ``_1``, ``_2``... on the later ones
(skipping names the file already uses), so parts stay unique.

Pivots: a node's world transform becomes ``Part.transform`` and its vertices stay local to the node,
so a part keeps the pivot it was saved with (Save Parts puts it at the part's centre); every stage
places parts through :func:`partgen_models.parts.placed_mesh` (a mirroring transform also flips the
winding). Node ``extras`` written by Save Parts give back the display colour.

Colours: display (sRGB) colours per vertex. glTF ``COLOR_0`` and ``baseColorFactor`` are linear by
the spec and are converted; OBJ ``v x y z r g b`` and textures are already sRGB. Without either,
the material colour, else mid grey. Vertices that repeat another vertex's position and colour
exactly (files split them along normal creases) are welded, so a part saved by Save Parts comes
back with its original vertices; nothing else is merged.

Bad input raises :class:`LoadPartsError` naming the file and the part; nothing is ever written.
Non-manifold meshes (an edge shared by more than two triangles, after identical positions are
welded) are refused by default because later stages assume a surface; ``non_manifold="keep"`` loads
them unchanged with a warning.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..checks import refuse_non_finite
from ..parts import Part, place
from .gltf import GltfDocument, external_uris, linear_to_srgb, read_accessor, read_document
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
    """One mesh of the file, local to its node, before it becomes (part of) a Part."""

    key: object  # what groups primitives into one part: the glTF node index, the OBJ object name
    name: str
    order: tuple
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    transform: np.ndarray
    extras: dict
    uvs: Optional[np.ndarray] = None  # [N,2] v down, with texture
    texture: Optional[np.ndarray] = None  # [H,W,3] sRGB 0..1, the base-colour image


# Largest file read: geometry costs ~8x its file size in memory while loading (a 28 MB GLB of 1M
# faces took 234 MB, benchmarks/bench_memory.py), so 1 GB stays near 8 GB.
MAX_FILE_MB = 1024


def load_parts(path: Path, options: LoadOptions = LoadOptions()) -> list[Part]:
    path = Path(path)
    if not path.is_file():
        raise LoadPartsError(f"{path.name}: no such file ({path})")
    suffix = path.suffix.lower()
    if suffix not in LOADABLE_SUFFIXES:
        raise LoadPartsError(f"{path.name}: unsupported file type {suffix or '(none)'}; Load Parts reads {', '.join(LOADABLE_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise LoadPartsError(f"{path.name}: the file is empty")
    if path.stat().st_size > MAX_FILE_MB * 2**20:
        raise LoadPartsError(
            f"{path.name}: the file is {path.stat().st_size / 2**20:.0f} MB; PartGen reads mesh files up to "
            f"{MAX_FILE_MB} MB (loading takes about 8x the file's size in memory). Decimate the mesh or split it first"
        )
    _check_references(path, suffix)
    scene = _read_scene(path, suffix)
    pieces = _gltf_pieces(scene, path, suffix) if suffix != ".obj" else _obj_pieces(scene, path)
    if not pieces:
        raise LoadPartsError(f"{path.name}: the file contains no meshes")
    parts = [_to_part(name, group, path, options) for name, group in _group_pieces(pieces)]
    logger.info("loaded %d parts from %s", len(parts), path.name)
    return parts


_MTL_FILE_STATEMENTS = ("map_", "bump", "disp", "decal", "refl", "norm")


def _referenced_files(path: Path, suffix: str) -> list[str]:
    """The file names a mesh file refers to: a glTF's external buffers and images; an OBJ's material
    libraries and the textures those name."""
    if suffix != ".obj":
        try:
            return external_uris(path)
        except (ValueError, OSError, struct.error, UnicodeDecodeError):
            return []  # malformed: the reader reports it
    names: list[str] = []
    libraries = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("mtllib"):
                libraries += line.split()[1:]
    names += libraries
    for library in libraries:
        candidate = path.parent / library
        if _inside(candidate, path.parent) and candidate.is_file() and candidate.stat().st_size <= MAX_FILE_MB * 2**20:
            with open(candidate, encoding="utf-8", errors="replace") as lines:
                names += [line.split()[-1] for line in lines
                          if line.strip().lower().startswith(_MTL_FILE_STATEMENTS) and len(line.split()) > 1]
    return names


def _inside(candidate: Path, folder: Path) -> bool:
    try:
        candidate.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def _check_references(path: Path, suffix: str) -> None:
    """Files a mesh refers to must lie in its folder (or below): an absolute path or '..' in a
    downloaded file would otherwise read any file of this machine into the parts."""
    from urllib.parse import unquote

    for name in _referenced_files(path, suffix):
        if not _inside(path.parent / unquote(name), path.parent):
            raise LoadPartsError(
                f"{path.name}: refers to the file {name!r} outside its folder; a mesh file may only use files beside "
                f"it (or embedded data). Re-export it with embedded textures and buffers (GLB)"
            )


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


def _gltf_nodes(path: Path) -> tuple[list[dict], dict[str, int], Optional[GltfDocument]]:
    """The file's glTF nodes and trimesh's frame name → node index.

    trimesh names each node frame with ``unique_name`` in node order and renames a node called
    ``world`` (its own root frame); the same calls with the same inputs rebuild its names, so every
    part is traced to its node and gets the file's name back exactly.
    """
    from trimesh.util import unique_name

    try:
        document = read_document(path)
    except (ValueError, OSError, struct.error, UnicodeDecodeError):
        return [], {}, None
    nodes = document.json.get("nodes", [])
    name_index: dict[str, int] = {}
    counts: dict = {}
    for i, node in enumerate(nodes):
        name_index[unique_name(node.get("name", str(i)), name_index, counts=counts)] = i
    names = {i: name for name, i in name_index.items()}
    if "world" in name_index:
        names[name_index["world"]] = unique_name("world", set(names.values()))
    return nodes, {name: i for i, name in names.items()}, document


def _primitive_colors(document: Optional[GltfDocument]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Linear colour of each primitive at full precision, ``COLOR_0`` times the base colour factor or
    the factor alone (trimesh rounds colours to 8 bits, which loses the darks once converted to
    sRGB), with its positions, keyed by the geometry name
    trimesh gives that primitive (``unique_name`` of the mesh name, in mesh and primitive order)."""
    from trimesh.util import unique_name

    colors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if document is None:
        return colors
    names: dict[str, None] = {}
    counts: dict = {}
    for mesh in document.json.get("meshes", []):
        for primitive in mesh.get("primitives", []):
            name = unique_name(mesh.get("name", "GLTF"), names, counts=counts)
            names[name] = None
            attributes = primitive.get("attributes", {})
            factor = _plain_material_color(document.json, primitive)
            if ("COLOR_0" not in attributes and factor is None) or "POSITION" not in attributes:
                continue
            try:
                positions = read_accessor(document, attributes["POSITION"]).astype(np.float32)
                if "COLOR_0" in attributes:
                    linear = read_accessor(document, attributes["COLOR_0"])[:, :3]
                    if factor is not None:  # glTF multiplies vertex colours by the base colour factor
                        linear = linear * factor
                else:
                    linear = np.tile(factor, (len(positions), 1))
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            if len(linear) == len(positions):
                colors[name] = (positions, linear)
    return colors


def _plain_material_color(document: dict, primitive: dict) -> Optional[np.ndarray]:
    """The linear base colour factor of a primitive's material when it has no base-colour texture."""
    try:
        pbr = document["materials"][primitive["material"]].get("pbrMetallicRoughness", {})
    except (KeyError, IndexError, TypeError):
        return None
    if "baseColorTexture" in pbr:
        return None
    factor = pbr.get("baseColorFactor", [1.0, 1.0, 1.0, 1.0])
    if not (isinstance(factor, list) and len(factor) == 4 and all(isinstance(c, (int, float)) for c in factor)):
        return None
    return np.clip(np.asarray(factor[:3], dtype=np.float64), 0.0, 1.0)


def _world_pieces(scene, path: Path, key_of, name_of, order_of, colors_of) -> list[_Piece]:
    import trimesh

    pieces = []
    loaded_order = {name: i for i, name in enumerate(scene.geometry)}  # primitives in file order
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name]
        key = key_of(node, geometry)
        if not isinstance(geometry, trimesh.Trimesh) or len(geometry.faces) == 0:
            kind = type(geometry).__name__
            raise LoadPartsError(f"{path.name}: {name_of(key)!r} has no triangles (it is a {kind}); Load Parts needs triangle meshes")
        vertices = np.asarray(geometry.vertices, dtype=np.float64)
        faces = np.asarray(geometry.faces, dtype=np.int64)
        order = (*order_of(key, faces), loaded_order[geometry_name])
        pieces.append(_Piece(key, name_of(key), order, vertices, faces, colors_of(geometry_name, geometry),
                             np.asarray(transform, dtype=np.float64), {}, *_base_color_texture(geometry)))
    return pieces


def _gltf_pieces(scene, path: Path, suffix: str) -> list[_Piece]:
    nodes, index, document = _gltf_nodes(path)
    parents = scene.graph.transforms.parents
    linear_colors = _primitive_colors(document)

    def key_of(node, geometry):
        # trimesh hangs each primitive of a multi-primitive mesh under its node as a child
        if geometry.metadata.get("from_gltf_primitive") and node in parents:
            node = parents[node]
        return index.get(node, node)

    def name_of(key):
        if isinstance(key, int):
            name = nodes[key].get("name")
            return name if isinstance(name, str) and name else f"part_{key:02d}"
        return str(key)

    def order_of(key, faces):
        return (key if isinstance(key, int) else len(nodes), str(key))

    def colors_of(geometry_name, geometry):
        positions, linear = linear_colors.get(geometry_name, (None, None))
        # used only when it is certainly this primitive: the same positions, bit for bit
        if positions is not None and np.array_equal(positions, np.asarray(geometry.vertices, dtype=np.float32)):
            return linear_to_srgb(linear)
        colors, linear = _vertex_colors(geometry)
        return linear_to_srgb(colors) if linear else colors

    pieces = _world_pieces(scene, path, key_of, name_of, order_of, colors_of)
    for piece in pieces:
        if isinstance(piece.key, int) and isinstance(nodes[piece.key].get("extras"), dict):
            piece.extras = nodes[piece.key]["extras"]
    return pieces


def _obj_pieces(scene, path: Path) -> list[_Piece]:
    def key_of(node, geometry):
        return path.stem if node == path.name else node

    def order_of(key, faces):  # file order: the first vertex an object's faces use
        return (int(faces.min()) if len(faces) else 0, key)

    pieces = _world_pieces(scene, path, key_of, str, order_of, lambda name, geometry: _vertex_colors(geometry)[0])
    for piece in pieces:  # trimesh hands every OBJ object all of the file's vertices
        used, faces = np.unique(piece.faces, return_inverse=True)
        piece.vertices, piece.colors, piece.faces = piece.vertices[used], piece.colors[used], faces.reshape(-1, 3)
        if piece.uvs is not None:
            piece.uvs = piece.uvs[used]
    return pieces


def _vertex_colors(geometry) -> tuple[np.ndarray, bool]:
    """Colours in 0..1 per vertex (trimesh keeps them as 8-bit RGBA), and whether they are linear
    (vertex colours and plain material colours of a glTF; a sampled texture is sRGB)."""
    count = len(geometry.vertices)
    visual = geometry.visual
    kind = getattr(visual, "kind", None)
    colors, linear = None, True
    if kind in ("vertex", "face"):
        colors = np.asarray(visual.vertex_colors)
    elif kind == "texture":
        material = getattr(visual, "material", None)
        linear = getattr(material, "baseColorTexture", None) is None
        try:  # the texture (or the material's base colour) sampled at each vertex's UV
            colors = np.asarray(visual.to_color().vertex_colors)
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            logger.warning("could not sample a texture (%s); that mesh is grey", exc)
    if colors is not None and colors.ndim == 1:  # one colour for the whole mesh (a material without texture)
        colors = np.tile(colors, (count, 1))
    if colors is None or colors.ndim != 2 or colors.shape[0] != count:
        return np.tile(np.asarray(DEFAULT_COLOR, dtype=np.float64), (count, 1)), False
    return colors[:, :3].astype(np.float64) / 255.0, linear


def _group_pieces(pieces: list[_Piece]) -> list[tuple[str, list[_Piece]]]:
    """Primitives of one node together, nodes in file order; a name that several nodes share gets a
    suffix on the later ones, never taking a name the file uses ("leg", "leg_1", then "leg_2")."""
    groups: dict[object, list[_Piece]] = {}
    for piece in sorted(pieces, key=lambda p: p.order):
        groups.setdefault(piece.key, []).append(piece)
    taken = {group[0].name for group in groups.values()}
    named, seen = [], set()
    for group in groups.values():
        base = group[0].name
        name, counter = base, 1
        while name in seen or (name != base and name in taken):
            name, counter = f"{base}_{counter}", counter + 1
        seen.add(name)
        named.append((name, group))
    return named


def _base_color_texture(geometry) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """UVs (v down) and the base-colour image of a textured mesh, else (None, None)."""
    visual = geometry.visual
    uv = getattr(visual, "uv", None)
    material = getattr(visual, "material", None)
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if getattr(visual, "kind", None) != "texture" or uv is None or image is None or len(uv) != len(geometry.vertices):
        return None, None
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    uvs = np.asarray(uv, dtype=np.float64)[:, :2].copy()
    uvs[:, 1] = 1.0 - uvs[:, 1]  # trimesh keeps OpenGL's origin (bottom-left); parts use glTF's (top-left)
    return uvs, pixels


def _weld_exact_duplicates(vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray, uvs: Optional[np.ndarray] = None):
    """Merge vertices equal in position, colour (and UV), keeping the first of each in file order."""
    keys = np.concatenate([vertices, colors] + ([uvs] if uvs is not None else []), axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    if len(first) == len(vertices):
        return vertices, colors, faces, uvs
    keep = np.sort(first)
    rank = np.empty(len(vertices), dtype=np.int64)
    rank[keep] = np.arange(len(keep))
    remap = rank[first[inverse.reshape(-1)]]
    return vertices[keep], colors[keep], remap[faces], None if uvs is None else uvs[keep]


def _to_part(name: str, group: list[_Piece], path: Path, options: LoadOptions) -> Part:
    transform = group[0].transform
    if not all(np.array_equal(p.transform, transform) for p in group):  # primitives under different frames
        for piece in group:
            placed, faces = place(torch.from_numpy(piece.vertices), torch.from_numpy(piece.faces), torch.from_numpy(piece.transform))
            piece.vertices, piece.faces, piece.transform = placed.numpy(), faces.numpy(), np.eye(4)
        transform = np.eye(4)
    welded = [_weld_exact_duplicates(p.vertices, p.colors, p.faces, p.uvs) for p in group]
    # one textured primitive: its UVs and image come along (several images cannot share one part)
    textured = len(group) == 1 and group[0].texture is not None
    offsets = np.cumsum([0] + [len(w[0]) for w in welded[:-1]])
    vertices = np.concatenate([w[0] for w in welded])
    colors = np.concatenate([w[1] for w in welded])
    faces = np.concatenate([w[2] + offset for w, offset in zip(welded, offsets)])
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise LoadPartsError(f"{path.name}: part {name!r} has {bad} vertices with NaN or infinite coordinates")
    if not np.isfinite(transform).all():
        raise LoadPartsError(f"{path.name}: part {name!r} has a node transform with NaN or infinite values")
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
        transform=torch.from_numpy(transform.astype(np.float32)),
        display_color=_display_color(group[0].extras),
        uvs=torch.from_numpy(welded[0][3].astype(np.float32)) if textured else None,
        texture=torch.from_numpy(group[0].texture.astype(np.float32)) if textured else None,
        source=f"file:{path.name}",
    )


def _display_color(extras: dict) -> Optional[tuple[float, float, float]]:
    color = extras.get("partgen", {}).get("display_color") if isinstance(extras.get("partgen"), dict) else None
    if isinstance(color, list) and len(color) == 3 and all(isinstance(c, (int, float)) and math.isfinite(c) for c in color):
        return tuple(float(c) for c in color)
    return None


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
