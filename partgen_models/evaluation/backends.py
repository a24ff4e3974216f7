"""Proposal backends: what the evaluation asks a segmentation method for, and two reference oracles.

A backend turns one object's views into ranked multi-view part proposals::

    class MyBackend:
        name = "my-method"
        needs_ground_truth = False

        def propose(self, views: MultiView, *, seed: int = 0, point: SeedPoint | None = None) -> torch.Tensor:
            ...  # [K,V,H,W] bool at the views' resolution, best first

Without ``point`` it proposes every part it finds (automatic mode); with ``point`` (a pixel in
``views.images[point.view]``) it proposes, best first, masks of the part under that pixel (seeded
mode); a backend that cannot do seeded mode raises :class:`SeededModeUnsupported`. ``seed`` makes
stochastic backends reproducible (use a ``torch.Generator``, never the global RNG). Register a
factory in :data:`BACKENDS` to make it available to ``python -m partgen_models.evaluation``.

The oracles are the only backends that see the ground truth: the evaluator passes it as
``truth=[S,V,H,W]`` to a backend whose ``needs_ground_truth`` is true, and to no other.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..views import MultiView
from .metrics import SeedPoint


class SeededModeUnsupported(NotImplementedError):
    """The backend cannot propose masks for a seed point."""


@runtime_checkable
class ProposalBackend(Protocol):
    name: str
    needs_ground_truth: bool

    def propose(self, views: MultiView, *, seed: int = 0, point: Optional[SeedPoint] = None,
                **kwargs) -> torch.Tensor:
        """Ranked proposals ``[K,V,H,W]`` bool, best first."""
        ...


def _empty(truth: torch.Tensor) -> torch.Tensor:
    return torch.zeros((0, *truth.shape[1:]), dtype=torch.bool)


def _part_under(point: SeedPoint, truth: torch.Tensor) -> int:
    hits = truth[:, point.view, point.row, point.col].nonzero().flatten()
    if hits.numel() == 0:
        raise ValueError(f"the seed point {point} lies on no ground-truth part")
    return int(hits[0])


class OracleBackend:
    """Proposes the ground-truth masks themselves, in part order: the metric's ceiling (100 everywhere)."""

    name = "oracle"
    needs_ground_truth = True

    def propose(self, views: MultiView, *, seed: int = 0, point: Optional[SeedPoint] = None,
                truth: Optional[torch.Tensor] = None) -> torch.Tensor:
        if truth is None:
            raise ValueError("the oracle backend needs the ground-truth masks (truth=[S,V,H,W])")
        if point is not None:
            return truth[_part_under(point, truth)][None].clone()
        return truth.clone()


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation of ``[V,H,W]`` by ``radius`` pixels (negative: erosion, the dilation of the
    background); separable, rows then columns, as shifted ORs of the bool mask."""
    if radius == 0:
        return mask
    r = abs(radius)
    grown = mask if radius > 0 else ~mask
    for dim in (1, 2):
        padded = F.pad(grown, (r, r, 0, 0) if dim == 2 else (0, 0, r, r))
        size = grown.shape[dim]
        out = padded.narrow(dim, 0, size).clone()
        for shift in range(1, 2 * r + 1):
            out |= padded.narrow(dim, shift, size)
        grown = out
    return grown if radius > 0 else ~grown


def _half(mask: torch.Tensor, side: int) -> torch.Tensor:
    """One side (0/1) of each view's mask, cut through its centroid across its principal axis."""
    out = torch.zeros_like(mask)
    for view in range(mask.shape[0]):
        points = mask[view].nonzero().double()  # (P, 2) rows, cols
        if points.shape[0] < 2:
            continue
        centred = points - points.mean(0)
        _, vectors = torch.linalg.eigh(centred.T @ centred)
        keep = (centred @ vectors[:, -1] > 0) == bool(side)
        chosen = points[keep].long()
        out[view, chosen[:, 0], chosen[:, 1]] = True
    return out


