"""A Vision Transformer for small images, written with tensor operations only.

References: Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words" (ViT); Vaswani et al. 2017,
"Attention Is All You Need". One `ViTConfig` expresses both the course report's original model
(per-head q/k/v, no output projection, fixed sinusoidal positions, optional softmax head) and the
standard timm-style ViT (fused qkv + projection, learned positions, final LayerNorm, dropout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .attention import attention
from .checks import check_choice, check_fields

# Pixel statistics of the MNIST training set, used when `normalize_input` is on.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class ViTConfig:
    image_size: int = 28  # height = width of the input images, in pixels
    in_chans: int = 1  # image channels
    patch_size: int = 4  # side of a square patch; must divide image_size
    num_classes: int = 10  # outputs of the head
    embed_dim: int = 8  # token width
    depth: int = 2  # number of encoder blocks
    num_heads: int = 2  # attention heads; must divide embed_dim
    mlp_hidden_dim: int = 16  # hidden units of each block's MLP
    qkv_per_head: bool = False  # original: one Linear(d_head, d_head) per head on its slice of the token
    attn_out_proj: bool = True  # output projection after attention (the original has none)
    qkv_bias: bool = True  # bias in the q/k/v projections
    pos_embed: str = "learned"  # 'learned', 'sinusoidal' (the original's fixed 1-D table) or 'none'
    class_token: bool = True  # classify from a class token; False: mean of the patch tokens
    final_norm: bool = True  # LayerNorm before the head (the original has none)
    head_hidden_layers: int = 0  # hidden layers in the classification head (0: one Linear)
    head_hidden_dim: int = 0  # width of those layers; 0 means mlp_hidden_dim
    head_softmax: bool = False  # the original's Softmax after the head, which CrossEntropyLoss applies again
    normalize_input: bool = False  # standardize pixels with the MNIST mean/std inside the model
    drop_rate: float = 0.0  # dropout after position embedding, in MLPs and after projections
    attn_drop_rate: float = 0.0  # dropout on the attention weights
    drop_path_rate: float = 0.0  # stochastic depth, rising linearly to this value in the last block
    init: str = "timm"  # 'timm' (truncated normal 0.02) or 'torch' (PyTorch defaults, as the original)
    # Prediction only (training never sees it): average the class probabilities over the image and
    # its four copies shifted this many pixels up, down, left and right (0: the image alone).
    test_shifts: int = 0

    def __post_init__(self):
        check_fields(self)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size={self.patch_size} does not divide image_size={self.image_size}; "
                f"choose one of {[p for p in range(1, self.image_size + 1) if self.image_size % p == 0]}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; "
                f"choose num_heads in {[h for h in range(1, self.embed_dim + 1) if self.embed_dim % h == 0]}"
            )
        check_choice("pos_embed", self.pos_embed, ("learned", "sinusoidal", "none"))
        check_choice("init", self.init, ("timm", "torch"))
        for name in (
            "image_size",
            "in_chans",
            "patch_size",
            "num_classes",
            "embed_dim",
            "depth",
            "num_heads",
            "mlp_hidden_dim",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.test_shifts < self.image_size:
            raise ValueError(
                f"test_shifts must be a whole number of pixels from 0 (no shifted copies) to "
                f"{self.image_size - 1}, got {self.test_shifts}"
            )
        if self.head_hidden_layers < 0 or self.head_hidden_dim < 0:
            raise ValueError("head_hidden_layers and head_hidden_dim must be >= 0")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def uses_dropout(self) -> bool:
        """Whether training draws random masks (dropout or stochastic depth)."""
        return bool(self.drop_rate or self.attn_drop_rate or self.drop_path_rate)


def shifted_copies(images: torch.Tensor, pixels: int) -> list[torch.Tensor]:
    """The images (..., H, W) and their copies moved `pixels` down, up, right and left, with zeros
    (the background) coming in at the edge, as digits a little off-centre would look."""
    h, w = images.shape[-2:]
    if not isinstance(pixels, int) or not 0 < pixels < min(h, w):
        raise ValueError(f"shifts must be a whole number of pixels from 1 to {min(h, w) - 1}, got {pixels!r}")
    p = pixels
    padded = F.pad(images, (p, p, p, p))
    return [images] + [
        padded[..., p - dy : p - dy + h, p - dx : p - dx + w] for dy, dx in ((p, 0), (-p, 0), (0, p), (0, -p))
    ]


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


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        rng_state = torch.get_rng_state()  # 'torch' init redraws from here, as the original did
        p, d = cfg.patch_size, cfg.embed_dim
        self.patch_embed = nn.Linear(cfg.in_chans * p * p, d)
        num_tokens = cfg.num_patches + int(cfg.class_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, d))
        elif cfg.pos_embed == "sinusoidal":
            self.register_buffer("pos_embed", sinusoidal_table(num_tokens, d)[None], persistent=False)
        else:
            self.pos_embed = None
        self.pos_drop = maybe_dropout(cfg.drop_rate)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.Sequential(*[Block(cfg, r) for r in rates])
        self.norm = nn.LayerNorm(d) if cfg.final_norm else nn.Identity()
        head_width = cfg.head_hidden_dim or cfg.mlp_hidden_dim
        layers, width = [], d
        for _ in range(cfg.head_hidden_layers):
            layers += [nn.Linear(width, head_width), nn.GELU(), maybe_dropout(cfg.drop_rate)]
            width = head_width
        layers.append(nn.Linear(width, cfg.num_classes))
        if cfg.head_softmax:
            layers.append(nn.Softmax(dim=-1))
        self.head = nn.Sequential(*layers)
        if cfg.init == "torch":
            torch.set_rng_state(rng_state)
            self._init_like_original()
        else:
            self._init_timm()

    @torch.no_grad()
    def _init_like_original(self) -> None:
        """PyTorch's default init, drawn in the order the original built its modules, so that
        under the same torch seed the original model's initial weights come out exactly."""
        self.patch_embed.reset_parameters()
        if self.cls_token is not None:
            self.cls_token.uniform_()  # the original: nn.Parameter(torch.rand(1, d))
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for blk in self.blocks:
            attn = blk.attn
            if attn.per_head:
                for k in range(3):  # q_mappings, then k_mappings, then v_mappings, one Linear per head
                    for h in range(attn.num_heads):
                        lin = nn.Linear(attn.head_dim, attn.head_dim)
                        attn.qkv_weight[k, h] = lin.weight
                        if attn.qkv_bias is not None:
                            attn.qkv_bias[k, h] = lin.bias
            else:
                attn.qkv.reset_parameters()
            if isinstance(attn.proj, nn.Linear):
                attn.proj.reset_parameters()
            blk.mlp[0].reset_parameters()
            blk.mlp[3].reset_parameters()
        for m in self.head:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def _init_timm(self) -> None:
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, Attention) and m.per_head:
                nn.init.trunc_normal_(m.qkv_weight, std=0.02)
                if m.qkv_bias is not None:
                    nn.init.zeros_(m.qkv_bias)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, N, D) tokens after the encoder."""
        cfg = self.cfg
        if images.shape[-3:] != (cfg.in_chans, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"expected images of shape (B, {cfg.in_chans}, {cfg.image_size}, {cfg.image_size}), "
                f"got {tuple(images.shape)}"
            )
        if cfg.normalize_input:
            images = (images - MNIST_MEAN) / MNIST_STD
        p = cfg.patch_size
        x = rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p)
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return self.norm(self.blocks(self.pos_drop(x)))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)
        return self.head(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes), or probabilities when `head_softmax` is on."""
        return self.forward_head(self.forward_features(images))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, shifts: int | None = None) -> torch.Tensor:
        """Class probabilities (B, num_classes): of the images alone, or (`shifts`, by default the
        config's `test_shifts`, > 0) their mean over the image and its four shifted copies."""
        return self.view_probabilities(images, shifts).mean(dim=0)

    @torch.no_grad()
    def view_probabilities(self, images: torch.Tensor, shifts: int | None = None) -> torch.Tensor:
        """(views, B, num_classes): the class probabilities of each view `predict_proba` averages,
        the image alone first."""
        shifts = self.cfg.test_shifts if shifts is None else shifts
        views = shifted_copies(images, shifts) if shifts else [images]
        return torch.stack([out if self.cfg.head_softmax else out.softmax(dim=-1) for out in map(self, views)])

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Attention weights of every block, (depth, B, heads, N, N), for one forward pass."""
        attns = [blk.attn for blk in self.blocks]
        for a in attns:
            a.keep_attn = True
        try:
            self(images)
            return torch.stack([a.last_attn for a in attns])
        finally:
            for a in attns:
                a.keep_attn, a.last_attn = False, None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
