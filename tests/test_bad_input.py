"""Bad input gets a clear error naming the agent, the expected space and what arrived."""

import numpy as np
import pytest
import torch

import commenv


@pytest.fixture(name="env")
def env_fixture():
    env = commenv.partial_obs_v0(message_bits=4, num_candidates=2)
    env.reset(seed=0)
    return env


def good(env):
    return {a: env.action_space(a).sample() for a in env.agents}


@pytest.mark.parametrize(
    "bad, why",
    [
        (np.zeros(5, dtype=np.int8), "wrong shape"),
        (np.zeros((2, 6), dtype=np.int8), "wrong shape"),
        (np.full(6, 2, dtype=np.int8), "out of the space"),
        (np.full(6, -1, dtype=np.int64), "out of the space"),
        (np.array([0.5, 0, 0, 0, 0, 0]), "non-integer"),
        (np.array([np.nan, 0, 0, 0, 0, 0]), "NaN"),
        (np.array([np.inf, 0, 0, 0, 0, 0]), "NaN or inf"),
        ("101010", "numeric"),
        ([[0, 1], [1]], "array"),
    ],
)
def test_bad_actions_raise_naming_agent_space_and_value(env, bad, why):
    actions = good(env)
    actions["agent_1"] = bad
    with pytest.raises(ValueError) as err:
        env.step(actions)
    msg = str(err.value)
    assert "agent_1" in msg and "MultiBinary(6)" in msg and why in msg


def test_bad_action_loses_nothing(env):
    state = {k: v.clone() for k, v in env.game._state.items()}
    actions = good(env)
    actions["agent_0"] = np.full(6, 3)
    with pytest.raises(ValueError):
        env.step(actions)
    assert all(torch.equal(state[k], env.game._state[k]) for k in state)
    env.step(good(env))  # the episode goes on


def test_exactly_representable_floats_accepted(env):
    actions = good(env)
    actions["agent_0"] = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    env.step(actions)


def test_unknown_and_missing_agent_keys(env):
    actions = good(env)
    actions["agent_7"] = np.zeros(6)
    with pytest.raises(ValueError, match=r"unknown agent key.*agent_7.*valid agents"):
        env.step(actions)
    with pytest.raises(ValueError, match="missing actions.*agent_1"):
        env.step({"agent_0": np.zeros(6, dtype=np.int8)})


def test_step_after_episode_end():
    env = commenv.partial_obs_v0(max_cycles=1)
    env.reset(seed=0)
    env.step(good(env))
    with pytest.raises(ValueError, match="reset"):
        env.step({})


@pytest.mark.parametrize(
    "config, match",
    [
        ({"level": "shout"}, r"valid choices: \['none', 'receive', 'feedback', 'both'\]"),
        ({"graph": "mesh"}, "valid choices"),
        ({"dataset": "imagenet"}, "valid choices"),
        ({"split": "dev"}, "valid choices"),
        ({"render_mode": "video"}, "valid choices"),
        ({"n_agents": 1}, "n_agents"),
        ({"message_bits": 0}, "message_bits"),
        ({"num_candidates": 1}, "num_candidates"),
        ({"noise": 1.5}, "noise"),
        ({"graph": "one_way", "level": "both"}, "symmetric"),
        ({"flip_prob": -0.1}, "flip_prob"),
    ],
)
def test_unknown_config_raises_at_construction(config, match):
    with pytest.raises(ValueError, match=match):
        commenv.partial_obs_v0(**config)


def test_unexpected_keyword_is_an_error():
    with pytest.raises(TypeError, match="nois"):
        commenv.partial_obs_v0(nois=0.2)


def test_batched_face_validates_too():
    game = commenv.partial_obs_v0.batched(num_envs=3, message_bits=4, num_candidates=0)
    game.reset(seed=0)
    with pytest.raises(ValueError, match="agent_1"):
        game.step({"agent_0": torch.zeros(3, 4), "agent_1": torch.full((3, 4), float("nan"))})
    with pytest.raises(ValueError, match=r"\(num_envs, 4\)"):
        game.step({"agent_0": torch.zeros(3, 5), "agent_1": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="exactly the keys"):
        game.step({"agent_0": torch.zeros(3, 4)})
