"""node_graph_v0's batched face: sparse routing against a reference inbox model, per-world
reset (the issue 18 contract), recycled observation tensors, and the PettingZoo face giving
the same episodes as the batched face with one world."""

from collections import deque

import numpy as np
import pytest
import torch

import commenv
import commenv.core
from commenv.node_graph import NodeGraphGame

STATE_KEYS = ("idx", "payload", "sender", "inbox_idx", "inbox_payload", "inbox_sender", "head")
STATE_KEYS += ("count", "dropped", "bits_images", "bits_payload", "last_bits", "t")


def random_actions(game, gen, p=0.6):
    B, N = game.num_envs, game.n_nodes
    bits = (torch.rand(B, N, game.max_out, generator=gen) < p).long().to(game.device)
    if game.content == "labels":
        return bits, None
    payload = torch.randn(B, N, game.batch_size, game.payload_dim, generator=gen)
    return bits, payload.to(game.device)


def as_dict(game, bits, payload):
    agents = game.possible_agents
    if payload is None:
        return {a: bits[:, i] for i, a in enumerate(agents)}
    return {a: {"broadcast": bits[:, i], "payload": payload[:, i]} for i, a in enumerate(agents)}


@pytest.mark.parametrize(
    "config",
    [
        dict(graph=[(0, 1), (2, 1), (3, 1), (1, 0), (3, 2)], overflow="drop_oldest"),
        dict(graph="ring", k=2, overflow="drop_newest"),
        dict(graph="all_to_all", overflow="drop_oldest", content="features", feature_dim=2),
    ],
)
def test_sparse_routing_matches_a_reference_inbox_model(config, device):
    """A plain-Python model of every inbox (a deque per world and node, arrivals in increasing
    sender order) predicts every popped minibatch, every count and every drop."""
    B, N, M, cap = 3, 4, 2, 2
    game = NodeGraphGame(
        n_nodes=N,
        batch_size=M,
        inbox_capacity=cap,
        consumption_prob=0.5,
        num_envs=B,
        device=device,
        **config,
    )
    game.reset(seed=1)
    gen = torch.Generator().manual_seed(2)
    inbox = [[deque() for _ in range(N)] for _ in range(B)]
    dropped = np.zeros((B, N), dtype=int)
    infos = game.infos_all()
    out = [game.out_neighbours(i) for i in range(N)]
    for _ in range(30):
        bits, payload = random_actions(game, gen)
        idx = infos["indices"].cpu()
        held = payload if payload is not None else infos["true_labels"].float()[..., None]
        if payload is None:  # labels travel as held: own or received
            obs = game.split_obs(game.observe_all())
            held = obs["labels"].argmax(-1).float()[..., None]
        for b in range(B):
            for r in range(N):
                for s in range(N):
                    if r in out[s] and bits[b, s, out[s].index(r)]:
                        q = inbox[b][r]
                        if len(q) < cap:
                            q.append((s, idx[b, s], held[b, s].cpu()))
                        elif config["overflow"] == "drop_oldest":
                            q.popleft()
                            q.append((s, idx[b, s], held[b, s].cpu()))
                            dropped[b, r] += 1
                        else:
                            dropped[b, r] += 1
        _, _, _, infos = game.step_tensors(bits, payload)
        sender, got_idx = infos["sender"].cpu(), infos["indices"].cpu()
        views = game.split_obs(game.observe_all().cpu())
        for b in range(B):
            for r in range(N):
                if sender[b, r] >= 0:  # consumed the oldest entry
                    s, want_idx, want_payload = inbox[b][r].popleft()
                    assert int(sender[b, r]) == s
                    assert torch.equal(got_idx[b, r], want_idx)
                    if game.content != "labels":
                        assert torch.equal(views["payload"][b, r], want_payload)
        assert infos["inbox_count"].cpu().tolist() == [[len(q) for q in w] for w in inbox]
        assert infos["dropped"].cpu().tolist() == dropped.tolist()


def snapshot(game):
    return {k: game._state[k].clone() for k in STATE_KEYS}


