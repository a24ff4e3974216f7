"""A small glTF 2.0 binary (GLB) writer and the accessor reading Load Parts needs, in numpy.

Written here rather than through trimesh's exporter because an artist-ready file needs what that
exporter does not give: ``COLOR_0`` in linear space (glTF 2.0 §3.7.2.1: "colors ... in linear
space"; Blender and three.js read it so), a named PBR material per part, a root node with the
parts as children placed by node transforms (pivots), and per-node ``extras``.

Colour spaces: a :class:`~partgen_models.parts.Part`'s vertex colours are display (sRGB) values,
what OBJ/PLY store and what a user picks. They are converted to linear for ``COLOR_0`` and for
``baseColorFactor``; a base-colour texture stays sRGB (the spec defines it so).
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import unquote

import numpy as np

_FLOAT, _UINT32, _UINT16, _UINT8 = 5126, 5125, 5123, 5121
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_COMPONENT_COUNTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = b"glTF", 0x4E4F534A, 0x004E4942


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding, values in 0..1."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)


@dataclass(frozen=True)
class Material:
    """A metallic-roughness material. ``base_color`` is a linear RGBA factor (multiplied with the
    vertex colours and the texture); ``texture_png`` an sRGB base-colour image (needs UVs)."""

    name: str
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    metallic: float = 0.0
    roughness: float = 0.7
    texture_png: Optional[bytes] = None


@dataclass(frozen=True)
class MeshNode:
    """One node with one triangle primitive. Arrays: positions ``[N,3]`` (local to the node),
    normals ``[N,3]`` unit, colors ``[N,3]`` linear 0..1, uvs ``[N,2]``, triangles ``[M,3]``;
    ``matrix`` ``[4,4]`` places the node in its parent (a TRS without shear)."""

    name: str
    positions: np.ndarray
    triangles: np.ndarray
    material: Material
    normals: Optional[np.ndarray] = None
    colors: Optional[np.ndarray] = None
    uvs: Optional[np.ndarray] = None
    matrix: np.ndarray = field(default_factory=lambda: np.eye(4))
    extras: dict[str, Any] = field(default_factory=dict)


def _node_transform(matrix: np.ndarray) -> dict[str, Any]:
    matrix = np.asarray(matrix, dtype=np.float64)
    if np.allclose(matrix, np.eye(4)):
        return {}
    if np.allclose(matrix[:3, :3], np.eye(3)):
        return {"translation": [float(v) for v in matrix[:3, 3]]}
    return {"matrix": [float(v) for v in matrix.T.reshape(-1)]}  # glTF matrices are column-major


class _Buffer:
    """The binary chunk: bufferViews and accessors appended as arrays arrive."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, payload: bytes, target: Optional[int] = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        self.data.extend(payload)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, component: int, kind: str, target: int, bounds: bool = False) -> int:
        array = np.ascontiguousarray(array, dtype=_COMPONENT_DTYPES[component])
        accessor = {"bufferView": self.view(array.tobytes(), target), "componentType": component, "type": kind,
                    "count": int(array.shape[0]) if kind != "SCALAR" else int(array.size)}
        if bounds:
            accessor["min"] = [float(v) for v in array.min(0)]
            accessor["max"] = [float(v) for v in array.max(0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def glb_bytes(meshes: Sequence[MeshNode], root_name: Optional[str] = None, root_matrix: Optional[np.ndarray] = None,
              root_extras: Optional[dict] = None) -> bytes:
    """A GLB with one node per mesh, under a root node called ``root_name`` (or at the top level)."""
    buffer = _Buffer()
    nodes, gltf_meshes, materials, textures, images = [], [], [], [], []
    for mesh in meshes:
        attributes = {"POSITION": buffer.accessor(mesh.positions, _FLOAT, "VEC3", _ARRAY_BUFFER, bounds=True)}
        if mesh.normals is not None:
            attributes["NORMAL"] = buffer.accessor(mesh.normals, _FLOAT, "VEC3", _ARRAY_BUFFER)
        if mesh.uvs is not None:
            attributes["TEXCOORD_0"] = buffer.accessor(mesh.uvs, _FLOAT, "VEC2", _ARRAY_BUFFER)
        if mesh.colors is not None:
            attributes["COLOR_0"] = buffer.accessor(np.clip(mesh.colors, 0, 1), _FLOAT, "VEC3", _ARRAY_BUFFER)
        index_type = _UINT16 if mesh.positions.shape[0] < 65535 else _UINT32
        indices = buffer.accessor(np.asarray(mesh.triangles).reshape(-1), index_type, "SCALAR", _ELEMENT_ARRAY_BUFFER)
        pbr = {"baseColorFactor": [float(c) for c in mesh.material.base_color],
               "metallicFactor": float(mesh.material.metallic), "roughnessFactor": float(mesh.material.roughness)}
        if mesh.material.texture_png is not None:
            images.append({"bufferView": buffer.view(mesh.material.texture_png), "mimeType": "image/png"})
            textures.append({"sampler": 0, "source": len(images) - 1})
            pbr["baseColorTexture"] = {"index": len(textures) - 1}
        materials.append({"name": mesh.material.name, "pbrMetallicRoughness": pbr})
        gltf_meshes.append({"name": mesh.name, "primitives": [
            {"attributes": attributes, "indices": indices, "material": len(materials) - 1, "mode": 4}]})
        node = {"name": mesh.name, "mesh": len(gltf_meshes) - 1, **_node_transform(mesh.matrix)}
        if mesh.extras:
            node["extras"] = mesh.extras
        nodes.append(node)
    part_nodes = list(range(len(nodes)))
    if root_name is not None:
        root = {"name": root_name, "children": part_nodes, **_node_transform(np.eye(4) if root_matrix is None else root_matrix)}
        if root_extras:
            root["extras"] = root_extras
        nodes.append(root)
        scene_nodes = [len(nodes) - 1]
    else:
        scene_nodes = part_nodes
    buffer.data.extend(b"\0" * (-len(buffer.data) % 4))
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "comfyui-partgen"},
        "scene": 0, "scenes": [{"nodes": scene_nodes}], "nodes": nodes, "meshes": gltf_meshes,
        "materials": materials, "accessors": buffer.accessors, "bufferViews": buffer.views,
        "buffers": [{"byteLength": len(buffer.data)}],
    }
    if images:
        # 9729 LINEAR, 9987 LINEAR_MIPMAP_LINEAR, 33071 CLAMP_TO_EDGE (atlas charts must not wrap)
        document.update(images=images, textures=textures,
                        samplers=[{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}])
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), _JSON_CHUNK) + text + struct.pack("<II", len(buffer.data), _BIN_CHUNK) + bytes(buffer.data)
    return struct.pack("<4sII", _GLB_MAGIC, 2, 12 + len(chunks)) + chunks


