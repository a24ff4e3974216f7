import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partgen_models import cli

REPO = Path(__file__).resolve().parents[1]


def test_headless_tiny_run_writes_grid_views_and_cameras(tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "partgen_models", str(REPO / "example_workflows" / "partgen_example_object.png"),
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
        sys.executable, "-m", "partgen_models", str(REPO / "example_workflows" / "partgen_example_object.png"),
        "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "models"), "--device", "cpu",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "PARTGEN_NO_DOWNLOAD": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "downloading is switched off" in result.stderr and str(tmp_path / "models") in result.stderr
    assert not (tmp_path / "out").exists()


EXAMPLE = REPO / "example_workflows" / "partgen_example_object.png"


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be within 1..500, got 0"),
    (["--seed", "-5"], "--seed must be within 0..2**64-1, got -5"),
    (["--view-size", "7"], "--view-size must be a multiple of 8 within 64..640, got 7"),
    (["--view-size", "100000"], "--view-size must be a multiple of 8 within 64..640, got 100000"),
    (["--guidance", "nan"], "--guidance is nan; give a finite number"),
    (["--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["--device", "nonsense"], "--device 'nonsense' is not a device"),
])
def test_bad_flags_are_one_line_errors_naming_the_flag(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(EXAMPLE), "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "none"), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"python -m partgen_models: error: {message}" + err[len("python -m partgen_models: error: ") + len(message):]
    assert err.count("\n") == 1 and "Traceback" not in err and "usage:" not in err
    assert not (tmp_path / "out").exists()


def test_flags_are_checked_before_any_weights_are_looked_up(tmp_path):
    # No weights and downloads off: if validation came after the model lookup, the error would be about weights.
    command = [sys.executable, "-m", "partgen_models", str(EXAMPLE), "--out", str(tmp_path / "out"),
               "--models-dir", str(tmp_path / "models"), "--view-size", "7"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PARTGEN_NO_DOWNLOAD": "1"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("python -m partgen_models: error: --view-size must be a multiple of 8 within "
                                     "64..640, got 7 (Zero123++ was trained at 320) (see --help)")


def _grey16_png(path, background=65535, value=8000):
    grey = np.full((96, 128), background, dtype=np.uint16)
    grey[30:70, 40:90] = value  # a dark object on white, in 16 bits
    Image.fromarray(grey).save(path)
    return path


def test_sixteen_bit_greyscale_pngs_keep_their_values(tmp_path):
    path = _grey16_png(tmp_path / "object16.png")
    with Image.open(path) as probe:
        assert probe.mode in ("I;16", "I")  # what PIL makes of a 16-bit greyscale PNG
    image = cli._load_image(path)
    assert image.shape == (1, 96, 128, 3)
    assert image[0, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert image[0, 50, 60].tolist() == pytest.approx([8000 / 65535] * 3)
    mask = cli._load_mask(_grey16_png(tmp_path / "mask16.png", background=0, value=65535))
    assert mask.shape == (1, 96, 128) and mask[0, 0, 0] == 0 and mask[0, 50, 60] == 1


def test_input_errors_speak_of_flags_not_node_inputs(tmp_path, caplog, capsys):
    busy = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(busy).save(tmp_path / "busy.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "empty_mask.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "small_mask.png")
    cases = [
        ([], "busy.png: its background is not a plain colour", "pass --mask FILE"),
        (["--mask", str(tmp_path / "empty_mask.png")], "empty_mask.png is empty (all black", "pass --mask FILE"),
        (["--mask", str(tmp_path / "small_mask.png")], "small_mask.png is 32x32 but image", "same width and height"),
    ]
    for flags, first, second in cases:
        caplog.clear()
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(tmp_path / "busy.png"), "--out", str(tmp_path / "out"), "--models-dir",
                      str(tmp_path / "none"), *flags])
        assert exit_info.value.code == 2
        (message,) = [r.getMessage() for r in caplog.records]
        assert first in message and second in message, message
        assert "node" not in message and "connect" not in message.lower() and "LoadImage" not in message
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path / "busy.png"), "--out", str(tmp_path / "out"), "--mask", str(tmp_path / "missing.png")])
    assert "error: --mask " in capsys.readouterr().err


def test_out_that_is_a_file_and_missing_cuda_are_flag_errors(tmp_path, capsys):
    import torch

    (tmp_path / "taken").write_text("a file")
    cases = [(["--out", str(tmp_path / "taken")], "--out " + str(tmp_path / "taken") + " is a file; give a folder")]
    if not torch.cuda.is_available():
        cases.append((["--out", str(tmp_path / "o"), "--device", "cuda"],
                      "--device cuda: no CUDA device is available here; use --device cpu"))
    for flags, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(EXAMPLE), *flags])
        assert exit_info.value.code == 2
        assert f"error: {message} (see --help)" in capsys.readouterr().err
