"""Writing parts to disk: one GLB scene with a named node per part, optional per-part files, a manifest.

Files are only ever written under the caller's output folder, with sanitised names, never over an
existing file, and atomically: everything is first written to temporary files, then each is linked
to its final name (``os.link`` refuses to replace an existing file), so an interrupted or failed run
leaves no partial output behind. A writer killed outright (SIGKILL, out-of-memory kill, power loss)
cannot clean up after itself; its temporaries carry its host and process id in their name, and the
next export into the same folder sweeps those whose writer is gone (see :func:`sweep_stale_temporaries`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import errno
import re
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..checks import refuse_non_finite
from ..parts import Part, placed_mesh
from ..runtime import Runtime
from .gltf import Material, MeshNode, glb_bytes, srgb_to_linear
from .normals import split_normals

logger = logging.getLogger(__name__)

PART_FORMATS = ("glb", "obj", "stl", "ply")
_SAFE = re.compile(r"[^A-Za-z0-9._ -]+")
# File names are limited to 255 bytes on every common file system, and the counter, "_exploded", a
# part name and the suffix are appended to the prefix's last component; sanitised names are ASCII,
# so characters are bytes here.
# Device names Windows reserves in every folder, with or without an extension ("nul", "con.txt"):
# a folder so named cannot be created there, so such a folder in a prefix gets a "_" after the device name.
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
MAX_PREFIX_CHARS = 200
MAX_NAME_CHARS = 100
MAX_PART_NAME_CHARS = 64
_TEMPORARY_PREFIX = ".partgen-"
_TEMPORARY_SUFFIX = ".tmp"
# A temporary whose writer cannot be checked (another host, or no process table to ask) is stale once
# it is this old: a live writer links its temporaries seconds after writing them.
STALE_AFTER_S = 3600.0


class ExportError(ValueError):
    """The parts or the destination are not valid; nothing was written."""


@dataclass(frozen=True)
class ExportOptions:
    """What to write.

    filename_prefix: "sub/folder/name" relative to the output folder; sanitised. The last component
        also names the GLB's root node (the object).
    part_format: also write each part to its own file in this format ("none" to skip). OBJ comes with
        an ``.mtl``; PLY and STL are written Z up (see :data:`PART_FILE_UP_AXIS`).
    exploded: move parts apart along their centre directions by this share of the object's size,
        then further until no two parts' bounding boxes touch (0 = assembled), for inspection. The
        offsets go on the part nodes' translations; vertices stay as they are.
    metadata: settings and seeds that produced the parts, copied into the manifest.
    crease_angle: degrees; faces meeting at a sharper angle keep a hard edge, smoother ones share
        smooth normals (0 = flat shading, 180 = smooth everywhere). 60 keeps boxes boxy and
        reconstructed surfaces smooth.
    roughness: the parts' material roughness (0 = mirror-like, 1 = matte); metallic is always 0.
    on_ground: move the whole object (its root node) so that its lowest point rests on y = 0.
    """

    filename_prefix: str = "partgen/parts"
    part_format: str = "none"
    exploded: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    crease_angle: float = 60.0
    roughness: float = 0.7
    on_ground: bool = False

    def __post_init__(self) -> None:
        refuse_non_finite(self, ExportError)
        if self.part_format not in PART_FORMATS + ("none",):
            raise ExportError(f"part_format must be one of {PART_FORMATS + ('none',)}, got {self.part_format!r}")
        for name, low, high in (("exploded", 0.0, 10.0), ("crease_angle", 0.0, 180.0), ("roughness", 0.0, 1.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise ExportError(f"{name} must be a number within {low:g}..{high:g}, got {value!r}")


@dataclass(frozen=True)
class ExportResult:
    scene: Path  # relative to the output folder
    manifest: Path
    part_files: tuple[Path, ...]


def sanitize_prefix(prefix: str) -> tuple[Path, str]:
    """``"a/b/name"`` → (subfolder, base name); refuses absolute paths, ``..`` and overlong names."""
    text = prefix.strip().replace("\\", "/")
    if not text:
        raise ExportError("filename_prefix is empty; give a name such as 'partgen/chair'")
    if len(text) > MAX_PREFIX_CHARS:
        raise ExportError(
            f"filename_prefix is {len(text)} characters long ({text[:40]!r}...); give at most {MAX_PREFIX_CHARS}, "
            f"such as 'partgen/chair'"
        )
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ExportError(f"filename_prefix {prefix!r} is an absolute path; give a path relative to the output folder")
    components = [c for c in text.split("/") if c not in ("", ".")]
    if any(c == ".." for c in components):
        raise ExportError(f"filename_prefix {prefix!r} contains '..'; files stay inside the output folder")
    cleaned = [(_SAFE.sub("_", c).strip(" .") or "_") for c in components]
    # Folders only: the file name always gets "_<counter>" appended, which no reserved name has.
    cleaned = [_WINDOWS_RESERVED.sub(r"\1_\2", c) if i < len(cleaned) - 1 else c for i, c in enumerate(cleaned)]
    if not cleaned:
        raise ExportError(f"filename_prefix {prefix!r} has no usable name")
    too_long = [c for c in cleaned if len(c) > MAX_NAME_CHARS]
    if too_long:
        raise ExportError(
            f"filename_prefix has a folder or file name of {len(too_long[0])} characters ({too_long[0][:40]!r}...); "
            f"keep each name between '/' to at most {MAX_NAME_CHARS} characters (file names are limited to 255 "
            f"bytes, and a counter and the part names are appended)"
        )
    return Path(*cleaned[:-1]) if len(cleaned) > 1 else Path(), cleaned[-1]


def part_file_name(name: str) -> str:
    return (_SAFE.sub("_", name).strip(" .") or "part")[:MAX_PART_NAME_CHARS]


def check_parts(parts: Sequence[Part]) -> None:
    if not parts:
        raise ExportError("there are no parts to export; check the reconstruction step")
    for part in parts:
        if part.faces.shape[0] == 0:
            raise ExportError(f"part {part.name!r} has no faces")
        if not torch.isfinite(part.vertices).all():
            raise ExportError(f"part {part.name!r} has NaN or infinite vertices")
        if part.faces.min() < 0 or part.faces.max() >= part.vertices.shape[0]:
            raise ExportError(f"part {part.name!r} has faces that index missing vertices")
        # NaN colours or texture coordinates would be written into the file, which viewers reject
        for label, values in (("vertex colours", part.vertex_colors), ("texture coordinates", part.uvs),
                              ("texture", part.texture)):
            if values is not None and not bool(torch.isfinite(values).all()):
                raise ExportError(f"part {part.name!r} has NaN or infinite {label}; check the node that made the part")
        if part.texture is not None and min(part.texture.shape[:2]) < 1:
            raise ExportError(f"part {part.name!r} has an empty texture ({part.texture.shape[1]}x{part.texture.shape[0]})")
    names = [p.name for p in parts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExportError(f"part names must be unique; repeated: {', '.join(duplicates)}")


def _unique_names(parts: Sequence[Part]) -> list[str]:
    """File-safe names, kept distinct after sanitising."""
    seen: dict[str, int] = {}
    names = []
    for part in parts:
        base = part_file_name(part.name)
        count = seen.get(base, 0)
        seen[base] = count + 1
        names.append(base if count == 0 else f"{base}_{count}")
    return names


# Up axis of the per-part files: glTF and OBJ Y up (both importers' default in Blender), PLY and STL
# Z up, what Blender's PLY/STL importers and slicers assume, so parts stand upright when dropped in.
PART_FILE_UP_AXIS = {"glb": "Y", "obj": "Y", "stl": "Z", "ply": "Z"}
# glTF (y up, front +z) → z up, front -y: the rotation Blender's own glTF importer applies.
_Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
# Gap left between parts' bounding boxes in an exploded view, as a share of the object's diagonal.
EXPLODED_GAP = 0.02


@dataclass(frozen=True)
class PreparedPart:
    """A part as it is written: vertices local to its pivot, split along creases with normals,
    display (sRGB) colours, and the node matrix that places it in the object."""

    part: Part
    file_name: str
    positions: np.ndarray  # [K,3] float64, local to the node
    normals: np.ndarray  # [K,3] float32 unit
    colors: np.ndarray  # [K,3] sRGB 0..1
    triangles: np.ndarray  # [M,3]
    node_matrix: np.ndarray  # [4,4] float64: object frame ← node (pivot, exploded offset included)
    uvs: Optional[np.ndarray] = None  # [K,2] glTF convention (v down), with texture_png
    texture_png: Optional[bytes] = None  # the part's base-colour texture (sRGB PNG)

    def object_positions(self) -> np.ndarray:
        return self.positions @ self.node_matrix[:3, :3].T + self.node_matrix[:3, 3]


def _keeps_node_transform(transform: np.ndarray) -> bool:
    """A transform a glTF node can hold (translation, rotation, positive scale: no shear, no
    mirroring, no projection); anything else is baked into the vertices by :func:`place`."""
    linear = transform[:3, :3]
    gram = linear.T @ linear
    return (np.allclose(transform[3], [0, 0, 0, 1]) and np.linalg.det(linear) > 0
            and np.allclose(gram, np.diag(np.diag(gram)), atol=1e-9 * max(1.0, float(np.abs(gram).max()))))


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def prepare_part(part: Part, file_name: str, crease_angle: float) -> PreparedPart:
    """Pivot at the centre of the part's bounding box: its vertices become local to that point and
    the node carries the translation, so the part turns about its own centre in any editor."""
    transform = part.transform.double().numpy()
    if _keeps_node_transform(transform):
        local, triangles = part.vertices.double().numpy(), part.faces.long().numpy()
    else:
        placed, faces = placed_mesh(part)
        local, triangles, transform = placed.numpy(), faces.numpy(), np.eye(4)
    pivot = (local.min(0) + local.max(0)) / 2
    local = local - pivot
    split = split_normals(local, triangles, crease_angle)
    colors = part.vertex_colors.double().clamp(0, 1).numpy()
    uvs = part.uvs.double().numpy()[split.source] if part.has_texture else None
    return PreparedPart(part, file_name, local[split.source], split.normals, colors[split.source], split.faces,
                        transform @ _translation(pivot), uvs, texture_png(part.texture) if part.has_texture else None)


def texture_png(texture: torch.Tensor) -> bytes:
    """``[H,W,3]`` sRGB 0..1 → 8-bit PNG bytes."""
    import io

    from PIL import Image

    pixels = (texture.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(stream, format="PNG", optimize=False)
    return stream.getvalue()


def exploded_offsets(parts: Sequence[PreparedPart], amount: float) -> list[np.ndarray]:
    """Per-part translation: first along the direction from the object's centre to the part's centre,
    ``amount`` times the object's bounding-box diagonal; then overlapping bounding boxes are pushed
    apart along their axis of least overlap until every pair is separated by a small gap."""
    boxes = [(p.object_positions().min(0), p.object_positions().max(0)) for p in parts]
    low = np.min([b[0] for b in boxes], axis=0)
    high = np.max([b[1] for b in boxes], axis=0)
    centre, diagonal = (low + high) / 2, float(np.linalg.norm(high - low)) or 1.0
    offsets = []
    for box_low, box_high in boxes:
        direction = (box_low + box_high) / 2 - centre
        length = np.linalg.norm(direction)
        offsets.append(direction / length * amount * diagonal if length > 1e-9 * diagonal else np.zeros(3))
    if amount <= 0:
        return offsets
    gap = EXPLODED_GAP * diagonal
    for _sweep in range(100 * len(parts)):
        moved = False
        for i in range(len(parts)):
            for j in range(i + 1, len(parts)):
                low_i, high_i = boxes[i][0] + offsets[i], boxes[i][1] + offsets[i]
                low_j, high_j = boxes[j][0] + offsets[j], boxes[j][1] + offsets[j]
                overlap = np.minimum(high_i, high_j) - np.maximum(low_i, low_j) + gap
                if (overlap <= 0).any():
                    continue
                axis = int(np.argmin(overlap))
                side = ((low_j + high_j) - (low_i + high_i))[axis]
                if abs(side) < 1e-12:  # same centre on that axis: the later part moves the positive way
                    side = 1.0
                push = np.zeros(3)
                push[axis] = np.sign(side) * overlap[axis] / 2 * 1.001
                offsets[i], offsets[j] = offsets[i] - push, offsets[j] + push
                moved = True
        if not moved:
            break
    else:
        logger.warning("exploded view: some parts still overlap after separating; raise 'exploded'")
    return offsets


def placed_vertices(part: Part) -> np.ndarray:
    """The part's vertices in the object frame (:func:`partgen_models.parts.placed_mesh`)."""
    return placed_mesh(part)[0].numpy()


