"""``python -m partgen_models.evaluation.completion_eval``: PartGen's Table 2 (view completion) on
part-structured objects.

    python -m partgen_models.evaluation.completion_eval --procedural --mode none
    python -m partgen_models.evaluation.completion_eval --procedural --mode none partgen training-free \\
        --models-dir models/partgen --n 4 --size 320
    python -m partgen_models.evaluation.completion_eval --eval-set DIR --mode partgen --no-context

Protocol, per object (the procedural set, or every ``*.glb`` of a folder with one node per part):

1. Render the object at the layout's 6 cameras (Zero123++ v1.2 framing, white background) and its
   input view (azimuth 0). These renders *are* the object's views: no multi-view model runs, so the
   completion is measured alone, as in PartGen's Table 2.
2. The ground-truth visible part masks come from the per-pixel part ids (the oracle segmentation);
   parts with fewer than ``min_part_pixels`` visible pixels, or covering the whole object (nothing
   to complete), are left out for every mode alike.
3. Ground truth: each kept part rendered alone (:func:`~partgen_models.rendering.render_part_alone`,
   the object's normalisation), i.e. what the part looks like with nothing in front of it.
4. Complete every kept part with the chosen mode (all parts of an object in one call):
   ``none``: the masked views unchanged (PartGen's "none" row); ``partgen``: PartGen's completion
   network (``--models-dir``/``--completer``; ``--no-context`` zeroes the context, PartGen's ablation);
   ``training-free``: Zero123++ (``--multiview-model``) conditioned on the input view with everything
   but the part removed (its mask from the input view's part ids), blended-latent inpainting.
5. Score each part (:mod:`.completion_metrics`): PSNR over the ground truth's foreground (alpha > 0.5),
   LPIPS, CLIP similarity; means over parts. LPIPS/CLIP are reported as skipped when their weights are
   missing. Prints one markdown table, one row per mode. With tiny random weights the numbers of the
   model rows mean nothing; ``none`` needs no weights at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Protocol, Sequence, Union

import numpy as np
import torch

from ..cameras import LAYOUTS
from ..completion.complete import CompletionError, CompletionOptions, check_part_masks, masked_views
from ..parts import Part
from ..rendering import RenderCameras, load_scene_parts, render_part_alone, render_parts
from ..runtime import Runtime, default_runtime
from ..segmentation.select import PartMasks
from ..views import MultiView, PartViews
from ..weights import WeightsError
from .completion_metrics import LPIPS_NETS, CompletionScorer, PartScores, load_completion_scorer, mean_scores
from .evaluate import EvaluationError, EvaluationOptions
from .procedural import EVAL_SET_SEED, EVAL_SET_SIZE, evaluation_set, write_atomically

logger = logging.getLogger("partgen_models.evaluation.completion_eval")

MODES = ("none", "partgen", "training-free")
_GREY = (0.5, 0.5, 0.5)
PARTGEN_TABLE_2 = ("PartGen Table 2 view PSNR (their test set, 4 views at 512 px): with context 21.38, without 16.80, "
                   "per-view 15.92, none 13.24")


@dataclass(frozen=True)
class CompletionSample:
    """One object ready for completion: its views, the kept parts' visible masks ``[P,V,H,W]`` and
    input-view masks ``[P,H,W]``, and their ground-truth amodal renders ``[P,V,H,W,3]`` / ``[P,V,H,W]``."""

    name: str
    views: MultiView
    part_names: tuple[str, ...]
    masks: torch.Tensor
    input_masks: torch.Tensor
    truth_images: torch.Tensor
    truth_alpha: torch.Tensor

    @property
    def part_masks(self) -> PartMasks:
        return PartMasks(self.masks, self.part_names, (_GREY,) * len(self.part_names), self.views.layout,
                         input_masks=self.input_masks)


def _completable(views: MultiView, name: str, mask: torch.Tensor) -> bool:
    try:
        check_part_masks(views, PartMasks(mask[None], (name,), (_GREY,), views.layout))
    except CompletionError as error:
        logger.info("part %r is left out: %s", name, error)
        return False
    return True


def prepare_completion_sample(name: str, parts: Sequence[Part],
                              options: EvaluationOptions = EvaluationOptions()) -> CompletionSample:
    """Render ``parts`` (glTF frame): views, input view, visible masks, amodal ground truth (steps 1–3)."""
    layout = LAYOUTS[options.layout]
    cameras = RenderCameras.from_layout(layout, options.size)
    rendering = render_parts(parts, cameras, normalization="fit", device=options.device)
    input_camera = RenderCameras.orbit([0.0], [options.input_elevation_deg], radius=layout.radius,
                                       fov_deg=layout.fov_deg, size=cameras.size)
    input_view = render_parts(parts, input_camera, normalization=rendering.normalization, device=options.device)
    views = rendering.to_multiview(options.layout, input_image=input_view.images[0])
    masks = rendering.part_masks()  # (all parts, V, H, W)
    keep = [i for i, part_name in enumerate(rendering.part_names)
            if int(masks[i].sum()) >= options.min_part_pixels and _completable(views, part_name, masks[i])]
    if len(keep) < len(rendering.part_names):
        logger.info("%s: %d of %d parts kept", name, len(keep), len(rendering.part_names))
    truth = [render_part_alone(parts, i, cameras, normalization=rendering.normalization, device=options.device)
             for i in keep]
    size = cameras.size
    return CompletionSample(
        name=name,
        views=views,
        part_names=tuple(rendering.part_names[i] for i in keep),
        masks=masks[keep] if keep else masks[:0],
        input_masks=torch.stack([(input_view.part_ids[0] == i).float() for i in keep]) if keep else torch.zeros(0, size, size),
        truth_images=torch.stack([t.images for t in truth]) if truth else torch.zeros(0, *views.images.shape),
        truth_alpha=torch.stack([t.alpha for t in truth]) if truth else torch.zeros(0, *views.alpha.shape),
    )


def procedural_completion_samples(count: int = EVAL_SET_SIZE, seed: int = EVAL_SET_SEED,
                                  options: EvaluationOptions = EvaluationOptions()) -> Iterator[CompletionSample]:
    for obj in evaluation_set(count, seed):
        yield prepare_completion_sample(obj.name, obj.parts, options)


def folder_completion_samples(folder: Union[str, Path], limit: Optional[int] = None,
                              options: EvaluationOptions = EvaluationOptions()) -> Iterator[CompletionSample]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"evaluation set folder {folder} does not exist; write one with "
                              f"`python -m partgen_models.evaluation --write-set {folder}`")
    paths = sorted(folder.glob("*.glb"))
    if not paths:
        raise EvaluationError(f"{folder} holds no .glb files; each object should be a GLB with one node per part")
    for path in paths[:limit]:
        yield prepare_completion_sample(path.stem, load_scene_parts(path), options)


# ----------------------------------------------------------------------------------------------------
# Modes


class CompletionMethod(Protocol):
    name: str

    def complete(self, sample: CompletionSample, seed: int) -> PartViews:
        """Completed views of every part of ``sample`` at its cameras, in its part order."""
        ...


class NoCompletion:
    """PartGen's "none" row: each part's visible pixels on white, nothing completed."""

    name = "none (baseline)"

    def complete(self, sample: CompletionSample, seed: int) -> PartViews:
        return masked_views(sample.views, sample.part_masks)


class PartGenCompletion:
    """PartGen's completion network (our checkpoint format), loaded from ``models_dir`` on first use."""

    def __init__(self, models_dir: Path, completer: str, options: CompletionOptions, runtime: Runtime) -> None:
        self.models_dir, self.completer, self.options, self.runtime = Path(models_dir), completer, options, runtime
        self.name = "partgen (context)" if options.use_context else "partgen (no context)"
        self._model = None

    def complete(self, sample: CompletionSample, seed: int) -> PartViews:
        from dataclasses import replace

        from ..completion.complete import complete_parts
        from ..completion.completer import FORMAT, load_partgen_completer
        from ..partgen_checkpoint import find_partgen_checkpoint

        if self._model is None:
            roots = [self.models_dir]
            folder = find_partgen_checkpoint(self.completer, roots, FORMAT)
            self._model = load_partgen_completer(folder, roots, dtype=self.runtime.dtype)
        return complete_parts(self._model, sample.views, sample.part_masks, replace(self.options, seed=seed), self.runtime)


