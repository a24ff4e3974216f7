"""The pack's typed sockets, declared once so the editor refuses wrong wiring."""

from comfy_api.latest import io

MultiViewModel = io.Custom("PARTGEN_MULTIVIEW_MODEL")
Views = io.Custom("PARTGEN_VIEWS")
Segmenter = io.Custom("PARTGEN_SEGMENTER")
Segmentation = io.Custom("PARTGEN_SEGMENTATION")
PartMasks = io.Custom("PARTGEN_PART_MASKS")
PartViews = io.Custom("PARTGEN_PART_VIEWS")
Completer = io.Custom("PARTGEN_COMPLETER")
ReconstructionModel = io.Custom("PARTGEN_RECONSTRUCTION_MODEL")
Parts = io.Custom("PARTGEN_PARTS")
PartPlan = io.Custom("PARTGEN_PART_PLAN")
VLM = io.Custom("PARTGEN_VLM")
IsolatedParts = io.Custom("PARTGEN_ISOLATED_PARTS")
