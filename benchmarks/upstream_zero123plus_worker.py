"""Upstream side of ``bench_multiview.py --upstream``: times upstream's Zero123++ pipeline on our weights.

Not meant to be run by hand: ``bench_multiview.py`` writes the random weights it times ours with into a
folder in the release layout (``write_zero123plus_folder``), the input image and a spec (JSON), then
starts this script in a subprocess whose ``PYTHONPATH`` starts with ``--upstream-env`` (e.g. a ``pip
install --target`` folder with the diffusers 0.20.2 / transformers 4.29.2 upstream pins). Upstream's
``pipeline.py`` (SUDO-AI-3D/zero123plus ``diffusers-support``; never committed) is imported from
``--upstream`` and run unchanged: ``Zero123PlusPipeline.from_pretrained(folder, torch_dtype=dtype)``,
the scheduler switched to ``EulerAncestralDiscreteScheduler(..., timestep_spacing="trailing")`` as
upstream's README does, one warm-up call, then ``repeats`` timed calls.

Step times come from the pipeline's step callback: ``callback_on_step_end`` where the installed
diffusers has it, else the older ``callback``/``callback_steps=1`` (diffusers 0.20.2 has only that).

Compatibility shim (numerics untouched), as in ``tests/data/make_zero123pp_golden.py``: where this
transformers names the CLIP text model's parameters ``text_model.*`` the file keeps that prefix (the
release layout), where it does not the prefix is cut. Prints one JSON line: seconds per step, per grid,
peak bytes (CUDA: ``max_memory_allocated`` over the timed calls; CPU: this process's peak RSS, weights
included).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_cpu_peak() -> None:
    """A forked child starts with its parent's peak RSS (Linux copies the high-water mark): reset it."""
    if Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    if Path("/proc/self/status").exists():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _text_encoder_layout(folder: Path) -> None:
    """Give the text encoder's keys the prefix this transformers expects (same tensors)."""
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**json.loads((folder / "text_encoder" / "config.json").read_text()))
    with torch.device("meta"):
        wants_prefix = all(k.startswith("text_model.") for k in CLIPTextModel(config).state_dict())
    path = folder / "text_encoder" / "model.safetensors"
    tensors = load_file(str(path))
    if not wants_prefix:
        tensors = {k.removeprefix("text_model."): v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True)
    spec = json.loads(parser.parse_args().spec.read_text())
    _reset_cpu_peak()
    device = torch.device(spec["device"])
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[spec["dtype"]]

    folder = Path(spec["work"]) / "upstream_copy"
    shutil.copytree(spec["weights"], folder)
    _text_encoder_layout(folder)
    module_spec = importlib.util.spec_from_file_location("upstream_zero123plus", str(Path(spec["upstream"]) / "pipeline.py"))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline
    from PIL import Image

    pipeline = module.Zero123PlusPipeline.from_pretrained(str(folder), torch_dtype=dtype)
    pipeline.scheduler = EulerAncestralDiscreteScheduler.from_config(pipeline.scheduler.config, timestep_spacing="trailing")
    pipeline.set_progress_bar_config(disable=True)
    pipeline = pipeline.to(device)
    image = Image.fromarray(np.load(spec["image"]), "RGB")
    call = dict(guidance_scale=spec["guidance"], width=2 * spec["view_size"], height=3 * spec["view_size"], output_type="pt")
    clock = {"wall": time.perf_counter, "process": time.process_time}[spec.get("clock", "wall")]
    marks: list[float] = []

    def mark() -> None:
        _sync(device)
        marks.append(clock())

    if "callback_on_step_end" in inspect.signature(StableDiffusionPipeline.__call__).parameters:
        def on_step_end(pipe, step, timestep, kwargs):
            mark()
            return kwargs

        call["callback_on_step_end"] = on_step_end
    else:
        call["callback"] = lambda step, timestep, latents: mark()
        call["callback_steps"] = 1

    with torch.no_grad():
        pipeline(image, num_inference_steps=1, **call)  # warm-up
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        grid_times, step_times = [], []
        for _ in range(spec["repeats"]):
            marks.clear()
            _sync(device)
            start = clock()
            pipeline(image, num_inference_steps=spec["steps"], **call)
            _sync(device)
            grid_times.append(clock() - start)
            step_times.extend(np.diff(marks).tolist())
    import diffusers
    import transformers

    print(json.dumps(dict(
        per_step=float(np.median(step_times)) if step_times else float("nan"),
        per_grid=float(np.median(grid_times)),
        peak=_peak(device),
        diffusers=diffusers.__version__,
        transformers=transformers.__version__,
    )))


if __name__ == "__main__":
    main()
