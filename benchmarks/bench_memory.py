"""Peak memory of each node's library call at the node's largest settings.

    python benchmarks/bench_memory.py                    # every case, CPU (and CUDA when present)
    python benchmarks/bench_memory.py --cases render_views multiview --devices cuda
    python benchmarks/bench_memory.py --size real        # Zero123++ at its real size (random weights; GPU)

Each case runs in a fresh process, so its peak is its own: on CPU the rise of the process's peak RSS
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) over its RSS before the call, which includes
the model's own activations; on CUDA the growth of ``torch.cuda.max_memory_allocated`` over what was
allocated before the call (weights already loaded). Models are the tiny seeded checkpoints of
``partgen_models.testing`` unless ``--size real`` (Zero123++ v1.2's real architecture, random weights),
so on CPU the model-independent buffers (images, grids, rasteriser, FlexiCubes) are what is measured.
Prints one markdown table: case, the node and settings it stands for, seconds, peak MiB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import measure  # noqa: E402

logger = logging.getLogger("bench_memory")


def _object_image(size: int = 256) -> torch.Tensor:
    image = torch.ones(1, size, size, 3)
    image[0, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = torch.tensor([0.8, 0.3, 0.2])
    return image


def _views(parts: int, size: int = 320):
    from partgen_models.cameras import LAYOUTS
    from partgen_models.views import PartViews

    generator = torch.Generator().manual_seed(0)
    alpha = torch.zeros(parts, 6, size, size)
    alpha[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    images = torch.rand(parts, 6, size, size, 3, generator=generator) * alpha[..., None] + (1 - alpha[..., None])
    layout = LAYOUTS["zero123pp_v12"]
    return PartViews(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, (1.0, 1.0, 1.0),
                     tuple(f"part_{i}" for i in range(parts)))


def _multiview_model(size: str, device: torch.device, scratch: Path):
    from partgen_models.multiview import load_zero123plus
    from partgen_models.testing import write_tiny_models

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if size == "real":
        from bench_multiview import build  # the real-size architecture with random weights

        return build("real", dtype, device, scratch)[0]
    write_tiny_models(scratch)
    return load_zero123plus(scratch / "zero123plus-v1.2").to(device=device, dtype=dtype)


def case_multiview(device: torch.device, size: str, scratch: Path):
    """PartGen Multi-View (and the headless command) at view_size 640, guidance on."""
    from partgen_models.multiview import MultiViewOptions, generate_views
    from partgen_models.multiview.options import MAX_VIEW_SIZE
    from partgen_models.runtime import Runtime

    model = _multiview_model(size, device, scratch)
    options = MultiViewOptions(num_inference_steps=2, guidance_scale=4.0, view_size=MAX_VIEW_SIZE)
    runtime = Runtime(device=device, dtype=next(model.unet.parameters()).dtype)
    return f"Multi-View view_size={MAX_VIEW_SIZE} guidance=4 (2 steps)", lambda: generate_views(
        model, _object_image(), None, options, runtime)


def case_render_views(device: torch.device, size: str, scratch: Path):
    """PartGen Render Views at view_size 1024, supersample 7, a 20k-face mesh."""
    import math

    import trimesh

    from partgen_models.parts import Part
    from partgen_models.rendering import RenderOptions
    from partgen_models.rendering.asset_views import AssetViewOptions, render_asset_views

    count = round(math.sqrt(20_000 / 4))
    mesh = trimesh.creation.uv_sphere(radius=1.0, count=[count, count])
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    part = Part("sphere", vertices, torch.tensor(mesh.faces), (vertices + 1) / 2)
    options = AssetViewOptions(view_size=1024, render=RenderOptions(supersample=7))
    return (f"Render Views view_size=1024 supersample=7 ({part.num_faces} faces)",
            lambda: render_asset_views([part], options, device=device))


def case_reconstruct(device: torch.device, size: str, scratch: Path):
    """PartGen Reconstruct at resolution 512 (FlexiCubes), default memory budget, one part."""
    from partgen_models.reconstruction.loader import load_instantmesh
    from partgen_models.reconstruction.options import ReconstructionOptions
    from partgen_models.reconstruction.reconstruct import reconstruct_parts
    from partgen_models.runtime import Runtime
    from partgen_models.testing.tiny_instantmesh import write_tiny_instantmesh

    model = load_instantmesh(write_tiny_instantmesh(scratch / "instant_mesh_large.ckpt", "mesh")).to(device)
    options = ReconstructionOptions(resolution=512)
    runtime = Runtime(device=device, dtype=torch.float32)
    return (f"Reconstruct resolution=512 memory_budget_mb={options.memory_budget_mb}",
            lambda: reconstruct_parts(model, _views(1), options, runtime))


CASES = {"multiview": case_multiview, "render_views": case_render_views, "reconstruct": case_reconstruct}


def worker(case: str, device_name: str, size: str) -> None:
    torch.set_grad_enabled(False)
    device = torch.device(device_name)
    with tempfile.TemporaryDirectory() as scratch:
        label, run = CASES[case](device, size, Path(scratch))
        seconds, peak = measure(run, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    print(json.dumps(dict(case=case, label=label, device=where, seconds=seconds, peak=peak)))


def spawn(case: str, device: str, size: str, timeout: float) -> Optional[dict]:
    command = [sys.executable, __file__, "--worker", case, "--devices", device, "--size", size]
    # The worker imports this folder's helpers; keep the caller's PYTHONPATH (packages installed with --target).
    paths = [str(Path(__file__).resolve().parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        logger.error("%s on %s ran past %.0f s", case, device, timeout)
        return None
    if done.returncode != 0:
        logger.error("%s on %s failed (exit %d):\n%s", case, device, done.returncode, done.stderr[-2000:])
        return dict(case=case, label=case, device=device, seconds=None, peak=None, failed=done.returncode)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--size", choices=("tiny", "real"), default="tiny", help="Zero123++ size for the multiview case")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.worker:
        worker(args.worker, args.devices[0], args.size)
        return
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    for device in devices:
        for case in args.cases:
            result = spawn(case, device, args.size, args.timeout)
            if result:
                rows.append(result)
                logger.info("%s on %s: %s", case, result["device"], result.get("peak"))
    print("| case | settings | device | seconds | peak MiB |")
    print("|---|---|---|---:|---:|")
    for row in rows:
        seconds = f"{row['seconds']:.1f}" if row.get("seconds") is not None else "failed"
        peak = f"{row['peak'] / 2**20:.0f}" if row.get("peak") is not None else "n/a"
        print(f"| {row['case']} | {row['label']} | {row['device']} | {seconds} | {peak} |")


if __name__ == "__main__":
    main()
