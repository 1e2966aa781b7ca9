"""The bandwidth frontier: output sharing against the gradient-exchange methods it claims to beat.

The thesis argues for exchanging outputs from bandwidth: synchronous SGD "requires a large amount
of data to be exchanged". This benchmark measures both sides of that trade. Every protocol of
:mod:`commenv_agents.protocols` trains ``n_nodes`` nodes on node_graph_v0 with the same exclusive
partitions (IID and/or Dirichlet), the same MLP (or CNN), the same minibatches per node and step
budget, and is evaluated the same way (:mod:`commenv.evaluation`: average and collective
accuracy); everything it sends is counted by the game's channel, per tag.

It prints one table per partition (final average and collective accuracy, total bits, bits per
node-step, bits and steps to reach the target accuracy, compute: forward/backward passes and
extra model copies), the Pareto fronts over (total bits, collective accuracy) and over (total
bits, average accuracy) computed from the rows, and verdicts on the issue's targets, one line
each; it draws accuracy against bits (log axis) with both fronts, and writes
``frontier.json/.csv/.png``. The collective (the thesis' entropy-weighted vote of the ``N``
models) is free for a replicated protocol, whose nodes hold one model, but not for the others:
at test time it needs every node's prediction, traffic no row bills. The average front compares
what one node's model reaches alone.

Target accuracy: synchronous SGD's final accuracy minus 1 point (``--target`` overrides);
steps and bits to target are read on the evaluation grid from the collective accuracy.

Usage::

    commenv bench frontier --quick                        # digits, under a minute
    commenv bench frontier --partitions iid dirichlet     # Fashion-MNIST, 10 nodes
    commenv bench frontier --quick --protocols labels sync_sgd topk
    commenv bench frontier --quick --agent my_module:MyProtocol

A user's protocol (``--agent module:Class``) is built as ``Class(n_nodes, image_shape,
num_classes, channel=..., arch=..., hidden=..., feature_dim=..., lr=..., device=..., seed=...)``
and needs ``step(views, out_valid) -> (bits, payload)``, ``predict_proba(x) -> (N, S, C)`` and a
``compute`` attribute (:class:`commenv_agents.protocols.Compute`); subclassing
:class:`commenv_agents.protocols.CommProtocol` gives all three (see ``docs/frontier.md``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from commenv.bench.graph import CONFIGS as GRAPH_CONFIGS
from commenv.bench.tools import (
    RUN_OPTIONS,
    NodeGraphOptions,
    RunStore,
    as_option_error,
    check_dataset,
    figure,
    load_class,
    markdown_table,
    parse_config,
    partition_inert,
    progress,
    pyplot,
    require_runs,
    result_options,
    save_figure,
    seed_everything,
    select_device,
    unread,
)
from commenv.core import check_choice, check_float
from commenv.node_graph import PARTITIONS, NodeGraphGame
from commenv_agents.population import ARCHS, OPTIMIZERS
from commenv_agents.protocols import (
    PROTOCOL_SPECS,
    PROTOCOLS,
    CommProtocol,
    make_protocol,
    run_protocol,
)

NAME = "frontier"
SHARES = ("labels", "logits", "features", "features_8bit")
# Table 2.2 (CIFAR-10, 10 nodes, 5,000 steps) beside the output-sharing rows.
THESIS_ROWS = {
    "isolated": "10 nodes, no sharing",
    "labels": "10 nodes, true labels",
    "logits": "10 nodes, logits",
    "features": "10 nodes, features",
}
REFERENCES = ("centralised",)
"""Rows kept out of the Pareto front: shipping every minibatch to one model is the
non-distributed reference (its bits are in the table and the verdicts say where it stands)."""
THESIS = {c[0]: (c[3], c[4]) for c in GRAPH_CONFIGS}
COLUMNS = [
    "protocol",
    "avg_acc",
    "coll_acc",
    "thesis_avg",
    "thesis_coll",
    "total_bits",
    "bits_per_node_step",
    "bits_to_target",
    "steps_to_target",
    "forward_passes",
    "backward_passes",
    "model_copies",
    "pass_fraction",
    "pareto",
    "pareto_avg",
]


@dataclass
class Args(NodeGraphOptions):
    """The bandwidth frontier: every protocol on one node graph, accuracy against bits.

    The node-graph options (data, minibatch, sharing, device, seed) come from
    :class:`~commenv.bench.tools.NodeGraphOptions`; this benchmark's own follow."""

    quick: bool = False
    """digits, 400 steps, evaluation every 50 (about two minutes on 2 CPU cores)"""
    protocols: tuple[str, ...] = PROTOCOLS
    """protocols to run, by name (--consumption-prob, --broadcast-margin and --temperature
    apply to output sharing: labels, logits, features, features_8bit)"""
    partitions: tuple[str, ...] = ("iid",)
    """partitions to run every protocol on: iid and/or dirichlet"""
    n_nodes: int = 10
    """nodes N (fully connected)"""
    steps: int | None = None
    """parallel training steps per protocol (default 2000; 400 with --quick)"""
    eval_every: int | None = None
    """evaluate every this many steps (default 250; 50 with --quick)"""
    arch: str = "mlp"
    """node model: mlp or cnn (ist needs mlp)"""
    hidden: int = 256
    """first hidden layer of the MLP"""
    feature_dim: int = 64
    """top-level features (the shared features' width)"""
    topk_ratio: float = 0.01
    """top-k: fraction of the gradient entries sent, in (0, 1]"""
    powersgd_rank: int = 2
    """PowerSGD: rank of the approximation (>= 1)"""
    powersgd_start: int = 0
    """PowerSGD: plain all-reduce before this step (the hook's start_powerSGD_iter)"""
    int8_bits: int = 8
    """int8: bits per gradient entry (1-8)"""
    local_period: int = 10
    """local SGD: average the parameters every H steps"""
    codistill_period: int = 50
    """codistillation: refresh the stale peer copies every H steps"""
    codistill_weight: float = 1.0
    """codistillation: weight of the distillation term"""
    ist_period: int = 10
    """IST: local steps per subnet round"""
    optimizer: str = "adam"
    """every protocol's optimiser: adam (the thesis') or sgd (momentum 0.9, what the
    compression papers pair error feedback with; give it its own --lr, e.g. 0.05)"""
    target: float | None = None
    """target accuracy in percent, in (0, 100] (default: synchronous SGD's final accuracy - 1
    point)"""
    agent: str | None = None
    """a user protocol 'module:Class' run beside the others"""
    out_dir: Path | None = None
    """result folder (default results/frontier, results/frontier-quick with --quick)"""
    resume: bool = False
    """keep the runs a killed invocation completed"""


