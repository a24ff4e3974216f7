"""FlexiCubes benchmark: grid setup and mesh extraction, ours vs upstream (InstantMesh's copy), same inputs.

    python benchmarks/bench_flexicubes.py                                   # R = 128, 256; CPU (+ CUDA if present)
    python benchmarks/bench_flexicubes.py --upstream /tmp/upstream_flexicubes --resolutions 64 128

Inputs are synthetic and what InstantMesh feeds FlexiCubes at inference: a sphere SDF (radius 0.6) on
the ``grid_scale`` 2.1 grid, vertex deformation ``tanh(randn) / (R * 4)``, weights ``0.1 * randn`` for
the surface cubes (upstream gets them in a ``(R^3, 21)`` tensor, zero elsewhere: it ignores those rows).

``--upstream`` points at a local folder holding upstream's ``flexicubes.py`` and ``tables.py`` (never
committed; see tests/data/make_flexicubes_golden.py). If the folder also holds the rest of
``src/models/geometry/rep_3d/`` (``__init__.py``, ``flexicubes_geometry.py``, ``dmtet.py``,
``dmtet_utils.py``), upstream's setup is the real ``FlexiCubesGeometry(grid_res=R, scale=2.1)``;
otherwise only its ``construct_voxel_grid``. Upstream runs up to ``--upstream-max-resolution`` (default
128: it needs ~8 GB of CPU memory there, and 8x that per doubling).

Every (implementation, resolution, device) runs in a fresh subprocess so that peak memory is its own.
Peak memory is the rise of the process's peak RSS over its RSS when the phase starts (Linux
``/proc/self/clear_refs``), or ``torch.cuda.max_memory_allocated`` growth on CUDA. Extraction time is
the mean over ``--repeats`` runs after one warm-up (upstream: ``--upstream-repeats``, no warm-up);
ours includes ``surface_cubes``. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partgen_models.reconstruction.flexicubes import extract_mesh, make_grid, surface_cubes  # noqa: E402

logger = logging.getLogger("bench_flexicubes")

SCALE = 2.1  # configs/instant-mesh-*.yaml grid_scale
RADIUS = 0.6
SEED = 0


# ----------------------------------------------------------------------------------------------------
# Measurement


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_status(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key))


def measure(fn: Callable[[], object], device: torch.device) -> tuple[object, float, int]:
    """(result, seconds, peak memory growth in bytes) of one call."""
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM (peak RSS) to the current RSS
        before = _rss_status("VmRSS:")
    start = time.perf_counter()
    result = fn()
    _synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = _rss_status("VmHWM:") - before
    return result, seconds, peak


def timed_repeats(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> tuple[object, float, int]:
    for _ in range(warmup):
        fn()
    runs = [measure(fn, device) for _ in range(max(1, repeats))]
    return runs[-1][0], sum(r[1] for r in runs) / len(runs), max(r[2] for r in runs)


# ----------------------------------------------------------------------------------------------------
# Inputs


def make_inputs(resolution: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Sphere SDF, deformed vertices and surface weights, drawn on CPU from a seeded generator."""
    grid = make_grid(resolution, SCALE)
    generator = torch.Generator().manual_seed(SEED)
    sdf = grid.vertices.norm(dim=-1) - RADIUS
    deformed = grid.vertices + torch.tanh(torch.randn(grid.vertices.shape, generator=generator)) / (resolution * 4)
    cube_ids = surface_cubes(grid, sdf)
    weights = 0.1 * torch.randn((cube_ids.numel(), 21), generator=generator)
    return {"sdf": sdf.to(device), "vertices": deformed.to(device), "cube_ids": cube_ids.to(device),
            "weights": weights.to(device)}


# ----------------------------------------------------------------------------------------------------
# Workers (one per subprocess)


