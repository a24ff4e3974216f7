import logging
import math
from dataclasses import replace

import pytest
import torch
import trimesh

from partgen_models.cameras import LAYOUTS, instantmesh_camera_vectors
from partgen_models.parts import zup_to_gltf
from partgen_models.reconstruction import reconstruct as rec
from partgen_models.reconstruction.loader import load_instantmesh
from partgen_models.reconstruction.options import ReconstructionOptions
from partgen_models.runtime import Runtime
from partgen_models.testing.tiny_instantmesh import write_tiny_instantmesh
from partgen_models.views import PartViews


@pytest.fixture(scope="module")
def nerf_model(tmp_path_factory):
    return load_instantmesh(write_tiny_instantmesh(tmp_path_factory.mktemp("lrm") / "instant_nerf_large.ckpt", "nerf"))


def _part_views(parts: int = 2, size: int = 64, background=(1.0, 1.0, 1.0)) -> PartViews:
    generator = torch.Generator().manual_seed(0)
    alpha = torch.zeros(parts, 6, size, size)
    alpha[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    colour = torch.rand(parts, 6, size, size, 3, generator=generator)
    images = colour * alpha[..., None] + torch.tensor(background) * (1 - alpha[..., None])
    layout = LAYOUTS["zero123pp_v12"]
    names = tuple(f"part_{i}" for i in range(parts))
    return PartViews(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, background, names)


def test_camera_vectors_are_instantmesh_layout():
    c2w = LAYOUTS["zero123pp_v12"].camera_to_world()
    vectors = instantmesh_camera_vectors(c2w, 30.0)
    assert vectors.shape == (6, 16)
    assert torch.equal(vectors[:, :12], c2w[:, :3, :4].reshape(6, 12))
    focal = 0.5 / math.tan(math.radians(15))
    assert torch.allclose(vectors[0, 12:], torch.tensor([focal, focal, 0.5, 0.5]))


def test_views_are_moved_to_white_and_resized(caplog):
    views = _part_views(1, 64, background=(0.5, 0.5, 0.5))
    with caplog.at_level(logging.INFO, logger=rec.__name__):
        images, cameras = rec.prepare_views(views, (0, 2, 4, 5))
    assert images.shape == (1, 4, 3, 320, 320) and cameras.shape == (4, 16)
    assert torch.allclose(images[0, 0, :, 0, 0], torch.ones(3))  # gray background became white
    assert "resizing 64x64 views to 320 px" in caplog.text


def test_parts_are_batched_through_the_transformer(nerf_model):
    views = _part_views(3)
    images, cameras = rec.prepare_views(views, tuple(range(6)))
    runtime = Runtime()
    batched = rec.encode_parts(nerf_model, images, cameras, ReconstructionOptions(), runtime)
    calls = []
    hook = nerf_model.transformer.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        rec.encode_parts(nerf_model, images, cameras, ReconstructionOptions(), runtime)
        single = torch.cat([rec.encode_parts(nerf_model, images[i : i + 1], cameras, ReconstructionOptions(), runtime) for i in range(3)])
    finally:
        hook.remove()
    assert calls[0] == 3  # one batch of three parts, not three calls
    assert torch.allclose(batched, single, atol=1e-5)


def _sphere_field(monkeypatch, model, radius=0.5):
    """Make the decoder see positions: density 20 inside a sphere of ``radius``, 0 outside."""
    monkeypatch.setattr(rec, "_features", lambda model, planes, points: points.to(torch.float32))

    def density_and_color(points):
        inside = 20.0 * torch.sigmoid((radius - points.norm(dim=-1)) * 40.0)
        return inside, (points + 1) / 2

    monkeypatch.setattr(model.decoder, "density_and_color", density_and_color)


def test_marching_cubes_of_a_closed_field_is_watertight_and_outward(nerf_model, monkeypatch):
    _sphere_field(monkeypatch, nerf_model)
    planes = torch.zeros(1, 3, 8, 16, 16)
    vertices, faces = rec.extract_marching_cubes(nerf_model, planes, 48, ReconstructionOptions(memory_budget_mb=64), Runtime())
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=True)
    assert mesh.is_watertight
    assert mesh.volume > 0  # faces wind outwards
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.05)


