"""Evaluating a proposal backend on part-structured objects, as PartGen evaluates (Sec. 4).

Numbered steps per object: render its views at the layout's cameras (Zero123++ v1.2 framing, white
background) together with the per-pixel visible-part ids, which give the ground-truth part masks;
ask the backend for ranked proposals (automatic mode, then one call per part with a seed point
inside it for seeded mode); score them (:mod:`.metrics`). Parts that no view sees (fewer than
``min_part_pixels`` visible pixels over all views) are left out of the ground truth: no method can
segment them from the views.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..checks import refuse_non_finite
from ..cameras import LAYOUTS
from ..parts import Part
from ..rendering import RenderCameras, load_scene_parts, render_parts
from ..views import MultiView
from .backends import ProposalBackend, SeededModeUnsupported
from .metrics import RECALL_KS, THRESHOLDS, ObjectScores, mean_scores, score_object, seed_point, seeded_average_precision
from .procedural import EVAL_SET_SEED, EVAL_SET_SIZE, evaluation_set

logger = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """The evaluation cannot run as asked; the message says why."""


@dataclass(frozen=True)
class EvaluationOptions:
    """How objects are rendered and scored.

    layout: the view layout whose cameras render the objects (``zero123pp_v12``: 6 views, FoV 30°).
    size: view resolution; None uses the layout's (320 for Zero123++).
    input_elevation_deg: elevation of the rendered input image (azimuth 0, the view the layout's
        azimuths are relative to), for backends that also segment the input image.
    thresholds: IoU thresholds of AP (PartGen: 0.5, 0.75). recall_ks / recall_threshold: recall@K.
    seeded: also run seeded mode (one backend call per ground-truth part).
    min_part_pixels: parts with fewer visible pixels over all views are left out of the ground truth.
    device: where to render ("cpu", "cuda"; None: CPU).
    """

    layout: str = "zero123pp_v12"
    size: Optional[int] = None
    input_elevation_deg: float = 0.0
    thresholds: tuple[float, ...] = THRESHOLDS
    recall_ks: tuple[int, ...] = RECALL_KS
    recall_threshold: float = 0.5
    seeded: bool = True
    min_part_pixels: int = 16
    device: Optional[str] = None

    def __post_init__(self) -> None:
        refuse_non_finite(self, EvaluationError)
        if self.layout not in LAYOUTS:
            raise EvaluationError(f"unknown view layout {self.layout!r}; known: {sorted(LAYOUTS)}")
        if self.min_part_pixels < 1:
            raise EvaluationError(f"min_part_pixels must be at least 1, got {self.min_part_pixels}")


@dataclass(frozen=True)
class EvaluationSample:
    """One object ready to evaluate: its views, the names and multi-view masks of its visible parts."""

    name: str
    views: MultiView
    part_names: tuple[str, ...]
    truth: torch.Tensor  # (S, V, H, W) bool


def prepare_sample(name: str, parts: Sequence[Part], options: EvaluationOptions = EvaluationOptions()) -> EvaluationSample:
    """Render ``parts`` (glTF frame) at the layout's cameras and derive the ground-truth part masks."""
    layout = LAYOUTS[options.layout]
    cameras = RenderCameras.from_layout(layout, options.size)
    rendering = render_parts(parts, cameras, normalization="fit", device=options.device)
    # The input view is framed exactly as the others (same normalisation), at azimuth 0.
    input_camera = RenderCameras.orbit([0.0], [options.input_elevation_deg], radius=layout.radius,
                                       fov_deg=layout.fov_deg, size=cameras.size)
    input_view = render_parts(parts, input_camera, normalization=rendering.normalization, device=options.device)
    masks = rendering.part_masks()
    visible = masks.flatten(1).sum(1) >= options.min_part_pixels
    hidden = [n for n, v in zip(rendering.part_names, visible.tolist()) if not v]
    if hidden:
        logger.info("%s: parts seen by no view are left out of the ground truth: %s", name, ", ".join(hidden))
    keep = visible.nonzero().flatten().tolist()
    views = rendering.to_multiview(options.layout, input_image=input_view.images[0])
    return EvaluationSample(name=name, views=views, part_names=tuple(rendering.part_names[i] for i in keep),
                            truth=masks[keep])


