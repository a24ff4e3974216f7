"""Segmentation stage benchmark: PartGen's multi-sample segmenter and the SAM 2.1 backend, random weights.

    python benchmarks/bench_segmentation.py                    # tiny smoke sizes on CPU, real sizes on GPU
    python benchmarks/bench_segmentation.py --partgen-size real --sam2-size large --dtype fp16

PartGen: the Zero123++ v1.2 architecture with the UNet's input channels doubled to 8 (866M UNet at
``--partgen-size real``), seeded random weights; ``segment_views`` (the function PartGen Segment
calls) draws N = 1, 5, 10 samples in one batch. Reported: seconds per sample (the whole call divided
by N), seconds per denoising step, peak memory.

SAM 2.1: ``Sam2VideoModel`` at a released size (``--sam2-size tiny|small|base-plus|large``, real
1024 px input) or the tiny test config, random weights, on a rendered procedural object (6 views +
the 512 px input image, the 7 frames the backend tracks through). Reported: image encoding per
frame, point decoding per frame (``points_per_side``² prompts, three masks each), propagation per
tracked object and frame (forward + backward around the views), and ``segment_views_sam2`` end to
end with ``--sam2-objects`` proposals. Random weights make SAM's masks arbitrary, so the number of
candidates, not their quality, is what the timings reflect; propagation cost does not depend on it.

Timings are medians over ``--repeats`` after one warm-up, between device synchronisations. Peak
memory is CUDA's max allocated on a GPU, the process's peak RSS on CPU (a high-water mark: rows are
run smallest first).
"""

from __future__ import annotations

import argparse
import sys
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

from partgen_models.evaluation.procedural import generate_object  # noqa: E402
from partgen_models.rendering import RenderCameras, render_parts  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402


def _peak_gib(device: torch.device) -> float:
    return _peak_bytes(device) / 2**30

def _timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def rendered_views(view_size: int, input_size: int = 512):
    """A procedural car at the Zero123++ v1.2 cameras (white background) with its 512 px input image."""
    obj = generate_object("car", 0)
    rendering = render_parts(obj.parts, RenderCameras.from_layout("zero123pp_v12", view_size))
    front = render_parts(obj.parts, RenderCameras.orbit([0.0], [0.0], size=input_size), normalization=rendering.normalization)
    return rendering.to_multiview("zero123pp_v12", input_image=front.images[0])


# ----------------------------------------------------------------------------------------------------
# PartGen


def build_partgen(size: str, dtype: torch.dtype, device: torch.device, scratch: Path):
    from transformers import CLIPTokenizer

    from partgen_models.multiview.zero123pp import FLAVOURS, Zero123PlusModel, encode_empty_prompt, pil_image_processor_class
    from partgen_models.segmentation.palette import PALETTE
    from partgen_models.segmentation.segmenter import PartGenSegmentationModel
    from partgen_models.testing.tiny_models import (
        CLIP_MEAN,
        CLIP_STD,
        REAL_ZERO123PP_CONFIGS,
        SCHEDULER_CONFIG,
        TINY_ZERO123PP_CONFIGS,
        build_components,
        processor_config,
        write_clip_tokenizer,
    )

    configs = dict(REAL_ZERO123PP_CONFIGS if size == "real" else TINY_ZERO123PP_CONFIGS)
    configs["unet"] = dict(configs["unet"], in_channels=8)  # noisy latent ++ object-grid latent (PartGen §3.2)
    components = build_components(configs, seed=0)
    write_clip_tokenizer(scratch / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(scratch / "tokenizer"))
    empty = encode_empty_prompt(components.pop("text_encoder"), tokenizer)  # only the empty prompt is needed
    for name in components:
        components[name] = components[name].to(device=device, dtype=dtype).eval().requires_grad_(False)
    processor = pil_image_processor_class()
    diffusion = Zero123PlusModel(
        unet=components["unet"], vae=components["vae"], vision_encoder=components["vision_encoder"],
        empty_prompt_embeds=empty.to(device, dtype), ramping=torch.linspace(0, 1, 77, device=device, dtype=dtype)[:, None],
        feature_extractor_clip=processor(**processor_config(224, CLIP_MEAN, CLIP_STD)),
        feature_extractor_vae=processor(**processor_config(512, [0.5] * 3, [0.8] * 3)),
        scheduler_config=SCHEDULER_CONFIG, flavour=FLAVOURS["partgen-segmentation"], name=f"random-{size}",
    )
    return PartGenSegmentationModel(diffusion, PALETTE)


def bench_partgen(args, device, dtype, scratch) -> list[tuple]:
    from partgen_models.segmentation.segment import SegmentationOptions, segment_views

    model = build_partgen(args.partgen_size, dtype, device, scratch)
    views = rendered_views(args.view_size)
    marks: list[float] = []

    def progress(step, total, preview):
        _sync(device)
        marks.append(time.perf_counter())

    runtime = Runtime(device=device, dtype=dtype, progress=progress)
    segment_views(model, views, SegmentationOptions(num_samples=1, num_inference_steps=1, guidance_scale=args.guidance), runtime)
    rows = []
    for samples in args.samples:
        options = SegmentationOptions(num_samples=samples, num_inference_steps=args.steps, guidance_scale=args.guidance)
        _reset_peak(device)
        marks.clear()
        seconds, result = _timed(lambda: segment_views(model, views, options, runtime), device, args.repeats)
        per_step = float(np.median(np.diff(marks))) if len(marks) > 1 else float("nan")
        rows.append((samples, seconds / samples, seconds, per_step, _peak_gib(device), result.num_proposals))
        print(f"partgen N={samples}: {seconds:.2f} s", file=sys.stderr)
    return rows