class TrainingFreeCompletion:
    """Zero123++ with blended-latent inpainting, conditioned on the input view with the part isolated."""

    name = "training-free (Zero123++)"

    def __init__(self, models_dir: Path, multiview_model: str, options: CompletionOptions, runtime: Runtime) -> None:
        self.models_dir, self.multiview_model, self.options, self.runtime = Path(models_dir), multiview_model, options, runtime
        self._model = None

    def complete(self, sample: CompletionSample, seed: int) -> PartViews:
        from dataclasses import replace

        from ..completion.complete import complete_training_free
        from ..multiview import load_zero123plus
        from ..multiview.catalog import resolve_multiview_model

        if self._model is None:
            files = resolve_multiview_model(self.multiview_model, [self.models_dir])
            self._model = load_zero123plus(files.folder, files.unet_file, dtype=self.runtime.dtype, flavour=files.flavour)
        return complete_training_free(self._model, sample.views, sample.part_masks, sample.input_masks,
                                      replace(self.options, seed=seed), self.runtime)


# ----------------------------------------------------------------------------------------------------
# Scoring and reporting


@dataclass(frozen=True)
class CompletionReport:
    """Per-part scores of one mode (object name, scores) and their means over parts."""

    mode: str
    parts: tuple[tuple[str, PartScores], ...]
    summary: dict

    @property
    def num_objects(self) -> int:
        return len({name for name, _ in self.parts})


