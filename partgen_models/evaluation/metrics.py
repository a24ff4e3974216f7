"""PartGen's part-segmentation metrics (arXiv 2412.18608, Sec. 4; REFERENCE.md "Evaluation").

Masks are multi-view: a proposal or a ground-truth part is one ``[V,H,W]`` bool mask over all views,
and IoU is taken over all views jointly (intersections and unions summed over every pixel of every
view), smoothed as the paper smooths it: ``IoU(a, b) = (|a ∩ b| + ε) / (|a ∪ b| + ε)``, ε = 1e-4.

Automatic mode. A method returns a ranked list of K proposals for an object with S ground-truth
parts. Proposals are matched greedily in rank order: proposal k goes to the *unmatched* ground-truth
part of highest IoU (ties: the lowest part index); it is a hit, ``y_k = 1``, if that IoU is ≥ τ, and
only a hit consumes the part (a miss leaves every part available to later proposals, as in COCO-style
matching). Then

    AP = (1/S) Σ_k y_k · (Σ_{i≤k} y_i) / k

(the mean, over the S parts, of the precision at the rank where each part is found; a part never found
contributes 0). mAP is the mean of AP over objects, at τ = 0.5 and τ = 0.75. Recall@K is the share of
the S parts hit by the top K proposals, ``(Σ_{k≤K} y_k) / S``, at τ = 0.5 unless stated; greedy matching
in rank order means the top K proposals are matched exactly as in the full list.

Seeded mode. The paper gives the method one ground-truth part at a time together with a seed point
inside it; the method returns a ranked list of proposals for that seed. We score each (part, seed)
with the same AP at S = 1: the part is matched by the first proposal whose IoU with it is ≥ τ, at rank
k*, and ``AP = 1/k*`` (0 if no proposal reaches τ; later proposals cannot match an already matched
part). An object's seeded AP is the mean over its parts; seeded mAP is the mean over objects. The seed
point is the most interior pixel of the part's largest visible region (:func:`seed_point`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

EPSILON = 1e-4  # PartGen's IoU smoothing
THRESHOLDS = (0.5, 0.75)
RECALL_KS = (1, 3, 5, 10)


def _flatten(masks: torch.Tensor, name: str) -> torch.Tensor:
    if masks.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool mask tensor, got {masks.dtype}")
    if masks.ndim < 2:
        raise ValueError(f"{name} must be [N, ...] masks, got shape {tuple(masks.shape)}")
    return masks.reshape(masks.shape[0], math.prod(masks.shape[1:]))


def mask_iou(proposals: torch.Tensor, truth: torch.Tensor, eps: float = EPSILON) -> torch.Tensor:
    """Smoothed IoU ``[K,S]`` (float64) between K and S masks of the same shape (e.g. ``[K,V,H,W]`` and
    ``[S,V,H,W]``), over all their pixels jointly."""
    if proposals.shape[1:] != truth.shape[1:]:
        raise ValueError(f"proposal masks {tuple(proposals.shape)} and ground-truth masks {tuple(truth.shape)} "
                         "must have the same per-mask shape [V,H,W]")
    a = _flatten(proposals, "proposals")
    b = _flatten(truth, "truth")
    if a.shape[0] == 0 or b.shape[0] == 0:
        return torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    # Counts of 0/1 products are exact in float32 while below 2^24 pixels per mask pair.
    dtype = torch.float32 if a.shape[1] < (1 << 24) else torch.float64
    intersection = (a.to(dtype) @ b.to(dtype).T).double()  # (K, S)
    union = a.sum(1, dtype=torch.float64)[:, None] + b.sum(1, dtype=torch.float64)[None] - intersection
    return (intersection + eps) / (union + eps)


@dataclass(frozen=True)
class Matching:
    """Result of greedy matching in rank order.

    hits: ``[K]`` bool, y_k. matched: ``[K]`` int64, the ground-truth part each hit consumed (-1 on a miss).
    best_iou: ``[K]`` the IoU with the unmatched part of highest IoU at the proposal's turn (0 when none
    was left). num_truth: S.
    """

    hits: torch.Tensor
    matched: torch.Tensor
    best_iou: torch.Tensor
    num_truth: int


def greedy_match(iou: torch.Tensor, threshold: float) -> Matching:
    """Match ranked proposals (rows of ``iou [K,S]``, best first) to ground-truth parts (columns)."""
    if iou.ndim != 2:
        raise ValueError(f"iou must be [K,S], got {tuple(iou.shape)}")
    k, s = iou.shape
    table = iou.double().cpu().numpy()
    free = np.ones(s, dtype=bool)
    hits = np.zeros(k, dtype=bool)
    matched = np.full(k, -1, dtype=np.int64)
    best = np.zeros(k, dtype=np.float64)
    for row in range(k):
        if not free.any():
            continue
        candidates = np.where(free, table[row], -np.inf)
        column = int(np.argmax(candidates))  # first maximum: ties go to the lowest part index
        best[row] = candidates[column]
        if candidates[column] >= threshold:
            hits[row], matched[row], free[column] = True, column, False
    return Matching(torch.from_numpy(hits), torch.from_numpy(matched), torch.from_numpy(best), s)


def average_precision_from_hits(hits: torch.Tensor, num_truth: int) -> float:
    """AP = (1/S) Σ_k y_k · (Σ_{i≤k} y_i) / k."""
    if num_truth < 1:
        raise ValueError("average precision needs at least one ground-truth part")
    y = hits.double()
    if y.numel() == 0:
        return 0.0
    precision = y.cumsum(0) / torch.arange(1, y.numel() + 1, dtype=torch.float64)
    return float((y * precision).sum() / num_truth)


def recall_from_hits(hits: torch.Tensor, num_truth: int, k: int) -> float:
    """Share of the ground-truth parts hit by the top ``k`` proposals."""
    if num_truth < 1:
        raise ValueError("recall needs at least one ground-truth part")
    return float(hits[:k].double().sum() / num_truth)


def average_precision(proposals: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5,
                      eps: float = EPSILON) -> float:
    """Automatic-mode AP of ranked ``proposals [K,V,H,W]`` against ``truth [S,V,H,W]`` at IoU ``threshold``."""
    matching = greedy_match(mask_iou(proposals, truth, eps), threshold)
    return average_precision_from_hits(matching.hits, matching.num_truth)


def recall_at_k(proposals: torch.Tensor, truth: torch.Tensor, k: int, threshold: float = 0.5,
                eps: float = EPSILON) -> float:
    """Recall@K: share of the parts in ``truth`` matched (IoU ≥ threshold) by the top ``k`` proposals."""
    matching = greedy_match(mask_iou(proposals, truth, eps), threshold)
    return recall_from_hits(matching.hits, matching.num_truth, k)


def seeded_average_precision(proposals: torch.Tensor, part: torch.Tensor, threshold: float = 0.5,
                             eps: float = EPSILON) -> float:
    """Seeded-mode AP of the ranked ``proposals [K,V,H,W]`` made for one part ``[V,H,W]``: 1/k* for the
    first proposal k* with IoU ≥ threshold, 0 if none."""
    return average_precision(proposals, part[None], threshold, eps)


@dataclass(frozen=True)
class ObjectScores:
    """One object's automatic-mode scores: AP per threshold, recall per K (at ``recall_threshold``)."""

    num_truth: int
    num_proposals: int
    ap: dict[float, float]
    recall: dict[int, float]
    recall_threshold: float
    seeded_ap: dict[float, float] = field(default_factory=dict)  # empty when seeded mode was not run


