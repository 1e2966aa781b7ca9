"""partial_obs_v0's per-world reset (``reset(env_index=...)``, the issue-18 contract)."""

import pytest
import torch

import commenv

NOISY = dict(n_agents=3, graph="all_to_all", level="both", flip_prob=0.1, drop_prob=0.3)
CONFIGS = {
    "noisy-all-to-all": NOISY,
    "one-way-no-candidates": dict(graph="one_way", level="receive", num_candidates=0),
    "uint8-noisy-all-to-all": dict(NOISY, obs_dtype="uint8"),
}
B = 6


def _game(device, **kw):
    kw = {"message_bits": 5, "max_cycles": 7, **kw}
    return commenv.partial_obs_v0.batched(num_envs=B, device=device, **kw)


def _actions(game, gen):
    n = game.action_space("agent_0").n
    return {
        a: torch.randint(0, 2, (B, n), generator=gen).float().to(game.device)
        for a in game.possible_agents
    }


def _run(game, seed, steps, resets=None):
    """Observations, rewards, flags and infos of ``steps`` steps; ``resets[t]`` restarts those
    worlds before step ``t``."""
    resets = resets or {}
    gen = torch.Generator().manual_seed(1)
    obs, infos = game.reset(seed=seed)
    out = [(obs, infos)]
    for t in range(steps):
        if t in resets:
            obs, infos = game.reset(env_index=resets[t])
            out.append((obs, infos))
        step = game.step(_actions(game, gen))
        out.append(step)
    return out


def _rows(result, rows):
    """Every tensor of a run restricted to the worlds ``rows`` (for bitwise comparison)."""
    flat = []
    for item in result:
        for part in item:
            for agent in sorted(part):
                value = part[agent]
                if isinstance(value, dict):
                    flat += [value[k][rows].clone() for k in sorted(value)]
                else:
                    flat.append(value[rows].clone())
    return flat


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_untouched_worlds_continue_bit_for_bit(device, name):
    """Restarting worlds 1 and 4 mid-episode changes nothing in worlds 0, 2, 3, 5, over more
    steps than one chunk of pre-drawn randomness and across their own truncations."""
    steps = 45
    plain = _run(_game(device, **CONFIGS[name]), 3, steps)
    game = _game(device, **CONFIGS[name])
    reset = _run(game, 3, steps, resets={4: [1, 4], 20: torch.tensor([4])})
    keep = [0, 2, 3, 5]
    # drop the two reset outputs, so that step t of one run faces step t of the other
    stepped = [item for item in reset if len(item) == 5]
    a = _rows([x for x in plain if len(x) == 5], keep)
    b = _rows(stepped, keep)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # the restarted worlds do differ, and run on their own clocks
    assert not all(
        torch.equal(x, y) for x, y in zip(_rows(plain[1:], [1]), _rows(stepped, [1]), strict=True)
    )
    assert game.steps.tolist() == [45, 41, 45, 45, 25, 45]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_restarted_worlds_are_zeroed_alike_by_index_and_by_mask(monkeypatch, device, name):
    """The CPU zeroes restarted worlds by their indices, other devices by the mask (no host
    sync): forcing the mask on this device gives the same episode, bit for bit."""
    resets = {4: [1, 4], 9: torch.tensor([0, 5]), 20: [2]}
    indexed = _run(_game(device, **CONFIGS[name]), 3, 30, resets=resets)
    monkeypatch.setattr(commenv.partial_obs, "_world_rows", lambda mask: None)
    masked = _run(_game(device, **CONFIGS[name]), 3, 30, resets=resets)
    a, b = _rows(indexed, slice(None)), _rows(masked, slice(None))
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_restarted_world_starts_a_valid_first_step(device):
    game = _game(device, **NOISY)
    gen = torch.Generator().manual_seed(0)
    game.reset(seed=0)
    for _ in range(3):
        game.step(_actions(game, gen))
    before = {k: v.clone() for k, v in game._state.items()}
    mask = torch.tensor([False, True, False, False, False, True], device=device)
    obs, infos = game.reset(env_index=mask)
    layout = game.obs_layout
    assert game.steps.tolist() == [3, 0, 3, 3, 3, 0]
    for i, agent in enumerate(game.possible_agents):
        o = obs[agent]
        assert o.shape == (B, game.observation_space(agent).shape[0])
        assert not o[mask][:, layout["heard"]].any()  # nothing heard yet
        assert not o[mask][:, layout["candidates"]].any()  # nothing to tell apart yet
        assert o[~mask][:, layout["heard"]].any()
        view = game.views(infos[agent]["world_index"])[:, i]
        assert torch.equal(o[:, layout["view"]], view)
        assert (infos[agent]["prev_label"][mask] == -1).all()
        label = game.labels[infos[agent]["world_index"]]
        assert torch.equal(infos[agent]["label"], label)
    for key, value in before.items():  # the other worlds' state, bit for bit
        assert torch.equal(game._state[key][~mask], value[~mask]), key
    # a restarted world is truncated max_cycles steps after its restart, not before
    for t in range(1, 8):
        _, rew, term, trunc, _ = game.step(_actions(game, gen))
        assert not term["agent_0"].any()
        expected = [t + 3 >= 7, t >= 7, t + 3 >= 7, t + 3 >= 7, t + 3 >= 7, t >= 7]
        assert trunc["agent_0"].tolist() == expected
        if t == 1:  # step 0 of the restarted worlds: no discrimination reward possible
            assert rew["agent_0"].shape == (B,)


