"""The small runtime object every library entry point takes.

The library never knows who hosts it. ComfyUI's node layer passes a runtime whose progress callback
feeds ``comfy.utils.ProgressBar`` and whose interrupt check raises ComfyUI's interrupt exception;
scripts and tests use :func:`default_runtime`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, Optional[torch.Tensor]], None]
"""``progress(step, total, preview)``; preview is an IMAGE-layout tensor ``[H,W,3]`` in 0..1 or None."""


class Interrupted(RuntimeError):
    """Raised by the default interrupt check; hosts raise their own exception instead."""


def _no_progress(step: int, total: int, preview: Optional[torch.Tensor]) -> None:
    return None


def _never_interrupted() -> None:
    return None


@dataclass(frozen=True)
class Runtime:
    """Where and how library code runs.

    device/dtype: where models compute and in which precision (float32 on CPU: half precision
    convolutions on CPU are slow or missing). ``progress`` is called once per unit of work with an
    optional preview. ``check_interrupt`` is called at least once per sampling step and raises to stop.
    ``offload_device`` is where a model goes back to after use when the runtime manages memory itself.
    ``load_models`` is the host's hook that moves modules onto ``device`` before use (ComfyUI's model
    management); the default moves them directly.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    progress: ProgressCallback = _no_progress
    check_interrupt: Callable[[], None] = _never_interrupted
    load_models: Optional[Callable[[list], None]] = None

    def prepare(self, *modules: torch.nn.Module) -> None:
        """Make ``modules`` ready to run on ``self.device`` (the host decides how)."""
        if self.load_models is not None:
            self.load_models(list(modules))
            return
        for module in modules:
            module.to(self.device)


def default_runtime(device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Runtime:
    """A runtime for scripts and tests: CUDA when available, float32 on CPU, fp16 on GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return Runtime(device=device, dtype=dtype)
