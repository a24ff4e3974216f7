import math

import pytest
import torch

from partgen_models.cameras import LAYOUTS, look_at_origin, normalized_intrinsics
from partgen_models.views import grid_to_views, views_to_grid


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_cameras_are_rigid_and_look_at_the_origin(name):
    layout = LAYOUTS[name]
    c2w = layout.camera_to_world()
    assert c2w.shape == (6, 4, 4)
    rotation = c2w[:, :3, :3]
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, torch.eye(3).expand(6, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(6), atol=1e-6)
    position = c2w[:, :3, 3]
    assert torch.allclose(position.norm(dim=-1), torch.full((6,), layout.radius), atol=1e-5)
    forward = -c2w[:, :3, 2]  # OpenGL cameras look down -z
    assert torch.allclose(forward, -position / layout.radius, atol=1e-6)


def test_zero123pp_v12_first_camera_matches_instantmesh_formula():
    c2w = LAYOUTS["zero123pp_v12"].camera_to_world()
    azimuth, elevation = math.radians(30), math.radians(20)
    expected = 4.0 * torch.tensor(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )
    assert torch.allclose(c2w[0, :3, 3], expected, atol=1e-5)
    assert LAYOUTS["zero123pp_v12"].elevations_deg == (20, -10, 20, -10, 20, -10)
    assert LAYOUTS["zero123pp_v11"].elevations_deg == (30, -20, 30, -20, 30, -20)
    # camera x axis is horizontal (z-up world), y axis points up-ish
    assert abs(c2w[0, 2, 0].item()) < 1e-6 and c2w[0, 2, 1].item() > 0


def test_look_at_handles_a_batch_of_angles():
    c2w = look_at_origin(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 0.0]), 2.0)
    assert torch.allclose(c2w[1, :3, 3], torch.tensor([0.0, 2.0, 0.0], dtype=c2w.dtype), atol=1e-6)


def test_intrinsics_for_30_degrees():
    fx, fy, cx, cy = normalized_intrinsics(30.0)
    assert fx == pytest.approx(0.5 / math.tan(math.radians(15)))
    assert (cx, cy) == (0.5, 0.5) and fx == fy


def test_grid_round_trip_is_row_major():
    views = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 4, 5, 3).clone()
    grid = views_to_grid(views, 3, 2)
    assert grid.shape == (12, 10, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 5, 0] == 1 and grid[4, 0, 0] == 2 and grid[11, 9, 0] == 5
    assert torch.equal(grid_to_views(grid, 3, 2), views)
    with pytest.raises(ValueError, match="do not fill"):
        views_to_grid(views[:5], 3, 2)
    with pytest.raises(ValueError, match="equal views"):
        grid_to_views(grid[:11], 3, 2)


def test_zero123pp_v12_layout_carries_instantmesh_field_of_view():
    # InstantMesh reconstructs Zero123++ v1.2 views with FoV 30 degrees (src/utils/camera_util.py):
    # the layout, not the caller, must carry it, and with it the normalised focal 0.5 / tan(15°) = 1.866.
    layout = LAYOUTS["zero123pp_v12"]
    assert layout.fov_deg == 30.0 and layout.radius == 4.0 and layout.view_size == 320
    fx, fy, cx, cy = normalized_intrinsics(layout.fov_deg)
    assert fx == fy == pytest.approx(1.8660254, abs=1e-6) and (cx, cy) == (0.5, 0.5)
