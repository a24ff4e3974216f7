"""PartGen parts ↔ ComfyUI's native MESH.

Tier 1: the conversion on plain tensors, for each MESH class (stand-ins with the exact constructor
signatures of ComfyUI 0.3.x, of a class with per-item counts and of 0.30's class with UVs, texture and
``unlit``; 0.30's real class too where its tree is cached). Tier 2: the nodes in each real ComfyUI
host's executor, feeding core ``SaveGLB``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import comfyui_harness as harness
from partgen_models.assembly import mesh_interop as mi
from partgen_models.assembly.export import ExportOptions, export_parts
from partgen_models.assembly.load import LoadOptions, load_parts
from partgen_models.parts import Part, placed_mesh


class LegacyMesh:
    """ComfyUI 0.3.x ``comfy_api.latest._util.geometry_types.MESH``."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor):
        self.vertices = vertices
        self.faces = faces


class CountedMesh:
    """The newer class's constructor (vertex colours, per-item counts; the rest defaulted)."""

    def __init__(self, vertices, faces, uvs=None, vertex_colors=None, texture=None, metallic_roughness=None,
                 vertex_counts=None, face_counts=None, unlit=False, normals=None):
        assert (vertex_counts is None) == (face_counts is None)
        self.vertices, self.faces, self.uvs, self.vertex_colors = vertices, faces, uvs, vertex_colors
        self.vertex_counts, self.face_counts = vertex_counts, face_counts
        self.texture, self.unlit = texture, unlit


def _part(name: str, mesh: trimesh.Trimesh, shift=(0.0, 0.0, 0.0), seed: int = 0, transform=None) -> Part:
    colors = torch.rand(len(mesh.vertices), 3, generator=torch.Generator().manual_seed(seed))
    return Part(name, torch.tensor(mesh.vertices, dtype=torch.float32) + torch.tensor(shift),
                torch.tensor(mesh.faces, dtype=torch.long), colors,
                transform=torch.eye(4) if transform is None else transform)


@pytest.fixture
def parts() -> list[Part]:
    return [_part("seat", trimesh.creation.box(), seed=0),
            _part("ball", trimesh.creation.icosphere(2), (0.0, 2.0, 0.0), seed=1),
            _part("leg", trimesh.creation.cylinder(0.2, 1.0, sections=12), (2.0, 0.0, 0.0), seed=2)]


# --------------------------------------------------------------------------------------------
# Tier 1: the conversion
# --------------------------------------------------------------------------------------------

def test_per_part_batch_pads_with_the_last_vertex_and_zero_area_triangles(parts):
    batch = mi.parts_to_mesh_batch(parts, "per part")
    sizes = [p.vertices.shape[0] for p in parts]
    assert batch.vertices.shape == (3, max(sizes), 3) and batch.faces.shape == (3, max(p.num_faces for p in parts), 3)
    assert batch.vertex_counts.tolist() == sizes and batch.is_padded
    seat = parts[0]
    assert torch.equal(batch.vertices[0, :8], seat.vertices)
    assert torch.equal(batch.vertices[0, 8:], seat.vertices[-1].expand(max(sizes) - 8, 3))  # bounds unchanged
    assert (batch.faces[0, seat.num_faces:] == 7).all()
    assert torch.equal(batch.vertex_colors[0, :8], seat.vertex_colors)


def test_round_trip_with_counts_and_without(parts):
    batch = mi.parts_to_mesh_batch(parts, "per part")
    with_counts = mi.mesh_batch_to_parts(batch.vertices, batch.faces, vertex_counts=batch.vertex_counts,
                                         face_counts=batch.face_counts, vertex_colors=batch.vertex_colors)
    # a 0.3.x host hands back only vertices and faces: the padding is recognised and removed
    without = mi.mesh_batch_to_parts(batch.vertices, batch.faces, name_prefix="piece")
    assert [p.name for p in with_counts] == ["part_00", "part_01", "part_02"]
    assert [p.name for p in without] == ["piece_00", "piece_01", "piece_02"]
    for original, exact, stripped in zip(parts, with_counts, without):
        for back in (exact, stripped):
            assert torch.equal(back.vertices, original.vertices) and torch.equal(back.faces, original.faces)
        assert torch.equal(exact.vertex_colors, original.vertex_colors)
        assert torch.equal(stripped.vertex_colors, torch.tensor(mi.DEFAULT_COLOR).expand_as(original.vertices))


