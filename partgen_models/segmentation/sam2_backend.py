"""SAM 2.1 as a multi-view part segmenter: PartGen's SAM2 baseline, made consistent across the views.

Automatic mode follows PartGen's baseline (§4.1, Table 1): query points spread over the object, three
masks per point (SAM's whole / part / sub-part outputs, ``multimask_output=True``) ranked by SAM2's own
predicted IoU, then non-maximum suppression at IoU 0.5.

Cross-view association. A proposal must cover the same part in every view, and the input image too
(completion uses that mask). The six Zero123++ views sit on a ring around the object, 60° apart, and
the input image is the view at azimuth 0; ordered by azimuth relative to the input they form a short
turntable video: ``210°, 270°, 330°, input (0°), 30°, 90°, 150°`` for the v1.2 layout (neighbours 30°
or 60° apart, alternating elevations). SAM2's video model (``Sam2VideoModel``) was trained to follow
an object through exactly this kind of change: each candidate mask becomes one tracked object, given
as a mask prompt on the frame it was found in and propagated forwards and backwards with SAM2's
memory attention. The association is therefore SAM2's own tracking, not a heuristic on top of
independent per-view masks; starting in the middle of the sequence keeps every view within three
frames of the conditioning frame, where tracking drift is smallest. Alternatives were rejected:
matching independent per-view masks by IoU needs a correspondence between views that we lack
(generated views have no depth), and treating the 3x2 grid as one image made SAM2 worse in PartGen's
own experiment (20.3 vs 35.3 mAP50).

Seeding. Points are laid on a ``points_per_side`` grid over the object's bounding box in the input
image and kept where the object is. Parts the input image does not show (its back) are found by
seeding again in each view, only at object pixels that no tracked proposal covers yet; such seeds are
tracked through all frames, the input image included. The candidates of one seed frame are filtered
(SAM2's object score must say "present", a minimum area), de-duplicated against each other and against
the proposals already tracked (greedy NMS on SAM2's score at ``iou_threshold``), and capped, since
tracking cost grows with the number of objects. Final proposals are ranked by SAM2's predicted IoU of
their seed mask and pass a last NMS at ``iou_threshold`` over all views jointly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F

from ..checks import refuse_non_finite
from ..multiview.preprocess import estimate_alpha_from_background
from ..modules import DeviceFromWeights
from ..runtime import Runtime, default_runtime
from ..views import MultiView
from ..weights import SAM_MODELS, WeightsError, ensure_model, is_installed
from .proposals import pairwise_iou
from .segment import Segmentation

logger = logging.getLogger(__name__)

SAM2_CHOICES: tuple[str, ...] = tuple(name for name in SAM_MODELS if name.startswith("sam2"))
INPUT_FRAME = -1  # the input image's place in a frame sequence; views are 0..V-1
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SAM2's image normalisation (Sam2VideoVideoProcessor)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Hiera backbones of the four released SAM 2.1 sizes (their config.json); everything else is
# Sam2VideoConfig's default. The benchmark builds these with random weights; a test checks the
# parameter counts against the published ones (38.9M, 46.0M, 80.8M, 224.4M).
SAM2_HIERA_BACKBONES: dict[str, dict] = {
    "tiny": {},
    "small": dict(blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13]),
    "base-plus": dict(hidden_size=112, num_attention_heads=2, blocks_per_stage=[2, 3, 16, 3],
                      embed_dim_per_stage=[112, 224, 448, 896], num_attention_heads_per_stage=[2, 4, 8, 16],
                      global_attention_blocks=[12, 16, 20], window_positional_embedding_background_size=[14, 14]),
    "large": dict(hidden_size=144, num_attention_heads=2, blocks_per_stage=[2, 6, 36, 4],
                  embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
                  window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43]),
}


def sam2_config_kwargs(size: str) -> dict:
    """``Sam2VideoConfig`` keyword arguments of a released SAM 2.1 size (see SAM2_HIERA_BACKBONES)."""
    backbone = dict(SAM2_HIERA_BACKBONES[size], model_type="sam2_hiera_det_model")
    dims = backbone.get("embed_dim_per_stage", [96, 192, 384, 768])
    vision = dict(model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=dims[::-1])
    return dict(vision_config=vision)


@dataclass(frozen=True)
class Sam2Options:
    """points_per_side: the query grid over the object's bounding box (PartGen's baseline spreads points
    over the object; SAM2's automatic generator uses 32 over a whole image). Candidates grow with its
    square, but decoding them is cheap next to tracking.
    seed_views: also seed in each view at object pixels no proposal covers (parts hidden in the input).
    max_proposals: objects tracked through the frames; time and tracking memory grow linearly with it.
        The input image may use three quarters of it, the views share the rest.
    iou_threshold: NMS threshold (PartGen: 0.5). min_area: share of the object's pixels (in the seed
    frame) below which a mask is dropped. min_score: SAM2 predicted-IoU floor (0 keeps all; ranking
    puts weak masks last anyway). points_per_batch: prompts decoded at once (memory of the decoder)."""

    points_per_side: int = 16
    seed_views: bool = True
    max_proposals: int = 48
    iou_threshold: float = 0.5
    min_area: float = 0.005
    min_score: float = 0.0
    points_per_batch: int = 32

    def __post_init__(self) -> None:
        refuse_non_finite(self)
        if not 1 <= self.points_per_side <= 64:
            raise ValueError(f"points_per_side must be within 1..64, got {self.points_per_side}")
        if not 1 <= self.max_proposals <= 256:
            raise ValueError(f"max_proposals must be within 1..256, got {self.max_proposals}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be within (0, 1], got {self.iou_threshold}")
        if not 0.0 <= self.min_area < 0.5:
            raise ValueError(f"min_area must be within 0..0.5, got {self.min_area}")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be at least 1, got {self.points_per_batch}")


class Sam2Segmenter(DeviceFromWeights, torch.nn.Module):
    """A SAM 2.1 video model (transformers ``Sam2VideoModel``) and the name of its checkpoint.

    One set of weights serves both uses: point prompts run its SAM head (prompt encoder + mask
    decoder, as ``Sam2Model`` does), tracking runs the whole video model.
    """

    def __init__(self, video: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.video = video
        self.name = name

    def weights_reference(self) -> torch.Tensor:
        return next(self.video.parameters())

    @property
    def image_size(self) -> int:
        return int(self.video.config.image_size)


def resolve_sam_folder(name: str, search_dirs: Sequence[Path], progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """The folder of SAM checkpoint ``name`` (``SAM_MODELS``), downloaded into ``search_dirs[0]`` if missing."""
    if name not in SAM_MODELS:
        raise WeightsError(f"unknown SAM checkpoint {name!r}; choose one of {', '.join(SAM_MODELS)}")
    if not search_dirs:
        raise WeightsError("no models folder is configured for PartGen (models/partgen)")
    model = SAM_MODELS[name]
    for root in search_dirs:
        if is_installed(model, Path(root)):
            return Path(root) / model.folder
    return ensure_model(model, Path(search_dirs[0]), progress)


def load_transformers_checkpoint(model_class, folder: Path, dtype: torch.dtype, expected: str):
    """``model_class.from_pretrained`` made strict: unreadable files, missing or mis-shaped weights raise
    a :class:`WeightsError` naming the folder (transformers would warn and initialise them randomly)."""
    folder = Path(folder)
    missing = [name for name in ("config.json", "model.safetensors") if not (folder / name).is_file()]
    if missing:
        raise WeightsError(f"{folder} lacks {', '.join(missing)} (expected {expected} in transformers' layout)")
    return from_pretrained_strictly(model_class, folder, dtype, expected).eval().requires_grad_(False)


def from_pretrained_strictly(model_class, folder: Path, dtype: torch.dtype, expected: str):
    """``model_class.from_pretrained(folder)`` where missing or mis-shaped weights, and files that cannot be
    read, raise a :class:`WeightsError` naming the folder and ``expected`` instead of a random init."""
    try:
        model, info = model_class.from_pretrained(str(folder), dtype=dtype, output_loading_info=True)
    except Exception as error:  # corrupt JSON/safetensors, wrong model type: one actionable message
        raise WeightsError(f"{folder} could not be loaded as {expected} ({type(error).__name__}: {error})") from error
    problems = []
    for label in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(label, ()))
        if keys:
            problems.append(f"{len(keys)} {label.replace('_', ' ')} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})")
    if problems:
        raise WeightsError(f"{folder} is not {expected}: " + "; ".join(problems))
    return model


def _model_type(folder: Path) -> Optional[str]:
    """``model_type`` of a transformers folder's config.json, None when it cannot be read (the loader
    then reports the problem)."""
    import json

    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def import_transformers_class(name: str, feature: str):
    """``transformers.<name>``, or a :class:`WeightsError` saying which transformers the feature needs."""
    import transformers

    model_class = getattr(transformers, name, None)
    if model_class is None:
        raise WeightsError(
            f"{feature} needs a transformers release that provides {name}; this Python has transformers "
            f"{transformers.__version__}. Upgrade it (pip install -U transformers) or choose another segmenter"
        )
    return model_class


def load_sam2_segmenter(folder: Path, dtype: torch.dtype = torch.float32) -> Sam2Segmenter:
    """A SAM 2.1 folder (``config.json`` + ``model.safetensors`` of the video model) → :class:`Sam2Segmenter`."""
    Sam2VideoModel = import_transformers_class("Sam2VideoModel", "SAM 2.1")

    expected = "a SAM 2.1 video checkpoint (facebook/sam2.1-hiera-*)"
    model_type = _model_type(Path(folder))
    if model_type is not None and model_type != "sam2_video":
        raise WeightsError(
            f"{folder} holds a {model_type!r} model; the multi-view SAM2 backend tracks masks around the views and "
            f"needs SAM 2.1's video checkpoint (model_type 'sam2_video', as in facebook/sam2.1-hiera-*), not the "
            f"image-only *-hf releases"
        )
    video = load_transformers_checkpoint(Sam2VideoModel, folder, dtype, expected)
    return Sam2Segmenter(video, Path(folder).name)


# ----------------------------------------------------------------------------------------------------
# Frames, points, masks


def frame_sequence(views: MultiView) -> list[int]:
    """Frames ordered by azimuth around the object, relative to the input image (``INPUT_FRAME``, at 0°).

    Zero123++ v1.2 gives ``[3, 4, 5, INPUT_FRAME, 0, 1, 2]`` (210°..330°, 0°, 30°..150°); without an
    input image the views alone, in the same order.
    """
    azimuths = views.view_layout.azimuths_deg
    signed = {index: (azimuth + 180.0) % 360.0 - 180.0 for index, azimuth in enumerate(azimuths)}
    if views.input_image is not None:
        signed[INPUT_FRAME] = 0.0
    return sorted(signed, key=lambda index: (signed[index], index))


def input_alpha(image: torch.Tensor) -> torch.Tensor:
    """Coverage ``[H,W]`` of the object in the prepared input image, whose plain background colour is
    read from its border (Zero123++ flavours put the input on white or gray)."""
    border = torch.cat([image[0], image[-1], image[:, 0], image[:, -1]])  # (2H+2W, 3)
    background = tuple(float(c) for c in border.median(dim=0).values)
    return estimate_alpha_from_background(image[None], background)[0]


def query_points(region: torch.Tensor, extent: torch.Tensor, points_per_side: int) -> torch.Tensor:
    """Grid points ``[P,2]`` (x, y in pixels) over the bounding box of ``extent`` ``[H,W]`` bool, kept where
    ``region`` is true: cell centres of a ``points_per_side``² grid, rounded to pixel indices."""
    rows, cols = extent.nonzero(as_tuple=True)
    if rows.numel() == 0:
        return torch.zeros(0, 2)
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    steps = (torch.arange(points_per_side, dtype=torch.float64) + 0.5) / points_per_side
    ys = (top + steps * (bottom - top + 1)).floor().long().clamp(top, bottom)
    xs = (left + steps * (right - left + 1)).floor().long().clamp(left, right)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)  # (n², 2) x, y
    points = torch.unique(points, dim=0)  # small boxes repeat pixels
    keep = region[points[:, 1], points[:, 0]]
    return points[keep].float()


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bool masks ``[N,h,w]`` → ``[N,*size]``: bilinear (area-weighted when shrinking), then > 0.5."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.bool()
    shrink = size[0] < masks.shape[-2] or size[1] < masks.shape[-1]
    resized = F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return resized[:, 0] > 0.5


def greedy_nms(masks: torch.Tensor, scores: torch.Tensor, threshold: float,
               existing: Optional[torch.Tensor] = None, limit: Optional[int] = None) -> list[int]:
    """Indices of ``masks`` ``[N,...]`` kept by greedy NMS in descending ``scores`` (ties: lower index
    first): a mask is dropped when its IoU with a kept mask, or with one of ``existing`` ``[E,...]``,
    exceeds ``threshold``. At most ``limit`` are kept."""
    order = sorted(range(masks.shape[0]), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    reference = [existing.reshape(existing.shape[0], -1)] if existing is not None and existing.shape[0] else []
    flat = masks.reshape(masks.shape[0], -1)
    for index in order:
        if limit is not None and len(kept) >= limit:
            break
        others = torch.cat(reference + [flat[kept]]) if (reference or kept) else None
        if others is not None and others.shape[0] and bool((pairwise_iou(flat[index : index + 1], others) > threshold).any()):
            continue
        kept.append(index)
    return kept


# ----------------------------------------------------------------------------------------------------
# Automatic proposals over a frame sequence (model-independent; the SAM2 engine below plugs in)


class FrameEngine(Protocol):
    """What :func:`automatic_proposals` needs from a promptable, trackable segmenter.

    Frames are numbered 0..F-1 in sequence order. ``mask_size`` is the resolution candidates come at.
    """

    mask_size: tuple[int, int]

    def candidates(self, frame: int, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``[N,*mask_size]`` bool and scores ``[N]`` for point prompts ``[P,2]`` (x, y in the frame's
        pixels): up to three per point."""
        ...

    def track(self, frame: int, seeds: torch.Tensor) -> list[torch.Tensor]:
        """Seed masks ``[N,*mask_size]`` on ``frame`` → one ``[N,H_f,W_f]`` bool per frame."""
        ...


