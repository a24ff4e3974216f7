"""Options of the multi-view stage."""

from __future__ import annotations

from dataclasses import dataclass


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
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {self.num_inference_steps}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.view_size < 64 or self.view_size % 8:
            raise ValueError(f"view_size must be a multiple of 8 and at least 64, got {self.view_size}")
        if not 0.1 <= self.foreground_ratio <= 1.0:
            raise ValueError(f"foreground_ratio must be within 0.1..1.0, got {self.foreground_ratio}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be within 0..2**64-1, got {self.seed}")
