"""Part-completion metrics as in PartGen's Table 2: view PSNR on the foreground, LPIPS, CLIP similarity.

Every metric compares a completed part view with the ground-truth amodal render of that part alone
(:func:`partgen_models.rendering.render_part_alone`) at the same camera, both on white, in 0..1.

- **PSNR (foreground)**: over the pixels where the ground truth's alpha is above ``FOREGROUND_ALPHA``
  (0.5), i.e. where the whole part (occluded areas included) is; mean squared error over those pixels'
  three channels in all of the part's views, ``10 log10(1 / MSE)`` (capped at ``PSNR_CAP_DB`` for
  identical pixels): the PSNR of the part's view grid on its foreground (:func:`part_psnr`;
  :func:`foreground_psnr` gives it per view). Background pixels do not count, so a completion is
  neither rewarded for empty white space nor for a part that is mostly visible anyway.
- **LPIPS** (Zhang et al. 2018, v0.1): whole views, inputs mapped to -1..1; AlexNet trunk by default
  (``"vgg"``: VGG16), the ``lpips`` package's learned linear layers. Lower is better.
- **CLIP**: cosine similarity of the CLIP image embeddings of the two views (default
  ``openai/clip-vit-base-patch32``); images resized to CLIP's input size in torch (bicubic,
  antialiased) rather than through PIL, so values differ from ``CLIPImageProcessor``'s in the third decimal.

LPIPS and CLIP of a part are the means over its views; reports average over parts. LPIPS and CLIP need weights that
are loaded through :mod:`partgen_models.weights`; when a file is missing (and cannot be downloaded) the
metric is *skipped*, with one line naming the file and where to put it, never faked.

LPIPS is our own code on torchvision's AlexNet/VGG16 layout (module indices as in
``torchvision.models.alexnet().features``), so torchvision's own checkpoint files load unchanged; the
channel widths are read from the checkpoint, so tiny test checkpoints in the same key layout load too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..weights import (
    METRIC_MODELS,
    WeightsError,
    check_state_dict,
    downloads_allowed,
    ensure_model,
    find_weights_file,
    is_installed,
    load_state_dict,
    missing_model_message,
)

logger = logging.getLogger(__name__)

FOREGROUND_ALPHA = 0.5
PSNR_CAP_DB = 100.0
METRICS = ("psnr", "lpips", "clip")
LPIPS_FOLDER = "lpips"
CLIP_MODEL = "clip-vit-base-patch32"


# ----------------------------------------------------------------------------------------------------
# PSNR


def _check_views(predicted: torch.Tensor, truth: torch.Tensor, truth_alpha: torch.Tensor) -> None:
    if predicted.shape != truth.shape or predicted.shape[-1] != 3 or truth_alpha.shape != truth.shape[:-1]:
        raise ValueError(
            f"views disagree: predicted {tuple(predicted.shape)}, truth {tuple(truth.shape)}, truth alpha "
            f"{tuple(truth_alpha.shape)}; expected [...,H,W,3] twice and [...,H,W]"
        )


def _foreground_errors(predicted: torch.Tensor, truth: torch.Tensor, truth_alpha: torch.Tensor,
                       threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per view: summed squared error over the foreground pixels' channels, and the number of terms."""
    _check_views(predicted, truth, truth_alpha)
    foreground = (truth_alpha > threshold).to(torch.float64)  # (V, H, W)
    squared = ((predicted.double() - truth.double()) ** 2).sum(-1)  # (V, H, W), summed over channels
    return (squared * foreground).flatten(1).sum(1), foreground.flatten(1).sum(1) * 3


def _psnr(squared: torch.Tensor, count: torch.Tensor, max_db: float) -> torch.Tensor:
    mse = squared / count.clamp(min=1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp(min=1e-300)), torch.full_like(mse, max_db)).clamp(max=max_db)
    return torch.where(count > 0, psnr, torch.full_like(psnr, math.nan)).float()


