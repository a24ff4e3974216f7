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


# ------------------------------------------------------------------------------------------------
# The loop does the scheduler's arithmetic itself (so it never waits for the device): same bits.


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_scheduler_arithmetic_matches_diffusers_bit_for_bit(prediction_type, dtype):
    from diffusers import EulerAncestralDiscreteScheduler

    from partgen_models.multiview.sampler import add_noise, ancestral_step, scale_model_input
    from partgen_models.testing.tiny_models import SCHEDULER_CONFIG

    config = dict(SCHEDULER_CONFIG, prediction_type=prediction_type)
    scheduler = EulerAncestralDiscreteScheduler.from_config(config, timestep_spacing="trailing")
    scheduler.set_timesteps(5)
    data = torch.Generator().manual_seed(0)
    reference = torch.randn((2, 4, 8, 8), generator=data).to(dtype)
    sigmas_on_device = scheduler.sigmas.to(dtype=dtype)
    ours = theirs = torch.randn((1, 4, 6, 4), generator=data).to(dtype)
    for step, t in enumerate(scheduler.timesteps):
        output = torch.randn(ours.shape, generator=data).to(dtype)
        ref_noise = torch.randn(reference.shape, generator=data).to(dtype)
        assert torch.equal(scale_model_input(ours, scheduler.sigmas[step]), scheduler.scale_model_input(theirs, t))
        assert torch.equal(add_noise(reference, ref_noise, sigmas_on_device[step:step + 1]),
                           scheduler.add_noise(reference, ref_noise, t.reshape(-1)))
        theirs = scheduler.step(output, t, theirs, generator=[torch.Generator().manual_seed(step)]).prev_sample
        noise = torch.randn(ours.shape, generator=torch.Generator().manual_seed(step), dtype=dtype)  # as diffusers draws
        ours = ancestral_step(output, ours, scheduler.sigmas[step], scheduler.sigmas[step + 1], noise, prediction_type)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), (step, (ours - theirs).abs().max())
    with pytest.raises(ValueError, match="predict 'epsilon' or 'v_prediction', not 'sample'"):
        ancestral_step(output, ours, scheduler.sigmas[0], scheduler.sigmas[1], noise, "sample")


def _old_loop_latents(model, image, options):
    """What sample_latents computed before it drew noise ahead: the scheduler's own add_noise and step
    with the sample generators, per step."""
    from partgen_models.multiview import sampler as mv

    images = [image[0]]
    guidance = options.guidance_scale > 1.0
    seeds = mv.make_seeds(options, 1, 1)
    condition = mv.encode_condition(model, images, guidance, seeds.images)
    scheduler = mv.make_scheduler(model)
    scheduler.set_timesteps(options.num_inference_steps)
    shape = (1, 4, 3 * options.view_size // 8, 2 * options.view_size // 8)
    latents = mv._randn_each(shape, seeds.samples, condition.prompt_embeds) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guidance else latents, t)
        ref = condition.reference_latents
        draws = [torch.randn((2 if guidance else 1,) + tuple(ref.shape[1:]), generator=g) for g in seeds.images]
        noise = torch.cat([d[:1] for d in draws] + ([d[1:] for d in draws] if guidance else [])).to(ref)
        reference = scheduler.scale_model_input(scheduler.add_noise(ref, noise, t.reshape(-1)), t)
        velocity = mv._guided_velocity(model, model_input, reference, t, condition, condition.prompt_embeds,
                                       options.guidance_scale, guidance)
        latents = scheduler.step(velocity, t, latents, generator=seeds.samples).prev_sample
    model.reference_bank.clear()
    return latents


@pytest.mark.parametrize("window_bytes", [None, 1])
def test_sampling_draws_the_same_noise_as_the_scheduler_did(monkeypatch, window_bytes):
    """Noise drawn ahead (a window of steps at a time; 1 byte: one step per window) gives the latents the
    per-step scheduler calls gave, bit for bit."""
    from partgen_models.multiview import sampler as mv

    if window_bytes is not None:
        monkeypatch.setattr(mv, "NOISE_WINDOW_BYTES", window_bytes)
    model = tiny_zero123plus()
    options = MultiViewOptions(num_inference_steps=3, view_size=64, seed=5)
    expected = _old_loop_latents(model, _image(), options)
    assert torch.equal(mv.sample_latents(model, [_image()[0]], options), expected)


def test_the_denoising_loop_never_waits_for_the_device():
    """Steps after the first run no op that makes the host wait for a GPU: no .item()/nonzero (the
    scheduler's timestep lookup), no fresh CPU noise (copied to the device: a stream sync)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from partgen_models.multiview import sampler as mv

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func.overloadpacket.__name__))
            return func(*args, **(kwargs or {}))

    recorder = Recorder()
    per_step = []
    runtime = Runtime(progress=lambda step, total, preview: per_step.append(len(recorder.ops)))
    model = tiny_zero123plus()
    with recorder:
        mv.sample_latents(model, [_image()[0]], MultiViewOptions(num_inference_steps=4, view_size=64), runtime)
    later_steps = recorder.ops[per_step[0]:per_step[-1]]
    waiting = {"nonzero", "_local_scalar_dense", "item", "randn", "normal_", "normal"}
    assert later_steps and not [op for op in later_steps if op in waiting], sorted(set(later_steps) & waiting)
    assert "convolution" in later_steps  # the recorder saw the UNet


def test_deferred_previews_follow_one_step_behind_and_the_last_comes_at_once(monkeypatch):
    """The CUDA path of StepPreviews (exercised here with a stand-in for the pinned copy and its event):
    progress still reports 1..T once each; step k's preview arrives with step k+1, the last one with T,
    and the loop waits only for the copy of the step before."""
    from partgen_models.multiview import sampler as mv

    waited = []

    class Event:
        def __init__(self, step):
            self.step = step

        def synchronize(self):
            waited.append(self.step)

    seen = []
    previews = mv.StepPreviews(Runtime(progress=lambda step, total, preview: seen.append((step, total, preview))),
                               total=3, device=torch.device("cpu"))
    previews.deferred = True
    copies = []
    monkeypatch.setattr(previews, "copy_to_host", lambda preview: copies.append(preview) or (preview, Event(len(copies))))
    latents = [torch.full((1, 4, 3, 2), float(k)) for k in range(3)]
    for step in range(3):
        previews.step_done(step, latents[step])
    assert [(s, t) for s, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert seen[0][2] is None and seen[1][2] is copies[0] and seen[2][2] is copies[2]
    assert waited == [1, 3]  # step 2's copy waited for step 1's; the last waits for itself
    assert torch.equal(copies[2], mv.latent_preview(latents[2]))
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
