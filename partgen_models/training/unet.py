"""PartGen's UNets from Zero123++'s, and checkpoints in the loaders' format plus resumable training state.

PartGen (§3.2, §3.3) widens the base UNet's input: segmentation takes noisy latent ++ object-grid latent
(2C = 8 channels on Zero123++'s 4-channel latent), completion noisy latent ++ masked part ++ context ++
mask (3C + 1 = 13). The new input channels start at zero, so at step 0 the widened network computes
exactly what the base network computes (diffusers' InstructPix2Pix training script widens ``conv_in``
the same way).

A checkpoint folder is what ``load_partgen_segmenter`` / ``load_partgen_completer`` read
(``partgen.json`` + diffusers ``unet/``; the EMA weights when EMA is on), plus ``training_state/``
for resuming: the raw weights, the optimiser moments and the EMA (safetensors) and the step (JSON).
No pickles anywhere. Folders are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..completion.completer import FORMAT as COMPLETION_FORMAT
from ..segmentation.palette import PALETTE
from ..partgen_checkpoint import CONFIG_NAME
from ..segmentation.segmenter import FORMAT as SEGMENTATION_FORMAT
from .config import ConfigError

logger = logging.getLogger(__name__)

FORMATS = {"segmentation": SEGMENTATION_FORMAT, "completion": COMPLETION_FORMAT}
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d{7})$")
STATE_FOLDER = "training_state"


def expected_in_channels(task: str, latent_channels: int) -> int:
    """Input width of PartGen's UNet for ``task`` on a ``latent_channels`` latent."""
    return 2 * latent_channels if task == "segmentation" else 3 * latent_channels + 1


def widen_conv_in(unet: torch.nn.Module, in_channels: int) -> torch.nn.Module:
    """Give ``unet`` ``in_channels`` inputs; the added ones zero-initialised (step 0 = the base model)."""
    old = unet.conv_in
    if in_channels < old.in_channels:
        raise ConfigError(f"cannot narrow the UNet input from {old.in_channels} to {in_channels} channels")
    if in_channels == old.in_channels:
        return unet
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                          device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (temporary folders are not listed)."""
    if not Path(output_dir).is_dir():
        return []
    found = [p for p in Path(output_dir).iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=lambda p: p.name)


@dataclass(frozen=True)
class TrainingState:
    """What a checkpoint restores: the step, the raw weights, the optimiser state, the EMA weights."""

    step: int
    weights: dict[str, torch.Tensor]
    optimizer: Optional[dict]
    ema: Optional[dict[str, torch.Tensor]]


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` → tensors (safetensors) + the JSON-able rest."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(output_dir: Path, step: int, task: str, unet: torch.nn.Module, base_model: str,
                    optimizer_state: Optional[dict], ema: Optional[dict[str, torch.Tensor]], extra: dict,
                    weights: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """Write ``output_dir/checkpoint-{step}``: loader format (EMA weights if given) + training state.

    ``unet`` gives the config; ``weights`` (default: its state dict) the trained weights, e.g. gathered
    from sharded ranks."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / checkpoint_name(step)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=output_dir))
    try:
        weights = {k: v.detach().float().contiguous().cpu() for k, v in (weights or unet.state_dict()).items()}
        deployed = {k: ema[k].float().contiguous().cpu() for k in weights} if ema is not None else weights
        (temporary / "unet").mkdir()
        unet.save_config(str(temporary / "unet"))
        save_file(deployed, str(temporary / "unet" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        meta = {"format": FORMATS[task], "version": 1, "base_model": base_model,
                "palette": [list(c) for c in PALETTE], "training": {"step": step, "ema": ema is not None, **extra}}
        (temporary / CONFIG_NAME).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        state = temporary / STATE_FOLDER
        state.mkdir()
        save_file(weights, str(state / "weights.safetensors"))
        state_meta: dict = {"step": step, "task": task, "optimizer": None}
        if optimizer_state is not None:
            tensors, state_meta["optimizer"] = _flatten_optimizer(optimizer_state)
            save_file(tensors, str(state / "optimizer.safetensors"))
        if ema is not None:
            save_file({k: v.float().contiguous().cpu() for k, v in ema.items()}, str(state / "ema.safetensors"))
        (state / "state.json").write_text(json.dumps(state_meta, indent=2), encoding="utf-8")
        if final.exists():  # the same step saved again (a resumed run reaching it): replace it whole
            shutil.rmtree(final)
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return final


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_training_state(folder: Path, task: str, unet: torch.nn.Module) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint` for ``task``, checked against ``unet``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot resume from {folder}: {folder / CONFIG_NAME} is missing or invalid ({error})") from error
    if meta.get("format") != FORMATS[task]:
        raise ConfigError(f"cannot resume from {folder}: it is a {meta.get('format')!r} checkpoint and this run trains "
                          f"{task} ({FORMATS[task]!r}); give a checkpoint of the same task or a fresh output_dir")
    state = folder / STATE_FOLDER
    try:
        state_meta = json.loads((state / "state.json").read_text(encoding="utf-8"))
        weights = load_file(str(state / "weights.safetensors"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot resume from {folder}: its {STATE_FOLDER}/ is missing or unreadable ({error}); "
                          "only checkpoints written by the trainer can be resumed") from error
    expected = unet.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ConfigError(f"cannot resume from {folder}: its UNet does not match this run's (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}, other shapes {wrong[:3]}); was it trained from another base model?")
    optimizer = None
    if state_meta.get("optimizer") is not None and (state / "optimizer.safetensors").is_file():
        optimizer = _unflatten_optimizer(load_file(str(state / "optimizer.safetensors")), state_meta["optimizer"])
    ema = load_file(str(state / "ema.safetensors")) if (state / "ema.safetensors").is_file() else None
    return TrainingState(int(state_meta["step"]), weights, optimizer, ema)
