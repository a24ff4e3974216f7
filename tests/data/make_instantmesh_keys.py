#!/usr/bin/env python
"""Module trees (state_dict key names and shapes) of the four released InstantMesh checkpoints.

Upstream is TencentARC/InstantMesh (Apache-2.0). It is NOT part of this repository: unpack a copy of
its ``src/`` and ``configs/`` into a folder of your own and point ``--upstream`` at it. ``--env`` is a
``pip install --target`` folder holding the transformers release upstream pins (4.34.1) plus what
upstream imports at module level that this interpreter lacks (see ``instantmesh_upstream.md``).

    python tests/data/make_instantmesh_keys.py --upstream /tmp/instantmesh_src --env /tmp/im_env \
        [--out tests/data/instantmesh_keys.json]

For each of ``instant-{mesh,nerf}-{base,large}`` a worker subprocess (``--env`` first on PYTHONPATH,
then a folder of import stubs, then ``--upstream``) reads ``configs/<variant>.yaml``, builds
``model_config.target(**model_config.params)`` on the meta device (no memory, no weights) and dumps
``state_dict()`` names and shapes, prefixed ``lrm_generator.`` as in the Lightning checkpoints
(``src/model.py`` / ``src/model_mesh.py``: ``MVRecon.lrm_generator``).

Shims (worker only; upstream's code is imported unmodified):
* ``DinoWrapper._build_dino`` calls ``ViTModel.from_pretrained('facebook/dino-vitb16',
  add_pooling_layer=False)`` and ``ViTImageProcessor.from_pretrained(...)``, which need the Hub. The
  two names in ``src.models.encoder.dino_wrapper``'s namespace are replaced by loaders that build
  upstream's own ``src.models.encoder.dino.ViTModel(ViTConfig(**DINO_VITB16_CONFIG), **kwargs)`` and
  ``ViTImageProcessor(**DINO_VITB16_PREPROCESSOR)`` from the local copies of the Hub files below.
  The shapes depend only on the config; no weights are read.
* ``nvdiffrast`` (imported at module level by ``lrm_mesh.py``, ``neural_render.py``, ``mesh_util.py``)
  and ``cv2`` (``mesh_util.py``) are replaced by stub modules whose attributes raise: building the
  module tree never touches them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("instant-mesh-base", "instant-mesh-large", "instant-nerf-base", "instant-nerf-large")
PREFIX = "lrm_generator."

# Local copy of https://huggingface.co/facebook/dino-vitb16/blob/main/config.json (ViT-B/16).
DINO_VITB16_CONFIG = {
    "architectures": ["ViTModel"],
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 768,
    "image_size": 224,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "model_type": "vit",
    "num_attention_heads": 12,
    "num_channels": 3,
    "num_hidden_layers": 12,
    "patch_size": 16,
    "qkv_bias": True,
}
# Local copy of facebook/dino-vitb16's preprocessor_config.json (legacy ViTFeatureExtractor file:
# ImageNet mean/std, not ViTImageProcessor's 0.5 defaults). DinoWrapper calls the processor with
# do_rescale=False, do_resize=False, so only the normalisation matters.
DINO_VITB16_PREPROCESSOR = {
    "do_normalize": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "size": 224,
}

STUB_NVDIFFRAST = '''"""Stub of nvdiffrast for building InstantMesh's module tree without CUDA (tests/data shim)."""
'''
STUB_NVDIFFRAST_TORCH = '''"""Stub of nvdiffrast.torch: any use raises (module tree / triplane / decoder paths never use it)."""
def __getattr__(name):
    raise RuntimeError(f"nvdiffrast stub: nvdiffrast.torch.{name} is not available in this shim")
'''
STUB_CV2 = '''"""Stub of cv2 (only upstream's texture-map saving uses it)."""
def __getattr__(name):
    raise RuntimeError(f"cv2 stub: cv2.{name} is not available in this shim")
