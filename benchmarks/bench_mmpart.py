"""MMPart path benchmark: time and peak memory for P parts after the edit step.

    python benchmarks/bench_mmpart.py                    # tiny smoke size on CPU (real size on a GPU)
    python benchmarks/bench_mmpart.py --size real --dtype fp16 --steps 10 --resolution 64

What runs is :func:`partgen_models.assembly.mmpart.run_mmpart`'s steps, one row each, on seeded random
weights (Zero123++ v1.2's and InstantMesh large's architectures at ``--size real``; the test ones at
tiny): timings, not shapes. Inputs are a procedural object's first P parts (default 5) rendered from the
input camera, each part alone as a perfect edit model returns it (the edit model itself is excluded).

* ``isolation``: collecting the P images into the named batch (foreground, checks, visible masks);
* ``views, P grids batched``: one Zero123++ sampling batch of P grids, ``--steps`` steps;
* ``reconstruction, P parts batched``: encoder + transformer batched over parts, then per part surface
  extraction at ``--resolution`` and vertex colours. The random SDF is one-signed, so its head's bias is
  first shifted by minus the field's median on part 0 (as ``bench_reconstruction.py`` does); the field then
  crosses zero all through the volume, far more surface than a real object (a worst case);
* ``reference``: the whole input image's grid + reconstruction (placement's depth reference);
* ``placement``: silhouette matching, depth from the reference, interpenetration (``--render-size``);
* the planner (a VLM writing the isolation prompts) is not timed here: it lives on the i9-planner
  branch and depends on the VLM chosen; time it with that branch's tools.

Peak memory: ``torch.cuda.max_memory_allocated`` since a reset at the step's start (weights included),
or on CPU the process's peak RSS so far (a high-water mark over all earlier steps). One run per step
after a one-step warm-up of the multi-view model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import DTYPES, peak_bytes, reset_peak, sync  # noqa: E402

from partgen_models.assembly.isolation import collect_isolated_parts  # noqa: E402
from partgen_models.assembly.mmpart import part_views  # noqa: E402
from partgen_models.assembly.placement import AssemblyFrame, PlacementOptions, place_parts  # noqa: E402
from partgen_models.evaluation.placement_eval import prepare_placement_sample  # noqa: E402
from partgen_models.evaluation.procedural import generate_object  # noqa: E402
from partgen_models.multiview import MultiViewOptions, generate_views  # noqa: E402
from partgen_models.reconstruction import reconstruct as rec  # noqa: E402
from partgen_models.reconstruction.lrm import LargeReconstructionModel  # noqa: E402
from partgen_models.reconstruction.options import ReconstructionOptions  # noqa: E402
from partgen_models.rendering.renderer import Normalization, render_parts  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402
from partgen_models.testing.tiny_instantmesh import REAL_LRM_CONFIGS, TINY_LRM_CONFIGS  # noqa: E402
from partgen_models.testing.tiny_models import randomize_  # noqa: E402
from partgen_models.views import PartViews  # noqa: E402


def _inputs(parts: int, size: int):
    """The input image and each part alone, from a procedural chair's first ``parts`` parts."""
    source = generate_object("chair", 0).parts
    if parts > len(source):
        source = source + generate_object("robot", 0).parts
    chosen = list(source[:parts])
    sample = prepare_placement_sample("bench", chosen, size)
    whole = render_parts(list(sample.truth), AssemblyFrame(size, size, 30.0).cameras(size), normalization=Normalization())
    images = [sample.isolated.images[i : i + 1] for i in range(parts)]
    masks = [sample.isolated.masks[i : i + 1] for i in range(parts)]
    return whole.images, list(sample.isolated.names), images, masks


def _center_sdf(model: LargeReconstructionModel, planes: torch.Tensor, resolution: int) -> float:
    vertices = rec._cached_grid(resolution, str(planes.device)).vertices
    sdf = [model.decoder.sdf_and_deformation(rec._features(model, planes, chunk))[0].float()
           for chunk in vertices.split(2**18)]
    median = float(torch.cat(sdf).median())
    model.decoder.net_sdf[-1].bias -= median
    return median


