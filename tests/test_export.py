import json
import os

import numpy as np
import pytest
import torch
import trimesh

from partgen_models.assembly import export as export_module
from partgen_models.assembly.export import ExportError, ExportOptions, export_parts, sanitize_prefix
from partgen_models.parts import Part


def _part(name: str, mesh, shift=(0.0, 0.0, 0.0)) -> Part:
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32) + torch.tensor(shift)
    colors = torch.linspace(0, 1, len(mesh.vertices))[:, None].expand(-1, 3).contiguous()
    return Part(name, vertices, torch.tensor(mesh.faces, dtype=torch.long), colors)


@pytest.fixture
def parts():
    return [_part("seat", trimesh.creation.box()), _part("ball", trimesh.creation.icosphere(2), (0.0, 2.0, 0.0))]


def test_scene_has_a_named_node_per_part_and_reloads(tmp_path, parts):
    result = export_parts(parts, tmp_path, ExportOptions(filename_prefix="run/chair", metadata={"seed": 7}))
    assert result.scene.as_posix() == "run/chair_00001.glb"
    scene = trimesh.load(tmp_path / result.scene, process=False)
    assert sorted(scene.graph.nodes_geometry) == ["ball", "seat"]
    for part in parts:
        geometry = scene.geometry[scene.graph[part.name][1]]
        assert len(geometry.faces) == part.num_faces
        assert len(geometry.vertices) == part.vertices.shape[0] + (16 if part.name == "seat" else 0)  # box corners split 3 ways
    manifest = json.loads((tmp_path / result.manifest).read_text())
    assert [p["name"] for p in manifest["parts"]] == ["seat", "ball"]
    assert manifest["parts"][1]["faces"] == parts[1].num_faces and manifest["settings"] == {"seed": 7}
    assert manifest["parts"][1]["bbox_min"][1] == pytest.approx(1.0, abs=1e-6)


def test_never_overwrites_and_counts_up(tmp_path, parts):
    first = export_parts(parts, tmp_path, ExportOptions(filename_prefix="p"))
    second = export_parts(parts, tmp_path, ExportOptions(filename_prefix="p"))
    assert (first.scene.name, second.scene.name) == ("p_00001.glb", "p_00002.glb")


def test_per_part_files_in_each_format(tmp_path, parts):
    for file_format in ("glb", "obj", "stl", "ply"):
        result = export_parts(parts, tmp_path, ExportOptions(filename_prefix=file_format, part_format=file_format))
        assert [f.name for f in result.part_files] == [f"{file_format}_00001_seat.{file_format}", f"{file_format}_00001_ball.{file_format}"]
        mesh = trimesh.load(tmp_path / result.part_files[1], force="mesh", process=False)
        assert len(mesh.faces) == parts[1].num_faces


def test_exploded_view_moves_parts_apart(tmp_path, parts):
    result = export_parts(parts, tmp_path, ExportOptions(filename_prefix="x", exploded=0.5))
    manifest = json.loads((tmp_path / result.manifest).read_text())
    offsets = [np.array(p["exploded_offset"]) for p in manifest["parts"]]
    assert offsets[0][1] < 0 < offsets[1][1]  # seat pushed down, ball pushed up
    assert result.scene.name == "x_00001_exploded.glb"


@pytest.mark.parametrize("prefix, message", [
    ("/etc/passwd", "absolute path"), ("../outside", "contains '..'"), ("a/../../b", "contains '..'"),
    ("C:\\temp\\x", "absolute path"), ("   ", "is empty"),
])
def test_prefixes_that_leave_the_output_folder_are_refused(tmp_path, parts, prefix, message):
    with pytest.raises(ExportError, match=message):
        export_parts(parts, tmp_path / "out", ExportOptions(filename_prefix=prefix))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_odd_characters_are_sanitised():
    assert sanitize_prefix("my run/<chair>:1") == (__import__("pathlib").Path("my run"), "_chair_1")


def test_bad_parts_write_nothing(tmp_path, parts):
    with pytest.raises(ExportError, match="no parts"):
        export_parts([], tmp_path)
    empty = Part("empty", torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long), torch.zeros(3, 3))
    with pytest.raises(ExportError, match="'empty' has no faces"):
        export_parts([parts[0], empty], tmp_path)
    nan = Part("nan", parts[0].vertices.clone(), parts[0].faces, parts[0].vertex_colors)
    nan.vertices[0, 0] = float("nan")
    with pytest.raises(ExportError, match="'nan' has NaN"):
        export_parts([nan], tmp_path)
    with pytest.raises(ExportError, match="repeated: seat"):
        export_parts([parts[0], parts[0]], tmp_path)
    assert list(tmp_path.rglob("*")) == []


