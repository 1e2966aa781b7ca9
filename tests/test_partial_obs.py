"""partial_obs_v0: PettingZoo's own tests on every meaningful config, rules, bad input."""

import numpy as np
import pettingzoo
import pytest
import torch

import commenv
from commenv.partial_obs import LEVELS, PartialObsGame
from commenv.testing import pettingzoo_suite

CONFIGS = {
    "2-one-way-receive": dict(n_agents=2, graph="one_way", level="receive"),
    "2-one-way-feedback": dict(n_agents=2, graph="one_way", level="feedback"),
    "2-two-way-both": dict(n_agents=2, graph="two_way", level="both"),
    "2-two-way-none": dict(n_agents=2, graph="two_way", level="none"),
    "4-all-to-all": dict(n_agents=4, graph="all_to_all", level="both"),
    "5-ring-2-noisy": dict(
        n_agents=5, graph="ring", k=2, level="feedback", flip_prob=0.1, drop_prob=0.2
    ),
    "3-no-candidates": dict(
        n_agents=3, graph="one_way", level="receive", num_candidates=0, message_bits=8
    ),
    "synthetic-data": dict(dataset="synthetic", message_bits=4),
    "uint8-observations": dict(n_agents=3, graph="all_to_all", obs_dtype="uint8"),
}


@pytest.fixture(params=sorted(CONFIGS), name="config")
def config_fixture(request):
    return CONFIGS[request.param]


def test_pettingzoo_suite(config):
    pettingzoo_suite(commenv.partial_obs_v0, num_cycles=30, **config)


def test_defaults_and_registry():
    env = commenv.partial_obs_v0()
    obs, infos = env.reset(seed=0)
    assert env.agents == ["agent_0", "agent_1"]
    space = env.observation_space("agent_0")
    assert space is env.observation_space("agent_0")  # cached
    assert obs["agent_0"].shape == space.shape and obs["agent_0"].dtype == np.float32
    assert env.action_space("agent_1").n == 32 + 4
    assert set(infos["agent_0"]) == {"label", "world_index", "target", "prev_label"}
    made = pettingzoo.make("parallel", "commenv/partial_obs-v0", max_cycles=3)
    made.reset(seed=0)
    assert isinstance(made, commenv.BatchedParallelEnv) and made.game.max_cycles == 3
    assert isinstance(pettingzoo.make("aec", "commenv/partial_obs-v0"), pettingzoo.AECEnv)


def _game(device, **kw) -> PartialObsGame:
    return commenv.partial_obs_v0.batched(num_envs=kw.pop("num_envs", 8), device=device, **kw)


def test_views_are_masked_inversions_and_hide_the_world(device):
    game = _game(device, noise=0.3)
    obs, infos = game.reset(seed=1)
    x = game.state()
    layout = game.obs_layout
    for i, agent in enumerate(game.possible_agents):
        view = obs[agent][:, layout["view"]]
        mask = game.masks[i]
        assert torch.allclose(view[:, ~mask], x[:, ~mask])
        assert torch.allclose(view[:, mask], 1 - x[:, mask])
    assert not torch.equal(game.masks[0], game.masks[1])  # agents see differently
    frac = float(game.masks.float().mean())
    assert 0.2 < frac < 0.4
    # Ground truth is in infos, not observations: labels match the hidden world.
    assert torch.equal(infos["agent_0"]["label"], game.labels[infos["agent_0"]["world_index"]])


def test_masks_fixed_for_life_and_by_mask_seed(device):
    a, b, c = (_game(device, mask_seed=s) for s in (3, 3, 4))
    m = a.masks.clone()
    a.reset(seed=0)
    a.reset(seed=99)
    assert torch.equal(a.masks, m) and torch.equal(b.masks, m)
    assert not torch.equal(c.masks, m)


