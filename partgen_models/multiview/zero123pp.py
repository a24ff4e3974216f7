"""Loading Zero123++ (v1.1, v1.2, and InstantMesh's white-background UNet) from its HF folder.

The folder is read directly, component by component, as ``sudo-ai/zero123plus-v1.x`` ships it:
``model_index.json`` (with the 77 ``ramping_coefficients``), ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``vision_encoder/``, ``feature_extractor_clip/``, ``feature_extractor_vae/``,
``scheduler/``. No custom pipeline and no remote code: the sampler lives in ``sampler.py``.

The text encoder is only ever asked for the empty prompt, so it runs once at load time on the CPU
and only its output (``[1, 77, D]``) is kept; that saves its 340M parameters of VRAM.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..cameras import LAYOUTS, ViewLayout
from ..modules import DeviceFromWeights, build_on_meta, load_strict, match_transformers_layout
from ..weights import WeightsError, find_weights_file, load_state_dict
from .reference_attention import ReferenceBank, install_reference_attention

logger = logging.getLogger(__name__)

GRAY_127 = 127.0 / 255.0


@dataclass(frozen=True)
class Zero123PlusFlavour:
    """What a released checkpoint expects and produces (not visible in its tensors).

    input_background: colour the conditioning image is composited on (SUDO's pipeline pastes RGBA on
        gray 127, InstantMesh's copy on white).
    output_background: colour of the generated views' background (gray 0.5, the VAE's zero, for the
        SUDO releases; white for InstantMesh's fine-tune).
    """

    layout: str
    input_background: float
    output_background: float


FLAVOURS = {
    "zero123plus-v1.1": Zero123PlusFlavour("zero123pp_v11", GRAY_127, 0.5),
    "zero123plus-v1.2": Zero123PlusFlavour("zero123pp_v12", GRAY_127, 0.5),
    "zero123plus-v1.2-instantmesh": Zero123PlusFlavour("zero123pp_v12", 1.0, 1.0),
    # PartGen's models on the Zero123++ v1.2 base (our checkpoint format): white in, white out.
    "partgen-segmentation": Zero123PlusFlavour("zero123pp_v12", 1.0, 1.0),
    "partgen-completion": Zero123PlusFlavour("zero123pp_v12", 1.0, 1.0),
}


class Zero123PlusModel(DeviceFromWeights, torch.nn.Module):
    """The Zero123++ networks plus the constants the sampler needs.

    Submodules ``unet``, ``vae``, ``vision_encoder`` are what a host moves between devices; buffers
    ``empty_prompt_embeds`` ``[1,77,D]`` and ``ramping`` ``[77,1]`` travel with them.
    """

    def __init__(
        self,
        *,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        vision_encoder: torch.nn.Module,
        empty_prompt_embeds: torch.Tensor,
        ramping: torch.Tensor,
        feature_extractor_clip: Any,
        feature_extractor_vae: Any,
        scheduler_config: dict,
        flavour: Zero123PlusFlavour,
        name: str,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.vision_encoder = vision_encoder
        self.register_buffer("empty_prompt_embeds", empty_prompt_embeds)
        self.register_buffer("ramping", ramping)
        self.feature_extractor_clip = feature_extractor_clip
        self.feature_extractor_vae = feature_extractor_vae
        self.scheduler_config = dict(scheduler_config)
        self.flavour = flavour
        self.name = name
        self.reference_bank: ReferenceBank = install_reference_attention(unet)

    @property
    def layout(self) -> ViewLayout:
        return LAYOUTS[self.flavour.layout]

    def weights_reference(self) -> torch.Tensor:
        return next(self.unet.parameters())

    def size_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())


def _read_json(path: Path, expected: str) -> dict:
    if not path.is_file():
        raise WeightsError(f"{path} is missing ({expected})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON ({error}); expected {expected}") from error


def _load_diffusers_component(cls, folder: Path, expected: str, dtype: torch.dtype, weights: Optional[Path] = None):
    config = _read_json(folder / "config.json", f"the config of {expected}")
    try:
        config_obj = cls.load_config(str(folder)) if hasattr(cls, "load_config") else config
        module = build_on_meta(lambda: cls.from_config(config_obj))
    except WeightsError:
        raise
    except Exception as error:
        raise WeightsError(f"{folder / 'config.json'} does not describe {expected}: {error}") from error
    path = weights or find_weights_file(folder, ("diffusion_pytorch_model",), expected)
    return load_strict(module, load_state_dict(path, expected), path, expected, dtype)


def _load_transformers_component(cls, config_cls, folder: Path, expected: str, dtype: torch.dtype):
    _read_json(folder / "config.json", f"the config of {expected}")
    try:
        config = config_cls.from_pretrained(str(folder))
        module = build_on_meta(lambda: cls(config))
    except Exception as error:
        raise WeightsError(f"{folder / 'config.json'} does not describe {expected}: {error}") from error
    path = find_weights_file(folder, ("model", "pytorch_model"), expected)
    state_dict = match_transformers_layout(load_state_dict(path, expected), set(module.state_dict()))
    return load_strict(module, state_dict, path, expected, dtype)


def detect_flavour(folder: Path, unet_file: Optional[Path]) -> str:
    """Which release a folder is, from its name; v1.2 unless the folder says v1.1."""
    if unet_file is not None:
        return "zero123plus-v1.2-instantmesh"
    return "zero123plus-v1.1" if "v1.1" in Path(folder).name else "zero123plus-v1.2"


def load_zero123plus(
    folder: Path,
    unet_file: Optional[Path] = None,
    dtype: torch.dtype = torch.float32,
    flavour: Optional[str] = None,
    unet_folder: Optional[Path] = None,
) -> Zero123PlusModel:
    """Load a Zero123++ folder; ``unet_file`` replaces its UNet weights (InstantMesh's fine-tune),
    ``unet_folder`` its whole UNet (config and weights, diffusers layout: PartGen's wider-input UNets).

    ``flavour`` is one of ``FLAVOURS`` (default: from the folder name and ``unet_file``).
    Weights stay on the CPU in ``dtype``; the runtime moves them.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    folder = Path(folder)
    index = _read_json(folder / "model_index.json", "a Zero123++ model_index.json")
    ramp_values = index.get("ramping_coefficients")
    if not isinstance(ramp_values, list) or not ramp_values:
        raise WeightsError(
            f"{folder / 'model_index.json'} has no ramping_coefficients list: {folder} is not a Zero123++ "
            "folder (expected sudo-ai/zero123plus-v1.1 or v1.2)"
        )
    flavour_name = flavour or detect_flavour(folder, unet_file)
    if flavour_name not in FLAVOURS:
        raise ValueError(f"unknown Zero123++ flavour {flavour_name!r}; choose one of {sorted(FLAVOURS)}")

    unet = _load_diffusers_component(
        UNet2DConditionModel, Path(unet_folder) if unet_folder else folder / "unet",
        "a Zero123++ UNet (UNet2DConditionModel)", dtype, unet_file,
    )
    vae = _load_diffusers_component(AutoencoderKL, folder / "vae", "a Stable Diffusion VAE (AutoencoderKL)", dtype)
    vision_encoder = _load_transformers_component(
        CLIPVisionModelWithProjection, CLIPVisionConfig, folder / "vision_encoder",
        "a CLIP vision encoder with projection", dtype,
    )
    text_encoder = _load_transformers_component(
        CLIPTextModel, CLIPTextConfig, folder / "text_encoder", "a CLIP text encoder", torch.float32
    )
    processor_class = pil_image_processor_class()
    absent = [name for name in ("tokenizer", "feature_extractor_clip", "feature_extractor_vae") if not (folder / name).is_dir()]
    if absent:  # transformers would read a missing folder as a Hub repo id and report that instead
        raise WeightsError(
            f"{folder} lacks the folder(s) {', '.join(absent)} of a Zero123++ model: the download is incomplete. "
            f"Delete {folder} to download it again, or copy the missing folders from the same release"
        )
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        feature_extractor_clip = processor_class.from_pretrained(str(folder / "feature_extractor_clip"))
        feature_extractor_vae = processor_class.from_pretrained(str(folder / "feature_extractor_vae"))
    except Exception as error:
        raise WeightsError(f"{folder}: tokenizer or image processor files are missing or invalid ({error})") from error
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json", "the scheduler config")

    width = unet.config.cross_attention_dim
    if text_encoder.config.hidden_size != width or vision_encoder.config.projection_dim != width:
        raise WeightsError(
            f"{folder}: text width {text_encoder.config.hidden_size} and image embedding width "
            f"{vision_encoder.config.projection_dim} must both equal the UNet's cross-attention width {width}"
        )
    empty_prompt_embeds = encode_empty_prompt(text_encoder, tokenizer)
    if len(ramp_values) != empty_prompt_embeds.shape[1]:
        raise WeightsError(
            f"{folder / 'model_index.json'}: {len(ramp_values)} ramping coefficients for "
            f"{empty_prompt_embeds.shape[1]} prompt tokens"
        )
    ramping = torch.tensor(ramp_values, dtype=torch.float32).unsqueeze(-1)  # (77, 1)
    return Zero123PlusModel(
        unet=unet,
        vae=vae,
        vision_encoder=vision_encoder,
        empty_prompt_embeds=empty_prompt_embeds.to(dtype),
        ramping=ramping.to(dtype),
        feature_extractor_clip=feature_extractor_clip,
        feature_extractor_vae=feature_extractor_vae,
        scheduler_config=scheduler_config,
        flavour=FLAVOURS[flavour_name],
        name=flavour_name,
    )


def pil_image_processor_class():
    """The PIL-based CLIP image processor, the one upstream ran with.

    transformers 5 made ``CLIPImageProcessor`` the torchvision implementation, whose bicubic resize
    differs from PIL's by up to 1.5e-2 on the 224 px CLIP input; ``CLIPImageProcessorPil`` is the
    old one (bit-identical to upstream's pixel values, see tests/data/zero123pp_golden.md).
    """
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


@torch.no_grad()
def encode_empty_prompt(text_encoder: torch.nn.Module, tokenizer: Any) -> torch.Tensor:
    """CLIPText("") as Stable Diffusion pipelines compute it: padded to max length, no attention mask."""
    tokens = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(tokens.to(text_encoder.device))[0].float()  # (1, 77, D) last hidden state after the final layer norm


def load_text_encoder(folder: Path, dtype: torch.dtype = torch.float32):
    """The Zero123++ folder's CLIP text encoder and tokenizer (strictly loaded, on the CPU)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    text_encoder = _load_transformers_component(
        CLIPTextModel, CLIPTextConfig, folder / "text_encoder", "a CLIP text encoder", dtype
    )
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    except Exception as error:
        raise WeightsError(f"{folder / 'tokenizer'}: tokenizer files are missing or invalid ({error})") from error
    return text_encoder, tokenizer


@torch.no_grad()
def encode_texts(text_encoder: torch.nn.Module, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """CLIPText of each text ``[N,77,D]``, padded to max length as Stable Diffusion pipelines do."""
    tokens = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(tokens.to(text_encoder.device))[0]


@torch.no_grad()
def encode_prompt(folder: Path, text: str) -> torch.Tensor:
    """CLIPText(text) ``[1,77,D]`` with the Zero123++ folder's own text encoder (loaded on the CPU for
    the call: only editing needs prompts, so the encoder is not kept with the model)."""
    text_encoder, tokenizer = load_text_encoder(folder)
    return encode_texts(text_encoder, tokenizer, [text]).float()
