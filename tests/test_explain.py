import torch
from sklearn.metrics import recall_score

from vitlib import explain
from vitlib.config import build_config
from vitlib.layers import sinusoidal_table
from vitlib.model import ViT
from vitlib.model_config import ViTConfig


def test_patches_are_the_image_blocks():
    image = torch.arange(28 * 28).reshape(1, 28, 28)
    grid = explain.patches(image, 4)
    assert grid.shape == (7, 7, 1, 4, 4)
    assert torch.equal(grid[2, 5, 0], image[0, 8:12, 20:24])


def test_position_similarity_of_the_original_table():
    model = ViT(build_config("seed").model)
    sim = explain.position_similarity(model)
    table = sinusoidal_table(50, 8)[1:]
    expected = torch.nn.functional.cosine_similarity(table[:, None], table[None], dim=-1)
    torch.testing.assert_close(sim, expected)
    torch.testing.assert_close(sim.diagonal(), torch.ones(49))


def test_rollout_of_one_block_is_half_the_class_token_attention():
    torch.manual_seed(0)
    model = ViT(ViTConfig(depth=1, embed_dim=8, num_heads=2)).eval()
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    maps = model.attention_maps(images.float() / 255)  # (1, B, h, N, N)
    expected = 0.5 * maps[0].mean(dim=1)[:, 0, 1:].reshape(3, 7, 7)  # the identity adds nothing off-diagonal
    torch.testing.assert_close(explain.attention_rollout(model, images), expected)


def test_rollout_rows_stay_distributions_through_depth():
    model = ViT(ViTConfig(depth=4)).eval()
    roll = explain.attention_rollout(model, torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert roll.shape == (2, 7, 7) and (roll >= 0).all() and (roll.sum(dim=(1, 2)) <= 1 + 1e-6).all()


def test_per_class_accuracy_is_per_class_recall():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (500,), generator=g)
    predicted = torch.where(torch.rand(500, generator=g) < 0.7, labels, torch.randint(0, 10, (500,), generator=g))
    expected = recall_score(labels.numpy(), predicted.numpy(), average=None)
    torch.testing.assert_close(
        explain.per_class_accuracy(labels, predicted), torch.tensor(expected, dtype=torch.float32)
    )
