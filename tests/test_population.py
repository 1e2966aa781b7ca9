"""commenv_agents.population: batched maths == per-node maths, runs against node_graph_v0,
learns."""

import pytest
import torch

from commenv.bench.graph import speed_rows
from commenv.node_graph import NodeGraphGame
from commenv_agents.population import (
    BatchedClassifier,
    OutputSharingPopulation,
    SequentialPopulation,
    SingleClassifier,
    node_losses,
    run_population,
)


def _copy_group(batched: BatchedClassifier, single: SingleClassifier, g: int) -> None:
    dense = [m for m in single.body if isinstance(m, torch.nn.Linear)] + [single.head]
    for src, dst in zip([*batched.body, batched.head], dense, strict=True):
        dst.weight.data.copy_(src.weight[g].T)
        dst.bias.data.copy_(src.bias[g, 0])
    if batched.arch == "cnn":
        convs = [m for m in single.body if isinstance(m, torch.nn.Conv2d)]
        for src, dst in zip(batched.convs, convs, strict=True):
            c_out = dst.weight.shape[0]
            dst.weight.data.copy_(src.weight[g * c_out : (g + 1) * c_out])
            dst.bias.data.copy_(src.bias[g * c_out : (g + 1) * c_out])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_batched_model_is_n_independent_models(arch, device):
    G, shape = 3, (1, 8, 8)
    batched = BatchedClassifier(G, shape, 10, arch=arch, hidden=16, feature_dim=8).to(device)
    x = torch.rand(G, 5, *shape, device=device)
    feats, logits = batched(x)
    assert feats.shape == (G, 5, 8) and logits.shape == (G, 5, 10)
    for g in range(G):
        single = SingleClassifier(shape, 10, arch=arch, hidden=16, feature_dim=8).to(device)
        _copy_group(batched, single, g)
        f, z = single(x[g])
        assert torch.allclose(f, feats[g], atol=1e-5) and torch.allclose(z, logits[g], atol=1e-5)
    # Gradients do not cross groups: node 1's loss moves only node 1's weights.
    logits[1].sum().backward()
    grad = batched.head.weight.grad
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0 and grad[1].abs().sum() > 0


def test_losses_follow_the_shared_content():
    N, M, C = 2, 3, 4
    logits = torch.zeros(N, M, C)
    feats = torch.ones(N, M, 5)
    views = {
        "labels": torch.nn.functional.one_hot(torch.zeros(N, M).long(), C).float(),
        "payload": torch.zeros(N, M, 5),
        "from_inbox": torch.tensor([0.0, 1.0]),
    }
    ce_uniform = torch.log(torch.tensor(4.0))
    out = node_losses(feats, logits, views, "features", 1.0, 2.0)
    assert torch.allclose(out, torch.stack([ce_uniform, torch.tensor(2.0)]))
    views["payload"] = torch.zeros(N, M, C)
    out = node_losses(feats, logits, views, "logits", 1.0, 1.0)
    assert torch.allclose(out, torch.stack([ce_uniform, ce_uniform]))  # soft target = uniform


@pytest.mark.parametrize(
    "share,content",
    [("labels", "labels"), ("logits", "logits"), ("features", "features"), ("none", "labels")],
)
def test_population_runs_against_the_env(share, content, device):
    game = NodeGraphGame(n_nodes=3, content=content, batch_size=8, feature_dim=16, device=device)
    pop = OutputSharingPopulation(
        3,
        game.image_shape,
        game.num_classes,
        share=share,
        broadcast_prob=0.5,
        hidden=32,
        feature_dim=16,
        device=device,
    )
    hist = run_population(
        game, pop, 20, eval_every=10, test=(game.test_images[:50], game.test_labels[:50])
    )
    assert [h["step"] for h in hist] == [10, 20]
    assert len(hist[-1]["per_node"]) == 3
    if share == "none":
        assert game.bandwidth()["total"] == 0
    else:
        assert game.bandwidth()["images"] > 0 and game.bandwidth()["payload"] > 0


def test_population_learns_digits_and_sequential_matches_interface(device):
    game = NodeGraphGame(n_nodes=2, content="labels", batch_size=32, device=device)
    test = (game.test_images, game.test_labels)
    kw = dict(share="labels", broadcast_prob=0.5, hidden=64, seed=1)
    pop = OutputSharingPopulation(2, game.image_shape, game.num_classes, device=device, **kw)
    hist = run_population(game, pop, 150, test=test)
    assert hist[-1]["average"] > 70.0  # chance is 10 %
    seq = SequentialPopulation(2, game.image_shape, game.num_classes, device=device, **kw)
    hist = run_population(game, seq, 150, test=test)
    assert hist[-1]["average"] > 70.0


def test_speed_rows_shape(device):
    rows = speed_rows(quick=True, sizes=(4,), device=device)
    assert [r["name"] for r in rows] == [
        "node_graph population N=4 batched",
        "node_graph population N=4 sequential",
    ]
    assert all(r["steps_per_s"] > 0 for r in rows) and "x the sequential" in rows[0]["note"]


def test_bad_population_config(device):
    with pytest.raises(ValueError, match="valid choices"):
        OutputSharingPopulation(2, (1, 8, 8), 10, share="gradients", device=device)
    with pytest.raises(ValueError, match="valid choices"):
        OutputSharingPopulation(2, (1, 8, 8), 10, arch="resnet", device=device)
    game = NodeGraphGame(n_nodes=2, num_envs=2, device=device)
    with pytest.raises(ValueError, match="num_envs=1"):
        run_population(game, OutputSharingPopulation(2, (1, 8, 8), 10, device=device), 1)
