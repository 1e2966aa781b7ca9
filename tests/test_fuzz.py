"""Property-based fuzzing of every game x face: the contract of ``docs/bad_input.md``.

For every game (partial_obs, node_graph with labels and with logits, quiz) and every face
(PettingZoo Parallel, AEC, batched tensors):

- a valid action steps, and an exactly representable variant of it (float 0/1 or bool bits,
  a Python list) steps to exactly the same outcome;
- an invalid action raises ``ValueError``/``TypeError`` naming the agent, what was expected and
  what arrived, at the moment it arrives;
- after any error the env goes on exactly as a fresh env with the same seed that never saw it
  (observations, rewards, terminations, truncations, infos compared).

Configurations are fuzzed the same way: one parameter at a time gets a hostile value, which
either builds (when it is valid) or raises naming the parameter. ``STATS`` counts what ran;
``test_zz_report`` prints it (``pytest -s tests/test_fuzz.py``).
"""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import commenv
from commenv.core import MAX_CYCLES_LIMIT
from tests.conftest import DEVICE, device_problem

STATS: collections.Counter = collections.Counter()

GAMES = {
    "partial_obs": (commenv.partial_obs_v0, {"message_bits": 4, "num_candidates": 2}),
    "node_labels": (commenv.node_graph_v0, {"n_nodes": 3, "batch_size": 2}),
    "node_logits": (commenv.node_graph_v0, {"n_nodes": 3, "batch_size": 2, "content": "logits"}),
    "quiz": (
        commenv.quiz_v0,
        {"stack_size": 1, "batch_size": 4, "exam_every": 2, "exam_size": 8},
    ),
}
FACES = ("parallel", "aec", "batched")
NUM_ENVS = 2
CASES = [(g, f) for g in GAMES for f in FACES]
_ENVS: dict[tuple[str, str, int], object] = {}


def batched(family, **cfg):
    """The batched face on the test device (``COMMENV_TEST_DEVICE``); skips without it."""
    if device_problem():
        pytest.skip(device_problem())
    return family.batched(device=DEVICE, **cfg)


def make(game: str, face: str, copy: int = 0):
    """One env per (game, face, copy), built once and reset by every example."""
    key = (game, face, copy)
    if key not in _ENVS:
        family, cfg = GAMES[game]
        if face == "parallel":
            _ENVS[key] = family.parallel_env(**cfg)
        elif face == "aec":
            _ENVS[key] = family.env(**cfg)
        else:
            _ENVS[key] = batched(family, num_envs=NUM_ENVS, **cfg)
    return _ENVS[key]


def turn_agents(env, face: str) -> list[str]:
    """The agents that must act now."""
    if face == "aec":
        return [env.agent_selection]
    if face == "batched":
        game = env
        return [game.agent_selection] if hasattr(game, "phase") else list(game.possible_agents)
    if hasattr(env, "aec_env"):  # quiz's turn-based Parallel face
        return [env.aec_env.agent_selection]
    return list(env.agents)


def sample(space, rng: np.random.Generator):
    """A valid action of ``space`` drawn from ``rng`` (the spaces' own samplers, reseeded)."""
    space.seed(int(rng.integers(2**31)))
    return space.sample()


def valid_action(env, face: str, agent: str, rng: np.random.Generator):
    space = env.action_space(agent)
    if face != "batched":
        return sample(space, rng)
    worlds = [sample(space, rng) for _ in range(NUM_ENVS)]
    if isinstance(worlds[0], dict):
        return {k: torch.as_tensor(np.stack([w[k] for w in worlds])) for k in worlds[0]}
    return torch.as_tensor(np.stack(worlds))


def act(env, face: str, actions: dict):
    """Step with ``{agent: action}``; returns a comparable snapshot of what came back."""
    if face == "aec":
        ((_, action),) = actions.items()
        env.step(action)
        return snapshot(env.last())
    return snapshot(env.step(actions))


def snapshot(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, tuple | list):
        return [snapshot(v) for v in value]
    return value


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def assert_clear(err: BaseException, who: str) -> None:
    """A clear error: ValueError/TypeError naming ``who``, what was expected, what arrived."""
    msg = str(err)
    assert type(err) in (ValueError, TypeError), f"{type(err).__name__}: {msg}"
    assert who in msg, msg
    assert any(w in msg for w in ("expected", "must", "valid", "needs")), msg
    assert any(w in msg for w in ("got", "unknown", "missing")), msg
    STATS["clear errors"] += 1


