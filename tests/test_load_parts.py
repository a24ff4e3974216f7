"""Load Parts: GLB / glTF / OBJ scenes with several nodes → named parts in the object frame."""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from partgen_models.assembly.export import ExportOptions, export_parts
from partgen_models.assembly.load import LoadOptions, LoadPartsError, load_parts, non_manifold_edges
from partgen_models.assembly.mesh_interop import DEFAULT_COLOR
from partgen_models.parts import Part, placed_mesh

TET = {"positions": [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
       "indices": [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]}  # closed, outward


def gltf_document(meshes: list[list[dict]], nodes: list[dict], scene_nodes=None, materials=None) -> tuple[dict, bytes]:
    """A glTF JSON document and its binary buffer, written by hand so a test controls every field.

    meshes: per mesh, its primitives ``{positions, indices?, colors?, mode?, material?}``.
    """
    blob, views, accessors = bytearray(), [], []

    def add(array: np.ndarray, component: int, kind: str, target: int, bounds: bool = False) -> int:
        while len(blob) % 4:
            blob.append(0)
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": array.nbytes, "target": target})
        blob.extend(array.tobytes())
        accessor = {"bufferView": len(views) - 1, "componentType": component, "type": kind,
                    "count": int(array.size if kind == "SCALAR" else array.shape[0])}
        if bounds:
            finite = np.where(np.isfinite(array), array, 0)
            accessor["min"], accessor["max"] = finite.min(0).tolist(), finite.max(0).tolist()
        accessors.append(accessor)
        return len(accessors) - 1

    gltf_meshes = []
    for primitives in meshes:
        out = []
        for primitive in primitives:
            attributes = {"POSITION": add(np.asarray(primitive["positions"], np.float32), 5126, "VEC3", 34962, True)}
            if primitive.get("colors") is not None:
                attributes["COLOR_0"] = add(np.asarray(primitive["colors"], np.float32), 5126, "VEC3", 34962)
            entry = {"attributes": attributes, "mode": primitive.get("mode", 4)}
            if primitive.get("indices") is not None:
                entry["indices"] = add(np.asarray(primitive["indices"], np.uint32).reshape(-1), 5125, "SCALAR", 34963)
            if "material" in primitive:
                entry["material"] = primitive["material"]
            out.append(entry)
        gltf_meshes.append({"primitives": out})
    while len(blob) % 4:
        blob.append(0)
    document = {"asset": {"version": "2.0"}, "scene": 0,
                "scenes": [{"nodes": list(range(len(nodes))) if scene_nodes is None else scene_nodes}],
                "nodes": nodes}
    if gltf_meshes:
        document.update(meshes=gltf_meshes, accessors=accessors, bufferViews=views, buffers=[{"byteLength": len(blob)}])
    if materials:
        document["materials"] = materials
    return document, bytes(blob)


def write_glb(path: Path, meshes, nodes, scene_nodes=None, materials=None) -> Path:
    document, blob = gltf_document(meshes, nodes, scene_nodes, materials)
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    if blob:
        chunks += struct.pack("<II", len(blob), 0x004E4942) + blob
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks)
    return path


def _shifted(primitive: dict, shift, **extra) -> dict:
    return dict(primitive, positions=(np.asarray(primitive["positions"], float) + shift).tolist(), **extra)


# --------------------------------------------------------------------------------------------
# What loads
# --------------------------------------------------------------------------------------------

