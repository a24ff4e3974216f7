"""A local Qwen3-VL (transformers) as the MMPart planner.

Qwen3-VL-2B/4B/8B-Instruct (Apache-2.0) are downloaded on first use into ``vlm/<name>/`` of the
models folder (``weights.VLM_MODELS``). The folder is loaded strictly: the config must be a Qwen3-VL,
every shard the weights index lists must exist, and missing or mis-shaped weights are an error rather
than transformers' random initialisation. The architecture comes from the folder's config.json, so a
tiny checkpoint written with the same classes loads through the same code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..modules import DeviceFromWeights
from ..runtime import Runtime
from ..weights import VLM_MODELS, WeightsError, ensure_model, folder_entries, is_installed
from .planner import ChatOptions, downscaled

logger = logging.getLogger(__name__)

VLM_CHOICES: tuple[str, ...] = tuple(VLM_MODELS)
DEFAULT_VLM = "Qwen3-VL-4B-Instruct"
_MODEL_TYPE = "qwen3_vl"


def resolve_vlm_folder(name: str, search_dirs: Sequence[Path], progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """The folder of planner VLM ``name``: an installed official one, a folder of that name under
    ``vlm/`` (a checkpoint the user placed), else the official files downloaded into ``search_dirs[0]``."""
    if not search_dirs:
        raise WeightsError("no models folder is configured for PartGen (models/partgen)")
    official = VLM_MODELS.get(name)
    for root in search_dirs:
        folder = Path(root) / "vlm" / name
        if (official is not None and is_installed(official, Path(root))) or (official is None and (folder / "config.json").is_file()):
            return folder
    if official is None:
        raise WeightsError(
            f"no planner VLM named {name!r}: put a Qwen3-VL checkpoint folder (config.json, weights, tokenizer, "
            f"processor) at vlm/{name} in models/partgen, or choose one of {', '.join(VLM_CHOICES)}"
        )
    return ensure_model(official, Path(search_dirs[0]), progress)


def list_local_vlms(search_dirs: Sequence[Path]) -> list[str]:
    """Folders under ``vlm/`` that hold a config.json (the user's own Qwen3-VL checkpoints included)."""
    found: list[str] = []
    for root in search_dirs:
        entries = folder_entries(Path(root) / "vlm")
        found += [p.name for p in entries if (p / "config.json").is_file() and p.name not in found]
    return found


def _check_weights_files(folder: Path, expected: str) -> None:
    """Every file the weights index lists is present (an interrupted download leaves shards out)."""
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file() and not index.is_file():
        return
    if not index.is_file():
        raise WeightsError(f"{folder} has neither model.safetensors nor model.safetensors.index.json (expected {expected})")
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise WeightsError(f"{index} is not a readable weights index ({error}); download it again") from error
    missing = [shard for shard in shards if not (folder / shard).is_file()]
    if missing:
        raise WeightsError(
            f"{folder} lacks {', '.join(missing)} listed in model.safetensors.index.json: the download was interrupted. "
            f"Delete the folder to download it again (expected {expected})"
        )


class LocalVLM(DeviceFromWeights, torch.nn.Module):
    """A Qwen3-VL with its processor (image resizing, tokenizer, chat template); answers
    :meth:`chat` as the planner's :class:`~.planner.ChatModel`."""

    def __init__(self, model: torch.nn.Module, processor, name: str) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.name = name

    def weights_reference(self) -> torch.Tensor:
        return next(self.model.parameters())

    def chat(self, system: str, messages: list[tuple[str, str]], image: torch.Tensor, options: ChatOptions,
             runtime: Runtime) -> str:
        from PIL import Image

        runtime.prepare(self)
        pixels = (downscaled(image, options.image_max_side) * 255).round().to(torch.uint8).cpu().numpy()
        conversation = [{"role": "system", "content": [{"type": "text", "text": system}]}]
        for turn, (role, text) in enumerate(messages):
            content = [{"type": "text", "text": text}]
            if turn == 0:
                content.insert(0, {"type": "image"})
            conversation.append({"role": role, "content": content})
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[Image.fromarray(pixels)], return_tensors="pt")
        inputs = {k: v.to(runtime.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        sampling = options.temperature > 0
        settings = dict(max_new_tokens=options.max_new_tokens, do_sample=sampling,
                        stopping_criteria=[_ProgressAndInterrupt(runtime, prompt_length, options.max_new_tokens)])
        if sampling:
            settings.update(temperature=options.temperature, top_p=1.0, top_k=0)
        else:  # the checkpoint's generation_config asks for sampling; greedy must not warn about it
            settings.update(temperature=None, top_p=None, top_k=None)
        # transformers samples from the global RNG: fork it so a seed gives the same reply without
        # disturbing anyone else's random state.
        devices = [runtime.device] if runtime.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(options.seed)
            output = self.model.generate(**inputs, **settings)
        return self.processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True)[0].strip()


class _ProgressAndInterrupt:
    """A stopping criterion that only reports progress (one step per token) and checks interrupts."""

    def __init__(self, runtime: Runtime, prompt_length: int, max_new_tokens: int) -> None:
        self.runtime, self.prompt_length, self.total = runtime, prompt_length, max_new_tokens

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        self.runtime.check_interrupt()
        self.runtime.progress(min(input_ids.shape[1] - self.prompt_length, self.total), self.total, None)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def load_local_vlm(folder: Path, dtype: torch.dtype = torch.float32) -> LocalVLM:
    """A Qwen3-VL folder (transformers' layout: config.json, safetensors weights, tokenizer, processor,
    chat template) → :class:`LocalVLM`, strictly."""
    from ..segmentation.sam2_backend import from_pretrained_strictly, import_transformers_class

    folder = Path(folder)
    expected = "a Qwen3-VL checkpoint (Qwen/Qwen3-VL-*-Instruct)"
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise WeightsError(f"{folder / 'config.json'} is missing or unreadable ({error}); expected {expected}") from error
    if model_type != _MODEL_TYPE:
        raise WeightsError(f"{folder} holds a {model_type!r} model; the planner loads {expected} (model_type 'qwen3_vl')")
    _check_weights_files(folder, expected)
    model_class = import_transformers_class("Qwen3VLForConditionalGeneration", "The Qwen3-VL planner")
    processor_class = import_transformers_class("AutoProcessor", "The Qwen3-VL planner")
    model = from_pretrained_strictly(model_class, folder, dtype, expected)
    try:
        processor = processor_class.from_pretrained(str(folder))
    except Exception as error:
        raise WeightsError(
            f"{folder} lacks a readable Qwen3-VL processor/tokenizer ({type(error).__name__}: {error}); download the "
            f"tokenizer, preprocessor and chat template files of the model into it"
        ) from error
    if getattr(processor, "chat_template", None) is None:
        raise WeightsError(f"{folder} has no chat template (chat_template.json or .jinja); download it with the model")
    return LocalVLM(model.eval().requires_grad_(False), processor, folder.name)
