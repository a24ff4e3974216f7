"""Writers of tiny Zero123++ folders and InstantMesh UNet files (the real layouts, tiny widths)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Stable Diffusion 2 / Zero123++ v1.2 component configs (sudo-ai/zero123plus-v1.2); the benchmark
# builds these with random weights, and a test checks their parameter counts against the release's.
REAL_ZERO123PP_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": dict(
        sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
        norm_num_groups=32, upcast_attention=False,
    ),
    "vae": dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
        block_out_channels=(128, 256, 512, 512), sample_size=768, scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ),
    "text_encoder": dict(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    ),
    "vision_encoder": dict(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu",
    ),
}

_TINY_WIDTH = 32
TINY_ZERO123PP_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=_TINY_WIDTH, use_linear_projection=True,
        norm_num_groups=8, upcast_attention=False,
    ),
    # Four blocks keep the real 8x down-sampling, so latent and grid sizes are the real ones.
    "vae": dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        block_out_channels=(8, 8, 16, 16), sample_size=64, scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ),
    "text_encoder": dict(
        vocab_size=514, hidden_size=_TINY_WIDTH, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", projection_dim=16,
        bos_token_id=512, eos_token_id=513, pad_token_id=0,
    ),
    "vision_encoder": dict(
        hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=224, patch_size=32, projection_dim=_TINY_WIDTH, hidden_act="gelu",
    ),
}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def processor_config(size: int, mean: list[float], std: list[float]) -> dict:
    return {
        "crop_size": {"height": size, "width": size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": mean,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": std,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": size},
    }


SCHEDULER_CONFIG = {
    "_class_name": "EulerAncestralDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "steps_offset": 1,
    "timestep_spacing": "linspace",
    "trained_betas": None,
}


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-to-printable-character table (the order CLIP's vocab.json starts with)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_clip_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer with byte-level tokens only (514 entries, "!" = 0 as in SD2's pad)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), "utf-8")
    config = dict(special, model_max_length=77, do_lower_case=True, tokenizer_class="CLIPTokenizer", errors="replace")
    (folder / "tokenizer_config.json").write_text(json.dumps(config), "utf-8")


def randomize_(module: torch.nn.Module, generator: torch.Generator, scale: float = 1.0) -> torch.nn.Module:
    """Overwrite every parameter with seeded noise: the constructors zero some output layers, which
    would make a random model's output trivially zero and a parity test unable to fail."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1 and name.endswith("weight"):  # norm gains
                param.copy_(1.0 + 0.1 * noise)
            elif param.ndim == 1:
                param.copy_(0.05 * noise)
            else:
                fan_in = param[0].numel()
                param.copy_(noise * scale / fan_in**0.5)
    return module


def _save_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(path), metadata={"format": "pt"})


def build_components(configs: dict[str, dict[str, Any]], seed: int, device: str = "cpu") -> dict[str, torch.nn.Module]:
    """Random Zero123++ components from ``configs`` (tiny or real), seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    generator = torch.Generator().manual_seed(seed)
    with torch.device(device):
        components = {
            "unet": UNet2DConditionModel(**configs["unet"]),
            "vae": AutoencoderKL(**configs["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
            "vision_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["vision_encoder"])),
        }
    for module in components.values():
        randomize_(module.cpu(), generator)
    return components


def write_zero123plus_folder(folder: Path, components: dict[str, torch.nn.Module], ramping: list[float]) -> Path:
    """Save components in the sudo-ai/zero123plus-v1.x folder layout."""
    folder = Path(folder)
    for name in ("unet", "vae"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        components[name].save_config(str(folder / name))
        _save_safetensors(components[name].state_dict(), folder / name / "diffusion_pytorch_model.safetensors")
    for name in ("text_encoder", "vision_encoder"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        components[name].config.save_pretrained(str(folder / name))
        state_dict = components[name].state_dict()
        if name == "text_encoder" and not any(k.startswith("text_model.") for k in state_dict):
            # The released files were written by transformers 4.x, whose CLIPTextModel nests its
            # transformer under ``text_model.``; transformers 5 flattened it. Keep the release layout.
            state_dict = {f"text_model.{k}": v for k, v in state_dict.items()}
        _save_safetensors(state_dict, folder / name / "model.safetensors")
    write_clip_tokenizer(folder / "tokenizer")
    for name, size, mean, std in (
        ("feature_extractor_clip", 224, CLIP_MEAN, CLIP_STD),
        ("feature_extractor_vae", 512, [0.5, 0.5, 0.5], [0.8, 0.8, 0.8]),
    ):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "preprocessor_config.json").write_text(json.dumps(processor_config(size, mean, std), indent=2))
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
    index = {
        "_class_name": "Zero123PlusPipeline",
        "_diffusers_version": "0.20.2",
        "feature_extractor_clip": ["transformers", "CLIPImageProcessor"],
        "feature_extractor_vae": ["transformers", "CLIPImageProcessor"],
        "ramping_coefficients": ramping,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "vision_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_tiny_zero123plus(folder: Path, seed: int = 0) -> Path:
    components = build_components(TINY_ZERO123PP_CONFIGS, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    ramping = torch.rand(77, generator=generator).tolist()
    return write_zero123plus_folder(folder, components, ramping)


def write_tiny_instantmesh_unet(path: Path, seed: int = 1) -> Path:
    """InstantMesh's UNet file: a plain pickled state dict of the Zero123++ UNet."""
    from diffusers import UNet2DConditionModel

    unet = randomize_(UNet2DConditionModel(**TINY_ZERO123PP_CONFIGS["unet"]), torch.Generator().manual_seed(seed))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))
    return path


