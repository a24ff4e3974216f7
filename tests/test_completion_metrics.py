"""Completion metrics (PartGen Table 2) and the completion evaluation command, tier 1."""

import math

import pytest
import torch

from partgen_models.evaluation.completion_eval import (
    NoCompletion,
    evaluate_completion,
    main,
    markdown_table,
    prepare_completion_sample,
)
from partgen_models.evaluation.completion_metrics import (
    LPIPS,
    LPIPS_NETS,
    clip_from_folder,
    foreground_psnr,
    load_clip_similarity,
    load_completion_scorer,
    load_lpips,
    lpips_from_state_dicts,
    mean_scores,
    part_psnr,
)
from partgen_models.evaluation.evaluate import EvaluationOptions
from partgen_models.evaluation.procedural import generate_object
from partgen_models.testing.tiny_models import CLIP_MEAN, CLIP_STD, processor_config, randomize_
from partgen_models.views import PartViews
from partgen_models.weights import WeightsError

ALEX_WIDTHS = [64, 192, 384, 256, 256]
VGG_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
# lpips 0.1.4 (PyPI wheel; LPIPS(net=..., pnet_rand=True) with these weights loaded into its
# net.slice*/lin* modules) on the images of _pair(3) with the weights of _seeded_lpips: identical to
# ours bit for bit on the machine that produced them; compared within 1e-5 here.
GOLDEN = {"alex": [0.137666196, 0.139296755], "vgg": [0.139390483, 0.138785034]}


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.setenv("PARTGEN_NO_DOWNLOAD", "1")


def _pair(seed, size=64):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=generator), torch.rand(2, 3, size, size, generator=generator)


def _seeded_lpips(net, widths):
    model = randomize_(LPIPS(net, widths), torch.Generator().manual_seed(7))
    with torch.no_grad():
        for linear in model.linear:
            linear.weight.abs_()  # learned LPIPS weights are non-negative
    return model


