"""Per denoising step, the operators of a Zero123++ multi-view step that make a GPU wait: ours vs upstream.

    python benchmarks/count_multiview_step_ops.py                                  # tiny, CPU
    python benchmarks/count_multiview_step_ops.py --upstream .upstream/zero123plus/diffusers-support

Host-device synchronisations cost nothing on a CPU, so a CPU timing cannot show them; this counts them
instead. Every ATen operator is recorded (``TorchDispatchMode``, same tiny random weights as
``bench_multiview.py``) and counted between the end of the first denoising step and the end of the last
(each pipeline's own step callback), divided by the steps in between: what the loop does each step, set-up
and decoding left out (our noise, drawn ahead a window of steps at a time, is drawn before step 1 ends).
Categories, and what each does on a GPU:

- ``nonzero`` / ``_local_scalar_dense`` (``.item()``): the host waits for the device (the scheduler's
  timestep-index lookup in ``add_noise``/``scale_model_input``).
- CPU-generator draws (``randn``/``normal_`` given a CPU ``torch.Generator``): the noise is made on the host
  and copied to the device from pageable memory, which synchronises the stream.
- ``index`` with a Python list (the scheduler's ``sigmas[step_indices]``): the index list is copied to the
  device, the same kind of pageable copy.
- ``_to_copy``: dtype or device casts (the scheduler's ``sigmas.to(device, dtype)`` each call among them).

Upstream (SUDO-AI-3D/zero123plus ``diffusers-support/pipeline.py``, a local copy that is never committed)
runs in this process on the installed diffusers when ``--upstream`` is given. Prints one table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_multiview import build, upstream_pipeline_in_process  # noqa: E402

from partgen_models.multiview import MultiViewOptions, sample_grid  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402

CATEGORIES = ("host waits (nonzero, item)", "CPU-generator noise draws", "index by a list", "dtype/device casts",
              "all ATen ops")


class OpCounter(TorchDispatchMode):
    """Counts dispatched operators by the categories above, from ``start()`` to ``stop()``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()
        self.steps = -1  # step ends seen, less the first

    def step_end(self) -> None:
        self.steps += 1
        if self.steps == 0:
            self.counts.clear()
        else:
            self.at_last_step = Counter(self.counts)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.counts["all ATen ops"] += 1
        if name in ("nonzero", "_local_scalar_dense", "item"):
            self.counts["host waits (nonzero, item)"] += 1
        generator = kwargs.get("generator")
        if name in ("randn", "normal_", "normal") and generator is not None and generator.device.type == "cpu":
            self.counts["CPU-generator noise draws"] += 1
        if name == "index":
            self.counts["index by a list"] += 1
        if name == "_to_copy":
            self.counts["dtype/device casts"] += 1
        return func(*args, **kwargs)


def per_step(run, steps: int) -> dict[str, float]:
    """``run(steps, counter)`` samples ``steps`` steps, calling ``counter.step_end()`` after each."""
    run(2, OpCounter())  # warm-up (lazy imports, caches)
    counter = OpCounter()
    with counter:
        run(1 + steps, counter)
    return {c: counter.at_last_step[c] / counter.steps for c in CATEGORIES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--view-size", type=int, default=64)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp16",
                        help="fp16 (the GPU's precision; slow on a CPU but the tiny model is small) shows the casts")
    parser.add_argument("--upstream", type=Path, help="folder with upstream's pipeline.py (not committed)")
    args = parser.parse_args()
    device, dtype = torch.device("cpu"), {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    image = np.random.RandomState(0).randint(0, 256, (1, 512, 512, 3)).astype(np.uint8)
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        model, components, tokenizer, processors, ramping = build("tiny", dtype, device, Path(scratch))

        def ours(steps: int, counter: OpCounter) -> None:
            options = MultiViewOptions(num_inference_steps=steps, guidance_scale=args.guidance, view_size=args.view_size)
            runtime = Runtime(device=device, dtype=dtype, progress=lambda step, total, preview: counter.step_end())
            sample_grid(model, image, options, runtime)

        rows["ours"] = per_step(ours, args.steps)
        if args.upstream:
            from PIL import Image

            pipeline = upstream_pipeline_in_process(args.upstream, components, tokenizer, processors, ramping)
            pil = Image.fromarray(image[0])

            def upstream(steps: int, counter: OpCounter) -> None:
                def on_step_end(pipe, step, timestep, tensors):
                    counter.step_end()
                    return tensors

                pipeline(pil, num_inference_steps=steps, guidance_scale=args.guidance, width=2 * args.view_size,
                         height=3 * args.view_size, output_type="pt", callback_on_step_end=on_step_end)

            rows["upstream"] = per_step(upstream, args.steps)
    print(f"\nOperators per denoising step (tiny random Zero123++, {args.dtype}, CPU, guidance {args.guidance}, "
          f"steps 2..{1 + args.steps} counted, {2 * args.view_size}x{3 * args.view_size} grid)\n")
    print("| pipeline | " + " | ".join(CATEGORIES) + " |")
    print("|---|" + "---:|" * len(CATEGORIES))
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[c]:.0f}" for c in CATEGORIES) + " |")


if __name__ == "__main__":
    main()