def _timed(rows: list, label: str, device: torch.device, fn):
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    rows.append((label, time.perf_counter() - start, peak_bytes(device) / 2**30))
    return result


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "real"), default="real" if cuda else "tiny")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16" if cuda else "fp32")
    parser.add_argument("--parts", type=int, default=5, help="number of parts (1..16)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: tiny 2, real 10)")
    parser.add_argument("--view-size", type=int, default=None, help="pixels per view (default: tiny 64, real 320)")
    parser.add_argument("--resolution", type=int, default=None, help="extraction grid (default: tiny 32, real 64)")
    parser.add_argument("--image-size", type=int, default=256, help="input image side in pixels")
    parser.add_argument("--render-size", type=int, default=None, help="placement renders (default: tiny 64, real 256)")
    parser.add_argument("--memory-budget-mb", type=int, default=4096 if cuda else 512)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if not 1 <= args.parts <= 16:
        parser.error(f"--parts must be within 1..16, got {args.parts}")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    real = args.size == "real"
    steps = args.steps or (10 if real else 2)
    view_size = args.view_size or (320 if real else 64)
    resolution = args.resolution or (64 if real else 32)
    render_size = args.render_size or (256 if real else 64)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]

    from bench_multiview import build as build_multiview

    with tempfile.TemporaryDirectory() as scratch:
        multiview = build_multiview(args.size, dtype, device, Path(scratch))[0]
    config = REAL_LRM_CONFIGS["mesh-large"] if real else TINY_LRM_CONFIGS["mesh"]
    lrm = randomize_(LargeReconstructionModel(config), torch.Generator().manual_seed(0), scale=0.5)
    lrm = lrm.to(device=device, dtype=dtype).eval().requires_grad_(False)
    runtime = Runtime(device=device, dtype=dtype)
    mv_options = MultiViewOptions(num_inference_steps=steps, view_size=view_size, seed=0)
    rec_options = ReconstructionOptions(resolution=resolution, memory_budget_mb=args.memory_budget_mb)
    placement_options = PlacementOptions(render_size=render_size)
    image, names, images, masks = _inputs(args.parts, args.image_size)

    rows: list = []
    with torch.no_grad():
        generate_views(multiview, images[0], masks[0], MultiViewOptions(num_inference_steps=1, view_size=view_size),
                       runtime, "foreground")  # warm-up
        isolated = _timed(rows, "isolation", device,
                          lambda: collect_isolated_parts(names, image.shape[1:3], images, masks, image))
        views = _timed(rows, f"views, {args.parts} grids batched ({steps} steps, {view_size} px)", device,
                       lambda: generate_views(multiview, isolated.white_composites(), isolated.masks, mv_options, runtime,
                                              "foreground"))
        batch = part_views(views, isolated.names)
        first, cameras = rec.prepare_views(PartViews(batch.images[:1], batch.alpha[:1], batch.c2w, batch.fov_deg,
                                                     batch.layout, batch.background, batch.names[:1]), tuple(range(6)))
        shift = _center_sdf(lrm, rec.encode_parts(lrm, first, cameras, rec_options, runtime), resolution)
        parts = _timed(rows, f"reconstruction, {args.parts} parts batched (grid {resolution})", device,
                       lambda: rec.reconstruct_parts(lrm, batch, rec_options, runtime))
        whole = _timed(rows, "reference: whole-object grid", device,
                       lambda: generate_views(multiview, image, None, mv_options, runtime)[0])
        reference = _timed(rows, "reference: whole-object reconstruction", device,
                           lambda: rec.reconstruct_parts(lrm, PartViews.whole_object(whole), rec_options, runtime))
        placed = _timed(rows, f"placement ({render_size} px renders, reference depth)", device,
                        lambda: place_parts(parts, isolated, [v.crop_box for v in views], placement_options, reference,
                                            whole.crop_box, None, runtime))
    total = sum(seconds for _, seconds, _ in rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak_label = "peak VRAM GiB" if device.type == "cuda" else "process peak RSS GiB"
    faces = [p.num_faces for p in placed.parts]
    print(f"\nMMPart after the edit step, {args.parts} parts, {args.size} random weights, {args.dtype}, {name}; "
          f"SDF bias shifted by {-shift:.3g}; faces per part {faces}\n")
    print(f"| step | s | {peak_label} |")
    print("|---|---:|---:|")
    for label, seconds, peak in rows:
        print(f"| {label} | {seconds:.3f} | {peak:.2f} |")
    print(f"| total (planner and edit model excluded) | {total:.3f} | {max(p for _, _, p in rows):.2f} |")
    print("\nPlacement IoU per part: " + ", ".join(f"{r.name} {r.silhouette_iou:.2f}" for r in placed.report))


if __name__ == "__main__":
    main()
