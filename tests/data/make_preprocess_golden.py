#!/usr/bin/env python
"""Golden outputs of UPSTREAM's input preprocessing, for ``tests/test_preprocess_parity.py``.

Upstream is InstantMesh's ``resize_foreground`` (``src/utils/infer_util.py``) and the ``to_rgb_image``
of the two Zero123++ pipeline copies (InstantMesh's ``zero123plus/pipeline.py``: white; SUDO-AI-3D's
``diffusers-support/pipeline.py``: gray 127), then the pipeline's CLIP and VAE image processors. None
of it is in this repository: fetch those files into folders of your own and point the flags at them.

    python tests/data/make_preprocess_golden.py --instantmesh /tmp/upstream/instantmesh \
        --zero123plus /tmp/upstream/zero123plus --out tests/data [--upstream-env /tmp/upstream_env]

``--instantmesh`` holds ``src/utils/infer_util.py`` and ``zero123plus/pipeline.py``; ``--zero123plus``
holds ``pipeline.py``. A worker subprocess (``--upstream-env`` first on its PYTHONPATH, e.g. a
``pip install --target`` folder with the transformers upstream pins) reads each function's source
from those files and runs it unchanged; the pipeline modules are not imported whole, because their
module-level diffusers imports are irrelevant here (the functions use only numpy and PIL). ``rembg``,
imported at the top of ``infer_util.py`` but used only by ``remove_background``, is replaced by an
empty module in the worker. The processors are ``CLIPImageProcessor`` built from the
``preprocessor_config.json`` files our tiny Zero123++ folder writes (the release's values).

Inputs are new RGBA images made here from a seeded RandomState (soft edges, a fringe of faint alpha,
an object touching the border, odd and non-square sizes), i.e. what ``remove_background`` leaves.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INPUT_SEED = 20251129
# name: (height, width, object kind)
CASES = {
    "disc_soft": (131, 97, "disc"),
    "box_touching_border": (120, 160, "border_box"),
    "tall_fringe": (200, 90, "tall"),
    "wide_large": (240, 360, "wide"),
}

# The 512 px VAE input is stored for one case only (768 KB); the CLIP input for all.
VAE_CASES = ("wide_large",)


def make_input(height: int, width: int, kind: str, seed: int):
    """A deterministic RGBA uint8 image: a shaded object with anti-aliased alpha on random RGB."""
    import numpy as np

    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = rs.randint(0, 256, size=(height, width, 3)).astype(np.float64)  # junk under alpha 0
    colour = rs.uniform(20, 235, size=3)
    shade = rs.uniform(-1.5, 1.5, size=(2, 3))
    rgb_object = colour + (xx[..., None] - width / 2) * shade[0] + (yy[..., None] - height / 2) * shade[1]
    if kind == "disc":
        cx, cy, r = width * rs.uniform(0.4, 0.6), height * rs.uniform(0.4, 0.6), min(height, width) * 0.3
        alpha = np.clip(r - np.hypot(xx - cx, yy - cy), 0, 1)
    elif kind == "border_box":
        alpha = np.zeros((height, width))
        alpha[height // 3 :, : width // 2] = 1.0  # runs into the bottom and left borders
        alpha[height // 3 - 1, : width // 2] = 0.4
    elif kind == "tall":
        cx = width * rs.uniform(0.45, 0.55)
        alpha = np.clip(8 - np.abs(xx - cx), 0, 1) * ((yy > 20) & (yy < height - 30))
        alpha = np.maximum(alpha, 0.004 * (np.hypot(xx - cx, yy - height / 2) < 60))  # a faint fringe: 8-bit 1
    else:
        cx, cy = width * 0.55, height * 0.45
        alpha = np.clip(1.0 - np.hypot((xx - cx) / (width * 0.3), (yy - cy) / (height * 0.15)), 0, 1) ** 0.3
    rgb = np.where(alpha[..., None] > 0, rgb_object, rgb)
    rgba = np.concatenate([rgb, alpha[..., None] * 255], axis=-1)
    return np.clip(np.round(rgba), 0, 255).astype(np.uint8)


def _function_source(path: Path, name: str) -> str:
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(path.read_text(), node)


WORKER = r'''
import json, sys, types
import numpy, numpy as np
import PIL, PIL.Image
from PIL import Image
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor

args = json.loads(sys.argv[1])
sys.modules["rembg"] = types.ModuleType("rembg")  # used only by remove_background, which is not run
sys.path.insert(0, args["instantmesh"])
from src.utils.infer_util import resize_foreground  # upstream, unchanged
white_ns, gray_ns = {"numpy": numpy, "Image": Image}, {"numpy": numpy, "Image": Image}
exec(args["to_rgb_white"], white_ns)  # InstantMesh's zero123plus/pipeline.py to_rgb_image, unchanged
exec(args["to_rgb_gray"], gray_ns)  # SUDO-AI-3D's diffusers-support/pipeline.py to_rgb_image, unchanged
clip = CLIPImageProcessor(**json.load(open(args["clip_config"])))
vae = CLIPImageProcessor(**json.load(open(args["vae_config"])))
inputs = load_file(args["inputs"])
out = {}
def as_uint8(pixels, processor):
    """The processor's output stored losslessly as the 8-bit image it normalised (checked exact)."""
    mean = torch.tensor(processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_std)[:, None, None]
    image = ((pixels * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    assert ((image.float() / 255 - mean) / std - pixels).abs().max() < 1e-5
    return image.permute(1, 2, 0).contiguous()


for name in args["cases"]:
    rgba = Image.fromarray(inputs[name].numpy(), "RGBA")
    square = resize_foreground(rgba, 0.85)
    for flavour, ns in (("white", white_ns), ("gray", gray_ns)):
        rgb = ns["to_rgb_image"](square)
        out[f"{name}/{flavour}/rgb"] = torch.from_numpy(np.array(rgb))
    rgb = white_ns["to_rgb_image"](square)
    out[f"{name}/white/clip_input"] = as_uint8(clip(images=rgb, return_tensors="pt").pixel_values[0], clip)
    if name in args["vae_cases"]:
        out[f"{name}/white/vae_input"] = as_uint8(vae(images=rgb, return_tensors="pt").pixel_values[0], vae)
import transformers
save_file(out, args["output"], metadata={"transformers": transformers.__version__, "pillow": PIL.__version__,
                                         "numpy": numpy.__version__, "torch": torch.__version__})
'''


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instantmesh", type=Path, required=True)
    parser.add_argument("--zero123plus", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "data")
    parser.add_argument("--upstream-env", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(REPO_ROOT))
    from partgen_models.testing import write_tiny_zero123plus

    files = {
        "src/utils/infer_util.py": args.instantmesh / "src" / "utils" / "infer_util.py",
        "InstantMesh zero123plus/pipeline.py": args.instantmesh / "zero123plus" / "pipeline.py",
        "zero123plus diffusers-support/pipeline.py": args.zero123plus / "pipeline.py",
    }
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = write_tiny_zero123plus(scratch / "zero123plus-v1.2")
        inputs = {name: torch.from_numpy(make_input(h, w, kind, INPUT_SEED + i))
                  for i, (name, (h, w, kind)) in enumerate(CASES.items())}
        save_file(inputs, str(scratch / "inputs.safetensors"))
        worker_args = dict(
            instantmesh=str(args.instantmesh), cases=list(CASES), vae_cases=list(VAE_CASES), inputs=str(scratch / "inputs.safetensors"),
            output=str(scratch / "upstream.safetensors"),
            to_rgb_white=_function_source(files["InstantMesh zero123plus/pipeline.py"], "to_rgb_image"),
            to_rgb_gray=_function_source(files["zero123plus diffusers-support/pipeline.py"], "to_rgb_image"),
            clip_config=str(folder / "feature_extractor_clip" / "preprocessor_config.json"),
            vae_config=str(folder / "feature_extractor_vae" / "preprocessor_config.json"),
        )
        env = dict(os.environ)
        if args.upstream_env:
            env["PYTHONPATH"] = os.pathsep.join([str(args.upstream_env), env.get("PYTHONPATH", "")])
        subprocess.run([sys.executable, "-c", WORKER, json.dumps(worker_args)], check=True, env=env, cwd=scratch)
        upstream = load_file(str(scratch / "upstream.safetensors"))
        from safetensors import safe_open

        with safe_open(str(scratch / "upstream.safetensors"), "pt") as handle:
            worker_versions = handle.metadata()
        golden = {f"{name}/input_rgba": tensor for name, tensor in inputs.items()} | upstream
        metadata = {
            "cases": json.dumps(CASES),
            "vae_cases": json.dumps(VAE_CASES),
            "input_seed": str(INPUT_SEED),
            "upstream_sha256": json.dumps({k: _sha256(v) for k, v in files.items()}),
            "worker_versions": json.dumps(worker_versions),
        }
        save_file(golden, str(args.out / "preprocess_golden.safetensors"), metadata=metadata)
    print(json.dumps(metadata, indent=2))


if __name__ == "__main__":
    main()
