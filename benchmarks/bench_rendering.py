"""Renderer benchmark: 6 views at 320 px (Zero123++ v1.2 cameras) of meshes of about 1k, 20k, 100k faces.

    python benchmarks/bench_rendering.py                         # CPU with torch's threads and 1 thread, + CUDA if present
    python benchmarks/bench_rendering.py --faces 20000 --threads 2 --repeats 5

Inputs are synthetic: a UV sphere with about the requested number of faces, vertex-coloured, framed
as the evaluation frames objects (``normalization="fit"``), rendered with Lambert shading by
``render_parts``, the function the evaluation calls. Each configuration runs once to warm up, then
``--repeats`` times, each configuration in a fresh process; the time is the mean, between
``torch.cuda.synchronize`` calls on CUDA. Peak
memory is the rise of the process's peak RSS over its RSS before the call on CPU (Linux
``/proc/self/clear_refs``), ``torch.cuda.max_memory_allocated`` growth on CUDA. Prints one markdown
table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import measure  # noqa: E402

from partgen_models.parts import Part  # noqa: E402
from partgen_models.rendering import RenderCameras, RenderOptions, render_parts  # noqa: E402

logger = logging.getLogger("bench_rendering")


def sphere_part(target_faces: int) -> Part:
    """A UV sphere with about ``target_faces`` triangles."""
    import trimesh

    def build(count: int):
        return trimesh.creation.uv_sphere(radius=1.0, count=[count, count])

    count = max(4, round(math.sqrt(target_faces / 4)))  # about 4 count^2 faces
    mesh = build(count)
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    colors = (vertices + 1) / 2  # a smooth colour ramp, so interpolation is exercised
    return Part("sphere", vertices, torch.tensor(mesh.faces), colors)


def bench(part: Part, device: torch.device, repeats: int, options: RenderOptions) -> tuple[float, Optional[int], float]:
    cameras = RenderCameras.from_layout("zero123pp_v12")
    run = lambda: render_parts([part], cameras, options=options, device=device)  # noqa: E731
    rendering = run()  # warm-up (kernels, allocator)
    runs = [measure(run, device) for _ in range(max(1, repeats))]
    peaks = [p for _, p in runs if p is not None]
    coverage = float((rendering.part_ids >= 0).float().mean())
    return sum(s for s, _ in runs) / len(runs), max(peaks) if peaks else None, coverage


def worker(args: argparse.Namespace) -> None:
    torch.set_grad_enabled(False)
    if args.worker_threads:
        torch.set_num_threads(args.worker_threads)
    device = torch.device(args.device)
    part = sphere_part(args.faces[0])
    options = RenderOptions(cull_backfaces=args.cull, max_fragments=args.max_fragments)
    seconds, peak, coverage = bench(part, device, args.repeats, options)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    print(json.dumps(dict(label=label, threads=torch.get_num_threads() if device.type == "cpu" else None,
                          faces=part.num_faces, cull=args.cull, seconds=seconds, peak=peak, coverage=coverage)))


def spawn(faces: int, device: str, threads: Optional[int], cull: bool, args: argparse.Namespace) -> Optional[dict]:
    """One configuration in a fresh process, so its peak memory is its own."""
    command = [sys.executable, __file__, "--worker", "--faces", str(faces), "--devices", device, "--repeats", str(args.repeats),
               "--max-fragments", str(args.max_fragments)] + (["--worker-threads", str(threads)] if threads else []) + (["--cull"] if cull else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        logger.error("%s failed:\n%s", " ".join(command), done.stderr[-2000:])
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    logger.info("%s, %d faces, %s threads, cull=%s: %.0f ms", result["label"], result["faces"], result["threads"], cull,
                result["seconds"] * 1e3)
    return result


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[1_000, 20_000, 100_000])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU intra-op thread counts to try (default: torch's default, and 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--cull-backfaces", action="store_true", help="also time with back-face culling")
    parser.add_argument("--max-fragments", type=int, default=RenderOptions().max_fragments)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cull", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.worker:
        args.device = args.devices[0]
        worker(args)
        return

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    threads = args.threads or sorted({torch.get_num_threads(), 1}, reverse=True)
    cull_modes = [False, True] if args.cull_backfaces else [False]
    rows = []
    for faces in args.faces:
        for device in devices:
            for count in (threads if device == "cpu" else [None]):
                for cull in cull_modes:
                    result = spawn(faces, device, count, cull, args)
                    if result:
                        rows.append(result)

    print(f"\ntorch {torch.__version__}; 6 views x 320 x 320 (zero123pp_v12), Lambert, max_fragments {args.max_fragments}; "
          f"mean of {args.repeats} after 1 warm-up, each configuration in its own process\n")
    print("| device | threads | faces | cull backfaces | ms (6 views) | peak memory MiB | object coverage |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        memory = f"{r['peak'] / 2**20:.0f}" if r["peak"] is not None else "n/a"
        threads_cell = r["threads"] if r["threads"] is not None else "-"
        print(f"| {r['label']} | {threads_cell} | {r['faces']:,} | {'yes' if r['cull'] else 'no'} | {r['seconds'] * 1e3:.0f} | "
              f"{memory} | {r['coverage']:.2f} |")


if __name__ == "__main__":
    main()