def test_image_gathers_in_blocks_and_in_one_give_the_same_observations(monkeypatch, device):
    """The CPU gathers the minibatch images block by block through a small scratch, other
    devices in one gather: a few rows per block, or no scratch at all, changes no bit."""
    monkeypatch.setattr(NodeGraphGame, "_GATHER_BYTES", 3 * 4 * 8 * 64)  # 3 minibatches
    games = [NodeGraphGame(num_envs=3, n_nodes=4, batch_size=8, device=device) for _ in "ab"]
    games[1]._scratch = None  # the one-gather path
    assert games[0]._gather_rows == 3 and (games[0]._scratch is not None) == (device.type == "cpu")
    gens = [torch.Generator().manual_seed(2) for _ in games]
    for game in games:
        game.reset(seed=1)
    outs = [game.observe_all() for game in games]
    for _ in range(6):
        assert torch.equal(outs[0], outs[1])
        outs = [
            game.step_tensors(*random_actions(game, gen))[0]
            for game, gen in zip(games, gens, strict=True)
        ]
    assert torch.equal(outs[0], outs[1])


def test_per_world_reset_leaves_other_worlds_exactly_as_without_it(device):
    def build():
        game = NodeGraphGame(
            n_nodes=4, batch_size=3, inbox_capacity=2, num_envs=4, max_cycles=50, device=device
        )
        game.reset(seed=5)
        return game

    plain, partial = build(), build()
    gen = torch.Generator().manual_seed(0)
    for t in range(12):
        bits, _ = random_actions(plain, gen)
        a = plain.step(as_dict(plain, bits, None))
        b = partial.step(as_dict(partial, bits, None))
        if t == 4:
            obs, infos = partial.reset(env_index=[1, 3])
            assert obs["node_0"].shape[0] == 4 and infos["node_0"]["sender"].shape == (4,)
            b = (obs, None, None, None, infos)
        for agent in plain.possible_agents:  # worlds 0 and 2: bit for bit
            assert torch.equal(a[0][agent][[0, 2]], b[0][agent][[0, 2]])
            for key, value in a[4][agent].items():
                assert torch.equal(value[[0, 2]], b[4][agent][key][[0, 2]])
    for key in STATE_KEYS:
        assert torch.equal(plain._state[key][[0, 2]], partial._state[key][[0, 2]]), key
    assert partial.episode_steps.tolist() == [12, 7, 12, 7]


def test_a_restarted_world_does_not_depend_on_the_other_worlds_restarts(device):
    """World 1 restarts at steps 3 and 8 in both runs; in the second, worlds 0 and 2 also
    restart, before, with and between its restarts: world 1's run is the same, bit for bit."""

    def run(resets):
        game = NodeGraphGame(
            n_nodes=4, batch_size=3, inbox_capacity=2, num_envs=4, max_cycles=50, device=device
        )
        game.reset(seed=5)
        gen, trace = torch.Generator().manual_seed(0), []
        for t in range(12):
            if t in resets:
                game.reset(env_index=resets[t])
            obs, _, _, infos = game.step_tensors(random_actions(game, gen)[0])
            trace.append([obs.clone()] + [infos[k].clone() for k in sorted(infos)])
        return trace

    alone = run({3: [1], 8: [1]})
    crowded = run({1: [0], 3: [1, 2], 5: [0, 2], 8: [0, 1], 10: [3]})
    for a, b in zip(alone, crowded, strict=True):
        assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(a[0][0], b[0][0]) for a, b in zip(alone, crowded, strict=True))


