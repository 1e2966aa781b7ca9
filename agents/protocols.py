"""Communication protocols on the node graph: output sharing against gradient exchange.

Every protocol is a population of ``N`` node models (one :class:`BatchedClassifier`, no Python
loop over nodes) with the :class:`~commenv_agents.population.NodePopulation` interface
(``step(views, out_valid) -> (bits, payload)``, ``predict_proba(x) -> (N, S, C)``), so all run
against the same ``node_graph_v0`` game: the same exclusive partitions, the same local
minibatches (``batch_size`` per node per step), the same models and step budget, and the same
evaluation (:mod:`commenv.evaluation`, average and collective accuracy). Everything a protocol
sends is counted by the game's :class:`commenv.Channel`, per tag: output sharing through the
game's own broadcasts (``"images"``, ``"payload"``), the others with :meth:`Channel.route`
(all-gathers of compressed gradients, whose receivers decode what arrived) or
:meth:`Channel.account` (collectives summed in-process, compressed or not).

**Bit models** (``b = 32`` bits per float, ``P`` parameters per model, ``N`` nodes):

- *ring all-reduce* of ``L`` values: each node sends ``2 (N - 1)`` chunks of ``ceil(L / N)``
  values, ``2 (N - 1) ceil(L / N) b`` bits (= ``2 (N - 1) / N b L`` when ``N`` divides ``L``):
  :func:`ring_allreduce_bits`. Used by ``sync_sgd`` (every step, ``L = P``), ``local_sgd``
  (every ``period`` steps) and ``powersgd`` (its three all-reduces: uncompressed tensors, P, Q).
- *all-gather* of a compressed message (``topk``): each node sends its
  ``k (32 + ceil(log2 P))`` bits to its ``N - 1`` peers.
- *compressed all-reduce* (``int8``, ``sign``): the ring all-reduce's ``2 (N - 1)`` chunks of
  ``L = ceil(P / N)`` values, each compressed (reduce-scatter of compressed chunks, re-compressed
  means gathered back; 1-bit Adam's compressed all-reduce): ``2 (N - 1) (8 L + 64)`` and
  ``2 (N - 1) (L + 32)`` bits.
- *checkpoint broadcast* (``codistill``): each node sends its ``32 P`` parameters to ``N - 1``
  peers every ``period`` steps. *Parameter server* (``ist``): node 0 holds the full model and
  sends every other node its subnet, which comes back after ``period`` steps. *Data shipping*
  (``centralised``): every node sends its minibatch (8-bit pixels and labels) to node 0.
- Replicated protocols start from one initialisation broadcast from node 0 (tag ``"init"``,
  ``(N - 1) 32 P`` bits).

**Compute** is counted per protocol in :attr:`CommProtocol.compute`: forward and backward passes
of one model on one minibatch (summed over nodes), the extra model copies each node holds, and
the fraction of a full model's multiply-adds one pass costs (IST trains narrow subnets).

Names (:data:`PROTOCOLS`): ``isolated``, ``labels``, ``logits``, ``features``,
``features_8bit`` (output sharing through :class:`OutputSharingPopulation`), ``sync_sgd``,
``topk``, ``powersgd``, ``int8``, ``sign``, ``local_sgd``, ``codistill``, ``ist``,
``centralised``. Build one with :func:`make_protocol`; run it with :func:`run_protocol`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from commenv.channel import Channel, float_message_bits, make_adjacency, quantize
from commenv.core import check_choice, check_int, generator_seed
from commenv.node_graph import NodeGraphGame
from commenv_agents.layers import BatchedConv2d, BatchedLinear
from commenv_agents.population import (
    OPTIMIZERS,
    BatchedClassifier,
    OutputSharingPopulation,
    check_population,
    make_optimizer,
    node_losses,
    run_population,
    seeded,
)

FLOAT_BITS = 32


def ring_allreduce_bits(n_nodes: int, values: int, bits: int = FLOAT_BITS) -> int:
    """Bits one node sends in a ring all-reduce of ``values`` numbers among ``n_nodes``:
    ``2 (n - 1)`` chunks (reduce-scatter, then all-gather) of ``ceil(values / n)`` numbers."""
    if n_nodes < 2 or values == 0:
        return 0
    return 2 * (n_nodes - 1) * math.ceil(values / n_nodes) * bits


def index_bits(n_values: int) -> int:
    """Bits of one index into ``n_values`` positions."""
    return max(1, math.ceil(math.log2(n_values)))


def check_ratio(name: str, value: Any) -> float:
    """A compression ratio in (0, 1]."""
    if not (isinstance(value, int | float) and not isinstance(value, bool)) or not (
        0.0 < value <= 1.0
    ):
        raise ValueError(f"{name} must be a ratio in (0, 1], got {value!r}")
    return float(value)


@dataclass
class Compute:
    """What a protocol computed: passes of one model on one minibatch, summed over nodes."""

    forward: int = 0
    backward: int = 0
    model_copies: int = 0
    """Extra model-sized tensors each node holds besides its own model (stale peer copies,
    error-feedback residuals)."""
    pass_fraction: float = 1.0
    """Multiply-adds of one pass relative to the full model (IST's subnets are narrower)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "forward_passes": self.forward,
            "backward_passes": self.backward,
            "model_copies": self.model_copies,
            "pass_fraction": self.pass_fraction,
        }