def score_object(proposals: torch.Tensor, truth: torch.Tensor, thresholds: Sequence[float] = THRESHOLDS,
                 recall_ks: Sequence[int] = RECALL_KS, recall_threshold: float = 0.5,
                 eps: float = EPSILON) -> ObjectScores:
    """AP at each threshold and recall@K of one object's ranked proposals (IoU computed once)."""
    if truth.shape[0] < 1:
        raise ValueError("an object without ground-truth parts cannot be scored")
    iou = mask_iou(proposals, truth, eps)
    ap = {t: average_precision_from_hits(greedy_match(iou, t).hits, truth.shape[0]) for t in thresholds}
    recall_hits = greedy_match(iou, recall_threshold).hits
    recall = {k: recall_from_hits(recall_hits, truth.shape[0], k) for k in recall_ks}
    return ObjectScores(num_truth=truth.shape[0], num_proposals=proposals.shape[0], ap=ap, recall=recall,
                        recall_threshold=recall_threshold)


def mean_scores(objects: Sequence[ObjectScores]) -> dict[str, float]:
    """mAP per threshold, mean recall@K and (where every object has it) seeded mAP, over objects."""
    if not objects:
        raise ValueError("no objects were scored")
    summary = {}
    for t in objects[0].ap:
        summary[f"mAP{round(t * 100)}"] = float(np.mean([o.ap[t] for o in objects]))
    if all(o.seeded_ap for o in objects):
        for t in objects[0].seeded_ap:
            summary[f"seeded mAP{round(t * 100)}"] = float(np.mean([o.seeded_ap[t] for o in objects]))
    for k in objects[0].recall:
        summary[f"R@{k}"] = float(np.mean([o.recall[k] for o in objects]))
    return summary


@dataclass(frozen=True)
class SeedPoint:
    """A pixel inside a part: view index, row, column."""

    view: int
    row: int
    col: int


def seed_point(part: torch.Tensor) -> SeedPoint:
    """The most interior pixel (largest distance to the part's boundary) of a part's mask ``[V,H,W]``,
    in the view where the part is largest; ties go to the first in row-major order. The frame's edge
    counts as boundary."""
    from scipy.ndimage import distance_transform_edt

    if part.ndim != 3 or not part.any():
        raise ValueError("a seed point needs a non-empty [V,H,W] part mask")
    view = int(part.flatten(1).sum(1).argmax())
    mask = np.pad(part[view].cpu().numpy(), 1)  # a border of background, so the frame edge counts as boundary
    distance = distance_transform_edt(mask)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return SeedPoint(view, int(row), int(col))
