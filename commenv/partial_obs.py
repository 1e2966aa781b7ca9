"""partial_obs_v0 — the noisy-mask partial-observation world (thesis, chapter 4).

| | |
|---|---|
| Import | ``env = commenv.partial_obs_v0()`` |
| Agents | ``agent_0`` ... ``agent_{n-1}`` (``n_agents``, default 2) |
| Parallel API | native (AEC by ``commenv.partial_obs_v0.env()``) |
| Action space | ``MultiBinary(message_bits + num_candidates)`` |
| Observation space | ``Box(0, 1, (D + max_in * (1 + message_bits) + K * D [+ 1],))`` float32 |
| Batched face | ``commenv.partial_obs_v0.batched(num_envs, device)`` |

**World.** Each step the world is one fresh sample ``x_t`` of an image dataset (``D`` pixels).
No agent ever sees ``x_t``: agent ``i`` has a fixed noise mask ``M_i`` (Bernoulli(``noise``)
per pixel, drawn once from ``mask_seed`` and kept for the life of the env) and sees
``view_i(x) = x`` with the masked pixels inverted (``1 - x``).

**Observation** of agent ``i`` at step ``t`` (flat, laid out in ``env.obs_layout``; float32,
or 8-bit with ``obs_dtype="uint8"``):

1. ``view``: ``view_i(x_t)`` (``D`` values);
2. ``heard``: one slot per in-neighbour in the channel graph (``max_in`` slots, increasing
   sender index), each ``[present, b_1 .. b_L]``: the message that sender spoke at step
   ``t - 1`` about ``x_{t-1}``, after channel noise; ``present = 0`` and zero bits where no
   message arrived (no such sender, a drop, or the first step);
3. ``candidates``: ``num_candidates`` (``K``) worlds seen through ``i``'s own mask: ``x_{t-1}``
   and ``K - 1`` distractors, in a random order (zeros on the first step);
4. ``blind`` (only with ``blind_prob > 0``, the ``[+ 1]`` of the space): 1 when this step's
   ``view`` is hidden (all zeros).

**Action** of agent ``i``: ``[m_i (message_bits bits) | c_i (K bits)]``: its message about
``x_t`` and its choice of which candidate the heard messages describe (a one-hot; any other
pattern is a wrong answer).

**Rewards** (``r_i`` at step ``t``; ``E`` is the set of directed edges ``j -> i``; ``d_ji`` is 1
when ``j``'s message reached ``i``; ``m~_j`` is what arrived after noise):

- discrimination (the InfoNCE / referential form of the mutual-information term, which keeps
  messages informative): ``g_i = 1[c_i = onehot(target)]`` for a listener that heard at least
  one message at ``t - 1``. Listener ``i`` earns ``info_weight * g_i``; every speaker ``j`` it
  heard earns ``info_weight * mean_{i : d_ji(t-1)} g_i``.
- likelihood (the listener predicts the speaker's message from its own view, scored by
  bit agreement; its own message is its prediction, as in the thesis):
  ``l_ji = 1 - mean_b |m_i,b - m~_j,b|`` on delivered edges. By ``level``:

  - ``none``: no likelihood reward;
  - ``receive``: listener ``i`` earns ``likelihood_weight * mean_j l_ji``;
  - ``feedback``: as ``receive``, and speaker ``j`` also earns
    ``likelihood_weight * mean_i l_ji`` (the student's error flows back to the teacher);
  - ``both``: ``feedback`` on a symmetric graph (each agent speaks and listens).

  With ``num_candidates = 0`` only the likelihood term remains and constant messages win:
  the degenerate game, kept for study.

  **Blind steps, for listeners with memory.** The target candidate is ``x_{t-1}`` through the
  listener's own fixed mask, which is exactly the ``view`` it observed one step earlier: a
  listener that remembers its previous observation (a recurrent policy, frame stacking)
  finds the target without any message, and constant messages then earn the full reward at
  every level. With ``blind_prob = p > 0`` each agent's view is hidden at each step with
  probability ``p`` (``blind`` flag), and the rewards score what only the messages can tell:
  ``g_i`` counts only for a listener blind at ``t - 1``, on the messages of speakers who were
  not, and the likelihood term only on edges where neither end is blind at ``t``. Then a
  listener with memory still needs the messages, and constant messages earn chance
  (``tests/test_partial_obs.py`` plays that oracle). The default ``p = 0`` keeps every step
  scored, for listeners that act on the current observation alone.
  Distractors are drawn with replacement, so one can equal the target (about 0.25 % of steps
  on digits with ``K = 4``); such a step cannot be answered.

Differentiable agents use the batched face with float messages in [0, 1] that require grad:
the channel delivers them with gradient on the edges the level opens (``feedback``,
``both``) and detached otherwise (``none``, ``receive``), and the rewards above stay
differentiable in the messages. Two consequences for a training loop:

- On ``feedback``/``both`` the ``heard`` slots of the observations carry the senders' graph,
  so a listener's next message depends on earlier messages through autograd. A loop that
  calls ``backward`` every step must detach the observations it feeds back
  (``{a: o.detach() for a, o in obs.items()}``), or keep the graph and backpropagate once per
  episode (as EGG's Gumbel-Softmax games do); otherwise the second ``backward`` fails and the
  graph grows with the episode.
- A delivered edge's likelihood term is in the listener's reward and, on ``feedback``/``both``,
  again in the speaker's: the sum of all rewards counts its gradient twice. Differentiate each
  agent's own reward with respect to its own parameters (``torch.autograd.grad``), or sum the
  listeners' rewards alone, for the thesis' gradients.

**Episodes and resets.** Every world keeps its own step clock (``game.steps``, ``(num_envs,)``);
a world's episode is truncated when its clock reaches ``max_cycles`` (never terminated early).
``reset(seed=s)`` reseeds the game and restarts every world. On the batched face,
``reset(env_index=...)`` (an index, a list or 1-D tensor of indices, or a ``(num_envs,)`` bool
mask; ``commenv.core.check_env_index``) restarts only those worlds: their clocks go back to 0,
they hear nothing and see no candidates, and their first world is drawn from their own
restart streams (``commenv.core.WorldStreams``, keyed by the seed: world ``w``'s ``r``-th
restart since the last seeded reset draws at ``(w, r)``), so every other world's episode
continues bit for bit as if nothing had happened, and what a restarted world draws does not
depend on which other worlds restarted before or with it; ``obs``/``infos`` cover the whole
batch. A seed together
with ``env_index`` raises ``ValueError`` (a partial reset continues the streams). The same seed
and the same sequence of actions and resets give the same episodes.

**Faces and speed.** The PettingZoo faces (parallel and AEC) run one world in numpy
(``reset_one``/``step_one``): the same rules (one ``_rewards`` written for numpy and torch alike,
its sums added in a fixed order) and the same random draws from the same generators as the
batched face, so a seed gives the same episode, bit for bit, on every face. They return fresh
arrays every step. The batched face gathers images through one scratch buffer it keeps and
draws its randomness about 8,192 world-steps at a time, so its memory per world does not grow
with ``num_envs``; ``game.memory_per_world()`` reports it (state, pre-drawn randomness,
scratch and one step's observation, in bytes per world). Its observations are fresh tensors
every step unless ``reuse_obs=True``, which writes them into one buffer: no per-step
allocation, but a kept observation must be copied. Fresh observations of 1 MiB and more on
the CPU recycle one of the last few observation tensors once nothing outside the game holds
it (no tensor, view or numpy array of it): no page faults per step when the caller drops
them, and a tensor still held is never written.

Ground truth (``label``, ``world_index`` of ``x_t``, ``target`` position of ``x_{t-1}`` among
the candidates, ``prev_label``) is in ``infos[agent]``, never in observations.

**Arguments** (``commenv.partial_obs_v0(**kwargs)``; ``.batched(num_envs, device, **kwargs)``
for the tensor face). Each is checked at construction: a wrong type or a value out of range
raises ``ValueError`` naming the argument (``docs/bad_input.md``).

- ``n_agents=2``: number of agents, an integer >= 2.
- ``graph="two_way"``: who hears whom: ``"one_way"``, ``"two_way"``, ``"all_to_all"``,
  ``"ring"``, an ``(n, n)`` 0/1 matrix ``[sender, receiver]`` or a list of
  ``(sender, receiver)`` edges (``commenv.channel.make_adjacency``).
- ``level="both"``: communication level, ``"none"``, ``"receive"``, ``"feedback"`` or
  ``"both"`` (``"both"`` needs a symmetric graph).
- ``dataset="digits"``: image dataset, one of ``commenv.DATASETS``.
- ``split="train"``: the split the worlds are drawn from, ``"train"``, ``"val"`` or ``"test"``.
- ``message_bits=32``: bits per message ``L``, an integer >= 1.
- ``noise=0.3``: probability that a pixel is inverted in an agent's mask, in [0, 1] (our
  choice: the thesis' text lost its noise level).
- ``num_candidates=4``: candidates ``K`` of the discrimination game, 0 (no discrimination) or
  an integer >= 2, not 1: with a single candidate the choice is always right and the reward
  says nothing.
- ``info_weight=1.0``: weight of the discrimination reward, a finite number.
- ``likelihood_weight=0.5``: weight of the likelihood reward, a finite number.
- ``blind_prob=0.0``: probability that an agent's view is hidden at a step, in [0, 1] (see
  "Blind steps"; drawn from a stream of its own, so the worlds are those of ``0``).
- ``flip_prob=0.0``: probability that the channel flips each delivered bit, in [0, 1].
- ``drop_prob=0.0``: probability that the channel loses each message, in [0, 1]. Flips and
  drops draw from the game's one stream, so with the same seed, other noise levels see other
  worlds after the first draws: compare noise levels over several seeds.
- ``k=None``: neighbours per agent for ``graph="ring"`` (1 <= k <= n_agents - 1); must stay
  ``None`` with any other graph.
- ``max_cycles=25``: steps per episode (then truncated), an integer in
  [1, 2**62].
- ``mask_seed=0``: seed of the noise masks, an integer in [0, 2**63 - 1].
- ``data_seed=0``: seed of the dataset's train/val split, an integer in [0, 2**63 - 1].
- ``data_root=None``: directory of a file dataset; ``None`` searches the default locations, a
  directory that does not exist raises.
- ``render_mode=None``: ``None``, ``"human"``, ``"rgb_array"`` or ``"ansi"``.
- ``num_envs=1``: worlds of the batched face, an integer >= 1 (the PettingZoo faces use 1).
- ``device="cpu"``: torch device of the batched face; one this machine has (``"cuda"``
  without CUDA raises).
- ``validate=True``: check every batched action (``False`` skips the checks for speed), a bool.
- ``reuse_obs=False``: the batched face writes every step's observations into one
  preallocated buffer (no per-step allocation: flat throughput at large ``num_envs``); the
  returned tensors are then overwritten by the next ``step``/``reset``, so copy what you keep
  (``obs[a].clone()``). ``False`` (the default) returns fresh tensors every step, as VMAS
  does. The PettingZoo faces always return fresh numpy arrays.
- ``obs_dtype="float32"``: ``"float32"`` (the values above) or ``"uint8"``, compact
  observations on every face, in the manner of Atari frames: a pixel ``x`` is ``round(255 x)``
  and a masked pixel ``255 - round(255 x)``, flags and bits are 0/255 (any relaxed value ``v``
  ``round(255 v)``), so ``obs / 255`` is the float32 observation within ``1/510`` (the
  pixels of an 8-bit dataset such as Fashion-MNIST are its own bytes). A quarter of the bytes
  per step and per stored rollout; the space is ``Box(0, 255, uint8)``. Relaxed messages
  that require grad need ``"float32"`` (a uint8 observation carries no gradient) and raise
  ``ValueError`` otherwise.
- ``allow_large=False``: accept configurations whose observations need more than
  ``commenv.core.MEMORY_LIMIT_BYTES`` (256 MiB); otherwise they raise with the size.

**Version history.** v0: first release.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch

from commenv.channel import Channel, GraphSpec, check_channel_memory, make_adjacency
from commenv.core import (
    MAX_CYCLES_LIMIT,
    BatchedEnv,
    ObservationPool,
    StepResult,
    TensorDict,
    batched_actions,
    check_action_keys,
    check_bool,
    check_choice,
    check_data_root,
    check_float,
    check_int,
    check_memory,
    check_partial_reset,
    check_probability,
    check_seed,
    describe,
    generator_seed,
)
from commenv.datasets import DATASETS, load_dataset

LEVELS: tuple[str, ...] = ("none", "receive", "feedback", "both")
SPLITS: tuple[str, ...] = ("train", "val", "test")
OBS_DTYPES: tuple[str, ...] = ("float32", "uint8")


def _sum_last(x):
    """Sum over the last axis as a left-to-right chain of additions (numpy or torch alike)."""
    if x.shape[-1] == 0:
        return x.sum(-1)
    acc = x[..., 0]
    for j in range(1, x.shape[-1]):
        acc = acc + x[..., j]
    return acc


def _all_last(x):
    """``x.all(-1)`` of a bool array as a chain of ``&`` (a library reduction over a short
    last axis costs far more than a few elementwise ops on the batched face)."""
    if x.shape[-1] == 0:
        return x.all(-1)
    acc = x[..., 0]
    for j in range(1, x.shape[-1]):
        acc = acc & x[..., j]
    return acc


def _any_last(x):
    """``x.any(-1)`` of a bool array as a chain of ``|``."""
    if x.shape[-1] == 0:
        return x.any(-1)
    acc = x[..., 0]
    for j in range(1, x.shape[-1]):
        acc = acc | x[..., j]
    return acc


class _TorchOps:
    """The few operations of the rules that numpy and torch spell differently: torch."""

    @staticmethod
    def f32(x):
        return x.to(torch.float32)

    @staticmethod
    def zeros(shape, like):
        return torch.zeros(shape, device=like.device)

    @staticmethod
    def at_least_one(x):
        return x.clamp(min=1)

    @staticmethod
    def stack(xs):
        return torch.stack(xs)

    all_last = staticmethod(_all_last)  # booleans: any order gives the same answer
    any_last = staticmethod(_any_last)

    @staticmethod
    def abs_(x):  # |x| of a fresh x, in place where no gradient needs x: no new buffer per step
        return x.abs() if x.requires_grad else x.abs_()

    @staticmethod
    def take_rows(table, index):  # table[index] for a 1-D index
        return table.index_select(0, index)

    @staticmethod
    def take_last(x, index):  # x[..., index] for a 2-D index
        return x.index_select(-1, index.reshape(-1)).view(*x.shape[:-1], *index.shape)


class _NumpyOps:
    """The same operations for numpy arrays (the one-world fast path)."""

    @staticmethod
    def f32(x):
        return x.astype(np.float32)

    @staticmethod
    def zeros(shape, like):
        return np.zeros(shape, np.float32)

    @staticmethod
    def at_least_one(x):
        return np.maximum(x, _ONE)

    @staticmethod
    def stack(xs):
        return np.array(xs)

    @staticmethod
    def all_last(x):
        return x.all(-1)

    @staticmethod
    def any_last(x):
        return x.any(-1)

    @staticmethod
    def abs_(x):
        return np.abs(x, out=x)

    @staticmethod
    def take_rows(table, index):
        return table[index]

    @staticmethod
    def take_last(x, index):
        return x[..., index]


_TORCH, _NUMPY = _TorchOps(), _NumpyOps()
_ONE = np.float32(1)
_VIEW_TABLE_BYTES = 32 * 2**20  # the one-world path precomputes views up to this size


def _world_rows(mask: torch.Tensor) -> torch.Tensor | None:
    """The indices of the worlds of a ``(B,)`` bool ``mask`` on the CPU; ``None`` elsewhere
    (listing them would make the host wait on the device)."""
    return mask.nonzero().flatten() if mask.device.type == "cpu" else None


def _fill_worlds_(x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None) -> None:
    """Zero the worlds (leading dimension) of ``mask`` in ``x``, in place: by their indices
    when ``rows`` lists them (a broadcast mask costs a pass over all of a wide ``x``; on the
    CPU 25x the indexed fill of 1 in 25 worlds), else by the mask."""
    if rows is not None:
        x.index_fill_(0, rows, 0)
    else:
        x.masked_fill_(mask.view(-1, *(1,) * (x.dim() - 1)), 0)


def _filled_worlds(
    x: torch.Tensor,
    mask: torch.Tensor,
    rows: torch.Tensor | None,
    pool: ObservationPool | None = None,
) -> torch.Tensor:
    """A copy of ``x`` with the worlds of ``mask`` zeroed (:func:`_fill_worlds_`), made by
    ``pool`` when given (:meth:`~commenv.core.ObservationPool.copy_of`): a fresh MiB-sized
    copy would page-fault every restart."""
    out = x.clone() if pool is None else pool.copy_of(x)
    _fill_worlds_(out, mask, rows)
    return out


def noise_masks(n_agents: int, num_features: int, noise: float, seed: int) -> torch.Tensor:
    """The fixed per-agent inversion masks ``(n_agents, num_features)`` bool."""
    gen = torch.Generator().manual_seed(generator_seed(int(seed)))
    return torch.rand(n_agents, num_features, generator=gen) < noise


class PartialObsGame(BatchedEnv):
    """Batched partial_obs_v0 (see the module docstring for the rules)."""

    metadata: ClassVar[dict[str, Any]] = {
        "name": "partial_obs_v0",
        "render_modes": ["human", "rgb_array", "ansi"],
        "is_parallelizable": True,
        "render_fps": 2,
    }
    space_checks_suffice: ClassVar[bool] = True

    def __init__(
        self,
        n_agents: int = 2,
        graph: GraphSpec = "two_way",
        level: str = "both",
        dataset: str = "digits",
        split: str = "train",
        message_bits: int = 32,
        noise: float = 0.3,
        num_candidates: int = 4,
        info_weight: float = 1.0,
        likelihood_weight: float = 0.5,
        flip_prob: float = 0.0,
        drop_prob: float = 0.0,
        k: int | None = None,
        max_cycles: int = 25,
        mask_seed: int = 0,
        data_seed: int = 0,
        data_root: str | None = None,
        render_mode: str | None = None,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        validate: bool = True,
        allow_large: bool = False,
        reuse_obs: bool = False,
        obs_dtype: str = "float32",
        blind_prob: float = 0.0,
    ) -> None:
        check_choice("obs_dtype", obs_dtype, OBS_DTYPES)
        self.obs_dtype = obs_dtype
        self.blind_prob = check_probability("blind_prob", blind_prob)
        self._init_common(
            num_envs=num_envs, device=device, render_mode=render_mode, validate=validate
        )
        self._check_rules(
            n_agents, level, message_bits, num_candidates, info_weight, likelihood_weight
        )
        self.max_cycles = check_int("max_cycles", max_cycles, high=MAX_CYCLES_LIMIT)
        self._build_channel(graph, k, flip_prob, drop_prob, allow_large)  # checks n_agents' size
        self.possible_agents = [f"agent_{i}" for i in range(self.n_agents)]
        self._build_world(dataset, split, noise, mask_seed, data_seed, data_root)
        self._build_spaces(allow_large)
        self._build_out_slots()
        self.reuse_obs = check_bool("reuse_obs", reuse_obs)
        self._obs_buf: torch.Tensor | None = None
        shape = (self.num_envs, self.n_agents, self._obs_space.shape[0])
        self._obs_pool = ObservationPool(
            shape, self.device, enabled=not self.reuse_obs, dtype=self._obs_torch_dtype
        )
        # The inbox a step gathers becomes the state's "heard": recycled once nothing holds it.
        heard = (self.num_envs, self.n_agents, self._channel.max_in_degree, self.message_bits)
        self._inbox_pool = ObservationPool(heard, self.device)
        B, n, L, K = self.num_envs, self.n_agents, self.message_bits, self.num_candidates
        self._action_pools = (
            ObservationPool((B, n, L), self.device),
            ObservationPool((B, n, K), self.device),
        )
        self._scratch: torch.Tensor | None = None
        self._fresh: bool | torch.Tensor | None = None
        self._gen, self._restart_streams = self._seed_streams(None)
        self._restarts = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._state: dict[str, torch.Tensor] = {}

    # -- construction ----------------------------------------------------------------------
    def _check_rules(
        self,
        n_agents: int,
        level: str,
        message_bits: int,
        num_candidates: int,
        info_weight: float,
        likelihood_weight: float,
    ) -> None:
        """The game's own arguments: agents, level, message and candidate sizes, weights."""
        check_choice("level", level, LEVELS)
        self.n_agents = check_int("n_agents", n_agents, 2)
        self.level = level
        self.message_bits = check_int("message_bits", message_bits)
        self.num_candidates = check_int("num_candidates", num_candidates, 0)
        if self.num_candidates == 1:
            raise ValueError(
                "num_candidates must be 0 (no discrimination) or >= 2, got 1: with a single "
                "candidate the listener's choice is always right and the reward says nothing"
            )
        self.info_weight = check_float("info_weight", info_weight)
        self.likelihood_weight = check_float("likelihood_weight", likelihood_weight)

    def _build_channel(
        self,
        graph: GraphSpec,
        k: int | None,
        flip_prob: float,
        drop_prob: float,
        allow_large: bool,
    ) -> None:
        """The channel over ``graph`` and the gradient mask ``level`` opens on it."""
        check_channel_memory(self.n_agents, None, allow_large)
        adjacency = make_adjacency(graph, self.n_agents, k)
        check_channel_memory(self.n_agents, adjacency, allow_large)
        if not bool(adjacency.any()):
            raise ValueError(
                f"graph must have at least one edge (someone to hear), got {describe(graph)} "
                "with none: no agent would ever hear a message"
            )
        if self.level == "both" and not torch.equal(adjacency, adjacency.T):
            raise ValueError(
                "level='both' needs a symmetric graph (every listener also speaks back), "
                "e.g. graph='two_way' or 'all_to_all'; use level='feedback' on a one-way graph"
            )
        self._channel = Channel(
            adjacency, flip_prob=flip_prob, drop_prob=drop_prob, device=self.device
        )
        # Gradient through the channel: open exactly where the speaker gets feedback.
        opens = self.level in ("feedback", "both")
        self.grad_mask: torch.Tensor | bool = adjacency if opens else False

    def _build_world(
        self,
        dataset: str,
        split: str,
        noise: float,
        mask_seed: int,
        data_seed: int,
        data_root: str | None,
    ) -> None:
        """The images of ``split`` on the device and each agent's fixed noise mask."""
        check_choice("dataset", dataset, DATASETS)
        check_choice("split", split, SPLITS)
        noise = check_probability("noise", noise)
        mask_seed = check_seed("mask_seed", mask_seed)
        data = load_dataset(
            dataset, root=check_data_root(data_root), seed=check_seed("data_seed", data_seed)
        )
        chosen = getattr(data, split)
        self.image_shape = data.image_shape
        self.num_classes = data.num_classes
        self.images = chosen.flat().to(self.device)
        self.labels = chosen.y.to(self.device)
        self.num_features = data.num_features
        self.masks = noise_masks(self.n_agents, self.num_features, noise, mask_seed).to(self.device)
        self._mask_f = self.masks.to(self.images.dtype)
        self._mask_sign = 1.0 - 2.0 * self._mask_f
        if self.obs_dtype == "uint8":  # 8-bit pixels; a masked pixel is 255 minus its value
            self._images_u8 = torch.round(self.images * 255.0).to(torch.uint8)
            self._mask_u8 = self.masks.to(torch.uint8) * 255

    @property
    def _obs_torch_dtype(self) -> torch.dtype:
        return torch.uint8 if self.obs_dtype == "uint8" else torch.float32

    def _build_spaces(self, allow_large: bool) -> None:
        """The observation layout and the spaces, within the memory bound."""
        D, L, K, S = self.num_features, self.message_bits, self.num_candidates, self.max_in
        self.obs_layout = {
            "view": slice(0, D),
            "heard": slice(D, D + S * (1 + L)),
            "candidates": slice(D + S * (1 + L), D + S * (1 + L) + K * D),
        }
        obs_dim = self.obs_layout["candidates"].stop
        if self.blind_prob:  # one flag: this step's view is hidden
            self.obs_layout["blind"] = slice(obs_dim, obs_dim + 1)
            obs_dim += 1
        obs_bytes = np.dtype(self.obs_dtype).itemsize * self.num_envs * self.n_agents * obs_dim
        self._draw_chunk = max(1, min(self._DRAW_CHUNK, self._DRAW_WORLD_STEPS // self.num_envs))
        draw_bytes = 8 * self._draw_chunk * self.num_envs * (2 + max(K, 1))
        # the state's message tensors
        draw_bytes += 4 * self.num_envs * self.n_agents * (S + 1) * L
        check_memory(
            "observations",
            obs_bytes + draw_bytes,
            allow_large,
            num_envs=self.num_envs,
            n_agents=self.n_agents,
            message_bits=L,
            num_candidates=K,
        )
        if self.obs_dtype == "uint8":
            self._obs_space = gymnasium.spaces.Box(0, 255, (obs_dim,), np.uint8)
        else:
            self._obs_space = gymnasium.spaces.Box(0.0, 1.0, (obs_dim,), np.float32)
        self._act_space = gymnasium.spaces.MultiBinary(L + K)

    @property
    def channel(self) -> Channel:
        """The game's :class:`~commenv.channel.Channel` (its counters include every step)."""
        if getattr(self, "_np_traffic", None) is not None:
            self._flush_traffic()
        return self._channel

    # -- spaces ----------------------------------------------------------------------------
    @property
    def max_in(self) -> int:
        """Number of heard-message slots in an observation (the graph's max in-degree)."""
        return self._channel.max_in_degree

    def observation_space(self, agent: str) -> gymnasium.Space:
        self._check_agent(agent)
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.Space:
        self._check_agent(agent)
        return self._act_space

    # -- world -----------------------------------------------------------------------------
    def views(self, world_index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Every agent's view of worlds ``world_index`` ``(...)``: ``(..., n_agents, D)``.

        Masked pixels become ``1 - x``, computed as ``m + x * (1 - 2m)`` (exact in floating
        point for m in {0, 1}) so that it can write straight into ``out``.
        """
        # index_select: a row gather far cheaper than advanced indexing on CPU
        x = self.images.index_select(0, world_index.reshape(-1))
        x = x.view(*world_index.shape, 1, self.num_features)
        return torch.addcmul(self._mask_f, x, self._mask_sign, out=out)

    _DRAW_CHUNK = 32  # at most this many steps of world/candidate draws per call to the RNG
    _DRAW_WORLD_STEPS = 8192  # and about this many world-steps: bounded memory per world

    def _refill_draws(self) -> None:
        # Drawing many steps at once keeps RNG calls off the per-step path; same seed, same
        # draws. Memory stays bounded however long the episode.
        B, C, K, n_img = (
            self.num_envs,
            self._draw_chunk,
            max(self.num_candidates, 1),
            len(self.images),
        )
        kw = {"generator": self._gen, "device": self.device}
        self._draws = (
            torch.randint(n_img, (C, B), **kw),
            torch.randint(n_img, (C, B, K), **kw),
            torch.randint(K, (C, B), **kw),
        )
        self._draw_i = 0

    def _next_draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next step's world ``(B,)``, distractors ``(B, K)`` and target slot ``(B,)``."""
        if self._draw_i == self._draw_chunk:
            self._refill_draws()
        i = self._draw_i
        self._draw_i += 1
        return self._draws[0][i], self._draws[1][i], self._draws[2][i]

    def reset(
        self, seed: int | None = None, env_index: Any = None
    ) -> tuple[TensorDict, dict[str, dict]]:
        """Start a new episode in every world, or only in the worlds ``env_index`` names.

        ``seed`` reseeds the game (full resets only: a partial reset continues the streams,
        reseeding part of a batch has no meaning and raises ``ValueError``).
        """
        if env_index is not None:
            started = bool(self._state)
            mask = check_partial_reset(seed, env_index, self.num_envs, self.device, started)
            self._restart(mask)
            return self._observe(), self._infos()
        if seed is not None or not self._state:
            self._gen, self._restart_streams = self._seed_streams(seed)
            # restarts are counted for the streams' life: a later full reset goes on counting
            self._restarts = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
            self._seed_blind()
        B, n, S, L = self.num_envs, self.n_agents, self.max_in, self.message_bits
        self._refill_draws()
        world = self._next_draw()[0]
        self._state = {
            "world": world,
            "label": self.labels[world],
            "prev_label": torch.full_like(world, -1),
            "candidates": torch.zeros(B, self.num_candidates, dtype=torch.long, device=self.device),
            "target": torch.zeros(B, dtype=torch.long, device=self.device),
            # heard messages are kept as the observation holds them (bytes with uint8)
            "heard": torch.zeros(B, n, S, L, dtype=self._obs_torch_dtype, device=self.device),
            "delivered": torch.zeros(B, n, S, dtype=torch.bool, device=self.device),
            "messages": torch.zeros(B, n, L, device=self.device),
            "steps": torch.zeros(B, dtype=torch.long, device=self.device),
        }
        if self.blind_prob:
            st = self._state
            st["blind"], st["blind_prev"] = (
                self._blind_draw(),
                torch.zeros_like(st["delivered"][..., 0]),
            )
        self._fresh = True
        return self._observe(), self._infos()

    def _restart(self, mask: torch.Tensor) -> None:
        """Step 0 of a fresh episode in the worlds of ``mask`` ``(B,)``, the others untouched.

        The new first worlds come from the worlds' own streams: world ``w``'s ``r``-th
        restart draws ``WorldStreams.integers`` at ``(w, r)``, whatever other worlds do (computed
        for every world, so nothing waits on the device to list the mask's worlds); the
        state tensors are replaced, not written, so tensors returned earlier keep their values.
        """
        st = self._state
        self._restarts = self._restarts + mask
        worlds = torch.arange(self.num_envs, device=self.device)
        fresh = self._restart_streams.integers(len(self.images), worlds, self._restarts, n=1)[:, 0]
        rows = _world_rows(mask)
        st["world"] = torch.where(mask, fresh, st["world"])
        st["label"] = self.labels[st["world"]]
        st["prev_label"] = st["prev_label"].masked_fill(mask, -1)
        keys = ("candidates", "target", "heard", "delivered", "messages", "steps")
        pools = {"heard": self._inbox_pool, "messages": self._action_pools[0]}
        for key in (*keys, "blind_prev") if self.blind_prob else keys:
            st[key] = _filled_worlds(st[key], mask, rows, pools.get(key))
        self._fresh = (
            True if self._fresh is True else (mask if self._fresh is None else self._fresh | mask)
        )

    @property
    def steps(self) -> torch.Tensor:
        """Each world's step clock ``(num_envs,)`` int64: steps since its last reset."""
        return self._state["steps"]

    def _observe(self) -> TensorDict:
        # Written in place into one buffer (_obs_buffer): the observation is the step's
        # biggest output.
        st, lay = self._state, self.obs_layout
        obs = self._obs_buffer()
        self._write_views(st["world"][:, None], obs[..., lay["view"]].unsqueeze(2))
        if self.blind_prob:  # hidden views are zeros, and the flag says so
            hide = st["blind"][..., None]
            obs[..., lay["view"]].masked_fill_(hide, 0)
            obs[..., lay["blind"]].copy_(hide).mul_(255 if self.obs_dtype == "uint8" else 1)
        fresh, self._fresh = self._fresh, None  # worlds at step 0 since the last observation
        if self.num_candidates:
            cand = obs[..., lay["candidates"]].unflatten(-1, (self.num_candidates, -1))
            if fresh is True:  # every world at step 0: nothing seen yet
                cand.zero_()
            else:  # (B, K) worlds -> (B, n, K, D) views, written in memory order
                self._write_views(st["candidates"], cand)
                if fresh is not None:  # the worlds restarted by reset(env_index=...)
                    _fill_worlds_(cand, fresh, _world_rows(fresh))
        heard = st["heard"]
        if heard.requires_grad:  # relaxed messages keep their graph: no in-place writes
            flags = st["delivered"].unsqueeze(-1).to(heard.dtype)
            slots = torch.cat([flags, heard], -1).flatten(2)
            hs = lay["heard"]
            obs = torch.cat([obs[..., : hs.start], slots, obs[..., hs.stop :]], -1)
        else:
            slots = obs[..., lay["heard"]].unflatten(-1, (self.max_in, 1 + self.message_bits))
            slots[..., 0].copy_(st["delivered"])
            if self.obs_dtype == "uint8":  # flags as 0/255; heard is kept as bytes already
                slots[..., 0].mul_(255)
            slots[..., 1:].copy_(heard)
        return {a: obs[:, i] for i, a in enumerate(self.possible_agents)}

    def _obs_buffer(self) -> torch.Tensor:
        """The tensor this step's observations are written into: with ``reuse_obs`` the one
        buffer; else a fresh one, or (large batches on the CPU, as node_graph_v0 does) one of
        the last few observation tensors that nothing outside the game references any more
        (no view, no numpy array): a fresh tensor of tens of MiB costs a page fault per 4 KiB
        every step, and a tensor the caller still holds is never written."""
        shape = (self.num_envs, self.n_agents, self._obs_space.shape[0])
        if self.reuse_obs:
            if self._obs_buf is None:
                self._obs_buf = torch.empty(shape, dtype=self._obs_torch_dtype, device=self.device)
            return self._obs_buf
        return self._obs_pool.next()

    _GATHER_WORLDS = 1024  # worlds whose images one scratch gather holds

    def _write_views(self, index: torch.Tensor, out: torch.Tensor) -> None:
        """Every agent's view of worlds ``index`` ``(B, k)`` into ``out`` ``(B, n, k, D)``.

        Masked pixels become ``1 - x``, computed as ``m + x * (1 - 2m)`` (exact in floating
        point for m in {0, 1}, the same bits as :meth:`views`). The images are gathered
        block by block of worlds into one scratch buffer kept between steps, so that no
        step allocates memory that grows with ``num_envs``.
        """
        B, k = index.shape
        G = min(B, self._GATHER_WORLDS)
        u8 = self.obs_dtype == "uint8"
        images = self._images_u8 if u8 else self.images
        if self._scratch is None or self._scratch.shape[0] < G * k:
            self._scratch = torch.empty(
                G * k, self.num_features, dtype=images.dtype, device=self.device
            )
        mask_f, sign = self._mask_f[:, None], self._mask_sign[:, None]
        for start in range(0, B, G):
            rows = index[start : start + G]
            x = torch.index_select(images, 0, rows.reshape(-1), out=self._scratch[: rows.numel()])
            x = x.view(rows.shape[0], 1, k, self.num_features)
            if u8:  # 255 - v is v XOR 0xFF: the masks are 0 or 255
                torch.bitwise_xor(x, self._mask_u8[:, None], out=out[start : start + G])
            else:
                torch.addcmul(mask_f, x, sign, out=out[start : start + G])

    def _heard_state(self, inbox: torch.Tensor) -> torch.Tensor:
        """What the state keeps of this step's inbox for the next observation: the inbox, or
        with uint8 observations its bytes, ``round(255 v)`` (a quarter of the memory; the
        float inbox is then scratch that the next step recycles)."""
        if self.obs_dtype != "uint8":
            return inbox
        return torch.mul(inbox, 255.0).round_().to(torch.uint8)

    def _inbox_out(self, messages: torch.Tensor) -> torch.Tensor | None:
        """A recycled tensor for this step's inbox, or None (small batch, relaxed messages)."""
        pool = self._inbox_pool
        if pool.recycles and messages.dtype == torch.float32 and not messages.requires_grad:
            return pool.next()
        return None

    def memory_per_world(self) -> int:
        """Resident bytes of the game's state and buffers per world: the episode state, the
        pre-drawn randomness, the scratch buffers and one step's observation (fresh or
        reused; every recycled one the game keeps), divided by ``num_envs``. Shared data (the
        images, the masks) is not counted: it does not grow with ``num_envs``. Call it after
        ``reset`` and a ``step``."""
        tensors = list(self._state.values()) + list(getattr(self, "_draws", ()))
        tensors += [] if self._scratch is None else [self._scratch]
        total = sum(t.element_size() * t.nelement() for t in tensors)
        obs_dim = self._obs_space.shape[0]
        kept = max(1, len(self._obs_pool.kept))  # observation buffers
        total += kept * self._obs_pool.element_size * self.num_envs * self.n_agents * obs_dim
        st = self._state
        total += self._inbox_pool.spare_bytes(st.get("heard"))  # recycled inboxes
        total += sum(pool.spare_bytes(st.get("messages")) for pool in self._action_pools)
        return -(-total // self.num_envs)

    def _infos(self) -> dict[str, dict]:
        st = self._state
        info = {
            "label": st["label"],
            "world_index": st["world"],
            "target": st["target"],
            "prev_label": st["prev_label"],
        }
        return {a: info for a in self.possible_agents}

    def state(self) -> torch.Tensor:
        """The hidden world ``x_t`` of every env ``(num_envs, D)`` (for oracles and renders)."""
        return self.images[self._state["world"]]

    # -- step ------------------------------------------------------------------------------
    def _stack_actions(self, actions: TensorDict) -> torch.Tensor:
        agents = self.possible_agents
        check_action_keys(actions, agents, agents)
        if not self.validate:
            act = torch.stack([torch.as_tensor(actions[a], device=self.device) for a in agents], 1)
        else:  # bits or relaxed messages in [0, 1]
            act = batched_actions(
                agents, self._act_space, actions, self.num_envs, self.device, relaxed=True
            )
        if act.requires_grad and self.obs_dtype == "uint8":
            raise ValueError(
                "relaxed messages that require grad need obs_dtype='float32': "
                "obs_dtype='uint8' observations carry no gradient to the speaker"
            )
        return act

    def _split_actions(self, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(messages, choice)`` as float tensors. Large CPU batches of bits (or float32)
        are copied into two recycled contiguous buffers: no fresh memory faulted in every step,
        and the channel gathers contiguous messages."""
        L, pools = self.message_bits, self._action_pools
        if pools[0].recycles and not act.requires_grad and act.dtype != torch.float64:
            messages, choice = pools[0].next(), pools[1].next()
            messages.copy_(act[..., :L])
            choice.copy_(act[..., L:])
            return messages, choice
        act = act if act.is_floating_point() else act.float()
        return act[..., :L], act[..., L:]

    def step(self, actions: TensorDict) -> StepResult:
        """Advance every world: ``actions[agent]`` ``(num_envs, message_bits + K)`` (bits, or
        relaxed messages in [0, 1]) -> ``(obs, rewards, terminations, truncations, infos)``."""
        st = self._state
        if not st:
            raise ValueError("step() called before reset()")
        messages, choice = self._split_actions(self._stack_actions(actions))
        delivery = self._channel.route(
            messages,
            grad_mask=self.grad_mask,
            generator=self._gen,
            tag="message",
            out=self._inbox_out(messages),
        )
        heard_before, delivered = self._scored(st, st["delivered"], delivery.delivered)
        rewards = self._block_rewards(
            choice, heard_before, st["target"], messages, delivery.inbox, delivered
        )

        # Advance the world; this step's messages are heard in the next observation.
        st["steps"] = st["steps"] + 1
        st["heard"], st["delivered"] = self._heard_state(delivery.inbox), delivery.delivered
        st["messages"] = messages
        world, cands, target = self._next_draw()
        if self.num_candidates:  # the world just described hides among K - 1 distractors
            st["candidates"] = cands.scatter(1, target[:, None], st["world"][:, None])
            st["target"] = target
        st["prev_label"] = st["label"]
        st["world"], st["label"] = world, self.labels.index_select(0, world)
        if self.blind_prob:
            st["blind_prev"], st["blind"] = st["blind"], self._blind_draw()

        truncated = st["steps"] >= self.max_cycles
        terminated = torch.zeros_like(truncated)
        agents = self.possible_agents
        return (
            self._observe(),
            {a: rewards[:, i] for i, a in enumerate(agents)},
            dict.fromkeys(agents, terminated),
            dict.fromkeys(agents, truncated),
            self._infos(),
        )

    _REWARD_WORLDS = 8192  # worlds whose rewards are computed together

    def _block_rewards(self, *inputs: torch.Tensor) -> torch.Tensor:
        """:meth:`_rewards` of the batch, block by block of worlds (the same bits: every rule
        is per world). A block's intermediates stay small, so a large batch neither leaves the
        caches nor page-faults fresh memory for them every step."""
        B, G = self.num_envs, self._REWARD_WORLDS
        if B <= G:
            return self._rewards(_TORCH, *inputs)
        blocks = [
            self._rewards(_TORCH, *(x[start : start + G] for x in inputs))
            for start in range(0, B, G)
        ]
        return torch.cat(blocks)

    # -- one world in numpy: the PettingZoo faces' fast path ------------------------------
    one_world: ClassVar[bool] = True
    """This game has :meth:`reset_one` / :meth:`step_one`, which the PettingZoo faces use."""

    def reset_one(self, seed: int | None = None) -> tuple[dict, dict]:
        """:meth:`reset` of a one-world game in numpy: the same episode as the batched face
        with ``num_envs=1`` and the same seed, bit for bit (same draws from the same
        generators, the same rules: :meth:`_discrimination`, :meth:`_likelihood`).

        Returns ``obs[agent]`` float32 arrays and ``infos[agent]`` dicts of Python ints.
        The state lives in numpy arrays that ``self._state`` views as tensors (``state()``,
        ``render()`` and ``steps`` read it as on the batched face).
        """
        if self.num_envs != 1 or self.device.type != "cpu":
            raise ValueError(
                f"reset_one() is the one-world numpy path: it needs num_envs=1 on the cpu, "
                f"got num_envs={self.num_envs} on {self.device}"
            )
        if seed is not None or not self._state:
            self._gen, self._restart_streams = self._seed_streams(seed)
            self._restarts = torch.zeros(1, dtype=torch.long)
            self._seed_blind()
        if not hasattr(self, "_np_images"):
            self._np_images = self.images.numpy()
            self._np_labels = self.labels.numpy()
            self._np_mask_f, self._np_sign = self._mask_f.numpy(), self._mask_sign.numpy()
            if self.obs_dtype == "uint8":
                self._np_images_u8 = self._images_u8.numpy()
                self._np_mask_u8 = self._mask_u8.numpy()
            # every agent's view of every image, when small: one row gather per view
            size = self._obs_space.dtype.itemsize
            table_bytes = size * len(self._np_images) * self.n_agents * self.num_features
            self._np_views = self._np_view_table() if table_bytes <= _VIEW_TABLE_BYTES else None
            self._np_gather = self._channel.senders.clamp(min=0).numpy()
            self._np_slot_valid = self._channel.slot_valid.numpy()
        n, S, L, K = self.n_agents, self.max_in, self.message_bits, self.num_candidates
        self._np_act = np.zeros((1, n, L + K), np.float32)
        self._refill_draws()
        self._np_draws = tuple(d.numpy() for d in self._draws)
        world = self._np_draws[0][0]
        self._draw_i = 1
        np_state = {
            "world": world.copy(),
            "label": self._np_labels[world],
            "prev_label": np.full(1, -1, np.int64),
            "candidates": np.zeros((1, K), np.int64),
            "target": np.zeros(1, np.int64),
            "heard": np.zeros((1, n, S, L), np.float32),
            "delivered": np.zeros((1, n, S), np.bool_),
            "messages": np.zeros((1, n, L), np.float32),
            "steps": np.zeros(1, np.int64),
        }
        if self.blind_prob:
            np_state["blind"] = self._blind_draw().numpy()
            np_state["blind_prev"] = np.zeros((1, n), np.bool_)
        self._np_state = np_state
        self._state = {k: torch.from_numpy(v) for k, v in np_state.items()}
        return self._observe_one(), self._infos_one()

    def step_one(self, actions: dict[str, np.ndarray]) -> tuple[dict, dict, dict, dict, dict]:
        """:meth:`step` of a one-world game in numpy, for actions already checked against the
        action space (the PettingZoo faces check them): ``(obs, rewards, terminations,
        truncations, infos)`` with Python floats and bools."""
        st = self._np_state
        agents = self.possible_agents
        act = self._np_act  # (1, n, L+K) float32, written here, read (copied) below
        for i, a in enumerate(agents):
            act[0, i] = actions[a]
        L = self.message_bits
        messages, choice = act[..., :L], act[..., L:]
        inbox, delivered = self._route_one(messages)
        heard_before, scored = self._scored(st, st["delivered"], delivered, numpy=True)
        rewards = self._rewards(_NUMPY, choice, heard_before, st["target"], messages, inbox, scored)

        st["steps"] += 1
        st["heard"][...], st["delivered"][...], st["messages"][...] = inbox, delivered, messages
        if self._draw_i == self._draw_chunk:
            self._refill_draws()
            self._np_draws = tuple(d.numpy() for d in self._draws)
        i = self._draw_i
        self._draw_i += 1
        world = self._np_draws[0][i]
        if self.num_candidates:
            target = self._np_draws[2][i]
            cands = self._np_draws[1][i].copy()
            cands[0, target[0]] = st["world"][0]
            st["candidates"][...], st["target"][...] = cands, target
        st["prev_label"][...] = st["label"]
        st["world"][...] = world
        st["label"][...] = self._np_labels[world]
        if self.blind_prob:
            st["blind_prev"][...] = st["blind"]
            st["blind"][...] = self._blind_draw().numpy()

        truncated = bool(st["steps"][0] >= self.max_cycles)
        values = rewards[0].tolist()
        return (
            self._observe_one(),
            dict(zip(agents, values, strict=True)),
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, truncated),
            self._infos_one(),
        )

    def _route_one(self, messages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``Channel.route`` of one world's bits in numpy: the same draws, in the same order,
        from the same generator (drops, then flips), and the same traffic counters."""
        ch = self._channel
        inbox = messages[:, self._np_gather]  # (1, n, S, L)
        delivered = self._np_slot_valid[None]
        if ch.drop_prob > 0:
            keep = torch.rand(delivered.shape, generator=self._gen) >= ch.drop_prob
            delivered = delivered & keep.numpy()
        if ch.flip_prob > 0:
            flips = (torch.rand(inbox.shape, generator=self._gen) < ch.flip_prob).numpy()
            flips = flips.astype(np.float32)
            inbox = inbox + flips * (1 - 2 * inbox)
        if ch.drop_prob > 0 or not self._np_slot_valid.all():
            inbox = inbox * delivered[..., None].astype(np.float32)
        self._count_traffic(delivered)
        return inbox, delivered

    def _count_traffic(self, delivered: np.ndarray) -> None:
        """The channel's counters for one routed world (what ``Channel.route`` counts)."""
        pending = getattr(self, "_np_traffic", None)
        if pending is None:
            self._np_traffic = pending = np.zeros((2, self.n_agents), np.int64)
            self._np_routed = 0
        self._np_routed += 1  # one more message put on every edge
        if self._channel.drop_prob > 0:
            pending[1] += delivered[0].sum(-1)  # messages that arrived, per receiver
        if self._np_routed >= 1024:
            self._flush_traffic()

    def _flush_traffic(self) -> None:
        pending = getattr(self, "_np_traffic", None)
        if pending is None or not self._np_routed:
            return
        ch, L = self._channel, self.message_bits
        steps, self._np_routed = self._np_routed, 0
        sent = ch.out_degree.cpu().numpy() * steps
        arrived = pending[1] if ch.drop_prob > 0 else ch.in_degree.cpu().numpy() * steps
        ch.account("message", sent * L, arrived * L, sent)
        if ch.drop_prob > 0:  # lost messages, per receiver
            lost = ch.in_degree.cpu().numpy() * steps - arrived
            ch._counters("message")["messages_dropped"] += torch.from_numpy(lost)
        pending[...] = 0

    def _np_view_table(self, index: Any = slice(None)) -> np.ndarray:
        """Every agent's view ``(..., n, D)`` of images ``index`` in numpy, in the observation's
        dtype (the batched face's arithmetic: ``m + x * (1 - 2m)``, or 8-bit XOR masks)."""
        if self.obs_dtype == "uint8":
            return np.bitwise_xor(self._np_images_u8[index][..., None, :], self._np_mask_u8)
        return np.add(self._np_mask_f, self._np_images[index][..., None, :] * self._np_sign)

    def _observe_one(self) -> dict[str, np.ndarray]:
        st, lay, n = self._np_state, self.obs_layout, self.n_agents
        obs = np.empty((n, self._obs_space.shape[0]), self._obs_space.dtype)
        views = self._np_views
        world = st["world"][0]
        obs[:, lay["view"]] = views[world] if views is not None else self._np_view_table(world)
        if self.blind_prob:
            hide = st["blind"][0][:, None]
            obs[:, lay["view"]] *= ~hide
            obs[:, lay["blind"]] = hide * (255 if self.obs_dtype == "uint8" else 1)
        K, S, L = self.num_candidates, self.max_in, self.message_bits
        if K:
            cand = obs[:, lay["candidates"]].reshape(n, K, -1)
            if st["steps"][0] == 0:
                cand[...] = 0
            else:  # (K, n, D) -> (n, K, D)
                idx = st["candidates"][0]
                table = views[idx] if views is not None else self._np_view_table(idx)
                cand[...] = table.transpose(1, 0, 2)
        slots = obs[:, lay["heard"]].reshape(n, S, 1 + L)
        if self.obs_dtype == "uint8":  # flags and bits as 0/255 (the PettingZoo faces: bits)
            slots[..., 0] = st["delivered"][0] * np.uint8(255)
            slots[..., 1:] = np.rint(st["heard"][0] * np.float32(255))
        else:
            slots[..., 0] = st["delivered"][0]
            slots[..., 1:] = st["heard"][0]
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def _infos_one(self) -> dict[str, dict]:
        st = self._np_state
        info = {
            "label": int(st["label"][0]),
            "world_index": int(st["world"][0]),
            "target": int(st["target"][0]),
            "prev_label": int(st["prev_label"][0]),
        }
        return {a: dict(info) for a in self.possible_agents}

    # -- the rules, once for torch tensors and numpy arrays --------------------------------
    # Both faces compute the rewards with this one method (``ops`` is _TORCH or _NUMPY).
    # Every sum over slots or senders is an explicit left-to-right chain of float32 additions,
    # so that numpy and torch give the same bits (a matmul or a library reduction may add in
    # another order).
    def _seed_blind(self) -> None:
        """The stream of the blind draws, derived from the game's seed (no other draw moves)."""
        if self.blind_prob:
            seq = np.random.SeedSequence([self._gen.initial_seed(), 2])
            self._blind_gen = self._seed_generator(int(seq.generate_state(1, np.uint64)[0] >> 1))

    def _blind_draw(self) -> torch.Tensor:
        """Whose view the next observation hides, ``(num_envs, n_agents)`` bool."""
        shape = (self.num_envs, self.n_agents)
        gen = self._blind_gen
        return torch.rand(shape, generator=gen, device=gen.device) < self.blind_prob

    def _scored(self, st, heard_before, delivered, numpy=False):
        """What the rewards score with blind steps (``blind_prob``; the arguments as they are
        without): discrimination only for a listener blind at ``t - 1``, on the slots of
        speakers who were not (only their messages say which world it was, and it could not
        have seen it); likelihood only on edges where neither end is blind now (a message
        spoken without a view predicts nothing). Padding slots are never delivered."""
        if not self.blind_prob:
            return heard_before, delivered
        senders = self._np_gather if numpy else self._channel.senders.clamp(min=0)
        before, now = st["blind_prev"], st["blind"]
        heard_before = heard_before & before[:, :, None] & ~before[:, senders]
        delivered = delivered & ~now[:, :, None] & ~now[:, senders]
        return heard_before, delivered

    def _rewards(self, ops, choice, heard_before, target, messages, inbox, delivered):
        """``(B, n)`` rewards of one step (the module docstring's rules).

        ``choice`` ``(B, n, K)`` and ``messages`` ``(B, n, L)``: this step's actions;
        ``heard_before`` ``(B, n, max_in)``: the slots that held a message at ``t - 1`` (all
        False at a world's step 0, which therefore earns no discrimination reward);
        ``target`` ``(B,)``: where ``x_{t-1}`` is among the candidates; ``inbox``
        ``(B, n, max_in, L)`` / ``delivered``: this step's messages as they arrived.
        """
        K, L = self.num_candidates, self.message_bits
        feedback = self.level in ("feedback", "both")
        likelihood = self.level != "none" and bool(self.likelihood_weight)
        to_senders = []  # per-slot values credited to each slot's sender
        if K:
            # every listener's right answer, (B, n, K): a same-shape compare, not a broadcast
            onehot = ops.take_rows(self._eye_np if ops is _NUMPY else self._eye, target)
            correct = ops.all_last(choice == onehot)  # (B, n)
            g = ops.f32(correct & ops.any_last(heard_before))
            reached = ops.f32(heard_before)  # (B, recv, slot)
            to_senders += [reached * g[..., None], reached]
        # every slot holds a message that always arrives: the counts are the graph's own
        static = self._static_counts_np if ops is _NUMPY else self._static_counts
        if likelihood:
            agree = 1.0 - ops.abs_(messages[:, :, None] - inbox).sum(-1) / L
            if static is not None:
                listener = _sum_last(agree) / static[0]
            else:
                dl = ops.f32(delivered)
                agree = agree * dl
                listener = _sum_last(agree) / ops.at_least_one(_sum_last(dl))
            if feedback:
                to_senders += [agree] if static is not None else [agree, dl]
        if to_senders:  # (terms, B, n): summed into each slot's sender
            sums = self._to_senders(ops, ops.stack(to_senders))
        means = []  # each sender's mean over the listeners it reached
        if K:
            means.append(sums[0] / ops.at_least_one(sums[1]))
        if likelihood and feedback:
            t = 2 if K else 0
            count = static[1] if static is not None else ops.at_least_one(sums[t + 1])
            means.append(sums[t] / count)
        # the listener's own success, then its speakers' mean success; the listener's mean
        # agreement, then (feedback) its listeners' mean agreement flowing back to the speaker
        terms = []
        if K:
            terms += [self.info_weight * g, self.info_weight * means[0]]
        if likelihood:
            terms.append(self.likelihood_weight * listener)
            if feedback:
                terms.append(self.likelihood_weight * means[-1])
        if not terms:
            return ops.zeros(choice.shape[:2], choice)
        rewards = terms[0]
        for term in terms[1:]:
            rewards = rewards + term
        return rewards

    def _to_senders(self, ops, per_slot):
        """Sum receiver-slot values ``(T, B, n, max_in)`` into their senders ``(T, B, n)``."""
        idx, valid = self._out_slots_np if ops is _NUMPY else self._out_slots
        flat = per_slot.reshape(*per_slot.shape[:2], -1)
        return _sum_last(ops.take_last(flat, idx) * valid)

    def _build_out_slots(self) -> None:
        """``(n, max_out)`` flat slot indices ``r * max_in + j`` of each sender's out-edges."""
        senders = self._channel.senders.cpu()
        n, S = senders.shape
        out = [
            [r * S + j for r in range(n) for j in range(S) if senders[r, j] == s] for s in range(n)
        ]
        width = max(1, max(map(len, out)))
        idx = np.zeros((n, width), np.int64)
        valid = np.zeros((n, width), np.float32)
        for s, slots in enumerate(out):
            idx[s, : len(slots)], valid[s, : len(slots)] = slots, 1.0
        self._out_slots_np = (idx, valid)
        K = max(self.num_candidates, 1)
        # row t: the one-hot of candidate t for each of the n listeners, (K, n, K)
        self._eye_np = np.ascontiguousarray(
            np.broadcast_to(np.eye(K, dtype=np.float32)[:, None], (K, self.n_agents, K))
        )
        self._eye = torch.from_numpy(self._eye_np).to(self.device)
        # With no drops and no padding slots, every count of delivered messages is the
        # graph's own: listeners' in-degrees and speakers' out-degrees, each at least 1.
        ch = self._channel
        self._static_counts_np = self._static_counts = None
        if ch.drop_prob == 0 and bool(ch.slot_valid.all()) and not self.blind_prob:
            listen = np.maximum(ch.in_degree.cpu().numpy(), 1).astype(np.float32)
            speak = np.maximum(ch.out_degree.cpu().numpy(), 1).astype(np.float32)
            self._static_counts_np = (listen, speak)
            self._static_counts = tuple(
                torch.from_numpy(c).to(self.device) for c in (listen, speak)
            )
        self._out_slots = (
            torch.from_numpy(idx).to(self.device),
            torch.from_numpy(valid).to(self.device),
        )

    # -- render ----------------------------------------------------------------------------
    def render(self, env_index: int = 0) -> np.ndarray | str | None:
        """``rgb_array``: the current world, each agent's view of it, and below them each
        agent's last message as bits, which it spoke one step earlier about the previous world
        (all zeros at step 0, before anyone spoke); ``ansi``: those messages as text;
        ``human``: prints the ``ansi`` text."""
        env_index = self._check_render_index(env_index)  # refused with or without a mode
        if self.render_mode is None or not self._state:
            return None
        if self.render_mode in ("ansi", "human"):
            step = int(self._state["steps"][env_index])
            lines = [f"{self.metadata['name']} step {step}"]
            for i, agent in enumerate(self.possible_agents):
                bits = self._state["messages"][env_index, i].round().int().tolist()
                lines.append(f"  {agent} said {''.join(map(str, bits))}")
            text = "\n".join(lines)
            if self.render_mode == "human":
                print(text)
                return None
            return text
        from commenv.render import bits_image, image_row

        st = self._state
        world = st["world"][env_index]
        panels = [self.images[world].cpu()] + list(self.views(world).cpu())
        top = image_row(panels, self.image_shape)
        msgs = bits_image(st["messages"][env_index].detach().cpu(), width=top.shape[1])
        return np.concatenate([top, msgs], 0)
