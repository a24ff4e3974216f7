"""SAM 3 as a multi-view part segmenter prompted by part names (transformers ``Sam3Model``).

The user names the parts ("crown, wheel"); SAM 3 detects every instance of a short noun phrase in an
image ("promptable concept segmentation"). Each name becomes one labelled multi-view proposal: in
every view, and in the input image, the union of the instances SAM 3 finds for that name above
``threshold`` (four wheels are one "wheel" part). The name itself associates the masks across the
views, so each frame is segmented on its own; SAM 3's video tracker (``Sam3VideoModel``) would only
add instance identities, which the union discards. Proposals keep the user's order; a proposal's
score is its mean per-frame best instance score. Names found in no frame are left out with a log line;
when none is found at all the call fails, naming the words tried.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..checks import refuse_non_finite
from ..modules import DeviceFromWeights
from ..runtime import Runtime, default_runtime
from ..views import MultiView
from .sam2_backend import INPUT_FRAME, _model_type, import_transformers_class, input_alpha, load_transformers_checkpoint
from .segment import Segmentation

logger = logging.getLogger(__name__)

SAM3_CHOICES: tuple[str, ...] = ("sam3",)


class PartNamesError(ValueError):
    """The part names are missing or unusable; the message says what to type."""


@dataclass(frozen=True)
class Sam3Options:
    """threshold: instance score (detection × presence, as ``post_process_instance_segmentation``) above
    which an instance counts; SAM 3's video pipeline keeps detections above 0.5. mask_threshold: mask
    probability that binarises an instance."""

    threshold: float = 0.5
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        for name in ("threshold", "mask_threshold"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")


class Sam3Segmenter(DeviceFromWeights, torch.nn.Module):
    """SAM 3's detector (``Sam3Model``) with the processor (image resizing, CLIP tokenizer) of its folder."""

    def __init__(self, detector: torch.nn.Module, processor, name: str) -> None:
        super().__init__()
        self.detector = detector
        self.processor = processor
        self.name = name

    def weights_reference(self) -> torch.Tensor:
        return next(self.detector.parameters())


def load_sam3_segmenter(folder: Path, dtype: torch.dtype = torch.float32) -> Sam3Segmenter:
    """A SAM 3 folder (``facebook/sam3``: the video model's checkpoint, whose detector is loaded, its
    tracker ignored; plus the processor and tokenizer files) → :class:`Sam3Segmenter`."""
    from ..weights import WeightsError

    Sam3Model = import_transformers_class("Sam3Model", "SAM 3")
    Sam3Processor = import_transformers_class("Sam3Processor", "SAM 3")

    expected = "a SAM 3 checkpoint (facebook/sam3)"
    model_type = _model_type(Path(folder))
    if model_type is not None and model_type not in ("sam3_video", "sam3"):
        # checked before loading: transformers would print a report of every mismatched key first
        raise WeightsError(f"{folder} holds a {model_type!r} model, not {expected} (model_type 'sam3_video')")
    detector = load_transformers_checkpoint(Sam3Model, folder, dtype, expected)
    try:
        processor = Sam3Processor.from_pretrained(str(folder))
    except Exception as error:
        raise WeightsError(
            f"{folder} lacks a readable SAM 3 processor/tokenizer ({type(error).__name__}: {error}); download "
            f"processor_config.json and the tokenizer files of facebook/sam3 into it"
        ) from error
    return Sam3Segmenter(detector, processor, Path(folder).name)


# Each name is one text-encoder pass, a mask decode per view and a mask per view kept (about 0.1 MB per
# view at 320 px): 64 names, as many as Select Parts' top_k takes, hold ~50 MB of masks.
MAX_NAMES = 64
MAX_NAME_CHARS = 100  # a short noun phrase; longer text is a description, which SAM 3 does not read well


def parse_part_names(text: str) -> tuple[str, ...]:
    """"crown, wheel" (commas or new lines) → ("crown", "wheel"); duplicates (any case) once."""
    names: list[str] = []
    for name in re.split(r"[,\n;]", text or ""):
        name = " ".join(name.split())
        if len(name) > MAX_NAME_CHARS:
            raise PartNamesError(
                f"the name {name[:40]!r}... in 'names' is {len(name)} characters long; give short noun phrases of at "
                f"most {MAX_NAME_CHARS} characters, separated by commas"
            )
        if name and name.lower() not in (n.lower() for n in names):
            names.append(name)
    if len(names) > MAX_NAMES:
        raise PartNamesError(f"'names' lists {len(names)} parts; SAM 3 takes at most {MAX_NAMES} per run")
    if not names:
        raise PartNamesError(
            "SAM 3 segments the parts you name: type them in 'names', separated by commas (e.g. 'crown, wheel'); "
            "short noun phrases work best"
        )
    return tuple(names)