def _lpips_files(model):
    backbone = {f"features.{k}": v.clone() for k, v in model.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(3, 2)  # torchvision's head: present in the file, ignored
    linear = {f"lin{k.split('.')[0]}.model.1.weight": v.clone() for k, v in model.linear.state_dict().items()}
    return backbone, linear


# ---------------------------------------------------------------------------------------------- PSNR


def test_psnr_by_hand():
    truth = torch.zeros(1, 2, 2, 3)
    alpha = torch.tensor([[[1.0, 0.6], [0.5, 0.0]]])  # foreground: alpha > 0.5, so two pixels
    predicted = torch.ones(1, 2, 2, 3)  # background pixels are wrong but do not count
    predicted[0, 0, 0] = 0.1
    predicted[0, 0, 1] = 0.0
    # MSE = 3 * 0.1^2 / (2 pixels * 3 channels) = 0.005 → 10 log10(200)
    assert foreground_psnr(predicted, truth, alpha).item() == pytest.approx(10 * math.log10(200), abs=1e-5)


def test_psnr_identical_empty_and_pooled():
    truth = torch.full((2, 2, 2, 3), 0.5)
    alpha = torch.ones(2, 2, 2)
    predicted = truth.clone()
    predicted[1] += 0.1  # view 1: MSE 0.01 → 20 dB; view 0 identical → the 100 dB cap
    assert foreground_psnr(predicted, truth, alpha).tolist() == pytest.approx([100.0, 20.0], abs=1e-4)
    # pooled over both views' pixels: MSE 0.005 → 23.01 dB, not the mean of 100 and 20
    assert part_psnr(predicted, truth, alpha) == pytest.approx(10 * math.log10(200), abs=1e-4)
    alpha[0] = 0.0
    per_view = foreground_psnr(predicted, truth, alpha)
    assert math.isnan(per_view[0].item()) and per_view[1].item() == pytest.approx(20.0, abs=1e-4)
    assert math.isnan(part_psnr(predicted, truth, torch.zeros(2, 2, 2)))
    with pytest.raises(ValueError, match="views disagree"):
        foreground_psnr(predicted[:1], truth, alpha)


# --------------------------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize("net, widths", [("alex", ALEX_WIDTHS), ("vgg", VGG_WIDTHS)])
def test_lpips_matches_the_lpips_package(net, widths):
    model = _seeded_lpips(net, widths)
    backbone, linear = _lpips_files(model)
    loaded = lpips_from_state_dicts(net, backbone, linear)
    first, second = _pair(3)
    with torch.no_grad():
        assert loaded(first, second).tolist() == pytest.approx(GOLDEN[net], abs=1e-5)
        assert loaded(first, first).abs().max() < 1e-6


@pytest.mark.parametrize("net, builder", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_trunk_has_torchvisions_layout(net, builder):
    models = pytest.importorskip("torchvision.models")
    with torch.device("meta"):  # shapes only: no memory, no weights
        reference = getattr(models, builder)().features.state_dict()
    ours = LPIPS(net, ALEX_WIDTHS if net == "alex" else VGG_WIDTHS).features.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items() if k in ours}
    assert set(reference) - set(ours) <= {k for k in reference if int(k.split(".")[0]) > max(LPIPS_NETS[net].taps)}


def test_tiny_lpips_loads_from_the_weights_folder(tmp_path):
    model = _seeded_lpips("alex", [4, 6, 8, 8, 8])
    backbone, linear = _lpips_files(model)
    (tmp_path / "lpips").mkdir()
    torch.save(backbone, tmp_path / "lpips" / LPIPS_NETS["alex"].backbone_file)
    torch.save(linear, tmp_path / "lpips" / "alex.pth")
    loaded = load_lpips(tmp_path, "alex", allow_download=False)
    first, second = _pair(1)
    with torch.no_grad():
        assert torch.allclose(loaded(first, second), model(first, second))
    linear["lin0.model.1.weight"] = torch.zeros(1, 5, 1, 1)
    torch.save(linear, tmp_path / "lpips" / "alex.pth")
    with pytest.raises(WeightsError, match=r"alex.pth is not the lpips package's .* wrong shapes \(lin0.model.1.weight \(1, 5, 1, 1\) != \(1, 4, 1, 1\)"):
        load_lpips(tmp_path, "alex", allow_download=False)


def test_lpips_linear_layers_come_from_an_installed_lpips_package(tmp_path, monkeypatch):
    model = _seeded_lpips("alex", [4, 6, 8, 8, 8])
    backbone, linear = _lpips_files(model)
    (tmp_path / "models" / "lpips").mkdir(parents=True)
    torch.save(backbone, tmp_path / "models" / "lpips" / LPIPS_NETS["alex"].backbone_file)
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported: only located')\n")
    torch.save(linear, package / "weights" / "v0.1" / "alex.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    loaded = load_lpips(tmp_path / "models", "alex", allow_download=False)
    first, second = _pair(2)
    with torch.no_grad():
        assert torch.allclose(loaded(first, second), model(first, second))


# ---------------------------------------------------------------------------------------------- CLIP


def _write_tiny_clip(folder):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=2),
        vision_config=dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    model = CLIPModel(config).eval()
    generator = torch.Generator().manual_seed(3)
    for part in (model.vision_model, model.visual_projection):  # the tower the metric uses, made non-trivial
        randomize_(part, generator)
    model.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(__import__("json").dumps(processor_config(32, CLIP_MEAN, CLIP_STD)))
    return model


def test_tiny_clip_similarity(tmp_path):
    folder = tmp_path / "clip-vit-base-patch32"
    reference = _write_tiny_clip(folder)
    similarity = load_clip_similarity(tmp_path, allow_download=False)
    first, second = _pair(4, size=48)
    with torch.no_grad():
        same = similarity(first, first)
        different = similarity(first, second)
        pixels = similarity.preprocess(first)
        expected = reference.visual_projection(reference.vision_model(pixel_values=pixels).pooler_output)
    assert pixels.shape == (2, 3, 32, 32)
    assert torch.allclose(same, torch.ones(2), atol=1e-5) and bool((different < 0.9999).all())
    assert torch.allclose(similarity.embed(first), torch.nn.functional.normalize(expected, dim=-1), atol=1e-5)


def test_clip_weights_with_missing_vision_keys_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "clip"
    _write_tiny_clip(folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["visual_projection.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="missing keys \\(visual_projection.weight\\)"):
        clip_from_folder(folder)


# ------------------------------------------------------------------------------------ skipping, scoring


def test_missing_weights_are_skipped_with_one_line_each(tmp_path):
    scorer = load_completion_scorer(tmp_path, allow_download=False)
    assert scorer.lpips is None and scorer.clip is None
    lpips_line, clip_line = scorer.skipped["lpips"], scorer.skipped["clip"]
    assert lpips_line.startswith("LPIPS skipped: ") and "\n" not in lpips_line
    assert str(tmp_path / "lpips" / "alexnet-owt-7be5be79.pth") in lpips_line and "alex.pth" in lpips_line
    assert clip_line.startswith("CLIP skipped: ") and str(tmp_path / "clip-vit-base-patch32") in clip_line
    views = torch.rand(1, 6, 8, 8, 3)
    scores = scorer.score(["part"], views, views, torch.ones(1, 6, 8, 8))
    assert scores[0].lpips is None and scores[0].clip is None and scores[0].psnr == 100.0
    assert mean_scores(scores) == {"psnr": 100.0, "lpips": None, "clip": None}


@pytest.fixture(scope="module")
def sample():
    obj = generate_object("snowman", 3)
    return prepare_completion_sample(obj.name, obj.parts, EvaluationOptions(size=48))


def test_sample_ground_truth(sample):
    p = len(sample.part_names)
    assert p >= 2 and sample.masks.shape == (p, 6, 48, 48) and sample.truth_images.shape == (p, 6, 48, 48, 3)
    assert sample.input_masks.shape == (p, 48, 48) and sample.views.input_image.shape == (48, 48, 3)
    assert bool((sample.truth_alpha[sample.masks] > 0.5).all())  # the visible part lies inside the amodal one
    hidden = (sample.truth_alpha > 0.5) & ~sample.masks
    assert int(hidden.sum()) > 0  # something to complete
    # where the part is visible, the masked view already equals the amodal render
    baseline = NoCompletion().complete(sample, 0)
    assert torch.allclose(baseline.images[sample.masks], sample.truth_images[sample.masks])


class _Oracle:
    name = "oracle"

    def complete(self, sample, seed):
        v = sample.views
        return PartViews(sample.truth_images, sample.truth_alpha, v.c2w, v.fov_deg, v.layout, (1.0, 1.0, 1.0),
                         sample.part_names)


def test_oracle_is_perfect_and_baseline_is_not(sample, tmp_path):
    _write_tiny_clip(tmp_path / "clip-vit-base-patch32")
    tiny = _seeded_lpips("alex", [4, 6, 8, 8, 8])
    scorer = load_completion_scorer(tmp_path, allow_download=False)
    scorer.lpips = tiny
    scorer.skipped.pop("lpips")
    oracle = evaluate_completion(_Oracle(), [sample], scorer)
    baseline = evaluate_completion(NoCompletion(), [sample], scorer)
    assert oracle.summary["psnr"] == 100.0 and oracle.summary["lpips"] < 1e-6 and oracle.summary["clip"] > 0.9999
    assert baseline.summary["psnr"] < 40 and baseline.summary["lpips"] > 0
    table = markdown_table([baseline, oracle], scorer)
    assert "| none (baseline) | 1 | " in table and "| oracle | 1 | " in table and "skipped" not in table


def test_command_baseline_needs_no_weights(tmp_path, capsys):
    code = main(["--procedural", "--n", "1", "--size", "48", "--mode", "none", "--models-dir", str(tmp_path),
                 "--json", str(tmp_path / "scores.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("| none (baseline) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "1" and float(cells[3]) > 0 and cells[4:] == ["skipped", "skipped"]
    assert "LPIPS skipped: " in out and "CLIP skipped: " in out and "13.24" in out
    assert '"mode": "none (baseline)"' in (tmp_path / "scores.json").read_text()


def test_command_runs_the_model_modes_on_tiny_weights(capsys):
    from tiny_models import tiny_models_dir

    models = str(tiny_models_dir())
    code = main(["--procedural", "--n", "1", "--size", "64", "--mode", "partgen", "training-free", "--models-dir", models,
                 "--steps", "1", "--no-context", "--no-lpips", "--no-clip", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| partgen (no context) | 1 |" in out and "| training-free (Zero123++) | 1 |" in out


def test_command_explains_a_missing_completer(tmp_path, capsys):
    code = main(["--procedural", "--n", "1", "--size", "48", "--mode", "partgen", "--models-dir", str(tmp_path),
                 "--no-lpips", "--no-clip", "--device", "cpu"])
    assert code == 2 and "no partgen-completion checkpoint named 'partgen-completion'" in capsys.readouterr().err
