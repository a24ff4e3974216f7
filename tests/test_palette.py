import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from partgen_models.segmentation.palette import (
    PALETTE,
    choose_palette,
    decode_colors,
    encode_part_ids,
    segments_from_ids,
    srgb_to_lab,
)
from partgen_models.segmentation.proposals import pairwise_iou, rank_proposals


def test_palette_is_the_generated_one_and_well_separated():
    assert PALETTE == choose_palette(len(PALETTE))
    assert len(PALETTE) >= 12
    lab = srgb_to_lab(torch.tensor(PALETTE))
    distances = torch.cdist(lab, lab) + torch.eye(len(PALETTE)) * 1e9
    assert distances.min() > 40  # CIELAB ΔE
    backgrounds = srgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]))
    assert torch.cdist(lab, backgrounds).min() > 35


def _part_ids(views=2, size=64):
    ids = torch.full((views, size, size), -1)
    ids[:, 8:40, 8:40] = 0
    ids[:, 30:60, 30:60] = 1
    ids[:, 4:12, 44:60] = 2
    return ids


def test_encoding_uses_a_random_permutation_and_decodes_back():
    ids = _part_ids()
    a = encode_part_ids(ids, torch.Generator().manual_seed(0))
    b = encode_part_ids(ids, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)  # colours do not mean parts
    assert torch.equal(a[ids == -1], torch.ones_like(a[ids == -1]))
    decoded = decode_colors(a, smoothing=1)
    segments, _ = segments_from_ids(decoded)
    expected, _ = segments_from_ids(ids)
    assert sorted(m.sum().item() for m in segments) == sorted(m.sum().item() for m in expected)


def _jpeg(colors: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for view in colors:
        buffer = io.BytesIO()
        Image.fromarray((view * 255).round().byte().numpy()).save(buffer, format="JPEG", quality=quality)
        out.append(torch.from_numpy(__import__("numpy").asarray(Image.open(buffer), dtype="float32") / 255))
    return torch.stack(out)


@pytest.mark.parametrize("corruption", ["jpeg", "resample", "antialias", "noise"])
def test_decoding_is_robust_to_realistic_corruptions(corruption):
    ids = _part_ids(size=96)
    colors = encode_part_ids(ids, torch.Generator().manual_seed(3))
    if corruption == "jpeg":
        colors = _jpeg(colors, quality=70)
    elif corruption == "resample":  # down to 2/3 and back up, bilinear
        chw = colors.permute(0, 3, 1, 2)
        colors = F.interpolate(F.interpolate(chw, size=64, mode="bilinear", antialias=True), size=96, mode="bilinear").permute(0, 2, 3, 1)
    elif corruption == "antialias":  # supersampled edges
        big = encode_part_ids(ids.repeat_interleave(4, 1).repeat_interleave(4, 2), torch.Generator().manual_seed(3))
        colors = F.avg_pool2d(big.permute(0, 3, 1, 2), 4).permute(0, 2, 3, 1)
    else:
        colors = (colors + 0.06 * torch.randn(colors.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    decoded = decode_colors(colors)
    segments, _ = segments_from_ids(decoded)
    expected, _ = segments_from_ids(ids)
    assert segments.shape[0] == expected.shape[0] == 3  # no spurious parts from blended edges
    iou = pairwise_iou(segments, expected)
    assert iou.amax(dim=1).min() > 0.9


def test_small_parts_are_dropped():
    ids = _part_ids()
    ids[:, 0:2, 0:2] = 3  # 8 pixels of ~3000
    decoded = decode_colors(encode_part_ids(ids, torch.Generator().manual_seed(0)), smoothing=1)
    assert len(segments_from_ids(decoded)[1]) == 3


def test_rank_proposals_votes_then_suppresses():
    base = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    base[0, 0, :4] = True          # part A
    base[1, 0, :4, :7] = True      # A again (IoU 7/8 with A)
    base[2, 0, 4:] = True          # part B
    base[3, 0, :, :1] = True       # a sliver, overlapping nothing much
    sample1, sample2, sample3 = base[[0, 2]], base[[1, 3]], base[[0]]
    masks, scores = rank_proposals([sample1, sample2, sample3])
    # A (sample1) has 2 votes (A' and A from sample3), A' 2, B 0, sliver 0; NMS drops A' and the 2nd A.
    assert scores.tolist() == [2.0, 0.0, 0.0]
    assert torch.equal(masks[0], base[0]) and torch.equal(masks[1], base[2]) and torch.equal(masks[2], base[3])
    empty, no_scores = rank_proposals([torch.zeros(0, 1, 8, 8, dtype=torch.bool)])
    assert empty.shape[0] == 0 and no_scores.numel() == 0


def test_iou_is_epsilon_smoothed():
    empty = torch.zeros(1, 4, dtype=torch.bool)
    assert pairwise_iou(empty, empty).item() == pytest.approx(1.0)
    a = torch.tensor([[True, True, False, False]])
    b = torch.tensor([[False, True, True, False]])
    assert pairwise_iou(a, b).item() == pytest.approx((1 + 1e-4) / (3 + 1e-4))