def test_merged_mesh_splits_back_into_its_pieces(parts):
    batch = mi.parts_to_mesh_batch(parts, "merged")
    assert batch.vertices.shape[0] == 1 and not batch.is_padded
    assert batch.vertices.shape[1] == sum(p.vertices.shape[0] for p in parts)
    (whole,) = mi.mesh_batch_to_parts(batch.vertices, batch.faces, vertex_colors=batch.vertex_colors)
    assert whole.num_faces == sum(p.num_faces for p in parts)
    pieces = mi.mesh_batch_to_parts(batch.vertices, batch.faces, vertex_colors=batch.vertex_colors,
                                    split="connected components")
    by_size = sorted(parts, key=lambda p: -p.num_faces)  # largest first
    assert [p.num_faces for p in pieces] == [p.num_faces for p in by_size]
    for piece, original in zip(pieces, by_size):
        assert torch.equal(piece.vertices, original.vertices) and torch.equal(piece.vertex_colors, original.vertex_colors)


def test_transforms_are_applied_and_mirrors_keep_faces_outward():
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    mirror[:3, 3] = torch.tensor([0.0, 0.0, 5.0])
    part = _part("mirrored", trimesh.creation.box(), transform=mirror)
    batch = mi.parts_to_mesh_batch([part], "merged")
    expected = part.vertices * torch.tensor([-1.0, 1.0, 1.0]) + torch.tensor([0.0, 0.0, 5.0])
    assert torch.allclose(batch.vertices[0], expected)
    assert trimesh.Trimesh(batch.vertices[0].numpy(), batch.faces[0].numpy(), process=False).volume > 0


def test_colours_from_a_host_mesh_in_bytes_or_rgba():
    vertices = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    faces = torch.tensor([[[0, 1, 2]]])
    rgba = torch.tensor([[[255, 0, 0, 128]] * 3], dtype=torch.uint8)
    (part,) = mi.mesh_batch_to_parts(vertices, faces, vertex_colors=rgba)
    assert torch.equal(part.vertex_colors, torch.tensor([[1.0, 0.0, 0.0]] * 3))


def test_each_host_mesh_class_gets_what_it_understands(parts):
    assert not mi.host_mesh_has_counts(LegacyMesh) and mi.host_mesh_has_counts(CountedMesh)
    assert mi.resolve_layout("auto", LegacyMesh) == "merged" and mi.resolve_layout("auto", CountedMesh) == "per part"
    counted = mi.to_host_mesh(mi.parts_to_mesh_batch(parts, "per part"), CountedMesh)
    assert counted.vertex_counts.tolist() == [p.vertices.shape[0] for p in parts]
    assert counted.vertex_colors.shape == counted.vertices.shape
    legacy = mi.to_host_mesh(mi.parts_to_mesh_batch(parts, "per part"), LegacyMesh)
    for mesh in (counted, legacy):
        back = mi.parts_from_host_mesh(mesh)
        for original, part in zip(parts, back):
            assert torch.equal(part.vertices, original.vertices) and torch.equal(part.vertex_colors, original.vertex_colors)
    bare = LegacyMesh(legacy.vertices, legacy.faces)  # what a core 0.3.x node would make
    assert [p.num_faces for p in mi.parts_from_host_mesh(bare)] == [p.num_faces for p in parts]