def test_pipeline_skips_empty_parts_and_returns_gltf_frame_parts(nerf_model, monkeypatch, caplog):
    _sphere_field(monkeypatch, nerf_model, radius=0.4)
    views = _part_views(2)
    views.alpha[1] = 0.0  # the second part has no foreground at all
    seen = []
    with caplog.at_level(logging.WARNING):
        parts = rec.reconstruct_parts(
            nerf_model, views, ReconstructionOptions(resolution=32), Runtime(progress=lambda s, t, p: seen.append((s, t)))
        )
    assert [p.name for p in parts] == ["part_0"]
    assert "'part_1' has no foreground" in caplog.text
    part = parts[0]
    assert part.vertex_colors.min() >= 0 and part.vertex_colors.max() <= 1
    assert seen == [(1, 1)]
    # colours were queried at z-up positions: colour = (p_zup + 1) / 2, vertices are glTF (y, z, x)
    zup = part.vertex_colors * 2 - 1
    assert torch.allclose(zup_to_gltf(zup), part.vertices, atol=1e-4)


def test_decimation_reduces_faces(nerf_model, monkeypatch):
    _sphere_field(monkeypatch, nerf_model)
    parts = rec.reconstruct_parts(nerf_model, _part_views(1), ReconstructionOptions(resolution=40, target_faces=200))
    assert 0 < parts[0].num_faces <= 260
    assert parts[0].vertex_colors.shape == parts[0].vertices.shape


def test_bad_views_say_what_is_wrong(nerf_model):
    views = _part_views(1)
    views.alpha.zero_()
    with pytest.raises(rec.ReconstructionError, match="none of the 1 parts has any foreground"):
        rec.reconstruct_parts(nerf_model, views)
    nan_views = _part_views(1)
    nan_views.images[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(rec.ReconstructionError, match="NaN"):
        rec.reconstruct_parts(nerf_model, nan_views)
    layout = LAYOUTS["zero123pp_v12"]
    four = PartViews(torch.ones(1, 4, 8, 8, 3), torch.ones(1, 4, 8, 8), layout.camera_to_world()[:4], 30.0,
                     layout.name, (1.0, 1.0, 1.0), ("a",))
    with pytest.raises(rec.ReconstructionError, match="4 views given.*6 Zero123\\+\\+ views"):
        rec.reconstruct_parts(nerf_model, four)
    with pytest.raises(ValueError, match="views must be one of"):
        ReconstructionOptions(views="1,2")


def _open_edges(faces: torch.Tensor) -> int:
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return int((counts != 2).sum())


@pytest.mark.parametrize("variant", ["mesh", "nerf"])
def test_random_weights_give_closed_surfaces_at_the_grid_boundary(tmp_path, variant):
    """Untrained weights give fields that are still inside where the grid ends; the surface must close there."""
    name = "instant_mesh_large.ckpt" if variant == "mesh" else "instant_nerf_large.ckpt"
    model = load_instantmesh(write_tiny_instantmesh(tmp_path / name, variant, seed=0))
    planes = torch.randn(1, 3, model.config.triplane_dim, 16, 16, generator=torch.Generator().manual_seed(1))
    extract = rec.extract_flexicubes if variant == "mesh" else rec.extract_marching_cubes
    options = ReconstructionOptions(memory_budget_mb=64, density_threshold=0.3)  # about the random field's median
    with torch.no_grad():
        _, open_faces = extract(model, planes, 16, replace(options, watertight=False), Runtime())
        vertices, faces = extract(model, planes, 16, options, Runtime())
    assert faces.shape[0] > 0
    assert _open_edges(faces) == 0, "the surface is open"
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=True)
    assert mesh.is_watertight
    assert open_faces.shape[0] and _open_edges(open_faces) > 0  # the same field without closing is open


