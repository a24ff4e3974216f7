"""Preparing an input image for Zero123++: foreground, crop, recentre, scale, composite.

Upstream expects a square image of the object on the model's background; InstantMesh's ``run.py``
removes the background, then ``resize_foreground(image, 0.85)`` crops to the alpha bounding box and
pads to a square in which the object spans 85% of the side, and the pipeline pastes that RGBA image
on the background with PIL and hands it, at its own size, to the CLIP and VAE image processors (PIL
bicubic resizing to 224 and 512). This module reproduces that path on ComfyUI tensors, pixel for
pixel (``tests/test_preprocess_parity.py`` against upstream's functions), taking the foreground from
(in order) a MASK, the image's own alpha channel, or a plain background colour, and refuses inputs
where none of these gives a usable object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

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


def gray_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Grayscale (L) or grayscale + alpha (LA) ``[..., 1|2]``, as some loaders and converters give, as RGB(A):
    the gray level on all three channels, the alpha kept; anything else unchanged."""
    if image.shape[-1] not in (1, 2):
        return image
    return torch.cat([image[..., :1].expand(*image.shape[:-1], 3), image[..., 1:]], dim=-1)


def pixel_range_problem(image: torch.Tensor) -> Optional[str]:
    """None when a finite IMAGE's values are within 0..1 (give or take rounding); otherwise the rest of a
    sentence naming the image: what its values are and how to fix them. Clamped, 0..255 values would read
    as a white image, so every image input refuses them instead."""
    if not image.numel():
        return None
    low, high = float(image.amin()), float(image.amax())
    if low >= -_RANGE_TOLERANCE and high <= 1.0 + _RANGE_TOLERANCE:
        return None
    return (f"holds values from {low:g} to {high:g}, but an IMAGE holds 0..1"
            f"{' (8-bit values not divided by 255)' if high > 2.0 else ''}; scale it into 0..1 (divide 8-bit values "
            "by 255) or load it with LoadImage")