def foreground_psnr(predicted: torch.Tensor, truth: torch.Tensor, truth_alpha: torch.Tensor,
                    threshold: float = FOREGROUND_ALPHA, max_db: float = PSNR_CAP_DB) -> torch.Tensor:
    """PSNR in dB of each view ``[V,H,W,3]`` (0..1) over the pixels where ``truth_alpha [V,H,W] >
    threshold``; ``[V]``, NaN for a view without such pixels, ``max_db`` where the pixels are equal."""
    return _psnr(*_foreground_errors(predicted, truth, truth_alpha, threshold), max_db)


def part_psnr(predicted: torch.Tensor, truth: torch.Tensor, truth_alpha: torch.Tensor,
              threshold: float = FOREGROUND_ALPHA, max_db: float = PSNR_CAP_DB) -> float:
    """One part's view PSNR: the squared errors of the foreground pixels of all its views ``[V,H,W,3]``
    pooled, i.e. the PSNR of the part's view grid over its foreground (PartGen's models see the views
    as one grid). Pooling keeps views where the part is fully visible (error 0, infinite PSNR) from
    dominating a mean of per-view dBs. NaN when no view has a foreground pixel."""
    squared, count = _foreground_errors(predicted, truth, truth_alpha, threshold)
    return float(_psnr(squared.sum()[None], count.sum()[None], max_db)[0])


# ----------------------------------------------------------------------------------------------------
# LPIPS on torchvision's trunks


@dataclass(frozen=True)
class LpipsNet:
    """One LPIPS trunk: torchvision's ``features`` layers (``("conv", kernel, stride, padding)``, "relu",
    ``("pool", kernel, stride)``), the layer indices whose outputs LPIPS compares, and its files."""

    layers: tuple
    taps: tuple[int, ...]
    backbone_file: str
    backbone_url: str
    linear_file: str
    linear_sha256: str


_ALEX_LAYERS = (("conv", 11, 4, 2), "relu", ("pool", 3, 2), ("conv", 5, 1, 2), "relu", ("pool", 3, 2),
                ("conv", 3, 1, 1), "relu", ("conv", 3, 1, 1), "relu", ("conv", 3, 1, 1), "relu")
