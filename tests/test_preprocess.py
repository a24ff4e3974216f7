import pytest
import torch

from partgen_models.multiview.preprocess import (
    InputImageError,
    alpha_from_mask,
    estimate_alpha_from_background,
    prepare_condition_images,
)


def _scene(background=(1.0, 1.0, 1.0)):
    image = torch.tensor(background).expand(1, 100, 200, 3).clone()
    image[0, 20:60, 40:80] = torch.tensor([0.2, 0.6, 0.3])  # 40x40 object off-centre
    return image


def _object_box(prepared, background):
    differs = (prepared[0] - torch.tensor(background)).abs().amax(-1) > 0.1
    rows = torch.nonzero(differs.any(1)).flatten()
    cols = torch.nonzero(differs.any(0)).flatten()
    return rows[0].item(), rows[-1].item(), cols[0].item(), cols[-1].item()


def test_plain_background_object_is_centred_and_scaled():
    prepared = prepare_condition_images(_scene(), None, background=1.0, foreground_ratio=0.85, size=200)
    assert prepared.shape == (1, 200, 200, 3)
    top, bottom, left, right = _object_box(prepared, (1.0, 1.0, 1.0))
    assert abs((top + bottom) / 2 - 99.5) <= 3 and abs((left + right) / 2 - 99.5) <= 3  # sub-pixel crop rounding, x4.3
    assert abs((bottom - top + 1) - 170) <= 5  # 85% of the side, plus the resampling blur


def test_composite_uses_the_model_background():
    image = torch.zeros(1, 64, 64, 4)
    image[0, 16:48, 16:48] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    prepared = prepare_condition_images(image, None, background=127 / 255, size=64)
    assert torch.allclose(prepared[0, 0, 0], torch.full((3,), 127 / 255), atol=1e-4)
    assert torch.allclose(prepared[0, 32, 32], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)


def test_loadimage_mask_marks_background_and_rembg_mask_marks_foreground():
    image = _scene((0.5, 0.5, 0.5))
    image[0, :, :100] = torch.rand(100, 100, 3)  # a busy background: only the mask can tell the object
    foreground = torch.zeros(1, 100, 200)
    foreground[0, 20:60, 40:80] = 1.0
    from_loadimage = prepare_condition_images(image, 1.0 - foreground, background=1.0, size=128)
    from_rembg = prepare_condition_images(image, foreground, background=1.0, size=128)
    explicit = prepare_condition_images(image, foreground, background=1.0, size=128, mask_marks="foreground")
    assert torch.allclose(from_loadimage, from_rembg) and torch.allclose(from_rembg, explicit)
    with pytest.raises(InputImageError, match="background is not a plain colour.*Connect a MASK"):
        prepare_condition_images(image, None, background=1.0)


def test_loadimage_placeholder_mask_is_ignored():
    placeholder = torch.zeros(1, 64, 64)  # what LoadImage gives for an image without alpha
    a = prepare_condition_images(_scene(), placeholder, background=1.0, size=64)
    b = prepare_condition_images(_scene(), None, background=1.0, size=64)
    assert torch.equal(a, b)
    assert alpha_from_mask(torch.zeros(8, 8), "auto") is None


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(1, 100, 200), "no object found"),
        (torch.ones(1, 50, 50), "mask 0 is 50x50 but the image is 200x100"),
        (torch.ones(3, 100, 200), "3 masks for 1 images"),
    ],
)
def test_bad_masks_say_what_is_wrong(mask, message):
    with pytest.raises(InputImageError, match=message):
        prepare_condition_images(_scene(), mask, background=1.0)


def test_bad_images_say_what_is_wrong():
    with pytest.raises(InputImageError, match="no object found"):
        prepare_condition_images(torch.ones(1, 64, 64, 3), None, background=1.0)
    with pytest.raises(InputImageError, match="NaN"):
        prepare_condition_images(torch.full((1, 64, 64, 3), float("nan")), None, background=1.0)
    with pytest.raises(InputImageError, match="at least 16x16"):
        prepare_condition_images(torch.ones(1, 8, 8, 3), None, background=1.0)
    with pytest.raises(InputImageError, match="expected an IMAGE"):
        prepare_condition_images(torch.ones(1, 64, 64), None, background=1.0)


def test_object_covering_everything_is_refused():
    mask = torch.ones(1, 64, 64)
    mask[0, 0, 0] = 0.0
    with pytest.raises(InputImageError, match="covers 100% of the image"):
        prepare_condition_images(torch.rand(1, 64, 64, 3), mask, background=1.0, mask_marks="foreground")


def test_view_alpha_from_a_known_background():
    views = torch.ones(2, 8, 8, 3)
    views[:, 2:6, 2:6] = 0.2
    alpha = estimate_alpha_from_background(views, (1.0, 1.0, 1.0))
    assert alpha.shape == (2, 8, 8) and alpha[0, 0, 0] == 0 and alpha[0, 3, 3] == 1


def test_crop_boxes_record_the_square_cut_from_the_original_pixels():
    """MMPart placement undoes the crop: the box maps the prepared image back onto the original."""
    boxes: list = []
    prepared = prepare_condition_images(_scene(), None, background=1.0, foreground_ratio=0.85, size=200,
                                        crop_boxes=boxes)
    assert len(boxes) == 1
    top, left, side = boxes[0]
    assert side == round(40 / 0.85)  # the 40 px object spans 85% of the square's side
    assert (top + side / 2, left + side / 2) == pytest.approx((40.0, 60.0), abs=0.5)  # centred on the object
    # pixel (row, col) of the prepared image comes from (top + row * side / size, left + col * side / size)
    p_top, p_bottom, p_left, p_right = _object_box(prepared, (1.0, 1.0, 1.0))
    scale = side / 200
    assert top + p_top * scale == pytest.approx(20, abs=1.0) and top + (p_bottom + 1) * scale == pytest.approx(60, abs=1.0)
    assert left + p_left * scale == pytest.approx(40, abs=1.0) and left + (p_right + 1) * scale == pytest.approx(80, abs=1.0)
