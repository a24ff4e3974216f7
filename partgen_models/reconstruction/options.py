"""Options of the reconstruction stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..checks import refuse_non_finite


@dataclass(frozen=True)
class ReconstructionOptions:
    """How to turn views into meshes.

    resolution: extraction grid. Mesh variant: FlexiCubes cells per side (InstantMesh uses 128);
        NeRF variant: marching-cubes samples per side (InstantMesh uses 256). Time and memory grow
        with its cube; only cells on the surface are processed in full.
    memory_budget_mb: bound on the temporary memory of grid queries; queries are chunked to fit.
        Parts are batched through the encoder and transformer as far as this allows too.
    target_faces: decimate each part to about this many faces (0 keeps the full mesh).
    views: "all" (the 6 Zero123++ views) or "0,2,4,5" (InstantMesh's 4-view subset).
    density_threshold: NeRF iso-level of the density field (upstream 10).
    """

    resolution: Optional[int] = None
    memory_budget_mb: int = 1024
    target_faces: int = 0
    views: str = "all"
    density_threshold: float = 10.0

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        if self.resolution is not None and not 16 <= self.resolution <= 512:
            raise ValueError(f"resolution must be within 16..512, got {self.resolution}")
        if self.memory_budget_mb < 64:
            raise ValueError(f"memory_budget_mb must be at least 64, got {self.memory_budget_mb}")
        if self.target_faces < 0:
            raise ValueError(f"target_faces must be >= 0, got {self.target_faces}")
        if self.views not in VIEW_SUBSETS:
            raise ValueError(f"views must be one of {sorted(VIEW_SUBSETS)}, got {self.views!r}")


VIEW_SUBSETS = {"all": (0, 1, 2, 3, 4, 5), "0,2,4,5": (0, 2, 4, 5)}
DEFAULT_RESOLUTION = {"mesh": 128, "nerf": 256}
