"""InstantMesh's large reconstruction model (LRM), checkpoint-compatible, attention through SDPA.

Three parts, named as upstream's modules so checkpoints load strictly (TencentARC/InstantMesh
``src/models``):

- ``encoder``: DINO ViT-B/16 whose every block is modulated (adaLN shift/scale) by an embedding of
  the view's camera (``encoder/dino.py``, ``dino_wrapper.py``);
- ``transformer``: learned triplane tokens that cross-attend to all views' image tokens, then
  self-attend, then a transposed conv doubles the plane resolution (``decoder/transformer.py``);
- ``synthesizer.decoder``: MLPs on features sampled from the three planes: SDF, deformation,
  FlexiCubes weights and colour for the mesh variant; density and colour for the NeRF variant
  (``renderer/synthesizer_mesh.py``, ``renderer/synthesizer.py``).

Sizes come from a checkpoint's shapes (:func:`infer_config`), so base, large and tiny checkpoints
go through one code path. Head counts are not visible in shapes: both upstream sizes use 64-wide
heads (ViT-B 768/12, transformer 1024/16), and so does this module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules import DeviceFromWeights

HEAD_WIDTH = 64
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # facebook/dino-vitb16's ViTImageProcessor
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LRMConfig:
    """Sizes of one InstantMesh checkpoint (see :func:`infer_config`)."""

    variant: str  # "mesh" (FlexiCubes heads) or "nerf" (density head)
    encoder_dim: int
    encoder_layers: int
    encoder_mlp_dim: int
    patch_size: int
    encoder_positions: int  # patch positions the position embeddings were trained for (14x14)
    transformer_dim: int
    transformer_layers: int
    triplane_low_res: int
    triplane_dim: int
    decoder_hidden: int
    decoder_layers: int
    encoder_layer_norm_eps: float = 1e-12  # facebook/dino-vitb16 config

    @property
    def encoder_heads(self) -> int:
        return max(1, self.encoder_dim // HEAD_WIDTH)

    @property
    def transformer_heads(self) -> int:
        return max(1, self.transformer_dim // HEAD_WIDTH)

    @property
    def triplane_high_res(self) -> int:
        return 2 * self.triplane_low_res


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)  # (B, heads, N, d_head)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)  # (B, N, heads * d_head)


# --- encoder: camera-modulated DINO ViT ---------------------------------------------------------


class _Container(nn.Module):
    """A bare module that only exists to reproduce upstream's parameter names."""


class ViTSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(proj(x), self.heads) for proj in (self.query, self.key, self.value))
        return _merge_heads(F.scaled_dot_product_attention(q, k, v))


