"""Reconstruction stage nodes: load InstantMesh and turn views into coloured part meshes."""

from __future__ import annotations

from comfy_api.latest import io

from ..partgen_models.reconstruction.catalog import (
    DEFAULT_RECONSTRUCTION,
    list_reconstruction_models,
    resolve_reconstruction_model,
)
from ..partgen_models.reconstruction.loader import load_instantmesh
from ..partgen_models.reconstruction.options import TEXTURE_MODES, VIEW_SUBSETS, ReconstructionOptions
from ..partgen_models.reconstruction.reconstruct import reconstruct_parts
from ..partgen_models.views import PartViews
from . import host_features, sockets
from .comfy_runtime import PRECISIONS, ModelHandle, comfy_runtime, download_progress, model_search_dirs, resolve_dtype

_DEFAULTS = ReconstructionOptions()


class LoadReconstructionModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenLoadReconstructionModel",
            display_name="PartGen Load Reconstruction Model",
            category="PartGen/loaders",
            description=(
                "InstantMesh's reconstruction model from models/partgen/instantmesh (downloaded on first use unless "
                "PARTGEN_NO_DOWNLOAD=1). Mesh variants extract with FlexiCubes, NeRF variants with marching cubes; "
                "both give vertex colours. Apache-2.0."
            ),
            inputs=[
                io.Combo.Input(
                    "model",
                    options=list_reconstruction_models(model_search_dirs()),
                    default=DEFAULT_RECONSTRUCTION,
                    tooltip=(
                        "instant-mesh-large: best quality (1.5 GB, ~3 GB VRAM in fp16 with extraction at 128). "
                        "base: smaller and faster. nerf: density field, smoother but blobbier surfaces."
                    ),
                ),
                io.Combo.Input(
                    "precision", **host_features.advanced(),
                    options=list(PRECISIONS),
                    default="auto",
                    tooltip="Weight precision. auto: fp16/bf16 on a GPU, fp32 on CPU. fp32 doubles the VRAM.",
                ),
            ],
            outputs=[sockets.ReconstructionModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model: str, precision: str) -> io.NodeOutput:
        path = resolve_reconstruction_model(model, model_search_dirs(), download_progress())
        dtype = resolve_dtype(precision)
        return io.NodeOutput(ModelHandle(name=model, dtype=dtype, build=lambda: load_instantmesh(path, dtype)))


class Reconstruct(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenReconstruct",
            **host_features.search_aliases("image to 3d", "instantmesh", "views to mesh"),
            display_name="PartGen Reconstruct",
            category="PartGen",
            description=(
                "Views → one watertight, vertex-coloured mesh per part (optionally with a baked base-colour texture), "
                "all in one object frame (glTF, Y up), so the parts assemble into the object. Connect the whole "
                "object's views or completed part views; parts are batched through the model. A part without "
                "foreground is skipped with a warning; a part that cannot be textured keeps vertex colours (warning)."
            ),
            inputs=[
                sockets.ReconstructionModel.Input("model", tooltip="From PartGen Load Reconstruction Model."),
                sockets.Views.Input(
                    "views", optional=True, tooltip="A whole object's views (PartGen Multi-View): gives one part."
                ),
                sockets.PartViews.Input(
                    "part_views", optional=True, tooltip="Completed views of each part (PartGen Complete Parts)."
                ),
                io.Int.Input(
                    "resolution",
                    default=0,
                    min=0,
                    max=512,
                    step=8,
                    tooltip=(
                        "Extraction grid; 0 = the model's default (mesh 128, NeRF 256). Detail, time and memory grow "
                        "with it: 256 takes about 4x the time of 128 on the surface cells. The grid holds 12 bytes "
                        "per point (mesh; NeRF 16): 256 0.2 GB, 512 1.6 GB, plus ~2 KB per cell on the surface; "
                        "above memory_budget_mb it is refused before anything runs (512 needs a larger budget)."
                    ),
                ),
                io.Int.Input(
                    "memory_budget_mb", **host_features.advanced(),
                    default=_DEFAULTS.memory_budget_mb,
                    min=64,
                    max=65536,
                    tooltip="Upper bound for the temporary memory of extraction (grid, surface cells, queries) and of "
                            "part batches; a resolution or surface that needs more is refused with the amount it "
                            "needs. Lower it if you run out of VRAM; raise it (if free) for resolution above ~400.",
                ),
                io.Int.Input(
                    "target_faces", **host_features.advanced(),
                    default=20_000,
                    min=0,
                    max=10_000_000,
                    tooltip="Decimate each part to about this many faces (quadric decimation, about 1 s of CPU per "
                    "200k faces; memory ~1 KB per face). 0 keeps the full mesh: ~100-200k faces per part at grid "
                    "128, heavy in editors and engines. Otherwise at least 4.",
                ),
                io.Combo.Input(
                    "view_subset", **host_features.advanced(),
                    options=list(VIEW_SUBSETS),
                    default="all",
                    tooltip="Which Zero123++ views to use: all 6, or InstantMesh's 4-view subset 0,2,4,5.",
                ),
                io.Combo.Input(
                    "texture",
                    options=list(TEXTURE_MODES),
                    default="off",
                    optional=True,
                    tooltip=(
                        "Also bake a base-colour texture per part (needs `pip install xatlas`): 'views+field' projects "
                        "the part's views and fills what no view sees from the model's colour field; 'views' or "
                        "'field' alone. 'off' keeps vertex colours only. Costs a UV unwrap (a few s per 20k faces on "
                        "a CPU) and field queries per texel; see texture_size."
                    ),
                ),
                io.Int.Input(
                    "texture_size",
                    default=1024,
                    min=512,
                    max=4096,
                    step=256,
                    optional=True,
                    tooltip="Texture side in pixels. Memory while baking about size² x 200 bytes (1024: 0.2 GB, "
                    "4096: 3.1 GB); time grows with size² (4096: ~3 min on a CPU). Only used when texture is on.",
                ),
            ],
            outputs=[sockets.Parts.Output(display_name="parts")],
        )

    @classmethod
    def execute(cls, model, resolution, memory_budget_mb, target_faces, view_subset, views=None, part_views=None,
                texture: str = "off", texture_size: int = 1024) -> io.NodeOutput:
        if (views is None) == (part_views is None):
            raise ValueError("connect exactly one of 'views' (a whole object) or 'part_views' (completed parts)")
        patcher = model.patcher()
        options = ReconstructionOptions(
            resolution=resolution or None, memory_budget_mb=memory_budget_mb, target_faces=target_faces, views=view_subset,
            texture=texture, texture_size=texture_size,
        )
        inputs = part_views if part_views is not None else PartViews.whole_object(views)
        return io.NodeOutput(reconstruct_parts(patcher.model, inputs, options, comfy_runtime(patcher)))


NODES = [LoadReconstructionModel, Reconstruct]
