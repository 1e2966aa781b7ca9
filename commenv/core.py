"""The batched core every game stands on, and the PettingZoo face put on top of it.

A game is a :class:`BatchedEnv`: its state is torch tensors with a leading ``num_envs``
dimension on one ``device``, and :meth:`BatchedEnv.step` is tensor operations over the whole
batch (the VMAS contract). Agents that train on GPU use this face directly.

:class:`BatchedParallelEnv` wraps a game built with ``num_envs=1`` into a PettingZoo
``ParallelEnv`` (numpy in, numpy out, actions validated against exactly the declared spaces);
the AEC form comes from PettingZoo's generic ``parallel_to_aec`` conversion.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from pettingzoo import ParallelEnv

TensorDict = dict[str, torch.Tensor]


def format_space(space: gymnasium.Space) -> str:
    """Short description of a space for error messages."""
    dtype = getattr(space, "dtype", None)
    return f"{space} (dtype {dtype})"


def describe(value: Any) -> str:
    """Short description of what arrived, for error messages."""
    if isinstance(value, np.ndarray | torch.Tensor):
        return f"{type(value).__name__} shape {tuple(value.shape)} dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:200]


def validate_action(
    agent: str, space: gymnasium.Space, action: Any
) -> np.ndarray | dict[str, np.ndarray]:
    """Return ``action`` as an array of ``space``, or raise ``ValueError`` naming both sides.

    A ``Dict`` space takes a dict with exactly its keys and returns a dict of arrays.

    Nothing is clipped or cast silently: a float array of 0.0/1.0 is accepted for a
    ``MultiBinary`` space (it is exactly representable), 0.5 is not.
    """

    def fail(why: str) -> ValueError:
        return ValueError(
            f"invalid action for agent {agent!r}: {why}; expected {format_space(space)}, "
            f"got {describe(action)}"
        )

    if isinstance(space, gymnasium.spaces.Dict):
        # Composite actions (e.g. node_graph_v0's broadcast bits + payload): check every key.
        if not isinstance(action, dict) or set(action) != set(space.spaces):
            raise fail(f"expected a dict with keys {sorted(space.spaces)}")
        out = {}
        for key, sub in space.spaces.items():
            try:
                out[key] = validate_action(agent, sub, action[key])
            except ValueError as exc:
                raise ValueError(f"{exc} (key {key!r} of a Dict action)") from None
        return out
    if isinstance(action, torch.Tensor):
        action = action.detach().cpu().numpy()
    try:
        arr = np.asarray(action)
    except Exception as exc:  # ragged lists and the like
        raise fail(f"not convertible to an array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise fail("not a numeric array")
    if tuple(arr.shape) != tuple(space.shape or ()):
        raise fail(f"wrong shape {tuple(arr.shape)}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise fail("contains NaN or inf")
    if isinstance(space, gymnasium.spaces.MultiBinary | gymnasium.spaces.MultiDiscrete):
        if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
            raise fail("non-integer values")
        arr = arr.astype(space.dtype)
    if not space.contains(arr):
        raise fail("values out of the space")
    return arr


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise ``ValueError`` listing the valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {list(choices)}")


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an ``int`` >= ``low``, or ``ValueError`` saying what arrived."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {describe(value)}")
    return int(value)


class BatchedEnv(ABC):
    """A game over ``num_envs`` worlds at once, as torch tensors on ``device``.

    Contract (all tensors on ``self.device``):

    - ``reset(seed)`` -> ``(obs, infos)``; ``obs[agent]`` is ``(num_envs, *obs_shape)``.
    - ``step(actions)`` with ``actions[agent]`` ``(num_envs, *act_shape)`` ->
      ``(obs, rewards, terminations, truncations, infos)``; rewards ``(num_envs,)`` float32,
      terminations/truncations ``(num_envs,)`` bool, ``infos[agent]`` a dict of tensors with
      leading ``num_envs``.
    - ``observation_space(agent)`` / ``action_space(agent)``: the spaces of *one* env, the
      same object on every call.

    All worlds of a batch share the episode clock; ``reset`` resets them all.
    """

    metadata: ClassVar[dict[str, Any]] = {}
    space_checks_suffice: ClassVar[bool] = False
    """True when the action spaces express every rule on actions, so the PettingZoo face's
    :func:`validate_action` is a complete check and the game may skip its own (``validate``)."""
    possible_agents: list[str]
    num_envs: int
    device: torch.device
    render_mode: str | None = None
    validate: bool = True

    @abstractmethod
    def reset(self, seed: int | None = None) -> tuple[TensorDict, dict[str, dict]]:
        """Start a new episode in every world."""

    @abstractmethod
    def step(
        self, actions: TensorDict
    ) -> tuple[TensorDict, TensorDict, TensorDict, TensorDict, dict[str, dict]]:
        """Advance every world by one step."""

    @abstractmethod
    def observation_space(self, agent: str) -> gymnasium.Space:
        """Observation space of ``agent`` in one world."""

    @abstractmethod
    def action_space(self, agent: str) -> gymnasium.Space:
        """Action space of ``agent`` in one world."""

    def render(self, env_index: int = 0) -> np.ndarray | None:
        """An RGB frame ``(H, W, 3)`` uint8 of world ``env_index``."""
        return None

    def _init_common(
        self,
        *,
        num_envs: int,
        device: str | torch.device,
        render_mode: str | None,
        validate: bool,
    ) -> None:
        """Check and set the constructor arguments every game shares.

        ``ValueError`` for a ``render_mode`` not in ``metadata["render_modes"]`` (listing the
        valid choices) or a ``num_envs`` that is not an integer >= 1.
        """
        check_choice("render_mode", render_mode, (None, *self.metadata.get("render_modes", ())))
        self.num_envs = check_int("num_envs", num_envs)
        self.device = torch.device(device)
        self.render_mode = render_mode
        self.validate = validate

    def _seed_generator(self, seed: int | None) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) % 2**63
        gen.manual_seed(int(seed))
        return gen


def _to_numpy(value: Any) -> Any:
    """First world of a batched value, as numpy (0-d tensors become Python scalars)."""
    if isinstance(value, torch.Tensor):
        first = value[0].detach().cpu() if value.ndim else value
        return first.item() if first.ndim == 0 else first.numpy()
    if isinstance(value, dict):
        scalars = [v for v in value.values() if isinstance(v, torch.Tensor) and v.ndim == 1]
        if len(scalars) == len(value) and len({v.dtype for v in scalars}) == 1:
            # the common case, one scalar per world per key: a single host transfer
            return dict(zip(value, torch.stack(scalars)[:, 0].tolist(), strict=True))
        return {k: _to_numpy(v) for k, v in value.items()}
    return value


def _to_batched(arr: np.ndarray | dict, device: torch.device) -> torch.Tensor | TensorDict:
    """A validated action as a batch of one world (dicts stay dicts)."""
    if isinstance(arr, dict):
        return {k: _to_batched(v, device) for k, v in arr.items()}
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device).unsqueeze(0)


class GameFace:
    """What every PettingZoo face of a one-world game delegates to its ``game``."""

    game: BatchedEnv
    render_mode: str | None

    def render(self) -> np.ndarray | str | None:
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; nothing drawn")
            return None
        return self.game.render(0)

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.game, name)


class BatchedParallelEnv(GameFace, ParallelEnv):
    """PettingZoo ``ParallelEnv`` face of a :class:`BatchedEnv` built with ``num_envs=1``.

    Observations are numpy arrays of exactly the declared spaces; every action is checked by
    :func:`validate_action` before it reaches the game; agents leave ``self.agents`` when
    their episode ends.
    """

    def __init__(self, game: BatchedEnv) -> None:
        if game.num_envs != 1:
            raise ValueError(f"the PettingZoo face needs num_envs=1, got {game.num_envs}")
        self.game = game
        if game.space_checks_suffice:  # this face checks every action itself, in numpy
            game.validate = False
        self.metadata = dict(type(game).metadata)
        self.possible_agents = list(game.possible_agents)
        self.agents: list[str] = []
        self.render_mode = game.render_mode
        self._obs_dtype = {a: game.observation_space(a).dtype for a in self.possible_agents}

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self.game.observation_space(agent)

    def action_space(self, agent: str) -> gymnasium.Space:
        return self.game.action_space(agent)

    def _obs(self, obs: TensorDict) -> dict[str, np.ndarray]:
        return {
            a: obs[a][0].cpu().numpy().astype(self._obs_dtype[a], copy=False) for a in self.agents
        }

    def _infos(self, infos: dict[str, dict]) -> dict[str, dict]:
        converted: dict[int, dict] = {}  # games often share one info dict between agents
        out = {}
        for a in self.agents:
            key = id(infos[a])
            if key not in converted:
                converted[key] = _to_numpy(infos[a])
            out[a] = dict(converted[key])
        return out

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        # inference_mode: no autograd bookkeeping, which dominates tiny one-world steps
        with torch.inference_mode():
            obs, infos = self.game.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return self._obs(obs), self._infos(infos)

    def step(self, actions: dict[str, Any]):
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise ValueError(
                f"unknown agent key(s) {sorted(unknown)}; valid agents: {self.possible_agents}"
            )
        if not self.agents:
            raise ValueError("step() called on a finished episode; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing actions for agent(s) {missing}; live agents: {self.agents}")
        batched = {}
        for agent in self.agents:
            arr = validate_action(agent, self.action_space(agent), actions[agent])
            batched[agent] = _to_batched(arr, self.game.device)
        with torch.inference_mode():
            obs, rew, term, trunc, infos = self.game.step(batched)
            live = self.agents
            # One host transfer for every reward and flag (each is a (1,) tensor).
            per_agent = [rew[a] for a in live] + [term[a] for a in live] + [trunc[a] for a in live]
            flags = torch.cat(per_agent).tolist()
        n = len(live)
        out = (
            self._obs(obs),
            {a: float(flags[i]) for i, a in enumerate(live)},
            {a: bool(flags[n + i]) for i, a in enumerate(live)},
            {a: bool(flags[2 * n + i]) for i, a in enumerate(live)},
            self._infos(infos),
        )
        self.agents = [a for a in live if not (out[2][a] or out[3][a])]
        return out


class EnvFamily:
    """A versioned game the PettingZoo way: ``partial_obs_v0`` and friends.

    Calling the family returns the ``ParallelEnv``; ``.parallel_env(**cfg)``, ``.env(**cfg)``
    (AEC, by PettingZoo's ``parallel_to_aec``), ``.raw_env(**cfg)`` and
    ``.batched(num_envs, device, **cfg)`` (the tensor face) give the other forms, so the
    family also works where PettingZoo expects an env module (e.g. ``max_cycles_test``).
    """

    def __init__(self, name: str, game_cls: type[BatchedEnv], doc: str | None = None) -> None:
        self.name = name
        self.game_cls = game_cls
        # The game module's docstring is its documentation page (the PettingZoo way).
        self.__doc__ = doc or sys.modules[game_cls.__module__].__doc__ or game_cls.__doc__
        self.metadata = game_cls.metadata

    def defaults(self) -> dict[str, Any]:
        """The game's keyword arguments and their defaults (``num_envs``/``device`` excluded)."""
        import inspect

        params = inspect.signature(self.game_cls.__init__).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.default is not inspect.Parameter.empty and p.name not in ("num_envs", "device")
        }

    def batched(self, num_envs: int = 1, device: str | torch.device = "cpu", **config: Any):
        """The batched tensor face: ``num_envs`` worlds on ``device``."""
        return self.game_cls(num_envs=num_envs, device=device, **config)

    def parallel_env(self, **config: Any) -> BatchedParallelEnv:
        """PettingZoo ``ParallelEnv`` (numpy observations, validated actions)."""
        return BatchedParallelEnv(self.game_cls(num_envs=1, device="cpu", **config))

    def raw_env(self, **config: Any):
        """AEC form without PettingZoo's order-enforcing wrapper."""
        from pettingzoo.utils.conversions import parallel_to_aec_wrapper

        return parallel_to_aec_wrapper(self.parallel_env(**config))

    def env(self, **config: Any):
        """AEC form (``parallel_to_aec`` of the parallel env)."""
        from pettingzoo.utils.conversions import parallel_to_aec

        return parallel_to_aec(self.parallel_env(**config))

    def __call__(self, **config: Any) -> BatchedParallelEnv:
        return self.parallel_env(**config)

    def __repr__(self) -> str:
        return f"<commenv env family {self.name}>"
