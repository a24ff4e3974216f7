"""Multi-view stage nodes: load Zero123++ and turn an object image into its 6-view grid."""

from __future__ import annotations

from comfy_api.latest import io

from ..partgen_models.multiview import MultiViewOptions, generate_views, load_zero123plus
from ..partgen_models.multiview.catalog import DEFAULT_MULTIVIEW, list_multiview_models, resolve_multiview_model
from ..partgen_models.multiview.preprocess import MASK_MARKS
from . import host_features, sockets
from .comfy_runtime import PRECISIONS, ModelHandle, comfy_runtime, download_progress, model_search_dirs, resolve_dtype

_DEFAULTS = MultiViewOptions()


class LoadMultiViewModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenLoadMultiViewModel",
            display_name="PartGen Load Multi-View Model",
            category="PartGen/loaders",
            description=(
                "Zero123++ from models/partgen. Official models missing there are downloaded on first use "
                "(set PARTGEN_NO_DOWNLOAD=1 to forbid it). The default pairs Zero123++ v1.2 with InstantMesh's "
                "white-background UNet, which the reconstruction stage expects. Weights are CC-BY-NC 4.0."
            ),
            inputs=[
                io.Combo.Input(
                    "model",
                    options=list_multiview_models(model_search_dirs()),
                    default=DEFAULT_MULTIVIEW,
                    tooltip=(
                        "zero123plus-v1.2-instantmesh: white background, elevations 20/-10, for reconstruction "
                        "(downloads ~7 GB once). zero123plus-v1.2 / v1.1: the original gray-background releases. "
                        "Other entries are Zero123++ folders found in models/partgen."
                    ),
                ),
                io.Combo.Input(
                    "precision", **host_features.advanced(),
                    options=list(PRECISIONS),
                    default="auto",
                    tooltip=(
                        "Weight precision. auto: fp16 (or bf16) on a GPU, fp32 on CPU. fp16 needs about 3 GB of "
                        "VRAM for the models, fp32 twice that."
                    ),
                ),
            ],
            outputs=[sockets.MultiViewModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model: str, precision: str) -> io.NodeOutput:
        files = resolve_multiview_model(model, model_search_dirs(), download_progress())
        dtype = resolve_dtype(precision)
        build = lambda: load_zero123plus(files.folder, files.unet_file, dtype=dtype, flavour=files.flavour)  # noqa: E731
        return io.NodeOutput(ModelHandle(name=model, dtype=dtype, build=build))


class MultiView(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenMultiView",
            **host_features.search_aliases("zero123++", "image to multi-view", "novel views"),
            display_name="PartGen Multi-View",
            category="PartGen",
            description=(
                "Generates 6 views of the object around it (Zero123++: azimuths 30..330, two elevations) as "
                "PARTGEN_VIEWS for segmentation and reconstruction. The object is cropped, centred and put on "
                "the model's background first. A batch of images gives one grid per image."
            ),
            inputs=[
                sockets.MultiViewModel.Input("model", tooltip="From PartGen Load Multi-View Model."),
                io.Image.Input(
                    "image",
                    tooltip=(
                        "The object, ideally on a plain background or with alpha (LoadImage keeps the alpha "
                        "as its MASK output). Any size; it is recentred and resized to 512 px."
                    ),
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip=(
                        "Optional object mask: LoadImage's MASK (1 = transparent) or a background-removal "
                        "node's mask (1 = object); see mask_marks. Without it the background colour is "
                        "estimated from the image border."
                    ),
                ),
                io.Combo.Input(
                    "mask_marks",
                    options=list(MASK_MARKS),
                    default="auto",
                    tooltip=(
                        "What the mask's white marks. auto: decided from the border (white border = the mask "
                        "marks the background, as LoadImage's does)."
                    ),
                ),
                io.Int.Input(
                    "steps",
                    default=_DEFAULTS.num_inference_steps,
                    min=1,
                    max=500,
                    tooltip="Denoising steps: 28 is upstream's default, 75 InstantMesh's. Time grows linearly.",
                ),
                io.Float.Input(
                    "guidance",
                    default=_DEFAULTS.guidance_scale,
                    min=0.0,
                    max=20.0,
                    step=0.1,
                    tooltip="Classifier-free guidance (upstream 4.0). 1.0 or less turns it off and halves the time.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Same seed, same settings, same input: the same views on any device.",
                ),
                io.Int.Input(
                    "view_size",
                    default=_DEFAULTS.view_size,
                    min=64,
                    max=640,
                    step=8,
                    tooltip=(
                        "Pixels per view (grid = 2x3 views). Zero123++ was trained at 320; VRAM and time grow "
                        "with the square of this."
                    ),
                ),
            ],
            outputs=[
                sockets.Views.Output(display_name="views", is_output_list=True),
                io.Image.Output(display_name="view_images", is_output_list=True),
                io.Image.Output(display_name="grid", is_output_list=True),
            ],
        )

    @classmethod
    def execute(cls, model, image, steps, guidance, seed, view_size, mask=None, mask_marks="auto") -> io.NodeOutput:
        patcher = model.patcher()
        options = MultiViewOptions(num_inference_steps=steps, guidance_scale=guidance, seed=seed, view_size=view_size)
        results = generate_views(patcher.model, image, mask, options, comfy_runtime(patcher), mask_marks)
        return io.NodeOutput(results, [r.images for r in results], [r.grid()[None] for r in results])


NODES = [LoadMultiViewModel, MultiView]
