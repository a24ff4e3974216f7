import pytest
import torch

from partgen_models.multiview.preprocess import (
    InputImageError,
    InputWording,
    alpha_from_mask,
    estimate_alpha_from_background,
    prepare_condition_images,
    prepare_conditions,
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
    # InstantMesh's resize_foreground: the 40 px box loses its last row (upstream's slice), 39 px padded
    # to int(39 / 0.85) = 45, so the object spans 39/45 of the side; plus bicubic ringing.
    assert abs((bottom - top + 1) - 39 / 45 * 200) <= 3


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
    with pytest.raises(InputImageError, match="background is not a plain colour.*connect a MASK that marks the object"):
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
        (torch.ones(1, 50, 50), "mask 0 is 50x50 but image 0 is 200x100"),
        (torch.ones(3, 100, 200), "3 masks for 1 images"),
    ],
)
def test_bad_masks_say_what_is_wrong(mask, message):
    with pytest.raises(InputImageError, match=message):
        prepare_condition_images(_scene(), mask, background=1.0)


def test_bad_images_say_what_is_wrong():
    with pytest.raises(InputImageError, match="no object found"):
        prepare_condition_images(torch.ones(1, 64, 64, 3), None, background=1.0)
    with pytest.raises(InputImageError, match="image 0 contains NaN"):
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
    (condition,) = prepare_conditions(_scene(), None, background=1.0, foreground_ratio=0.85)
    prepared = prepare_condition_images(_scene(), None, background=1.0, foreground_ratio=0.85, size=200)
    top, left, side = condition.box
    # upstream's resize_foreground: the foreground slice y1:y2 drops its last row/column (39 of the 40
    # px), the square is int(39 / 0.85) wide, so the object spans about 85% of it
    assert side == int(39 / 0.85)
    assert (top + side / 2, left + side / 2) == pytest.approx((40.0, 60.0), abs=1.0)  # centred on the object
    # pixel (row, col) of the prepared image comes from (top + row * side / size, left + col * side / size)
    p_top, p_bottom, p_left, p_right = _object_box(prepared, (1.0, 1.0, 1.0))
    scale = side / 200
    assert top + p_top * scale == pytest.approx(20, abs=1.0) and top + (p_bottom + 1) * scale == pytest.approx(60, abs=1.0)
    assert left + p_left * scale == pytest.approx(40, abs=1.0) and left + (p_right + 1) * scale == pytest.approx(80, abs=1.0)


def test_images_in_0_255_are_refused_as_a_scale_problem_not_a_mask_problem():
    scene = _scene() * 255.0  # a script or node that forgot to divide by 255
    with pytest.raises(InputImageError) as error:
        prepare_condition_images(scene, None, background=1.0)
    message = str(error.value)
    assert "image 0 holds values from 51 to 255" in message and "8-bit values not divided by 255" in message
    assert "an IMAGE holds 0..1" in message and "mask" not in message
    with pytest.raises(InputImageError, match="from -0.6 to 1"):
        prepare_condition_images(_scene() * 2 - 1, None, background=1.0)  # -1..1 is another scale too
    # Resampling overshoot of a few percent is clamped, not refused.
    overshoot = _scene()
    overshoot[0, 30, 50] = 1.03
    prepare_condition_images(overshoot, None, background=1.0, size=64)


def _busy_scene():
    image = _scene((0.5, 0.5, 0.5))
    image[0, :, :100] = torch.rand(100, 100, 3, generator=torch.Generator().manual_seed(0))
    return image


@pytest.mark.parametrize("mask", [torch.zeros(1, 100, 200), torch.zeros(1, 64, 64)], ids=["all-zero", "placeholder"])
def test_connected_but_empty_mask_is_named(mask):
    with pytest.raises(InputImageError) as error:
        prepare_condition_images(_busy_scene(), mask, background=1.0)
    message = str(error.value)
    assert "image 0: the mask given with it is empty (all zero" in message
    assert "background is not a plain colour" in message and "connect a MASK that marks the object" in message


def test_messages_use_the_callers_wording():
    wording = InputWording(image="photo.png", give_mask="pass --mask FILE", mask_marks="set --mask-marks")
    with pytest.raises(InputImageError) as error:
        prepare_condition_images(torch.ones(1, 64, 64, 3), torch.ones(1, 64, 64), background=1.0, wording=wording,
                                 mask_marks="background")
    message = str(error.value)
    assert message.startswith("photo.png: no object found") and "set --mask-marks" in message
    assert "pass --mask FILE" in message and "node" not in message and "connect" not in message
