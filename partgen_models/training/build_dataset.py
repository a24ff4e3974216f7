"""``python -m partgen_models.training.build_dataset SRC OUT``: part-structured assets → training shards.

    python -m partgen_models.training.build_dataset assets/ data/partgen-train --workers 8
    python -m partgen_models.training.build_dataset --procedural 200 data/procedural-train --view-size 64

SRC is a folder searched recursively for ``*.glb`` / ``*.gltf`` files with one node (mesh) per part
(PartVerse, PartNeXt, Objaverse assets whose nodes are parts, the procedural set written by
``python -m partgen_models.evaluation --write-set``). For each asset, as PartGen prepares its data
(§3.4, "Training data"):

1. Load the parts (:func:`~partgen_models.assembly.load.load_parts`); render the object at the layout's
   cameras (Zero123++ v1.2: 6 views, Zero123++ framing, white) with the visible-part id of every pixel,
   and its input view (azimuth 0) prepared as PartGen Multi-View prepares an upload.
2. Filter: parts whose visible area is below ``min_part_share`` of the object's visible pixels are
   removed from the object (and it is rendered again without them); objects left with fewer than 2
   parts, or with more than ``max_parts``, are skipped (PartGen drops parts under 5% of the volume and
   objects with one part or more than 10).
3. Render every kept part alone (amodal: what it looks like with nothing in front), framed as the object.
4. Write ``shards/{key}.safetensors`` (:mod:`.shards`) and ``records/{key}.json`` atomically.

Deterministic: nothing is random, so the same asset and options give the same bytes. Resumable: an
asset whose record exists is not rendered again (``--rebuild`` to redo). Parallel over processes
(``--workers``). A bad or unreadable asset (no parts, broken file, NaN vertices, ...) is logged and
recorded as skipped with its reason, never fatal. ``manifest.json`` sums up the set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..cameras import LAYOUTS
from ..parts import Part
from .shards import MANIFEST, SET_FORMAT, VERSION, TrainingObject, save_object, write_atomic_json

logger = logging.getLogger("partgen_models.training.build_dataset")

ASSET_SUFFIXES = (".glb", ".gltf")
PALETTE_SIZE = 16  # the segmenter's colour code has 16 reference colours: at most 16 parts


class BuildError(ValueError):
    """The build cannot start as asked; the message says which option or folder is wrong."""


@dataclass(frozen=True)
class DatasetOptions:
    """How each asset becomes a training object.

    layout: view layout (``zero123pp_v12``: 6 views at Zero123++ v1.2's cameras, what the networks use).
    view_size: pixels per view (Zero123++: 320). Disk per object ≈ (P + 1)·6·S²·4.6 bytes (about 25 MB
        at 320 px with 8 parts, uncompressed).
    input_size: pixels of the stored conditioning image (Zero123++'s processors resize it to 512 anyway).
    input_elevation_deg: elevation of the input view, azimuth 0 (the view the layout's azimuths follow).
    max_parts: objects with more parts are skipped (PartGen: 10; at most 16, the palette's size).
    min_part_share: parts covering less than this share of the object's visible pixels (all views) are
        removed before rendering (PartGen drops parts under 5% of the object's volume).
    supersample: odd antialiasing factor of the RGB renders (ids stay exact); render time grows with its
        square.
    """

    layout: str = "zero123pp_v12"
    view_size: int = 320
    input_size: int = 512
    input_elevation_deg: float = 0.0
    max_parts: int = 10
    min_part_share: float = 0.01
    supersample: int = 3

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise BuildError(f"layout {self.layout!r} is unknown; choose one of {sorted(LAYOUTS)}")
        if not 16 <= self.view_size <= 1024:
            raise BuildError(f"view_size must be within 16..1024 pixels, got {self.view_size}")
        if not 16 <= self.input_size <= 1024:
            raise BuildError(f"input_size must be within 16..1024 pixels, got {self.input_size}")
        if not (math.isfinite(self.input_elevation_deg) and -89.0 <= self.input_elevation_deg <= 89.0):
            raise BuildError(f"input_elevation_deg must be within -89..89, got {self.input_elevation_deg}")
        if not 2 <= self.max_parts <= PALETTE_SIZE:
            raise BuildError(f"max_parts must be within 2..{PALETTE_SIZE} (the palette's colours), got {self.max_parts}")
        if not (math.isfinite(self.min_part_share) and 0.0 <= self.min_part_share < 0.5):
            raise BuildError(f"min_part_share must be within 0..0.5, got {self.min_part_share}")
        if self.supersample not in (1, 3, 5):
            raise BuildError(f"supersample must be 1, 3 or 5, got {self.supersample}")


@dataclass(frozen=True)
class AssetRecord:
    """What became of one source asset."""

    key: str
    source: str
    status: str  # "done" or "skipped"
    reason: str = ""
    category: str = ""  # skipped: "unreadable", "no parts", "one part", "too many parts", "render failed"
    parts: int = 0
    dropped_parts: list = field(default_factory=list)


def display_path(path: Path) -> str:
    """A printable, JSON-safe form of a path whose bytes may not be UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def object_key(relative: Path) -> str:
    """A file-safe, unique, stable name: the sanitised stem plus a hash of the path's bytes."""
    digest = hashlib.sha1(os.fsencode(relative)).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", display_path(Path(relative.stem)))[:40].strip("_") or "asset"
    return f"{stem}-{digest}"


def find_assets(source: Path) -> list[Path]:
    if not source.is_dir():
        raise BuildError(f"source folder {display_path(source)} does not exist or is not a folder")
    return sorted((p for p in source.rglob("*") if p.suffix.lower() in ASSET_SUFFIXES and p.is_file()),
                  key=lambda p: os.fsencode(p))


def _render_object(parts: Sequence[Part], options: DatasetOptions, device: Optional[str]):
    from ..multiview.preprocess import prepare_condition_images
    from ..rendering import RenderCameras, RenderOptions, render_parts
    from ..rendering.renderer import WHITE

    layout = LAYOUTS[options.layout]
    cameras = RenderCameras.from_layout(layout, options.view_size)
    render = RenderOptions(supersample=options.supersample)
    rendering = render_parts(parts, cameras, normalization="fit", options=render, device=device)
    input_camera = RenderCameras.orbit([0.0], [options.input_elevation_deg], radius=layout.radius,
                                       fov_deg=layout.fov_deg, size=options.input_size)
    front = render_parts(parts, input_camera, normalization=rendering.normalization, options=render, device=device)
    rgba = torch.cat([front.images, front.alpha[..., None]], dim=-1)  # (1, I, I, 4)
    # As render_asset_views prepares the input view, so training sees what inference will see.
    input_image = prepare_condition_images(rgba, None, background=WHITE[0], foreground_ratio=0.85,
                                           size=options.input_size)[0]
    return rendering, input_image


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def build_object(path: Path, key: str, source: str, options: DatasetOptions,
                 device: Optional[str] = None) -> tuple[Optional[TrainingObject], AssetRecord]:
    """One asset → a training object, or ``None`` and the record saying why it was skipped."""
    from ..assembly.load import LoadOptions, LoadPartsError, load_parts
    from ..rendering import RenderCameras, RenderError, RenderOptions, render_part_alone

    def skipped(category: str, reason: str, **extra) -> tuple[None, AssetRecord]:
        return None, AssetRecord(key, source, "skipped", reason, category, **extra)

    try:
        parts = load_parts(path, LoadOptions(non_manifold="keep"))
    except LoadPartsError as error:
        return skipped("unreadable", str(error))
    parts = [p for p in parts if p.faces.shape[0] > 0]
    if not parts:
        return skipped("no parts", "the asset has no part with triangles")
    if len(parts) == 1:
        return skipped("one part", f"the asset is one part ({parts[0].name!r}); PartGen trains on objects of 2 or more")
    try:
        rendering, input_image = _render_object(parts, options, device)
        shares = rendering.part_masks().flatten(1).sum(1).double() / max(int((rendering.part_ids >= 0).sum()), 1)
        small = [i for i, share in enumerate(shares.tolist()) if share < options.min_part_share]
        dropped = [{"name": parts[i].name, "share": round(float(shares[i]), 5)} for i in small]
        if small:
            parts = [p for i, p in enumerate(parts) if i not in small]
            if len(parts) < 2:
                return skipped("one part", f"{len(parts)} part(s) cover at least {options.min_part_share:.1%} of the "
                               "visible area; PartGen trains on objects of 2 or more", dropped_parts=dropped)
        if len(parts) > options.max_parts:
            return skipped("too many parts", f"{len(parts)} parts after filtering; max_parts is {options.max_parts}",
                           dropped_parts=dropped)
        if small:  # render again without the removed parts, so no pixel shows a part without an id
            rendering, input_image = _render_object(parts, options, device)
        cameras = RenderCameras.from_layout(options.layout, options.view_size)
        render = RenderOptions(supersample=options.supersample)
        alone = [render_part_alone(parts, i, cameras, normalization=rendering.normalization, options=render,
                                   device=device) for i in range(len(parts))]
    except RenderError as error:
        return skipped("render failed", str(error))
    masks = rendering.part_masks()  # (P, V, S, S)
    obj = TrainingObject(
        key=key, source=source, layout=options.layout, part_names=tuple(p.name for p in parts),
        input_image=_uint8(input_image), views=_uint8(rendering.images), view_alpha=_uint8(rendering.alpha),
        part_ids=rendering.part_ids.to(torch.int16), part_images=_uint8(torch.stack([a.images for a in alone])),
        part_alpha=_uint8(torch.stack([a.alpha for a in alone])), visible_masks=masks,
    )
    return obj, AssetRecord(key, source, "done", parts=len(parts), dropped_parts=dropped)


def process_asset(path: Path, root: Path, out: Path, options: DatasetOptions, device: Optional[str] = None) -> AssetRecord:
    """Build, write and record one asset; any failure becomes a skipped record (never raised)."""
    relative = path.relative_to(root)
    key, source = object_key(relative), display_path(relative)
    try:
        obj, record = build_object(path, key, source, options, device)
        if obj is not None:
            save_object(out / "shards" / f"{key}.safetensors", obj)
    # A broken asset must not end a build of thousands: whatever it trips (trimesh's parsers raise
    # anything from struct.error to KeyError) is logged and recorded with its type. MemoryError too.
    except Exception as error:  # noqa: BLE001
        record = AssetRecord(key, source, "skipped", f"{type(error).__name__}: {error}", "render failed")
    if record.status == "skipped":
        logger.warning("skipped %s: %s", source, record.reason)
    write_atomic_json(out / "records" / f"{key}.json", asdict(record))
    return record


def _worker_init() -> None:
    torch.set_num_threads(1)  # one process per core: threads inside each would oversubscribe them


def write_manifest(out: Path, options: DatasetOptions, assets: Sequence[Path], root: Path) -> dict:
    """Sum up the records of ``assets`` (done or skipped) into ``manifest.json``."""
    records = []
    for path in assets:
        record_path = out / "records" / f"{object_key(path.relative_to(root))}.json"
        if record_path.is_file():
            records.append(json.loads(record_path.read_text(encoding="utf-8")))
    done = [r for r in records if r["status"] == "done"]
    skipped = [r for r in records if r["status"] == "skipped"]
    by_category: dict[str, int] = {}
    for record in skipped:
        by_category[record["category"]] = by_category.get(record["category"], 0) + 1
    manifest = {
        "format": SET_FORMAT, "version": VERSION, "options": asdict(options),
        "assets": len(assets), "objects": len(done), "parts": sum(r["parts"] for r in done),
        "dropped_parts": sum(len(r["dropped_parts"]) for r in records),
        "skipped": by_category,
        "skipped_assets": [{"source": r["source"], "category": r["category"], "reason": r["reason"]} for r in skipped],
        "shards": [{"file": f"shards/{r['key']}.safetensors", "key": r["key"], "parts": r["parts"]} for r in done],
    }
    write_atomic_json(out / MANIFEST, manifest)
    return manifest


def build_dataset(source: Path, out: Path, options: DatasetOptions = DatasetOptions(), workers: int = 1,
                  rebuild: bool = False, device: Optional[str] = None, progress: bool = True) -> dict:
    """Build (or resume building) the training set of every asset under ``source`` into ``out``."""
    source, out = Path(source), Path(out)
    if not 1 <= workers <= 256:
        raise BuildError(f"workers must be within 1..256, got {workers}")
    assets = find_assets(source)
    if not assets:
        raise BuildError(f"{display_path(source)} holds no .glb or .gltf files (searched recursively)")
    out.mkdir(parents=True, exist_ok=True)
    todo = [p for p in assets
            if rebuild or not (out / "records" / f"{object_key(p.relative_to(source))}.json").is_file()]
    if len(todo) < len(assets):
        logger.info("resuming: %d of %d assets are already done", len(assets) - len(todo), len(assets))
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="building", unit="asset", disable=not progress)
    try:
        if workers == 1:
            for path in todo:
                process_asset(path, source, out, options, device)
                bar.update(1)
        else:
            import multiprocessing

            # spawn: the same on Linux, macOS and Windows, and no forked copy of a threaded torch
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_init) as pool:
                futures = [pool.submit(process_asset, path, source, out, options, device) for path in todo]
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
    finally:
        bar.close()
    manifest = write_manifest(out, options, assets, source)
    logger.info("%d objects (%d parts) from %d assets; skipped: %s", manifest["objects"], manifest["parts"],
                manifest["assets"], manifest["skipped"] or "none")
    return manifest


def build_parser() -> argparse.ArgumentParser:
    defaults = DatasetOptions()
    parser = argparse.ArgumentParser(prog="python -m partgen_models.training.build_dataset",
                                     description="Part-structured GLB/glTF assets → PartGen training shards.")
    parser.add_argument("source", nargs="?", help="folder of .glb/.gltf assets, one node per part (recursive)")
    parser.add_argument("out", help="output folder (shards/, records/, manifest.json); resumed if it exists")
    parser.add_argument("--procedural", type=int, metavar="N",
                        help="instead of SOURCE: write N procedural objects (the evaluation set's generator, seed "
                             "--seed) into OUT/assets and build from them")
    parser.add_argument("--seed", type=int, default=1, help="procedural set seed (the evaluation set uses 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (1..256)")
    parser.add_argument("--view-size", type=int, default=defaults.view_size)
    parser.add_argument("--input-size", type=int, default=defaults.input_size)
    parser.add_argument("--max-parts", type=int, default=defaults.max_parts)
    parser.add_argument("--min-part-share", type=float, default=defaults.min_part_share)
    parser.add_argument("--supersample", type=int, default=defaults.supersample)
    parser.add_argument("--input-elevation", type=float, default=defaults.input_elevation_deg)
    parser.add_argument("--device", default=None, help="where to rasterise (cpu, cuda); default cpu")
    parser.add_argument("--rebuild", action="store_true", help="render every asset again, even finished ones")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = Path(args.out)
    try:
        options = DatasetOptions(view_size=args.view_size, input_size=args.input_size, max_parts=args.max_parts,
                                 min_part_share=args.min_part_share, supersample=args.supersample,
                                 input_elevation_deg=args.input_elevation)
        if args.procedural is not None:
            from ..evaluation.procedural import write_evaluation_set

            if not 1 <= args.procedural <= 100_000:
                raise BuildError(f"--procedural must be within 1..100000 objects, got {args.procedural}")
            source = out / "assets"
            existing = len(list(source.glob("*.glb"))) if source.is_dir() else 0
            if existing < args.procedural:
                write_evaluation_set(source, count=args.procedural, seed=args.seed, overwrite=True)
        elif args.source is None:
            raise BuildError("give a SOURCE folder of assets, or --procedural N")
        else:
            source = Path(args.source)
        manifest = build_dataset(source, out, options, workers=args.workers, rebuild=args.rebuild, device=args.device)
    except BuildError as error:
        logger.error("%s", error)
        return 2
    print(json.dumps({k: manifest[k] for k in ("assets", "objects", "parts", "dropped_parts", "skipped")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
