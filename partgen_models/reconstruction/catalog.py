"""Which reconstruction checkpoints exist, where they are, and fetching the official ones."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

from ..weights import INSTANTMESH_CHECKPOINTS, WeightsError, ensure_model, is_installed

DEFAULT_RECONSTRUCTION = "instant-mesh-large"
FOLDER = "instantmesh"


def list_reconstruction_models(search_dirs: Sequence[Path]) -> list[str]:
    """Official checkpoints (downloadable when missing) first, then other ``.ckpt`` files found."""
    names = list(INSTANTMESH_CHECKPOINTS)
    official_files = {m.files[0] for m in INSTANTMESH_CHECKPOINTS.values()}
    for root in search_dirs:
        folder = Path(root) / FOLDER
        if folder.is_dir():
            names += sorted(p.name for p in folder.glob("*.ckpt") if p.name not in official_files and p.name not in names)
    return names


def resolve_reconstruction_model(
    name: str, search_dirs: Sequence[Path], progress: Optional[Callable[[int, int], None]] = None
) -> Path:
    """The checkpoint file of ``name``, downloading an official one into ``search_dirs[0]`` if needed."""
    if not search_dirs:
        raise WeightsError("no models folder is configured for PartGen (models/partgen)")
    if name in INSTANTMESH_CHECKPOINTS:
        model = INSTANTMESH_CHECKPOINTS[name]
        for root in search_dirs:
            if is_installed(model, Path(root)):
                return Path(root) / model.folder / model.files[0]
        return ensure_model(model, Path(search_dirs[0]), progress) / model.files[0]
    for root in search_dirs:
        candidate = Path(root) / FOLDER / name
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"reconstruction model {name!r} is neither official ({', '.join(INSTANTMESH_CHECKPOINTS)}) nor a .ckpt in "
        + ", ".join(str(Path(d) / FOLDER) for d in search_dirs)
    )