def start(game: str, face: str, seed: int, prefix: int, rng_seed: int):
    """Two envs of (game, face) reset with ``seed`` and driven by the same ``prefix`` valid
    steps; returns them and the RNG that draws the next actions."""
    a, b = make(game, face, 0), make(game, face, 1)
    rng = np.random.default_rng(rng_seed)
    outs = [snapshot(env.reset(seed=seed)) for env in (a, b)]
    assert_same(*outs)
    for _ in range(prefix):
        actions = {ag: valid_action(a, face, ag, rng) for ag in turn_agents(a, face)}
        assert_same(act(a, face, actions), act(b, face, actions))
        STATS["valid steps"] += 1
    return a, b, rng


# -- hostile actions --------------------------------------------------------------------------
def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(x, arr: np.ndarray):
    """``arr`` in the container type of ``x`` (tensor on the batched face)."""
    return torch.as_tensor(arr) if isinstance(x, torch.Tensor) else arr


def _set_first(x, value, dtype=None):
    arr = _np(x).astype(dtype or np.result_type(_np(x).dtype, type(value)), copy=True)
    arr.reshape(-1)[0] = value
    return _like(x, arr)


MUTATIONS = {
    "256": lambda x: _set_first(x, 256, np.int64),
    "257": lambda x: _set_first(x, 257, np.int64),
    "-255": lambda x: _set_first(x, -255, np.int64),
    "2**40": lambda x: _set_first(x, 2**40, np.int64),
    "2": lambda x: _set_first(x, 2, np.int64),
    "-1": lambda x: _set_first(x, -1, np.int64),
    "0.5": lambda x: _set_first(x, 0.5, np.float64),
    "nan": lambda x: _set_first(x, np.nan, np.float64),
    "inf": lambda x: _set_first(x, np.inf, np.float64),
    "-inf": lambda x: _set_first(x, -np.inf, np.float64),
    "1e300": lambda x: _set_first(x, 1e300, np.float64),
    "complex": lambda x: _like(x, _np(x).astype(np.complex128)),
    "None": lambda x: None,
    "string": lambda x: "1010",
    "ragged": lambda x: [[0, 1], [1]],
    "dict": lambda x: {"bits": _np(x)},
    "scalar": lambda x: _like(x, np.asarray(1)),
    "drop last": lambda x: _like(x, _np(x).reshape(-1)[:-1]),
    "extra dim": lambda x: _like(x, _np(x)[None]),
    "empty": lambda x: _like(x, np.zeros((0,), np.float32)),
    "object": lambda x: np.array([object()] * 2, dtype=object),
}
BATCHED_MUTATIONS = {
    "missing env dim": lambda x: x[0],
    "num_envs + 1": lambda x: torch.cat([x, x[:1]]),
}
FLOAT_ONLY = {  # refused only by float spaces (Simplex, the payload Box)
    "int one-hot": lambda x: _like(x, (_np(x) == _np(x).max(-1, keepdims=True)).astype(np.int64)),
    "bool one-hot": lambda x: _like(x, _np(x) == _np(x).max(-1, keepdims=True)),
}
SIMPLEX_ONLY = {"zeros": lambda x: _like(x, np.zeros_like(_np(x)))}


def leaf_mutations(game: str, agent: str, key: str | None, face: str) -> list[str]:
    names = list(MUTATIONS)
    float_space = game == "quiz" and (agent == "student" or key == "targets")
    float_space = float_space or key == "payload"
    if float_space:
        names += list(FLOAT_ONLY)
        names = [n for n in names if n not in ("0.5",)]  # 0.5 may be a valid probability
    if game == "quiz" and (agent == "student" or key == "targets"):
        names += list(SIMPLEX_ONLY)
    if key == "payload":  # an unbounded Box: large finite values and 0.5 are fine
        names = [n for n in names if n not in ("256", "257", "-255", "2**40", "2", "-1", "1e300")]
        names = [n for n in names if n not in ("int one-hot", "bool one-hot")] + ["int"]
    if game == "partial_obs" and face == "batched":  # relaxed messages: [0, 1] floats are valid
        names = [n for n in names if n != "0.5"]
    if face == "batched":
        names += list(BATCHED_MUTATIONS)
    return names


