"""Host-side work of one multi-view denoising step at real-size shapes, by intra-op thread count.

    OMP_NUM_THREADS is ignored: the script sets torch's thread count itself.
    python benchmarks/bench_step_host_work.py                 # 28 steps, 640x960 grid, batch 1, guidance on

What the sampler loop asks of the CPU, with the GPU left waiting until it is done (the loop used to
copy the latents to the host for the preview, a synchronisation, then build the preview there):

- ``preview on the host``: :func:`latent_preview` on host latents (``[1,4,120,80]``), what every step of
  the old loop ran after its ``.cpu()``; the loop now runs it on the device and copies the small image
  back without waiting (``StepPreviews``).
- ``noise, per step``: one step's reference (``[2,4,64,64]`` float32) and ancestral (``[1,4,120,80]`` in
  the model's fp16) draws from CPU generators, which the old loop made inside each step, each followed
  by a copy to the device that waited for it; the loop now draws them in one window before step 1
  (``StepNoise``) and copies them once, so the same draws overlap the conditioning encode instead.

Each row is the median of ``--repeats`` timings (wall clock; the values are host tensors, so no GPU is
needed). Intra-op threads matter because small parallel CPU ops on a busy host wait for their slowest
thread; compare the rows at 1 thread and at this machine's core count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partgen_models.multiview.sampler import latent_preview  # noqa: E402


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--view-size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    args = parser.parse_args()
    h, w = 3 * args.view_size // 8, 2 * args.view_size // 8
    latents = torch.randn((1, 4, h, w), generator=torch.Generator().manual_seed(0)).half()
    generator = torch.Generator().manual_seed(1)

    def noise_step() -> None:
        torch.randn((2, 4, 64, 64), generator=generator, dtype=torch.float32).half()
        torch.randn((1, 4, h, w), generator=generator, dtype=torch.float16)

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows.append((threads, timed(lambda: latent_preview(latents), args.repeats), timed(noise_step, args.repeats)))
    print(f"\nHost-side work of one denoising step, {2 * args.view_size}x{3 * args.view_size} grid, median of "
          f"{args.repeats}, {os.cpu_count()} CPUs\n")
    print("| intra-op threads | preview on the host ms | noise, per step ms |")
    print("|---:|---:|---:|")
    for threads, preview, noise in rows:
        print(f"| {threads} | {1e3 * preview:.2f} | {1e3 * noise:.2f} |")


if __name__ == "__main__":
    main()
