"""MMPart isolation: gather the edit model's per-part images into one named batch in the input's frame.

MMPart (arXiv 2509.16768, §3.2) asks an image-edit model, once per planned part, for an image of that
part alone on a plain white background, "same framing and image size as the input". Edit models keep
the framing but often not the pixel size (they round to their own resolution grid), so each image is
resized back to the input's size. Each part's foreground comes from a mask when one is given, else
from the plain background (:func:`~partgen_models.multiview.preprocess.alpha_from_background`). The
checks refuse what would silently break the later stages: a blank image, an image with no background,
an image that still holds the whole scene, and counts that do not match the plan.

When the input image is given, the part's *visible* pixels are the foreground pixels whose colour the
edit left as in the input (edit models keep the visible part and imagine the hidden rest); placement
registers depth on those pixels only, since the hidden rest has no counterpart in the input image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..multiview.preprocess import (
    InputImageError, alpha_from_background, alpha_from_mask, gray_to_rgb, pixel_range_problem,
)
from ..planning.plan import MAX_PARTS

logger = logging.getLogger(__name__)


class IsolationError(ValueError):
    """The isolated images cannot be used; the message names the part and says how to fix it."""


@dataclass(frozen=True)
class IsolationOptions:
    """How to read the edit model's images.

    min_foreground: smallest share of the frame a part may cover (0.05% default); less is "blank".
    max_foreground: largest share; more means the edit kept no background to separate the part from.
    whole_scene_overlap: with two or more parts and the input image given, a part image that keeps this
        share of the *other* parts' visible pixels unchanged is taken for the whole scene, not one part
        (0.9). 1.0 turns the check off.
    max_aspect_change: largest relative change of the aspect ratio tolerated when resizing an edited
        image back to the input's size (edit models round sizes to multiples of 8-64 px; 4% default).
    visible_tolerance: largest channel difference from the input image for a pixel to count as visible.
    mask_marks: what the optional masks mark ("auto", "foreground", "background"), as Multi-View's input.
    """

    min_foreground: float = 5e-4
    max_foreground: float = 0.98
    whole_scene_overlap: float = 0.9
    max_aspect_change: float = 0.04
    visible_tolerance: float = 0.06
    mask_marks: str = "auto"

    def __post_init__(self) -> None:
        for name in ("min_foreground", "max_foreground", "whole_scene_overlap", "max_aspect_change", "visible_tolerance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0 or value != value:
                raise IsolationError(f"{name} must be a finite number within 0..1, got {value!r}")
        if self.min_foreground >= self.max_foreground:
            raise IsolationError("min_foreground must be smaller than max_foreground")
        if self.mask_marks not in ("auto", "foreground", "background"):
            raise IsolationError(f"mask_marks must be auto, foreground or background, got {self.mask_marks!r}")


@dataclass(frozen=True)
class IsolatedParts:
    """P isolated parts in the input image's frame (``PARTGEN_ISOLATED_PARTS``).

    names: one per part, the plan's order. images ``[P,H,W,3]``: each part alone on white, in the input's
    framing and size. masks ``[P,H,W]``: each part's (amodal) foreground in 0..1. visible ``[P,H,W]`` bool:
    foreground pixels the input image shows unchanged (all of the mask when no input image was given).
    boxes ``[P,4]`` int64 (top, left, bottom, right) of each foreground in input pixels, bottom/right
    exclusive. image_size: (H, W) of the input image.
    """

    names: tuple[str, ...]
    images: torch.Tensor
    masks: torch.Tensor
    visible: torch.Tensor
    boxes: torch.Tensor

    def __post_init__(self) -> None:
        p, h, w, c = self.images.shape
        if (c != 3 or len(self.names) != p or self.masks.shape != (p, h, w) or self.visible.shape != (p, h, w)
                or self.boxes.shape != (p, 4)):
            raise IsolationError(
                f"IsolatedParts shapes disagree: images {tuple(self.images.shape)}, masks {tuple(self.masks.shape)}, "
                f"visible {tuple(self.visible.shape)}, boxes {tuple(self.boxes.shape)}, {len(self.names)} names"
            )

    @property
    def num_parts(self) -> int:
        return len(self.names)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def white_composites(self) -> torch.Tensor:
        """Each part composited on white by its mask, ``[P,H,W,3]``: what Multi-View should see."""
        alpha = self.masks[..., None]
        return self.images * alpha + (1.0 - alpha)


def _as_single_image(image: torch.Tensor, name: str, is_input: bool = False) -> torch.Tensor:
    """One IMAGE ``[H,W,3|4]`` in 0..1; grayscale (+alpha) becomes RGB(A). ``is_input``: the original
    input image (named as such), else the edited image of part ``name``."""
    label = "the input image" if is_input else f"part {name!r}: the edited image"
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        fix = ("connect the one image the plan was made from" if is_input else
               "connect one edited image per part (the edit node runs once per prompt of the plan's prompt list)")
        raise IsolationError(f"{label} must be one IMAGE [1,H,W,3], got shape {tuple(image.shape)}; {fix}")
    image = gray_to_rgb(image)
    if not torch.isfinite(image).all():
        raise IsolationError(f"{label} contains NaN or infinite values")
    problem = pixel_range_problem(image)
    if problem:
        raise IsolationError(f"{label} {problem}")
    return image.float().clamp(0.0, 1.0)


def _resize_to(values: torch.Tensor, size: tuple[int, int], name: str, options: IsolationOptions) -> torch.Tensor:
    """``[h,w,C]`` → ``[H,W,C]``; refuses a changed aspect ratio (the edit changed the framing)."""
    h, w = values.shape[:2]
    if (h, w) == size:
        return values
    change = abs((w / h) / (size[1] / size[0]) - 1.0)
    if change > options.max_aspect_change:
        raise IsolationError(
            f"part {name!r}: the edited image is {w}x{h} but the input is {size[1]}x{size[0]}, a different "
            f"aspect ratio, so the part's position cannot be mapped back. Set the edit node to keep the input's "
            f"size or aspect ratio (or resize/pad the edited image to {size[1]}x{size[0]} first)."
        )
    resized = F.interpolate(values.permute(2, 0, 1)[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0)


def _foreground(rgb: torch.Tensor, mask: Optional[torch.Tensor], name: str, options: IsolationOptions) -> torch.Tensor:
    alpha = alpha_from_mask(mask, options.mask_marks) if mask is not None else None
    if alpha is not None:
        return alpha.clamp(0.0, 1.0)
    try:
        return alpha_from_background(rgb, 0)
    except InputImageError:
        raise IsolationError(
            f"part {name!r}: the edited image has no plain background, so the part cannot be told apart. Ask "
            f"for a plain white background in the isolation prompt, or connect a mask (a background-removal "
            f"node such as BiRefNet/RMBG run on the edited images)."
        ) from None


def _box(covered: torch.Tensor) -> list[int]:
    rows = torch.nonzero(covered.any(dim=1)).flatten()
    cols = torch.nonzero(covered.any(dim=0)).flatten()
    return [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1]


def _split_batches(values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A list of batches (an edit node run per part gives ``[1,...]`` each; one run on all gives ``[P,...]``)
    → one item per image, in order."""
    items = []
    for value in values:
        if value.ndim in (3, 4) and value.shape[0] > 1 and (value.ndim == 4 or value.shape[-1] not in (3, 4)):
            items.extend(value[i : i + 1] for i in range(value.shape[0]))
        else:
            items.append(value)
    return items