# ---------------------------------------------------------------------------------------------
# Reading (Load Parts): the JSON document, buffers and accessors, as a glTF importer sees them
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GltfDocument:
    json: dict
    buffers: list[Optional[bytes]]


def _json_and_binary(raw: bytes) -> tuple[dict, Optional[bytes]]:
    """The JSON document and the GLB's binary chunk (None for a .gltf) of a file's bytes."""
    binary = None
    if raw[:4] == _GLB_MAGIC:
        json_length, kind = struct.unpack_from("<II", raw, 12)
        if kind != _JSON_CHUNK:
            raise ValueError("the first GLB chunk is not JSON")
        document = json.loads(raw[20 : 20 + json_length])
        rest = 20 + json_length
        if rest + 8 <= len(raw):
            bin_length, kind = struct.unpack_from("<II", raw, rest)
            if kind == _BIN_CHUNK:
                binary = raw[rest + 8 : rest + 8 + bin_length]
    else:
        document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError(f"the glTF JSON is a {type(document).__name__}, not an object")
    return document, binary


def external_uris(path: Path) -> list[str]:
    """The files a .glb or .gltf refers to (buffers and images that are not embedded data URIs)."""
    document, _ = _json_and_binary(Path(path).read_bytes())
    entries = [e for key in ("buffers", "images") for e in document.get(key, []) if isinstance(e, dict)]
    return [e["uri"] for e in entries if isinstance(e.get("uri"), str) and not e["uri"].startswith("data:")]


def read_document(path: Path) -> GltfDocument:
    """The JSON and buffer bytes of a .glb or .gltf (external buffers next to it, or data URIs).
    Raises ValueError on a malformed file; a buffer that cannot be found is None."""
    document, binary = _json_and_binary(Path(path).read_bytes())
    buffers: list[Optional[bytes]] = []
    for entry in document.get("buffers", []):
        uri = entry.get("uri")
        if uri is None:
            buffers.append(binary)
        elif uri.startswith("data:"):
            buffers.append(base64.b64decode(uri.split(",", 1)[1]))
        else:
            candidate = (Path(path).parent / unquote(uri)).resolve()
            inside = Path(path).parent.resolve() in candidate.parents  # never a file elsewhere on this machine
            buffers.append(candidate.read_bytes() if inside and candidate.is_file() else None)
    return GltfDocument(document, buffers)


def read_accessor(document: GltfDocument, index: int) -> np.ndarray:
    """Accessor ``index`` as float64 ``[count, components]``, normalised integers mapped to 0..1
    (glTF 2.0 §3.11); sparse accessors and missing buffers raise ValueError."""
    accessor = document.json["accessors"][index]
    if "sparse" in accessor or "bufferView" not in accessor:
        raise ValueError(f"accessor {index} is sparse or has no buffer view")
    view = document.json["bufferViews"][accessor["bufferView"]]
    data = document.buffers[view["buffer"]]
    if data is None:
        raise ValueError(f"buffer {view['buffer']} is missing")
    dtype = np.dtype(_COMPONENT_DTYPES[accessor["componentType"]]).newbyteorder("<")
    components = _COMPONENT_COUNTS[accessor["type"]]
    count = accessor["count"]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    stride = view.get("byteStride") or dtype.itemsize * components
    rows = np.frombuffer(data, dtype=np.uint8, count=max(0, (count - 1) * stride + dtype.itemsize * components), offset=start)
    values = np.lib.stride_tricks.as_strided(rows, (count, dtype.itemsize * components), (stride, 1))
    array = np.ascontiguousarray(values).view(dtype).reshape(count, components).astype(np.float64)
    if accessor.get("normalized") and dtype.kind in "ui":
        array = np.maximum(array / np.iinfo(dtype).max, -1.0)
    return array
