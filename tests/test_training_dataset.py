"""Tier 1: the training-set builder (python -m partgen_models.training.build_dataset) on the procedural
set and on bad assets, at 64 px without supersampling (CI time)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch

from partgen_models.evaluation.procedural import generate_object, scene_glb_bytes, write_evaluation_set
from partgen_models.parts import Part
from partgen_models.training import build_dataset as builder
from partgen_models.training.build_dataset import BuildError, DatasetOptions, build_dataset, object_key
from partgen_models.training.shards import DatasetError, load_object, read_manifest

pytestmark = pytest.mark.tier1

OPTIONS = DatasetOptions(view_size=64, input_size=64, supersample=1, min_part_share=0.01)
NON_UTF8_NAME = os.fsdecode(b"caf\xe9-\xff.glb")


def _box_part(name: str, size: float, center=(0.0, 0.0, 0.0)) -> Part:
    import trimesh

    mesh = trimesh.creation.box(extents=(size, size, size))
    vertices = torch.from_numpy(np.asarray(mesh.vertices, np.float32) + np.asarray(center, np.float32))
    return Part(name, vertices, torch.from_numpy(np.asarray(mesh.faces, np.int64)), torch.full_like(vertices, 0.5))


def _nan_glb() -> bytes:
    """A two-part GLB whose first part has a NaN vertex, written by trimesh (the pack's writer refuses NaN)."""
    import trimesh

    body = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    vertices = np.asarray(body.vertices).copy()
    vertices[0, 0] = float("nan")
    body = trimesh.Trimesh(vertices, body.faces, process=False)
    lid = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    lid.apply_translation((0.0, 0.8, 0.0))
    scene = trimesh.Scene()
    scene.add_geometry(body, node_name="body", geom_name="body")
    scene.add_geometry(lid, node_name="lid", geom_name="lid")
    return scene.export(file_type="glb")


def _non_utf8_part_name_glb() -> bytes:
    data = bytearray(scene_glb_bytes([_box_part("seat", 1.0), _box_part("back", 0.6, (0, 0.9, 0))]))
    json_length = struct.unpack_from("<I", data, 12)[0]
    chunk = bytes(data[20:20 + json_length]).replace(b'"seat"', b'"s\xffat"')
    data[20:20 + json_length] = chunk  # same length: the container stays valid, the JSON is not UTF-8
    return bytes(data)


BAD_ASSETS = {
    "empty.glb": b"",
    "truncated.glb": b"glTF\x02\x00\x00\x00" + b"\x00" * 7,
    "no_meshes.gltf": json.dumps({"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "scene": 0,
                                  "nodes": [{"name": "empty"}]}).encode(),
    "one_part.glb": None,  # filled below: one box
    "giant_and_crumb.glb": None,  # a giant part and a crumb under min_part_share
    "nan_vertices.glb": None,
    "missing_texture.gltf": json.dumps({
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "p"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "material": 0}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "textures": [{"source": 0}], "images": [{"uri": "missing.png"}],
        "buffers": [{"uri": "missing.bin", "byteLength": 36}], "bufferViews": [{"buffer": 0, "byteLength": 36}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                       "min": [0, 0, 0], "max": [1, 1, 0]}]}).encode(),
    "non_utf8_part_name.glb": None,
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assets")
    write_evaluation_set(folder / "good", count=3, seed=5)
    assets = dict(BAD_ASSETS)
    assets["one_part.glb"] = scene_glb_bytes([_box_part("whole", 1.0)])
    assets["giant_and_crumb.glb"] = scene_glb_bytes([_box_part("giant", 1.0), _box_part("crumb", 0.02, (0.6, 0.6, 0.6))])
    assets["nan_vertices.glb"] = _nan_glb()
    assets["non_utf8_part_name.glb"] = _non_utf8_part_name_glb()
    for name, data in assets.items():
        (folder / "bad").mkdir(exist_ok=True)
        (folder / "bad" / name).write_bytes(data)
    chair = generate_object("chair", 3)
    (folder / "good" / NON_UTF8_NAME).write_bytes(scene_glb_bytes(chair.parts))
    return folder


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("train-set")
    manifest = build_dataset(source, out, OPTIONS, progress=False)
    return out, manifest


def _record(out, relative: str) -> dict:
    return json.loads((out / "records" / f"{object_key(__import__('pathlib').Path(relative))}.json").read_text())


def test_manifest_counts_and_filters(built):
    out, manifest = built
    assert manifest == read_manifest(out)
    assert manifest["assets"] == 4 + len(BAD_ASSETS)
    done = {s["key"] for s in manifest["shards"]}
    assert len(done) == manifest["objects"] >= 4  # three procedural objects and the chair with the odd name
    assert object_key(__import__("pathlib").Path("good") / NON_UTF8_NAME) in done
    categories = {r["source"].split("/")[-1]: r["category"] for r in manifest["skipped_assets"]}
    assert categories["empty.glb"] == categories["truncated.glb"] == "unreadable"
    assert categories["no_meshes.gltf"] == "unreadable"
    assert categories["one_part.glb"] == "one part"
    assert categories["giant_and_crumb.glb"] == "one part"  # the crumb is under min_part_share
    assert categories["nan_vertices.glb"] == "unreadable"
    crumb = _record(out, "bad/giant_and_crumb.glb")
    assert [d["name"] for d in crumb["dropped_parts"]] == ["crumb"]
    assert "NaN" in _record(out, "bad/nan_vertices.glb")["reason"]
    # A missing texture or an undecodable name is either loaded (grey) or skipped with a reason; never fatal.
    for name in ("missing_texture.gltf", "non_utf8_part_name.glb"):
        record = _record(out, f"bad/{name}")
        assert record["status"] == "done" or record["reason"]
    assert sum(manifest["skipped"].values()) == len(manifest["skipped_assets"])
    json.dumps(manifest, ensure_ascii=True)  # printable whatever the file names were


