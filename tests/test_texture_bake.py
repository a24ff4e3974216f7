"""Baked textures: a part with known colours is drawn into views at known cameras, baked, and the
texture read back at each vertex's UV must give that vertex's colour; the colour field fills what no
view sees; bad input falls back with a warning that names the part."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
import trimesh

pytest.importorskip("xatlas")

from partgen_models.cameras import LAYOUTS  # noqa: E402
from partgen_models.rendering.rasterizer import rasterize  # noqa: E402
from partgen_models.reconstruction.texture import (  # noqa: E402
    PartViewsOfOne, TextureError, TextureOptions, bake_texture, dilate, rasterize_uv)

SIZE = 512


def colour_of(points: torch.Tensor) -> torch.Tensor:
    """A smooth colour pattern over space, to check that texels get the colour of their own point."""
    return torch.stack([0.5 + 0.5 * torch.sin(3 * points[:, 0]), 0.5 + 0.5 * torch.cos(2 * points[:, 1]),
                        (points[:, 2] + 1) / 2], dim=-1).clamp(0, 1)


@pytest.fixture(scope="module")
def ball():
    mesh = trimesh.creation.icosphere(3, radius=0.6)
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


def _views(vertices, faces, size=160) -> PartViewsOfOne:
    layout = LAYOUTS["zero123pp_v12"]
    c2w = layout.camera_to_world()
    raster = rasterize(vertices, faces, c2w, layout.fov_deg, size)
    corners = vertices[faces[raster.triangle.clamp(min=0)]]  # (V, S, S, 3, 3)
    points = (corners * raster.barycentric[..., None]).sum(-2)
    images = torch.where(raster.hit[..., None], colour_of(points.reshape(-1, 3)).reshape(points.shape), torch.ones(3))
    return PartViewsOfOne(images, raster.hit.float(), c2w, layout.fov_deg)


def _texture_at_uvs(baked) -> torch.Tensor:
    grid = (baked.uvs * 2 - 1)[None, None]  # (1, 1, K, 2), x = u, y = v (down)
    sampled = F.grid_sample(baked.texture.permute(2, 0, 1)[None], grid, align_corners=False)
    return sampled[0, :, 0].T


def test_views_are_projected_onto_the_texture(ball):
    vertices, faces = ball
    baked = bake_texture("ball", vertices, faces, TextureOptions(size=SIZE, source="views"), views=_views(vertices, faces))
    assert baked.texture.shape == (SIZE, SIZE, 3) and baked.uvs.shape == (baked.vertices.shape[0], 2)
    assert torch.equal(baked.vertices, vertices[baked.source_vertex])
    assert baked.from_views > 0.9 and baked.from_field == 0.0
    error = (_texture_at_uvs(baked) - colour_of(baked.vertices)).abs()
    assert float(error.mean()) < 0.03, float(error.mean())


def test_the_field_fills_what_no_view_sees(ball):
    vertices, faces = ball
    views = _views(vertices, faces)
    hidden = PartViewsOfOne(views.images[:1], views.alpha[:1], views.c2w[:1], views.fov_deg)  # one view: the back is unseen
    calls = []

    def field(points):
        calls.append(points.shape[0])
        return colour_of(points)

    baked = bake_texture("ball", vertices, faces, TextureOptions(size=SIZE), field_color=field, views=hidden)
    assert 0.1 < baked.from_views < 0.7 and baked.from_field > 0.3 and calls
    error = (_texture_at_uvs(baked) - colour_of(baked.vertices)).abs()
    assert float(error.mean()) < 0.03, float(error.mean())


def test_field_only_is_instantmeshs_texture_path(ball):
    vertices, faces = ball
    baked = bake_texture("ball", vertices, faces, TextureOptions(size=SIZE, source="field"), field_color=colour_of)
    assert baked.from_field == 1.0 and baked.from_views == 0.0
    assert float((_texture_at_uvs(baked) - colour_of(baked.vertices)).abs().mean()) < 0.02


def test_a_part_no_view_sees_falls_back_with_a_named_warning(ball, caplog):
    vertices, faces = ball
    views = _views(vertices, faces)
    blind = PartViewsOfOne(views.images, torch.zeros_like(views.alpha), views.c2w, views.fov_deg)
    with caplog.at_level(logging.WARNING):
        assert bake_texture("wheel", vertices, faces, TextureOptions(size=SIZE), views=blind) is None
    assert "part 'wheel': none of its views sees its surface; keeping vertex colours" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        baked = bake_texture("wheel", vertices, faces, TextureOptions(size=SIZE), field_color=colour_of, views=blind)
    assert baked is not None and baked.from_field == 1.0
    assert "part 'wheel': none of its views sees its surface; using the colour field" in caplog.text


def test_zero_area_faces_fall_back_with_a_named_warning(caplog):
    flat = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])  # collinear: no area
    with caplog.at_level(logging.WARNING):
        assert bake_texture("sliver", flat, torch.tensor([[0, 1, 2]]), TextureOptions(size=SIZE), field_color=colour_of) is None
    assert "part 'sliver': no face has any area, so there is nothing to texture; keeping vertex colours" in caplog.text


def test_zero_area_faces_among_good_ones_do_not_break_the_bake(ball):
    vertices, faces = ball
    vertices = torch.cat([vertices, vertices[:1]])  # a duplicate vertex makes a zero-area face
    faces = torch.cat([faces, torch.tensor([[0, vertices.shape[0] - 1, 0]])])
    baked = bake_texture("ball", vertices, faces, TextureOptions(size=SIZE, source="field"), field_color=colour_of)
    assert baked is not None and torch.isfinite(baked.texture).all()


def test_uv_rasterisation_is_exact_and_dilation_fills_the_gutter():
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    triangle, weights = rasterize_uv(uvs, torch.tensor([[0, 1, 2]]), 8, torch.device("cpu"))
    # texel (row 1, col 2) has its centre at u = 2.5/8, v = 1.5/8: weights (1 - u - v, u, v)
    assert triangle[1, 2] == 0 and torch.allclose(weights[1, 2], torch.tensor([0.5, 2.5 / 8, 1.5 / 8]), atol=1e-5)
    assert triangle[7, 7] == -1
    texture = torch.zeros(4, 4, 3)
    texture[0, 0] = 1.0
    filled = torch.zeros(4, 4, dtype=torch.bool)
    filled[0, 0] = True
    grown = dilate(texture, filled, 1)
    assert torch.equal(grown[1, 1], torch.ones(3)) and torch.equal(grown[3, 3], torch.zeros(3))


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=256), "texture size must be an integer within 512..4096, got 256"),
    (dict(size=8192), "texture size must be an integer within 512..4096, got 8192"),
    (dict(source="photo"), "texture source must be one of ('views+field', 'views', 'field'), got 'photo'"),
    (dict(view_sharpness=float("nan")), "view_sharpness must be a finite number >= 0, got nan"),
])
def test_bad_texture_options_are_refused(kwargs, message):
    import re

    with pytest.raises(TextureError, match=re.escape(message)):
        TextureOptions(**kwargs)


def test_a_missing_xatlas_says_how_to_install_it(ball, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_xatlas(name, *args, **kwargs):
        if name == "xatlas":
            raise ImportError("No module named 'xatlas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xatlas)
    vertices, faces = ball
    with pytest.raises(ImportError, match="baking textures needs xatlas: pip install xatlas \\(or set texture to 'off'"):
        bake_texture("ball", vertices, faces, TextureOptions(size=SIZE), field_color=colour_of)


def test_view_colours_in_chunks_equal_one_pass(ball):
    from partgen_models.reconstruction.texture import colors_from_views

    vertices, faces = ball
    points = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.6
    normals = F.normalize(points, dim=-1)
    views, options = _views(vertices, faces), TextureOptions()
    whole = colors_from_views(points, normals, vertices, faces, views, options, chunk=1000)
    chunked = colors_from_views(points, normals, vertices, faces, views, options, chunk=77)
    assert bool((whole[1] > 0).any())
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
