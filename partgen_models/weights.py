"""Finding, downloading, verifying and loading weights.

Weights live in one models folder (ComfyUI's ``models/partgen/``; the node layer says which). Each
official model has a sub-folder named after it. Missing official models are downloaded on first use
with ``huggingface_hub`` unless downloading is switched off (``PARTGEN_NO_DOWNLOAD=1`` or
``HF_HUB_OFFLINE=1``); then the error names the files, where they come from and where to put them.

Safetensors is read first; pickled checkpoints only with ``torch.load(weights_only=True)``.
Every failure while reading a file becomes a :class:`WeightsError` naming the file and what was
expected, never a stack trace from inside torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import torch

logger = logging.getLogger(__name__)

NO_DOWNLOAD_ENV = "PARTGEN_NO_DOWNLOAD"


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, or not the model that was expected."""


@dataclass(frozen=True)
class OfficialModel:
    """A model the pack knows how to download.

    ``folder`` is the sub-folder of the models folder the files go to; ``files`` are glob patterns
    relative to the source repository (and to ``folder``); ``required`` are the files whose presence
    means the model is installed.
    """

    folder: str
    repo_id: str
    files: tuple[str, ...]
    required: tuple[str, ...]
    license: str
    description: str

    def source(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


_ZERO123PP_FILES = (
    "model_index.json",
    "*/config.json",
    "*/*.safetensors",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "feature_extractor_clip/preprocessor_config.json",
    "feature_extractor_vae/preprocessor_config.json",
)
_ZERO123PP_REQUIRED = (
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "vision_encoder/config.json",
    "tokenizer/vocab.json",
    "scheduler/scheduler_config.json",
)

OFFICIAL_MODELS: dict[str, OfficialModel] = {
    m.folder: m
    for m in (
        OfficialModel(
            "zero123plus-v1.2", "sudo-ai/zero123plus-v1.2", _ZERO123PP_FILES, _ZERO123PP_REQUIRED,
            "CC-BY-NC-4.0", "Zero123++ v1.2: 6 views at elevations 20/-10, FoV 30 (about 3.8 GB)",
        ),
        OfficialModel(
            "zero123plus-v1.1", "sudo-ai/zero123plus-v1.1", _ZERO123PP_FILES, _ZERO123PP_REQUIRED,
            "CC-BY-NC-4.0", "Zero123++ v1.1: 6 views at elevations 30/-20 (about 3.8 GB)",
        ),
        OfficialModel(
            "instantmesh-zero123plus-unet", "TencentARC/InstantMesh", ("diffusion_pytorch_model.bin",),
            ("diffusion_pytorch_model.bin",), "Apache-2.0",
            "InstantMesh's white-background fine-tune of the Zero123++ v1.2 UNet (about 3.5 GB)",
        ),
    )
}

# InstantMesh reconstruction checkpoints: one file each, all in the "instantmesh" folder.
INSTANTMESH_CHECKPOINTS: dict[str, OfficialModel] = {
    name: OfficialModel(
        "instantmesh", "TencentARC/InstantMesh", (f"{name.replace('-', '_')}.ckpt",), (f"{name.replace('-', '_')}.ckpt",),
        "Apache-2.0", f"InstantMesh {name} reconstruction model ({size})",
    )
    for name, size in (
        ("instant-mesh-large", "about 1.5 GB"),
        ("instant-mesh-base", "about 1.2 GB"),
        ("instant-nerf-large", "about 1.5 GB"),
        ("instant-nerf-base", "about 1.2 GB"),
    )
}


# Segment Anything checkpoints in transformers' layout (config.json + model.safetensors), each in a
# folder named after the choice. SAM 2.1 folders hold the video model (memory attention included),
# which the multi-view SAM2 backend needs; SAM 3 holds the detector and its tracker.
_SAM2_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json",
               "video_preprocessor_config.json")
