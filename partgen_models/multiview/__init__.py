"""Multi-view generation: one image → a grid of views at known cameras (Zero123++)."""

from .options import MultiViewOptions
from .sampler import generate_views, sample_grid
from .zero123pp import Zero123PlusModel, load_zero123plus

__all__ = ["MultiViewOptions", "Zero123PlusModel", "generate_views", "load_zero123plus", "sample_grid"]
