import pytest
import torch
import torch.nn.functional as F

from vitlib.attention import TinyHeadAttention, attention


def plain_attention(q, k, v):
    return (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v


def test_tiny_head_gradients_are_exact():
    """The hand-written backward against finite differences, in float64."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(TinyHeadAttention.apply, (q, k, v))


@pytest.mark.parametrize("head_dim", [4, 16, 32])
def test_attention_equals_the_plain_form_and_sdpa(head_dim):
    """Same values and gradients as softmax(q kᵀ) v and as PyTorch's own SDPA, for inputs that
    are not contiguous (as they come out of the q/k/v projection)."""
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(3, 16, 50, 2, head_dim, generator=g).permute(0, 1, 3, 2, 4)  # (3, B, h, N, d) view
    grad = torch.randn(16, 2, 50, head_dim, generator=g)
    outs = []
    for fn in (attention, plain_attention, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=1.0)):
        q, k, v = (t.clone().requires_grad_() for t in qkv.unbind(0))
        out = fn(q, k, v)
        out.backward(grad)
        outs.append([out.detach(), q.grad, k.grad, v.grad])
    for ours, ref in zip(outs[0], outs[1]):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for ours, ref in zip(outs[0], outs[2]):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
