"""Reconstruction benchmark: encoder+transformer per part (batched vs sequential) and extraction.

    python benchmarks/bench_reconstruction.py                    # tiny smoke size on CPU, real size on GPU
    python benchmarks/bench_reconstruction.py --size real --variant mesh --resolutions 128 256 --parts 1 4 8

Against upstream InstantMesh (TencentARC/InstantMesh; never committed) on the same seeded weights:

    git -C <mirror of TencentARC/InstantMesh> archive HEAD -- src configs run.py | tar -x -C /tmp/instantmesh_src
    pip install --no-deps --target /tmp/im_env transformers==4.34.1 tokenizers==0.14.1 \
        huggingface_hub==0.17.3 PyMCubes xatlas
    python benchmarks/bench_reconstruction.py --upstream /tmp/instantmesh_src --upstream-env /tmp/im_env \
        --size tiny --variant mesh --parts 1 2 --resolutions 32 64 --repeats 3 --threads 1
    python benchmarks/bench_reconstruction.py --upstream /tmp/instantmesh_src --upstream-env /tmp/im_env \
        --size tiny --variant nerf --parts 1 2 --resolutions 32 64 --repeats 3 --threads 1
    python benchmarks/bench_reconstruction.py --upstream /tmp/instantmesh_src --upstream-env /tmp/im_env \
        --size real --variant mesh --parts 1 --resolutions 64 --threads 1     # CPU: ~6 min, < 5.5 GiB

(``--threads 1`` because on a shared 2-core machine two-thread runs stall unpredictably; on an idle
machine or a GPU leave it out.)

Weights: InstantMesh large's architecture (--size real; mesh or NeRF) or the tiny test one, with
seeded random weights (``randomize_``, seed 0, scale 0.5): timings, not shapes. Inputs: P parts of 6
random 320 px views on the zero123pp_v12 cameras.

What is timed (wall clock after one warm-up encode of one part; CUDA synchronised):

* ``encoder+transformer, P=p, batched``: ``encode_parts`` on all p parts, which batches as many parts
  as ``--memory-budget-mb`` allows (real size: 2 per batch at the CPU default 512 MB, 22 at 4096 MB;
  tiny: all); ``sequential``: p calls of one part. Seconds are divided by p.
* ``extraction at R``: part 0's triplanes (from the largest P) → surface: FlexiCubes on the R^3 grid
  (mesh: SDF/deformation at every grid vertex, weights only for surface cubes) or marching cubes on an
  R^3 density grid (NeRF; iso-level ``--density-threshold``, default upstream's 10, which the random
  field may never reach: 0 faces). The time depends on how much surface the random field has; each row
  prints its face count. Without ``--upstream`` this includes building our FlexiCubes grid the first
  time R is used (it is cached per resolution) and excludes vertex colours. The tiny random mesh field
  is one-signed (0 faces), so there only the field queries are timed.
* peak memory without ``--upstream``: ``torch.cuda.max_memory_allocated`` since a reset at the step's
  start (weights included), or on CPU the PROCESS's peak RSS since it started (``ru_maxrss``: a
  high-water mark that includes building the model and every earlier step, not the step's own peak).
* one run per step without ``--upstream``.

``--upstream DIR`` (a folder holding upstream's ``src/``) with ``--upstream-env DIR`` (a ``pip --target``
folder with the transformers 4.34.1 upstream pins, PyMCubes and xatlas, put first on PYTHONPATH for the
upstream run only) also runs upstream's ``InstantMesh`` / ``InstantNeRF`` on the SAME weights: ours are
saved as a Lightning checkpoint (``{"state_dict": {"lrm_generator." + k: v}}``) that upstream loads as
``run.py`` does (prefix cut, ``strict=True``), in a subprocess (``upstream_instantmesh_worker.py``;
shims: DINO from a local ViTConfig, ``nvdiffrast``/``cv2`` import stubs, and ``NeuralRender`` replaced by
a placeholder because its constructor opens a CUDA rasterizer that vertex-colour extraction never
uses). Same device, dtype, thread count, views and cameras for both (the worker checks the cameras
against upstream's ``get_zero123plus_input_cameras``); our model is freed before upstream runs. Then:

* each step runs ``--repeats`` times: median time, largest peak;
* upstream has no part batching beyond its batch dimension: ``batched`` is one ``forward_planes`` call
  with B=P, ``sequential`` is P calls with B=1;
* extraction is what upstream's ``extract_mesh(..., use_texture_map=False)`` does, so ours is timed as
  surface + vertex colours (``extract_flexicubes`` / ``extract_marching_cubes`` + ``vertex_colors``),
  both from OUR part-0 triplanes (the same field; the meshes are compared under the table);
* mesh: the random SDF is one-signed, on which upstream would extract the box its empty-shape fix
  substitutes while ours finds nothing, so the SDF head's output bias is first shifted by minus the
  field's median on the smallest R's grid (these shifted weights are what both run). The field then
  crosses zero all through the volume: far more surface than a real object (worst case for our
  surface-only FlexiCubes). Upstream is set to grid R (``model.grid_res = R``, all the constructor's
  ``grid_res`` does) and ``init_flexicubes_geometry(device, fovy=30.0)`` as ``run.py``; that setup and
  building our grid (``make_grid``, cache cleared) are timed in their own ``grid setup`` rows, not in
  the extraction. Upstream's extraction is skipped above ``--upstream-max-resolution`` (default 128:
  its CPU memory grows ~8x per doubling of R);
* NeRF: upstream ``extract_mesh(planes, mesh_resolution=R, mesh_threshold=T)`` (PyMCubes), ours
  ``ReconstructionOptions(density_threshold=T)`` (scikit-image; triangulations differ, so face counts
  differ slightly); T is ``--density-threshold`` or else the median of our density on the smallest R's
  grid (4 significant digits), so that both find a surface;
* peak memory is the step's own on both sides: CUDA ``max_memory_allocated`` after a reset (weights
  included), or on CPU the process's peak RSS during the step (freed heap returned first with glibc
  ``malloc_trim``, then ``VmHWM`` reset through ``/proc/self/clear_refs`` at the step's start). That
  includes each process's baseline (weights, libraries; printed under the table), so the ratio
  understates the difference in what the steps themselves allocate. Ratios are upstream / ours (> 1:
  upstream slower or bigger).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partgen_models.cameras import LAYOUTS  # noqa: E402
from partgen_models.reconstruction import reconstruct as rec  # noqa: E402
from partgen_models.reconstruction.lrm import LargeReconstructionModel  # noqa: E402
from partgen_models.reconstruction.options import ReconstructionOptions  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402
from partgen_models.testing.tiny_instantmesh import REAL_LRM_CONFIGS, TINY_LRM_CONFIGS, upstream_params  # noqa: E402
from partgen_models.testing.tiny_models import randomize_  # noqa: E402
from partgen_models.views import PartViews  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "upstream_instantmesh_worker.py"


def _surface_or_empty(extract):
    """Random weights may give a field without a surface: time it anyway, as zero faces."""

    def run(*args):
        try:
            return extract(*args)
        except rec.NoSurface:
            return torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)

    return run

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


# ----------------------------------------------------------------------------------------------------
# --upstream: the same steps, ours in this process and upstream's in a worker subprocess


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key))


def _trim() -> None:
    """Return freed heap to the OS (glibc ``malloc_trim``), so that RSS at a step's start is live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _can_reset_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM (peak RSS) to the current RSS
        _status_bytes("VmHWM:")
        return True
    except (OSError, StopIteration):
        return False