@dataclass(frozen=True)
class TrackedProposals:
    """Proposals over a frame sequence: ``masks[f]`` ``[K,H_f,W_f]`` bool per frame, ``scores`` ``[K]``,
    ``seed_frames`` where each was found."""

    masks: list[torch.Tensor]
    scores: torch.Tensor
    seed_frames: tuple[int, ...]


def _seed_frame_candidates(engine: FrameEngine, frame: int, obj: torch.Tensor, covered: Optional[torch.Tensor],
                           options: Sam2Options) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate masks (at ``engine.mask_size``, restricted to the object) and scores of one seed frame."""
    region = obj if covered is None else obj & ~covered
    points = query_points(region, obj, options.points_per_side)
    if points.shape[0] == 0:
        return torch.zeros(0, *engine.mask_size, dtype=torch.bool), torch.zeros(0)
    masks, scores = [], []
    for start in range(0, points.shape[0], options.points_per_batch):
        batch_masks, batch_scores = engine.candidates(frame, points[start : start + options.points_per_batch])
        masks.append(batch_masks)
        scores.append(batch_scores.float().cpu())
    obj_small = resize_masks(obj[None], engine.mask_size)[0]
    masks = torch.cat(masks) & obj_small
    scores = torch.cat(scores)
    area = masks.flatten(1).sum(1).float()
    keep = (area >= max(1.0, options.min_area * float(obj_small.sum()))) & (scores >= options.min_score)
    return masks[keep], scores[keep]


def automatic_proposals(engine: FrameEngine, alphas: Sequence[torch.Tensor], seed_frames: Sequence[int],
                        options: Sam2Options = Sam2Options(),
                        check_interrupt: Callable[[], None] = lambda: None) -> TrackedProposals:
    """Seed, de-duplicate and track proposals over a frame sequence (module docstring).

    alphas: object coverage ``[H_f,W_f]`` per frame; seed_frames: frames to seed in, the first one with
    its whole object, the others (when ``options.seed_views``) only where nothing tracked covers it.
    """
    frame_masks: list[list[torch.Tensor]] = [[] for _ in alphas]
    scores: list[torch.Tensor] = []
    origins: list[int] = []
    objects = [alpha > 0.5 for alpha in alphas]
    first_budget = options.max_proposals - (options.max_proposals // 4 if options.seed_views and len(seed_frames) > 1 else 0)
    for position, frame in enumerate(seed_frames):
        if position > 0 and not options.seed_views:
            break
        check_interrupt()
        budget = (first_budget if position == 0 else options.max_proposals) - len(origins)
        if budget <= 0:
            break
        tracked = torch.cat(frame_masks[frame]) if frame_masks[frame] else None
        covered = tracked.any(dim=0) if tracked is not None else None
        candidates, candidate_scores = _seed_frame_candidates(engine, frame, objects[frame], covered, options)
        if candidates.shape[0] == 0:
            continue
        existing = resize_masks(tracked, engine.mask_size) if tracked is not None else None
        kept = greedy_nms(candidates, candidate_scores, options.iou_threshold, existing, limit=budget)
        if not kept:
            continue
        for f, masks in enumerate(engine.track(frame, candidates[kept])):
            frame_masks[f].append(masks & objects[f])
        scores.append(candidate_scores[kept])
        origins.extend([frame] * len(kept))
    masks = [torch.cat(m) if m else torch.zeros(0, *o.shape, dtype=torch.bool) for m, o in zip(frame_masks, objects)]
    return TrackedProposals(masks, torch.cat(scores) if scores else torch.zeros(0), tuple(origins))


def rank_tracked(proposals: TrackedProposals, view_frames: Sequence[int], threshold: float) -> list[int]:
    """Proposals to keep, best first: SAM2's score, then NMS over the views jointly; proposals that cover
    no view pixel are dropped (they cannot be reconstructed)."""
    views = torch.stack([proposals.masks[f] for f in view_frames], dim=1)  # (K, V, H, W)
    visible = views.flatten(1).any(dim=1)
    kept = greedy_nms(views, proposals.scores, threshold)
    return [k for k in kept if bool(visible[k])]


# ----------------------------------------------------------------------------------------------------
# SAM2 as a FrameEngine


def preprocess_frame(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[H,W,3]`` in 0..1 → SAM2's input ``[3,size,size]``: bilinear resize, ImageNet normalisation
    (as ``Sam2VideoVideoProcessor``; SAM2 resizes to a square without keeping the aspect ratio)."""
    pixels = image.permute(2, 0, 1)[None].float()
    shrink = size < image.shape[0] or size < image.shape[1]
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)[0]
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (pixels - mean) / std


