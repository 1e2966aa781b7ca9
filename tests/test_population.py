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


# -- argument checks (before anything is built or seeded) --------------------------------------
SHAPE = (1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_nodes": 0}, "n_nodes"),
        ({"n_nodes": 2.5}, "n_nodes"),
        ({"image_shape": (8, 8)}, "image_shape"),
        ({"image_shape": (0, 8, 8)}, "image_shape"),
        ({"num_classes": 0}, "num_classes"),
        ({"hidden": 0}, "hidden"),
        ({"feature_dim": 0}, "feature_dim"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": "a"}, "lr"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"temperature": float("nan")}, "temperature"),
        ({"feature_weight": -1.0}, "feature_weight"),
        ({"broadcast_prob": "0.5"}, "broadcast_prob"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_population_arguments_are_checked_first(kwargs, match, device):
    from commenv_agents.protocols import make_protocol
    from commenv_agents.unsupervised import BiGANPopulation, VAEPopulation

    args = {"n_nodes": 3, "image_shape": SHAPE, "num_classes": 10, **kwargs}
    n, shape, classes = args.pop("n_nodes"), args.pop("image_shape"), args.pop("num_classes")
    args.setdefault("device", device)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=match):
        OutputSharingPopulation(n, shape, classes, **args)  # device-free: args has the device
    assert torch.equal(torch.random.get_rng_state(), state)  # refused before seeding anything
    if not kwargs.keys() & {"num_classes", "feature_weight"}:  # label-free nodes: the rest
        for cls in (VAEPopulation, BiGANPopulation):
            with pytest.raises(ValueError, match=match):
                cls(n, shape, **args)
    shared = ("hidden", "feature_dim", "lr", "seed", "device")
    if kwargs.keys() & {"n_nodes", "image_shape", "num_classes", *shared}:
        with pytest.raises(ValueError, match=match):
            make_protocol(
                "sync_sgd", n, shape, classes, **{k: args[k] for k in shared if k in args}
            )  # device-free: args holds the fixture's device


def test_lr_zero_is_kept(device):
    from commenv_agents.unsupervised import VAEPopulation

    pop = VAEPopulation(2, SHAPE, lr=0.0, feature_dim=4, hidden=8, device=device)
    assert pop.optimizer.param_groups[0]["lr"] == 0.0


def test_a_bad_step_changes_nothing(device):
    from commenv_agents.unsupervised import BiGANPopulation

    game = NodeGraphGame(n_nodes=3, content="logits", batch_size=4, device=device)
    game.reset(seed=0)
    views = game.split_obs(game.observe_all()[0])
    pop = OutputSharingPopulation(3, game.image_shape, 10, share="logits", device=device)
    before = [p.detach().clone() for p in pop.model.parameters()]
    for bad in (game.out_valid.float(), game.out_valid[:2], game.out_valid[:, None]):
        with pytest.raises(ValueError, match="out_valid"):
            pop.step(views, bad)
    with pytest.raises(ValueError, match="views lack"):
        pop.step({k: v for k, v in views.items() if k != "labels"}, game.out_valid)
    assert all(torch.equal(a, b) for a, b in zip(before, pop.model.parameters(), strict=True))
    codes = NodeGraphGame(n_nodes=3, content="codes", feature_dim=4, batch_size=4, device=device)
    codes.reset(seed=0)
    cviews = codes.split_obs(codes.observe_all()[0])
    bigan = BiGANPopulation(3, codes.image_shape, feature_dim=4, hidden=8, device=device)
    gen_state = bigan.gen.get_state()
    with pytest.raises(ValueError, match="payload"):
        bigan.step({**cviews, "payload": torch.zeros(3, 4, 7, device=device)}, codes.out_valid)
    assert torch.equal(bigan.gen.get_state(), gen_state)


def test_predict_proba_and_encode_take_empty_and_float64_batches(device):
    from commenv_agents.unsupervised import VAEPopulation

    pop = OutputSharingPopulation(3, SHAPE, 10, device=device)
    assert pop.predict_proba(torch.zeros(0, *SHAPE)).shape == (3, 0, 10)
    x = torch.rand(5, *SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pop.predict_proba(x.double()), pop.predict_proba(x))
    vae = VAEPopulation(3, SHAPE, feature_dim=4, hidden=8, device=device)
    assert vae.encode(torch.zeros(0, *SHAPE)).shape == (3, 0, 4)
    for bad in (x.to(torch.uint8), x.numpy()):
        with pytest.raises(ValueError, match="floating-point"):
            pop.predict_proba(bad)
    with pytest.raises(ValueError, match="chunk"):
        pop.predict_proba(x, chunk=0)


def test_run_population_checks_before_training(device):
    game = NodeGraphGame(n_nodes=3, batch_size=4, max_cycles=10, device=device)
    pop = OutputSharingPopulation(3, game.image_shape, 10, device=device)
    imgs, labels = game.test_images[:10], game.test_labels[:10]
    for kwargs, match in (
        ({"steps": 11}, "max_cycles"),
        ({"steps": -1}, "steps"),
        ({"steps": 5, "eval_every": -1}, "eval_every"),
        ({"steps": 5, "test": (imgs, labels[:7])}, "test must be"),
        ({"steps": 5, "test": imgs}, "test must be"),
    ):
        with pytest.raises(ValueError, match=match):
            run_population(game, pop, **kwargs)
    four = OutputSharingPopulation(4, game.image_shape, 10, device=device)
    with pytest.raises(ValueError, match="4 nodes"):
        run_population(game, four, 5)


def test_make_protocol_refuses_options_of_no_protocol(device):
    from commenv_agents.protocols import make_protocol

    with pytest.raises(ValueError, match="name no protocol"):
        make_protocol("topk", 3, SHAPE, 10, options={"topkk": {"ratio": 0.1}}, device=device)


def test_building_a_population_leaves_the_callers_rng_alone(device):
    """Populations seed their own initialisation; the user's global stream goes on unchanged."""
    from commenv_agents.protocols import PROTOCOLS, make_protocol
    from commenv_agents.unsupervised import BiGANPopulation, VAEPopulation

    builders = [
        lambda: OutputSharingPopulation(3, SHAPE, 10, seed=7, device=device),
        lambda: SequentialPopulation(3, SHAPE, 10, seed=7, device=device),
        lambda: VAEPopulation(3, SHAPE, feature_dim=4, hidden=8, seed=7, device=device),
        lambda: BiGANPopulation(3, SHAPE, feature_dim=4, hidden=8, seed=7, device=device),
        *(
            lambda name=name: make_protocol(name, 3, SHAPE, 10, hidden=8, seed=7, device=device)
            for name in PROTOCOLS
        ),
    ]
    torch.manual_seed(123)
    expected = torch.rand(3)
    for build in builders:
        torch.manual_seed(123)
        first = build()
        assert torch.equal(torch.rand(3), expected)
        second = build()  # and the same seed still gives the same initialisation
        mine, twins = _module_params(first), _module_params(second)
        assert mine and all(torch.equal(a, b) for a, b in zip(mine, twins, strict=True))


def _module_params(obj, depth: int = 2) -> list[torch.Tensor]:
    """Every parameter of the torch modules an agent holds (its models, or those of the agent
    it wraps), in attribute order."""
    values = list(vars(obj).values())
    values += [m for v in values if isinstance(v, list) for m in v]
    out = [p for m in values if isinstance(m, torch.nn.Module) for p in m.parameters()]
    inner = [
        v for v in values if hasattr(v, "__dict__") and type(v).__module__.startswith("commenv")
    ]
    for agent in inner if depth else []:
        out += _module_params(agent, depth - 1)
    return out
