"""Options of the reconstruction stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..checks import refuse_non_finite


MIN_TARGET_FACES = 4


@dataclass(frozen=True)
class ReconstructionOptions:
    """How to turn views into meshes.

    resolution: extraction grid. Mesh variant: FlexiCubes cells per side (InstantMesh uses 128);
        NeRF variant: marching-cubes samples per side (InstantMesh uses 256). Time and memory grow
        with its cube; only cells on the surface are processed in full.
    memory_budget_mb: bound on the temporary memory of extraction: the grid (12 bytes a point for
        the mesh variant, 16 for NeRF: R=512 1.6 GB), the surface (~2 KB per cell it crosses, decimation included) and
        the query chunks, which get what the grid leaves. A resolution or surface that needs more is
        refused (``reconstruct.OverBudget``, with the amount needed); the grid's check comes before
        anything runs. Parts are batched through the encoder and transformer as far as this allows.
    target_faces: decimate each part to about this many faces (0 keeps the full mesh). On by default:
        a grid-128 FlexiCubes part has ~100-200k triangles, far more than an editor or engine wants;
        20k keeps the silhouette and colours (quadric decimation, about 1 s per 200k faces on a CPU).
    views: "all" (the 6 Zero123++ views) or "0,2,4,5" (InstantMesh's 4-view subset).
    density_threshold: NeRF iso-level of the density field (upstream 10).
    texture: "off" keeps vertex colours; "views+field", "views" or "field" also bakes a base-colour
        texture per part from that source (see :mod:`partgen_models.reconstruction.texture`; needs
        xatlas). Vertex colours stay on the part for formats without textures.
    texture_size: side of each part's texture in pixels (512..4096); baking holds about
        ``texture_size² x 200`` bytes (1024: 0.2 GB, 4096: 3.1 GB).
    watertight: treat the extraction grid's outer faces as outside, so a field still inside where the
        grid ends closes there instead of leaving an open rim (upstream leaves it open; False
        reproduces upstream exactly).
    """

    resolution: Optional[int] = None
    memory_budget_mb: int = 1024
    target_faces: int = 20_000
    views: str = "all"
    density_threshold: float = 10.0
    watertight: bool = True
    texture: str = "off"
    texture_size: int = 1024

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        if self.resolution is not None and not 16 <= self.resolution <= 512:
            raise ValueError(f"resolution must be within 16..512, got {self.resolution}")
        if self.memory_budget_mb < 64:
            raise ValueError(f"memory_budget_mb must be at least 64, got {self.memory_budget_mb}")
        if self.target_faces < 0 or 0 < self.target_faces < MIN_TARGET_FACES:
            # fewer than a tetrahedron's 4 faces cannot enclose anything: decimation left 0-2 faces
            raise ValueError(
                f"target_faces must be 0 (keep the full mesh) or at least {MIN_TARGET_FACES} (the fewest faces of a "
                f"closed surface), got {self.target_faces}"
            )
        if self.texture not in TEXTURE_MODES:
            raise ValueError(f"texture must be one of {TEXTURE_MODES}, got {self.texture!r}")
        if self.texture != "off":
            self.texture_options()  # validates size and source
        if self.views not in VIEW_SUBSETS:
            raise ValueError(f"views must be one of {sorted(VIEW_SUBSETS)}, got {self.views!r}")

    def texture_options(self):
        from .texture import TextureOptions

        return TextureOptions(size=self.texture_size, source=self.texture)


TEXTURE_MODES = ("off", "views+field", "views", "field")


VIEW_SUBSETS = {"all": (0, 1, 2, 3, 4, 5), "0,2,4,5": (0, 2, 4, 5)}
DEFAULT_RESOLUTION = {"mesh": 128, "nerf": 256}
