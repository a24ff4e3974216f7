import numpy as np
import pytest
import torch

from partgen_models.multiview import MultiViewOptions, generate_views, sample_grid
from partgen_models.runtime import Interrupted, Runtime
from partgen_models.views import MultiView
from tiny_models import tiny_zero123plus

FAST = MultiViewOptions(num_inference_steps=2, view_size=64, seed=3)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (1, 96, 96, 3)).astype(np.uint8)


def test_grid_shape_range_and_determinism():
    model = tiny_zero123plus()
    first = sample_grid(model, _image(), FAST)
    assert first.shape == (1, 3, 192, 128) and first.dtype == torch.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, sample_grid(model, _image(), FAST))
    other_seed = sample_grid(model, _image(), MultiViewOptions(num_inference_steps=2, view_size=64, seed=4))
    assert (first - other_seed).abs().max() > 1e-3
    other_image = sample_grid(model, _image(1), FAST)
    assert (first - other_image).abs().max() > 1e-3  # the condition reaches the output


def test_guidance_off_runs_a_single_branch():
    model = tiny_zero123plus()
    calls = []
    hook = model.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        sample_grid(model, _image(), MultiViewOptions(num_inference_steps=2, view_size=64, guidance_scale=1.0))
        assert calls == [1, 1, 1, 1]  # reference + main pass per step, one branch each
        calls.clear()
        sample_grid(model, _image(), FAST)
        assert calls == [2, 2, 2, 2]  # both guidance halves in one batch
    finally:
        hook.remove()


def test_progress_every_step_with_a_preview():
    seen = []
    runtime = Runtime(progress=lambda step, total, preview: seen.append((step, total, preview)))
    sample_grid(tiny_zero123plus(), _image(), MultiViewOptions(num_inference_steps=3, view_size=64), runtime)
    assert [(s, t) for s, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    for _, _, preview in seen:
        assert preview.shape == (24, 16, 3) and 0 <= preview.min() and preview.max() <= 1


def test_interrupt_stops_within_one_step():
    model = tiny_zero123plus()
    checks = []

    def check():
        checks.append(1)
        if len(checks) == 3:
            raise Interrupted("stop")

    calls = []
    hook = model.unet.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        with pytest.raises(Interrupted):
            sample_grid(model, _image(), MultiViewOptions(num_inference_steps=50, view_size=64), Runtime(check_interrupt=check))
    finally:
        hook.remove()
    assert len(calls) == 4  # two full steps ran, the third never started
    assert model.reference_bank.mode == "off" and not model.reference_bank.tokens


def test_input_checks():
    with pytest.raises(ValueError, match="uint8 RGB"):
        sample_grid(tiny_zero123plus(), np.zeros((1, 32, 32, 4), np.uint8), FAST)
    with pytest.raises(ValueError, match="num_inference_steps"):
        MultiViewOptions(num_inference_steps=0)
    with pytest.raises(ValueError, match="view_size"):
        MultiViewOptions(view_size=100)


def _object_image(batch: int = 1) -> torch.Tensor:
    image = torch.ones(batch, 120, 160, 3)
    image[:, 30:90, 60:100] = torch.tensor([0.9, 0.2, 0.1])
    return image


def test_generate_views_returns_views_with_cameras():
    model = tiny_zero123plus(instantmesh_unet=True)
    (views,) = generate_views(model, _object_image(), options=FAST)
    assert isinstance(views, MultiView)
    assert views.images.shape == (6, 64, 64, 3) and views.alpha.shape == (6, 64, 64)
    assert views.layout == "zero123pp_v12" and views.fov_deg == 30.0 and views.background == (1.0, 1.0, 1.0)
    assert torch.allclose(views.c2w, model.layout.camera_to_world())
    assert views.input_image.shape == (512, 512, 3)
    assert torch.equal(views.grid()[:64, 64:], views.images[1])
    image = _object_image()
    assert views.source_size == tuple(image.shape[1:3])
    top, left, side = views.crop_box  # the square around the object that became input_image
    covered = (image[0] - 1.0).abs().amax(-1) > 0.1
    rows, cols = torch.nonzero(covered.any(1)).flatten(), torch.nonzero(covered.any(0)).flatten()
    # upstream's resize_foreground: the foreground slice drops its last row/column, then int(size / ratio)
    assert side == int(max(rows[-1] - rows[0], cols[-1] - cols[0]).item() / FAST.foreground_ratio)
    assert abs(top + side / 2 - (rows[0] + rows[-1] + 1).item() / 2) <= 1
    assert abs(left + side / 2 - (cols[0] + cols[-1] + 1).item() / 2) <= 1


def test_a_batch_gives_one_grid_per_image():
    model = tiny_zero123plus()
    image = _object_image(2)
    image[1, 30:90, 60:100] = torch.tensor([0.1, 0.2, 0.9])
    results = generate_views(model, image, options=FAST)
    assert len(results) == 2
    assert (results[0].images - results[1].images).abs().max() > 1e-3


def test_images_go_through_the_unet_in_batches_with_the_same_grids(monkeypatch):
    from partgen_models.multiview import sampler

    model = tiny_zero123plus()
    images = [_image(i)[0] for i in range(3)]
    whole = sample_grid(model, images, FAST)
    monkeypatch.setattr(sampler, "IMAGES_PER_BATCH", 2)
    batches = []
    hook = model.unet.register_forward_hook(lambda m, a, o: batches.append(a[0].shape[0]))
    try:
        split = sample_grid(model, images, FAST)
    finally:
        hook.remove()
    assert batches == [4, 4] * 2 + [2, 2] * 2  # (reference, main) x 2 steps: 2 images x 2 halves, then 1
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-4)  # float rounding of the batch size
