"""The 3D parts that flow out of reconstruction (``PARTGEN_PARTS``).

Frame: glTF convention, Y up, right-handed, unit-less (the reconstruction's object fits in about
[-1, 1]). The input image's viewer looks down -Z, so the object's front faces +Z. InstantMesh works
z-up with the input camera on +X; :func:`zup_to_gltf` maps its coordinates here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass(frozen=True)
class Part:
    """One named mesh. vertices ``[N,3]`` float32, faces ``[M,3]`` int64, vertex_colors ``[N,3]`` in 0..1
    (display colours, sRGB), transform ``[4,4]`` placing the part in the object frame (identity when
    vertices already are; see :func:`placed_mesh`).

    Carried from and back to a host MESH that has them (ComfyUI 0.30+), so a round trip through parts
    keeps them: uvs and texture (below) and unlit (render flat, without scene lighting, as
    splat-derived meshes are saved)."""

    name: str
    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor
    transform: torch.Tensor = field(default_factory=lambda: torch.eye(4))
    display_color: Optional[tuple[float, float, float]] = None
    source: str = ""  # what made the part ("reconstruction", "procedural", "file:chair.glb"), for export metadata
    # A base-colour texture: uvs ``[N,2]`` per vertex in glTF's convention (origin at the image's
    # top-left, v down), texture ``[H,W,3]`` display (sRGB) colours in 0..1. A texture needs uvs; uvs
    # may come alone (a host MESH without a texture). vertex_colors stay as the fallback a format
    # without textures uses.
    uvs: Optional[torch.Tensor] = None
    texture: Optional[torch.Tensor] = None
    unlit: bool = False

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[-1] != 3:
            raise ValueError(f"part {self.name!r}: vertices must be [N,3], got {tuple(self.vertices.shape)}")
        if self.faces.ndim != 2 or self.faces.shape[-1] != 3:
            raise ValueError(f"part {self.name!r}: faces must be [M,3], got {tuple(self.faces.shape)}")
        if self.vertex_colors.shape != self.vertices.shape:
            raise ValueError(f"part {self.name!r}: vertex_colors {tuple(self.vertex_colors.shape)} do not match vertices")
        if self.texture is not None and self.uvs is None:
            raise ValueError(f"part {self.name!r}: a texture needs uvs (texture coordinates per vertex); got none")
        if self.uvs is not None and tuple(self.uvs.shape) != (self.vertices.shape[0], 2):
            raise ValueError(f"part {self.name!r}: uvs must be [N,2] with N = {self.vertices.shape[0]} vertices, "
                             f"got {tuple(self.uvs.shape)}")
        if self.texture is not None and (self.texture.ndim != 3 or self.texture.shape[-1] != 3):
            raise ValueError(f"part {self.name!r}: texture must be [H,W,3], got {tuple(self.texture.shape)}")

    @property
    def has_texture(self) -> bool:
        return self.texture is not None and self.uvs is not None

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


def zup_to_gltf(points: torch.Tensor) -> torch.Tensor:
    """InstantMesh world (z up, input camera on +x) → glTF (y up, input viewer looking down -z).

    A cyclic permutation of the axes, (x, y, z) → (y, z, x): a proper rotation, so windings and
    normals are preserved.
    """
    return points[..., [1, 2, 0]]


def place(vertices: torch.Tensor, faces: torch.Tensor, transform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices ``[N,3]`` and faces ``[M,3]`` moved by ``transform`` ``[4,4]`` into its parent frame.

    The one placement rule every stage uses (export, MESH interop, renderer, loader): vertices in
    float64, and a mirroring transform (negative determinant) reverses the winding so the surface
    keeps facing outwards, as glTF asks of importers (glTF 2.0 §3.7.4, "determinant of the world
    transform"). An identity transform returns the inputs unchanged, bit for bit.
    """
    transform = transform.to(torch.float64)
    points = vertices.to(torch.float64)
    faces = faces.long()
    if torch.equal(transform, torch.eye(4, dtype=torch.float64)):
        return points, faces
    points = points @ transform[:3, :3].T + transform[:3, 3]
    if is_mirroring(transform):
        faces = faces.flip(-1)
    return points, faces


def is_mirroring(transform: torch.Tensor) -> bool:
    return bool(torch.det(transform[:3, :3].to(torch.float64)) < 0)


def placed_mesh(part: Part) -> tuple[torch.Tensor, torch.Tensor]:
    """The part's vertices (float64) and faces in the object frame: :func:`place` with its ``transform``."""
    return place(part.vertices, part.faces, part.transform)
