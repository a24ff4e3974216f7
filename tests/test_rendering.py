"""The plain-torch renderer: silhouettes, frames, part ids, occlusion, alpha, amodal parts, GLB input, timing."""

import math
import time

import numpy as np
import pytest
import torch

from partgen_models.cameras import LAYOUTS
from partgen_models.parts import Part, placed_mesh, zup_to_gltf
from partgen_models.assembly.load import LoadPartsError
from partgen_models.rendering import (
    Normalization,
    RenderCameras,
    RenderError,
    RenderOptions,
    fit_normalization,
    gltf_to_zup,
    load_scene_parts,
    rasterize,
    render_part_alone,
    render_parts,
)

SIZE = 320
FOCAL = 0.5 / math.tan(math.radians(15.0)) * SIZE  # pixels, FoV 30° (InstantMesh's FOV_to_intrinsics)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The rasteriser's kernels are small and memory-bound; on a shared 2-core runner two intra-op
    threads oversubscribe the cores (measured 10x CPU time), so these tests use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def box_part(name, center_gltf, size, color=(0.8, 0.2, 0.2)):
    import trimesh

    mesh = trimesh.creation.box(extents=size)
    vertices = torch.tensor(np.asarray(mesh.vertices) + np.asarray(center_gltf), dtype=torch.float32)
    return Part(name, vertices, torch.tensor(np.asarray(mesh.faces)), torch.tensor(color).expand_as(vertices).clone())


def front_camera(size=SIZE):
    """InstantMesh's azimuth-0 camera: on +x (z-up world), i.e. on glTF +z looking at the object's front."""
    return RenderCameras.orbit([0.0], [0.0], radius=4.0, fov_deg=30.0, size=size)


def test_unit_cube_silhouette_has_the_pinhole_area_and_position():
    rendering = render_parts([box_part("cube", (0, 0, 0), (1, 1, 1))], front_camera(), normalization="none")
    # The face nearest the camera is at depth 4 - 0.5 = 3.5; its half-width projects to
    # FOCAL * 0.5 / 3.5 = 85.30 px around the centre 160: pixel centres c + 0.5 in [74.70, 245.30],
    # i.e. columns (and rows) 75..244: 170 x 170 = 28,900 pixels.
    mask = rendering.part_ids[0] == 0
    assert FOCAL * 0.5 / 3.5 == pytest.approx(85.30, abs=0.01)
    assert int(mask.sum()) == 170 * 170
    rows, cols = mask.nonzero().T
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (75, 244, 75, 244)
    assert rendering.depth[0][mask].min().item() == pytest.approx(3.5, abs=1e-5)
    assert rendering.depth[0][mask].max().item() == pytest.approx(3.5, abs=1e-5)  # a fronto-parallel face


def test_frames_glTF_parts_and_zup_cameras_agree():
    # glTF +y is up (z-up +z): a box above the origin is drawn above the image centre in every view.
    above = render_parts([box_part("above", (0, 1.0, 0), (0.2, 0.2, 0.2))], RenderCameras.from_layout("zero123pp_v12"),
                         normalization="none")
    for view in range(6):
        rows = (above.part_ids[view] == 0).nonzero()[:, 0].float()
        assert rows.numel() > 0 and rows.mean() < SIZE / 2 - 20
    # glTF +x is z-up +y: seen from azimuth 0 (camera on +x, up +z) it is on the image's right.
    right = render_parts([box_part("right", (1.0, 0, 0), (0.2, 0.2, 0.2))], front_camera(), normalization="none")
    cols = (right.part_ids[0] == 0).nonzero()[:, 1].float()
    assert cols.mean() > SIZE / 2 + 20
    # glTF +z (the front) faces the azimuth-0 camera: a box there is nearer than the origin.
    front = render_parts([box_part("front", (0, 0, 1.0), (0.2, 0.2, 0.2))], front_camera(), normalization="none")
    assert front.depth[0][front.part_ids[0] == 0].min() == pytest.approx(4.0 - 1.0 - 0.1, abs=1e-4)
    assert torch.equal(gltf_to_zup(zup_to_gltf(torch.arange(6.0).view(2, 3))), torch.arange(6.0).view(2, 3))
    # a part's transform places it in the object frame before anything else
    at_origin = box_part("front", (0, 0, 0), (0.2, 0.2, 0.2))
    moved = Part("front", at_origin.vertices, at_origin.faces, at_origin.vertex_colors,
                 transform=torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1.0], [0, 0, 0, 1]]))
    assert torch.equal(render_parts([moved], front_camera(), normalization="none").part_ids, front.part_ids)


