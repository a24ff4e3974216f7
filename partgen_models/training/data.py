"""Training samples from a built training set, in a deterministic order sharded across ranks.

Order: the global sample at position ``p = step·G + rank·B + i`` (G = B x processes) is object
``perm_e[p mod n]`` of epoch ``e = p div n``, with a fresh permutation per epoch seeded by (seed, e).
So every rank reads a disjoint share of each step's global batch, a run's data depends only on the
seed and the step (resuming at step s draws exactly what an unbroken run draws), and no sampler
state needs saving. Each sample's own randomness (colour permutation, the part to complete) comes
from a generator seeded by (seed, step, rank·B + i), its position in the global batch, so N ranks
with batch B draw exactly the samples one process with batch N·B draws.

Samples (float 0..1 grids ``[3, rows·S, cols·S]`` on white, as the sampler lays views out):
- segmentation (PartGen §3.2): ``condition`` the object grid, ``target`` its visible-part id grid
  painted with the palette under a random colour permutation (:func:`encode_part_ids`).
- completion (PartGen §3.3): one random part: ``masked`` its visible pixels on white (I⊙M),
  ``condition`` the whole object's grid (context), ``mask`` ``[1, rows·S, cols·S]``, ``target`` the
  part rendered alone (amodal), ``instruction`` a text naming the part (the editing variant).
Both carry ``input_image`` ``[I,I,3]`` uint8, the conditioning view.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..cameras import LAYOUTS
from ..segmentation.palette import encode_part_ids
from ..views import views_to_grid
from .shards import DatasetError, TrainingObject, load_object, read_manifest

WHITE = torch.tensor([1.0, 1.0, 1.0])


def sample_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def part_instruction(name: str) -> str:
    """The editing variant's text: the part's name as words ("leg_front_left" → "a leg front left")."""
    words = " ".join(name.replace("_", " ").replace("-", " ").split())
    return f"a {words}" if words else "a part"


class TrainingSet:
    """The objects of a built training set (one shard file each, read on demand)."""

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.files = [self.folder / shard["file"] for shard in self.manifest["shards"]]
        if not self.files:
            raise DatasetError(f"{self.folder} holds no training objects (every asset was skipped: "
                               f"{self.manifest.get('skipped')}); see {self.folder / 'manifest.json'}")
        options = self.manifest.get("options", {})
        self.layout = LAYOUTS[options.get("layout", "zero123pp_v12")]
        self.view_size = int(options.get("view_size", self.layout.view_size))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> TrainingObject:
        return load_object(self.files[index])


def _grid(views: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[V,S,S,C]`` → ``[C, rows·S, cols·S]``."""
    return views_to_grid(views, rows, cols).permute(2, 0, 1).contiguous()


def _float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def segmentation_sample(obj: TrainingObject, generator: torch.Generator, rows: int, cols: int) -> dict:
    colours = encode_part_ids(obj.part_ids.long(), generator)  # (V, S, S, 3), white background
    return {"input_image": obj.input_image, "condition": _grid(_float(obj.views), rows, cols),
            "target": _grid(colours, rows, cols)}


def completion_sample(obj: TrainingObject, generator: torch.Generator, rows: int, cols: int) -> dict:
    part = int(torch.randint(obj.num_parts, (1,), generator=generator))
    views = _float(obj.views)
    mask = obj.visible_masks[part].float()[..., None]  # (V, S, S, 1)
    masked = views * mask + WHITE * (1 - mask)  # as completion.complete.masked_views
    return {"input_image": obj.input_image, "condition": _grid(views, rows, cols),
            "masked": _grid(masked, rows, cols), "mask": _grid(mask, rows, cols),
            "target": _grid(_float(obj.part_images[part]), rows, cols),
            "instruction": part_instruction(obj.part_names[part])}


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` = this rank's batch of that step (a dict of stacked tensors, lists of strings)."""

    def __init__(self, training_set: TrainingSet, task: str, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if task not in ("segmentation", "completion"):
            raise ValueError(f"task must be segmentation or completion, got {task!r}")
        self.training_set, self.task, self.batch_size = training_set, task, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def __len__(self) -> int:
        return 2**62  # indexed by step; the loop decides how many

    @functools.lru_cache(maxsize=4)
    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch))
        return torch.randperm(len(self.training_set), generator=generator)

    def indices(self, step: int) -> list[int]:
        n = len(self.training_set)
        start = step * self.batch_size * self.world_size + self.rank * self.batch_size
        return [int(self._permutation(p // n)[p % n]) for p in range(start, start + self.batch_size)]

    def __getitem__(self, step: int) -> dict:
        layout = self.training_set.layout
        make = segmentation_sample if self.task == "segmentation" else completion_sample
        samples = []
        for i, index in enumerate(self.indices(step)):
            # keyed by the sample's position in the global batch: N ranks draw what one process would
            generator = torch.Generator().manual_seed(sample_seed(self.seed, step, self.rank * self.batch_size + i))
            samples.append(make(self.training_set[index], generator, layout.rows, layout.cols))
        batch = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
        return batch
