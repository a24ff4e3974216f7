"""MMPart placement: separately normalised parts back into the input image's frame, and its evaluation."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from partgen_models.assembly.placement import (
    AssemblyFrame,
    PlacementError,
    PlacementOptions,
    about_camera,
    crop_boxes_from_views,
    place_parts,
    single_parts,
)
from partgen_models.evaluation import placement_eval
from partgen_models.evaluation.placement_eval import assembly_part_iou, chamfer, prepare_placement_sample
from partgen_models.evaluation.procedural import box, cylinder
from partgen_models.parts import Part
from partgen_models.views import MultiView

SIZE = 64
OFF = dict(depth_source="none", max_penetration=1.0, render_size=SIZE)


def _part(name: str, mesh, color) -> Part:
    vertices = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))
    return Part(name, vertices, torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64)),
                torch.tensor(color).expand_as(vertices).clone())


def _figure() -> list[Part]:
    """A wide base, a post standing on it towards the back, a knob in front: three depths."""
    return [
        _part("base", box((1.0, 0.2, 0.8), (0.0, -0.4, 0.0)), (0.9, 0.1, 0.1)),
        _part("post", cylinder(0.12, 0.6, (0.2, 0.0, -0.25)), (0.1, 0.6, 0.1)),
        _part("knob", box((0.2, 0.2, 0.2), (-0.3, -0.2, 0.45)), (0.1, 0.2, 0.9)),
    ]


@pytest.fixture(scope="module")
def exact():
    return prepare_placement_sample("figure", _figure(), SIZE, scale_error=0.0, offset_error=0.0)


@pytest.fixture(scope="module")
def perturbed():
    return prepare_placement_sample("figure", _figure(), SIZE, seed=3, scale_error=0.08, offset_error=0.05)


def _errors(result, sample) -> list[float]:
    return [chamfer(p, t) / sample.radius for p, t in zip(result.parts, sample.truth)]


def test_box_transform_is_identity_for_a_crop_of_the_whole_frame():
    frame = AssemblyFrame(100, 100, 30.0)
    torch.testing.assert_close(frame.box_transform((0, 0, 100)), torch.eye(4, dtype=torch.float64))
    shifted = frame.box_transform((0, 50, 50))  # right half, top: scale 1/2, moved right and up
    assert shifted[0, 0] == pytest.approx(0.5) and shifted[0, 3] > 0 and shifted[1, 3] > 0 and shifted[2, 3] == 0


def test_moving_along_the_rays_keeps_the_image(exact):
    frame = AssemblyFrame(SIZE, SIZE, 30.0)
    part = exact.truth[2]
    from partgen_models.assembly.placement import _render_alone
    from partgen_models.runtime import default_runtime

    runtime = default_runtime("cpu")
    near, depth_near = _render_alone(part, torch.eye(4, dtype=torch.float64), frame.cameras(SIZE), runtime)
    far, depth_far = _render_alone(part, about_camera(1.3), frame.cameras(SIZE), runtime)
    assert int((near ^ far).sum()) <= 2 and bool(near.any())
    assert float((depth_far[near & far] / depth_near[near & far]).median()) == pytest.approx(1.3, rel=1e-3)


def test_parts_normalised_by_their_crop_return_to_their_place_with_the_reference(exact):
    result = place_parts(list(exact.normalised), exact.isolated, exact.crop_boxes,
                         PlacementOptions(render_size=SIZE, depth_source="reference", max_penetration=1.0),
                         reference=exact.reference, reference_box=exact.reference_box)
    assert [p.name for p in result.parts] == ["base", "post", "knob"] and result.depth_source == "reference"
    assert max(_errors(result, exact)) < 0.04, _errors(result, exact)
    assert assembly_part_iou(result.parts, exact.truth, SIZE) > 0.8
    assert result.preview.shape == (SIZE, SIZE, 3)
    for part in result.parts:  # a uniform scale and a translation, nothing else
        linear = part.transform[:3, :3].double()
        torch.testing.assert_close(linear, torch.eye(3, dtype=torch.float64) * linear[0, 0])


def test_without_depth_the_parts_sit_at_one_distance_and_depth_helps(exact):
    flat = place_parts(list(exact.normalised), exact.isolated, exact.crop_boxes, PlacementOptions(**OFF))
    assert all(r.depth_factor == 1.0 for r in flat.report)
    with_map = place_parts(list(exact.normalised), exact.isolated, exact.crop_boxes,
                           PlacementOptions(render_size=SIZE, depth_source="depth map", max_penetration=1.0),
                           depth_map=exact.depth_map)
    assert with_map.depth_source == "depth map"
    assert np.mean(_errors(with_map, exact)) < 0.6 * np.mean(_errors(flat, exact))
    knob, post = with_map.report[2].depth_factor, with_map.report[1].depth_factor
    assert knob < 1.0 < post  # the knob is in front, the post behind


def test_silhouette_matching_undoes_reconstruction_scale_and_offset_errors(perturbed):
    box_only = place_parts(list(perturbed.normalised), perturbed.isolated, perturbed.crop_boxes,
                           PlacementOptions(**{**OFF, "silhouette_rounds": 0}))
    matched = place_parts(list(perturbed.normalised), perturbed.isolated, perturbed.crop_boxes, PlacementOptions(**OFF))
    assert all(r.silhouette_iou >= r.box_iou for r in matched.report)
    assert np.mean([r.silhouette_iou for r in matched.report]) > np.mean([r.box_iou for r in box_only.report]) + 0.05
    assert np.mean([r.silhouette_iou for r in matched.report]) > 0.85


def test_meshes_without_a_crop_box_are_normalised_then_placed(exact):
    scaled = [replace(p, vertices=p.vertices * 7.0 + 3.0) for p in exact.normalised]  # another model's frame
    result = place_parts(scaled, exact.isolated, [None] * 3, PlacementOptions(**OFF))
    assert min(r.silhouette_iou for r in result.report) > 0.8


def test_interpenetrating_parts_are_pushed_back_along_their_rays(exact):
    twins = [exact.normalised[2], exact.normalised[2]]  # the same cube twice, at the same place
    isolated = replace(exact.isolated, names=("front", "back"), images=exact.isolated.images[[2, 2]],
                       masks=exact.isolated.masks[[2, 2]], visible=exact.isolated.visible[[2, 2]],
                       boxes=exact.isolated.boxes[[2, 2]])
    boxes = [exact.crop_boxes[2]] * 2
    kept = place_parts(twins, isolated, boxes, PlacementOptions(**OFF))
    assert all(r.pushed == 0.0 for r in kept.report)
    separated = place_parts(twins, isolated, boxes, PlacementOptions(**{**OFF, "max_penetration": 0.2}))
    assert separated.report[0].pushed == 0.0 and separated.report[1].pushed > 0.05
    assert float(separated.parts[1].transform[0, 0]) > float(separated.parts[0].transform[0, 0])  # further = larger


def test_a_depth_map_at_another_resolution_is_resized_to_the_input(exact):
    # depth preprocessors work at their own resolution; before, anything but the input's size was refused
    options = PlacementOptions(render_size=SIZE, depth_source="depth map", max_penetration=1.0)
    full = place_parts(list(exact.normalised), exact.isolated, exact.crop_boxes, options, depth_map=exact.depth_map)
    double = torch.nn.functional.interpolate(exact.depth_map.permute(0, 3, 1, 2), scale_factor=2, mode="nearest")
    resized = place_parts(list(exact.normalised), exact.isolated, exact.crop_boxes, options,
                          depth_map=double.permute(0, 2, 3, 1))
    assert resized.depth_source == "depth map"
    assert [r.depth_factor for r in resized.report] == pytest.approx([r.depth_factor for r in full.report], abs=0.02)


@pytest.mark.parametrize("case, message", [
    ("count", "2 reconstructed parts for 3 isolated parts (base, post, knob)"),
    ("no reference", "depth_source is 'reference' but no reference is connected"),
    ("no depth map", "depth_source is 'depth map' but no depth map is connected"),
    ("depth size", "the depth map has shape (10, 20, 3) but the input image is 64x64"),
    ("depth nan", "the depth map contains NaN or infinite values"),
    ("crop box", "part 'post': a crop box is (top, left, side) with side >= 1"),
    ("empty mesh", "part 'knob': its mesh is empty or has NaN/infinite vertices"),
    ("reference box", "the reference has no crop box"),
])
def test_bad_placement_inputs_say_what_to_connect(exact, case, message):
    parts, boxes = list(exact.normalised), list(exact.crop_boxes)
    kwargs = {}
    options = PlacementOptions(**OFF)
    if case == "count":
        parts = parts[:2]
    elif case == "no reference":
        options = replace(options, depth_source="reference")
    elif case == "no depth map":
        options = replace(options, depth_source="depth map")
    elif case == "depth size":
        kwargs["depth_map"] = torch.zeros(1, 10, 20, 3)  # another aspect ratio (the same one is resized)
    elif case == "depth nan":
        kwargs["depth_map"] = torch.full((1, SIZE, SIZE, 3), float("nan"))
    elif case == "crop box":
        boxes[1] = (0, 0, 0)
    elif case == "empty mesh":
        parts[2] = replace(parts[2], faces=torch.zeros(0, 3, dtype=torch.int64))
    elif case == "reference box":
        kwargs["reference"] = exact.reference
    with pytest.raises(PlacementError, match=re.escape(message)):
        place_parts(parts, exact.isolated, boxes, options, **kwargs)


@pytest.mark.parametrize("field, value", [("silhouette_rounds", 11), ("render_size", 16), ("depth_source", "lidar"),
                                          ("depth_map_encoding", "rainbow"), ("max_penetration", float("nan")),
                                          ("input_fov_deg", float("inf"))])
def test_bad_placement_options_are_refused(field, value):
    with pytest.raises(PlacementError, match=field):
        PlacementOptions(**{field: value})


def test_crop_boxes_come_from_multiview_and_must_match_the_input(exact):
    views = MultiView(torch.ones(6, 8, 8, 3), torch.zeros(6, 8, 8), torch.eye(4).expand(6, 4, 4), 30.0, "zero123pp_v12",
                      (1.0, 1.0, 1.0), crop_box=(1, 2, 30), source_size=(SIZE, SIZE))
    assert crop_boxes_from_views(exact.isolated, [views] * 3) == [(1, 2, 30)] * 3
    with pytest.raises(PlacementError, match=re.escape("2 views for 3 parts (base, post, knob)")):
        crop_boxes_from_views(exact.isolated, [views] * 2)
    with pytest.raises(PlacementError, match=re.escape("'base': its views were not made by PartGen Multi-View")):
        crop_boxes_from_views(exact.isolated, [replace(views, source_size=(10, 10))] * 3)
    with pytest.raises(PlacementError, match="connect the Multi-View views the parts were reconstructed from"):
        crop_boxes_from_views(exact.isolated, None)
    with pytest.raises(PlacementError, match=re.escape("the connected parts hold 2 meshes in 1 items")):
        single_parts([list(exact.normalised[:2])])


def test_evaluation_command_prints_the_table(capsys):
    assert placement_eval.main(["--n", "1", "--size", "48", "--method", "crop box", "+ silhouette + reference depth"]) == 0
    out = capsys.readouterr().out
    assert "| crop box |" in out and "| + silhouette + reference depth |" in out and "1 objects, 6 parts" in out
