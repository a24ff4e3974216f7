"""Segmentation stage nodes: load a segmenter, segment the views, select the parts."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..partgen_models.partgen_checkpoint import find_partgen_checkpoint, list_partgen_checkpoints
from ..partgen_models.segmentation.segmenter import FORMAT, load_partgen_segmenter
from ..partgen_models.segmentation.palette import BACKGROUND, PALETTE
from ..partgen_models.segmentation.sam2_backend import (
    SAM2_CHOICES,
    Sam2Options,
    Sam2Segmenter,
    load_sam2_segmenter,
    resolve_sam_folder,
    segment_views_sam2,
)
from ..partgen_models.segmentation.sam3_backend import (
    SAM3_CHOICES,
    Sam3Options,
    Sam3Segmenter,
    load_sam3_segmenter,
    segment_views_sam3,
)
from ..partgen_models.segmentation.segment import SegmentationOptions, segment_views
from ..partgen_models.segmentation.select import SELECTION_MODES, PartSelection, grid_masks, overlay, select_parts
from ..partgen_models.views import views_to_grid
from . import host_features, sockets
from .comfy_runtime import PRECISIONS, ModelHandle, comfy_runtime, download_progress, model_search_dirs, resolve_dtype

_DEFAULTS = SegmentationOptions()
_SAM2_DEFAULTS = Sam2Options()
_SAM3_DEFAULTS = Sam3Options()


def _segmenter_choices() -> list[str]:
    """Our PartGen checkpoints found in models/partgen (a placeholder name when there is none, so saved
    workflows still validate), then the SAM checkpoints, downloaded on first use."""
    partgen = list_partgen_checkpoints(model_search_dirs(), FORMAT) or ["partgen-segmentation"]
    return partgen + [name for name in (*SAM2_CHOICES, *SAM3_CHOICES) if name not in partgen]


def _painted(masks: torch.Tensor) -> torch.Tensor:
    """Proposals ``[K,V,H,W]`` painted in palette colours on white, best-ranked on top: ``[V,H,W,3]``."""
    colours = torch.tensor([BACKGROUND, *PALETTE])
    ids = torch.zeros(masks.shape[1:], dtype=torch.long)
    for k in reversed(range(masks.shape[0])):
        ids[masks[k]] = 1 + k % len(PALETTE)
    return colours[ids]


class LoadSegmenter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = _segmenter_choices()
        return io.Schema(
            node_id="PartGenLoadSegmenter",
            display_name="PartGen Load Segmenter",
            category="PartGen/loaders",
            description=(
                "A multi-view part segmenter. PartGen's segmentation diffusion model (a Zero123++ v1.2 UNet with "
                "doubled input channels): its authors released no weights, so this loads checkpoints in this pack's "
                "own format (a folder with partgen.json and unet/ in models/partgen/). SAM 2.1 (automatic: points over "
                "the object, tracked around the views; Apache-2.0) and SAM 3 (one part per typed name; gated on "
                "Hugging Face) are downloaded into models/partgen/ on first use (PARTGEN_NO_DOWNLOAD=1 forbids it)."
            ),
            inputs=[
                io.Combo.Input(
                    "model", options=choices, default=choices[0],
                    tooltip=(
                        "partgen-*: our PartGen checkpoint folders (about 3 GB of VRAM in fp16, with Zero123++). "
                        "sam2.1-hiera-tiny/small/base-plus/large: SAM 2.1, 0.16/0.19/0.33/0.9 GB of weights in fp32, "
                        "half in fp16, plus about 2 MB per tracked proposal and view. sam3: SAM 3 by part names, "
                        "3.4 GB in fp32 (1.7 GB in fp16); accept its licence on Hugging Face and log in first."
                    ),
                ),
                io.Combo.Input("precision", **host_features.advanced(), options=list(PRECISIONS), default="auto",
                               tooltip="auto: fp16/bf16 on a GPU, fp32 on CPU. Half precision halves the VRAM of the weights."),
            ],
            outputs=[sockets.Segmenter.Output(display_name="segmenter")],
        )

    @classmethod
    def execute(cls, model: str, precision: str) -> io.NodeOutput:
        dtype = resolve_dtype(precision)
        if model in SAM2_CHOICES or model in SAM3_CHOICES:
            folder = resolve_sam_folder(model, model_search_dirs(), download_progress())
            load = load_sam2_segmenter if model in SAM2_CHOICES else load_sam3_segmenter
            return io.NodeOutput(ModelHandle(name=model, dtype=dtype, build=lambda: load(folder, dtype)))
        folder = find_partgen_checkpoint(model, model_search_dirs(), FORMAT)
        build = lambda: load_partgen_segmenter(folder, model_search_dirs(), dtype)  # noqa: E731
        return io.NodeOutput(ModelHandle(name=model, dtype=dtype, build=build))


class Segment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenSegment",
            **host_features.search_aliases("part segmentation", "split into parts", "segment 3d parts"),
            display_name="PartGen Segment",
            category="PartGen",
            description=(
                "Multi-view part proposals, ranked, for PartGen Select Parts. PartGen's model draws several colour-coded "
                "segmentations in one batch and ranks the pooled segments by agreement (IoU votes + NMS). SAM 2.1 "
                "prompts points spread over the object (three masks each), tracks every mask around the views and "
                "the input image as a short video, ranks by SAM's score and applies NMS. SAM 3 gives one labelled "
                "proposal per name typed in 'names'."
            ),
            inputs=[
                sockets.Segmenter.Input("segmenter", tooltip="From PartGen Load Segmenter."),
                sockets.Views.Input("views", tooltip="From PartGen Multi-View."),
                io.Int.Input("samples", default=_DEFAULTS.num_samples, min=1, max=64,
                             tooltip="PartGen: samples pooled for ranking (paper: 1/5/10 → mAP50 45/54/59). Denoised in "
                                     "batches of up to 8 (the same samples as one batch): VRAM grows with min(samples, "
                                     "8), about what Multi-View needs per sample; time grows linearly. Ignored by SAM."),
                io.Int.Input("steps", default=_DEFAULTS.num_inference_steps, min=1, max=500,
                             tooltip="PartGen: denoising steps per sample batch. Time grows linearly with them; memory does "
                                     "not. Ignored by SAM."),
                io.Float.Input("guidance", default=_DEFAULTS.guidance_scale, min=0.0, max=20.0, step=0.1,
                               tooltip="PartGen: classifier-free guidance; 1.0 or less turns it off and halves the time. "
                                       "Ignored by SAM."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="PartGen: drives all samples' noise. SAM is deterministic and ignores it."),
                io.Float.Input("min_area", **host_features.advanced(), default=_DEFAULTS.min_area, min=0.0, max=0.49, step=0.001,
                               tooltip="PartGen: colours covering less than this share of the object are dropped as noise. "
                                       "SAM2: masks below this share of the object are dropped."),
                io.String.Input("names", default="", optional=True,
                                tooltip="SAM3 only: the parts to find, comma-separated ('crown, wheel'); each becomes one "
                                        "labelled proposal. Short noun phrases work best (at most 64 names of 100 "
                                        "characters; each costs one text pass, a mask decode per view and ~0.1 MB per "
                                        "view). Ignored by PartGen and SAM2."),
                io.Float.Input("sam3_threshold", **host_features.advanced(), default=_SAM3_DEFAULTS.threshold, min=0.0, max=0.99, step=0.01,
                               optional=True,
                               tooltip="SAM3 only: instance score above which a detection counts. Lower it when a "
                                       "named part is not found; raise it when other things are taken for it."),
                io.Int.Input("points_per_side", **host_features.advanced(), default=_SAM2_DEFAULTS.points_per_side, min=1, max=64, optional=True,
                             tooltip="SAM2 only: query grid over the object (n x n, points off the object skipped), three "
                                     "masks per point. More points find smaller parts; decoding them is cheap, tracking "
                                     f"is capped at {_SAM2_DEFAULTS.max_proposals} proposals. Ignored by the others."),
            ],
            outputs=[
                sockets.Segmentation.Output(display_name="segmentation"),
                io.Image.Output(display_name="samples",
                                tooltip="PartGen: each colour-coded sample as a grid. SAM: the ranked proposals painted in "
                                        "one grid (best on top)."),
                io.Mask.Output(display_name="proposals", tooltip="Ranked proposals as grid masks (best first)."),
            ],
        )

    @classmethod
    def execute(cls, segmenter, views, samples, steps, guidance, seed, min_area, names="",
                sam3_threshold=_SAM3_DEFAULTS.threshold, points_per_side=_SAM2_DEFAULTS.points_per_side) -> io.NodeOutput:
        patcher = segmenter.patcher()
        model, runtime = patcher.model, comfy_runtime(patcher)
        if isinstance(model, Sam2Segmenter):
            options = Sam2Options(points_per_side=points_per_side, min_area=min_area)
            result = segment_views_sam2(model, views, options, runtime)
        elif isinstance(model, Sam3Segmenter):
            result = segment_views_sam3(model, views, names or "", Sam3Options(threshold=sam3_threshold), runtime)
        else:
            result = segment_views(model, views, SegmentationOptions(samples, steps, guidance, seed, min_area), runtime)
        layout = views.view_layout
        samples_out = result.samples if result.samples.shape[0] else _painted(result.masks)[None]
        sample_grids = [views_to_grid(s, layout.rows, layout.cols) for s in samples_out]
        proposal_grids = [views_to_grid(m[..., None].float(), layout.rows, layout.cols)[..., 0] for m in result.masks]
        empty = torch.zeros(1, layout.rows * views.images.shape[1], layout.cols * views.images.shape[2])
        return io.NodeOutput(result, torch.stack(sample_grids), torch.stack(proposal_grids) if proposal_grids else empty)


class SelectParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenSelectParts",
            **host_features.search_aliases("choose parts", "part masks"),
            display_name="PartGen Select Parts",
            category="PartGen",
            description=(
                "Picks the parts to complete: the top K proposals, explicit indices ('0, 2+3' merges 2 and 3), a "
                "point in a view, a colour of the first sample, or names (text-prompted segmenters). Names each "
                "part and gives it a display colour."
            ),
            inputs=[
                sockets.Segmentation.Input("segmentation", tooltip="From PartGen Segment."),
                sockets.Views.Input("views", tooltip="The same views, for the overlay preview."),
                io.Combo.Input("mode", options=list(SELECTION_MODES), default="top_k",
                               tooltip="How to pick: top_k, indices, point, color or names."),
                io.Int.Input("top_k", default=4, min=1, max=64, tooltip="top_k: how many best-ranked proposals (fewer if there are fewer). Each part costs one "
                                     "completion and one reconstruction downstream (time; their memory is batched)."),
                io.String.Input("indices", default="", tooltip="indices: e.g. '0, 2+3' (+ merges proposals into one part)."),
                io.Int.Input("view", default=0, min=0, max=63, tooltip="point: which view (0..5, grid row-major)."),
                io.Float.Input("x", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="point: horizontal position in the view, 0..1."),
                io.Float.Input("y", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="point: vertical position in the view, 0..1."),
                io.String.Input("color", default="", tooltip="color: #rrggbb of a part in the first sample preview."),
                io.String.Input("names", default="", tooltip="names: comma-separated labels of a text-prompted segmenter."),
                io.String.Input("part_names", default="",
                                tooltip="Names for the selected parts, comma-separated, in order (default part_00, ...)."),
            ],
            outputs=[
                sockets.PartMasks.Output(display_name="part_masks"),
                io.Mask.Output(display_name="masks", tooltip="Each selected part as a grid mask."),
                io.Image.Output(display_name="overlay", tooltip="The view grid with the parts tinted."),
            ],
        )

    @classmethod
    def execute(cls, segmentation, views, mode, top_k, indices, view, x, y, color, names, part_names) -> io.NodeOutput:
        selection = PartSelection(mode, top_k, indices, (view, x, y), color, names, part_names)
        parts = select_parts(segmentation, selection)
        layout = views.view_layout
        return io.NodeOutput(parts, grid_masks(parts, layout.rows, layout.cols), overlay(views, parts))


NODES = [LoadSegmenter, Segment, SelectParts]
