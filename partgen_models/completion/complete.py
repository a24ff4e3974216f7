"""Completing selected parts: PartGen's contextual completion, text-guided editing, a training-free
Zero123++ variant, and the no-completion baseline. All return ``PartViews`` at the object's cameras.

Every part gets its own seed (the seed plus a hash of its name), so a part's result does not depend
on which other parts share its batch, and batches can be split to bound memory without changing it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import refuse_non_finite
from ..multiview.options import MultiViewOptions, check_view_size_for
from ..multiview.preprocess import estimate_alpha_from_background
from ..multiview.sampler import decode_latents, encode_grids, make_scheduler, sample_latents
from ..multiview.zero123pp import Zero123PlusModel
from ..runtime import Runtime, default_runtime
from ..segmentation.select import PartMasks
from ..views import MultiView, PartViews, grid_to_views, views_to_grid
from .completer import PartGenCompletionModel

WHITE = (1.0, 1.0, 1.0)
# PartGen's completer input, in channel order (§3.3): the sampler's noisy latent comes first and
# completion_unet_input appends the rest. 4 + 4 + 4 + 1 = 13 channels with a 4-channel latent.
COMPLETION_CHANNELS = ("noisy latent", "masked part", "context", "mask")
_WHOLE_OBJECT = 0.98  # a "part" covering this share of the object leaves nothing to complete


class CompletionError(ValueError):
    """Views and part masks do not fit together; the message says how."""


@dataclass(frozen=True)
class CompletionOptions:
    """use_context: give the model the whole object's views (PartGen Table 2: PSNR 21.38 with
    context, 16.80 without). max_batch: parts denoised together (memory grows with it; results do
    not change with it). Steps, guidance and seed as for the multi-view model."""

    num_inference_steps: int = 28
    guidance_scale: float = 4.0
    seed: int = 0
    use_context: bool = True
    max_batch: int = 8

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")


def part_seed(seed: int, name: str) -> int:
    return (seed + zlib.crc32(name.encode("utf-8"))) % 2**64


def check_part_masks(views: MultiView, parts: PartMasks) -> None:
    expected = tuple(views.alpha.shape)
    if tuple(parts.masks.shape[1:]) != expected:
        raise CompletionError(
            f"part masks are {tuple(parts.masks.shape[1:])} (views, height, width) but the views are {expected}; "
            "connect the masks selected from these same views"
        )
    inside = views.alpha > 0.5
    for name, mask in zip(parts.names, parts.masks):
        if not bool(mask.any()):
            raise CompletionError(f"part {name!r} selects no pixel; select it again or drop it")
        covered = (mask & inside).sum() / max(int(inside.sum()), 1)
        if covered >= _WHOLE_OBJECT:
            raise CompletionError(
                f"part {name!r} covers the whole object ({covered:.0%}); there is nothing to complete — "
                "reconstruct the views directly, or select smaller parts"
            )


def masked_views(views: MultiView, parts: PartMasks, background: tuple[float, float, float] = WHITE) -> PartViews:
    """The baseline: each part's visible pixels on ``background``, nothing completed (I⊙M)."""
    check_part_masks(views, parts)
    masks = parts.masks.float()[..., None]  # (P, V, H, W, 1)
    images = views.images[None] * masks + torch.tensor(background) * (1 - masks)
    alpha = parts.masks.float() * views.alpha[None]
    return PartViews(images, alpha, views.c2w.clone(), views.fov_deg, views.layout, background, parts.names,
                     parts.colors)


