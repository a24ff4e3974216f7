"""Save Parts output read back the way importers read it (tests/gltf_import.py: node tree, world
matrices, raw accessors): colour space, materials, normals, hierarchy and pivots, exploded view,
per-part files; and the one placement rule every stage shares, with a mirroring transform."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import trimesh

from gltf_import import read_glb, to_srgb
from partgen_models.assembly import mesh_interop
from partgen_models.assembly.export import ExportError, ExportOptions, export_parts
from partgen_models.assembly.load import load_parts
from partgen_models.evaluation.procedural import generate_object
from partgen_models.parts import Part, placed_mesh
from partgen_models.rendering.renderer import Normalization, _merged_mesh
from test_gltf_validator import require_valid_gltf


def _part(name, mesh, shift=(0.0, 0.0, 0.0), color=(0.5, 0.5, 0.5), transform=None, display=None) -> Part:
    vertices = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32) + torch.tensor(shift)
    colors = torch.tensor(color, dtype=torch.float32).expand(len(vertices), 3).contiguous()
    return Part(name, vertices, torch.tensor(np.asarray(mesh.faces), dtype=torch.long), colors,
                transform=torch.eye(4) if transform is None else transform, display_color=display)


def _signed_volume(vertices: np.ndarray, triangles: np.ndarray) -> float:
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


BLUE = (31 / 255, 76 / 255, 217 / 255)  # the body colour from the issue: showed as (98,148,237) in Blender


@pytest.fixture
def car_parts():
    return [_part("body", trimesh.creation.box((2.0, 0.6, 1.0)), (0, 0.5, 0), BLUE, display=BLUE),
            _part("wheel", trimesh.creation.cylinder(0.3, 0.2, sections=24), (0.7, 0.2, 0.55), (0.05, 0.05, 0.05)),
            _part("dome", trimesh.creation.icosphere(3, radius=0.4), (0, 1.0, 0), (0.9, 0.8, 0.1))]


def test_gltf_colour_is_linear_and_reads_back_as_the_display_colour(tmp_path, car_parts):
    gradient = _part("gradient", trimesh.creation.icosphere(1), (0, 3, 0))
    gradient = Part("gradient", gradient.vertices, gradient.faces,
                    torch.linspace(0, 1, len(gradient.vertices))[:, None].repeat(1, 3) * torch.tensor(BLUE))
    result = export_parts(car_parts + [gradient], tmp_path, ExportOptions("colour/car"))
    document, nodes = read_glb(tmp_path / result.scene)
    manifest = json.loads((tmp_path / result.manifest).read_text())
    by_name = {n.name: n for n in nodes}
    # a single-coloured part: the colour is the material's (linear) base colour factor, no COLOR_0
    body = by_name["body"]
    factor = np.array(body.material["pbrMetallicRoughness"]["baseColorFactor"][:3])
    assert body.linear_colors is None
    assert factor == pytest.approx([0.0137, 0.0723, 0.6939], abs=1e-3)  # linear, not the sRGB bytes
    assert (np.round(to_srgb(factor) * 255) == [31, 76, 217]).all()  # what a glTF reader shows
    assert (np.round(np.array(manifest["parts"][0]["display_color"]) * 255) == [31, 76, 217]).all()
    # a part with varying colours: linear float COLOR_0 under a white factor
    node = by_name["gradient"]
    accessor = document["accessors"][document["meshes"][3]["primitives"][0]["attributes"]["COLOR_0"]]
    assert accessor["componentType"] == 5126 and accessor["type"] == "VEC3"
    assert node.material["pbrMetallicRoughness"]["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0]
    shown = to_srgb(node.linear_colors)
    assert np.abs(shown - gradient.vertex_colors.numpy()).max() < 1e-4
    assert np.abs(node.linear_colors - gradient.vertex_colors.numpy()).max() > 0.1
    # and Load Parts gives back the display colours
    loaded = {p.name: p for p in load_parts(tmp_path / result.scene)}
    for part in car_parts + [gradient]:
        assert (loaded[part.name].vertex_colors - part.vertex_colors).abs().max() < 1e-5, part.name


def test_each_part_has_a_pbr_material_named_after_it(tmp_path, car_parts):
    result = export_parts(car_parts, tmp_path, ExportOptions("material/car", roughness=0.55))
    _, nodes = read_glb(tmp_path / result.scene)
    materials = {n.name: n.material for n in nodes if n.material is not None}
    assert list(materials) == ["body", "wheel", "dome"]
    for name, material in materials.items():
        assert material["name"] == name
        pbr = material["pbrMetallicRoughness"]
        assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 0.55
        part = next(p for p in car_parts if p.name == name)
        assert to_srgb(np.array(pbr["baseColorFactor"][:3])) == pytest.approx(part.vertex_colors[0].numpy(), abs=1e-5)


def test_normals_are_angle_weighted_split_at_creases_and_face_outwards(tmp_path, car_parts):
    result = export_parts(car_parts, tmp_path, ExportOptions("normals/car"))
    _, nodes = read_glb(tmp_path / result.scene)
    by_name = {n.name: n for n in nodes}
    for node in by_name.values():
        if node.normals is not None:
            assert np.allclose(np.linalg.norm(node.normals, axis=1), 1.0, atol=1e-6)
    # sphere: one smooth normal per vertex, along the radius (no crease anywhere)
    dome = by_name["dome"]
    assert len(dome.positions) == len(car_parts[2].vertices)
    radial = dome.positions / np.linalg.norm(dome.positions, axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", radial, dome.normals) > 0.995).all()
    # box: every corner split three ways, each copy with its face's axis normal (hard edges)
    body = by_name["body"]
    assert len(body.positions) == 24 and np.allclose(np.abs(body.normals).max(1), 1.0)
    corners = body.positions[body.triangles]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert (np.einsum("ijk,ik->ij", body.normals[body.triangles], face_normals) > 0).all()  # same side as the winding
    # cylinder: smooth round the side, split at the caps' rims
    wheel = by_name["wheel"]
    assert len(wheel.positions) == len(car_parts[1].vertices) + 48
    smooth = export_parts(car_parts, tmp_path, ExportOptions("normals/smooth", crease_angle=180.0))
    flat = export_parts(car_parts, tmp_path, ExportOptions("normals/flat", crease_angle=0.0))
    assert len({n.name: n for n in read_glb(tmp_path / smooth.scene)[1]}["body"].positions) == 8
    assert len({n.name: n for n in read_glb(tmp_path / flat.scene)[1]}["dome"].positions) == 3 * car_parts[2].num_faces


def test_root_node_named_after_the_object_with_parts_at_their_pivots(tmp_path, car_parts):
    result = export_parts(car_parts, tmp_path, ExportOptions("tree/red car"))
    document, nodes = read_glb(tmp_path / result.scene)
    root = nodes[0]
    assert root.name == "red car" and root.positions is None and root.parent is None
    assert [n.name for n in nodes[1:]] == ["body", "wheel", "dome"] and {n.parent for n in nodes[1:]} == {"red car"}
    assert len(document["scenes"][0]["nodes"]) == 1
    manifest = json.loads((tmp_path / result.manifest).read_text())
    for node, part, entry in zip(nodes[1:], car_parts, manifest["parts"]):
        low, high = part.vertices.numpy().min(0), part.vertices.numpy().max(0)
        # pivot at the part's centre: a translation on the node, vertices local to it
        assert np.allclose(node.local[:3, 3], (low + high) / 2, atol=1e-6) and np.allclose(node.local[:3, :3], np.eye(3))
        assert np.allclose(node.positions.min(0), -node.positions.max(0), atol=1e-6)
        assert np.allclose(node.world_positions().min(0), low, atol=1e-6)
        assert entry["pivot"] == pytest.approx(node.local[:3, 3].tolist())
        extras = node.extras["partgen"]
        assert extras["faces"] == part.num_faces and extras["vertices"] == part.vertices.shape[0]
    assert nodes[1].extras["partgen"]["display_color"] == pytest.approx(list(BLUE))


def test_load_parts_keeps_names_exactly_and_resaving_keeps_pivots(tmp_path, car_parts):
    names = ["world", "scene", "Stuhl-Bein ü 椅子", "leg_1"]
    parts = [_part(name, p_mesh, shift) for name, (p_mesh, shift) in zip(names, [
        (trimesh.creation.box(), (0, 0, 0)), (trimesh.creation.icosphere(1), (3, 0, 0)),
        (trimesh.creation.box(), (0, 3, 0)), (trimesh.creation.box(), (0, 0, 3))])]
    first = export_parts(parts, tmp_path, ExportOptions("names/one"))
    loaded = load_parts(tmp_path / first.scene)
    assert [p.name for p in loaded] == names
    again = export_parts(loaded, tmp_path, ExportOptions("names/two"))
    _, before = read_glb(tmp_path / first.scene)
    _, after = read_glb(tmp_path / again.scene)
    for a, b in zip(before[1:], after[1:]):
        assert a.name == b.name
        assert np.allclose(a.world, b.world, atol=1e-6) and np.allclose(a.positions, b.positions, atol=1e-6)
    assert [p.name for p in load_parts(tmp_path / again.scene)] == names


def test_display_colour_and_source_survive_a_round_trip(tmp_path, car_parts):
    result = export_parts(car_parts, tmp_path, ExportOptions("meta/car"))
    loaded = load_parts(tmp_path / result.scene)
    assert loaded[0].display_color == pytest.approx(BLUE) and loaded[1].display_color is None
    assert loaded[0].source == "file:car_00001.glb"


MIRROR = torch.tensor([[-1.0, 0, 0, 2.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def test_one_placement_rule_for_a_mirroring_transform(tmp_path):
    """Export, MESH interop, the renderer and the loader all place a mirrored part the same way,
    and the surface keeps facing outwards (positive enclosed volume)."""
    tetra = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert tetra.volume > 0
    part = _part("mirrored", tetra, transform=MIRROR)
    vertices, faces = placed_mesh(part)
    assert _signed_volume(vertices.numpy(), faces.numpy()) == pytest.approx(1 / 6)
    assert torch.equal(faces, part.faces.flip(-1))

    # export: the mirror is baked (a glTF node cannot hold it portably); the importer's view matches
    result = export_parts([part], tmp_path, ExportOptions("mirror/part"))
    node = read_glb(tmp_path / result.scene)[1][1]
    assert np.linalg.det(node.world[:3, :3]) > 0
    assert _signed_volume(node.world_positions(), node.triangles) == pytest.approx(1 / 6, rel=1e-5)

    # MESH interop, both layouts
    for batch in (mesh_interop.pad_parts([part]), mesh_interop.merge_parts([part])):
        assert torch.equal(batch.faces[0], faces) and torch.allclose(batch.vertices[0], vertices.float())

    # renderer
    merged_vertices, merged_faces, _, _ = _merged_mesh([part], [0], Normalization(), torch.device("cpu"))
    assert torch.equal(merged_faces, faces)

    # loader: a node with scale -1 (and a shift) in a file is placed by the same rule
    from test_load_parts import write_glb

    positions = np.asarray(tetra.vertices, dtype=np.float32)
    path = write_glb(tmp_path / "mirror.glb", [[{"positions": positions, "indices": np.asarray(tetra.faces)}]],
                     [{"name": "mirrored", "mesh": 0, "scale": [-1, 1, 1], "translation": [2, 0, 0]}])
    loaded = load_parts(path)[0]
    assert torch.allclose(loaded.transform, MIRROR) and torch.equal(loaded.faces, part.faces)
    back_vertices, back_faces = placed_mesh(loaded)
    assert torch.allclose(back_vertices, vertices) and torch.equal(back_faces, faces)


@pytest.mark.parametrize("kind", ["car", "snowman", "chair"])
def test_exploded_view_moves_nodes_until_every_pair_is_apart(tmp_path, kind):
    parts = list(generate_object(kind, 0).parts)
    assembled = export_parts(parts, tmp_path, ExportOptions(f"{kind}/a"))
    exploded = export_parts(parts, tmp_path, ExportOptions(f"{kind}/x", exploded=0.1))
    _, flat = read_glb(tmp_path / assembled.scene)
    _, apart = read_glb(tmp_path / exploded.scene)
    manifest = json.loads((tmp_path / exploded.manifest).read_text())
    boxes = []
    for a, b, entry in zip(flat[1:], apart[1:], manifest["parts"]):
        assert np.array_equal(a.positions, b.positions)  # vertices untouched: the offset is on the node
        assert np.allclose(b.local[:3, 3] - a.local[:3, 3], entry["exploded_offset"], atol=1e-6)
        world = b.world_positions()
        boxes.append((world.min(0), world.max(0)))
    for (low_i, high_i), (low_j, high_j) in itertools.combinations(boxes, 2):
        assert (np.minimum(high_i, high_j) < np.maximum(low_i, low_j)).any(), "two parts' boxes still overlap"
    require_valid_gltf([tmp_path / exploded.scene])


def test_on_ground_moves_the_root_so_the_lowest_point_is_at_zero(tmp_path, car_parts):
    result = export_parts(car_parts, tmp_path, ExportOptions("ground/car", on_ground=True, part_format="glb"))
    _, nodes = read_glb(tmp_path / result.scene)
    lowest = min(n.world_positions()[:, 1].min() for n in nodes if n.positions is not None)
    assert lowest == pytest.approx(0.0, abs=1e-6) and nodes[0].local[1, 3] > 0
    require_valid_gltf([tmp_path / result.scene] + [tmp_path / f for f in result.part_files])


@pytest.mark.parametrize("field, value, message", [
    ("crease_angle", float("nan"), "crease_angle is nan; give a finite number (default 60.0)"),
    ("crease_angle", 200.0, "crease_angle must be a number within 0..180, got 200.0"),
    ("roughness", 1.5, "roughness must be a number within 0..1, got 1.5"),
    ("exploded", float("inf"), "exploded is inf; give a finite number (default 0.0)"),
])
def test_bad_export_options_are_refused(field, value, message):
    with pytest.raises(ExportError, match=re_escape(message)):
        ExportOptions(**{field: value})


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_textured_part_round_trips_with_its_uvs_and_image(tmp_path):
    ball = trimesh.creation.icosphere(2, radius=0.5)
    vertices = torch.tensor(ball.vertices, dtype=torch.float32)
    uvs = torch.stack([torch.atan2(vertices[:, 2], vertices[:, 0]) / (2 * math.pi) + 0.5,
                       torch.acos((vertices[:, 1] / 0.5).clamp(-1, 1)) / math.pi], dim=1)
    texture = torch.rand(32, 48, 3, generator=torch.Generator().manual_seed(0))
    part = Part("ball", vertices, torch.tensor(ball.faces), torch.full_like(vertices, 0.5), uvs=uvs, texture=texture)
    result = export_parts([part], tmp_path, ExportOptions("textured/thing", part_format="obj"))
    document, nodes = read_glb(tmp_path / result.scene)
    assert document["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert document["samplers"][0]["wrapS"] == 33071  # atlases must not wrap
    require_valid_gltf([tmp_path / result.scene])
    (back,) = load_parts(tmp_path / result.scene)
    assert back.has_texture and back.texture.shape == (32, 48, 3)
    assert (back.texture - texture).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(back.uvs, uvs, atol=1e-6) and torch.equal(back.faces, part.faces)
    # the OBJ + MTL + PNG load back with the same image through the same loader
    (from_obj,) = load_parts(tmp_path / result.part_files[0])
    assert from_obj.has_texture and (from_obj.texture - texture).abs().max() <= 0.5 / 255 + 1e-6
