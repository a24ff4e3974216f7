"""MMPart isolation: the edit model's per-part images → one named batch in the input image's frame."""

from __future__ import annotations

import re

import pytest
import torch

from partgen_models.assembly.isolation import IsolationError, IsolationOptions, collect_isolated_parts

H, W = 60, 80


def _scene() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """An input image with a red 'head' above a blue 'body', and each part alone (head complete)."""
    image = torch.ones(1, H, W, 3)
    head = torch.ones(1, H, W, 3)
    body = torch.ones(1, H, W, 3)
    body[0, 30:55, 20:60] = torch.tensor([0.1, 0.2, 0.9])
    head[0, 10:34, 30:50] = torch.tensor([0.9, 0.1, 0.1])  # the head's bottom rows hide behind the body
    image[0] = body[0]
    image[0, 10:30, 30:50] = torch.tensor([0.9, 0.1, 0.1])
    return image, [head, body]


def test_collect_keeps_boxes_in_the_input_frame_and_marks_visible_pixels():
    image, parts = _scene()
    isolated = collect_isolated_parts(["head", "body"], (H, W), parts, input_image=image)
    assert isolated.names == ("head", "body") and isolated.images.shape == (2, H, W, 3)
    assert isolated.boxes.tolist() == [[10, 30, 34, 50], [30, 20, 55, 60]]
    assert bool(isolated.visible[0, 10:30, 30:50].all()) and not bool(isolated.visible[0, 30:34].any())  # hidden rows
    composites = isolated.white_composites()
    assert composites.shape == (2, H, W, 3) and bool((composites[:, 0, 0] == 1.0).all())


def test_edited_images_of_another_size_are_resized_back():
    image, parts = _scene()
    doubled = [torch.nn.functional.interpolate(p.permute(0, 3, 1, 2), scale_factor=2, mode="nearest").permute(0, 2, 3, 1)
               for p in parts]
    isolated = collect_isolated_parts(["head", "body"], (H, W), doubled, input_image=image)
    assert isolated.masks.shape == (2, H, W)
    expected = torch.tensor([[10, 30, 34, 50], [30, 20, 55, 60]])
    assert int((isolated.boxes - expected).abs().max()) <= 1  # the antialiased downscale blurs edges by a pixel


def test_masks_replace_the_background_estimate():
    _, parts = _scene()
    masks = [torch.zeros(1, H, W), torch.zeros(1, H, W)]
    masks[0][0, 12:20, 32:40] = 1.0
    masks[1][0, 40:50, 25:35] = 1.0
    isolated = collect_isolated_parts(["head", "body"], (H, W), parts, masks=masks)
    assert isolated.boxes.tolist() == [[12, 32, 20, 40], [40, 25, 50, 35]]


@pytest.mark.parametrize("case, message", [
    ("count", "1 edited images for 2 planned parts"),
    ("blank", "part 'body': the edited image is blank"),
    ("no background", "part 'body': the foreground covers 100%"),
    ("busy background", "part 'body': the edited image has no plain background"),
    ("aspect", "part 'body': the edited image is 60x60 but the input is 80x60"),
    ("whole scene", "part 'body': its image still shows"),
    ("unchanged", "part 'body': the edited image is the input image unchanged"),
    ("shape", "part 'body': the edited image must be one IMAGE [1,H,W,3]"),
    ("mask count", "1 masks for 2 parts"),
    ("nan", "part 'body': the edited image contains NaN"),
])
def test_bad_isolated_images_name_the_part(case, message):
    image, parts = _scene()
    masks, options = None, IsolationOptions()
    if case == "count":
        parts = parts[:1]
    elif case == "blank":
        parts[1] = torch.ones(1, H, W, 3)
    elif case == "no background":
        masks = [torch.zeros(1, H, W), torch.ones(1, H, W)]
        masks[0][0, 10:34, 30:50] = 1.0
        options = IsolationOptions(mask_marks="foreground")  # "auto" would read an all-white mask as background
    elif case == "busy background":
        parts[1] = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(0))
    elif case == "aspect":
        parts[1] = torch.ones(1, 60, 60, 3)
    elif case == "whole scene":
        parts[1] = image.clone()
        background = (image[0] == 1.0).all(-1)
        parts[1][0][background] = 0.8  # the scene on a new plain background: every object pixel unchanged
    elif case == "unchanged":
        parts[1] = image.clone()
    elif case == "shape":
        parts[1] = torch.ones(H, W)
    elif case == "mask count":
        masks = [torch.zeros(1, H, W)]
    elif case == "nan":
        parts[1] = parts[1].clone()
        parts[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(IsolationError, match=re.escape(message)):
        collect_isolated_parts(["head", "body"], (H, W), parts, masks=masks, input_image=image, options=options)


def test_one_batch_of_all_parts_counts_as_one_image_per_part():
    image, parts = _scene()
    isolated = collect_isolated_parts(["head", "body"], (H, W), [torch.cat(parts)], input_image=image)
    assert isolated.boxes.tolist() == [[10, 30, 34, 50], [30, 20, 55, 60]]


def test_whole_scene_check_can_be_turned_off():
    image, parts = _scene()
    parts[1] = image.clone()
    parts[1][0][(image[0] == 1.0).all(-1)] = 0.8
    isolated = collect_isolated_parts(["head", "body"], (H, W), parts, input_image=image,
                                      options=IsolationOptions(whole_scene_overlap=1.0))
    assert isolated.num_parts == 2


@pytest.mark.parametrize("field, value", [("whole_scene_overlap", float("nan")), ("max_aspect_change", 2.0),
                                          ("mask_marks", "both")])
def test_bad_options_are_refused(field, value):
    with pytest.raises(IsolationError, match=field):
        IsolationOptions(**{field: value})


def test_too_many_parts_are_refused():
    with pytest.raises(IsolationError, match="plans hold 1 to 16"):
        collect_isolated_parts([f"p{i}" for i in range(17)], (H, W), [torch.ones(1, H, W, 3)] * 17)