def test_same_seed_same_resets_same_episodes(device):
    resets = {2: [0], 5: [3, 5], 6: torch.ones(B, dtype=torch.bool)}
    a = _rows(_run(_game(device, **NOISY), 9, 12, resets), slice(None))
    b = _rows(_run(_game(device, **NOISY), 9, 12, resets), slice(None))
    c = _rows(_run(_game(device, **NOISY), 9, 12, {2: [1], 5: [3, 5]}), slice(None))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_restarted_world_does_not_depend_on_the_other_worlds_restarts(device, name):
    """World 1 restarts before steps 4 and 20 in both runs; in the second, worlds 0, 2 and 5
    also restart, before, with and between its restarts: world 1's whole run is the same, bit
    for bit (each restart draws from the world's own stream, not from one the batch shares)."""
    steps, config = 30, CONFIGS[name]
    alone = _run(_game(device, **config), 3, steps, resets={4: [1], 20: [1]})
    crowd = {2: [0], 4: [1, 5], 11: [2, 0], 20: [1, 2], 25: [5]}
    crowded = _run(_game(device, **config), 3, steps, resets=crowd)

    def split(result):  # (step outputs, reset outputs), the first reset left out
        return [x for x in result if len(x) == 5], [x for x in result[1:] if len(x) == 2]

    (steps_a, resets_a), (steps_b, resets_b) = split(alone), split(crowded)
    a = _rows(steps_a + resets_a, [1])
    b = _rows(steps_b + [resets_b[1], resets_b[3]], [1])  # the resets before steps 4 and 20
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # the crowd's restarts did change world 0's run
    a0, b0 = _rows(steps_a, [0]), _rows(steps_b, [0])
    assert not all(torch.equal(x, y) for x, y in zip(a0, b0, strict=True))


@pytest.mark.parametrize("env_index", [6, -1, [0.5], True, torch.zeros(5, dtype=torch.bool)])
def test_bad_env_index_changes_nothing(device, env_index):
    game = _game(device, **NOISY)
    game.reset(seed=0)
    game.step(_actions(game, torch.Generator().manual_seed(0)))
    before = {k: v.clone() for k, v in game._state.items()}
    restarts = game._restarts.clone()
    with pytest.raises(ValueError, match="env_index must be"):
        game.reset(env_index=env_index)
    assert all(torch.equal(game._state[k], v) for k, v in before.items())
    assert torch.equal(game._restarts, restarts)


def test_seed_with_env_index_raises_and_needs_a_first_reset(device):
    game = _game(device)
    with pytest.raises(ValueError, match="before reset"):
        game.reset(env_index=0)
    game.reset(seed=0)
    with pytest.raises(ValueError, match="a partial reset continues"):
        game.reset(seed=1, env_index=[0])


def test_observations_are_fresh_by_default_and_reused_on_request(device):
    """Default: a step never writes the tensors an earlier step returned (as VMAS). With
    ``reuse_obs=True`` every step writes the same buffer: the values are the same, the old
    tensor shows the new observation."""
    fresh, reused = _game(device, **NOISY), _game(device, **NOISY, reuse_obs=True)
    gen_a, gen_b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    a0, _ = fresh.reset(seed=1)
    b0, _ = reused.reset(seed=1)
    kept_a, kept_b = a0["agent_0"].clone(), b0["agent_0"].clone()
    assert torch.equal(kept_a, kept_b)
    for _ in range(3):
        a, *_ = fresh.step(_actions(fresh, gen_a))
        b, *_ = reused.step(_actions(reused, gen_b))
        assert all(torch.equal(a[k], b[k]) for k in a)  # the same observations
    assert torch.equal(a0["agent_0"], kept_a)  # untouched
    assert b0["agent_0"].data_ptr() == b["agent_0"].data_ptr()  # one buffer
    assert torch.equal(b0["agent_0"], b["agent_0"]) and not torch.equal(b0["agent_0"], kept_b)


