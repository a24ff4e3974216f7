"""PartGen's checkpoint format, shared by its segmentation and completion networks.

PartGen (Chen et al. 2025) released no weights, so the format is ours: a folder in models/partgen/
holding a fine-tuned Zero123++ v1.2 UNet and a small description,

    partgen-segmentation/  (or partgen-completion/)
      partgen.json      {"format": "partgen-segmentation", "version": 1,
                         "base_model": "zero123plus-v1.2", "palette": [[r, g, b], ...]}
      unet/config.json, unet/diffusion_pytorch_model.safetensors

while the VAE, image encoder, scheduler and ramp come from the base Zero123++ folder. This module
reads and finds such folders; ``segmentation/segmenter.py`` and ``completion/completer.py`` load them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .modules import DeviceFromWeights
from .multiview.zero123pp import Zero123PlusModel
from .weights import WeightsError, folder_entries

CONFIG_NAME = "partgen.json"


@dataclass(frozen=True)
class PartGenCheckpoint:
    folder: Path
    base_model: str
    palette: tuple[tuple[float, float, float], ...]


def read_partgen_checkpoint(folder: Path, expected_format: str) -> PartGenCheckpoint:
    """Read and validate ``partgen.json`` of one of our checkpoint folders."""
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise WeightsError(f"{path} is missing: {folder} is not a {expected_format} checkpoint") from error
    except (OSError, ValueError) as error:
        raise WeightsError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise WeightsError(
            f"{path} holds a JSON {type(config).__name__}, not an object; expected "
            f'{{"format": "{expected_format}", "version": 1, ...}}'
        )
    if config.get("format") != expected_format or config.get("version") != 1:
        raise WeightsError(
            f"{path} describes format {config.get('format')!r} version {config.get('version')!r}; "
            f"expected {expected_format!r} version 1"
        )
    palette = _palette(config.get("palette", ()), path)
    return PartGenCheckpoint(Path(folder), str(config.get("base_model", "zero123plus-v1.2")), palette)


def _palette(value, path: Path) -> tuple[tuple[float, float, float], ...]:
    """``[[r, g, b], ...]`` with components in 0..1, or a :class:`WeightsError` naming the file."""
    try:
        palette = tuple(tuple(float(c) for c in colour) for colour in value)
    except (TypeError, ValueError):
        palette = None
    if palette is None or any(len(c) != 3 or not all(0.0 <= x <= 1.0 for x in c) for c in palette):
        raise WeightsError(f"{path}: 'palette' must be a list of [r, g, b] colours with values in 0..1, got {value!r:.120}")
    return palette


class PartGenDiffusionModel(DeviceFromWeights, torch.nn.Module):
    """A PartGen network: the Zero123++-based diffusion model it runs on, as one module for hosts."""

    def __init__(self, diffusion: Zero123PlusModel) -> None:
        super().__init__()
        self.diffusion = diffusion

    def weights_reference(self) -> torch.Tensor:
        return self.diffusion.weights_reference()


def list_partgen_checkpoints(search_dirs: Sequence[Path], expected_format: str) -> list[str]:
    """Folders in ``search_dirs`` whose ``partgen.json`` declares ``expected_format``."""
    names = []
    for root in search_dirs:
        for folder in folder_entries(root):
            try:
                config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(config, dict):
                continue  # some other JSON file: not ours, and it must not break the node list
            if config.get("format") == expected_format and folder.name not in names:
                names.append(folder.name)
    return names


def find_partgen_checkpoint(name: str, search_dirs: Sequence[Path], expected_format: str) -> Path:
    for root in search_dirs:
        if (Path(root) / name / CONFIG_NAME).is_file():
            return Path(root) / name
    raise WeightsError(
        f"no {expected_format} checkpoint named {name!r} in {', '.join(str(d) for d in search_dirs)}. PartGen's "
        f"authors released no weights: put a checkpoint in this pack's format (a folder with {CONFIG_NAME} and "
        f"unet/, see partgen_models/partgen_checkpoint.py) into models/partgen/"
    )