def resolve(args: Args) -> Args:
    """Fill the defaults that depend on --quick and check the names (each row once) and the
    target."""
    for kind, names, choices in (
        ("protocol", args.protocols, PROTOCOLS),
        ("partition", args.partitions, PARTITIONS),
    ):
        for name in names:
            check_choice(kind, name, choices)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"--{kind}s must name each row once, got {list(names)} ({', '.join(twice)} "
                "more than once)"
            )
    check_choice("optimizer", args.optimizer, OPTIMIZERS)
    check_choice("--arch", args.arch, ARCHS)
    check_float("--target", args.target, 0.0, 100.0, low_open=True, optional=True)
    if args.n_nodes < 2:
        raise ValueError(f"n_nodes must be >= 2 (a frontier needs a channel), got {args.n_nodes}")
    args.dataset = args.dataset or ("digits" if args.quick else "fashion-mnist")
    args.steps = args.steps or (400 if args.quick else 2000)
    args.eval_every = args.eval_every or (50 if args.quick else 250)
    args.out_dir = args.out_dir or Path("results") / (f"{NAME}-quick" if args.quick else NAME)
    return args


PROTOCOL_FIELDS: dict[str, dict[str, str]] = {
    "topk": {"ratio": "topk_ratio"},
    "powersgd": {"rank": "powersgd_rank", "start_iter": "powersgd_start"},
    "int8": {"bits": "int8_bits"},
    "local_sgd": {"period": "local_period"},
    "codistill": {"period": "codistill_period", "weight": "codistill_weight"},
    "ist": {"period": "ist_period"},
}
"""Each gradient-exchange protocol's own keywords and the option (:class:`Args` field) that
sets each: what the protocol is built with, and what its refusals name."""


