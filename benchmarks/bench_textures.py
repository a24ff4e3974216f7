"""Baked textures vs vertex colours at the same face count, on the procedural set.

Each procedural part gets a detailed ground-truth appearance: a colour pattern evaluated at every
surface point (the part's own colour modulated by stripes and a gradient), so that what a texture
adds over vertex colours is visible. The part is decimated to ``--faces`` triangles; then
- vertex-coloured: the pattern at each kept vertex, interpolated across faces;
- textured: ``bake_texture`` (the library function Reconstruct calls) from the part's six Zero123++
  views of the ground truth, with the pattern itself standing in for the model's colour field where no
  view sees the surface.
Both are rendered unlit at held-out cameras (azimuths between the Zero123++ ones, other elevations)
and compared with the ground truth over the ground truth's foreground: PSNR (dB). LPIPS needs network
weights that cannot be downloaded here, so it is not reported.

    python benchmarks/bench_textures.py --objects 4 --faces 500 --size 1024

Prints a table: variant, faces, PSNR mean and min, seconds per part (bake), peak memory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import peak_bytes  # noqa: E402
from partgen_models.cameras import LAYOUTS, look_at_origin  # noqa: E402
from partgen_models.evaluation.procedural import evaluation_set  # noqa: E402
from partgen_models.rendering.rasterizer import rasterize  # noqa: E402
from partgen_models.rendering.renderer import gltf_to_zup  # noqa: E402
from partgen_models.reconstruction.reconstruct import decimate  # noqa: E402
from partgen_models.reconstruction.texture import PartViewsOfOne, TextureOptions, bake_texture  # noqa: E402

VIEW_SIZE, TEST_SIZE = 320, 256


def pattern(points: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Ground-truth colour at each point ``[P,3]``: the part's colour with stripes and a gradient
    along the (normalised) height, a fixed function of position."""
    stripes = 0.5 + 0.5 * torch.sin(points[:, 0] * 25) * torch.sin(points[:, 2] * 25)
    gradient = (points[:, 2] + 1.5) / 3.0
    return (base[None] * (0.35 + 0.65 * stripes[:, None]) + 0.25 * gradient[:, None]).clamp(0, 1)


def subdivided(vertices: torch.Tensor, faces: torch.Tensor, target: int):
    import trimesh

    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    while len(mesh.faces) < target:
        mesh = mesh.subdivide()
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


def points_seen(vertices, faces, c2w, fov, size):
    raster = rasterize(vertices, faces, c2w, fov, size)
    corners = vertices[faces[raster.triangle.clamp(min=0)]]
    return raster, (corners * raster.barycentric[..., None]).sum(-2)


def render_pattern(vertices, faces, c2w, fov, size, base):
    raster, points = points_seen(vertices, faces, c2w, fov, size)
    colour = pattern(points.reshape(-1, 3), base).reshape(points.shape)
    return torch.where(raster.hit[..., None], colour, torch.ones(3)), raster.hit


def render_vertex_colours(vertices, faces, colours, c2w, fov, size):
    raster = rasterize(vertices, faces, c2w, fov, size)
    colour = (colours[faces[raster.triangle.clamp(min=0)]] * raster.barycentric[..., None]).sum(-2)
    return torch.where(raster.hit[..., None], colour, torch.ones(3))


def render_textured(baked, c2w, fov, size):
    raster = rasterize(baked.vertices, baked.faces, c2w, fov, size)
    uv = (baked.uvs[baked.faces[raster.triangle.clamp(min=0)]] * raster.barycentric[..., None]).sum(-2)  # (V,S,S,2)
    grid = (uv * 2 - 1).reshape(1, -1, 1, 2)
    sampled = F.grid_sample(baked.texture.permute(2, 0, 1)[None], grid, align_corners=False)[0, :, :, 0].T
    return torch.where(raster.hit[..., None], sampled.reshape(uv.shape[:-1] + (3,)), torch.ones(3))


def psnr(image, truth, mask) -> float:
    mse = float(((image - truth) ** 2)[mask].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--faces", type=int, default=500, help="face count of both exported variants")
    parser.add_argument("--size", type=int, default=1024, help="texture size")
    parser.add_argument("--max-parts", type=int, default=3, help="parts per object")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    layout = LAYOUTS["zero123pp_v12"]
    train = layout.camera_to_world()
    held_out = look_at_origin(torch.tensor([15.0, 75.0, 165.0, 255.0]), torch.tensor([0.0, 35.0, -10.0, 45.0]), layout.radius)
    frame = layout.radius * math.tan(math.radians(layout.fov_deg) / 2)
    results = {"vertex colours": [], "texture": []}
    bake_seconds = []
    for obj in evaluation_set(args.objects):
        for part in obj.parts[: args.max_parts]:
            base = torch.tensor(part.display_color, dtype=torch.float32)
            vertices = gltf_to_zup(part.vertices.float())
            centre = (vertices.amax(0) + vertices.amin(0)) / 2
            scale = 0.8 * frame / float((vertices - centre).norm(dim=-1).max())
            vertices = (vertices - centre) * scale
            detailed_vertices, detailed_faces = subdivided(vertices, part.faces, 8 * args.faces)
            low_vertices, low_faces, _ = decimate(detailed_vertices, detailed_faces, torch.zeros_like(detailed_vertices), args.faces)
            images, hit = render_pattern(detailed_vertices, detailed_faces, train, layout.fov_deg, VIEW_SIZE, base)
            views = PartViewsOfOne(images, hit.float(), train, layout.fov_deg)
            truth, mask = render_pattern(detailed_vertices, detailed_faces, held_out, layout.fov_deg, TEST_SIZE, base)

            vertex_colours = pattern(low_vertices, base) if len(low_vertices) > 1 else base[None]
            plain = render_vertex_colours(low_vertices, low_faces, vertex_colours, held_out, layout.fov_deg, TEST_SIZE)
            start = time.perf_counter()
            baked = bake_texture(part.name, low_vertices, low_faces, TextureOptions(size=args.size),
                                 field_color=lambda p, b=base: pattern(p, b), views=views)
            bake_seconds.append(time.perf_counter() - start)
            if baked is None:
                continue
            textured = render_textured(baked, held_out, layout.fov_deg, TEST_SIZE)
            results["vertex colours"].append(psnr(plain, truth, mask))
            results["texture"].append(psnr(textured, truth, mask))
    print(f"procedural set: {args.objects} objects, {len(results['texture'])} parts, {args.faces} faces per part, "
          f"texture {args.size}², held-out cameras 4, {TEST_SIZE} px, device cpu")
    print(f"| variant | faces | PSNR mean (dB) | PSNR min (dB) | bake s/part | peak RSS (GB) |")
    print("|---|---|---|---|---|---|")
    for name, values in results.items():
        seconds = f"{np.mean(bake_seconds):.2f}" if name == "texture" else "-"
        print(f"| {name} | {args.faces} | {np.mean(values):.2f} | {np.min(values):.2f} | {seconds} | "
              f"{peak_bytes(torch.device('cpu')) / 1e9:.2f} |")


if __name__ == "__main__":
    main()
