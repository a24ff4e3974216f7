"""View layouts and their cameras.

A layout names how a multi-view model arranges its views in one grid image and where each view's
camera sits. Cameras follow InstantMesh's ``src/utils/camera_util.py`` convention so the
reconstruction stage consumes them unchanged: world z-up, OpenGL camera-to-world matrices looking at
the origin from ``radius`` 4.0, azimuth measured from +x towards +y, relative to the input view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ViewLayout:
    """Grid arrangement and cameras of one multi-view model family.

    ``azimuths_deg``/``elevations_deg`` are listed in row-major grid order.
    """

    name: str
    rows: int
    cols: int
    view_size: int
    azimuths_deg: tuple[float, ...]
    elevations_deg: tuple[float, ...]
    fov_deg: float
    radius: float = 4.0

    @property
    def num_views(self) -> int:
        return self.rows * self.cols

    def camera_to_world(self) -> torch.Tensor:
        """OpenGL camera-to-world matrices ``[V,4,4]`` (float32)."""
        return look_at_origin(
            torch.tensor(self.azimuths_deg, dtype=torch.float64),
            torch.tensor(self.elevations_deg, dtype=torch.float64),
            self.radius,
        ).float()


_ZERO123PP_AZIMUTHS = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)

LAYOUTS: dict[str, ViewLayout] = {
    # Zero123++ v1.1: elevations alternate 30/-20 (README of SUDO-AI-3D/zero123plus).
    "zero123pp_v11": ViewLayout("zero123pp_v11", 3, 2, 320, _ZERO123PP_AZIMUTHS, (30.0, -20.0) * 3, 30.0),
    # Zero123++ v1.2: elevations alternate 20/-10, FoV 30 degrees; InstantMesh reconstructs from these.
    "zero123pp_v12": ViewLayout("zero123pp_v12", 3, 2, 320, _ZERO123PP_AZIMUTHS, (20.0, -10.0) * 3, 30.0),
}


def look_at_origin(azimuths_deg: torch.Tensor, elevations_deg: torch.Tensor, radius: float) -> torch.Tensor:
    """Cameras on a sphere looking at the origin with world up +z, as InstantMesh builds them."""
    azimuth = torch.deg2rad(azimuths_deg)
    elevation = torch.deg2rad(elevations_deg)
    position = radius * torch.stack(
        [elevation.cos() * azimuth.cos(), elevation.cos() * azimuth.sin(), elevation.sin()], dim=-1
    )  # (V, 3)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype).expand_as(position)
    z_axis = torch.nn.functional.normalize(position, dim=-1)  # OpenGL cameras look down -z
    x_axis = torch.nn.functional.normalize(torch.linalg.cross(up, z_axis, dim=-1), dim=-1)
    y_axis = torch.nn.functional.normalize(torch.linalg.cross(z_axis, x_axis, dim=-1), dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x_axis, y_axis, z_axis, position
    c2w[:, 3, 3] = 1.0
    return c2w


def normalized_intrinsics(fov_deg: float) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in units of the image size, as InstantMesh's ``FOV_to_intrinsics``."""
    focal = 0.5 / math.tan(math.radians(fov_deg) * 0.5)
    return focal, focal, 0.5, 0.5


def instantmesh_camera_vectors(c2w: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """The LRM's 16-value cameras ``[V,16]``: flattened c2w[:3,:4] then normalised fx, fy, cx, cy
    (InstantMesh ``get_zero123plus_input_cameras``)."""
    intrinsics = torch.tensor(normalized_intrinsics(fov_deg), dtype=torch.float32).expand(c2w.shape[0], 4)
    return torch.cat([c2w[:, :3, :4].reshape(-1, 12).float(), intrinsics], dim=-1)
