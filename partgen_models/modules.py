"""Building torch modules from a config and a checkpoint without paying for random init.

The module is created on the meta device (no memory, no init), its expected key names and shapes are
checked against the checkpoint with an error naming every difference, then the checkpoint tensors
are assigned in place (strict). Non-persistent buffers that only a constructor computes are rebuilt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch

from .weights import WeightsError, check_state_dict


class DeviceFromWeights:
    """``device`` and ``dtype`` read from the weights (:meth:`weights_reference`), for model classes.

    Hosts (ComfyUI's ModelPatcher) assign ``model.device`` after moving the weights; the weights are
    the truth, so that assignment is accepted and ignored instead of failing on a read-only property
    or leaving a stale attribute behind.
    """

    def weights_reference(self) -> torch.Tensor:
        """One tensor that moves and casts with the model's weights."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.weights_reference().dtype

    @property
    def device(self) -> torch.device:
        return self.weights_reference().device

    @device.setter
    def device(self, value) -> None:
        pass


def build_on_meta(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.device("meta"):
        return factory()


def match_transformers_layout(
    state_dict: Mapping[str, torch.Tensor], expected_keys: set[str], prefixes: tuple[str, ...] = ("text_model.",)
) -> dict[str, torch.Tensor]:
    """Map a transformers checkpoint written by another major version onto this version's names.

    transformers 4.x nests CLIPTextModel under ``text_model.`` and older releases stored the
    ``position_ids`` buffers; transformers 5 flattens the text model and keeps those buffers out of the
    state dict. Only these known differences are mapped; anything else still fails the strict check.
    """
    mapped = {}
    for key, value in state_dict.items():
        if key.endswith("embeddings.position_ids") and key not in expected_keys:
            continue
        for prefix in prefixes:
            if key not in expected_keys and key.startswith(prefix) and key[len(prefix):] in expected_keys:
                key = key[len(prefix):]
            elif key not in expected_keys and prefix + key in expected_keys:
                key = prefix + key
        mapped[key] = value
    return mapped


def load_strict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    path: Path,
    expected: str,
    dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """Assign ``state_dict`` into a meta-built ``module`` after checking keys and shapes."""
    expected_shapes = {k: v.shape for k, v in module.state_dict().items()}
    check_state_dict(expected_shapes, state_dict, path, expected)
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    module.load_state_dict(state_dict, strict=True, assign=True)
    _rebuild_meta_buffers(module, path, expected)
    return module.eval().requires_grad_(False)


def _rebuild_meta_buffers(module: torch.nn.Module, path: Path, expected: str) -> None:
    for owner in module.modules():
        for name, buffer in list(owner._buffers.items()):
            if buffer is None or buffer.device.type != "meta":
                continue
            if name == "position_ids":  # transformers' CLIP/ViT embeddings: arange(num_positions)[None]
                owner._buffers[name] = torch.arange(buffer.shape[-1], dtype=buffer.dtype).expand(buffer.shape)
            else:
                raise WeightsError(f"{path} does not provide buffer {name!r} of {type(owner).__name__} ({expected})")
