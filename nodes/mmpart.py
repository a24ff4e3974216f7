"""MMPart nodes: collect the edit model's per-part images, and place the reconstructed parts as in the input."""

from __future__ import annotations

from comfy_api.latest import io

from ..partgen_models.assembly.isolation import IsolationOptions, collect_isolated_parts
from ..partgen_models.assembly.mesh_interop import parts_from_host_mesh
from ..partgen_models.assembly.placement import (
    DEPTH_MAP_ENCODINGS,
    DEPTH_SOURCES,
    PlacementError,
    PlacementOptions,
    crop_boxes_from_views,
    place_parts,
    single_parts,
)
from ..partgen_models.multiview.preprocess import MASK_MARKS
from ..partgen_models.runtime import Runtime
from . import sockets

_ISOLATION = IsolationOptions()
_PLACEMENT = PlacementOptions()


def _one(values, name: str):
    """A single value from an input that ComfyUI hands over as a list (``is_input_list`` nodes)."""
    if values is None or len(values) == 0:
        return None
    if len(values) != 1:
        raise ValueError(f"'{name}' takes one value, got a list of {len(values)}; connect a single {name}")
    return values[0]


def _host_runtime() -> Runtime:
    import comfy.model_management as mm
    import comfy.utils

    bars: dict = {}

    def progress(step, total, preview):
        bar = bars.setdefault(total, comfy.utils.ProgressBar(total))
        bar.update_absolute(step, total, None)

    return Runtime(device=mm.get_torch_device(), progress=progress,
                   check_interrupt=mm.throw_exception_if_processing_interrupted)


class CollectIsolatedParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenCollectIsolatedParts",
            display_name="PartGen Collect Isolated Parts",
            category="PartGen/mmpart",
            description=(
                "MMPart: gathers the edit model's images (one per planned part, from an edit node fed the plan's prompt "
                "list) into one named batch in the input image's frame. Each image is resized back to the input's size "
                "(edit models keep the framing, not always the pixel size), its part is cut from the plain background "
                "(or taken from a mask), and images that are blank, have no background, or still hold the whole scene "
                "are refused naming the part. Feed 'images' and 'masks' to PartGen Multi-View (one grid per part) and "
                "'isolated' to PartGen Place Parts."
            ),
            inputs=[
                sockets.PartPlan.Input("plan", tooltip="From PartGen Plan Parts: names, order and the input image size."),
                io.Image.Input(
                    "images",
                    tooltip=(
                        "The edited images, one per part in plan order: connect the edit node (Qwen-Image-Edit, FLUX "
                        "Kontext, GPT-Image...) that ran once per prompt of the plan's prompt list."
                    ),
                ),
                io.Mask.Input(
                    "masks",
                    optional=True,
                    tooltip="Optional masks of the parts, one per edited image (a background-removal node run on them).",
                ),
                io.Image.Input(
                    "input_image",
                    optional=True,
                    tooltip=(
                        "The original input image. Enables the whole-scene check and marks each part's visible pixels "
                        "(unchanged by the edit), on which Place Parts registers depth. Recommended."
                    ),
                ),
                io.Combo.Input("mask_marks", options=list(MASK_MARKS), default="auto",
                               tooltip="What the masks' white marks: auto decides from the border, as in Multi-View."),
                io.Float.Input(
                    "whole_scene_overlap",
                    default=_ISOLATION.whole_scene_overlap,
                    min=0.5,
                    max=1.0,
                    step=0.01,
                    tooltip=(
                        "A part image that keeps this share of the other parts' visible pixels unchanged is refused "
                        "as 'the whole scene' (needs input_image). 1.0 turns the check off. No cost."
                    ),
                ),
            ],
            outputs=[
                sockets.IsolatedParts.Output(display_name="isolated", tooltip="Connect to PartGen Place Parts."),
                io.Image.Output(display_name="images", tooltip="Each part alone on white, input size: connect to Multi-View."),
                io.Mask.Output(display_name="masks", tooltip="Each part's foreground: connect to Multi-View's mask."),
                io.String.Output(display_name="names", tooltip="The part names, comma separated."),
            ],
            is_input_list=True,
        )

    @classmethod
    def execute(cls, plan, images, mask_marks, whole_scene_overlap, masks=None, input_image=None) -> io.NodeOutput:
        plan = _one(plan, "plan")
        options = IsolationOptions(whole_scene_overlap=_one(whole_scene_overlap, "whole_scene_overlap"),
                                   mask_marks=_one(mask_marks, "mask_marks"))
        isolated = collect_isolated_parts(plan.names, plan.image_size, images, masks, _one(input_image, "input_image"), options)
        return io.NodeOutput(isolated, isolated.white_composites(), isolated.masks, ", ".join(isolated.names))


class PlaceParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenPlaceParts",
            display_name="PartGen Place Parts",
            category="PartGen/mmpart",
            description=(
                "MMPart: puts separately reconstructed parts together as they sit in the input image. Per part one "
                "similarity transform: Multi-View's crop box undone, silhouette matched to the part's mask, depth "
                "registered to the whole object's reconstruction or a depth map when connected, and parts further "
                "back pushed back where they would interpenetrate. Names come from the isolation step. Accepts PartGen "
                "parts (with their Multi-View views) or core MESH parts from other reconstructors."
            ),
            inputs=[
                sockets.IsolatedParts.Input("isolated", tooltip="From PartGen Collect Isolated Parts."),
                sockets.Parts.Input(
                    "parts",
                    optional=True,
                    tooltip="PartGen Reconstruct run on each part's views (a list, one item per part, plan order).",
                ),
                sockets.Views.Input(
                    "views",
                    optional=True,
                    tooltip="The Multi-View views the parts were reconstructed from: they carry each part's crop box.",
                ),
                io.Mesh.Input(
                    "meshes",
                    optional=True,
                    tooltip=(
                        "Instead of 'parts': core MESH parts from another image-to-3D model run on each isolated image "
                        "(glTF axes: Y up, facing +Z). They are normalised, then placed by their masks."
                    ),
                ),
                sockets.Parts.Input(
                    "reference",
                    optional=True,
                    tooltip="Optional: the whole object reconstructed from the input image (Multi-View + Reconstruct).",
                ),
                sockets.Views.Input(
                    "reference_views", optional=True, tooltip="The Multi-View views of the input image the reference came from."
                ),
                io.Image.Input(
                    "depth_map",
                    optional=True,
                    tooltip="Optional relative depth of the input image (core depth nodes: MoGe, Depth Anything).",
                ),
                io.Combo.Input(
                    "depth_source",
                    options=list(DEPTH_SOURCES),
                    default=_PLACEMENT.depth_source,
                    tooltip=(
                        "auto: the reference when connected, else the depth map, else none (all parts at the same "
                        "distance). One extra render per part."
                    ),
                ),
                io.Combo.Input(
                    "depth_map_encoding",
                    options=list(DEPTH_MAP_ENCODINGS),
                    default=_PLACEMENT.depth_map_encoding,
                    tooltip="near is bright: Depth Anything, MiDaS and ComfyUI's depth preprocessors.",
                ),
                io.Int.Input(
                    "silhouette_rounds",
                    default=_PLACEMENT.silhouette_rounds,
                    min=0,
                    max=10,
                    tooltip="Rounds of silhouette matching per part (0 = crop box only). Each renders every part once.",
                ),
                io.Int.Input(
                    "render_size",
                    default=_PLACEMENT.render_size,
                    min=32,
                    max=1024,
                    step=16,
                    tooltip=(
                        "Side of the renders used for silhouettes and depth. CPU time and memory grow with its square: "
                        "256 px ~0.1 s per render, about 10 MB; 1024 px about 16x that."
                    ),
                ),
                io.Float.Input(
                    "max_penetration",
                    default=_PLACEMENT.max_penetration,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip=(
                        "Largest share of the smaller part's volume two parts may share before the one further back is "
                        "pushed back. 1.0 turns the step off (it costs two renders per part per round)."
                    ),
                ),
            ],
            outputs=[
                sockets.Parts.Output(display_name="parts", tooltip="Placed, named parts: connect to PartGen Save Parts."),
                io.Image.Output(display_name="preview", tooltip="The placed parts seen from the input camera."),
                io.String.Output(display_name="report", tooltip="Per part: silhouette IoU, depth factor, push."),
            ],
            is_input_list=True,
        )

    @classmethod
    def execute(cls, isolated, depth_source, depth_map_encoding, silhouette_rounds, render_size, max_penetration,
                parts=None, views=None, meshes=None, reference=None, reference_views=None, depth_map=None) -> io.NodeOutput:
        isolated = _one(isolated, "isolated")
        options = PlacementOptions(
            silhouette_rounds=_one(silhouette_rounds, "silhouette_rounds"), render_size=_one(render_size, "render_size"),
            depth_source=_one(depth_source, "depth_source"), depth_map_encoding=_one(depth_map_encoding, "depth_map_encoding"),
            max_penetration=_one(max_penetration, "max_penetration"),
        )
        to_place, boxes = _parts_and_boxes(isolated, parts, views, meshes)
        reference_views = _one(reference_views, "reference_views")
        reference_box = crop_boxes_from_views(isolated, [reference_views], "reference")[0] if reference_views else None
        result = place_parts(to_place, isolated, boxes, options, _one(reference, "reference"), reference_box,
                             _one(depth_map, "depth_map"), _host_runtime())
        report = "\n".join(
            f"{r.name}: silhouette IoU {r.box_iou:.2f} -> {r.silhouette_iou:.2f}, depth x{r.depth_factor:.3f}, pushed {r.pushed:.3f}"
            for r in result.report
        )
        return io.NodeOutput(result.parts, result.preview[None], f"depth: {result.depth_source}\n{report}")


def _parts_and_boxes(isolated, parts, views, meshes):
    """One part per isolated image and its crop box (None for core meshes, which come without views)."""
    if (parts is None) == (meshes is None):
        raise PlacementError("connect exactly one of 'parts' (PartGen Reconstruct) or 'meshes' (core MESH)")
    if meshes is not None:
        collected = [p for mesh in meshes for p in parts_from_host_mesh(mesh, "batch items", "part")]
        return collected, [None] * len(collected)
    return single_parts(parts), crop_boxes_from_views(isolated, views)


NODES = [CollectIsolatedParts, PlaceParts]