def test_large_fresh_observations_recycle_only_what_nobody_holds(device):
    """A large batch (observations of 1 MiB and more) recycles an observation tensor once
    nothing outside the game holds it (CPU: a fresh one costs page faults every step); a
    tensor, a view or a numpy array still held is never written."""
    n_worlds = 512  # 512 worlds x 2 agents x 353 floats: 1.4 MiB
    fresh = commenv.partial_obs_v0.batched(num_envs=n_worlds, device=device)
    reused = commenv.partial_obs_v0.batched(num_envs=n_worlds, device=device, reuse_obs=True)
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (n_worlds, fresh.action_space("agent_0").n), generator=gen)
    acts = dict.fromkeys(fresh.possible_agents, bits.float().to(device))
    obs, _ = fresh.reset(seed=3)
    reused.reset(seed=3)
    held = [obs["agent_1"][:, :10]]  # a view alone keeps the buffer
    if device.type == "cpu":
        held.append(obs["agent_0"].numpy())
    kept = [torch.as_tensor(h).clone() for h in held]
    held_ptr = obs["agent_0"].data_ptr()
    del obs
    pointers = set()
    for _ in range(4):
        a, *_ = fresh.step(acts)
        b, *_ = reused.step(acts)
        assert all(torch.equal(a[k], b[k]) for k in a)  # the same observations
        pointers.add(a["agent_0"].data_ptr())
        del a
    assert all(torch.equal(torch.as_tensor(h), k) for h, k in zip(held, kept, strict=True))
    assert held_ptr not in pointers  # the held buffer was never reused
    if device.type == "cpu":
        assert len(pointers) == 1  # dropped at once every step: one recycled buffer


@pytest.mark.parametrize(
    "config", [{}, {"drop_prob": 0.3, "flip_prob": 0.1}, {"obs_dtype": "uint8", "drop_prob": 0.3}]
)
def test_recycled_inboxes_give_the_same_episode(monkeypatch, device, config):
    """Large CPU batches gather each step's inbox (next step's heard messages) and copy its
    actions into recycled tensors, once the state no longer holds them, and a partial reset
    copies the heard messages and the last messages into recycled tensors too; forcing that on
    a small batch changes nothing."""
    plain = _game(device, graph="all_to_all", n_agents=3, **config)
    monkeypatch.setattr(commenv.core, "REUSE_BYTES", 0)
    pooled = _game(device, graph="all_to_all", n_agents=3, **config)
    assert pooled._inbox_pool.recycles == (device.type == "cpu")
    assert pooled._action_pools[0].recycles == (device.type == "cpu")
    gen_a, gen_b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    a, _ = plain.reset(seed=5)
    b, _ = pooled.reset(seed=5)
    restarts = {2: torch.tensor([0, 3]), 4: torch.tensor([1, 2, 3, 5])}
    for t in range(6):
        if t in restarts:
            a, _ = plain.reset(env_index=restarts[t])
            b, _ = pooled.reset(env_index=restarts[t])
            assert all(torch.equal(a[k], b[k]) for k in a)
        a, ra, *_ = plain.step(_actions(plain, gen_a))
        b, rb, *_ = pooled.step(_actions(pooled, gen_b))
        assert all(torch.equal(a[k], b[k]) and torch.equal(ra[k], rb[k]) for k in a)
    assert plain._channel.total_bits() == pooled._channel.total_bits()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rewards_in_blocks_of_worlds_give_the_same_bits(device, name):
    """Large batches compute the rewards block by block of worlds (``_REWARD_WORLDS``, 8,192
    by default); tiny blocks give the same episode, bit for bit, and the same gradients of
    relaxed messages."""
    whole, blocked = _game(device, **CONFIGS[name]), _game(device, **CONFIGS[name])
    blocked._REWARD_WORLDS = 4  # B = 6 worlds: a block of 4 and one of 2
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            _rows(_run(whole, 5, 9), slice(None)),
            _rows(_run(blocked, 5, 9), slice(None)),
            strict=True,
        )
    )
    if CONFIGS[name].get("obs_dtype") == "uint8":
        return  # relaxed messages with gradients need float32 observations
    grads = []
    for game in (whole, blocked):
        game.reset(seed=5)
        n = game.action_space("agent_0").n
        relaxed = torch.rand(B, n, generator=torch.Generator().manual_seed(4)).to(device)
        relaxed.requires_grad_(True)
        game.step(dict.fromkeys(game.possible_agents, relaxed))  # messages on every edge
        _, rewards, *_ = game.step(dict.fromkeys(game.possible_agents, relaxed))
        (grad,) = torch.autograd.grad(sum(r.sum() for r in rewards.values()), relaxed)
        grads.append(grad)
    assert torch.equal(*grads)


def test_memory_per_world_is_flat_in_num_envs(device):
    sizes = {}
    for n in (64, 4096):
        game = commenv.partial_obs_v0.batched(num_envs=n, device=device, reuse_obs=True)
        game.reset(seed=0)
        bits = torch.zeros(n, game.action_space("agent_0").n, device=device)
        game.step(dict.fromkeys(game.possible_agents, bits))
        sizes[n] = game.memory_per_world()
    obs_bytes = 4 * 2 * game.observation_space("agent_0").shape[0]
    assert obs_bytes < sizes[4096] <= obs_bytes + 1024  # the observation, then ~0.6 KiB
    assert sizes[4096] <= sizes[64]  # shared scratch: no growth with num_envs
