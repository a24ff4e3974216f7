"""Part-completion benchmark: PartGen's completion network, P parts batched vs one part at a time.

    python benchmarks/bench_completion.py                        # tiny smoke size on CPU, real size on GPU
    python benchmarks/bench_completion.py --size real --dtype fp16 --parts 1 4 8

Calls ``complete_parts`` (what PartGen Complete Parts calls) on a ``PartGenCompletionModel`` built in
memory around seeded random components: at --size real, Zero123++ v1.2's architecture with the UNet's
``conv_in`` widened to 13 channels (noisy latent + masked part + context + mask; UNet 866M, VAE 84M,
CLIP-H vision 632M parameters), so the timings are those of real weights; the images mean nothing.
Inputs are synthetic: a disc-shaped object in the 6 views, cut into P horizontal bands (the parts).

"batched" denoises the P parts together (``max_batch=P``, the default behaviour up to 8 parts);
"sequential" runs them one at a time (``max_batch=1``), what P separate runs would cost. s/step is the
time to advance all P parts by one denoising step (median step interval between progress callbacks,
times the number of batches); s/call is the whole call (encoding, sampling, decoding). Peak memory is
CUDA's peak allocation per row on GPU, the process's peak RSS so far on CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import DTYPES  # noqa: E402
from timing import peak_bytes as _peak_bytes  # noqa: E402
from timing import reset_peak as _reset_peak  # noqa: E402
from timing import sync as _sync  # noqa: E402

from partgen_models.cameras import LAYOUTS  # noqa: E402
from partgen_models.completion.complete import CompletionOptions, complete_parts  # noqa: E402
from partgen_models.completion.completer import PartGenCompletionModel  # noqa: E402
from partgen_models.multiview.zero123pp import FLAVOURS, Zero123PlusModel, encode_empty_prompt  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402
from partgen_models.segmentation.select import PartMasks  # noqa: E402
from partgen_models.testing.tiny_models import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    REAL_ZERO123PP_CONFIGS,
    SCHEDULER_CONFIG,
    TINY_ZERO123PP_CONFIGS,
    build_components,
    processor_config,
    write_clip_tokenizer,
)
from partgen_models.views import MultiView  # noqa: E402

LAYOUT = "zero123pp_v12"


def build_completer(size: str, dtype: torch.dtype, device: torch.device, scratch: Path) -> PartGenCompletionModel:
    """A completion model around random components: the 13-channel UNet on a Zero123++ v1.2 base."""
    from transformers import CLIPTokenizer

    from partgen_models.multiview.zero123pp import pil_image_processor_class

    base = REAL_ZERO123PP_CONFIGS if size == "real" else TINY_ZERO123PP_CONFIGS
    configs = dict(base, unet=dict(base["unet"], in_channels=13))
    components = build_components(configs, seed=0)
    write_clip_tokenizer(scratch / "tokenizer")  # byte-level vocabulary: enough for the empty prompt
    tokenizer = CLIPTokenizer.from_pretrained(str(scratch / "tokenizer"))
    image_processor = pil_image_processor_class()
    for name in components:
        components[name] = components[name].to(device=device, dtype=dtype).eval().requires_grad_(False)
    diffusion = Zero123PlusModel(
        unet=components["unet"],
        vae=components["vae"],
        vision_encoder=components["vision_encoder"],
        empty_prompt_embeds=encode_empty_prompt(components["text_encoder"], tokenizer).to(device, dtype),
        ramping=torch.linspace(0.0, 1.0, 77, device=device, dtype=dtype)[:, None],
        feature_extractor_clip=image_processor(**processor_config(224, CLIP_MEAN, CLIP_STD)),
        feature_extractor_vae=image_processor(**processor_config(512, [0.5] * 3, [0.8] * 3)),
        scheduler_config=SCHEDULER_CONFIG,
        flavour=FLAVOURS["partgen-completion"],
        name=f"random-completion-{size}",
    )
    return PartGenCompletionModel(diffusion, scratch)


def synthetic_inputs(view_size: int, parts: int) -> tuple[MultiView, PartMasks]:
    """A disc-shaped object on white in every view, cut into ``parts`` horizontal bands."""
    layout = LAYOUTS[LAYOUT]
    coords = (torch.arange(view_size) + 0.5) / view_size - 0.5
    disc = (coords[:, None] ** 2 + coords[None, :] ** 2) < 0.35**2  # (H, W)
    generator = torch.Generator().manual_seed(0)
    colour = torch.rand(layout.rows * layout.cols, 1, 1, 3, generator=generator)
    images = torch.where(disc[None, ..., None], colour.expand(-1, view_size, view_size, 3), torch.ones(3))
    alpha = disc[None].float().expand(layout.rows * layout.cols, -1, -1).contiguous()
    views = MultiView(images, alpha, layout.camera_to_world().float(), layout.fov_deg, LAYOUT, (1.0, 1.0, 1.0),
                      input_image=images[0].clone())
    rows = disc.any(1).nonzero().flatten()
    edges = torch.linspace(int(rows.min()), int(rows.max()) + 1, parts + 2 if parts == 1 else parts + 1).round().long()
    masks = torch.zeros(parts, *alpha.shape, dtype=torch.bool)
    for p in range(parts):
        band = torch.zeros(view_size, dtype=torch.bool)
        band[edges[p] : edges[p + 1]] = True
        masks[p] = (disc & band[:, None])[None]
    names = tuple(f"part_{p:02d}" for p in range(parts))
    return views, PartMasks(masks, names, ((0.5, 0.5, 0.5),) * parts, LAYOUT)


def time_completion(model, views, parts, options: CompletionOptions, device, repeats: int):
    marks: list[tuple[int, float]] = []

    def progress(step, total, preview):
        _sync(device)
        marks.append((step, time.perf_counter()))

    runtime = Runtime(device=device, dtype=model.dtype, progress=progress)
    _reset_peak(device)
    calls, intervals = [], []
    for _ in range(repeats):
        marks.clear()
        _sync(device)
        start = time.perf_counter()
        complete_parts(model, views, parts, options, runtime)
        _sync(device)
        calls.append(time.perf_counter() - start)
        # intervals between consecutive steps of one batch (a new batch restarts at step 1)
        intervals += [t1 - t0 for (s0, t0), (s1, t1) in zip(marks, marks[1:]) if s1 == s0 + 1]
    batches = -(-parts.num_parts // options.max_batch)
    step = float(np.median(intervals)) * batches if intervals else float("nan")
    return step, float(np.median(calls)), _peak_bytes(device)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "real"), default="real" if cuda else "tiny")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16" if cuda else "fp32")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=10 if cuda else 3)
    parser.add_argument("--view-size", type=int, default=320 if cuda else 64)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=2 if cuda else 1)
    args = parser.parse_args()

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        model = build_completer(args.size, dtype, device, Path(scratch))
        views, parts = synthetic_inputs(args.view_size, 1)
        warm = CompletionOptions(num_inference_steps=1, guidance_scale=args.guidance, max_batch=1)
        complete_parts(model, views, parts, warm, Runtime(device=device, dtype=dtype))  # warm-up
        for count in args.parts:
            views, parts = synthetic_inputs(args.view_size, count)
            for schedule, max_batch in (("batched", count), ("sequential", 1)):
                if count == 1 and schedule == "sequential":
                    continue  # the same run as batched
                options = CompletionOptions(num_inference_steps=args.steps, guidance_scale=args.guidance, max_batch=max_batch)
                rows.append((count, schedule) + time_completion(model, views, parts, options, device, args.repeats))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak = "peak VRAM GiB" if device.type == "cuda" else "peak RSS GiB (process, so far)"
    print(f"\nPartGen completion (complete_parts), {args.size} random weights (13-channel UNet), {args.dtype}, {name}, "
          f"{args.steps} steps, guidance {args.guidance}, {2 * args.view_size}x{3 * args.view_size} grid, "
          f"median of {args.repeats}\n")
    print(f"| parts | schedule | s/step (all parts) | s/step per part | s/call | {peak} | sequential / batched |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    batched = {}
    for count, schedule, per_step, per_call, memory in rows:
        if schedule == "batched":
            batched[count] = per_step
        ratio = f"{per_step / batched[count]:.2f}x" if schedule == "sequential" and count in batched else ""
        print(f"| {count} | {schedule} | {per_step:.4f} | {per_step / count:.4f} | {per_call:.3f} | "
              f"{memory / 2**30:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
