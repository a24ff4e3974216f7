"""Tiny InstantMesh checkpoints in the release's Lightning layout."""

from __future__ import annotations

from pathlib import Path

import torch

from ..reconstruction.lrm import LargeReconstructionModel, LRMConfig
from .tiny_models import randomize_

# Our module sizes; ``upstream_params`` builds the same tree with upstream's constructors
# (InstantMesh/InstantNeRF kwargs plus the DINO ViTConfig) for golden runs.
TINY_LRM_CONFIGS: dict[str, LRMConfig] = {
    variant: LRMConfig(
        variant=variant,
        encoder_dim=64,
        encoder_layers=2,
        encoder_mlp_dim=128,
        patch_size=16,
        encoder_positions=196,  # 224 px / 16, as DINO ViT-B/16: 320 px views exercise the interpolation
        transformer_dim=128,
        transformer_layers=2,
        triplane_low_res=8,
        triplane_dim=8,
        decoder_hidden=64,
        decoder_layers=4,
    )
    for variant in ("mesh", "nerf")
}

REAL_LRM_CONFIGS: dict[str, LRMConfig] = {
    f"{variant}-{size}": LRMConfig(
        variant=variant, encoder_dim=768, encoder_layers=12, encoder_mlp_dim=3072, patch_size=16,
        encoder_positions=196, transformer_dim=1024, transformer_layers=layers, triplane_low_res=32,
        triplane_dim=dim, decoder_hidden=64, decoder_layers=4,
    )
    for variant in ("mesh", "nerf")
    for size, layers, dim in (("base", 12, 40), ("large", 16, 80))
}


def upstream_params(config: LRMConfig) -> dict:
    """Constructor kwargs of upstream's InstantMesh/InstantNeRF and the ViTConfig of its DINO encoder."""
    return {
        "model": {
            "encoder_feat_dim": config.encoder_dim,
            "transformer_dim": config.transformer_dim,
            "transformer_layers": config.transformer_layers,
            "transformer_heads": config.transformer_heads,
            "triplane_low_res": config.triplane_low_res,
            "triplane_high_res": config.triplane_high_res,
            "triplane_dim": config.triplane_dim,
        },
        "vit_config": {
            "hidden_size": config.encoder_dim,
            "num_hidden_layers": config.encoder_layers,
            "num_attention_heads": config.encoder_heads,
            "intermediate_size": config.encoder_mlp_dim,
            "image_size": int(round(config.encoder_positions**0.5)) * config.patch_size,
            "patch_size": config.patch_size,
            "qkv_bias": True,
            "layer_norm_eps": config.encoder_layer_norm_eps,
            "hidden_act": "gelu",
        },
    }


TINY_INSTANTMESH_CONFIGS = {variant: upstream_params(config) for variant, config in TINY_LRM_CONFIGS.items()}


def write_tiny_instantmesh(path: Path, variant: str = "mesh", seed: int = 0) -> Path:
    """A seeded random LRM saved as InstantMesh's Lightning checkpoint: ``{"state_dict": {"lrm_generator.*"}}``."""
    model = LargeReconstructionModel(TINY_LRM_CONFIGS[variant])
    randomize_(model, torch.Generator().manual_seed(seed))
    state = {f"lrm_generator.{k}": v.contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 0, "global_step": 0}, str(path))
    return path