_VGG_LAYERS = tuple(
    item
    for block, convs in enumerate((2, 2, 3, 3, 3))
    for item in ((("pool", 2, 2),) if block else ()) + (("conv", 3, 1, 1), "relu") * convs
)
_LINEAR_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{}"
LPIPS_NETS: dict[str, LpipsNet] = {
    "alex": LpipsNet(_ALEX_LAYERS, (1, 4, 7, 9, 11), "alexnet-owt-7be5be79.pth",
                     "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "alex.pth",
                     "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg": LpipsNet(_VGG_LAYERS, (3, 8, 15, 22, 29), "vgg16-397923af.pth",
                    "https://download.pytorch.org/models/vgg16-397923af.pth", "vgg.pth",
                    "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
}
# LPIPS v0.1 moves -1..1 inputs to the ImageNet statistics its trunks were trained with.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


def _conv_indices(net: LpipsNet) -> list[int]:
    return [i for i, layer in enumerate(net.layers) if isinstance(layer, tuple) and layer[0] == "conv"]


class LPIPS(torch.nn.Module):
    """LPIPS v0.1 distance; ``widths`` are the output channels of the trunk's convolutions in order."""

    def __init__(self, net: str, widths: Sequence[int]) -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"unknown LPIPS trunk {net!r}; choose one of {sorted(LPIPS_NETS)}")
        self.net = net
        spec = LPIPS_NETS[net]
        if len(widths) != len(_conv_indices(spec)):
            raise ValueError(f"the {net} trunk has {len(_conv_indices(spec))} convolutions, got {len(widths)} widths")
        layers, channels, remaining = [], 3, list(widths)
        tapped = []
        for index, layer in enumerate(spec.layers):
            if layer == "relu":
                layers.append(torch.nn.ReLU())
            elif layer[0] == "pool":
                layers.append(torch.nn.MaxPool2d(layer[1], layer[2]))
            else:
                out = remaining.pop(0)
                layers.append(torch.nn.Conv2d(channels, out, layer[1], layer[2], layer[3]))
                channels = out
            if index in spec.taps:
                tapped.append(channels)
        self.features = torch.nn.Sequential(*layers)
        self.linear = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1, bias=False) for c in tapped)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE)[None, :, None, None])

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, wanted = [], set(LPIPS_NETS[self.net].taps)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                taps.append(x)
        return taps

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Distances ``[B]`` between images ``[B,3,H,W]`` in 0..1."""
        a = self._taps(((first * 2 - 1) - self.shift) / self.scale)
        b = self._taps(((second * 2 - 1) - self.shift) / self.scale)
        total = 0.0
        for fa, fb, linear in zip(a, b, self.linear):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit length per pixel, over channels
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + linear((fa - fb) ** 2).mean((2, 3))  # (B, 1)
        return total[:, 0]


def lpips_from_state_dicts(net: str, backbone: dict[str, torch.Tensor], linear: dict[str, torch.Tensor],
                           backbone_path: Path = Path("backbone"), linear_path: Path = Path("linear")) -> LPIPS:
    """Build LPIPS from torchvision's trunk state dict (``features.*``; ``classifier.*`` is ignored)
    and the ``lpips`` package's linear layers (``lin{k}.model.1.weight``); strict otherwise."""
    spec = LPIPS_NETS[net]
    convs = _conv_indices(spec)
    features = {k: v for k, v in backbone.items() if not k.startswith("classifier.")}
    missing = [f"features.{i}.weight" for i in convs if f"features.{i}.weight" not in features]
    if missing:
        raise WeightsError(f"{backbone_path} is not torchvision's {net} trunk: missing keys {', '.join(missing[:4])}")
    model = LPIPS(net, [int(features[f"features.{i}.weight"].shape[0]) for i in convs])
    expected = {k: v.shape for k, v in model.features.state_dict().items()}
    check_state_dict({f"features.{k}": s for k, s in expected.items()}, features, backbone_path,
                     f"torchvision's {net} trunk (features.*)")
    model.features.load_state_dict({k[len("features."):]: v for k, v in features.items()})
    # the lpips package names layer k's weight lin{k}.model.1.weight (a Dropout, then the 1x1 conv)
    expected = {f"lin{k.split('.')[0]}.model.1.weight": v.shape for k, v in model.linear.state_dict().items()}
    check_state_dict(expected, linear, linear_path, f"the lpips package's v0.1 linear layers for the {net} trunk")
    model.linear.load_state_dict({f"{k.split('.')[0][len('lin'):]}.weight": v for k, v in linear.items()})
    return model.eval().requires_grad_(False)


