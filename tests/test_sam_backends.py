"""SAM 2.1 / SAM 3 multi-view backends on tiny random checkpoints (tier 1).

With random weights the masks mean nothing, so SAM itself is checked for mechanics (shapes, the
input image's masks, determinism, parity of our prompt path with ``Sam2Model``, errors), and the
cross-view logic (frame order, seeding, de-duplication, ranking, mapping frames back to views and
the input image) runs on a ground-truth engine built from a rendered part-structured object.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from partgen_models.evaluation.procedural import generate_object
from partgen_models.rendering import RenderCameras, render_parts
from partgen_models.segmentation.proposals import pairwise_iou
from partgen_models.segmentation.sam2_backend import (
    IMAGENET_STD,
    INPUT_FRAME,
    SAM2_HIERA_BACKBONES,
    Sam2FrameEngine,
    Sam2Options,
    frame_sequence,
    greedy_nms,
    load_sam2_segmenter,
    preprocess_frame,
    query_points,
    resize_masks,
    resolve_sam_folder,
    sam2_config_kwargs,
    segment_at_point_sam2,
    segment_frames,
    segment_views_sam2,
)
from partgen_models.segmentation.sam3_backend import PartNamesError, Sam3Options, load_sam3_segmenter, parse_part_names, segment_views_sam3
from partgen_models.runtime import Runtime
from partgen_models.weights import NO_DOWNLOAD_ENV, SAM_MODELS, WeightsError
from tiny_models import tiny_models_dir

pytestmark = pytest.mark.tier1

VIEW_SIZE = 64
INPUT_SIZE = 512  # the prepared conditioning image of the real pipeline


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """See tests/test_rendering.py: one intra-op thread on shared 2-core runners (tiny ops otherwise
    spend most of their time waiting for the other thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def car():
    """A procedural car rendered at the v1.2 cameras, its input image at azimuth 0 (512 px), and the
    visible-part ids of every frame. Its back wheels are hidden in the input image."""
    obj = generate_object("car", 0)
    rendering = render_parts(obj.parts, RenderCameras.from_layout("zero123pp_v12", VIEW_SIZE))
    front = render_parts(obj.parts, RenderCameras.orbit([0.0], [0.0], size=INPUT_SIZE), normalization=rendering.normalization)
    views = rendering.to_multiview("zero123pp_v12", input_image=front.images[0])
    return views, rendering.part_ids, front.part_ids[0], rendering.part_names


@pytest.fixture(scope="module")
def sam2():
    return load_sam2_segmenter(tiny_models_dir() / "sam2.1-hiera-tiny")


@pytest.fixture(scope="module")
def sam3():
    return load_sam3_segmenter(tiny_models_dir() / "sam3")


# ----------------------------------------------------------------------------------------------------
# Frame order, points, NMS


def test_frames_form_a_turntable_sequence_around_the_input(car):
    views = car[0]
    assert frame_sequence(views) == [3, 4, 5, INPUT_FRAME, 0, 1, 2]  # 210, 270, 330, 0, 30, 90, 150 degrees
    without_input = type(views)(views.images, views.alpha, views.c2w, views.fov_deg, views.layout, views.background)
    assert frame_sequence(without_input) == [3, 4, 5, 0, 1, 2]


def test_query_points_lie_on_the_region_within_the_object_box():
    extent = torch.zeros(40, 60, dtype=torch.bool)
    extent[10:30, 20:50] = True
    region = extent.clone()
    region[:, 35:] = False
    points = query_points(region, extent, 4)
    assert points.shape == (8, 2)  # 4 x 4 grid over the box, the right half excluded
    assert bool(region[points[:, 1].long(), points[:, 0].long()].all())
    assert points[:, 0].min() >= 20 and points[:, 0].max() < 35 and points[:, 1].min() >= 10 and points[:, 1].max() < 30
    assert query_points(region, torch.zeros_like(extent), 4).shape == (0, 2)


def test_greedy_nms_keeps_the_best_of_each_overlapping_group():
    masks = torch.zeros(4, 1, 10, dtype=torch.bool)
    masks[0, 0, :5] = True
    masks[1, 0, :4] = True  # IoU 0.8 with mask 0
    masks[2, 0, 5:] = True
    masks[3, 0, 6:] = True  # IoU 0.8 with mask 2
    scores = torch.tensor([0.5, 0.9, 0.7, 0.7])
    assert greedy_nms(masks, scores, 0.5) == [1, 2]  # ties keep the lower index
    assert greedy_nms(masks, scores, 0.5, limit=1) == [1]
    assert greedy_nms(masks, scores, 0.5, existing=masks[2:3]) == [1]


# ----------------------------------------------------------------------------------------------------
# Cross-view logic on a ground-truth engine


class GroundTruthEngine:
    """A stand-in for SAM2 that knows the rendered part ids of every frame (in sequence order).

    A point gives three masks like SAM's whole / part / sub-part outputs: its part (score 0.9), its part
    merged with the next part (0.6) and the whole object (0.8), at a 32x32 candidate resolution.
    Tracking returns, in every frame, the parts a seed covers (more than half of each part's pixels).
    """

    mask_size = (32, 32)

    def __init__(self, frame_ids: list[torch.Tensor], parts: int) -> None:
        self.frame_ids, self.parts = frame_ids, parts
        self.tracked_from: list[int] = []

    def _small(self, frame: int) -> torch.Tensor:
        ids = self.frame_ids[frame]
        masks = torch.stack([ids == p for p in range(self.parts)])
        return resize_masks(masks, self.mask_size)

    def candidates(self, frame, points):
        ids, small = self.frame_ids[frame], self._small(frame)
        masks, scores = [], []
        for x, y in points.long().tolist():
            part = int(ids[y, x])
            masks += [small[part], small[part] | small[(part + 1) % self.parts], small.any(dim=0)]
            scores += [0.9, 0.6, 0.8]
        return torch.stack(masks), torch.tensor(scores)

    def track(self, frame, seeds):
        self.tracked_from.extend([frame] * seeds.shape[0])
        small = self._small(frame)
        area = small.flatten(1).sum(1).clamp_min(1)
        covered = (seeds[:, None] & small[None]).flatten(2).sum(2) > area[None] / 2  # (N, parts)
        out = []
        for ids in self.frame_ids:
            part_masks = torch.stack([ids == p for p in range(self.parts)])  # (parts, H, W)
            out.append((covered[:, :, None, None] & part_masks[None]).any(dim=1))
        return out


def _frame_ids(car):
    views, view_ids, input_ids, _ = car
    return [input_ids if f == INPUT_FRAME else view_ids[f] for f in frame_sequence(views)]


def test_each_part_gets_one_proposal_consistent_across_views_and_the_input(car):
    views, view_ids, input_ids, names = car
    engine = GroundTruthEngine(_frame_ids(car), len(names))
    result = segment_frames(engine, views, Sam2Options(points_per_side=12, min_area=0.0))
    assert result.masks.shape[1:] == (6, VIEW_SIZE, VIEW_SIZE) and result.samples.numel() == 0
    assert result.input_masks.shape == (result.num_proposals, INPUT_SIZE, INPUT_SIZE)
    assert result.labels == (None,) * result.num_proposals
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    for part, name in enumerate(names):
        truth = view_ids == part
        matches = [k for k in range(result.num_proposals) if torch.equal(result.masks[k], truth)]
        assert len(matches) == 1, f"{name}: {len(matches)} proposals equal it in all six views"
        # the same proposal is the part in the input image (empty where the input does not show it)
        assert torch.equal(result.input_masks[matches[0]], input_ids == part), name
    iou = pairwise_iou(result.masks, result.masks)
    assert bool((iou.fill_diagonal_(0) <= 0.5).all())  # NMS at 0.5 over the views jointly
    assert not result.masks[:, views.alpha <= 0.5].any()


def test_parts_hidden_in_the_input_are_seeded_in_the_views(car):
    views, view_ids, _, names = car
    hidden = [p for p, n in enumerate(names) if n.startswith("wheel_back")]
    assert hidden, "the car's back wheels should be hidden in the input image"
    for seed_views in (True, False):
        engine = GroundTruthEngine(_frame_ids(car), len(names))
        result = segment_frames(engine, views, Sam2Options(points_per_side=12, min_area=0.0, seed_views=seed_views))
        found = [p for p in hidden if any(torch.equal(m, view_ids == p) for m in result.masks)]
        assert (found == hidden) if seed_views else (found == []), seed_views
        input_frame = frame_sequence(views).index(INPUT_FRAME)
        assert engine.tracked_from[0] == input_frame and (len(set(engine.tracked_from)) > 1) == seed_views


def test_proposal_budget_caps_the_tracked_objects(car):
    views, _, _, names = car
    engine = GroundTruthEngine(_frame_ids(car), len(names))
    segment_frames(engine, views, Sam2Options(points_per_side=12, min_area=0.0, max_proposals=4))
    assert len(engine.tracked_from) == 4
    assert engine.tracked_from.count(frame_sequence(views).index(INPUT_FRAME)) == 3  # three quarters for the input


# ----------------------------------------------------------------------------------------------------
# SAM 2.1 on the tiny checkpoint


def test_point_prompts_match_sam2model_on_the_same_checkpoint(sam2, car):
    from transformers import Sam2Model

    reference = Sam2Model.from_pretrained(str(tiny_models_dir() / "sam2.1-hiera-tiny")).eval()
    image = car[0].images[0]
    engine = Sam2FrameEngine(sam2, [image], Runtime())
    points = torch.tensor([[20.0, 30.0], [40.0, 41.0]])
    with torch.inference_mode():
        logits, iou, object_logits = engine.decode_points(0, points)
        pixels = preprocess_frame(image, sam2.image_size)[None]
        scaled = points * sam2.image_size / VIEW_SIZE
        expected = reference(pixel_values=pixels, input_points=scaled[None, :, None, :], multimask_output=True)
    assert logits.shape == (2, 3, *engine.mask_size) and iou.shape == (2, 3)
    torch.testing.assert_close(logits, expected.pred_masks[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(iou, expected.iou_scores[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(object_logits, expected.object_score_logits[0, :, 0], atol=1e-5, rtol=1e-4)


def test_preprocessing_matches_the_transformers_video_processor():
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    image = torch.randint(0, 256, (40, 40, 3), generator=torch.Generator().manual_seed(0)).float() / 255
    processor = Sam2VideoVideoProcessor(size={"height": 128, "width": 128})
    video = (image * 255).round().to(torch.uint8).permute(2, 0, 1)[None]  # (T=1, 3, H, W)
    expected = processor(videos=[video], return_tensors="pt")["pixel_values_videos"][0, 0]
    # torchvision resizes the uint8 frame and rounds; we stay in float: at most one uint8 level apart
    torch.testing.assert_close(preprocess_frame(image, 128), expected, atol=1.01 / 255 / min(IMAGENET_STD), rtol=0)


def test_sam2_segments_views_and_input_image_deterministically(sam2, car):
    views = car[0]
    reports = []
    runtime = Runtime(progress=lambda step, total, preview: reports.append((step, total)))
    options = Sam2Options(points_per_side=6, max_proposals=8)
    result = segment_views_sam2(sam2, views, options, runtime)
    assert result.masks.dtype == torch.bool and result.masks.shape[1:] == (6, VIEW_SIZE, VIEW_SIZE)
    assert 0 < result.num_proposals <= 8 and result.samples.numel() == 0
    assert result.input_masks.dtype == torch.bool and result.input_masks.shape == (result.num_proposals, INPUT_SIZE, INPUT_SIZE)
    assert result.scores.shape == (result.num_proposals,) and torch.all(result.scores[:-1] >= result.scores[1:])
    assert not result.masks[:, views.alpha <= 0.5].any()
    assert reports[-1][0] == reports[-1][1] and [s for s, _ in reports] == sorted(s for s, _ in reports)
    again = segment_views_sam2(sam2, views, options)
    assert torch.equal(result.masks, again.masks) and torch.equal(result.input_masks, again.input_masks)


def test_sam2_stops_when_interrupted(sam2, car):
    class Stop(RuntimeError):
        pass

    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 3:
            raise Stop

    with pytest.raises(Stop):
        segment_views_sam2(sam2, car[0], Sam2Options(points_per_side=4), Runtime(check_interrupt=check))


def test_sam2_seeded_mode_and_evaluation_backend(sam2, car):
    from partgen_models.evaluation.backends import make_backend
    from partgen_models.evaluation.metrics import SeedPoint

    views, view_ids, _, _ = car
    row, col = (view_ids[1] >= 0).nonzero()[0].tolist()
    seeded = segment_at_point_sam2(sam2, views, 1, col, row, Sam2Options())
    assert seeded.masks.shape[0] <= 3 and seeded.masks.shape[1:] == (6, VIEW_SIZE, VIEW_SIZE)
    assert torch.all(seeded.scores[:-1] >= seeded.scores[1:])
    with pytest.raises(ValueError, match="view 6 does not exist"):
        segment_at_point_sam2(sam2, views, 6, 1, 1)
    backend = make_backend("sam2", models_dir=str(tiny_models_dir()))  # the largest installed size: tiny
    assert torch.equal(backend.propose(views, point=SeedPoint(1, row, col)), seeded.masks)
    assert backend._model.name == "sam2.1-hiera-tiny"


def test_evaluation_command_runs_the_sam2_backend(capsys):
    from partgen_models.evaluation.cli import main

    assert main(["--procedural", "--n", "1", "--size", "48", "--backend", "sam2", "--models-dir", str(tiny_models_dir())]) == 0
    table = capsys.readouterr().out
    assert "| sam2 |" in table and "n/a" not in table  # automatic and seeded mAP both reported


def test_released_sam2_sizes_have_their_published_parameter_counts():
    from transformers import Sam2VideoConfig, Sam2VideoModel

    published = {"tiny": 389, "small": 460, "base-plus": 808, "large": 2244}  # 0.1M units, as the SAM 2 README
    for size in SAM2_HIERA_BACKBONES:
        with torch.device("meta"):
            model = Sam2VideoModel(Sam2VideoConfig(**sam2_config_kwargs(size)))
        assert sum(p.numel() for p in model.parameters()) // 100_000 == published[size], size


# ----------------------------------------------------------------------------------------------------
# SAM 3 on the tiny checkpoint


def test_sam3_gives_one_labelled_proposal_per_name(sam3, car):
    views = car[0]
    result = segment_views_sam3(sam3, views, "Wheel, body ,wheel\nwindow", Sam3Options(threshold=0.0))
    assert result.labels == ("Wheel", "body", "window")  # order kept, duplicates once
    assert result.masks.shape == (3, 6, VIEW_SIZE, VIEW_SIZE) and result.masks.dtype == torch.bool
    assert result.input_masks.shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert result.scores.shape == (3,) and bool(((result.scores > 0) & (result.scores <= 1)).all())
    assert not result.masks[:, views.alpha <= 0.5].any()
    again = segment_views_sam3(sam3, views, ["Wheel", "body", "window"], Sam3Options(threshold=0.0))
    assert torch.equal(result.masks, again.masks) and torch.equal(result.input_masks, again.input_masks)


def test_sam3_errors_name_what_to_type(sam3, car):
    with pytest.raises(PartNamesError, match="type them in 'names', separated by commas"):
        segment_views_sam3(sam3, car[0], " , \n")
    with pytest.raises(PartNamesError, match=r"found none of 'crown', 'wheel'.*try other words"):
        segment_views_sam3(sam3, car[0], "crown, wheel", Sam3Options(threshold=0.999))
    assert parse_part_names("big  wheel;Big wheel") == ("big wheel",)


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def test_sam_checkpoint_errors_are_actionable(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="lacks config.json, model.safetensors"):
        load_sam2_segmenter(tmp_path)
    from transformers import Sam2Model

    image_only = tmp_path / "sam2-hiera-tiny-hf"
    Sam2Model.from_pretrained(str(tiny_models_dir() / "sam2.1-hiera-tiny")).save_pretrained(str(image_only))
    with pytest.raises(WeightsError, match="holds a 'sam2' model.*needs SAM 2.1's video checkpoint"):
        load_sam2_segmenter(image_only)
    folder = tmp_path / "sam2-fewer-layers"
    shutil.copytree(tiny_models_dir() / "sam2.1-hiera-tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["memory_attention_num_layers"] = 2  # a checkpoint with fewer layers than its config says
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"is not a SAM 2.1 video checkpoint.*missing keys \(memory_attention\.layers\.1"):
        load_sam2_segmenter(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="could not be loaded as a SAM 2.1 video checkpoint"):
        load_sam2_segmenter(folder)
    with pytest.raises(WeightsError, match="unknown SAM checkpoint 'sam4'"):
        resolve_sam_folder("sam4", [tmp_path])
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")
    with pytest.raises(WeightsError, match=r"facebook/sam2.1-hiera-large : config.json, model.safetensors.*sam2.1-hiera-large"):
        resolve_sam_folder("sam2.1-hiera-large", [tmp_path])
    with pytest.raises(WeightsError, match="gated"):
        resolve_sam_folder("sam3", [tmp_path])
    assert resolve_sam_folder("sam2.1-hiera-tiny", [tmp_path, tiny_models_dir()]) == tiny_models_dir() / "sam2.1-hiera-tiny"
    import transformers

    monkeypatch.setattr(transformers, "Sam2VideoModel", None)  # as an older transformers, which lacks it
    with pytest.raises(WeightsError, match="SAM 2.1 needs a transformers release that provides Sam2VideoModel.*pip install -U"):
        load_sam2_segmenter(tiny_models_dir() / "sam2.1-hiera-tiny")
    assert set(SAM_MODELS) == {"sam2.1-hiera-tiny", "sam2.1-hiera-small", "sam2.1-hiera-base-plus", "sam2.1-hiera-large", "sam3"}


# ----------------------------------------------------------------------------------------------------
# Tier 2: the nodes in ComfyUI's real executor


def _sam_prompt(segmenter: str, **segment_inputs) -> dict:
    """Image → 2-step views (64 px) → a SAM segmenter → Segment → Select Parts → saved previews."""
    segment = dict(segmenter=["4", 0], views=["3", 0], samples=1, steps=1, guidance=1.0, seed=0, min_area=0.005)
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "partgen_example_object.png"}},
        "2": {"class_type": "PartGenLoadMultiViewModel", "inputs": {"model": "zero123plus-v1.2-instantmesh", "precision": "auto"}},
        "3": {"class_type": "PartGenMultiView", "inputs": {"model": ["2", 0], "image": ["1", 0], "mask": ["1", 1],
                                                           "mask_marks": "auto", "steps": 2, "guidance": 4.0, "seed": 1,
                                                           "view_size": 64}},
        "4": {"class_type": "PartGenLoadSegmenter", "inputs": {"model": segmenter, "precision": "auto"}},
        "5": {"class_type": "PartGenSegment", "inputs": dict(segment, **segment_inputs)},
        "6": {"class_type": "PartGenSelectParts", "inputs": {"segmentation": ["5", 0], "views": ["3", 0], "mode": "top_k",
                                                             "top_k": 2, "indices": "", "view": 0, "x": 0.5, "y": 0.5,
                                                             "color": "", "names": "", "part_names": ""}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 2], "filename_prefix": "sam/overlay"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["5", 1], "filename_prefix": "sam/proposals"}},
    }