# ----------------------------------------------------------------------------------------------------
# SAM 2.1


def build_sam2(size: str, dtype: torch.dtype, device: torch.device):
    from transformers import Sam2VideoConfig, Sam2VideoModel

    from partgen_models.segmentation.sam2_backend import Sam2Segmenter, sam2_config_kwargs
    from partgen_models.testing.tiny_models import TINY_SAM2_CONFIG, randomize_

    kwargs = TINY_SAM2_CONFIG if size == "test-tiny" else sam2_config_kwargs(size)
    torch.manual_seed(0)
    video = Sam2VideoModel(Sam2VideoConfig(**kwargs))
    randomize_(video, torch.Generator().manual_seed(0))
    return Sam2Segmenter(video.to(device=device, dtype=dtype).eval().requires_grad_(False), f"random-{size}")


def bench_sam2(args, device, dtype) -> tuple[list[tuple], dict]:
    from partgen_models.segmentation.sam2_backend import (
        Sam2FrameEngine,
        Sam2Options,
        frame_sequence,
        input_alpha,
        query_points,
        segment_views_sam2,
    )

    model = build_sam2(args.sam2_size, dtype, device)
    views = rendered_views(args.view_size)
    sequence = frame_sequence(views)
    frames = [views.input_image if f == -1 else views.images[f] for f in sequence]
    runtime = Runtime(device=device, dtype=dtype)
    frame_count = len(frames)
    with torch.inference_mode():
        Sam2FrameEngine(model, frames[:1], runtime)  # warm-up
        _reset_peak(device)
        encode, engine = _timed(lambda: Sam2FrameEngine(model, frames, runtime), device, args.repeats)
        input_index = sequence.index(-1)
        alpha = input_alpha(frames[input_index]) > 0.5
        points = query_points(alpha, alpha, args.points_per_side)
        decode, (masks, _) = _timed(lambda: engine.candidates(input_index, points), device, args.repeats)
        seeds = masks[: args.sam2_objects]
        if seeds.shape[0] < args.sam2_objects:  # random weights may reject points; pad with object masks
            extra = torch.zeros(args.sam2_objects - seeds.shape[0], *engine.mask_size, dtype=torch.bool)
            extra[:, : engine.mask_size[0] // 2] = True
            seeds = torch.cat([seeds, extra])
        track, _ = _timed(lambda: engine.track(input_index, seeds), device, args.repeats)
    options = Sam2Options(points_per_side=args.points_per_side, max_proposals=args.sam2_objects)
    end_to_end, result = _timed(lambda: segment_views_sam2(model, views, options, runtime), device, args.repeats)
    row = (args.sam2_size, sum(p.numel() for p in model.parameters()) / 1e6, model.image_size, encode / frame_count,
           decode, points.shape[0], track / (seeds.shape[0] * frame_count), seeds.shape[0], end_to_end,
           result.num_proposals, _peak_gib(device))
    print(f"sam2 {args.sam2_size}: end to end {end_to_end:.2f} s", file=sys.stderr)
    return [row], {"frames": frame_count}


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16" if cuda else "fp32")
    parser.add_argument("--partgen-size", choices=("tiny", "real", "skip"), default="real" if cuda else "tiny")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--steps", type=int, default=28 if cuda else 4)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--view-size", type=int, default=320 if cuda else 64)
    parser.add_argument("--sam2-size", choices=("test-tiny", "tiny", "small", "base-plus", "large", "skip"),
                        default="large" if cuda else "test-tiny")
    parser.add_argument("--sam2-objects", type=int, default=16 if cuda else 4, help="proposals tracked")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3 if cuda else 1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import tempfile

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak = "peak VRAM GiB" if device.type == "cuda" else "peak RSS GiB"
    if args.partgen_size != "skip":
        with tempfile.TemporaryDirectory() as scratch:
            rows = bench_partgen(args, device, dtype, Path(scratch))
        print(f"\nPartGen segmenter (Zero123++ v1.2, UNet in_channels 8), {args.partgen_size} random weights, "
              f"{args.dtype}, {name}, {args.steps} steps, guidance {args.guidance}, {args.view_size} px views, "
              f"median of {args.repeats}\n")
        print(f"| samples N (one batch) | s/sample | s total | s/step | {peak} | proposals |")
        print("|---:|---:|---:|---:|---:|---:|")
        for samples, per_sample, total, per_step, peak_gib, proposals in rows:
            print(f"| {samples} | {per_sample:.3f} | {total:.2f} | {per_step:.3f} | {peak_gib:.2f} | {proposals} |")
    if args.sam2_size != "skip":
        rows, info = bench_sam2(args, device, dtype)
        print(f"\nSAM 2.1 backend, random weights, {args.dtype}, {name}, {info['frames']} frames (6 views of "
              f"{args.view_size} px + the 512 px input), {args.points_per_side}² query grid, median of {args.repeats}\n")
        print(f"| size | params M | input px | encode s/frame | decode s/frame (points) | track s/object/frame | "
              f"end to end s (objects → kept) | {peak} |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for size, params, px, encode, decode, points, track, objects, total, kept, peak_gib in rows:
            print(f"| {size} | {params:.1f} | {px} | {encode:.3f} | {decode:.3f} ({points}) | {track:.4f} | "
                  f"{total:.2f} ({objects} → {kept}) | {peak_gib:.2f} |")


if __name__ == "__main__":
    main()
