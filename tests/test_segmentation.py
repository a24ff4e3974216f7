import shutil

import pytest
import torch

from partgen_models.multiview import MultiViewOptions, generate_views
from partgen_models.partgen_checkpoint import find_partgen_checkpoint, list_partgen_checkpoints
from partgen_models.segmentation.segmenter import FORMAT, load_partgen_segmenter
from partgen_models.segmentation.segment import Segmentation, SegmentationOptions, segment_views
from partgen_models.segmentation.select import PartSelection, SelectionError, grid_masks, overlay, select_parts
from partgen_models.weights import WeightsError
from tiny_models import tiny_models_dir, tiny_zero123plus


@pytest.fixture(scope="module")
def views():
    image = torch.ones(1, 96, 96, 3)
    image[0, 20:70, 30:60] = torch.tensor([0.8, 0.2, 0.1])
    return generate_views(tiny_zero123plus(instantmesh_unet=True), image, options=MultiViewOptions(2, view_size=64))[0]


@pytest.fixture(scope="module")
def segmenter():
    return load_partgen_segmenter(tiny_models_dir() / "partgen-segmentation", [tiny_models_dir()])


def test_checkpoint_format_is_found_and_validated(tmp_path):
    assert list_partgen_checkpoints([tiny_models_dir()], FORMAT) == ["partgen-segmentation"]
    with pytest.raises(WeightsError, match="released no weights.*partgen.json"):
        find_partgen_checkpoint("missing", [tmp_path], FORMAT)
    folder = tmp_path / "bad"
    shutil.copytree(tiny_models_dir() / "partgen-segmentation", folder)
    (folder / "partgen.json").write_text('{"format": "partgen-completion", "version": 1}')
    with pytest.raises(WeightsError, match="expected 'partgen-segmentation'"):
        load_partgen_segmenter(folder, [tiny_models_dir()])


def test_segmenter_has_doubled_input_channels(segmenter):
    assert segmenter.diffusion.unet.config.in_channels == 8
    assert len(segmenter.palette) == 16


def test_samples_are_batched_and_ranked(segmenter, views):
    calls = []
    hook = segmenter.diffusion.unet.register_forward_hook(lambda m, a, o: calls.append(tuple(a[0].shape[:2])))
    try:
        result = segment_views(segmenter, views, SegmentationOptions(num_samples=3, num_inference_steps=2, seed=1))
    finally:
        hook.remove()
    # per step: one reference pass for the image (2 guidance halves), one main pass for 3 samples x 2 halves
    assert calls == [(2, 8), (6, 8)] * 2
    assert result.samples.shape == (3, 6, 64, 64, 3)
    assert result.masks.dtype == torch.bool and result.masks.shape[1:] == (6, 64, 64)
    assert result.scores.shape[0] == result.masks.shape[0] and torch.all(result.scores[:-1] >= result.scores[1:])
    assert not result.masks[:, views.alpha <= 0.5].any()  # proposals stay on the object
    again = segment_views(segmenter, views, SegmentationOptions(num_samples=3, num_inference_steps=2, seed=1))
    assert torch.equal(result.masks, again.masks)


def test_batching_the_samples_does_not_change_them(segmenter, views):
    options = SegmentationOptions(num_samples=3, num_inference_steps=2, seed=1)
    whole = segment_views(segmenter, views, options)
    calls = []
    hook = segmenter.diffusion.unet.register_forward_hook(lambda m, a, o: calls.append(tuple(a[0].shape[:2])))
    try:
        split = segment_views(segmenter, views, SegmentationOptions(num_samples=3, num_inference_steps=2, seed=1,
                                                                    max_batch=2))
    finally:
        hook.remove()
    assert calls == [(2, 8), (4, 8)] * 2 + [(2, 8), (2, 8)] * 2  # a batch of 2 samples, then 1
    torch.testing.assert_close(split.samples, whole.samples, rtol=0, atol=1e-4)  # float rounding of batch size
    assert torch.equal(split.masks, whole.masks)
    with pytest.raises(ValueError, match="max_batch must be within 1..64, got 0"):
        SegmentationOptions(max_batch=0)


