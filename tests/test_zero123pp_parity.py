"""Our sampler against the upstream Zero123++ pipeline run on the same tiny weights.

Golden tensors and their provenance (upstream commit, versions, RNG protocol): tests/data/
zero123pp_golden.md. The tiny weights are rewritten here with the same writer and seed; a drift
in the writer (other random values) makes every case fail by far more than the tolerance.
"""

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from partgen_models.multiview import MultiViewOptions, load_zero123plus
from partgen_models.multiview.sampler import decode_latents, sample_latents, unscale_latents
from partgen_models.testing import write_tiny_zero123plus

GOLDEN = Path(__file__).parent / "data" / "zero123pp_golden.safetensors"
TOLERANCE = 1e-4  # max abs, CPU float32 (issue: parity within 1e-4)


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), "pt") as handle:
        metadata = handle.metadata()
    return load_file(str(GOLDEN)), metadata


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_zero123plus(write_tiny_zero123plus(tmp_path_factory.mktemp("golden") / "zero123plus-v1.2", seed=0))


@pytest.mark.parametrize("case", ["cfg", "nocfg", "cfg_large"])
def test_matches_upstream(model, golden, case):
    tensors, metadata = golden
    settings = json.loads(metadata["cases"])[case]
    options = MultiViewOptions(
        num_inference_steps=settings["num_inference_steps"],
        guidance_scale=settings["guidance_scale"],
        seed=settings["seed"],
        view_size=settings["width"] // 2,
    )
    image = tensors["input_image"].numpy()[None]  # (1, 320, 320, 3) uint8
    latents = sample_latents(model, image, options)
    assert (unscale_latents(latents) - tensors[f"{case}.latents"]).abs().max().item() < TOLERANCE
    images = decode_latents(model, latents)
    expected = tensors[f"{case}.images"].float()
    # cfg_large is stored in float16 to keep the file small: its rounding (<= 2.5e-4) adds to the bound
    bound = TOLERANCE if expected.dtype == tensors[f"{case}.images"].dtype else 1e-3
    assert images.shape == expected.shape
    assert (images - expected).abs().max().item() < bound
