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
        ({"obs_dtype": "float16"}, r"unknown obs_dtype 'float16'; valid choices"),
        ({"obs_dtype": None}, "obs_dtype"),
    ],
)
def test_unknown_config_raises_at_construction(config, match):
    with pytest.raises(ValueError, match=match):
        commenv.partial_obs_v0(**config)


def test_unexpected_keyword_is_an_error():
    with pytest.raises(TypeError, match="nois"):
        commenv.partial_obs_v0(nois=0.2)


def test_batched_face_validates_too(device):
    game = commenv.partial_obs_v0.batched(
        num_envs=3, message_bits=4, num_candidates=0, device=device
    )
    game.reset(seed=0)
    with pytest.raises(ValueError, match="agent_1"):
        game.step({"agent_0": torch.zeros(3, 4), "agent_1": torch.full((3, 4), float("nan"))})
    with pytest.raises(ValueError, match=r"\(num_envs, 4\)"):
        game.step({"agent_0": torch.zeros(3, 5), "agent_1": torch.zeros(3, 5)})
    with pytest.raises(ValueError, match="exactly the keys"):
        game.step({"agent_0": torch.zeros(3, 4)})


# -- issue 14, "What was found": one test per item (each failed before the fix) ---------------
@pytest.mark.parametrize(
    ("family", "cfg"),
    [
        (commenv.partial_obs_v0, {"message_bits": 4, "num_candidates": 2}),
        (commenv.node_graph_v0, {"n_nodes": 3, "batch_size": 2}),
    ],
    ids=["partial_obs", "node_graph"],
)
def test_aec_bad_action_raises_at_its_own_turn_and_changes_nothing(family, cfg):
    env, twin = family.env(**cfg), family.env(**cfg)
    env.reset(seed=0)
    twin.reset(seed=0)
    first = env.agent_selection
    with pytest.raises(ValueError, match=f"'{first}'"):
        env.step(np.full(env.action_space(first).shape, 2))
    assert env.agent_selection == first  # nothing was buffered
    for _ in range(2 * len(env.possible_agents)):  # and nothing wedges later steps
        action = env.action_space(env.agent_selection).sample()
        env.step(action)
        twin.step(action)
        for got, want in zip(env.last(), twin.last(), strict=True):
            np.testing.assert_equal(got, want)


@pytest.mark.parametrize("value", [256, 257, -255, 2**40])
def test_integer_actions_do_not_wrap_around(value):
    env = commenv.partial_obs_v0(message_bits=4, num_candidates=2)
    env.reset(seed=0)
    actions = good(env)
    actions["agent_0"] = np.full(6, value, dtype=np.int64)
    with pytest.raises(ValueError, match="agent_0.*out of the space"):
        env.step(actions)
    graph = commenv.node_graph_v0(n_nodes=3, batch_size=2)
    graph.reset(seed=0)
    acts = {a: graph.action_space(a).sample() for a in graph.agents}
    acts["node_1"] = np.full(2, value, dtype=np.int64)
    with pytest.raises(ValueError, match="node_1.*out of the space"):
        graph.step(acts)


def test_complex_actions_are_refused_on_numpy_and_batched_faces(device):
    env = commenv.partial_obs_v0(message_bits=4, num_candidates=2)
    env.reset(seed=0)
    actions = good(env)
    actions["agent_1"] = actions["agent_1"].astype(np.complex128)
    with pytest.raises(ValueError, match="agent_1.*complex"):
        env.step(actions)
    game = commenv.partial_obs_v0.batched(
        num_envs=2, message_bits=4, num_candidates=0, device=device
    )
    game.reset(seed=0)
    with pytest.raises(ValueError, match="agent_1.*complex"):
        game.step({"agent_0": torch.zeros(2, 4), "agent_1": torch.zeros(2, 4, dtype=torch.cfloat)})


def test_quiz_one_hot_student_actions_are_treated_alike():
    """A bool and an int64 one-hot are both refused (Simplex is a float space), by name."""
    env = commenv.quiz_v0.env(stack_size=1, batch_size=4)
    env.reset(seed=0)
    eye = np.eye(10)[:4]
    for one_hot in (eye.astype(bool), eye.astype(np.int64)):
        with pytest.raises(ValueError, match="student.*floating-point"):
            env.step(one_hot)
    env.step(eye.astype(np.float32))  # the float one-hot is a distribution


def test_graph_specs_are_unambiguous():
    from commenv.channel import make_adjacency

    with pytest.raises(ValueError, match="ambiguous.*np.asarray"):
        make_adjacency([[1, 0], [0, 1]], 2)
    with pytest.raises(ValueError, match="self-loops"):
        make_adjacency(np.eye(2, dtype=bool), 2)
    with pytest.raises(ValueError, match="self-loop"):
        make_adjacency([(1, 1)], 2)
    with pytest.raises(ValueError, match="0/1"):
        make_adjacency(np.full((2, 2), 0.5), 2)
    m = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert torch.equal(make_adjacency(m, 3), make_adjacency(np.asarray(m), 3))


