import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitlib.config import PRESETS, build_config
from vitlib.layers import Attention, drop_path, sinusoidal_table
from vitlib.model import ViT, count_parameters, shifted_copies
from vitlib.model_config import ViTConfig
from vitlib.reference import ViT as ReferenceViT
from vitlib.reference import vitlib_state_dict


def original_pair(depth: int, hu_ratio: int, head_softmax: bool):
    torch.manual_seed(depth * 10 + hu_ratio)
    ref = ReferenceViT(HURatio=hu_ratio, n_blocks=depth).eval()
    cfg = build_config("original", {"depth": depth, "mlp_hidden_dim": 8 * hu_ratio, "head_softmax": head_softmax}).model
    ours = ViT(cfg).eval()
    ours.load_state_dict(vitlib_state_dict(ref))
    if not head_softmax:
        ref.mlp = ref.mlp[:1]  # the reference without its head softmax gives logits
    return ref, ours


@pytest.mark.parametrize("head_softmax", [True, False])
@pytest.mark.parametrize("depth,hu_ratio", [(2, 2), (2, 4), (3, 2), (3, 4)])
def test_matches_original_implementation(depth, hu_ratio, head_softmax):
    ref, ours = original_pair(depth, hu_ratio, head_softmax)
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ref(images), ours(images)
    assert got.shape == (6, 10)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert count_parameters(ours) == count_parameters(ref)


def test_gradients_match_original_implementation():
    ref, ours = original_pair(3, 2, head_softmax=True)
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 1, 4, 1])
    F.cross_entropy(ref(images), labels).backward()
    F.cross_entropy(ours(images), labels).backward()
    torch.testing.assert_close(ours.patch_embed.weight.grad, ref.embedding.weight.grad, atol=1e-6, rtol=1e-4)
    ref_q_grad = ref.blocks[0].mhsa.q_mappings[1].weight.grad
    torch.testing.assert_close(ours.blocks[0].attn.qkv_weight.grad[0, 1], ref_q_grad, atol=1e-6, rtol=1e-4)


def test_sinusoidal_table_is_the_original_one():
    ref = ReferenceViT(HURatio=2, n_blocks=1)
    assert torch.equal(sinusoidal_table(50, 8), ref.posEmbedding)


def test_full_attention_matches_torch_multihead_attention():
    cfg = ViTConfig(embed_dim=16, num_heads=4)
    torch.manual_seed(0)
    ours = Attention(cfg).eval()
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(ours.qkv.weight)
        mha.in_proj_bias.copy_(ours.qkv.bias)
        mha.out_proj.weight.copy_(ours.proj.weight)
        mha.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(ours(x), mha(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_and_runs(preset):
    torch.manual_seed(0)
    model = ViT(build_config(preset).model).eval()
    out = model(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    probs = model.predict_proba(torch.rand(3, 1, 28, 28))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_samples_in_a_batch_do_not_interact():
    model = ViT(ViTConfig(embed_dim=16, num_heads=4, depth=2)).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_standard_form_has_its_parts():
    model = ViT(
        ViTConfig(
            embed_dim=16, num_heads=2, head_hidden_layers=2, head_hidden_dim=24, pos_embed="learned", drop_rate=0.1
        )
    )
    assert isinstance(model.norm, nn.LayerNorm)
    assert isinstance(model.pos_embed, nn.Parameter) and model.pos_embed.shape == (1, 50, 16)
    assert [m.out_features for m in model.head if isinstance(m, nn.Linear)] == [24, 24, 10]
    assert not any(isinstance(m, nn.Softmax) for m in model.modules())


def test_mean_pooling_without_class_token():
    model = ViT(ViTConfig(class_token=False, embed_dim=8, num_heads=2))
    assert model.cls_token is None and model.pos_embed.shape == (1, 49, 8)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_attention_maps_are_distributions():
    model = ViT(ViTConfig(depth=3))
    maps = model.attention_maps(torch.rand(2, 1, 28, 28))
    assert maps.shape == (3, 2, 2, 50, 50)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 2, 2, 50))
    assert all(blk.attn.last_attn is None for blk in model.blocks)  # nothing kept afterwards


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"patch_size": 5}, "patch_size=5 does not divide image_size=28"),
        ({"embed_dim": 10, "num_heads": 4}, "embed_dim=10 is not divisible by num_heads=4"),
        ({"pos_embed": "rotary"}, "pos_embed='rotary' is not valid; choose one of"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"drop_rate": 1.5}, "drop_rate must be in [0, 1)"),
        ({"embed_dim": "8"}, "embed_dim must be of type int"),
    ],
)
def test_bad_model_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        ViTConfig(**kwargs)