def inert_options(args: Args) -> dict[str, str]:
    """The options of the protocols ``--protocols`` leaves out, and why (typed, they are
    refused: :func:`~commenv.bench.tools.refuse_inert`)."""
    inert = partition_inert(args.partitions)
    inert |= {
        field: f"it sets the {name} protocol, which --protocols does not select"
        for name, keywords in PROTOCOL_FIELDS.items()
        if name not in args.protocols
        for field in keywords.values()
    }
    readers: dict[str, tuple[str, ...]] = {"temperature": ("logits",), "broadcast_margin": SHARES}
    if not args.agent:  # a user's protocol may read its game's inbox
        readers["consumption_prob"] = SHARES
    why = "it acts on output sharing ({}); --protocols selects none"
    return inert | unread(args.protocols, readers, why)


def protocol_options(args: Args) -> dict[str, dict[str, Any]]:
    share = {"broadcast_prob": args.broadcast_prob(args.n_nodes), "temperature": args.temperature}
    own = {p: {k: getattr(args, f) for k, f in kw.items()} for p, kw in PROTOCOL_FIELDS.items()}
    return {**dict.fromkeys(SHARES, share), **own}


def plays_on(name: str, cls: Any = None) -> tuple[str, int]:
    """What the game of protocol ``name`` (or the user's ``cls``) carries: its content and
    float bits (all a protocol's game depends on beside the options)."""
    if cls is None:
        return PROTOCOL_SPECS[name].content, PROTOCOL_SPECS[name].float_bits
    return getattr(cls, "content", "labels"), getattr(cls, "float_bits", 32)


def make_game(
    args: Args, partition: str, name: str, device: torch.device, cls: Any = None
) -> NodeGraphGame:
    """The game protocol ``name`` (or the user's ``cls``) plays on ``partition``."""
    content, float_bits = plays_on(name, cls)
    return NodeGraphGame(
        **args.game_config(),
        n_nodes=args.n_nodes,
        content=content,
        feature_dim=args.feature_dim,
        float_bits=float_bits,
        partition=partition,
        device=device,
        max_cycles=args.steps + 1,
    )


def common_kwargs(
    args: Args, game: NodeGraphGame, device: torch.device, cls: Any = None
) -> dict[str, Any]:
    """What every protocol (and a user's class) is built with beside its shape."""
    return dict(
        channel=game.channel,
        arch=args.arch,
        hidden=args.hidden,
        feature_dim=args.feature_dim,
        lr=args.lr,
        device=device,
        seed=args.seed,
        # a user's class is built as before unless another optimiser is asked for
        **({"optimizer": args.optimizer} if cls is None or args.optimizer != "adam" else {}),
    )


def build_protocol(args: Args, name: str, game: NodeGraphGame, device: torch.device) -> Any:
    """Protocol ``name`` of :data:`PROTOCOLS`, built for ``game`` with the options."""
    return make_protocol(
        name,
        args.n_nodes,
        game.image_shape,
        game.num_classes,
        options=protocol_options(args),
        **common_kwargs(args, game, device),
    )


def agent_kwargs(args: Args) -> tuple[str, ...]:
    """The keywords a user's ``--agent`` class is built with (the first three positionally)."""
    common = ("channel", "arch", "hidden", "feature_dim", "lr", "device", "seed")
    return ("n_nodes", "image_shape", "num_classes", *common) + (
        ("optimizer",) if args.optimizer != "adam" else ()
    )


def check_runs(args: Args, jobs: list[tuple[str, Any]], device: torch.device) -> None:
    """Every run's values refused before the first one trains: the data set, the game of every
    (partition, protocol) and every protocol of :data:`PROTOCOLS`, built once and dropped
    (nothing trains; a user's class is checked by
    :func:`~commenv.bench.tools.load_class`). ``ValueError`` names the option as typed."""
    check_dataset(args.dataset, args.data_root)
    for partition in args.partitions:
        for key in dict.fromkeys(plays_on(name, cls) for name, cls in jobs):
            players = [(name, cls) for name, cls in jobs if plays_on(name, cls) == key]
            try:  # one game at a time: each holds the training images
                game = make_game(args, partition, players[0][0], device, players[0][1])
            except ValueError as exc:
                raise as_option_error(exc, args) from None
            if partition != args.partitions[0]:
                continue  # a protocol is built the same on every partition
            for name in (name for name, cls in players if cls is None):
                try:
                    build_protocol(args, name, game, device)
                except ValueError as exc:
                    error = as_option_error(exc, args, PROTOCOL_FIELDS.get(name))
                    if str(error) == str(exc):  # a message that starts with no option
                        error = ValueError(f"--protocols {name}: {exc}")
                    raise error from None


