"""`ViTConfig`: the architecture of one Vision Transformer, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import check_choice, check_fields, check_positive


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
        check_positive(  # first: the divisibility checks below divide by them
            self,
            (
                "image_size",
                "in_chans",
                "patch_size",
                "num_classes",
                "embed_dim",
                "depth",
                "num_heads",
                "mlp_hidden_dim",
            ),
        )
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