'''


def write_stubs(folder: Path) -> Path:
    (folder / "nvdiffrast").mkdir(parents=True, exist_ok=True)
    (folder / "nvdiffrast" / "__init__.py").write_text(STUB_NVDIFFRAST)
    (folder / "nvdiffrast" / "torch.py").write_text(STUB_NVDIFFRAST_TORCH)
    (folder / "cv2.py").write_text(STUB_CV2)
    return folder


def upstream_subprocess_env(env_dir: Path | None, stub_dir: Path, upstream: Path, hf_home: Path) -> dict:
    env = dict(os.environ)
    parts = ([str(env_dir)] if env_dir else []) + [str(stub_dir), str(upstream)]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(hf_home),
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    return env


# ----------------------------------------------------------------------------------------------
# worker side (runs with upstream's environment)
# ----------------------------------------------------------------------------------------------

def install_dino_shim(vit_config: dict, preprocessor: dict) -> None:
    """Make DinoWrapper._build_dino construct the ViT from a local config instead of the Hub."""
    from transformers import ViTConfig, ViTImageProcessor

    import src.models.encoder.dino as dino
    import src.models.encoder.dino_wrapper as dino_wrapper

    class _LocalViTModel:
        @staticmethod
        def from_pretrained(name, **kwargs):
            return dino.ViTModel(ViTConfig(**vit_config), **kwargs)

    class _LocalViTImageProcessor:
        @staticmethod
        def from_pretrained(name, **kwargs):
            return ViTImageProcessor(**preprocessor)

    dino_wrapper.ViTModel = _LocalViTModel
    dino_wrapper.ViTImageProcessor = _LocalViTImageProcessor


def load_variant_config(upstream: Path, variant: str) -> tuple[str, dict]:
    import yaml

    with open(upstream / "configs" / f"{variant}.yaml") as fh:
        cfg = yaml.safe_load(fh)
    mc = cfg["model_config"]
    return mc["target"], dict(mc["params"])


def resolve(target: str):
    import importlib

    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def worker(args) -> None:
    import torch
    import transformers

    upstream = Path(args.upstream)
    install_dino_shim(DINO_VITB16_CONFIG, DINO_VITB16_PREPROCESSOR)
    result = {}
    for variant in args.variants:
        target, params = load_variant_config(upstream, variant)
        cls = resolve(target)
        with torch.device("meta"):
            model = cls(**params)
        sd = model.state_dict()
        keys = {PREFIX + k: list(v.shape) for k, v in sd.items()}
        n_params = sum(v.numel() for v in sd.values())
        n_learnable = sum(p.numel() for p in model.parameters())
        assert n_params == n_learnable, "state_dict holds buffers"  # none expected
        config = {
            "target": target,
            "params": params,
            "encoder_vit_config": {k: DINO_VITB16_CONFIG[k] for k in (
                "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "image_size", "patch_size", "num_channels", "qkv_bias", "layer_norm_eps", "hidden_act")},
            "encoder_image_mean": DINO_VITB16_PREPROCESSOR["image_mean"],
            "encoder_image_std": DINO_VITB16_PREPROCESSOR["image_std"],
            "transformer_dim": params["transformer_dim"],
            "transformer_layers": params["transformer_layers"],
            "transformer_heads": params["transformer_heads"],
            "triplane_low_res": params["triplane_low_res"],
            "triplane_high_res": params["triplane_high_res"],
            "triplane_dim": params["triplane_dim"],
            "rendering_samples_per_ray": params["rendering_samples_per_ray"],
            "grid_res": getattr(model, "grid_res", None),
            "grid_scale": getattr(model, "grid_scale", None),
            "deformation_multiplier": getattr(model, "deformation_multiplier", None),
            "rendering_kwargs": dict(model.synthesizer.rendering_kwargs),
            "decoder_heads": sorted({k.split(".")[2] for k in sd if k.startswith("synthesizer.decoder.")}),
        }
        result[variant] = {"keys": keys, "num_tensors": len(keys), "num_params": int(n_params), "config": config}
        print(f"{variant}: {cls.__module__}.{cls.__name__} {len(keys)} tensors, {n_params:,} params",
              file=sys.stderr)
        del model, sd
    result_meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    Path(args.worker_out).write_text(json.dumps({"variants": result, "meta": result_meta}))


# ----------------------------------------------------------------------------------------------
# driver side
# ----------------------------------------------------------------------------------------------

def dump_json(data: dict, path: Path) -> None:
    """One key per line (readable diffs), shapes inline."""
    lines = ["{"]
    vitems = list(data.items())
    for vi, (variant, entry) in enumerate(vitems):
        lines.append(f"  {json.dumps(variant)}: {{")
        lines.append(f'    "num_tensors": {entry["num_tensors"]},')
        lines.append(f'    "num_params": {entry["num_params"]},')
        lines.append(f'    "config": {json.dumps(entry["config"], sort_keys=True)},')
        lines.append('    "keys": {')
        kitems = list(entry["keys"].items())
        for ki, (k, shape) in enumerate(kitems):
            comma = "," if ki < len(kitems) - 1 else ""
            lines.append(f"      {json.dumps(k)}: {json.dumps(shape)}{comma}")
        lines.append("    }")
        lines.append("  }" + ("," if vi < len(vitems) - 1 else ""))
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="folder with InstantMesh's src/ and configs/")
    ap.add_argument("--env", default=None, help="pip --target folder put first on the worker's PYTHONPATH")
    ap.add_argument("--out", default=str(REPO_ROOT / "tests" / "data" / "instantmesh_keys.json"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    upstream = Path(args.upstream).resolve()
    with tempfile.TemporaryDirectory(prefix="instantmesh_keys_") as tmp:
        tmp = Path(tmp)
        stub_dir = write_stubs(tmp / "stubs")
        out_json = tmp / "worker.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--upstream", str(upstream),
               "--worker-out", str(out_json), "--variants", *args.variants]
        env = upstream_subprocess_env(Path(args.env).resolve() if args.env else None, stub_dir, upstream,
                                      tmp / "hf_home")
        subprocess.run(cmd, env=env, cwd=str(tmp), check=True)
        payload = json.loads(out_json.read_text())
    data = payload["variants"]
    dump_json(data, Path(args.out))
    print(f"wrote {args.out} (worker: transformers {payload['meta']['transformers']}, "
          f"torch {payload['meta']['torch']})")


if __name__ == "__main__":
    main()
