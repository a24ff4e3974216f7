"""MMPart placement measured on the procedural part-structured set (issue 9, item 6).

For each object: render it from the input camera (the input image), render each ground-truth part
alone from the same camera (what a perfect edit model returns), normalise each part mesh as the
pipeline would (undo the Multi-View crop box, centre it in depth, then perturb scale and position as
a reconstruction's error would), place the parts, and compare with the ground-truth assembly:

- **Chamfer**: per part, the symmetric mean nearest-neighbour distance between surface samples of the
  placed and the true part, in units of the object's bounding radius;
- **part IoU**: the mean IoU of every part's visible mask in renders of the placed and the true assembly
  from the input camera and the six Zero123++ cameras around it (the side views show depth errors,
  which the input view cannot).

Rows: crop box only; + silhouette matching; + depth from the whole-object reference (itself normalised
and perturbed the same way); + depth from a depth map (the true depth, encoded as a "near is bright"
IMAGE); a row with every part at the true position but normalised scale errors shows the floor.

``python -m partgen_models.evaluation.placement_eval [--n 22] [--size 256]`` prints the table.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch

from ..assembly.isolation import IsolatedParts, collect_isolated_parts
from ..assembly.placement import AssemblyFrame, PlacementOptions, place_parts
from ..cameras import LAYOUTS
from ..multiview.preprocess import square_crop_box
from ..parts import Part
from ..rendering.renderer import Normalization, RenderCameras, RenderOptions, fit_normalization, render_parts
from .procedural import EVAL_SET_SEED, EVAL_SET_SIZE, evaluation_set

logger = logging.getLogger(__name__)

FOREGROUND_RATIO = 0.85
OBJECT_FILL = 0.8  # the object's bounding sphere spans 80% of the input frame, as a framed photo would
CHAMFER_SAMPLES = 2048


@dataclass(frozen=True)
class PlacementSample:
    """One object ready to place: true parts in the assembly frame, the isolation, normalised parts."""

    name: str
    truth: tuple[Part, ...]
    isolated: IsolatedParts
    crop_boxes: tuple[tuple[int, int, int], ...]
    normalised: tuple[Part, ...]
    reference: tuple[Part, ...]
    reference_box: tuple[int, int, int]
    depth_map: torch.Tensor  # (1, S, S, 3) true depth as a "near is bright" image
    radius: float


def _transformed(part: Part, transform: torch.Tensor, name: Optional[str] = None) -> Part:
    vertices = part.vertices.double() @ transform[:3, :3].T + transform[:3, 3]
    return Part(name=name or part.name, vertices=vertices.float(), faces=part.faces, vertex_colors=part.vertex_colors)


def _normalise(part: Part, frame: AssemblyFrame, box: Sequence[int], rng: np.random.Generator,
               scale_error: float, offset_error: float) -> Part:
    """What a reconstruction from the crop would give: the crop undone, centred in depth, perturbed."""
    inverse = torch.linalg.inv(frame.box_transform(box))
    local = _transformed(part, inverse)
    low, high = local.vertices.double().amin(0), local.vertices.double().amax(0)
    recentre = torch.eye(4, dtype=torch.float64)
    recentre[2, 3] = -float(low[2] + high[2]) / 2  # the reconstruction sits at the centre of its views' orbit
    perturb = torch.eye(4, dtype=torch.float64)
    perturb[:3, :3] *= math.exp(rng.normal(0.0, scale_error))
    perturb[:3, 3] = torch.from_numpy(rng.normal(0.0, offset_error, 3))
    return _transformed(local, perturb @ recentre)


def prepare_placement_sample(name: str, parts: Sequence[Part], size: int = 256, seed: int = 0,
                             scale_error: float = 0.05, offset_error: float = 0.03) -> PlacementSample:
    """Render, isolate and normalise one object's parts (see the module docstring)."""
    frame = AssemblyFrame(size, size, 30.0)
    cameras = frame.cameras(size)
    normalization = fit_normalization(parts, cameras, OBJECT_FILL)
    truth = tuple(_transformed(p, torch.eye(4, dtype=torch.float64)) for p in parts)
    truth = tuple(Part(p.name, normalization.apply(p.vertices.double()).float(), p.faces, p.vertex_colors) for p in truth)
    lit = RenderOptions(supersample=1)
    whole = render_parts(truth, cameras, normalization=Normalization(), options=lit)
    input_image = whole.images  # (1, S, S, 3)
    images, masks = [], []
    for index in range(len(truth)):
        alone = render_parts([truth[index]], cameras, normalization=Normalization(), options=lit)
        images.append(alone.images)
        masks.append(alone.alpha)
    names = [p.name for p in truth]
    isolated = collect_isolated_parts(names, (size, size), images, masks, input_image)
    rng = np.random.default_rng(seed)
    boxes = tuple(square_crop_box(isolated.masks[i], FOREGROUND_RATIO, i) for i in range(len(truth)))
    normalised = tuple(_normalise(p, frame, box, rng, scale_error, offset_error) for p, box in zip(truth, boxes))
    whole_box = square_crop_box(whole.alpha[0], FOREGROUND_RATIO, 0)
    inverse = torch.linalg.inv(frame.box_transform(whole_box))
    reference_parts = [_transformed(p, inverse) for p in truth]
    low = torch.cat([p.vertices for p in reference_parts]).double().amin(0)
    high = torch.cat([p.vertices for p in reference_parts]).double().amax(0)
    recentre = torch.eye(4, dtype=torch.float64)
    recentre[2, 3] = -float(low[2] + high[2]) / 2
    perturb = torch.eye(4, dtype=torch.float64)
    perturb[:3, :3] *= math.exp(rng.normal(0.0, scale_error))
    perturb[:3, 3] = torch.from_numpy(rng.normal(0.0, offset_error, 3))
    reference = tuple(_transformed(p, perturb @ recentre) for p in reference_parts)
    depth = whole.depth[0]
    hit = whole.alpha[0] > 0.5
    near, far = float(depth[hit].min()), float(depth[hit].max())
    encoded = torch.where(hit, 1.0 - (depth - near) / max(far - near, 1e-6) * 0.8, torch.zeros_like(depth))
    radius = float(torch.cat([p.vertices for p in truth]).norm(dim=-1).max())
    return PlacementSample(name, truth, isolated, boxes, normalised, reference, whole_box,
                           encoded[None, ..., None].expand(1, size, size, 3).contiguous(), radius)


