"""PartGen Render Views through its library call: an existing mesh → the pipeline's views + input image."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from partgen_models.assembly.load import load_parts
from partgen_models.assembly.mesh_interop import merge_parts, parts_from_host_mesh
from partgen_models.cameras import LAYOUTS
from partgen_models.evaluation.procedural import generate_object
from partgen_models.rendering.asset_views import INPUT_SIZE, AssetViewOptions, asset_parts, render_asset_views
from partgen_models.rendering.renderer import RenderError, RenderOptions
from partgen_models.parts import placed_mesh

EXAMPLE_MESH = Path(__file__).resolve().parents[1] / "example_workflows" / "partgen_example_chair.glb"
FAST = AssetViewOptions(view_size=64, render=RenderOptions(supersample=1))


@pytest.fixture(scope="module")
def chair_views():
    return render_asset_views(EXAMPLE_MESH)  # the defaults the node uses: 320 px, 3x3 supersampling


@pytest.fixture(scope="module")
def fast_views():
    return render_asset_views(EXAMPLE_MESH, FAST)


def test_example_mesh_is_the_procedural_chair():
    """example_workflows/partgen_example_chair.glb is generate_object("chair", 0), so it can be regenerated."""
    loaded = load_parts(EXAMPLE_MESH)  # default options: a manifold mesh, as Load Parts requires
    made = generate_object("chair", 0).parts
    assert [p.name for p in loaded] == [p.name for p in made] == [
        "seat", "leg_front_left", "leg_front_right", "leg_back_left", "leg_back_right", "backrest"]
    for a, b in zip(loaded, made):
        torch.testing.assert_close(placed_mesh(a)[0].float(), b.vertices)
        torch.testing.assert_close(a.vertex_colors, b.vertex_colors, atol=1e-5, rtol=0)  # linear COLOR_0 read back as display colour
        assert torch.equal(a.faces, b.faces)


def test_views_follow_the_layout(chair_views):
    views = chair_views
    layout = LAYOUTS["zero123pp_v12"]
    assert views.layout == "zero123pp_v12" and views.background == (1.0, 1.0, 1.0)
    assert views.images.shape == (6, 320, 320, 3) and views.alpha.shape == (6, 320, 320)
    assert views.images.dtype == torch.float32 and views.images.device.type == "cpu"
    torch.testing.assert_close(views.c2w, layout.camera_to_world())
    assert views.fov_deg == layout.fov_deg
    assert views.grid().shape == (960, 640, 3)
    covered = views.alpha.flatten(1).mean(1)
    assert bool((covered > 0.05).all()), covered  # the chair is seen in every view
    assert 0.0 < float(views.alpha.min()) or bool(((views.alpha > 0) & (views.alpha < 1)).any())  # antialiased edges
    corners = views.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert bool((corners == 1.0).all())  # on white


def test_input_image_is_the_prepared_front_view(chair_views):
    image = chair_views.input_image
    assert image.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    foreground = (image < 0.97).any(-1)
    rows, cols = foreground.any(1).nonzero().flatten(), foreground.any(0).nonzero().flatten()
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    # cropped and scaled as PartGen Multi-View prepares an uploaded image: the longer side spans 85%
    assert abs(max(height, width) / INPUT_SIZE - 0.85) < 0.02, (height, width)
    centre = ((rows[0] + rows[-1]) / 2 / INPUT_SIZE, (cols[0] + cols[-1]) / 2 / INPUT_SIZE)
    assert abs(float(centre[0]) - 0.5) < 0.02 and abs(float(centre[1]) - 0.5) < 0.02, centre
    # upright (Y up): the backrest fills the top of the image, the legs its bottom
    colours = {p.name: p.vertex_colors[0] for p in load_parts(EXAMPLE_MESH)}
    top, bottom = image[rows[0]: rows[0] + height // 5], image[rows[-1] - height // 5: rows[-1]]
    assert _shows(top, colours["backrest"]) and not _shows(top, colours["leg_front_left"])
    assert _shows(bottom, colours["leg_front_left"]) and not _shows(bottom, colours["backrest"])


def _shows(region: torch.Tensor, colour: torch.Tensor) -> bool:
    """Some pixel has ``colour`` under some amount of (grey) light: the same direction in RGB."""
    pixels = region.reshape(-1, 3)
    pixels = pixels[(pixels < 0.97).any(-1)]
    cosine = torch.nn.functional.cosine_similarity(pixels, colour[None].expand_as(pixels), dim=-1)
    return bool((cosine > 0.9995).any())


def test_rendering_is_deterministic_and_sources_agree(fast_views):
    parts = load_parts(EXAMPLE_MESH)
    again = render_asset_views(asset_parts(parts=parts), FAST)
    assert torch.equal(fast_views.images, again.images) and torch.equal(fast_views.input_image, again.input_image)
    # a core MESH (merged, no colours) covers the same pixels; its colour is the MESH default grey
    batch = merge_parts(parts)
    mesh = types.SimpleNamespace(vertices=batch.vertices, faces=batch.faces)
    from_mesh = render_asset_views(asset_parts(mesh_parts=parts_from_host_mesh(mesh)), FAST)
    assert torch.equal(from_mesh.alpha, fast_views.alpha)


def test_size_layout_and_elevation_options(fast_views):
    views = render_asset_views(EXAMPLE_MESH, AssetViewOptions(layout="zero123pp_v11", view_size=48,
                                                             input_elevation_deg=30.0,
                                                             render=RenderOptions(shading="unlit", supersample=1)))
    assert views.layout == "zero123pp_v11" and views.images.shape == (6, 48, 48, 3)
    torch.testing.assert_close(views.c2w, LAYOUTS["zero123pp_v11"].camera_to_world())
    assert views.input_image.shape == fast_views.input_image.shape
    assert not torch.equal(views.input_image, fast_views.input_image)  # seen from above
    # unlit: the mesh's own colours, exactly
    seat = next(p for p in load_parts(EXAMPLE_MESH) if p.name == "seat").vertex_colors[0]
    assert bool(((views.images - seat).abs().amax(-1) < 1e-6).any())


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give exactly one mesh to render: a file, parts or a MESH (got none)"),
    ({"file": EXAMPLE_MESH, "parts": []}, "give exactly one mesh to render: a file, parts or a MESH (got file and parts)"),
])
def test_exactly_one_source(kwargs, message):
    with pytest.raises(RenderError) as err:
        asset_parts(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("kwargs, message", [
    ({"layout": "grid_4x4"}, "unknown view layout 'grid_4x4'; known: zero123pp_v11, zero123pp_v12"),
    ({"view_size": 8}, "view_size must be within 16..2048 pixels, got 8"),
    ({"input_elevation_deg": 90.0}, "input_elevation_deg must be within -89..89, got 90.0"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(RenderError) as err:
        AssetViewOptions(**kwargs)
    assert str(err.value) == message


def test_empty_sources_are_refused():
    with pytest.raises(RenderError, match="there are no parts to render"):
        render_asset_views([], FAST)
    with pytest.raises(Exception, match="no such file"):
        render_asset_views(EXAMPLE_MESH.with_name("missing.glb"), FAST)


def test_a_mesh_over_the_face_limit_is_refused_before_rendering(monkeypatch):
    from partgen_models.rendering import asset_views

    monkeypatch.setattr(asset_views, "MAX_FACES", 10)
    parts = generate_object("chair", 0).parts
    faces = sum(int(p.faces.shape[0]) for p in parts)
    with pytest.raises(RenderError, match=f"the mesh has {faces:,} faces; Render Views draws at most 10 "
                                          r"\(about 1 KB of memory each while rendering\). Decimate it first"):
        render_asset_views(parts, FAST)
