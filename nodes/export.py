"""Export nodes: parts → a GLB scene (a named node per part) + manifest + optional per-part files."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import Types, io

import folder_paths

from ..partgen_models.assembly.export import PART_FORMATS, ExportOptions, export_parts
from . import host_features, sockets
from .comfy_runtime import interrupt_runtime


class SaveParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenSaveParts",
            display_name="PartGen Save Parts",
            category="PartGen",
            description=(
                "Writes one GLB scene under output/: a root node named after the file with one child node per part, "
                "each with its pivot at the part's centre, a PBR material named after the part (metallic 0), smooth "
                "normals split at creases and its colour in linear space as glTF requires (Blender, three.js and "
                "engines show the same colours). Also a JSON manifest (names, pivots, bounding boxes, face counts, "
                "the graph that made them) and optionally one file per part (OBJ+MTL and GLB Y up; PLY and STL Z up, "
                "as Blender and slicers import them). Never overwrites; an interrupt (honoured between files) or a "
                "failure leaves no partial files, and temporaries left by a killed server are removed on the next "
                "save. Connect 'scene' to Preview3D."
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
                    tooltip="Move parts apart along their centre directions by this share of the object's size, then "
                    "further until no two parts touch (0 = assembled). Offsets go on the part nodes, not the vertices.",
                ),
                io.Float.Input(
                    "crease_angle",
                    default=60.0,
                    min=0.0,
                    max=180.0,
                    step=5.0,
                    optional=True,
                    tooltip="Edges where faces meet at more than this angle (degrees) stay sharp; smoother ones are "
                    "shaded smooth. 0 = flat shading, 180 = smooth everywhere. Sharp edges duplicate their vertices "
                    "(a box: 8 → 24); time is linear in the face count.",
                ),
                io.Float.Input(
                    "roughness",
                    default=0.7,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    optional=True,
                    tooltip="Material roughness of every part (0 = glossy, 1 = matte); metallic is 0. No cost.",
                ),
                io.Boolean.Input(
                    "on_ground",
                    default=False,
                    optional=True,
                    tooltip="Move the whole object (its root node) so that its lowest point rests on y = 0. No cost.",
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
    def execute(cls, parts, filename_prefix: str, part_files: str, exploded: float, crease_angle: float = 60.0,
                roughness: float = 0.7, on_ground: bool = False) -> io.NodeOutput:
        output_dir = Path(folder_paths.get_output_directory())
        options = ExportOptions(filename_prefix, part_files, exploded, metadata={"prompt": cls.hidden.prompt},
                                crease_angle=crease_angle, roughness=roughness, on_ground=on_ground)
        result = export_parts(parts, output_dir, options, interrupt_runtime())
        subfolder = "" if result.scene.parent == Path() else result.scene.parent.as_posix()
        entry = {"filename": result.scene.name, "subfolder": subfolder, "type": "output"}
        outputs = [result.scene.as_posix()]
        if host_features.has_file3d():
            outputs.append(Types.File3D(str(output_dir / result.scene), "glb"))
        return io.NodeOutput(*outputs, ui={"3d": [entry]})


NODES = [SaveParts]
