"""The course report's model, transcribed from its listing (the seed report, ../shared/seed/).

Only the fixes needed to run on current torch are made, each marked `# FIX:`: the patch size and
the sub-image buffer size were floats (`28 / 7`), which `torch.zeros` and `nn.Linear` reject.
The per-sample and per-head Python loops are kept on purpose: this is the reference that
`vitlib.model.ViT` must match, and the baseline that the benchmark compares against.
"""

import numpy as np
import torch
import torch.nn as nn


class ViT(nn.Module):
    def __init__(self, HURatio, n_blocks, origImgDim=(1, 28, 28), subImageDim=7, hidden_d=8, n_heads=2, out_d=10):
        super().__init__()
        self.origImgDim = origImgDim
        self.subImageDim = subImageDim

        self.patch_size = (self.origImgDim[1] / self.subImageDim, self.origImgDim[2] / self.subImageDim)

        # Mapping to a lower dimensional embedding
        input_d = int(self.origImgDim[0] * self.patch_size[0] * self.patch_size[1])
        self.embedding = nn.Linear(input_d, hidden_d)

        # Learnable classification token
        self.class_token = nn.Parameter(torch.rand(1, hidden_d))

        # Positional embedding
        posEmbedding = torch.ones(self.subImageDim**2 + 1, hidden_d)
        for i in range(posEmbedding.shape[0]):
            for j in range(hidden_d):
                posEmbedding[i][j] = (
                    np.sin(i / (10000 ** (j / hidden_d))) if j % 2 == 0 else np.cos(i / (10000 ** ((j - 1) / hidden_d)))
                )

        self.register_buffer("posEmbedding", posEmbedding, persistent=False)

        # Create additional Encoder blocks
        self.blocks = nn.ModuleList([ViTBlock(hidden_d, HURatio, n_heads) for _ in range(n_blocks)])

        # Create a dense network for the classification task
        self.mlp = nn.Sequential(nn.Linear(hidden_d, out_d), nn.Softmax(dim=-1))

    def createSubImages(self, images):
        m, channel, height, width = images.shape

        assert height == width, "createSubImages method is implemented for square images only"

        # FIX: the size was the float height * width * channel / subImageDim ** 2.
        subImages = torch.zeros(m, self.subImageDim**2, int(height * width * channel / self.subImageDim**2))
        subImgSize = height // self.subImageDim  # 4

        for idx, image in enumerate(images):
            for i in range(self.subImageDim):
                for j in range(self.subImageDim):
                    subImage = image[:, i * subImgSize : (i + 1) * subImgSize, j * subImgSize : (j + 1) * subImgSize]
                    subImages[idx, i * self.subImageDim + j] = subImage.flatten()
        return subImages

    def forward(self, images):
        m, channel, height, width = images.shape
        subImages = self.createSubImages(images).to(self.posEmbedding.device)
        subImages = self.embedding(subImages)
        # Appending classification embedding to along with the sub-image embeddings
        # for every image
        subImages = torch.cat((self.class_token.expand(m, 1, -1), subImages), dim=1)

        # Adding positional embeddings
        out = subImages + self.posEmbedding.repeat(m, 1, 1)

        # Transformer Blocks
        for block in self.blocks:
            out = block(out)

        # Extracting the classification token only
        out = out[:, 0]

        # Return the classification prediction
        return self.mlp(out)


class ViTBlock(nn.Module):
    def __init__(self, hidden_d, HURatio, n_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_d)
        self.mhsa = MSA(hidden_d, n_heads)
        self.norm2 = nn.LayerNorm(hidden_d)

        self.mlp = nn.Sequential(
            nn.Linear(hidden_d, HURatio * hidden_d), nn.GELU(), nn.Linear(HURatio * hidden_d, hidden_d)
        )

    def forward(self, x):
        out = x + self.mhsa(self.norm1(x))
        out = out + self.mlp(self.norm2(out))
        return out


class MSA(nn.Module):
    def __init__(self, d, n_heads=2):
        super().__init__()
        self.d = d
        self.n_heads = n_heads

        d_head = int(d / n_heads)  # 4
        self.q_mappings = nn.ModuleList([nn.Linear(d_head, d_head) for _ in range(self.n_heads)])
        self.k_mappings = nn.ModuleList([nn.Linear(d_head, d_head) for _ in range(self.n_heads)])
        self.v_mappings = nn.ModuleList([nn.Linear(d_head, d_head) for _ in range(self.n_heads)])
        self.d_head = d_head  # 4
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, sequences):
        # Sequences has shape (N, seq_length, token_dim)
        # We go into shape (N, seq_length, n_heads, token_dim / n_heads)
        # And come back to (N, seq_length, item_dim) (through concatenation)
        result = []
        for sequence in sequences:
            seq_result = []
            for head in range(self.n_heads):
                q_mapping = self.q_mappings[head]
                k_mapping = self.k_mappings[head]
                v_mapping = self.v_mappings[head]

                seq = sequence[:, head * self.d_head : (head + 1) * self.d_head]
                q, k, v = q_mapping(seq), k_mapping(seq), v_mapping(seq)

                attention = self.softmax(q @ k.T / (self.d_head**0.5))
                seq_result.append(attention @ v)
            result.append(torch.hstack(seq_result))
        return torch.cat([torch.unsqueeze(r, dim=0) for r in result])


def vitlib_state_dict(ref: ViT) -> dict:
    """The reference's weights under vitlib.model.ViT's names (config: the `original` preset)."""
    sd = {
        "patch_embed.weight": ref.embedding.weight,
        "patch_embed.bias": ref.embedding.bias,
        "cls_token": ref.class_token[None],
        "head.0.weight": ref.mlp[0].weight,
        "head.0.bias": ref.mlp[0].bias,
    }
    for i, blk in enumerate(ref.blocks):
        p = f"blocks.{i}."
        for name in ("norm1", "norm2"):
            sd[p + name + ".weight"] = getattr(blk, name).weight
            sd[p + name + ".bias"] = getattr(blk, name).bias
        maps = (blk.mhsa.q_mappings, blk.mhsa.k_mappings, blk.mhsa.v_mappings)
        sd[p + "attn.qkv_weight"] = torch.stack([torch.stack([lin.weight for lin in m]) for m in maps])
        sd[p + "attn.qkv_bias"] = torch.stack([torch.stack([lin.bias for lin in m]) for m in maps])
        sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"] = blk.mlp[0].weight, blk.mlp[0].bias
        sd[p + "mlp.3.weight"], sd[p + "mlp.3.bias"] = blk.mlp[2].weight, blk.mlp[2].bias
    return {k: v.detach().clone() for k, v in sd.items()}
