"""Headless pipeline: ``python -m partgen_models IMAGE --out DIR``, no ComfyUI needed.

Without ``--part`` it runs the multi-view stage (image → Zero123++ grid + 6 views + cameras). With
``--part NAME=IMAGE`` (once per part: the edit model's image of that part alone, in the input's
framing) it runs the MMPart path after the edit step: isolated images → views per part (one batch) →
reconstruction (one batch) → placement as in the input image → a GLB scene with one node per named
part, its manifest and preview.png. The edit step itself (an image-edit model or endpoint) is not
part of the command: run it in ComfyUI or any editor and pass its images. Official weights are downloaded into ``--models-dir`` on first
use; ``--tiny`` writes and uses tiny random weights instead, for an offline smoke run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("partgen_models")


# Option fields → the flags that set them, so that errors name what the user typed.
_FLAGS = {"num_inference_steps": "--steps", "guidance_scale": "--guidance", "seed": "--seed", "view_size": "--view-size"}


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one line on stderr and exit status 2, never a usage block or a traceback."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    from .multiview.catalog import DEFAULT_MULTIVIEW
    from .multiview.options import MAX_STEPS, MAX_VIEW_SIZE, MIN_VIEW_SIZE, MultiViewOptions

    defaults = MultiViewOptions()
    parser = _OneLineParser(prog="python -m partgen_models", description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="object image (PNG with alpha, or on a plain background)")
    parser.add_argument("--out", type=Path, required=True, help="folder for grid.png, view_XX.png, views.json")
    parser.add_argument("--mask", type=Path, help="optional mask image (white = object unless --mask-marks says otherwise)")
    parser.add_argument("--mask-marks", default="foreground", choices=("auto", "background", "foreground"))
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("PARTGEN_MODELS_DIR", "models/partgen")),
                        help="where weights are found or downloaded (default: $PARTGEN_MODELS_DIR or models/partgen)")
    parser.add_argument("--model", default=DEFAULT_MULTIVIEW, help=f"multi-view model (default {DEFAULT_MULTIVIEW})")
    parser.add_argument("--steps", type=int, default=defaults.num_inference_steps,
                        help=f"denoising steps, 1..{MAX_STEPS} (default {defaults.num_inference_steps}); time grows linearly")
    parser.add_argument("--guidance", type=float, default=defaults.guidance_scale,
                        help=f"classifier-free guidance (default {defaults.guidance_scale})")
    parser.add_argument("--seed", type=int, default=0, help="0..2**64-1 (default 0)")
    parser.add_argument("--view-size", type=int, default=defaults.view_size,
                        help=f"pixels per view, a multiple of 8 within {MIN_VIEW_SIZE}..{MAX_VIEW_SIZE} (default "
                             f"{defaults.view_size}); memory grows with its square")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp16", "bf16", "fp32"))
    parser.add_argument("--tiny", action="store_true", help="use tiny random weights (offline smoke run; output is noise)")
    mmpart = parser.add_argument_group("MMPart (parts from isolated images)")
    mmpart.add_argument("--part", action="append", default=[], metavar="NAME=IMAGE",
                        help="a named part and its isolated image (same framing as IMAGE); repeat per part, at most 16")
    mmpart.add_argument("--part-mask", action="append", default=[], metavar="IMAGE",
                        help="optional mask per --part, in the same order (white = part)")
    mmpart.add_argument("--no-reference", action="store_true",
                        help="do not reconstruct the whole input image as the depth reference for placement")
    mmpart.add_argument("--depth-map", type=Path, help="optional relative depth image of IMAGE (near is bright)")
    mmpart.add_argument("--reconstruction-model", default="instant-mesh-large", help="InstantMesh checkpoint")
    mmpart.add_argument("--resolution", type=int, default=0,
                        help="extraction grid, 0 (the model's default) or 16..512; memory 12 bytes per grid point "
                             "(512: 1.6 GB), checked against --memory-budget-mb before any model loads")
    mmpart.add_argument("--memory-budget-mb", type=int, default=1024,
                        help="bound on reconstruction's temporary memory (default 1024; resolution 512 needs ~2000)")
    mmpart.add_argument("--render-size", type=int, default=256, help="placement render size in pixels (32..1024)")
    return parser


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _image_array(image) -> np.ndarray:
    """A PIL image → float32 ``[H,W,4]`` RGBA in 0..1, keeping 16-bit and float greyscale intact.

    PIL's ``convert("RGBA")`` clips 16-bit greyscale (mode ``I;16``, or ``I`` in older Pillow) to 8 bits,
    which turns almost every pixel white; those are scaled from 0..65535 here instead.
    """
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        grey = np.asarray(image, dtype=np.float32)
        grey = grey / 65535.0 if image.mode in _SIXTEEN_BIT_MODES else grey
        grey = np.clip(grey, 0.0, 1.0)
        return np.concatenate([np.repeat(grey[..., None], 3, axis=-1), np.ones_like(grey)[..., None]], axis=-1)
    return np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0


def _load_image(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        array = _image_array(image)
    rgba = torch.from_numpy(array)[None]  # (1, H, W, 4)
    return rgba if bool((rgba[..., 3] < 1).any()) else rgba[..., :3]


def _load_mask(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
            return torch.from_numpy(np.ascontiguousarray(_image_array(image)[..., 0]))[None]
        return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)[None]


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed or interrupted write leaves no temporary


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .multiview.preprocess import InputImageError
    from .weights import WeightsError

    from .assembly.export import ExportError
    from .assembly.isolation import IsolationError
    from .checks import OptionError
    from .assembly.placement import PlacementError
    from .reconstruction.reconstruct import ReconstructionError

    try:
        if args.part:
            run_mmpart_command(args)
        else:
            inputs = check_arguments(args)  # everything a user typed, before any weights are read
            run(args, *inputs)
    except (WeightsError, InputImageError, IsolationError, PlacementError, ReconstructionError, ExportError,
            OptionError, OSError) as error:
        logger.error("error: %s", error)
        raise SystemExit(2) from None
    except ArgumentError as error:
        parser.error(str(error))


class ArgumentError(ValueError):
    """A flag's value is unusable; the message starts with the flag."""