def _check_counts(names: Sequence[str], images: Sequence[torch.Tensor], masks: Optional[Sequence[torch.Tensor]]) -> None:
    if not 1 <= len(names) <= MAX_PARTS:
        raise IsolationError(f"the plan has {len(names)} parts; plans hold 1 to {MAX_PARTS}")
    repeated = sorted({n for n in names if [m.strip().lower() for m in names].count(n.strip().lower()) > 1})
    if repeated:  # found now, not after reconstruction, when Save Parts would refuse them
        raise IsolationError(f"part names must be unique; repeated: {', '.join(repeated)}")
    if len(images) != len(names):
        raise IsolationError(
            f"{len(images)} edited images for {len(names)} planned parts ({', '.join(names)}); connect the edit "
            f"node that runs once per prompt of this plan, so there is exactly one image per part, in plan order"
        )
    if masks is not None and len(masks) not in (0, len(names)):
        raise IsolationError(f"{len(masks)} masks for {len(names)} parts; connect one mask per edited image, or none")


def collect_isolated_parts(
    names: Sequence[str],
    image_size: tuple[int, int],
    images: Sequence[torch.Tensor],
    masks: Optional[Sequence[torch.Tensor]] = None,
    input_image: Optional[torch.Tensor] = None,
    options: IsolationOptions = IsolationOptions(),
) -> IsolatedParts:
    """The edit model's images (one ``[1,h,w,3]`` per part, plan order) → :class:`IsolatedParts`.

    ``image_size`` (H, W) is the input image's size from the plan; ``masks`` optional, one per image;
    ``input_image`` ``[1,H,W,3]`` optional, for the visible-pixel masks and the "unchanged input" check.
    """
    images = _split_batches(images)
    masks = _split_batches(masks) if masks else masks
    _check_counts(names, images, masks)
    height, width = int(image_size[0]), int(image_size[1])
    if height < 16 or width < 16:
        raise IsolationError(f"the plan's image size is {width}x{height}; the input image must be at least 16x16")
    reference = None
    if input_image is not None:
        reference = _resize_to(_as_single_image(input_image, "input image", is_input=True)[..., :3], (height, width),
                               "input image", options)
    rgbs, alphas, visibles, boxes = [], [], [], []
    for index, name in enumerate(names):
        rgba = _resize_to(_as_single_image(images[index], name), (height, width), name, options)
        rgb = rgba[..., :3]
        mask = None
        if masks:
            mask = masks[index]
            mask = mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask
            if mask.ndim != 2:
                raise IsolationError(f"part {name!r}: expected one MASK [1,H,W], got shape {tuple(mask.shape)}")
            if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
                raise IsolationError(f"part {name!r}: the mask contains NaN or infinite values; check the node that made it")
            mask = _resize_to(mask.float()[..., None], (height, width), name, options)[..., 0]
        elif rgba.shape[-1] == 4 and bool((rgba[..., 3] < 1.0).any()):
            mask = rgba[..., 3]  # the image's own alpha marks the foreground
        alpha = _foreground(rgb, mask, name, options)
        share = float((alpha > 0.5).float().mean())
        if share < options.min_foreground:
            raise IsolationError(
                f"part {name!r}: the edited image is blank (the part covers {share:.2%} of it). The edit model did "
                f"not draw the part: check its prompt in the plan, try another seed, or drop the part from the list."
            )
        if share > options.max_foreground:
            raise IsolationError(
                f"part {name!r}: the foreground covers {share:.0%} of the edited image, so there is no background "
                f"around the part. Ask for a plain white background, or connect a background-removal mask."
            )
        if reference is not None and float((rgb - reference).abs().mean()) < 0.01:
            raise IsolationError(
                f"part {name!r}: the edited image is the input image unchanged, so it holds the whole scene. Check "
                f"that the edit node received this part's prompt, or raise the edit's strength/steps."
            )
        covered = alpha > 0.5
        if reference is not None:
            visible = covered & ((rgb - reference).abs().amax(dim=-1) <= options.visible_tolerance)
        else:
            visible = covered
        rgbs.append(rgb)
        alphas.append(alpha)
        visibles.append(visible)
        boxes.append(_box(covered))
    masks_all = torch.stack(alphas)
    if reference is not None:
        _check_whole_scene(names, torch.stack(visibles), options)
    return IsolatedParts(names=tuple(names), images=torch.stack(rgbs).contiguous(), masks=masks_all.contiguous(),
                         visible=torch.stack(visibles).contiguous(), boxes=torch.tensor(boxes, dtype=torch.int64))


def _check_whole_scene(names: Sequence[str], visible: torch.Tensor, options: IsolationOptions) -> None:
    """A part image that shows the *other* parts' visible pixels unchanged is the scene, not a part.

    Each input pixel shows one part in front; a part's own image keeps its visible pixels and replaces
    the rest by background or by its own hidden surface. So a correct image leaves the other parts'
    visible pixels changed, whatever the part's size, while an image of the whole scene keeps them.
    """
    if len(names) < 2 or options.whole_scene_overlap >= 1.0:
        return
    for index, name in enumerate(names):
        others = torch.cat([visible[:index], visible[index + 1:]]).any(dim=0)
        area = int(others.sum())
        if area < 16:
            continue
        share = float((visible[index] & others).sum()) / area
        if share >= options.whole_scene_overlap:
            raise IsolationError(
                f"part {name!r}: its image still shows {share:.0%} of the other parts' visible pixels unchanged, so "
                f"it holds the whole scene rather than that part alone. Make its isolation prompt say to remove "
                f"everything else, or set whole_scene_overlap to 1.0 if this part really is the whole object."
            )