def write_tiny_partgen_unet_folder(folder: Path, fmt: str, in_channels: int, seed: int, palette=None) -> Path:
    """One of our PartGen checkpoint folders (``partgen.json`` + diffusers ``unet/``), tiny widths."""
    from diffusers import UNet2DConditionModel

    from ..segmentation.palette import PALETTE

    config = dict(TINY_ZERO123PP_CONFIGS["unet"], in_channels=in_channels, out_channels=4)
    unet = randomize_(UNet2DConditionModel(**config), torch.Generator().manual_seed(seed))
    folder = Path(folder)
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    unet.save_config(str(folder / "unet"))
    _save_safetensors(unet.state_dict(), folder / "unet" / "diffusion_pytorch_model.safetensors")
    meta = {"format": fmt, "version": 1, "base_model": "zero123plus-v1.2",
            "palette": [list(c) for c in (palette or PALETTE)]}
    (folder / "partgen.json").write_text(json.dumps(meta, indent=2))
    return folder


# SAM 2.1 video model at 128 px with the real structure. Two constraints of transformers' code shape
# it: the memory encoder's output is hard-wired to 64 channels and object pointers are split into
# 64-wide tokens, so the prompt/decoder width must be a multiple of 64 above it (128); a Hiera
# global-attention block must not open a stage (it would pool with a zero window).
_TINY_SAM_SIZE = 128
TINY_SAM2_CONFIG: dict[str, Any] = dict(
    vision_config=dict(
        model_type="sam2_vision_model",
        backbone_config=dict(
            model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[_TINY_SAM_SIZE] * 2,
            blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
            window_size_per_stage=[8, 4, 4, 4], global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4],
        ),
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[_TINY_SAM_SIZE // s] * 2 for s in (4, 8, 16)],
        fpn_hidden_size=128,
    ),
    prompt_encoder_config=dict(hidden_size=128, image_size=_TINY_SAM_SIZE, patch_size=16, mask_input_channels=8),
    mask_decoder_config=dict(hidden_size=128, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=32),
    image_size=_TINY_SAM_SIZE, memory_attention_hidden_size=128, memory_attention_num_layers=1,
    memory_attention_feed_forward_hidden_size=128, memory_attention_rope_feat_sizes=[_TINY_SAM_SIZE // 16] * 2,
    memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
    memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
)


def write_tiny_sam2(folder: Path, seed: int = 70) -> Path:
    """A facebook/sam2.1-hiera-* folder: the video model's config.json + model.safetensors (saved by
    ``Sam2VideoModel.save_pretrained``) and the processor configs, tiny widths."""
    from transformers import Sam2ImageProcessor, Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    model = randomize_(Sam2VideoModel(Sam2VideoConfig(**TINY_SAM2_CONFIG)), torch.Generator().manual_seed(seed))
    folder = Path(folder)
    model.save_pretrained(str(folder))
    size = {"height": _TINY_SAM_SIZE, "width": _TINY_SAM_SIZE}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size), video_processor=Sam2VideoVideoProcessor(size=size),
        target_size=_TINY_SAM_SIZE,
    )
    processor.save_pretrained(str(folder))
    return folder