def test_reconstruction_frame_lines_up_with_the_views():
    """A surface extracted in InstantMesh's world, moved to glTF by zup_to_gltf (as reconstruct_parts
    does) and rendered with normalization="none" at the views' cameras, projects where those cameras
    put the InstantMesh-world point: col = (0.5 + f x_c / d) W, row = (0.5 - f y_c / d) H."""
    point_zup = torch.tensor([0.3, -0.2, 0.4])
    part = box_part("p", zup_to_gltf(point_zup).tolist(), (0.06, 0.06, 0.06))
    cameras = RenderCameras.from_layout("zero123pp_v12")
    rendering = render_parts([part], cameras, normalization="none")
    w2c = torch.linalg.inv(cameras.c2w.double())
    for view in range(6):
        camera = w2c[view, :3, :3] @ point_zup.double() + w2c[view, :3, 3]
        depth = -camera[2]
        expected = (SIZE / 2 - FOCAL * camera[1] / depth, SIZE / 2 + FOCAL * camera[0] / depth)  # row, col
        rows, cols = (rendering.part_ids[view] == 0).nonzero().double().T + 0.5  # pixel centres
        assert rows.mean().item() == pytest.approx(expected[0].item(), abs=0.75)
        assert cols.mean().item() == pytest.approx(expected[1].item(), abs=0.75)


def test_part_ids_of_two_separated_boxes():
    parts = [box_part("left", (-0.6, 0, 0), (0.5, 0.5, 0.5), (1, 0, 0)),
             box_part("right", (0.6, 0, 0), (0.5, 0.5, 0.5), (0, 0, 1))]
    rendering = render_parts(parts, front_camera(), normalization="none")
    ids = rendering.part_ids[0]
    assert set(ids.unique().tolist()) == {-1, 0, 1}
    left, right = (ids == 0).nonzero(), (ids == 1).nonzero()
    assert left[:, 1].max() < SIZE / 2 < right[:, 1].min()  # glTF -x is on the image's left
    assert left.shape[0] == right.shape[0]  # mirror images
    assert rendering.part_names == ("left", "right")
    masks = rendering.part_masks()
    assert masks.shape == (2, 1, SIZE, SIZE) and torch.equal(masks[1, 0], ids == 1)
    # vertex colours reach the image; Lambert shading scales them by ambient 0.4 .. 1
    red = rendering.images[0][ids == 0]
    assert (red[:, 0] >= 0.4 - 1e-6).all() and red[:, 0].max() > 0.99 and (red[:, 1:] == 0).all()


