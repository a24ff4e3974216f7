"""A tiny base model and training set for the trainers' tests and the tiny training benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from .tiny_models import processor_config, write_tiny_zero123plus

TINY_REFERENCE_SIZE = 64


def write_tiny_training_base(folder: Path, seed: int = 0, reference_size: int = TINY_REFERENCE_SIZE) -> Path:
    """A tiny ``zero123plus-v1.2`` folder (the real layout) whose VAE image processor works at
    ``reference_size`` instead of 512: the reference latent then has (size/8)² tokens instead of 4096, which
    is what makes backpropagating through reference attention affordable on a CPU in tests."""
    folder = write_tiny_zero123plus(Path(folder), seed)
    config = processor_config(reference_size, [0.5, 0.5, 0.5], [0.8, 0.8, 0.8])
    (folder / "feature_extractor_vae" / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
    return folder
