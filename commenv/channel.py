"""The channel: one component that carries every message of every game.

A :class:`Channel` knows who hears whom (a directed graph over agents), delivers batched
payloads along its edges, optionally corrupts bits (flip noise) and loses messages (drops),
counts every bit it carries, and routes relaxed float messages *differentiably*: gradient
flows from a listener back into the speaker, or is stopped, edge by edge. The thesis'
communication levels (chapter 4) are exactly choices of that per-edge gradient mask.

Batch contract (as in VMAS): payloads are ``(num_envs, n_agents, *payload_shape)``; what a
receiver gets is laid out in *slots*, one per in-neighbour in increasing sender order,
``(num_envs, n_agents, max_in_degree, *payload_shape)``, with a boolean ``delivered`` mask
``(num_envs, n_agents, max_in_degree)`` saying which slots hold a message this step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from commenv.core import check_choice, check_int, check_memory, check_probability, describe

GRAPHS: tuple[str, ...] = ("one_way", "two_way", "all_to_all", "ring")
"""Named graphs accepted by :func:`make_adjacency` (any user graph is accepted too)."""

GraphSpec = str | np.ndarray | torch.Tensor | Sequence[tuple[int, int]]


def ring_offsets(k: int) -> list[int]:
    """Offsets of the ``k`` closest neighbours on a ring: +1, -1, +2, -2, ..."""
    return [(j + 1) // 2 * (1 if j % 2 else -1) for j in range(1, k + 1)]


def make_adjacency(graph: GraphSpec, n_agents: int, k: int | None = None) -> torch.Tensor:
    """Build a ``(n, n)`` boolean adjacency matrix, ``adj[sender, receiver]``.

    ``graph`` is one of :data:`GRAPHS` or a user graph:

    - an ``(n, n)`` NumPy array or torch tensor ``[sender, receiver]``, bool or holding only
      0/1 (other values raise), with a zero diagonal (self-loops raise);
    - a list of ``(sender, receiver)`` edges (tuples, or lists of two ints), no self-loops.
      A nested Python list is read as an edge list unless it is a square ``n x n`` 0/1
      matrix; one that fits both readings with different graphs (e.g. ``[[1, 0], [0, 1]]``
      for 2 agents: edges ``1 -> 0`` and ``0 -> 1``, or a matrix of two self-loops) raises,
      asking for ``np.asarray(graph)`` (a matrix) or a list of tuples (edges).

    ``k`` is the number of neighbours of ``graph="ring"`` (``1 <= k <= n - 1``) and raises
    with any other graph, which would ignore it.

    - ``one_way``: ``agent_0`` speaks to every other agent (the thesis' teacher -> student).
    - ``two_way``: ``agent_0`` and every other agent hear each other (a star; for 2 agents,
      the thesis' two-way channel).
    - ``all_to_all``: everyone hears everyone else.
    - ``ring``: each agent speaks to its ``k`` closest agents on a ring (``k = n - 1`` is
      fully connected), as in the thesis' chapter 2.
    """
    n_agents = check_int("n_agents", n_agents, 2)
    if isinstance(graph, str):
        return _named_graph(graph, n_agents, k)
    if k is not None:
        raise ValueError(
            f"k must be None unless graph='ring' (a user graph would ignore it), got k={k!r}"
        )
    if isinstance(graph, np.ndarray | torch.Tensor):
        return _matrix_graph(graph, n_agents)
    if isinstance(graph, list | tuple):
        return _list_graph(graph, n_agents)
    raise ValueError(
        f"graph must be one of {list(GRAPHS)}, an (n, n) 0/1 matrix or a list of "
        f"(sender, receiver) edges, got {describe(graph)}"
    )


def _named_graph(graph: str, n: int, k: int | None) -> torch.Tensor:
    check_choice("graph", graph, GRAPHS)
    if graph != "ring" and k is not None:
        raise ValueError(
            f"k must be None unless graph='ring' (graph={graph!r} would ignore it), got k={k!r}"
        )
    adj = torch.zeros(n, n, dtype=torch.bool)
    if graph == "one_way":
        adj[0, 1:] = True
    elif graph == "two_way":
        adj[0, 1:] = True
        adj[1:, 0] = True
    elif graph == "all_to_all":
        adj[:] = True
        adj.fill_diagonal_(False)
    else:
        is_int = isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_)
        if not is_int or not 1 <= k <= n - 1:
            raise ValueError(f"graph='ring' needs 1 <= k <= n_agents - 1 = {n - 1}, got k={k!r}")
        src = torch.arange(n)
        for off in ring_offsets(int(k)):  # k <= n entries: a loop over offsets, not nodes
            adj[src, (src + off) % n] = True
    return adj


def _matrix_graph(graph: np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    try:
        user = torch.as_tensor(np.asarray(graph) if isinstance(graph, np.ndarray) else graph)
    except (TypeError, ValueError, RuntimeError):  # strings, objects: not a 0/1 matrix
        raise ValueError(
            f"a user graph matrix must hold only 0/1 (or bools), got {describe(graph)}"
        ) from None
    if tuple(user.shape) != (n, n):
        raise ValueError(
            f"a user graph matrix must have shape ({n}, {n}) [sender, receiver], "
            f"got {tuple(user.shape)}"
        )
    if user.is_complex() or not bool(((user == 0) | (user == 1)).all()):
        raise ValueError(
            f"a user graph matrix must hold only 0/1 (or bools), got {describe(graph)} with "
            f"values {torch.unique(user.detach().cpu())[:6].tolist()}"
        )
    adj = user.to(torch.bool).cpu().clone()
    if bool(adj.diagonal().any()):
        loops = adj.diagonal().nonzero().flatten().tolist()
        raise ValueError(f"a user graph may not have self-loops; agents {loops} hear themselves")
    return adj


def _is_agent(a: Any, n: int) -> bool:
    """An agent index of an edge: an integer in [0, n), not a bool."""
    return isinstance(a, int | np.integer) and not isinstance(a, bool | np.bool_) and 0 <= a < n


def _edges_graph(edges: Sequence, n: int) -> torch.Tensor:
    adj = torch.zeros(n, n, dtype=torch.bool)
    for edge in edges:
        ok = isinstance(edge, tuple | list) and len(edge) == 2
        ok = ok and all(_is_agent(a, n) for a in edge)
        if not ok:
            raise ValueError(
                f"an edge must be (sender, receiver) with agents in [0, {n}), got {edge!r}"
            )
        if edge[0] == edge[1]:
            raise ValueError(f"an edge may not be a self-loop, got {edge!r}")
        if adj[int(edge[0]), int(edge[1])]:
            raise ValueError(f"edge {edge!r} is listed twice; list each edge once")
        adj[int(edge[0]), int(edge[1])] = True
    return adj


def _list_graph(graph: Sequence, n: int) -> torch.Tensor:
    rows = list(graph)
    square = len(rows) == n and all(
        isinstance(r, list) and len(r) == n and all(type(v) is int and v in (0, 1) for v in r)
        for r in rows
    )
    if not square:  # tuples, or anything that cannot be an n x n 0/1 matrix: edges
        return _edges_graph(rows, n)
    as_matrix = _try(_matrix_graph, np.asarray(rows), n)
    as_edges = _try(_edges_graph, rows, n)
    if as_edges is not None and (as_matrix is None or not torch.equal(as_edges, as_matrix)):
        raise ValueError(
            f"ambiguous graph {rows!r}: it reads both as an {n} x {n} 0/1 matrix and as a list "
            "of edges; pass np.asarray(graph) for a matrix or a list of (sender, receiver) "
            "tuples for edges"
        )
    return _matrix_graph(np.asarray(rows), n) if as_matrix is None else as_matrix


def _try(build, graph, n: int) -> torch.Tensor | None:
    try:
        return build(graph, n)
    except ValueError:
        return None


FLOAT_BITS: tuple[int, ...] = (*range(1, 17), 32, 64)
"""Valid float payload precisions: 32 or 64 (sent as is), 16 (IEEE half) or 1..15 (uniform
levels); anything else (e.g. 33) raises."""


def check_channel_memory(
    n_agents: int, adjacency: torch.Tensor | None, allow_large: bool, name: str = "n_agents"
) -> None:
    """The channel's tables within :data:`commenv.core.MEMORY_LIMIT_BYTES`: the ``(n, n)``
    adjacency before it is built (``adjacency=None``), then the routing tables, which grow as
    ``n * max_in_degree * n`` (e.g. 4 GB for 1,000 fully connected agents)."""
    if adjacency is None:
        check_memory("adjacency", n_agents * n_agents, allow_large, **{name: n_agents})
        return
    max_in = int(adjacency.sum(0).max())
    nbytes = 4 * n_agents * max_in * n_agents + 24 * n_agents * max_in
    sizes = {name: n_agents, "max_in_degree": max_in}
    check_memory("channel routing tables", nbytes, allow_large, **sizes)


def check_float_bits(bits: int) -> int:
    """Validate a float payload precision: 32 or 64 (exact), 16 (IEEE half), or 1–15 levels."""
    bits = check_int("float_bits", bits, 1)
    if bits not in FLOAT_BITS:
        raise ValueError(
            "float_bits must be 32 or 64 (sent as is), 16 (IEEE half precision) or 1..15 (uniform "
            f"levels between each vector's min and max); got {bits!r}"
        )
    return bits


def float_message_bits(vectors: int, width: int, bits: int) -> int:
    """Bits on the wire for ``vectors`` float vectors of ``width`` values at ``bits`` each.

    Below 16 bits each vector also carries its min and max as two fp32 numbers (64 bits), which
    the receiver needs to undo :func:`quantize`.
    """
    check_float_bits(bits)
    return vectors * (width * bits + (64 if bits < 16 else 0))


HALF_MAX = 65504.0
"""The largest finite IEEE half-precision value."""


def half_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float16, saturating at +-:data:`HALF_MAX` instead of overflowing to inf."""
    return x.clamp(-HALF_MAX, HALF_MAX).to(torch.float16)


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """What a receiver reconstructs from floats ``x`` sent at ``bits`` bits per value.

    ``bits`` 32 or 64: ``x`` itself; 16: rounded to IEEE half precision, saturating at its largest
    finite value (+-65504: a finite payload never arrives as inf); 1..15: each vector along
    the last dimension is sent as ``2**bits`` evenly spaced levels between its min and max,
    rounded to the nearest level. No gradient: a channel carries values, not graphs.
    """
    bits = check_float_bits(bits)
    if bits >= 32:
        return x
    x = x.detach()
    if bits == 16:
        return half_precision(x).to(x.dtype)
    low = x.amin(-1, keepdim=True)
    step = (x.amax(-1, keepdim=True) - low) / (2**bits - 1)
    safe = torch.where(step > 0, step, torch.ones_like(step))  # a constant vector is exact
    return low + torch.round((x - low) / safe) * step


@dataclass
class Delivery:
    """What one :meth:`Channel.route` call delivered (all tensors batched over envs)."""

    inbox: torch.Tensor
    """``(num_envs, n, max_in, *payload)``: slot ``j`` of receiver ``r`` holds the payload of
    its ``j``-th in-neighbour ``channel.senders[r, j]`` (zeros where nothing arrived)."""
    delivered: torch.Tensor
    """``(num_envs, n, max_in)`` bool: the slot holds a message that arrived this step."""
    bits_sent: torch.Tensor
    """``(num_envs, n)`` int64: bits each agent put on the channel (counted per edge)."""
    bits_received: torch.Tensor
    """``(num_envs, n)`` int64: bits each agent received (dropped messages excluded)."""
    dropped: torch.Tensor
    """``(num_envs, n)`` int64: messages lost on the way to each receiver."""


@dataclass
class Messages:
    """What one :meth:`Channel.send` call put on the channel: one entry per message (a
    ``(world, sender, receiver)`` edge used this step), sorted by world, then receiver, then
    sender, i.e. in the slot order :meth:`Channel.route` uses. Only the messages sent exist
    here: nothing is laid out for the edges that stayed silent."""

    env: torch.Tensor
    """``(E,)`` int64: the world of each message."""
    sender: torch.Tensor
    """``(E,)`` int64: who sent it."""
    receiver: torch.Tensor
    """``(E,)`` int64: who it was sent to."""
    delivered: torch.Tensor
    """``(E,)`` bool: it arrived (False: lost to ``drop_prob``)."""
    rank: torch.Tensor
    """``(E,)`` int64: its arrival order at its receiver among this call's delivered messages
    (0 for the first in slot order; -1 for a lost one)."""
    arrivals: torch.Tensor
    """``(num_envs, n)`` int64: messages delivered to each receiver."""
    sent: torch.Tensor
    """``(num_envs, n)`` int64: messages each sender put on the channel (drops included)."""

    def gather(self, payload: torch.Tensor) -> torch.Tensor:
        """The ``(E, *shape)`` contents of the messages: ``payload[env, sender]`` for a
        ``(num_envs, n, *shape)`` payload of one message per sender."""
        return payload[self.env, self.sender]


class Channel:
    """A directed communication graph that routes, corrupts and meters batched payloads.

    Args:
        adjacency: ``(n, n)`` boolean matrix, ``adjacency[s, r]`` means ``s`` speaks to ``r``
            (see :func:`make_adjacency`).
        flip_prob: probability that each delivered bit is flipped (binary payloads only).
        drop_prob: probability that each message on each edge is lost.
        device: where routing tensors live.

    Counters (``bits_sent``, ``bits_received``, ``messages_sent``, ``messages_dropped``) are
    per-agent int64 totals summed over envs and over every :meth:`route` call, kept separately
    per ``tag`` (e.g. ``"images"`` and ``"payload"``); :meth:`reset_counters` zeroes them.
    """

    def __init__(
        self,
        adjacency: torch.Tensor,
        *,
        flip_prob: float = 0.0,
        drop_prob: float = 0.0,
        device: str | torch.device = "cpu",
    ) -> None:
        check_probability("flip_prob", flip_prob)
        check_probability("drop_prob", drop_prob)
        shape = tuple(getattr(adjacency, "shape", np.shape(adjacency)))
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"adjacency must be square (n, n), got shape {shape}")
        # 0/1 only and no self-loops, as make_adjacency checks a user matrix: nothing is cast
        adj = _matrix_graph(adjacency, shape[0])
        self.device = torch.device(device)
        self.adjacency = adj.to(self.device)
        self.n_agents = int(adj.shape[0])
        self.flip_prob = float(flip_prob)
        self.drop_prob = float(drop_prob)
        in_deg = adj.sum(0)
        self.max_in_degree = int(in_deg.max()) if self.n_agents else 0
        # senders[r, j]: j-th in-neighbour of r (sorted); -1 pads receivers with fewer.
        order = torch.sort((~adj).to(torch.int8), dim=0, stable=True).indices.T
        slots = torch.arange(self.max_in_degree)
        valid = slots[None, :] < in_deg[:, None]
        self.senders = torch.where(valid, order[:, : self.max_in_degree], -1).to(self.device)
        self.slot_valid = valid.to(self.device)
        self._gather = self.senders.clamp(min=0)
        self._all_slots_valid = bool(valid.all())
        self.out_degree = adj.sum(1).to(self.device, torch.int64)
        self.in_degree = in_deg.to(self.device, torch.int64)
        # (n * max_in, n): slot [r, j] -> its sender, to credit senders in one matmul
        slot_to_sender = torch.nn.functional.one_hot(self._gather.cpu(), self.n_agents)
        self._slot_to_sender = (
            (slot_to_sender * valid[..., None])
            .reshape(-1, self.n_agents)
            .to(self.device, torch.float32)
        )
        self._static_cache: dict[int, tuple[torch.Tensor, ...]] = {}
        self.reset_counters()

    @classmethod
    def from_spec(
        cls,
        graph: GraphSpec,
        n_agents: int,
        *,
        k: int | None = None,
        flip_prob: float = 0.0,
        drop_prob: float = 0.0,
        device: str | torch.device = "cpu",
    ) -> Channel:
        """Channel over a named or user graph (see :func:`make_adjacency`)."""
        return cls(
            make_adjacency(graph, n_agents, k),
            flip_prob=flip_prob,
            drop_prob=drop_prob,
            device=device,
        )

    # -- graph queries ---------------------------------------------------------------------
    @property
    def edges(self) -> list[tuple[int, int]]:
        """All ``(sender, receiver)`` edges."""
        return [tuple(e) for e in self.adjacency.nonzero().tolist()]

    def in_neighbours(self, receiver: int) -> list[int]:
        """Senders heard by ``receiver``, in slot order."""
        return [s for s in self.senders[receiver].tolist() if s >= 0]

    def out_neighbours(self, sender: int) -> list[int]:
        """Receivers of ``sender``, in increasing order."""
        return self.adjacency[sender].nonzero().flatten().tolist()

    def edge_mask_to_slots(self, edge_mask: torch.Tensor) -> torch.Tensor:
        """Map a per-edge ``(..., n, n)`` [sender, receiver] tensor to receiver slots.

        Returns ``(..., n, max_in)``: entry ``[r, j]`` is ``edge_mask[senders[r, j], r]``
        (False/0 on padding slots).
        """
        recv = torch.arange(self.n_agents, device=self.device)[:, None]
        out = edge_mask[..., self._gather, recv.expand_as(self._gather)]
        return out * self.slot_valid if out.dtype != torch.bool else out & self.slot_valid

    def sum_to_senders(self, per_slot: torch.Tensor) -> torch.Tensor:
        """Sum receiver-slot values ``(..., n, max_in)`` into their senders: ``(..., n)``.

        E.g. ``sum_to_senders(delivery.delivered.float())`` is how many listeners each
        sender reached; weighting by a listener score credits each sender with it.
        """
        flat = per_slot.reshape(*per_slot.shape[:-2], -1)
        return flat.to(self._slot_to_sender.dtype) @ self._slot_to_sender

    # -- routing ---------------------------------------------------------------------------
    def route(
        self,
        payload: torch.Tensor,
        *,
        send_mask: torch.Tensor | None = None,
        grad_mask: torch.Tensor | bool = True,
        binary: bool = True,
        bits_per_message: int | None = None,
        generator: torch.Generator | None = None,
        tag: str = "message",
        out: torch.Tensor | None = None,
    ) -> Delivery:
        """Deliver ``payload`` ``(num_envs, n, *shape)`` along the graph.

        Args:
            payload: one message per sender. Binary payloads hold bits as 0/1; a float
                tensor in [0, 1] that requires grad is a relaxed message and keeps its graph.
            send_mask: optional ``(num_envs, n, n)`` bool [sender, receiver]: which edges the
                sender uses this step (default: all of its edges). Ignored off the graph.
            grad_mask: ``(n, n)`` bool [sender, receiver] or a single bool: where True the
                receiver's copy stays attached to the sender's graph, else it is detached.
            binary: payloads are bits (flip noise applies, default bit count = numel).
            bits_per_message: bits one message costs on one edge (default: payload numel for
                binary payloads; required for non-binary ones, e.g. ``32 * numel`` for fp32).
            generator: RNG for flips and drops (pass one for reproducible episodes).
            tag: counter bucket this traffic is accounted under.
            out: optional ``(num_envs, n, max_in_degree, *shape)`` tensor of ``payload``'s dtype
                that the gathered inbox is written into (a game recycles one so that large
                batches do not fault in a fresh inbox every step); ignored when ``payload``
                requires grad. The returned inbox may be ``out`` itself.
        """
        n = self.n_agents
        if payload.ndim < 2 or payload.shape[1] != n:
            raise ValueError(
                f"payload must be (num_envs, n_agents={n}, ...), got {tuple(payload.shape)}"
            )
        num_envs = payload.shape[0]
        msg_numel = int(np.prod(payload.shape[2:], dtype=np.int64))
        if bits_per_message is None:
            if not binary:
                raise ValueError("bits_per_message is required for non-binary payloads")
            bits_per_message = msg_numel
        if self.flip_prob > 0 and not binary:
            raise ValueError("flip noise (flip_prob > 0) only applies to binary payloads")

        # inbox[b, r, j] = payload[b, senders[r, j]]
        shape = (num_envs, n, self.max_in_degree, *payload.shape[2:])
        if out is not None and not payload.requires_grad:
            if tuple(out.shape) != shape or out.dtype != payload.dtype:
                raise ValueError(
                    f"out must be a {payload.dtype} tensor of shape {shape}, got "
                    f"{out.dtype} {tuple(out.shape)}"
                )
            flat = out.view(num_envs, n * self.max_in_degree, *payload.shape[2:])
            inbox = torch.index_select(payload, 1, self._gather.reshape(-1), out=flat).view(shape)
        else:
            inbox = payload.index_select(1, self._gather.reshape(-1)).view(shape)
        slot_ok = self.slot_valid.expand(num_envs, n, self.max_in_degree)
        if send_mask is not None:
            if tuple(send_mask.shape) != (num_envs, n, n):
                raise ValueError(
                    f"send_mask must be (num_envs={num_envs}, {n}, {n}) [sender, receiver], "
                    f"got {tuple(send_mask.shape)}"
                )
            slot_ok = slot_ok & self.edge_mask_to_slots(send_mask.to(torch.bool))
        delivered = slot_ok
        if self.drop_prob > 0:
            keep = torch.rand(slot_ok.shape, generator=generator, device=self.device)
            delivered = slot_ok & (keep >= self.drop_prob)

        if isinstance(grad_mask, bool):
            if not grad_mask:
                inbox = inbox.detach()
        elif payload.requires_grad:
            keep_grad = self.edge_mask_to_slots(grad_mask.to(self.device, torch.bool))
            keep_grad = keep_grad.view(1, n, self.max_in_degree, *([1] * (payload.ndim - 2)))
            inbox = torch.where(keep_grad, inbox, inbox.detach())
        if binary and self.flip_prob > 0:
            flips = torch.rand(inbox.shape, generator=generator, device=self.device)
            flips = (flips < self.flip_prob).to(inbox.dtype)
            inbox = inbox + flips * (1 - 2 * inbox)  # differentiable in the message
        static = send_mask is None and self.drop_prob == 0  # delivery = the graph itself
        if not (static and self._all_slots_valid):  # zero padding slots and lost messages
            shape_ones = [1] * (payload.ndim - 2)
            inbox = inbox * delivered.view(num_envs, n, self.max_in_degree, *shape_ones).to(
                inbox.dtype
            )

        # Accounting: a message costs bits on every edge it is put on (drops still cost).
        if static:  # traffic is the graph itself: count messages, expand to bits when read
            key = (tag, bits_per_message)
            self._static_messages[key] = self._static_messages.get(key, 0) + num_envs
            sent, received, zero = self._static_rows(bits_per_message)
            return Delivery(
                inbox,
                delivered,
                sent.expand(num_envs, n),
                received.expand(num_envs, n),
                zero.expand(num_envs, n),
            )
        counters = self._counters(tag)
        sent_edges = slot_ok.sum(2)  # per receiver
        senders_flat = self._gather.expand(num_envs, n, self.max_in_degree)
        per_sender = torch.zeros(num_envs, n, dtype=torch.int64, device=self.device)
        per_sender.scatter_add_(
            1, senders_flat.reshape(num_envs, -1), slot_ok.reshape(num_envs, -1).long()
        )
        bits_sent = per_sender * bits_per_message
        bits_received = delivered.sum(2).long() * bits_per_message
        dropped = (sent_edges - delivered.sum(2)).long()
        counters["bits_sent"] += bits_sent.sum(0)
        counters["bits_received"] += bits_received.sum(0)
        counters["messages_sent"] += per_sender.sum(0)
        counters["messages_dropped"] += dropped.sum(0)
        return Delivery(inbox, delivered, bits_sent, bits_received, dropped)

    def send(
        self,
        env: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        *,
        num_envs: int,
        bits_per_message: dict[str, int],
        generator: torch.Generator | None = None,
        check: bool = True,
    ) -> Messages:
        """Sparse routing: put the listed messages on the channel, bill them, and say where
        each arrives. Cost grows with the messages sent, not with the graph's edges.

        Args:
            env: ``(E,)`` integer tensor, one entry per message: the world of message ``e``.
            sender: ``(E,)``: who speaks; world ``env[e]``'s ``sender[e]`` speaks to
                ``receiver[e]`` (each a graph edge, each edge at most once per world). Any order.
            receiver: ``(E,)``: who it is sent to.
            num_envs: worlds of the batch (the per-agent tables are ``(num_envs, n)``).
            bits_per_message: ``{tag: bits}``: every message costs ``bits`` under each
                ``tag`` (e.g. ``{"images": ..., "payload": ...}`` for a minibatch and the
                labels that go with it); counted exactly as :meth:`route` counts them.
            generator: RNG of ``drop_prob`` (pass one for reproducible episodes).
            check: refuse messages off the graph (``ValueError``); ``False`` skips the check.

        The contents are the caller's: :meth:`Messages.gather` reads ``payload[env, sender]``
        for just the messages it needs (e.g. only those an inbox accepts). Flip noise needs the
        bits themselves: a channel with ``flip_prob > 0`` routes with :meth:`route`.
        """
        n, dev = self.n_agents, self.device
        if self.flip_prob > 0:
            raise ValueError(
                "send() carries no contents, so it cannot flip bits; a channel with "
                f"flip_prob={self.flip_prob} routes with route()"
            )
        env, sender, receiver = (
            t.to(dev, torch.int64).reshape(-1) for t in (env, sender, receiver)
        )
        if not (env.shape == sender.shape == receiver.shape):
            raise ValueError(
                "env, sender and receiver must be 1-D of one length (one entry per message), "
                f"got {tuple(env.shape)}, {tuple(sender.shape)}, {tuple(receiver.shape)}"
            )
        if check and env.numel():
            inside = (env >= 0) & (env < num_envs) & (sender >= 0) & (sender < n)
            inside &= (receiver >= 0) & (receiver < n)
            if not bool(inside.all()) or not bool(self.adjacency[sender, receiver].all()):
                bad = (
                    int((~inside).nonzero()[0])
                    if not bool(inside.all())
                    else int((~self.adjacency[sender, receiver]).nonzero()[0])
                )
                raise ValueError(
                    f"message {bad} (world {int(env[bad])}, {int(sender[bad])} -> "
                    f"{int(receiver[bad])}) is not an edge of this channel's graph "
                    f"with num_envs={num_envs}; expected worlds in [0, {num_envs}) and "
                    "(sender, receiver) edges of the adjacency"
                )
        # Slot order: world, receiver, sender. A caller that lists its messages in that order
        # (node_graph_v0 does) skips the sort.
        inbox = env * n + receiver
        key = inbox * n + sender
        if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
            key, order = torch.sort(key)
            if check and not bool((key[1:] > key[:-1]).all()):
                raise ValueError(
                    "an edge is listed twice in one world; expected each (world, sender, "
                    "receiver) message at most once per send()"
                )
            env, sender, receiver, inbox = env[order], sender[order], receiver[order], inbox[order]
        first_of = torch.zeros(num_envs * n + 1, dtype=torch.int64, device=dev)
        if self.drop_prob > 0:
            delivered = torch.rand(env.shape, generator=generator, device=dev) >= self.drop_prob
            arrivals = torch.bincount(inbox[delivered], minlength=num_envs * n)
            torch.cumsum(arrivals, 0, out=first_of[1:])  # delivered before each inbox
            rank = torch.cumsum(delivered.long(), 0) - 1 - first_of[inbox]
            rank = torch.where(delivered, rank, -1)
        else:
            delivered = torch.ones_like(env, dtype=torch.bool)
            arrivals = torch.bincount(inbox, minlength=num_envs * n)
            torch.cumsum(arrivals, 0, out=first_of[1:])
            rank = torch.arange(env.numel(), device=dev) - first_of[inbox]
        sent = torch.bincount(env * n + sender, minlength=num_envs * n).view(num_envs, n)
        arrivals = arrivals.view(num_envs, n)
        per_sender, per_receiver = sent.sum(0), arrivals.sum(0)
        lost = torch.bincount(receiver[~delivered], minlength=n) if self.drop_prob > 0 else None
        for tag, bits in bits_per_message.items():
            counters = self._counters(tag)
            counters["bits_sent"] += per_sender * bits
            counters["bits_received"] += per_receiver * bits
            counters["messages_sent"] += per_sender
            if lost is not None:
                counters["messages_dropped"] += lost
        return Messages(env, sender, receiver, delivered, rank, arrivals, sent)

    # -- accounting ------------------------------------------------------------------------
    def _counters(self, tag: str) -> dict[str, torch.Tensor]:
        if tag not in self._dynamic:
            self._dynamic[tag] = {
                name: torch.zeros(self.n_agents, dtype=torch.int64, device=self.device)
                for name in ("bits_sent", "bits_received", "messages_sent", "messages_dropped")
            }
        return self._dynamic[tag]

    def account(
        self,
        tag: str,
        bits_sent: int | Sequence[int] | torch.Tensor,
        bits_received: int | Sequence[int] | torch.Tensor | None = None,
        messages: int | Sequence[int] | torch.Tensor = 0,
    ) -> None:
        """Count traffic that a collective moves without :meth:`route` (e.g. a ring all-reduce
        whose chunks the caller sums in-process), in the same per-tag counters.

        ``bits_sent`` / ``bits_received`` / ``messages`` are per agent (``(n,)``) or one number
        for every agent; ``bits_received`` defaults to ``bits_sent`` (a symmetric collective).
        """
        counters = self._counters(tag)
        received = bits_sent if bits_received is None else bits_received
        for name, value in (
            ("bits_sent", bits_sent),
            ("bits_received", received),
            ("messages_sent", messages),
        ):
            row = torch.as_tensor(value, dtype=torch.int64, device=self.device)
            if row.ndim > 1 or (row.ndim == 1 and row.shape[0] != self.n_agents):
                raise ValueError(
                    f"{name} must be one number or ({self.n_agents},) per agent, "
                    f"got shape {tuple(row.shape)}"
                )
            if bool((row < 0).any()):
                raise ValueError(f"{name} must be >= 0, got {row.tolist()}")
            counters[name] += row

    def _static_rows(self, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-agent bits sent / received / drops of one full-graph delivery (cached)."""
        if bits not in self._static_cache:
            self._static_cache[bits] = (
                (self.out_degree * bits)[None],
                (self.in_degree * bits)[None],
                torch.zeros(1, self.n_agents, dtype=torch.int64, device=self.device),
            )
        return self._static_cache[bits]

    @property
    def counters(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per-tag totals: ``bits_sent``, ``bits_received``, ``messages_sent``,
        ``messages_dropped``, each an ``(n,)`` int64 tensor (all envs, all calls)."""
        out = {tag: {k: v.clone() for k, v in c.items()} for tag, c in self._dynamic.items()}
        for (tag, bits), count in self._static_messages.items():
            totals = out.setdefault(
                tag,
                {
                    name: torch.zeros(self.n_agents, dtype=torch.int64, device=self.device)
                    for name in ("bits_sent", "bits_received", "messages_sent", "messages_dropped")
                },
            )
            totals["bits_sent"] += self.out_degree * bits * count
            totals["bits_received"] += self.in_degree * bits * count
            totals["messages_sent"] += self.out_degree * count
        return out

    def reset_counters(self) -> None:
        """Zero every bandwidth counter."""
        self._dynamic: dict[str, dict[str, torch.Tensor]] = {}
        self._static_messages: dict[tuple[str, int], int] = {}

    def total_bits(self, tags: Iterable[str] | None = None) -> int:
        """Total bits sent over the channel (all agents, all envs), optionally per tags."""
        counters = self.counters
        tags = counters.keys() if tags is None else tags
        counts = [counters[t]["bits_sent"].sum() for t in tags if t in counters]
        return int(sum(int(c) for c in counts))

    def __repr__(self) -> str:
        return (
            f"Channel(n_agents={self.n_agents}, edges={int(self.adjacency.sum())}, "
            f"flip_prob={self.flip_prob}, drop_prob={self.drop_prob}, device={self.device})"
        )
