"""``python -m partgen_models IMAGE --part NAME=IMAGE ...``: the MMPart path after the edit step, headless."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partgen_models.evaluation.placement_eval import prepare_placement_sample
from partgen_models.evaluation.procedural import generate_object

REPO = Path(__file__).resolve().parents[1]


def _save(tensor, path: Path) -> Path:
    Image.fromarray((tensor.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A rendered mug and each of its parts alone (what a perfect edit model returns)."""
    folder = tmp_path_factory.mktemp("mmpart-inputs")
    parts = generate_object("mug", 0).parts
    sample = prepare_placement_sample("mug", parts, 64)
    from partgen_models.rendering.renderer import Normalization, render_parts

    from partgen_models.assembly.placement import AssemblyFrame

    whole = render_parts(list(sample.truth), AssemblyFrame(64, 64, 30.0).cameras(64), normalization=Normalization())
    image = _save(whole.images[0], folder / "mug.png")
    named = [f"{name}={_save(sample.isolated.images[i], folder / f'{name}.png')}" for i, name in enumerate(sample.isolated.names)]
    return image, named, list(sample.isolated.names)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "partgen_models", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900)


def test_tiny_mmpart_run_writes_named_placed_parts(inputs, tmp_path):
    image, named, names = inputs
    out = tmp_path / "out"
    args = [str(image), "--out", str(out), "--tiny", "--steps", "1", "--view-size", "64", "--resolution", "32",
            "--render-size", "64", "--no-reference", "--device", "cpu"]
    for item in named:
        args += ["--part", item]
    result = _run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    scenes = list((out / "mmpart").glob("parts_*.glb"))
    assert len(scenes) == 1 and "silhouette IoU" in result.stderr
    manifest = json.loads(next((out / "mmpart").glob("parts_*.json")).read_text())
    assert manifest["settings"]["method"] == "MMPart" and manifest["settings"]["parts"] == names
    assert [p["name"] for p in manifest["parts"]] == names
    import trimesh

    scene = trimesh.load(scenes[0])
    assert set(scene.graph.nodes_geometry) == set(names)
    assert (out / "preview.png").is_file() and not list(out.rglob(".*tmp*"))


@pytest.mark.parametrize("extra, message", [
    (["--part", "hat"], "--part 'hat': write it as NAME=IMAGE"),
    (["--part", "a=x.png", "--part-mask", "m1.png", "--part-mask", "m2.png"], "2 --part-mask for 1 --part"),
    (["--part", "a=x.png", "--resolution", "512"], "--resolution 512 needs about 1610 MB for its 512^3 extraction grid "
                                                   "and queries, over --memory-budget-mb=1024. Raise --memory-budget-mb"),
    (["--part", "a=x.png", "--resolution", "600"], "--resolution must be within 16..512, got 600"),
])
def test_bad_part_arguments_are_readable_errors(inputs, tmp_path, extra, message):
    image, _, _ = inputs
    result = _run([str(image), "--out", str(tmp_path / "out"), "--tiny", "--device", "cpu", *extra])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and not (tmp_path / "out").exists()