def mutate(name: str, x):
    if name == "int":
        return _like(x, _np(x).astype(np.int64))
    table = {**MUTATIONS, **BATCHED_MUTATIONS, **FLOAT_ONLY, **SIMPLEX_ONLY}
    return table[name](x)


def hostile_cases(game: str, face: str) -> list[tuple[str, str | None, str]]:
    """Every (agent kind, dict key, mutation) that applies to ``game`` on ``face``."""
    family, cfg = GAMES[game]
    agents = ["student", "teacher"] if game == "quiz" else ["any"]
    keys = {
        "node_logits": ["broadcast", "payload", "not a dict"],
        "quiz": ["select", "targets", "not a dict"],
    }
    out = []
    for agent in agents:
        agent_keys = keys.get(game, [None]) if (game != "quiz" or agent == "teacher") else [None]
        for key in agent_keys:
            if key == "not a dict":
                out.append((agent, key, "array"))
                continue
            out += [(agent, key, m) for m in leaf_mutations(game, agent, key, face)]
    return out


def apply_mutation(action, key: str | None, name: str):
    if key == "not a dict":
        return np.zeros(3, np.int8)
    if key is None:
        return mutate(name, action)
    return {**action, key: mutate(name, action[key])}


def advance_to(env, face: str, game: str, agent: str, rng, other):
    """Step both envs with valid actions until ``agent`` (quiz) has the turn."""
    for _ in range(8):
        if game != "quiz" or agent == "any" or agent in turn_agents(env, face):
            return
        actions = {ag: valid_action(env, face, ag, rng) for ag in turn_agents(env, face)}
        assert_same(act(env, face, actions), act(other, face, actions))
    raise AssertionError(f"{agent} never got the turn")


def check_hostile(game, face, agent, key, name, seed, prefix, rng_seed) -> None:
    a, b, rng = start(game, face, seed, prefix, rng_seed)
    advance_to(a, face, game, agent, rng, b)
    turn = turn_agents(a, face)
    victim = turn[int(rng.integers(len(turn)))]
    actions = {ag: valid_action(a, face, ag, rng) for ag in turn}
    bad = dict(actions)
    bad[victim] = apply_mutation(actions[victim], key, name)
    STATS["invalid inputs"] += 1
    with pytest.raises((ValueError, TypeError)) as err:
        act(a, face, bad)
    assert_clear(err.value, victim)
    # The env goes on exactly as the twin that never saw the bad action.
    assert_same(act(a, face, actions), act(b, face, actions))
    STATS["state checks after an error"] += 1


@pytest.mark.parametrize(("game", "face"), CASES)
def test_every_hostile_action_is_refused_clearly_and_changes_nothing(game, face):
    """The hand-written list: every item of issue 14's "What was found" on every face."""
    for agent, key, name in hostile_cases(game, face):
        check_hostile(game, face, agent, key, name, seed=3, prefix=1, rng_seed=0)
        STATS["hand-written hostile actions"] += 1


@pytest.mark.parametrize(("game", "face"), CASES)
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_actions(game, face, data):
    """Random seeds, prefixes, victims and mutations: the same three properties."""
    cases = hostile_cases(game, face)
    agent, key, name = data.draw(st.sampled_from(cases))
    seed = data.draw(st.integers(0, 2**31 - 1))
    prefix = data.draw(st.integers(0, 3))
    rng_seed = data.draw(st.integers(0, 2**31 - 1))
    check_hostile(game, face, agent, key, name, seed, prefix, rng_seed)
    STATS["fuzz examples"] += 1


def _variants(x):
    """Exactly representable spellings of valid bits: float 0/1, bool, a Python list."""
    arr = _np(x)
    if arr.dtype.kind not in "iub":
        return []
    return [
        _like(x, arr.astype(np.float64)),
        _like(x, arr.astype(bool)),
        arr.tolist(),
    ]


