"""Input preparation matches InstantMesh's path pixel for pixel: ``resize_foreground(0.85)``, the
pipelines' ``to_rgb_image`` (white for InstantMesh's copy, gray 127 for SUDO's) and the CLIP/VAE image
processors, run by upstream's own code on new inputs (``tests/data/preprocess_golden.md``)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from partgen_models.multiview.preprocess import prepare_condition_images, prepare_conditions
from partgen_models.multiview.sampler import _pixel_values
from partgen_models.multiview.zero123pp import GRAY_127
from tiny_models import tiny_zero123plus

GOLDEN = Path(__file__).parent / "data" / "preprocess_golden.safetensors"
with safe_open(str(GOLDEN), "pt") as _handle:
    CASES = list(json.loads(_handle.metadata()["cases"]))
BACKGROUNDS = {"white": 1.0, "gray": GRAY_127}


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN))


def _comfy_image(rgba: torch.Tensor) -> torch.Tensor:
    """What LoadImage gives for this PNG: IMAGE = RGB / 255, MASK = 1 - alpha / 255."""
    rgba = rgba.float() / 255.0
    return rgba[None, ..., :3], 1.0 - rgba[None, ..., 3]


@pytest.mark.parametrize("flavour", list(BACKGROUNDS))
@pytest.mark.parametrize("case", CASES)
def test_conditioning_image_equals_upstream(golden, case, flavour):
    image, mask = _comfy_image(golden[f"{case}/input_rgba"])
    (prepared,) = prepare_conditions(image, mask, BACKGROUNDS[flavour], foreground_ratio=0.85, mask_marks="background")
    expected = golden[f"{case}/{flavour}/rgb"].numpy()
    assert prepared.image.shape == expected.shape
    assert np.array_equal(prepared.image, expected)
    # The RGBA route (alpha in the IMAGE) gives the same pixels as LoadImage's IMAGE + MASK.
    rgba = golden[f"{case}/input_rgba"].float()[None] / 255.0
    (from_alpha,) = prepare_conditions(rgba, None, BACKGROUNDS[flavour])
    assert np.array_equal(from_alpha.image, expected)


def _normalised(image_uint8: torch.Tensor, processor) -> torch.Tensor:
    mean = torch.tensor(processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_std)[:, None, None]
    return (image_uint8.permute(2, 0, 1).float() / 255 - mean) / std


@pytest.mark.parametrize("case", CASES)
def test_model_inputs_equal_upstream(golden, case):
    model = tiny_zero123plus()  # its processors are the release's configuration
    image, mask = _comfy_image(golden[f"{case}/input_rgba"])
    (prepared,) = prepare_conditions(image, mask, 1.0, mask_marks="background")
    clip = _pixel_values(model.feature_extractor_clip, [prepared.image], torch.device("cpu"), torch.float32)[0]
    expected_clip = _normalised(golden[f"{case}/white/clip_input"], model.feature_extractor_clip)
    assert (clip - expected_clip).abs().max() <= 1e-5
    if f"{case}/white/vae_input" not in golden:
        return
    vae = _pixel_values(model.feature_extractor_vae, [prepared.image], torch.device("cpu"), torch.float32)[0]
    expected_vae = _normalised(golden[f"{case}/white/vae_input"], model.feature_extractor_vae)
    assert (vae - expected_vae).abs().max() <= 1e-5
    # The 512 px prepared image (MultiView.input_image) is exactly what the VAE processor saw.
    shown = prepare_condition_images(image, mask, 1.0, size=512, mask_marks="background")[0]
    assert torch.equal((shown * 255).round().to(torch.uint8), golden[f"{case}/white/vae_input"])


def test_crop_box_is_in_original_pixels(golden):
    image, mask = _comfy_image(golden["box_touching_border/input_rgba"])
    (prepared,) = prepare_conditions(image, mask, 1.0, mask_marks="background")
    top, left, side = prepared.box
    assert side == prepared.image.shape[0]
    assert left < 0 and top + side > image.shape[1]  # the object touches the left and bottom borders
