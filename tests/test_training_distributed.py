"""Tier 1: the trainer under two real processes (``accelerate launch``, DDP over gloo on the CPU).

One launch of this file as a script trains a tiny segmenter for one step with batch 1 per process,
then a second trainer in the same processes resumes from the checkpoint rank 0 wrote and takes step 2.
The test compares that with one process and batch 2 (the same global batch): the per-sample data and
randomness are keyed by the position in the global batch and DDP averages the two ranks' gradients, so
losses and weights must agree to float tolerance. Each rank also reports the training objects it read.
It costs about 90 s of CPU (three Python processes importing torch/diffusers), too much for every CI
run: ``PARTGEN_TEST_DISTRIBUTED=1 python -m pytest tests/test_training_distributed.py`` runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from partgen_models.evaluation.procedural import write_evaluation_set
from partgen_models.testing.tiny_training import write_tiny_training_base
from partgen_models.training.build_dataset import DatasetOptions, build_dataset
from partgen_models.training.config import ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2
# A large Adam epsilon keeps the update proportional to the gradient where it is near zero: with the
# default 1e-8 the first step is about lr·sign(g), and the sign of a gradient that cancels to ~1e-9 flips
# with the summation order (DDP's all-reduce vs one batch), which is float noise, not a difference.
SETTINGS = dict(max_steps=STEPS, batch_size=1, learning_rate=2e-3, lr_warmup_steps=0, adam_epsilon=1e-2,
                mixed_precision="no", gradient_checkpointing=False, condition_dropout=0.0, eval_every=0,
                checkpoint_every=1, log_every=1, seed=5)


def _settings(root: Path, output: str, **overrides) -> dict:
    return dict(SETTINGS, dataset=str(root / "data"), output_dir=str(root / output), models_dir=str(root / "models"),
                **overrides)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-ddp")
    write_tiny_training_base(root / "models" / "zero123plus-v1.2")
    write_evaluation_set(root / "assets", count=4, seed=7)  # 2 steps x 2 = one epoch
    build_dataset(root / "assets", root / "data", DatasetOptions(view_size=64, input_size=64, supersample=1),
                  progress=False)
    return root


@pytest.mark.tier1
@pytest.mark.skipif(os.environ.get("PARTGEN_TEST_DISTRIBUTED", "") != "1",
                    reason="starts 2 training processes (about 90 s of CPU): PARTGEN_TEST_DISTRIBUTED=1 python -m pytest "
                           "tests/test_training_distributed.py")
def test_two_processes_equal_one_process_with_the_same_global_batch(workspace):
    from accelerate import Accelerator

    from partgen_models.training.trainer import PartGenTrainer

    config = workspace / "ddp.json"
    config.write_text(json.dumps(_settings(workspace, "ddp")))
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), __file__, str(config)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads(line[len("RANK-REPORT "):]) for line in done.stdout.splitlines()
               if line.startswith("RANK-REPORT ")]
    assert sorted(r["rank"] for r in reports) == [0, 1] and all(r["processes"] == 2 for r in reports)

    # one process, batch 2: the same global batches
    single = PartGenTrainer("segmentation", config_from_dict(_settings(workspace, "single", batch_size=2)),
                            accelerator=Accelerator(cpu=True, mixed_precision="no"))
    single_losses = [r.loss for r in single.train()]
    for step in range(STEPS):
        # (a) each rank read a disjoint share of the step's global batch, together all of it
        shares = [next(r["objects"][str(step)] for r in reports if r["rank"] == rank) for rank in (0, 1)]
        assert shares[0] + shares[1] == single.batches.indices(step)
        assert not set(shares[0]) & set(shares[1])
    # (b) the losses (reduced over ranks) and the weights after N steps agree
    ddp_log = [json.loads(line) for line in (workspace / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in ddp_log] == [1, 2]  # rank 0 alone writes the log: one line per step
    assert [e["loss"] for e in ddp_log] == pytest.approx(single_losses, rel=1e-5)
    before = _weights(workspace / "ddp" / f"checkpoint-{STEPS - 1:07d}")
    ddp, one = _weights(workspace / "ddp" / f"checkpoint-{STEPS:07d}"), single.diffusion.unet.state_dict()
    moved = max(float((ddp[k] - before[k]).abs().max()) for k in one)  # what the last step changed
    difference = max(float((ddp[k] - one[k]).abs().max()) for k in one)
    assert moved > 1e-4 and difference < 1e-3 * moved, (moved, difference)
    # (c) the second trainer resumed from rank 0's checkpoint (both ranks say so), and only rank 0 wrote:
    # the run folder holds the checkpoints and the log, nothing half-written
    assert all(r["resumed_at"] == 1 for r in reports)
    names = sorted(p.name for p in (workspace / "ddp").iterdir())
    assert names == ["checkpoint-0000001", "checkpoint-0000002", "metrics.jsonl"]
    leftovers = [p for p in (workspace / "ddp").rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert not leftovers


@pytest.mark.tier1
def test_processes_that_accelerate_does_not_see_are_refused(monkeypatch):
    from accelerate import Accelerator

    from partgen_models.training.trainer import refuse_unseen_processes

    accelerator = Accelerator(cpu=True, mixed_precision="no")  # what a process sees without ACCELERATE_USE_CPU
    refuse_unseen_processes(accelerator)  # one process, one seen: fine
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun / accelerate --multi_gpu set it
    with pytest.raises(ConfigError, match="2 processes were launched but accelerate runs this one as 1 of 1.*"
                                          "ACCELERATE_USE_CPU=true"):
        refuse_unseen_processes(accelerator)


def _rank_main(config_path: str) -> None:
    """Run under ``accelerate launch``: one step, then a fresh trainer resumes and takes the rest."""
    from accelerate import Accelerator

    from partgen_models.training.config import load_config
    from partgen_models.training.trainer import PartGenTrainer

    torch.set_num_threads(1)
    config = load_config(config_path)
    accelerator = Accelerator(mixed_precision="no")
    first = PartGenTrainer("segmentation", config, accelerator=accelerator)
    first.train(max_steps=1)
    resumed = PartGenTrainer("segmentation", config, accelerator=accelerator)
    resumed_at = resumed.step
    resumed.train()
    objects = {str(step): first.batches.indices(step) for step in range(config.max_steps)}
    print("RANK-REPORT " + json.dumps({"rank": accelerator.process_index, "processes": accelerator.num_processes,
                                       "objects": objects, "resumed_at": resumed_at}), flush=True)


if __name__ == "__main__":
    _rank_main(sys.argv[1])
