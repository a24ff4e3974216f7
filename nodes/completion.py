"""Completion stage nodes: load PartGen's completer, complete the selected parts, edit a part."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..partgen_models.cameras import LAYOUTS
from ..partgen_models.completion.complete import (
    CompletionError,
    CompletionOptions,
    complete_parts,
    complete_training_free,
    edit_part,
    input_masks_for,
    masked_views,
)
from ..partgen_models.completion.completer import FORMAT, load_partgen_completer
from ..partgen_models.partgen_checkpoint import find_partgen_checkpoint, list_partgen_checkpoints
from ..partgen_models.views import views_to_grid
from . import host_features, sockets
from .comfy_runtime import PRECISIONS, ModelHandle, comfy_runtime, model_search_dirs, resolve_dtype

_DEFAULTS = CompletionOptions()
MODES = ("partgen", "training-free (Zero123++)", "none (baseline)")


def _preview(part_views) -> torch.Tensor:
    rows, cols = LAYOUTS[part_views.layout].rows, LAYOUTS[part_views.layout].cols
    return torch.stack([views_to_grid(v, rows, cols) for v in part_views.images])


class LoadCompleter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = list_partgen_checkpoints(model_search_dirs(), FORMAT) or ["partgen-completion"]
        return io.Schema(
            node_id="PartGenLoadCompleter",
            display_name="PartGen Load Completer",
            category="PartGen/loaders",
            description=(
                "PartGen's contextual part-completion diffusion model (Zero123++ v1.2 UNet with 13 input channels), "
                "also used for text-guided editing. No official weights exist: loads this pack's checkpoint format "
                "(a folder with partgen.json and unet/ in models/partgen/)."
            ),
            inputs=[
                io.Combo.Input("model", options=choices, default=choices[0],
                               tooltip="A partgen-completion checkpoint folder in models/partgen/."),
                io.Combo.Input("precision", **host_features.advanced(), options=list(PRECISIONS), default="auto",
                               tooltip="auto: fp16/bf16 on a GPU, fp32 on CPU. ~3 GB of VRAM in fp16."),
            ],
            outputs=[sockets.Completer.Output(display_name="completer")],
        )

    @classmethod
    def execute(cls, model: str, precision: str) -> io.NodeOutput:
        folder = find_partgen_checkpoint(model, model_search_dirs(), FORMAT)
        dtype = resolve_dtype(precision)
        build = lambda: load_partgen_completer(folder, model_search_dirs(), dtype)  # noqa: E731
        return io.NodeOutput(ModelHandle(name=model, dtype=dtype, build=build))


def _common_inputs() -> list:
    return [
        io.Int.Input("steps", default=_DEFAULTS.num_inference_steps, min=1, max=500,
                     tooltip="Denoising steps per part batch. Time grows linearly with them (500: about 18x the "
                             "default's); memory does not."),
        io.Float.Input("guidance", default=_DEFAULTS.guidance_scale, min=0.0, max=20.0, step=0.1,
                       tooltip="Classifier-free guidance; 1.0 or less turns it off and halves the time."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Each part's noise follows this seed and the part's name."),
    ]


class CompleteParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenCompleteParts",
            **host_features.search_aliases("part completion", "inpaint hidden parts", "amodal"),
            display_name="PartGen Complete Parts",
            category="PartGen",
            description=(
                "Complete views of every selected part, including what other parts hid, at the object's cameras. "
                "partgen: PartGen's contextual completion (all parts in one batch). training-free: Zero123++ with "
                "public weights, conditioned on the input image with everything but the part removed, inpainting "
                "only the hidden region (needs the part's mask in the input image). none: the baseline, the visible "
                "pixels only."
            ),
            inputs=[
                io.Combo.Input("mode", options=list(MODES), default=MODES[0], tooltip="Which completion to run."),
                sockets.Views.Input("views", tooltip="The object's views (PartGen Multi-View)."),
                sockets.PartMasks.Input("part_masks", tooltip="From PartGen Select Parts."),
                sockets.Completer.Input("completer", optional=True, tooltip="For mode partgen: PartGen Load Completer."),
                sockets.MultiViewModel.Input("multiview_model", optional=True,
                                             tooltip="For mode training-free: PartGen Load Multi-View Model."),
                io.Mask.Input("input_mask", optional=True,
                              tooltip="For training-free: each part's mask on the prepared input image (one per part)."),
                io.Boolean.Input("use_context", default=True,
                                 tooltip="partgen: show the model the whole object (PartGen: PSNR 21.4 vs 16.8 without)."),
                *_common_inputs(),
                io.Int.Input("max_batch", **host_features.advanced(), default=_DEFAULTS.max_batch, min=1, max=16,
                             tooltip="Parts denoised together; results do not change with it. VRAM about 4.5 GB plus "
                                     "0.3 GB per part in the batch (fp16, 320 px views): 8 ~7 GB, 16 ~9 GB. Lower it "
                                     "if you run out of VRAM."),
            ],
            outputs=[
                sockets.PartViews.Output(display_name="part_views"),
                io.Image.Output(display_name="preview", tooltip="Each part's completed grid."),
            ],
        )

    @classmethod
    def execute(cls, mode, views, part_masks, use_context, steps, guidance, seed, max_batch,
                completer=None, multiview_model=None, input_mask=None) -> io.NodeOutput:
        options = CompletionOptions(steps, guidance, seed, use_context, max_batch)
        if mode == MODES[2]:
            result = masked_views(views, part_masks)
        elif mode == MODES[0]:
            if completer is None:
                raise CompletionError("mode partgen needs a completer: connect PartGen Load Completer")
            patcher = completer.patcher()
            result = complete_parts(patcher.model, views, part_masks, options, comfy_runtime(patcher))
        else:
            if multiview_model is None:
                raise CompletionError("mode training-free needs multiview_model: connect PartGen Load Multi-View Model")
            patcher = multiview_model.patcher()
            masks = input_masks_for(part_masks, input_mask, views)
            result = complete_training_free(patcher.model, views, part_masks, masks, options, comfy_runtime(patcher))
        return io.NodeOutput(result, _preview(result))


class EditPart(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenEditPart",
            **host_features.search_aliases("edit 3d part", "text edit part"),
            display_name="PartGen Edit Part",
            category="PartGen",
            description=(
                "Regenerates one part as a text instruction describes ('a cowboy hat'), with PartGen's completer; "
                "the other parts stay as they were (their completed views if connected, else their visible pixels)."
            ),
            inputs=[
                sockets.Completer.Input("completer", tooltip="From PartGen Load Completer."),
                sockets.Views.Input("views", tooltip="The object's views."),
                sockets.PartMasks.Input("part_masks", tooltip="From PartGen Select Parts."),
                io.String.Input("part", default="part_00", tooltip="Name of the part to regenerate."),
                io.String.Input("instruction", default="", multiline=True, tooltip="What the part should become."),
                sockets.PartViews.Input("part_views", optional=True,
                                        tooltip="Completed views of all parts, kept for the parts not edited."),
                *_common_inputs(),
            ],
            outputs=[
                sockets.PartViews.Output(display_name="part_views"),
                io.Image.Output(display_name="preview", tooltip="Each part's grid after the edit."),
            ],
        )

    @classmethod
    def execute(cls, completer, views, part_masks, part, instruction, steps, guidance, seed, part_views=None) -> io.NodeOutput:
        patcher = completer.patcher()
        options = CompletionOptions(steps, guidance, seed)
        result = edit_part(patcher.model, views, part_masks, part, instruction, options, comfy_runtime(patcher), part_views)
        return io.NodeOutput(result, _preview(result))


NODES = [LoadCompleter, CompleteParts, EditPart]
