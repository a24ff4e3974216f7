import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_headless_tiny_run_writes_grid_views_and_cameras(tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "partgen_models", str(REPO / "workflows" / "partgen_example_object.png"),
        "--out", str(out), "--tiny", "--steps", "2", "--view-size", "64", "--seed", "7", "--device", "cpu",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/2" in result.stderr
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (128, 192)
    for index in range(6):
        with Image.open(out / f"view_{index:02d}.png") as view:
            assert view.size == (64, 64)
    cameras = json.loads((out / "views.json").read_text())
    assert cameras["layout"] == "zero123pp_v12" and len(cameras["camera_to_world"]) == 6
    assert "tiny random weights" in cameras["model"]
    assert not list(out.glob(".*.tmp"))


def test_headless_run_without_weights_says_where_to_put_them(tmp_path):
    command = [
        sys.executable, "-m", "partgen_models", str(REPO / "workflows" / "partgen_example_object.png"),
        "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "models"), "--device", "cpu",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "PARTGEN_NO_DOWNLOAD": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "downloading is switched off" in result.stderr and str(tmp_path / "models") in result.stderr
    assert not (tmp_path / "out").exists()
