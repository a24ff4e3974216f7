#!/usr/bin/env python
"""Golden outputs of the UPSTREAM Zero123++ pipeline on our tiny seeded weights.

Upstream is SUDO-AI-3D/zero123plus ``diffusers-support/pipeline.py`` (Apache-2.0). It is NOT part of
this repository: fetch that one file into a folder of your own and point ``--upstream`` at it.

    python tests/data/make_zero123pp_golden.py --upstream /tmp/upstream_zero123pp --out tests/data \
        [--upstream-env /tmp/upstream_env] [--upstream-commit SHA]

Steps:
1. This interpreter (the project's diffusers/transformers) writes the tiny weights with
   ``partgen_models.testing.write_tiny_zero123plus(tmp/'zero123plus-v1.2', seed=0)``: the very files the
   parity test loads with our code.
2. A worker subprocess (``--upstream-env`` put first on PYTHONPATH, e.g. a ``pip install --target``
   folder holding the diffusers/transformers upstream was written for) imports upstream's
   ``pipeline.py`` from file, loads ``Zero123PlusPipeline.from_pretrained(folder)`` on CPU float32,
   switches the scheduler to ``EulerAncestralDiscreteScheduler.from_config(config,
   timestep_spacing='trailing')`` (upstream's README) and runs the cases below.
3. This interpreter writes ``zero123pp_golden.safetensors`` (metadata: settings, RNG protocol,
   versions, hashes of the weight files).

RNG protocol (a reimplementation must draw the same noise):
    generator = torch.Generator().manual_seed(seed)   # passed to the pipeline: initial latents, then
                                                      # the Euler-ancestral noise of each step
    torch.manual_seed(aux_seed(seed))                 # right before the call; the global RNG drives
                                                      # the two latent_dist.sample() calls (image,
                                                      # then zeros under CFG) and one randn_like(cond_lat)
                                                      # per UNet call
    aux_seed(seed) = (seed + 0x9E3779B97F4A7C15) % 2**64

Compatibility shim (worker only, numerics untouched), applied to a copy of the tiny folder: the CLIP
``model.safetensors`` files are re-saved, same tensors, with the ``{"format": "pt"}`` header metadata
that older transformers require, and, where the worker's ``CLIPTextModel`` names its parameters
``text_model.*`` (transformers 4.x, and the real sudo-ai release files) while transformers 5 writes them
without that prefix, the text encoder's keys get the prefix. The worker then checks that every
parameter of upstream's loaded unet/vae/text_encoder/vision_encoder equals the file's tensor bit for
bit. Nothing in upstream's code or inputs is changed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY_WEIGHT_SEED = 0
INPUT_SEED = 20240223
INPUT_SIZE = 320
CASES = {
    "cfg": dict(guidance_scale=4.0, num_inference_steps=3, width=128, height=192, seed=1234),
    "nocfg": dict(guidance_scale=1.0, num_inference_steps=2, width=128, height=192, seed=77),
    "cfg_large": dict(guidance_scale=3.0, num_inference_steps=2, width=320, height=480, seed=5),
}
# Images of these cases are stored as float16 to keep the file under 2 MB; their latents stay float32.
FLOAT16_IMAGES = ("cfg_large",)
AUX_SEED_OFFSET = 0x9E3779B97F4A7C15


def aux_seed(seed: int) -> int:
    return (seed + AUX_SEED_OFFSET) % 2**64


def make_input_image(seed: int = INPUT_SEED, size: int = INPUT_SIZE):
    """A deterministic RGB uint8 image: gray 127 background with a soft gradient, a shaded coloured
    disc and a smaller ellipse (parameters from a seeded numpy RandomState)."""
    import numpy as np

    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    img = np.full((size, size, 3), 127.0)
    # faint background gradient (keeps most of the background near 127)
    grad = rs.uniform(-20, 20, size=(2, 3))
    img += xx[..., None] * grad[0] + yy[..., None] * grad[1] - 0.5 * (grad[0] + grad[1])
    # shaded disc
    cx, cy = rs.uniform(0.4, 0.6, size=2)
    radius = rs.uniform(0.25, 0.32)
    colour = rs.uniform(30, 230, size=3)
    shade = rs.uniform(-60, 60, size=(2, 3))
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    disc = np.clip((radius - dist) * size, 0.0, 1.0)[..., None]  # 1-pixel anti-aliased edge
    disc_rgb = colour + (xx[..., None] - cx) * shade[0] + (yy[..., None] - cy) * shade[1]
    img = img * (1 - disc) + disc_rgb * disc
    # smaller ellipse of another colour, partly over the disc
    ex, ey = rs.uniform(0.3, 0.7, size=2)
    ax, ay = rs.uniform(0.08, 0.15, size=2)
    colour2 = rs.uniform(30, 230, size=3)
    ell = np.clip((1.0 - np.sqrt(((xx - ex) / ax) ** 2 + ((yy - ey) / ay) ** 2)) * size * min(ax, ay), 0.0, 1.0)[..., None]
    img = img * (1 - ell) + colour2 * ell
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict:
    import diffusers
    import numpy
    import PIL
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


# --------------------------------------------------------------------------------------------- worker


def _check_loaded_exactly(pipe, folder: Path) -> None:
    """Every tensor of every weight file must be in the loaded module, bit for bit, and every
    parameter of the module must come from the file (no silent random initialisation)."""
    import torch
    from safetensors.torch import load_file

    for name in ("unet", "vae", "text_encoder", "vision_encoder"):
        path = next((folder / name).glob("*.safetensors"))
        tensors = load_file(str(path))
        state = getattr(pipe, name).state_dict()
        used = set()
        for key, value in tensors.items():
            match = next((k for k in (key, "text_model." + key) if k in state), None)
            if match is None:
                raise RuntimeError(f"{name}: {key} from {path} is not in upstream's module")
            if not torch.equal(state[match].cpu(), value):
                raise RuntimeError(f"{name}: {key} differs after loading")
            used.add(match)
        params = {k for k, _ in getattr(pipe, name).named_parameters()}
        missing = params - used
        if missing:
            raise RuntimeError(f"{name}: parameters not loaded from {path}: {sorted(missing)[:5]}")


def _worker(args) -> None:
    """Runs upstream's pipeline (possibly under other diffusers/transformers) and saves raw results."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file

    folder = Path(args.weights)
    work = Path(args.work)
    # Shim: same tensors, plus the header metadata older transformers insist on.
    upstream_folder = work / "upstream_copy" / folder.name
    shutil.copytree(folder, upstream_folder)
    from transformers import CLIPTextConfig, CLIPTextModel

    text_keys = CLIPTextModel(CLIPTextConfig(**json.loads((folder / "text_encoder" / "config.json").read_text()))).state_dict()
    text_prefix = "text_model." if all(k.startswith("text_model.") for k in text_keys) else ""
    for path in sorted(upstream_folder.glob("*/model.safetensors")):
        tensors = load_file(str(path))
        if path.parent.name == "text_encoder" and text_prefix:
            tensors = {(k if k.startswith(text_prefix) else text_prefix + k): v for k, v in tensors.items()}
        save_file(tensors, str(path), metadata={"format": "pt"})

    spec = importlib.util.spec_from_file_location("upstream_zero123pp_pipeline", str(Path(args.upstream) / "pipeline.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = module.Zero123PlusPipeline.from_pretrained(str(upstream_folder))
    _check_loaded_exactly(pipe, folder)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)

    image_u8 = np.asarray(Image.open(args.input_png).convert("RGB"))
    image = Image.fromarray(image_u8, "RGB")
    results = {}

    def run(case: dict, output_type: str):
        generator = torch.Generator().manual_seed(case["seed"])
        torch.manual_seed(aux_seed(case["seed"]))
        return pipe(
            image,
            guidance_scale=case["guidance_scale"],
            num_inference_steps=case["num_inference_steps"],
            width=case["width"],
            height=case["height"],
            output_type=output_type,
            generator=generator,
        ).images

    for name, case in CASES.items():
        images = run(case, "pt")
        latents = run(case, "latent")  # same RNG protocol: the latents that were decoded above
        # Consistency: decode the latents the way upstream does and compare with the "pt" images.
        with torch.no_grad():
            decoded = module.unscale_image(pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0])
            decoded = (decoded / 2 + 0.5).clamp(0, 1)
        results[f"{name}.images"] = images.float().contiguous()
        results[f"{name}.latents"] = latents.float().contiguous()
        results[f"{name}.decode_check"] = torch.tensor((decoded - images).abs().max().item())
    results["cfg.images_rerun"] = run(CASES["cfg"], "pt").float().contiguous()

    # Preprocessed pixel values (to compare with the processor class our loader gets).
    for attr in ("feature_extractor_vae", "feature_extractor_clip"):
        results[f"pixel_values.{attr}"] = getattr(pipe, attr)(images=image, return_tensors="pt").pixel_values.float()

    info = {
        "versions": _versions(),
        "feature_extractor_vae_class": type(pipe.feature_extractor_vae).__module__ + "." + type(pipe.feature_extractor_vae).__qualname__,
        "feature_extractor_clip_class": type(pipe.feature_extractor_clip).__module__ + "." + type(pipe.feature_extractor_clip).__qualname__,
        "scheduler_class": type(pipe.scheduler).__name__,
        "scheduler_timestep_spacing": pipe.scheduler.config.timestep_spacing,
        "unet_wrapper": type(pipe.unet).__name__,
    }
    timesteps = {}
    for name, case in CASES.items():
        pipe.scheduler.set_timesteps(case["num_inference_steps"])
        timesteps[name] = [float(t) for t in pipe.scheduler.timesteps]
    info["timesteps"] = timesteps
    save_file(results, str(work / "upstream_results.safetensors"))
    (work / "upstream_info.json").write_text(json.dumps(info, indent=2))


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="folder containing upstream's pipeline.py")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder (tests/data)")
    parser.add_argument("--upstream-env", default=None, help="folder put first on PYTHONPATH for the upstream run")
    parser.add_argument("--upstream-commit", default="", help="commit of the upstream file (recorded only)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--input-png", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from partgen_models.testing import write_tiny_zero123plus

    upstream_file = Path(args.upstream) / "pipeline.py"
    if not upstream_file.is_file():
        sys.exit(f"{upstream_file} not found")
    work = Path(tempfile.mkdtemp(prefix="zero123pp_golden_"))
    try:
        folder = write_tiny_zero123plus(work / "zero123plus-v1.2", seed=TINY_WEIGHT_SEED)
        weight_hashes = {
            str(p.relative_to(folder)): _sha256(p)[:16] for p in sorted(folder.rglob("*.safetensors"))
        }
        input_u8 = make_input_image()
        input_png = work / "input.png"
        Image.fromarray(input_u8, "RGB").save(input_png)

        env = dict(os.environ)
        env["HF_HOME"] = str(work / "hf_home")
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
        env["DIFFUSERS_OFFLINE"] = "1"
        if args.upstream_env:
            env["PYTHONPATH"] = os.pathsep.join([str(Path(args.upstream_env).resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        command = [
            sys.executable, str(Path(__file__).resolve()), "--worker", "--upstream", str(Path(args.upstream).resolve()),
            "--weights", str(folder), "--work", str(work), "--input-png", str(input_png),
        ]
        subprocess.run(command, env=env, check=True)
        results = load_file(str(work / "upstream_results.safetensors"))
        info = json.loads((work / "upstream_info.json").read_text())

        # Our loader's processor class (this interpreter) vs the one upstream ran with.
        from transformers import CLIPImageProcessor

        image = Image.fromarray(input_u8, "RGB")
        processor_diffs = {}
        for attr in ("feature_extractor_vae", "feature_extractor_clip"):
            processor = CLIPImageProcessor.from_pretrained(str(folder / attr))
            ours = processor(images=image, return_tensors="pt").pixel_values
            processor_diffs[attr] = {
                "ours_class": type(processor).__module__ + "." + type(processor).__qualname__,
                "max_abs_diff_vs_upstream": float((ours.float() - results[f"pixel_values.{attr}"]).abs().max()),
            }
            try:
                from transformers import CLIPImageProcessorPil

                pil = CLIPImageProcessorPil.from_pretrained(str(folder / attr))(images=image, return_tensors="pt").pixel_values
                processor_diffs[attr]["pil_backend_max_abs_diff_vs_upstream"] = float(
                    (torch.as_tensor(pil).float() - results[f"pixel_values.{attr}"]).abs().max()
                )
            except ImportError:
                pass

        determinism = float((results["cfg.images"] - results["cfg.images_rerun"]).abs().max())
        golden = {"input_image": torch.from_numpy(input_u8.copy())}
        ranges = {}
        for name in CASES:
            images = results[f"{name}.images"]
            golden[f"{name}.images"] = images.half() if name in FLOAT16_IMAGES else images
            golden[f"{name}.latents"] = results[f"{name}.latents"]
            ranges[name] = {
                "images_min": float(images.min()), "images_max": float(images.max()),
                "images_mean": float(images.mean()),
                "latents_min": float(results[f"{name}.latents"].min()), "latents_max": float(results[f"{name}.latents"].max()),
                "decode_check_max_abs": float(results[f"{name}.decode_check"]),
            }
        settings = {
            name: dict(case, aux_seed=aux_seed(case["seed"]), output_type="pt",
                       images_dtype="float16" if name in FLOAT16_IMAGES else "float32")
            for name, case in CASES.items()
        }
        metadata = {
            "format": "pt",
            "cases": json.dumps(settings),
            "rng_protocol": (
                "generator=torch.Generator().manual_seed(seed) passed to the pipeline; right before the call "
                "torch.manual_seed(aux_seed(seed)) with aux_seed(seed)=(seed+0x9E3779B97F4A7C15)%2**64"
            ),
            "scheduler": "EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing='trailing')",
            "timesteps": json.dumps(info["timesteps"]),
            "tiny_weights": f"partgen_models.testing.write_tiny_zero123plus(folder/'zero123plus-v1.2', seed={TINY_WEIGHT_SEED})",
            "tiny_weight_sha256_16": json.dumps(weight_hashes),
            "input_image": f"make_input_image(seed={INPUT_SEED}) in make_zero123pp_golden.py, uint8 HWC RGB, passed as a PIL RGB image",
            "upstream": "SUDO-AI-3D/zero123plus diffusers-support/pipeline.py",
            "upstream_commit": args.upstream_commit,
            "upstream_file_sha256": _sha256(upstream_file),
            "upstream_run_versions": json.dumps(info["versions"]),
            "weights_written_with_versions": json.dumps(_versions()),
            "upstream_image_processor": json.dumps(
                {"feature_extractor_vae": info["feature_extractor_vae_class"], "feature_extractor_clip": info["feature_extractor_clip_class"]}
            ),
            "processor_pixel_values_diff": json.dumps(processor_diffs),
            "determinism_cfg_rerun_max_abs": repr(determinism),
            "value_ranges": json.dumps(ranges),
            "shim": (
                "upstream ran on a copy of the tiny folder whose CLIP model.safetensors were re-saved with "
                "{'format': 'pt'} header metadata and, where the upstream env's CLIPTextModel expects it, 'text_model.' "
                "prefixed text-encoder keys (same tensors; loaded parameters checked bit-exact against the files)"
            ),
        }
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        golden_path = out / "zero123pp_golden.safetensors"
        save_file({k: v.contiguous() for k, v in golden.items()}, str(golden_path), metadata=metadata)
        report = {
            "golden": str(golden_path),
            "bytes": golden_path.stat().st_size,
            "upstream_run": info,
            "weights_written_with": _versions(),
            "processor_diffs": processor_diffs,
            "determinism_cfg_rerun_max_abs": determinism,
            "ranges": ranges,
            "weight_hashes": weight_hashes,
            "upstream_file_sha256": metadata["upstream_file_sha256"],
        }
        print(json.dumps(report, indent=2))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
