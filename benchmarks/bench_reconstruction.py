"""Reconstruction benchmark: encoder+transformer per part (batched vs sequential) and extraction.

    python benchmarks/bench_reconstruction.py                    # tiny smoke size on CPU, real size on GPU
    python benchmarks/bench_reconstruction.py --size real --variant mesh --resolutions 128 256 --parts 1 4 8

Real size is InstantMesh large (mesh or NeRF) with seeded random weights: timings, not shapes.
Extraction is timed on the random model's own field; its time depends on how much surface the field
has, so each row prints the face count it produced. Prints a markdown table: seconds per part, peak
memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partgen_models.cameras import LAYOUTS  # noqa: E402
from partgen_models.reconstruction import reconstruct as rec  # noqa: E402
from partgen_models.reconstruction.lrm import LargeReconstructionModel  # noqa: E402
from partgen_models.reconstruction.options import ReconstructionOptions  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402
from partgen_models.testing.tiny_instantmesh import REAL_LRM_CONFIGS, TINY_LRM_CONFIGS  # noqa: E402
from partgen_models.testing.tiny_models import randomize_  # noqa: E402
from partgen_models.views import PartViews  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(fn, device):
    _reset(device)
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, _peak_gib(device), result


def _views(parts: int) -> PartViews:
    layout = LAYOUTS["zero123pp_v12"]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(parts, 6, 320, 320, 3, generator=generator)
    alpha = torch.ones(parts, 6, 320, 320)
    return PartViews(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, (1.0, 1.0, 1.0),
                     tuple(f"part_{i}" for i in range(parts)))


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "real"), default="real" if cuda else "tiny")
    parser.add_argument("--variant", choices=("mesh", "nerf"), default="mesh")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16" if cuda else "fp32")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 4, 8] if cuda else [1, 2])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256] if cuda else [64])
    parser.add_argument("--memory-budget-mb", type=int, default=4096 if cuda else 512)
    args = parser.parse_args()

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = (REAL_LRM_CONFIGS[f"{args.variant}-large"] if args.size == "real" else TINY_LRM_CONFIGS[args.variant])
    model = randomize_(LargeReconstructionModel(config), torch.Generator().manual_seed(0), scale=0.5)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    runtime = Runtime(device=device, dtype=dtype)
    options = ReconstructionOptions(memory_budget_mb=args.memory_budget_mb)
    rows = []
    with torch.no_grad():
        warm_images, cameras = rec.prepare_views(_views(1), tuple(range(6)))
        rec.encode_parts(model, warm_images, cameras, options, runtime)
        for parts in args.parts:
            images, cameras = rec.prepare_views(_views(parts), tuple(range(6)))
            batched, peak_b, planes = _timed(lambda: rec.encode_parts(model, images, cameras, options, runtime), device)
            sequential, peak_s, _ = _timed(
                lambda: [rec.encode_parts(model, images[i : i + 1], cameras, options, runtime) for i in range(parts)], device
            )
            rows.append((f"encoder+transformer, P={parts}, batched", batched / parts, peak_b))
            rows.append((f"encoder+transformer, P={parts}, sequential", sequential / parts, peak_s))
        extract = rec.extract_flexicubes if args.variant == "mesh" else rec.extract_marching_cubes
        for resolution in args.resolutions:
            seconds, peak, (vertices, faces) = _timed(
                lambda: extract(model, planes[:1], resolution, options, runtime), device
            )
            rows.append((f"extraction at {resolution} ({faces.shape[0]} faces)", seconds, peak))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak_label = "peak VRAM GiB" if device.type == "cuda" else "process peak RSS GiB"
    print(f"\nInstantMesh {args.variant}, {args.size} random weights, {args.dtype}, {name}\n")
    print(f"| step | s/part | {peak_label} |")
    print("|---|---:|---:|")
    for label, seconds, peak in rows:
        print(f"| {label} | {seconds:.4f} | {peak:.2f} |")


if __name__ == "__main__":
    main()
