"""PartGen's metrics on hand-computed cases, the proposal backends, and the evaluation command.

Masks in the hand-computed cases are strips of pixels, shape [N, 1, 1, W] (one view of 1 x W) unless
a case is about views; ε = 1e-4 throughout.
"""

import pytest
import torch

from partgen_models.evaluation import (
    EvaluationError,
    EvaluationOptions,
    OracleBackend,
    PerturbedOracleBackend,
    SeededModeUnsupported,
    SeedPoint,
    average_precision,
    evaluate_backend,
    greedy_match,
    make_backend,
    markdown_table,
    mask_iou,
    mean_scores,
    prepare_sample,
    procedural_samples,
    recall_at_k,
    score_object,
    seed_point,
    seeded_average_precision,
)
from partgen_models.evaluation.cli import main
from partgen_models.evaluation.procedural import generate_object

EPS = 1e-4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """See tests/test_rendering.py: one intra-op thread on shared 2-core runners."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def strip(*pixels, width=12):
    mask = torch.zeros(1, 1, width, dtype=torch.bool)
    mask[0, 0, list(pixels)] = True
    return mask


def masks(*strips):
    return torch.stack(strips) if strips else torch.zeros(0, 1, 1, 12, dtype=torch.bool)


def iou(intersection, union):
    return (intersection + EPS) / (union + EPS)


# Three ground-truth parts on a 12-pixel strip: A = 0..3, B = 4..7, C = 8..11.
A, B, C = strip(0, 1, 2, 3), strip(4, 5, 6, 7), strip(8, 9, 10, 11)
TRUTH = masks(A, B, C)


def test_iou_is_smoothed_and_joint_over_views():
    table = mask_iou(masks(strip(0, 1, 2, 3, 4, 5)), masks(A, B))
    assert table[0, 0].item() == pytest.approx(iou(4, 6))  # 4 shared of 6
    assert table[0, 1].item() == pytest.approx(iou(2, 8))  # 2 shared of 8
    assert mask_iou(masks(strip()), masks(A))[0, 0].item() == pytest.approx(EPS / (4 + EPS))  # empty vs part: ~0
    assert mask_iou(masks(strip()), masks(strip()))[0, 0].item() == 1.0  # ε/ε
    # Views count jointly: the part has 6 pixels in view 0 and 2 in view 1; the proposal is exactly its
    # view-0 pixels. Joint IoU = 6/8 = 0.75, whereas the mean of per-view IoUs would be (1 + 0)/2.
    part = torch.zeros(1, 2, 1, 8, dtype=torch.bool)
    part[0, 0, 0, :6] = True
    part[0, 1, 0, :2] = True
    proposal = part.clone()
    proposal[0, 1] = False
    assert mask_iou(proposal, part)[0, 0].item() == pytest.approx(iou(6, 8))
    with pytest.raises(ValueError, match="same per-mask shape"):
        mask_iou(masks(A), torch.zeros(1, 2, 1, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool mask"):
        mask_iou(masks(A).float(), masks(A))


def test_average_precision_worked_example():
    proposals = masks(
        A,                      # IoU(A) = 1                          -> hit A
        strip(0, 1, 4, 5),      # IoU(B) = 2/6, IoU(C) = 0 (A taken)  -> miss
        strip(4, 5, 6, 7, 8),   # IoU(B) = 4/5 = 0.8, IoU(C) = 1/8    -> hit B
        strip(9, 10),           # IoU(C) = 2/4 = 0.5 (+ε: 0.5000125)  -> hit C at τ=0.5, miss at τ=0.75
        A,                      # duplicate of A; only C may be left: IoU ~0 -> miss
    )
    # τ = 0.5: y = [1, 0, 1, 1, 0]; precisions at the hits: 1/1, 2/3, 3/4
    # AP = (1/3)(1 + 2/3 + 3/4) = (1/3)(29/12) = 29/36 = 0.80556
    assert average_precision(proposals, TRUTH, 0.5) == pytest.approx(29 / 36)
    # τ = 0.75: y = [1, 0, 1, 0, 0]; AP = (1/3)(1 + 2/3) = 5/9 = 0.5556
    assert average_precision(proposals, TRUTH, 0.75) == pytest.approx(5 / 9)
    matching = greedy_match(mask_iou(proposals, TRUTH), 0.5)
    assert matching.hits.tolist() == [True, False, True, True, False]
    assert matching.matched.tolist() == [0, -1, 1, 2, -1]
    assert matching.best_iou[1].item() == pytest.approx(iou(2, 6))
    # recall@K (τ = 0.5): hits among the top K over S = 3
    assert [recall_at_k(proposals, TRUTH, k) for k in (1, 3, 5, 10)] == pytest.approx([1 / 3, 2 / 3, 1, 1])
    scores = score_object(proposals, TRUTH)
    assert scores.ap == pytest.approx({0.5: 29 / 36, 0.75: 5 / 9})
    assert scores.recall == pytest.approx({1: 1 / 3, 3: 2 / 3, 5: 1.0, 10: 1.0})
    assert (scores.num_truth, scores.num_proposals) == (3, 5)


def test_greedy_matching_follows_rank_not_the_best_assignment():
    truth = masks(A, B)
    # p1 = 0..5: IoU(A) = 4/6, IoU(B) = 2/8 -> takes A.  p2 = A exactly, but A is taken; B: IoU ~0 -> miss.
    # y = [1, 0]; AP = (1/2)(1/1) = 0.5, although swapping the two would have scored 1.
    assert average_precision(masks(strip(0, 1, 2, 3, 4, 5), A), truth) == pytest.approx(0.5)
    # The other order: p1 = A -> hit A; p2 = 0..5: A taken, IoU(B) = 2/8 -> miss. AP = 0.5 as well.
    assert average_precision(masks(A, strip(0, 1, 2, 3, 4, 5)), truth) == pytest.approx(0.5)
    # p1 = 2..7: IoU(A) = 2/8, IoU(B) = 4/6 -> goes to B (the highest), p2 = 0..5 -> A (4/6). AP = 1.
    assert average_precision(masks(strip(2, 3, 4, 5, 6, 7), strip(0, 1, 2, 3, 4, 5)), truth) == pytest.approx(1.0)


def test_ties_and_misses():
    truth = masks(A, B)
    # p1 = {3, 4}: IoU(A) = IoU(B) = 1/5, a tie -> the lower part index (A) is considered; 0.2 < τ: a
    # miss, and a miss consumes nothing. p2 = A -> hit A. y = [0, 1]; AP = (1/2)(1 · 1/2) = 0.25.
    proposals = masks(strip(3, 4), A)
    matching = greedy_match(mask_iou(proposals, truth), 0.5)
    assert matching.best_iou[0].item() == pytest.approx(iou(1, 5))
    assert matching.matched.tolist() == [-1, 0]
    assert average_precision(proposals, truth) == pytest.approx(0.25)
    # A tie above τ: p = 2..5 against overlapping parts A' = 0..5 and B' = 2..7 has IoU 4/6 with
    # both -> A' (the lower index) is taken; the same mask again then takes B' (the only one left).
    a2, b2 = strip(0, 1, 2, 3, 4, 5), strip(2, 3, 4, 5, 6, 7)
    matching = greedy_match(mask_iou(masks(strip(2, 3, 4, 5), strip(2, 3, 4, 5)), masks(a2, b2)), 0.5)
    assert matching.matched.tolist() == [0, 1]
    # Rank ties are the caller's order: the metric scores the list as given.
    assert average_precision(masks(A, B), truth) == average_precision(masks(B, A), truth) == 1.0


def test_empty_lists_more_proposals_than_parts_and_duplicates():
    truth = masks(A)
    assert average_precision(masks(), truth) == 0.0
    assert recall_at_k(masks(), truth, 10) == 0.0
    assert score_object(masks(), TRUTH).ap == {0.5: 0.0, 0.75: 0.0}
    # Duplicates after the hit cost nothing: y = [1, 0, 0]; AP = (1/1)(1/1) = 1.
    assert average_precision(masks(A, A, A), truth) == 1.0
    # Proposals before the hit do: y = [0, 0, 1]; AP = 1/3.
    assert average_precision(masks(B, C, A), truth) == pytest.approx(1 / 3)
    # Fewer proposals than parts: S = 3, one hit at rank 1 -> AP = 1/3, recall@10 = 1/3.
    assert average_precision(masks(C), TRUTH) == pytest.approx(1 / 3)
    assert recall_at_k(masks(C), TRUTH, 10) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one ground-truth part"):
        average_precision(masks(A), masks())
    with pytest.raises(ValueError, match="without ground-truth parts"):
        score_object(masks(A), masks())


def test_seeded_ap_is_one_over_the_rank_of_the_first_good_proposal():
    # proposals for the seed in part A: miss (B), miss (1 pixel of A: IoU 1/4), hit (A ∪ {4}: IoU 4/5)
    assert seeded_average_precision(masks(B, strip(0), strip(0, 1, 2, 3, 4)), A) == pytest.approx(1 / 3)
    assert seeded_average_precision(masks(A, A), A) == 1.0  # the second can no longer match
    assert seeded_average_precision(masks(), A) == 0.0
    # at τ = 0.75 the third (0.8) still counts; a 3-of-4 proposal (0.75 + ε) counts too
    assert seeded_average_precision(masks(strip(0, 1, 2)), A, 0.75) == 1.0


def test_mean_over_objects():
    first = score_object(masks(A, B, C), TRUTH)  # AP 1
    second = score_object(masks(B, C, A), masks(A))  # AP 1/3
    summary = mean_scores([first, second])
    assert summary["mAP50"] == pytest.approx((1 + 1 / 3) / 2)
    assert summary["R@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert "seeded mAP50" not in summary  # not run


def test_seed_point_is_the_most_interior_pixel_of_the_largest_view():
    part = torch.zeros(2, 9, 9, dtype=torch.bool)
    part[0, 0:2, 0:2] = True  # small in view 0
    part[1, 1:8, 1:8] = True  # a 7 x 7 block in view 1: its centre (4, 4) is 4 pixels from the background
    assert seed_point(part) == SeedPoint(view=1, row=4, col=4)
    part[1, 1:8, 6:8] = False  # 7 x 5: rows 3, 4, 5 of column 3 tie at distance 3 -> the first, row 3
    assert seed_point(part) == SeedPoint(view=1, row=3, col=3)
    with pytest.raises(ValueError, match="non-empty"):
        seed_point(torch.zeros(1, 4, 4, dtype=torch.bool))


@pytest.fixture(scope="module")
def samples():
    options = EvaluationOptions(size=96)
    return list(procedural_samples(4, 0, options))


def test_prepared_samples_hold_views_and_visible_part_masks(samples):
    sample = samples[0]
    v, h, w = sample.truth.shape[1:]
    assert (v, h, w) == (6, 96, 96) and sample.views.images.shape == (6, 96, 96, 3)
    assert sample.views.input_image.shape == (96, 96, 3)
    assert len(sample.part_names) == sample.truth.shape[0] >= 2
    assert not (sample.truth.sum(0) > 1).any()  # visible parts never overlap
    assert torch.equal(sample.truth.any(0), sample.views.alpha > 0.5)


def test_oracle_scores_100_and_perturbations_score_less(samples):
    options = EvaluationOptions(size=96)
    oracle = evaluate_backend(OracleBackend(), samples, options)
    assert oracle.summary["mAP50"] == oracle.summary["mAP75"] == 1.0
    assert oracle.summary["seeded mAP50"] == oracle.summary["seeded mAP75"] == 1.0
    assert oracle.summary["R@10"] == 1.0
    assert oracle.summary["R@1"] == pytest.approx(sum(1 / s.truth.shape[0] for s in samples) / len(samples))
    exact = evaluate_backend(PerturbedOracleBackend(noise=0.0), samples, options)
    assert exact.summary["mAP50"] == exact.summary["mAP75"] == 1.0
    mild = evaluate_backend(PerturbedOracleBackend(noise=1.0), samples, options, seed=0)
    strong = evaluate_backend(PerturbedOracleBackend(noise=3.0), samples, options, seed=0)
    assert 1.0 > mild.summary["mAP50"] > strong.summary["mAP50"]
    assert mild.summary["mAP50"] >= mild.summary["mAP75"]
    again = evaluate_backend(PerturbedOracleBackend(noise=1.0), samples, options, seed=0)
    assert again.summary == mild.summary  # seeded noise
    table = markdown_table([oracle, mild])
    assert table.splitlines()[0].startswith("| backend | objects | parts | mAP50 | mAP75 | seeded mAP50")
    assert "| oracle | 4 |" in table and "100.0" in table


def test_backend_interface_and_its_errors(samples):
    class NoSeeds:
        name = "no-seeds"
        needs_ground_truth = False

        def propose(self, views, *, seed=0, point=None):
            if point is not None:
                raise SeededModeUnsupported
            return views.alpha[None] > 0.5  # the whole object as one proposal

    report = evaluate_backend(NoSeeds(), samples, EvaluationOptions(size=96))
    assert "seeded mAP50" not in report.summary and 0.0 <= report.summary["mAP50"] < 1.0
    assert "n/a" in markdown_table([report, evaluate_backend(OracleBackend(), samples, EvaluationOptions(size=96))])

    class WrongShape(NoSeeds):
        name = "wrong-shape"

        def propose(self, views, *, seed=0, point=None):
            return torch.zeros(2, 6, 10, 10, dtype=torch.bool)

    with pytest.raises(EvaluationError, match=r"backend 'wrong-shape' returned proposals of shape \(2, 6, 10, 10\); expected \[K,6,96,96\]"):
        evaluate_backend(WrongShape(), samples, EvaluationOptions(size=96))
    with pytest.raises(ValueError, match="needs the ground-truth masks"):
        OracleBackend().propose(samples[0].views)
    with pytest.raises(ValueError, match="unknown backend 'sam9'; available: oracle, partgen, perturbed-oracle, sam2, sam3"):
        make_backend("sam9")
    with pytest.raises(ValueError, match="lies on no ground-truth part"):
        OracleBackend().propose(samples[0].views, point=SeedPoint(0, 0, 0), truth=samples[0].truth)


def test_hidden_parts_are_left_out_of_the_ground_truth():
    obj = generate_object("mug", seed=5)
    parts = list(obj.parts)
    inner = type(parts[0])("inside", parts[0].vertices * 0.01, parts[0].faces, parts[0].vertex_colors)
    sample = prepare_sample("mug", parts + [inner], EvaluationOptions(size=64))
    assert "inside" not in sample.part_names and sample.truth.shape[0] == len(parts)


def test_evaluation_command_prints_the_table(capsys, tmp_path):
    assert main(["--procedural", "--n", "2", "--size", "64", "--backend", "oracle", "perturbed-oracle", "--no-seeded"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| backend | objects | parts | mAP50 | mAP75 | R@1 | R@3 | R@5 | R@10 |"
    assert lines[2].startswith("| oracle | 2 |") and lines[2].count("100.0") == 3  # mAP50, mAP75, R@10
    assert lines[3].startswith("| perturbed-oracle | 2 |")

    folder = tmp_path / "set"
    assert main(["--write-set", str(folder), "--n", "2"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["000_table.glb", "001_chair.glb"]
    capsys.readouterr()
    assert main(["--eval-set", str(folder), "--size", "64", "--backend", "oracle"]) == 0
    assert "| oracle | 2 |" in capsys.readouterr().out


def test_evaluation_command_errors(capsys, tmp_path):
    assert main(["--eval-set", str(tmp_path / "missing"), "--backend", "oracle"]) == 2
    assert "does not exist; write one with `python -m partgen_models.evaluation --write-set" in capsys.readouterr().err
    assert main(["--eval-set", str(tmp_path), "--backend", "oracle"]) == 2
    assert "holds no .glb files" in capsys.readouterr().err
    assert main(["--write-set", str(tmp_path / "s"), "--n", "1"]) == 0
    assert main(["--write-set", str(tmp_path / "s"), "--n", "1"]) == 2
    assert "exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert main(["--write-set", str(tmp_path / "s"), "--n", "1", "--overwrite"]) == 0
    with pytest.raises(SystemExit):
        main(["--procedural", "--n", "0"])
    assert "--n must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--backend", "oracle"])  # no evaluation set
    assert "one of the arguments --eval-set --procedural --write-set is required" in capsys.readouterr().err
