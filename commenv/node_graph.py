"""node_graph_v0 — a graph of computing nodes that learn by exchanging outputs (thesis, ch. 2).

| | |
|---|---|
| Import | ``env = commenv.node_graph_v0()`` |
| Agents | ``node_0`` ... ``node_{N-1}`` (``n_nodes``, default 10) |
| Parallel API | native (AEC by ``commenv.node_graph_v0.env()``) |
| Action space | ``MultiBinary(K)`` (labels) or ``Dict(broadcast=MultiBinary(K), payload=Box)`` |
| Observation space | ``Box((M*D + M*C + M*P + 2,), float32)``, laid out in ``env.obs_layout`` |
| Batched face | ``commenv.node_graph_v0.batched(num_envs, device)``, ``reset(env_index=...)`` |

``M`` = ``batch_size``, ``D`` = pixels per image, ``C`` = classes, ``K`` = the largest
out-degree of the graph, ``P`` = payload width (``C`` for logits, ``feature_dim`` for
features, 0 in the observation for labels; ``feature_dim`` for ``"codes"``, ``2 * feature_dim``
for ``"gaussian_codes"``).

**World.** The training split of ``dataset`` is cut into ``n_nodes`` exclusive partitions
(``partition="iid"``: a random, class-independent split into near-equal parts, as in the
thesis; ``"dirichlet"``: per-class proportions drawn from Dirichlet(``dirichlet_alpha``), the
usual non-IID split), fixed by ``partition_seed`` for the life of the env. Nodes are joined by a
fixed directed graph: ``graph="ring"`` with the ``k`` closest neighbours (default
``k = n_nodes - 1``: fully connected) or any user graph (``(N, N)`` bool matrix
``[sender, receiver]`` or list of edges). Each node owns a bounded inbox of
``inbox_capacity`` received minibatches, kept as a tensor ring buffer of *sample indices* and
payloads (never copies of images).

**Step.** Every step all nodes act at once (steps are parallel wall-time steps):

1. Node ``i`` observes its current minibatch and trains on it (the agent's business).
2. Its action says to which out-neighbours this minibatch is broadcast (one bit per
   out-neighbour, in increasing node order: ``env.out_neighbours(agent)``; bits beyond a node's
   out-degree are ignored) and, for ``content="logits"``/``"features"``, the payload that goes
   with it (``(M, P)``: its logits — the receiver applies the temperature — or its top-level
   features). With ``content="labels"`` the payload is the labels the node holds for the
   minibatch (its own true labels, or the labels it received), so the action is just the bits.
   Received data can be re-broadcast: the current minibatch may itself come from the inbox.
3. The channel (``commenv.channel.Channel``) delivers images (as indices) and payloads to the
   chosen neighbours' inboxes. A full inbox applies ``overflow``: ``"drop_oldest"`` (the new
   minibatch overwrites the oldest one) or ``"drop_newest"`` (the arriving minibatch is lost);
   either way ``infos[agent]["dropped"]`` counts the minibatches lost at that node.
   Minibatches that arrive at one inbox in the same step enter it in increasing sender index,
   so when more arrive than it has room for, ``"drop_newest"`` keeps the lowest-index senders'
   and ``"drop_oldest"`` the highest-index senders'. With the benchmarks' sparse broadcasts
   (about 0.75 per node and step into inboxes of 16) this rarely happens; a dense sender
   policy with a small ``inbox_capacity`` favours senders by index.
4. Each node draws its next minibatch: with probability ``consumption_prob`` the oldest one in
   its inbox (when the inbox is not empty), else ``batch_size`` samples drawn uniformly (with
   replacement) from its own partition.

A node therefore never sees a sample of another node's partition unless some node broadcast it
to it (``tests/test_node_graph.py`` proves it).

Routing is sparse: a step lists only the messages sent (``commenv.channel.Channel.send``, in
slot order: world, receiver, sender) and reads and writes only the minibatches the inboxes
accept, so its cost follows the broadcasts made, not the graph's edges times the payload; bits
are billed per message exactly as :meth:`commenv.channel.Channel.route` bills them.

**Batched face and per-world reset.** ``game = commenv.node_graph_v0.batched(num_envs, device)``
steps ``num_envs`` independent worlds at once (``step`` with per-agent dicts, or
``step_tensors(bits, payload)`` on stacked tensors). Each world has its own step clock and is
truncated at its own ``max_cycles``. ``game.reset(env_index=i)`` (an int, indices, or a
``(num_envs,)`` bool mask) restarts only those worlds: their clocks, inboxes and per-node counters
go back to 0 and they draw a fresh first minibatch, while every other world is left bit for bit as
it was and its episode goes on exactly as it would have without the reset. A restarted world's
first minibatch comes from its own restart streams (``commenv.core.WorldStreams``, keyed by the
seed: world ``w``'s ``r``-th restart since the last seeded reset draws at ``(w, r)``), so it
does not depend on which other worlds restarted before or with it. ``reset(seed=s)`` reseeds and
restarts every world; a seed together with ``env_index`` raises (a partial reset continues the
streams); same seed and same sequence of resets, same episodes
(``tests/test_node_graph_batched.py``).
``env.bandwidth()`` counts since the last full reset. The PettingZoo faces (one world) give the same
episodes as the batched face with ``num_envs=1`` for the same seed, bit for bit; they check and
convert every node's action at once, and hand anything unusual to the generic per-agent check, so
errors name the same agent as before.

**Label-free contents** (unsupervised nodes, thesis 2.2.4, table 2.3). ``content="codes"``:
the payload is the sender's feature vector per sample (``(M, feature_dim)``, e.g. a BiGAN
encoder's); ``content="gaussian_codes"``: its Gaussian code, mean then log-variance
(``(M, 2 * feature_dim)``, a VAE encoder's). Labels never leave a node and are not even in its
own observation (the ``labels`` block is all zeros), so no label reaches an unsupervised
agent's training step (``tests/test_unsupervised.py`` proves it). An integer payload (it looks
like labels), a ``"labels"`` entry in the action, a wrong width or NaN/inf raise ``ValueError``
naming the node, and nothing is enqueued. Gaussian codes are quantized (``float_bits < 32``) and
billed as two vectors per sample, mean and log-variance, each with its own range.

**Observation** of node ``i`` (flat; ``env.split_obs(obs)`` reshapes it):

1. ``images``: the current minibatch ``(M, C_img, H, W)`` in [0, 1];
2. ``labels``: ``(M, C)`` one-hot targets: the node's own true labels for local data, the
   received labels for inbox data when ``content="labels"``, zeros otherwise;
3. ``payload``: ``(M, P)`` the received logits/features for inbox data (zeros for local data;
   absent when ``content="labels"``);
4. ``from_inbox``: 1 when the minibatch came from the inbox;
5. ``inbox_fill``: inbox occupancy / ``inbox_capacity``.

**Rewards.** The game scores nothing by itself: learning happens in the agents and evaluation
is :mod:`commenv.evaluation`. ``r_i = -bit_cost * (bits node i sent this step)`` (0 by default),
so an RL agent can be asked to pay for bandwidth.

**Bandwidth** is counted exactly in bits per edge a message is put on: images cost
``M * D * image_bits`` per minibatch, payloads ``M * ceil(log2 C)`` bits for labels and
``M * P * float_bits`` for logits/features (plus 64 bits per sample below 16 bits; see
``float_bits`` under Arguments). Totals are in ``env.bandwidth()`` and per node (cumulative) in
``infos[agent]["bits_images"]`` / ``["bits_payload"]``.

**Infos** (ground truth for benchmarks and tests, never in observations): ``indices`` (the
training-set indices of the current minibatch), ``true_labels``, ``sender`` (-1 for local
data), ``inbox_count``, ``dropped``, ``bits_images``, ``bits_payload``.

**Arguments** (``commenv.node_graph_v0(**kwargs)``; ``.batched(num_envs, device, **kwargs)``
for the tensor face). Each is checked at construction: a wrong type or a value out of range
raises ``ValueError`` naming the argument (``docs/bad_input.md``).

- ``n_nodes=10``: number of nodes, an integer >= 1; with 1 there is no channel (the single
  broadcast bit is ignored): the thesis' single-node baseline.
- ``graph="ring"``: the directed graph: ``"ring"``, ``"one_way"``, ``"two_way"``,
  ``"all_to_all"``, an ``(N, N)`` 0/1 matrix ``[sender, receiver]`` or a list of
  ``(sender, receiver)`` edges (``commenv.channel.make_adjacency``).
- ``k=None``: neighbours per node of ``graph="ring"`` (1 <= k <= n_nodes - 1; ``None`` is
  ``n_nodes - 1``, fully connected); must stay ``None`` with any other graph.
- ``content="labels"``: what travels with the images: ``"labels"``, ``"logits"`` or
  ``"features"``.
- ``dataset="digits"``: image dataset, one of ``commenv.DATASETS``.
- ``batch_size=32``: minibatch size ``M``, an integer >= 1.
- ``consumption_prob=0.5``: probability of drawing the next minibatch from a non-empty inbox, in
  [0, 1]; 0.5 is the thesis' choice (one local sample per sample consumed from the network).
- ``inbox_capacity=16``: minibatches an inbox holds, an integer >= 1.
- ``overflow="drop_oldest"``: what a full inbox does, ``"drop_oldest"`` or ``"drop_newest"``.
- ``feature_dim=64``: payload width ``P`` for ``content="features"``, an integer >= 1.
- ``partition="iid"``: how the training split is cut, ``"iid"`` or ``"dirichlet"``.
- ``dirichlet_alpha=0.5``: concentration of the Dirichlet partition, a number > 0.
- ``partition_seed=0``: seed of the partition (and of ``train_size``'s subset), an integer in
  [0, 2**63 - 1].
- ``train_size=None``: partition only a random ``train_size`` of the training samples (the
  rest belong to no node), an integer in [n_nodes, training samples], or ``None`` for all.
- ``image_bits=8``: bits per pixel on the wire, an integer in [1, 64] (8: the uint8 pixels).
- ``float_bits=32``: precision of logits/features on the wire: 32 or 64 (sent as is), 16 (IEEE
  half precision), or 1..15 (each sample's vector sent as ``2**float_bits`` levels between its
  min and max, plus those two as fp32, 64 bits per sample; ``commenv.channel.quantize``);
  below 32 it is also what arrives. Any other value (e.g. 33) raises.
- ``bit_cost=0.0``: reward per bit sent, ``r_i = -bit_cost * bits``, a finite number >= 0.
- ``max_cycles=5000``: steps per episode of each world (then truncated), an integer in
  [1, 2**62].
- ``data_seed=0``: seed of the dataset's train/val split, an integer in [0, 2**63 - 1].
- ``data_root=None``: directory of a file dataset; ``None`` searches the default locations, a
  directory that does not exist raises.
- ``render_mode=None``: ``None``, ``"human"``, ``"rgb_array"`` or ``"ansi"``.
- ``num_envs=1``: worlds of the batched face, an integer >= 1 (the PettingZoo faces use 1).
- ``device="cpu"``: torch device of the batched face; one this machine has (``"cuda"``
  without CUDA raises).
- ``validate=True``: check every batched action (``False`` skips the checks for speed), a bool.
- ``allow_large=False``: accept configurations whose observations and inboxes need more than
  ``commenv.core.MEMORY_LIMIT_BYTES`` (256 MiB); otherwise they raise with the size.

**Version history.** v0: first release; per-world reset, sparse routing and the vectorised
PettingZoo face came later with the same episodes for the same seed.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch

from commenv.channel import (
    GRAPHS,
    Channel,
    GraphSpec,
    Messages,
    check_channel_memory,
    check_float_bits,
    float_message_bits,
    make_adjacency,
    quantize,
)
from commenv.core import (
    MAX_CYCLES_LIMIT,
    BatchedEnv,
    BatchedParallelEnv,
    EnvFamily,
    ObservationPool,
    StepResult,
    TensorDict,
    batched_actions,
    check_action_keys,
    check_batch_values,
    check_choice,
    check_data_root,
    check_float,
    check_int,
    check_memory,
    check_partial_reset,
    check_probability,
    check_seed,
    describe,
    validate_action,
)
from commenv.datasets import DATASETS, load_dataset

CONTENTS: tuple[str, ...] = ("labels", "logits", "features", "codes", "gaussian_codes")
LABEL_FREE: tuple[str, ...] = ("codes", "gaussian_codes")
"""Unsupervised contents: no label ever leaves a node, and observations carry no labels."""
PARTITIONS: tuple[str, ...] = ("iid", "dirichlet")
OVERFLOWS: tuple[str, ...] = ("drop_oldest", "drop_newest")


def partition_indices(
    labels: torch.Tensor | np.ndarray,
    n_nodes: int,
    scheme: str = "iid",
    *,
    alpha: float = 0.5,
    seed: int = 0,
) -> list[np.ndarray]:
    """Cut ``range(len(labels))`` into ``n_nodes`` exclusive, non-empty partitions.

    ``"iid"``: a random permutation cut into near-equal parts, independent of the classes.
    ``"dirichlet"``: for each class, the share of each node is drawn from
    Dirichlet(``alpha``); smaller ``alpha`` is more skewed. Same seed, same partitions.
    """
    check_choice("partition", scheme, PARTITIONS)
    y = np.asarray(labels)
    n = len(y)
    if n < n_nodes:
        raise ValueError(f"{n} training samples cannot be split among n_nodes={n_nodes}")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), n_nodes)]
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"dirichlet_alpha must be > 0, got {alpha!r}")
    for _ in range(100):  # redraw until no node is left empty
        parts: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_nodes, alpha))) * len(idx)).astype(int)
            for node, chunk in enumerate(np.split(idx, cuts[:-1])):
                parts[node].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) > 0:
            return out
    raise ValueError(
        f"could not draw a Dirichlet({alpha}) partition leaving no node empty; "
        "use a larger dirichlet_alpha or fewer nodes"
    )


def _layout(sizes: dict[str, int]) -> dict[str, slice]:
    """Consecutive slices of the given sizes, in order."""
    ends = np.cumsum(list(sizes.values()))
    return {k: slice(int(e - n), int(e)) for (k, n), e in zip(sizes.items(), ends, strict=True)}


class NodeGraphGame(BatchedEnv):
    """Batched node_graph_v0 (see the module docstring for the rules)."""

    metadata: ClassVar[dict[str, Any]] = {
        "name": "node_graph_v0",
        "render_modes": ["human", "rgb_array", "ansi"],
        "is_parallelizable": True,
        "render_fps": 2,
    }

    def __init__(
        self,
        n_nodes: int = 10,
        graph: GraphSpec = "ring",
        k: int | None = None,
        content: str = "labels",
        dataset: str = "digits",
        batch_size: int = 32,
        consumption_prob: float = 0.5,
        inbox_capacity: int = 16,
        overflow: str = "drop_oldest",
        feature_dim: int = 64,
        partition: str = "iid",
        dirichlet_alpha: float = 0.5,
        partition_seed: int = 0,
        train_size: int | None = None,
        image_bits: int = 8,
        float_bits: int = 32,
        bit_cost: float = 0.0,
        max_cycles: int = 5000,
        data_seed: int = 0,
        data_root: str | None = None,
        render_mode: str | None = None,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        validate: bool = True,
        allow_large: bool = False,
    ) -> None:
        self._init_common(
            num_envs=num_envs, device=device, render_mode=render_mode, validate=validate
        )
        self._check_rules(
            n_nodes, content, batch_size, consumption_prob, inbox_capacity, overflow, feature_dim
        )
        self._check_bandwidth(image_bits, float_bits, bit_cost)
        self.max_cycles = check_int("max_cycles", max_cycles, high=MAX_CYCLES_LIMIT)
        check_channel_memory(self.n_nodes, None, allow_large, "n_nodes")  # before n_nodes names
        self.possible_agents = [f"node_{i}" for i in range(self.n_nodes)]
        data = self._build_data(dataset, data_seed, data_root)
        self._build_partitions(
            data, dataset, partition, dirichlet_alpha, partition_seed, train_size
        )
        self._build_graph(graph, k, allow_large)
        self._build_spaces(allow_large)
        self._gen, self._restart_streams = self._seed_streams(None)
        self._restarts = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._state: dict[str, torch.Tensor] = {}
        shape = (self.num_envs, self.n_nodes, self.obs_layout["inbox_fill"].stop)
        self._pool = ObservationPool(shape, self.device)
        reuse = self._pool.recycles
        M, D = self.batch_size, self.num_features
        # CPU gathers go through a scratch of about 1 MiB that stays in the cache
        self._gather_rows = max(1, self._GATHER_BYTES // (4 * M * D))
        on_cpu = self.device.type == "cpu"
        self._scratch = torch.empty(self._gather_rows * M, D) if on_cpu else None
        rows = self.num_envs * self.n_nodes * self.inbox_capacity  # the most an inbox takes
        self._rows = (
            (torch.empty(rows, M, dtype=self._index_dtype), torch.empty(rows, M * self.payload_dim))
            if reuse
            else None
        )

    # -- construction ----------------------------------------------------------------------
    def _check_rules(
        self,
        n_nodes: int,
        content: str,
        batch_size: int,
        consumption_prob: float,
        inbox_capacity: int,
        overflow: str,
        feature_dim: int,
    ) -> None:
        """The game's own arguments: nodes, what travels, minibatches and inboxes."""
        check_choice("content", content, CONTENTS)
        check_choice("overflow", overflow, OVERFLOWS)
        self.n_nodes = check_int("n_nodes", n_nodes)
        self.content, self.overflow = content, overflow
        self.batch_size = check_int("batch_size", batch_size)
        self.consumption_prob = check_probability("consumption_prob", consumption_prob)
        self.inbox_capacity = check_int("inbox_capacity", inbox_capacity)
        self.feature_dim = check_int("feature_dim", feature_dim)

    def _check_bandwidth(self, image_bits: int, float_bits: int, bit_cost: float) -> None:
        """What a message costs: bits per pixel and per float, and the reward per bit."""
        self.image_bits = check_int("image_bits", image_bits, 1, 64)
        self.float_bits = check_float_bits(float_bits)
        self.bit_cost = check_float("bit_cost", bit_cost, 0.0)

    def _build_data(self, dataset: str, data_seed: int, data_root: str | None) -> Any:
        """The training images on the device (the test split kept for evaluation)."""
        check_choice("dataset", dataset, DATASETS)
        data = load_dataset(
            dataset, root=check_data_root(data_root), seed=check_seed("data_seed", data_seed)
        )
        self.image_shape = data.image_shape
        self.num_classes = data.num_classes
        self.num_features = data.num_features
        self.images = data.train.flat().to(self.device)
        self.labels = data.train.y.to(self.device)
        self._index_dtype = torch.int32 if len(self.labels) < 2**31 else torch.long
        self.test_images, self.test_labels = data.test.x, data.test.y  # for evaluation
        return data

    def _build_partitions(
        self,
        data: Any,
        dataset: str,
        partition: str,
        dirichlet_alpha: float,
        partition_seed: int,
        train_size: int | None,
    ) -> None:
        """Each node's exclusive partition, as a padded ``(N, max_len)`` table (local
        sampling is one gather) and ``owner[j]``, the node holding training sample ``j``."""
        check_choice("partition", partition, PARTITIONS)
        alpha = check_float("dirichlet_alpha", dirichlet_alpha, 0.0, low_open=True)
        partition_seed = check_seed("partition_seed", partition_seed)
        pool = np.arange(len(self.labels))
        train_size = check_int("train_size", train_size, self.n_nodes, optional=True)
        if train_size is not None:
            if train_size > len(pool):
                raise ValueError(
                    f"train_size={train_size} exceeds the {len(pool)} training "
                    f"samples of {dataset!r}"
                )
            # Its own stream: the same partition_seed draws the same subset for any N.
            rng = np.random.default_rng([partition_seed, 1])
            pool = np.sort(rng.permutation(len(pool))[:train_size])
        cuts = partition_indices(
            data.train.y[pool], self.n_nodes, partition, alpha=alpha, seed=partition_seed
        )
        self.partitions = parts = [pool[p] for p in cuts]
        lengths = torch.tensor([len(p) for p in parts])
        table = torch.zeros(self.n_nodes, int(lengths.max()), dtype=torch.long)
        owner = torch.full((len(self.labels),), -1, dtype=torch.long)
        for i, p in enumerate(parts):  # construction only, not on the step path
            table[i, : len(p)] = torch.from_numpy(p)
            owner[torch.from_numpy(p)] = i
        self.partition_table, self.partition_len = table.to(self.device), lengths.to(self.device)
        self.owner = owner.to(self.device)
        """``owner[j]``: the node whose partition holds training sample ``j``."""

    def _build_graph(self, graph: GraphSpec, k: int | None, allow_large: bool) -> None:
        """The channel (none for a single node) and each node's out-neighbour table."""
        N = self.n_nodes
        if N == 1:  # no channel; a graph or k that would mean one is refused, not ignored
            if k is not None:
                raise ValueError(f"k must stay None with n_nodes=1 (no neighbours), got {k!r}")
            if isinstance(graph, str):
                check_choice("graph", graph, GRAPHS)
            elif len(graph) and (not hasattr(graph, "shape") or bool(torch.as_tensor(graph).any())):
                raise ValueError(
                    f"a single node has no edges: graph must be a name, [] or a zero 1x1 matrix, "
                    f"got {describe(graph)}"
                )
            self.adjacency = torch.zeros(1, 1, dtype=torch.bool)
            self.channel: Channel | None = None
        else:
            if isinstance(graph, str) and graph == "ring" and k is None:
                k = N - 1
            check_channel_memory(N, None, allow_large, "n_nodes")
            self.adjacency = make_adjacency(graph, N, k)
            check_channel_memory(N, self.adjacency, allow_large, "n_nodes")
            self.channel = Channel(self.adjacency, device=self.device)
        out_deg = self.adjacency.sum(1)
        self.max_out = K = max(1, int(out_deg.max()))
        order = torch.sort((~self.adjacency).to(torch.int8), dim=1, stable=True).indices[:, :K]
        valid = torch.arange(K)[None, :] < out_deg[:, None]
        # Padded bits scatter into a dummy column N that is cut off again.
        self._out_table = torch.where(valid, order, N).to(self.device)
        self._out_valid = valid.to(self.device)
        self._build_slots()

    def _build_slots(self) -> None:
        """Where each receiver slot's bit sits in the flat ``(n_nodes * max_out)`` bits, so a
        step lists its messages in slot order (world, receiver, sender) with one gather and one
        ``nonzero``: no sort, and no table as large as the graph's edges times the payload."""
        if self.channel is None:
            return
        N, K = self.n_nodes, self.max_out
        senders = self.channel.senders.cpu()  # (N, max_in), -1 padding
        bit_of = torch.zeros(N, N + 1, dtype=torch.long)  # bit_of[s, r]: k with out[s, k] = r
        bit_of.scatter_(1, self._out_table.cpu(), torch.arange(K).expand(N, K).contiguous())
        recv = torch.arange(N)[:, None].expand_as(senders)
        flat = senders.clamp(min=0) * K + bit_of[senders.clamp(min=0), recv]
        self._slot_bit = flat.reshape(-1).to(self.device)
        valid = self.channel.slot_valid.reshape(-1)
        self._slot_valid = None if self.channel._all_slots_valid else valid
        self._slot_sender = senders.clamp(min=0).reshape(-1).to(self.device)

    @property
    def out_valid(self) -> torch.Tensor:
        """``(n_nodes, max_out)`` bool: which broadcast bits of each node reach a neighbour
        (bits past a node's out-degree are ignored)."""
        return self._out_valid

    def _memory_bytes(self) -> int:
        """Bytes of one step's observations and of the inboxes, all nodes and worlds."""
        B, N, M = self.num_envs, self.n_nodes, self.batch_size
        obs = 4 * B * N * self.obs_layout["inbox_fill"].stop
        inbox = B * N * self.inbox_capacity * M * (4 + 4 * self.payload_dim)
        return obs + inbox

    def _build_spaces(self, allow_large: bool) -> None:
        """Payload width, bits per message, the observation layout and the spaces."""
        M, C, D, K = self.batch_size, self.num_classes, self.num_features, self.max_out
        P = {
            "labels": 1,
            "logits": C,
            "features": self.feature_dim,
            "codes": self.feature_dim,
            "gaussian_codes": 2 * self.feature_dim,  # [mean, log-variance] per sample
        }[self.content]
        self.payload_dim = P
        label_bits = max(1, math.ceil(math.log2(C)))
        self.bits_per_image_message = M * D * self.image_bits
        labels = self.content == "labels"
        self.bits_per_payload_message = (
            M * label_bits if labels else float_message_bits(M, P, self.float_bits)
        )
        if self.content == "gaussian_codes":  # mean and log-variance are quantized apart
            self.bits_per_payload_message = float_message_bits(2 * M, P // 2, self.float_bits)
        sizes = {
            "images": M * D,
            "labels": M * C,
            "payload": 0 if labels else M * P,
            "from_inbox": 1,
            "inbox_fill": 1,
        }
        self.obs_layout = _layout(sizes)
        start = self.obs_layout["inbox_fill"].stop
        check_memory(
            "observations and inboxes",
            self._memory_bytes(),
            allow_large,
            num_envs=self.num_envs,
            n_nodes=self.n_nodes,
            batch_size=M,
            inbox_capacity=self.inbox_capacity,
            feature_dim=self.feature_dim,
        )
        low = np.zeros(start, np.float32)
        high = np.ones(start, np.float32)
        low[self.obs_layout["payload"]], high[self.obs_layout["payload"]] = -np.inf, np.inf
        self._obs_space = gymnasium.spaces.Box(low, high, (start,), np.float32)
        bits_space = gymnasium.spaces.MultiBinary(K)
        payload_space = gymnasium.spaces.Box(-np.inf, np.inf, (M, P), np.float32)
        self._act_space: gymnasium.Space = (
            bits_space
            if labels
            else gymnasium.spaces.Dict({"broadcast": bits_space, "payload": payload_space})
        )

    # -- spaces and graph ----------------------------------------------------------------
    def observation_space(self, agent: str) -> gymnasium.Space:
        self._check_agent(agent)
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.Space:
        self._check_agent(agent)
        return self._act_space

    def out_neighbours(self, agent: str | int) -> list[int]:
        """Receivers of ``agent``'s broadcast bits, in bit order."""
        i = self._index(agent)
        return self._out_table[i][self._out_valid[i]].tolist()

    def _index(self, agent: str | int) -> int:
        if isinstance(agent, str):
            if agent not in self.possible_agents:
                raise ValueError(f"unknown agent {agent!r}; valid agents: {self.possible_agents}")
            return self.possible_agents.index(agent)
        return int(agent)

    def split_obs(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reshape flat observations ``(..., obs_dim)`` into named, shaped views."""
        lead = obs.shape[:-1]
        M, C = self.batch_size, self.num_classes
        lay = self.obs_layout
        return {
            "images": obs[..., lay["images"]].reshape(*lead, M, *self.image_shape),
            "labels": obs[..., lay["labels"]].reshape(*lead, M, C),
            "payload": obs[..., lay["payload"]].reshape(*lead, M, -1),
            "from_inbox": obs[..., lay["from_inbox"].start],
            "inbox_fill": obs[..., lay["inbox_fill"].start],
        }

    def bandwidth(self) -> dict[str, int]:
        """Bits sent since the last reset, all envs and nodes: images, payload and total."""
        if self.channel is None:
            return {"images": 0, "payload": 0, "total": 0}
        images = self.channel.total_bits(["images"])
        payload = self.channel.total_bits(["payload"])
        return {"images": images, "payload": payload, "total": images + payload}

    # -- episode -------------------------------------------------------------------------
    def _sample_local(self, u: torch.Tensor | None = None) -> torch.Tensor:
        """``batch_size`` samples per node drawn uniformly from its own partition, for every
        world from the step stream, or from the uniforms ``u`` ``(worlds, N, M)`` given."""
        if u is None:
            shape = (self.num_envs, self.n_nodes, self.batch_size)
            u = torch.rand(shape, generator=self._gen, device=self.device)
        N = self.n_nodes
        pos = (u * self.partition_len[None, :, None]).long()
        pos = torch.minimum(pos, self.partition_len[None, :, None] - 1)
        rows = torch.arange(N, device=self.device)[None, :, None] * self.partition_table.shape[1]
        return self.partition_table.take(rows + pos)

    def _fresh_state(self, worlds: int, u: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The state of ``worlds`` worlds at the start of an episode (their first minibatches
        from the step stream, or from the uniforms ``u``, :meth:`_sample_local`)."""
        N, M, P, cap = self.n_nodes, self.batch_size, self.payload_dim, self.inbox_capacity
        dev = self.device
        zeros_l = torch.zeros(worlds, N, dtype=torch.long, device=dev)
        return {
            "idx": (idx := self._sample_local(u)),
            "true_labels": self.labels[idx],
            "payload": torch.zeros(worlds, N, M, P, device=dev),
            "sender": torch.full((worlds, N), -1, dtype=torch.long, device=dev),
            # Sample indices held in the inboxes: int32 (half the traffic; datasets are small).
            "inbox_idx": torch.zeros(worlds, N, cap, M, dtype=self._index_dtype, device=dev),
            "inbox_payload": torch.zeros(worlds, N, cap, M, P, device=dev),
            "inbox_sender": torch.zeros(worlds, N, cap, dtype=torch.long, device=dev),
            "head": zeros_l.clone(),
            "count": zeros_l.clone(),
            "dropped": zeros_l.clone(),
            "bits_images": zeros_l.clone(),
            "bits_payload": zeros_l.clone(),
            "last_bits": torch.zeros(worlds, N, self.max_out, dtype=torch.bool, device=dev),
            "t": torch.zeros(worlds, dtype=torch.long, device=dev),
        }

    def reset(
        self, seed: int | None = None, env_index: Any = None
    ) -> tuple[TensorDict, dict[str, dict]]:
        """Start a new episode in every world, or only in the worlds ``env_index`` names.

        ``reset(seed)`` reseeds (``seed`` not ``None``) and restarts every world, and zeroes
        the channel's bandwidth counters. ``reset(env_index=...)`` (an int, indices or a
        ``(num_envs,)`` bool mask, :func:`commenv.core.check_env_index`) restarts only those
        worlds: their step clocks, inboxes and per-node counters go back to 0 and they draw a
        fresh first minibatch from their own restart streams, while every other world is left
        exactly as it was and its later steps draw what they would have drawn without the
        reset. The
        returned ``obs``/``infos`` cover the whole batch; ``env.bandwidth()`` keeps counting
        since the last full reset.
        """
        if env_index is not None:
            started = bool(self._state)
            mask = check_partial_reset(seed, env_index, self.num_envs, self.device, started)
            self._reset_worlds(mask)
        else:
            self._restart(seed)
        obs_all = self.observe_all()
        return self._per_agent(obs_all), self._agent_infos(self.infos_all())

    def _restart(self, seed: int | None) -> None:
        """Restart every world (reseeded when ``seed`` is given, or on the first reset)."""
        if seed is not None or not self._state:
            self._gen, self._restart_streams = self._seed_streams(seed)
            # restarts are counted for the streams' life: a later full reset goes on counting
            self._restarts = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        if self.channel is not None:
            self.channel.reset_counters()
        self._state = self._fresh_state(self.num_envs)

    def _reset_worlds(self, mask: torch.Tensor) -> None:
        """Restart the worlds of the ``(num_envs,)`` bool ``mask``; new tensors throughout, so
        nothing returned earlier changes."""
        worlds = mask.nonzero().flatten()
        if worlds.numel() == 0:
            return
        self._restarts = self._restarts + mask
        N, M = self.n_nodes, self.batch_size
        u = self._restart_streams.uniform(worlds, self._restarts[worlds], n=N * M)
        fresh = self._fresh_state(int(worlds.numel()), u.view(-1, N, M))
        st = self._state
        for key, value in fresh.items():
            new = st[key].clone()
            new[worlds] = value
            st[key] = new

    _GATHER_BYTES = 2**20  # the scratch of the CPU's image gathers

    def observe_all(self) -> torch.Tensor:
        """Observations of every node of every env, ``(num_envs, n_nodes, obs_dim)``: one
        fresh tensor, each block written in place (no per-block copies joined afterwards)."""
        st, lay = self._state, self.obs_layout
        B, N, M, C = self.num_envs, self.n_nodes, self.batch_size, self.num_classes
        obs = self._obs_buffer()
        from_inbox = st["sender"] >= 0
        idx = st["idx"]
        images = obs[..., lay["images"]].view(B * N, M, -1)
        if self._scratch is None:  # one gather (a GPU: one kernel)
            images.copy_(self.images.index_select(0, idx.reshape(-1)).view(B * N, M, -1))
        else:  # block by block of minibatches through the cached scratch: one pass to memory
            rows, R = idx.view(B * N, M), self._gather_rows
            for start in range(0, B * N, R):
                block = rows[start : start + R]
                x = torch.index_select(
                    self.images, 0, block.reshape(-1), out=self._scratch[: block.numel()]
                )
                images[start : start + R].copy_(x.view(block.shape[0], M, -1))
        labels = obs[..., lay["labels"]].view(B, N, M, C).zero_()
        if self.content == "labels":
            received = st["payload"][..., 0].long().clamp(0, C - 1)
            held = torch.where(from_inbox[..., None], received, st["true_labels"])
            labels.scatter_(-1, held[..., None], 1.0)
        elif self.content not in LABEL_FREE:  # own labels for local data only
            local = (~from_inbox).to(obs.dtype)[..., None, None].expand(B, N, M, 1)
            labels.scatter_(-1, st["true_labels"][..., None], local)
        if self.content != "labels":  # unsupervised nodes see no label, not even their own
            payload = obs[..., lay["payload"]].view(B, N, M, -1)
            torch.mul(st["payload"], from_inbox[..., None, None], out=payload)
        obs[..., lay["from_inbox"]] = from_inbox[..., None]
        obs[..., lay["inbox_fill"]] = (st["count"].float() / self.inbox_capacity)[..., None]
        return obs

    def _obs_buffer(self) -> torch.Tensor:
        """A tensor for the next observations (:class:`commenv.core.ObservationPool`)."""
        return self._pool.next()

    def infos_all(self) -> dict[str, torch.Tensor]:
        """Ground truth of every node, each ``(num_envs, n_nodes, ...)``."""
        st = self._state
        return {
            "indices": st["idx"],
            "true_labels": st["true_labels"],
            "sender": st["sender"],
            "inbox_count": st["count"],
            "dropped": st["dropped"],
            "bits_images": st["bits_images"],
            "bits_payload": st["bits_payload"],
        }

    def _per_agent(self, batched: torch.Tensor) -> TensorDict:
        """``{agent: batched[:, i]}``: views, cut in one call."""
        return dict(zip(self.possible_agents, batched.unbind(1), strict=True))

    def _agent_infos(self, infos: dict[str, torch.Tensor]) -> dict[str, dict]:
        """``{agent: {key: value[:, i]}}``: views, one cut per key (not per key and node)."""
        keys, columns = list(infos), (value.unbind(1) for value in infos.values())
        rows = zip(*columns, strict=True)
        return {
            a: dict(zip(keys, row, strict=True))
            for a, row in zip(self.possible_agents, rows, strict=True)
        }

    # -- step ----------------------------------------------------------------------------
    def step(self, actions: TensorDict) -> StepResult:
        """Advance every world: ``actions[agent]`` are the broadcast bits ``(num_envs, K)``, or
        ``{"broadcast", "payload"}`` -> ``(obs, rewards, terminations, truncations, infos)``
        (:meth:`step_tensors` takes them stacked)."""
        if not self._state:
            raise ValueError("step() called before reset(); call reset() first")
        agents = self.possible_agents
        check_action_keys(actions, agents, agents)
        if self.validate:
            if self.content in LABEL_FREE:
                for a in agents:
                    self._check_label_free_action(a, actions[a])
            act = batched_actions(agents, self._act_space, actions, self.num_envs, self.device)
        else:
            act = self._stack_unchecked(actions)
        labels = self.content == "labels"
        bits, payload = (act, None) if labels else (act["broadcast"], act["payload"])
        obs_all, rewards, truncated, infos = self._advance(bits, payload)
        terminated = torch.zeros_like(truncated)
        return (
            self._per_agent(obs_all),
            self._per_agent(rewards),
            dict.fromkeys(agents, terminated),
            dict.fromkeys(agents, truncated),
            self._agent_infos(infos),
        )

    def _stack_unchecked(self, actions: TensorDict) -> torch.Tensor | TensorDict:
        def stack(values: list[Any]) -> torch.Tensor:
            return torch.stack([torch.as_tensor(v, device=self.device) for v in values], 1)

        agents = self.possible_agents
        if self.content == "labels":
            return stack([actions[a] for a in agents])
        return {key: stack([actions[a][key] for a in agents]) for key in ("broadcast", "payload")}

    def _check(self, bits: torch.Tensor, payload: torch.Tensor | None) -> None:
        """The batched action check on already stacked tensors (``step_tensors``)."""
        B, N, K = self.num_envs, self.n_nodes, self.max_out
        space = self._act_space
        bits_space = space if self.content == "labels" else space["broadcast"]
        if not isinstance(bits, torch.Tensor) or tuple(bits.shape) != (B, N, K):
            raise ValueError(
                f"broadcast bits must be a tensor (num_envs, n_nodes, {K}) = {(B, N, K)} "
                f"(MultiBinary({K}) per agent), got {describe(bits)}"
            )
        check_batch_values(self.possible_agents, bits_space, bits)
        if self.content == "labels":
            return
        expected = (B, N, self.batch_size, self.payload_dim)
        if not isinstance(payload, torch.Tensor) or tuple(payload.shape) != expected:
            raise ValueError(
                f"content={self.content!r} needs a payload tensor (num_envs, n_nodes, "
                f"batch_size, {self.payload_dim}) = {expected}, got {describe(payload)}"
            )
        if self.content in LABEL_FREE and not payload.is_floating_point():
            raise ValueError(
                f"invalid action for every agent (node_0 first): content={self.content!r} "
                f"is label-free and needs float codes, got dtype {payload.dtype} "
                "(integer payloads look like labels)"
            )
        check_batch_values(self.possible_agents, space["payload"], payload)

    def _check_label_free_action(self, agent: str, action: Any) -> None:
        """One node's batched action under a label-free content: ``{"broadcast", "payload"}``
        with a finite float ``(num_envs, batch_size, P)`` payload of codes, and no labels."""
        M, P = self.batch_size, self.payload_dim
        what = (
            f"(batch_size, feature_dim) = {(M, P)} codes"
            if self.content == "codes"
            else f"(batch_size, 2 * feature_dim) = {(M, P)} [mean, log-variance] codes"
        )
        if isinstance(action, dict) and "labels" in action:
            raise ValueError(
                f"invalid action for agent {agent!r}: content={self.content!r} is label-free, "
                f"labels never leave a node; expected keys ['broadcast', 'payload'] with a "
                f"{what} payload, got keys {sorted(action)}"
            )
        if not isinstance(action, dict) or "payload" not in action:
            return  # the generic check below names what is missing
        payload = torch.as_tensor(action["payload"])
        if not payload.is_floating_point():
            raise ValueError(
                f"invalid action for agent {agent!r}: content={self.content!r} needs a float "
                f"{what} payload, got dtype {payload.dtype} (integer payloads look like labels)"
            )
        if tuple(payload.shape) != (self.num_envs, M, P):
            raise ValueError(
                f"invalid action for agent {agent!r}: content={self.content!r} needs a {what} "
                f"payload per world, (num_envs, M, P) = {(self.num_envs, M, P)}, got shape "
                f"{tuple(payload.shape)}"
            )
        if not bool(torch.isfinite(payload).all()):
            raise ValueError(
                f"invalid action for agent {agent!r}: payload contains NaN or inf "
                f"(expected finite {what})"
            )

    def step_tensors(
        self, bits: torch.Tensor, payload: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The fast batched step, with no per-agent dicts.

        Args:
            bits: ``(num_envs, n_nodes, K)`` broadcast bits (0/1).
            payload: ``(num_envs, n_nodes, batch_size, P)`` float logits/features (``None``
                for ``content="labels"``).

        Returns:
            ``(obs (B, N, obs_dim), rewards (B, N), truncated (B,), infos_all)``.
        """
        if not self._state:
            raise ValueError("step() called before reset()")
        if self.validate:
            self._check(bits, payload)
        return self._advance(bits, payload)

    def _advance(
        self, bits: torch.Tensor, payload: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One step on checked tensors (``step`` and ``step_tensors`` both end here)."""
        st = self._state
        if not st:
            raise ValueError("step() called before reset()")
        B, N, M = self.num_envs, self.n_nodes, self.batch_size
        dev = self.device
        rewards = torch.zeros(B, N, device=dev)
        if self.content == "labels":
            # Labels held for the current minibatch: own true labels or the received ones.
            held = torch.where(
                st["sender"][..., None] >= 0, st["payload"][..., 0], st["true_labels"].float()
            )
            payload = held[..., None]
        if payload is None:
            raise ValueError(
                f"content={self.content!r} needs a payload (num_envs, n_nodes, batch_size, P) "
                "with the bits; got payload=None"
            )
        payload = payload.to(torch.float32)
        if self.content == "gaussian_codes":  # mean and log-variance quantized apart
            payload = quantize(payload.unflatten(-1, (2, -1)), self.float_bits).flatten(-2)
        elif self.content != "labels":  # what the receivers get is what float_bits can carry
            payload = quantize(payload, self.float_bits)

        if self.channel is not None:
            send = bits.to(torch.bool) & self._out_valid  # bits past the out-degree: ignored
            slots = send.view(B, -1).index_select(1, self._slot_bit)
            if self._slot_valid is not None:
                slots &= self._slot_valid
            b, j = slots.nonzero(as_tuple=True)  # the messages sent, in slot order
            msgs = self.channel.send(
                b,
                self._slot_sender[j],
                j // max(1, self.channel.max_in_degree),
                num_envs=B,
                bits_per_message={
                    "images": self.bits_per_image_message,
                    "payload": self.bits_per_payload_message,
                },
                check=False,
            )
            bits_images = msgs.sent * self.bits_per_image_message
            bits_payload = msgs.sent * self.bits_per_payload_message
            # new tensors, not in-place sums: infos returned earlier keep their counts
            st["bits_images"] = st["bits_images"] + bits_images
            st["bits_payload"] = st["bits_payload"] + bits_payload
            rewards = -self.bit_cost * (bits_images + bits_payload).to(torch.float32)
            self._enqueue(msgs, payload)
            st["last_bits"] = send

        # Next minibatch: the oldest inbox entry with the consumption probability, else local.
        u = torch.rand(B, N, generator=self._gen, device=dev)
        local = self._sample_local()
        take = (u < self.consumption_prob) & (st["count"] > 0)
        h = st["head"]
        cap, P = self.inbox_capacity, self.payload_dim
        oldest = torch.arange(B * N, device=dev) * cap + h.reshape(-1)  # flat inbox rows
        popped_idx = st["inbox_idx"].view(-1, M).index_select(0, oldest).view(B, N, M).long()
        popped_pay = st["inbox_payload"].view(-1, M * P).index_select(0, oldest)
        popped_pay = popped_pay.view(B, N, M, P)
        popped_sender = st["inbox_sender"].view(-1).index_select(0, oldest).view(B, N)
        st["idx"] = torch.where(take[..., None], popped_idx, local)
        st["true_labels"] = self.labels[st["idx"]]
        st["payload"] = torch.where(take[..., None, None], popped_pay, 0.0)
        st["sender"] = torch.where(take, popped_sender, -1)
        st["head"] = torch.where(take, (h + 1) % self.inbox_capacity, h)
        st["count"] = st["count"] - take.long()

        st["t"] = st["t"] + 1  # each world's own clock (per-world resets restart it)
        truncated = st["t"] >= self.max_cycles
        return self.observe_all(), rewards, truncated, self.infos_all()

    def _enqueue(self, msgs: Messages, payload: torch.Tensor) -> None:
        """Push this step's deliveries into the inbox ring buffers; only the messages an
        inbox accepts are read and written (a full inbox costs nothing more)."""
        st, cap, N = self._state, self.inbox_capacity, self.n_nodes
        inbox = msgs.env * N + msgs.receiver  # (E,) flat (world, receiver)
        count, head, arrivals = st["count"], st["head"], msgs.arrivals
        if self.overflow == "drop_newest":
            room = cap - count
            accept = msgs.delivered & (msgs.rank < room.reshape(-1)[inbox])
            n_acc = torch.minimum(arrivals, room)
            st["dropped"] = st["dropped"] + (arrivals - n_acc)
            st["count"] = count + n_acc
        else:  # drop_oldest: keep the newest `cap` arrivals, overwrite the oldest entries
            accept = msgs.delivered & (msgs.rank >= (arrivals - cap).reshape(-1)[inbox])
            excess = (count + arrivals - cap).clamp(min=0)
            st["dropped"] = st["dropped"] + excess
            st["head"] = (head + excess) % cap
            st["count"] = (count + arrivals).clamp(max=cap)
        keep = accept.nonzero().flatten()
        src = msgs.env[keep] * N + msgs.sender[keep]  # flat (world, sender)
        dst = inbox[keep]
        slot = dst * cap + ((head + count).reshape(-1)[dst] + msgs.rank[keep]) % cap
        M, P, E = self.batch_size, self.payload_dim, int(keep.numel())
        idx_rows = pay_rows = None
        if self._rows is not None:  # a large batch: gather into warm memory
            idx_rows, pay_rows = self._rows[0][:E], self._rows[1][:E]
        held = st["idx"].view(-1, M).to(self._index_dtype)
        idx_rows = torch.index_select(held, 0, src, out=idx_rows)
        pay_rows = torch.index_select(payload.reshape(-1, M * P), 0, src, out=pay_rows)
        st["inbox_idx"].view(-1, M).index_copy_(0, slot, idx_rows)
        st["inbox_payload"].view(-1, M * P).index_copy_(0, slot, pay_rows)
        st["inbox_sender"].view(-1).index_copy_(0, slot, msgs.sender[keep])

    @property
    def episode_steps(self) -> torch.Tensor:
        """``(num_envs,)`` int64: steps each world has taken since its episode began (each
        world's own clock: a per-world reset restarts it)."""
        if not self._state:
            raise ValueError("episode_steps read before reset(); call reset() first")
        return self._state["t"].clone()

    def last_sent(self, env_index: int = 0) -> torch.Tensor:
        """``(n_nodes, n_nodes)`` bool ``[sender, receiver]``: the edges world ``env_index``
        used at its last step."""
        N = self.n_nodes
        sent = torch.zeros(N, N + 1, dtype=torch.bool, device=self.device)
        sent.scatter_(1, self._out_table, self._state["last_bits"][env_index])
        return sent[:, :N]

    # -- render --------------------------------------------------------------------------
    def render(self, env_index: int = 0) -> np.ndarray | str | None:
        """``rgb_array``: each node's first current image, last broadcasts (N x N) and inbox
        occupancy; ``ansi``: one line per node; ``human``: prints the ``ansi`` text."""
        env_index = self._check_render_index(env_index)  # refused with or without a mode
        if self.render_mode is None or not self._state:
            return None
        st = self._state
        last_sent = self.last_sent(env_index).cpu()
        if self.render_mode in ("ansi", "human"):
            lines = [f"{self.metadata['name']} step {int(st['t'][env_index])}"]
            for i, agent in enumerate(self.possible_agents):
                s = int(st["sender"][env_index, i])
                src = "local" if s < 0 else f"inbox (from node_{s})"
                sent = last_sent[i].nonzero().flatten().tolist()
                lines.append(
                    f"  {agent}: batch {src}, inbox {int(st['count'][env_index, i])}/"
                    f"{self.inbox_capacity}, dropped {int(st['dropped'][env_index, i])}, "
                    f"last sent to {sent}"
                )
            text = "\n".join(lines)
            if self.render_mode == "human":
                print(text)
                return None
            return text
        from commenv.render import bits_image, image_row

        shown = min(self.n_nodes, 20)
        firsts = self.images[st["idx"][env_index, :shown, 0]].cpu()
        top = image_row(list(firsts), self.image_shape)
        sent = bits_image(last_sent.float(), width=top.shape[1])
        fill = torch.arange(self.inbox_capacity)[None, :] < st["count"][env_index].cpu()[:, None]
        inbox = bits_image(fill.float(), width=top.shape[1])
        return np.concatenate([top, sent, inbox], 0)


_BIT_KINDS = frozenset("biuf")  # dtypes whose 0/1 values are bits (bool, ints, floats)
# float32 and the dtypes the action check takes as float32 (float64: numpy's default)
_PAYLOAD_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))


class NodeGraphParallelEnv(BatchedParallelEnv):
    """The PettingZoo face of node_graph_v0: every node's action checked and converted at
    once (one stacked array per action key), observations and infos converted once for the
    whole graph. Whatever the vectorised check refuses goes through the per-agent
    :func:`commenv.core.validate_action` of the generic face, so an error names the same
    agent, with the same words, as before; what it accepts, the generic face accepted too.
    """

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        game: NodeGraphGame = self.game
        with torch.inference_mode():
            game._restart(seed)
            obs = game.observe_all()
        self.agents = list(self.possible_agents)
        return self._obs_all(obs), self._infos_all(game.infos_all())

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise ValueError(
                "step() called before reset() or on a finished episode; call reset() first"
            )
        check_action_keys(actions, self.agents, self.possible_agents)
        bits, payload = self._stacked(actions)
        with torch.inference_mode():
            obs, rewards, truncated, infos = self.game._advance(bits, payload)
        rew = rewards[0].tolist()
        trunc = bool(truncated[0])
        live = self.agents
        out = (
            self._obs_all(obs),
            dict(zip(live, rew, strict=True)),
            dict.fromkeys(live, False),
            dict.fromkeys(live, trunc),
            self._infos_all(infos),
        )
        self.agents = [] if trunc else live
        return out

    # -- conversion, once for all nodes ----------------------------------------------------
    def _obs_all(self, obs: torch.Tensor) -> dict[str, np.ndarray]:
        rows = obs[0].cpu().numpy()
        return dict(zip(self.agents, rows, strict=True))

    def _infos_all(self, infos: dict[str, torch.Tensor]) -> dict[str, dict]:
        columns = {
            key: value[0].cpu().numpy() if value.ndim > 2 else value[0].tolist()
            for key, value in infos.items()
        }
        keys = list(columns)
        return {
            agent: dict(zip(keys, row, strict=True))
            for agent, row in zip(self.agents, zip(*columns.values(), strict=True), strict=True)
        }

    # -- validation, once for all nodes ----------------------------------------------------
    def _stacked(self, actions: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(1, N, K)`` bits and ``(1, N, M, P)`` payload (``None`` for labels)."""
        agents = self.possible_agents
        labels = self.game.content == "labels"
        values = [actions[a] for a in agents]
        fast = self._fast_bits(values) if labels else self._fast_dict(values)
        if fast is None:  # the per-agent check: raises naming the agent, or agrees
            checked = [validate_action(a, self.action_space(a), actions[a]) for a in agents]
            if labels:
                fast = np.stack(checked), None
            else:
                fast = (
                    np.stack([c["broadcast"] for c in checked]),
                    np.stack([c["payload"] for c in checked]),
                )
        bits, payload = fast
        bits = torch.from_numpy(bits)[None]
        return bits, None if payload is None else torch.from_numpy(payload)[None]

    def _fast_bits(self, values: list[Any]) -> tuple[np.ndarray, None] | None:
        """Every node's ``MultiBinary(K)`` bits as one ``(N, K)`` int8 array, or ``None``
        when any of them is not plainly valid (the per-agent check then decides)."""
        try:
            arr = np.stack(values)
        except Exception:  # ragged, tensors that need grad or a GPU, ...: the slow path
            return None
        if arr.dtype.kind not in _BIT_KINDS or arr.shape != (self.n_nodes, self.max_out):
            return None
        if not bool(((arr == 0) | (arr == 1)).all()):  # NaN is neither
            return None
        return arr.astype(np.int8), None

    def _fast_dict(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """Bits and payloads of ``{"broadcast", "payload"}`` actions, or ``None``."""
        keys = {"broadcast", "payload"}
        if not all(type(v) is dict and v.keys() == keys for v in values):
            return None
        payloads = [v["payload"] for v in values]
        if not all(type(p) is np.ndarray and p.dtype in _PAYLOAD_DTYPES for p in payloads):
            return None
        bits = self._fast_bits([v["broadcast"] for v in values])
        if bits is None:
            return None
        shape = (self.batch_size, self.payload_dim)
        if not all(p.shape == shape for p in payloads):
            return None
        with np.errstate(over="ignore"):  # beyond float32: inf, refused just below
            pay = np.stack(payloads).astype(np.float32, copy=False)
        if not bool(np.isfinite(pay).all()):  # NaN, inf, or beyond float32's range
            return None
        return bits[0], pay


class NodeGraphFamily(EnvFamily):
    """``node_graph_v0``: its PettingZoo faces check and convert all nodes at once."""

    def parallel_env(self, **config: Any) -> NodeGraphParallelEnv:
        """PettingZoo ``ParallelEnv`` (numpy observations, validated actions)."""
        return NodeGraphParallelEnv(self.game_cls(num_envs=1, device="cpu", **config))