def _material(prepared: PreparedPart, options: ExportOptions) -> Material:
    """A textured part's colour is its texture; a single-coloured part carries its colour in the
    material (so every viewer shows it, Blender's Solid view included); otherwise the factor stays
    white and the vertex colours show unchanged."""
    if prepared.texture_png is not None:
        return Material(name=prepared.part.name, roughness=options.roughness, texture_png=prepared.texture_png)
    if _is_uniform(prepared.colors):
        linear = srgb_to_linear(prepared.colors[0])
        return Material(name=prepared.part.name, base_color=(*map(float, linear), 1.0), roughness=options.roughness)
    return Material(name=prepared.part.name, roughness=options.roughness)


def _is_uniform(colors: np.ndarray) -> bool:
    return len(colors) > 0 and float(np.ptp(colors, axis=0).max()) < 1e-6


def _extras(prepared: PreparedPart) -> dict:
    part = prepared.part
    return {"partgen": {"display_color": list(part.display_color) if part.display_color else None,
                        "source": part.source or None, "faces": part.num_faces,
                        "vertices": int(part.vertices.shape[0])}}


def _mesh_node(prepared: PreparedPart, options: ExportOptions, matrix: np.ndarray) -> MeshNode:
    return MeshNode(name=prepared.part.name, positions=prepared.positions.astype(np.float32),
                    triangles=prepared.triangles, material=_material(prepared, options),
                    normals=prepared.normals, uvs=None if prepared.uvs is None else prepared.uvs.astype(np.float32),
                    colors=None if prepared.texture_png is not None or _is_uniform(prepared.colors)
                    else srgb_to_linear(prepared.colors).astype(np.float32),
                    matrix=matrix, extras=_extras(prepared))