def _surface_samples(part: Part, count: int, generator: torch.Generator) -> torch.Tensor:
    vertices = part.vertices.double() @ part.transform.double()[:3, :3].T + part.transform.double()[:3, 3]
    corners = vertices[part.faces]  # (M, 3, 3)
    areas = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1).norm(dim=-1)
    faces = torch.multinomial(areas.float() + 1e-12, count, replacement=True, generator=generator)
    u, v = torch.rand(count, generator=generator, dtype=torch.float64), torch.rand(count, generator=generator, dtype=torch.float64)
    flip = u + v > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    c = corners[faces]
    return c[:, 0] + u[:, None] * (c[:, 1] - c[:, 0]) + v[:, None] * (c[:, 2] - c[:, 0])


def chamfer(a: Part, b: Part, count: int = CHAMFER_SAMPLES, seed: int = 0) -> float:
    """Symmetric mean nearest-neighbour distance between surface samples of two (placed) parts."""
    generator = torch.Generator().manual_seed(seed)
    pa, pb = _surface_samples(a, count, generator), _surface_samples(b, count, generator)
    distances = torch.cdist(pa, pb)
    return float(distances.min(1).values.mean() + distances.min(0).values.mean()) / 2


def assembly_part_iou(placed: Sequence[Part], truth: Sequence[Part], size: int) -> float:
    """Mean over parts and views of visible-part-mask IoU (input camera + the six Zero123++ cameras)."""
    layout = LAYOUTS["zero123pp_v12"]
    c2w = torch.cat([RenderCameras.orbit([0.0], [0.0], size=size).c2w, layout.camera_to_world()])
    cameras = RenderCameras(c2w, layout.fov_deg, size)
    options = RenderOptions(shading="unlit")
    mine = render_parts(placed, cameras, normalization=Normalization(), options=options).part_masks()
    true = render_parts(truth, cameras, normalization=Normalization(), options=options).part_masks()
    inter = (mine & true).flatten(2).sum(-1).double()
    union = (mine | true).flatten(2).sum(-1).double()
    seen = union > 0
    return float((inter[seen] / union[seen]).mean())