def check_arguments(args: argparse.Namespace):
    """Options, image and mask from the flags, checked as the run would use them: (options, image, mask).

    Errors name the flag (``--view-size``), not the library's field or a node input.
    """
    from .checks import OptionError
    from .multiview import MultiViewOptions
    from .multiview.preprocess import prepare_condition_images

    try:
        options = MultiViewOptions(
            num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed, view_size=args.view_size
        )
    except OptionError as error:
        raise ArgumentError(f"{_FLAGS.get(error.name, error.name)} {error.problem}") from None
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise ArgumentError(f"--device {args.device!r} is not a device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ArgumentError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    if args.out.exists() and not args.out.is_dir():
        raise ArgumentError(f"--out {args.out} is a file; give a folder")
    for flag, path in (("image", args.image), ("--mask", args.mask)):
        if path is not None and not path.is_file():
            raise ArgumentError(f"{flag} {path} does not exist or is not a file")
    image = _load_image(args.image)
    mask = _load_mask(args.mask) if args.mask else None
    wording = cli_wording(args.image, args.mask)
    # The background colour does not change what is refused; the run prepares again on the model's.
    prepare_condition_images(image, mask, background=1.0, size=64, mask_marks=args.mask_marks, wording=wording)
    return options, image, mask, wording


def cli_wording(image: Path, mask: Path | None):
    from .multiview.preprocess import InputWording

    return InputWording(
        image=f"image {image}",
        give_mask=(
            "pass --mask FILE with a mask of the object (white = object; e.g. from a background-removal tool "
            "such as rembg), or use a PNG with transparency"
        ),
        mask_marks="set --mask-marks background if white marks the background",
        mask=f"--mask {mask}",
        empty_mask=f"--mask {mask} is empty (all black: it marks nothing)",
        matching_mask="pass the mask made for this image (same width and height)",
    )


def run(args: argparse.Namespace, options, image: torch.Tensor, mask, wording) -> None:
    from .multiview import generate_views, load_zero123plus
    from .multiview.catalog import resolve_multiview_model
    from .runtime import Runtime, default_runtime

    runtime = default_runtime(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(args.precision, runtime.dtype)
    steps_done = []

    def progress(step: int, total: int, preview) -> None:
        steps_done.append(step)
        logger.info("step %d/%d", step, total)

    runtime = Runtime(device=runtime.device, dtype=dtype, progress=progress)
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = args.models_dir
        if args.tiny:
            from .testing import write_tiny_models

            models_dir = Path(scratch) / "partgen"
            write_tiny_models(models_dir)
        files = resolve_multiview_model(args.model, [models_dir])
        model = load_zero123plus(files.folder, files.unet_file, dtype=dtype, flavour=files.flavour)
        views = generate_views(model, image, mask, options, runtime, args.mask_marks, wording)[0]

    args.out.mkdir(parents=True, exist_ok=True)
    _save_png(views.grid(), args.out / "grid.png")
    _save_png(views.input_image, args.out / "input.png")
    for index, view in enumerate(views.images):
        _save_png(view, args.out / f"view_{index:02d}.png")
    cameras = {
        "layout": views.layout,
        "fov_deg": views.fov_deg,
        "background": views.background,
        "camera_to_world": views.c2w.tolist(),
        "model": args.model if not args.tiny else f"{args.model} (tiny random weights)",
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
    }
    tmp = args.out / ".views.json.tmp"
    try:
        tmp.write_text(json.dumps(cameras, indent=2))
        os.replace(tmp, args.out / "views.json")
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s (grid.png, input.png, view_00..%02d.png, views.json)", args.out, views.num_views - 1)


def _named_parts(args: argparse.Namespace) -> tuple[list[str], list[Path]]:
    from .assembly.isolation import IsolationError

    names, paths = [], []
    for item in args.part:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise IsolationError(f"--part {item!r}: write it as NAME=IMAGE, e.g. --part hat=hat.png")
        names.append(name.strip())
        paths.append(Path(path))
    if args.part_mask and len(args.part_mask) != len(names):
        raise IsolationError(f"{len(args.part_mask)} --part-mask for {len(names)} --part; give one per part, or none")
    return names, paths


def _as_flags(message: str) -> str:
    """A reconstruction message in the command's words: its option names become the flags that set them."""
    return message.replace("memory_budget_mb", "--memory-budget-mb").replace("resolution", "--resolution")


def _check_reconstruction_memory(args: argparse.Namespace, options) -> None:
    """The extraction grid against the budget, before any weights are read (reconstruct_parts checks
    it again with the loaded model)."""
    from .reconstruction.options import DEFAULT_RESOLUTION
    from .reconstruction.reconstruct import check_grid_budget

    variant = "nerf" if "nerf" in args.reconstruction_model.lower() else "mesh"
    check_grid_budget(options.resolution or DEFAULT_RESOLUTION[variant], variant, options)


def run_mmpart_command(args: argparse.Namespace) -> None:
    from .assembly.export import ExportOptions, export_parts
    from .assembly.mmpart import MMPartOptions, run_mmpart
    from .assembly.placement import PlacementOptions
    from .multiview import MultiViewOptions, load_zero123plus
    from .multiview.catalog import resolve_multiview_model
    from .reconstruction.catalog import resolve_reconstruction_model
    from .reconstruction.loader import load_instantmesh
    from .reconstruction.options import ReconstructionOptions
    from .runtime import Runtime, default_runtime

    names, paths = _named_parts(args)
    try:
        reconstruction_options = ReconstructionOptions(resolution=args.resolution or None,
                                                       memory_budget_mb=args.memory_budget_mb)
        _check_reconstruction_memory(args, reconstruction_options)
    except ValueError as error:
        raise ArgumentError(_as_flags(str(error))) from None
    options = MMPartOptions(
        multiview=MultiViewOptions(num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                                   view_size=args.view_size),
        reconstruction=reconstruction_options,
        placement=PlacementOptions(render_size=args.render_size),
        use_reference=not args.no_reference,
    )
    image = _load_image(args.image)
    part_images = [_load_image(path) for path in paths]
    part_masks = [_load_mask(path) for path in args.part_mask] or None
    depth_map = _load_image(args.depth_map)[..., :3] if args.depth_map else None
    base = default_runtime(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}.get(args.precision, base.dtype)
    runtime = Runtime(device=base.device, dtype=dtype, progress=lambda step, total, preview: logger.info("step %d/%d", step, total))
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = args.models_dir
        if args.tiny:
            from .testing import write_tiny_models

            models_dir = Path(scratch) / "partgen"
            write_tiny_models(models_dir)
        files = resolve_multiview_model(args.model, [models_dir])
        multiview = load_zero123plus(files.folder, files.unet_file, dtype=dtype, flavour=files.flavour)
        reconstruction = load_instantmesh(resolve_reconstruction_model(args.reconstruction_model, [models_dir]), dtype=dtype)
        result = run_mmpart(multiview, reconstruction, image, names, part_images, part_masks, options, runtime, depth_map)
    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {"method": "MMPart", "parts": names, "seed": args.seed, "steps": args.steps,
                "depth": result.placement.depth_source, "tiny_random_weights": bool(args.tiny)}
    exported = export_parts(result.placement.parts, args.out, ExportOptions(filename_prefix="mmpart/parts", metadata=metadata))
    _save_png(result.placement.preview, args.out / "preview.png")
    for report in result.placement.report:
        logger.info("%s: silhouette IoU %.2f -> %.2f, depth x%.3f", report.name, report.box_iou,
                    report.silhouette_iou, report.depth_factor)
    logger.info("wrote %s, %s and preview.png", args.out / exported.scene, args.out / exported.manifest)
