"""PartGen's multi-sample proposal ranking (PartGen §3.2, "automatic" segmentation).

The segments of N stochastic samples are pooled; each is scored by how many other segments overlap
it with IoU > 0.5; segments are sorted by that score and greedy non-maximum suppression at IoU 0.5
keeps the best of each group. IoU is computed over all views jointly (multi-view masks) and
smoothed with ε = 1e-4 so empty masks do not divide by zero.
"""

from __future__ import annotations

from typing import Sequence

import torch

IOU_EPS = 1e-4


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = IOU_EPS) -> torch.Tensor:
    """IoU between every mask of ``a`` ``[K,...]`` and ``b`` ``[L,...]`` (bool): ``[K,L]``."""
    a = a.reshape(a.shape[0], -1).float()
    b = b.reshape(b.shape[0], -1).float()
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return (intersection + eps) / (union + eps)


def rank_proposals(
    segments: Sequence[torch.Tensor] | torch.Tensor, iou_threshold: float = 0.5, eps: float = IOU_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool segments (``[K_i,V,H,W]`` bool per sample), score by IoU votes, greedy NMS.

    Returns (masks ``[K,V,H,W]`` in rank order, scores ``[K]`` = number of other segments agreeing).
    Ties keep the pooled order (sample by sample), so the ranking is deterministic.
    """
    pooled = torch.cat(list(segments)) if not isinstance(segments, torch.Tensor) else segments
    if pooled.shape[0] == 0:
        return pooled, torch.zeros(0)
    iou = pairwise_iou(pooled, pooled, eps)
    votes = (iou > iou_threshold).sum(dim=1) - 1  # the segment itself does not vote
    order = sorted(range(pooled.shape[0]), key=lambda i: (-int(votes[i]), i))
    kept: list[int] = []
    for index in order:
        if all(iou[index, other] <= iou_threshold for other in kept):
            kept.append(index)
    return pooled[kept], votes[kept].float()