class TexturedMesh:
    """ComfyUI 0.30's ``MESH``: its constructor, word for word (UVs, texture, counts, unlit)."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor,
                 uvs: torch.Tensor | None = None,
                 vertex_colors: torch.Tensor | None = None,
                 texture: torch.Tensor | None = None,
                 vertex_counts: torch.Tensor | None = None,
                 face_counts: torch.Tensor | None = None,
                 unlit: bool = False):
        assert (vertex_counts is None) == (face_counts is None)
        self.vertices, self.faces, self.uvs, self.vertex_colors = vertices, faces, uvs, vertex_colors
        self.texture, self.vertex_counts, self.face_counts, self.unlit = texture, vertex_counts, face_counts, unlit


def _host_mesh_classes() -> list:
    """The stand-ins, plus 0.30's real class where the tier-2 tests already unpacked that ComfyUI."""
    classes = [TexturedMesh, CountedMesh, LegacyMesh]
    source = harness.CACHE_DIR / harness.HOST_0_30_0.cache_name / "comfy_api/latest/_util/geometry_types.py"
    if source.is_file():  # the module needs only torch: load it alone, without ComfyUI
        import importlib.util
        spec = importlib.util.spec_from_file_location("comfyui_030_geometry_types", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        classes.insert(0, module.MESH)
    return classes


def _textured(parts: list[Part], texture: torch.Tensor | None = None, unlit: bool = True) -> list[Part]:
    """The parts with UVs (from their x/y), one texture each (or ``texture`` shared) and ``unlit``."""
    import dataclasses

    out = []
    for i, part in enumerate(parts):
        tex = texture if texture is not None else torch.full((4, 4, 3), 0.1 * (i + 1))
        out.append(dataclasses.replace(part, uvs=part.vertices[:, :2].clone(), texture=tex, unlit=unlit))
    return out


@pytest.mark.parametrize("mesh_class", _host_mesh_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_round_trip_keeps_unlit_uvs_and_texture(parts, mesh_class):
    """MESH → parts → MESH keeps what the host's MESH carries; where the class has no such field it
    still rides along as an attribute, so PartGen's own round trip loses nothing on 0.3.x either."""
    textured = _textured(parts)
    layout = mi.resolve_layout("auto", mesh_class)
    mesh = mi.to_host_mesh(mi.parts_to_mesh_batch(textured, layout), mesh_class)
    assert mesh.unlit is True
    back = mi.parts_from_host_mesh(mesh, "batch items" if layout == "per part" else "connected components")
    assert len(back) == len(parts)
    for original in textured:  # merged + split orders by size: match by vertex count
        (part,) = [p for p in back if p.vertices.shape[0] == original.vertices.shape[0]]
        assert part.unlit and torch.equal(part.uvs, original.uvs)
        if layout == "per part":
            assert torch.equal(part.texture, original.texture)
    again = mi.to_host_mesh(mi.parts_to_mesh_batch(back, layout), mesh_class)
    assert again.unlit is True
    if layout == "per part":
        assert torch.equal(again.uvs, mesh.uvs) and torch.equal(again.texture, mesh.texture)
    else:  # the pieces come back largest first: the same UVs in another order
        assert sorted(map(tuple, again.uvs[0].tolist())) == sorted(map(tuple, mesh.uvs[0].tolist()))


def test_merged_mesh_keeps_a_shared_texture_and_drops_different_ones(parts, caplog):
    shared = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(0))
    batch = mi.parts_to_mesh_batch(_textured(parts, texture=shared), "merged")
    assert torch.equal(batch.texture, shared[None]) and batch.uvs.shape == (1, batch.vertices.shape[1], 2)
    back = mi.mesh_batch_to_parts(batch.vertices, batch.faces, uvs=batch.uvs, texture=batch.texture,
                                  unlit=batch.unlit, split="connected components")
    assert all(torch.equal(p.texture, shared) and p.unlit for p in back)
    with caplog.at_level("WARNING"):
        dropped = mi.parts_to_mesh_batch(_textured(parts), "merged")
    assert dropped.texture is None and dropped.uvs is not None
    assert "textures dropped: a merged MESH holds one texture" in caplog.text


def test_per_part_textures_of_different_sizes_are_dropped_with_a_warning(parts, caplog):
    import dataclasses

    textured = _textured(parts)
    textured[1] = dataclasses.replace(textured[1], texture=torch.zeros(2, 2, 3))
    with caplog.at_level("WARNING"):
        batch = mi.parts_to_mesh_batch(textured, "per part")
    assert batch.texture is None and "the parts' sizes differ" in caplog.text
    mixed = [dataclasses.replace(textured[0], unlit=False), *textured[1:]]
    assert mi.parts_to_mesh_batch(mixed, "per part").unlit is False  # unlit only when every part is


def _nan_part():
    vertices = torch.tensor([[0.0, 0, 0], [math.nan, 0, 0], [0, 1, 0]])
    return Part("bad", vertices, torch.tensor([[0, 1, 2]]), torch.zeros(3, 3))


@pytest.mark.parametrize("make_parts, message", [
    (lambda: [], "there are no parts to convert; check the node that produced them"),
    (lambda: [Part("flat", torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long), torch.zeros(3, 3))],
     "part 'flat' has no faces"),
    (lambda: [_nan_part()], "part 'bad' has NaN or infinite vertices"),
    (lambda: [Part("holes", torch.zeros(3, 3), torch.tensor([[0, 1, 7]]), torch.zeros(3, 3))],
     "part 'holes' has faces that index missing vertices"),
])
def test_bad_parts_are_refused(make_parts, message):
    for layout in mi.MESH_LAYOUTS:
        with pytest.raises(mi.MeshConversionError, match=f"^{message}$"):
            mi.parts_to_mesh_batch(make_parts(), layout)