SAM_MODELS: dict[str, OfficialModel] = {
    m.folder: m
    for m in (
        *(
            OfficialModel(
                f"sam2.1-hiera-{size}", f"facebook/sam2.1-hiera-{size}", _SAM2_FILES, ("config.json", "model.safetensors"),
                "Apache-2.0", f"SAM 2.1 Hiera-{label} ({params}, about {mb} in fp32)",
            )
            for size, label, params, mb in (
                ("tiny", "T", "38.9M parameters", "160 MB"),
                ("small", "S", "46.0M parameters", "185 MB"),
                ("base-plus", "B+", "80.8M parameters", "325 MB"),
                ("large", "L", "224.4M parameters", "900 MB"),
            )
        ),
        OfficialModel(
            "sam3", "facebook/sam3", ("config.json", "model.safetensors", "*.json", "*.txt"),
            ("config.json", "model.safetensors", "tokenizer_config.json"), "SAM License (Meta)",
            "SAM 3 (860M parameters, about 3.4 GB; its Hugging Face repository is gated: accept the licence at "
            "https://huggingface.co/facebook/sam3 and run `hf auth login` first)",
        ),
    )
}


def folder_entries(root: Path) -> list[Path]:
    """The entries of a models folder, sorted; none when it is missing or unreadable (an extra_model_paths
    folder without permission must not break a loader's node list)."""
    try:
        return sorted(Path(root).iterdir()) if Path(root).is_dir() else []
    except OSError:
        return []


def downloads_allowed() -> bool:
    """False when the user switched downloading off (``PARTGEN_NO_DOWNLOAD=1`` or HF offline mode)."""
    for name in (NO_DOWNLOAD_ENV, "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return False
    return True


def is_installed(model: OfficialModel, models_dir: Path) -> bool:
    folder = Path(models_dir) / model.folder
    return all((folder / name).is_file() for name in model.required)


def missing_model_message(model: OfficialModel, models_dir: Path, reason: str) -> str:
    folder = Path(models_dir) / model.folder
    return (
        f"{model.description} is not installed and {reason}. Download these files from "
        f"{model.source()} : {', '.join(model.files)} and put them, keeping their sub-folders, in "
        f"{folder} . Unset {NO_DOWNLOAD_ENV} (and HF_HUB_OFFLINE) to let the pack download them "
        f"on first use. Licence of the weights: {model.license}."
    )


def ensure_model(
    model: OfficialModel,
    models_dir: Path,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Path:
    """Return the model's folder, downloading the official files into it first if needed."""
    folder = Path(models_dir) / model.folder
    if is_installed(model, models_dir):
        return folder
    if not downloads_allowed():
        raise WeightsError(missing_model_message(model, models_dir, "downloading is switched off"))
    try:
        import huggingface_hub
    except ImportError as error:  # pragma: no cover - huggingface_hub is a declared dependency
        raise WeightsError(missing_model_message(model, models_dir, "huggingface_hub is not installed")) from error
    logger.info("downloading %s from %s into %s", model.description, model.source(), folder)
    try:
        huggingface_hub.snapshot_download(
            repo_id=model.repo_id,
            allow_patterns=list(model.files),
            local_dir=str(folder),
            tqdm_class=_progress_tqdm(progress) if progress is not None else None,
        )
    except Exception as error:  # network, auth, disk: all end in the same actionable message
        raise WeightsError(missing_model_message(model, models_dir, f"the download failed ({error})")) from error
    if not is_installed(model, models_dir):
        raise WeightsError(missing_model_message(model, models_dir, "the download did not bring every file"))
    return folder


def _progress_tqdm(progress: Callable[[int, int], None]):
    """A tqdm class that forwards byte counts to ``progress(done, total)`` (ComfyUI's progress bar)."""
    from tqdm.auto import tqdm

    class ForwardingTqdm(tqdm):
        def update(self, n=1):
            result = super().update(n)
            if self.total:
                progress(int(self.n), int(self.total))
            return result

    return ForwardingTqdm


def load_state_dict(path: Path, expected: str, container_key: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into CPU tensors; ``expected`` names the model for error messages.

    ``container_key``: pickles may hold the tensors under this key (Lightning's ``"state_dict"``);
    other entries of such a container (epoch, optimizer state...) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (expected {expected})")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty: delete it and download it again (expected {expected})")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, expected)
    return _load_pickle(path, expected, container_key)


def _load_safetensors(path: Path, expected: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({error}); it is probably truncated or corrupt: "
            f"delete it and download it again (expected {expected})"
        ) from error


def _load_pickle(path: Path, expected: str, container_key: Optional[str] = None) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        if "Weights only load failed" in str(error):
            # Safe loading met a Python object that is not a tensor: loading it could run code. Torch's
            # own message advises retrying without the check; that advice must not reach users, so it is
            # dropped (``from None``) and only the offending object's name is kept.
            raise WeightsError(
                f"{path} is refused because it is unsafe: it holds Python objects{_unsafe_global(error)} "
                f"that could run code when loaded, and this pack loads only plain tensors. Use the official "
                f"safetensors or .bin file of {expected} (delete this one; it is downloaded again), or "
                f"convert the checkpoint to safetensors where it was made"
            ) from None
        raise WeightsError(
            f"{path} could not be read as a PyTorch checkpoint ({type(error).__name__}: "
            f"{_first_sentence(error)}); it is probably truncated, corrupt or not a weights file: delete it "
            f"and download it again (expected {expected})"
        ) from None
    if container_key is not None and isinstance(loaded, Mapping) and isinstance(loaded.get(container_key), Mapping):
        loaded = loaded[container_key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} does not hold a flat dict of tensors (expected {expected})")
    return dict(loaded)


def _unsafe_global(error: Exception) -> str:
    """`` (such as GLOBAL module.Name)`` from torch's weights-only refusal, or nothing."""
    import re

    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f" (such as {match.group(1)})" if match else ""


def _first_sentence(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text.split(". ")[0][:200]


def check_state_dict(
    expected_shapes: Mapping[str, torch.Size],
    state_dict: Mapping[str, torch.Tensor],
    path: Path,
    expected: str,
) -> None:
    """Raise a :class:`WeightsError` naming missing, unexpected or mis-shaped keys."""
    missing = sorted(set(expected_shapes) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected_shapes))
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected_shapes[k])}"
        for k in sorted(set(expected_shapes) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(expected_shapes[k])
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched)):
            if items:
                parts.append(f"{len(items)} {label} ({_first(items)})")
        raise WeightsError(f"{path} is not {expected}: " + "; ".join(parts))