def scene_glb(prepared: Sequence[PreparedPart], options: ExportOptions, object_name: str,
              root_matrix: Optional[np.ndarray] = None) -> bytes:
    nodes = [_mesh_node(p, options, p.node_matrix) for p in prepared]
    names = {p.part.name for p in prepared}
    while object_name in names:  # editors keep names unique: the part keeps its own, the root yields
        object_name += "_object"
    return glb_bytes(nodes, root_name=object_name, root_matrix=root_matrix,
                     root_extras={"partgen": {"format": "partgen-parts/1", "parts": len(prepared)}})


def parts_glb_bytes(parts: Sequence[Part], object_name: str, options: ExportOptions = ExportOptions()) -> bytes:
    """The assembled scene Save Parts writes, as bytes (for callers that write files themselves)."""
    check_parts(parts)
    prepared = [prepare_part(part, name, options.crease_angle) for part, name in zip(parts, _unique_names(parts))]
    return scene_glb(prepared, options, object_name)


def _obj_files(prepared: PreparedPart, options: ExportOptions, stem: str, root: np.ndarray) -> dict[str, bytes]:
    """OBJ (Y up) with the part as object ``o`` and material, plus its ``.mtl``. OBJ has no pivot,
    so vertices are written in the object frame; colours as ``v x y z r g b`` (sRGB, as OBJ readers
    expect); the material's ``Kd`` is the part's mean colour in linear RGB (Blender's OBJ importer
    copies Kd into Base Color unchanged, as its exporter writes it)."""
    matrix = root @ prepared.node_matrix
    positions = prepared.positions @ matrix[:3, :3].T + matrix[:3, 3]
    normal_matrix = np.linalg.inv(matrix[:3, :3]).T
    normals = prepared.normals.astype(np.float64) @ normal_matrix.T
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    name = _obj_name(prepared.part.name)
    # a line break in a name (a GLB node, a VLM's reply) must not end the comment and start a statement
    comment = " ".join(prepared.part.name.split())
    lines = [f"# {comment} (comfyui-partgen), Y up", f"mtllib {stem}.mtl", f"o {name}"]
    lines += [f"v {x:.7g} {y:.7g} {z:.7g} {r:.6g} {g:.6g} {b:.6g}"
              for (x, y, z), (r, g, b) in zip(positions, prepared.colors)]
    lines += [f"vn {x:.6g} {y:.6g} {z:.6g}" for x, y, z in normals]
    textured = prepared.texture_png is not None
    if textured:  # OBJ's texture origin is the bottom-left corner
        lines += [f"vt {u:.7g} {1.0 - v:.7g}" for u, v in prepared.uvs]
    lines += [f"usemtl {name}", "s 1"]
    corner = "{0}/{0}/{0}" if textured else "{0}//{0}"
    lines += [" ".join(["f"] + [corner.format(i) for i in triangle]) for triangle in prepared.triangles + 1]
    kd = np.ones(3) if textured else srgb_to_linear(prepared.colors.mean(0) if len(prepared.colors) else np.full(3, 0.5))
    material = [f"# {comment} (comfyui-partgen)", f"newmtl {name}", "Ka 0 0 0",
                "Kd {:.6f} {:.6f} {:.6f}".format(*kd), "Ks 0 0 0", "Ns 50", "d 1", "illum 1",
                f"Pr {options.roughness:.3f}", "Pm 0"]
    files = {".obj": ("\n".join(lines) + "\n").encode("utf-8")}
    if textured:
        material.append(f"map_Kd {stem}.png")
        files[".png"] = prepared.texture_png
    files[".mtl"] = ("\n".join(material) + "\n").encode("utf-8")
    return files