def run_one(
    args: Args, partition: str, name: str, device: torch.device, bar: Any, cls: Any = None
) -> dict[str, Any]:
    """Train one protocol on one partition and return its row (with its curve)."""
    spec = PROTOCOL_SPECS.get(name)
    game = make_game(args, partition, name, device, cls)
    seed_everything(args.seed)
    if cls is not None:
        common = common_kwargs(args, game, device, cls)
        proto = cls(args.n_nodes, game.image_shape, game.num_classes, **common)
    else:
        proto = build_protocol(args, name, game, device)
    start = time.perf_counter()
    hist = run_protocol(
        game,
        proto,
        args.steps,
        eval_every=args.eval_every,
        test=(game.test_images, game.test_labels),
        seed=args.seed,
        progress=bar,
    )
    last = hist[-1]
    thesis = THESIS.get(THESIS_ROWS.get(name, ""), (None, None))
    return {
        "partition": partition,
        "protocol": name,
        "doc": spec.doc if spec else f"user protocol {cls.__name__}",
        "avg_acc": last["average"],
        "coll_acc": last["collective"],
        "thesis_avg": thesis[0],
        "thesis_coll": thesis[1],
        "total_bits": last["bits"],
        "bits_per_node_step": last["bits"] / (args.n_nodes * args.steps),
        **{f"bits_{tag}": bits for tag, bits in last["bits_by_tag"].items()},
        **last["compute"],
        "params_per_node": getattr(proto, "num_params_per_node", None),
        "seconds": time.perf_counter() - start,
        "curve": [{k: h[k] for k in ("step", "average", "collective", "bits")} for h in hist],
    }


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which ``(bits, accuracy)`` points no other point dominates (fewer or equal bits and
    higher or equal accuracy, one of them strictly)."""
    return [
        not any(
            b2 <= b and a2 >= a and (b2 < b or a2 > a)
            for j, (b2, a2) in enumerate(points)
            if j != i
        )
        for i, (b, a) in enumerate(points)
    ]


def to_target(curve: list[dict[str, Any]], target: float) -> tuple[int | None, int | None]:
    """(steps, bits) at the first evaluation whose collective accuracy reaches ``target``."""
    hit = next((c for c in curve if c["collective"] >= target), None)
    return (hit["step"], hit["bits"]) if hit else (None, None)


def annotate(rows: list[dict[str, Any]], target: float | None) -> float | None:
    """Add target, steps/bits to target and the Pareto flag to one partition's rows."""
    sync = next((r for r in rows if r["protocol"] == "sync_sgd"), None)
    if target is None and sync is not None:
        target = math.floor((sync["coll_acc"] - 1.0) * 10) / 10
    members = [r for r in rows if r["protocol"] not in REFERENCES]
    for key, acc in (("pareto", "coll_acc"), ("pareto_avg", "avg_acc")):
        front = pareto_front([(r["total_bits"], r[acc]) for r in members])
        on = {id(r) for r, ok in zip(members, front, strict=True) if ok}
        for row in rows:
            ref = row["protocol"] in REFERENCES
            row[key] = "yes" if id(row) in on else ("ref" if ref else "")
    for row in rows:
        row["target"] = target
        steps, bits = to_target(row["curve"], target) if target is not None else (None, None)
        row["steps_to_target"], row["bits_to_target"] = steps, bits
    return target


def _dominating(row: dict[str, Any], rows: list[dict[str, Any]], acc: str) -> list[dict]:
    """The protocols (references left out) that dominate ``row`` on (total bits, ``acc``), by
    :func:`pareto_front`'s rule."""
    b, a = row["total_bits"], row[acc]
    return [
        r
        for r in rows
        if r["protocol"] not in REFERENCES
        and r["total_bits"] <= b
        and r[acc] >= a
        and (r["total_bits"] < b or r[acc] > a)
    ]


def verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The issue's targets judged on one partition's rows (claims without rows are absent)."""
    by = {r["protocol"]: r for r in rows}
    out: dict[str, str] = {}
    sync, central, labels = by.get("sync_sgd"), by.get("centralised"), by.get("labels")
    if sync and central:
        gap = sync["coll_acc"] - central["coll_acc"]
        out["sync SGD matches one model on the combined batch (within 0.5 points)"] = (
            f"{'holds' if abs(gap) <= 0.5 else 'FAILS'}: {sync['coll_acc']:.1f} vs "
            f"{central['coll_acc']:.1f} % ({gap:+.1f}) after the same steps"
        )
    if labels:
        fronts = (
            ("pareto", "coll_acc", "output sharing (true labels) is on the measured Pareto front"),
            (
                "pareto_avg",
                "avg_acc",
                "output sharing (true labels) is on the Pareto front of average accuracy "
                "(one node's model, no test-time ensemble)",
            ),
        )
        for key, acc, claim in fronts:
            out[claim] = (
                "holds: no other protocol reaches its accuracy with no more bits"
                if labels[key] == "yes"
                else "FAILS: "
                + ", ".join(r["protocol"] for r in _dominating(labels, rows, acc))
                + " reach(es) at least its accuracy with no more bits"
            )
    if labels and central:
        wins = central["total_bits"] <= labels["total_bits"] and (
            central["coll_acc"] >= labels["coll_acc"]
        )
        out["output sharing (true labels) is not dominated by shipping the data to one model"] = (
            f"{'FAILS' if wins else 'holds'}: the centralised reference reaches "
            f"{central['coll_acc']:.1f} % with {central['total_bits']:,} bits, labels "
            f"{labels['coll_acc']:.1f} % with {labels['total_bits']:,}"
        )
    if sync and labels:
        best = max(c["collective"] for c in sync["curve"])
        gap = labels["coll_acc"] - best
        ratio = sync["total_bits"] / max(1, labels["total_bits"])
        payload_ratio = sync["total_bits"] / max(1, labels.get("bits_payload", 0))
        ok_acc, ok_bits = gap >= -1.0, ratio >= 1000
        out["true labels within 1 point of sync SGD's best accuracy at >= 1,000x fewer bits"] = (
            f"{'holds' if ok_acc and ok_bits else 'FAILS'}: {labels['coll_acc']:.1f} vs "
            f"{best:.1f} % ({gap:+.1f} points, {'ok' if ok_acc else 'too far'}) with "
            f"{ratio:,.0f}x fewer bits ({'ok' if ok_bits else 'short of 1,000x'}; the labels "
            f"alone, without their images, are {payload_ratio:,.0f}x fewer)"
        )
    return out


def draw(groups: dict[str, list[dict[str, Any]]], args: Args) -> Path:
    """Collective (filled) and average (hollow) accuracy against bits (log x) per partition,
    both Pareto fronts drawn."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 5), squeeze=False)
    for ax, (partition, rows) in zip(axes[0], groups.items(), strict=True):
        positive = [r["total_bits"] for r in rows if r["total_bits"] > 0]
        floor = 10 ** math.floor(math.log10(min(positive))) / 10 if positive else 1.0
        for i, row in enumerate(rows):
            color = f"C{i % 10}"
            marker = "os^vD<>ph*"[i // 10 % 10]
            curve = [c for c in row["curve"] if c["bits"] > 0]
            if curve:
                ax.plot(
                    [c["bits"] for c in curve],
                    [c["collective"] for c in curve],
                    color=color,
                    alpha=0.35,
                    linewidth=0.8,
                )
            x = max(row["total_bits"], floor)
            ax.scatter([x], [row["coll_acc"]], color=color, marker=marker, label=row["protocol"])
            ax.scatter([x], [row["avg_acc"]], facecolors="none", edgecolors=color, marker=marker)
        for key, acc, style, label in (
            ("pareto", "coll_acc", "-", "Pareto front (collective)"),
            ("pareto_avg", "avg_acc", "--", "Pareto front (average)"),
        ):
            on_front = [r for r in rows if r.get(key) == "yes"]  # the reference is left out
            front = sorted((max(r["total_bits"], floor), r[acc]) for r in on_front)
            if front:
                ax.step(
                    *zip(*front, strict=True),
                    where="post",
                    color="black",
                    linestyle=style,
                    linewidth=1.2,
                    label=label,
                )
        ax.set_xscale("log")
        ax.set_xlabel(f"bits communicated (total; 0 bits drawn at {floor:.0e})")
        ax.set_ylabel("test accuracy (%): collective (filled), average (hollow)")
        ax.set_title(f"{args.dataset}, {args.n_nodes} nodes, {partition}, {args.steps} steps")
        ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, Path(args.out_dir) / f"{NAME}.png")