def completion_unet_input(masked_part: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The latents PartGen's completer reads after the noisy latent, in :data:`COMPLETION_CHANNELS`
    order: masked part ``[P,4,h,w]`` ++ context ``[P,4,h,w]`` ++ mask ``[P,1,h,w]`` → ``[P,9,h,w]``."""
    return torch.cat([masked_part, context, mask], dim=1)


def _grids(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[P,V,H,W,C]`` → ``[P,C,rows*H,cols*W]``."""
    return torch.stack([views_to_grid(v, rows, cols).permute(2, 0, 1) for v in images])


def _latent_masks(masks: torch.Tensor, rows: int, cols: int, scale: int) -> torch.Tensor:
    """Binary part masks at latent resolution ``[P,1,h,w]``: a latent cell is on if any pixel is."""
    return F.max_pool2d(_grids(masks.float()[..., None], rows, cols), scale)


def _to_part_views(grids: torch.Tensor, views: MultiView, parts: PartMasks, background=WHITE) -> PartViews:
    layout = views.view_layout
    images = torch.stack([grid_to_views(g.permute(1, 2, 0), layout.rows, layout.cols) for g in grids])
    alpha = torch.stack([estimate_alpha_from_background(v, background) for v in images])
    return PartViews(images, alpha, views.c2w.clone(), views.fov_deg, views.layout, background, parts.names,
                     parts.colors)


def _input_uint8(views: MultiView) -> np.ndarray:
    if views.input_image is None:
        raise CompletionError("these views carry no input image; completion needs views made by PartGen Multi-View")
    return (views.input_image * 255).round().clamp(0, 255).to(torch.uint8).numpy()[None]


def complete_parts(
    model: PartGenCompletionModel,
    views: MultiView,
    parts: PartMasks,
    options: CompletionOptions = CompletionOptions(),
    runtime: Optional[Runtime] = None,
    instruction: Optional[str] = None,
) -> PartViews:
    """PartGen completion of every part, batched; ``instruction`` turns it into text-guided editing."""
    runtime = runtime or default_runtime("cpu", torch.float32)
    check_part_masks(views, parts)
    check_view_size_for("Complete Parts", views.images.shape[1])
    diffusion = model.diffusion
    layout = views.view_layout
    runtime.prepare(model)
    scale = 2 ** (len(diffusion.vae.config.block_out_channels) - 1)
    baseline = masked_views(views, parts)
    masked_latents = encode_grids(diffusion, _grids(baseline.images, layout.rows, layout.cols))  # (P, 4, h, w)
    context = encode_grids(diffusion, views.grid().permute(2, 0, 1)[None]).expand_as(masked_latents)
    if not options.use_context:
        context = torch.zeros_like(context)  # PartGen's "no context" ablation
    mask_latents = _latent_masks(parts.masks, layout.rows, layout.cols, scale).to(masked_latents)
    concat = completion_unet_input(masked_latents, context, mask_latents)  # (P, 9, h, w)
    text = model.encode_instruction(instruction) if instruction else None
    sampling = MultiViewOptions(options.num_inference_steps, options.guidance_scale, options.seed, views.images.shape[1])
    image = _input_uint8(views)
    grids = []
    for start in range(0, parts.num_parts, options.max_batch):
        names = parts.names[start : start + options.max_batch]
        latents = sample_latents(
            diffusion, image, sampling, runtime, concat_latents=concat[start : start + len(names)],
            samples_per_image=len(names), text_embeds=text, sample_seeds=[part_seed(options.seed, n) for n in names],
        )
        grids.append(decode_latents(diffusion, latents))
    return _to_part_views(torch.cat(grids), views, parts)


def edit_part(
    model: PartGenCompletionModel,
    views: MultiView,
    parts: PartMasks,
    part: str,
    instruction: str,
    options: CompletionOptions = CompletionOptions(),
    runtime: Optional[Runtime] = None,
    others: Optional[PartViews] = None,
) -> PartViews:
    """Regenerate part ``part`` as ``instruction`` describes; the other parts stay as they were
    (``others``' views when given, e.g. completed ones, else their masked views)."""
    part = part.strip() if part.strip() in parts.names else part  # a space typed around the name
    if part not in parts.names:
        raise CompletionError(f"there is no part {part!r}; parts are: {', '.join(parts.names)}")
    if not instruction.strip():
        raise CompletionError("the instruction is empty; describe the new part, e.g. 'a cowboy hat'")
    # the kept parts are checked before the (long) edit runs, not after
    base = others if others is not None else masked_views(views, parts)
    if base.names != parts.names:
        raise CompletionError(f"part views {base.names} do not belong to the part masks {parts.names}")
    if tuple(base.alpha.shape[1:]) != tuple(views.alpha.shape):
        raise CompletionError(
            f"part_views are {tuple(base.alpha.shape[1:])} (views, height, width) but the views are "
            f"{tuple(views.alpha.shape)}; connect part views completed from these same views"
        )
    index = parts.names.index(part)
    single = PartMasks(parts.masks[index : index + 1], (part,), parts.colors[index : index + 1], parts.layout)
    edited = complete_parts(model, views, single, options, runtime, instruction=instruction)
    images, alpha = base.images.clone(), base.alpha.clone()
    images[index], alpha[index] = edited.images[0], edited.alpha[0]
    return PartViews(images, alpha, base.c2w, base.fov_deg, base.layout, base.background, base.names, parts.colors)


def input_masks_for(parts: PartMasks, mask: Optional[torch.Tensor], views: MultiView) -> torch.Tensor:
    """Each part's mask in the prepared input image ``[P,h,w]`` for training-free completion: the
    segmenter's (SAM backends) or ``mask`` (Complete Parts' input_mask: one MASK, or one per part, of
    any size; resized to the prepared input image)."""
    if mask is None:
        if parts.input_masks is None:
            raise CompletionError(
                "training-free completion needs each part's mask in the input image: use a segmenter that gives "
                "them (SAM backends) or connect input_mask, drawn on the prepared input image"
            )
        return parts.input_masks.float()
    if mask.ndim not in (2, 3):
        raise CompletionError(f"input_mask must be a MASK [B,H,W], got shape {tuple(mask.shape)}")
    mask = (mask if mask.ndim == 3 else mask[None]).float()
    if mask.shape[0] not in (1, parts.num_parts):
        raise CompletionError(f"{mask.shape[0]} input masks for {parts.num_parts} parts; give one per part")
    if not bool(torch.isfinite(mask).all()):
        raise CompletionError("input_mask contains NaN or infinite values; check the node that made it")
    size = tuple(views.input_image.shape[:2]) if views.input_image is not None else None
    if size is None:
        raise CompletionError("these views carry no input image; completion needs views made by PartGen Multi-View")
    if tuple(mask.shape[1:]) != size:
        # drawn on the original image or at another size: the prepared input image is square
        mask = (F.interpolate(mask[:, None], size=size, mode="bilinear")[:, 0] > 0.5).float()
    return mask.expand(parts.num_parts, -1, -1)


def complete_training_free(
    model: Zero123PlusModel,
    views: MultiView,
    parts: PartMasks,
    input_masks: torch.Tensor,
    options: CompletionOptions = CompletionOptions(),
    runtime: Optional[Runtime] = None,
) -> PartViews:
    """Training-free completion with public weights: Zero123++ conditioned on the input image with
    everything but the part removed, denoising each part's grid with blended-latent inpainting.

    The part's visible pixels in the views are known: after every step the latents inside the known
    region are replaced by the known latents noised to the next noise level, and the decoded result
    keeps the known pixels exactly, so the part stays where it is in the object frame. Backgrounds
    follow the model's flavour: the isolated part is composited on the colour it conditions on, the
    known views on the colour it generates (gray for SUDO's releases, white for InstantMesh's UNet).
    ``input_masks`` ``[P,h,w]``: each part in the input image (SAM backends, or a drawn MASK).
    """
    runtime = runtime or default_runtime("cpu", torch.float32)
    check_part_masks(views, parts)
    check_view_size_for("Complete Parts", views.images.shape[1])
    if views.input_image is None:
        raise CompletionError("these views carry no input image; completion needs views made by PartGen Multi-View")
    if input_masks.shape[0] != parts.num_parts or tuple(input_masks.shape[1:]) != tuple(views.input_image.shape[:2]):
        raise CompletionError(
            f"input-image masks are {tuple(input_masks.shape)}; need one mask per part ({parts.num_parts}) of the "
            f"prepared input image's size {tuple(views.input_image.shape[:2])}"
        )
    layout = views.view_layout
    runtime.prepare(model)
    scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
    output_background = (float(model.flavour.output_background),) * 3
    baseline = masked_views(views, parts, output_background)
    known_grids = _grids(baseline.images, layout.rows, layout.cols)  # (P, 3, H, W)
    known_latents = encode_grids(model, known_grids)
    pixel_masks = _grids(parts.masks.float()[..., None], layout.rows, layout.cols)  # (P, 1, H, W)
    # A latent cell is "known" only if all of its pixels are: partial cells are left to the model.
    known_cells = (-F.max_pool2d(-pixel_masks, scale)).to(known_latents)
    background = torch.tensor((float(model.flavour.input_background),) * 3)
    isolated = views.input_image[None] * input_masks[..., None] + background * (1 - input_masks[..., None].float())
    images = (isolated * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    seeds = [part_seed(options.seed, n) for n in parts.names]
    sampling = MultiViewOptions(options.num_inference_steps, options.guidance_scale, options.seed, views.images.shape[1])
    grids = []
    for start in range(0, parts.num_parts, options.max_batch):
        stop = min(start + options.max_batch, parts.num_parts)
        known, cells = known_latents[start:stop], known_cells[start:stop]
        noise = torch.cat([torch.randn((1,) + tuple(known.shape[1:]), generator=torch.Generator().manual_seed(s))
                           for s in seeds[start:stop]]).to(known)
        sigmas = {}

        def blend(step: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
            if "schedule" not in sigmas:
                scheduler = make_scheduler(model)
                scheduler.set_timesteps(options.num_inference_steps)
                sigmas["schedule"] = scheduler.sigmas
            sigma_next = float(sigmas["schedule"][step + 1])
            return cells * (known + sigma_next * noise) + (1 - cells) * latents

        latents = sample_latents(model, images[start:stop], sampling, runtime, on_step_end=blend,
                                 sample_seeds=seeds[start:stop], image_seeds=seeds[start:stop])
        generated = decode_latents(model, latents)
        masks = pixel_masks[start:stop]
        grids.append(masks * known_grids[start:stop] + (1 - masks) * generated)  # known pixels exactly kept
    return _to_part_views(torch.cat(grids), views, parts, output_background)