def _measure(fn, device, per_step_rss: bool, repeats: int = 1):
    """(seconds, peak bytes, result): median time and largest peak of ``repeats`` calls, each peak the
    step's own (see the module docstring); the last call's result."""
    times, peaks = [], []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            _reset(device)
        elif per_step_rss:
            _trim()
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(device))
        elif per_step_rss:
            peaks.append(_status_bytes("VmHWM:"))
        else:
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return statistics.median(times), max(peaks), result


def _load_shims():
    """write_stubs / upstream_subprocess_env of tests/data/make_instantmesh_keys.py (the golden's shims)."""
    spec = importlib.util.spec_from_file_location("make_instantmesh_keys", REPO_ROOT / "tests/data/make_instantmesh_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _density_median(model, planes, resolution: int) -> float:
    """Median of our density field on the R^3 grid upstream's forward_grid queries ([-1, 1]^3, ij order)."""
    axis = torch.linspace(-1.0, 1.0, resolution, device=planes.device)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    densities = [model.decoder.density_and_color(rec._features(model, planes, chunk))[0].float()
                 for chunk in points.split(2**18)]
    return float(f"{torch.cat(densities).median().item():.4g}")


def _center_sdf(model, planes, resolution: int) -> float:
    """Shift the SDF head's output bias by minus the field's median on the R-grid, so that the random
    field crosses zero (unshifted it is one-signed: no surface, and upstream would then extract the box
    its empty-shape fix substitutes). Changes the weights both implementations run."""
    vertices = rec._cached_grid(resolution, str(planes.device)).vertices
    sdf = [model.decoder.sdf_and_deformation(rec._features(model, planes, chunk))[0].float()
           for chunk in vertices.split(2**18)]
    median = float(f"{torch.cat(sdf).median().item():.4g}")
    model.decoder.net_sdf[-1].bias -= median
    return median


def run_ours(args, model, device, dtype, per_step_rss: bool):
    runtime = Runtime(device=device, dtype=dtype)
    options = ReconstructionOptions(memory_budget_mb=args.memory_budget_mb)
    steps, meshes, inputs = {}, {}, {}
    with torch.no_grad():
        warm_images, cameras = rec.prepare_views(_views(1), tuple(range(6)))
        rec.encode_parts(model, warm_images, cameras, options, runtime)
        for parts in args.parts:
            images, cameras = rec.prepare_views(_views(parts), tuple(range(6)))
            inputs[f"images_{parts}"] = images
            seconds, peak, planes = _measure(lambda: rec.encode_parts(model, images, cameras, options, runtime),
                                             device, per_step_rss, args.repeats)
            steps[f"planes_{parts}_batched"] = {"seconds": seconds, "peak": peak}
            seconds, peak, _ = _measure(
                lambda: [rec.encode_parts(model, images[i : i + 1], cameras, options, runtime) for i in range(parts)],
                device, per_step_rss, args.repeats)
            steps[f"planes_{parts}_sequential"] = {"seconds": seconds, "peak": peak}
        inputs["cameras"] = cameras
        part = planes[:1]
        inputs["planes"] = part.cpu()
        threshold = None
        if args.variant == "mesh":
            threshold = _center_sdf(model, part, min(args.resolutions))
            rec._cached_grid.cache_clear()
        if args.variant == "nerf":
            threshold = args.density_threshold
            if threshold is None:
                threshold = _density_median(model, part, min(args.resolutions))
            options = dataclasses.replace(options, density_threshold=threshold)
        extract = _surface_or_empty(rec.extract_flexicubes if args.variant == "mesh" else rec.extract_marching_cubes)

        def surface_and_colours(resolution):
            vertices, faces = extract(model, part, resolution, options, runtime)
            colors = rec.vertex_colors(model, part, vertices, options, runtime) if faces.shape[0] else None
            return vertices, faces, colors

        for resolution in args.resolutions:
            if args.variant == "mesh":
                rec._cached_grid.cache_clear()
                gc.collect()

                def setup(resolution=resolution):
                    rec._cached_grid.cache_clear()
                    return rec._cached_grid(resolution, str(device))

                seconds, peak, _ = _measure(setup, device, per_step_rss, args.repeats)
                steps[f"setup_{resolution}"] = {"seconds": seconds, "peak": peak}
            seconds, peak, (vertices, faces, _) = _measure(lambda: surface_and_colours(resolution), device, per_step_rss,
                                                           args.repeats)
            steps[f"extract_{resolution}"] = {"seconds": seconds, "peak": peak, "vertices": int(vertices.shape[0]),
                                              "faces": int(faces.shape[0])}
            meshes[resolution] = (vertices.float().cpu(), faces.cpu())
        rec._cached_grid.cache_clear()
    return steps, meshes, inputs, threshold


def write_upstream_inputs(model, config, args, device, dtype, inputs, threshold, scratch: Path) -> None:
    """Our weights as InstantMesh's Lightning checkpoint, the inputs, and the worker's spec."""
    state = {"lrm_generator." + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, str(scratch / "weights.ckpt"))
    del state
    torch.save(inputs, str(scratch / "inputs.pt"))
    params = upstream_params(config)
    spec = {
        "variant": args.variant, "checkpoint": str(scratch / "weights.ckpt"), "model_params": params["model"],
        "vit_config": params["vit_config"], "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "parts": args.parts, "resolutions": args.resolutions,
        "threshold": threshold if args.variant == "nerf" else None,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "max_resolution": args.upstream_max_resolution,
    }
    (scratch / "spec.json").write_text(json.dumps(spec))


def run_upstream(args, scratch: Path):
    shims = _load_shims()
    upstream_dir = args.upstream.resolve()
    env_dir = args.upstream_env.resolve() if args.upstream_env else None
    env = shims.upstream_subprocess_env(env_dir, shims.write_stubs(scratch / "stubs"), upstream_dir, scratch / "hf_home")
    completed = subprocess.run([sys.executable, str(WORKER), "--tmp", str(scratch)], env=env, cwd=str(scratch),
                               capture_output=True, text=True)
    result_file = scratch / "upstream_result.json"
    if completed.returncode != 0 or not result_file.exists():
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-15:]
        print(f"upstream worker failed (exit {completed.returncode}):\n" + "\n".join(tail), file=sys.stderr)
        return None, {}
    if completed.stderr.strip():
        print("upstream worker stderr (tail):\n" + "\n".join(completed.stderr.strip().splitlines()[-10:]), file=sys.stderr)
    result = json.loads(result_file.read_text())
    meshes = {}
    for resolution in args.resolutions:
        path = scratch / f"upstream_mesh_{resolution}.pt"
        if path.exists():
            mesh = torch.load(str(path))
            meshes[resolution] = (mesh["vertices"], mesh["faces"])
    return result, meshes