def object_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def evaluate_completion(method: CompletionMethod, samples: Iterable[CompletionSample], scorer: CompletionScorer,
                        seed: int = 0) -> CompletionReport:
    """Complete and score every part of every sample; objects without a kept part are skipped."""
    scored = []
    for index, sample in enumerate(samples):
        if not sample.part_names:
            logger.warning("%s has no part to complete; skipped", sample.name)
            continue
        result = method.complete(sample, object_seed(seed, index))
        if result.names != sample.part_names or result.images.shape != sample.truth_images.shape:
            raise EvaluationError(f"{method.name} returned parts {result.names} {tuple(result.images.shape)} for "
                                  f"{sample.part_names} {tuple(sample.truth_images.shape)}")
        for scores in scorer.score(sample.part_names, result.images, sample.truth_images, sample.truth_alpha):
            scored.append((sample.name, scores))
    if not scored:
        raise EvaluationError("no object with a part to complete was evaluated")
    return CompletionReport(method.name, tuple(scored), mean_scores([s for _, s in scored]))


def _cell(value: Optional[float], digits: int, skipped: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "skipped" if skipped else "n/a"
    return f"{value:.{digits}f}"


def markdown_table(reports: Sequence[CompletionReport], scorer: CompletionScorer) -> str:
    """One row per mode (objects, parts, PSNR fg, LPIPS, CLIP), then one line per skipped metric."""
    lines = ["| mode | objects | parts | PSNR fg (dB) ↑ | LPIPS ↓ | CLIP ↑ |", "|---|---:|---:|---:|---:|---:|"]
    for report in reports:
        s = report.summary
        lines.append(f"| {report.mode} | {report.num_objects} | {len(report.parts)} | {_cell(s['psnr'], 2, False)} | "
                     f"{_cell(s['lpips'], 4, 'lpips' in scorer.skipped)} | {_cell(s['clip'], 4, 'clip' in scorer.skipped)} |")
    if scorer.skipped:
        lines += [""] + list(scorer.skipped.values())
    return "\n".join(lines)


def report_json(reports: Sequence[CompletionReport], scorer: CompletionScorer) -> bytes:
    data = {
        "skipped": scorer.skipped,
        "modes": [{"mode": r.mode, "summary": r.summary,
                   "parts": [dict(object=name, **asdict(scores)) for name, scores in r.parts]} for r in reports],
    }
    return json.dumps(data, indent=2, allow_nan=True).encode("utf-8")


# ----------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m partgen_models.evaluation.completion_eval",
                                     description="PartGen's Table 2 (view completion: PSNR on the part's pixels, LPIPS, "
                                                 "CLIP) for completion modes on part-structured objects.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--eval-set", metavar="DIR", help="folder of part-structured .glb files (one node per part)")
    source.add_argument("--procedural", action="store_true", help="the procedural evaluation set, regenerated in memory")
    parser.add_argument("--mode", nargs="+", default=["none"], choices=MODES,
                        help="completion modes, one table row each (none needs no weights)")
    parser.add_argument("--models-dir", default="models/partgen", help="folder with the checkpoints (partgen, training-free)")
    parser.add_argument("--completer", default="partgen-completion", help="partgen: checkpoint folder name in --models-dir")
    parser.add_argument("--no-context", action="store_true", help="partgen: zero the whole-object context (PartGen's ablation)")
    parser.add_argument("--multiview-model", default="zero123plus-v1.2-instantmesh",
                        help="training-free: the Zero123++ model (official choice or folder name in --models-dir)")
    parser.add_argument("--steps", type=int, default=28, help="denoising steps (partgen, training-free)")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    parser.add_argument("--max-batch", type=int, default=8, help="parts denoised together (memory, not results)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the completion samplers")
    parser.add_argument("--n", type=int, default=None,
                        help=f"number of objects (procedural default {EVAL_SET_SIZE}; folder default: all)")
    parser.add_argument("--set-seed", type=int, default=EVAL_SET_SEED, help="seed of the procedural set")
    parser.add_argument("--size", type=int, default=None, help="view resolution (default: the layout's, 320)")
    parser.add_argument("--device", default=None, help="where to render, complete and score (cpu, cuda; default: cuda if any)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp16", "bf16", "fp32"), help="model precision")
    parser.add_argument("--metrics-dir", default=None,
                        help="folder with the LPIPS (lpips/) and CLIP (clip-vit-base-patch32/) weights (default: --models-dir)")
    parser.add_argument("--lpips-net", default="alex", choices=sorted(LPIPS_NETS), help="LPIPS trunk")
    parser.add_argument("--no-lpips", action="store_true", help="do not compute LPIPS")
    parser.add_argument("--no-clip", action="store_true", help="do not compute CLIP similarity")
    parser.add_argument("--no-download", action="store_true", help="never download missing metric weights")
    parser.add_argument("--json", metavar="FILE", help="also write per-part scores to FILE (JSON)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def _methods(args: argparse.Namespace, runtime: Runtime) -> list[CompletionMethod]:
    options = CompletionOptions(num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                                use_context=not args.no_context, max_batch=args.max_batch)
    makers = {
        "none": lambda: NoCompletion(),
        "partgen": lambda: PartGenCompletion(Path(args.models_dir), args.completer, options, runtime),
        "training-free": lambda: TrainingFreeCompletion(Path(args.models_dir), args.multiview_model, options, runtime),
    }
    return [makers[mode]() for mode in dict.fromkeys(args.mode)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.steps < 1 or args.max_batch < 1:
        parser.error("--steps and --max-batch must be at least 1")
    try:
        runtime = default_runtime(args.device)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(args.precision, runtime.dtype)
        runtime = Runtime(device=runtime.device, dtype=dtype)
        options = EvaluationOptions(size=args.size, device=str(runtime.device))
        methods = _methods(args, runtime)
        start = time.perf_counter()
        samples = list(procedural_completion_samples(args.n or EVAL_SET_SIZE, args.set_seed, options) if args.procedural
                       else folder_completion_samples(args.eval_set, args.n, options))
        logger.info("rendered %d objects (views, input view, amodal parts) in %.1f s", len(samples), time.perf_counter() - start)
        scorer = load_completion_scorer(args.metrics_dir or args.models_dir, args.lpips_net, not args.no_lpips,
                                        not args.no_clip, not args.no_download, runtime.device)
        reports = []
        for method in methods:
            start = time.perf_counter()
            reports.append(evaluate_completion(method, samples, scorer, seed=args.seed))
            logger.info("%s: %d parts in %.1f s", method.name, len(reports[-1].parts), time.perf_counter() - start)
        if args.json:
            write_atomically(Path(args.json), report_json(reports, scorer), overwrite=True)
    except (EvaluationError, CompletionError, WeightsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = options.size or LAYOUTS[options.layout].view_size
    source = f"the procedural set (seed {args.set_seed})" if args.procedural else str(args.eval_set)
    print(f"Part completion on {source}: {LAYOUTS[options.layout].rows * LAYOUTS[options.layout].cols} rendered "
          f"views at {size} px, ground-truth part masks; PSNR over the amodal part's pixels (alpha > 0.5).\n")
    print(markdown_table(reports, scorer))
    print(f"\n{PARTGEN_TABLE_2}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
