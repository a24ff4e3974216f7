"""Bad inputs a user wires by mistake, found by an audit of every node: each gets a clear error naming the
input (or, where that is the sensible behaviour, works). Tier 1: no ComfyUI, tiny tensors only."""

from __future__ import annotations

import pytest
import torch

from partgen_models.cameras import LAYOUTS
from partgen_models.multiview.preprocess import InputImageError, prepare_condition_images
from partgen_models.segmentation.segment import Segmentation
from partgen_models.segmentation.select import PartSelection, SelectionError, overlay, select_parts
from partgen_models.views import MultiView


def _object_image(batch: int = 1, size: int = 64, channels: int = 3) -> torch.Tensor:
    """A grey square on white: ``[B,size,size,channels]``."""
    image = torch.ones(batch, size, size, channels)
    image[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 0.3
    return image


def _prepare(image, mask=None):
    return prepare_condition_images(image, mask, background=1.0, size=64)


# --- Multi-View's image and mask --------------------------------------------------------------------------


def test_empty_image_batch_is_refused_by_name():
    with pytest.raises(InputImageError, match=r"image is an empty batch \(0 images\)"):
        _prepare(torch.ones(0, 64, 64, 3))


def test_grayscale_image_is_used_as_rgb():
    rgb = _object_image()
    gray = _object_image(channels=1)
    assert torch.equal(_prepare(gray), _prepare(rgb))


def test_grayscale_with_alpha_keeps_its_alpha():
    rgba = _object_image(channels=4)
    rgba[..., 3] = 0.0
    rgba[:, 16:48, 16:48, 3] = 1.0  # the alpha marks the square
    gray_alpha = torch.cat([rgba[..., :1], rgba[..., 3:]], dim=-1)
    assert torch.equal(_prepare(gray_alpha), _prepare(rgba))


def test_image_of_another_shape_names_what_is_expected():
    with pytest.raises(InputImageError, match=r"expected an IMAGE \[B,H,W,3\].*got shape \(1, 64, 64, 5\)"):
        _prepare(torch.ones(1, 64, 64, 5))


def test_nan_mask_is_refused_not_ignored():
    # before: a NaN mask read as "empty" and the object was silently guessed from the background
    mask = torch.full((1, 64, 64), float("nan"))
    with pytest.raises(InputImageError, match="mask 0 contains NaN or infinite values"):
        _prepare(_object_image(), mask)


# --- Select Parts: the views must be the segmented ones ----------------------------------------------------


def _views(size: int) -> MultiView:
    layout = LAYOUTS["zero123pp_v12"]
    images = torch.ones(6, size, size, 3)
    alpha = torch.zeros(6, size, size)
    alpha[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    images[alpha > 0] = 0.3
    return MultiView(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, (1.0, 1.0, 1.0), images[0])


def _segmentation(size: int, proposals: int = 3) -> Segmentation:
    masks = torch.zeros(proposals, 6, size, size, dtype=torch.bool)
    for k in range(proposals):
        masks[k, :, size // 4 + 2 * k : size // 4 + 2 * k + 4, size // 4 : 3 * size // 4] = True
    return Segmentation(torch.zeros(0), masks, torch.ones(proposals), (None,) * proposals, "zero123pp_v12")


def test_select_parts_with_other_views_names_the_views():
    # before: IndexError "The shape of the mask [6, 32, 32] at index 1 does not match ..."
    parts = select_parts(_segmentation(32), PartSelection(top_k=2))
    with pytest.raises(SelectionError, match="connect the same views to PartGen Segment and PartGen Select Parts"):
        overlay(_views(64), parts)
    assert overlay(_views(32), parts).shape == (1, 96, 64, 3)
