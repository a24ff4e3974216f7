"""Sampling a Zero123++ grid: the reference-attention denoising loop, batched over guidance halves.

Numbered as diffusers pipelines read: check inputs, encode the condition, prepare timesteps and
latents, denoise (interrupt check + progress with a preview every step), decode. Upstream:
SUDO-AI-3D/zero123plus ``diffusers-support/pipeline.py`` on top of diffusers' Stable Diffusion
pipeline.

Randomness: every sample has its own seed (``options.seed + i`` for the i-th sample of a batch, or
``sample_seeds``); it drives a generator for that sample's initial latents and ancestral noise
(upstream's ``generator``), and each conditioning image has its own seed (``image_seeds``, default
``options.seed + i``) whose derived generator (:func:`aux_seed`) draws the reference latent's
posterior samples and per-step noise
(upstream draws those from the global RNG, in the same order). So a sample does not depend on what
else is in its batch, splitting a batch does not change results, and noise is drawn on the CPU so a
seed gives the same grid on every device. It is drawn ahead of the steps that use it (``StepNoise``), and
the scheduler's arithmetic is done in the loop (``add_noise``, ``scale_model_input``, ``ancestral_step``),
so that the loop never waits for the device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..runtime import Runtime, default_runtime
from ..views import MultiView, grid_to_views
from .options import MultiViewOptions
from .preprocess import (
    NODE_WORDING,
    InputWording,
    estimate_alpha_from_background,
    prepare_conditions,
    resize_like_processor,
)
from .zero123pp import Zero123PlusModel

logger = logging.getLogger(__name__)

REFERENCE_SIZE = 512  # the reference latent always comes from a 512² image (feature_extractor_vae)
_AUX_SEED_OFFSET = 0x9E3779B97F4A7C15

# Stable Diffusion latent → RGB, for cheap per-step previews (ComfyUI's SD1.5 latent_rgb_factors).
_LATENT_RGB = torch.tensor(
    [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
)


def aux_seed(seed: int) -> int:
    return (seed + _AUX_SEED_OFFSET) % 2**64


def scale_latents(latents: torch.Tensor) -> torch.Tensor:
    return (latents - 0.22) * 0.75


def unscale_latents(latents: torch.Tensor) -> torch.Tensor:
    return latents / 0.75 + 0.22


def unscale_image(image: torch.Tensor) -> torch.Tensor:
    return image / 0.5 * 0.8


@dataclass(frozen=True)
class EncodedCondition:
    """Per-image conditioning, guidance halves stacked as ``[uncond; cond]`` when guidance is on."""

    prompt_embeds: torch.Tensor  # (G*B, 77, D)
    reference_latents: torch.Tensor  # (G*B, 4, 64, 64), unscaled VAE posterior samples


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def _randn_each(shape: tuple[int, ...], generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """One ``shape[1:]`` draw per generator, stacked: ``shape[0] == len(generators)``."""
    return torch.cat([_randn((1,) + tuple(shape[1:]), g, like) for g in generators])


def _pixel_values(processor, images_uint8: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    pixels = processor(images=list(images_uint8), return_tensors="pt").pixel_values
    return pixels.to(device=device, dtype=dtype)


@torch.no_grad()
def encode_condition(
    model: Zero123PlusModel,
    images_uint8: Sequence[np.ndarray],
    guidance: bool,
    aux_generators: list[torch.Generator],
    text_embeds: Optional[torch.Tensor] = None,
) -> EncodedCondition:
    """CLIP image embedding ramped into the empty prompt, and the VAE reference latent.

    ``images_uint8``: B ``[H,W,3]`` RGB images (sizes may differ; a ``[B,H,W,3]`` array works too) already
    composited on the model's input background; the processors resize them, as upstream's do.
    ``text_embeds`` ``[1,77,D]`` replaces the empty prompt in the conditional half (text-guided
    editing); the unconditional half keeps CLIPText("").
    """
    device, dtype = model.device, model.dtype
    batch = len(images_uint8)
    clip_pixels = _pixel_values(model.feature_extractor_clip, images_uint8, device, dtype)  # (B, 3, 224, 224)
    vae_pixels = _pixel_values(model.feature_extractor_vae, images_uint8, device, dtype)  # (B, 3, 512, 512)

    image_embeds = model.vision_encoder(clip_pixels).image_embeds  # (B, D)
    empty = model.empty_prompt_embeds.expand(batch, -1, -1)  # (B, 77, D)
    text = empty if text_embeds is None else text_embeds.to(device, dtype).expand(batch, -1, -1)
    cond_embeds = text + image_embeds[:, None, :] * model.ramping  # FlexDiffuse ramp over the 77 tokens

    # Upstream encodes the image, then (under guidance) an all-zero tensor in the processor's
    # normalised space — a mid-gray image — for the negative half. One VAE batch here; each image's
    # generator draws in upstream's order: the image's sample, then its negative one.
    pixels = torch.cat([vae_pixels, torch.zeros_like(vae_pixels[:1])]) if guidance else vae_pixels
    posterior = model.vae.encode(pixels).latent_dist
    mean, std = posterior.mean, posterior.std  # (B[+1], 4, 64, 64)
    draws = [_randn((2 if guidance else 1,) + tuple(mean.shape[1:]), g, mean) for g in aux_generators]
    positive = mean[:batch] + std[:batch] * torch.cat([d[:1] for d in draws])  # no scaling factor (upstream)
    if not guidance:
        return EncodedCondition(cond_embeds, positive)
    negative = mean[batch:] + std[batch:] * torch.cat([d[1:] for d in draws])
    return EncodedCondition(
        prompt_embeds=torch.cat([empty, cond_embeds]),  # negative prompt is plain CLIPText("")
        reference_latents=torch.cat([negative, positive]),
    )


def make_scheduler(model: Zero123PlusModel):
    from diffusers import EulerAncestralDiscreteScheduler

    # Upstream's README and InstantMesh switch the shipped "linspace" spacing to "trailing".
    return EulerAncestralDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="trailing")


def latent_preview(latents: torch.Tensor) -> torch.Tensor:
    """A cheap RGB preview ``[h,w,3]`` of the first grid from its scaled latents, where the latents are."""
    z = unscale_latents(latents[0].float())  # (4, h, w)
    rgb = torch.einsum("chw,cr->hwr", z, _LATENT_RGB.to(z.device))
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def sample_grid(
    model: Zero123PlusModel,
    images_uint8: Sequence[np.ndarray],
    options: MultiViewOptions = MultiViewOptions(),
    runtime: Optional[Runtime] = None,
) -> torch.Tensor:
    """Sample one grid per conditioning image: B ``[H,W,3]`` uint8 → ``[B,3,3·S,2·S]`` float in 0..1.

    The images are used as given (upstream feeds them to its image processors as they are); use
    :func:`generate_views` to crop, recentre and composite an arbitrary input first.
    """
    runtime = runtime or default_runtime("cpu", torch.float32)
    images_uint8 = list(images_uint8)
    grids = []
    # At most IMAGES_PER_BATCH images through the UNet together, whatever the IMAGE batch: each image's
    # noise follows its own seed (seed + i), so the batching does not change the grids.
    for start in range(0, len(images_uint8), IMAGES_PER_BATCH):
        chunk = images_uint8[start : start + IMAGES_PER_BATCH]
        seeds = [(options.seed + i) % 2**64 for i in range(start, start + len(chunk))]
        latents = sample_latents(model, chunk, options, runtime, sample_seeds=seeds, image_seeds=seeds)
        grids.append(decode_latents(model, latents))
    return torch.cat(grids)


# Images denoised together by sample_grid (an IMAGE batch, or MMPart's parts): bounds the UNet batch,
# and so VRAM (about 0.3 GB per image at 320 px in fp16, 1.2 GB at 640), whatever the batch size.
IMAGES_PER_BATCH = 8


@dataclass(frozen=True)
class SamplingSeeds:
    """One generator per sample (initial latents, ancestral noise) and one per conditioning image
    (reference-latent posterior draws and per-step reference noise); see the module docstring."""

    samples: list[torch.Generator]
    images: list[torch.Generator]


def make_seeds(options: MultiViewOptions, images: int, samples_per_image: int,
               sample_seeds: Optional[list[int]] = None, image_seeds: Optional[list[int]] = None) -> SamplingSeeds:
    batch = images * samples_per_image
    seeds = list(sample_seeds) if sample_seeds is not None else [(options.seed + i) % 2**64 for i in range(batch)]
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} sample seeds for {batch} samples")
    # The reference pass belongs to the image, shared by its samples: its noise follows the image's seed.
    per_image = list(image_seeds) if image_seeds is not None else [(options.seed + i) % 2**64 for i in range(images)]
    if len(per_image) != images:
        raise ValueError(f"{len(per_image)} image seeds for {images} images")
    return SamplingSeeds([torch.Generator().manual_seed(s) for s in seeds],
                         [torch.Generator().manual_seed(aux_seed(s)) for s in per_image])


def extra_input_channels(model: Zero123PlusModel, concat_latents: Optional[torch.Tensor]) -> int:
    """How many condition channels the UNet reads after the noisy latent (0 for Zero123++ itself)."""
    extra = model.unet.config.in_channels - model.unet.config.out_channels
    if (concat_latents is None) != (extra == 0):
        raise ValueError(
            f"this UNet takes {extra} extra input channels but "
            f"{'none were' if concat_latents is None else 'concat_latents were'} given"
        )
    return extra


def unet_input(noisy: torch.Tensor, condition: Optional[torch.Tensor]) -> torch.Tensor:
    """The UNet's input channels, the one place their order is set: the noisy latent ``[B,4,h,w]``
    first, then the model's condition channels ``[B,C',h,w]`` when it has any (PartGen's segmenter:
    the object-grid latent; its completer: ``completion.complete.COMPLETION_CHANNELS``)."""
    return noisy if condition is None else torch.cat([noisy, condition], dim=1)


def _condition_channels(concat_latents: torch.Tensor, model: Zero123PlusModel, batch: int, samples: int,
                        guidance: bool) -> torch.Tensor:
    """Condition channels per sample and guidance half: ``[G*B*N, C', h, w]``."""
    concat = concat_latents.to(model.device, model.dtype)
    if concat.shape[0] != batch:
        concat = concat.repeat_interleave(samples, dim=0)
    return torch.cat([concat] * 2) if guidance else concat


# The scheduler's arithmetic, done here so the denoising loop never waits on the device (see
# ``sample_latents``). Each line is diffusers' EulerAncestralDiscreteScheduler (0.2x-0.4x) ``add_noise``,
# ``scale_model_input`` and ``step`` with the same operands (``sigma`` as the scheduler's CPU float32
# 0-dim tensor), so results are bit-identical to calling the scheduler (tests/test_multiview_sampler.py).


def scale_model_input(sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``EulerAncestralDiscreteScheduler.scale_model_input`` at noise level ``sigma``."""
    return sample / ((sigma**2 + 1) ** 0.5)


def add_noise(original: torch.Tensor, noise: torch.Tensor, sigma_on_device: torch.Tensor) -> torch.Tensor:
    """``EulerAncestralDiscreteScheduler.add_noise`` with the step's sigma already on the device in
    ``original``'s dtype (shape ``[1]``; the scheduler looks it up each call: two syncs and two copies)."""
    return original + noise * sigma_on_device.reshape((1,) * original.ndim)


def ancestral_step(model_output: torch.Tensor, sample: torch.Tensor, sigma_from: torch.Tensor,
                   sigma_to: torch.Tensor, noise: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """``EulerAncestralDiscreteScheduler.step`` from ``sigma_from`` to ``sigma_to`` with its noise given
    (the scheduler draws it itself: with CPU generators, a host-to-device copy that waits for the device)."""
    sample = sample.to(torch.float32)  # the scheduler's upcast
    if prediction_type == "epsilon":
        pred_original_sample = sample - sigma_from * model_output
    elif prediction_type == "v_prediction":
        pred_original_sample = model_output * (-sigma_from / (sigma_from**2 + 1) ** 0.5) + (sample / (sigma_from**2 + 1))
    else:
        raise ValueError(f"Zero123++ schedulers predict 'epsilon' or 'v_prediction', not {prediction_type!r}")
    sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    derivative = (sample - pred_original_sample) / sigma_from
    prev_sample = sample + derivative * (sigma_down - sigma_from)
    prev_sample = prev_sample + noise * sigma_up
    return prev_sample.to(model_output.dtype)


NOISE_WINDOW_BYTES = 64 * 2**20  # host memory for pre-drawn noise at a time (500 steps x 10 samples fit in windows)


class StepNoise:
    """Every step's noise, drawn on the CPU from the per-image and per-sample generators in the order the
    loop used to draw it (reference noise: each image's generator, ``[2 or 1, 4, 64, 64]`` float32 cast to
    the model's dtype; ancestral noise: each sample's generator, ``[1, 4, h, w]`` in the model's dtype, as
    diffusers' ``randn_tensor`` draws it), a window of steps at a time, and copied to the device in one
    transfer per window (pinned memory, non-blocking on CUDA). The generators are distinct objects, so
    drawing one kind ahead of the other draws the same numbers."""

    def __init__(self, seeds: SamplingSeeds, reference: torch.Tensor, guidance: bool, latent_shape: tuple[int, ...],
                 dtype: torch.dtype, steps: int) -> None:
        self.seeds, self.guidance, self.dtype, self.steps = seeds, guidance, dtype, steps  # dtype: the UNet output's
        self.device, self.reference_dtype = reference.device, reference.dtype
        self.reference_shape = (2 if guidance else 1,) + tuple(reference.shape[1:])
        self.sample_shape = (1,) + tuple(latent_shape[1:])
        per_step = (len(seeds.images) * math.prod(self.reference_shape) * 4
                    + len(seeds.samples) * math.prod(self.sample_shape) * torch.finfo(dtype).bits // 8)
        self.window = max(1, min(steps, NOISE_WINDOW_BYTES // max(per_step, 1)))
        self._start = 0
        self._reference: Optional[torch.Tensor] = None  # (window, G*B, 4, 64, 64)
        self._ancestral: Optional[torch.Tensor] = None  # (window, B*N, 4, h, w)

    def _draw(self, start: int) -> None:
        count = min(self.window, self.steps - start)
        reference, ancestral = [], []
        for _ in range(count):
            draws = [torch.randn(self.reference_shape, generator=g, dtype=torch.float32) for g in self.seeds.images]
            # each image draws (negative, positive) as upstream's one [2,...] draw; negatives first in the batch
            reference.append(torch.cat([d[:1] for d in draws] + ([d[1:] for d in draws] if self.guidance else [])))
            ancestral.append(torch.cat([torch.randn(self.sample_shape, generator=g, dtype=self.dtype)
                                        for g in self.seeds.samples]))
        self._reference = self._to_device(torch.stack(reference)).to(self.reference_dtype)
        self._ancestral = self._to_device(torch.stack(ancestral))
        self._start = start

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host.to(self.device)

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference noise ``[G*B,4,64,64]``, ancestral noise ``[B*N,4,h,w]``) of ``step``; steps in order."""
        if self._reference is None or not self._start <= step < self._start + self._reference.shape[0]:
            self._draw(step)
        return self._reference[step - self._start], self._ancestral[step - self._start]


class StepPreviews:
    """Feeds ``runtime.progress`` a preview of each step without making the loop wait for the device: on
    CUDA, step k's preview is copied to pinned memory without blocking and handed over with step k+1's
    progress (the last step's at once). Elsewhere each step's preview goes with its own progress."""

    def __init__(self, runtime: Runtime, total: int, device: torch.device) -> None:
        self.runtime, self.total = runtime, total
        self.deferred = device.type == "cuda"
        self.pending: Optional[tuple[torch.Tensor, Any]] = None

    @staticmethod
    def copy_to_host(preview: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Start copying ``preview`` to pinned host memory; the event says when it has arrived."""
        host = torch.empty(preview.shape, dtype=preview.dtype, pin_memory=True)
        host.copy_(preview, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    def step_done(self, step: int, latents: torch.Tensor) -> None:
        preview = latent_preview(latents)
        if not self.deferred:
            self.runtime.progress(step + 1, self.total, preview.cpu())
            return
        shown, self.pending = self.pending, self.copy_to_host(preview)
        if step + 1 == self.total:
            shown = self.pending  # the last one waits: sampling is over
        if shown is not None:
            shown[1].synchronize()  # the previous step's copy: the device is still busy with this one
        self.runtime.progress(step + 1, self.total, shown[0] if shown is not None else None)


def _guided_velocity(model: Zero123PlusModel, model_input: torch.Tensor, reference_input: torch.Tensor,
                     t: torch.Tensor, condition: EncodedCondition, prompt_embeds: torch.Tensor,
                     guidance_scale: float, guidance: bool) -> torch.Tensor:
    """One step's prediction: the reference pass fills the attention bank, the main pass reads it,
    then classifier-free guidance combines the two halves."""
    bank = model.reference_bank
    bank.mode = "write"
    model.unet(reference_input, t, encoder_hidden_states=condition.prompt_embeds)
    bank.mode = "read"
    velocity = model.unet(model_input, t, encoder_hidden_states=prompt_embeds).sample
    bank.clear()
    if not guidance:
        return velocity
    uncond, cond = velocity.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def sample_latents(
    model: Zero123PlusModel,
    images_uint8: Sequence[np.ndarray],
    options: MultiViewOptions = MultiViewOptions(),
    runtime: Optional[Runtime] = None,
    *,
    concat_latents: Optional[torch.Tensor] = None,
    samples_per_image: int = 1,
    text_embeds: Optional[torch.Tensor] = None,
    on_step_end: Optional[Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    sample_seeds: Optional[list[int]] = None,
    image_seeds: Optional[list[int]] = None,
) -> torch.Tensor:
    """The denoising loop alone: scaled Zero123++ latents ``[B·N,4,3·S/8,2·S/8]``.

    ``samples_per_image`` (N) draws N samples per conditioning image in one batch (image-major).
    ``concat_latents`` ``[B,C',h,w]`` (or ``[B·N,C',h,w]``, one per sample) are the condition
    channels appended to the UNet input every step (:func:`unet_input`; PartGen's segmentation and
    completion models widen ``conv_in`` for them); the reference pass gets zeros in those channels.
    The reference pass runs once per image and its attention tokens are shared by the image's N
    samples. ``on_step_end(step, t, latents)`` may return replaced latents after each step (blended
    inpainting). ``text_embeds``: see :func:`encode_condition`.
    """
    runtime = runtime or default_runtime("cpu", torch.float32)
    # 1. check inputs
    images_uint8 = list(images_uint8)
    for array in images_uint8:
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB images [H,W,3], got {array.dtype} {array.shape}")
    runtime.prepare(model)
    layout = model.layout
    height, width = layout.rows * options.view_size, layout.cols * options.view_size
    guidance = options.guidance_scale > 1.0
    images = len(images_uint8)
    batch = images * samples_per_image
    seeds = make_seeds(options, images, samples_per_image, sample_seeds, image_seeds)
    extra_channels = extra_input_channels(model, concat_latents)

    # 2. encode the condition; samples of one image share it
    condition = encode_condition(model, images_uint8, guidance, seeds.images, text_embeds)
    prompt_embeds = _per_sample(condition.prompt_embeds, guidance, samples_per_image)
    concat = None
    if concat_latents is not None:
        concat = _condition_channels(concat_latents, model, batch, samples_per_image, guidance)  # (G*B*N, C', h, w)

    # 3. timesteps; the scheduler's sigmas stay on the CPU (diffusers keeps them there), a device copy
    # in the reference latents' dtype serves add_noise
    scheduler = make_scheduler(model)
    scheduler.set_timesteps(options.num_inference_steps, device=model.device)
    timesteps, sigmas = scheduler.timesteps, scheduler.sigmas  # sigmas: (T+1,) float32 on the CPU
    prediction_type = scheduler.config.prediction_type
    reference_sigmas = sigmas.to(model.device, condition.reference_latents.dtype)

    # 4. initial latents, then every step's noise (drawn ahead: StepNoise)
    scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
    shape = (batch, model.unet.config.out_channels, height // scale, width // scale)
    latents = _randn_each(shape, seeds.samples, condition.prompt_embeds) * scheduler.init_noise_sigma
    total = len(timesteps)
    noise = StepNoise(seeds, condition.reference_latents, guidance, shape, model.unet.dtype, total)
    no_condition = None
    if concat is not None:  # the reference pass gets zeros in the condition channels
        reference = condition.reference_latents
        no_condition = reference.new_zeros(reference.shape[0], extra_channels, *reference.shape[2:])
    previews = StepPreviews(runtime, total, model.device)

    # 5. denoising loop. Nothing in it waits for the device (no .item(), no host-to-device copy of
    # fresh noise, no scheduler index lookup), so a GPU runs ahead of Python; see benchmarks/RESULTS.md.
    try:
        for step, t in enumerate(timesteps):
            runtime.check_interrupt()
            sigma = sigmas[step]
            reference_noise, step_noise = noise.at(step)
            model_input = torch.cat([latents] * 2) if guidance else latents  # (G*B, 4, h, w)
            model_input = unet_input(scale_model_input(model_input, sigma), concat)
            reference = add_noise(condition.reference_latents, reference_noise, reference_sigmas[step : step + 1])
            reference = unet_input(scale_model_input(reference, sigma), no_condition)
            velocity = _guided_velocity(model, model_input, reference, t, condition, prompt_embeds,
                                        options.guidance_scale, guidance)
            latents = ancestral_step(velocity, latents, sigma, sigmas[step + 1], step_noise, prediction_type)
            if on_step_end is not None:
                latents = on_step_end(step, t, latents)
            previews.step_done(step, latents)
    finally:
        model.reference_bank.clear()
    return latents


@torch.no_grad()
def encode_grids(model: Zero123PlusModel, grids: torch.Tensor) -> torch.Tensor:
    """Grids ``[B,3,H,W]`` in 0..1 → scaled Zero123++ latents ``[B,4,H/8,W/8]`` (posterior means):
    the inverse of :func:`decode_latents`."""
    pixels = (grids.to(model.device, model.dtype) * 2 - 1) * 0.5 / 0.8  # scale_image
    latent = model.vae.encode(pixels).latent_dist.mean * model.vae.config.scaling_factor
    return scale_latents(latent)


def _per_sample(per_image: torch.Tensor, guidance: bool, samples: int) -> torch.Tensor:
    """``[G*B,...]`` → ``[G*B*N,...]``, each guidance half expanded image-major."""
    if samples == 1:
        return per_image
    halves = per_image.chunk(2) if guidance else (per_image,)
    return torch.cat([half.repeat_interleave(samples, dim=0) for half in halves])


@torch.no_grad()
def decode_latents(model: Zero123PlusModel, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → grids ``[B,3,H,W]`` in 0..1 on the CPU, one grid at a time to bound VAE memory."""
    batch = latents.shape[0]
    images = []
    for index in range(batch):
        z = unscale_latents(latents[index : index + 1]) / model.vae.config.scaling_factor
        decoded = unscale_image(model.vae.decode(z).sample)  # (1, 3, H, W) in about -1..1
        images.append((decoded.float() / 2 + 0.5).clamp(0, 1).cpu())
    return torch.cat(images)


def generate_views(
    model: Zero123PlusModel,
    image: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    options: MultiViewOptions = MultiViewOptions(),
    runtime: Optional[Runtime] = None,
    mask_marks: str = "auto",
    wording: InputWording = NODE_WORDING,
) -> list[MultiView]:
    """Image(s) of an object → one :class:`MultiView` of 6 views per image.

    image: ComfyUI IMAGE ``[B,H,W,3]`` (or ``[B,H,W,4]`` with alpha) in 0..1. mask: optional MASK
    ``[B,H,W]`` or ``[H,W]``; ``mask_marks`` says whether it marks the "background" (LoadImage's
    ``1 - alpha``), the "foreground" (background-removal nodes) or "auto" (decided per image from
    the border). Without a usable mask the foreground is estimated from a plain background colour.
    ``wording`` names the inputs in error messages (node inputs, or the headless command's flags).
    """
    runtime = runtime or default_runtime("cpu", torch.float32)
    conditions = prepare_conditions(
        image, mask, background=model.flavour.input_background, foreground_ratio=options.foreground_ratio,
        mask_marks=mask_marks, wording=wording,
    )
    crop_boxes = [c.box for c in conditions]
    source_size = (int(image.shape[-3]), int(image.shape[-2]))
    # Each square at its own size, as upstream hands it to the CLIP and VAE processors.
    grids = sample_grid(model, [c.image for c in conditions], options, runtime)  # (B, 3, H, W)
    prepared = [torch.from_numpy(resize_like_processor(c.image, REFERENCE_SIZE)).float() / 255.0 for c in conditions]
    layout = model.layout
    background = (model.flavour.output_background,) * 3
    c2w = layout.camera_to_world()
    results = []
    for grid, source, crop_box in zip(grids, prepared, crop_boxes):
        views = grid_to_views(grid.permute(1, 2, 0), layout.rows, layout.cols)  # (6, S, S, 3)
        results.append(
            MultiView(
                images=views.contiguous(),
                alpha=estimate_alpha_from_background(views, background),
                c2w=c2w.clone(),
                fov_deg=layout.fov_deg,
                layout=layout.name,
                background=background,
                input_image=source.contiguous(),
                crop_box=crop_box,
                source_size=source_size,
            )
        )
    return results