def test_occlusion_the_nearer_part_wins_whatever_the_order():
    back = box_part("back", (0, 0, -0.5), (1.2, 1.2, 0.2))
    front = box_part("front", (0, 0, 0.5), (0.4, 0.4, 0.2))
    a = render_parts([back, front], front_camera(), normalization="none")
    b = render_parts([front, back], front_camera(), normalization="none")
    assert torch.equal(a.part_ids == 1, b.part_ids == 0)  # the same pixels show "front" in both orders
    centre = a.part_ids[0, SIZE // 2, SIZE // 2]
    assert a.part_names[int(centre)] == "front"
    assert a.depth[0, SIZE // 2, SIZE // 2].item() == pytest.approx(4.0 - 0.6, abs=1e-4)
    ring = (a.part_ids[0] == 0)
    assert a.depth[0][ring].min().item() == pytest.approx(4.0 - (-0.5 + 0.1), abs=1e-4)


def test_alpha_matches_ids_and_background_is_white():
    parts = [box_part("a", (0, 0, 0), (0.8, 0.5, 0.6))]
    rendering = render_parts(parts, RenderCameras.from_layout("zero123pp_v12", size=96))
    assert torch.equal(rendering.alpha > 0.5, rendering.part_ids >= 0)
    assert set(rendering.alpha.unique().tolist()) <= {0.0, 1.0}
    assert (rendering.images[rendering.part_ids < 0] == 1.0).all()
    assert (rendering.depth[rendering.part_ids < 0] == 0).all() and (rendering.depth[rendering.part_ids >= 0] > 0).all()
    smooth = render_parts(parts, RenderCameras.from_layout("zero123pp_v12", size=96), options=RenderOptions(supersample=3))
    assert (smooth.alpha[smooth.part_ids >= 0] > 0).all()  # the centre sample is one of the 9
    fractional = (smooth.alpha > 0) & (smooth.alpha < 1)
    assert fractional.any()  # antialiased edges
    assert (smooth.part_ids == rendering.part_ids).float().mean() > 0.99


def test_render_part_alone_is_amodal_and_framed_like_the_object():
    back = box_part("back", (0, 0, -0.5), (1.2, 1.2, 0.2))
    front = box_part("front", (0, 0, 0.5), (0.4, 0.4, 0.2))
    cameras = RenderCameras.from_layout("zero123pp_v12", size=128)
    whole = render_parts([back, front], cameras)
    alone = render_part_alone([back, front], "back", cameras)
    assert alone.normalization == whole.normalization
    visible, amodal = whole.part_ids == 0, alone.part_ids == 0
    assert (amodal | ~visible).all()  # the amodal mask contains the visible one
    assert amodal.sum() > visible.sum()  # and what "front" hides
    assert set(alone.part_ids.unique().tolist()) <= {-1, 0}
    by_index = render_part_alone([back, front], 0, cameras)
    assert torch.equal(by_index.part_ids, alone.part_ids)


def test_fit_normalization_is_zero123pp_framing():
    parts = [box_part("a", (10.0, 5.0, -3.0), (4.0, 2.0, 2.0))]
    cameras = RenderCameras.from_layout("zero123pp_v12")
    norm = fit_normalization(parts, cameras)
    assert norm.center == pytest.approx((10.0, 5.0, -3.0))
    radius = math.sqrt(2.0**2 + 1.0**2 + 1.0**2)  # the box's half-diagonal
    assert norm.scale * radius == pytest.approx(4.0 * math.tan(math.radians(15.0)), rel=1e-6)
    rendering = render_parts(parts, cameras)
    assert rendering.normalization == norm
    coverage = (rendering.part_ids >= 0).flatten(1).float().mean(1)
    assert ((coverage > 0.2) & (coverage < 0.8)).all()  # fills the frame as Zero123++ views do
    same = render_parts(parts, cameras, normalization=Normalization(norm.center, norm.scale))
    assert torch.equal(same.part_ids, rendering.part_ids)


def test_chunking_and_backface_culling_do_not_change_the_result():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    vertices = torch.tensor(np.asarray(sphere.vertices), dtype=torch.float32)
    faces = torch.tensor(np.asarray(sphere.faces))
    c2w = LAYOUTS["zero123pp_v12"].camera_to_world()
    reference = rasterize(vertices, faces, c2w, 30.0, 64)
    chunked = rasterize(vertices, faces, c2w, 30.0, 64, max_fragments=500)
    culled = rasterize(vertices, faces, c2w, 30.0, 64, cull_backfaces=True)
    assert torch.equal(reference.triangle, chunked.triangle)
    assert torch.equal(reference.hit, culled.hit)
    assert (reference.triangle == culled.triangle).float().mean() > 0.999
    weights = reference.barycentric[reference.hit]
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0]), atol=1e-5) and (weights >= 0).all()


def test_glb_with_one_node_per_part_round_trips(tmp_path):
    from partgen_models.evaluation.procedural import generate_object, scene_glb_bytes

    obj = generate_object("chair", seed=3)
    path = tmp_path / "chair.glb"
    path.write_bytes(scene_glb_bytes(obj.parts))
    loaded = load_scene_parts(path)
    assert [p.name for p in loaded] == [p.name for p in obj.parts]
    for original, read in zip(obj.parts, loaded):
        assert torch.allclose(original.vertices, placed_mesh(read)[0].float(), atol=1e-6)
        assert torch.equal(original.faces, read.faces)
        assert torch.allclose(original.vertex_colors, read.vertex_colors, atol=1 / 255)
    cameras = RenderCameras.from_layout("zero123pp_v12", size=64)
    from_file = render_parts(path, cameras)  # a path is read with assembly.load.load_parts
    # pivots put vertices local to each part's centre: float32 rounding (~1e-8) may flip a pixel on an edge
    agree = lambda a, b: float((a == b).float().mean())  # noqa: E731
    assert agree(from_file.part_ids, render_parts(list(obj.parts), cameras).part_ids) > 0.999
    assert agree(render_part_alone(str(path), "seat", cameras).part_ids, render_part_alone(list(obj.parts), 0, cameras).part_ids) > 0.999


