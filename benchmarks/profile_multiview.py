"""Where a multi-view denoising step spends its time: ours vs upstream under torch.profiler.

    python benchmarks/profile_multiview.py --upstream .upstream/zero123plus     # on a GPU, real size

A diagnostic companion of ``bench_multiview.py`` (same random real-size weights): profiles a few steps
of each pipeline and prints, per pipeline, wall time per step, GPU kernel time per step and the
operators that take the most GPU time, so a gap between the two shows where it comes from.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_multiview import build, upstream_pipeline_in_process  # noqa: E402
from timing import DTYPES  # noqa: E402
from timing import sync as _sync  # noqa: E402

from partgen_models.multiview import MultiViewOptions, sample_grid  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402


def report(label: str, prof, wall: float, steps: int, rows: int) -> None:
    events = prof.key_averages()
    gpu_total = sum(e.self_device_time_total for e in events) / 1e3  # ms
    cpu_total = sum(e.self_cpu_time_total for e in events) / 1e3
    print(f"\n### {label}: wall {1e3 * wall / steps:.1f} ms/step, GPU kernels {gpu_total / steps:.1f} ms/step, "
          f"CPU ops {cpu_total / steps:.1f} ms/step\n")
    print(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "real"), default="real")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--view-size", type=int, default=320)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--upstream", type=Path, help="folder with upstream's pipeline.py (not committed)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    image = np.random.RandomState(0).randint(0, 256, (1, 512, 512, 3)).astype(np.uint8)
    options = MultiViewOptions(num_inference_steps=args.steps, view_size=args.view_size)
    with tempfile.TemporaryDirectory() as scratch:
        model, components, tokenizer, processors, ramping = build(args.size, dtype, device, Path(scratch))
        variants = {
            "ours (progress with preview)": Runtime(device=device, dtype=dtype, progress=lambda s, t, p: None),
            "ours (no progress callback)": Runtime(device=device, dtype=dtype),
        }
        for label, runtime in variants.items():
            sample_grid(model, image, options, runtime)  # warm-up at the same shapes
            _sync(device)
            with profile(activities=activities) as prof:
                start = time.perf_counter()
                sample_grid(model, image, options, runtime)
                _sync(device)
                wall = time.perf_counter() - start
            report(label, prof, wall, args.steps, args.rows)
        if args.upstream:
            from PIL import Image

            pipeline = upstream_pipeline_in_process(args.upstream, components, tokenizer, processors, ramping).to(device)
            call = dict(num_inference_steps=args.steps, width=2 * args.view_size, height=3 * args.view_size,
                        output_type="pt")
            pil = Image.fromarray(image[0])
            pipeline(pil, **call)
            _sync(device)
            with profile(activities=activities) as prof:
                start = time.perf_counter()
                pipeline(pil, **call)
                _sync(device)
                wall = time.perf_counter() - start
            report("upstream", prof, wall, args.steps, args.rows)


if __name__ == "__main__":
    main()
