"""Training PartGen's segmentation or completion UNet on a built training set, through ``accelerate``.

One step, as Zero123++ conditions and PartGen trains (§3.2, §3.3):

1. Encode (frozen, no grad): the target grid → scaled latents (the sampler's latent space); the
   extra inputs → latents (segmentation: the object grid; completion: masked part ++ context
   ++ mask at latent resolution, the context zeroed for ``context_dropout`` of the samples); the
   conditioning view → CLIP image embedding ramped into the prompt (CLIPText of the part's name for
   ``instruction_probability`` of completion samples) and the VAE reference latent. For
   ``condition_dropout`` of the samples the condition is what the sampler's unconditional half uses
   (CLIPText(""), the VAE latent of a mid-gray image), so classifier-free guidance works.
2. Noise: t uniform over the 1000 training timesteps; the target and the reference latents noised to t.
3. The reference pass fills the attention bank, the main pass (noisy latent ++ extra inputs) reads it;
   loss = MSE to the velocity v (Zero123++ is a v-prediction model).

Randomness comes from one generator per sample, seeded by (seed, step, the sample's position in the
global batch), and the data order from the step (:mod:`.data`), so a resumed run continues exactly as an
unbroken one, and N processes with batch B draw exactly what one process with batch N·B draws (DDP
averages the gradients of equal shares, so the steps agree to float tolerance). Multi-GPU and
multi-node runs are ``accelerate launch``'s (DDP, or DeepSpeed/FSDP from an accelerate config); each
rank reads its share of every global batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..multiview.catalog import MULTIVIEW_CHOICES, resolve_multiview_model
from ..multiview.sampler import scale_latents
from ..multiview.zero123pp import Zero123PlusModel, encode_texts, load_text_encoder, load_zero123plus
from .config import ConfigError, TrainingConfig
from .data import StepBatches, TrainingSet, sample_seed
from .shards import write_atomic_bytes
from .unet import (
    FORMATS,
    expected_in_channels,
    list_checkpoints,
    load_training_state,
    prune_checkpoints,
    save_checkpoint,
    widen_conv_in,
)

logger = logging.getLogger(__name__)

TASKS = tuple(FORMATS)


def _uniform(generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One U(0,1) draw per sample ``[B]``, each from its own generator."""
    return torch.stack([torch.rand((), generator=g) for g in generators])