def test_messages_arrive_next_step_along_the_graph(device):
    game = _game(device, graph="one_way", level="receive", num_envs=3, message_bits=5)
    game.reset(seed=0)
    L, K = 5, game.num_candidates
    act = {a: torch.zeros(3, L + K, device=device) for a in game.possible_agents}
    act["agent_0"][:, :L] = torch.tensor([1.0, 0, 1, 1, 0])
    act["agent_1"][:, :L] = 1.0
    obs, *_ = game.step(act)
    heard = obs["agent_1"][:, game.obs_layout["heard"]].view(3, game.max_in, 1 + L)
    assert torch.all(heard[:, 0, 0] == 1)  # present flag
    assert torch.equal(heard[:, 0, 1:], act["agent_0"][:, :L])
    # agent_0 hears nobody on a one-way graph.
    assert torch.all(obs["agent_0"][:, game.obs_layout["heard"]] == 0)


def test_discrimination_reward_and_candidates(device):
    game = _game(device, graph="two_way", level="none", num_envs=16, message_bits=4)
    obs, _ = game.reset(seed=0)
    L, K = 4, game.num_candidates
    zeros = {a: torch.zeros(16, L + K, device=device) for a in game.possible_agents}
    obs, rew, _, _, infos = game.step(zeros)
    target = infos["agent_0"]["target"]
    # The previous world is among the candidates at the target slot (seen through own mask).
    cands = obs["agent_1"][:, game.obs_layout["candidates"]].view(16, K, -1)
    prev = game.views(infos["agent_1"]["world_index"]).shape  # sanity: views work
    assert prev[-1] == cands.shape[-1]
    right = {a: torch.zeros(16, L + K, device=device) for a in game.possible_agents}
    rows = torch.arange(16, device=device)
    right["agent_0"][rows, L + target] = 1.0
    right["agent_1"][rows, L + target] = 1.0
    _, rew, *_ = game.step(right)
    # Both right as listeners (1) and each of their listeners right (1): info reward 2.
    assert torch.allclose(rew["agent_0"], torch.full((16,), 2.0, device=device))
    wrong = {
        a: torch.ones(16, L + K, device=device) for a in game.possible_agents
    }  # not one-hot: wrong
    _, rew, *_ = game.step(wrong)
    assert torch.all(rew["agent_0"] == 0)


@pytest.mark.parametrize("level", LEVELS)
def test_likelihood_reward_by_level(level, device):
    graph = "two_way" if level == "both" else "one_way"
    game = _game(
        device,
        graph=graph,
        level=level,
        num_candidates=0,
        message_bits=4,
        num_envs=2,
        likelihood_weight=1.0,
    )
    game.reset(seed=0)
    act = {
        "agent_0": torch.tensor([[1.0, 1, 0, 0]] * 2, device=device),
        "agent_1": torch.tensor([[1.0, 0, 0, 0]] * 2, device=device),
    }
    _, rew, *_ = game.step(act)
    agreement = 0.75
    r0, r1 = float(rew["agent_0"][0]), float(rew["agent_1"][0])
    expected = {
        "none": (0.0, 0.0),
        "receive": (0.0, agreement),
        "feedback": (agreement, agreement),
        "both": (2 * agreement, 2 * agreement),
    }[level]
    assert (r0, r1) == pytest.approx(expected)


@pytest.mark.parametrize(
    "level, grad_to_speaker",
    [
        ("none", False),
        ("receive", False),
        ("feedback", True),
        ("both", True),
    ],
)
def test_levels_are_made_by_the_differentiable_channel(level, grad_to_speaker, device):
    graph = "two_way" if level == "both" else "one_way"
    game = _game(
        device,
        graph=graph,
        level=level,
        num_candidates=0,
        message_bits=6,
        num_envs=4,
        likelihood_weight=1.0,
    )
    game.reset(seed=0)
    m0 = torch.rand(4, 6, device=device, requires_grad=True)
    m1 = torch.rand(4, 6, device=device, requires_grad=True)
    obs, rew, *_ = game.step({"agent_0": m0, "agent_1": m1})
    heard = obs["agent_1"][:, game.obs_layout["heard"]]
    assert heard.requires_grad == grad_to_speaker
    loss = -(rew["agent_1"].sum())  # the student's likelihood reward only
    if level == "none":
        assert not rew["agent_1"].requires_grad
        return
    loss.backward()
    assert m1.grad is not None and m1.grad.abs().sum() > 0  # listener's own message
    got = m0.grad is not None and bool(m0.grad.abs().sum() > 0)
    assert got == grad_to_speaker