@pytest.mark.parametrize(("game", "face"), CASES)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), prefix=st.integers(0, 3), which=st.integers(0, 2))
def test_valid_spellings_step_alike(game, face, seed, prefix, which):
    a, b, rng = start(game, face, seed, prefix, seed)
    turn = turn_agents(a, face)
    actions = {ag: valid_action(a, face, ag, rng) for ag in turn}
    variant = {}
    for ag, action in actions.items():
        if isinstance(action, dict):
            options = {k: _variants(v) for k, v in action.items()}
            variant[ag] = {
                k: (o[which] if o else action[k])
                for k, o in zip(action, options.values(), strict=True)
            }
        else:
            options = _variants(action)
            variant[ag] = options[which] if options else action
    assert_same(act(a, face, variant), act(b, face, actions))
    STATS["valid variants stepped"] += 1


# -- misuse of step() -------------------------------------------------------------------------
@pytest.mark.parametrize(("game", "face"), [c for c in CASES if c[1] != "aec"])
def test_bad_action_dicts(game, face):
    a, b, rng = start(game, face, 0, 1, 0)
    turn = turn_agents(a, face)
    actions = {ag: valid_action(a, face, ag, rng) for ag in turn}
    bad_dicts = {
        "empty": ({}, turn[0]),
        "unknown key": ({**actions, "agent_99": actions[turn[0]]}, "agent_99"),
        "not a dict": ([actions[ag] for ag in turn], "dict"),
        "None": (None, "dict"),
    }
    if len(turn) > 1:
        bad_dicts["missing"] = ({turn[0]: actions[turn[0]]}, turn[1])
    for bad, who in bad_dicts.values():
        STATS["invalid inputs"] += 1
        with pytest.raises((ValueError, TypeError)) as err:
            a.step(bad)
        assert_clear(err.value, who)
    assert_same(act(a, face, actions), act(b, face, actions))
    STATS["state checks after an error"] += 1


@pytest.mark.parametrize(("game", "face"), CASES)
def test_step_before_reset_is_a_clear_error(game, face):
    family, cfg = GAMES[game]
    env = {
        "parallel": family.parallel_env,
        "aec": family.env,
        "batched": lambda **c: batched(family, num_envs=NUM_ENVS, **c),
    }[face](**cfg)
    agent = env.possible_agents[0]
    STATS["invalid inputs"] += 1
    with pytest.raises(ValueError, match=r"reset\(\)") as err:
        env.step(np.zeros(2) if face == "aec" else {agent: np.zeros(2)})
    assert type(err.value) is ValueError
    STATS["clear errors"] += 1
    env.close()


@pytest.mark.parametrize("game", GAMES)
def test_close_on_every_face(game):
    family, cfg = GAMES[game]
    for env in (family.parallel_env(**cfg), family.env(**cfg), batched(family, **cfg)):
        env.reset(seed=0)
        env.close()
        env.reset(seed=0)  # a closed env can start again


# -- hostile configurations -------------------------------------------------------------------
HOSTILE_VALUES = st.one_of(
    st.integers(-3, 40),
    st.sampled_from(
        [2**40, -(2**40), 2**64, 0.0, 1.0, 2.5, -0.5, "0.3", "a", "x", "yes", "", b"1"]
    ),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.none(),
    st.complex_numbers(max_magnitude=2),
    st.lists(st.integers(0, 3), max_size=2),
)

