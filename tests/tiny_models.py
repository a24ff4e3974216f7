"""Tiny checkpoints shared by the tier-1 tests: written once per test process, loaded once."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

from partgen_models.multiview import load_zero123plus
from partgen_models.testing import write_tiny_models


REUSE_ENV = "PARTGEN_TINY_MODELS_DIR"  # a folder already holding write_tiny_models' output (tools/mutation_test.py)


@functools.lru_cache(maxsize=None)
def tiny_models_dir() -> Path:
    reused = os.environ.get(REUSE_ENV)
    if reused and (Path(reused) / "zero123plus-v1.2" / "model_index.json").is_file():
        return Path(reused)
    root = Path(tempfile.mkdtemp(prefix="partgen-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    write_tiny_models(root)
    return root


@functools.lru_cache(maxsize=None)
def tiny_zero123plus(instantmesh_unet: bool = False):
    root = tiny_models_dir()
    unet = root / "instantmesh-zero123plus-unet" / "diffusion_pytorch_model.bin" if instantmesh_unet else None
    return load_zero123plus(root / "zero123plus-v1.2", unet_file=unet)