def test_unknown_layout_and_split_are_refused(parts):
    with pytest.raises(mi.MeshConversionError, match=r"layout must be one of \('per part', 'merged'\), got 'stacked'"):
        mi.parts_to_mesh_batch(parts, "stacked")
    batch = mi.parts_to_mesh_batch(parts, "merged")
    with pytest.raises(mi.MeshConversionError, match=r"split must be one of .*, got 'islands'"):
        mi.mesh_batch_to_parts(batch.vertices, batch.faces, split="islands")


TRI = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
ONE_FACE = torch.tensor([[[0, 1, 2]]])


@pytest.mark.parametrize("kwargs, message", [
    (dict(vertices=TRI[0], faces=ONE_FACE), r"a MESH holds vertices \[B,N,3\] and faces \[B,M,3\]; got \(3, 3\) and \(1, 1, 3\)"),
    (dict(vertices=TRI.expand(2, 3, 3), faces=ONE_FACE), "MESH batch sizes differ: 2 vertex items, 1 face items"),
    (dict(vertices=TRI, faces=ONE_FACE, vertex_colors=torch.zeros(1, 2, 3)),
     r"MESH vertex colours \(1, 2, 3\) do not match vertices \(1, 3, 3\)"),
    (dict(vertices=TRI, faces=ONE_FACE, uvs=torch.zeros(1, 3, 3)),
     r"MESH uvs \(1, 3, 3\) do not match vertices \(1, 3, 3\)"),
    (dict(vertices=TRI, faces=ONE_FACE, texture=torch.zeros(2, 4, 4, 3)),
     r"a MESH texture is \[B,H,W,3\] with B = 1 or 1; got \(2, 4, 4, 3\)"),
    (dict(vertices=TRI[:0], faces=ONE_FACE[:0]), "the MESH is an empty batch"),
    (dict(vertices=TRI, faces=torch.zeros(1, 2, 3, dtype=torch.long)), "MESH item 0 has no faces"),
    (dict(vertices=TRI * math.nan, faces=ONE_FACE), "MESH item 0 has NaN or infinite vertices"),
    (dict(vertices=TRI, faces=ONE_FACE + 5, vertex_counts=torch.tensor([3]), face_counts=torch.tensor([1])),
     r"MESH item 0 has faces that index missing vertices \(it has 3\)"),
])
def test_bad_meshes_are_refused(kwargs, message):
    vertices, faces = kwargs.pop("vertices"), kwargs.pop("faces")
    with pytest.raises(mi.MeshConversionError, match=f"^{message}$"):
        mi.mesh_batch_to_parts(vertices, faces, **kwargs)


# --------------------------------------------------------------------------------------------
# Tier 2: the nodes in ComfyUI 0.3.75's executor, with core SaveGLB
# --------------------------------------------------------------------------------------------

TEST_FOLDER = "3d/partgen_interop"


