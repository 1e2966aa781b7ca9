"""commenv_agents.layers: each batched layer computes what one plain layer per model does."""

import torch
import torch.nn.functional as F

from commenv_agents.layers import BatchedConv2d, BatchedLinear, BatchedMLP, conv_out


def test_batched_linear_matches_one_linear_per_model(device):
    layer = BatchedLinear(3, 5, 4).to(device)
    x = torch.randn(3, 7, 5, device=device)
    expected = torch.stack([x[i] @ layer.weight[i] + layer.bias[i] for i in range(3)])
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_batched_mlp_matches_per_model_relu_mlp_and_is_seeded(device):
    gen = torch.Generator().manual_seed(3)
    mlp = BatchedMLP(2, [5, 6, 3], gen).to(device)
    twin = BatchedMLP(2, [5, 6, 3], torch.Generator().manual_seed(3)).to(device)
    assert all(torch.equal(a, b) for a, b in zip(mlp.parameters(), twin.parameters(), strict=True))
    x = torch.randn(2, 4, 5, device=device)
    for g in range(2):
        h = torch.relu(x[g] @ mlp.layers[0].weight[g] + mlp.layers[0].bias[g])
        out = h @ mlp.layers[1].weight[g] + mlp.layers[1].bias[g]
        assert torch.allclose(mlp(x)[g], out, atol=1e-6)
    last = BatchedMLP(2, [5, 3], gen, last_activation=True).to(device)
    assert (last(x) >= 0).all()


def test_batched_conv_is_one_conv_per_group(device):
    conv = BatchedConv2d(2, 1, 3, 4, 2, 1).to(device)
    x = torch.randn(5, 2, 8, 8, device=device)
    out = conv(x)
    assert out.shape == (5, 6, conv_out(8), conv_out(8))
    for g in range(2):
        ref = F.conv2d(
            x[:, g : g + 1],
            conv.weight[3 * g : 3 * g + 3],
            conv.bias[3 * g : 3 * g + 3],
            stride=2,
            padding=1,
        )
        assert torch.allclose(out[:, 3 * g : 3 * g + 3], ref, atol=1e-6)