def _check_image(image: torch.Tensor, wording: InputWording = NODE_WORDING) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise InputImageError(f"expected an IMAGE tensor [B,H,W,3], got {type(image).__name__}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] not in (1, 2, 3, 4):
        raise InputImageError(
            f"expected an IMAGE [B,H,W,3] (RGB; RGBA, grayscale and grayscale+alpha are converted), got shape "
            f"{tuple(image.shape)}"
        )
    if image.shape[0] == 0:
        raise InputImageError(
            f"{wording.image.format(index='').strip()} is an empty batch (0 images); check the node that feeds it "
            "(a filter or batch node may have removed every image)"
        )
    image = gray_to_rgb(image)
    name = wording.image.format(index="0" if image.shape[0] == 1 else f"0..{image.shape[0] - 1}")
    if not torch.isfinite(image).all():
        raise InputImageError(f"{name} contains NaN or infinite values; check the node that made it")
    if min(image.shape[1:3]) < 16:
        raise InputImageError(f"{name} is {image.shape[2]}x{image.shape[1]} pixels; use at least 16x16")
    problem = pixel_range_problem(image)
    if problem:
        raise InputImageError(f"{name} {problem}")
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
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        raise InputImageError(
            f"{wording.mask.format(index='0' if mask.shape[0] == 1 else f'0..{mask.shape[0] - 1}')} contains NaN "
            "or infinite values; check the node that made it"
        )
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


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    """0..1 floats → uint8, rounding as ComfyUI's LoadImage inverts (``x / 255`` back to ``x``)."""
    return (values * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def square_crop_box(
    alpha: torch.Tensor, foreground_ratio: float, index: int, wording: InputWording = NODE_WORDING
) -> tuple[int, int, int]:
    """(top, left, side) in original pixels of the square the prepared image shows.

    InstantMesh's ``resize_foreground``: the box of pixels whose 8-bit alpha is above 0, padded to a
    square (the odd pixel of padding goes after), then to ``int(side / ratio)`` pixels. Upstream slices
    the box as ``[y1:y2, x1:x2]`` with inclusive maxima, so the object's last row and column are left
    out; :func:`prepare_conditions` keeps that (real weights were tuned on upstream's inputs). The
    checks that an object exists use the half-covered pixels, so faint fringes count for the box only.
    """
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
    top, bottom, left, right = _foreground_box(alpha)
    height, width = bottom - top, right - left
    side = max(height, width)
    padded = int(side / foreground_ratio)
    return top - (side - height) // 2 - (padded - side) // 2, left - (side - width) // 2 - (padded - side) // 2, padded


def _foreground_box(alpha: torch.Tensor) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) as upstream computes them: min and max of the rows/columns with 8-bit alpha > 0."""
    rows, cols = np.nonzero(_to_uint8(alpha) > 0)
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    if bottom - top < 1 or right - left < 1:  # upstream's slice would be empty
        bottom, right = max(bottom, top + 1), max(right, left + 1)
    return top, bottom, left, right


def _crop_padded(values: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """``values[top:top+side, left:left+side]`` with zeros outside the image: ``[side, side, C]``."""
    h, w, c = values.shape
    out = np.zeros((side, side, c), dtype=values.dtype)
    src_t, src_l = max(top, 0), max(left, 0)
    src_b, src_r = min(top + side, h), min(left + side, w)
    if src_b > src_t and src_r > src_l:
        out[src_t - top : src_b - top, src_l - left : src_r - left] = values[src_t:src_b, src_l:src_r]
    return out


def composite_on_background(rgba: np.ndarray, background: float) -> np.ndarray:
    """``[H,W,4]`` uint8 → ``[H,W,3]`` uint8 pasted on a plain colour with PIL, as upstream's
    ``to_rgb_image`` does (PIL's own rounding of the blend, so the pixels match exactly)."""
    from PIL import Image

    level = int(round(background * 255.0))
    canvas = Image.new("RGB", (rgba.shape[1], rgba.shape[0]), (level, level, level))
    layer = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
    canvas.paste(layer, mask=layer.getchannel("A"))
    return np.array(canvas)


@dataclass(frozen=True)
class PreparedCondition:
    """One input image made ready for Zero123++.

    image: ``[S,S,3]`` uint8, the square around the object pasted on the background at its own size
        (what upstream hands the image processors, which resize it themselves).
    box: (top, left, side) of that square in the original image's pixels (it may reach outside).
    """

    image: np.ndarray
    box: tuple[int, int, int]


def prepare_conditions(
    image: torch.Tensor,
    mask: Optional[torch.Tensor],
    background: float,
    foreground_ratio: float = 0.85,
    mask_marks: str = "auto",
    wording: InputWording = NODE_WORDING,
) -> list[PreparedCondition]:
    """ComfyUI IMAGE (+ MASK) → one :class:`PreparedCondition` per image, as InstantMesh's path makes it.

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
        y1, y2, x1, x2 = _foreground_box(alpha)
        rgba = np.concatenate([_to_uint8(rgb), _to_uint8(alpha)[..., None]], axis=-1)  # (H, W, 4)
        # Only upstream's foreground slice is kept: the padding around it is transparent black.
        square = _crop_padded(rgba[y1:y2, x1:x2], top - y1, left - x1, side)
        prepared.append(PreparedCondition(composite_on_background(square, background), (top, left, side)))
    return prepared


def resize_like_processor(image: np.ndarray, size: int) -> np.ndarray:
    """``[S,S,3]`` uint8 → ``[size,size,3]`` uint8, PIL bicubic: the resize the VAE processor applies."""
    from PIL import Image

    return np.array(Image.fromarray(image).resize((size, size), resample=Image.BICUBIC))


def prepare_condition_images(
    image: torch.Tensor,
    mask: Optional[torch.Tensor],
    background: float,
    foreground_ratio: float = 0.85,
    size: int = 512,
    mask_marks: str = "auto",
    wording: InputWording = NODE_WORDING,
) -> torch.Tensor:
    """ComfyUI IMAGE (+ MASK) → ``[B,size,size,3]`` float: the object centred, scaled, on ``background``.

    At 512 this is exactly the image the VAE encoder sees (the reference latent's input).
    """
    conditions = prepare_conditions(image, mask, background, foreground_ratio, mask_marks, wording)
    return torch.stack([torch.from_numpy(resize_like_processor(c.image, size)).float() / 255.0 for c in conditions])


def estimate_alpha_from_background(views: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
    """Per-view coverage ``[V,H,W]`` of generated views on a known plain background colour."""
    colour = torch.tensor(background, dtype=views.dtype)
    distance = (views - colour).abs().amax(dim=-1)
    return ((distance - 0.02) / 0.06).clamp(0.0, 1.0)