@pytest.mark.parametrize(
    ("family", "config", "match"),
    [
        (commenv.node_graph_v0, {"graph": "two_way", "k": 1}, "k must be None unless"),
        (commenv.partial_obs_v0, {"graph": "all_to_all", "k": 1}, "k must be None unless"),
        (commenv.node_graph_v0, {"data_root": "/nonexistent/commenv"}, "data_root must be"),
        (commenv.node_graph_v0, {"content": "logits", "float_bits": 33}, "float_bits must be"),
        (commenv.node_graph_v0, {"bit_cost": -1}, "bit_cost must be"),
        (commenv.partial_obs_v0, {"validate": "yes"}, "validate must be True or False"),
        (commenv.partial_obs_v0, {"num_candidates": 10**6}, "num_candidates=1000000 needs"),
        (commenv.partial_obs_v0, {"noise": "0.3"}, "noise must be a finite number"),
        (commenv.partial_obs_v0, {"info_weight": "a"}, "info_weight must be a finite number"),
        (commenv.partial_obs_v0, {"mask_seed": "x"}, "mask_seed must be an integer"),
        (commenv.partial_obs_v0, {"graph": None}, "graph must be one of"),
        (commenv.partial_obs_v0, {"num_candidates": 1}, "single candidate"),
    ],
)
def test_configs_are_not_accepted_silently(family, config, match, device):
    with pytest.raises(ValueError, match=match):
        family.batched(**config, device=device)


def test_num_candidates_one_is_documented():
    assert "num_candidates" in commenv.partial_obs_v0.__doc__
    assert "not 1" in commenv.partial_obs_v0.__doc__


def test_memory_bound_raises_with_the_size_unless_allowed(device):
    big = {"num_envs": 2**18, "message_bits": 4, "num_candidates": 2}
    with pytest.raises(ValueError, match=r"num_envs=262144.*needs \d+ MiB.*allow_large=True"):
        commenv.partial_obs_v0.batched(**big, device=device)
    commenv.partial_obs_v0.batched(**big, allow_large=True, device=device)  # opted in: builds


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("family", [commenv.partial_obs_v0, commenv.node_graph_v0, commenv.quiz_v0])
def test_cuda_without_cuda_names_device(family):
    with pytest.raises(ValueError, match="device must be.*CUDA is not available"):
        family.batched(device="cuda")


def test_batched_face_wrong_num_envs_missing_env_dim_and_none(device):
    game = commenv.partial_obs_v0.batched(
        num_envs=3, message_bits=4, num_candidates=0, device=device
    )
    game.reset(seed=0)
    with pytest.raises(ValueError, match=r"agent_1.*wrong shape \(2, 4\).*\(3, 4\)"):
        game.step({"agent_0": torch.zeros(3, 4), "agent_1": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="agent_0.*missing the leading num_envs"):
        game.step({"agent_0": torch.zeros(4), "agent_1": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="agent_0.*not a numeric array"):
        game.step({"agent_0": None, "agent_1": torch.zeros(3, 4)})
    env = commenv.partial_obs_v0(message_bits=4, num_candidates=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="agent_0.*not a numeric array"):
        env.step({"agent_0": None, "agent_1": np.zeros(6, np.int8)})


def test_quiz_before_reset_and_bad_action_dicts(device):
    with pytest.raises(ValueError, match=r"before reset\(\)"):
        commenv.quiz_v0.batched(device=device).step({"student": torch.zeros(1)})
    par = commenv.quiz_v0.parallel_env(stack_size=1, batch_size=4)
    with pytest.raises(ValueError, match=r"before reset\(\)"):
        par.step({"student": np.zeros((4, 10))})
    par.reset(seed=0)
    with pytest.raises(ValueError, match="missing the action of 'student'"):
        par.step({})
    with pytest.raises(ValueError, match=r"unknown agent key\(s\) \['coach'\]"):
        par.step({"student": np.full((4, 10), 0.1, np.float32), "coach": 1})


@pytest.mark.parametrize("family", [commenv.partial_obs_v0, commenv.node_graph_v0, commenv.quiz_v0])
def test_close_on_the_batched_face(family, device):
    game = family.batched(num_envs=2, device=device)
    game.reset(seed=0)
    game.close()
    game.reset(seed=0)


def test_doc_page_examples_run():
    """``docs/bad_input.md`` states the contract these tests check; its examples run."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "bad_input.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)