def test_wrong_image_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 28, 28\)"):
        ViT(ViTConfig())(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("depth,hu_ratio", [(2, 2), (3, 4)])
def test_same_seed_gives_the_originals_initial_weights(depth, hu_ratio):
    torch.manual_seed(123)
    ref = ReferenceViT(HURatio=hu_ratio, n_blocks=depth)
    after_ref = torch.rand(3)
    torch.manual_seed(123)
    ours = ViT(build_config("original", {"depth": depth, "mlp_hidden_dim": 8 * hu_ratio}).model)
    after_ours = torch.rand(3)
    expected = vitlib_state_dict(ref)
    got = ours.state_dict()
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    assert torch.equal(after_ours, after_ref)  # the same number of draws: later randomness agrees too


def test_drop_path_draws_what_torchvision_draws():
    from torchvision.ops import stochastic_depth

    x = torch.randn(64, 5, 8)
    for rate in (0.0, 0.3):
        torch.manual_seed(0)
        ours = drop_path(x, rate, training=True)
        torch.manual_seed(0)
        assert torch.equal(ours, stochastic_depth(x, rate, "row", training=True))
    assert drop_path(x, 0.3, training=False) is x


def test_shifted_copies_move_the_image_one_way_each_with_background_coming_in():
    """Compared with torch.roll, whose wrapped-around edge is then blanked."""
    x = torch.rand(3, 1, 28, 28)
    for pixels in (1, 3):
        copies = shifted_copies(x, pixels)
        assert torch.equal(copies[0], x)
        for copy, (dy, dx) in zip(copies[1:], ((pixels, 0), (-pixels, 0), (0, pixels), (0, -pixels))):
            expected = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            rows = slice(0, dy) if dy > 0 else slice(28 + dy, 28) if dy < 0 else slice(0, 0)
            cols = slice(0, dx) if dx > 0 else slice(28 + dx, 28) if dx < 0 else slice(0, 0)
            expected[..., rows, :] = 0
            expected[..., :, cols] = 0
            assert torch.equal(copy, expected), (pixels, dy, dx)


def test_a_model_with_test_shifts_averages_the_probabilities_of_the_copies():
    torch.manual_seed(0)
    plain = ViT(ViTConfig(embed_dim=16, num_heads=2, depth=1)).eval()
    shifted = ViT(ViTConfig(embed_dim=16, num_heads=2, depth=1, test_shifts=2)).eval()
    shifted.load_state_dict(plain.state_dict())  # the setting adds no weights
    x = torch.rand(4, 1, 28, 28)
    by_hand = [F.pad(x, (0, 0, 2, 0))[..., :28, :], F.pad(x, (0, 0, 0, 2))[..., 2:, :]]  # down, up
    by_hand += [F.pad(x, (2, 0, 0, 0))[..., :28], F.pad(x, (0, 2, 0, 0))[..., 2:]]  # right, left
    expected = torch.stack([plain(v).softmax(-1) for v in [x, *by_hand]]).mean(0)
    assert torch.allclose(shifted.predict_proba(x), expected, atol=1e-6)
    assert torch.equal(plain.predict_proba(x), plain(x).softmax(-1))  # test_shifts=0: the image alone
    assert torch.equal(shifted(x), plain(x))  # training's forward pass never sees the copies
    assert torch.allclose(shifted.predict_proba(x, shifts=0), plain.predict_proba(x))


@pytest.mark.parametrize("shifts", [-1, 28])
def test_a_shift_outside_the_image_is_refused(shifts):
    with pytest.raises(ValueError, match=f"test_shifts must be a whole number of pixels from 0 .* to 27, got {shifts}"):
        ViTConfig(test_shifts=shifts)


def test_a_head_softmax_model_averages_its_outputs_over_the_copies():
    torch.manual_seed(0)
    model = ViT(ViTConfig(embed_dim=16, num_heads=2, depth=1, head_softmax=True, test_shifts=1)).eval()
    x = torch.rand(3, 1, 28, 28)
    expected = torch.stack([model(v) for v in shifted_copies(x, 1)]).mean(0)  # already probabilities
    assert torch.allclose(model.predict_proba(x), expected, atol=1e-6)


@pytest.mark.parametrize("pixels", [0, -1, 28, 1.5])
def test_a_shift_of_no_pixels_or_of_the_whole_image_is_refused(pixels):
    with pytest.raises(ValueError, match=r"shifts must be a whole number of pixels from 1 to 27"):
        shifted_copies(torch.rand(1, 1, 28, 28), pixels)
