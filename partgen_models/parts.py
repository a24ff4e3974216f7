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
    """One named mesh. vertices ``[N,3]`` float32, faces ``[M,3]`` int64, vertex_colors ``[N,3]`` in 0..1,
    transform ``[4,4]`` placing the part in the object frame (identity when vertices already are).

    Carried from and back to a host MESH that has them (ComfyUI 0.30+), so a round trip through parts
    keeps them: uvs ``[N,2]`` texture coordinates, texture ``[H,W,3]`` in 0..1 sampled with them, and
    unlit (render flat, without scene lighting, as splat-derived meshes are saved)."""

    name: str
    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor
    transform: torch.Tensor = field(default_factory=lambda: torch.eye(4))
    display_color: Optional[tuple[float, float, float]] = None
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
        if self.uvs is not None and tuple(self.uvs.shape) != (self.vertices.shape[0], 2):
            raise ValueError(f"part {self.name!r}: uvs must be [N,2] with N = {self.vertices.shape[0]} vertices, "
                             f"got {tuple(self.uvs.shape)}")
        if self.texture is not None and (self.texture.ndim != 3 or self.texture.shape[-1] != 3):
            raise ValueError(f"part {self.name!r}: texture must be [H,W,3], got {tuple(self.texture.shape)}")

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


def zup_to_gltf(points: torch.Tensor) -> torch.Tensor:
    """InstantMesh world (z up, input camera on +x) → glTF (y up, input viewer looking down -z).

    A cyclic permutation of the axes, (x, y, z) → (y, z, x): a proper rotation, so windings and
    normals are preserved.
    """
    return points[..., [1, 2, 0]]