def _first(items: Iterable[str], limit: int = 4) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def find_weights_file(folder: Path, stems: tuple[str, ...], expected: str) -> Path:
    """The first of ``stem.safetensors`` then ``stem.bin`` for each stem; an error naming all when none exists."""
    candidates = [Path(folder) / f"{stem}{suffix}" for stem in stems for suffix in (".safetensors", ".bin")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    names = ", ".join(c.name for c in candidates)
    raise WeightsError(f"none of {names} is in {folder} (expected {expected})")


# Weights of evaluation metrics (python -m partgen_models.evaluation.completion_eval); not used by nodes.
METRIC_MODELS: dict[str, OfficialModel] = {
    m.folder: m
    for m in (
        OfficialModel(
            "clip-vit-base-patch32", "openai/clip-vit-base-patch32",
            ("config.json", "preprocessor_config.json", "model.safetensors"),
            ("config.json", "preprocessor_config.json", "model.safetensors"), "MIT",
            "OpenAI CLIP ViT-B/32 for the CLIP-similarity metric (about 600 MB)",
        ),
    )
}


# Planner VLMs for MMPart (transformers' layout, as released), each in vlm/<repository name>/.
# ``required`` names the weights index (sharded releases) or the single weights file; the loader
# then checks every shard the index lists.
_VLM_FILES = ("*.json", "*.safetensors", "*.jinja", "merges.txt", "vocab.json")
VLM_MODELS: dict[str, OfficialModel] = {
    name: OfficialModel(
        f"vlm/{name}", f"Qwen/{name}", _VLM_FILES, ("config.json", "tokenizer_config.json", weights),
        "Apache-2.0", f"{name} ({description})",
    )
    for name, weights, description in (
        ("Qwen3-VL-2B-Instruct", "model.safetensors", "2.1B parameters, about 4.3 GB; about 5 GB of VRAM in bf16"),
        ("Qwen3-VL-4B-Instruct", "model.safetensors.index.json",
         "4.4B parameters, about 8.9 GB; about 10 GB of VRAM in bf16"),
        ("Qwen3-VL-8B-Instruct", "model.safetensors.index.json",
         "8.8B parameters, about 17.5 GB; about 19 GB of VRAM in bf16"),
    )
}
