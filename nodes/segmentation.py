"""Segmentation stage nodes: load a segmenter, segment the views, select the parts."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..partgen_models.segmentation.partgen_model import (
    FORMAT,
    find_partgen_checkpoint,
    list_partgen_checkpoints,
    load_partgen_segmenter,
)
from ..partgen_models.segmentation.segment import SegmentationOptions, segment_views
from ..partgen_models.segmentation.select import SELECTION_MODES, PartSelection, grid_masks, overlay, select_parts
from ..partgen_models.views import views_to_grid
from . import sockets
from .comfy_runtime import PRECISIONS, ModelHandle, comfy_runtime, model_search_dirs, resolve_dtype

_DEFAULTS = SegmentationOptions()


class LoadSegmenter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = list_partgen_checkpoints(model_search_dirs(), FORMAT) or ["partgen-segmentation"]
        return io.Schema(
            node_id="PartGenLoadSegmenter",
            display_name="PartGen Load Segmenter",
            category="PartGen/loaders",
            description=(
                "PartGen's multi-view segmentation diffusion model (a Zero123++ v1.2 UNet with doubled input "
                "channels). PartGen's authors released no weights: this loads checkpoints in this pack's own "
                "format (a folder with partgen.json and unet/ in models/partgen/) on top of Zero123++ v1.2."
            ),
            inputs=[
                io.Combo.Input("model", options=choices, default=choices[0],
                               tooltip="A partgen-segmentation checkpoint folder in models/partgen/."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="auto: fp16/bf16 on a GPU, fp32 on CPU. ~3 GB of VRAM in fp16."),
            ],
            outputs=[sockets.Segmenter.Output(display_name="segmenter")],
        )

    @classmethod
    def execute(cls, model: str, precision: str) -> io.NodeOutput:
        folder = find_partgen_checkpoint(model, model_search_dirs(), FORMAT)
        dtype = resolve_dtype(precision)
        build = lambda: load_partgen_segmenter(folder, model_search_dirs(), dtype)  # noqa: E731
        return io.NodeOutput(ModelHandle(name=model, dtype=dtype, build=build))


class Segment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenSegment",
            display_name="PartGen Segment",
            category="PartGen",
            description=(
                "Draws several colour-coded part segmentations of the views (one batch), decodes the colours and "
                "ranks the pooled segments by agreement (PartGen's IoU votes + NMS) into multi-view part proposals."
            ),
            inputs=[
                sockets.Segmenter.Input("segmenter", tooltip="From PartGen Load Segmenter."),
                sockets.Views.Input("views", tooltip="From PartGen Multi-View."),
                io.Int.Input("samples", default=_DEFAULTS.num_samples, min=1, max=64,
                             tooltip="Samples pooled for ranking (PartGen: 1/5/10 → mAP50 45/54/59). All run in one "
                                     "batch: VRAM and time grow linearly."),
                io.Int.Input("steps", default=_DEFAULTS.num_inference_steps, min=1, max=500,
                             tooltip="Denoising steps per sample."),
                io.Float.Input("guidance", default=_DEFAULTS.guidance_scale, min=0.0, max=20.0, step=0.1,
                               tooltip="Classifier-free guidance; 1.0 or less turns it off and halves the time."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Drives all samples' noise."),
                io.Float.Input("min_area", default=_DEFAULTS.min_area, min=0.0, max=0.49, step=0.001,
                               tooltip="Colours covering less than this share of the object are dropped as noise."),
            ],
            outputs=[
                sockets.Segmentation.Output(display_name="segmentation"),
                io.Image.Output(display_name="samples", tooltip="Each colour-coded sample as a grid."),
                io.Mask.Output(display_name="proposals", tooltip="Ranked proposals as grid masks (best first)."),
            ],
        )

    @classmethod
    def execute(cls, segmenter, views, samples, steps, guidance, seed, min_area) -> io.NodeOutput:
        patcher = segmenter.patcher()
        options = SegmentationOptions(samples, steps, guidance, seed, min_area)
        result = segment_views(patcher.model, views, options, comfy_runtime(patcher))
        layout = views.view_layout
        sample_grids = [views_to_grid(s, layout.rows, layout.cols) for s in result.samples]
        proposal_grids = [views_to_grid(m[..., None].float(), layout.rows, layout.cols)[..., 0] for m in result.masks]
        empty = torch.zeros(1, layout.rows * views.images.shape[1], layout.cols * views.images.shape[2])
        return io.NodeOutput(result, torch.stack(sample_grids), torch.stack(proposal_grids) if proposal_grids else empty)


class SelectParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenSelectParts",
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
                io.Int.Input("top_k", default=4, min=1, max=64, tooltip="top_k: how many best-ranked proposals."),
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
