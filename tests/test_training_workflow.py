"""Tier 2: checkpoints written by the trainers load through *PartGen Load Segmenter* / *PartGen Load
Completer* and run in the shipped mesh-to-parts workflow in ComfyUI's real executor.

A tiny segmenter and completer are trained for one step each on a tiny training set (the tiny base
model with a 64 px reference processor, so the backward pass is cheap), then copied into the test
ComfyUI's ``models/partgen/`` under new names, which the workflow's loaders are pointed at.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

import comfyui_harness as harness
from partgen_models.evaluation.procedural import write_evaluation_set
from partgen_models.testing.tiny_training import write_tiny_training_base
from partgen_models.training.build_dataset import DatasetOptions, build_dataset
from partgen_models.training.config import config_from_dict
from partgen_models.training.trainer import PartGenTrainer

pytestmark = pytest.mark.tier2

WORKFLOW = "mesh_to_parts_api.json"


def _train(task: str, root: Path, accelerator) -> Path:
    config = config_from_dict(dict(
        dataset=str(root / "data"), output_dir=str(root / task), models_dir=str(root / "models"), max_steps=1,
        batch_size=1, learning_rate=1e-3, lr_warmup_steps=0, mixed_precision="no", gradient_checkpointing=False,
        eval_every=0, checkpoint_every=1))
    PartGenTrainer(task, config, accelerator=accelerator).train()
    return root / task / "checkpoint-0000001"


@pytest.fixture(scope="module")
def trained_checkpoints(tmp_path_factory, comfyui_base):
    from accelerate import Accelerator

    root = tmp_path_factory.mktemp("trained")
    write_tiny_training_base(root / "models" / "zero123plus-v1.2")
    write_evaluation_set(root / "assets", count=1, seed=3)
    build_dataset(root / "assets", root / "data", DatasetOptions(view_size=64, input_size=64, supersample=1),
                  progress=False)
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    names = {}
    for task in ("segmentation", "completion"):
        target = comfyui_base["partgen_models"] / f"trained-{task}"
        if not target.exists():
            shutil.copytree(_train(task, root, accelerator), target, ignore=shutil.ignore_patterns("training_state"))
        names[task] = target.name
    return names


def test_trained_checkpoints_run_in_the_mesh_to_parts_workflow(trained_checkpoints, comfyui_base, comfyui_path):
    prompt = copy.deepcopy(harness.load_api_workflows()[WORKFLOW])
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "PartGenLoadSegmenter":
            inputs["model"] = trained_checkpoints["segmentation"]
        elif kind == "PartGenLoadCompleter":
            inputs["model"] = trained_checkpoints["completion"]
        elif kind == "PartGenRenderViews":
            inputs.update(view_size=64, supersample=1)
        elif kind == "PartGenSegment":
            inputs.update(steps=2, samples=2)
        elif kind == "PartGenCompleteParts":
            inputs["steps"] = 2
        elif kind == "PartGenSelectParts":
            inputs["top_k"] = 2
        elif kind == "PartGenReconstruct":
            inputs["resolution"] = 64
    (result,) = harness.run_executor([{"name": "trained", "prompt": prompt}], comfyui_base, root=comfyui_path)
    errors = [data for event, data in result["messages"] if event == "execution_error"]
    assert result["valid"] and result["success"] and not errors, (
        f"valid={result['valid']} validation_error={result.get('validation_error')} errors={errors}\n"
        + harness._tail(Path(result["log_file"]), 4000))
    outputs = json.dumps(result["history"]["outputs"])
    assert "mesh_parts" in outputs