class PerturbedOracleBackend:
    """Ground-truth masks spoilt by seeded noise, to show how the metrics degrade.

    Each part is, independently, dropped with probability 0.1·noise; otherwise it is proposed once,
    spoilt with probability s = min(1, 0.5·noise): as itself (probability 1 - s, quality 1), eroded or
    dilated by 1..3·noise pixels (0.3·s each, quality 0.8), cut in half across its principal axis in
    every view (0.2·s, quality 0.4) or merged with another random part (0.2·s, quality 0.3); a
    near-duplicate (dilated by one pixel, quality 0.5) follows with probability 0.2·min(1, noise).
    Proposals are ranked by quality plus Gaussian noise of standard deviation 0.3·noise; empty masks
    are dropped. In seeded mode the part under the seed gets all five variants, ranked the same way.
    """

    name = "perturbed-oracle"
    needs_ground_truth = True

    def __init__(self, noise: float = 1.0) -> None:
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.noise = noise

    def _variant(self, truth: torch.Tensor, index: int, kind: str, generator: torch.Generator) -> tuple[torch.Tensor, float]:
        part = truth[index]
        radius = 1 + int(torch.randint(0, max(1, math.ceil(3 * self.noise)), (1,), generator=generator))
        if kind == "exact":
            return part, 1.0
        if kind == "erode":
            return _dilate(part, -radius), 0.8
        if kind == "dilate":
            return _dilate(part, radius), 0.8
        if kind == "half":
            return _half(part, int(torch.randint(0, 2, (1,), generator=generator))), 0.4
        others = [i for i in range(truth.shape[0]) if i != index]
        if not others:
            return part, 1.0
        other = others[int(torch.randint(0, len(others), (1,), generator=generator))]
        return part | truth[other], 0.3

    def _ranked(self, candidates: list[tuple[torch.Tensor, float]], generator: torch.Generator, truth: torch.Tensor) -> torch.Tensor:
        candidates = [(mask, quality) for mask, quality in candidates if mask.any()]
        if not candidates:
            return _empty(truth)
        quality = torch.tensor([q for _, q in candidates], dtype=torch.float64)
        score = quality + 0.3 * self.noise * torch.randn(len(candidates), generator=generator, dtype=torch.float64)
        order = torch.argsort(score, descending=True, stable=True)
        return torch.stack([candidates[i][0] for i in order.tolist()])

    def propose(self, views: MultiView, *, seed: int = 0, point: Optional[SeedPoint] = None,
                truth: Optional[torch.Tensor] = None) -> torch.Tensor:
        if truth is None:
            raise ValueError("the perturbed-oracle backend needs the ground-truth masks (truth=[S,V,H,W])")
        generator = torch.Generator().manual_seed(seed)
        kinds = ("exact", "erode", "dilate", "half", "merge")
        if point is not None:
            index = _part_under(point, truth)
            return self._ranked([self._variant(truth, index, k, generator) for k in kinds], generator, truth)
        spoil = min(1.0, 0.5 * self.noise)
        weights = torch.tensor([1.0 - spoil, 0.3 * spoil, 0.3 * spoil, 0.2 * spoil, 0.2 * spoil])
        candidates = []
        for index in range(truth.shape[0]):
            if float(torch.rand((), generator=generator)) < 0.1 * self.noise:
                continue
            kind = kinds[int(torch.multinomial(weights, 1, generator=generator))]
            candidates.append(self._variant(truth, index, kind, generator))
            if float(torch.rand((), generator=generator)) < 0.2 * min(1.0, self.noise):
                candidates.append((_dilate(truth[index], 1), 0.5))
        return self._ranked(candidates, generator, truth)


class PartGenBackend:
    """PartGen's segmentation diffusion model (``partgen_models.segmentation``): N samples, ranked.

    Loads ``segmenter`` (a partgen-segmentation folder) and its Zero123++ base from ``models_dir`` on
    first use. The model takes no seed point, so seeded mode is unsupported (PartGen's seeded numbers
    come from a differently trained variant).
    """

    name = "partgen"
    needs_ground_truth = False

    def __init__(self, models_dir: str, segmenter: str = "partgen-segmentation", samples: int = 10, steps: int = 28) -> None:
        self.models_dir, self.segmenter, self.samples, self.steps = models_dir, segmenter, samples, steps
        self._model = None

    def propose(self, views: MultiView, *, seed: int = 0, point: Optional[SeedPoint] = None,
                truth: Optional[torch.Tensor] = None) -> torch.Tensor:
        from pathlib import Path

        from ..partgen_checkpoint import find_partgen_checkpoint
        from ..segmentation.segmenter import FORMAT, load_partgen_segmenter
        from ..segmentation.segment import SegmentationOptions, segment_views

        if point is not None:
            raise SeededModeUnsupported("PartGen's segmenter takes no seed point")
        if self._model is None:
            roots = [Path(self.models_dir)]
            self._model = load_partgen_segmenter(find_partgen_checkpoint(self.segmenter, roots, FORMAT), roots)
        options = SegmentationOptions(num_samples=self.samples, num_inference_steps=self.steps, seed=seed)
        return segment_views(self._model, views, options).masks


