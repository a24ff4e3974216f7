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


def _sphere_part(faces: int, name: str = "sphere"):
    import math

    import trimesh

    from partgen_models.parts import Part

    count = round(math.sqrt(faces / 4))
    mesh = trimesh.creation.uv_sphere(radius=1.0, count=[count, count])
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    return Part(name, vertices, torch.tensor(mesh.faces), (vertices + 1) / 2)


def case_render_views(device: torch.device, size: str, scratch: Path):
    """PartGen Render Views at its maxima: view_size 1024, supersample 5, a 20k-face mesh."""
    from partgen_models.rendering import RenderOptions
    from partgen_models.rendering.asset_views import AssetViewOptions, render_asset_views

    part = _sphere_part(20_000)
    options = AssetViewOptions(view_size=1024, render=RenderOptions(supersample=5))
    return (f"Render Views view_size=1024 supersample=5 ({part.num_faces} faces)",
            lambda: render_asset_views([part], options, device=device))


def case_render_big_mesh(device: torch.device, size: str, scratch: Path):
    """PartGen Render Views of a 1M-face mesh at its defaults (320 px, 3x3)."""
    from partgen_models.rendering.asset_views import AssetViewOptions, render_asset_views

    part = _sphere_part(1_000_000)
    return (f"Render Views view_size=320 supersample=3 ({part.num_faces} faces)",
            lambda: render_asset_views([part], AssetViewOptions(view_size=320), device=device))


def case_load_parts(device: torch.device, size: str, scratch: Path):
    """PartGen Load Parts of a GLB with one 1M-face part."""
    from partgen_models.assembly.export import parts_glb_bytes
    from partgen_models.assembly.load import load_parts

    part = _sphere_part(1_000_000)
    path = scratch / "big.glb"
    path.write_bytes(parts_glb_bytes([part], "big"))
    label = f"Load Parts GLB of {path.stat().st_size / 2**20:.0f} MB ({part.num_faces} faces)"
    del part
    return label, lambda: load_parts(path)


def case_save_parts(device: torch.device, size: str, scratch: Path):
    """PartGen Save Parts of 16 parts, 1M faces in all, GLB + every per-part format."""
    from partgen_models.assembly.export import ExportOptions, export_parts

    parts = [_sphere_part(62_500, f"part_{i}") for i in range(16)]
    options = ExportOptions(filename_prefix="bench/parts", part_format="obj")
    total = sum(p.num_faces for p in parts)
    return f"Save Parts 16 parts, {total} faces, GLB + OBJ per part", lambda: export_parts(parts, scratch, options)


def _tiny_views(scratch: Path, view_size: int):
    from partgen_models.multiview import MultiViewOptions, generate_views

    model = _multiview_model("tiny", torch.device("cpu"), scratch)
    return generate_views(model, _object_image(), None, MultiViewOptions(1, view_size=view_size))[0]


def case_segment(device: torch.device, size: str, scratch: Path):
    """PartGen Segment at samples=64 (batches of 8), 320 px views, tiny weights, 1 step."""
    from partgen_models.runtime import Runtime
    from partgen_models.segmentation.segment import SegmentationOptions, segment_views
    from partgen_models.segmentation.segmenter import load_partgen_segmenter

    views = _tiny_views(scratch, 320)
    model = load_partgen_segmenter(scratch / "partgen-segmentation", [scratch]).to(device)
    options = SegmentationOptions(num_samples=64, num_inference_steps=1)
    return (f"Segment samples=64 (max_batch {options.max_batch}) 320 px, 1 step",
            lambda: segment_views(model, views, options, Runtime(device=device, dtype=torch.float32)))


def case_complete(device: torch.device, size: str, scratch: Path):
    """PartGen Complete Parts: 16 parts at max_batch=16, 320 px views, tiny weights, 1 step."""
    from partgen_models.completion.complete import CompletionOptions, complete_parts
    from partgen_models.completion.completer import load_partgen_completer
    from partgen_models.runtime import Runtime
    from partgen_models.segmentation.select import PartMasks

    views = _tiny_views(scratch, 320)
    model = load_partgen_completer(scratch / "partgen-completion", [scratch]).to(device)
    masks = torch.zeros(16, 6, 320, 320, dtype=torch.bool)
    for i in range(16):
        masks[i, :, 80 + 10 * i : 90 + 10 * i, 100:220] = True
    parts = PartMasks(masks, tuple(f"part_{i}" for i in range(16)), ((1.0, 0.0, 0.0),) * 16, views.layout)
    options = CompletionOptions(num_inference_steps=1, max_batch=16)
    return ("Complete Parts 16 parts, max_batch=16, 320 px, 1 step",
            lambda: complete_parts(model, views, parts, options, Runtime(device=device, dtype=torch.float32)))