def test_a_reset_world_starts_a_valid_first_step_with_its_own_clock(device):
    game = NodeGraphGame(
        n_nodes=3, batch_size=4, inbox_capacity=3, num_envs=3, max_cycles=6, device=device
    )
    game.reset(seed=0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        game.step_tensors(random_actions(game, gen, p=1.0)[0])
    game.reset(env_index=torch.tensor([False, True, False]))
    infos = game.infos_all()
    views = game.split_obs(game.observe_all())
    for key in ("inbox_count", "dropped", "bits_images", "bits_payload"):
        assert infos[key][1].tolist() == [0, 0, 0], key
    assert infos["sender"][1].tolist() == [-1, -1, -1]
    assert views["from_inbox"][1].tolist() == [0, 0, 0]
    assert views["inbox_fill"][1].tolist() == [0, 0, 0]
    owner = game.owner[infos["indices"][1]]
    assert torch.equal(owner, torch.arange(3, device=owner.device)[:, None].expand_as(owner))
    assert int(infos["inbox_count"][0].sum()) > 0  # the other worlds kept their inboxes
    flags = []
    for _ in range(6):
        _, _, truncated, _ = game.step_tensors(random_actions(game, gen)[0])
        flags.append(truncated.tolist())
    assert flags[2] == [True, False, True]  # step 6 of worlds 0 and 2
    assert flags[5][1] is True  # world 1 restarted: its 6th step
    # An all-False mask restarts nothing.
    before = snapshot(game)
    game.reset(env_index=np.zeros(3, dtype=bool))
    assert all(torch.equal(before[k], game._state[k]) for k in STATE_KEYS)


def test_same_seed_and_same_resets_give_the_same_episodes(device):
    def run(seed):
        game = NodeGraphGame(n_nodes=3, batch_size=2, num_envs=3, device=device)
        game.reset(seed=seed)
        gen = torch.Generator().manual_seed(3)
        trace = []
        for t in range(10):
            if t in (3, 7):
                game.reset(env_index=t % 3)
            _, _, _, infos = game.step_tensors(random_actions(game, gen)[0])
            trace.append(torch.cat([infos["indices"].flatten(), infos["sender"].flatten()]))
        return torch.stack(trace)

    assert torch.equal(run(4), run(4))
    assert not torch.equal(run(4), run(5))


@pytest.mark.parametrize(
    "env_index,match",
    [
        (3, "env_index"),
        (-1, "env_index"),
        ([0, 5], "env_index"),
        (1.0, "env_index"),
        (True, "env_index"),
        (torch.zeros(2, dtype=torch.bool), "env_index"),
        ([], "env_index"),
        ("0", "env_index"),
    ],
)
def test_bad_env_index_raises_and_changes_nothing(env_index, match, device):
    game = NodeGraphGame(n_nodes=3, batch_size=2, num_envs=3, device=device)
    game.reset(seed=0)
    game.step_tensors(torch.ones(3, 3, 2, dtype=torch.long, device=device))
    before = snapshot(game)
    with pytest.raises(ValueError, match=match):
        game.reset(env_index=env_index)
    with pytest.raises(ValueError, match="seed"):
        game.reset(seed=1, env_index=0)
    assert all(torch.equal(before[k], game._state[k]) for k in STATE_KEYS)
    fresh = NodeGraphGame(n_nodes=3, batch_size=2, num_envs=3, device=device)
    with pytest.raises(ValueError, match="reset"):
        fresh.reset(env_index=0)


def test_recycled_observations_never_change_what_a_caller_holds(monkeypatch, device):
    """Large batches reuse observation tensors nobody holds: the episode is the same as with
    fresh tensors, and an observation kept by the caller is never overwritten."""
    config = dict(n_nodes=3, batch_size=2, num_envs=2, content="logits", device=device)
    fresh = NodeGraphGame(**config)  # device-free: device=device is in config
    monkeypatch.setattr(commenv.core, "REUSE_BYTES", 0)
    pooled = NodeGraphGame(**config)  # device-free: device=device is in config
    assert pooled._pool.recycles == (torch.device(device).type == "cpu")
    fresh.reset(seed=2)
    pooled.reset(seed=2)
    gen = torch.Generator().manual_seed(0)
    kept, tensors = [], set()
    for t in range(12):
        bits, payload = random_actions(fresh, gen)
        a = fresh.step_tensors(bits, payload)[0]
        b = pooled.step_tensors(bits, payload)[0]
        assert torch.equal(a, b)
        tensors.add(b.data_ptr())
        if t % 4 == 0:
            kept.append((b, b.clone(), b[:, 1].numpy() if b.device.type == "cpu" else None))
    if pooled._pool.recycles:
        assert len(tensors) <= len(kept) + commenv.core.POOL_SIZE  # recycled, not reallocated
    for held, copy, view in kept:
        assert torch.equal(held, copy)
        if view is not None:
            np.testing.assert_array_equal(view, copy[:, 1].numpy())


FACE_CONFIGS = {
    "labels": dict(n_nodes=4, batch_size=3, inbox_capacity=2),
    "logits-ring": dict(n_nodes=5, graph="ring", k=2, content="logits", batch_size=2),
    "features-quantized": dict(
        n_nodes=3,
        graph=[(0, 1), (1, 2), (2, 0)],
        content="features",
        feature_dim=3,
        batch_size=2,
        float_bits=3,
        overflow="drop_newest",
        bit_cost=1e-3,
    ),  # fmt: skip
    "codes": dict(n_nodes=3, content="gaussian_codes", feature_dim=2, batch_size=2),
    "single-node": dict(n_nodes=1, batch_size=2, max_cycles=9),
}


@pytest.mark.parametrize("name", sorted(FACE_CONFIGS))
def test_pettingzoo_face_and_batched_face_give_the_same_episode(name):
    config = FACE_CONFIGS[name]
    env = commenv.node_graph_v0(**config)
    game = commenv.node_graph_v0.batched(
        num_envs=1, **config
    )  # device-free: CPU face, CPU generator
    obs_pz, infos_pz = env.reset(seed=9)
    obs_b, infos_b = game.reset(seed=9)
    rng = np.random.default_rng(0)
    for _ in range(30):
        for a in env.possible_agents:
            np.testing.assert_array_equal(obs_pz[a], obs_b[a][0].numpy())
            assert list(infos_pz[a]) == list(infos_b[a])
            for key, value in infos_pz[a].items():
                if value.__class__ is np.ndarray:
                    assert value.dtype == np.int64
                    np.testing.assert_array_equal(value, infos_b[a][key][0].numpy())
                else:
                    assert type(value) is int and value == int(infos_b[a][key][0])
        if not env.agents:
            obs_pz, infos_pz = env.reset()
            obs_b, infos_b = game.reset()
            continue
        actions = {}
        for a in env.agents:
            space = env.action_space(a)
            if game.content == "labels":
                actions[a] = rng.integers(0, 2, space.shape).astype(np.int8)
            else:
                bits = rng.integers(0, 2, space["broadcast"].shape)  # int64 bits are fine
                payload = rng.standard_normal(space["payload"].shape).astype(np.float32)
                actions[a] = {"broadcast": bits, "payload": payload}
        obs_pz, rew, term, trunc, infos_pz = env.step(actions)
        batched = {
            a: (
                torch.as_tensor(v)[None]
                if not isinstance(v, dict)
                else {k: torch.as_tensor(x)[None] for k, x in v.items()}
            )
            for a, v in actions.items()
        }
        obs_b, rew_b, term_b, trunc_b, infos_b = game.step(batched)
        for a in rew:
            assert type(rew[a]) is float and rew[a] == float(rew_b[a][0])
            assert term[a] is bool(term_b[a][0]) and trunc[a] is bool(trunc_b[a][0])


def test_pettingzoo_face_refuses_what_the_generic_check_refuses():
    """The vectorised check hands anything unusual to validate_action: same agent, same words."""
    env = commenv.node_graph_v0(n_nodes=3, content="logits", batch_size=2)
    env.reset(seed=0)
    space = env.action_space("node_0")
    good = {
        "broadcast": np.zeros(space["broadcast"].shape, np.int8),
        "payload": np.zeros(space["payload"].shape, np.float32),
    }
    cases = {
        "payload beyond float32": {**good, "payload": good["payload"] + 1e300},
        "int payload": {**good, "payload": good["payload"].astype(np.int16)},
        "NaN payload": {**good, "payload": good["payload"] + np.nan},
        "bit 2": {**good, "broadcast": good["broadcast"] + 2},
        "bit 0.5": {**good, "broadcast": good["broadcast"] + 0.5},
        "wrong shape": {**good, "payload": good["payload"][:1]},
        "missing key": {"broadcast": good["broadcast"]},
    }
    for why, bad in cases.items():
        actions = {"node_0": good, "node_1": bad, "node_2": good}
        with pytest.raises(ValueError, match="node_1") as err:
            env.step(actions)
        with pytest.raises(ValueError) as generic:
            commenv.core.validate_action("node_1", space, bad)
        assert str(err.value) == str(generic.value), why
    # Bits as lists and torch tensors are accepted, as by the generic face.
    listed = {a: {**good, "broadcast": good["broadcast"].tolist()} for a in env.agents}
    env.step({**listed, "node_2": {k: torch.as_tensor(v) for k, v in good.items()}})