class CameraModulatedViTBlock(nn.Module):
    """A ViT block whose two pre-norms are shifted and scaled by the camera embedding (adaLN)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float) -> None:
        super().__init__()
        self.attention = _Container()
        self.attention.attention = ViTSelfAttention(dim, heads)
        self.attention.output = _Container()
        self.attention.output.dense = nn.Linear(dim, dim)
        self.intermediate = _Container()
        self.intermediate.dense = nn.Linear(dim, mlp_dim)
        self.output = _Container()
        self.output.dense = nn.Linear(mlp_dim, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))

    def forward(self, x: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(camera).chunk(4, dim=1)
        attended = self.attention.attention(_modulate(self.layernorm_before(x), shift_msa, scale_msa))
        x = x + self.attention.output.dense(attended)
        hidden = F.gelu(self.intermediate.dense(_modulate(self.layernorm_after(x), shift_mlp, scale_mlp)))
        return x + self.output.dense(hidden)


class CameraModulatedViT(nn.Module):
    """DINO ViT (upstream ``ViTModel`` without pooler) taking a per-image camera embedding."""

    def __init__(self, config: LRMConfig) -> None:
        super().__init__()
        dim = config.encoder_dim
        self.patch_size = config.patch_size
        self.embeddings = _Container()
        self.embeddings.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.embeddings.position_embeddings = nn.Parameter(torch.zeros(1, config.encoder_positions + 1, dim))
        self.embeddings.patch_embeddings = _Container()
        self.embeddings.patch_embeddings.projection = nn.Conv2d(3, dim, config.patch_size, config.patch_size)
        self.encoder = _Container()
        self.encoder.layer = nn.ModuleList(
            CameraModulatedViTBlock(dim, config.encoder_heads, config.encoder_mlp_dim, config.encoder_layer_norm_eps)
            for _ in range(config.encoder_layers)
        )
        self.layernorm = nn.LayerNorm(dim, eps=config.encoder_layer_norm_eps)

    def position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """DINO's interpolation: bicubic with ``scale_factor`` (patches + 0.1) / trained side.

        The +0.1 avoids a floating point error (facebookresearch/dino#8); transformers'
        ``interpolate_pos_encoding`` interpolates to a target size instead and differs.
        """
        table = self.embeddings.position_embeddings
        positions = table.shape[1] - 1
        rows, cols = height // self.patch_size, width // self.patch_size
        if rows * cols == positions and rows == cols:
            return table
        side = int(math.sqrt(positions))
        grid = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, D, side, side)
        grid = F.interpolate(
            grid.float(), scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic", align_corners=False
        ).to(table.dtype)
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)  # (1, rows*cols, D)
        return torch.cat([table[:, :1], grid], dim=1)

    def forward(self, pixels: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """pixels ``[N,3,H,W]`` normalised; camera ``[N,D]`` → tokens ``[N, 1 + patches, D]``."""
        patches = self.embeddings.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)  # (N, P, D)
        cls = self.embeddings.cls_token.expand(patches.shape[0], -1, -1)
        x = torch.cat([cls, patches], dim=1) + self.position_embeddings(pixels.shape[-2], pixels.shape[-1])
        for block in self.encoder.layer:
            x = block(x, camera)
        return self.layernorm(x)


class ImageEncoder(nn.Module):
    """Upstream ``DinoWrapper``: normalises views and embeds their 16-value cameras."""

    def __init__(self, config: LRMConfig) -> None:
        super().__init__()
        dim = config.encoder_dim
        self.model = CameraModulatedViT(config)
        self.camera_embedder = nn.Sequential(nn.Linear(16, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, images: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """images ``[B,V,3,H,W]`` in 0..1, cameras ``[B,V,16]`` → tokens ``[B, V*(1+P), D]``."""
        b, v = images.shape[:2]
        dtype = self.camera_embedder[0].weight.dtype
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        pixels = ((images.flatten(0, 1).float() - mean) / std).to(dtype)  # upstream normalises in float32
        camera = self.camera_embedder(cameras.flatten(0, 1).to(dtype))  # (B*V, D)
        tokens = self.model(pixels, camera)  # (B*V, 1+P, D)
        return tokens.reshape(b, v * tokens.shape[1], tokens.shape[2])


# --- transformer: image tokens → triplanes -------------------------------------------------------


class Attention(nn.Module):
    """``nn.MultiheadAttention(bias=False, batch_first=True)``'s parameters, computed with SDPA.

    Upstream keeps separate q/k/v weights when the key width differs from the model width (cross-
    attention to 768-wide DINO tokens) and one packed ``in_proj_weight`` otherwise.
    """

    def __init__(self, dim: int, heads: int, key_dim: Optional[int] = None) -> None:
        super().__init__()
        self.heads = heads
        self.packed = key_dim is None or key_dim == dim
        if self.packed:
            self.in_proj_weight = nn.Parameter(torch.zeros(3 * dim, dim))
        else:
            self.q_proj_weight = nn.Parameter(torch.zeros(dim, dim))
            self.k_proj_weight = nn.Parameter(torch.zeros(dim, key_dim))
            self.v_proj_weight = nn.Parameter(torch.zeros(dim, key_dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.packed:
            wq, wk, wv = self.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        q = _split_heads(F.linear(x, wq), self.heads)
        k = _split_heads(F.linear(context, wk), self.heads)
        v = _split_heads(F.linear(context, wv), self.heads)
        return self.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class TriplaneBlock(nn.Module):
    """Cross-attention to the image tokens, self-attention, MLP; pre-norm. Upstream passes an eps
    to its blocks but never uses it: the norms keep LayerNorm's default 1e-5."""

    def __init__(self, dim: int, heads: int, image_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads, key_dim=image_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(4 * dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x), image_tokens)
        normed = self.norm2(x)
        x = x + self.self_attn(normed, normed)
        return x + self.mlp(self.norm3(x))


class TriplaneTransformer(nn.Module):
    def __init__(self, config: LRMConfig) -> None:
        super().__init__()
        dim, res = config.transformer_dim, config.triplane_low_res
        self.low_res = res
        self.pos_embed = nn.Parameter(torch.zeros(1, 3 * res * res, dim))
        self.layers = nn.ModuleList(
            TriplaneBlock(dim, config.transformer_heads, config.encoder_dim) for _ in range(config.transformer_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.deconv = nn.ConvTranspose2d(dim, config.triplane_dim, kernel_size=2, stride=2)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L, D_img]`` → triplanes ``[B, 3, C, 2r, 2r]`` (planes xy, xz, zy)."""
        b, res = image_tokens.shape[0], self.low_res
        x = self.pos_embed.expand(b, -1, -1)
        for layer in self.layers:
            x = layer(x, image_tokens)
        x = self.norm(x)
        x = x.view(b, 3, res, res, -1).permute(0, 1, 4, 2, 3).reshape(b * 3, -1, res, res)  # (B*3, D, r, r)
        x = self.deconv(x)  # (B*3, C, 2r, 2r)
        return x.view(b, 3, *x.shape[1:])


# --- synthesizer: triplane features → fields -----------------------------------------------------

# Plane axes of EG3D with its fix (NVlabs/eg3d#67): points project to (x, y), (x, z), (z, y).
_PLANE_COORDINATES = ((0, 1), (0, 2), (2, 1))
BOX_WARP = 2.0  # triplanes span [-1, 1]^3


def sample_triplanes(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features of ``points`` ``[B,M,3]`` from ``planes`` ``[B,3,C,H,W]``: ``[B,M,3C]``.

    ``grid_sample`` with ``align_corners=False`` and zero padding, as upstream; the three planes'
    features are concatenated (plane order xy, xz, zy), not summed.
    """
    b, n_planes, c, h, w = planes.shape
    coords = points * (2.0 / BOX_WARP)
    uv = torch.stack([coords[..., list(axes)] for axes in _PLANE_COORDINATES], dim=1)  # (B, 3, M, 2)
    features = F.grid_sample(
        planes.reshape(b * n_planes, c, h, w),
        uv.reshape(b * n_planes, 1, -1, 2).to(planes.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*3, C, 1, M)
    return features.view(b, n_planes, c, -1).permute(0, 3, 1, 2).reshape(b, -1, n_planes * c)


def _mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    modules: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU()]
    for _ in range(layers - 2):
        modules += [nn.Linear(hidden, hidden), nn.ReLU()]
    modules.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*modules)


def _mipnerf_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x) * (1 + 2 * 0.001) - 0.001  # MipNeRF's widened sigmoid, as upstream


