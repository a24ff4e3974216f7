"""Timing and memory helpers shared by the benchmark scripts (run from the repository root)."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Callable, Optional

import torch

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int:
    """Peak CUDA allocation since the last reset; on CPU the process's peak RSS so far (Linux: KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key))


def measure(fn: Callable[[], object], device: torch.device) -> tuple[float, Optional[int]]:
    """(seconds, peak memory growth in bytes, or None where it cannot be read) of one call.

    CUDA: growth of ``max_memory_allocated`` over what was allocated before the call. CPU (Linux): the
    process's peak RSS (``VmHWM``, reset to the current RSS through ``/proc/self/clear_refs``) over its RSS
    before the call; elsewhere None.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    elif Path("/proc/self/clear_refs").exists():
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM (peak RSS) to the current RSS
        before = _rss("VmRSS:")
    else:
        before = None
    start = time.perf_counter()
    fn()
    sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        return seconds, torch.cuda.max_memory_allocated(device) - before
    return seconds, (_rss("VmHWM:") - before) if before is not None else None
