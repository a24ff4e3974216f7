"""Interop nodes: PartGen parts ↔ ComfyUI's native MESH, and parts loaded from a GLB/glTF/OBJ file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from comfy_api.latest import Types, io

import folder_paths

from ..partgen_models.assembly.load import (
    LOADABLE_SUFFIXES,
    NON_MANIFOLD_POLICIES,
    LoadOptions,
    LoadPartsError,
    load_parts,
)
from ..partgen_models.assembly.mesh_interop import (
    MESH_SPLITS,
    parts_from_host_mesh,
    parts_to_mesh_batch,
    resolve_layout,
    to_host_mesh,
)
from . import host_features, sockets

MESH_3D_FOLDER = "3d"  # input/3d: where ComfyUI's own Load3D node keeps (and uploads) meshes


def loadable_files() -> list[str]:
    """GLB/glTF/OBJ files directly in input/ and anywhere under input/3d, relative to input/."""
    root = Path(folder_paths.get_input_directory())
    found = [p for p in root.glob("*") if p.suffix.lower() in LOADABLE_SUFFIXES and p.is_file()]
    found += [p for p in (root / MESH_3D_FOLDER).rglob("*") if p.suffix.lower() in LOADABLE_SUFFIXES and p.is_file()]
    return sorted(p.relative_to(root).as_posix() for p in found)


class PartsToMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenPartsToMesh",
            **host_features.search_aliases("parts to mesh", "convert parts"),
            display_name="PartGen Parts to MESH",
            category="PartGen/interop",
            description=(
                "PartGen parts → ComfyUI's native MESH, for core mesh nodes such as SaveGLB. Each part's transform is "
                "applied to its vertices. A MESH has no part names; vertex colours travel where the host's MESH has them."
            ),
            inputs=[
                sockets.Parts.Input("parts", tooltip="From PartGen Reconstruct or PartGen Load Parts."),
                io.Combo.Input(
                    "layout",
                    options=["auto", "per part", "merged"],
                    default="auto",
                    tooltip=(
                        "per part: one batch item per part; SaveGLB writes one file per part. A MESH batch has one size, "
                        "so smaller parts are padded (repeated last vertex, zero-area triangles) and the real sizes ride "
                        "along as vertex/face counts, which newer ComfyUI honours and older (0.3.x) core nodes ignore. "
                        "merged: all parts as one mesh, no padding. auto: per part where this ComfyUI's MESH has "
                        "per-item counts, else merged."
                    ),
                ),
            ],
            outputs=[io.Mesh.Output(display_name="mesh", tooltip="Connect to SaveGLB or other core MESH nodes.")],
        )

    @classmethod
    def execute(cls, parts, layout: str) -> io.NodeOutput:
        batch = parts_to_mesh_batch(parts, resolve_layout(layout, Types.MESH))
        return io.NodeOutput(to_host_mesh(batch, Types.MESH))


class MeshToParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenMeshToParts",
            **host_features.search_aliases("mesh to parts", "split mesh"),
            display_name="PartGen MESH to Parts",
            category="PartGen/interop",
            description=(
                "ComfyUI's native MESH → PartGen parts named <name_prefix>_00, _01... Padding added by a batch of "
                "different sizes is removed. Meshes without vertex colours become mid grey."
            ),
            inputs=[
                io.Mesh.Input("mesh", tooltip="A MESH from a core node (e.g. VAE Decode Hunyuan3D) or PartGen Parts to MESH."),
                io.Combo.Input(
                    "split",
                    options=list(MESH_SPLITS),
                    default=MESH_SPLITS[0],
                    tooltip=(
                        "batch items: one part per MESH batch item. connected components: every separate piece of "
                        "every item becomes a part (use it for a merged mesh), largest first."
                    ),
                ),
                io.String.Input("name_prefix", default="part", tooltip="Parts are named <name_prefix>_00, <name_prefix>_01, ..."),
            ],
            outputs=[sockets.Parts.Output(display_name="parts", tooltip="Connect to PartGen Save Parts or other PartGen nodes.")],
        )

    @classmethod
    def execute(cls, mesh, split: str, name_prefix: str) -> io.NodeOutput:
        return io.NodeOutput(parts_from_host_mesh(mesh, split, name_prefix.strip() or "part"))


class LoadParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenLoadParts",
            display_name="PartGen Load Parts",
            category="PartGen/interop",
            description=(
                "Reads a GLB, glTF or OBJ scene from ComfyUI's input folder (or input/3d) into PartGen parts: one part "
                "per mesh node (OBJ: per object/group), named after it, with node transforms applied (parts come back "
                "in the object frame, Y up) and vertex colours kept (grey where there are none)."
            ),
            inputs=[
                io.Combo.Input(
                    "file",
                    options=loadable_files(),
                    upload=io.UploadType.model,
                    tooltip="A .glb/.gltf/.obj in ComfyUI's input folder or input/3d (a glTF's .bin and textures next to it).",
                ),
                io.Combo.Input(
                    "non_manifold", **host_features.advanced(),
                    options=list(NON_MANIFOLD_POLICIES),
                    default="error",
                    tooltip=(
                        "A mesh with edges shared by more than two triangles: 'error' stops with the part's name; "
                        "'keep' loads it unchanged (rendering views does not need a clean surface)."
                    ),
                ),
                # ComfyUI 0.30+: a typed 3D file from core Load3D or PartGen Save Parts instead of the file list.
                *([io.MultiType.Input(
                    "model_3d", types=host_features.file3d_types(), optional=True,
                    tooltip=("A 3D file (GLB, glTF or OBJ) from Load 3D or PartGen Save Parts; when connected it is "
                             "read instead of 'file'."))]
                  if host_features.has_file3d() else []),
            ],
            outputs=[sockets.Parts.Output(display_name="parts", tooltip="Connect to PartGen Save Parts, Parts to MESH or Render Views.")],
            **host_features.search_aliases("import glb", "load mesh parts", "open gltf"),
        )

    @classmethod
    def execute(cls, file: str, non_manifold: str, model_3d: Any = None) -> io.NodeOutput:
        with _readable_path(file, model_3d) as path:
            return io.NodeOutput(load_parts(path, LoadOptions(non_manifold)))

    @classmethod
    def fingerprint_inputs(cls, file: str, non_manifold: str, model_3d: Any = None):
        if model_3d is not None:  # an upstream node's file: re-read whenever that node ran again
            return float("nan")
        # a file replaced under the same name must load again
        path = folder_paths.get_annotated_filepath(file)
        stat = os.stat(path) if os.path.isfile(path) else None
        return (file, non_manifold, stat.st_mtime_ns if stat else None, stat.st_size if stat else None)


@contextlib.contextmanager
def _readable_path(file: str, model_3d: Any) -> Iterator[Path]:
    """The file to read: ``model_3d`` (a host ``File3D``) when connected, else ``file`` from input/.

    A File3D held in memory is written to ComfyUI's temp folder for the loader and removed after."""
    if model_3d is None:
        yield Path(folder_paths.get_annotated_filepath(file))
        return
    suffix = f".{model_3d.format}" if model_3d.format else ""
    if suffix not in LOADABLE_SUFFIXES:
        raise LoadPartsError(f"model_3d: a {model_3d.format or 'format-less'} file cannot become parts; "
                             f"connect a {', '.join(LOADABLE_SUFFIXES)} file (Load 3D, PartGen Save Parts)")
    if model_3d.is_disk_backed:
        yield Path(model_3d.get_source())
        return
    temp_dir = Path(folder_paths.get_temp_directory())
    temp_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=temp_dir, prefix=".partgen-model3d-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(model_3d.get_bytes())
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


NODES = [PartsToMesh, MeshToParts, LoadParts]
