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


# -- seeds, spaces, graphs and sizes (an audit of every face) ---------------------------------
SMALL = {
    "partial_obs": {"message_bits": 4, "num_candidates": 2},
    "node_graph": {"n_nodes": 3, "batch_size": 2},
    "quiz": {"stack_size": 1, "batch_size": 4},
}


def _faces(game: str, device: torch.device):
    family = getattr(commenv, f"{game}_v0")
    cfg = SMALL[game]
    return {
        "parallel": lambda: family.parallel_env(**cfg),
        "aec": lambda: family.env(**cfg),
        "batched": lambda: family.batched(2, device=device, **cfg),
    }


@pytest.mark.parametrize("game", sorted(SMALL))
@pytest.mark.parametrize("face", ["parallel", "aec", "batched"])
@pytest.mark.parametrize("seed", [1.5, "3", True, -1, 2**63, np.float64(2.0)])
def test_reset_refuses_a_bad_seed_and_changes_nothing(game, face, seed, device):
    make = _faces(game, device)[face]
    env, twin = make(), make()
    for e in (env, twin):
        e.reset(seed=0)
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=seed)
    if face == "batched":  # not reseeded: both random streams are where the twin's are
        gens = [g._gen.get_state() for g in (env, twin)]
        assert torch.equal(*gens)
        assert env._restart_streams.key == twin._restart_streams.key
        assert np.array_equal(np.asarray(env._restarts), np.asarray(twin._restarts))
        return
    assert env.agents == twin.agents
    if face == "parallel":  # the episode goes on as the twin's
        first = {a: env.action_space(a).sample() for a in env.agents}
        obs, twin_obs = env.step(first)[0], twin.step(first)[0]
        assert obs.keys() == twin_obs.keys()
        assert all(np.array_equal(obs[a], twin_obs[a]) for a in obs)


@pytest.mark.parametrize("game", sorted(SMALL))
def test_a_refused_first_reset_leaves_the_env_unstarted(game, device):
    for face in ("parallel", "aec"):
        env = _faces(game, device)[face]()
        with pytest.raises(ValueError, match="seed"):
            env.reset(seed=-1)
        with pytest.raises(ValueError, match="before reset"):
            env.step({} if face == "parallel" else None)


def test_a_refused_reset_after_the_episode_keeps_it_finished():
    env = commenv.partial_obs_v0(max_cycles=2)
    env.reset(seed=0)
    while env.agents:
        env.step({a: np.zeros(36, np.int8) for a in env.agents})
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=-1)
    assert env.agents == []
    with pytest.raises(ValueError, match="finished episode"):
        env.step({a: np.zeros(36, np.int8) for a in env.possible_agents})


def _first_obs(seed: int | None = 0, **cfg) -> np.ndarray:
    env = commenv.partial_obs_v0(**cfg)
    obs, _ = env.reset(seed=seed)
    return obs["agent_0"]


def test_seeds_2_to_the_32_apart_are_different_episodes():
    """torch's CPU generator keeps 32 bits of a seed: larger seeds are hashed first."""
    assert commenv.core.generator_seed(2**32 - 1) == 2**32 - 1  # small seeds: as before
    assert not np.array_equal(_first_obs(7), _first_obs(2**40 + 7))
    assert not np.array_equal(_first_obs(mask_seed=5), _first_obs(mask_seed=5 + 2**32))
    assert np.array_equal(_first_obs(2**40 + 7), _first_obs(2**40 + 7))


def test_float64_and_list_payloads_are_the_float32_action():
    """numpy's default dtype is taken as the space's float32 on the PettingZoo faces too."""
    runs = []
    for convert in (np.float32, np.float64, list):
        env = commenv.node_graph_v0(n_nodes=3, batch_size=2, content="logits")
        env.reset(seed=0)
        out = []
        for t in range(3):
            pay = np.full((2, 10), 0.1 * t)
            act = {"broadcast": np.ones(2, np.int8)}
            act["payload"] = pay.tolist() if convert is list else pay.astype(convert)
            obs = env.step({a: act for a in env.agents})[0]
            out.append(np.stack([obs[a] for a in env.possible_agents]))
        runs.append(np.stack(out))
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    aec = commenv.node_graph_v0.env(n_nodes=3, batch_size=2, content="features")
    aec.reset(seed=0)
    shape = aec.action_space(aec.agent_selection)["payload"].shape
    aec.step({"broadcast": np.ones(2, np.int8), "payload": np.zeros(shape).tolist()})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: commenv.partial_obs_v0(graph=[], level="none"), "at least one edge"),
        (lambda: commenv.partial_obs_v0(graph=np.zeros((2, 2)), level="none"), "one edge"),
        (lambda: commenv.partial_obs_v0(n_agents=3, graph="ring", k=True), "k=True"),
        (lambda: commenv.node_graph_v0(n_nodes=3, k=True), "k=True"),
        (lambda: commenv.partial_obs_v0(graph=[(True, False)], level="feedback"), "edge"),
        (lambda: commenv.partial_obs_v0(graph=[(0, 1), (0, 1)], level="feedback"), "twice"),
        (lambda: commenv.partial_obs_v0(graph=np.array([["a", "b"], ["c", "d"]])), "0/1"),
        (lambda: commenv.partial_obs_v0(allow_large="no"), "allow_large"),
        (lambda: commenv.node_graph_v0(allow_large=None), "allow_large"),
        (lambda: commenv.partial_obs_v0(n_agents=10**9), "n_agents"),
        (lambda: commenv.node_graph_v0(n_nodes=10**9), "n_nodes"),
        (lambda: commenv.node_graph_v0(max_cycles=10**30), "max_cycles"),
        (lambda: commenv.partial_obs_v0(max_cycles=2**62 + 1), "max_cycles"),
        (lambda: commenv.quiz_v0(max_lessons=2**63), "max_lessons"),
        (lambda: commenv.node_graph_v0(image_bits=2**62), "image_bits"),
    ],
)
def test_configurations_refused_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("game", sorted(SMALL))
def test_spaces_of_an_unknown_agent_raise(game, device):
    for face in _faces(game, device).values():
        env = face()
        for agent in ("ghost", 0, ["agent_0"]):
            with pytest.raises(ValueError, match="unknown agent"):
                env.observation_space(agent)
            with pytest.raises(ValueError, match="unknown agent"):
                env.action_space(agent)


@pytest.mark.parametrize("game", sorted(SMALL))
def test_batched_render_index_is_checked(game, device):
    env = getattr(commenv, f"{game}_v0").batched(
        2, device=device, render_mode="ansi", **SMALL[game]
    )
    env.reset(seed=0)
    assert isinstance(env.render(1), str)
    for bad in (2, -1, True, 0.0, "0"):
        with pytest.raises(ValueError, match="env_index"):
            env.render(bad)
    quiet = getattr(commenv, f"{game}_v0").batched(2, device=device, **SMALL[game])
    assert quiet.render(1) is None  # no render_mode: nothing to draw, before reset too
    with pytest.raises(ValueError, match="env_index"):
        quiet.render(5)  # but a world it does not have is refused all the same


def test_raw_aec_step_before_reset_says_so():
    env = commenv.partial_obs_v0.raw_env()
    with pytest.raises(ValueError, match="before reset"):
        env.step(np.zeros(36, np.int8))


def test_quiz_teacher_checks_model_and_seed():
    import gymnasium

    with pytest.raises(ValueError, match="teacher_model"):
        gymnasium.make("commenv/QuizTeacher-v0", teacher_model="x")
    env = gymnasium.make("commenv/QuizTeacher-v0")
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=1.5)
