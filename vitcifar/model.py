"""A plain pre-norm Vision Transformer for small images, written bottom-up.

    PatchEmbed -> [CLS] + position -> Block x depth -> LayerNorm -> pool -> Linear

Shapes use B = batch, C = channels, H/W = image size, P = patch size,
N = number of patches (H/P * W/P), T = tokens (N, plus 1 with a [CLS] token),
D = embedding width, h = heads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitcifar.config import MODEL_PRESETS, ViTConfig, check_choice

__all__ = ["PRESETS", "ViT", "ViTConfig", "attention_map", "vit_from_preset"]

# Re-exported for the old import paths (``from vitcifar.model import PRESETS, ViTConfig``): the
# config and the preset table live in vitcifar.config; PRESETS is the model half of that table.
PRESETS = MODEL_PRESETS


def vit_from_preset(name: str, **overrides: Any) -> ViT:
    """Build a ViT from a preset name (``PRESETS``), with field overrides such as ``num_classes=100``."""
    check_choice("preset", name, tuple(PRESETS))
    return ViT(replace(PRESETS[name], **overrides))


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, (grid*grid, dim); first half encodes y, second half x."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    omega = 1.0 / (10000 ** (torch.arange(dim // 4) / (dim // 4 - 1 if dim > 4 else 1)))
    out = []
    for coord in (ys, xs):
        angles = coord.flatten()[:, None].float() * omega[None, :]  # (N, D/4)
        out += [angles.sin(), angles.cos()]
    return torch.cat(out, dim=1)  # (N, D)


class PatchEmbed(nn.Module):
    """Non-overlapping P x P patches -> D-wide tokens with a strided convolution."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            cfg.in_channels, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash/efficient kernels)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.proj_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, *, return_attention: bool = False):
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, h, T, D/h)
        attn = None
        if return_attention:  # explicit softmax, only for visualisation
            attn = (q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)).softmax(dim=-1)  # (B, h, T, T)
            out = attn @ v
        else:
            p = self.attn_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, h, T, D/h)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, T, D)))
        return (out, attn) if return_attention else out


class MLP(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: ViTConfig, drop_path_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLP(cfg)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, *, return_attention: bool = False):
        attn = None
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y = self.attn(self.norm1(x))
        x = x + drop_path(y, self.drop_path_rate, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)
        return (x, attn) if return_attention else x


class ViT(nn.Module):
    """Vision Transformer for small images.

    ``forward(images)``: (B, C, H, W) float -> (B, num_classes) logits.
    ``forward_features``: -> (B, T, D) normalised tokens; ``forward_head``: tokens -> logits.
    ``last_attention(images)``: (B, h, T, T) attention probabilities of the last block.
    """

    def __init__(self, config: ViTConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ViTConfig()
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.pool == "cls" else None
        n_tokens = cfg.num_patches + (1 if cfg.pool == "cls" else 0)
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, cfg.dim))
        else:  # fixed, not trained; the [CLS] token (if any) gets position zero
            pe = sincos_2d(cfg.image_size // cfg.patch_size, cfg.dim)
            if cfg.pool == "cls":
                pe = torch.cat([torch.zeros(1, cfg.dim), pe])
            self.register_buffer("pos_embed", pe[None], persistent=False)
        self.emb_drop = nn.Dropout(cfg.emb_dropout)
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT initialisation: truncated normal (std 0.02) for weights, zeros for biases."""
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"expected images of shape (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                f"got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, T, D)
        return self.emb_drop(x + self.pos_embed)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)  # (B, T, D)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = tokens[:, 0] if self.config.pool == "cls" else tokens.mean(dim=1)  # (B, D)
        return self.head(pooled)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def last_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of the last block, (B, h, T, T); rows sum to 1."""
        x = self._tokens(x)
        for block in self.blocks[:-1]:
            x = block(x)
        _, attn = self.blocks[-1](x, return_attention=True)
        return attn

    def num_parameters(self, *, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def attention_map(model: ViT, images: torch.Tensor) -> torch.Tensor:
    """Per-image heat map of where the model looks, (B, H/P, W/P), from the last block.

    With a [CLS] token: the [CLS] row averaged over heads. With mean pooling: the attention each
    patch receives, averaged over queries and heads.
    """
    attn = model.last_attention(images).mean(dim=1)  # (B, T, T)
    g = model.config.image_size // model.config.patch_size
    if model.config.pool == "cls":
        heat = attn[:, 0, 1:]
    else:
        heat = attn.mean(dim=1)
    return heat.reshape(-1, g, g)
