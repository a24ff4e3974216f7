"""ComfyUI's side of the library runtime: model management, progress bar with previews, interrupts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths

from ..partgen_models.runtime import Runtime

logger = logging.getLogger(__name__)

MODEL_FOLDER = "partgen"
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_MAX_PREVIEW = 512


def register_model_folder() -> None:
    """``models/partgen`` as ComfyUI's ``partgen`` folder; extra_model_paths.yaml can add more."""
    default = Path(folder_paths.models_dir) / MODEL_FOLDER
    folder_paths.add_model_folder_path(MODEL_FOLDER, str(default), is_default=True)


def model_search_dirs() -> list[Path]:
    try:
        return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    except KeyError:
        return [Path(folder_paths.models_dir) / MODEL_FOLDER]


def resolve_dtype(precision: str) -> torch.dtype:
    """"auto": what ComfyUI's model management would pick for a UNet on this device."""
    if precision in _DTYPES:
        return _DTYPES[precision]
    device = mm.get_torch_device()
    if mm.should_use_fp16(device):
        return torch.float16
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class ModelHandle:
    """What a loader node returns: where the weights are and how to build the model.

    The model is built on first use and kept in ``_slot`` for as long as ComfyUI keeps this loader
    output cached (changing the loader's inputs drops it), wrapped in a ``ModelPatcher`` so that
    ComfyUI loads, offloads and evicts it like its own models.
    """

    name: str
    dtype: torch.dtype
    build: Callable[[], torch.nn.Module] = field(compare=False, repr=False)
    _slot: dict = field(default_factory=dict, compare=False, repr=False)

    def patcher(self) -> comfy.model_patcher.ModelPatcher:
        if "patcher" not in self._slot:
            model = self.build()
            size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            self._slot["patcher"] = comfy.model_patcher.ModelPatcher(
                model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device(), size=size
            )
        return self._slot["patcher"]


def _preview(image: torch.Tensor):
    from PIL import Image

    array = (image.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(array), _MAX_PREVIEW)


def comfy_runtime(patcher: comfy.model_patcher.ModelPatcher) -> Runtime:
    """A runtime on the patcher's load device whose progress drives ComfyUI's progress bar."""
    bars: dict[int, comfy.utils.ProgressBar] = {}

    def progress(step: int, total: int, preview: Optional[torch.Tensor]) -> None:
        bar = bars.setdefault(total, comfy.utils.ProgressBar(total))
        bar.update_absolute(step, total, _preview(preview) if preview is not None else None)

    def load_models(_modules: list) -> None:
        mm.load_models_gpu([patcher], force_full_load=True)

    return Runtime(
        device=patcher.load_device,
        dtype=patcher.model.dtype,
        progress=progress,
        check_interrupt=mm.throw_exception_if_processing_interrupted,
        load_models=load_models,
    )


def interrupt_runtime() -> Runtime:
    """A runtime for work without a model (writing files): only ComfyUI's interrupt check."""
    return Runtime(check_interrupt=mm.throw_exception_if_processing_interrupted)


def download_progress() -> Callable[[int, int], None]:
    bar: dict[str, comfy.utils.ProgressBar] = {}

    def report(done: int, total: int) -> None:
        bar.setdefault("bar", comfy.utils.ProgressBar(total)).update_absolute(done, total)

    return report