def _segmentation():
    masks = torch.zeros(4, 6, 8, 8, dtype=torch.bool)
    masks[0, :, :4] = True
    masks[1, :, 4:, :4] = True
    masks[2, :, 4:, 4:] = True
    masks[3, 0, 0, 0] = True
    return Segmentation(torch.zeros(0), masks, torch.tensor([3.0, 2.0, 1.0, 0.0]), ("crown", None, "wheel", None), "zero123pp_v12")


def test_selection_modes():
    seg = _segmentation()
    assert select_parts(seg, PartSelection("top_k", top_k=2)).names == ("crown", "part_01")
    merged = select_parts(seg, PartSelection("indices", indices="1+2, 0", part_names="base, top"))
    assert merged.names == ("base", "top")
    assert torch.equal(merged.masks[0], seg.masks[1] | seg.masks[2])
    point = select_parts(seg, PartSelection("point", point=(2, 0.9, 0.9)))
    assert torch.equal(point.masks[0], seg.masks[2]) and point.names == ("wheel",)
    named = select_parts(seg, PartSelection("names", names="wheel, Crown"))
    assert named.names == ("wheel", "crown")
    assert len(set(named.colors)) == 2


@pytest.mark.parametrize("selection, message", [
    (PartSelection("indices", indices="7"), r"proposal\(s\) \[7\] do not exist; there are 4"),
    (PartSelection("indices", indices="one"), "cannot read 'one'"),
    (PartSelection("indices", indices=""), "picks no proposal; available: proposals 0..3; labels: crown, wheel"),
    (PartSelection("names", names="hat"), "labels: crown, wheel"),
    (PartSelection("point", point=(9, 0.5, 0.5)), "view 9 does not exist"),
    (PartSelection("color", color="#ff0000"), "no colour samples"),
    (PartSelection("indices", indices="0, 1", part_names="a, a"), "must be unique"),
])
def test_bad_selections_list_the_choices(selection, message):
    with pytest.raises(SelectionError, match=message):
        select_parts(_segmentation(), selection)


def test_color_selection_uses_the_first_sample(segmenter, views):
    from partgen_models.segmentation.palette import PALETTE, encode_part_ids

    seg = _segmentation()
    ids = torch.full((6, 8, 8), -1)
    ids[seg.masks[2]] = 0  # the sample painted proposal 2 with palette colour perm[0]
    sample = encode_part_ids(ids, torch.Generator().manual_seed(0))[None]
    colour = sample[0, 0, 7, 7]
    hex_colour = "#" + "".join(f"{round(float(c) * 255):02x}" for c in colour)
    with_sample = Segmentation(sample, seg.masks, seg.scores, seg.labels, seg.layout)
    picked = select_parts(with_sample, PartSelection("color", color=hex_colour))
    assert torch.equal(picked.masks[0], seg.masks[2])


def test_previews(views):
    seg = Segmentation(torch.zeros(0), torch.zeros(1, 6, 64, 64, dtype=torch.bool), torch.zeros(1), (None,), "zero123pp_v12")
    seg.masks[0, :, 10:20, 10:20] = True
    parts = select_parts(seg)
    assert grid_masks(parts, 3, 2).shape == (1, 192, 128)
    tinted = overlay(views, parts)
    assert tinted.shape == (1, 192, 128, 3)
    assert not torch.equal(tinted[0, 10:20, 10:20], views.grid()[10:20, 10:20])
    assert torch.equal(tinted[0, 30:40, 30:40], views.grid()[30:40, 30:40])


def test_partgen_backend_plugs_into_the_evaluation(views):
    from partgen_models.evaluation.backends import SeededModeUnsupported, make_backend

    backend = make_backend("partgen", models_dir=str(tiny_models_dir()), samples=2, steps=2)
    masks = backend.propose(views, seed=3)
    assert masks.dtype == torch.bool and masks.shape[1:] == (6, 64, 64)
    with pytest.raises(SeededModeUnsupported):
        backend.propose(views, point=object())