def replot(json_path: str | Path) -> Path:
    """Draw ``frontier.png`` again beside a ``frontier.json`` (from its rows and arguments)."""
    import json
    from types import SimpleNamespace

    path = Path(json_path)
    saved = json.loads(path.read_text())
    args = SimpleNamespace(**{**saved["meta"]["args"], "out_dir": str(path.parent)})
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in saved["rows"]:
        groups.setdefault(row["partition"], []).append(row)
    return draw(groups, args)


def resume_config(args: Args) -> dict[str, Any]:
    """The options a run's row depends on, which ``--resume`` must find unchanged (the
    protocols, partitions and user class only choose which runs happen)."""
    return result_options(args, (*RUN_OPTIONS, "protocols", "partitions", "agent"))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = resolve(
        parse_config(Args, argv, description=__doc__.split("\n\n")[0], inert=inert_options)
    )
    device = select_device(args.device)
    torch.set_num_threads(args.threads)
    jobs: list[tuple[str, Any]] = [(name, None) for name in args.protocols]
    if args.agent:
        contract = f"{CommProtocol.__module__}.CommProtocol"
        cls = load_class(
            args.agent, "--agent", ("step", "predict_proba"), contract, agent_kwargs(args), 3
        )
        jobs.append((f"agent:{cls.__name__}", cls))
    require_runs(
        [(p, n) for p in args.partitions for n in jobs], "--protocols, --partitions and --agent"
    )
    check_runs(args, jobs, device)  # every run's values refused now, not after the runs before
    store = RunStore(args.out_dir, NAME, args.resume, resume_config(args), inert_options(args))
    print(
        f"bench frontier: {args.dataset}, {args.n_nodes} nodes, {args.steps} steps, "
        f"arch {args.arch}, device {device}, partitions {list(args.partitions)}, "
        f"{len(jobs)} protocols" + (f", {len(store.rows)} runs resumed" if store.rows else "")
    )
    todo = [(p, n, c) for p in args.partitions for n, c in jobs if f"{p}/{n}" not in store]
    with progress(total=args.steps * len(todo), desc=NAME) as bar:
        for partition, name, cls in todo:
            bar.set_postfix_str(f"{partition}/{name}")
            store.add(f"{partition}/{name}", run_one(args, partition, name, device, bar, cls))

    groups = {p: [dict(store.rows[f"{p}/{n}"]) for n, _ in jobs] for p in args.partitions}
    rows, extra = [], {"targets": {}, "verdicts": {}}
    for partition, group in groups.items():
        target = annotate(group, args.target)
        claims = verdicts(group)
        extra["targets"][partition], extra["verdicts"][partition] = target, claims
        rows += group
        print(
            f"\n{partition} partition, {args.dataset}, {args.steps} steps; target accuracy "
            f"{target} % (sync SGD's final collective accuracy - 1 point unless --target); "
            "thesis columns: table 2.2 (CIFAR-10, 5,000 steps)\n"
        )
        print(markdown_table(group, COLUMNS))
        ordered = sorted(group, key=lambda r: r["total_bits"])
        ran = [r["protocol"] for r in group if r["protocol"] in REFERENCES]
        left_out = f", the {', '.join(ran)} reference left out" if ran else ""
        for key, what in (("pareto", "collective"), ("pareto_avg", "average")):
            front = [r["protocol"] for r in ordered if r[key] == "yes"]
            print(
                f"\nPareto front over (total bits, {what} accuracy){left_out}: {', '.join(front)}"
            )
        if claims:
            print(f"\nThe issue's targets on this run ({args.dataset}, {partition}, one seed):\n")
            print("\n".join(f"- {claim}: {verdict}" for claim, verdict in claims.items()))
    json_path, csv_path = store.finish(rows, args, extra)  # the files first, then the figure
    png = figure(draw, groups, args)
    print(f"\nwrote {json_path}, {csv_path}, {png}")
    return rows


if __name__ == "__main__":
    from commenv.bench.tools import cli_main

    raise SystemExit(cli_main(main, "frontier"))
