"""A GLB read the way a glTF importer reads it, written independently of the exporter: the node tree
with world matrices (T·R·S or matrix, parents first), each mesh node's primitive decoded from the
binary chunk (positions, normals, COLOR_0 as stored, i.e. linear), its material and extras."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

_DTYPES = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


@dataclass
class ImportedNode:
    name: str
    parent: Optional[str]
    local: np.ndarray  # [4,4]
    world: np.ndarray  # [4,4]
    extras: dict
    positions: Optional[np.ndarray] = None  # local, [N,3]
    normals: Optional[np.ndarray] = None
    linear_colors: Optional[np.ndarray] = None  # COLOR_0 as stored
    triangles: Optional[np.ndarray] = None
    material: Optional[dict] = None

    def world_positions(self) -> np.ndarray:
        return self.positions @ self.world[:3, :3].T + self.world[:3, 3]


def _quaternion_matrix(x, y, z, w) -> np.ndarray:
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _local(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], dtype=np.float64).reshape(4, 4).T
    matrix = np.eye(4)
    matrix[:3, :3] = _quaternion_matrix(*node.get("rotation", [0, 0, 0, 1])) @ np.diag(node.get("scale", [1, 1, 1]))
    matrix[:3, 3] = node.get("translation", [0, 0, 0])
    return matrix


def read_glb(path: Path) -> tuple[dict, list[ImportedNode]]:
    raw = Path(path).read_bytes()
    assert raw[:4] == b"glTF"
    json_length = struct.unpack_from("<I", raw, 12)[0]
    document = json.loads(raw[20:20 + json_length].decode("utf-8"))
    binary = raw[20 + json_length + 8:]

    def accessor(index):
        a = document["accessors"][index]
        view = document["bufferViews"][a["bufferView"]]
        dtype = _DTYPES[a["componentType"]]
        width = _WIDTH[a["type"]]
        start = view.get("byteOffset", 0) + a.get("byteOffset", 0)
        values = np.frombuffer(binary, dtype=dtype, count=a["count"] * width, offset=start)
        return values.reshape(a["count"], width) if width > 1 else values

    out: list[ImportedNode] = []

    def visit(index: int, parent: Optional[ImportedNode]):
        node = document["nodes"][index]
        local = _local(node)
        world = (parent.world if parent else np.eye(4)) @ local
        item = ImportedNode(node.get("name", str(index)), parent.name if parent else None, local, world, node.get("extras", {}))
        if "mesh" in node:
            (primitive,) = document["meshes"][node["mesh"]]["primitives"]
            attributes = primitive["attributes"]
            item.positions = accessor(attributes["POSITION"]).astype(np.float64)
            item.normals = accessor(attributes["NORMAL"]).astype(np.float64) if "NORMAL" in attributes else None
            item.linear_colors = accessor(attributes["COLOR_0"]).astype(np.float64) if "COLOR_0" in attributes else None
            item.triangles = accessor(primitive["indices"]).astype(np.int64).reshape(-1, 3)
            item.material = document["materials"][primitive["material"]] if "material" in primitive else None
        out.append(item)
        for child in node.get("children", []):
            visit(child, item)

    for root in document["scenes"][document.get("scene", 0)]["nodes"]:
        visit(root, None)
    return document, out


def to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
