"""Options of the multi-view stage."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import OptionError, refuse_non_finite

MAX_STEPS = 500  # time only; 75 is the most any upstream recipe uses
MAX_GUIDANCE = 20.0
MIN_VIEW_SIZE = 64
# Memory grows with the square of the view size (the grid is 2x3 views; attention over its latent
# tokens dominates): 640 costs about four times 320. Above that the UNet's attention and the VAE
# decoder need tens of GB, so the size is refused up front (benchmarks/bench_memory.py measures it).
MAX_VIEW_SIZE = 640


@dataclass(frozen=True)
class MultiViewOptions:
    """How to sample one Zero123++ grid.

    num_inference_steps: Euler-ancestral steps. 28 is the upstream pipeline's default, 75 what
        InstantMesh and the Zero123++ README use for best quality; time grows linearly.
    guidance_scale: classifier-free guidance weight (upstream 4.0); 1.0 disables guidance and halves
        the UNet batch.
    seed: drives the initial noise, the ancestral noise, the reference-latent sample and its noise.
    view_size: pixels per view; the grid is 2 views wide and 3 high. Zero123++ was trained at 320;
        memory grows with its square.
    foreground_ratio: share of the conditioning image's side the object spans after recentring
        (InstantMesh's ``resize_foreground`` uses 0.85).
    """

    num_inference_steps: int = 28
    guidance_scale: float = 4.0
    seed: int = 0
    view_size: int = 320
    foreground_ratio: float = 0.85

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        if not 1 <= self.num_inference_steps <= MAX_STEPS:
            raise OptionError("num_inference_steps", f"must be within 1..{MAX_STEPS}, got {self.num_inference_steps}")
        if not 0 <= self.guidance_scale <= MAX_GUIDANCE:
            raise OptionError("guidance_scale", f"must be within 0..{MAX_GUIDANCE}, got {self.guidance_scale}")
        if not MIN_VIEW_SIZE <= self.view_size <= MAX_VIEW_SIZE or self.view_size % 8:
            raise OptionError(
                "view_size",
                f"must be a multiple of 8 within {MIN_VIEW_SIZE}..{MAX_VIEW_SIZE}, got {self.view_size} "
                f"(Zero123++ was trained at 320)",
            )
        if not 0.1 <= self.foreground_ratio <= 1.0:
            raise OptionError("foreground_ratio", f"must be within 0.1..1.0, got {self.foreground_ratio}")
        if not 0 <= self.seed < 2**64:
            raise OptionError("seed", f"must be within 0..2**64-1, got {self.seed}")