def test_reconstructed_parts_get_a_baked_texture_and_export_it(nerf_model, monkeypatch, tmp_path):
    pytest.importorskip("xatlas")
    from partgen_models.assembly.export import ExportOptions, export_parts

    _sphere_field(monkeypatch, nerf_model, radius=0.4)
    options = ReconstructionOptions(resolution=24, target_faces=300, texture="field", texture_size=512)
    (part,) = rec.reconstruct_parts(nerf_model, _part_views(1), options)
    assert part.has_texture and part.texture.shape == (512, 512, 3) and part.uvs.shape == (part.vertices.shape[0], 2)
    assert part.source == "reconstruction"
    # the field's colour is (p + 1) / 2 in z-up: the texture holds the colours of the surface points
    assert float(part.texture.std()) > 0.05
    result = export_parts([part], tmp_path, ExportOptions("tex/part", part_format="obj"))
    from gltf_import import read_glb
    from test_gltf_validator import require_valid_gltf

    document, nodes = read_glb(tmp_path / result.scene)
    assert document["images"][0]["mimeType"] == "image/png" and "TEXCOORD_0" in document["meshes"][0]["primitives"][0]["attributes"]
    assert nodes[1].material["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert nodes[1].linear_colors is None  # the texture, not vertex colours, carries the colour
    require_valid_gltf([tmp_path / result.scene])
    sidecars = sorted(p.suffix for p in (tmp_path / "tex").iterdir() if "_part" in p.name)
    assert sidecars == [".mtl", ".obj", ".png"]
    obj = tmp_path / result.part_files[0]
    assert f"map_Kd {obj.stem}.png" in obj.with_suffix(".mtl").read_text() and "vt " in obj.read_text()


def test_texture_options_are_validated():
    with pytest.raises(ValueError, match=r"texture must be one of \('off', 'views\+field', 'views', 'field'\), got 'on'"):
        ReconstructionOptions(texture="on")
    with pytest.raises(ValueError, match="texture size must be an integer within 512..4096, got 100"):
        ReconstructionOptions(texture="field", texture_size=100)


def test_a_part_without_surface_is_skipped_with_what_happened_and_what_to_try(nerf_model, monkeypatch, caplog):
    _sphere_field(monkeypatch, nerf_model, radius=-1.0)  # density about 0 everywhere: never crosses 10
    with caplog.at_level(logging.WARNING), pytest.raises(rec.ReconstructionError, match="no part produced a surface"):
        rec.reconstruct_parts(nerf_model, _part_views(1), ReconstructionOptions(resolution=24))
    message = caplog.text
    assert "'part_0' is skipped: the predicted density never crosses density_threshold 10 on the 24^3 grid" in message
    assert "Try:" in message and "a lower density_threshold" in message


def test_flexicubes_without_sign_change_says_so(tmp_path, monkeypatch):
    model = load_instantmesh(write_tiny_instantmesh(tmp_path / "instant_mesh_large.ckpt", "mesh"))
    monkeypatch.setattr(rec, "_features", lambda model, planes, points: points.to(torch.float32))
    monkeypatch.setattr(model.decoder, "sdf", lambda points: torch.full((points.shape[0],), 0.25))
    planes = torch.zeros(1, 3, model.config.triplane_dim, 8, 8)
    with pytest.raises(rec.NoSurface, match=r"never changes sign on the 16\^3 grid \(every value is positive: "
                                            r"0.25..0.25\).*Upstream InstantMesh would output the grid's bounding box"):
        rec.extract_flexicubes(model, planes, 16, ReconstructionOptions(), Runtime())


@pytest.fixture(scope="module")
def mesh_model(tmp_path_factory):
    return load_instantmesh(write_tiny_instantmesh(tmp_path_factory.mktemp("lrm") / "instant_mesh_large.ckpt", "mesh"))


def _dense_flexicubes(model, planes, resolution):
    """The extraction as upstream runs it: every grid vertex queried and deformed, all corner features."""
    from partgen_models.reconstruction.flexicubes import extract_mesh, make_grid, surface_cubes

    grid = make_grid(resolution, rec.GRID_SCALE)
    features = rec._features(model, planes, grid.vertices)
    sdf, deformation = model.decoder.sdf_and_deformation(features)
    sdf = rec.close_at_grid_boundary_sdf(sdf.float(), resolution)
    vertices = grid.vertices + torch.tanh(deformation.float()) / (resolution * rec.DEFORMATION_MULTIPLIER)
    cube_ids = surface_cubes(grid, sdf)
    weights = model.decoder.cube_weights(features[grid.cubes[cube_ids]].reshape(cube_ids.shape[0], -1)).float()
    return extract_mesh(grid, sdf, vertices, cube_ids, weights)


def test_chunked_surface_only_flexicubes_equals_the_dense_extraction(mesh_model, monkeypatch):
    planes = torch.randn(1, 3, mesh_model.config.triplane_dim, 16, 16, generator=torch.Generator().manual_seed(3))
    expected_vertices, expected_faces = _dense_flexicubes(mesh_model, planes, 20)
    monkeypatch.setattr(rec, "_points_per_chunk", lambda model, budget_mb, width_factor=1: 333)  # many small chunks
    vertices, faces = rec.extract_flexicubes(mesh_model, planes, 20, ReconstructionOptions(), Runtime())
    assert faces.shape[0] > 1000
    assert torch.equal(faces, expected_faces)
    torch.testing.assert_close(vertices, expected_vertices, rtol=0, atol=1e-6)


def test_a_resolution_over_the_memory_budget_is_refused_before_anything_runs(mesh_model, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model ran although the grid is over budget")

    monkeypatch.setattr(mesh_model, "forward_planes", never)
    with pytest.raises(rec.OverBudget, match=r"resolution 512 needs about 1610 MB for its 512\^3 extraction grid and "
                                            r"queries, over memory_budget_mb=1024. Raise memory_budget_mb to at least 1610 "
                                            r".*or lower resolution to 432 or less"):
        rec.reconstruct_parts(mesh_model, _part_views(1), ReconstructionOptions(resolution=512))


def test_a_surface_over_the_memory_budget_is_refused_with_what_it_needs(mesh_model, monkeypatch):
    monkeypatch.setattr(rec, "SURFACE_BYTES_PER_CUBE", 2**20)  # 1 MB a cell: any surface is over 64 MB
    planes = torch.randn(1, 3, mesh_model.config.triplane_dim, 16, 16, generator=torch.Generator().manual_seed(3))
    with pytest.raises(rec.OverBudget, match=r"the surface crosses \d+ of the 16\^3 grid's cells .* needs about \d+ MB, "
                                            r"over memory_budget_mb=64. Raise memory_budget_mb to at least \d+"):
        rec.extract_flexicubes(mesh_model, planes, 16, ReconstructionOptions(memory_budget_mb=64), Runtime())


def test_a_marching_cubes_surface_over_the_budget_is_refused(nerf_model, monkeypatch):
    _sphere_field(monkeypatch, nerf_model)
    monkeypatch.setattr(rec, "SURFACE_BYTES_PER_CUBE", 2**20)
    planes = torch.zeros(1, 3, nerf_model.config.triplane_dim, 8, 8)
    with pytest.raises(rec.OverBudget, match=r"the surface crosses \d+ of the 24\^3 grid's edges .* over "
                                            r"memory_budget_mb=64. Raise memory_budget_mb"):
        rec.extract_marching_cubes(nerf_model, planes, 24, ReconstructionOptions(memory_budget_mb=64), Runtime())
