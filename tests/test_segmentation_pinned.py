"""Segmentation and selection behaviour pinned by hand-computed values (tier 1).

Every test here was written against a mutation that the shape-level tests let through (see
tools/mutation_test.py): inputs are asymmetric and the expected values are worked out by hand in the
comments, so an off-by-one, a swapped axis or a skipped step changes the answer.
"""

from __future__ import annotations

import pytest
import torch

from partgen_models.segmentation.palette import BACKGROUND, PALETTE, decode_colors
from partgen_models.segmentation.proposals import rank_proposals
from partgen_models.segmentation.segment import Segmentation
from partgen_models.segmentation.select import PartSelection, SelectionError, select_parts

pytestmark = pytest.mark.tier1

RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def _paint(ids: torch.Tensor, colours) -> torch.Tensor:
    """Part-id maps ``[V,H,W]`` (-1 background) → colour maps with ``colours[id]``."""
    table = torch.tensor([BACKGROUND, *colours])
    return table[(ids + 1).long()]


# ----------------------------------------------------------------------------------------------------
# palette.decode_colors


def test_min_area_is_a_share_of_the_object_not_of_the_image():
    # One 10x10 view: the object is the left 4 columns (40 px): red 36 px, blue 4 px. Blue is 10% of
    # the object but 4% of the image. With min_area 0.05 blue must stay (10% >= 5%); measured over
    # all 100 pixels it would be dropped (4% < 5%). The off-object right side is painted blue too
    # (a sample's stray paint), which must neither count nor survive.
    ids = torch.full((1, 10, 10), -1)
    ids[0, :, :4] = 0
    ids[0, 9, :4] = 1
    ids[0, :, 6:] = 1  # off the object
    inside = torch.zeros(1, 10, 10, dtype=torch.bool)
    inside[0, :, :4] = True
    decoded = decode_colors(_paint(ids, (RED, BLUE)), min_area=0.05, palette=(RED, BLUE), smoothing=1, inside=inside)
    assert int((decoded == 1).sum()) == 4  # blue kept, only on the object
    assert bool((decoded[~inside] == -1).all())
    # 4 of 40 object pixels is 10%: a min_area of 0.11 drops it.
    decoded = decode_colors(_paint(ids, (RED, BLUE)), min_area=0.11, palette=(RED, BLUE), smoothing=1, inside=inside)
    assert int((decoded == 1).sum()) == 0 and int((decoded == 0).sum()) == 36


def test_min_area_without_an_object_mask_uses_all_painted_pixels():
    # 8x8, red 60 px, blue 4 px: 4/64 = 6.25% survives 0.06 and not 0.07.
    ids = torch.zeros(1, 8, 8, dtype=torch.long)
    ids[0, 0, :4] = 1
    colours = _paint(ids, (RED, BLUE))
    assert int((decode_colors(colours, min_area=0.06, palette=(RED, BLUE), smoothing=1) == 1).sum()) == 4
    assert int((decode_colors(colours, min_area=0.07, palette=(RED, BLUE), smoothing=1) == 1).sum()) == 0


def test_majority_filter_removes_an_isolated_fringe_pixel():
    # A red 7x7 view with one blue pixel in the middle: the 3x3 vote around it is 8 red to 1 blue,
    # so smoothing 3 repaints it red; without smoothing it stays blue (min_area 0 keeps it).
    ids = torch.zeros(1, 7, 7, dtype=torch.long)
    ids[0, 3, 3] = 1
    colours = _paint(ids, (RED, BLUE))
    assert int(decode_colors(colours, min_area=0.0, palette=(RED, BLUE), smoothing=1)[0, 3, 3]) == 1
    smoothed = decode_colors(colours, min_area=0.0, palette=(RED, BLUE), smoothing=3)
    assert bool((smoothed == 0).all())


# ----------------------------------------------------------------------------------------------------
# proposals.rank_proposals


def test_nms_compares_with_kept_proposals_only():
    # 1 view of 1x20 pixels. X = cols 0..9, W = cols 0..7, Y = cols 3..12, Z = cols 6..15.
    # IoU(X,W) = 8/10, IoU(X,Y) = 7/13 = 0.54, IoU(Y,Z) = 7/13, IoU(X,Z) = 4/16, IoU(W,Y) = 5/13,
    # IoU(W,Z) = 2/16. Votes (IoU > 0.5): X 2 (W, Y), Y 2 (X, Z), W 1, Z 1; ties keep pooled order:
    # X, Y, W, Z. NMS: X kept; Y (0.54 with X) and W (0.8 with X) suppressed; Z overlaps only the
    # suppressed Y, so it is kept. Suppressing against every earlier-ranked segment would drop Z.
    def row(start, stop):
        mask = torch.zeros(1, 1, 1, 20, dtype=torch.bool)
        mask[..., start:stop] = True
        return mask

    x, w, y, z = row(0, 10), row(0, 8), row(3, 13), row(6, 16)
    masks, scores = rank_proposals([x, w, y, z])
    assert masks.shape[0] == 2
    assert torch.equal(masks[0], x[0]) and torch.equal(masks[1], z[0])
    assert scores.tolist() == [2.0, 1.0]


# ----------------------------------------------------------------------------------------------------
# select