def _frames(views: MultiView) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(source, image [H,W,3], alpha [H,W]) for the views then the input image."""
    frames = [(v, views.images[v].float(), views.alpha[v].float()) for v in range(views.num_views)]
    if views.input_image is not None:
        image = views.input_image.float()
        frames.append((INPUT_FRAME, image, input_alpha(image)))
    return frames


def _frame_masks(model: Sam3Segmenter, vision, text, attention_mask, size, options: Sam3Options) -> tuple[torch.Tensor, float]:
    """The union of one name's instances in one frame ``[H,W]`` bool, and the best instance score (0 if none)."""
    outputs = model.detector(vision_embeds=vision, text_embeds=text, attention_mask=attention_mask)
    found = model.processor.post_process_instance_segmentation(
        outputs, threshold=options.threshold, mask_threshold=options.mask_threshold, target_sizes=[size]
    )[0]
    if found["scores"].numel() == 0:
        return torch.zeros(size, dtype=torch.bool), 0.0
    return found["masks"].bool().any(dim=0).cpu(), float(found["scores"].max())


def segment_views_sam3(
    model: Sam3Segmenter,
    views: MultiView,
    names: str | Sequence[str],
    options: Sam3Options = Sam3Options(),
    runtime: Optional[Runtime] = None,
) -> Segmentation:
    """One labelled proposal per part name (module docstring): masks ``[K,V,H,W]`` in the names' order,
    ``labels`` the names, ``input_masks`` ``[K,h,w]`` when the views carry their input image."""
    runtime = runtime or default_runtime("cpu", torch.float32)
    # 1. check inputs
    names = parse_part_names(names if isinstance(names, str) else ", ".join(names))
    if not bool((views.alpha > 0.5).any()):
        raise ValueError("the views show no object (their alpha is empty); segmenting needs views from PartGen Multi-View")
    frames = _frames(views)
    runtime.prepare(model)
    device, dtype = runtime.device, model.dtype
    total = len(frames) * (1 + len(names))
    scores = torch.zeros(len(names), len(frames))
    done = 0
    with torch.inference_mode():
        # 2. the names through the text encoder, once
        texts = []
        for name in names:
            tokens = model.processor(text=name, return_tensors="pt")
            attention_mask = tokens["attention_mask"].to(device)
            texts.append((model.detector.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                           attention_mask=attention_mask), attention_mask))
        # 3. each frame through the vision encoder once, then every name against it
        frame_masks: list[list[torch.Tensor]] = [[] for _ in names]
        for f, (_, image, alpha) in enumerate(frames):
            runtime.check_interrupt()
            pixels = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(2, 0, 1)
            inputs = model.processor(images=[pixels], return_tensors="pt")
            vision = model.detector.get_vision_features(pixel_values=inputs["pixel_values"].to(device, dtype))
            done += 1
            runtime.progress(done, total, None)
            for k, (text, attention_mask) in enumerate(texts):
                runtime.check_interrupt()
                mask, score = _frame_masks(model, vision, text, attention_mask, tuple(image.shape[:2]), options)
                frame_masks[k].append(mask & (alpha > 0.5))
                scores[k, f] = score
                done += 1
                runtime.progress(done, total, None)
    # 4. one proposal per name found somewhere in the views
    view_count = views.num_views
    kept = [k for k in range(len(names)) if any(bool(m.any()) for m in frame_masks[k][:view_count])]
    missing = [names[k] for k in range(len(names)) if k not in kept]
    if not kept:
        raise PartNamesError(
            f"SAM 3 found none of {', '.join(repr(n) for n in names)} in the views (instance score threshold "
            f"{options.threshold}); try other words for the parts (short, common noun phrases such as 'wheel', "
            f"'handle') or a lower threshold"
        )
    if missing:
        logger.warning("SAM 3 found no %s in the views; left out", ", ".join(repr(n) for n in missing))
    proposal_masks = torch.stack([torch.stack(frame_masks[k][:view_count]) for k in kept])  # (K, V, H, W)
    input_masks = None
    if views.input_image is not None:
        input_masks = torch.stack([frame_masks[k][view_count] for k in kept])  # (K, h, w)
    return Segmentation(
        samples=torch.zeros(0),
        masks=proposal_masks,
        scores=scores[kept].mean(dim=1),
        labels=tuple(names[k] for k in kept),
        layout=views.layout,
        input_masks=input_masks,
    )