_TINY_SAM3_SIZE = 112  # 8x8 patches of 14 px
TINY_SAM3_DETECTOR_CONFIG: dict[str, Any] = dict(
    model_type="sam3",
    vision_config=dict(
        model_type="sam3_vision_model",
        backbone_config=dict(
            model_type="sam3_vit_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
            image_size=_TINY_SAM3_SIZE, patch_size=14, window_size=4, global_attn_indexes=[1], pretrain_image_size=56,
        ),
        fpn_hidden_size=32,
        backbone_feature_sizes=[[_TINY_SAM3_SIZE // 14 * s] * 2 for s in (4, 2, 1)],
    ),
    text_config=dict(
        model_type="clip_text_model", vocab_size=514, hidden_size=32, intermediate_size=48, projection_dim=16,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32, bos_token_id=512, eos_token_id=513,
        pad_token_id=0,
    ),
    geometry_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=48),
    detr_encoder_config=dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=48),
    detr_decoder_config=dict(hidden_size=32, num_layers=1, num_queries=8, num_attention_heads=2, intermediate_size=48),
    mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
)


def write_tiny_sam3(folder: Path, seed: int = 80) -> Path:
    """A facebook/sam3 folder: ``Sam3VideoModel.save_pretrained`` (detector + tracker, as released) plus
    the processor (image processor, CLIP tokenizer with byte-level tokens), tiny widths."""
    from transformers import CLIPTokenizer, Sam3ImageProcessor, Sam3Processor, Sam3VideoConfig, Sam3VideoModel

    tracker = dict(TINY_SAM2_CONFIG, model_type="sam3_tracker_video", vision_config=TINY_SAM3_DETECTOR_CONFIG["vision_config"],
                   image_size=_TINY_SAM3_SIZE, memory_attention_rope_feat_sizes=[_TINY_SAM3_SIZE // 14] * 2,
                   prompt_encoder_config=dict(TINY_SAM2_CONFIG["prompt_encoder_config"], image_size=_TINY_SAM3_SIZE, patch_size=14))
    config = Sam3VideoConfig(detector_config=TINY_SAM3_DETECTOR_CONFIG, tracker_config=tracker)
    model = randomize_(Sam3VideoModel(config), torch.Generator().manual_seed(seed))
    folder = Path(folder)
    model.save_pretrained(str(folder))
    write_clip_tokenizer(folder)
    size = {"height": _TINY_SAM3_SIZE, "width": _TINY_SAM3_SIZE}
    image_processor = Sam3ImageProcessor(size=size, mask_size={"height": _TINY_SAM3_SIZE // 14 * 4, "width": _TINY_SAM3_SIZE // 14 * 4})
    Sam3Processor(image_processor=image_processor, tokenizer=CLIPTokenizer.from_pretrained(str(folder))).save_pretrained(str(folder))
    return folder


def write_tiny_models(models_dir: str | Path, seed: int = 0) -> list[Path]:
    """A whole tiny model set, in the folders the loaders look in (``weights.OFFICIAL_MODELS``)."""
    from .tiny_instantmesh import write_tiny_instantmesh
    from .tiny_vlm import write_tiny_qwen3_vl

    models_dir = Path(models_dir)
    return [
        write_tiny_zero123plus(models_dir / "zero123plus-v1.2", seed),
        write_tiny_zero123plus(models_dir / "zero123plus-v1.1", seed + 10),
        write_tiny_instantmesh_unet(models_dir / "instantmesh-zero123plus-unet" / "diffusion_pytorch_model.bin", seed + 20),
        # Same file names as the official checkpoints, so the loaders' official choices find them.
        write_tiny_instantmesh(models_dir / "instantmesh" / "instant_mesh_large.ckpt", "mesh", seed + 30),
        write_tiny_instantmesh(models_dir / "instantmesh" / "instant_nerf_large.ckpt", "nerf", seed + 40),
        write_tiny_partgen_unet_folder(models_dir / "partgen-segmentation", "partgen-segmentation", 8, seed + 50),
        write_tiny_partgen_unet_folder(models_dir / "partgen-completion", "partgen-completion", 13, seed + 60),
        # Folder names of the official SAM choices (weights.SAM_MODELS).
        write_tiny_sam2(models_dir / "sam2.1-hiera-tiny", seed + 70),
        write_tiny_sam3(models_dir / "sam3", seed + 80),
        # The planner's default choice (weights.VLM_MODELS), sharded like that release.
        write_tiny_qwen3_vl(models_dir / "vlm" / "Qwen3-VL-4B-Instruct", seed + 90),
    ]
