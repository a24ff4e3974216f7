"""Value types that flow between stages (and along ComfyUI's graph)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .cameras import LAYOUTS, ViewLayout


@dataclass(frozen=True)
class MultiView:
    """Views of one object at known cameras; ComfyUI layout, float32 on the CPU.

    images: ``[V,H,W,3]`` in 0..1, composited on ``background``.
    alpha: ``[V,H,W]`` foreground coverage in 0..1 (estimated from the background colour when the
        model does not produce one).
    c2w: ``[V,4,4]`` OpenGL camera-to-world matrices (see ``partgen_models.cameras``).
    input_image: ``[H,W,3]`` the prepared conditioning image the views were generated from (the
        view at azimuth 0), or None when the views did not come from an image.
    crop_box: ``(top, left, side)`` of the square, in the original image's pixels, that was cropped
        (zero-padded where it leaves the image) and resized into ``input_image``; MMPart placement
        undoes it to put the object back where it was in the original image. None when unknown.
    source_size: ``(height, width)`` of the original image ``crop_box`` refers to.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    c2w: torch.Tensor
    fov_deg: float
    layout: str
    background: tuple[float, float, float]
    input_image: Optional[torch.Tensor] = None
    crop_box: Optional[tuple[int, int, int]] = None
    source_size: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        v, h, w, c = self.images.shape
        if c != 3 or self.alpha.shape != (v, h, w) or self.c2w.shape != (v, 4, 4):
            raise ValueError(
                f"MultiView shapes disagree: images {tuple(self.images.shape)}, alpha "
                f"{tuple(self.alpha.shape)}, c2w {tuple(self.c2w.shape)}"
            )

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def view_layout(self) -> ViewLayout:
        return LAYOUTS[self.layout]

    def grid(self) -> torch.Tensor:
        """The views tiled back into the layout's grid, ``[rows*H, cols*W, 3]``."""
        layout = self.view_layout
        return views_to_grid(self.images, layout.rows, layout.cols)


def views_to_grid(views: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[V,H,W,C]`` row-major views → one ``[rows*H, cols*W, C]`` grid."""
    v, h, w, c = views.shape
    if v != rows * cols:
        raise ValueError(f"{v} views do not fill a {rows}x{cols} grid")
    return views.reshape(rows, cols, h, w, c).permute(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def grid_to_views(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """One ``[rows*H, cols*W, C]`` grid → row-major views ``[V,H,W,C]``."""
    gh, gw, c = grid.shape
    if gh % rows or gw % cols:
        raise ValueError(f"a {gh}x{gw} grid does not split into {rows}x{cols} equal views")
    h, w = gh // rows, gw // cols
    return grid.reshape(rows, h, cols, w, c).permute(0, 2, 1, 3, 4).reshape(rows * cols, h, w, c)


@dataclass(frozen=True)
class PartViews:
    """Views of P parts at one object's cameras, batched (``PARTGEN_PART_VIEWS``).

    images ``[P,V,H,W,3]`` on ``background``; alpha ``[P,V,H,W]``; c2w ``[V,4,4]`` shared by all
    parts; names one per part; colors the parts' display colours (from the selection) or None, carried
    on so that the reconstructed parts and the export manifest keep them.
    """

    images: torch.Tensor
    alpha: torch.Tensor
    c2w: torch.Tensor
    fov_deg: float
    layout: str
    background: tuple[float, float, float]
    names: tuple[str, ...]
    colors: Optional[tuple[tuple[float, float, float], ...]] = None

    def __post_init__(self) -> None:
        p, v, h, w, c = self.images.shape
        if c != 3 or self.alpha.shape != (p, v, h, w) or self.c2w.shape != (v, 4, 4) or len(self.names) != p:
            raise ValueError(
                f"PartViews shapes disagree: images {tuple(self.images.shape)}, alpha {tuple(self.alpha.shape)}, "
                f"c2w {tuple(self.c2w.shape)}, {len(self.names)} names"
            )
        if self.colors is not None and len(self.colors) != p:
            raise ValueError(f"PartViews has {p} parts but {len(self.colors)} display colours")

    @property
    def num_parts(self) -> int:
        return self.images.shape[0]

    @classmethod
    def whole_object(cls, views: MultiView, name: str = "object") -> "PartViews":
        """A whole object's views as a single part (reconstructing the object itself)."""
        return cls(views.images[None], views.alpha[None], views.c2w, views.fov_deg, views.layout, views.background, (name,))