def _installed_lpips_linear(name: str) -> Optional[Path]:
    """The linear layers shipped inside an installed ``lpips`` wheel (found without importing it)."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / name
    return path if path.is_file() else None


def _download(url: str, path: Path, sha256: Optional[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        torch.hub.download_url_to_file(url, str(partial), hash_prefix=sha256, progress=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _fetch_missing(files: Sequence[tuple[Path, str, Optional[str]]], allow_download: bool, alternative: str) -> None:
    """Download each missing ``(path, url, sha256)`` when allowed; else one error naming every file."""
    missing = [(path, url, sha) for path, url, sha in files if not path.is_file()]
    if not missing:
        return
    hint = "; ".join(f"download {url} and put it at {path}" for path, url, _ in missing) + alternative
    if not (allow_download and downloads_allowed()):
        raise WeightsError(f"{', '.join(p.name for p, _, _ in missing)} missing and downloading is switched off: {hint}")
    for path, url, sha in missing:
        logger.info("downloading %s to %s", url, path)
        try:
            _download(url, path, sha)
        except Exception as error:  # network, checksum, disk: one actionable line
            raise WeightsError(f"{path.name} is missing and its download failed ({error}): {hint}") from error


def load_lpips(weights_dir: Union[str, Path], net: str = "alex", allow_download: bool = True) -> LPIPS:
    """LPIPS from ``weights_dir/lpips/``: torchvision's ImageNet trunk file (``alexnet-owt-7be5be79.pth``
    / ``vgg16-397923af.pth``) and the linear layers (``alex.pth`` / ``vgg.pth``, else those inside an
    installed ``lpips`` package); missing files are downloaded when allowed. Raises
    :class:`WeightsError` naming every missing file, its source and where it goes."""
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS trunk {net!r}; choose one of {sorted(LPIPS_NETS)}")
    spec = LPIPS_NETS[net]
    folder = Path(weights_dir) / LPIPS_FOLDER
    backbone_path = folder / spec.backbone_file
    linear_path = folder / spec.linear_file
    if not linear_path.is_file():
        linear_path = _installed_lpips_linear(spec.linear_file) or linear_path
    files = [(backbone_path, spec.backbone_url, spec.backbone_file.split("-")[-1][: -len(".pth")]),
             (linear_path, _LINEAR_URL.format(spec.linear_file), spec.linear_sha256)]
    alternative = f" (the lpips wheel on PyPI ships {spec.linear_file}: `pip install lpips` also provides it)"
    _fetch_missing(files, allow_download, "" if linear_path.is_file() else alternative)
    backbone = load_state_dict(backbone_path, f"torchvision's {net} ImageNet weights")
    linear = load_state_dict(linear_path, f"LPIPS v0.1 {net} linear layers")
    return lpips_from_state_dicts(net, backbone, linear, backbone_path, linear_path)


# ----------------------------------------------------------------------------------------------------
# CLIP image similarity


class CLIPImageSimilarity(torch.nn.Module):
    """Cosine similarity of CLIP image embeddings (vision tower + projection of a CLIPModel checkpoint)."""

    def __init__(self, vision: torch.nn.Module, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.vision = vision
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[None, :, None, None])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in 0..1 → CLIP's input: shortest side resized to ``size``, centre crop, normalised."""
        h, w = images.shape[-2:]
        scale = self.size / min(h, w)
        resized = F.interpolate(images, size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))),
                                mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (resized.shape[-2] - self.size) // 2, (resized.shape[-1] - self.size) // 2
        cropped = resized[..., top : top + self.size, left : left + self.size]
        return (cropped - self.mean) / self.std

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images.float()).to(self.vision.dtype)
        return F.normalize(self.vision(pixel_values=pixels).image_embeds.float(), dim=-1)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Similarities ``[B]`` between images ``[B,3,H,W]`` in 0..1."""
        return (self.embed(first) * self.embed(second)).sum(-1)


def _clip_weights_present(folder: Path) -> bool:
    names = ("model.safetensors", "model.bin", "pytorch_model.safetensors", "pytorch_model.bin")
    return (folder / "config.json").is_file() and any((folder / n).is_file() for n in names)


def clip_from_folder(folder: Union[str, Path]) -> CLIPImageSimilarity:
    """The image half of a transformers ``CLIPModel`` folder (``config.json``, ``model.safetensors``,
    ``preprocessor_config.json``): text-tower keys are ignored, vision keys load strictly."""
    from transformers import CLIPConfig, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    try:
        config = CLIPConfig.from_pretrained(str(folder))
    except Exception as error:
        raise WeightsError(f"{folder / 'config.json'} is not a CLIPModel config ({error})") from error
    vision_config = CLIPVisionConfig(**dict(config.vision_config.to_dict(), projection_dim=config.projection_dim))
    model = CLIPVisionModelWithProjection(vision_config)
    path = find_weights_file(folder, ("model", "pytorch_model"), "CLIPModel weights")
    state_dict = load_state_dict(path, "CLIPModel weights")
    vision = {k: v for k, v in state_dict.items()
              if k.startswith(("vision_model.", "visual_projection.")) and not k.endswith("position_ids")}
    check_state_dict({k: v.shape for k, v in model.state_dict().items()}, vision, path, "a CLIPModel's vision tower")
    model.load_state_dict(vision)
    size, mean, std = config.vision_config.image_size, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        settings = json.loads(processor.read_text(encoding="utf-8"))
        crop = settings.get("crop_size", size)
        size = crop.get("height", size) if isinstance(crop, dict) else int(crop)
        mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
    return CLIPImageSimilarity(model.eval().requires_grad_(False), size, mean, std)


def load_clip_similarity(weights_dir: Union[str, Path], allow_download: bool = True) -> CLIPImageSimilarity:
    """CLIP similarity from ``weights_dir/clip-vit-base-patch32`` (downloaded when missing and allowed)."""
    model = METRIC_MODELS[CLIP_MODEL]
    folder = Path(weights_dir) / model.folder
    if not _clip_weights_present(folder):
        if not allow_download and not is_installed(model, Path(weights_dir)):
            raise WeightsError(missing_model_message(model, Path(weights_dir), "downloading is switched off"))
        folder = ensure_model(model, Path(weights_dir))
    return clip_from_folder(folder)


# ----------------------------------------------------------------------------------------------------
# Scoring parts


@dataclass(frozen=True)
class PartScores:
    """One part's metrics: PSNR over the foreground pixels of all its views (:func:`part_psnr`),
    LPIPS and CLIP the means over its views (None when skipped)."""

    name: str
    psnr: float
    lpips: Optional[float] = None
    clip: Optional[float] = None

    def get(self, metric: str) -> Optional[float]:
        return getattr(self, metric)


@dataclass
class CompletionScorer:
    """The metrics that could be loaded, and one line per metric that could not (``skipped``)."""

    lpips: Optional[LPIPS] = None
    clip: Optional[CLIPImageSimilarity] = None
    skipped: dict[str, str] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    chunk: int = 6

    @torch.no_grad()
    def _pairwise(self, metric: torch.nn.Module, predicted: torch.Tensor, truth: torch.Tensor) -> float:
        values = []
        for start in range(0, predicted.shape[0], self.chunk):
            a = predicted[start : start + self.chunk].permute(0, 3, 1, 2).to(self.device)  # (B, 3, H, W)
            b = truth[start : start + self.chunk].permute(0, 3, 1, 2).to(self.device)
            values.append(metric(a, b).float().cpu())
        return float(torch.cat(values).mean())

    def score(self, names: Sequence[str], predicted: torch.Tensor, truth: torch.Tensor,
              truth_alpha: torch.Tensor) -> list[PartScores]:
        """Scores of P parts: ``predicted``/``truth`` ``[P,V,H,W,3]`` on white in 0..1, ``truth_alpha [P,V,H,W]``."""
        _check_views(predicted, truth, truth_alpha)
        if len(names) != predicted.shape[0]:
            raise ValueError(f"{len(names)} names for {predicted.shape[0]} parts")
        scores = []
        for index, name in enumerate(names):
            psnr = part_psnr(predicted[index], truth[index], truth_alpha[index])
            lpips = self._pairwise(self.lpips, predicted[index], truth[index]) if self.lpips is not None else None
            clip = self._pairwise(self.clip, predicted[index], truth[index]) if self.clip is not None else None
            scores.append(PartScores(name, psnr, lpips, clip))
        return scores


def load_completion_scorer(weights_dir: Union[str, Path], lpips_net: str = "alex", use_lpips: bool = True,
                           use_clip: bool = True, allow_download: bool = True,
                           device: Optional[Union[str, torch.device]] = None) -> CompletionScorer:
    """PSNR always; LPIPS and CLIP when their weights load, else a ``skipped`` line for each (logged once)."""
    device = torch.device(device or "cpu")
    scorer = CompletionScorer(device=device)
    if use_lpips:
        try:
            scorer.lpips = load_lpips(weights_dir, lpips_net, allow_download).to(device)
        except WeightsError as error:
            scorer.skipped["lpips"] = "LPIPS skipped: " + " ".join(str(error).split())
    else:
        scorer.skipped["lpips"] = "LPIPS skipped: switched off"
    if use_clip:
        try:
            scorer.clip = load_clip_similarity(weights_dir, allow_download).to(device)
        except WeightsError as error:
            scorer.skipped["clip"] = "CLIP skipped: " + " ".join(str(error).split())
    else:
        scorer.skipped["clip"] = "CLIP skipped: switched off"
    for line in scorer.skipped.values():
        if not line.endswith("switched off"):
            logger.warning("%s", line)
    return scorer


def mean_scores(parts: Sequence[PartScores]) -> dict[str, Optional[float]]:
    """Mean of each metric over parts (NaN PSNRs left out); None for a metric no part has."""
    means: dict[str, Optional[float]] = {}
    for metric in METRICS:
        values = [p.get(metric) for p in parts if p.get(metric) is not None and not math.isnan(p.get(metric))]
        means[metric] = sum(values) / len(values) if values else None
    return means
