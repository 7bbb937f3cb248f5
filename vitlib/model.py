"""A Vision Transformer for small images, written with tensor operations only.

References: Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words" (ViT); Vaswani et al. 2017,
"Attention Is All You Need". One `ViTConfig` expresses both the course report's original model
(per-head q/k/v, no output projection, fixed sinusoidal positions, optional softmax head) and the
standard timm-style ViT (fused qkv + projection, learned positions, final LayerNorm, dropout).

The architecture's settings are in `model_config`, the encoder's blocks in `layers`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .layers import Attention, Block, maybe_dropout, sinusoidal_table
from .model_config import ViTConfig

# Pixel statistics of the MNIST training set, used when `normalize_input` is on.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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