def case_texture(device: torch.device, size: str, scratch: Path):
    """Reconstruct's texture bake at texture_size 4096 (views+field), a 20k-face part."""
    from partgen_models.reconstruction.texture import PartViewsOfOne, TextureOptions, bake_texture

    part = _sphere_part(20_000)
    views = _views(1)
    one = PartViewsOfOne(views.images[0], views.alpha[0], views.c2w.float(), views.fov_deg)
    vertices = (part.vertices * 0.6).to(device)
    return ("Reconstruct texture=views+field texture_size=4096 (20k faces)",
            lambda: bake_texture("sphere", vertices, part.faces.to(device), TextureOptions(size=4096, source="views+field"),
                                 lambda p: ((p + 1) / 2).clamp(0, 1), one))


def _sphere_field(model, radius: float) -> None:
    """Replace the tiny model's random field (a surface through most cells) by a sphere of ``radius``,
    so the surface has an object's size; the grid queries still run through the decoder's heads."""
    from partgen_models.reconstruction import reconstruct as rec

    features = rec._features
    rec._features = lambda model, planes, points: torch.cat([points.to(planes.dtype), features(model, planes, points)], -1)
    sdf, deformation, weights = model.decoder.sdf, model.decoder.deformation, model.decoder.cube_weights
    width = 3 * model.config.triplane_dim
    model.decoder.sdf = lambda f: sdf(f[:, 3:]) * 0 + f[:, :3].norm(dim=-1) - radius
    model.decoder.deformation = lambda f: deformation(f[:, 3:])
    model.decoder.cube_weights = lambda f: weights(f.reshape(f.shape[0], 8, 3 + width)[:, :, 3:].reshape(f.shape[0], -1))
    model.decoder.color = lambda f, color=model.decoder.color: color(f[:, 3:])


def case_reconstruct(device: torch.device, size: str, scratch: Path):
    """PartGen Reconstruct at resolution 512 (FlexiCubes), one part, the budget the refusal asks for."""
    from partgen_models.reconstruction.loader import load_instantmesh
    from partgen_models.reconstruction.options import ReconstructionOptions
    from partgen_models.reconstruction.reconstruct import reconstruct_parts
    from partgen_models.runtime import Runtime
    from partgen_models.testing.tiny_instantmesh import write_tiny_instantmesh

    model = load_instantmesh(write_tiny_instantmesh(scratch / "instant_mesh_large.ckpt", "mesh")).to(device)
    _sphere_field(model, 0.6)
    options = ReconstructionOptions(resolution=512, memory_budget_mb=3072)
    runtime = Runtime(device=device, dtype=torch.float32)
    return (f"Reconstruct resolution=512 memory_budget_mb={options.memory_budget_mb} (sphere field r=0.6)",
            lambda: reconstruct_parts(model, _views(1), options, runtime))


def case_place_parts(device: torch.device, size: str, scratch: Path):
    """PartGen Place Parts at its maxima: 16 parts, render_size 1024, silhouette_rounds 10."""
    from partgen_models.assembly.placement import PlacementOptions, place_parts
    from partgen_models.evaluation.placement_eval import prepare_placement_sample
    from partgen_models.evaluation.procedural import generate_object
    from partgen_models.runtime import Runtime

    from dataclasses import replace

    # 16 parts (the most MMPart places): a chair's, a robot's and a mug's, and one more chair part, overlaid
    objects = [generate_object(name, 0).parts for name in ("chair", "robot", "mug")] + [generate_object("chair", 1).parts[:1]]
    source = []
    for parts in objects:
        source += [replace(p, name=f"{p.name}_{len(source) + i}") for i, p in enumerate(parts)]
    sample = prepare_placement_sample("bench", source[:16], 512)
    options = PlacementOptions(silhouette_rounds=10, render_size=1024)
    runtime = Runtime(device=device, dtype=torch.float32)
    return (f"Place Parts {len(sample.normalised)} parts render_size=1024 silhouette_rounds=10",
            lambda: place_parts(list(sample.normalised), sample.isolated, sample.crop_boxes, options,
                                sample.reference, sample.reference_box, sample.depth_map, runtime))


CASES = {"multiview": case_multiview, "segment": case_segment, "complete": case_complete,
         "reconstruct": case_reconstruct, "texture": case_texture, "render_views": case_render_views,
         "render_big_mesh": case_render_big_mesh, "load_parts": case_load_parts, "save_parts": case_save_parts,
         "place_parts": case_place_parts}


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
