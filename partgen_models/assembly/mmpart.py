"""The MMPart path after the edit step, as one library call (headless CLI, benchmark).

MMPart (arXiv 2509.16768, §3.2-3.3): isolated part images → one multi-view grid per part (one batch)
→ one reconstruction per part (one batch through the encoder and transformer) → placement as in the
input image, optionally against the whole object reconstructed from the input image. In ComfyUI the
same steps are the nodes Collect Isolated Parts, Multi-View, Reconstruct and Place Parts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ..multiview import MultiViewOptions, generate_views
from ..parts import Part
from ..reconstruction.options import ReconstructionOptions
from ..reconstruction.reconstruct import reconstruct_parts
from ..runtime import Runtime, default_runtime
from ..views import MultiView, PartViews
from .isolation import IsolatedParts, IsolationOptions, collect_isolated_parts
from .placement import PlacementError, PlacementOptions, PlacementResult, place_parts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MMPartOptions:
    """Options of every step; ``use_reference`` also reconstructs the whole input image to register
    depth against (one more grid and one more reconstruction: about 1/P more time)."""

    isolation: IsolationOptions = field(default_factory=IsolationOptions)
    multiview: MultiViewOptions = field(default_factory=MultiViewOptions)
    reconstruction: ReconstructionOptions = field(default_factory=ReconstructionOptions)
    placement: PlacementOptions = field(default_factory=PlacementOptions)
    use_reference: bool = True


@dataclass(frozen=True)
class MMPartResult:
    isolated: IsolatedParts
    views: list[MultiView]
    reconstructed: list[Part]
    reference: Optional[list[Part]]
    placement: PlacementResult


def part_views(views: Sequence[MultiView], names: Sequence[str]) -> PartViews:
    """Per-part Multi-View results → one batch for reconstruction (same layout and cameras)."""
    first = views[0]
    return PartViews(torch.stack([v.images for v in views]), torch.stack([v.alpha for v in views]), first.c2w,
                     first.fov_deg, first.layout, first.background, tuple(names))


def run_mmpart(
    multiview_model,
    reconstruction_model,
    input_image: torch.Tensor,
    names: Sequence[str],
    part_images: Sequence[torch.Tensor],
    part_masks: Optional[Sequence[torch.Tensor]] = None,
    options: MMPartOptions = MMPartOptions(),
    runtime: Optional[Runtime] = None,
    depth_map: Optional[torch.Tensor] = None,
    input_mask: Optional[torch.Tensor] = None,
) -> MMPartResult:
    """Isolated part images (one ``[1,H,W,3]`` per name, the input's framing) → placed, named parts."""
    runtime = runtime or default_runtime()
    height, width = int(input_image.shape[-3]), int(input_image.shape[-2])
    # 1. one named batch in the input's frame
    isolated = collect_isolated_parts(names, (height, width), part_images, part_masks, input_image[..., :3],
                                      options.isolation)
    # 2. one grid per part, all parts in one sampling batch
    views = generate_views(multiview_model, isolated.white_composites(), isolated.masks, options.multiview, runtime,
                           mask_marks="foreground")
    # 3. reconstruction batched over parts
    reconstructed = reconstruct_parts(reconstruction_model, part_views(views, isolated.names), options.reconstruction,
                                      runtime)
    missing = [n for n in isolated.names if n not in {p.name for p in reconstructed}]
    if missing:
        raise PlacementError(f"no surface was reconstructed for {', '.join(map(repr, missing))}; check those parts' "
                             f"isolated images and views, or remove them from the part list")
    reference, reference_box = None, None
    if options.use_reference:
        whole = generate_views(multiview_model, input_image, input_mask, options.multiview, runtime)[0]
        reference = reconstruct_parts(reconstruction_model, PartViews.whole_object(whole), options.reconstruction, runtime)
        reference_box = whole.crop_box
    # 4. placement as in the input image
    placed = place_parts(reconstructed, isolated, [v.crop_box for v in views], options.placement, reference,
                         reference_box, depth_map, runtime)
    return MMPartResult(isolated, views, reconstructed, reference, placed)
