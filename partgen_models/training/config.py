"""The training configuration: a JSON file read into a frozen, validated dataclass.

Every field has a documented default; unknown keys, out-of-range and non-finite values are refused
with the field's name before anything loads. Relative paths are relative to the working directory.
Example configs: ``partgen_models/training/configs/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Union

TASKS = ("segmentation", "completion")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """The training configuration is unusable; the message names the field and what to change."""


@dataclass(frozen=True)
class TrainingConfig:
    """What to train on, from what, for how long, and how to report.

    dataset: a folder written by ``python -m partgen_models.training.build_dataset``.
    output_dir: where checkpoints (``checkpoint-NNNNNNN/``: ``partgen.json`` + ``unet/``, loadable by the
        PartGen loaders), ``metrics.jsonl`` and ``samples/`` go.
    models_dir: the folder holding the base model (ComfyUI's ``models/partgen``).
    base_model: the Zero123++ v1.2 choice to start from (``zero123plus-v1.2``, or
        ``zero123plus-v1.2-instantmesh`` for InstantMesh's white-background UNet, or a folder name).
    unet_in_channels: optional check: the widened input (8 for segmentation, 13 for completion on
        Zero123++'s 4-channel latent); a different number is an error before training starts.
    max_steps / batch_size: optimiser steps, samples per step per process (global batch = batch_size x
        processes). Activation memory grows linearly with batch_size; measure a machine's figure with
        ``python benchmarks/bench_training.py --size real --batch-size N`` (peak memory per batch).
    learning_rate, lr_warmup_steps (linear warm-up), lr_schedule after the warm-up ("constant", or
        "cosine": a half cosine from learning_rate down to 0 at max_steps), adam_beta1/2, adam_epsilon,
        weight_decay, max_grad_norm (gradient clipping; 0 turns it off).
    mixed_precision: "bf16" (Ampere and later), "fp16" or "no" (float32; CPU).
    gradient_checkpointing: recompute activations in the backward pass: much less activation memory for
        roughly a third more time per step.
    ema_decay: keep an exponential moving average of the weights (e.g. 0.9999) and save it as the
        model; None turns it off (saves one fp32 copy of the UNet, 3.5 GB for the real one).
    condition_dropout: share of samples trained without the image condition (classifier-free guidance
        at inference needs it).
    context_dropout: completion: share of samples whose object context is zeroed, so the same model
        also completes without context (PartGen Table 2's ablation; ``use_context=False``).
    instruction_probability: completion: share of samples conditioned on a text instruction (the part's
        name) instead of the empty prompt: the editing variant (PartGen §3.4, text-guided editing).
    checkpoint_every / keep_checkpoints: save every N steps (and at the end), keep the newest K.
    eval_every: evaluate every N steps (0: never): segmentation mAP50/75 and recall@K, completion PSNR
        (and LPIPS when its weights are installed), on ``eval_objects`` procedural objects with
        ``eval_steps`` sampling steps and ``eval_samples`` segmentation samples; a sample grid is
        written to ``samples/`` as PNG. Costs about eval_objects x eval_samples sampling runs.
    data_workers: DataLoader processes reading shards (0: in the training process).
    seed: drives the data order, colour permutations, noise and timesteps; runs are reproducible.
    """

    dataset: str
    output_dir: str
    models_dir: str = "models/partgen"
    base_model: str = "zero123plus-v1.2"
    unet_in_channels: Optional[int] = None
    max_steps: int = 20000
    batch_size: int = 4
    learning_rate: float = 1e-5
    lr_warmup_steps: int = 500
    lr_schedule: str = "constant"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    ema_decay: Optional[float] = None
    condition_dropout: float = 0.05
    context_dropout: float = 0.2
    instruction_probability: float = 0.1
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000
    eval_objects: int = 8
    eval_steps: int = 28
    eval_samples: int = 3
    eval_guidance: float = 4.0
    log_every: int = 10
    data_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{item.name} is {value}; it must be a finite number")
        _range("max_steps", self.max_steps, 1, 10_000_000)
        _range("batch_size", self.batch_size, 1, 256)
        _range("lr_warmup_steps", self.lr_warmup_steps, 0, 10_000_000)
        _range("checkpoint_every", self.checkpoint_every, 1, 10_000_000)
        _range("keep_checkpoints", self.keep_checkpoints, 1, 1000)
        _range("eval_every", self.eval_every, 0, 10_000_000)
        _range("eval_objects", self.eval_objects, 1, 1000)
        _range("eval_steps", self.eval_steps, 1, 1000)
        _range("eval_samples", self.eval_samples, 1, 64)
        _range("log_every", self.log_every, 1, 1_000_000)
        _range("data_workers", self.data_workers, 0, 64)
        _range("seed", self.seed, 0, 2**63 - 1)
        if self.unet_in_channels is not None:
            _range("unet_in_channels", self.unet_in_channels, 1, 64)
        if not 0.0 < self.learning_rate <= 1.0:
            raise ConfigError(f"learning_rate must be within (0, 1], got {self.learning_rate}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be within [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.adam_epsilon < 1.0 or self.weight_decay < 0.0 or self.max_grad_norm < 0.0:
            raise ConfigError("adam_epsilon must be within (0, 1); weight_decay and max_grad_norm must be >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be within (0, 1) or null, got {self.ema_decay}")
        for name in ("condition_dropout", "context_dropout", "instruction_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.eval_guidance < 1.0:
            raise ConfigError(f"eval_guidance must be at least 1 (1 turns guidance off), got {self.eval_guidance}")

    def to_json(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self)}


def _range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number within {low}..{high}, got {value!r}")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "Optional[int]": int, "Optional[float]": float}


def config_from_dict(data: dict, source: str = "the config") -> TrainingConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a JSON object of settings, got {type(data).__name__}")
    known = {item.name: item for item in fields(TrainingConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source} has unknown settings {unknown}; known settings: {sorted(known)}")
    missing = [name for name in ("dataset", "output_dir") if name not in data]
    if missing:
        raise ConfigError(f"{source} lacks the required settings {missing}")
    values = {}
    for name, value in data.items():
        expected = _TYPES[str(known[name].type)]
        if value is None and str(known[name].type).startswith("Optional"):
            values[name] = None
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: {name} must be {known[name].type}, got {value!r}")
        values[name] = value
    return TrainingConfig(**values)


def load_config(path: Union[str, Path]) -> TrainingConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"config file {path} does not exist") from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"config file {path} is not valid JSON: {error}") from error
    return config_from_dict(data, str(path))
