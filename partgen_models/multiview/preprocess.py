"""Preparing an input image for Zero123++: foreground, crop, recentre, scale, composite.

Upstream expects a square image of the object on the model's background; InstantMesh's ``run.py``
removes the background, then ``resize_foreground(image, 0.85)`` crops to the alpha bounding box and
pads to a square in which the object spans 85% of the side. This module does the same in torch on
ComfyUI tensors, taking the foreground from (in order) a MASK, the image's own alpha channel, or a
plain background colour, and refuses inputs where none of these gives a usable object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

MASK_MARKS = ("auto", "background", "foreground")

_BORDER_TOLERANCE = 0.08  # max channel distance of a border pixel from the background colour
_BORDER_AGREEMENT = 0.9  # share of border pixels that must match for a background to be "plain"
_MIN_FOREGROUND = 5e-4  # share of the image the object must cover
_MAX_FOREGROUND = 0.98
# Resampling (bicubic upscalers) overshoots 0..1 by a few percent, which clamping fixes; values far
# outside are another scale (0..255 from a script or a node that forgot to divide) and are refused.
_RANGE_TOLERANCE = 0.05


class InputImageError(ValueError):
    """The input gives no usable object; the message says how to fix it."""


@dataclass(frozen=True)
class InputWording:
    """How error messages name the inputs and the fixes: node inputs by default; the headless
    command passes its flags instead (a message must name what the user can change)."""

    image: str = "image {index}"
    give_mask: str = (
        "connect a MASK that marks the object (LoadImage's alpha, or a background-removal node such as "
        "BiRefNet/RMBG) to the mask input"
    )
    mask_marks: str = "set mask_marks"
    mask: str = "mask {index}"
    empty_mask: str = "the mask given with it is empty (all zero: it marks nothing, as LoadImage's mask of an image without transparency)"
    matching_mask: str = "connect the mask that belongs to this image (or resize it to match)"


NODE_WORDING = InputWording()


def _border(values: torch.Tensor) -> torch.Tensor:
    """Pixels of the outer ring (2% of the size, at least one pixel): ``[N, C]``."""
    h, w = values.shape[:2]
    ring = max(1, round(0.02 * min(h, w)))
    inside = torch.ones(h, w, dtype=torch.bool)
    inside[ring : h - ring, ring : w - ring] = False
    return values[inside]


def alpha_from_background(
    rgb: torch.Tensor, index: int, wording: InputWording = NODE_WORDING, empty_mask: bool = False
) -> torch.Tensor:
    """Foreground of ``[H,W,3]`` on a plain background, or an :class:`InputImageError`.

    ``empty_mask``: a mask was given but marks nothing (all zero), so the message names it.
    """
    border = _border(rgb)
    colour = border.median(dim=0).values  # (3,)
    agreement = ((border - colour).abs().amax(dim=-1) < _BORDER_TOLERANCE).float().mean().item()
    if agreement < _BORDER_AGREEMENT:
        name = wording.image.format(index=index)
        background = (
            f"its background is not a plain colour (only {agreement:.0%} of the border pixels match), so the "
            f"object cannot be told apart from it"
        )
        if empty_mask:
            raise InputImageError(
                f"{name}: {wording.empty_mask}, and {background}. Instead, {wording.give_mask}."
            )
        raise InputImageError(f"{name}: {background}. To fix it, {wording.give_mask}.")
    distance = (rgb - colour).abs().amax(dim=-1)  # (H, W)
    return ((distance - 0.5 * _BORDER_TOLERANCE) / _BORDER_TOLERANCE).clamp(0.0, 1.0)


def alpha_from_mask(mask: torch.Tensor, marks: str) -> Optional[torch.Tensor]:
    """MASK ``[H,W]`` → alpha, or None when the mask carries no information (all zero)."""
    if marks not in MASK_MARKS:
        raise ValueError(f"mask_marks must be one of {MASK_MARKS}, got {marks!r}")
    if not bool((mask > 0).any()):
        # LoadImage gives an all-zero mask for an opaque image: it says nothing about the object.
        return None
    if marks == "auto":
        marks = "background" if _border(mask[..., None]).mean().item() > 0.5 else "foreground"
    return 1.0 - mask if marks == "background" else mask


def _check_image(image: torch.Tensor, wording: InputWording = NODE_WORDING) -> torch.Tensor:
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise InputImageError(f"expected an IMAGE [B,H,W,3] (or RGBA), got shape {tuple(image.shape)}")
    name = wording.image.format(index="0" if image.shape[0] == 1 else f"0..{image.shape[0] - 1}")
    if not torch.isfinite(image).all():
        raise InputImageError(f"{name} contains NaN or infinite values; check the node that made it")
    if min(image.shape[1:3]) < 16:
        raise InputImageError(f"{name} is {image.shape[2]}x{image.shape[1]} pixels; use at least 16x16")
    low, high = image.amin().item(), image.amax().item()
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        hint = " (0..255: 8-bit values not divided by 255)" if high > 2.0 else ""
        raise InputImageError(
            f"{name} has pixel values from {low:g} to {high:g}{hint}, but an image must hold values within "
            f"0..1. Scale it into 0..1 (divide 8-bit values by 255), or load it with LoadImage"
        )
    return image.float().clamp(0.0, 1.0)


def _masks_per_image(
    mask: Optional[torch.Tensor], batch: int, height: int, width: int, wording: InputWording = NODE_WORDING
) -> list[Optional[torch.Tensor]]:
    if mask is None:
        return [None] * batch
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise InputImageError(f"expected a MASK [B,H,W], got shape {tuple(mask.shape)}")
    if mask.shape[0] not in (1, batch):
        raise InputImageError(f"{mask.shape[0]} masks for {batch} images; give one mask, or one per image")
    masks = [mask[min(i, mask.shape[0] - 1)].float() for i in range(batch)]
    for i, m in enumerate(masks):
        if tuple(m.shape) != (height, width):
            if not bool((m > 0).any()):
                # LoadImage's 64x64 placeholder for images without alpha: as empty as an all-zero mask.
                masks[i] = torch.zeros(height, width)
                continue
            raise InputImageError(
                f"{wording.mask.format(index=i)} is {m.shape[1]}x{m.shape[0]} but "
                f"{wording.image.format(index=i)} is {width}x{height}; {wording.matching_mask}"
            )
    return masks


def square_crop_box(
    alpha: torch.Tensor, foreground_ratio: float, index: int, wording: InputWording = NODE_WORDING
) -> tuple[int, int, int]:
    """(top, left, side) of the square in which the object spans ``foreground_ratio`` of the side."""
    covered = alpha > 0.5
    share = covered.float().mean().item()
    name = wording.image.format(index=index)
    if share < _MIN_FOREGROUND:
        raise InputImageError(
            f"{name}: no object found (the foreground covers {share:.2%} of the image). If a mask is given, "
            f"check that it marks the object ({wording.mask_marks}); otherwise {wording.give_mask}."
        )
    if share > _MAX_FOREGROUND:
        raise InputImageError(
            f"{name}: the foreground covers {share:.0%} of the image, so there is no background to separate "
            f"the object from. If a mask is given, check what it marks ({wording.mask_marks}); otherwise "
            f"{wording.give_mask}."
        )
    rows = torch.nonzero(covered.any(dim=1)).flatten()
    cols = torch.nonzero(covered.any(dim=0)).flatten()
    top, bottom = rows[0].item(), rows[-1].item() + 1
    left, right = cols[0].item(), cols[-1].item() + 1
    side = max(1, round(max(bottom - top, right - left) / foreground_ratio))
    return round((top + bottom - side) / 2), round((left + right - side) / 2), side


def _crop_padded(values: torch.Tensor, top: int, left: int, side: int) -> torch.Tensor:
    """``values[top:top+side, left:left+side]`` with zeros outside the image: ``[side, side, C]``."""
    h, w, c = values.shape
    out = torch.zeros(side, side, c, dtype=values.dtype)
    src_t, src_l = max(top, 0), max(left, 0)
    src_b, src_r = min(top + side, h), min(left + side, w)
    out[src_t - top : src_b - top, src_l - left : src_r - left] = values[src_t:src_b, src_l:src_r]
    return out


def prepare_condition_images(
    image: torch.Tensor,
    mask: Optional[torch.Tensor],
    background: float,
    foreground_ratio: float = 0.85,
    size: int = 512,
    mask_marks: str = "auto",
    wording: InputWording = NODE_WORDING,
) -> torch.Tensor:
    """ComfyUI IMAGE (+ MASK) → ``[B,size,size,3]``: the object centred, scaled, on ``background``.

    ``wording`` names the inputs in error messages (node inputs, or the headless command's flags).
    """
    image = _check_image(image, wording)
    batch, height, width, channels = image.shape
    masks = _masks_per_image(mask, batch, height, width, wording)
    prepared = []
    for index in range(batch):
        rgb = image[index, ..., :3]
        alpha = alpha_from_mask(masks[index], mask_marks) if masks[index] is not None else None
        if alpha is None and channels == 4 and bool((image[index, ..., 3] < 1.0).any()):
            alpha = image[index, ..., 3]
        if alpha is None:
            alpha = alpha_from_background(rgb, index, wording, empty_mask=masks[index] is not None)
        top, left, side = square_crop_box(alpha, foreground_ratio, index, wording)
        rgba = _crop_padded(torch.cat([rgb, alpha[..., None]], dim=-1), top, left, side)  # (side, side, 4)
        composite = rgba[..., :3] * rgba[..., 3:] + background * (1.0 - rgba[..., 3:])
        resized = F.interpolate(
            composite.permute(2, 0, 1)[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0].permute(1, 2, 0)
        prepared.append(resized.clamp(0.0, 1.0))
    return torch.stack(prepared)


def estimate_alpha_from_background(views: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
    """Per-view coverage ``[V,H,W]`` of generated views on a known plain background colour."""
    colour = torch.tensor(background, dtype=views.dtype)
    distance = (views - colour).abs().amax(dim=-1)
    return ((distance - 0.02) / 0.06).clamp(0.0, 1.0)