def test_glb_nodes_become_named_parts_in_file_order_with_world_transforms(tmp_path):
    quarter_turn_y = [0.0, math.sin(math.pi / 4), 0.0, math.cos(math.pi / 4)]  # quaternion x y z w
    red = [[1.0, 0.0, 0.0]] * 4
    path = write_glb(
        tmp_path / "scene.glb",
        meshes=[[TET], [_shifted(TET, 5, colors=red), TET], [TET]],
        nodes=[
            {"name": "body", "mesh": 0, "translation": [0, 1, 0], "children": [1]},
            {"name": "arm", "mesh": 2, "rotation": quarter_turn_y, "scale": [2, 2, 2]},  # child of body
            {"name": "two_materials", "mesh": 1},
            {"name": "mirrored", "mesh": 0, "scale": [-1, 1, 1]},
            {"mesh": 0, "translation": [0, 0, 9]},  # no name
            {"name": "body", "mesh": 0, "translation": [3, 0, 0]},  # a second node called body
        ],
        scene_nodes=[0, 2, 3, 4, 5],
    )
    parts = load_parts(path)
    assert [p.name for p in parts] == ["body", "arm", "two_materials", "mirrored", "part_04", "body_1"]
    by_name = {p.name: p for p in parts}
    placed = {p.name: placed_mesh(p)[0].float() for p in parts}
    tet = torch.tensor(TET["positions"], dtype=torch.float32)
    assert torch.allclose(placed["body"], tet + torch.tensor([0.0, 1.0, 0.0]))
    # arm: scale 2, a quarter turn about +y (x → -z), then its parent's translation
    expected_arm = torch.stack([2 * tet[:, 2], 2 * tet[:, 1], -2 * tet[:, 0]], dim=1) + torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(placed["arm"], expected_arm, atol=1e-6)
    assert torch.allclose(placed["part_04"], tet + torch.tensor([0.0, 0.0, 9.0]))
    assert torch.allclose(placed["body_1"], tet + torch.tensor([3.0, 0.0, 0.0]))
    # pivots are kept: vertices stay local to their node, the node's world transform travels along
    assert torch.equal(by_name["body"].vertices, tet) and by_name["body"].transform[:3, 3].tolist() == [0.0, 1.0, 0.0]
    assert torch.allclose(by_name["arm"].transform[:3, :3].det(), torch.tensor(8.0))

    # the two primitives of one mesh are one part: first the red one, then the one without colours
    merged = by_name["two_materials"]
    assert merged.vertices.shape == (8, 3) and merged.faces.shape == (8, 3)
    assert torch.allclose(merged.vertex_colors[:4], torch.tensor(red))
    assert torch.allclose(merged.vertex_colors[4:], torch.tensor(DEFAULT_COLOR).expand(4, 3))

    # a mirroring transform flips the winding back, so the surface still faces outwards
    vertices, faces = placed_mesh(by_name["mirrored"])
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    assert mesh.volume > 0


def test_material_colour_is_used_when_there_are_no_vertex_colours(tmp_path):
    path = write_glb(tmp_path / "red.glb", [[dict(TET, material=0)]], [{"name": "red", "mesh": 0}],
                     materials=[{"pbrMetallicRoughness": {"baseColorFactor": [1.0, 0.0, 0.0, 1.0]}}])
    (part,) = load_parts(path)
    assert torch.allclose(part.vertex_colors, torch.tensor([1.0, 0.0, 0.0]).expand(4, 3))


def test_gltf_with_an_external_buffer(tmp_path):
    document, blob = gltf_document([[TET]], [{"name": "solo", "mesh": 0, "translation": [0, 0, 2]}])
    document["buffers"][0]["uri"] = "solo.bin"
    (tmp_path / "solo.bin").write_bytes(blob)
    (tmp_path / "solo.gltf").write_text(json.dumps(document))
    (part,) = load_parts(tmp_path / "solo.gltf")
    assert part.name == "solo" and placed_mesh(part)[0][:, 2].min() == pytest.approx(2.0)


OBJ_WITH_OBJECTS = """\
o seat
v 0 0 0 1 0 0
v 1 0 0 1 0 0
v 0 1 0 1 0 0
v 0 0 1 1 0 0
f 1 3 2
f 1 2 4
f 1 4 3
f 2 3 4
o leg
v 2 0 0 0 1 0
v 3 0 0 0 1 0
v 2 1 0 0 1 0
f 5 6 7
g back
v 5 0 0 0 0 1
v 6 0 0 0 0 1
v 5 1 0 0 0 1
f 8 9 10
"""


