"""Training benchmark: does training help (tiny, CPU), and how fast is a real-size step (GPU).

    python benchmarks/bench_training.py                        # --size tiny: mAP before/after training, CPU
    python benchmarks/bench_training.py --size real            # real-size bf16 steps on a CUDA GPU (< 3 min)
    python benchmarks/bench_training.py --size real --task completion --batch-size 8

``--size tiny`` trains a tiny segmenter on a training set built from the procedural generator (seed 1,
``--objects`` objects; the evaluation set is seed 0, so the objects scored are never trained on) for a
fixed budget of ``--steps`` steps and prints PartGen's automatic-mode metrics (mAP50/75, recall@K) of
the untrained (step 0: the base UNet with zero-initialised extra inputs) and the trained model, scored
by the trainer's own periodic evaluation (every ``--eval-every`` steps, cheap: ``--eval-objects`` objects,
``--eval-samples`` samples, so noisy). Each evaluation also keeps a checkpoint, and after training the untrained
model and every checkpoint are scored again on ``--final-objects`` objects with ``--final-samples`` samples of
``--final-steps`` steps (``score_checkpoints``; the rows marked "final scoring"); calling the script again on
the same ``--work`` folder skips the finished training and only scores again. A random tiny VAE does not reconstruct what it encodes, so
the script first fits the tiny base's VAE as an autoencoder on palette-coded target grids and on the
object grids the segmenter reads (``--vae-steps``, ``--vae-fit``, ``fit_tiny_vae``) and sets its scaling
factor so scaled latents have unit variance, as Stable Diffusion's has; with ``--vae-downsampling 4``
(default) or 2 the VAE and UNet are shallower (``write_shallow_base``) so a 64 px view's palette survives
the latent. The base stays in the release's folder layout and loads through the same loader. Below the table it prints what the decode path allows
(``upper_bounds``). The default budget (6000 steps of batch 4, lr 1e-3 with a cosine decay, evaluated every
1000 steps, then the final scoring of 12 objects x 6 samples x 20 steps) takes about 80 minutes of training and
12 of scoring on one core of this 2-core CPU; it ended at mAP50 12.9 against 0.0 untrained (RESULTS.md
'Training'). On a GPU (``--device auto``) the same steps take minutes (``benchmarks/gpu_suite.sh training``).

``--size real`` builds the real Zero123++ v1.2 architecture (866M UNet widened to 8 / 13 inputs,
the SD VAE, the ViT-H CLIP image encoder) with random weights on the GPU, a small training set of
procedural objects at 320 px (rendered on the GPU), and times ``--steps`` optimiser steps after
``--warmup`` steps, bf16 mixed precision and gradient checkpointing as the example configs use.
Prints samples/s, seconds per step, peak CUDA memory and the loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import peak_bytes, reset_peak, sync  # noqa: E402

from partgen_models.evaluation.procedural import write_evaluation_set  # noqa: E402
from partgen_models.training.build_dataset import DatasetOptions, build_dataset  # noqa: E402
from partgen_models.training.config import config_from_dict  # noqa: E402

logger = logging.getLogger("bench_training")


def _build_set(work: Path, objects: int, view_size: int, input_size: int, device: str | None) -> Path:
    assets, data = work / "assets", work / f"data-{view_size}"
    if len(list(assets.glob("*.glb"))) < objects:
        write_evaluation_set(assets, count=objects, seed=1, overwrite=True)
    options = DatasetOptions(view_size=view_size, input_size=input_size, supersample=1)
    build_dataset(assets, data, options, device=device, progress=False)
    return data


# ----------------------------------------------------------------------------------------------------
# tiny: mAP before and after


def fit_tiny_vae(base: Path, data: Path, steps: int, seed: int, crop: int = 64, batch_size: int = 8,
                 renders: bool = True) -> dict:
    """Train the tiny base's VAE to reconstruct the palette-coded target grids of the training set (a fresh
    colour assignment per sample, as the trainer draws them) and, with ``renders``, the object grids (the
    segmenter's input); write it back into ``base/vae`` with a scaling factor giving scaled latents unit
    variance.

    Recipe (RESULTS.md 'Training'): Adam with a one-cycle schedule (peak lr 5e-3, 10 % warm-up), batches of
    ``batch_size`` random ``crop``-px crops (8-aligned), half of target grids and half of object grids with
    ``renders``, else all of target grids; MSE on posterior means (the pipeline encodes means; fitting
    samples drawn with the random VAE's unit std converges far slower). Fitting the renders too matters: a
    VAE fitted on targets alone maps the parts' material colours of an object grid onto stripes and swapped
    hues, the segmenter cannot tell the parts apart in its input, and every trained model scored mAP50 0.0;
    the real SD VAE reconstructs renders."""
    from safetensors.torch import save

    from partgen_models.multiview.zero123pp import load_zero123plus
    from partgen_models.training.data import StepBatches, TrainingSet
    from partgen_models.training.shards import write_atomic_bytes

    vae = load_zero123plus(base).vae.train().requires_grad_(True)
    batches = StepBatches(TrainingSet(data), "segmentation", batch_size, seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, total_steps=steps, pct_start=0.1)
    crops = torch.Generator().manual_seed(seed + 11)
    last = float("nan")
    for step in range(steps):
        batch = batches[step]
        targets = batch["target"]  # (B, 3, H, W) in 0..1
        if renders:
            half = len(targets) // 2
            targets = torch.cat([targets[:half], batch["condition"][half:]])
        height, width = targets.shape[2:]
        ys = torch.randint(0, (height - crop) // 8 + 1, (len(targets),), generator=crops) * 8
        xs = torch.randint(0, (width - crop) // 8 + 1, (len(targets),), generator=crops) * 8
        pixels = torch.stack([t[:, y:y + crop, x:x + crop] for t, y, x in zip(targets, ys.tolist(), xs.tolist())])
        pixels = (pixels * 2 - 1) * 0.5 / 0.8  # the sampler's image scaling
        loss = torch.nn.functional.mse_loss(vae.decode(vae.encode(pixels).latent_dist.mean).sample, pixels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        last = float(loss.detach())
        if (step + 1) % 50 == 0:
            logger.warning("VAE fit: step %d/%d, reconstruction loss %.5f", step + 1, steps, last)
    vae.eval()
    with torch.no_grad():
        grids = torch.cat([batches[i]["target"] for i in range(2)])
        pixels = (grids * 2 - 1) * 0.5 / 0.8
        means = vae.encode(pixels).latent_dist.mean
        full = float(torch.nn.functional.mse_loss(vae.decode(means).sample, pixels))
    # scale_latents computes (z·s − 0.22)·0.75: unit variance when s = 1 / (0.75 · std(z))
    scaling = float(1.0 / (0.75 * means.std()))
    vae.register_to_config(scaling_factor=scaling)
    vae.save_config(str(base / "vae"))
    state = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    write_atomic_bytes(base / "vae" / "diffusion_pytorch_model.safetensors", save(state, metadata={"format": "pt"}))
    return {"vae_loss": last, "full_grid_mse": full, "scaling_factor": scaling}


def upper_bounds(base: Path, objects: int, view_size: int, seed: int) -> dict[str, dict]:
    """The best the decode path allows on the scored objects: their ground-truth part ids painted with the
    palette (a fresh permutation each) and decoded directly (what a perfect sample scores), and the same
    colours after a round trip through the VAE (encode_grids → decode_latents, what a perfect latent scores)."""
    from partgen_models.evaluation.evaluate import EvaluationOptions, procedural_samples
    from partgen_models.evaluation.metrics import mean_scores, score_object
    from partgen_models.multiview.sampler import decode_latents, encode_grids
    from partgen_models.multiview.zero123pp import load_zero123plus
    from partgen_models.segmentation.palette import decode_colors, encode_part_ids, segments_from_ids
    from partgen_models.views import grid_to_views, views_to_grid

    model = load_zero123plus(base)
    layout = model.layout
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, list] = {"ground-truth colours": [], "ground-truth colours through the VAE": []}
    for sample in procedural_samples(objects, options=EvaluationOptions(size=view_size, seeded=False)):
        ids = torch.full(sample.truth.shape[1:], -1, dtype=torch.long)
        for part in range(sample.truth.shape[0]):
            ids[sample.truth[part]] = part
        colours = encode_part_ids(ids, generator)  # (V, S, S, 3)
        grid = views_to_grid(colours, layout.rows, layout.cols).permute(2, 0, 1)[None]
        with torch.no_grad():
            round_trip = decode_latents(model, encode_grids(model, grid))[0].permute(1, 2, 0)
        inside = sample.views.alpha > 0.5
        for name, painted in zip(scores, (colours, grid_to_views(round_trip, layout.rows, layout.cols))):
            proposals = segments_from_ids(decode_colors(painted, inside=inside))[0]
            scores[name].append(score_object(proposals, sample.truth))
    return {name: mean_scores(values) for name, values in scores.items()}


def write_shallow_base(base: Path, downsampling: int, seed: int) -> None:
    """Replace the tiny base's VAE (8x down-sampling, like the release's) by a random one with fewer down
    blocks, and its UNet by one that reaches as far, both in the same diffusers layout (the pipeline infers
    the latent scale from ``block_out_channels``). A 64 px view keeps more of its flat palette regions in a
    2x / 4x latent (an 8x-down-sampled latent can hold at most mAP50 36.5 of the scored objects at 64 px).

    Costs on a CPU: the latent has (8 / downsampling)² times as many positions, so the VAE has no mid-block
    attention (at 2x it took 74 % of an encode) and the UNet has one more level, without attention at the
    top one (self- and reference attention at 64x96 positions made a step 7 s instead of 3 s)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from partgen_models.testing.tiny_models import TINY_ZERO123PP_CONFIGS, _save_safetensors

    blocks = {2: (16, 32), 4: (8, 16, 32), 8: (8, 8, 16, 16)}[downsampling]
    config = dict(TINY_ZERO123PP_CONFIGS["vae"], block_out_channels=blocks, mid_block_add_attention=False,
                  down_block_types=("DownEncoderBlock2D",) * len(blocks),
                  up_block_types=("UpDecoderBlock2D",) * len(blocks))
    torch.manual_seed(seed + 7)  # diffusers' own initialisation, seeded: it is fitted from here
    vae = AutoencoderKL(**config)
    vae.save_config(str(base / "vae"))
    _save_safetensors(vae.state_dict(), base / "vae" / "diffusion_pytorch_model.safetensors")
    unet_config = dict(TINY_ZERO123PP_CONFIGS["unet"], block_out_channels=(32, 64, 64), attention_head_dim=(2, 4, 4),
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    torch.manual_seed(seed + 8)
    unet = UNet2DConditionModel(**unet_config)
    unet.save_config(str(base / "unet"))
    _save_safetensors(unet.state_dict(), base / "unet" / "diffusion_pytorch_model.safetensors")


def refuse_other_base(base: Path, args) -> None:
    """A reused ``--work`` folder keeps its base: refuse flags that ask for another one instead of silently
    scoring the old VAE (a fit without ``fitted_on`` predates ``--vae-fit`` and was fitted on targets only)."""
    blocks = json.loads((base / "vae" / "config.json").read_text())["block_out_channels"]
    has = {"--vae-downsampling": 2 ** (len(blocks) - 1)}
    if (base / "vae" / "fitted").is_file():
        has["--vae-fit"] = json.loads((base / "vae" / "fitted").read_text()).get("fitted_on", "targets")
    wanted = {"--vae-downsampling": args.vae_downsampling, "--vae-fit": args.vae_fit}
    for flag, value in has.items():
        if value != wanted[flag]:
            raise SystemExit(f"{base} holds a base made with {flag} {value}, not {wanted[flag]}: pass that, or "
                             "another --work folder")


def score_checkpoints(run: Path, final, accelerator) -> list[tuple[int, dict]]:
    """Score the untrained model (step 0) and every checkpoint kept in ``run`` again with the evaluation
    settings of ``final`` (the run's config with more objects and samples: the periodic evaluations during
    training are kept cheap, so their numbers are noisy). Sample grids go to ``run/final/samples``; the
    run's own log and checkpoints are not touched."""
    from partgen_models.training.trainer import PartGenTrainer
    from partgen_models.training.unet import list_checkpoints

    final = replace(final, output_dir=str(run / "final"))
    scores = []
    for checkpoint in [None] + list_checkpoints(run):
        trainer = PartGenTrainer("segmentation", final, accelerator=accelerator, resume=checkpoint)
        scores.append((trainer.step, trainer.evaluate()))
        logger.warning("final scoring: step %d: mAP50 %.1f", trainer.step, 100 * scores[-1][1]["eval/mAP50"])
    return scores


def run_tiny(args) -> None:
    from accelerate import Accelerator

    from partgen_models.testing.tiny_training import write_tiny_training_base
    from partgen_models.training.trainer import PartGenTrainer

    work = Path(args.work or tempfile.mkdtemp(prefix="partgen-bench-training-"))
    base = work / "models" / "zero123plus-v1.2"
    if not (base / "model_index.json").is_file():
        write_tiny_training_base(base, seed=args.seed)
        if args.vae_downsampling != 8:
            write_shallow_base(base, args.vae_downsampling, args.seed)
    refuse_other_base(base, args)
    started = time.perf_counter()
    data = _build_set(work, args.objects, 64, 64, None)
    build_s = time.perf_counter() - started
    vae = json.loads((base / "vae" / "config.json").read_text())
    if not (base / "vae" / "fitted").is_file():
        fitted = fit_tiny_vae(base, data, args.vae_steps, args.seed, renders=args.vae_fit == "both")
        (base / "vae" / "fitted").write_text(json.dumps(dict(fitted, fitted_on=args.vae_fit)))
        vae = json.loads((base / "vae" / "config.json").read_text())
    logger.info("VAE scaling factor %.4f", vae["scaling_factor"])
    bounds = upper_bounds(base, args.final_objects if args.final_samples else args.eval_objects, 64, args.seed)
    run = work / f"run-{args.steps}-{args.seed}"
    config = config_from_dict(dict(
        dataset=str(data), output_dir=str(run), models_dir=str(work / "models"), max_steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, lr_warmup_steps=10, lr_schedule=args.lr_schedule,
        mixed_precision="no", gradient_checkpointing=False, condition_dropout=0.0,
        eval_every=args.eval_every, eval_objects=args.eval_objects, eval_steps=args.eval_steps,
        eval_samples=args.eval_samples, eval_guidance=1.0, checkpoint_every=args.eval_every or args.steps,
        keep_checkpoints=1000, log_every=max(1, args.steps // 10), seed=args.seed))
    final_config = None
    if args.final_samples:  # the final scoring's settings are checked now, not after the training
        try:
            final_config = replace(config, eval_objects=args.final_objects, eval_samples=args.final_samples,
                                   eval_steps=args.final_steps)
        except ValueError as error:
            raise SystemExit(f"--final-objects / --final-samples / --final-steps: {error} (the final scoring is an "
                             "evaluation with those settings)") from None
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision="no")
    trainer = PartGenTrainer("segmentation", config, accelerator=accelerator)
    already_trained = trainer.step >= args.steps
    if already_trained:
        logger.warning("%s already holds a finished run: scoring its checkpoints only", run)
    elif trainer.step:
        raise SystemExit(f"{run} holds an unfinished run (step {trainer.step}); remove it or pass another --work/--seed")
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    del trainer
    final = []
    if final_config is not None:
        started = time.perf_counter()
        final = score_checkpoints(run, final_config, accelerator)
        final_s = time.perf_counter() - started
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in log if "eval/mAP50" in e]
    losses = [e["loss"] for e in log if "loss" in e]
    keys = ["eval/mAP50", "eval/mAP75", "eval/R@1", "eval/R@3", "eval/R@5", "eval/R@10"]
    print(f"tiny segmenter, {args.objects} training objects (procedural seed 1, 64 px views), batch {args.batch_size}, "
          f"lr {args.learning_rate} ({args.lr_schedule}), VAE {args.vae_downsampling}x; scored on {args.eval_objects} "
          f"evaluation objects (seed 0), {args.eval_samples} samples x {args.eval_steps} steps; device {accelerator.device}")
    trained = "were done by an earlier call" if already_trained else f"took {train_s:.0f} s"
    print(f"set built in {build_s:.0f} s; training {args.steps} steps (with evaluations) {trained}; "
          f"loss {losses[0]:.4f} (first logged) -> {losses[-1]:.4f} (last)")
    print("| model | steps | " + " | ".join(k.split("/")[1] for k in keys) + " |")
    print("|---|---:|" + "---:|" * len(keys))
    for entry in evals:
        name = "untrained (base + zero inputs)" if entry["step"] == 0 else "trained"  # every --eval-every steps
        print(f"| {name} | {entry['step']} | " + " | ".join(f"{100 * entry[k]:.1f}" for k in keys) + " |")
    if final:
        print(f"final scoring ({final_s:.0f} s): the same models on {args.final_objects} evaluation objects (seed 0), "
              f"{args.final_samples} samples x {args.final_steps} steps")
        for step, metrics in final:
            name = "untrained (base + zero inputs)" if step == 0 else "trained"
            print(f"| {name}, final scoring | {step} | " + " | ".join(f"{100 * metrics[k]:.1f}" for k in keys) + " |")
    for name, summary in bounds.items():  # upper bounds: what the decode path allows
        print(f"| {name} (bound) | - | " + " | ".join(f"{100 * summary[k.split('/')[1]]:.1f}" for k in keys) + " |")


# ----------------------------------------------------------------------------------------------------
# real: samples/s, memory, loss on a GPU


def real_zero123plus(device: torch.device):
    """The real Zero123++ v1.2 architecture, random weights, built on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from partgen_models.multiview.zero123pp import FLAVOURS, Zero123PlusModel, pil_image_processor_class
    from partgen_models.testing.tiny_models import CLIP_MEAN, CLIP_STD, REAL_ZERO123PP_CONFIGS, SCHEDULER_CONFIG, processor_config

    configs = REAL_ZERO123PP_CONFIGS
    with torch.device(device):
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["vision_encoder"]))
    processor = pil_image_processor_class()
    generator = torch.Generator().manual_seed(0)
    width = configs["unet"]["cross_attention_dim"]
    return Zero123PlusModel(
        unet=unet, vae=vae, vision_encoder=vision,
        empty_prompt_embeds=torch.randn(1, 77, width, generator=generator).to(device),
        ramping=torch.rand(77, 1, generator=generator).to(device),
        feature_extractor_clip=processor.from_dict(processor_config(224, CLIP_MEAN, CLIP_STD)),
        feature_extractor_vae=processor.from_dict(processor_config(512, [0.5] * 3, [0.8] * 3)),
        scheduler_config=SCHEDULER_CONFIG, flavour=FLAVOURS["partgen-segmentation"], name="zero123plus-v1.2",
    )


def run_real(args) -> None:
    from accelerate import Accelerator

    from partgen_models.training.trainer import PartGenTrainer

    if not torch.cuda.is_available():
        raise SystemExit("--size real needs a CUDA GPU (the real UNet has 866M parameters); use --size tiny on a CPU")
    device = torch.device("cuda")
    work = Path(args.work or tempfile.mkdtemp(prefix="partgen-bench-training-real-"))
    started = time.perf_counter()
    data = _build_set(work, args.objects, 320, 512, "cuda")
    build_s = time.perf_counter() - started
    accelerator = Accelerator(mixed_precision=args.precision)
    diffusion = real_zero123plus(device)
    config = config_from_dict(dict(
        dataset=str(data), output_dir=str(work / "run"), models_dir=str(work / "models"),
        max_steps=args.warmup + args.steps, batch_size=args.batch_size, learning_rate=1e-5, lr_warmup_steps=0,
        mixed_precision=args.precision, gradient_checkpointing=not args.no_checkpointing, eval_every=0,
        checkpoint_every=10_000_000, instruction_probability=0.0, seed=args.seed))
    trainer = PartGenTrainer(args.task, config, accelerator=accelerator, diffusion=diffusion)
    batches = [trainer.batches[step] for step in range(args.warmup + args.steps)]
    for batch in batches[: args.warmup]:
        trainer.train_step(batch)
    sync(device)
    reset_peak(device)
    losses = []
    started = time.perf_counter()
    for batch in batches[args.warmup:]:
        losses.append(trainer.train_step(batch).loss)
    sync(device)
    elapsed = time.perf_counter() - started
    peak = peak_bytes(device) / 2**30
    params = sum(p.numel() for p in diffusion.unet.parameters())
    print(f"real-size {args.task} training step: UNet {params / 1e6:.0f}M params (in_channels "
          f"{diffusion.unet.config.in_channels}), {args.precision}, gradient checkpointing "
          f"{'off' if args.no_checkpointing else 'on'}, 320 px views (640x960 grid), {torch.cuda.get_device_name(device)}")
    print(f"training set of {args.objects} objects built on the GPU in {build_s:.1f} s")
    print("| task | batch | steps timed | s/step | samples/s | peak memory (GiB) | loss (first -> last) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(f"| {args.task} | {args.batch_size} | {args.steps} | {elapsed / args.steps:.3f} | "
          f"{args.batch_size * args.steps / elapsed:.2f} | {peak:.1f} | {losses[0]:.4f} -> {losses[-1]:.4f} |")
    if not all(math.isfinite(x) for x in losses):
        raise SystemExit("non-finite loss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--task", choices=("segmentation", "completion"), default="segmentation",
                        help="real size only; the tiny benchmark scores segmentation")
    parser.add_argument("--work", help="working folder (kept; reused by a second run); default: a new temp folder")
    parser.add_argument("--objects", type=int, default=None, help="training objects (tiny: 24, real: 8)")
    parser.add_argument("--steps", type=int, default=None, help="tiny: training budget (6000); real: timed steps (10)")
    parser.add_argument("--warmup", type=int, default=3, help="real: untimed steps first")
    parser.add_argument("--batch-size", type=int, default=None, help="tiny: 4; real: 4")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="tiny only")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="cosine",
                        help="tiny: after a 10-step warm-up, constant or a half cosine to 0 at --steps")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="tiny: evaluate every N steps (default: 1000, and at the end)")
    parser.add_argument("--vae-steps", type=int, default=700, help="tiny: steps fitting the tiny VAE")
    parser.add_argument("--vae-fit", choices=("both", "targets"), default="both",
                        help="tiny: fit the VAE on target grids and object grids (both), or on target grids only "
                             "(the segmenter then cannot tell the parts apart in its input: mAP50 0.0 in every run)")
    parser.add_argument("--vae-downsampling", type=int, choices=(2, 4, 8), default=4,
                        help="tiny: the benchmark base's VAE down-sampling (4: bound mAP50 ~20-30, a segmenter "
                             "step ~0.55 s on a CPU; 2: the palette survives best, bound ~50, ~1.5-3 s; 8: the "
                             "release's layout and the tests' tiny base, which cannot hold the palette at 64 px; "
                             "RESULTS.md 'Training')")
    parser.add_argument("--final-objects", type=int, default=12,
                        help="tiny: after training, score step 0 and every checkpoint again on this many objects")
    parser.add_argument("--final-samples", type=int, default=6, help="tiny: ... with this many samples (0: skip)")
    parser.add_argument("--final-steps", type=int, default=20, help="tiny: ... of this many sampling steps")
    parser.add_argument("--eval-objects", type=int, default=6)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--eval-samples", type=int, default=3)
    parser.add_argument("--precision", choices=("bf16", "fp16", "no"), default="bf16", help="real only")
    parser.add_argument("--no-checkpointing", action="store_true", help="real: without gradient checkpointing")
    parser.add_argument("--device", choices=("cpu", "auto"), default="cpu", help="tiny: where to train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.size == "tiny":
        args = replace_defaults(args, objects=24, steps=6000, batch_size=4)
        args = replace_defaults(args, eval_every=min(1000, args.steps))
        run_tiny(args)
    else:
        args = replace_defaults(args, objects=8, steps=10, batch_size=4)
        run_real(args)


def replace_defaults(args, **defaults):
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


if __name__ == "__main__":
    main()
