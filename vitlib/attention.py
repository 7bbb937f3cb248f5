"""The attention core, softmax(q kᵀ) v, with a CPU form for tiny heads.

With head sizes of 4-16 and ~50 tokens, every product in attention is a batch of tiny matrices,
and on the CPU their layout decides the speed: BLAS multiplies a (d, N) by an (N, N) matrix about
4x faster than an (N, N) by an (N, d) one (measured on 2 cores: 0.17 vs 0.71 ms for the
(256, 50, 50) @ (256, 50, 4) batch of one training step). `TinyHeadAttention` computes the same
numbers as the plain form, but every N x N product as the transposed (d, N) @ (N, N) one, in the
forward and in its hand-written backward. Benchmarks: benchmarks/README.md.
"""

from __future__ import annotations

import torch


class TinyHeadAttention(torch.autograd.Function):
    """softmax(q @ kᵀ) @ v for (..., N, d) q, k, v (q already scaled), with transposed products."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)  # (..., N, N)
        ctx.save_for_backward(q, k, v, attn)
        return (v.transpose(-2, -1) @ attn.transpose(-2, -1)).transpose(-2, -1)  # (attn @ v) as (v^T attn^T)^T

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, attn = ctx.saved_tensors
        grad_attn = grad_out @ v.transpose(-2, -1)  # (N, d) @ (d, N): already the fast shape
        grad_v_t = grad_out.transpose(-2, -1) @ attn  # (attn^T @ grad_out)^T
        grad_scores = torch._softmax_backward_data(grad_attn, attn, -1, attn.dtype)
        grad_q_t = k.transpose(-2, -1) @ grad_scores.transpose(-2, -1)  # (grad_scores @ k)^T
        grad_k_t = q.transpose(-2, -1) @ grad_scores  # (grad_scores^T @ q)^T
        return grad_q_t.transpose(-2, -1), grad_k_t.transpose(-2, -1), grad_v_t.transpose(-2, -1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q @ kᵀ) @ v, q already scaled: the transposed form on the CPU for heads of at most
    16 dimensions, the plain form elsewhere (on GPUs neither layout was measured to matter)."""
    if q.device.type == "cpu" and q.shape[-1] <= 16:
        return TinyHeadAttention.apply(q, k, v)
    return (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v