def test_errors_say_what_is_wrong(tmp_path):
    part = box_part("a", (0, 0, 0), (1, 1, 1))
    cameras = front_camera(32)
    with pytest.raises(RenderError, match="no parts to render"):
        render_parts([], cameras)
    with pytest.raises(RenderError, match="odd factor"):
        RenderOptions(supersample=2)
    with pytest.raises(RenderError, match="shading must be one of"):
        RenderOptions(shading="phong")
    with pytest.raises(RenderError, match="unknown view layout 'nope'"):
        RenderCameras.from_layout("nope")
    with pytest.raises(RenderError, match="c2w \\[V,4,4\\]"):
        RenderCameras(torch.eye(4), 30.0, 32)
    with pytest.raises(RenderError, match="normalization must be"):
        render_parts([part], cameras, normalization="unit")
    with pytest.raises(RenderError, match="no part named 'b'"):
        render_part_alone([part], "b", cameras)
    with pytest.raises(RenderError, match="out of range"):
        render_part_alone([part], 3, cameras)
    bad = Part("bad", part.vertices, part.faces + 100, part.vertex_colors)
    with pytest.raises(RenderError, match="index missing vertices"):
        render_parts([bad], cameras)
    with pytest.raises(LoadPartsError, match="missing.glb: no such file"):
        render_parts(tmp_path / "missing.glb", cameras)


def test_cpu_time_for_six_views_of_a_20k_face_mesh():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20,480 faces
    vertices = torch.tensor(np.asarray(sphere.vertices), dtype=torch.float32)
    part = Part("sphere", vertices, torch.tensor(np.asarray(sphere.faces)), torch.full_like(vertices, 0.5))
    cameras = RenderCameras.from_layout("zero123pp_v12")
    render_parts([part], RenderCameras.from_layout("zero123pp_v12", size=32))  # warm-up
    start = time.perf_counter()
    rendering = render_parts([part], cameras)
    seconds = time.perf_counter() - start
    assert rendering.images.shape == (6, 320, 320, 3)
    assert seconds < 15.0, f"6 views at 320 px of 20k faces took {seconds:.1f} s"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_renders_what_the_cpu_renders():
    from partgen_models.evaluation.procedural import generate_object

    parts = list(generate_object("car", seed=1).parts)
    cameras = RenderCameras.from_layout("zero123pp_v12")
    cpu = render_parts(parts, cameras)
    gpu = render_parts(parts, cameras, device="cuda")
    assert (cpu.part_ids == gpu.part_ids).float().mean() > 0.999
    assert torch.allclose(cpu.depth, gpu.depth, atol=1e-3)


def test_supersampling_by_sample_passes_equals_a_larger_render_averaged():
    """Supersampling renders s x s shifted passes at the output size (bounded memory) instead of one image
    s times larger; the result is the larger render averaged over s x s blocks."""
    import torch.nn.functional as F

    parts = [box_part("a", (0.0, 0.0, 0.0), (0.9, 0.5, 0.7)), box_part("b", (0.35, 0.3, 0.2), (0.45, 0.45, 0.45), (0.1, 0.7, 0.3))]
    s, size = 3, 40
    cameras = RenderCameras.from_layout("zero123pp_v12", size=size)
    options = RenderOptions(supersample=s, shading="unlit")
    passes = render_parts(parts, cameras, options=options)
    large = render_parts(parts, RenderCameras.from_layout("zero123pp_v12", size=size * s),
                         normalization=passes.normalization, options=RenderOptions(shading="unlit"))
    pooled = F.avg_pool2d(large.images.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
    assert (passes.images - pooled).abs().amax() < 1e-4  # the same samples, averaged in another order
    assert (passes.alpha - F.avg_pool2d(large.alpha[:, None], s)[:, 0]).abs().amax() < 1e-4
    centre = large.part_ids[:, s // 2::s, s // 2::s]
    assert (passes.part_ids == centre).float().mean() > 0.999  # float ties on shared edges may differ
    with pytest.raises(RenderError, match="supersample must be an odd factor within 1..15, got 17"):
        RenderOptions(supersample=17)