METHODS = {
    "crop box": PlacementOptions(silhouette_rounds=0, depth_source="none", max_penetration=1.0),
    "+ silhouette": PlacementOptions(depth_source="none", max_penetration=1.0),
    "+ silhouette + separation": PlacementOptions(depth_source="none"),
    "+ silhouette + reference depth": PlacementOptions(depth_source="reference", max_penetration=1.0),
    "+ silhouette + reference depth + separation": PlacementOptions(depth_source="reference"),
    "+ silhouette + depth map": PlacementOptions(depth_source="depth map", max_penetration=1.0),
    "+ silhouette + depth map + separation": PlacementOptions(depth_source="depth map"),
}


@dataclass(frozen=True)
class PlacementScores:
    method: str
    chamfer: float
    part_iou: float
    parts: int
    seconds: float


def evaluate_placement(samples: Sequence[PlacementSample], method: str, size: int) -> PlacementScores:
    options = replace(METHODS[method], render_size=size)
    distances, ious, start = [], [], time.perf_counter()
    for sample in samples:
        result = place_parts(list(sample.normalised), sample.isolated, sample.crop_boxes, options,
                             reference=sample.reference, reference_box=sample.reference_box,
                             depth_map=sample.depth_map)
        distances += [chamfer(p, t) / sample.radius for p, t in zip(result.parts, sample.truth)]
        ious.append(assembly_part_iou(result.parts, sample.truth, size))
    return PlacementScores(method, float(np.mean(distances)), float(np.mean(ious)), len(distances),
                           time.perf_counter() - start)


def markdown_table(scores: Sequence[PlacementScores]) -> str:
    lines = ["| placement | Chamfer / radius (lower is better) | part IoU, 7 views (higher is better) | s per object |",
             "|---|---|---|---|"]
    for row in scores:
        lines.append(f"| {row.method} | {row.chamfer:.4f} | {row.part_iou:.3f} | {row.seconds:.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m partgen_models.evaluation.placement_eval",
                                     description="MMPart placement on the procedural set: per-part Chamfer and "
                                                 "assembly part IoU, with and without the whole-object reference.")
    parser.add_argument("--n", type=int, default=EVAL_SET_SIZE, help=f"number of objects (default {EVAL_SET_SIZE})")
    parser.add_argument("--set-seed", type=int, default=EVAL_SET_SEED, help="seed of the procedural set")
    parser.add_argument("--size", type=int, default=256, help="input image and render size in pixels (32..1024)")
    parser.add_argument("--scale-error", type=float, default=0.05, help="std of the log-scale perturbation")
    parser.add_argument("--offset-error", type=float, default=0.03, help="std of the position perturbation (units)")
    parser.add_argument("--method", nargs="+", choices=list(METHODS), default=list(METHODS), help="rows to compute")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if not 1 <= args.n <= 1000:
        parser.error(f"--n must be within 1..1000, got {args.n}")
    if not 32 <= args.size <= 1024:
        parser.error(f"--size must be within 32..1024, got {args.size}")
    for name in ("scale_error", "offset_error"):
        value = getattr(args, name)
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be within 0..1, got {value}")
    samples = [prepare_placement_sample(obj.name, obj.parts, args.size, seed=index, scale_error=args.scale_error,
                                        offset_error=args.offset_error)
               for index, obj in enumerate(evaluation_set(args.n, args.set_seed))]
    scores = []
    for method in args.method:
        row = evaluate_placement(samples, method, args.size)
        scores.append(PlacementScores(row.method, row.chamfer, row.part_iou, row.parts, row.seconds / len(samples)))
    parts = scores[0].parts
    print(f"MMPart placement on the procedural set (seed {args.set_seed}, {len(samples)} objects, {parts} parts), "
          f"{args.size} px, perfect isolation, normalised parts perturbed (log-scale std {args.scale_error}, "
          f"offset std {args.offset_error}).\n")
    print(markdown_table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
