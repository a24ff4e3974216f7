"""Multi-view stage benchmark: our Zero123++ sampler vs the upstream pipeline, same random weights.

    python benchmarks/bench_multiview.py                       # tiny smoke size on CPU, real size on GPU
    python benchmarks/bench_multiview.py --size real --dtype fp16 --upstream /path/to/zero123plus/diffusers-support \
        --upstream-env /path/to/env_with_diffusers_0.20.2

The architecture is Zero123++ v1.2's at --size real (UNet 866M, VAE 84M, CLIP-H vision 632M, text
340M parameters) with seeded random weights: timings, not images. --upstream points at a local folder
holding upstream's ``pipeline.py`` (SUDO-AI-3D/zero123plus ``diffusers-support``; never committed);
without it only our pipeline is timed. Upstream runs in its own process (``upstream_zero123plus_worker.py``)
on the same weights written in the release layout, under ``--upstream-env`` (the diffusers 0.20.2 /
transformers 4.29.2 it pins; 0.20.2 has no ``callback_on_step_end``, so the worker times steps with the
old ``callback``). Prints one table: seconds per step, seconds per grid, peak
memory, and upstream/ours ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import DTYPES  # noqa: E402
from timing import peak_bytes as _peak_bytes  # noqa: E402
from timing import reset_peak as _reset_peak  # noqa: E402
from timing import sync as _sync  # noqa: E402

from partgen_models.multiview import MultiViewOptions, sample_grid  # noqa: E402
from partgen_models.multiview.zero123pp import FLAVOURS, Zero123PlusModel, encode_empty_prompt  # noqa: E402
from partgen_models.runtime import Runtime  # noqa: E402
from partgen_models.testing.tiny_models import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    REAL_ZERO123PP_CONFIGS,
    SCHEDULER_CONFIG,
    TINY_ZERO123PP_CONFIGS,
    build_components,
    processor_config,
    write_clip_tokenizer,
)



def build(size: str, dtype: torch.dtype, device: torch.device, scratch: Path):
    from transformers import CLIPTokenizer

    from partgen_models.multiview.zero123pp import pil_image_processor_class

    CLIPImageProcessor = pil_image_processor_class()

    configs = REAL_ZERO123PP_CONFIGS if size == "real" else TINY_ZERO123PP_CONFIGS
    components = build_components(configs, seed=0)
    write_clip_tokenizer(scratch / "tokenizer")  # byte-level vocabulary: enough for the empty prompt
    tokenizer = CLIPTokenizer.from_pretrained(str(scratch / "tokenizer"))
    processors = {
        "clip": CLIPImageProcessor(**processor_config(224, CLIP_MEAN, CLIP_STD)),
        "vae": CLIPImageProcessor(**processor_config(512, [0.5] * 3, [0.8] * 3)),
    }
    ramping = torch.linspace(0.0, 1.0, 77).tolist()
    for name in components:
        components[name] = components[name].to(device=device, dtype=dtype).eval().requires_grad_(False)
    ours = Zero123PlusModel(
        unet=components["unet"],
        vae=components["vae"],
        vision_encoder=components["vision_encoder"],
        empty_prompt_embeds=encode_empty_prompt(components["text_encoder"], tokenizer).to(device, dtype),
        ramping=torch.tensor(ramping, device=device, dtype=dtype)[:, None],
        feature_extractor_clip=processors["clip"],
        feature_extractor_vae=processors["vae"],
        scheduler_config=SCHEDULER_CONFIG,
        flavour=FLAVOURS["zero123plus-v1.2"],
        name=f"random-{size}",
    )
    return ours, components, tokenizer, processors, ramping


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}  # process: CPU seconds of this process


def upstream_pipeline_in_process(upstream_dir: Path, components, tokenizer, processors, ramping):
    """Upstream's ``Zero123PlusPipeline`` (``upstream_dir/pipeline.py``, never committed) built in this process
    on ``build``'s components, on the installed diffusers: for operator counts and profiles, not for timing
    against ours (``time_upstream`` runs it in its own process under its pinned versions)."""
    import importlib.util

    from diffusers import EulerAncestralDiscreteScheduler

    spec = importlib.util.spec_from_file_location("upstream_zero123plus", str(Path(upstream_dir) / "pipeline.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipeline = module.Zero123PlusPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=tokenizer,
        unet=components["unet"], vision_encoder=components["vision_encoder"],
        scheduler=EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG, timestep_spacing="trailing"),
        feature_extractor_clip=processors["clip"], feature_extractor_vae=processors["vae"],
        ramping_coefficients=ramping,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def time_ours(model, image, options, device, repeats, clock=time.perf_counter):
    step_times: list[float] = []
    marks: list[float] = []

    def progress(step, total, preview):
        _sync(device)
        marks.append(clock())

    runtime = Runtime(device=device, dtype=model.dtype, progress=progress)
    sample_grid(model, image, MultiViewOptions(num_inference_steps=1, view_size=options.view_size), runtime)  # warm-up
    _reset_peak(device)
    grid_times = []
    for _ in range(repeats):
        marks.clear()
        _sync(device)
        start = clock()
        sample_grid(model, image, options, runtime)
        _sync(device)
        grid_times.append(clock() - start)
        step_times.extend(np.diff(marks).tolist())
    return float(np.median(step_times)) if step_times else float("nan"), float(np.median(grid_times)), _peak_bytes(device)


def time_upstream(upstream_dir, upstream_env, components, ramping, image, options, args, scratch: Path):
    """Upstream's pipeline on the same weights, in its own process (``upstream_zero123plus_worker.py``),
    so that it runs under the diffusers/transformers it pins (``--upstream-env``), not ours."""
    import json
    import os
    import subprocess

    from partgen_models.testing.tiny_models import write_zero123plus_folder

    weights = write_zero123plus_folder(scratch / "zero123plus", components, ramping)
    np.save(scratch / "image.npy", image[0])
    spec = dict(weights=str(weights), work=str(scratch), upstream=str(Path(upstream_dir).resolve()),
                image=str(scratch / "image.npy"), device=args.device, dtype=args.dtype, steps=options.num_inference_steps,
                guidance=options.guidance_scale, view_size=options.view_size, repeats=args.repeats, clock=args.clock)
    (scratch / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(scratch / "hf_home"))
    if upstream_env:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(upstream_env).resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    worker = Path(__file__).resolve().parent / "upstream_zero123plus_worker.py"
    done = subprocess.run([sys.executable, str(worker), "--spec", str(scratch / "spec.json")], env=env,
                          capture_output=True, text=True, cwd=str(scratch))
    if done.returncode != 0:
        raise SystemExit(f"the upstream worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    label = f"upstream (diffusers {result['diffusers']}, transformers {result['transformers']})"
    return label, result["per_step"], result["per_grid"], result["peak"]


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "real"), default="real" if cuda else "tiny")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16" if cuda else "fp32")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--steps", type=int, default=28 if cuda else 4)
    parser.add_argument("--view-size", type=int, default=320 if cuda else 64)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3 if cuda else 1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="process: CPU seconds of each process instead of wall time (a CPU shared with other "
                             "jobs; with OMP_NUM_THREADS=1 it is the work done, whoever else runs)")
    parser.add_argument("--upstream", type=Path, help="folder with upstream's pipeline.py (not committed)")
    parser.add_argument("--upstream-env", type=Path, default=None,
                        help="folder put first on PYTHONPATH for the upstream worker (e.g. pip --target with "
                             "diffusers==0.20.2 transformers==4.29.2 huggingface_hub==0.25.2 tokenizers==0.13.3)")
    args = parser.parse_args()

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    image = np.random.RandomState(0).randint(0, 256, (1, 512, 512, 3)).astype(np.uint8)
    options = MultiViewOptions(num_inference_steps=args.steps, guidance_scale=args.guidance, view_size=args.view_size)
    with tempfile.TemporaryDirectory() as scratch:
        model, components, tokenizer, processors, ramping = build(args.size, dtype, device, Path(scratch))
        rows = [("ours",) + time_ours(model, image, options, device, args.repeats, CLOCKS[args.clock])]
        if args.upstream:
            rows.append(time_upstream(args.upstream, args.upstream_env, components, ramping, image, options, args,
                                      Path(scratch)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak_label = "peak VRAM GiB" if device.type == "cuda" else "peak RSS GiB"
    print(f"\nZero123++ multi-view, {args.size} random weights, {args.dtype}, {name}, {args.steps} steps, "
          f"guidance {args.guidance}, {2 * args.view_size}x{3 * args.view_size} grid, median of {args.repeats}, "
          f"{args.clock} clock\n")
    print(f"| pipeline | s/step | s/grid | {peak_label} |")
    print("|---|---:|---:|---:|")
    for label, per_step, per_grid, peak in rows:
        print(f"| {label} | {per_step:.4f} | {per_grid:.3f} | {peak / 2**30:.2f} |")
    if len(rows) == 2:
        print(f"| upstream / ours | {rows[1][1] / rows[0][1]:.2f}x | {rows[1][2] / rows[0][2]:.2f}x | "
              f"{rows[1][3] / max(rows[0][3], 1):.2f}x |")


if __name__ == "__main__":
    main()