def test_obj_objects_and_groups_become_parts_with_their_own_vertices(tmp_path):
    path = tmp_path / "chair.obj"
    path.write_text(OBJ_WITH_OBJECTS)
    parts = load_parts(path)
    assert [p.name for p in parts] == ["seat", "leg", "leg_back"]
    assert [p.vertices.shape[0] for p in parts] == [4, 3, 3]
    assert torch.allclose(parts[0].vertex_colors, torch.tensor([1.0, 0.0, 0.0]).expand(4, 3))
    assert torch.allclose(parts[2].vertex_colors, torch.tensor([0.0, 0.0, 1.0]).expand(3, 3))
    assert torch.allclose(parts[2].vertices[0], torch.tensor([5.0, 0.0, 0.0]))
    assert parts[1].faces.tolist() == [[0, 1, 2]]


def test_obj_groups_keep_file_order_and_a_nameless_obj_is_named_after_its_file(tmp_path):
    groups = tmp_path / "groups.obj"
    groups.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 2 0 0\nv 3 0 0\nv 2 1 0\ng zeta\nf 1 2 3\ng alpha\nf 4 5 6\n")
    assert [p.name for p in load_parts(groups)] == ["zeta", "alpha"]
    plain = tmp_path / "plain.obj"
    plain.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (part,) = load_parts(plain)
    assert part.name == "plain"
    assert torch.allclose(part.vertex_colors, torch.tensor(DEFAULT_COLOR).expand(3, 3))


def test_saved_parts_load_back_unchanged(tmp_path):
    box, ball = trimesh.creation.box(), trimesh.creation.icosphere(2)
    parts = [Part(name, torch.tensor(m.vertices, dtype=torch.float32) + shift, torch.tensor(m.faces),
                  torch.rand(len(m.vertices), 3, generator=torch.Generator().manual_seed(i)))
             for i, (name, m, shift) in enumerate([("seat", box, 0.0), ("ball", ball, 2.0)])]
    result = export_parts(parts, tmp_path, ExportOptions("round/trip"))
    loaded = load_parts(tmp_path / result.scene)
    assert [p.name for p in loaded] == ["seat", "ball"]
    for original, back in zip(parts, loaded):
        # crease copies are welded back; vertices come back local to the pivot Save Parts put at the centre
        assert torch.allclose(placed_mesh(back)[0].float(), original.vertices, atol=1e-6) and torch.equal(back.faces, original.faces)
        assert back.vertices.amin(0).add(back.vertices.amax(0)).abs().max() < 1e-6
        assert (back.vertex_colors - original.vertex_colors).abs().max() <= 1e-5  # COLOR_0 read at full precision


def test_seams_are_not_mistaken_for_non_manifold_edges():
    # trimesh's box has 8 shared vertices; split every face's vertices as files do along seams
    box = trimesh.creation.box()
    split_vertices = box.vertices[box.faces.reshape(-1)]
    split_faces = np.arange(len(split_vertices)).reshape(-1, 3)
    assert non_manifold_edges(split_vertices, split_faces) == 0
    fin = np.array([[0, 1, 2], [0, 1, 3], [0, 1, 4]])
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], float)
    # the same fin with every triangle on its own copies of the shared edge's vertices
    separate = points[fin.reshape(-1)]
    assert non_manifold_edges(points, fin) == 1
    assert non_manifold_edges(separate, np.arange(9).reshape(-1, 3)) == 1


# --------------------------------------------------------------------------------------------
# Bad input: a message that says what is wrong, and nothing written
# --------------------------------------------------------------------------------------------

