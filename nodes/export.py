"""Export nodes: parts → a GLB scene (a named node per part) + manifest + optional per-part files."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io

import folder_paths

from ..partgen_models.assembly.export import PART_FORMATS, ExportOptions, export_parts
from . import sockets
from .comfy_runtime import interrupt_runtime


class SaveParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenSaveParts",
            display_name="PartGen Save Parts",
            category="PartGen",
            description=(
                "Writes one GLB scene with a named node per part (vertex colours, Y up) under output/, a JSON manifest "
                "(names, bounding boxes, face counts, the graph that made them) and optionally one file per part. "
                "Never overwrites; an interrupt (honoured between files) or a failure leaves no partial files, and "
                "temporaries left by a killed server are removed on the next save. Connect 'scene' to Preview3D."
            ),
            inputs=[
                sockets.Parts.Input("parts", tooltip="From PartGen Reconstruct."),
                io.String.Input(
                    "filename_prefix",
                    default="partgen/parts",
                    tooltip=(
                        "Path under ComfyUI's output folder; sub-folders allowed, '..' and absolute paths are refused. "
                        "At most 200 characters, 100 per folder or file name."
                    ),
                ),
                io.Combo.Input(
                    "part_files",
                    options=["none", *PART_FORMATS],
                    default="none",
                    tooltip="Also write each part to its own file in this format (PLY cannot be previewed in ComfyUI).",
                ),
                io.Float.Input(
                    "exploded",
                    default=0.0,
                    min=0.0,
                    max=2.0,
                    step=0.05,
                    tooltip="Push parts apart along their centre directions by this share of the object's size (0 = assembled).",
                ),
            ],
            outputs=[io.String.Output(display_name="scene", tooltip="The GLB's path relative to output/, for Preview3D.")],
            hidden=[io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, parts, filename_prefix: str, part_files: str, exploded: float) -> io.NodeOutput:
        output_dir = Path(folder_paths.get_output_directory())
        options = ExportOptions(filename_prefix, part_files, exploded, metadata={"prompt": cls.hidden.prompt})
        result = export_parts(parts, output_dir, options, interrupt_runtime())
        subfolder = "" if result.scene.parent == Path() else result.scene.parent.as_posix()
        entry = {"filename": result.scene.name, "subfolder": subfolder, "type": "output"}
        return io.NodeOutput(result.scene.as_posix(), ui={"3d": [entry]})


NODES = [SaveParts]