def _interop_jobs() -> list[dict]:
    load = {"class_type": "PartGenLoadParts", "inputs": {"file": f"{TEST_FOLDER}/chair.glb", "non_manifold": "error"}}
    graph = {
        "1": load,
        "2": {"class_type": "PartGenPartsToMesh", "inputs": {"parts": ["1", 0], "layout": "per part"}},
        "3": {"class_type": "SaveGLB", "inputs": {"mesh": ["2", 0], "filename_prefix": "interop/per_part"}},
        "4": {"class_type": "PartGenPartsToMesh", "inputs": {"parts": ["1", 0], "layout": "merged"}},
        "5": {"class_type": "SaveGLB", "inputs": {"mesh": ["4", 0], "filename_prefix": "interop/merged"}},
        "6": {"class_type": "PartGenPartsToMesh", "inputs": {"parts": ["1", 0], "layout": "auto"}},
        "7": {"class_type": "SaveGLB", "inputs": {"mesh": ["6", 0], "filename_prefix": "interop/auto"}},
        "8": {"class_type": "PartGenMeshToParts", "inputs": {"mesh": ["2", 0], "split": "batch items", "name_prefix": "piece"}},
        "9": {"class_type": "PartGenSaveParts", "inputs": {"parts": ["8", 0], "filename_prefix": "interop/round_trip",
                                                             "part_files": "none", "exploded": 0.0}},
        "10": {"class_type": "PartGenMeshToParts", "inputs": {"mesh": ["4", 0], "split": "connected components",
                                                               "name_prefix": "part"}},
        "11": {"class_type": "PartGenSaveParts", "inputs": {"parts": ["10", 0], "filename_prefix": "interop/components",
                                                              "part_files": "none", "exploded": 0.0}},
        "12": {"class_type": "PartGenSaveParts", "inputs": {"parts": ["1", 0], "filename_prefix": "interop/loaded",
                                                              "part_files": "none", "exploded": 0.0}},
    }

    def failing(file: str, prefix: str, non_manifold: str = "error") -> dict:
        return {"1": {"class_type": "PartGenLoadParts", "inputs": {"file": f"{TEST_FOLDER}/{file}", "non_manifold": non_manifold}},
                "2": {"class_type": "PartGenSaveParts", "inputs": {"parts": ["1", 0], "filename_prefix": prefix,
                                                                  "part_files": "glb", "exploded": 0.0}}}

    return [{"name": "graph", "prompt": graph},
            {"name": "unreadable", "prompt": failing("broken.glb", "interop/unreadable")},
            {"name": "non_manifold", "prompt": failing("fin.obj", "interop/non_manifold")},
            {"name": "non_manifold_kept", "prompt": failing("fin.obj", "interop/kept_non_manifold", "keep")}]