class Sam2Backend:
    """SAM 2.1 (``partgen_models.segmentation.sam2_backend``): PartGen's SAM2 baseline, tracked across views.

    Automatic mode: query points over the object, three masks per point, ranked by SAM2's predicted IoU,
    NMS at 0.5. Seeded mode: SAM2's three masks for the seed pixel, tracked, ranked the same way
    (PartGen's seeded SAM2 row). Loads ``checkpoint`` from ``models_dir`` on first use; without one,
    the largest SAM 2.1 size installed there, else sam2.1-hiera-large (downloaded when allowed).
    Deterministic: ``seed`` is unused.
    """

    name = "sam2"
    needs_ground_truth = False

    def __init__(self, models_dir: str, checkpoint: Optional[str] = None, points_per_side: int = 16) -> None:
        self.models_dir, self.checkpoint, self.points_per_side = models_dir, checkpoint, points_per_side
        self._model = None

    def _loaded(self):
        from pathlib import Path

        from ..segmentation.sam2_backend import SAM2_CHOICES, load_sam2_segmenter, resolve_sam_folder
        from ..weights import SAM_MODELS, is_installed

        if self._model is None:
            installed = [c for c in SAM2_CHOICES if is_installed(SAM_MODELS[c], Path(self.models_dir))]
            checkpoint = self.checkpoint or (installed[-1] if installed else SAM2_CHOICES[-1])
            self._model = load_sam2_segmenter(resolve_sam_folder(checkpoint, [Path(self.models_dir)]))
        return self._model

    def propose(self, views: MultiView, *, seed: int = 0, point: Optional[SeedPoint] = None,
                truth: Optional[torch.Tensor] = None) -> torch.Tensor:
        from ..segmentation.sam2_backend import Sam2Options, segment_at_point_sam2, segment_views_sam2

        options = Sam2Options(points_per_side=self.points_per_side)
        if point is not None:
            return segment_at_point_sam2(self._loaded(), views, point.view, point.col, point.row, options).masks
        return segment_views_sam2(self._loaded(), views, options).masks


class Sam3Backend:
    """SAM 3 prompted by part names (``partgen_models.segmentation.sam3_backend``): one proposal per name,
    in the names' order. The names are fixed at construction (``names="seat, leg"``), so this backend
    suits scripts evaluating objects of one kind; it has no seeded mode."""

    name = "sam3"
    needs_ground_truth = False

    def __init__(self, models_dir: str, names: str = "") -> None:
        from ..segmentation.sam3_backend import parse_part_names

        self.models_dir, self.names = models_dir, parse_part_names(names)
        self._model = None

    def propose(self, views: MultiView, *, seed: int = 0, point: Optional[SeedPoint] = None,
                truth: Optional[torch.Tensor] = None) -> torch.Tensor:
        from pathlib import Path

        from ..segmentation.sam2_backend import resolve_sam_folder
        from ..segmentation.sam3_backend import load_sam3_segmenter, segment_views_sam3

        if point is not None:
            raise SeededModeUnsupported("SAM 3 is prompted by part names, not by a seed point")
        if self._model is None:
            self._model = load_sam3_segmenter(resolve_sam_folder("sam3", [Path(self.models_dir)]))
        return segment_views_sam3(self._model, views, self.names).masks


BACKENDS: dict[str, Callable[..., ProposalBackend]] = {
    "oracle": lambda noise=1.0, **_: OracleBackend(),
    "perturbed-oracle": lambda noise=1.0, **_: PerturbedOracleBackend(noise=noise),
    "partgen": lambda models_dir="models/partgen", samples=10, steps=28, **_: PartGenBackend(
        models_dir, samples=samples, steps=steps
    ),
    "sam2": lambda models_dir="models/partgen", checkpoint=None, **_: Sam2Backend(models_dir, checkpoint),
    "sam3": lambda models_dir="models/partgen", names="", **_: Sam3Backend(models_dir, names),
}


def make_backend(name: str, noise: float = 1.0, **settings) -> ProposalBackend:
    """The backend registered under ``name`` in :data:`BACKENDS` (``settings``: models_dir, samples, steps)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](noise=noise, **settings)