def test_a_failure_while_writing_leaves_no_partial_files(tmp_path, parts, monkeypatch):
    calls = []
    real_link = os.link

    def failing_link(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt  # an interrupt between the scene and the manifest
        return real_link(source, target)

    monkeypatch.setattr(export_module.os, "link", failing_link)
    with pytest.raises(KeyboardInterrupt):
        export_parts(parts, tmp_path, ExportOptions(filename_prefix="p", part_format="obj"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_transforms_are_applied_and_files_follow_the_umask(tmp_path, parts):
    moved = Part("moved", parts[0].vertices, parts[0].faces, parts[0].vertex_colors,
                 transform=torch.tensor([[1.0, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    result = export_parts([moved], tmp_path, ExportOptions(filename_prefix="t"))
    scene = trimesh.load(tmp_path / result.scene, process=False)
    (geometry,) = scene.geometry.values()
    world = scene.graph["moved"][0]
    placed = geometry.vertices @ world[:3, :3].T + world[:3, 3]
    assert placed[:, 0].min() == pytest.approx(parts[0].vertices[:, 0].min().item() + 5.0, abs=1e-5)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / result.scene).stat().st_mode & 0o777 == 0o666 & ~mask


def test_overlong_prefixes_name_the_input_not_a_temporary(tmp_path, parts):
    with pytest.raises(ExportError) as error:
        export_parts(parts, tmp_path, ExportOptions(filename_prefix="x" * 500))
    message = str(error.value)
    assert message.startswith("filename_prefix is 500 characters long") and "at most 200" in message
    assert ".partgen-" not in message and "Errno" not in message
    with pytest.raises(ExportError, match="a folder or file name of 150 characters.*at most 100"):
        export_parts(parts, tmp_path, ExportOptions(filename_prefix="run/" + "y" * 150))
    assert list(tmp_path.rglob("*")) == []
    # The longest accepted prefix, exploded, with long part names, still fits the file system.
    long_named = [Part(n * 80, p.vertices, p.faces, p.vertex_colors) for n, p in zip("ab", parts)]
    result = export_parts(long_named, tmp_path, ExportOptions("z" * 100, part_format="obj", exploded=0.1))
    assert all((tmp_path / f).is_file() for f in result.part_files)


def test_os_errors_while_writing_name_the_file_and_the_fix(tmp_path, parts, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(__import__("errno").ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module.os, "fsync", full_disk)
    with pytest.raises(ExportError) as error:
        export_parts(parts, tmp_path, ExportOptions(filename_prefix="p"))
    message = str(error.value)
    assert "could not write p_00001.glb" in message and "No space left on device; free some disk space" in message
    assert ".partgen-" not in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_an_interrupt_between_files_stops_the_save_and_leaves_nothing(tmp_path, parts):
    from partgen_models.runtime import Interrupted, Runtime

    checks = []

    def interrupt_on_third_file():
        checks.append(1)
        if len(checks) == 3:
            raise Interrupted("interrupted by the user")

    with pytest.raises(Interrupted):
        export_parts(parts, tmp_path, ExportOptions(filename_prefix="p", part_format="obj"),
                     Runtime(check_interrupt=interrupt_on_third_file))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


_KILLED_WRITER = """
import os, sys, time
sys.path.insert(0, sys.argv[2])
import torch, trimesh
from partgen_models.assembly import export as export_module
from partgen_models.assembly.export import ExportOptions, export_parts
from partgen_models.parts import Part

real_fsync = os.fsync
def fsync_then_hang(fd):
    real_fsync(fd)
    print("temporary written", flush=True)
    time.sleep(600)  # killed here, between writing a temporary and linking it
export_module.os.fsync = fsync_then_hang
box = trimesh.creation.box()
part = Part("seat", torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces), torch.ones(8, 3))
export_parts([part], sys.argv[1], ExportOptions(filename_prefix="p"))
"""


def test_temporaries_of_a_killed_writer_are_swept_by_the_next_save(tmp_path, parts):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(repo)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "temporary written"
    finally:
        writer.kill()  # SIGKILL: no cleanup handler runs
        writer.wait(timeout=60)
    leftovers = list(tmp_path.glob(".partgen-*.tmp"))
    assert len(leftovers) == 1 and f"-{writer.pid}-" in leftovers[0].name
    assert not list(tmp_path.glob("p_*"))  # final names are never partial

    result = export_parts(parts, tmp_path, ExportOptions(filename_prefix="p"))
    assert not list(tmp_path.glob(".partgen-*.tmp"))
    assert result.scene.name == "p_00001.glb" and (tmp_path / result.scene).is_file()


def test_sweep_keeps_live_writers_and_recent_foreign_temporaries(tmp_path):
    import time

    own = tmp_path / f"{export_module._temporary_prefix()}abc.tmp"  # this process: may be mid-write
    foreign = tmp_path / ".partgen-otherhost-123-abc.tmp"  # another machine: cannot be asked
    legacy = tmp_path / ".partgen-abc123.tmp"  # an older version's name: age decides
    final = tmp_path / "p_00001.glb"
    for path in (own, foreign, legacy, final):
        path.write_bytes(b"x")
    assert export_module.sweep_stale_temporaries(tmp_path) == []
    hour_later = time.time() + export_module.STALE_AFTER_S + 1
    removed = export_module.sweep_stale_temporaries(tmp_path, now=hour_later)
    assert sorted(p.name for p in removed) == sorted([own.name, foreign.name, legacy.name])
    assert final.is_file()


def test_a_prefix_folder_that_is_a_file_is_named(tmp_path, parts):
    (tmp_path / "run").write_bytes(b"not a folder")
    with pytest.raises(ExportError, match=r"cannot create the folder .*run.* for filename_prefix 'run/chair'.*give another"):
        export_parts(parts, tmp_path, ExportOptions(filename_prefix="run/chair"))