@pytest.fixture(scope="module")
def interop_run(comfyui_path, comfyui_base, tmp_path_factory):
    folder = comfyui_base["input"] / TEST_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    parts = [_part("seat", trimesh.creation.box(), seed=0),
             _part("ball", trimesh.creation.icosphere(2), (0.0, 2.0, 0.0), seed=1),
             _part("leg", trimesh.creation.cylinder(0.2, 1.0, sections=12), (2.0, 0.0, 0.0), seed=2)]
    staging = tmp_path_factory.mktemp("interop-input")
    scene = export_parts(parts, staging, ExportOptions("chair")).scene
    (folder / "chair.glb").write_bytes((staging / scene).read_bytes())
    (folder / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00 this is not a GLB")
    (folder / "fin.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 -1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 2 5\n")
    results = harness.run_executor(_interop_jobs(), comfyui_base, root=comfyui_path, timeout_s=600)
    return parts, {r["name"]: r for r in results}


def _explain(result: dict) -> str:
    return (f"valid={result['valid']} node_errors={result.get('node_errors')} "
            f"errors={[d for e, d in result['messages'] if e == 'execution_error']}\n"
            + harness._tail(Path(result["log_file"]), 3000))


def _files(result: dict, node_id: str) -> list[Path]:
    entries = result["history"]["outputs"][node_id]["3d"]
    return [Path(result["output_dir"]) / e["subfolder"] / e["filename"] for e in entries]


@pytest.mark.tier2
def _host_mesh_has_counts(comfyui_path: Path) -> bool:
    """Feature-detected from the host's source, as the nodes do from its MESH class."""
    source = comfyui_path / "comfy_api" / "latest" / "_util" / "geometry_types.py"
    return source.is_file() and "vertex_counts" in source.read_text()


def test_core_save_glb_writes_our_mesh(interop_run, comfyui_path):
    parts, runs = interop_run
    result = runs["graph"]
    assert result["valid"] and result["success"], _explain(result)
    counted = _host_mesh_has_counts(comfyui_path)
    per_part, merged, auto = _files(result, "3"), _files(result, "5"), _files(result, "7")
    # auto: per part where the host's MESH has per-item counts (0.30), else merged (0.3.75)
    assert len(per_part) == len(parts) and len(merged) == 1 and len(auto) == (len(parts) if counted else 1)
    largest = max(p.vertices.shape[0] for p in parts)
    for path, part in zip(per_part, parts):
        mesh = trimesh.load(path, force="mesh", process=False)
        # 0.30's SaveGLB cuts each item to its count; 0.3.75's ignores counts: the padding is written,
        # and covers no area
        assert len(mesh.vertices) == (part.vertices.shape[0] if counted else largest)
        assert mesh.area == pytest.approx(float(trimesh.Trimesh(part.vertices.numpy(), part.faces.numpy()).area), rel=1e-5)
    for path in merged + ([] if counted else auto):
        mesh = trimesh.load(path, force="mesh", process=False)
        assert len(mesh.faces) == sum(p.num_faces for p in parts)
    for path, part in zip(auto if counted else [], parts):
        assert len(trimesh.load(path, force="mesh", process=False).faces) == part.num_faces
    from test_gltf_validator import require_valid_gltf

    require_valid_gltf(per_part + merged + auto)


@pytest.mark.tier2
def test_mesh_back_to_parts_keeps_geometry_and_colours(interop_run):
    parts, runs = interop_run
    result = runs["graph"]
    assert result["success"], _explain(result)
    round_trip = load_parts(_files(result, "9")[0], LoadOptions(non_manifold="keep"))
    loaded = load_parts(_files(result, "12")[0], LoadOptions(non_manifold="keep"))
    assert sorted(p.name for p in loaded) == sorted(p.name for p in parts)
    for index, part in enumerate(parts):
        for back in (round_trip[index], {p.name: p for p in loaded}[part.name]):
            assert back.name in (f"piece_{index:02d}", part.name)
            assert torch.allclose(placed_mesh(back)[0].float(), placed_mesh(part)[0].float(), atol=1e-5)
            assert torch.equal(back.faces, part.faces)
            assert (back.vertex_colors - part.vertex_colors).abs().max() <= 1e-5, back.name
    components = trimesh.load(_files(result, "11")[0], force="scene", process=False)
    assert len(components.graph.nodes_geometry) == len(parts)


@pytest.mark.tier2
@pytest.mark.parametrize("job, message", [
    ("unreadable", "broken.glb: could not be read as GLB"),
    ("non_manifold", "fin.obj: part 'fin' is not manifold: 1 edges are shared by more than two triangles"),
])
def test_load_parts_errors_reach_the_user_and_nothing_is_written(interop_run, job, message):
    _, runs = interop_run
    result = runs[job]
    assert result["valid"] and not result["success"], _explain(result)
    (error,) = [d for e, d in result["messages"] if e == "execution_error"]
    assert error["node_type"] == "PartGenLoadParts" and error["exception_message"].startswith(message), error
    assert not list(Path(result["output_dir"]).glob(f"interop/{job}_0*")), "a failed run wrote files"


@pytest.mark.tier2
def test_non_manifold_input_loads_when_kept(interop_run):
    _, runs = interop_run
    result = runs["non_manifold_kept"]
    assert result["success"], _explain(result)
    assert "part 'fin' is not manifold" in harness._tail(Path(result["log_file"]), 100_000)
