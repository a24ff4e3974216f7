"""The training set's on-disk format: one safetensors file per object, a JSON record per source asset,
and a manifest.

    OUT/
      manifest.json                 counts, options, skipped assets and why, the shard list
      shards/{key}.safetensors      one object (tensors below; metadata: key, source, part names)
      records/{key}.json            what happened to one source asset (done / skipped + reason)

Tensors of one object (V views of S px, P kept parts, uint8 images on white):
``input_image [I,I,3]`` the conditioning view, ``views [V,S,S,3]``, ``view_alpha [V,S,S]``,
``part_ids [V,S,S]`` int16 (index into the part names, -1 background), ``part_images [P,V,S,S,3]``
and ``part_alpha [P,V,S,S]`` each part rendered alone (amodal), ``visible_masks [P,V,S,S]`` bool.

Safetensors is an open, pickle-free format that any reader can stream object by object (each file is
read lazily, by memory map), so a data loader over many ranks only opens the objects it draws.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

OBJECT_FORMAT = "partgen-training-object"
SET_FORMAT = "partgen-training-set"
VERSION = 1
MANIFEST = "manifest.json"
_TENSORS = ("input_image", "views", "view_alpha", "part_ids", "part_images", "part_alpha", "visible_masks")


class DatasetError(ValueError):
    """A training set cannot be read as asked; the message says which file and why."""


@dataclass(frozen=True)
class TrainingObject:
    """One object of the training set (uint8 images, see the module docstring)."""

    key: str
    source: str
    layout: str
    part_names: tuple[str, ...]
    input_image: torch.Tensor
    views: torch.Tensor
    view_alpha: torch.Tensor
    part_ids: torch.Tensor
    part_images: torch.Tensor
    part_alpha: torch.Tensor
    visible_masks: torch.Tensor

    @property
    def num_parts(self) -> int:
        return len(self.part_names)


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".partgen-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_atomic_json(path: Path, data: dict) -> None:
    write_atomic_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


def save_object(path: Path, obj: TrainingObject) -> None:
    from safetensors.torch import save

    tensors = {name: getattr(obj, name).contiguous() for name in _TENSORS}
    metadata = {"format": OBJECT_FORMAT, "version": str(VERSION), "key": obj.key, "source": obj.source,
                "layout": obj.layout, "part_names": json.dumps(list(obj.part_names))}
    write_atomic_bytes(path, save(tensors, metadata=metadata))


def load_object(path: Union[str, Path]) -> TrainingObject:
    """Read one shard; a file that is not one of ours raises :class:`DatasetError` naming it."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != OBJECT_FORMAT or metadata.get("version") != str(VERSION):
                raise DatasetError(f"{path} is not a {OBJECT_FORMAT} v{VERSION} shard (metadata {metadata}); "
                                   "rebuild it with python -m partgen_models.training.build_dataset")
            missing = [name for name in _TENSORS if name not in handle.keys()]
            if missing:
                raise DatasetError(f"{path} lacks tensors {missing}; rebuild the training set")
            tensors = {name: handle.get_tensor(name) for name in _TENSORS}
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError)
        raise DatasetError(f"{path} cannot be read as a safetensors shard: {error}") from error
    names = tuple(json.loads(metadata.get("part_names", "[]")))
    if tensors["part_images"].shape[0] != len(names):
        raise DatasetError(f"{path}: {len(names)} part names for {tensors['part_images'].shape[0]} part images")
    return TrainingObject(key=metadata.get("key", path.stem), source=metadata.get("source", ""),
                          layout=metadata.get("layout", "zero123pp_v12"), part_names=names, **tensors)


def read_manifest(folder: Union[str, Path]) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DatasetError(f"{path} is missing: {folder} is not a training set; build one with "
                           f"python -m partgen_models.training.build_dataset SRC {folder}") from error
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is not valid JSON ({error})") from error
    if manifest.get("format") != SET_FORMAT or manifest.get("version") != VERSION:
        raise DatasetError(f"{path} describes {manifest.get('format')!r} v{manifest.get('version')}; "
                           f"expected {SET_FORMAT!r} v{VERSION}")
    return manifest
