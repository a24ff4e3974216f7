"""The procedural evaluation set: deterministic, 2-10 named and coloured parts, every part visible, GLB files."""

import hashlib

import numpy as np
import pytest
import torch

from partgen_models.evaluation.procedural import (
    EVAL_SET_SEED,
    EVAL_SET_SIZE,
    KINDS,
    PALETTE,
    evaluation_set,
    generate_object,
    write_atomically,
    write_evaluation_set,
)
from partgen_models.rendering import RenderCameras, load_scene_parts, render_parts
from partgen_models.parts import placed_mesh


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """See tests/test_rendering.py: one intra-op thread on shared 2-core runners."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shipped_set():
    return evaluation_set(EVAL_SET_SIZE, EVAL_SET_SEED)


def fingerprint(objects) -> str:
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(obj.name.encode())
        for part in obj.parts:
            digest.update(part.name.encode())
            digest.update(np.round(part.vertices.numpy(), 4).tobytes())
            digest.update(part.faces.numpy().tobytes())
    return digest.hexdigest()


def test_the_set_is_deterministic_and_covers_every_kind(shipped_set):
    assert len(shipped_set) == EVAL_SET_SIZE == 2 * len(KINDS)
    assert [o.kind for o in shipped_set] == [KINDS[i % len(KINDS)] for i in range(EVAL_SET_SIZE)]
    assert fingerprint(evaluation_set(EVAL_SET_SIZE, EVAL_SET_SEED)) == fingerprint(shipped_set)
    assert fingerprint(evaluation_set(4, EVAL_SET_SEED + 1)) != fingerprint(shipped_set[:4])
    assert [o.name for o in shipped_set[:3]] == ["000_table", "001_chair", "002_lamp"]
    # The seeded choices (options, part lists) are pinned, so every machine regenerates the same set;
    # 127 parts over 22 objects.
    text = ";".join(o.name + ":" + ",".join(p.name for p in o.parts) for o in shipped_set)
    assert hashlib.sha256(text.encode()).hexdigest() == "e92882a30f4adfca78c85f506579661395fe4f53a110ae191fc7373b7493f679"
    assert [len(o.parts) for o in shipped_set] == [6, 8, 3, 8, 6, 9, 2, 7, 2, 6, 7, 6, 8, 4, 8, 6, 7, 2, 6, 2, 8, 6]


def test_objects_have_2_to_10_named_parts_each_one_colour(shipped_set):
    for obj in shipped_set:
        names = [p.name for p in obj.parts]
        assert 2 <= len(names) <= 10, obj.name
        assert len(set(names)) == len(names), obj.name
        colours = set()
        for part in obj.parts:
            assert part.num_faces > 0 and torch.isfinite(part.vertices).all()
            assert (part.vertex_colors == part.vertex_colors[0]).all()  # one flat colour per part
            assert tuple(round(c, 2) for c in part.vertex_colors[0].tolist()) in {tuple(round(c, 2) for c in p) for p in PALETTE}
            colours.add(tuple(part.vertex_colors[0].tolist()))
        assert len(colours) == len(names), f"{obj.name}: two parts share a colour"
        points = torch.cat([p.vertices for p in obj.parts])
        assert points[:, 1].min() > -0.05  # standing on y = 0 (glTF up)


def test_every_part_of_the_shipped_set_is_visible(shipped_set):
    cameras = RenderCameras.from_layout("zero123pp_v12", size=128)
    for obj in shipped_set:
        rendering = render_parts(list(obj.parts), cameras)
        pixels = rendering.part_masks().flatten(1).sum(1)
        assert (pixels >= 16).all(), f"{obj.name}: parts seen by no view: {[n for n, c in zip(rendering.part_names, pixels) if c < 16]}"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown object kind 'sofa'; kinds are table, chair"):
        generate_object("sofa", 0)
    with pytest.raises(ValueError, match="count must be at least 1"):
        evaluation_set(0)


def test_written_set_has_one_named_node_per_part(tmp_path, shipped_set):
    paths = write_evaluation_set(tmp_path / "set", count=3)
    assert [p.name for p in paths] == ["000_table.glb", "001_chair.glb", "002_lamp.glb"]
    assert not list((tmp_path / "set").glob(".partgen-*"))  # no temporary left behind
    for path, obj in zip(paths, shipped_set):
        parts = load_scene_parts(path)
        assert [p.name for p in parts] == [p.name for p in obj.parts]
        for read, original in zip(parts, obj.parts):
            assert torch.allclose(placed_mesh(read)[0].float(), original.vertices, atol=1e-6)
    with pytest.raises(FileExistsError, match="000_table.glb exists"):
        write_evaluation_set(tmp_path / "set", count=1)
    write_evaluation_set(tmp_path / "set", count=1, overwrite=True)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.glb"
    with pytest.raises(TypeError):
        write_atomically(target, object())  # not bytes: fails while writing the temporary
    assert list(tmp_path.iterdir()) == []
    write_atomically(target, b"abc")
    assert target.read_bytes() == b"abc" and len(list(tmp_path.iterdir())) == 1
