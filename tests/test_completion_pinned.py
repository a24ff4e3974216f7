"""Completion behaviour pinned by hand-computed values (tier 1).

The denoising loop is replaced by a recorder (``sample_latents`` returns the latents it would start
from and keeps its arguments), so these tests look at what the completion functions feed the UNet
and how they blend, in a second, on the tiny checkpoints: the channel layout of PartGen's
completer, the latent masks, the σ that known latents are noised to, the backgrounds of the
training-free variant, and the display colours that must reach the manifest.
"""

from __future__ import annotations

import pytest
import torch

from partgen_models.cameras import LAYOUTS
from partgen_models.completion import complete as complete_module
from partgen_models.completion.complete import (
    COMPLETION_CHANNELS,
    CompletionOptions,
    _latent_masks,
    complete_parts,
    complete_training_free,
    completion_unet_input,
    masked_views,
    part_seed,
)
from partgen_models.completion.completer import load_partgen_completer
from partgen_models.multiview.preprocess import estimate_alpha_from_background
from partgen_models.multiview.sampler import encode_grids, make_scheduler
from partgen_models.segmentation.select import PartMasks
from partgen_models.views import MultiView, views_to_grid
from tiny_models import tiny_models_dir, tiny_zero123plus

pytestmark = pytest.mark.tier1

SIZE = 64
OPTIONS = CompletionOptions(num_inference_steps=3, seed=11)


def _views(background: float) -> MultiView:
    """Six hand-made views on a plain ``background``: an orange box in the middle of each."""
    layout = LAYOUTS["zero123pp_v12"]
    images = torch.full((6, SIZE, SIZE, 3), background)
    images[:, 16:48, 20:44] = torch.tensor([0.9, 0.5, 0.1])
    alpha = torch.zeros(6, SIZE, SIZE)
    alpha[:, 16:48, 20:44] = 1.0
    input_image = torch.full((96, 96, 3), background)
    input_image[24:72, 30:66] = torch.tensor([0.9, 0.5, 0.1])
    return MultiView(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, (background,) * 3, input_image)


def _parts() -> PartMasks:
    masks = torch.zeros(2, 6, SIZE, SIZE, dtype=torch.bool)
    masks[0, :, 16:32, 20:44] = True  # top
    masks[1, :, 32:48, 20:44] = True  # bottom
    return PartMasks(masks, ("top", "bottom"), ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)), "zero123pp_v12")