FIN = {"positions": [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], "indices": [[0, 1, 2], [0, 1, 3], [0, 1, 4]]}


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    junk = folder / "junk.glb"
    junk.write_bytes(b"glTF\x02\x00\x00\x00not really a glb at all")
    truncated = folder / "truncated.glb"
    truncated.write_bytes(write_glb(folder / "whole.glb", [[TET]], [{"name": "a", "mesh": 0}]).read_bytes()[:90])
    (folder / "empty.obj").write_text("")
    (folder / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (folder / "missing_vertex.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 10\n")
    (folder / "mesh.stl").write_bytes(b"solid x\nendsolid x\n")
    nan = _shifted(TET, 0)
    nan["positions"][1] = [float("nan"), 0, 0]
    return {
        "missing": (folder / "nope.glb", "nope.glb: no such file"),
        "suffix": (folder / "mesh.stl", "mesh.stl: unsupported file type .stl; Load Parts reads .glb, .gltf, .obj"),
        "empty": (folder / "empty.obj", "empty.obj: the file is empty"),
        "junk": (junk, "junk.glb: could not be read as GLB"),
        "truncated": (truncated, "truncated.glb: could not be read as GLB"),
        "missing_vertex": (folder / "missing_vertex.obj", "missing_vertex.obj: could not be read as OBJ"),
        "no_meshes": (write_glb(folder / "no_meshes.glb", [], [{"name": "empty_node"}]),
                      "no_meshes.glb: the file contains no meshes"),
        "points": (write_glb(folder / "points.glb", [[dict(TET, indices=None, mode=0)]], [{"name": "cloud", "mesh": 0}]),
                   "points.glb: 'cloud' has no triangles (it is a PointCloud); Load Parts needs triangle meshes"),
        "points_obj": (folder / "points.obj", "points.obj: 'points' has no triangles"),
        "nan": (write_glb(folder / "nan.glb", [[nan]], [{"name": "bad", "mesh": 0}]),
                "nan.glb: part 'bad' has 1 vertices with NaN or infinite coordinates"),
        "index_out_of_range": (write_glb(folder / "holes.glb", [[dict(TET, indices=[[0, 1, 9]])]], [{"name": "a", "mesh": 0}]),
                               "holes.glb: part 'a' has faces that index missing vertices"),
        "non_manifold": (write_glb(folder / "fin.glb", [[TET], [FIN]], [{"name": "ok", "mesh": 0}, {"name": "fin", "mesh": 1}]),
                         "fin.glb: part 'fin' is not manifold: 1 edges are shared by more than two triangles; repair it"),
    }


@pytest.mark.parametrize("case", ["missing", "suffix", "empty", "junk", "truncated", "missing_vertex", "no_meshes",
                                  "points", "points_obj", "nan", "index_out_of_range", "non_manifold"])
def test_bad_input_says_what_is_wrong_and_writes_nothing(tmp_path, case):
    path, message = _bad_inputs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(LoadPartsError) as error:
        load_parts(path)
    assert str(error.value).startswith(message), str(error.value)
    assert "Traceback" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_non_manifold_mesh_loads_when_kept_with_a_warning(tmp_path, caplog):
    path, _ = _bad_inputs(tmp_path)["non_manifold"]
    with pytest.raises(LoadPartsError, match="set non_manifold to 'keep' to load it as it is"):
        load_parts(path, LoadOptions(non_manifold="error"))
    with caplog.at_level(logging.WARNING):
        parts = load_parts(path, LoadOptions(non_manifold="keep"))
    assert [p.name for p in parts] == ["ok", "fin"] and parts[1].faces.shape == (3, 3)
    assert "part 'fin' is not manifold" in caplog.text


def test_unknown_non_manifold_policy_is_refused():
    with pytest.raises(LoadPartsError, match=r"non_manifold must be one of \('error', 'keep'\), got 'fix'"):
        LoadOptions(non_manifold="fix")


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    from partgen_models.assembly import load

    path = tmp_path / "big.glb"
    path.write_bytes(b"x" * (2 * 2**20 + 1))  # never parsed: refused on its size
    monkeypatch.setattr(load, "MAX_FILE_MB", 2)
    with pytest.raises(load.LoadPartsError, match=r"big.glb: the file is 2 MB; PartGen reads mesh files up to 2 MB "
                                                  r"\(loading takes about 8x the file's size in memory\)"):
        load.load_parts(path)
