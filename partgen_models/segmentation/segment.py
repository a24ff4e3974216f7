"""Segmenting a multi-view grid into ranked multi-view part proposals with PartGen's model.

Check inputs, encode the object grid, draw N colour-coded samples in one batch (the multi-view
sampler with the grid latent appended to the UNet input), decode colours to part ids, pool and rank
the segments of all samples (IoU votes + NMS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..checks import refuse_non_finite
from ..multiview.options import MultiViewOptions, check_view_size_for
from ..multiview.sampler import decode_latents, encode_grids, sample_latents
from ..runtime import Runtime, default_runtime
from ..views import MultiView, grid_to_views
from .palette import PALETTE, decode_colors, segments_from_ids
from .segmenter import PartGenSegmentationModel
from .proposals import rank_proposals


@dataclass(frozen=True)
class SegmentationOptions:
    """num_samples: stochastic samples pooled for ranking (PartGen: 1 → mAP50 45.2, 5 → 54.2,
    10 → 59.3). max_batch: samples denoised and decoded together; memory grows with
    ``min(num_samples, max_batch)``, and results do not change with it (each sample has its own
    seed, ``seed + i``). min_area: share of the object's pixels below which a colour is dropped as
    noise. The rest as for the multi-view model."""

    num_samples: int = 5
    num_inference_steps: int = 28
    guidance_scale: float = 4.0
    seed: int = 0
    min_area: float = 0.005
    iou_threshold: float = 0.5
    max_batch: int = 8

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        if not 1 <= self.num_samples <= 64:
            raise ValueError(f"num_samples must be within 1..64, got {self.num_samples}")
        if not 1 <= self.max_batch <= 64:
            raise ValueError(f"max_batch must be within 1..64, got {self.max_batch}")
        if not 0.0 <= self.min_area < 0.5:
            raise ValueError(f"min_area must be within 0..0.5, got {self.min_area}")


@dataclass(frozen=True)
class Segmentation:
    """``PARTGEN_SEGMENTATION``: raw samples for preview plus ranked multi-view proposals.

    samples ``[N,V,H,W,3]`` (colour-coded, empty for backends without samples); masks
    ``[K,V,H,W]`` bool in rank order; scores ``[K]``; labels one per proposal (part names from
    text-prompted backends, else None); input_masks ``[K,h,w]`` the part in the input image when the
    backend segments it too, else None; palette the reference colours the samples are painted with
    (the segmenter checkpoint's), so that a colour picked in a sample decodes as the segmenter meant.
    """

    samples: torch.Tensor
    masks: torch.Tensor
    scores: torch.Tensor
    labels: tuple[Optional[str], ...]
    layout: str
    input_masks: Optional[torch.Tensor] = None
    palette: tuple[tuple[float, float, float], ...] = PALETTE

    @property
    def num_proposals(self) -> int:
        return int(self.masks.shape[0])


def segment_views(
    model: PartGenSegmentationModel,
    views: MultiView,
    options: SegmentationOptions = SegmentationOptions(),
    runtime: Optional[Runtime] = None,
) -> Segmentation:
    runtime = runtime or default_runtime("cpu", torch.float32)
    # 1. check inputs
    if views.input_image is None:
        raise ValueError("these views carry no input image; segmenting needs views made by PartGen Multi-View")
    diffusion = model.diffusion
    if views.layout != diffusion.layout.name:
        raise ValueError(f"views are in layout {views.layout!r}; this segmenter works on {diffusion.layout.name!r}")
    view_size = views.images.shape[1]
    check_view_size_for("Segment", view_size)
    runtime.prepare(model)
    # 2. condition: the input image (reference attention + CLIP) and the object grid (concatenated)
    image = (views.input_image * 255).round().clamp(0, 255).to(torch.uint8).numpy()[None]
    grid_latent = encode_grids(diffusion, views.grid().permute(2, 0, 1)[None])  # (1, 4, h, w)
    sampling = MultiViewOptions(
        num_inference_steps=options.num_inference_steps, guidance_scale=options.guidance_scale,
        seed=options.seed, view_size=view_size,
    )
    # 3. N samples, in batches of at most max_batch (each sample's noise follows its own seed, so the
    # batching does not change them; memory stays that of one batch)
    grids = []
    for start in range(0, options.num_samples, options.max_batch):
        count = min(options.max_batch, options.num_samples - start)
        seeds = [(options.seed + i) % 2**64 for i in range(start, start + count)]
        latents = sample_latents(diffusion, image, sampling, runtime, concat_latents=grid_latent,
                                 samples_per_image=count, sample_seeds=seeds)
        grids.append(decode_latents(diffusion, latents).cpu())  # (count, 3, H, W)
    grids = torch.cat(grids)
    layout = diffusion.layout
    samples = torch.stack([grid_to_views(g.permute(1, 2, 0), layout.rows, layout.cols) for g in grids])
    # 4. colours → segments, restricted to the object, then ranked across samples
    inside = views.alpha > 0.5
    segments = []
    for sample in samples:
        ids = decode_colors(sample, options.min_area, model.palette, inside=inside)
        segments.append(segments_from_ids(ids)[0])
    masks, scores = rank_proposals(segments, options.iou_threshold)
    return Segmentation(samples, masks, scores, (None,) * masks.shape[0], layout.name, palette=tuple(model.palette))
