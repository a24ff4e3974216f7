"""Tier 1: PartGen's trainers on CPU with a tiny base model and a tiny training set built from the
procedural set (64 px views; the base's VAE processor at 64 px keeps reference attention cheap)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from partgen_models.completion.complete import CompletionOptions, complete_parts
from partgen_models.completion.completer import load_partgen_completer
from partgen_models.evaluation.completion_eval import prepare_completion_sample
from partgen_models.evaluation.evaluate import EvaluationOptions
from partgen_models.evaluation.procedural import generate_object, write_evaluation_set
from partgen_models.segmentation.segmenter import load_partgen_segmenter
from partgen_models.segmentation.segment import SegmentationOptions, segment_views
from partgen_models.testing.tiny_models import TINY_ZERO123PP_CONFIGS, randomize_
from partgen_models.testing.tiny_training import write_tiny_training_base
import partgen_models.training.trainer as trainer_module
from partgen_models.training import train as train_cli
from partgen_models.training.build_dataset import DatasetOptions, build_dataset
from partgen_models.training.config import ConfigError, config_from_dict, load_config
from partgen_models.training.data import StepBatches, TrainingSet, segmentation_sample
from partgen_models.training.shards import DatasetError
from partgen_models.training.trainer import PartGenTrainer
from partgen_models.training.unet import list_checkpoints, widen_conv_in

pytestmark = pytest.mark.tier1


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    write_tiny_training_base(root / "models" / "zero123plus-v1.2")
    write_evaluation_set(root / "assets", count=2, seed=7)
    build_dataset(root / "assets", root / "data", DatasetOptions(view_size=64, input_size=64, supersample=1),
                  progress=False)
    return root


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True, mixed_precision="no")


def _config(workspace, name: str, **overrides):
    settings = dict(dataset=str(workspace / "data"), output_dir=str(workspace / "runs" / name),
                    models_dir=str(workspace / "models"), max_steps=3, batch_size=1, learning_rate=2e-3,
                    lr_warmup_steps=0, mixed_precision="no", gradient_checkpointing=False, condition_dropout=0.0,
                    context_dropout=0.0, instruction_probability=0.0, eval_every=0, checkpoint_every=100,
                    eval_objects=1, eval_steps=1, eval_samples=1, log_every=1)
    settings.update(overrides)
    return config_from_dict(settings)


def _unet_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.diffusion.unet.state_dict().items()}


def test_widened_input_starts_as_the_base_model():
    from diffusers import UNet2DConditionModel

    base = randomize_(UNet2DConditionModel(**TINY_ZERO123PP_CONFIGS["unet"]), torch.Generator().manual_seed(3)).eval()
    widened = widen_conv_in(randomize_(UNet2DConditionModel(**TINY_ZERO123PP_CONFIGS["unet"]),
                                       torch.Generator().manual_seed(3)), 13).eval()
    assert widened.config.in_channels == 13 and widened.conv_in.weight.shape[1] == 13
    latents, context = torch.randn(2, 4, 16, 16), torch.randn(2, 9, 16, 16)
    t, text = torch.tensor([10, 500]), torch.randn(2, 77, 32)
    with torch.no_grad():
        expected = base(latents, t, encoder_hidden_states=text).sample
        actual = widened(torch.cat([latents, context], 1), t, encoder_hidden_states=text).sample
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="cannot narrow the UNet input from 13 to 8"):
        widen_conv_in(widened, 8)


def test_ranks_read_disjoint_shares_of_each_global_batch(workspace):
    training_set = TrainingSet(workspace / "data")
    single = StepBatches(training_set, "segmentation", 4, seed=3)
    ranks = [StepBatches(training_set, "segmentation", 2, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(3):
        assert ranks[0].indices(step) + ranks[1].indices(step) == single.indices(step)
    # every object once per epoch, whatever the batch size
    positions = [i for step in range(len(training_set)) for i in StepBatches(training_set, "segmentation", 1, 3).indices(step)]
    assert sorted(positions) == list(range(len(training_set)))
    batch = ranks[1][5]
    assert batch["target"].shape == (2, 3, 192, 128) and batch["input_image"].dtype == torch.uint8
    completion = StepBatches(training_set, "completion", 2, seed=3)[0]
    assert completion["mask"].shape == (2, 1, 192, 128) and len(completion["instruction"]) == 2
    assert torch.equal(completion["masked"], StepBatches(training_set, "completion", 2, seed=3)[0]["masked"])


def test_segmentation_targets_use_a_fresh_colour_permutation(workspace):
    obj = TrainingSet(workspace / "data")[0]
    first = segmentation_sample(obj, torch.Generator().manual_seed(1), 3, 2)["target"]
    second = segmentation_sample(obj, torch.Generator().manual_seed(2), 3, 2)["target"]
    assert not torch.equal(first, second)  # other colours...

    def labels(grid):
        return torch.unique(grid.reshape(3, -1).T, dim=0, return_inverse=True)[1]

    a, b = labels(first), labels(second)
    pairs = torch.unique(torch.stack([a, b], 1), dim=0)
    assert pairs.shape[0] == int(a.max()) + 1 == int(b.max()) + 1 == obj.num_parts + 1  # ...for the same parts


def test_loss_falls_on_a_fixed_batch(workspace, accelerator):
    trainer = PartGenTrainer("segmentation", _config(workspace, "fixed"), accelerator=accelerator)
    batch = trainer.batches[0]

    def fixed_loss() -> float:
        with torch.no_grad():
            return sum(float(trainer.loss(batch, [torch.Generator().manual_seed(s)])) for s in range(3)) / 3

    before = fixed_loss()
    for _ in range(6):
        trainer.train_step(batch)
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)


def test_resume_continues_exactly_and_checkpoints_load(workspace, accelerator):
    settings = dict(gradient_checkpointing=True, ema_decay=0.5, eval_every=3, checkpoint_every=1, keep_checkpoints=2)
    straight = PartGenTrainer("segmentation", _config(workspace, "straight", **settings), accelerator=accelerator)
    losses = [r.loss for r in straight.train()]
    settings["eval_every"] = 0  # evaluation draws from its own generators: it cannot change the training
    interrupted = PartGenTrainer("segmentation", _config(workspace, "resumed", **settings), accelerator=accelerator)
    first = [r.loss for r in interrupted.train(max_steps=1)]
    resumed = PartGenTrainer("segmentation", _config(workspace, "resumed", **settings), accelerator=accelerator)
    assert resumed.step == 1
    rest = [r.loss for r in resumed.train()]
    assert first + rest == losses
    expected, actual = _unet_state(straight), _unet_state(resumed)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in expected)

    run = workspace / "runs" / "straight"
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-0000002", "checkpoint-0000003"]  # pruned to 2
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]
    assert [e["step"] for e in log if "eval/mAP50" in e] == [0, 3]
    assert {"eval/mAP75", "eval/R@1", "eval/R@10"} <= set(log[-1])
    assert (run / "samples" / "step-0000003.png").is_file()

    # the checkpoint is a PartGen segmenter for the loader, with the EMA weights
    checkpoint = run / "checkpoint-0000003"
    segmenter = load_partgen_segmenter(checkpoint, [workspace / "models"])
    loaded = segmenter.diffusion.unet.state_dict()
    assert all(torch.equal(loaded[k], straight.ema.shadow[k]) for k in loaded)
    sample = prepare_completion_sample("chair", generate_object("chair", 1).parts, EvaluationOptions(size=64))
    result = segment_views(segmenter, sample.views, SegmentationOptions(num_samples=1, num_inference_steps=1))
    assert result.samples.shape == (1, 6, 64, 64, 3)

    with pytest.raises(ConfigError, match="is a 'partgen-segmentation' checkpoint and this run trains completion"):
        PartGenTrainer("completion", _config(workspace, "other"), accelerator=accelerator, resume=checkpoint)


def test_completion_trains_with_context_dropout_and_instructions_and_loads(workspace, accelerator, monkeypatch):
    config = _config(workspace, "completion", max_steps=1, context_dropout=0.5, instruction_probability=1.0,
                     gradient_checkpointing=True)
    trainer = PartGenTrainer("completion", config, accelerator=accelerator)
    assert trainer.diffusion.unet.config.in_channels == 13 and trainer.text_encoder is not None
    texts = []
    real_encode = trainer_module.encode_texts
    monkeypatch.setattr(trainer_module, "encode_texts",
                        lambda enc, tok, chosen: texts.extend(chosen) or real_encode(enc, tok, chosen))
    (result,) = trainer.train()
    assert texts and all(t.startswith("a ") for t in texts)  # part names as editing instructions
    assert result.step == 1 and torch.isfinite(torch.tensor(result.loss))
    completer = load_partgen_completer(workspace / "runs" / "completion" / "checkpoint-0000001", [workspace / "models"])
    sample = prepare_completion_sample("mug", generate_object("mug", 2).parts, EvaluationOptions(size=64))
    completed = complete_parts(completer, sample.views, sample.part_masks, CompletionOptions(num_inference_steps=1))
    assert completed.images.shape == sample.truth_images.shape


def test_evaluation_of_completion_reports_psnr(workspace, accelerator):
    trainer = PartGenTrainer("completion", _config(workspace, "completion-eval", eval_every=1), accelerator=accelerator)
    metrics = trainer.evaluate()
    assert 0.0 < metrics["eval/psnr"] < 100.0
    assert (workspace / "runs" / "completion-eval" / "samples" / "step-0000000.png").is_file()


def test_bad_configs_fail_before_training(workspace, accelerator, tmp_path):
    with pytest.raises(ConfigError, match="unet_in_channels is 9, but PartGen's segmentation UNet .* takes 8"):
        PartGenTrainer("segmentation", _config(workspace, "wrong", unet_in_channels=9), accelerator=accelerator)
    with pytest.raises(ConfigError, match="takes 13 \\(noisy latent \\+ masked part"):
        PartGenTrainer("completion", _config(workspace, "wrong", unet_in_channels=8), accelerator=accelerator)
    assert not (workspace / "runs" / "wrong").exists()
    with pytest.raises(ConfigError, match="unknown settings \\['learning_rat'\\]"):
        config_from_dict({"dataset": "d", "output_dir": "o", "learning_rat": 1e-4})
    with pytest.raises(ConfigError, match="learning_rate is nan; it must be a finite number"):
        config_from_dict({"dataset": "d", "output_dir": "o", "learning_rate": float("nan")})
    with pytest.raises(ConfigError, match="lacks the required settings \\['output_dir'\\]"):
        config_from_dict({"dataset": "d"})
    with pytest.raises(ConfigError, match="batch_size must be a whole number within 1..256"):
        config_from_dict({"dataset": "d", "output_dir": "o", "batch_size": 1000})
    with pytest.raises(ConfigError, match="mixed_precision must be one of"):
        config_from_dict({"dataset": "d", "output_dir": "o", "mixed_precision": "fp8"})
    with pytest.raises(ConfigError, match="gradient_checkpointing must be bool"):
        config_from_dict({"dataset": "d", "output_dir": "o", "gradient_checkpointing": "yes"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="is not a training set"):
        PartGenTrainer("segmentation", replace(_config(workspace, "x"), dataset=str(tmp_path)), accelerator=accelerator)
    with pytest.raises(ConfigError, match="cannot resume from .*: no such checkpoint folder"):
        PartGenTrainer("segmentation", _config(workspace, "x"), accelerator=accelerator, resume=tmp_path / "nope")
    small = tmp_path / "small"
    build_dataset(workspace / "assets", small, DatasetOptions(view_size=32, input_size=32, supersample=1), progress=False)
    with pytest.raises(ConfigError, match="build the set with --view-size 64 or more, or set eval_every to 0"):
        PartGenTrainer("segmentation", replace(_config(workspace, "x", eval_every=10), dataset=str(small)),
                       accelerator=accelerator)


def test_command_line_reports_errors(tmp_path, caplog):
    (tmp_path / "config.json").write_text(json.dumps({"dataset": str(tmp_path / "none"), "output_dir": str(tmp_path)}))
    assert train_cli.main(["segmentation", str(tmp_path / "config.json")]) == 2
    assert "is not a training set" in caplog.text


@pytest.mark.parametrize("setting, value, message", [
    ("adam_beta1", 1.0, "adam_beta1 must be within \\[0, 1\\)"),
    ("adam_epsilon", 0.0, "adam_epsilon must be within \\(0, 1\\)"),
    ("learning_rate", 2.0, "learning_rate must be within \\(0, 1\\]"),
    ("ema_decay", 1.0, "ema_decay must be within \\(0, 1\\) or null"),
    ("context_dropout", 1.5, "context_dropout must be within 0..1"),
    ("eval_guidance", 0.5, "eval_guidance must be at least 1"),
    ("unet_in_channels", 0, "unet_in_channels must be a whole number within 1..64"),
    ("max_steps", True, "max_steps must be int"),
    ("lr_schedule", "linear", "lr_schedule must be one of \\('constant', 'cosine'\\)"),
])
def test_each_out_of_range_setting_is_named(setting, value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"dataset": "d", "output_dir": "o", setting: value})
    with pytest.raises(ConfigError, match="must be a JSON object of settings"):
        config_from_dict(["not", "a", "dict"])


def test_learning_rate_schedules():
    from types import SimpleNamespace

    def rates(schedule):
        config = config_from_dict({"dataset": "d", "output_dir": "o", "learning_rate": 1e-3, "lr_warmup_steps": 10,
                                   "max_steps": 110, "lr_schedule": schedule})
        return [PartGenTrainer.learning_rate(SimpleNamespace(config=config), step) for step in (0, 9, 10, 60, 109, 110)]

    assert rates("constant") == pytest.approx([1e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    # the half cosine starts at the peak after the warm-up, is at half way half the peak, and reaches 0 at max_steps
    assert rates("cosine") == pytest.approx([1e-4, 1e-3, 1e-3, 5e-4, 1e-3 * 0.5 * (1 + math.cos(math.pi * 0.99)), 0.0])


def test_unusable_checkpoints_are_refused(tmp_path):
    from diffusers import UNet2DConditionModel

    from partgen_models.training.unet import load_training_state, save_checkpoint

    unet = widen_conv_in(UNet2DConditionModel(**TINY_ZERO123PP_CONFIGS["unet"]), 8)
    with pytest.raises(ConfigError, match="partgen.json is missing or invalid"):
        load_training_state(tmp_path, "segmentation", unet)
    folder = save_checkpoint(tmp_path / "run", 5, "segmentation", unet, "zero123plus-v1.2", None, None, {})
    assert load_training_state(folder, "segmentation", unet).step == 5
    other = widen_conv_in(UNet2DConditionModel(**TINY_ZERO123PP_CONFIGS["unet"]), 13)
    with pytest.raises(ConfigError, match="its UNet does not match this run's .*other shapes \\['conv_in.weight'\\]"):
        load_training_state(folder, "segmentation", other)
    (folder / "training_state" / "weights.safetensors").unlink()
    with pytest.raises(ConfigError, match="training_state/ is missing or unreadable"):
        load_training_state(folder, "segmentation", unet)