class Sam2FrameEngine:
    """SAM2 over a fixed frame sequence: frames encoded once, features shared by prompting and tracking."""

    def __init__(self, model: Sam2Segmenter, frames: Sequence[torch.Tensor], runtime: Runtime,
                 progress: Callable[[], None] = lambda: None) -> None:
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        self.video = model.video
        self.runtime = runtime
        self.progress = progress
        self.frame_sizes = [tuple(frame.shape[:2]) for frame in frames]
        self.size = model.image_size
        dtype = model.dtype
        pixels = torch.stack([preprocess_frame(frame, self.size) for frame in frames]).to(runtime.device, dtype)
        self.session = Sam2VideoInferenceSession(
            video=pixels, video_height=self.size, video_width=self.size, inference_device=runtime.device,
            inference_state_device=runtime.device, video_storage_device=runtime.device, dtype=dtype,
            max_vision_features_cache_size=len(frames),
        )
        self.features = []
        for index in range(len(frames)):
            runtime.check_interrupt()
            encoded = self.video.get_image_features(pixels[index : index + 1], return_dict=True)
            features = {"vision_feats": encoded.fpn_hidden_states, "vision_pos_embeds": encoded.fpn_position_encoding}
            self.session.cache.cache_vision_features(index, features)  # the tracker reuses them
            self.features.append(features)
            progress()
        decoder_size = self.video.prompt_encoder.mask_input_size  # low-res masks: 4x the embedding grid
        self.mask_size = (int(decoder_size[0]), int(decoder_size[1]))

    def decode_points(self, frame: int, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SAM's head on one frame, as ``Sam2Model.forward`` runs it: low-res mask logits ``[P,3,h,w]``,
        predicted IoU ``[P,3]`` and object-score logits ``[P]`` for single positive points ``[P,2]``."""
        video = self.video
        height, width = self.frame_sizes[frame]
        # Points in the model's input pixels, as Sam2Processor scales them (the encoder adds the half pixel).
        scale = torch.tensor([self.size / width, self.size / height])
        coords = (points.float() * scale).to(self.runtime.device, video.dtype)[None, :, None, :]  # (1, P, 1, 2)
        labels = torch.ones(coords.shape[:3], dtype=torch.int32, device=self.runtime.device)
        feature_maps = list(self.features[frame]["vision_feats"])
        feature_maps[-1] = feature_maps[-1] + video.no_memory_embedding  # a single image has no memory
        embeddings = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feature_maps, video.backbone_feature_sizes)]
        sparse, dense = video.prompt_encoder(input_points=coords, input_labels=labels, input_boxes=None, input_masks=None)
        logits, iou, _, object_logits = video.mask_decoder(
            image_embeddings=embeddings[-1],
            image_positional_embeddings=video.get_image_wide_positional_embeddings(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            high_resolution_features=embeddings[:-1],
        )
        return logits[0], iou[0], object_logits[0, :, 0]

    def candidates(self, frame: int, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.runtime.check_interrupt()
        logits, iou, object_logits = self.decode_points(frame, points)
        present = (object_logits > 0).cpu()  # SAM2's occlusion head: no object under this point
        masks = (logits > 0).cpu()[present].reshape(-1, *logits.shape[-2:])  # (3·P', h, w)
        return masks, iou.float().cpu()[present].reshape(-1)

    def track(self, frame: int, seeds: torch.Tensor) -> list[torch.Tensor]:
        session, video = self.session, self.video
        session.reset_tracking_data()  # keeps the cached frame features
        prompts = resize_masks(seeds, (self.size, self.size)).float()
        for obj_id, prompt in enumerate(prompts):
            session.add_mask_inputs(session.obj_id_to_idx(obj_id), frame, prompt[None, None])
        session.obj_with_new_inputs = list(range(seeds.shape[0]))
        logits: dict[int, torch.Tensor] = {}
        for reverse in (False, True):  # forwards from the seed frame, then backwards from it
            for output in video.propagate_in_video_iterator(session, start_frame_idx=frame, reverse=reverse):
                self.runtime.check_interrupt()
                if output.frame_idx not in logits:
                    logits[output.frame_idx] = output.pred_masks[:, 0].float()  # (N, h, w) low-res logits
                    self.progress()
            # SAM2's memory bank reads the frames "before" the current one in tracking order; for the
            # backward pass those would be the forward pass's frames on the other side of the ring.
            # Each direction remembers only the seed frame and its own path.
            for outputs in session.output_dict_per_obj.values():
                outputs["non_cond_frame_outputs"].clear()
        session.reset_tracking_data()
        masks = []
        for index, (height, width) in enumerate(self.frame_sizes):
            upsampled = F.interpolate(logits[index][:, None], size=(height, width), mode="bilinear", align_corners=False)
            masks.append((upsampled[:, 0] > 0).cpu())
        return masks


# ----------------------------------------------------------------------------------------------------
# Entry points


def _frames_and_alphas(views: MultiView, sequence: Sequence[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    frames, alphas = [], []
    for source in sequence:
        if source == INPUT_FRAME:
            image = views.input_image.float()
            frames.append(image)
            alphas.append(input_alpha(image))
        else:
            frames.append(views.images[source].float())
            alphas.append(views.alpha[source].float())
    return frames, alphas


def _check_views(views: MultiView) -> None:
    if views.num_views != views.view_layout.num_views:
        raise ValueError(f"views hold {views.num_views} images but layout {views.layout!r} has {views.view_layout.num_views}")
    if not bool((views.alpha > 0.5).any()):
        raise ValueError("the views show no object (their alpha is empty); segmenting needs views from PartGen Multi-View")


def _progress_counter(runtime: Runtime, total: int) -> Callable[[], None]:
    done = [0]

    def step() -> None:
        done[0] = min(done[0] + 1, total)
        runtime.progress(done[0], total, None)

    return step


def _segmentation(views: MultiView, sequence: Sequence[int], proposals: TrackedProposals,
                  keep: Sequence[int], labels: Optional[Sequence[Optional[str]]] = None) -> Segmentation:
    view_frames = [sequence.index(v) for v in range(views.num_views)]
    masks = torch.stack([proposals.masks[f] for f in view_frames], dim=1)[list(keep)]  # (K, V, H, W)
    input_masks = None
    if INPUT_FRAME in sequence:
        input_masks = proposals.masks[sequence.index(INPUT_FRAME)][list(keep)]
    scores = proposals.scores[list(keep)].float()
    return Segmentation(torch.zeros(0), masks, scores, tuple(labels or (None,) * len(keep)), views.layout, input_masks)


def seed_frames(views: MultiView, sequence: Sequence[int]) -> list[int]:
    """Frames to seed in, as positions in ``sequence``: the input image first (the view every other was
    generated from), then the views in grid order."""
    first = [sequence.index(INPUT_FRAME)] if views.input_image is not None else []
    return first + [sequence.index(v) for v in range(views.num_views)]


def segment_frames(engine: FrameEngine, views: MultiView, options: Sam2Options = Sam2Options(),
                   check_interrupt: Callable[[], None] = lambda: None) -> Segmentation:
    """Steps 3-4 of :func:`segment_views_sam2` on any engine built over ``frame_sequence(views)``."""
    sequence = frame_sequence(views)
    _, alphas = _frames_and_alphas(views, sequence)
    proposals = automatic_proposals(engine, alphas, seed_frames(views, sequence), options, check_interrupt)
    keep = rank_tracked(proposals, [sequence.index(v) for v in range(views.num_views)], options.iou_threshold)
    logger.info("SAM2: %d proposals tracked, %d kept", proposals.scores.shape[0], len(keep))
    return _segmentation(views, sequence, proposals, keep)


def segment_views_sam2(
    model: Sam2Segmenter,
    views: MultiView,
    options: Sam2Options = Sam2Options(),
    runtime: Optional[Runtime] = None,
) -> Segmentation:
    """Automatic multi-view part proposals with SAM 2.1 (module docstring): masks ``[K,V,H,W]`` ranked by
    SAM2's predicted IoU, and each part's mask in the input image (``input_masks`` ``[K,h,w]``) when the
    views carry one. ``samples`` is empty: SAM2 draws no colour-coded samples."""
    runtime = runtime or default_runtime("cpu", torch.float32)
    # 1. check inputs, order the frames around the object
    _check_views(views)
    sequence = frame_sequence(views)
    frames, _ = _frames_and_alphas(views, sequence)
    runtime.prepare(model)
    # progress: one unit per encoded frame and per tracked frame of each possible seed pass
    total = len(frames) * (1 + len(seed_frames(views, sequence)))
    with torch.inference_mode():
        # 2. encode every frame once
        engine = Sam2FrameEngine(model, frames, runtime, _progress_counter(runtime, total))
        # 3. seed, de-duplicate, track; 4. rank by SAM2's score, NMS over the views
        segmentation = segment_frames(engine, views, options, runtime.check_interrupt)
    runtime.progress(total, total, None)
    return segmentation


def segment_at_point_sam2(
    model: Sam2Segmenter,
    views: MultiView,
    view: int,
    x: float,
    y: float,
    options: Sam2Options = Sam2Options(),
    runtime: Optional[Runtime] = None,
) -> Segmentation:
    """Seeded mode (PartGen's seeded evaluation): SAM2's three masks for the pixel (x, y) of view
    ``view``, each tracked through all frames, ranked by SAM2's predicted IoU."""
    runtime = runtime or default_runtime("cpu", torch.float32)
    _check_views(views)
    if not 0 <= view < views.num_views:
        raise ValueError(f"view {view} does not exist; there are {views.num_views} views (0..{views.num_views - 1})")
    height, width = views.images.shape[1:3]
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"point ({x}, {y}) lies outside the {width}x{height} view")
    sequence = frame_sequence(views)
    frames, alphas = _frames_and_alphas(views, sequence)
    frame = sequence.index(view)
    runtime.prepare(model)
    step = _progress_counter(runtime, 2 * len(frames))
    with torch.inference_mode():
        engine = Sam2FrameEngine(model, frames, runtime, step)
        masks, scores = engine.candidates(frame, torch.tensor([[float(x), float(y)]]))
        if masks.shape[0] == 0:
            empty = TrackedProposals([torch.zeros(0, *a.shape, dtype=torch.bool) for a in alphas], torch.zeros(0), ())
            return _segmentation(views, sequence, empty, [])
        tracked = engine.track(frame, masks)
    objects = [alpha > 0.5 for alpha in alphas]
    proposals = TrackedProposals([m & o for m, o in zip(tracked, objects)], scores, (frame,) * scores.shape[0])
    view_frames = [sequence.index(v) for v in range(views.num_views)]
    order = sorted(range(scores.shape[0]), key=lambda i: (-float(scores[i]), i))
    visible = torch.stack([proposals.masks[f] for f in view_frames], dim=1).flatten(1).any(dim=1)
    return _segmentation(views, sequence, proposals, [i for i in order if bool(visible[i])])