class MeshDecoder(nn.Module):
    """FlexiCubes heads: SDF, vertex deformation, 21 per-cube weights, colour."""

    def __init__(self, triplane_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        features = 3 * triplane_dim
        self.net_sdf = _mlp(features, hidden, layers, 1)
        self.net_rgb = _mlp(features, hidden, layers, 3)
        self.net_deformation = _mlp(features, hidden, layers, 3)
        self.net_weight = _mlp(8 * features, hidden, layers, 21)

    def sdf_and_deformation(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sdf(features), self.deformation(features)

    def sdf(self, features: torch.Tensor) -> torch.Tensor:
        return self.net_sdf(features).squeeze(-1)

    def deformation(self, features: torch.Tensor) -> torch.Tensor:
        return self.net_deformation(features)

    def cube_weights(self, corner_features: torch.Tensor) -> torch.Tensor:
        """corner features ``[..., 8 * 3C]`` (corners in grid order) → ``[..., 21]``."""
        return self.net_weight(corner_features) * 0.1

    def color(self, features: torch.Tensor) -> torch.Tensor:
        return _mipnerf_sigmoid(self.net_rgb(features))


class NerfDecoder(nn.Module):
    """Density and colour head of the NeRF variant."""

    def __init__(self, triplane_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.net = _mlp(3 * triplane_dim, hidden, layers, 4)

    def density_and_color(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(features)
        # Softplus with an activation bias of -1 (upstream's renderer, clamp_mode "softplus").
        return F.softplus(out[..., 0] - 1.0), _mipnerf_sigmoid(out[..., 1:])


class LargeReconstructionModel(DeviceFromWeights, nn.Module):
    """Views + cameras → triplanes, and field queries on those triplanes."""

    def __init__(self, config: LRMConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config)
        self.transformer = TriplaneTransformer(config)
        self.synthesizer = _Container()
        decoder_class = MeshDecoder if config.variant == "mesh" else NerfDecoder
        self.synthesizer.decoder = decoder_class(config.triplane_dim, config.decoder_hidden, config.decoder_layers)

    @property
    def decoder(self):
        return self.synthesizer.decoder

    def weights_reference(self) -> torch.Tensor:
        return self.transformer.pos_embed

    def forward_planes(self, images: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """images ``[B,V,3,H,W]`` in 0..1, cameras ``[B,V,16]`` → triplanes ``[B,3,C,2r,2r]``."""
        return self.transformer(self.encoder(images, cameras))


# --- configuration from a checkpoint -------------------------------------------------------------


def _count_layers(keys: Mapping[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(indices) + 1 if indices else 0


def _linear_layers(state_dict: Mapping[str, torch.Tensor], prefix: str) -> list[torch.Tensor]:
    count = _count_layers(state_dict, re.escape(prefix) + r"(\d+)\.weight$")
    return [state_dict[f"{prefix}{i}.weight"] for i in range(0, count, 2) if f"{prefix}{i}.weight" in state_dict]


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> LRMConfig:
    """Sizes from tensor shapes (keys without the ``lrm_generator.`` prefix)."""
    variant = "mesh" if "synthesizer.decoder.net_sdf.0.weight" in state_dict else "nerf"
    head = "synthesizer.decoder.net_sdf." if variant == "mesh" else "synthesizer.decoder.net."
    decoder_linears = _linear_layers(state_dict, head)
    projection = state_dict["encoder.model.embeddings.patch_embeddings.projection.weight"]  # (D, 3, p, p)
    positions = state_dict["encoder.model.embeddings.position_embeddings"].shape[1] - 1
    pos_embed = state_dict["transformer.pos_embed"]  # (1, 3 r^2, D)
    return LRMConfig(
        variant=variant,
        encoder_dim=projection.shape[0],
        encoder_layers=_count_layers(state_dict, r"encoder\.model\.encoder\.layer\.(\d+)\."),
        encoder_mlp_dim=state_dict["encoder.model.encoder.layer.0.intermediate.dense.weight"].shape[0],
        patch_size=projection.shape[-1],
        encoder_positions=positions,
        transformer_dim=pos_embed.shape[-1],
        transformer_layers=_count_layers(state_dict, r"transformer\.layers\.(\d+)\."),
        triplane_low_res=int(round(math.sqrt(pos_embed.shape[1] / 3))),
        triplane_dim=state_dict["transformer.deconv.weight"].shape[1],
        decoder_hidden=decoder_linears[0].shape[0],
        decoder_layers=len(decoder_linears),
    )