def _same_mesh(ours, theirs) -> str:
    if ours is None or theirs is None:
        return "-"
    (va, fa), (vb, fb) = ours, theirs
    if va.shape == vb.shape and fa.shape == fb.shape and torch.equal(fa, fb):
        return f"same faces, vertices max diff {(va - vb).abs().max().item() if va.numel() else 0.0:.1e}"
    return f"differ ({va.shape[0]}/{fa.shape[0]} vs {vb.shape[0]}/{fb.shape[0]} vertices/faces)"


def compare(args) -> None:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = (REAL_LRM_CONFIGS[f"{args.variant}-large"] if args.size == "real" else TINY_LRM_CONFIGS[args.variant])
    per_step_rss = device.type != "cuda" and _can_reset_rss()
    model = randomize_(LargeReconstructionModel(config), torch.Generator().manual_seed(0), scale=0.5)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if per_step_rss:
        _trim()
    ours_base = _status_bytes("VmRSS:") if device.type != "cuda" else None
    ours, our_meshes, inputs, threshold = run_ours(args, model, device, dtype, per_step_rss)
    with tempfile.TemporaryDirectory(prefix="bench_reconstruction_") as scratch:
        write_upstream_inputs(model, config, args, device, dtype, inputs, threshold, Path(scratch))
        del model, inputs  # upstream's worker loads its own copy of the weights
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        theirs_result, their_meshes = run_upstream(args, Path(scratch))
    theirs = (theirs_result or {}).get("steps", {})

    def gib(value):
        return f"{value / 2**30:.2f}" if value is not None else "-"

    def cell(step, key):
        if step is None:
            return "-"
        if "error" in step:
            return "skipped" if step["error"].startswith("skipped") else "error"
        return f"{step[key]:.4f}" if key == "seconds" else gib(step[key])

    def ratio(a, b, key):
        if a is None or b is None or "error" in a or "error" in b or not b[key]:
            return "-"
        return f"{a[key] / b[key]:.2f}x"

    rows = []
    for parts in args.parts:
        for mode, what in (("batched", "upstream B=P"), ("sequential", "upstream P x B=1")):
            key = f"planes_{parts}_{mode}"
            rows.append((f"encoder+transformer, P={parts}, {mode} ({what})", key, parts))
    for resolution in args.resolutions:
        if args.variant == "mesh":
            rows.append((f"grid setup at {resolution} (make_grid / init_flexicubes_geometry)", f"setup_{resolution}", 1))
        ours_step, their_step = ours.get(f"extract_{resolution}"), theirs.get(f"extract_{resolution}")
        faces = f"{ours_step['faces']} / {their_step['faces'] if their_step and 'faces' in their_step else '-'} faces"
        rows.append((f"extraction + vertex colours at {resolution} ({faces})", f"extract_{resolution}", 1))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        peak_label = "peak VRAM GiB"
    else:
        peak_label = "peak RSS in step GiB" if per_step_rss else "process peak RSS GiB"
    versions = (theirs_result or {}).get("versions", {})
    if args.variant == "mesh":
        extra = f", SDF head bias shifted by {-threshold:g} (field median on the {min(args.resolutions)}-grid -> 0)"
    else:
        extra = f", density threshold {threshold:g}"
    print(f"\nInstantMesh {args.variant}, {args.size} random weights, {args.dtype}, {name}, ours vs upstream "
          f"(transformers {versions.get('transformers', '?')}){extra}\n")
    print(f"| step | ours s/part | upstream s/part | time upstream/ours | ours {peak_label} | upstream {peak_label} "
          "| memory upstream/ours |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, key, parts in rows:
        a, b = theirs.get(key), ours.get(key)
        seconds = lambda step: step if step is None or "error" in step else {"seconds": step["seconds"] / parts}  # noqa: E731
        print(f"| {label} | {cell(seconds(b), 'seconds')} | {cell(seconds(a), 'seconds')} | "
              f"{ratio(a, b, 'seconds')} | {cell(b, 'peak')} | {cell(a, 'peak')} | {ratio(a, b, 'peak')} |")
    print()
    if device.type != "cuda":
        up_base = (theirs_result or {}).get("rss_after_load")
        print(f"- process RSS after building/loading the model: ours {gib(ours_base)} GiB, upstream {gib(up_base)} GiB")
    if theirs_result is not None and "cameras_max_abs_diff" in theirs_result:
        print(f"- input cameras vs upstream's get_zero123plus_input_cameras(1, 4.0, 30.0): max diff "
              f"{theirs_result['cameras_max_abs_diff']:.1e}")
    if theirs_result is not None and "planes_max_abs_diff" in theirs_result:
        print(f"- triplanes of part 0 (P={args.parts[-1]}, batched): max |upstream - ours| = "
              f"{theirs_result['planes_max_abs_diff']:.2e}")
    for resolution in args.resolutions:
        line = f"- extraction at {resolution}: {_same_mesh(our_meshes.get(resolution), their_meshes.get(resolution))}"
        if args.variant == "nerf":
            line += " (ours scikit-image's Lewiner marching cubes, upstream PyMCubes: triangulations differ)"
        print(line)
    for key, step in theirs.items():
        if "error" in step:
            print(f"- upstream {key}: {step['error']}")
    if theirs_result is None:
        print("- upstream did not run (see the worker's error above)")


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
    parser.add_argument("--density-threshold", type=float, default=None,
                        help="NeRF iso-level (default: upstream's 10; with --upstream the field's median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --upstream: median time (largest peak) of this many runs of each step, both sides")
    parser.add_argument("--upstream", type=Path, default=None,
                        help="folder holding upstream InstantMesh's src/ (not committed): also time upstream")
    parser.add_argument("--upstream-env", type=Path, default=None,
                        help="pip --target folder with transformers 4.34.1, PyMCubes, xatlas (upstream run only)")
    parser.add_argument("--upstream-max-resolution", type=int, default=128,
                        help="skip upstream's extraction above this grid (its memory grows ~8x per doubling)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.upstream is not None:
        compare(args)
        return

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = (REAL_LRM_CONFIGS[f"{args.variant}-large"] if args.size == "real" else TINY_LRM_CONFIGS[args.variant])
    model = randomize_(LargeReconstructionModel(config), torch.Generator().manual_seed(0), scale=0.5)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    runtime = Runtime(device=device, dtype=dtype)
    options = ReconstructionOptions(memory_budget_mb=args.memory_budget_mb)
    if args.density_threshold is not None:
        options = dataclasses.replace(options, density_threshold=args.density_threshold)
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
        extract = _surface_or_empty(rec.extract_flexicubes if args.variant == "mesh" else rec.extract_marching_cubes)
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
