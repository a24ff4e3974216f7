"""Choosing the parts that go on to completion: ranked proposals → named part masks.

Selections: the top K proposals; explicit indices, where ``a+b`` merges proposals into one part
("0+2, 3"); a point in a view (the best-ranked proposal covering it); a colour of the first
preview sample (the proposal best matching that colour's segment); or names (labelled proposals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch

from ..views import MultiView, views_to_grid
from .palette import PALETTE, decode_colors, segments_from_ids
from .proposals import pairwise_iou
from .segment import Segmentation

SELECTION_MODES = ("top_k", "indices", "point", "color", "names")


class SelectionError(ValueError):
    """The selection picks nothing; the message lists what can be chosen."""


@dataclass(frozen=True)
class PartMasks:
    """``PARTGEN_PART_MASKS``: masks ``[P,V,H,W]`` bool, one name and display colour per part, and
    (when the backend gave them) the parts' masks in the input image ``[P,h,w]``."""

    masks: torch.Tensor
    names: tuple[str, ...]
    colors: tuple[tuple[float, float, float], ...]
    layout: str
    input_masks: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.masks.shape[0] != len(self.names) or len(self.names) != len(self.colors):
            raise ValueError(f"{self.masks.shape[0]} masks, {len(self.names)} names, {len(self.colors)} colours")

    @property
    def num_parts(self) -> int:
        return int(self.masks.shape[0])


@dataclass(frozen=True)
class PartSelection:
    """mode: one of SELECTION_MODES. top_k: how many best-ranked proposals. indices: "0, 2+3".
    point: (view, x, y) with x, y in 0..1 of that view. color: "#rrggbb" as seen in sample 0.
    names: comma-separated labels (text-prompted backends). part_names: comma-separated names for
    the selected parts, in order (default part_00, part_01, ...)."""

    mode: str = "top_k"
    top_k: int = 4
    indices: str = ""
    point: tuple[int, float, float] = (0, 0.5, 0.5)
    color: str = ""
    names: str = ""
    part_names: str = ""

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise ValueError(f"mode must be one of {SELECTION_MODES}, got {self.mode!r}")


def _available(segmentation: Segmentation) -> str:
    if segmentation.num_proposals == 0:
        return "the segmentation has no proposals at all (try more samples or a lower min_area)"
    labels = [label for label in segmentation.labels if label]
    text = f"proposals 0..{segmentation.num_proposals - 1}"
    return text + (f"; labels: {', '.join(labels)}" if labels else "")


def _groups_from_indices(text: str, count: int) -> list[list[int]]:
    groups = []
    for chunk in filter(None, (c.strip() for c in text.split(","))):
        if not re.fullmatch(r"\d+(\s*\+\s*\d+)*", chunk):
            raise SelectionError(f"cannot read {chunk!r} in indices; write e.g. '0, 2+3'")
        group = [int(i) for i in chunk.split("+")]
        bad = [i for i in group if i >= count]
        if bad:
            raise SelectionError(f"proposal(s) {bad} do not exist; there are {count} (0..{count - 1})")
        groups.append(group)
    return groups


def _parse_color(text: str) -> tuple[float, float, float]:
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", text.strip())
    if not match:
        raise SelectionError(f"colour {text!r} is not #rrggbb")
    value = match.group(1)
    return tuple(int(value[i : i + 2], 16) / 255 for i in (0, 2, 4))