INT, FLOAT, PROB, BOOL, SEED = "int", "float", "prob", "bool", "seed"
CONFIG_KINDS = {  # (game, parameter): (kind, low, high); None = unbounded
    ("partial_obs", "message_bits"): (INT, 1, 40),
    ("partial_obs", "max_cycles"): (INT, 1, MAX_CYCLES_LIMIT),
    ("partial_obs", "noise"): (PROB, 0, 1),
    ("partial_obs", "info_weight"): (FLOAT, None, None),
    ("partial_obs", "likelihood_weight"): (FLOAT, None, None),
    ("partial_obs", "flip_prob"): (PROB, 0, 1),
    ("partial_obs", "drop_prob"): (PROB, 0, 1),
    ("partial_obs", "blind_prob"): (PROB, 0, 1),
    ("partial_obs", "mask_seed"): (SEED, 0, 2**63 - 1),
    ("partial_obs", "data_seed"): (SEED, 0, 2**63 - 1),
    ("partial_obs", "validate"): (BOOL, None, None),
    ("partial_obs", "num_envs"): (INT, 1, 40),
    ("node_labels", "batch_size"): (INT, 1, 40),
    ("node_labels", "inbox_capacity"): (INT, 1, 40),
    ("node_labels", "consumption_prob"): (PROB, 0, 1),
    ("node_labels", "bit_cost"): (FLOAT, 0, None),
    ("node_labels", "image_bits"): (INT, 1, 64),
    ("node_labels", "max_cycles"): (INT, 1, MAX_CYCLES_LIMIT),
    ("node_labels", "partition_seed"): (SEED, 0, 2**63 - 1),
    ("node_labels", "validate"): (BOOL, None, None),
    ("quiz", "stack_size"): (INT, 1, 40),
    ("quiz", "exam_every"): (INT, 1, None),
    ("quiz", "max_lessons"): (INT, 1, MAX_CYCLES_LIMIT),
    ("quiz", "data_seed"): (SEED, 0, 2**63 - 1),
    ("quiz", "validate"): (BOOL, None, None),
}


def is_valid(kind: str, low, high, value) -> bool:
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind in (INT, SEED) and not isinstance(value, int):
        return False
    if not math.isfinite(value):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def check_config(game: str, name: str, value) -> None:
    family, cfg = GAMES[game]
    kind, low, high = CONFIG_KINDS[(game, name)]
    config = {**cfg, name: value}
    num_envs = config.pop("num_envs", 1)
    if is_valid(kind, low, high, value):
        family.batched(num_envs=num_envs, **config).reset(seed=0)  # device-free: a config check
        STATS["valid configs built"] += 1
        return
    STATS["invalid configs"] += 1
    with pytest.raises((ValueError, TypeError)) as err:
        family.batched(num_envs=num_envs, **config)  # device-free: a config check
    assert_clear(err.value, name)


@settings(max_examples=120, deadline=None)
@given(key=st.sampled_from(sorted(CONFIG_KINDS)), value=HOSTILE_VALUES)
def test_fuzzed_configs(key, value):
    check_config(*key, value)
    STATS["config fuzz examples"] += 1


HOSTILE_CONFIGS = [  # (game, config, name the error must hold): issue 14's list and more
    ("node_labels", {"graph": "two_way", "k": 1}, "k"),
    ("node_labels", {"graph": "ring", "k": 0}, "k"),
    ("node_labels", {"graph": "ring", "k": "2"}, "k"),
    ("partial_obs", {"graph": "all_to_all", "k": 1}, "k"),
    ("node_labels", {"data_root": "/nonexistent/commenv-data"}, "data_root"),
    ("quiz", {"data_root": "/nonexistent/commenv-data"}, "data_root"),
    ("partial_obs", {"data_root": 3}, "data_root"),
    ("node_logits", {"float_bits": 33}, "float_bits"),
    ("node_logits", {"float_bits": 0}, "float_bits"),
    ("node_logits", {"float_bits": 24}, "float_bits"),
    ("node_labels", {"bit_cost": -1}, "bit_cost"),
    ("node_labels", {"bit_cost": float("nan")}, "bit_cost"),
    ("partial_obs", {"validate": "yes"}, "validate"),
    ("quiz", {"validate": 1}, "validate"),
    ("partial_obs", {"num_candidates": 10**6}, "MiB"),
    ("partial_obs", {"n_agents": 1000, "graph": "all_to_all"}, "n_agents=1000"),
    ("partial_obs", {"n_agents": 10**6, "graph": "ring", "k": 1}, "n_agents=1000000"),
    ("node_labels", {"n_nodes": 1000}, "n_nodes=1000"),
    ("partial_obs", {"num_candidates": 1}, "num_candidates"),
    ("node_labels", {"inbox_capacity": 10**7}, "MiB"),
    ("quiz", {"stack_size": 10**7}, "MiB"),
    ("partial_obs", {"noise": "0.3"}, "noise"),
    ("partial_obs", {"info_weight": "a"}, "info_weight"),
    ("partial_obs", {"mask_seed": "x"}, "mask_seed"),
    ("partial_obs", {"mask_seed": 2**64}, "mask_seed"),
    ("partial_obs", {"graph": None}, "graph"),
    ("node_labels", {"graph": None}, "graph"),
    ("partial_obs", {"graph": 3}, "graph"),
    ("partial_obs", {"device": "cuda:99"}, "device"),
    ("partial_obs", {"device": "tpu"}, "device"),
    ("partial_obs", {"device": 0.5}, "device"),
    ("node_labels", {"device": "cuda:99"}, "device"),
    ("quiz", {"device": "cuda:99"}, "device"),
    ("quiz", {"target_accuracy": "0.9"}, "target_accuracy"),
    ("quiz", {"exam_size": 2.0}, "exam_size"),
    ("node_labels", {"train_size": 2.5}, "train_size"),
    ("node_labels", {"dirichlet_alpha": 0, "partition": "dirichlet"}, "dirichlet_alpha"),
    ("partial_obs", {"render_mode": ["ansi"]}, "render_mode"),
    ("partial_obs", {"level": None}, "level"),
    ("partial_obs", {"n_agents": True}, "n_agents"),
    ("partial_obs", {"num_envs": np.bool_(True)}, "num_envs"),
    ("partial_obs", {"allow_large": "yes", "num_candidates": 10**6}, "allow_large"),
]
if not torch.cuda.is_available():
    HOSTILE_CONFIGS += [(g, {"device": "cuda"}, "device") for g in GAMES]


