"""node_graph_v0 beyond one machine: the nodes as real processes on ``torch.distributed``.

Launch (one machine, two processes; ``docs/distributed.md`` has the multi-machine line)::

    torchrun --nproc-per-node 2 -m commenv.distributed graph --content labels --quick

**Processes.** ``P`` processes (gloo on CPU, NCCL on CUDA, chosen per rank) each host a
contiguous shard of the ``N`` nodes, batched inside the process exactly as the single-process
population (:class:`commenv_agents.population.OutputSharingPopulation`). Each process keeps
only its own nodes' partitions (as uint8 pixels); a broadcast ships the actual pixels and the
payload as fixed-size byte records to the receiving node's process: one ``all_to_all_single``
per step (record counts first, then the records), or an ``all_gather`` of fixed-size,
padded buffers where the backend lacks ``all_to_all``. Arrivals enter the receiver's bounded
inbox in increasing sender order with the game's overflow policy and drop counters.

**Bits** are counted by a :class:`commenv.Channel` on every rank for its own senders (the game's
own accounting: ``M*D*image_bits`` per image message, ``M*ceil(log2 C)`` bits for labels,
``float_message_bits`` for floats), and checked against the message bytes handed to the
collectives: equal, each message rounded up to whole bytes. Each record also carries a header
(sender, receiver, the ``M`` sample indices as int32: ground truth, not part of the game's
message), reported apart.

**Same answer as the simulation.** Every random number is drawn in the single-process layout:
each rank draws the population-wide tensor (``(N, M)`` uniforms for local sampling, ``(N,)``
for consumption, ``(N, K)`` broadcast bits, the ``N``-model initialisation) from the same seed
and keeps its own nodes' rows, so a node's randomness is a function of its id, never of the
sharding. The cost is ``O(N*M)`` uniforms per step on every rank, nothing beside a training
step. Per-node arithmetic is the same batched kernels on fewer models; on CPU the result is
bit-identical (``tests/test_distributed.py`` checks every node's accuracy for P = 2 and 4;
``--check-simulation`` records the largest per-node difference of a run).

**Faults.** Every collective runs under ``--timeout`` seconds; a peer that dies or hangs makes
the others stop with an error naming the rank, the step and the timeout, and no result file is
written (the resumable partial file, which means "not complete", keeps finished rows). Bad
input (more processes than nodes, a graph naming nodes that do not exist, ranks started with
different configurations: a config hash is compared at start-up) raises on every rank before
any training step.

**Synchronous SGD** (``--sync-sgd allreduce,fp16,powersgd``) runs as real
``DistributedDataParallel``, one worker per process on its own partition, with torch's
communication hooks; the bytes every hook hands to ``all_reduce`` are counted per step.

``python -m commenv.distributed project --results <distributed.json>`` turns a measured run into
the step-time projection against ``P`` on a 10 Gb/s network.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from commenv.bench.tools import OutputSharingOptions
from commenv.channel import (
    GRAPHS,
    Channel,
    check_float_bits,
    float_message_bits,
    half_precision,
    make_adjacency,
)
from commenv.core import check_choice, check_device, check_float, check_int, generator_seed
from commenv.datasets import DATASETS, load_dataset
from commenv.datasets import _clear_cache as clear_dataset_cache
from commenv.evaluation import evaluate
from commenv.node_graph import OVERFLOWS, PARTITIONS, partition_indices

SHARES: tuple[str, ...] = ("none", "labels", "logits", "features")
"""What a row may share (node_graph_v0's label-free feature payloads run on one machine)."""
PIXEL_DATASETS: tuple[str, ...] = tuple(d for d in DATASETS if d != "synthetic")
"""Datasets of 8-bit images: what a process ships are their uint8 pixels."""
HOOKS: tuple[str, ...] = ("allreduce", "fp16", "powersgd")
EXCHANGES: tuple[str, ...] = ("auto", "all_to_all", "all_gather")
PIXEL_SCALE: dict[str, float] = {"digits": 16.0}
"""Images are ``uint8 / scale`` (255 unless listed): what a process ships are the uint8 pixels."""


# -- configuration ------------------------------------------------------------------------------
# The node-graph options come from OutputSharingOptions (``commenv bench graph``'s too); the
# ranks' device and threads are redeclared here. The docstring is the --help description.
@dataclass
class GraphArgs(OutputSharingOptions):
    """node_graph_v0 populations sharded over torch.distributed processes (launch with torchrun)."""

    content: str = "labels"
    """what the nodes share, comma-separated for several rows: none, labels, logits, features"""
    sync_sgd: str = ""
    """synchronous-SGD rows on DistributedDataParallel, comma-separated comm hooks: allreduce,
    fp16, powersgd (empty: none)"""
    n_nodes: int = 10
    """number of nodes N, split into contiguous near-equal shards over the processes"""
    graph: str = "ring"
    """ring (with --k), all_to_all, one_way, two_way, or edges 'sender-receiver,...' ('0-1,1-0')"""
    k: int | None = None
    """ring neighbours (default N-1: fully connected)"""
    quick: bool = False
    """digits, 1000 steps, evaluate every 250 (a minute or two on 2 CPU cores)"""
    steps: int | None = None
    """parallel training steps per row (default 5000; 1000 quick)"""
    eval_every: int | None = None
    """evaluate on the test split every this many steps (default 250)"""
    arch: str = "auto"
    """node model: mlp or cnn (auto: cnn on CUDA, else mlp)"""
    hidden: int = 256
    """MLP hidden width"""
    feature_dim: int = 64
    """top-level feature width (the features payload)"""
    overflow: str = "drop_oldest"
    """full inbox: drop_oldest or drop_newest"""
    exchange: str = "auto"
    """collective for the records: all_to_all, all_gather (fixed-size padded buffers) or auto"""
    powersgd_rank: int = 2
    """matrix approximation rank of the PowerSGD hook"""
    agent: str | None = None
    """a user population 'module:Class', built per process for its shard (not checked against
    the simulation: its own randomness layout is its business)"""
    check_simulation: bool = False
    """rank 0 also runs the single-process simulation and prints the largest per-node difference"""
    device: str = "auto"
    """auto (cuda:LOCAL_RANK when CUDA is present, else cpu), cpu or cuda"""
    timeout: float = 120.0
    """seconds a collective may wait for a peer before every rank stops with an error"""
    threads: int = 1
    """torch CPU threads per process"""
    out_dir: Path | None = None
    """where rank 0 writes JSON/CSV/PNG (default results/distributed[-quick])"""
    resume: bool = False
    """keep the rows a killed run finished and run only the others"""

    def finalize(self) -> GraphArgs:
        """Fill the defaults that depend on --quick."""
        self.dataset = self.dataset or ("digits" if self.quick else "fashion-mnist")
        self.steps = self.steps or (1000 if self.quick else 5000)
        self.eval_every = self.eval_every or 250
        if self.out_dir is None:
            self.out_dir = Path("results") / ("distributed-quick" if self.quick else "distributed")
        return self

    def contents(self) -> list[str]:
        return [c.strip() for c in self.content.split(",") if c.strip()]

    def inert_options(self) -> dict[str, str]:
        """The options these rows leave without effect, and why (typed, they are refused:
        :func:`commenv.bench.tools.refuse_inert`), as ``commenv bench graph`` refuses them."""
        from commenv.bench.graph import SHARE_OPTIONS
        from commenv.bench.tools import partition_inert, unread

        why = "it acts on rows sharing {}; --content has none"
        inert = partition_inert([self.partition]) | unread(self.contents(), SHARE_OPTIONS, why)
        if "powersgd" not in self.hooks():
            inert["powersgd_rank"] = "it sets the powersgd hook; --sync-sgd does not name it"
        if self.graph != "ring":
            inert["k"] = f"it counts a ring's neighbours; --graph is {self.graph!r}"
        elif not self.contents():  # DDP rows all-reduce over every process: no graph
            inert["k"] = "it shapes the output-sharing graph; --content has no row"
        return inert

    def hooks(self) -> list[str]:
        return [h.strip() for h in self.sync_sgd.split(",") if h.strip()]

    def config_hash(self) -> str:
        """What every rank must agree on (everything but the per-rank device and threads)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("threads",)}
        text = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_graph(spec: str, n_nodes: int) -> str | list[tuple[int, int]]:
    """A named graph or ``'s-r,s-r,...'`` edges; names a node that does not exist → ValueError."""
    if spec in GRAPHS:
        return spec
    edges = []
    for part in spec.split(","):
        pieces = part.strip().split("-")
        if len(pieces) != 2 or not all(p.strip().lstrip("+").isdigit() for p in pieces):
            raise ValueError(
                f"graph must be one of {list(GRAPHS)} or edges 'sender-receiver,...' such as "
                f"'0-1,1-0'; got {spec!r} (bad edge {part!r})"
            )
        s, r = int(pieces[0]), int(pieces[1])
        for node in (s, r):
            if node >= n_nodes:
                raise ValueError(
                    f"graph edge {part.strip()!r} names node {node}, but n_nodes={n_nodes} has "
                    f"nodes 0..{n_nodes - 1}"
                )
        edges.append((s, r))
    return edges


def check_args(args: GraphArgs, world_size: int) -> None:
    """Every bad input, before any process group traffic beyond the start-up checks."""
    for c in args.contents():
        check_choice("content", c, SHARES)
    for h in args.hooks():
        check_choice("sync_sgd", h, HOOKS)
    if not args.contents() and not args.hooks():
        raise ValueError("nothing to run: give --content and/or --sync-sgd")
    check_choice("dataset", args.dataset, PIXEL_DATASETS)
    check_choice("arch", args.arch, ("auto", "mlp", "cnn"))
    check_choice("overflow", args.overflow, OVERFLOWS)
    check_choice("partition", args.partition, PARTITIONS)
    check_choice("exchange", args.exchange, EXCHANGES)
    check_float_bits(args.float_bits)
    for name in ("n_nodes", "steps", "eval_every", "batch_size", "inbox_capacity", "hidden"):
        check_int(name, getattr(args, name), 1)
    check_int("feature_dim", args.feature_dim, 1)
    check_int("powersgd_rank", args.powersgd_rank, 1)
    if args.contents() and world_size > args.n_nodes:
        raise ValueError(
            f"world size {world_size} cannot host n_nodes={args.n_nodes}: every process needs "
            f"at least one node (contiguous shards); start at most {args.n_nodes} processes"
        )
    if args.contents() and args.n_nodes == 1 and any(c != "none" for c in args.contents()):
        raise ValueError("n_nodes=1 has no channel: use --content none (the single-node baseline)")
    if not (0.0 <= args.consumption_prob <= 1.0):
        raise ValueError(f"consumption_prob must be in [0, 1], got {args.consumption_prob!r}")
    for name in ("broadcast_margin", "temperature"):
        value = getattr(args, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {args.timeout!r}")
    if args.graph == "ring":
        k = args.n_nodes - 1 if args.k is None else args.k
        if args.n_nodes > 1 and not 1 <= k <= args.n_nodes - 1:
            raise ValueError(f"graph='ring' needs 1 <= k <= n_nodes - 1, got k={args.k}")
    else:
        parse_graph(args.graph, args.n_nodes)


def shards(n_nodes: int, world_size: int) -> list[np.ndarray]:
    """The contiguous node shards of the ranks (near-equal: the first ones one node larger)."""
    return np.array_split(np.arange(n_nodes), world_size)


def game_kwargs(args: GraphArgs, share: str) -> dict[str, Any]:
    """The node_graph_v0 configuration of one row (the same as ``commenv bench graph``'s)."""
    graph = parse_graph(args.graph, args.n_nodes)
    return dict(
        args.game_config(),
        n_nodes=args.n_nodes,
        graph=graph,
        k=args.k,
        content="labels" if share == "none" else share,
        overflow=args.overflow,
        feature_dim=args.feature_dim,
        max_cycles=args.steps + 1,
    )


def population_kwargs(args: GraphArgs, share: str, arch: str) -> dict[str, Any]:
    return dict(
        arch=arch,
        share=share,
        broadcast_prob=args.broadcast_prob(args.n_nodes),
        temperature=args.temperature,
        feature_weight=args.feature_weight,
        hidden=args.hidden,
        feature_dim=args.feature_dim,
        lr=args.lr,
        seed=args.seed,
    )


# -- bytes: packing and the record codec --------------------------------------------------------
def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """``(n, L)`` integers in ``[0, 2**bits)`` → ``(n, ceil(L*bits/8))`` uint8, MSB first."""
    n, length = values.shape
    shifts = torch.arange(bits - 1, -1, -1, device=values.device)
    flat = ((values.long()[..., None] >> shifts) & 1).reshape(n, length * bits)
    nbytes = math.ceil(length * bits / 8)
    flat = F.pad(flat, (0, 8 * nbytes - length * bits)).reshape(n, nbytes, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], device=values.device)
    return (flat * weights).sum(-1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, length: int, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``(n, nbytes)`` uint8 → ``(n, length)`` int64."""
    n = packed.shape[0]
    shifts = torch.arange(7, -1, -1, device=packed.device)
    flat = ((packed.long()[..., None] >> shifts) & 1).reshape(n, 8 * packed.shape[1])
    flat = flat[:, : length * bits]
    weights = 2 ** torch.arange(bits - 1, -1, -1, device=packed.device)
    return (flat.reshape(n, length, bits) * weights).sum(-1)


def _from_bytes(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bytes ``(n, k)`` read as ``dtype`` ``(n, k / size)``. Copied first: a slice of the records
    can count as contiguous with a row stride that is no multiple of the dtype's size (one
    record of an odd length), which ``view`` refuses."""
    return x.clone(memory_format=torch.contiguous_format).view(dtype)


def _as_bytes(x: torch.Tensor) -> torch.Tensor:
    return (
        x.contiguous()
        .view(torch.uint8)
        .reshape(x.shape[0], math.prod(x.shape[1:]) * x.element_size())
    )


class RecordCodec:
    """Fixed-size byte records, one per (sender, receiver) delivery.

    Layout: header (int32 sender, receiver, ``M`` sample indices), the ``M*D`` uint8 pixels,
    the payload: labels packed at ``ceil(log2 C)`` bits, floats as fp64 / fp32 / fp16, or below
    16 bits the per-sample min and max (fp32) and the levels packed at ``float_bits`` bits. The
    message part is exactly the game's bill, rounded up to whole bytes per message (checked when
    the codec is built).
    """

    def __init__(
        self, batch_size: int, pixels: int, content: str, payload_dim: int, num_classes: int, fb
    ):
        self.M, self.D, self.content, self.P = batch_size, pixels, content, payload_dim
        self.float_bits = check_float_bits(fb)
        self.label_bits = max(1, math.ceil(math.log2(num_classes)))
        M, P = self.M, self.P
        if content == "labels":
            self.payload_bits = M * self.label_bits
            self.payload_bytes = math.ceil(self.payload_bits / 8)
        else:
            self.payload_bits = float_message_bits(M, P, self.float_bits)
            if self.float_bits >= 32:  # fp32, or fp64: what is billed is what travels
                self.payload_bytes = M * P * self.float_bits // 8
            elif self.float_bits == 16:
                self.payload_bytes = M * P * 2
            else:
                self.payload_bytes = M * 8 + math.ceil(M * P * self.float_bits / 8)
        if math.ceil(self.payload_bits / 8) != self.payload_bytes:
            raise RuntimeError(
                f"record layout ships {self.payload_bytes} payload bytes per message where the "
                f"channel bills {self.payload_bits} bits ({content}, float_bits={fb})"
            )
        self.image_bits = M * pixels * 8
        self.header_bytes = 4 * (2 + M)
        self.message_bytes = M * pixels + self.payload_bytes
        self._wide = torch.float64 if self.float_bits == 64 else torch.float32
        self.record_bytes = self.header_bytes + self.message_bytes

    def encode(
        self,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        idx: torch.Tensor,
        pixels: torch.Tensor,
        payload: torch.Tensor,
    ) -> torch.Tensor:
        """``(n, record_bytes)`` uint8 records; ``payload`` is labels ``(n, M)`` or raw floats
        ``(n, M, P)`` (quantized here the way :func:`commenv.channel.quantize` does)."""
        n, M, P = sender.shape[0], self.M, self.P
        head = torch.cat([sender[:, None], receiver[:, None], idx], 1).to(torch.int32)
        parts = [_as_bytes(head), pixels.reshape(n, self.M * self.D)]
        if self.content == "labels":
            parts.append(pack_bits(payload.long(), self.label_bits))
        elif self.float_bits >= 32:
            parts.append(_as_bytes(payload.to(self._wide)))
        elif self.float_bits == 16:
            parts.append(_as_bytes(half_precision(payload)))
        else:
            x = payload.to(torch.float32)
            low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
            step = (high - low) / (2**self.float_bits - 1)
            safe = torch.where(step > 0, step, torch.ones_like(step))
            levels = torch.round((x - low) / safe).clamp(0, 2**self.float_bits - 1)
            parts.append(_as_bytes(torch.cat([low, high], -1)))
            parts.append(pack_bits(levels.reshape(n, M * P).long(), self.float_bits))
        out = torch.cat(parts, 1)
        assert out.shape[1] == self.record_bytes
        return out

    def decode(self, records: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`encode`: sender, receiver, idx, pixels ``(n, M, D)``, payload."""
        n, M, P = records.shape[0], self.M, self.P
        h, d = self.header_bytes, self.M * self.D
        head = _from_bytes(records[:, :h], torch.int32).long()
        body = records[:, h + d :]
        out = {
            "sender": head[:, 0],
            "receiver": head[:, 1],
            "idx": head[:, 2:],
            "pixels": records[:, h : h + d].reshape(n, M, self.D),
        }
        if self.content == "labels":
            out["payload"] = unpack_bits(body, M, self.label_bits)
        elif self.float_bits >= 32:
            out["payload"] = _from_bytes(body, self._wide).float().reshape(n, M, P)
        elif self.float_bits == 16:
            out["payload"] = _from_bytes(body, torch.float16).float().reshape(n, M, P)
        else:
            lh = _from_bytes(body[:, : M * 8], torch.float32).reshape(n, M, 2)
            low, high = lh[..., :1], lh[..., 1:]
            levels = unpack_bits(body[:, M * 8 :], M * P, self.float_bits).reshape(n, M, P)
            step = (high - low) / (2**self.float_bits - 1)
            out["payload"] = low + levels.to(torch.float32) * step
        return out


# -- the wire: records between ranks ------------------------------------------------------------
class PeerFailure(RuntimeError):
    """A collective failed: a peer process died, hung past the timeout, or left."""


def guarded(rank: int, world: int, step: int, timeout: float, what: str, fn, *a, **kw) -> Any:
    """Run a collective; any failure becomes a :class:`PeerFailure` that says where and why."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # gloo/NCCL raise RuntimeError subclasses with their own text
        raise PeerFailure(
            f"rank {rank} of {world}: {what} failed at step {step} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300]}). Unless that names an error "
            f"of this process, a peer process died or did not answer within "
            f"--timeout={timeout:g} s."
        ) from e


class Wire:
    """Moves byte records to the ranks that host their receivers, and meters it.

    ``all_to_all``: the record counts (one int64 per destination), then the records themselves
    with those split sizes (no padding). ``all_gather``: the count matrix, then every rank's
    records padded to a fixed ``(P, cap, R)`` buffer (``cap``: the step's largest count).
    ``handed_bytes``: bytes of records handed to the collectives (own-rank chunk included);
    ``wire_bytes``: the part addressed to other ranks, padding and counts included.
    """

    def __init__(self, method: str, device: torch.device, timeout: float) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device, self.timeout = device, timeout
        self.method = self._probe() if method == "auto" else method
        self.reset()

    def reset(self) -> None:
        self.handed_bytes = self.message_bytes = self.wire_bytes = self.control_bytes = 0
        self.seconds = 0.0
        self.step = 0

    def _probe(self) -> str:
        try:
            x = torch.zeros(self.world, 1, dtype=torch.int64, device=self.device)
            dist.all_to_all_single(torch.empty_like(x), x)
            return "all_to_all"
        except (RuntimeError, NotImplementedError):
            return "all_gather"

    def _call(self, what: str, fn, *a: Any, **kw: Any) -> Any:
        return guarded(self.rank, self.world, self.step, self.timeout, what, fn, *a, **kw)

    def exchange(
        self, records: torch.Tensor, dest: torch.Tensor, message_bytes: int
    ) -> torch.Tensor:
        """Send ``records`` ``(n, R)`` to ranks ``dest`` ``(n,)``; return what arrived here,
        grouped by source rank in send order."""
        start = time.perf_counter()
        P, R = self.world, records.shape[1]
        order = torch.argsort(dest, stable=True)
        records = records[order]
        counts = torch.bincount(dest, minlength=P).to(torch.int64)
        n_own = int(counts[self.rank])
        if self.method == "all_to_all":
            recv_counts = torch.empty_like(counts)
            self._call("the record-count all_to_all", dist.all_to_all_single, recv_counts, counts)
            out = torch.empty(int(recv_counts.sum()), R, dtype=torch.uint8, device=self.device)
            self._call(
                "the record all_to_all",
                dist.all_to_all_single,
                out,
                records,
                output_split_sizes=recv_counts.tolist(),
                input_split_sizes=counts.tolist(),
            )
            self.handed_bytes += records.numel()
            self.wire_bytes += (records.shape[0] - n_own) * R + 8 * (P - 1)
            self.control_bytes += 8 * (P - 1)
        else:
            table = [torch.empty_like(counts) for _ in range(P)]
            self._call("the record-count all_gather", dist.all_gather, table, counts)
            matrix = torch.stack(table)  # [source, destination]
            cap = max(1, int(matrix.max()))
            buf = torch.zeros(P, cap, R, dtype=torch.uint8, device=self.device)
            slot = torch.arange(records.shape[0], device=self.device) - (
                torch.cumsum(counts, 0) - counts
            ).repeat_interleave(counts)
            buf[dest[order], slot] = records
            got = [torch.empty_like(buf) for _ in range(P)]
            self._call("the record all_gather", dist.all_gather, got, buf)
            mine = matrix[:, self.rank].tolist()
            out = torch.cat([got[q][self.rank, : mine[q]] for q in range(P)], 0)
            self.handed_bytes += buf.numel()
            self.wire_bytes += (P - 1) * (buf.numel() + 8 * P)
            self.control_bytes += (P - 1) * 8 * P
        self.message_bytes += records.shape[0] * message_bytes
        self.seconds += time.perf_counter() - start
        return out

    def all_sum(self, values: Sequence[int | float]) -> list[float]:
        """Sum a few numbers over the ranks (float64)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        self._call("an all_reduce", dist.all_reduce, t)
        return t.tolist()

    def gather_nodes(self, local: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """Concatenate every rank's ``(n_r, ...)`` rows in rank order (on every rank)."""
        pad = max(sizes)
        buf = torch.zeros(pad, *local.shape[1:], dtype=local.dtype, device=self.device)
        buf[: local.shape[0]] = local
        got = [torch.empty_like(buf) for _ in range(self.world)]
        self._call("the evaluation all_gather", dist.all_gather, got, buf)
        return torch.cat([g[:n] for g, n in zip(got, sizes, strict=True)], 0)


# -- one rank's shard of the game ---------------------------------------------------------------
def plan_partitions(labels: torch.Tensor, kw: dict[str, Any]) -> list[np.ndarray]:
    """The training-set partition of every node, exactly as ``NodeGraphGame`` draws it."""
    pool = np.arange(len(labels))
    if kw["train_size"] is not None:
        if kw["train_size"] > len(pool):
            raise ValueError(
                f"train_size={kw['train_size']} exceeds the {len(pool)} training samples of "
                f"{kw['dataset']!r}"
            )
        rng = np.random.default_rng([int(kw["partition_seed"]), 1])
        pool = np.sort(rng.permutation(len(pool))[: int(kw["train_size"])])
    parts = partition_indices(
        labels[pool],
        kw["n_nodes"],
        kw["partition"],
        alpha=float(kw["dirichlet_alpha"]),
        seed=kw["partition_seed"],
    )
    return [pool[p] for p in parts]


def out_tables(adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)`` receivers of each node's bits (padded with N) and their validity, as the game."""
    N = adjacency.shape[0]
    out_deg = adjacency.sum(1)
    K = max(1, int(out_deg.max()))
    order = torch.sort((~adjacency).to(torch.int8), dim=1, stable=True).indices[:, :K]
    valid = torch.arange(K)[None, :] < out_deg[:, None]
    return torch.where(valid, order, N), valid


class ShardGame:
    """The nodes ``nodes`` of one node_graph_v0 world, hosted by this rank.

    Same rules as :class:`commenv.node_graph.NodeGraphGame` (``num_envs=1``); the inboxes hold
    the received pixels (this rank has no other copy of them), not indices.
    """

    def __init__(
        self, kw: dict[str, Any], nodes: np.ndarray, wire: Wire, owner_rank: torch.Tensor
    ) -> None:

        dev = wire.device
        self.wire, self.device = wire, dev
        self.N = N = int(kw["n_nodes"])
        self.nodes = torch.as_tensor(nodes, dtype=torch.long, device=dev)
        self.n = n = len(nodes)
        self.M = M = int(kw["batch_size"])
        self.content = kw["content"]
        self.cp, self.cap, self.overflow = (
            kw["consumption_prob"],
            kw["inbox_capacity"],
            kw["overflow"],
        )
        self.float_bits = kw["float_bits"]
        self.owner_rank = owner_rank.to(dev)
        self.local_of = torch.full((N,), -1, dtype=torch.long, device=dev)
        self.local_of[self.nodes] = torch.arange(n, device=dev)

        data = load_dataset(kw["dataset"], root=kw["data_root"], seed=0)
        self.image_shape, self.num_classes = data.image_shape, data.num_classes
        self.D = data.num_features
        self.test_images, self.test_labels = data.test.x, data.test.y
        parts = plan_partitions(data.train.y, kw)
        mine = [parts[i] for i in nodes]
        self.scale = PIXEL_SCALE.get(kw["dataset"], 255.0)
        flat_idx = torch.from_numpy(np.concatenate(mine))
        x = data.train.flat()[flat_idx]
        pixels = torch.round(x * self.scale)
        if not (pixels.min() >= 0 and pixels.max() <= 255 and torch.equal(pixels / self.scale, x)):
            raise ValueError(
                f"dataset {kw['dataset']!r} is not 8-bit pixels / {self.scale:g}: the distributed "
                "runtime ships uint8 pixels"
            )
        # Only this shard's samples stay: uint8 pixels, labels, and their global indices.
        self.pixels = pixels.to(torch.uint8).to(dev)
        self.labels = data.train.y[flat_idx].to(dev)
        lengths = torch.tensor([len(p) for p in mine])
        offsets = torch.cumsum(lengths, 0) - lengths
        width = int(lengths.max())
        rows = torch.arange(width)[None, :]
        self.row_table = torch.minimum(
            offsets[:, None] + rows, offsets[:, None] + lengths[:, None] - 1
        ).to(dev)
        self.part_len = lengths.to(dev)
        self.global_idx = flat_idx.to(dev)
        del data, x, pixels
        clear_dataset_cache()  # the loader's cache held the whole training set

        if N > 1:
            k = N - 1 if kw["graph"] == "ring" and kw["k"] is None else kw["k"]
            adjacency = make_adjacency(kw["graph"], N, k)
            self.channel: Channel | None = Channel(adjacency, device=dev)
        else:
            adjacency = torch.zeros(1, 1, dtype=torch.bool)
            self.channel = None
        out_table, out_valid = out_tables(adjacency)
        self.out_valid_full = out_valid.to(dev)
        self.out_table = out_table[self.nodes.cpu()].to(dev)
        self.out_valid = out_valid[self.nodes.cpu()].to(dev)
        self.payload_dim = P = {
            "labels": 1,
            "logits": self.num_classes,
            "features": int(kw["feature_dim"]),
        }[self.content]
        self.codec = RecordCodec(M, self.D, self.content, P, self.num_classes, self.float_bits)
        self.state: dict[str, torch.Tensor] = {}

    # -- state ---------------------------------------------------------------------------------
    def _sample_local(self) -> torch.Tensor:
        u = torch.rand(1, self.N, self.M, generator=self.gen, device=self.device)[0, self.nodes]
        pos = (u * self.part_len[:, None]).long()
        pos = torch.minimum(pos, self.part_len[:, None] - 1)
        return self.row_table.gather(1, pos)  # local rows (n, M)

    def reset(self, seed: int) -> dict[str, torch.Tensor]:
        self.gen = torch.Generator(device=self.device).manual_seed(generator_seed(int(seed)))
        if self.channel is not None:
            self.channel.reset_counters()
        n, M, P, cap, dev = self.n, self.M, self.payload_dim, self.cap, self.device
        rows = self._sample_local()
        z = torch.zeros(n, dtype=torch.long, device=dev)
        self.state = {
            "pixels": self.pixels[rows],
            "idx": self.global_idx[rows],
            "labels": self.labels[rows],
            "payload": torch.zeros(n, M, P, device=dev),
            "sender": torch.full((n,), -1, dtype=torch.long, device=dev),
            "inbox_pixels": torch.zeros(n, cap, M, self.D, dtype=torch.uint8, device=dev),
            "inbox_idx": torch.zeros(n, cap, M, dtype=torch.long, device=dev),
            "inbox_labels": torch.zeros(n, cap, M, dtype=torch.long, device=dev),
            "inbox_payload": torch.zeros(n, cap, M, P, device=dev),
            "inbox_sender": torch.zeros(n, cap, dtype=torch.long, device=dev),
            "head": z.clone(),
            "count": z.clone(),
            "dropped": z.clone(),
            "bits_images": z.clone(),
            "bits_payload": z.clone(),
        }
        return self.views()

    def views(self) -> dict[str, torch.Tensor]:
        """What ``NodeGraphGame.split_obs`` gives the population, for this shard's nodes."""
        st, n, M, C = self.state, self.n, self.M, self.num_classes
        from_inbox = st["sender"] >= 0
        images = st["pixels"].float().div(self.scale).reshape(n, M, *self.image_shape)
        labels = F.one_hot(st["labels"], C).float()
        if self.content == "labels":
            payload = torch.zeros(n, M, 0, device=self.device)
        else:
            labels = labels * (~from_inbox)[:, None, None]
            payload = st["payload"] * from_inbox[:, None, None]
        return {
            "images": images,
            "labels": labels,
            "payload": payload,
            "from_inbox": from_inbox.float(),
            "inbox_fill": st["count"].float() / self.cap,
        }

    # -- step ----------------------------------------------------------------------------------
    def step(self, bits: torch.Tensor, payload: torch.Tensor | None) -> dict[str, torch.Tensor]:
        st, N, dev = self.state, self.N, self.device
        self.wire.step += 1
        if self.content == "labels":
            held = st["labels"]
        elif payload is None:
            raise ValueError(f"content={self.content!r} needs a payload with the bits")
        else:
            held = payload.to(torch.float32)
        if self.channel is not None:
            sel = bits.to(torch.bool) & self.out_valid
            s_loc, col = sel.nonzero(as_tuple=True)
            receivers = self.out_table[s_loc, col]
            senders = self.nodes[s_loc]
            send = torch.zeros(1, N, N, dtype=torch.bool, device=dev)
            send[0, senders, receivers] = True
            dummy = torch.zeros(1, N, 1, device=dev)
            img = self.channel.route(
                dummy,
                send_mask=send,
                binary=False,
                bits_per_message=self.codec.image_bits,
                tag="images",
            )
            pay = self.channel.route(
                dummy,
                send_mask=send,
                binary=False,
                bits_per_message=self.codec.payload_bits,
                tag="payload",
            )
            st["bits_images"] += img.bits_sent[0, self.nodes]
            st["bits_payload"] += pay.bits_sent[0, self.nodes]
            records = self.codec.encode(
                senders, receivers, st["idx"][s_loc], st["pixels"][s_loc], held[s_loc]
            )
            got = self.wire.exchange(records, self.owner_rank[receivers], self.codec.message_bytes)
            self._enqueue(self.codec.decode(got))

        u = torch.rand(1, N, generator=self.gen, device=dev)[0, self.nodes]
        rows = self._sample_local()
        take = (u < self.cp) & (st["count"] > 0)
        ar = torch.arange(self.n, device=dev)
        h = st["head"]
        t2, t3 = take[:, None], take[:, None, None]
        st["pixels"] = torch.where(t3, st["inbox_pixels"][ar, h], self.pixels[rows])
        st["idx"] = torch.where(t2, st["inbox_idx"][ar, h], self.global_idx[rows])
        st["labels"] = torch.where(t2, st["inbox_labels"][ar, h], self.labels[rows])
        st["payload"] = torch.where(t3, st["inbox_payload"][ar, h], 0.0)
        st["sender"] = torch.where(take, st["inbox_sender"][ar, h], -1)
        st["head"] = torch.where(take, (h + 1) % self.cap, h)
        st["count"] = st["count"] - take.long()
        return self.views()

    def _enqueue(self, rec: dict[str, torch.Tensor]) -> None:
        """Arrivals into the inbox ring buffers, per receiver in increasing sender order."""
        st, cap, n = self.state, self.cap, self.n
        r = self.local_of[rec["receiver"]]
        order = torch.argsort(r * self.N + rec["sender"])
        r = r[order]
        arrivals = torch.bincount(r, minlength=n)
        first = torch.cumsum(arrivals, 0) - arrivals
        rank = torch.arange(len(r), device=self.device) - first[r]
        count, head = st["count"], st["head"]
        if self.overflow == "drop_newest":
            accept = rank < (cap - count)[r]
            n_acc = torch.bincount(r[accept], minlength=n)
            st["dropped"] += arrivals - n_acc
            st["count"] = count + n_acc
        else:
            accept = rank >= (arrivals - cap)[r]
            excess = (count + arrivals - cap).clamp(min=0)
            st["dropped"] += excess
            st["head"] = (head + excess) % cap
            st["count"] = (count + arrivals).clamp(max=cap)
        pos = ((head + count)[r] + rank) % cap
        sel = order[accept]
        rr, pp = r[accept], pos[accept]
        st["inbox_pixels"][rr, pp] = rec["pixels"][sel]
        st["inbox_idx"][rr, pp] = rec["idx"][sel]
        st["inbox_sender"][rr, pp] = rec["sender"][sel]
        if self.content == "labels":
            st["inbox_labels"][rr, pp] = rec["payload"][sel]
        else:
            st["inbox_payload"][rr, pp] = rec["payload"][sel]
            # the receiver does not learn the true labels of logits/features data
            st["inbox_labels"][rr, pp] = 0

    def local_bits(self) -> tuple[int, int]:
        """Bits this rank's senders put on the channel: images, payload."""
        if self.channel is None:
            return 0, 0
        return self.channel.total_bits(["images"]), self.channel.total_bits(["payload"])


# -- one rank's shard of the population ---------------------------------------------------------
def make_shard_population(
    n_nodes: int,
    nodes: np.ndarray,
    image_shape: tuple[int, int, int],
    num_classes: int,
    out_valid_full: torch.Tensor,
    device: torch.device,
    **kwargs: Any,
):
    """An :class:`OutputSharingPopulation` of this rank's nodes with the simulation's randomness.

    The ``N``-model initialisation is drawn as the single-process population draws it (on the
    CPU, from ``seed``) and this shard's models are sliced out of it; the broadcast bits are
    drawn for all ``(N, K)`` edges from the population's seeded generator and sliced likewise.
    """
    from commenv_agents.population import OutputSharingPopulation, broadcast_bits

    class NodeShardPopulation(OutputSharingPopulation):
        def step(self, views, out_valid):
            features, logits = self.model(views["images"])
            loss = self.losses(features, logits, views).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            bits = broadcast_bits(out_valid_full, self.broadcast_prob, self.gen)[rows]
            payload = {"logits": logits, "features": features}.get(self.share)
            return bits, None if payload is None else payload.detach()

        def losses(self, features, logits, views):
            from commenv_agents.population import node_losses

            return node_losses(
                features, logits, views, self.share, self.temperature, self.feature_weight
            )

    rows = torch.as_tensor(nodes, dtype=torch.long, device=device)
    full = OutputSharingPopulation(n_nodes, image_shape, num_classes, device="cpu", **kwargs)
    with torch.random.fork_rng(devices=[]):
        pop = NodeShardPopulation(len(nodes), image_shape, num_classes, device=device, **kwargs)
    with torch.no_grad():
        for mine, theirs in zip(pop.model.parameters(), full.model.parameters(), strict=True):
            take = theirs.reshape(n_nodes, -1)[torch.as_tensor(nodes)]
            mine.copy_(take.reshape(mine.shape))
    pop.gen = torch.Generator(device=device).manual_seed(generator_seed(int(kwargs.get("seed", 0))))
    return pop


# -- runs ---------------------------------------------------------------------------------------
@dataclass
class Runtime:
    """This process' place in the world."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str
    timeout: float


def choose_arch(args: GraphArgs, device: torch.device) -> str:
    return args.arch if args.arch != "auto" else ("cnn" if device.type == "cuda" else "mlp")


def run_output_sharing(args: GraphArgs, rt: Runtime, share: str, progress_every: int = 0):
    """Train one output-sharing row on this rank's shard; every rank returns the same row."""
    kw = game_kwargs(args, share)
    node_shards = shards(args.n_nodes, rt.world)
    nodes = node_shards[rt.rank]
    owner = torch.cat([torch.full((len(s),), q) for q, s in enumerate(node_shards)]).long()
    wire = Wire(args.exchange, rt.device, rt.timeout)
    game = ShardGame(kw, nodes, wire, owner)
    arch = choose_arch(args, rt.device)
    from commenv.bench.graph import load_agent
    from commenv.bench.tools import seed_everything

    seed_everything(args.seed)
    if args.agent:
        cls = load_agent(args.agent)
        pop = cls(
            len(nodes),
            game.image_shape,
            game.num_classes,
            share=share,
            broadcast_prob=args.broadcast_prob(args.n_nodes),
            feature_dim=args.feature_dim,
            device=rt.device,
            seed=args.seed,
        )
    else:
        pop = make_shard_population(
            args.n_nodes,
            nodes,
            game.image_shape,
            game.num_classes,
            game.out_valid_full,
            rt.device,
            **population_kwargs(args, share, arch),
        )
    sizes = [len(s) for s in node_shards]
    history: list[dict[str, Any]] = []

    def record(step: int) -> None:
        probs = wire.gather_nodes(pop.predict_proba(game.test_images), sizes)
        bi, bp = game.local_bits()
        bi, bp = wire.all_sum([bi, bp])
        ev = evaluate(probs.cpu(), game.test_labels)
        history.append({"step": step, **ev, "bits_images": int(bi), "bits_payload": int(bp)})

    views = game.reset(args.seed)
    wire.reset()
    step_times, comm_times = [], []
    for t in range(1, args.steps + 1):
        start, comm_before = time.perf_counter(), wire.seconds
        bits, payload = pop.step(views, game.out_valid)
        views = game.step(bits, payload)
        step_times.append(time.perf_counter() - start)
        comm_times.append(wire.seconds - comm_before)
        if t % args.eval_every == 0 and t != args.steps:
            record(t)
        if progress_every and rt.rank == 0 and t % progress_every == 0:
            print(f"  {share}: step {t}/{args.steps}", file=sys.stderr, flush=True)
    record(args.steps)

    bi, bp = game.local_bits()
    totals = wire.all_sum(
        [
            wire.handed_bytes,
            wire.message_bytes,
            wire.wire_bytes,
            wire.control_bytes,
            bi,
            bp,
            int(game.state["dropped"].sum()),
        ]
    )
    handed, message, on_wire, control, bits_i, bits_p, dropped = totals
    bill = game.codec.image_bits + game.codec.payload_bits
    if message != (bits_i + bits_p) / bill * game.codec.message_bytes:
        raise RuntimeError(
            f"accounting mismatch: the Channel billed {bits_i + bits_p:.0f} bits for "
            f"{bill}-bit messages, but {message:.0f} message bytes were handed to the collectives"
        )
    # Medians over steps (robust to other jobs' bursts on shared cores), then mean over ranks.
    steps_a, comm_a = np.array(step_times), np.array(comm_times)
    timing = wire.all_sum(
        [
            np.median(steps_a),
            np.median(comm_a),
            np.median(steps_a - comm_a) / len(nodes),
            steps_a.mean(),
        ]
    )
    step_med, comm_med, compute_node, step_mean = (v / rt.world for v in timing)
    node_steps = args.n_nodes * args.steps
    n_messages = message / game.codec.message_bytes
    last = history[-1]
    return {
        "configuration": f"{args.n_nodes} nodes, {share if share != 'none' else 'no sharing'}",
        "protocol": f"output sharing ({share})",
        "nodes": args.n_nodes,
        "shared": share,
        "processes": rt.world,
        "exchange": wire.method if share != "none" or args.n_nodes > 1 else "-",
        "avg_acc": last["average"],
        "coll_acc": last["collective"] if args.n_nodes > 1 else None,
        "per_node": last["per_node"],
        "bits_images": int(bits_i),
        "bits_payload": int(bits_p),
        "channel_bytes": (bits_i + bits_p) / 8,
        "message_bytes_handed": message,
        "handed_bytes": handed,
        "wire_bytes": on_wire,
        "control_bytes": control,
        "header_bytes_per_message": game.codec.header_bytes,
        "message_bytes_per_message": game.codec.message_bytes,
        "bytes_per_node_step": (message + n_messages * game.codec.header_bytes) / node_steps,
        "message_bytes_per_node_step": message / node_steps,
        "wire_bytes_per_node_step": on_wire / node_steps,
        "dropped": int(dropped),
        "step_ms": 1e3 * step_med,
        "comm_ms": 1e3 * comm_med,
        "compute_ms_per_node_step": 1e3 * compute_node,
        "step_ms_mean": 1e3 * step_mean,
        "params_per_node": getattr(pop, "num_params_per_node", None),
        "curve": [{k: h[k] for k in ("step", "average", "collective")} for h in history],
    }


def simulate(args: GraphArgs, share: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The single-process ``NodeGraphGame`` run of the same row (``commenv bench graph``'s)."""
    from commenv.bench.tools import seed_everything
    from commenv.node_graph import NodeGraphGame
    from commenv_agents.population import OutputSharingPopulation, run_population

    game = NodeGraphGame(**game_kwargs(args, share), device=device)
    seed_everything(args.seed)
    pop = OutputSharingPopulation(
        args.n_nodes,
        game.image_shape,
        game.num_classes,
        device=device,
        **population_kwargs(args, share, choose_arch(args, torch.device(device))),
    )
    hist = run_population(
        game,
        pop,
        args.steps,
        eval_every=args.eval_every,
        test=(game.test_images, game.test_labels),
        seed=args.seed,
    )
    last = hist[-1]
    return {
        "avg_acc": last["average"],
        "coll_acc": last["collective"],
        "per_node": last["per_node"],
        "bits_images": last["bits_images"],
        "bits_payload": last["bits_payload"],
        "dropped": int(game.infos_all()["dropped"].sum()),
    }


class AllReduceMeter:
    """Counts the bytes handed to ``torch.distributed.all_reduce`` (what every DDP comm hook in
    torch calls) while active."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0
        self._orig = None

    def __enter__(self) -> AllReduceMeter:
        self._orig = orig = dist.all_reduce

        def counted(tensor, *a, **kw):
            self.bytes += tensor.numel() * tensor.element_size()
            self.calls += 1
            return orig(tensor, *a, **kw)

        dist.all_reduce = counted
        return self

    def __exit__(self, *exc: Any) -> None:
        dist.all_reduce = self._orig


def run_sync_sgd(args: GraphArgs, rt: Runtime, hook: str) -> dict[str, Any]:
    """Synchronous data-parallel SGD (Adam on averaged gradients) as real DDP, one worker per
    process on its own partition, with torch's comm hook ``hook``."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
    from torch.nn.parallel import DistributedDataParallel as DDP

    from commenv_agents.population import SingleClassifier, make_adam

    kw = game_kwargs(args, "labels")
    kw["n_nodes"] = rt.world
    data = load_dataset(args.dataset, root=args.data_root, seed=0)
    part = torch.from_numpy(plan_partitions(data.train.y, kw)[rt.rank])
    x = data.train.x[part].to(rt.device)
    y = data.train.y[part].to(rt.device)
    test, image_shape, num_classes = data.test, data.image_shape, data.num_classes
    del data, part
    clear_dataset_cache()  # only this rank's partition (and the test split) stays
    torch.manual_seed(generator_seed(args.seed))
    arch = choose_arch(args, rt.device)
    model = SingleClassifier(
        image_shape,
        num_classes,
        arch=arch,
        hidden=args.hidden,
        feature_dim=args.feature_dim,
    ).to(rt.device)
    ddp = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if hook == "allreduce":
        ddp.register_comm_hook(None, default_hooks.allreduce_hook)
    elif hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    else:
        state = psgd.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=args.powersgd_rank,
            start_powerSGD_iter=2,
            use_error_feedback=True,
            warm_start=True,
        )
        ddp.register_comm_hook(state, psgd.powerSGD_hook)
    opt = make_adam(ddp.parameters(), args.lr)
    gen = torch.Generator(device=rt.device).manual_seed(generator_seed(args.seed * 1000 + rt.rank))
    per_step: list[int] = []
    step_times = []

    def train_step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        loss = F.cross_entropy(ddp(xb)[1], yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # the comm hook all-reduces the gradient buckets here
        opt.step()

    with AllReduceMeter() as meter:
        for t in range(1, args.steps + 1):
            start = time.perf_counter()
            pick = torch.randint(len(y), (args.batch_size,), generator=gen, device=rt.device)
            before = meter.bytes
            where = (rt.rank, rt.world, t, rt.timeout, "the DDP gradient all_reduce")
            guarded(*where, train_step, x[pick], y[pick])
            step_times.append(time.perf_counter() - start)
            per_step.append(meter.bytes - before)
    with torch.no_grad():
        logits = torch.cat([model(xb.to(rt.device))[1] for xb in test.x.split(2000)])
        acc = 100.0 * float((logits.argmax(-1).cpu() == test.y).float().mean())
    steady = float(np.median(per_step[5:] if len(per_step) > 10 else per_step))
    params = sum(p.numel() for p in model.parameters())
    step_s = wire_sum(rt, float(np.median(step_times))) / rt.world  # median step, rank mean
    return {
        "configuration": f"sync SGD, {rt.world} DDP workers, {hook} hook",
        "protocol": f"DDP ({hook})",
        "nodes": rt.world,
        "shared": f"gradients ({hook})",
        "processes": rt.world,
        "exchange": f"all_reduce ({rt.backend})",
        "avg_acc": acc,
        "coll_acc": None,
        "handed_bytes": float(sum(per_step)),
        "bytes_per_node_step": steady,
        "allreduce_calls_per_step": meter.calls / args.steps,
        "fp32_gradient_bytes": 4 * params,
        "params_per_node": params,
        "step_ms": 1e3 * step_s,
        "curve": [],
    }


def wire_sum(rt: Runtime, value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return float(t[0])


# -- launcher -----------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for single-machine launches and tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_runtime(args: GraphArgs) -> Runtime:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...);
    without torchrun, a world of one. CUDA + NCCL when present (device ``cuda:LOCAL_RANK``)."""
    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = args.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(want)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available on this machine")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=float(args.timeout))
    dist.init_process_group(backend, timeout=timeout)
    return Runtime(
        dist.get_rank(), dist.get_world_size(), local_rank, device, backend, float(args.timeout)
    )


def startup_checks(args: GraphArgs, rt: Runtime) -> None:
    """Config hash and argument checks, agreed by every rank before any training step: a bad
    input raises the same ``ValueError`` on every rank."""
    hashes: list[Any] = [None] * rt.world
    dist.all_gather_object(hashes, args.config_hash())
    if len(set(hashes)) > 1:
        by_rank = ", ".join(f"rank {r}: {h}" for r, h in enumerate(hashes))
        raise ValueError(
            "the ranks were started with different configurations (config hash by rank: "
            f"{by_rank}); start every rank with the same arguments"
        )
    try:
        check_args(args, rt.world)
        # what only the game and the data can say (a Dirichlet alpha, a train size, a dataset
        # missing on this machine): build the first row's game once, as every row will
        from commenv.node_graph import NodeGraphGame

        first = (args.contents() or ["labels"])[0]
        NodeGraphGame(**game_kwargs(args, first), device="cpu")
        if args.agent:
            from commenv.bench.graph import load_agent

            load_agent(args.agent)
        error = ""
    except Exception as e:  # noqa: BLE001 - any failure here stops every rank, none hangs
        error = f"{type(e).__name__}: {e}"
    errors: list[Any] = [None] * rt.world
    dist.all_gather_object(errors, error)
    bad = [r for r, e in enumerate(errors) if e]
    if bad:
        raise ValueError(f"{errors[bad[0]]} (on rank(s) {bad})")


COLUMNS = [
    "configuration",
    "processes",
    "avg_acc",
    "coll_acc",
    "thesis_avg",
    "thesis_coll",
    "sim_max_node_diff",
    "bytes_per_node_step",
    "wire_bytes_per_node_step",
    "step_ms",
    "comm_ms",
]


def _thesis(row: dict[str, Any]) -> tuple[float | None, float | None]:
    from commenv.bench.graph import CONFIGS

    names = {
        "none": "no sharing",
        "labels": "true labels",
        "logits": "logits",
        "features": "features",
    }
    wanted = f"{row['nodes']} nodes, {names.get(row['shared'], '?')}"
    for c in CONFIGS:
        if c[0] == wanted:
            return c[3], c[4]
    return None, None


def cmd_graph(argv: Sequence[str]) -> list[dict[str, Any]]:
    from commenv.bench.tools import (
        RUN_OPTIONS,
        RunStore,
        figure,
        markdown_table,
        parse_config,
        result_options,
    )

    prog = "torchrun --nproc-per-node P -m commenv.distributed graph"
    try:  # before the process group: each rank refuses on its own, none waits for another
        args = parse_config(
            GraphArgs, argv, GraphArgs.__doc__, prog=prog, inert=GraphArgs.inert_options
        ).finalize()
        if args.device != "auto":
            check_device(args.device, "--device")
    except ValueError as e:
        print(f"commenv.distributed: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    torch.set_num_threads(args.threads)
    rt = init_runtime(args)
    try:
        startup_checks(args, rt)
    except ValueError as e:
        print(f"commenv.distributed: rank {rt.rank}: error: {e}", file=sys.stderr, flush=True)
        dist.destroy_process_group()
        raise SystemExit(2) from None
    runs = [("share", c) for c in args.contents()] + [("sgd", h) for h in args.hooks()]
    # what a row depends on: the options (the content and hook lists only choose which runs
    # happen; the timeout changes nothing) and the number of processes
    config = result_options(args, (*RUN_OPTIONS, "content", "sync_sgd", "agent", "timeout"))
    config["processes"] = rt.world
    store, refused = None, None
    if rt.rank == 0:
        try:
            store = RunStore(args.out_dir, "distributed", args.resume, config, args.inert_options())
        except ValueError as e:  # --resume under other options: every rank stops, none hangs
            refused = str(e)
    done: list[Any] = [sorted(store.rows) if store else refused]
    dist.broadcast_object_list(done, src=0)
    if isinstance(done[0], str):
        if rt.rank == 0:
            print(f"commenv.distributed: error: {done[0]}", file=sys.stderr, flush=True)
        dist.destroy_process_group()
        raise SystemExit(2)
    if rt.rank == 0:
        store.start()  # every rank has accepted the input: the file marks a run in progress
        print(
            f"commenv.distributed: {rt.world} process(es), {rt.backend} on {rt.device}, "
            f"{args.dataset}, {args.n_nodes} nodes, {args.steps} steps, "
            f"rows {[f'{k}:{v}' for k, v in runs]}",
            flush=True,
        )
    try:
        for kind, what in runs:
            name = f"{kind}:{what}"
            if name in done[0]:
                continue
            if kind == "share":
                row = run_output_sharing(args, rt, what, progress_every=max(1, args.steps // 4))
            else:
                row = run_sync_sgd(args, rt, what)
            if store is not None:
                store.add(name, row)
            where = (rt.rank, rt.world, args.steps, rt.timeout)
            guarded(*where, f"the barrier after {name}", dist.barrier)
        guarded(rt.rank, rt.world, args.steps, rt.timeout, "leaving the group", _shutdown)
    except PeerFailure as e:
        partial = store.path if store else Path(args.out_dir) / "distributed.partial.jsonl"
        print(
            f"commenv.distributed: error: {e} Stopping; no result file was written "
            f"(finished rows, if any, are in {partial}).",
            file=sys.stderr,
            flush=True,
        )
        os._exit(3)  # the process group cannot be torn down cleanly with a peer gone
    rows: list[dict[str, Any]] = []
    if store is not None:
        rows = [store.rows[f"{k}:{v}"] for k, v in runs]
        if args.check_simulation:  # the process group is gone: no rank waits on these
            for (kind, what), row in zip(runs, rows, strict=True):
                if kind == "share" and "sim_max_node_diff" not in row:
                    sim = simulate(args, what, rt.device)
                    row["sim_avg_acc"], row["sim_coll_acc"] = sim["avg_acc"], sim["coll_acc"]
                    row["sim_max_node_diff"] = max(
                        abs(a - b) for a, b in zip(row["per_node"], sim["per_node"], strict=True)
                    )
        for row in rows:
            row["thesis_avg"], row["thesis_coll"] = _thesis(row) if row["curve"] else (None, None)
        print(f"\nnode_graph_v0 on {rt.world} process(es), {args.dataset}, {args.steps} steps:\n")
        print(markdown_table(rows, COLUMNS, digits=2))
        claims = distributed_claims(rows)
        if claims:
            print(f"\nClaims on this run ({args.dataset}, bytes include the images):\n")
            print("\n".join(f"- {c}: {'holds' if ok else 'FAILS'}" for c, ok in claims.items()))
        extra = {"world_size": rt.world, "backend": rt.backend, "thesis_claims": claims}
        json_path, csv_path = store.finish(rows, args, extra)
        png = figure(_plot, rows, Path(args.out_dir) / "distributed.png", args, rt.world)
        print(f"\nwrote {json_path}, {csv_path}, {png}", flush=True)
    return rows


def distributed_claims(rows: Sequence[dict[str, Any]]) -> dict[str, bool]:
    """The thesis' claims this run can judge (absent when the rows to judge them are absent).

    ``collective > average`` (table 2.2) on the sharing rows; output sharing's bytes per
    node-step (every content that sends, images included) below synchronous SGD's uncompressed
    all-reduce (the thesis' comparison), and, beyond the thesis, below torch's compressed hooks;
    the per-node accuracies equal to the single-process simulation's (``--check-simulation``).
    """
    claims: dict[str, bool] = {}
    multi = [r for r in rows if r["curve"] and r["nodes"] > 1]
    if multi:
        claims["collective > average"] = all(
            round(r["coll_acc"], 1) > round(r["avg_acc"], 1) for r in multi
        )
    senders = [r["bytes_per_node_step"] for r in multi if r["shared"] != "none"]
    sgd = {r["protocol"]: r["bytes_per_node_step"] for r in rows if not r["curve"]}
    if senders and "DDP (allreduce)" in sgd:
        claims["output sharing sends fewer bytes per node-step than sync SGD (all-reduce)"] = (
            max(senders) < sgd["DDP (allreduce)"]
        )
    compressed = [b for p, b in sgd.items() if p != "DDP (allreduce)"]
    if senders and compressed:
        claims["(beyond the thesis) ... and than every compressed DDP hook (fp16, PowerSGD)"] = max(
            senders
        ) < min(compressed)
    checked = [r["sim_max_node_diff"] for r in multi if r.get("sim_max_node_diff") is not None]
    if checked:
        claims["every node's accuracy equals the single-process simulation's"] = max(checked) == 0
    return claims


def _plot(rows: list[dict[str, Any]], path: Path, args: GraphArgs, world: int) -> Path:
    from commenv.bench.tools import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, row in enumerate(r for r in rows if r["curve"]):
        steps = [c["step"] for c in row["curve"]]
        ax.plot(
            steps,
            [c["collective"] for c in row["curve"]],
            color=f"C{i}",
            label=f"{row['configuration']} (collective)",
        )
        ax.plot(
            steps,
            [c["average"] for c in row["curve"]],
            color=f"C{i}",
            linestyle="--",
            label=f"{row['configuration']} (average)",
        )
    for row in rows:
        if not row["curve"]:
            ax.axhline(row["avg_acc"], linewidth=0.8, linestyle=":", label=row["configuration"])
    ax.set_xlabel("parallel training steps")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"node_graph_v0 on {world} process(es), {args.dataset}")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


# -- projection ---------------------------------------------------------------------------------
@dataclass
class ProjectArgs:
    """Step time against the number of machines P on a network, from a measured run."""

    results: Path = Path("results/distributed-quick/distributed.json")
    """a distributed.json with output-sharing rows (and DDP rows for the DDP curves)"""
    bandwidth_gbps: float = 10.0
    """network bandwidth per machine, Gb/s (each direction)"""
    latency_us: float = 50.0
    """assumed per-message latency of one point-to-point exchange, microseconds (not measured)"""
    machines: str = "1,2,4,8,16,32,64,128"
    """values of P"""
    out_dir: Path | None = None
    """where projection.json/.csv/.png go (default: beside --results)"""


def project_rows(
    rows: Sequence[dict[str, Any]], machines: Sequence[int], gbps: float, latency_us: float
) -> list[dict[str, Any]]:
    """One node (or DDP worker) per machine, N = P (weak scaling), fully connected graph.

    Output sharing: every node puts on average ``messages_per_node_step`` records (message +
    header, measured) on the wire per step, a number independent of N at the benchmark's
    broadcast rule (``margin * consumption_prob`` per node-step); two all_to_all exchanges
    (counts, records) of ``P - 1`` point-to-point rounds each. DDP: ring all-reduce of the
    measured bytes per step, ``2 (P-1)/P`` of them leave each machine, ``2 (P-1)`` latency
    rounds per all_reduce call. Compute per step: measured here (per node-step for output
    sharing, per worker-step for DDP), one thread.
    """
    bw = gbps * 1e9 / 8  # bytes/s
    alpha = latency_us * 1e-6
    out: list[dict[str, Any]] = []
    for row in rows:
        if row["curve"] and row["nodes"] > 1:
            compute = row["compute_ms_per_node_step"] / 1e3
            n_messages = row["message_bytes_handed"] / max(1, row["message_bytes_per_message"])
            per_step = n_messages / (row["nodes"] * row["steps"])
            record = row["message_bytes_per_message"] + row["header_bytes_per_message"]
            for P in machines:
                sent = 0.0 if P == 1 else per_step * record + 8 * (P - 1)
                latency = 0.0 if P == 1 else 2 * (P - 1) * alpha
                out.append(_proj(row["protocol"], P, compute, sent / bw, latency, sent))
        elif not row["curve"]:
            compute = row["step_ms"] / 1e3  # a 1-process run: no gradient leaves the machine
            B, calls = row["bytes_per_node_step"], row["allreduce_calls_per_step"]
            for P in machines:
                sent = 0.0 if P == 1 else 2 * (P - 1) / P * B
                latency = 0.0 if P == 1 else calls * 2 * (P - 1) * alpha
                out.append(_proj(row["protocol"], P, compute, sent / bw, latency, sent))
    return out


def _proj(
    protocol: str, P: int, compute: float, transfer: float, latency: float, sent: float
) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "machines": P,
        "compute_ms": 1e3 * compute,
        "transfer_ms": 1e3 * transfer,
        "latency_ms": 1e3 * latency,
        "comm_ms": 1e3 * (transfer + latency),
        "step_ms": 1e3 * (compute + transfer + latency),
        "bytes_per_machine_step": sent,
    }


PROJECT = "python -m commenv.distributed project"


def parse_machines(spec: str) -> list[int]:
    """``--machines``: comma-separated distinct integers >= 1 (``ValueError`` otherwise)."""
    try:
        machines = [int(m) for m in spec.split(",")]
    except ValueError:
        machines = []
    if not machines or min(machines) < 1 or len(set(machines)) != len(machines):
        raise ValueError(
            f"--machines must be distinct integers >= 1 separated by commas, such as '1,2,4', "
            f"got {spec!r}"
        )
    return machines


def project_source(args: ProjectArgs) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``--results`` file and its projected rows, every option checked first:
    ``ValueError`` naming the option (nothing is written yet)."""
    bandwidth = check_float("--bandwidth-gbps", args.bandwidth_gbps, 0.0, low_open=True)
    latency = check_float("--latency-us", args.latency_us, 0.0)
    machines = parse_machines(args.machines)
    source = f"--results must be a distributed.json written by `graph`, got {str(args.results)!r}"
    if not args.results.is_file():
        raise ValueError(f"{source}, which is not a file (run `graph` first)")
    try:
        data = json.loads(args.results.read_text())
        steps = data["meta"]["args"]["steps"]
        for row in data["rows"]:
            row["steps"] = steps
        world = data.get("world_size")
        rows = project_rows(data["rows"], machines, bandwidth, latency) if world == 1 else []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{source} ({type(exc).__name__}: {exc})") from None
    if world != 1:
        raise ValueError(
            f"--results {str(args.results)!r} was run on {world} processes; the projection "
            "takes its compute per step from a 1-process run (nothing on the wire)"
        )
    if not rows:
        raise ValueError(f"{source}, which holds no output-sharing or DDP row to project")
    return data, rows


def cmd_project(argv: Sequence[str]) -> list[dict[str, Any]]:
    from commenv.bench.tools import (
        figure,
        markdown_table,
        parse_config,
        pyplot,
        save_figure,
        write_results,
    )

    try:  # bad input: one line and exit 2 before anything is written, as `commenv bench`
        args = parse_config(ProjectArgs, argv, description=ProjectArgs.__doc__, prog=PROJECT)
        data, rows = project_source(args)
    except ValueError as exc:
        print(f"{PROJECT}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    out_dir = args.out_dir or args.results.parent
    print(
        f"Projected step time on a {args.bandwidth_gbps:g} Gb/s network, {args.latency_us:g} us "
        f"latency (assumed), one node per machine; compute measured in {args.results}:\n"
    )
    print(markdown_table(rows, list(rows[0]), digits=3))
    extra = {"source": str(args.results), "source_meta": data["meta"]}
    json_path, csv_path = write_results(out_dir, "projection", rows, args, extra)

    def draw() -> Path:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, proto in enumerate(dict.fromkeys(r["protocol"] for r in rows)):
            mine = [r for r in rows if r["protocol"] == proto]
            ax.plot(
                [r["machines"] for r in mine],
                [r["step_ms"] for r in mine],
                "o-",
                color=f"C{i}",
                label=proto,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("machines P (one node or worker each)")
        ax.set_ylabel("projected step time (ms)")
        ax.set_title(f"{args.bandwidth_gbps:g} Gb/s, {args.latency_us:g} us latency")
        ax.legend(fontsize=7)
        return save_figure(fig, Path(out_dir) / "projection.png")

    png = figure(draw)
    print(f"\nwrote {json_path}, {csv_path}, {png}")
    return rows


def _shutdown() -> None:
    """Leave the process group once every rank is done (all ranks destroy together; gloo
    aborts a process whose pairs are torn down while a peer still sends)."""
    dist.barrier()
    dist.destroy_process_group()


COMMANDS = {"graph": cmd_graph, "project": cmd_project}


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(
            "usage: torchrun --nproc-per-node P -m commenv.distributed graph [--help | options]\n"
            "       python -m commenv.distributed project --results <distributed.json>",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