def _segmentation(palette=PALETTE, samples=None) -> Segmentation:
    # 2 views of 4 rows x 8 columns. Proposal 0 = rows 0..1, cols 0..3 (8 px a view); proposal 1 =
    # rows 2..3, cols 2..7 (12 px); proposal 2 = column 7 (4 px).
    masks = torch.zeros(3, 2, 4, 8, dtype=torch.bool)
    masks[0, :, :2, :4] = True
    masks[1, :, 2:, 2:] = True
    masks[2, :, :, 7] = True
    return Segmentation(samples if samples is not None else torch.zeros(0), masks, torch.tensor([2.0, 1.0, 0.0]),
                        ("seat", "leg", None), "zero123pp_v12", palette=palette)


def test_index_equal_to_the_count_lists_the_choices():
    with pytest.raises(SelectionError, match=r"proposal\(s\) \[3\] do not exist; there are 3 \(0\.\.2\)"):
        select_parts(_segmentation(), PartSelection("indices", indices="0, 3"))
    assert select_parts(_segmentation(), PartSelection("indices", indices="2")).num_parts == 1


def test_point_reads_x_as_the_column_and_y_as_the_row():
    seg = _segmentation()
    # x 0.1, y 0.1 → row 0, column 0: proposal 0.
    assert torch.equal(select_parts(seg, PartSelection("point", point=(1, 0.1, 0.1))).masks[0], seg.masks[0])
    # x 0.9, y 0.1 → row 0, column 7: only proposal 2 (read swapped: row 3, column 0, nothing).
    assert torch.equal(select_parts(seg, PartSelection("point", point=(1, 0.9, 0.1))).masks[0], seg.masks[2])
    # x 0.1, y 0.9 → row 3, column 0: nothing (read swapped: row 0, column 7, proposal 2).
    with pytest.raises(SelectionError, match="picks no proposal"):
        select_parts(seg, PartSelection("point", point=(0, 0.1, 0.9)))


def test_names_that_match_nothing_are_named_in_the_error():
    seg = _segmentation()
    assert select_parts(seg, PartSelection("names", names="Leg")).names == ("leg",)
    with pytest.raises(SelectionError, match=r"no proposal is labelled 'wheel', 'hat'.*labels: seat, leg"):
        select_parts(seg, PartSelection("names", names="leg, wheel, hat"))


def test_color_selection_decodes_with_the_segmentations_own_palette():
    # The checkpoint's palette has two reds: (1, 0, 0) and (0.8, 0, 0.1). The sample paints proposal
    # 0 in the dark red and proposal 1 in red. Decoded with the checkpoint's palette, asking for the
    # dark red gives proposal 0. Decoded with the default palette both reds are PALETTE[2], the two
    # proposals merge into one segment, and its best match is the larger proposal 1: the wrong part.
    dark_red = (0.8, 0.0, 0.1)
    palette = (RED, dark_red)
    seg = _segmentation()
    ids = torch.full((2, 4, 8), -1)
    ids[seg.masks[0]] = 1
    ids[seg.masks[1]] = 0
    with_palette = _segmentation(palette=palette, samples=_paint(ids, palette)[None])
    assert torch.equal(select_parts(with_palette, PartSelection("color", color="#cc001a")).masks[0], seg.masks[0])
    assert torch.equal(select_parts(with_palette, PartSelection("color", color="#ff0000")).masks[0], seg.masks[1])


# ----------------------------------------------------------------------------------------------------
# segment.segment_views, with the sampler's output painted by hand


def test_segment_views_decodes_with_the_checkpoints_palette_inside_the_object(monkeypatch):
    from partgen_models.cameras import LAYOUTS
    from partgen_models.segmentation import segment as segment_module
    from partgen_models.segmentation.segmenter import load_partgen_segmenter
    from partgen_models.views import MultiView, views_to_grid
    from tiny_models import tiny_models_dir

    segmenter = load_partgen_segmenter(tiny_models_dir() / "partgen-segmentation", [tiny_models_dir()])
    dark_red = (0.8, 0.0, 0.1)
    segmenter.palette = (RED, dark_red)  # as a checkpoint whose partgen.json lists these two colours
    layout = LAYOUTS["zero123pp_v12"]
    alpha = torch.zeros(6, 64, 64)
    alpha[:, :, :48] = 1.0  # the object: columns 0..47 of every view
    views = MultiView(torch.ones(6, 64, 64, 3), alpha, layout.camera_to_world(), layout.fov_deg, layout.name,
                      (1.0, 1.0, 1.0), torch.ones(32, 32, 3))
    ids = torch.full((6, 64, 64), -1)
    ids[:, :32, :48] = 1  # dark red: rows 0..31 of the object
    ids[:, 32:, :48] = 0  # red: rows 32..63
    ids[:, :, 52:] = 1  # stray paint off the object
    painted = views_to_grid(_paint(ids, segmenter.palette), layout.rows, layout.cols).permute(2, 0, 1)[None]
    monkeypatch.setattr(segment_module, "sample_latents", lambda *args, **kwargs: torch.zeros(2, 4, 6, 4))
    monkeypatch.setattr(segment_module, "decode_latents", lambda model, latents: painted.expand(latents.shape[0], -1, -1, -1))
    result = segment_module.segment_views(segmenter, views, segment_module.SegmentationOptions(num_samples=2))
    assert result.palette == (RED, dark_red)
    # Decoded with the default palette both reds would be PALETTE[2]: one proposal instead of two.
    assert result.masks.shape[0] == 2
    expected = {tuple(ids.eq(k).logical_and(alpha > 0.5).flatten().tolist()) for k in (0, 1)}
    assert {tuple(m.flatten().tolist()) for m in result.masks} == expected  # no off-object pixel
