"""PartGen's segmentation network on a Zero123++ v1.2 base, in our own checkpoint format.

PartGen (§3.2) fine-tunes its multi-view generator into a segmenter by doubling the UNet's input
channels: noisy latent ++ VAE latent of the object's view grid; the output is a colour-coded grid.
No weights were ever released, so the format is ours:

    partgen-segmentation/
      partgen.json      {"format": "partgen-segmentation", "version": 1,
                         "base_model": "zero123plus-v1.2", "palette": [[r, g, b], ...]}
      unet/config.json, unet/diffusion_pytorch_model.safetensors   (diffusers UNet, in_channels 8)

Everything else (VAE, CLIP image encoder, image processors, scheduler, FlexDiffuse ramp) comes from
the base Zero123++ folder, loaded through the same loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..multiview.catalog import resolve_multiview_model
from ..multiview.zero123pp import Zero123PlusModel, load_zero123plus
from ..weights import WeightsError

FORMAT = "partgen-segmentation"
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
    if config.get("format") != expected_format or config.get("version") != 1:
        raise WeightsError(
            f"{path} describes format {config.get('format')!r} version {config.get('version')!r}; "
            f"expected {expected_format!r} version 1"
        )
    palette = tuple(tuple(float(c) for c in colour) for colour in config.get("palette", ()))
    return PartGenCheckpoint(Path(folder), str(config.get("base_model", "zero123plus-v1.2")), palette)


class PartGenDiffusionModel(torch.nn.Module):
    """A PartGen network: the Zero123++-based diffusion model it runs on, as one module for hosts."""

    def __init__(self, diffusion: Zero123PlusModel) -> None:
        super().__init__()
        self.diffusion = diffusion

    @property
    def dtype(self) -> torch.dtype:
        return self.diffusion.dtype

    @property
    def device(self) -> torch.device:
        return self.diffusion.device

    @device.setter
    def device(self, value) -> None:
        pass  # hosts record where they put the model; the weights are the truth


class PartGenSegmentationModel(PartGenDiffusionModel):
    """The diffusion model plus the palette its colour code uses."""

    def __init__(self, diffusion: Zero123PlusModel, palette: tuple) -> None:
        super().__init__(diffusion)
        self.palette = palette


def load_partgen_segmenter(
    folder: Path, search_dirs: Sequence[Path], dtype: torch.dtype = torch.float32
) -> PartGenSegmentationModel:
    checkpoint = read_partgen_checkpoint(folder, FORMAT)
    if len(checkpoint.palette) < 2:
        raise WeightsError(f"{folder / CONFIG_NAME} lists {len(checkpoint.palette)} palette colours; need at least 2")
    base = resolve_multiview_model(checkpoint.base_model, search_dirs)
    diffusion = load_zero123plus(base.folder, dtype=dtype, flavour="partgen-segmentation", unet_folder=folder / "unet")
    config = diffusion.unet.config
    if config.in_channels != 2 * config.out_channels:
        raise WeightsError(
            f"{folder / 'unet'} takes {config.in_channels} input channels; PartGen's segmenter takes "
            f"{2 * config.out_channels} (noisy latent + object-grid latent)"
        )
    return PartGenSegmentationModel(diffusion, checkpoint.palette)


def list_partgen_checkpoints(search_dirs: Sequence[Path], expected_format: str) -> list[str]:
    """Folders in ``search_dirs`` whose ``partgen.json`` declares ``expected_format``."""
    names = []
    for root in search_dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            try:
                config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
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
        f"unet/, see partgen_models/segmentation/segmenter.py) into models/partgen/"
    )
