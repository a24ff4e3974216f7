"""The training benchmark's tiny path end to end, at the smallest budget: the README's "Does training help?"
command must keep running (set built, VAE fitted, bounds, untrained and trained rows printed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tier1

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_benchmark_prints_before_and_after(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--work", str(tmp_path),
               "--objects", "2", "--vae-steps", "3", "--steps", "2", "--eval-every", "1", "--eval-objects", "1",
               "--eval-samples", "1", "--eval-steps", "1", "--final-objects", "1", "--final-samples", "1",
               "--final-steps", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "lr 0.001 (cosine), VAE 4x" in lines[0]
    rows = [line for line in lines if line.startswith("| ")]
    assert [row.split(" | ")[1] for row in rows[1:4]] == ["0", "1", "2"]  # step 0, then every --eval-every step
    assert rows[1].startswith("| untrained (base + zero inputs) |") and rows[3].startswith("| trained |")
    final = [row for row in rows if ", final scoring |" in row]  # step 0 and every kept checkpoint, scored again
    assert [row.split(" | ")[1] for row in final] == ["0", "1", "2"]
    assert sorted(p.name for p in (tmp_path / "run-2-0" / "final" / "samples").iterdir()) == [
        "step-0000000.png", "step-0000001.png", "step-0000002.png"]
    bound = next(row for row in rows if row.startswith("| ground-truth colours (bound)"))
    assert float(bound.split(" | ")[2]) > 50.0  # mAP50 of the true colours decoded directly
    metrics = [json.loads(line) for line in (tmp_path / "run-2-0" / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in metrics if "eval/mAP50" in entry] == [0, 1, 2]
    fitted = json.loads((tmp_path / "models" / "zero123plus-v1.2" / "vae" / "fitted").read_text())
    assert fitted["scaling_factor"] > 0 and fitted["fitted_on"] == "both"
    # run again: the finished run is not trained twice, its checkpoints are scored again
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0 and "already holds a finished run" in again.stderr
    assert [line.split(" | ")[1] for line in again.stdout.splitlines() if ", final scoring |" in line] == ["0", "1", "2"]
    assert (tmp_path / "run-2-0" / "metrics.jsonl").read_text().count("eval/mAP50") == 3  # its log untouched
    # final-scoring settings out of range stop before any training, naming the flags
    bad = subprocess.run(command[:-6] + ["--final-samples", "99"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert bad.returncode != 0 and "--final-samples" in bad.stderr and "1..64, got 99" in bad.stderr
    # the same folder reused with a VAE of another kind is refused, not silently scored with the old one
    for flag in (["--vae-fit", "targets"], ["--vae-downsampling", "2"]):
        again = subprocess.run(command + flag, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert again.returncode != 0 and f"holds a base made with {flag[0]} " in again.stderr
