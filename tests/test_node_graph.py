"""node_graph_v0: PettingZoo's own tests, the no-leak guarantee, inboxes, bits, bad input."""

import math

import numpy as np
import pytest
import torch

import commenv
from commenv.channel import quantize
from commenv.node_graph import NodeGraphGame, partition_indices
from commenv.testing import pettingzoo_suite

SMALL = dict(batch_size=4, inbox_capacity=3)
CONFIGS = {
    "labels-full": dict(n_nodes=3, content="labels", **SMALL),
    "logits-ring1": dict(n_nodes=4, graph="ring", k=1, content="logits", **SMALL),
    "features-user-graph": dict(
        n_nodes=3, graph=[(0, 1), (1, 2), (0, 2)], content="features", feature_dim=5, **SMALL
    ),
    "dirichlet-drop-newest": dict(
        n_nodes=4,
        partition="dirichlet",
        dirichlet_alpha=0.3,
        overflow="drop_newest",
        consumption_prob=0.9,
        **SMALL,
    ),
    "single-node": dict(n_nodes=1, **SMALL),
    "synthetic-all-to-all": dict(
        n_nodes=3, graph="all_to_all", dataset="synthetic", content="logits", **SMALL
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pettingzoo_suite(name):
    config = CONFIGS[name]
    pettingzoo_suite(commenv.node_graph_v0, num_cycles=20, **config)


def test_registered_and_defaults():
    assert "node_graph_v0" in commenv.ENVS
    env = commenv.node_graph_v0()
    obs, infos = env.reset(seed=0)
    assert env.agents == [f"node_{i}" for i in range(10)]
    assert env.observation_space("node_0") is env.observation_space("node_3")
    assert obs["node_0"].shape == env.observation_space("node_0").shape
    assert env.out_neighbours("node_0") == list(range(1, 10))  # k = N - 1 by default


@pytest.mark.parametrize(
    "content,train_size", [("labels", None), ("logits", None), ("labels", 200)]
)
def test_no_node_trains_on_foreign_data_unless_broadcast_to_it(content, train_size, device):
    """Track, outside the env, what each node may legitimately hold: its own partition plus
    every minibatch some node broadcast to it. Every minibatch it trains on must be in there,
    the observed images must be those samples, and the labels it sees must be its own or the
    ones that were sent with the minibatch."""
    B, N, M = 3, 5, 6
    game = NodeGraphGame(
        n_nodes=N,
        graph="ring",
        k=2,
        content=content,
        batch_size=M,
        inbox_capacity=2,
        consumption_prob=0.7,
        num_envs=B,
        train_size=train_size,
        device=device,
    )
    obs, _ = game.reset(seed=3)
    gen = torch.Generator().manual_seed(0)
    n_train = len(game.labels)
    holds = torch.zeros(B, N, n_train, dtype=torch.bool, device=device)
    for i, part in enumerate(game.partitions):
        holds[:, i, torch.from_numpy(part)] = True
    adj = game.adjacency
    infos = game.infos_all()
    obs_all = game.observe_all()
    foreign_seen = 0
    for _ in range(60):
        idx = infos["indices"]
        assert bool(holds.gather(2, idx.reshape(B, N, M)).all()), "trained on data it never got"
        views = game.split_obs(obs_all)
        assert torch.equal(views["images"].reshape(B, N, M, -1), game.images[idx])
        from_inbox = infos["sender"] >= 0
        foreign = game.owner[idx] != torch.arange(N, device=device)[None, :, None]
        foreign_seen += int(foreign.sum())
        # Local minibatches are all own data.
        assert not bool((foreign & ~from_inbox[..., None]).any())
        onehot = torch.nn.functional.one_hot(infos["true_labels"], game.num_classes).float()
        if content == "logits":  # true labels of received data are never shown
            assert torch.equal(views["labels"], onehot * (~from_inbox)[..., None, None])
        else:
            assert torch.equal(views["labels"], onehot)
        bits = (torch.rand(B, N, game.max_out, generator=gen) < 0.5).long().to(device)
        payload = None
        if content == "logits":
            payload = torch.randn(B, N, M, game.payload_dim, generator=gen).to(device)
        sent = torch.zeros(B, N, N, dtype=torch.bool, device=device)
        for j in range(game.max_out):  # test bookkeeping, not the env
            recv = game._out_table[:, j]
            ok = recv < N
            sent[:, torch.arange(N, device=device)[ok], recv[ok]] |= bits[:, ok, j].bool()
        assert not bool((sent & ~adj).any())
        # Every receiver of a broadcast may now hold the sender's current samples.
        b, s, r = sent.nonzero(as_tuple=True)
        holds[b[:, None], r[:, None], idx[b, s]] = True
        obs_all, _, _, infos = game.step_tensors(bits, payload)
    assert foreign_seen > 0  # the run did exercise inbox consumption


def test_received_payload_is_what_the_sender_sent(device):
    game = NodeGraphGame(
        n_nodes=2,
        content="features",
        feature_dim=3,
        batch_size=2,
        consumption_prob=1.0,
        device=device,
    )
    game.reset(seed=0)
    idx0 = game.infos_all()["indices"][0, 0].clone()
    payload = torch.zeros(1, 2, 2, 3, device=device)
    payload[0, 0] = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    bits = torch.tensor([[[1], [0]]], device=device)
    obs, _, _, infos = game.step_tensors(bits, payload)
    assert int(infos["sender"][0, 1]) == 0
    assert torch.equal(infos["indices"][0, 1], idx0)
    view = game.split_obs(obs)
    assert torch.equal(view["payload"][0, 1], payload[0, 0])
    assert float(view["from_inbox"][0, 1]) == 1.0
    assert torch.equal(view["labels"][0, 1], torch.zeros(2, game.num_classes, device=device))


@pytest.mark.parametrize("float_bits", [16, 8, 2])
def test_quantized_payload_arrives_as_quantized_and_is_billed_so(float_bits, device):
    M, P = 2, 3
    game = NodeGraphGame(
        n_nodes=2,
        content="features",
        feature_dim=P,
        batch_size=M,
        consumption_prob=1.0,
        float_bits=float_bits,
        device=device,
    )
    game.reset(seed=0)
    payload = torch.zeros(1, 2, M, P, device=device)
    payload[0, 0] = torch.tensor([[0.1, 0.25, 1.7], [-3.0, 0.3, 0.31]])
    obs, _, _, _ = game.step_tensors(torch.tensor([[[1], [0]]]), payload)
    got = game.split_obs(obs)["payload"][0, 1]
    torch.testing.assert_close(got, quantize(payload[0, 0], float_bits))
    assert not torch.equal(got, payload[0, 0])
    header = 64 if float_bits < 16 else 0
    assert game.bandwidth()["payload"] == M * (P * float_bits + header)
    with pytest.raises(ValueError, match="float_bits"):
        NodeGraphGame(n_nodes=2, content="features", float_bits=24, device=device)


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_inbox_overflow_policy_and_counters(overflow, device):
    N, cap = 4, 2
    game = NodeGraphGame(
        n_nodes=N,
        content="labels",
        batch_size=2,
        inbox_capacity=cap,
        consumption_prob=0.0,
        overflow=overflow,
        device=device,
    )
    game.reset(seed=1)
    ones = torch.ones(1, N, N - 1, dtype=torch.long)
    for step in range(1, 4):
        _, _, _, infos = game.step_tensors(ones)
        assert infos["inbox_count"].tolist() == [[cap] * N]
        assert infos["dropped"].tolist() == [[step * (N - 1) - cap] * N]
    st = game._state
    stored = [sorted(st["inbox_sender"][0, 0].tolist())]
    # Node 0 hears nodes 1, 2, 3 (in that slot order) every step.
    assert stored == ([[2, 3]] if overflow == "drop_oldest" else [[1, 2]])


def test_bits_are_accounted_exactly(device):
    N, M = 4, 3
    game = NodeGraphGame(n_nodes=N, content="logits", batch_size=M, device=device)
    game.reset(seed=0)
    bits = torch.ones(1, N, N - 1, dtype=torch.long)
    bits[0, 0] = 0  # node 0 stays silent
    game.step_tensors(bits, torch.zeros(1, N, M, game.num_classes))
    edges = (N - 1) * (N - 1)
    D = game.num_features
    assert game.bandwidth()["images"] == edges * M * D * 8
    assert game.bandwidth()["payload"] == edges * M * game.num_classes * 32
    per_node = game.infos_all()["bits_images"][0].tolist()
    assert per_node == [0] + [(N - 1) * M * D * 8] * (N - 1)
    labels = NodeGraphGame(n_nodes=2, content="labels", batch_size=M, device=device)
    labels.reset(seed=0)
    labels.step_tensors(torch.ones(1, 2, 1, dtype=torch.long))
    assert labels.bandwidth()["payload"] == 2 * M * math.ceil(math.log2(10))


def test_same_seed_same_episode_and_consumption(device):
    def run(seed):
        game = NodeGraphGame(n_nodes=3, batch_size=4, num_envs=2, device=device)
        game.reset(seed=seed)
        gen = torch.Generator().manual_seed(5)
        out = []
        for _ in range(15):
            bits = (torch.rand(2, 3, 2, generator=gen) < 0.5).long()
            _, _, _, infos = game.step_tensors(bits)
            out.append(torch.cat([infos["indices"].flatten(), infos["sender"].flatten()]))
        return torch.stack(out)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    game = NodeGraphGame(n_nodes=2, batch_size=2, consumption_prob=1.0, device=device)
    game.reset(seed=0)
    _, _, _, infos = game.step_tensors(torch.ones(1, 2, 1, dtype=torch.long))
    assert infos["sender"].tolist() == [[1, 0]]  # always consumes a non-empty inbox


def test_partitions_are_exclusive_and_cover():
    y = torch.arange(1000) % 10
    for scheme in ("iid", "dirichlet"):
        parts = partition_indices(y, 7, scheme, alpha=0.2, seed=3)
        allidx = np.concatenate(parts)
        assert len(allidx) == 1000 and len(np.unique(allidx)) == 1000
        assert min(len(p) for p in parts) > 0
    iid = partition_indices(y, 7, "iid", seed=3)
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1
    skew = partition_indices(y, 7, "dirichlet", alpha=0.05, seed=3)
    classes_per_node = [len(np.unique(y.numpy()[p])) for p in skew]
    assert min(classes_per_node) < 10  # non-IID: some node misses classes


def test_train_size_partitions_one_subset_for_any_number_of_nodes(device):
    one = NodeGraphGame(n_nodes=1, train_size=300, partition_seed=4, device=device)
    ten = NodeGraphGame(n_nodes=10, train_size=300, partition_seed=4, device=device)
    pool = np.concatenate(ten.partitions)
    assert len(pool) == 300 and len(np.unique(pool)) == 300
    assert np.array_equal(np.sort(pool), one.partitions[0])  # the single node holds the same data
    assert [len(p) for p in ten.partitions] == [30] * 10
    assert int((ten.owner >= 0).sum()) == 300  # the rest belongs to no node
    other = NodeGraphGame(n_nodes=1, train_size=300, partition_seed=5, device=device)
    assert not np.array_equal(other.partitions[0], one.partitions[0])
    with pytest.raises(ValueError, match="exceeds"):
        NodeGraphGame(n_nodes=2, train_size=10**6, device=device)
    with pytest.raises(ValueError, match="train_size"):
        NodeGraphGame(n_nodes=4, train_size=3, device=device)


def test_bad_input_is_named(device):
    with pytest.raises(ValueError, match="valid choices.*labels"):
        commenv.node_graph_v0(content="gradients")
    with pytest.raises(ValueError, match="valid choices.*drop_oldest"):
        commenv.node_graph_v0(overflow="bounce")
    with pytest.raises(ValueError, match="consumption_prob"):
        commenv.node_graph_v0(consumption_prob=1.5)
    env = commenv.node_graph_v0(n_nodes=3, content="logits", batch_size=2)
    env.reset(seed=0)
    good = {a: env.action_space(a).sample() for a in env.agents}
    payload1 = good["node_1"]["payload"]
    bad = dict(good, node_1={"broadcast": np.array([0.5, 1.0]), "payload": payload1})
    with pytest.raises(ValueError, match="node_1.*MultiBinary"):
        env.step(bad)
    nan = good["node_2"]["payload"].copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="node_2.*NaN"):
        env.step(dict(good, node_2={"broadcast": good["node_2"]["broadcast"], "payload": nan}))
    with pytest.raises(ValueError, match="node_0.*keys"):
        env.step(dict(good, node_0=np.array([1, 0])))
    game = NodeGraphGame(n_nodes=3, content="logits", batch_size=2, device=device)
    game.reset(seed=0)
    with pytest.raises(ValueError, match="payload"):
        game.step_tensors(torch.ones(1, 3, 2), torch.zeros(1, 3, 2, 4))
    with pytest.raises(ValueError, match="node_2.*0 or 1"):
        bits = torch.ones(1, 3, 2)
        bits[0, 2, 1] = 2
        game.step_tensors(bits, torch.zeros(1, 3, 2, 10))


def test_rgb_render_and_bit_cost(device):
    game = NodeGraphGame(
        n_nodes=3, batch_size=2, render_mode="rgb_array", bit_cost=1e-3, device=device
    )
    game.reset(seed=0)
    _, rewards, _, _ = game.step_tensors(torch.ones(1, 3, 2, dtype=torch.long))
    frame = game.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    expected = -1e-3 * 2 * (2 * 64 * 8 + 2 * 4)
    assert torch.allclose(rewards, torch.full((1, 3), expected, device=device))


def test_doc_page_matches_the_code(device):
    """Arguments one per line with the real defaults; the summary table's spaces are real."""
    import gymnasium

    from commenv.testing import check_documented_arguments

    check_documented_arguments(commenv.node_graph_v0)
    doc = commenv.node_graph_v0.__doc__
    assert (
        "| Action space | ``MultiBinary(K)`` (labels) or "
        "``Dict(broadcast=MultiBinary(K), payload=Box)`` |" in doc
    )
    assert "| Observation space | ``Box((M*D + M*C + M*P + 2,), float32)``" in doc
    for content, P in (("labels", 0), ("logits", None), ("features", 5)):
        game = NodeGraphGame(
            n_nodes=4,
            graph="ring",
            k=2,
            batch_size=3,
            content=content,
            feature_dim=5,
            device=device,
        )
        M, C, D, K = 3, game.num_classes, game.num_features, 2
        P = C if P is None else P
        assert game.observation_space("node_0").shape == (M * D + M * C + M * P + 2,)
        assert game.observation_space("node_0").dtype == np.float32
        act = game.action_space("node_0")
        if content == "labels":
            assert act == gymnasium.spaces.MultiBinary(K)
        else:
            assert act["broadcast"] == gymnasium.spaces.MultiBinary(K)
            assert act["payload"].shape == (M, P)
        assert game.action_space("node_1") is act


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (dict(k=5), "k must stay None with n_nodes=1"),
        (dict(graph="bogus"), "unknown graph 'bogus'"),
        (dict(graph=[(0, 1)]), "a single node has no edges"),
        (dict(graph="all_to_all", k=3), "k must stay None"),
    ],
)
def test_a_single_node_refuses_a_graph_it_would_ignore(config, match, device):
    """n_nodes=1 has no channel, so a k or an edge that would mean one is an error, not a
    value silently dropped."""
    with pytest.raises(ValueError, match=match):
        NodeGraphGame(n_nodes=1, device=device, **config)
    NodeGraphGame(n_nodes=1, graph=[], device=device)  # what a single node can have
