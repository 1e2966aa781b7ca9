"""TorchRL face of a batched commenv game: ``num_envs`` worlds as one TorchRL ``EnvBase``.

The adapter wraps the batched tensor face (:class:`commenv.core.BatchedEnv`) and follows
TorchRL's multi-agent convention (the one of its ``VmasEnv``): all agents form one group,
stacked along a second dimension, and the root carries the done flags.

| key | shape (``B`` worlds, ``n`` agents) | spec |
|---|---|---|
| ``("agents", "observation")`` | ``(B, n, obs_dim)`` | ``Bounded``: the game's ``Box`` |
| ``("agents", "action")`` | ``(B, n, n_bits)`` | ``Binary``: the game's ``MultiBinary`` |
| ``("agents", "reward")`` | ``(B, n, 1)`` | ``Unbounded`` float32 |
| ``("agents", "info", key)`` | ``(B, n)`` | ``Unbounded`` int64: ground truth (``infos``) |
| ``"done"``, ``"terminated"``, ``"truncated"`` | ``(B, 1)`` | ``Categorical(2)`` bool |

Binary actions are float32 0/1 by default (``action_dtype``), so a Bernoulli policy's samples
go in unchanged and its log-probabilities need no cast.

**Reset.** TorchRL's ``"_reset"`` mask goes to the game's per-world reset
(``game.reset(env_index=mask)``, the ``BatchedEnv`` contract): only the worlds that finished
restart and every other world keeps its state, so a collector never resets the whole batch. A
mask that asks for every world (or a reset without a mask) resets them all with one
``game.reset``; a mask that asks for none returns the current observations unchanged; a seed
set by ``set_seed`` applies to the next full reset.

    from commenv.torchrl_env import make_torchrl_env
    env = make_torchrl_env("partial_obs_v0", num_envs=64, device="cpu", message_bits=4)
    rollout = env.rollout(25)      # (64, 25) tensordict

Needs ``pip install commenv[torchrl]`` (torchrl >= 0.14, tensordict).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch

from commenv.core import BatchedEnv, check_choice, check_seed, describe
from commenv.partial_obs import PartialObsGame

try:
    from tensordict import TensorDict, TensorDictBase
    from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
    from torchrl.envs import EnvBase
except ImportError as exc:  # the module still imports (doctests, docs); use says what to install
    TORCHRL_MISSING: ImportError | None = exc
    EnvBase = object  # type: ignore[assignment,misc]
else:
    TORCHRL_MISSING = None

INFO_KEYS: tuple[str, ...] = ("label", "world_index", "target", "prev_label")
"""partial_obs_v0's ground-truth keys, copied to ``("agents", "info")`` (``infos``)."""


def _check_spaces(game: BatchedEnv) -> tuple[gymnasium.spaces.Box, gymnasium.spaces.MultiBinary]:
    """The one (observation, action) space pair every agent shares, or ``TypeError``."""
    agents = game.possible_agents
    obs_space, act_space = game.observation_space(agents[0]), game.action_space(agents[0])
    for agent in agents[1:]:
        if game.observation_space(agent) != obs_space or game.action_space(agent) != act_space:
            raise TypeError(
                f"the TorchRL adapter stacks all agents into one group and needs the same "
                f"spaces for each; agent {agent!r} has {game.observation_space(agent)} / "
                f"{game.action_space(agent)}, {agents[0]!r} has {obs_space} / {act_space}"
            )
    if not isinstance(obs_space, gymnasium.spaces.Box):
        raise TypeError(f"the TorchRL adapter needs a Box observation space, got {obs_space}")
    if not isinstance(act_space, gymnasium.spaces.MultiBinary) or len(act_space.shape) != 1:
        raise TypeError(
            f"the TorchRL adapter needs a 1-D MultiBinary action space, got {act_space} "
            f"(games with Dict actions, such as node_graph_v0, are not supported yet)"
        )
    return obs_space, act_space