@pytest.mark.parametrize(("game", "config", "name"), HOSTILE_CONFIGS, ids=str)
def test_hostile_configs(game, config, name):
    family, cfg = GAMES[game]
    config = {**cfg, **config}
    num_envs = config.pop("num_envs", 1)
    STATS["invalid configs"] += 1
    with pytest.raises((ValueError, TypeError)) as err:
        family.batched(num_envs=num_envs, **config)  # device-free: hostile devices among them
    assert_clear(err.value, name)


# -- graph specs ------------------------------------------------------------------------------
HOSTILE_GRAPHS = [
    ([[1, 0], [0, 1]], "ambiguous"),  # edges 1->0, 0->1, or a matrix of self-loops
    (np.eye(2, dtype=bool), "self-loops"),
    ([(0, 0)], "self-loop"),
    (np.full((2, 2), 0.5), "0/1"),
    (np.array([[0, 2], [1, 0]]), "0/1"),
    (np.ones((3, 3)), "shape"),
    ([(0, 5)], "edge"),
    ([(0.5, 1)], "edge"),
    ("mesh", "valid choices"),
]


@pytest.mark.parametrize(("graph", "match"), HOSTILE_GRAPHS, ids=str)
def test_hostile_graphs(graph, match):
    for family, cfg in (GAMES["partial_obs"], GAMES["node_labels"]):
        n = {"n_agents": 2} if family is commenv.partial_obs_v0 else {"n_nodes": 2}
        with pytest.raises(ValueError, match=match):
            family.batched(**{**cfg, **n, "graph": graph})  # device-free: a config check
        STATS["invalid configs"] += 1
        STATS["clear errors"] += 1


def test_graph_readings_agree_across_types():
    """The same 0/1 matrix as a nested list, a NumPy array or a tensor is the same graph; a
    list of tuples is always edges."""
    from commenv.channel import make_adjacency

    m = [[0, 1, 1], [0, 0, 1], [1, 0, 0]]
    ref = make_adjacency(np.asarray(m), 3)
    assert torch.equal(make_adjacency(m, 3), ref)
    assert torch.equal(make_adjacency(torch.tensor(m), 3), ref)
    assert make_adjacency([(0, 1), (1, 0)], 2).tolist() == [[False, True], [True, False]]
    assert make_adjacency([[0, 1], [1, 0]], 2).tolist() == [[False, True], [True, False]]


def test_zz_report():
    """Prints what the suite ran (``pytest -s tests/test_fuzz.py``); runs last in the file."""
    print("\nfuzz suite:", dict(sorted(STATS.items())))
    assert STATS["invalid inputs"] + STATS["invalid configs"] <= STATS["clear errors"] or not STATS