def _select_groups(segmentation: Segmentation, selection: PartSelection) -> list[list[int]]:
    count = segmentation.num_proposals
    if selection.mode == "top_k":
        return [[i] for i in range(min(selection.top_k, count))]
    if selection.mode == "indices":
        return _groups_from_indices(selection.indices, count)
    if selection.mode == "point":
        view, x, y = selection.point
        _, views, height, width = segmentation.masks.shape
        if not 0 <= view < views:
            raise SelectionError(f"view {view} does not exist; there are {views} views (0..{views - 1})")
        row, col = min(int(y * height), height - 1), min(int(x * width), width - 1)
        hits = [i for i in range(count) if segmentation.masks[i, view, row, col]]
        return [hits[:1]] if hits else []
    if selection.mode == "color":
        if segmentation.samples.shape[0] == 0:
            raise SelectionError("this segmentation has no colour samples; select by index, point or name")
        # The samples are painted with the segmenter's palette: decode with it, not the default one.
        palette = segmentation.palette
        target = torch.tensor(_parse_color(selection.color))
        reference = torch.tensor(palette)
        colour_index = int((reference - target).norm(dim=1).argmin())
        ids = decode_colors(segmentation.samples[0], palette=palette)
        segments, colours = segments_from_ids(ids)
        if colour_index not in colours or count == 0:
            return []
        iou = pairwise_iou(segments[colours.index(colour_index)][None], segmentation.masks)[0]
        return [[int(iou.argmax())]]
    wanted = [n.strip() for n in selection.names.split(",") if n.strip()]
    labels = [(label or "").lower() for label in segmentation.labels]
    unmatched = [name for name in wanted if name.lower() not in labels]
    if unmatched:  # a silently dropped name would shift every later part_names entry
        raise SelectionError(
            f"no proposal is labelled {', '.join(repr(n) for n in unmatched)}; available: {_available(segmentation)}"
        )
    return [[labels.index(name.lower())] for name in wanted if name.lower() in labels]


def select_parts(segmentation: Segmentation, selection: PartSelection = PartSelection()) -> PartMasks:
    """The selected proposals as named parts; display colours follow the default palette, in order."""
    groups = _select_groups(segmentation, selection)
    if not groups:
        raise SelectionError(f"the selection ({selection.mode}) picks no proposal; available: {_available(segmentation)}")
    masks = torch.stack([segmentation.masks[group].any(dim=0) for group in groups])
    if not bool(masks.flatten(1).any(dim=1).all()):
        raise SelectionError(f"a selected part covers no pixel; available: {_available(segmentation)}")
    given = [n.strip() for n in selection.part_names.split(",") if n.strip()]
    names = []
    for index, group in enumerate(groups):
        label = segmentation.labels[group[0]] if len(group) == 1 else None
        names.append(given[index] if index < len(given) else (label or f"part_{index:02d}"))
    if len(set(names)) != len(names):
        raise SelectionError(f"part names must be unique, got {names}")
    input_masks = None
    if segmentation.input_masks is not None:
        input_masks = torch.stack([segmentation.input_masks[group].any(dim=0) for group in groups])
    colors = tuple(PALETTE[i % len(PALETTE)] for i in range(len(groups)))
    return PartMasks(masks, tuple(names), colors, segmentation.layout, input_masks)


def overlay(views: MultiView, parts: PartMasks, strength: float = 0.6) -> torch.Tensor:
    """The view grid with each part tinted in its display colour: IMAGE ``[1, gridH, gridW, 3]``."""
    if tuple(parts.masks.shape[1:]) != tuple(views.alpha.shape) or parts.layout != views.layout:
        raise SelectionError(
            f"the views ({views.layout}, {tuple(views.alpha.shape)} views x height x width) are not the views that "
            f"were segmented ({parts.layout}, {tuple(parts.masks.shape[1:])}); connect the same views to PartGen "
            "Segment and PartGen Select Parts"
        )
    images = views.images.clone()
    for mask, colour in zip(parts.masks, parts.colors):
        tint = torch.tensor(colour, dtype=images.dtype)
        images[mask] = images[mask] * (1 - strength) + tint * strength
    layout = views.view_layout
    return views_to_grid(images, layout.rows, layout.cols)[None]


def grid_masks(parts: PartMasks, rows: int, cols: int) -> torch.Tensor:
    """Each part's views tiled as the grid: MASK ``[P, gridH, gridW]``."""
    return torch.stack([views_to_grid(m[..., None].float(), rows, cols)[..., 0] for m in parts.masks])