def run_ours(resolution: int, device: torch.device, repeats: int) -> dict:
    inputs = make_inputs(resolution, device)
    grid, setup_s, setup_peak = measure(lambda: make_grid(resolution, SCALE, device), device)

    def extract():
        cube_ids = surface_cubes(grid, inputs["sdf"])
        return extract_mesh(grid, inputs["sdf"], inputs["vertices"], cube_ids, inputs["weights"])

    _, surface_s, _ = timed_repeats(lambda: surface_cubes(grid, inputs["sdf"]), device, repeats, warmup=1)
    mesh, extract_s, extract_peak = timed_repeats(extract, device, repeats, warmup=1)
    return dict(setup_s=setup_s, setup_peak=setup_peak, surface_s=surface_s, extract_s=extract_s,
                extract_peak=extract_peak, mesh=mesh, surface_cubes=int(inputs["cube_ids"].numel()))


def load_upstream(folder: Path) -> types.ModuleType:
    """Upstream's rep_3d folder as a package (so its relative imports resolve); files are not edited."""
    name = "upstream_rep_3d"
    init = folder / "__init__.py"
    if init.exists():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    else:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return package


def run_upstream(resolution: int, device: torch.device, repeats: int, folder: Path) -> dict:
    package = load_upstream(folder)
    inputs = make_inputs(resolution, device)
    full_geometry = all((folder / f).exists() for f in ("__init__.py", "flexicubes_geometry.py", "dmtet.py", "dmtet_utils.py"))

    def setup():
        if full_geometry:
            geometry = importlib.import_module(f"{package.__name__}.flexicubes_geometry")
            built = geometry.FlexiCubesGeometry(grid_res=resolution, scale=SCALE, device=str(device))
            return built.fc, built.indices
        fc = importlib.import_module(f"{package.__name__}.flexicubes").FlexiCubes(str(device), weight_scale=0.5)
        verts, indices = fc.construct_voxel_grid(resolution)
        return fc, indices

    (fc, indices), setup_s, setup_peak = measure(setup, device)
    # Upstream takes weights for every cube; rows off the surface are never read.
    weights = torch.zeros((resolution**3, 21), device=device)
    weights[inputs["cube_ids"]] = inputs["weights"]

    def extract():
        vertices, faces, _ = fc(inputs["vertices"], inputs["sdf"], indices, resolution, beta_fx12=weights[:, :12],
                                alpha_fx8=weights[:, 12:20], gamma_f=weights[:, 20], training=False)
        return vertices, faces

    mesh, extract_s, extract_peak = timed_repeats(extract, device, repeats, warmup=0)
    return dict(setup_s=setup_s, setup_peak=setup_peak, surface_s=None, extract_s=extract_s,
                extract_peak=extract_peak, mesh=mesh, surface_cubes=int(inputs["cube_ids"].numel()),
                setup_kind="FlexiCubesGeometry" if full_geometry else "construct_voxel_grid")


