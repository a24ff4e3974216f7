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

from pathlib import Path
from typing import Sequence

import torch

from ..multiview.catalog import resolve_multiview_model
from ..multiview.zero123pp import Zero123PlusModel, load_zero123plus
from ..partgen_checkpoint import CONFIG_NAME, PartGenDiffusionModel, read_partgen_checkpoint
from ..weights import WeightsError

FORMAT = "partgen-segmentation"


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