def _obj_name(name: str) -> str:
    # OBJ statements end at whitespace; the name is otherwise kept (UTF-8).
    return re.sub(r"\s+", "_", name.strip()) or "part"


def _z_up(prepared: PreparedPart, root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    matrix = root @ prepared.node_matrix
    positions = prepared.positions @ matrix[:3, :3].T + matrix[:3, 3]
    normals = prepared.normals.astype(np.float64) @ np.linalg.inv(matrix[:3, :3])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    return positions @ _Y_UP_TO_Z_UP.T, normals @ _Y_UP_TO_Z_UP.T


def _ply_bytes(prepared: PreparedPart, root: np.ndarray) -> bytes:
    """Binary PLY, Z up, with normals and 8-bit sRGB colours; the part's name in a comment."""
    positions, normals = _z_up(prepared, root)
    count = len(positions)
    vertex = np.zeros(count, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"),
                                    ("nz", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for k, key in enumerate("xyz"):
        vertex[key], vertex["n" + key] = positions[:, k], normals[:, k]
    rgb = np.round(prepared.colors * 255).astype(np.uint8)
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    face = np.zeros(len(prepared.triangles), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face["n"], face["v"] = 3, prepared.triangles
    name = " ".join(prepared.part.name.split())
    header = ("ply\nformat binary_little_endian 1.0\ncomment comfyui-partgen part, Z up\n"
              f"comment name {name}\nobj_info name {name}\n"
              f"element vertex {count}\nproperty float x\nproperty float y\nproperty float z\n"
              "property float nx\nproperty float ny\nproperty float nz\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(face)}\nproperty list uchar int vertex_indices\nend_header\n")
    return header.encode("utf-8") + vertex.tobytes() + face.tobytes()


def _stl_bytes(prepared: PreparedPart, root: np.ndarray) -> bytes:
    """Binary STL, Z up; the 80-byte header names the part (it must not start with "solid",
    which readers take for ASCII STL)."""
    positions, _ = _z_up(prepared, root)
    corners = positions[prepared.triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)
    record = np.zeros(len(corners), dtype=[("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    record["normal"], record["corners"] = normals, corners
    header = f"partgen part: {prepared.part.name}".encode("utf-8")[:80].ljust(80, b" ")
    return header + struct.pack("<I", len(record)) + record.tobytes()


def _part_files(prepared: PreparedPart, options: ExportOptions, stem: str, root: np.ndarray) -> dict[str, bytes]:
    """Suffix → bytes of one part's own file(s), placed as in the object (exploded offset included)."""
    file_format = options.part_format
    if file_format == "glb":  # one node, keeping the part's name, pivot and material
        return {".glb": glb_bytes([_mesh_node(prepared, options, root @ prepared.node_matrix)])}
    if file_format == "obj":
        return _obj_files(prepared, options, stem, root)
    if file_format == "ply":
        return {".ply": _ply_bytes(prepared, root)}
    return {".stl": _stl_bytes(prepared, root)}


def _manifest(prepared: Sequence[PreparedPart], offsets, files: dict[str, list[str]], options: ExportOptions) -> dict:
    entries = []
    for item, offset in zip(prepared, offsets):
        part, positions = item.part, item.object_positions()
        entries.append({
            "name": part.name,
            "file": files[part.name][0] if part.name in files else None,
            "sidecar_files": files[part.name][1:] if part.name in files else [],
            "display_color": list(part.display_color) if part.display_color else None,
            "source": part.source or None,
            "vertices": int(part.vertices.shape[0]),
            "faces": part.num_faces,
            "bbox_min": positions.min(0).tolist(),
            "bbox_max": positions.max(0).tolist(),
            "pivot": item.node_matrix[:3, 3].tolist(),
            "transform": part.transform.tolist(),
            "exploded_offset": np.asarray(offset).tolist(),
        })
    return {"format": "partgen-parts/1", "frame": "glTF: Y up, right-handed; front faces +Z",
            "scene": files["__scene__"][0], "part_file_up_axis": PART_FILE_UP_AXIS.get(options.part_format),
            "parts": entries, "settings": options.metadata}


def _next_counter(folder: Path, base: str) -> int:
    pattern = re.compile(re.escape(base) + r"_(\d{5})")
    used = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))] if folder.is_dir() else []
    return max(used, default=0) + 1


def export_parts(
    parts: Sequence[Part],
    output_dir: Path,
    options: ExportOptions = ExportOptions(),
    runtime: Optional[Runtime] = None,
) -> ExportResult:
    """Write the scene GLB, the manifest and optional per-part files; return paths relative to ``output_dir``.

    ``runtime.check_interrupt`` is honoured between files; an interrupt leaves no file behind.
    """
    check_interrupt = runtime.check_interrupt if runtime is not None else (lambda: None)
    check_parts(parts)
    output_dir = Path(output_dir).resolve()
    subfolder, base = sanitize_prefix(options.filename_prefix)
    folder = (output_dir / subfolder).resolve()
    if os.path.commonpath([output_dir, folder]) != str(output_dir):
        raise ExportError(f"filename_prefix {options.filename_prefix!r} leaves the output folder")
    names = _unique_names(parts)
    prepared = [prepare_part(part, name, options.crease_angle) for part, name in zip(parts, names)]
    offsets = exploded_offsets(prepared, options.exploded)
    if options.exploded:  # the offsets go on the nodes, in the object frame
        prepared = [replace(p, node_matrix=_translation(o) @ p.node_matrix) for p, o in zip(prepared, offsets)]
    root = np.eye(4)
    if options.on_ground:
        root[1, 3] = -min(float(p.object_positions()[:, 1].min()) for p in prepared)

    # Everything is encoded before anything touches the disk.
    suffix = "_exploded" if options.exploded else ""
    stem_template = f"{base}_{{counter:05}}{suffix}"
    scene = scene_glb(prepared, options, object_name=base, root_matrix=root)

    _make_folder(folder, options.filename_prefix)
    sweep_stale_temporaries(folder)
    for _attempt in range(100):
        counter = _next_counter(folder, base)
        stem = stem_template.format(counter=counter)
        files: dict[str, list[str]] = {"__scene__": [f"{stem}.glb"]}
        contents = {f"{stem}.glb": scene}
        if options.part_format != "none":
            for item in prepared:
                part_stem = f"{stem}_{item.file_name}"
                for file_suffix, data in _part_files(item, options, part_stem, root).items():
                    files.setdefault(item.part.name, []).append(part_stem + file_suffix)
                    contents[part_stem + file_suffix] = data
        manifest_name = f"{stem}.json"
        contents[manifest_name] = json.dumps(_manifest(prepared, offsets, files, options), indent=2).encode()
        if _write_all_or_nothing(folder, contents, check_interrupt, options.filename_prefix):
            break
    else:
        raise ExportError(f"could not find a free file name for {base!r} in {folder}")
    relative = lambda name: subfolder / name  # noqa: E731
    part_files = tuple(relative(files[p.name][0]) for p in parts if p.name in files)
    logger.info("wrote %s (%d parts)", folder / files["__scene__"][0], len(parts))
    return ExportResult(scene=relative(files["__scene__"][0]), manifest=relative(manifest_name), part_files=part_files)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_folder(folder: Path, prefix: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(
            f"cannot create the folder {folder} for filename_prefix {prefix!r}: {error.strerror or error}; "
            f"give another filename_prefix (a file may already have that name)"
        ) from None


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:24] or "host"


def _temporary_prefix() -> str:
    """``.partgen-<host>-<pid>-``: lets a later export tell whether the writer still runs."""
    return f"{_TEMPORARY_PREFIX}{_host_tag()}-{os.getpid()}-"


_TEMPORARY_NAME = re.compile(re.escape(_TEMPORARY_PREFIX) + r"(?:([A-Za-z0-9]+)-(\d+)-)?.*" + re.escape(_TEMPORARY_SUFFIX) + "$")


def _writer_gone(host: Optional[str], pid: Optional[str]) -> bool:
    """True only when the writer is known to have ended (same host, no such process)."""
    if host is None or host != _host_tag() or os.name != "posix":
        return False  # another machine, an older name without a pid, or no safe way to ask (Windows)
    if int(pid) == os.getpid():
        return False  # this process: another thread may be writing
    try:
        os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists under another user, or cannot be asked
    return False


def sweep_stale_temporaries(folder: Path, now: Optional[float] = None) -> list[Path]:
    """Remove temporaries left in ``folder`` by writers that were killed; return what was removed.

    A temporary is stale when its writer (same host) no longer runs, or when it is older than
    :data:`STALE_AFTER_S` (other hosts, pid reuse, older names). Final names are never touched.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY_NAME.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if _writer_gone(match.group(1), match.group(2)) or age > STALE_AFTER_S:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            continue  # swept by another export at the same time
        except OSError as error:
            logger.warning("could not remove the stale temporary %s: %s", entry.path, error)
    if removed:
        logger.info("removed %d temporary file(s) left in %s by an interrupted save", len(removed), folder)
    return removed


def _write_all_or_nothing(
    folder: Path, contents: dict[str, bytes], check_interrupt: Callable[[], None], prefix: str
) -> bool:
    """Write every file or none; False when a final name is already taken (then nothing is left).

    ``check_interrupt`` runs before each file; an interrupt removes everything written so far.
    """
    temporaries: dict[str, str] = {}
    linked: list[Path] = []
    name = ""
    try:
        for name, data in contents.items():
            check_interrupt()
            handle, temporary = tempfile.mkstemp(prefix=_temporary_prefix(), suffix=_TEMPORARY_SUFFIX, dir=folder)
            temporaries[name] = temporary
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs follow the umask
        check_interrupt()
        for name, temporary in temporaries.items():
            final = folder / name
            os.link(temporary, final)  # fails if the name exists: never overwrite
            linked.append(final)
        return True
    except FileExistsError:
        for path in linked:
            path.unlink(missing_ok=True)
        return False
    except OSError as error:
        for path in linked:
            path.unlink(missing_ok=True)
        # Name the file the user asked for, not the internal temporary.
        hint = (
            "give a shorter filename_prefix" if error.errno == errno.ENAMETOOLONG
            else "free some disk space" if error.errno == errno.ENOSPC
            else "check the folder's permissions and free space"
        )
        raise ExportError(
            f"could not write {name} in {folder} (filename_prefix {prefix!r}): {error.strerror or error}; {hint}"
        ) from None
    except BaseException:
        for path in linked:
            path.unlink(missing_ok=True)
        raise
    finally:
        for temporary in temporaries.values():
            Path(temporary).unlink(missing_ok=True)
