"""PartGen's completion network on a Zero123++ v1.2 base, in our own checkpoint format.

PartGen (§3.3) completes a part from the noisy latent ++ the VAE latent of the masked part views
(I⊙M) ++ the VAE latent of the whole object's views (context) ++ the part mask at latent resolution,
in that channel order (``complete.COMPLETION_CHANNELS``, built by ``complete.completion_unet_input``):
with a 4-channel latent, ``conv_in`` takes 4·3 + 1 = 13 channels. The editing variant is the same network
with a text instruction in place of the empty prompt. No weights were released; the format is the
segmenter's (``partgen.json`` with ``"format": "partgen-completion"`` + diffusers ``unet/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..multiview.catalog import resolve_multiview_model
from ..multiview.zero123pp import Zero123PlusModel, encode_prompt, load_zero123plus
from ..partgen_checkpoint import PartGenDiffusionModel, read_partgen_checkpoint
from ..weights import WeightsError

FORMAT = "partgen-completion"


class PartGenCompletionModel(PartGenDiffusionModel):
    """The completion network; keeps its base folder to encode editing instructions on demand."""

    def __init__(self, diffusion: Zero123PlusModel, base_folder: Path) -> None:
        super().__init__(diffusion)
        self.base_folder = Path(base_folder)

    def encode_instruction(self, text: str) -> torch.Tensor:
        return encode_prompt(self.base_folder, text)


def load_partgen_completer(
    folder: Path, search_dirs: Sequence[Path], dtype: torch.dtype = torch.float32
) -> PartGenCompletionModel:
    checkpoint = read_partgen_checkpoint(folder, FORMAT)
    base = resolve_multiview_model(checkpoint.base_model, search_dirs)
    diffusion = load_zero123plus(base.folder, dtype=dtype, flavour="partgen-completion", unet_folder=Path(folder) / "unet")
    config = diffusion.unet.config
    if config.in_channels != 3 * config.out_channels + 1:
        raise WeightsError(
            f"{Path(folder) / 'unet'} takes {config.in_channels} input channels; PartGen's completer takes "
            f"{3 * config.out_channels + 1} (noisy latent + masked part + context + mask)"
        )
    return PartGenCompletionModel(diffusion, base.folder)
