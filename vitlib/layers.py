"""The encoder's building blocks: multi-head attention, the MLP, the pre-norm block, stochastic
depth and the original report's fixed sinusoidal position table."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange

from .attention import attention
from .model_config import ViTConfig


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The original report's fixed 1-D table: even columns sin(i / 10000^(j/d)), odd ones
    cos(i / 10000^((j-1)/d)), computed in float64 as it did with numpy."""
    i = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    even = j - (j % 2)
    angle = i / (10000 ** (even / dim))
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop the residual branch of whole samples, scaling the
    kept ones by 1 / (1 - rate). The same draws as torchvision.ops.stochastic_depth(x, rate, "row"),
    written here so that training processes need not import torchvision (~170 MB each)."""
    if not training or rate == 0.0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - rate)
    return x * keep.div_(1.0 - rate)


def maybe_dropout(rate: float) -> nn.Module:
    """Dropout, or nothing at all when the rate is 0 (a no-op module still costs a call per step)."""
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


class Attention(nn.Module):
    """Multi-head self-attention, fused (timm) or with the original per-head projections."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.embed_dim // cfg.num_heads
        self.scale = self.head_dim**-0.5
        self.per_head = cfg.qkv_per_head
        if self.per_head:
            # (q|k|v, head, out, in): a block-diagonal projection, one small Linear per head.
            h, d = self.num_heads, self.head_dim
            self.qkv_weight = nn.Parameter(torch.empty(3, h, d, d))
            self.qkv_bias = nn.Parameter(torch.zeros(3, h, d)) if cfg.qkv_bias else None
            bound = 1 / math.sqrt(d)  # nn.Linear's default init for in_features = d
            nn.init.uniform_(self.qkv_weight, -bound, bound)
            if self.qkv_bias is not None:
                nn.init.uniform_(self.qkv_bias, -bound, bound)
        else:
            self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
        self.attn_drop = maybe_dropout(cfg.attn_drop_rate)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim) if cfg.attn_out_proj else nn.Identity()
        self.proj_drop = maybe_dropout(cfg.drop_rate) if cfg.attn_out_proj else nn.Identity()
        self.last_attn: torch.Tensor | None = None
        self.keep_attn = False  # set by ViT.attention_maps to record the weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_head:
            xh = rearrange(x, "b n (h d) -> b h n d", h=self.num_heads)
            qkv = torch.einsum("bhni,khoi->kbhno", xh, self.qkv_weight)  # (3, B, h, N, d)
            if self.qkv_bias is not None:
                qkv = qkv + self.qkv_bias[:, None, :, None, :]
        else:
            qkv = rearrange(self.qkv(x), "b n (k h d) -> k b h n d", k=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)  # each (B, h, N, d)
        # With head sizes of 4-16 the explicit form is faster on CPU than the fused SDPA kernel;
        # scaling q rather than the scores touches N/d times fewer numbers.
        q = q * self.scale
        if self.keep_attn or self.training and isinstance(self.attn_drop, nn.Dropout):
            attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, N, N)
            if self.keep_attn:
                self.last_attn = attn.detach()
            out = self.attn_drop(attn) @ v
        else:
            out = attention(q, k, v)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden_dim: int, dropout: float):
        super().__init__(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            maybe_dropout(dropout),
            nn.Linear(hidden_dim, dim),
            maybe_dropout(dropout),
        )


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ViTConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim)
        self.mlp = FeedForward(cfg.embed_dim, cfg.mlp_hidden_dim, cfg.drop_rate)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        return x