def folder_samples(folder: Union[str, Path], limit: Optional[int] = None,
                   options: EvaluationOptions = EvaluationOptions()) -> Iterator[EvaluationSample]:
    """Samples from the ``*.glb`` files of ``folder`` (sorted by name; the first ``limit``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"evaluation set folder {folder} does not exist; write one with "
                              f"`python -m partgen_models.evaluation --write-set {folder}`")
    paths = sorted(folder.glob("*.glb"))
    if not paths:
        raise EvaluationError(f"{folder} holds no .glb files; each object should be a GLB with one node per part")
    for path in paths[:limit]:
        yield prepare_sample(path.stem, load_scene_parts(path), options)


def procedural_samples(count: int = EVAL_SET_SIZE, seed: int = EVAL_SET_SEED,
                       options: EvaluationOptions = EvaluationOptions()) -> Iterator[EvaluationSample]:
    """Samples of the procedural evaluation set, regenerated deterministically."""
    for obj in evaluation_set(count, seed):
        yield prepare_sample(obj.name, obj.parts, options)


@dataclass(frozen=True)
class EvaluationReport:
    """Per-object scores and their means for one backend."""

    backend: str
    objects: tuple[tuple[str, ObjectScores], ...]
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def num_parts(self) -> int:
        return sum(scores.num_truth for _, scores in self.objects)


def _call_seed(seed: int, *indices: int) -> int:
    return int(np.random.SeedSequence([seed, *indices]).generate_state(1)[0])


def _checked(proposals: torch.Tensor, sample: EvaluationSample, backend: ProposalBackend) -> torch.Tensor:
    expected = tuple(sample.truth.shape[1:])
    if not isinstance(proposals, torch.Tensor) or proposals.ndim != 4 or tuple(proposals.shape[1:]) != expected:
        shape = tuple(proposals.shape) if isinstance(proposals, torch.Tensor) else type(proposals).__name__
        raise EvaluationError(f"backend {backend.name!r} returned proposals of shape {shape}; expected [K,{','.join(map(str, expected))}]")
    return proposals.bool().cpu()


def evaluate_backend(backend: ProposalBackend, samples: Iterable[EvaluationSample],
                     options: EvaluationOptions = EvaluationOptions(), seed: int = 0) -> EvaluationReport:
    """Score ``backend`` on every sample; objects without visible parts are skipped with a warning."""
    seeded = options.seeded
    results = []
    for index, sample in enumerate(samples):
        if sample.truth.shape[0] == 0:
            logger.warning("%s has no visible part; skipped", sample.name)
            continue
        extra = {"truth": sample.truth} if getattr(backend, "needs_ground_truth", False) else {}
        proposals = _checked(backend.propose(sample.views, seed=_call_seed(seed, index), **extra), sample, backend)
        scores = score_object(proposals, sample.truth, options.thresholds, options.recall_ks, options.recall_threshold)
        if seeded:
            try:
                per_part = []
                for part in range(sample.truth.shape[0]):
                    point = seed_point(sample.truth[part])
                    ranked = _checked(backend.propose(sample.views, seed=_call_seed(seed, index, part + 1), point=point,
                                                      **extra), sample, backend)
                    per_part.append([seeded_average_precision(ranked, sample.truth[part], t) for t in options.thresholds])
                scores = dataclasses.replace(scores, seeded_ap=dict(zip(options.thresholds, np.mean(per_part, 0).tolist())))
            except SeededModeUnsupported:
                logger.info("backend %r has no seeded mode; seeded mAP is not reported", backend.name)
                seeded = False
        results.append((sample.name, scores))
    if not results:
        raise EvaluationError("no object with visible parts was evaluated")
    if not seeded:  # a backend without seeded mode: drop partial seeded scores
        results = [(name, dataclasses.replace(s, seeded_ap={})) for name, s in results]
    objects = tuple(results)
    return EvaluationReport(backend=backend.name, objects=objects, summary=mean_scores([s for _, s in objects]))


def markdown_table(reports: Sequence[EvaluationReport]) -> str:
    """One row per backend: objects, parts, mAP and seeded mAP at each threshold, recall@K (percent)."""
    columns: list[str] = []
    for report in reports:
        for key in report.summary:
            if key not in columns:
                columns.append(key)
    header = ["backend", "objects", "parts", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for report in reports:
        cells = [report.backend, str(len(report.objects)), str(report.num_parts)]
        cells += [f"{100 * report.summary[c]:.1f}" if c in report.summary else "n/a" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
