"""partial_obs_v0: the PettingZoo faces (numpy one-world path) and the batched face with
``num_envs=1`` play the same episodes, bit for bit, for the same seed."""

import numpy as np
import pytest
import torch

import commenv

CONFIGS = {
    "two-way-both": dict(),
    "one-way-receive": dict(graph="one_way", level="receive"),
    "one-way-feedback-noisy": dict(graph="one_way", level="feedback", flip_prob=0.2),
    "two-way-none": dict(level="none", message_bits=3),
    "all-to-all-4-noisy": dict(n_agents=4, graph="all_to_all", flip_prob=0.1, drop_prob=0.3),
    "ring-5-k2-drops": dict(n_agents=5, graph="ring", k=2, level="feedback", drop_prob=0.4),
    "no-candidates": dict(
        n_agents=3, graph="one_way", level="receive", num_candidates=0, message_bits=7
    ),
    "odd-bits-weights": dict(
        n_agents=3, graph="all_to_all", message_bits=5, info_weight=0.3, likelihood_weight=1.7
    ),
    "synthetic": dict(dataset="synthetic", message_bits=4, num_candidates=3),
    "uint8-all-to-all-noisy": dict(
        n_agents=4, graph="all_to_all", flip_prob=0.1, drop_prob=0.3, obs_dtype="uint8"
    ),
    "uint8-synthetic": dict(dataset="synthetic", message_bits=4, obs_dtype="uint8"),
    "blind-steps": dict(blind_prob=0.4, message_bits=5),
    "blind-uint8-all-to-all-drops": dict(
        blind_prob=0.5, n_agents=3, graph="all_to_all", drop_prob=0.2, obs_dtype="uint8"
    ),
}
STEPS = 70  # past two chunks of pre-drawn randomness and two episode ends


def _episodes(config, seed, steps=STEPS):
    """The same random bit actions on the PettingZoo parallel face and the batched face."""
    cfg = {"max_cycles": 30, **config}
    env = commenv.partial_obs_v0(**cfg)
    game = commenv.partial_obs_v0.batched(
        num_envs=1, device="cpu", **cfg
    )  # device-free: CPU face, CPU generator
    n_act = env.action_space("agent_0").n
    rng = np.random.default_rng(seed)
    a_obs, a_info = env.reset(seed=seed)
    b_obs, b_info = game.reset(seed=seed)
    records = [(a_obs, {}, {}, a_info, b_obs, {}, {}, b_info)]
    for _ in range(steps):
        if not env.agents:
            a_obs, a_info = env.reset()
            b_obs, b_info = game.reset()
            records.append((a_obs, {}, {}, a_info, b_obs, {}, {}, b_info))
        acts = {a: rng.integers(0, 2, n_act).astype(np.int8) for a in env.agents}
        a_obs, a_rew, _, a_trunc, a_info = env.step(acts)
        b_obs, b_rew, _, b_trunc, b_info = game.step(
            {a: torch.from_numpy(v)[None] for a, v in acts.items()}
        )
        records.append((a_obs, a_rew, a_trunc, a_info, b_obs, b_rew, b_trunc, b_info))
    return env, game, records


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pettingzoo_face_is_the_batched_face_bit_for_bit(name):
    _assert_same_episodes(*_episodes(CONFIGS[name], seed=11))


@pytest.mark.parametrize("obs_dtype", ["float32", "uint8"])
def test_views_computed_without_the_view_table_are_the_same(monkeypatch, obs_dtype):
    """Large datasets skip the one-world face's precomputed table of every image's views."""
    monkeypatch.setattr(commenv.partial_obs, "_VIEW_TABLE_BYTES", 0)
    env, game, records = _episodes(dict(n_agents=3, obs_dtype=obs_dtype), seed=2, steps=30)
    assert env.game._np_views is None
    _assert_same_episodes(env, game, records)


def _assert_same_episodes(env, game, records):
    want_dtype = env.observation_space("agent_0").dtype
    for a_obs, a_rew, a_trunc, a_info, b_obs, b_rew, b_trunc, b_info in records:
        for agent in env.possible_agents:
            assert a_obs[agent].dtype == want_dtype
            assert np.array_equal(a_obs[agent], b_obs[agent][0].numpy()), agent
            assert a_info[agent] == {k: int(v[0]) for k, v in b_info[agent].items()}
            if a_rew:
                # same float32 bits (the face hands out the float32 value as a Python float)
                assert np.float32(a_rew[agent]).tobytes() == b_rew[agent][0].numpy().tobytes()
                assert a_trunc[agent] == bool(b_trunc[agent][0])
    # the channel counted the same traffic on both faces
    got, want = env.channel.counters["message"], game.channel.counters["message"]
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in want.items()}


def test_rewards_are_not_trivially_equal():
    """The comparison above means something: rewards vary, the noisy channel drops messages."""
    _, _, records = _episodes(CONFIGS["all-to-all-4-noisy"], seed=3, steps=40)
    rewards = {r for rec in records for r in rec[1].values()}
    assert len(rewards) > 5
    heard = [rec[0]["agent_0"] for rec in records[2:]]
    assert len({h.tobytes() for h in heard}) == len(heard)


def test_aec_face_is_the_parallel_face():
    cfg = dict(n_agents=3, graph="all_to_all", flip_prob=0.1, drop_prob=0.2, max_cycles=12)
    aec = commenv.partial_obs_v0.env(**cfg)
    par = commenv.partial_obs_v0(**cfg)
    aec.reset(seed=4)
    par.reset(seed=4)
    rng = np.random.default_rng(0)
    n_act = par.action_space("agent_0").n
    for _ in range(12):
        acts = {a: rng.integers(0, 2, n_act).astype(np.int8) for a in par.agents}
        for agent in aec.agent_iter(len(acts)):
            aec.step(acts[agent])
        obs, rew, *_ = par.step(acts)
        for agent in par.possible_agents:
            assert np.array_equal(aec.observe(agent), obs[agent])
            assert aec.rewards[agent] == rew[agent]


def test_obs_are_fresh_arrays_and_state_is_shared(device):
    env = commenv.partial_obs_v0(message_bits=4, num_candidates=2)
    first, _ = env.reset(seed=0)
    kept = first["agent_0"].copy()
    env.step({a: env.action_space(a).sample() for a in env.agents})
    assert np.array_equal(first["agent_0"], kept)  # a step never writes an old observation
    assert env.game.steps.tolist() == [1]
    assert env.game.state().shape == (1, env.game.num_features)