def test_objects_hold_views_ids_and_amodal_parts(built):
    out, manifest = built
    shard = next(s for s in manifest["shards"] if s["key"].startswith("000_table"))
    obj = load_object(out / shard["file"])
    parts = obj.num_parts
    assert obj.views.shape == (6, 64, 64, 3) and obj.views.dtype == torch.uint8
    assert obj.input_image.shape == (64, 64, 3)
    assert obj.part_images.shape == (parts, 6, 64, 64, 3) and obj.part_alpha.shape == (parts, 6, 64, 64)
    assert set(torch.unique(obj.part_ids).tolist()) <= set(range(-1, parts))
    for index in range(parts):
        visible = obj.visible_masks[index]
        assert torch.equal(visible, obj.part_ids == index)
        assert visible.any()
        # what is visible of a part lies inside its amodal silhouette, which can be larger (occluded areas)
        assert bool((obj.part_alpha[index][visible] > 127).all())
    assert int((obj.part_alpha > 127).sum()) > int(obj.visible_masks.sum())


def _by_stem(folder) -> dict:
    """Shards of a set by the asset's sanitised stem (keys also hash the path, which differs between roots)."""
    return {path.name.rsplit("-", 1)[0]: path for path in (folder / "shards").iterdir()}


def test_resume_skips_finished_assets_and_rebuild_is_deterministic(built, source, monkeypatch):
    out, manifest = built
    calls = []
    original = builder.build_object
    monkeypatch.setattr(builder, "build_object", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    assert build_dataset(source, out, OPTIONS, progress=False) == manifest
    assert calls == []  # nothing rendered twice
    monkeypatch.undo()
    build_dataset(source / "good", out / "again", OPTIONS, progress=False, rebuild=True)
    first, again = _by_stem(out), _by_stem(out / "again")
    assert set(again) <= set(first) and len(again) == 4
    for stem, path in again.items():
        before, after = load_object(first[stem]), load_object(path)
        for name in ("views", "part_ids", "part_images", "input_image"):
            assert torch.equal(getattr(before, name), getattr(after, name)), (stem, name)


def test_parallel_workers_give_the_same_objects(source, built, tmp_path):
    out, _ = built
    manifest = build_dataset(source / "good", tmp_path, OPTIONS, workers=2, progress=False)
    assert manifest["objects"] == 4
    serial = _by_stem(out)
    for stem, path in _by_stem(tmp_path).items():
        assert torch.equal(load_object(path).part_images, load_object(serial[stem]).part_images)


def test_bad_options_and_folders_are_refused(tmp_path):
    with pytest.raises(BuildError, match="max_parts must be within 2..16"):
        DatasetOptions(max_parts=20)
    with pytest.raises(BuildError, match="min_part_share must be within"):
        DatasetOptions(min_part_share=float("nan"))
    with pytest.raises(BuildError, match="view_size must be within 16..1024"):
        DatasetOptions(view_size=4096)
    with pytest.raises(BuildError, match="does not exist or is not a folder"):
        build_dataset(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="holds no .glb or .gltf files"):
        build_dataset(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(BuildError, match="workers must be within"):
        build_dataset(tmp_path / "empty", tmp_path / "out", workers=0)
    with pytest.raises(DatasetError, match="is not a training set"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DatasetError, match="cannot be read as a safetensors shard"):
        load_object(tmp_path / "junk.safetensors")


def test_command_line_builds_the_procedural_set(tmp_path, capsys):
    code = builder.main(["--procedural", "2", str(tmp_path / "set"), "--view-size", "32", "--input-size", "32",
                         "--supersample", "1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["objects"] == 2 and summary["assets"] == 2
    assert builder.main([str(tmp_path / "nothing-here"), str(tmp_path / "out")]) == 2


def test_foreign_shards_and_manifests_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"views": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(DatasetError, match="is not a partgen-training-object v1 shard"):
        load_object(tmp_path / "other.safetensors")
    save_file({"views": torch.zeros(1)}, str(tmp_path / "partial.safetensors"),
              metadata={"format": "partgen-training-object", "version": "1"})
    with pytest.raises(DatasetError, match="lacks tensors \\['input_image'"):
        load_object(tmp_path / "partial.safetensors")
    (tmp_path / "manifest.json").write_text('{"format": "other", "version": 1}')
    with pytest.raises(DatasetError, match="expected 'partgen-training-set' v1"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DatasetError, match="is not valid JSON"):
        read_manifest(tmp_path)
    assert builder.main([str(tmp_path / "out")]) == 2  # neither SOURCE nor --procedural
    assert builder.main(["--procedural", "0", str(tmp_path / "out")]) == 2