# -- the interface -------------------------------------------------------------------------
class CommProtocol:
    """Base of every protocol: ``N`` nodes, one batched model, one channel for all traffic.

    Args:
        n_nodes: population size ``N`` (at least 2).
        image_shape: ``(C, H, W)`` of the images.
        num_classes: number of classes.
        channel: the channel everything is sent through (the game's); a fully connected one
            over ``N`` nodes is made when ``None``.
        arch: the node model's architecture (:class:`BatchedClassifier`).
        hidden: its hidden width.
        feature_dim: its feature width (what ``content="features"`` shares).
        lr: learning rate.
        device: ``"cpu"`` or ``"cuda"``.
        seed: initialisation seed.
        optimizer: ``"adam"`` (every protocol's default) or ``"sgd"`` (momentum 0.9, what the
            gradient-compression papers train with), for every node of every protocol.

    Subclasses set the class attributes :attr:`content` and :attr:`float_bits` (what the
    ``node_graph_v0`` game must carry) and implement :meth:`step` and :meth:`predict_proba`.
    """

    content: ClassVar[str] = "labels"
    """The game's ``content`` (gradient protocols never broadcast, so any works)."""
    float_bits: ClassVar[int] = 32
    """The game's ``float_bits``."""

    def __init__(
        self,
        n_nodes: int,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        channel: Channel | None = None,
        arch: str = "mlp",
        hidden: int = 256,
        feature_dim: int = 64,
        lr: float = 1e-3,
        device: str | torch.device = "cpu",
        seed: int = 0,
        optimizer: str = "adam",
    ) -> None:
        n_nodes, image_shape, num_classes, self.device = check_population(
            n_nodes, image_shape, num_classes, hidden=hidden, feature_dim=feature_dim, lr=lr,
            seed=seed, device=device, min_nodes=2,
        )  # fmt: skip
        check_choice("optimizer", optimizer, OPTIMIZERS)
        self.optimizer_kind = optimizer
        self.n_nodes, self.image_shape, self.num_classes = n_nodes, image_shape, num_classes
        self.arch, self.hidden, self.feature_dim, self.lr = arch, hidden, feature_dim, lr
        self.seed = seed
        if channel is None:
            channel = Channel(make_adjacency("all_to_all", n_nodes), device=self.device)
        if channel.n_agents != n_nodes:
            raise ValueError(
                f"channel has {channel.n_agents} agents, the protocol n_nodes={n_nodes}"
            )
        self.channel = channel
        self.compute = Compute()
        self.t = 0

    def _classifier(self, groups: int) -> BatchedClassifier:
        return BatchedClassifier(
            groups,
            self.image_shape,
            self.num_classes,
            arch=self.arch,
            hidden=self.hidden,
            feature_dim=self.feature_dim,
        ).to(self.device)

    def _no_broadcast(self, out_valid: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(out_valid, dtype=torch.long)

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One training step of every node on ``views`` (the game's ``split_obs``): its
        exchange through :attr:`channel`, its update; returns the game's broadcast bits
        ``(N, K)`` and payload (``None`` when :attr:`content` is ``"labels"``)."""
        raise NotImplementedError

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Every node's class distribution ``(N, S, C)`` of images ``x`` ``(S, C, H, W)``."""
        raise NotImplementedError

    @torch.no_grad()
    def _predict(self, model: BatchedClassifier, x: torch.Tensor, chunk: int = 2000):
        out = []
        for start in range(0, len(x), chunk):
            xb = x[start : start + chunk].to(self.device)
            _, logits = model(xb.unsqueeze(0).expand(model.groups, *xb.shape))
            out.append(logits.softmax(-1))
        probs = torch.cat(out, 1)
        return probs.expand(self.n_nodes, *probs.shape[1:]) if model.groups == 1 else probs


def _require_full_graph(channel: Channel, name: str) -> None:
    if not bool((channel.out_degree == channel.n_agents - 1).all()):
        raise ValueError(
            f"protocol {name!r} exchanges with every node: it needs a fully connected channel "
            f"(ring with k = n_nodes - 1), got out-degrees {channel.out_degree.tolist()}"
        )


def _require_edges(channel: Channel, name: str, edges: str) -> None:
    """The edges ``name``'s traffic travels on must be in the channel: ``"ring"`` (i -> i + 1,
    a ring all-reduce), ``"star"`` (0 <-> i, a parameter server at node 0) or ``"to0"``
    (i -> 0, shipping to node 0)."""
    n = channel.n_agents
    needed = torch.zeros(n, n, dtype=torch.bool)
    i = torch.arange(n)
    if edges == "ring":
        needed[i, (i + 1) % n] = True
    if edges in ("star", "to0"):
        needed[1:, 0] = True
    if edges == "star":
        needed[0, 1:] = True
    missing = (needed & ~channel.adjacency.cpu()).nonzero().tolist()
    if missing:
        shown = ", ".join(f"{a}->{b}" for a, b in missing[:6]) + (
            ", ..." if len(missing) > 6 else ""
        )
        raise ValueError(
            f"protocol {name!r} sends on the {edges} edges, which the channel lacks: {shown}"
        )


# -- output sharing (the thesis) -------------------------------------------------------------
class OutputSharing(CommProtocol):
    """Output sharing through :class:`OutputSharingPopulation` and node_graph_v0's broadcasts.

    Extra args: ``share`` (``none``/``labels``/``logits``/``features``), ``broadcast_prob``,
    ``temperature``, ``feature_weight``. The bits are the game's images and payload.
    """

    def __init__(
        self,
        n_nodes: int,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        share: str = "labels",
        broadcast_prob: float = 0.1,
        temperature: float = 1.0,
        feature_weight: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(n_nodes, image_shape, num_classes, **common)
        self.pop = OutputSharingPopulation(
            n_nodes,
            image_shape,
            num_classes,
            arch=self.arch,
            share=share,
            broadcast_prob=broadcast_prob,
            temperature=temperature,
            feature_weight=feature_weight,
            hidden=self.hidden,
            feature_dim=self.feature_dim,
            lr=self.lr,
            device=self.device,
            seed=self.seed,
            optimizer=self.optimizer_kind,
        )
        self.num_params_per_node = self.pop.num_params_per_node

    def step(self, views, out_valid):
        self.t += 1
        self.compute.forward += self.n_nodes
        self.compute.backward += self.n_nodes
        return self.pop.step(views, out_valid)

    def predict_proba(self, x):
        return self.pop.predict_proba(x)


# -- gradient exchange ------------------------------------------------------------------------
def torch_layout(model: BatchedClassifier) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Each parameter of one node as torch's own layer holds it, and where its values sit.

    Returns the per-node shapes (in ``model.parameters()`` order) in ``torch.nn``'s layout,
    ``nn.Linear``'s weight ``(out, in)`` where :class:`BatchedLinear` stores ``(in, out)``, and
    the index ``perm`` ``(P,)`` with ``flat[:, perm]`` the node's flat parameters (or gradients)
    in that layout, so that a compressor sees the matrices a DDP hook would see.
    """
    layout: dict[int, tuple[tuple[int, ...], bool]] = {}  # shape, stored transposed
    for module in model.modules():
        if isinstance(module, BatchedLinear):
            d_in, d_out = module.weight.shape[1:]
            layout[id(module.weight)] = ((d_out, d_in), True)
            layout[id(module.bias)] = ((d_out,), False)
        elif isinstance(module, BatchedConv2d):
            c_out = module.weight.shape[0] // module.groups
            layout[id(module.weight)] = ((c_out, *module.weight.shape[1:]), False)
            layout[id(module.bias)] = ((c_out,), False)
    shapes, pieces, offset = [], [], 0
    for p in model.parameters():
        shape, transposed = layout[id(p)]
        index = torch.arange(offset, offset + math.prod(shape))
        pieces.append(index.view(shape[::-1]).T.flatten() if transposed else index)
        shapes.append(shape)
        offset += index.numel()
    return shapes, torch.cat(pieces)


class ReplicatedProtocol(CommProtocol):
    """Nodes that hold replicas of one model: a shared initialisation (node 0's, broadcast and
    billed under ``"init"``), one Adam per node, and :meth:`exchange` between the backward pass
    and the optimiser step (the flat ``(N, P)`` local gradients in, what each node applies out).
    """

    def __init__(self, n_nodes, image_shape, num_classes, **common: Any) -> None:
        super().__init__(n_nodes, image_shape, num_classes, **common)
        with seeded(self.seed, self.device):
            single = self._classifier(1)
            self.model = self._classifier(n_nodes)
        with torch.no_grad():
            for p, q in zip(self.model.parameters(), single.parameters(), strict=True):
                p.copy_(q.reshape(1, -1).expand(n_nodes, -1).reshape(p.shape))
        self.optimizer = make_optimizer(self.model.parameters(), self.lr, self.optimizer_kind)
        self.params = list(self.model.parameters())
        self.num_params_per_node = sum(p.numel() for p in self.params) // n_nodes

    def _bill_init(self) -> None:
        """Node 0's initialisation reaches the others (billed at the first step, after the
        game's reset has zeroed the counters)."""
        P = self.num_params_per_node
        init = torch.zeros(self.n_nodes, dtype=torch.int64)
        init[0] = (self.n_nodes - 1) * FLOAT_BITS * P
        self.channel.account("init", init, torch.where(init > 0, 0, FLOAT_BITS * P))

    def flat_grads(self) -> torch.Tensor:
        return torch.cat([p.grad.reshape(self.n_nodes, -1) for p in self.params], 1)

    def set_grads(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self.params:
            width = p.numel() // self.n_nodes
            p.grad.copy_(flat[:, offset : offset + width].reshape(p.shape))
            offset += width

    def exchange(self, grads: torch.Tensor) -> torch.Tensor:
        """What each node applies, given the local gradients ``(N, P)``; bills its traffic."""
        return grads

    def after_step(self) -> None:
        """Called after every optimiser step (periodic averaging, subnet merges, ...)."""

    def step(self, views, out_valid):
        if self.t == 0:
            self._bill_init()
        features, logits = self.model(views["images"])
        loss = node_losses(features, logits, views, "labels", 1.0, 1.0).sum()
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        self.compute.forward += self.n_nodes
        self.compute.backward += self.n_nodes
        self.t += 1
        self.set_grads(self.exchange(self.flat_grads()))
        self.optimizer.step()
        self.after_step()
        return self._no_broadcast(out_valid), None

    def predict_proba(self, x):
        return self._predict(self.model, x)


class SyncSGD(ReplicatedProtocol):
    """Synchronous data-parallel SGD: the gradients are averaged (ring all-reduce, fp32) every
    step, so the replicas stay identical and train like one model on the combined batch."""

    def __init__(self, n_nodes, image_shape, num_classes, **common):
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_edges(self.channel, "sync_sgd", "ring")

    def exchange(self, grads):
        self.channel.account("gradients", ring_allreduce_bits(self.n_nodes, grads.shape[1]))
        return grads.mean(0, keepdim=True).expand_as(grads)


class LocalSGD(ReplicatedProtocol):
    """Local SGD / periodic model averaging (FedAvg-style): every node trains on its own data
    with its own Adam; every ``period`` steps the parameters are averaged (ring all-reduce)."""

    def __init__(self, n_nodes, image_shape, num_classes, *, period: int = 10, **common):
        self.period = check_int("period", period, 1)
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_edges(self.channel, "local_sgd", "ring")

    @torch.no_grad()
    def after_step(self):
        if self.t % self.period:
            return
        for p in self.params:
            flat = p.view(self.n_nodes, -1)
            flat.copy_(flat.mean(0, keepdim=True).expand_as(flat))
        self.channel.account(
            "parameters", ring_allreduce_bits(self.n_nodes, self.num_params_per_node)
        )


class ErrorFeedback(ReplicatedProtocol):
    """A compressed all-gather with error feedback: each node compresses its gradient plus its
    residual, sends the message to every peer through :meth:`Channel.route`, keeps what the
    message missed as the next residual, and applies the mean of the decoded messages."""

    def __init__(self, n_nodes, image_shape, num_classes, **common):
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_full_graph(self.channel, type(self).__name__)
        self.residual = torch.zeros(n_nodes, self.num_params_per_node, device=self.device)
        self.compute.model_copies = 1  # the residual: one model-sized buffer per node

    def encode(self, x: torch.Tensor) -> tuple[list[tuple[torch.Tensor, int]], torch.Tensor]:
        """``x`` ``(N, P)`` -> (message parts ``[(tensor (N, ...), bits per message)]``, what
        the receivers decode from each node's message ``(N, P)``)."""
        raise NotImplementedError

    def decode(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Message parts ``(N, S, ...)`` (``S`` messages per receiver) -> sum ``(N, P)``."""
        raise NotImplementedError

    def message_bits(self) -> int:
        """Analytic bits of one node's message (tests check the channel agrees)."""
        raise NotImplementedError

    def exchange(self, grads):
        corrected = grads + self.residual
        parts, decoded_own = self.encode(corrected)
        self.residual = corrected - decoded_own
        received = []
        for tensor, bits in parts:
            delivery = self.channel.route(
                tensor[None], binary=False, bits_per_message=bits, tag="gradients"
            )
            # every receiver decodes its own message and the N - 1 that arrived
            received.append(torch.cat([tensor[:, None], delivery.inbox[0]], 1))
        total = self.decode(received)
        return total / self.n_nodes


class TopK(ErrorFeedback):
    """Top-k sparsification with error feedback: the ``ratio * P`` largest-magnitude entries,
    sent as (fp32 value, ``ceil(log2 P)``-bit index) pairs."""

    def __init__(self, n_nodes, image_shape, num_classes, *, ratio: float = 0.01, **common):
        self.ratio = check_ratio("ratio", ratio)
        super().__init__(n_nodes, image_shape, num_classes, **common)
        self.k = max(1, math.floor(self.ratio * self.num_params_per_node))

    def message_bits(self):
        return self.k * (FLOAT_BITS + index_bits(self.num_params_per_node))

    def encode(self, x):
        idx = x.abs().topk(self.k, dim=1).indices
        values = x.gather(1, idx)
        own = torch.zeros_like(x).scatter_(1, idx, values)
        idx_bits = index_bits(self.num_params_per_node)
        return [(values, self.k * FLOAT_BITS), (idx, self.k * idx_bits)], own

    def decode(self, parts):
        values, idx = parts
        out = torch.zeros(self.n_nodes, self.num_params_per_node, device=self.device)
        return out.scatter_add_(1, idx.flatten(1), values.flatten(1))


class CompressedAllReduce(ReplicatedProtocol):
    """A compressed all-reduce with error feedback on both sides, as DeepSpeed's compressed
    all-reduce for 1-bit Adam (Tang et al. 2021): each node adds its residual to its gradient,
    splits it into ``N`` chunks of ``ceil(P / N)`` values, compresses each chunk and sends chunk
    ``j`` to node ``j`` (reduce-scatter); node ``j`` averages the ``N`` decoded chunks, adds its
    own (server) residual, compresses that mean and sends it to every peer (all-gather). Every
    node applies the same decoded vector, so the replicas stay identical. Each node sends
    ``2 (N - 1)`` compressed chunks per step (:meth:`message_bits`), the compressed twin of the
    ring all-reduce's ``2 (N - 1)`` chunks; a compressor that needs no chunking (top-k) is an
    all-gather instead (:class:`ErrorFeedback`). Subclasses implement :meth:`compress` and
    :meth:`chunk_bits`."""

    def __init__(self, n_nodes, image_shape, num_classes, **common):
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_full_graph(self.channel, type(self).__name__)
        self.chunk = math.ceil(self.num_params_per_node / n_nodes)
        self.residual = torch.zeros(n_nodes, self.num_params_per_node, device=self.device)
        self.server_residual = torch.zeros(n_nodes, self.chunk, device=self.device)
        self.compute.model_copies = 1  # the residuals: one model-sized buffer per node

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        """What a receiver decodes from each chunk ``x[..., :]`` of ``self.chunk`` values."""
        raise NotImplementedError

    def chunk_bits(self) -> int:
        """Bits of one compressed chunk of ``self.chunk`` values."""
        raise NotImplementedError

    def message_bits(self) -> int:
        """Bits one node sends per step: ``2 (N - 1)`` compressed chunks."""
        return 2 * (self.n_nodes - 1) * self.chunk_bits()

    def exchange(self, grads):
        N, P, L = self.n_nodes, self.num_params_per_node, self.chunk
        corrected = grads + self.residual
        chunks = F.pad(corrected, (0, N * L - P)).view(N, N, L)  # [sender, owner, value]
        sent = self.compress(chunks)
        self.residual = corrected - sent.view(N, N * L)[:, :P]
        reduced = sent.mean(0) + self.server_residual  # chunk j, at its owner j
        gathered = self.compress(reduced)
        self.server_residual = reduced - gathered
        self.channel.account("gradients", self.message_bits())
        return gathered.view(1, N * L)[:, :P].expand(N, P)


class Int8(CompressedAllReduce):
    """Uniform quantisation in a compressed all-reduce: each chunk as ``2**bits`` levels
    between its min and max (``commenv.channel.quantize``), plus the two as fp32."""

    def __init__(self, n_nodes, image_shape, num_classes, *, bits: int = 8, **common):
        self.bits = check_int("bits", bits, 1)
        if self.bits > 8:
            raise ValueError(f"bits must be in [1, 8] (uint8 codes), got {bits!r}")
        super().__init__(n_nodes, image_shape, num_classes, **common)

    def chunk_bits(self):
        return float_message_bits(1, self.chunk, self.bits)

    def compress(self, x):
        return quantize(x, self.bits)


class Sign(CompressedAllReduce):
    """1-bit sign compression in a compressed all-reduce (EF-signSGD's compressor,
    Karimireddy et al. 2019, on both sides as 1-bit Adam's): one sign bit per value and the
    fp32 scale ``||x||_1 / L`` per chunk."""

    def chunk_bits(self):
        return self.chunk + FLOAT_BITS

    def compress(self, x):
        return x.abs().mean(-1, keepdim=True) * torch.where(x >= 0, 1.0, -1.0)


# -- PowerSGD -------------------------------------------------------------------------------
def orthogonalize(matrices: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
    """Orthonormalise the columns of each ``(B, n, r)`` matrix in place, as torch's PowerSGD
    hook does: Gram-Schmidt for rank <= 2, QR above."""
    rank = matrices.shape[2]
    if rank <= 2:
        for i in range(rank):
            col = matrices[:, :, i : i + 1]
            col /= torch.norm(col, dim=1, keepdim=True) + epsilon
            if i + 1 < rank:
                rest = matrices[:, :, i + 1 :]
                rest -= torch.sum(col * rest, dim=1, keepdim=True) * col
    else:
        matrices.copy_(torch.linalg.qr(matrices).Q)
    return matrices


class PowerSGDCompressor:
    """The algorithm of ``torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook`` for ``N``
    simulated workers at once (one bucket holding every tensor, in the given order).

    Each worker's matrix ``M_i`` (a tensor viewed as ``(shape[0], -1)``, plus its error
    residual) is approximated in rank ``r``: ``P = sum_i M_i Q`` (all-reduced, then
    orthogonalised), ``Q = mean_i M_i^T P`` (all-reduced), every worker applies ``P Q^T``.
    ``Q`` starts from a seeded Gaussian (``np.random.RandomState(seed)`` as the hook's
    ``random_seed``) and is reused (warm start). Tensors not worth compressing
    (``(n + m) r * min_compression_rate >= n m``, e.g. biases) are all-reduced as they are;
    before ``start_iter`` everything is. The error residual is the input minus what was applied.

    Args:
        n_nodes: workers ``N``.
        shapes: per-worker shape of each tensor, in bucket order.
        rank: ``matrix_approximation_rank`` (>= 1).
        start_iter: vanilla all-reduce before this iteration (the hook's
            ``start_powerSGD_iter``).
        min_compression_rate: as the hook's ``PowerSGDState``.
        use_error_feedback: as the hook's ``PowerSGDState``.
        warm_start: as the hook's ``PowerSGDState``.
        seed: as the hook's ``PowerSGDState`` (its ``random_seed``).
        epsilon: as the hook's ``PowerSGDState``.
    """

    def __init__(
        self,
        n_nodes: int,
        shapes: list[tuple[int, ...]],
        rank: int = 1,
        *,
        start_iter: int = 0,
        min_compression_rate: float = 2.0,
        use_error_feedback: bool = True,
        warm_start: bool = True,
        seed: int = 0,
        epsilon: float = 0.0,
    ) -> None:
        self.rank = check_int("rank", rank, 1)
        self.start_iter = check_int("start_iter", start_iter, 0)
        self.n_nodes, self.shapes = n_nodes, [tuple(s) for s in shapes]
        self.min_compression_rate = min_compression_rate
        self.use_error_feedback, self.warm_start = use_error_feedback, warm_start
        self.epsilon = epsilon
        self.rng = np.random.RandomState(seed)
        self.iter = 0
        self.error: torch.Tensor | None = None
        self.qs: list[torch.Tensor] | None = None
        self.numels = [math.prod(s) for s in self.shapes]
        self.plan: list[tuple[int, int, int, int, int]] = []  # offset, numel, n, m, r
        self.uncompressed: list[tuple[int, int]] = []
        offset = 0
        for shape, numel in zip(self.shapes, self.numels, strict=True):
            n = shape[0] if shape else 1
            m = numel // n
            r = min(n, m, self.rank)
            if (n + m) * r * min_compression_rate < n * m:
                self.plan.append((offset, numel, n, m, r))
            else:
                self.uncompressed.append((offset, numel))
            offset += numel
        self.total = offset

    def allreduce_lengths(self) -> list[int]:
        """Lengths of the vectors all-reduced in one compressed iteration (uncompressed, P, Q)."""
        return [
            sum(numel for _, numel in self.uncompressed),
            sum(n * r for _, _, n, _, r in self.plan),
            sum(m * r for _, _, _, m, r in self.plan),
        ]

    def __call__(self, flat: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Local gradients ``(N, total)`` -> (what every worker applies ``(N, total)``, the
        lengths of the vectors all-reduced)."""
        N = self.n_nodes
        if self.iter < self.start_iter:
            self.iter += 1
            avg = (flat / N).sum(0, keepdim=True)
            return avg.expand_as(flat).clone(), [self.total]
        if self.use_error_feedback:
            if self.error is None:
                self.error = torch.zeros_like(flat)
            flat = flat + self.error
        out = torch.empty_like(flat)
        for offset, numel in self.uncompressed:
            chunk = flat[:, offset : offset + numel]
            out[:, offset : offset + numel] = chunk.sum(0, keepdim=True) / N
        if self.qs is None or not self.warm_start:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.rng.randint(1_000_000_000))
                qs = [
                    orthogonalize(torch.randn(1, m, r, dtype=flat.dtype), self.epsilon).to(
                        flat.device
                    )
                    for _, _, _, m, r in self.plan
                ]
        else:
            qs = [orthogonalize(q, self.epsilon) for q in self.qs]
        new_qs = []
        for (offset, numel, n, m, _r), q in zip(self.plan, qs, strict=True):
            mats = flat[:, offset : offset + numel].reshape(N, n, m)
            p = torch.bmm(mats, q.expand(N, -1, -1)).sum(0, keepdim=True)
            orthogonalize(p, self.epsilon)
            q_new = torch.bmm(mats.transpose(1, 2), p.expand(N, -1, -1)).sum(0, keepdim=True) / N
            approx = torch.bmm(p, q_new.transpose(1, 2))
            out[:, offset : offset + numel] = approx.reshape(1, numel)
            new_qs.append(q_new)
        self.qs = new_qs
        if self.use_error_feedback:
            self.error = flat - out
        self.iter += 1
        return out, self.allreduce_lengths()


class PowerSGD(ReplicatedProtocol):
    """Low-rank gradient compression (Vogels et al. 2019) as torch's PowerSGD hook: see
    :class:`PowerSGDCompressor`; its three all-reduces are billed with the ring model."""

    def __init__(
        self, n_nodes, image_shape, num_classes, *, rank: int = 2, start_iter: int = 0, **common
    ):
        check_int("rank", rank, 1)
        check_int("start_iter", start_iter, 0)
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_edges(self.channel, "powersgd", "ring")
        shapes, perm = torch_layout(self.model)
        self.perm, self.unperm = perm.to(self.device), perm.argsort().to(self.device)
        self.compressor = PowerSGDCompressor(
            n_nodes, shapes, rank, start_iter=start_iter, seed=self.seed
        )
        self.compute.model_copies = 1  # the hook's error buffer: one model-sized tensor

    def exchange(self, grads):
        applied, lengths = self.compressor(grads[:, self.perm])
        bits = sum(ring_allreduce_bits(self.n_nodes, length) for length in lengths)
        self.channel.account("gradients", bits)
        return applied[:, self.unperm]


# -- codistillation ---------------------------------------------------------------------------
class Codistillation(CommProtocol):
    """Codistillation (Anil et al. 2018, the thesis' reference [1]): independently initialised
    nodes train on their own data with an extra distillation term towards the mean prediction
    of *stale copies* of their peers, refreshed every ``period`` steps (each node broadcasts its
    parameters to its ``N - 1`` peers). Loss: ``CE(labels) + weight * CE(mean peer softmax)``
    once the first copies have arrived."""

    def __init__(
        self,
        n_nodes,
        image_shape,
        num_classes,
        *,
        period: int = 50,
        weight: float = 1.0,
        **common,
    ):
        self.period = check_int("period", period, 1)
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_full_graph(self.channel, "codistill")
        with seeded(self.seed, self.device):
            self.model = self._classifier(n_nodes)
        self.optimizer = make_optimizer(self.model.parameters(), self.lr, self.optimizer_kind)
        self.weight = float(weight)
        self.stale: BatchedClassifier | None = None
        self.num_params_per_node = sum(p.numel() for p in self.model.parameters()) // n_nodes
        self.compute.model_copies = n_nodes - 1
        others = ~torch.eye(n_nodes, dtype=torch.bool, device=self.device)
        self._peer_weights = (others.float() / (n_nodes - 1))[..., None, None]  # (j, i, 1, 1)

    def peer_targets(self, images: torch.Tensor) -> torch.Tensor:
        """Mean prediction ``(N, M, C)`` of the stale copies of node ``i``'s peers on its
        minibatch ``images[i]``."""
        N, M = images.shape[:2]
        pooled = images.reshape(1, N * M, *images.shape[2:]).expand(N, -1, *images.shape[2:])
        with torch.no_grad():
            _, logits = self.stale(pooled)
        probs = logits.softmax(-1).reshape(N, N, M, -1)  # [copy j, batch of node i]
        return (probs * self._peer_weights).sum(0)

    def step(self, views, out_valid):
        N = self.n_nodes
        features, logits = self.model(views["images"])
        loss = node_losses(features, logits, views, "labels", 1.0, 1.0)
        self.compute.forward += N
        if self.stale is not None and self.weight > 0:
            target = self.peer_targets(views["images"])
            distill = -(target * logits.log_softmax(-1)).sum(-1).mean(-1)
            loss = loss + self.weight * distill
            self.compute.forward += N * (N - 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.compute.backward += N
        self.optimizer.step()
        self.t += 1
        if self.t % self.period == 0:
            self.stale = copy.deepcopy(self.model).requires_grad_(False)
            per_node = (N - 1) * FLOAT_BITS * self.num_params_per_node
            self.channel.account("checkpoints", per_node, messages=N - 1)
        return self._no_broadcast(out_valid), None

    def predict_proba(self, x):
        return self._predict(self.model, x)


# -- independent subnet training --------------------------------------------------------------
class IndependentSubnets(CommProtocol):
    """Independent subnet training (IST, seed 004) of the MLP: node 0 holds the full model;
    every ``period`` steps the hidden units of both hidden layers are re-partitioned at random
    among the ``N`` nodes, each node receives its subnet (the weights between its own units,
    the input columns and output rows of its units, the output bias), trains it on its own data
    for ``period`` steps (its kept activations scaled by ``N``, as inverted dropout, so that the
    full model's pre-activations match), and sends it back; node 0 writes each weight back from
    its owner and averages the output bias. Weights between units of different nodes stay as
    they are until a later partition puts both ends on one node. The population is evaluated
    as node 0's full model as of the last merge (no model broadcast is billed for it)."""

    def __init__(self, n_nodes, image_shape, num_classes, *, period: int = 10, **common):
        self.period = check_int("period", period, 1)
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_edges(self.channel, "ist", "star")
        if self.arch != "mlp":
            raise ValueError(f"ist trains MLP subnets: arch must be 'mlp', got {self.arch!r}")
        if min(self.hidden, self.feature_dim) < n_nodes:
            raise ValueError(
                f"ist splits hidden units among nodes: hidden={self.hidden} and "
                f"feature_dim={self.feature_dim} must be >= n_nodes={n_nodes}"
            )
        with seeded(self.seed, self.device):
            self.full = self._classifier(1)
            self.model = self._classifier(n_nodes)
        self.optimizer = make_optimizer(self.model.parameters(), self.lr, self.optimizer_kind)
        self.gen = torch.Generator(device="cpu").manual_seed(generator_seed(self.seed))
        self.num_params_per_node = sum(p.numel() for p in self.full.parameters())
        self.owner1 = self.owner2 = torch.zeros(1)
        D = math.prod(self.image_shape)
        full_macs = (
            D * self.hidden + self.hidden * self.feature_dim + self.feature_dim * num_classes
        )
        sub_macs = (
            D * self.hidden / n_nodes
            + self.hidden * self.feature_dim / n_nodes**2
            + self.feature_dim * num_classes / n_nodes
        )
        self.compute.pass_fraction = sub_macs / full_macs

    def _layers(self, model):
        return [*model.body, model.head]

    def subnet_params(self) -> torch.Tensor:
        """Parameters of each node's current subnet ``(N,)``."""
        D, C = math.prod(self.image_shape), self.num_classes
        idx = torch.arange(self.n_nodes)
        s = (self.owner1[None, :] == idx[:, None]).sum(1)
        t = (self.owner2[None, :] == idx[:, None]).sum(1)
        return D * s + s + s * t + t + t * C + C

    def _bill(self, tag: str, download: bool) -> None:
        sub = self.subnet_params() * FLOAT_BITS
        server_side = torch.zeros_like(sub)
        server_side[0] = sub[1:].sum()
        worker_side = sub.clone()
        worker_side[0] = 0
        sent, received = (server_side, worker_side) if download else (worker_side, server_side)
        self.channel.account(tag, sent, received)

    @torch.no_grad()
    def _new_round(self) -> None:
        N = self.n_nodes
        self.owner1 = torch.randperm(self.hidden, generator=self.gen) % N
        self.owner2 = torch.randperm(self.feature_dim, generator=self.gen) % N
        dev = self.device
        self.mask1 = (self.owner1.to(dev)[None, :] == torch.arange(N, device=dev)[:, None]).float()
        self.mask2 = (self.owner2.to(dev)[None, :] == torch.arange(N, device=dev)[:, None]).float()
        for p, q in zip(self.model.parameters(), self.full.parameters(), strict=True):
            p.copy_(q.expand_as(p))
        self._bill("subnets", download=True)

    @torch.no_grad()
    def merged(self) -> BatchedClassifier:
        """The full model with every node's subnet written back (node 0's merge)."""
        out = copy.deepcopy(self.full)
        o1, o2 = self.owner1.to(self.device), self.owner2.to(self.device)
        (w1, w2, wh), (f1, f2, fh) = self._layers(self.model), self._layers(out)
        f1.weight.copy_(w1.weight.gather(0, o1.expand_as(f1.weight)))
        f1.bias.copy_(w1.bias.gather(0, o1.expand_as(f1.bias)))
        same = o1[:, None] == o2[None, :]
        f2.weight.copy_(torch.where(same, w2.weight.gather(0, o2.expand_as(f2.weight)), f2.weight))
        f2.bias.copy_(w2.bias.gather(0, o2.expand_as(f2.bias)))
        fh.weight.copy_(wh.weight.gather(0, o2[:, None].expand_as(fh.weight)))
        fh.bias.copy_(wh.bias.mean(0, keepdim=True))
        return out

    def step(self, views, out_valid):
        if self.t % self.period == 0:
            self._new_round()
        N, M = self.n_nodes, views["images"].shape[1]
        l1, l2, head = self._layers(self.model)
        # the kept 1/N of each layer's units, scaled by N as inverted dropout, so that the
        # full model's pre-activations match a subnet's in expectation
        h = torch.relu(l1(views["images"].reshape(N, M, -1))) * (N * self.mask1[:, None])
        h = torch.relu(l2(h)) * (N * self.mask2[:, None])
        logits = head(h)
        loss = node_losses(h, logits, views, "labels", 1.0, 1.0).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.compute.forward += N
        self.compute.backward += N
        self.t += 1
        if self.t % self.period == 0:
            self.full = self.merged()
            self._bill("subnets", download=False)
        return self._no_broadcast(out_valid), None

    def predict_proba(self, x):
        # node 0's full model as of the last merge: mid-round, the subnets' changes have not
        # been uploaded (nor billed) yet
        return self._predict(self.full, x)


# -- the centralised reference ----------------------------------------------------------------
class Centralised(CommProtocol):
    """Ship the data: every node sends its minibatch (8-bit pixels, ``ceil(log2 C)``-bit labels)
    to node 0, which trains one model (node 0's replica initialisation) on the combined batch.
    The reference synchronous SGD must match; the population is evaluated as node 0's model
    (no model broadcast is billed for it)."""

    def __init__(self, n_nodes, image_shape, num_classes, **common):
        super().__init__(n_nodes, image_shape, num_classes, **common)
        _require_edges(self.channel, "centralised", "to0")
        with seeded(self.seed, self.device):
            self.model = self._classifier(1)
        self.optimizer = make_optimizer(self.model.parameters(), self.lr, self.optimizer_kind)
        self.num_params_per_node = sum(p.numel() for p in self.model.parameters())
        self.sample_bits = 8 * math.prod(self.image_shape) + index_bits(num_classes)

    def step(self, views, out_valid):
        N, M = views["images"].shape[:2]
        pooled = {k: views[k].reshape(1, N * M, *views[k].shape[2:]) for k in ("images", "labels")}
        pooled["from_inbox"] = torch.zeros(1, device=self.device)
        features, logits = self.model(pooled["images"])
        loss = node_losses(features, logits, pooled, "labels", 1.0, 1.0).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.compute.forward += N
        self.compute.backward += N
        self.t += 1
        sent = torch.full((N,), M * self.sample_bits, dtype=torch.int64)
        sent[0] = 0
        received = torch.zeros(N, dtype=torch.int64)
        received[0] = sent.sum()
        self.channel.account("data", sent, received, messages=(sent > 0).long())
        return self._no_broadcast(out_valid), None

    def predict_proba(self, x):
        return self._predict(self.model, x)


# -- registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProtocolSpec:
    """One named protocol: its class, fixed options, and the game it runs on."""

    cls: type[CommProtocol]
    options: dict[str, Any] = field(default_factory=dict)
    content: str = "labels"
    float_bits: int = 32
    doc: str = ""


PROTOCOL_SPECS: dict[str, ProtocolSpec] = {
    "isolated": ProtocolSpec(OutputSharing, {"share": "none"}, doc="no communication"),
    "labels": ProtocolSpec(OutputSharing, {"share": "labels"}, doc="output sharing: true labels"),
    "logits": ProtocolSpec(
        OutputSharing, {"share": "logits"}, "logits", doc="output sharing: logits"
    ),
    "features": ProtocolSpec(
        OutputSharing, {"share": "features"}, "features", doc="output sharing: features"
    ),
    "features_8bit": ProtocolSpec(
        OutputSharing, {"share": "features"}, "features", 8, doc="output sharing: 8-bit features"
    ),
    "sync_sgd": ProtocolSpec(SyncSGD, doc="synchronous SGD, ring all-reduce every step"),
    "topk": ProtocolSpec(TopK, doc="top-k sparsified gradients, error feedback"),
    "powersgd": ProtocolSpec(PowerSGD, doc="PowerSGD low-rank gradients, error feedback"),
    "int8": ProtocolSpec(Int8, doc="8-bit quantised gradients, error feedback"),
    "sign": ProtocolSpec(Sign, doc="1-bit signSGD, error feedback"),
    "local_sgd": ProtocolSpec(LocalSGD, doc="local SGD, parameters averaged every H steps"),
    "codistill": ProtocolSpec(Codistillation, doc="codistillation from stale peer copies"),
    "ist": ProtocolSpec(IndependentSubnets, doc="independent subnet training (MLP)"),
    "centralised": ProtocolSpec(Centralised, doc="all minibatches shipped to one model"),
}
PROTOCOLS: tuple[str, ...] = tuple(PROTOCOL_SPECS)

# Options each protocol accepts from make_protocol (the rest are ignored for it).
OPTIONS: dict[type, tuple[str, ...]] = {
    OutputSharing: ("broadcast_prob", "temperature", "feature_weight"),
    TopK: ("ratio",),
    PowerSGD: ("rank", "start_iter"),
    Int8: ("bits",),
    LocalSGD: ("period",),
    Codistillation: ("period", "weight"),
    IndependentSubnets: ("period",),
}


def make_protocol(
    name: str,
    n_nodes: int,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    options: dict[str, dict[str, Any]] | None = None,
    **common: Any,
) -> CommProtocol:
    """Build protocol ``name`` (one of :data:`PROTOCOLS`).

    ``options`` maps a protocol name to its own keywords (e.g. ``{"topk": {"ratio": 0.01}}``);
    ``common`` are :class:`CommProtocol`'s keywords (``channel``, ``arch``, ``device``, ...).
    """
    if name not in PROTOCOL_SPECS:
        raise ValueError(f"unknown protocol {name!r}; valid choices: {list(PROTOCOLS)}")
    strays = sorted(set(options or {}) - set(PROTOCOL_SPECS))
    if strays:  # options of other protocols are fine (one dict serves a whole table)
        raise ValueError(f"options name no protocol: {strays}; valid keys: {list(PROTOCOLS)}")
    spec = PROTOCOL_SPECS[name]
    own = dict((options or {}).get(name, {}))
    allowed = OPTIONS.get(spec.cls, ())
    unknown = sorted(set(own) - set(allowed))
    if unknown:
        raise ValueError(
            f"protocol {name!r} has no option(s) {unknown}; valid choices: {list(allowed)}"
        )
    return spec.cls(n_nodes, image_shape, num_classes, **spec.options, **own, **common)


# -- the loop against the env ------------------------------------------------------------------
def run_protocol(
    game: NodeGraphGame,
    protocol: CommProtocol,
    steps: int,
    *,
    eval_every: int = 0,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Train ``protocol`` against ``game`` (``num_envs=1``) for ``steps`` parallel steps.

    Evaluates on ``test`` every ``eval_every`` steps and at the end; returns
    ``[{"step", "average", "collective", "per_node", "bits", "bits_by_tag", "compute"}, ...]``
    where ``bits`` is everything the game's channel carried so far (all tags).
    """
    if game.num_envs != 1 or game.channel is None:
        raise ValueError("run_protocol drives one world (num_envs=1) of at least 2 nodes")
    if protocol.channel is not game.channel:
        raise ValueError("build the protocol with channel=game.channel: one accounting")

    def extra() -> dict[str, Any]:
        by_tag = {t: int(c["bits_sent"].sum()) for t, c in game.channel.counters.items()}
        return {
            "bits": sum(by_tag.values()),
            "bits_by_tag": by_tag,
            "compute": protocol.compute.as_dict(),
        }

    return run_population(
        game,
        protocol,
        steps,
        eval_every=eval_every,
        test=test,
        seed=seed,
        progress=progress,
        extra=extra,
    )
