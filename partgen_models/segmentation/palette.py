"""PartGen's colour code: parts are painted with Q fixed reference colours (PartGen §3.2).

Every training sample assigns colours to parts by a random permutation, so no colour means a
particular part; decoding maps each pixel to the nearest reference colour (no clustering) and drops
parts covering only a few pixels. The palette is chosen for distance in CIELAB (perceptual), far from
the white background and from Zero123++'s gray: :func:`choose_palette` regenerates it and a test
pins the constant below to it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

BACKGROUND = (1.0, 1.0, 1.0)
_AVOID = ((1.0, 1.0, 1.0), (0.5, 0.5, 0.5))  # white background, Zero123++ gray background
_MIN_DISTANCE_TO_AVOIDED = 35.0  # CIELAB ΔE76

# = choose_palette(16) (tests/test_palette.py pins it): min pairwise ΔE 46, min ΔE to white/gray 50.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.8, 1.0),
    (0.4, 0.4, 0.0), (1.0, 0.4, 0.8), (0.0, 0.0, 0.2), (1.0, 1.0, 0.0),
    (0.0, 1.0, 0.8), (0.4, 0.0, 0.0), (1.0, 0.6, 0.4), (0.0, 0.4, 1.0),
    (0.0, 0.6, 0.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.6), (1.0, 0.0, 0.4),
)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in 0..1 ``[...,3]`` → CIELAB (D65) ``[...,3]``."""
    rgb = rgb.float().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = linear @ matrix.T / torch.tensor([0.95047, 1.0, 1.08883])
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], dim=-1)


def choose_palette(size: int, levels: int = 6) -> tuple[tuple[float, float, float], ...]:
    """Greedy farthest-point selection in CIELAB over an RGB lattice, away from white and gray."""
    axis = torch.linspace(0, 1, levels)
    candidates = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    lab = srgb_to_lab(candidates)
    avoided = srgb_to_lab(torch.tensor(_AVOID))
    allowed = torch.cdist(lab, avoided).amin(dim=1) >= _MIN_DISTANCE_TO_AVOIDED
    candidates, lab = candidates[allowed], lab[allowed]
    chosen = [int(torch.cdist(lab, avoided).amin(dim=1).argmax())]  # start far from the backgrounds
    distance = torch.cdist(lab, lab[chosen]).amin(dim=1)
    while len(chosen) < size:
        chosen.append(int(distance.argmax()))
        distance = torch.minimum(distance, torch.cdist(lab, lab[chosen[-1:]]).squeeze(1))
    return tuple(tuple(round(float(c), 4) for c in candidates[i]) for i in chosen)


def palette_tensor(palette: Optional[tuple] = None) -> torch.Tensor:
    return torch.tensor(palette or PALETTE, dtype=torch.float32)


def encode_part_ids(part_ids: torch.Tensor, generator: torch.Generator, palette: Optional[tuple] = None) -> torch.Tensor:
    """Part-id maps (``-1`` = background, ``0..P-1`` parts) → colour maps ``[...,3]``, with a random
    assignment of palette colours to parts (a new permutation per call, as PartGen's training data)."""
    colours = palette_tensor(palette)
    parts = int(part_ids.max().item()) + 1 if part_ids.numel() else 0
    if parts > colours.shape[0]:
        raise ValueError(f"{parts} parts but only {colours.shape[0]} reference colours")
    permutation = torch.randperm(colours.shape[0], generator=generator)[:max(parts, 1)]
    table = torch.cat([torch.tensor([BACKGROUND]), colours[permutation]])  # index 0 = background
    return table[(part_ids + 1).clamp_min(0).long()]


def decode_colors(
    colors: torch.Tensor,
    min_area: float = 0.005,
    palette: Optional[tuple] = None,
    smoothing: int = 3,
    inside: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Colour maps ``[V,H,W,3]`` → part-id maps ``[V,H,W]``: palette index per pixel, ``-1`` background.

    Nearest reference colour in CIELAB (white included as background); then a ``smoothing``×``smoothing``
    majority vote per view removes the thin anti-aliased fringes where two colours blend into a third;
    pixels outside ``inside`` ``[V,H,W]`` (the object, when known) become background; finally colours
    covering less than ``min_area`` of the object's pixels (all views together; without ``inside``,
    of the painted pixels) are dropped (PartGen: "parts with only a few pixels are dropped").
    """
    references = torch.cat([torch.tensor([BACKGROUND]), palette_tensor(palette)])  # (Q+1, 3)
    lab = srgb_to_lab(colors)
    distances = torch.cdist(lab.reshape(-1, 3), srgb_to_lab(references))
    labels = distances.argmin(dim=1).reshape(colors.shape[:-1])  # (V, H, W), 0 = background
    if smoothing > 1:
        labels = _majority_filter(labels, references.shape[0], smoothing)
    ids = labels - 1
    if inside is not None:
        ids[~inside] = -1
    # The share is of the object: paint off the object must neither count nor enlarge the total.
    foreground = ids >= 0
    total = max(int(inside.sum()) if inside is not None else int(foreground.sum()), 1)
    counts = torch.bincount(ids[foreground], minlength=references.shape[0] - 1)
    for colour in torch.nonzero((counts > 0) & (counts < min_area * total)).flatten().tolist():
        ids[ids == colour] = -1
    return ids


def _majority_filter(labels: torch.Tensor, classes: int, size: int) -> torch.Tensor:
    one_hot = F.one_hot(labels, classes).permute(0, 3, 1, 2).float()  # (V, Q+1, H, W)
    votes = F.avg_pool2d(one_hot, size, stride=1, padding=size // 2, count_include_pad=False)
    return votes.argmax(dim=1)


def segments_from_ids(ids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Part-id maps ``[V,H,W]`` → multi-view masks ``[K,V,H,W]`` (one per colour present) and their colours."""
    colours = sorted(int(c) for c in torch.unique(ids) if c >= 0)
    if not colours:
        return torch.zeros(0, *ids.shape, dtype=torch.bool), []
    return torch.stack([ids == c for c in colours]), colours
