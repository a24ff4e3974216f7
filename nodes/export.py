"""Export nodes: parts → a GLB scene (a named node per part) + manifest + optional per-part files."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import Types, io

import folder_paths

from ..partgen_models.assembly.export import PART_FORMATS, ExportOptions, export_parts
from . import host_features, sockets


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
                "Never overwrites; an interrupted run leaves no partial files. Connect 'scene' to Preview3D."
            ),
            inputs=[
                sockets.Parts.Input("parts", tooltip="From PartGen Reconstruct."),
                io.String.Input(
                    "filename_prefix",
                    default="partgen/parts",
                    tooltip="Path under ComfyUI's output folder; sub-folders allowed, '..' and absolute paths are refused.",
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
            outputs=[
                io.String.Output(display_name="scene", tooltip="The GLB's path relative to output/, for Preview3D."),
                # ComfyUI 0.30+: the same file as a typed 3D file, for core Preview3D, SaveGLB and PartGen Load Parts.
                *([io.File3DGLB.Output(display_name="model_3d",
                                       tooltip="The GLB scene as a 3D file: connect to Preview3D, Save 3D Model or PartGen Load Parts.")]
                  if host_features.has_file3d() else []),
            ],
            hidden=[io.Hidden.prompt],
            is_output_node=True,
            **host_features.search_aliases("export parts", "save glb", "part meshes"),
        )

    @classmethod
    def execute(cls, parts, filename_prefix: str, part_files: str, exploded: float) -> io.NodeOutput:
        output_dir = Path(folder_paths.get_output_directory())
        options = ExportOptions(filename_prefix, part_files, exploded, metadata={"prompt": cls.hidden.prompt})
        result = export_parts(parts, output_dir, options)
        subfolder = "" if result.scene.parent == Path() else result.scene.parent.as_posix()
        entry = {"filename": result.scene.name, "subfolder": subfolder, "type": "output"}
        outputs = [result.scene.as_posix()]
        if host_features.has_file3d():
            outputs.append(Types.File3D(str(output_dir / result.scene), "glb"))
        return io.NodeOutput(*outputs, ui={"3d": [entry]})


NODES = [SaveParts]