class Recorder:
    """Stands in for ``sample_latents``: records its arguments, returns zero latents of the right shape."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, model, images, options, runtime, **kwargs):
        self.calls.append({"model": model, "images": images, "options": options, **kwargs})
        layout = model.layout
        shape = (len(kwargs["sample_seeds"]), 4, layout.rows * options.view_size // 8, layout.cols * options.view_size // 8)
        return torch.zeros(shape)


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(complete_module, "sample_latents", recorder)
    return recorder


@pytest.fixture(scope="module")
def completer():
    return load_partgen_completer(tiny_models_dir() / "partgen-completion", [tiny_models_dir()])


def _grid(images: torch.Tensor) -> torch.Tensor:
    """``[V,H,W,C]`` views → ``[C, 3H, 2W]`` grid."""
    return views_to_grid(images, 3, 2).permute(2, 0, 1)


# ----------------------------------------------------------------------------------------------------
# PartGen completion: the UNet input


def test_channel_layout_is_noisy_then_masked_part_then_context_then_mask():
    assert COMPLETION_CHANNELS == ("noisy latent", "masked part", "context", "mask")
    masked, context, mask = torch.full((2, 4, 3, 2), 1.0), torch.full((2, 4, 3, 2), 2.0), torch.full((2, 1, 3, 2), 3.0)
    condition = completion_unet_input(masked, context, mask)
    assert condition.shape == (2, 9, 3, 2)
    assert condition[:, :4].eq(1.0).all() and condition[:, 4:8].eq(2.0).all() and condition[:, 8].eq(3.0).all()


def test_completion_feeds_masked_part_then_context_then_mask(completer, recorder):
    views, parts = _views(1.0), _parts()
    complete_parts(completer, views, parts, OPTIONS)
    concat = recorder.calls[0]["concat_latents"]  # (P, 9, h, w), appended after the noisy latent
    diffusion = completer.diffusion
    masked = masked_views(views, parts).images
    expected_masked = encode_grids(diffusion, torch.stack([_grid(m) for m in masked]))
    expected_context = encode_grids(diffusion, _grid(views.images)[None])
    assert torch.allclose(concat[:, :4], expected_masked, atol=1e-5)
    assert torch.allclose(concat[:, 4:8], expected_context.expand(2, -1, -1, -1), atol=1e-5)
    # latent mask of "top": rows 16..31 of each 64-px view are latent rows 2..3 of each view's 8 rows
    top = concat[0, 8]
    assert top.shape == (24, 16)
    assert top[2:4, 2:6].eq(1).all() and top[4:8].eq(0).all() and top[0:2].eq(0).all()
    assert recorder.calls[0]["sample_seeds"] == [part_seed(11, "top"), part_seed(11, "bottom")]
    without = complete_parts(completer, views, parts, CompletionOptions(3, seed=11, use_context=False))
    assert without.num_parts == 2 and recorder.calls[1]["concat_latents"][:, 4:8].eq(0).all()


def test_latent_mask_cell_is_on_when_any_of_its_pixels_is():
    # One 16x16 view per grid cell (3x2 views); scale 8 gives 2x2 latent cells a view. A single
    # on pixel at (9, 3) of view 0 lights exactly the latent cell (1, 0) of that view.
    masks = torch.zeros(1, 6, 16, 16, dtype=torch.bool)
    masks[0, 0, 9, 3] = True
    cells = _latent_masks(masks, 3, 2, 8)
    assert cells.shape == (1, 1, 6, 4)
    expected = torch.zeros(1, 1, 6, 4)
    expected[0, 0, 1, 0] = 1.0
    assert torch.equal(cells, expected)


def test_display_colours_reach_the_part_views(completer, recorder):
    parts = _parts()
    assert complete_parts(completer, _views(1.0), parts, OPTIONS).colors == parts.colors
    assert masked_views(_views(1.0), parts).colors == parts.colors


# ----------------------------------------------------------------------------------------------------
# Training-free completion


def _input_masks() -> torch.Tensor:
    masks = torch.zeros(2, 96, 96)
    masks[0, :48] = 1.0
    masks[1, 48:] = 1.0
    return masks


def test_known_latents_are_noised_to_the_next_sigma(recorder):
    model = tiny_zero123plus(instantmesh_unet=True)  # white in, white out
    views, parts = _views(1.0), _parts()
    complete_training_free(model, views, parts, _input_masks(), OPTIONS)
    blend = recorder.calls[0]["on_step_end"]
    scheduler = make_scheduler(model)
    scheduler.set_timesteps(OPTIONS.num_inference_steps)
    sigmas = scheduler.sigmas  # [σ0 > σ1 > σ2 > 0]
    known = encode_grids(model, torch.stack([_grid(m) for m in masked_views(views, parts).images]))
    noise = torch.cat([torch.randn((1, *known.shape[1:]), generator=torch.Generator().manual_seed(part_seed(11, n)))
                       for n in parts.names])
    # Latent cells fully inside "top": rows 2..3 of view 0 (rows 16..31, cols 24..39 → cols 3..4).
    for step in (0, 1):
        blended = blend(step, scheduler.timesteps[step], torch.zeros_like(known))
        expected = known + float(sigmas[step + 1]) * noise
        assert torch.allclose(blended[0, :, 2:4, 3:5], expected[0, :, 2:4, 3:5], atol=1e-5)
        assert blended[0, :, 4:8].eq(0).all()  # latent rows 4..7 of views 0 and 1 are unknown: the model's latents
    assert torch.allclose(blend(2, scheduler.timesteps[2], torch.zeros_like(known))[0, :, 2:4, 3:5],
                          known[0, :, 2:4, 3:5], atol=1e-5)  # last step: σ = 0, the known latents themselves


def test_training_free_follows_a_gray_background_model(recorder):
    model = tiny_zero123plus()  # zero123plus-v1.2: conditions on gray 127, generates on gray 0.5
    assert model.flavour.output_background == 0.5
    views, parts = _views(0.5), _parts()
    result = complete_training_free(model, views, parts, _input_masks(), OPTIONS)
    conditioning = recorder.calls[0]["images"]  # (P, h, w, 3) uint8: the part isolated on the input background
    assert conditioning.shape == (2, 96, 96, 3)
    assert (conditioning[0, 80:] == 127).all() and (conditioning[1, :16] == 127).all()
    assert result.background == (0.5, 0.5, 0.5)
    # the known pixels are kept exactly, the rest is what the model generated on its own background
    assert torch.allclose(result.images[0][parts.masks[0]], views.images[parts.masks[0]], atol=1e-6)
    assert torch.equal(result.alpha, torch.stack([estimate_alpha_from_background(v, (0.5,) * 3) for v in result.images]))
    known = encode_grids(model, torch.stack([_grid(torch.where(m[..., None], views.images, torch.tensor(0.5)))
                                             for m in parts.masks]))
    blended = recorder.calls[0]["on_step_end"](OPTIONS.num_inference_steps - 1, None, torch.zeros_like(known))
    assert torch.allclose(blended[0, :, 2:4, 3:5], known[0, :, 2:4, 3:5], atol=1e-5)  # known part on gray


def test_each_part_has_its_own_seed_from_its_name():
    # crc32(b"a") = 0xE8B7BE43, crc32(b"b") = 0x71BEEFF9: the seed plus the name's checksum, mod 2**64
    assert part_seed(5, "a") == 5 + 0xE8B7BE43 and part_seed(5, "b") == 5 + 0x71BEEFF9
    assert part_seed(2**64 - 1, "a") == 0xE8B7BE43 - 1