def _normal(generators: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """One standard normal draw of ``shape`` per sample ``[B, *shape]``, each from its own generator."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])


class ReferenceConditionedUNet(torch.nn.Module):
    """Zero123++'s two UNet passes as one module, so DDP sees one forward per step.

    The reference pass runs without gradient checkpointing (its tokens must exist when the main pass's
    checkpointed attention is recomputed in the backward pass); the bank keeps the tokens until
    :meth:`release` after the backward pass.
    """

    def __init__(self, diffusion: Zero123PlusModel) -> None:
        super().__init__()
        self.unet = diffusion.unet
        self.bank = diffusion.reference_bank
        self.checkpointing = False

    def forward(self, reference: torch.Tensor, sample: torch.Tensor, timesteps: torch.Tensor,
                prompt_embeds: torch.Tensor) -> torch.Tensor:
        self.bank.clear()
        self.bank.keep_tokens = True
        if self.checkpointing:
            self.unet.disable_gradient_checkpointing()
        self.bank.mode = "write"
        self.unet(reference, timesteps, encoder_hidden_states=prompt_embeds)
        if self.checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.bank.mode = "read"
        return self.unet(sample, timesteps, encoder_hidden_states=prompt_embeds).sample

    def release(self) -> None:
        self.bank.keep_tokens = False
        self.bank.clear()


def load_base_model(task: str, config: TrainingConfig) -> tuple[Zero123PlusModel, str, Path]:
    """The base Zero123++ v1.2 model with its UNet widened for ``task``; its name and folder."""
    files = resolve_multiview_model(config.base_model, [Path(config.models_dir)])
    diffusion = load_zero123plus(files.folder, files.unet_file, dtype=torch.float32, flavour=FORMATS[task])
    latent_channels = diffusion.unet.config.out_channels
    expected = expected_in_channels(task, latent_channels)
    if config.unet_in_channels is not None and config.unet_in_channels != expected:
        raise ConfigError(
            f"unet_in_channels is {config.unet_in_channels}, but PartGen's {task} UNet on this {latent_channels}-channel "
            f"latent takes {expected} (" + ("noisy latent + object-grid latent" if task == "segmentation" else
                                           "noisy latent + masked part + context + mask") + "); fix or remove it")
    if diffusion.unet.config.in_channels != latent_channels:
        raise ConfigError(f"base model {config.base_model!r} already has a widened input "
                          f"({diffusion.unet.config.in_channels} channels); start from Zero123++ v1.2")
    widen_conv_in(diffusion.unet, expected)
    base_name = "zero123plus-v1.2" if config.base_model in MULTIVIEW_CHOICES else files.folder.name
    return diffusion, base_name, files.folder


def refuse_unseen_processes(accelerator) -> None:
    """Refuse a multi-process launch that ``accelerate`` runs as single processes: each would train alone as
    rank 0 on the whole data and overwrite the others' checkpoints (on CPUs without ACCELERATE_USE_CPU)."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > accelerator.num_processes:
        raise ConfigError(
            f"{launched} processes were launched but accelerate runs this one as {accelerator.num_processes} of "
            f"{accelerator.num_processes}: on a machine without GPUs set ACCELERATE_USE_CPU=true (gloo backend), e.g. "
            "`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m partgen_models.training.train ...`")


class ExponentialMovingAverage:
    """An fp32 shadow of the trainable weights: ``shadow ← decay·shadow + (1 − decay)·weights``."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for key, value in module.state_dict().items():
            self.shadow[key].lerp_(value.detach().float(), 1.0 - self.decay)

    def swap(self, module: torch.nn.Module) -> None:
        """Exchange the module's weights and the shadow (twice restores both)."""
        current = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict({k: v.to(current[k].dtype) for k, v in self.shadow.items()})
        self.shadow = {k: v.float() for k, v in current.items()}


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    learning_rate: float


class PartGenTrainer:
    """Owns one run: models, optimiser, data, EMA, checkpoints, evaluation, the metrics log."""

    def __init__(self, task: str, config: TrainingConfig, accelerator=None,
                 diffusion: Optional[Zero123PlusModel] = None, base_name: str = "zero123plus-v1.2",
                 base_folder: Optional[Path] = None, resume: Optional[Path] = None) -> None:
        """``resume``: a checkpoint folder to continue from; by default the newest one in ``output_dir``."""
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        self.task, self.config = task, config
        self.training_set = TrainingSet(config.dataset)  # fails early on a missing or empty set
        if config.eval_every and (self.training_set.view_size < 64 or self.training_set.view_size % 8):
            raise ConfigError(f"evaluation samples views of the training set's size ({self.training_set.view_size} px), "
                              "and the sampler needs a multiple of 8 of at least 64: build the set with --view-size 64 "
                              "or more, or set eval_every to 0")
        if accelerator is None:
            from accelerate import Accelerator

            accelerator = Accelerator(mixed_precision=config.mixed_precision)
        self.accelerator = accelerator
        refuse_unseen_processes(accelerator)
        if diffusion is None:
            diffusion, base_name, base_folder = load_base_model(task, config)
        elif diffusion.unet.config.in_channels == diffusion.unet.config.out_channels:
            widen_conv_in(diffusion.unet, expected_in_channels(task, diffusion.unet.config.out_channels))
        self.diffusion, self.base_name, self.base_folder = diffusion, base_name, base_folder
        device = accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        for frozen in (diffusion.vae, diffusion.vision_encoder):
            frozen.requires_grad_(False).eval().to(device, self.weight_dtype)
        diffusion.empty_prompt_embeds = diffusion.empty_prompt_embeds.to(device, torch.float32)
        diffusion.ramping = diffusion.ramping.to(device, torch.float32)
        self.text_encoder = self.tokenizer = None
        if task == "completion" and config.instruction_probability > 0.0 and base_folder is not None:
            self.text_encoder, self.tokenizer = load_text_encoder(base_folder)
            self.text_encoder.requires_grad_(False).eval().to(device, self.weight_dtype)
        unet = diffusion.unet
        unet.requires_grad_(True).train().to(device, torch.float32)
        self.network = ReferenceConditionedUNet(diffusion)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            self.network.checkpointing = True
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate,
                                           betas=(config.adam_beta1, config.adam_beta2),
                                           eps=config.adam_epsilon, weight_decay=config.weight_decay)
        self.ema = ExponentialMovingAverage(unet, config.ema_decay) if config.ema_decay is not None else None
        self.step = 0
        if resume is not None:
            self.resume_from(Path(resume))
        else:
            self._resume_if_any()
        from accelerate.utils import DistributedType

        if self.ema is not None and accelerator.distributed_type == DistributedType.FSDP:
            raise ConfigError("ema_decay needs whole weights on every rank; FSDP shards them: set ema_decay to null "
                              "or use DDP / DeepSpeed ZeRO-2")
        self.model, self.optimizer = accelerator.prepare(self.network, self.optimizer)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(diffusion.scheduler_config)
        if self.noise_scheduler.config.prediction_type != "v_prediction":
            raise ConfigError(f"the base model's scheduler predicts {self.noise_scheduler.config.prediction_type!r}; "
                              "Zero123++ v1.2 (and these trainers) use v_prediction")
        self.batches = StepBatches(self.training_set, task, config.batch_size, config.seed,
                                   accelerator.process_index, accelerator.num_processes)
        self.output_dir = Path(config.output_dir)
        self._eval_samples = None

    # ------------------------------------------------------------------------------------------------
    # resume and checkpoints

    def _resume_if_any(self) -> None:
        checkpoints = list_checkpoints(Path(self.config.output_dir))
        if not checkpoints:
            return
        self.resume_from(checkpoints[-1])

    def resume_from(self, folder: Path) -> None:
        unet = self.diffusion.unet
        if not Path(folder).is_dir():
            raise ConfigError(f"cannot resume from {folder}: no such checkpoint folder")
        state = load_training_state(folder, self.task, unet)
        unet.load_state_dict(state.weights)
        if state.optimizer is not None:
            self.optimizer.load_state_dict(state.optimizer)
        elif self.step == 0:
            logger.warning("%s holds no optimiser state; the optimiser restarts", folder)
        if self.ema is not None:
            self.ema.shadow = {k: v.float().to(self.accelerator.device) for k, v in
                               (state.ema or unet.state_dict()).items()}
        self.step = state.step
        logger.info("resumed from %s at step %d", folder, self.step)

    def save(self) -> Optional[Path]:
        accelerator = self.accelerator
        from accelerate.utils import DistributedType

        accelerator.wait_for_everyone()
        sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        # every rank takes part: FSDP and ZeRO-3 gather the full weights collectively
        state = accelerator.get_state_dict(self.model)
        path = None
        if accelerator.is_main_process:
            if sharded:
                logger.warning("DeepSpeed/FSDP: optimiser moments are sharded and not saved; a resume restarts them")
            weights = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
            unet = accelerator.unwrap_model(self.model).unet
            extra = {"dataset": str(self.config.dataset), "config": self.config.to_json()}
            path = save_checkpoint(self.output_dir, self.step, self.task, unet, self.base_name,
                                   None if sharded else self.optimizer.state_dict(),
                                   self.ema.shadow if self.ema is not None else None, extra, weights=weights)
            prune_checkpoints(self.output_dir, self.config.keep_checkpoints)
            logger.info("saved %s", path)
        accelerator.wait_for_everyone()
        return path

    # ------------------------------------------------------------------------------------------------
    # one step

    def learning_rate(self, step: int) -> float:
        """The rate of optimiser step ``step`` (0-based): linear warm-up, then constant or a half cosine to 0."""
        config = self.config
        warmup = config.lr_warmup_steps
        if step < warmup:
            return config.learning_rate * (step + 1) / warmup
        if config.lr_schedule == "cosine":
            progress = (step - warmup) / max(1, config.max_steps - warmup)
            return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return config.learning_rate

    @torch.no_grad()
    def _encode(self, grids: torch.Tensor) -> torch.Tensor:
        """Grids ``[B,3,H,W]`` in 0..1 → scaled Zero123++ latents (as ``sampler.encode_grids``)."""
        vae = self.diffusion.vae
        pixels = (grids.to(vae.device, vae.dtype) * 2 - 1) * 0.5 / 0.8
        return scale_latents(vae.encode(pixels).latent_dist.mean.float() * vae.config.scaling_factor)

    @torch.no_grad()
    def _condition(self, batch: dict, generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings ``[B,77,D]`` and reference latents ``[B,4,64,64]`` (unscaled, as upstream)."""
        diffusion, device, config = self.diffusion, self.accelerator.device, self.config
        images = list(batch["input_image"].numpy())
        batch_size = len(images)
        clip = diffusion.feature_extractor_clip(images=images, return_tensors="pt").pixel_values
        vae_pixels = diffusion.feature_extractor_vae(images=images, return_tensors="pt").pixel_values
        dropped = _uniform(generators) < config.condition_dropout
        embeds = diffusion.vision_encoder(clip.to(device, self.weight_dtype)).image_embeds.float()  # (B, D)
        text = diffusion.empty_prompt_embeds.expand(batch_size, -1, -1).clone()  # (B, 77, D)
        if self.task == "completion" and self.text_encoder is not None:
            instructed = (_uniform(generators) < config.instruction_probability) & ~dropped
            if instructed.any():
                chosen = [batch["instruction"][i] for i in instructed.nonzero().flatten().tolist()]
                text[instructed.to(device)] = encode_texts(self.text_encoder, self.tokenizer, chosen).float()
        prompt = text + embeds[:, None, :] * diffusion.ramping
        drop = dropped.to(device)
        prompt[drop] = diffusion.empty_prompt_embeds.float()  # the sampler's unconditional half
        vae_pixels[dropped] = 0.0  # a mid-gray image in the processor's space, the sampler's negative reference
        posterior = diffusion.vae.encode(vae_pixels.to(device, self.weight_dtype)).latent_dist
        draw = _normal(generators, posterior.mean.shape[1:]).to(device)
        return prompt, posterior.mean.float() + posterior.std.float() * draw

    @torch.no_grad()
    def _extra_inputs(self, batch: dict, generators: Sequence[torch.Generator]) -> torch.Tensor:
        condition = self._encode(batch["condition"])  # (B, 4, h, w)
        if self.task == "segmentation":
            return condition
        scale = 2 ** (len(self.diffusion.vae.config.block_out_channels) - 1)
        keep = (_uniform(generators) >= self.config.context_dropout).float()
        context = condition * keep.to(condition.device)[:, None, None, None]  # zeros = "no context", as inference
        mask = F.max_pool2d(batch["mask"].to(condition.device).float(), scale)  # (B, 1, h, w), as complete_parts
        return torch.cat([self._encode(batch["masked"]), context, mask], dim=1)

    def loss(self, batch: dict, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """The v-prediction loss of one batch; sample i's randomness all from ``generators[i]`` (CPU)."""
        device = self.accelerator.device
        target_latents = self._encode(batch["target"])  # (B, 4, h, w)
        batch_size = target_latents.shape[0]
        if len(generators) != batch_size:
            raise ValueError(f"{len(generators)} generators for a batch of {batch_size} samples")
        extra = self._extra_inputs(batch, generators)
        prompt, reference = self._condition(batch, generators)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.stack([torch.randint(0, steps, (), generator=g) for g in generators]).to(device)
        noise = _normal(generators, target_latents.shape[1:]).to(device)
        reference_noise = _normal(generators, reference.shape[1:]).to(device)
        noisy = self.noise_scheduler.add_noise(target_latents, noise, timesteps)
        velocity = self.noise_scheduler.get_velocity(target_latents, noise, timesteps)
        noisy_reference = self.noise_scheduler.add_noise(reference, reference_noise, timesteps)
        # the reference pass gets zeros in the extra channels, as the sampler gives it
        reference_input = torch.cat([noisy_reference, noisy_reference.new_zeros(batch_size, extra.shape[1],
                                                                                *noisy_reference.shape[2:])], dim=1)
        sample = torch.cat([noisy, extra], dim=1)  # (B, in_channels, h, w)
        try:
            with self.accelerator.autocast():
                predicted = self.model(reference_input, sample, timesteps, prompt)
            return F.mse_loss(predicted.float(), velocity.float())
        finally:
            if not torch.is_grad_enabled():
                self.network.release()

    def sample_generators(self, step: int) -> list[torch.Generator]:
        """One generator per sample of this rank's share of step ``step``, keyed by the sample's global position."""
        first = self.accelerator.process_index * self.config.batch_size
        return [torch.Generator().manual_seed(sample_seed(self.config.seed, step, first + i, 1))
                for i in range(self.config.batch_size)]

    def train_step(self, batch: dict) -> StepResult:
        """One optimiser step on ``batch`` (this rank's share of step ``self.step``)."""
        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.loss(batch, self.sample_generators(self.step))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss.item()} at step {self.step}; lower learning_rate, or use bf16 "
                                     "instead of fp16")
        self.accelerator.backward(loss)
        self.network.release()
        if self.config.max_grad_norm > 0 and self.accelerator.sync_gradients:
            self.accelerator.clip_grad_norm_(self.diffusion.unet.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.diffusion.unet)
        self.step += 1
        mean_loss = self.accelerator.reduce(loss.detach(), reduction="mean")
        return StepResult(self.step, float(mean_loss), lr)

    # ------------------------------------------------------------------------------------------------
    # evaluation

    def _inference_model(self):
        from ..completion.completer import PartGenCompletionModel
        from ..segmentation.palette import PALETTE
        from ..segmentation.segmenter import PartGenSegmentationModel

        if self.task == "segmentation":
            return PartGenSegmentationModel(self.diffusion, PALETTE)
        return PartGenCompletionModel(self.diffusion, self.base_folder or Path("."))

    def evaluate(self) -> dict:
        """The existing protocol on the procedural set at the training view size; writes a sample grid."""
        from ..evaluation.evaluate import EvaluationOptions
        from ..runtime import Runtime

        options = EvaluationOptions(size=self.training_set.view_size, seeded=False)
        runtime = Runtime(device=self.accelerator.device, dtype=torch.float32)
        unet = self.diffusion.unet
        if self.ema is not None:
            self.ema.swap(unet)
        unet.eval()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                if self.task == "segmentation":
                    metrics, image = self._evaluate_segmentation(options, runtime)
                else:
                    metrics, image = self._evaluate_completion(options, runtime)
        finally:
            unet.train()
            if self.ema is not None:
                self.ema.swap(unet)
        self._write_sample_image(image)
        return metrics

    def _eval_set(self, make):
        if self._eval_samples is None:
            self._eval_samples = make()
        return self._eval_samples

    def _evaluate_segmentation(self, options, runtime) -> tuple[dict, torch.Tensor]:
        from ..evaluation.evaluate import evaluate_backend, procedural_samples
        from ..segmentation.segment import SegmentationOptions, segment_views

        config = self.config
        samples = self._eval_set(lambda: list(procedural_samples(config.eval_objects, options=options)))
        model = self._inference_model()
        seg_options = SegmentationOptions(num_samples=config.eval_samples, num_inference_steps=config.eval_steps,
                                          guidance_scale=config.eval_guidance)
        first: dict = {}

        class Backend:
            name, needs_ground_truth = "partgen-training", False

            def propose(self, views, *, seed=0, point=None, **unused):
                result = segment_views(model, views, replace(seg_options, seed=seed % 2**63), runtime)
                first.setdefault("samples", result.samples[0])
                first.setdefault("views", views.images)
                return result.masks

        report = evaluate_backend(Backend(), samples, options, seed=config.seed)
        image = torch.cat([first["views"], first["samples"]], dim=2)  # object | colour-coded sample, per view
        return {f"eval/{k}": v for k, v in report.summary.items()}, image

    def _evaluate_completion(self, options, runtime) -> tuple[dict, torch.Tensor]:
        from ..completion.complete import CompletionOptions, complete_parts
        from ..evaluation.completion_eval import evaluate_completion, procedural_completion_samples
        from ..evaluation.completion_metrics import load_completion_scorer

        config = self.config
        samples = self._eval_set(lambda: [s for s in procedural_completion_samples(config.eval_objects, options=options)
                                          if s.part_names])
        model = self._inference_model()
        completion = CompletionOptions(num_inference_steps=config.eval_steps, guidance_scale=config.eval_guidance)
        first: dict = {}

        class Method:
            name = "partgen-training"

            def complete(self, sample, seed):
                result = complete_parts(model, sample.views, sample.part_masks, replace(completion, seed=seed), runtime)
                first.setdefault("truth", sample.truth_images[0])
                first.setdefault("completed", result.images[0])
                return result

        scorer = load_completion_scorer(Path(config.models_dir) / "metrics", allow_download=False, use_clip=False)
        report = evaluate_completion(Method(), samples, scorer, seed=config.seed)
        image = torch.cat([first["truth"], first["completed"]], dim=2)  # amodal truth | completed, per view
        return {f"eval/{k}": v for k, v in report.summary.items() if v is not None}, image

    def _write_sample_image(self, views: torch.Tensor) -> None:
        """Views ``[V,H,W',3]`` → a PNG in ``samples/`` laid out as the layout's grid."""
        import io

        from PIL import Image

        from ..views import views_to_grid

        layout = self.training_set.layout
        grid = views_to_grid(views.float().cpu(), layout.rows, layout.cols)
        buffer = io.BytesIO()
        Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(buffer, format="PNG")
        write_atomic_bytes(self.output_dir / "samples" / f"step-{self.step:07d}.png", buffer.getvalue())

    # ------------------------------------------------------------------------------------------------
    # the loop

    def log(self, entry: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, allow_nan=False, default=float) + "\n"
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as stream:
            stream.write(line)  # one whole line per write: a crash loses at most the last entry

    def train(self, max_steps: Optional[int] = None) -> list[StepResult]:
        """Train until ``max_steps`` (default: the config's); checkpoints, evaluation and logs on the way."""
        from tqdm import tqdm

        config = self.config
        total = min(max_steps or config.max_steps, config.max_steps)
        if self.step >= total:
            logger.info("nothing to do: step %d already reached %d", self.step, total)
            return []
        loader = torch.utils.data.DataLoader(self.batches, batch_size=None, sampler=range(self.step, total),
                                             num_workers=config.data_workers)
        bar = tqdm(total=total, initial=self.step, desc=f"training {self.task}", unit="step",
                   disable=not self.accelerator.is_main_process)
        results, started, window = [], time.perf_counter(), []
        if self.step == 0 and config.eval_every:
            self._evaluate_and_log()
        for batch in loader:
            result = self.train_step(batch)
            results.append(result)
            window.append(result.loss)
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.4f}")
            if self.step % config.log_every == 0 or self.step == total:
                elapsed = time.perf_counter() - started
                samples = len(window) * config.batch_size * self.accelerator.num_processes
                self.log({"step": self.step, "loss": float(np.mean(window)), "lr": result.learning_rate,
                          "samples_per_s": samples / max(elapsed, 1e-9)})
                window, started = [], time.perf_counter()
            if config.eval_every and self.step % config.eval_every == 0:
                self._evaluate_and_log()
            if self.step % config.checkpoint_every == 0 or self.step == total:
                self.save()
        bar.close()
        return results

    def _evaluate_and_log(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            metrics = self.evaluate()
            finite = {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in metrics.items()}
            logger.info("step %d: %s", self.step, finite)
            self.log({"step": self.step, **finite})
        self.accelerator.wait_for_everyone()