class BatchedTorchRLEnv(EnvBase):
    """A :class:`~commenv.core.BatchedEnv` as a TorchRL ``EnvBase`` (``batch_size=(num_envs,)``).

    Args:
        game: the batched game (``commenv.partial_obs_v0.batched(num_envs, device, ...)``);
            its ``num_envs`` and ``device`` become the env's ``batch_size`` and ``device``.
        group: name of the agent group in the tensordicts (TorchRL's MARL convention).
        infos: copy partial_obs_v0's ground truth (``INFO_KEYS``) to ``(group, "info")``;
            ``None``: when the game is partial_obs_v0.
        action_dtype: dtype of the ``Binary`` action spec (float32 or an integer/bool type).
    """

    def __init__(
        self,
        game: BatchedEnv,
        group: str = "agents",
        infos: bool | None = None,
        action_dtype: torch.dtype = torch.float32,
    ) -> None:
        if TORCHRL_MISSING is not None:
            raise ImportError(
                f"the TorchRL adapter needs torchrl and tensordict: pip install "
                f"'commenv[torchrl]' ({TORCHRL_MISSING})"
            )
        if not isinstance(game, BatchedEnv):
            raise TypeError(
                f"game must be a commenv BatchedEnv (e.g. commenv.partial_obs_v0.batched(...)), "
                f"got {type(game).__name__}"
            )
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        dtypes = (torch.float32, torch.float64, torch.int8, torch.bool)
        if not isinstance(action_dtype, torch.dtype) or action_dtype not in dtypes:
            raise ValueError(
                f"action_dtype must be one of {list(dtypes)}, got {describe(action_dtype)}"
            )
        super().__init__(device=game.device, batch_size=torch.Size([game.num_envs]))
        self.game = game
        self.group = group
        self.agents = list(game.possible_agents)
        is_partial_obs = isinstance(game, PartialObsGame)
        if infos and not is_partial_obs:
            raise ValueError(
                f"infos=True copies partial_obs_v0's ground truth {list(INFO_KEYS)}; "
                f"{type(game).__name__} has other infos: pass infos=False (or None)"
            )
        self._with_infos = is_partial_obs if infos is None else bool(infos)
        self._reuses_obs = bool(getattr(game, "reuse_obs", False))
        self._pending_seed: int | None = None
        self._last: TensorDict | None = None
        self._make_specs(*_check_spaces(game), action_dtype)

    # -- specs -----------------------------------------------------------------------------
    def _make_specs(
        self, obs_space: gymnasium.spaces.Box, act_space: gymnasium.spaces.MultiBinary, dtype
    ) -> None:
        B, n, dev = self.game.num_envs, len(self.agents), self.device
        group_shape = (B, n)
        obs_dtype = torch.from_numpy(np.zeros(0, dtype=obs_space.dtype)).dtype
        observation = Bounded(
            low=torch.as_tensor(obs_space.low, dtype=obs_dtype).expand(*group_shape, -1),
            high=torch.as_tensor(obs_space.high, dtype=obs_dtype).expand(*group_shape, -1),
            shape=(*group_shape, *obs_space.shape),
            dtype=obs_dtype,
            device=dev,
        )
        group_obs = {"observation": observation}
        if self._with_infos:
            info = {
                k: Unbounded(shape=group_shape, dtype=torch.int64, device=dev) for k in INFO_KEYS
            }
            group_obs["info"] = Composite(info, shape=group_shape, device=dev)
        self.observation_spec = Composite(
            {self.group: Composite(group_obs, shape=group_shape, device=dev)},
            shape=(B,),
            device=dev,
        )
        n_bits = int(act_space.n if np.ndim(act_space.n) == 0 else act_space.shape[0])
        action = Binary(n=n_bits, shape=(*group_shape, n_bits), dtype=dtype, device=dev)
        self.action_spec = Composite(
            {self.group: Composite({"action": action}, shape=group_shape, device=dev)},
            shape=(B,),
            device=dev,
        )
        reward = Unbounded(shape=(*group_shape, 1), dtype=torch.float32, device=dev)
        self.reward_spec = Composite(
            {self.group: Composite({"reward": reward}, shape=group_shape, device=dev)},
            shape=(B,),
            device=dev,
        )
        flag = Categorical(n=2, shape=(B, 1), dtype=torch.bool, device=dev)
        self.done_spec = Composite(
            {"done": flag, "terminated": flag.clone(), "truncated": flag.clone()},
            shape=(B,),
            device=dev,
        )

    # -- seeding, reset, step --------------------------------------------------------------
    def _set_seed(self, seed: int | None) -> None:
        """Seed the next reset: the same seed gives the same rollouts, bit for bit."""
        self._pending_seed = None if seed is None else check_seed("seed", seed)

    def _stacked_obs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every agent's observations as one ``(B, n, ...)`` tensor: the game's own when the
        agents' entries are its slices in agent order and the game never writes it again
        while it is referenced (no ``reuse_obs``; its pool recycles only unreferenced
        buffers), else a copy. No copy, and no fresh memory to page in while a collector
        drops each step's tensordict; a rollout that keeps them gets new tensors."""
        parts = [obs[a] for a in self.agents]
        base = parts[0]._base
        slices = (
            not self._reuses_obs
            and base is not None
            and base.shape[:2] == (parts[0].shape[0], len(parts))
            and all(
                part.data_ptr() == base[:, i].data_ptr() and part.stride() == base[:, i].stride()
                for i, part in enumerate(parts)
            )
        )
        if not slices:
            return torch.stack(parts, 1)
        # A view, not the game's tensor object: the pool counts the views of its buffers
        # (storage use counts), so a tensordict that holds one keeps it from being rewritten.
        return base.view(base.shape)

    def _group_td(self, obs: dict[str, torch.Tensor], infos: dict[str, dict]) -> TensorDict:
        source: dict[str, Any] = {"observation": self._stacked_obs(obs)}
        if self._with_infos:
            first = infos[self.agents[0]]
            n = len(self.agents)
            source["info"] = {
                k: first[k].to(torch.int64)[:, None].expand(-1, n).clone() for k in INFO_KEYS
            }
        return TensorDict(source, batch_size=(self.game.num_envs, len(self.agents)))

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        partial = None
        if mask is not None and self._last is not None:
            mask = mask.reshape(self.game.num_envs, -1).any(-1)
            if not mask.any():
                return self._last.clone()
            if not mask.all():
                partial = mask.to(self.game.device)
        with torch.no_grad():
            if partial is None:  # a pending set_seed waits for this, the next full reset
                seed, self._pending_seed = self._pending_seed, None
                obs, infos = self.game.reset(seed=seed)
            else:  # only the finished worlds restart; the others keep their state
                obs, infos = self.game.reset(env_index=partial)
        done = torch.zeros(self.game.num_envs, 1, dtype=torch.bool, device=self.device)
        out = TensorDict(
            {
                self.group: self._group_td(obs, infos),
                "done": done,
                "terminated": done.clone(),
                "truncated": done.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )
        if partial is not None and self._last is not None:
            # the worlds that keep going keep their done flags (TorchRL reads only the
            # reset worlds' entries, but the returned state stays true to every world)
            for key in ("done", "terminated", "truncated"):
                out[key] = torch.where(partial[:, None], done, self._last[key])
        self._last = out
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get((self.group, "action"))
        actions = {a: action[:, i] for i, a in enumerate(self.agents)}
        with torch.no_grad():
            obs, rewards, terms, truncs, infos = self.game.step(actions)
        # A world's episode ends when every agent's has (partial_obs: all at max_cycles).
        terminated = torch.stack([terms[a] for a in self.agents], 0).all(0)[:, None]
        truncated = torch.stack([truncs[a] for a in self.agents], 0).all(0)[:, None]
        group = self._group_td(obs, infos)
        group["reward"] = torch.stack([rewards[a] for a in self.agents], 1).unsqueeze(-1)
        out = TensorDict(
            {
                self.group: group,
                "done": terminated | truncated,
                "terminated": terminated,
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )
        self._last = out.exclude((self.group, "reward"))
        return out


def make_torchrl_env(
    name: str = "partial_obs_v0",
    num_envs: int = 64,
    device: str | torch.device = "cpu",
    group: str = "agents",
    infos: bool | None = None,
    action_dtype: torch.dtype = torch.float32,
    **config: Any,
) -> BatchedTorchRLEnv:
    """Build game ``name`` with ``num_envs`` worlds on ``device`` and wrap it for TorchRL.

    ``group``, ``infos`` and ``action_dtype`` go to :class:`BatchedTorchRLEnv`; ``config`` to
    the game (``commenv.partial_obs_v0.batched(num_envs, device, **config)``).
    Games whose agents share a ``Box`` observation and a 1-D ``MultiBinary`` action space
    work (partial_obs_v0; node_graph_v0 with label payloads); others raise ``TypeError``.
    The tensordicts hold the game's own observation tensors, uncopied; with
    ``reuse_obs=True`` the game writes one buffer every step, so the adapter copies it.
    """
    import commenv

    check_choice("name", name, tuple(commenv.ENVS))
    game = commenv.ENVS[name].batched(num_envs=num_envs, device=device, **config)
    return BatchedTorchRLEnv(game, group=group, infos=infos, action_dtype=action_dtype)