def worker(args: argparse.Namespace) -> None:
    torch.set_grad_enabled(False)  # inference, as InstantMesh extracts meshes
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.worker == "ours":
        result = run_ours(args.resolution, device, args.repeats)
    else:
        result = run_upstream(args.resolution, device, args.repeats, args.upstream)
    vertices, faces = result.pop("mesh")
    torch.save({"vertices": vertices.cpu(), "faces": faces.cpu()}, args.output)
    result["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result["threads"] = torch.get_num_threads()
    result["num_vertices"], result["num_faces"] = int(vertices.shape[0]), int(faces.shape[0])
    args.output.with_suffix(".json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------------
# Driver


def spawn(kind: str, resolution: int, device: str, repeats: int, threads: int | None, upstream: Path | None,
          workdir: Path) -> dict | None:
    output = workdir / f"{kind}_{resolution}_{device}.pt"
    command = [sys.executable, __file__, "--worker", kind, "--resolution", str(resolution), "--device", device,
               "--repeats", str(repeats), "--output", str(output)]
    if upstream is not None:
        command += ["--upstream", str(upstream)]
    if threads is not None:
        command += ["--threads", str(threads)]
    # Large blocks straight from mmap and back on free: RSS then follows live tensors, so its peak is
    # the phase's real peak rather than whatever glibc's heap happened to keep from earlier phases.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    logger.info("running %s R=%d on %s", kind, resolution, device)
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        logger.warning("%s R=%d on %s failed (exit %d): %s", kind, resolution, device, completed.returncode,
                       completed.stderr.strip().splitlines()[-1:] or "")
        return None
    result = json.loads(output.with_suffix(".json").read_text())
    result["mesh"] = torch.load(output)
    return result


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_mb(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{max(nbytes, 0) / 2**20:.0f} MB"


def _ratio(upstream: float | None, ours: float | None) -> str:
    if upstream is None or ours is None or ours <= 0:
        return "-"
    return f"{upstream / ours:.1f}x"


def _same_mesh(a: dict, b: dict) -> str:
    va, fa, vb, fb = a["mesh"]["vertices"], a["mesh"]["faces"], b["mesh"]["vertices"], b["mesh"]["faces"]
    if va.shape != vb.shape or not torch.equal(fa, fb):
        return "differ"
    return f"same (max {(va - vb).abs().max().item() if va.numel() else 0.0:.1e})"


def report(rows: list[tuple[int, str, dict, dict | None]]) -> None:
    print("\n| R | device | phase | ours time | ours peak mem | upstream time | upstream peak mem | time ratio | mem ratio |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for resolution, device, ours, upstream in rows:
        up = upstream or {}
        setup_label = f"setup (upstream: {up['setup_kind']})" if upstream else "setup"
        print(f"| {resolution} | {ours['device_name']} | {setup_label} | {_fmt_s(ours['setup_s'])} | {_fmt_mb(ours['setup_peak'])} | "
              f"{_fmt_s(up.get('setup_s'))} | {_fmt_mb(up.get('setup_peak'))} | {_ratio(up.get('setup_s'), ours['setup_s'])} | "
              f"{_ratio(up.get('setup_peak'), ours['setup_peak'])} |")
        print(f"| {resolution} | {ours['device_name']} | extract ({ours['surface_cubes']} surface cubes; ours incl. "
              f"surface_cubes {_fmt_s(ours['surface_s'])}) | {_fmt_s(ours['extract_s'])} | {_fmt_mb(ours['extract_peak'])} | "
              f"{_fmt_s(up.get('extract_s'))} | {_fmt_mb(up.get('extract_peak'))} | {_ratio(up.get('extract_s'), ours['extract_s'])} | "
              f"{_ratio(up.get('extract_peak'), ours['extract_peak'])} |")
    print()
    for resolution, device, ours, upstream in rows:
        line = f"R={resolution} {device}: {ours['num_vertices']} vertices, {ours['num_faces']} faces, {ours['threads']} threads"
        if upstream:
            line += f"; output vs upstream: {_same_mesh(ours, upstream)}"
        print(f"- {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--upstream", type=Path, default=None, help="folder with upstream flexicubes.py + tables.py")
    parser.add_argument("--upstream-max-resolution", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upstream-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--worker", choices=["ours", "upstream"], help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        worker(args)
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    upstream = args.upstream.resolve() if args.upstream else None
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for device in devices:
            for resolution in args.resolutions:
                ours = spawn("ours", resolution, device, args.repeats, args.threads, None, Path(workdir))
                if ours is None:
                    continue
                theirs = None
                if upstream is not None and resolution <= args.upstream_max_resolution:
                    theirs = spawn("upstream", resolution, device, args.upstream_repeats, args.threads, upstream,
                                   Path(workdir))
                rows.append((resolution, device, ours, theirs))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nFlexiCubes, sphere SDF r={RADIUS}, grid scale {SCALE}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {load:.2f} at the end")
    report(rows)


if __name__ == "__main__":
    main()
