"""Rendering node: an existing 3D asset → its views at a layout's cameras (PartGen's 3D-asset input)."""

from __future__ import annotations

import os
from pathlib import Path

from comfy_api.latest import io

import comfy.model_management as mm
import folder_paths

from ..partgen_models.assembly.mesh_interop import parts_from_host_mesh
from ..partgen_models.cameras import LAYOUTS
from ..partgen_models.rendering.asset_views import AssetViewOptions, asset_parts, render_asset_views
from ..partgen_models.rendering.renderer import SHADINGS, RenderOptions
from . import host_features, sockets
from .interop import loadable_files

NO_FILE = "none"


class RenderViews(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenRenderViews",
            **host_features.search_aliases("render mesh", "mesh to views", "3d asset views"),
            display_name="PartGen Render Views",
            category="PartGen",
            description=(
                "Renders an existing mesh (a GLB/glTF/OBJ file, PartGen parts or a core MESH) at the multi-view "
                "model's cameras, framed as Zero123++ frames its views, on white: PARTGEN_VIEWS for Segment, Complete "
                "Parts and Reconstruct, as if PartGen Multi-View had generated them. The front view (azimuth 0) "
                "becomes the input image they condition on. No model, no download; a plain-torch rasteriser."
            ),
            inputs=[
                io.Combo.Input(
                    "file",
                    options=[NO_FILE, *loadable_files()],
                    default=NO_FILE,
                    upload=io.UploadType.model,
                    tooltip=(
                        "A .glb/.gltf/.obj in ComfyUI's input folder or input/3d, Y up, front facing +Z. Leave at "
                        "'none' when 'parts' or 'mesh' is connected: exactly one of the three is rendered."
                    ),
                ),
                sockets.Parts.Input("parts", optional=True,
                                    tooltip="Parts to render (PartGen Load Parts, Reconstruct or MESH to Parts)."),
                io.Mesh.Input("mesh", optional=True,
                              tooltip="A core MESH to render (e.g. from VAE Decode Hunyuan3D); colours where it has them."),
                io.Combo.Input(
                    "layout",
                    options=list(LAYOUTS),
                    default="zero123pp_v12",
                    tooltip=(
                        "Whose cameras: zero123pp_v12 (6 views, elevations 20/-10) is what PartGen's segmenter, "
                        "completer and InstantMesh expect; zero123pp_v11 uses elevations 30/-20."
                    ),
                ),
                io.Int.Input("view_size", default=320, min=64, max=1024, step=8,
                             tooltip="Pixels per view; the models work at 320. Time and memory grow with its square: "
                                     "about 30 MB of outputs per 6 views at 320, 300 MB at 1024, plus one view's "
                                     "working memory (~50 bytes a pixel) and the rasteriser's chunk (~100 MB)."),
                io.Combo.Input("shading", **host_features.advanced(), options=list(SHADINGS), default="lambert",
                               tooltip="lambert: a light at each camera, so shape reads as it does in generated "
                                       "views. unlit: the mesh's colours exactly (flat)."),
                io.Int.Input("supersample", **host_features.advanced(), default=3, min=1, max=5, step=2,
                             tooltip="Antialiasing: s x s samples per pixel (1 = off). 3 matches the soft edges of "
                                     "generated views. Time grows with s² (on a CPU about 0.5 s per view and sample at "
                                     "320 px, 5 s at 1024: 6 views at 1024 and 5x5 take ~12 min; a GPU takes seconds); "
                                     "memory does not (the samples are rendered one pass at a time)."),
                io.Float.Input("input_elevation", **host_features.advanced(), default=0.0, min=-60.0, max=60.0, step=1.0,
                               tooltip="Elevation in degrees of the input image, rendered at azimuth 0 (the mesh's "
                                       "front, +Z). 0 looks at it level, as a photo would."),
            ],
            outputs=[
                sockets.Views.Output(display_name="views", tooltip="For PartGen Segment, Complete Parts, Reconstruct."),
                io.Image.Output(display_name="view_images", tooltip="The views as a batch of images."),
                io.Image.Output(display_name="grid", tooltip="The views tiled as the multi-view model's grid."),
                io.Image.Output(display_name="input_image", tooltip="The prepared front view the models condition on."),
            ],
        )

    @classmethod
    def execute(cls, file, layout, view_size, shading, supersample, input_elevation, parts=None, mesh=None) -> io.NodeOutput:
        path = None if file == NO_FILE else Path(folder_paths.get_annotated_filepath(file))
        source = asset_parts(path, parts, None if mesh is None else parts_from_host_mesh(mesh))
        options = AssetViewOptions(layout, view_size, input_elevation, RenderOptions(shading=shading, supersample=supersample))
        views = render_asset_views(source, options, device=mm.get_torch_device())
        return io.NodeOutput(views, views.images, views.grid()[None], views.input_image[None])

    @classmethod
    def fingerprint_inputs(cls, file, **_):
        # a file replaced under the same name must render again
        path = None if file == NO_FILE else folder_paths.get_annotated_filepath(file)
        stat = os.stat(path) if path and os.path.isfile(path) else None
        return (file, stat.st_mtime_ns if stat else None, stat.st_size if stat else None)


NODES = [RenderViews]
