"""Which multi-view models exist, where their files are, and fetching the official ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..weights import OFFICIAL_MODELS, OfficialModel, WeightsError, ensure_model, folder_entries, is_installed

# Choice name → the official downloads it needs (first: the Zero123++ folder; second: a UNet file).
MULTIVIEW_CHOICES: dict[str, tuple[str, ...]] = {
    "zero123plus-v1.2-instantmesh": ("zero123plus-v1.2", "instantmesh-zero123plus-unet"),
    "zero123plus-v1.2": ("zero123plus-v1.2",),
    "zero123plus-v1.1": ("zero123plus-v1.1",),
}
DEFAULT_MULTIVIEW = "zero123plus-v1.2-instantmesh"


@dataclass(frozen=True)
class MultiViewFiles:
    folder: Path
    unet_file: Optional[Path]
    flavour: str


def _is_zero123plus_folder(folder: Path) -> bool:
    index = folder / "model_index.json"
    try:
        return index.is_file() and "ramping_coefficients" in json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):  # TypeError: JSON that is not an object (a number, null)
        return False


def list_multiview_models(search_dirs: Sequence[Path]) -> list[str]:
    """Official choices (downloadable when missing) first, then local Zero123++ folders."""
    names = list(MULTIVIEW_CHOICES)
    official_folders = {folder for needs in MULTIVIEW_CHOICES.values() for folder in needs}
    for root in search_dirs:
        for folder in folder_entries(root):
            if folder.name not in official_folders and folder.name not in names and _is_zero123plus_folder(folder):
                names.append(folder.name)
    return names


def _find_installed(model: OfficialModel, search_dirs: Sequence[Path]) -> Optional[Path]:
    for root in search_dirs:
        if is_installed(model, Path(root)):
            return Path(root) / model.folder
    return None


def resolve_multiview_model(
    name: str,
    search_dirs: Sequence[Path],
    progress: Optional[Callable[[int, int], None]] = None,
) -> MultiViewFiles:
    """Locate (downloading into ``search_dirs[0]`` if needed) the files of a multi-view choice."""
    if not search_dirs:
        raise WeightsError("no models folder is configured for PartGen (models/partgen)")
    if name in MULTIVIEW_CHOICES:
        folders = []
        for official_name in MULTIVIEW_CHOICES[name]:
            model = OFFICIAL_MODELS[official_name]
            folders.append(_find_installed(model, search_dirs) or ensure_model(model, Path(search_dirs[0]), progress))
        unet_file = folders[1] / "diffusion_pytorch_model.bin" if len(folders) > 1 else None
        return MultiViewFiles(folders[0], unet_file, name)
    for root in search_dirs:
        folder = Path(root) / name
        if _is_zero123plus_folder(folder):
            from .zero123pp import detect_flavour

            return MultiViewFiles(folder, None, detect_flavour(folder, None))
    raise WeightsError(
        f"multi-view model {name!r} is neither an official choice ({', '.join(MULTIVIEW_CHOICES)}) nor a "
        f"Zero123++ folder in {', '.join(str(d) for d in search_dirs)}"
    )