def test_same_seed_same_episode_bit_for_bit(device):
    def run(seed):
        game = _game(
            device,
            n_agents=3,
            graph="all_to_all",
            level="both",
            drop_prob=0.3,
            flip_prob=0.1,
            num_envs=4,
        )
        obs, _ = game.reset(seed=seed)
        gen = torch.Generator().manual_seed(7)
        out = [obs["agent_2"].clone()]
        for _ in range(5):
            act = {
                a: torch.randint(0, 2, (4, 36), generator=gen).float() for a in game.possible_agents
            }
            obs, rew, *_ = game.step(act)
            out += [obs["agent_2"].clone(), rew["agent_1"].clone()]
        return out

    a, b, c = run(5), run(5), run(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_batched_face_is_one_world_per_row(device):
    game = _game(device, num_envs=64)
    obs, _ = game.reset(seed=0)
    assert obs["agent_0"].shape == (64, game.observation_space("agent_0").shape[0])
    act = {a: torch.zeros(64, game.action_space(a).n, device=device) for a in game.possible_agents}
    obs, rew, term, trunc, infos = game.step(act)
    assert rew["agent_0"].shape == (64,) and trunc["agent_0"].shape == (64,)
    assert infos["agent_0"]["label"].shape == (64,)


def test_rgb_render_draws_world_views_and_bits():
    env = commenv.partial_obs_v0(render_mode="rgb_array", n_agents=3, graph="all_to_all")
    env.reset(seed=0)
    env.step({a: env.action_space(a).sample() for a in env.agents})
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[1] >= 4 * 64  # world + 3 views side by side
    ansi = commenv.partial_obs_v0(render_mode="ansi", n_agents=3)
    ansi.reset(seed=0)
    assert ansi.render().count("said") == 3


def test_doc_page_matches_the_code():
    from commenv.testing import check_documented_arguments, documented_arguments

    doc = commenv.partial_obs.__doc__
    check_documented_arguments(commenv.partial_obs_v0)
    documented = documented_arguments(doc)
    env = commenv.partial_obs_v0()
    bits, k = documented["message_bits"], documented["num_candidates"]
    assert env.action_space("agent_0") == __import__("gymnasium").spaces.MultiBinary(bits + k)
    assert "| Action space | ``MultiBinary(message_bits + num_candidates)`` |" in doc


def test_uint8_observations_are_the_float_ones_in_8_bits(device):
    """``obs_dtype="uint8"``: pixels ``round(255 x)`` (masked: 255 minus that), flags and
    bits 0/255; everything else (rewards, infos, the channel's draws) is the float game's."""
    cfg = dict(n_agents=3, graph="all_to_all", flip_prob=0.1, drop_prob=0.3, message_bits=6)
    flt, u8 = _game(device, **cfg), _game(device, **cfg, obs_dtype="uint8")
    space = u8.observation_space("agent_0")
    assert (
        space.dtype == np.uint8
        and space.high.max() == 255
        and space.shape == (flt.observation_space("agent_0").shape)
    )
    gen = torch.Generator().manual_seed(7)
    obs_f, info_f = flt.reset(seed=4)
    obs_u, info_u = u8.reset(seed=4)
    lay, where = flt.obs_layout, torch.arange(space.shape[0])
    pixels = torch.cat([where[lay["view"]], where[lay["candidates"]]])
    bits = where[lay["heard"]]  # presence flags and message bits
    for t in range(12):
        for a, agent in enumerate(flt.possible_agents):
            f, u = obs_f[agent].cpu(), obs_u[agent].cpu()
            assert u.dtype == torch.uint8
            assert torch.equal(u[:, bits], (f[:, bits] * 255).to(torch.uint8))  # exactly
            got = u[:, pixels].float() / 255
            assert (got - f[:, pixels]).abs().max() <= 1 / 510 + 1e-6
            view = u[:, lay["view"]].int()
            x = torch.round(u8.state().cpu() * 255).int()  # the hidden world's 8-bit pixels
            want = torch.where(u8.masks[a].cpu(), 255 - x, x)
            assert torch.equal(view, want), (t, agent)
        for agent in flt.possible_agents:
            assert all(torch.equal(info_f[agent][k], info_u[agent][k]) for k in info_f[agent])
        acts = {
            a: torch.randint(0, 2, (8, 10), generator=gen).float().to(device)
            for a in flt.possible_agents
        }
        obs_f, rew_f, *_, info_f = flt.step(acts)
        obs_u, rew_u, *_, info_u = u8.step(acts)
        assert all(torch.equal(rew_f[a], rew_u[a]) for a in rew_f)
    heard = torch.cat([obs_u[a][:, bits] for a in obs_u]).unique().tolist()
    assert set(heard) == {0, 255}  # bits and flags of both kinds were observed
    assert u8.memory_per_world() < flt.memory_per_world() - 2 * 3 * 300  # 3 bytes per value


def test_uint8_observations_refuse_messages_that_carry_gradients(device):
    game = _game(device, obs_dtype="uint8", message_bits=4, num_candidates=2)
    game.reset(seed=0)
    relaxed = torch.rand(8, 6, device=device, requires_grad=True)
    with pytest.raises(ValueError, match="relaxed messages that require grad need obs_dtype"):
        game.step(dict.fromkeys(game.possible_agents, relaxed))
    assert int(game.steps.max()) == 0  # nothing happened
    obs, *_ = game.step(dict.fromkeys(game.possible_agents, relaxed.detach()))
    assert obs["agent_0"].dtype == torch.uint8 and int(game.steps.max()) == 1


def _memory_listener_reward(device, blind_prob, informative, steps=24, B=256, L=16, K=4):
    """Mean discrimination reward of a listener that remembers its last view, on a one-way
    graph (agent_0 speaks, agent_1 listens; no likelihood term): it picks the candidate equal
    to its remembered view when it has one, else the candidate whose first ``L`` pixels match
    the heard bits best. The speaker says nothing (zeros) or those pixels of its view."""
    game = _game(
        device, graph="one_way", level="receive", likelihood_weight=0.0, message_bits=L,
        num_candidates=K, noise=0.05, num_envs=B, blind_prob=blind_prob, max_cycles=steps + 1,
    )  # fmt: skip
    lay = game.obs_layout
    obs, _ = game.reset(seed=3)
    memory, total = None, 0.0
    for _ in range(steps):
        own = obs["agent_1"]
        cand = own[:, lay["candidates"]].unflatten(-1, (K, -1))  # (B, K, D)
        heard = own[:, lay["heard"]][:, 1:]  # the one slot's bits
        by_bits = ((cand[..., :L] > 0.5).float() - heard[:, None]).abs().sum(-1)
        pick = by_bits.argmin(-1)
        if memory is not None:
            seen, view = memory
            by_memory = (cand - view[:, None]).abs().sum(-1).argmin(-1)
            pick = torch.where(seen, by_memory, pick)
        choice = torch.nn.functional.one_hot(pick, K).float()
        view0 = obs["agent_0"][:, lay["view"]]
        said = (view0[:, :L] > 0.5).float() if informative else torch.zeros(B, L, device=device)
        act0 = torch.cat([said, torch.zeros(B, K, device=device)], 1)
        act1 = torch.cat([torch.zeros(B, L, device=device), choice], 1)
        blind = own[:, lay["blind"]][:, 0] > 0 if blind_prob else torch.zeros(B, dtype=torch.bool)
        memory = (~blind.to(device), own[:, lay["view"]].clone())
        obs, rew, *_ = game.step({"agent_0": act0, "agent_1": act1})
        total += float(rew["agent_1"].mean())
    return total / steps


def test_blind_steps_make_a_listener_with_memory_need_the_messages(device):
    """Without blind steps a listener that remembers its last view wins the discrimination
    game with constant messages; with them constant messages earn chance on the scored steps
    (a quarter of the steps at p = 0.5: blind listener, sighted speaker) and informative
    messages earn more."""
    assert _memory_listener_reward(device, 0.0, informative=False) > 0.9  # the loophole
    constant = _memory_listener_reward(device, 0.5, informative=False)
    informative = _memory_listener_reward(device, 0.5, informative=True)
    assert constant < 0.25 * 0.25 * 1.5  # chance (1/K) on the scored quarter of the steps
    assert informative > 2 * constant