@pytest.mark.tier2
@pytest.mark.comfyui_hosts("oldest")  # the segmenters' logic, not the host's: tier 2 covers both hosts
def test_sam_segmenters_run_in_the_comfyui_executor(comfyui_path, comfyui_base, monkeypatch):
    import comfyui_harness as harness

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the executor subprocess: tiny ops, shared 2-core runners

    jobs = [
        {"name": "sam2", "prompt": _sam_prompt("sam2.1-hiera-tiny", points_per_side=4)},  # no names: optional
        {"name": "sam3", "prompt": _sam_prompt("sam3", names="body, wheel", sam3_threshold=0.0)},
        {"name": "sam3_no_names", "prompt": _sam_prompt("sam3")},
    ]
    results = {r["name"]: r for r in harness.run_executor(jobs, comfyui_base, root=comfyui_path, timeout_s=600)}

    def events(result, kind):
        return [data for event, data in result["messages"] if event == kind]

    for name in ("sam2", "sam3"):
        r = results[name]
        assert r["valid"] and r["success"], (name, r.get("validation_error"), events(r, "execution_error"), r["log_file"])
        for node in ("7", "8"):
            (image,) = r["history"]["outputs"][node]["images"]
            assert (Path(r["output_dir"]) / image["subfolder"] / image["filename"]).is_file()
        assert [d["value"] for d in events(r, "progress") if str(d["node"]) == "5"][-1:] != []
    error = events(results["sam3_no_names"], "execution_error")
    assert error and error[0]["node_type"] == "PartGenSegment", results["sam3_no_names"]["log_file"]
    assert "type them in 'names'" in error[0]["exception_message"]
