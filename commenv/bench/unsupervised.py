"""Table 2.3 of the thesis on node_graph_v0: unsupervised nodes (VAE, BiGAN) sharing features.

For each family: 1 node on the whole training set; 10 nodes without communication; 10 nodes
fully connected sharing features (the thesis: VAE codes with KL(sender || receiver), BiGAN codes
with MSE); and, beyond the thesis, 10 nodes sharing with a contrastive (InfoNCE) objective. The
env carries label-free payloads (``content="gaussian_codes"`` / ``"codes"``): no label reaches a
node. Every node trains for the same number of parallel steps (consumption probability 1/2).

Evaluation as the thesis (section 2.3.3): at ``--stages`` evenly spaced points of unsupervised
training, a linear probe on each node's encoder (the VAE's mean, the BiGAN encoder's output,
standardised with the training set's statistics) is trained on the **full** training split with
early stopping on the validation split (:func:`commenv.probe.fit_linear_probe`); each node keeps
the stage whose probe validates best, and its test accuracy there is reported. Average accuracy
is the mean over nodes; the collective is the entropy-weighted decision of
:mod:`commenv.evaluation` over the nodes' probe distributions at their best stages.

The thesis' claims (CIFAR-10) are judged on the run's own rows, one line each: the collective
of 10 independent nodes beats the single node by >= 3 points (both families); full
communication does not beat no communication (collective, both families); the VAE+KL collective
ends above the single VAE and the BiGAN+MSE collective below the single BiGAN; no 10-node
average (with or without sharing) reaches the single node. Ours: the contrastive collective is
>= 1 point above the no-communication collective for at least one family.

Usage::

    commenv bench unsupervised --quick               # digits, under a minute on 2 CPU cores
    commenv bench unsupervised                       # Fashion-MNIST, MLP nodes
    commenv bench unsupervised --arch cnn --device cuda
    commenv bench unsupervised --runs vae-1 vae-10-none --resume
    commenv bench unsupervised --quick --agent my_module:MyPopulation --agent-family vae

A user's population (``--agent module:Class``) is built as ``Class(n_nodes, image_shape,
num_classes, share="match", broadcast_prob=..., feature_dim=..., device=..., seed=...)`` and
needs ``step(views, out_valid) -> (bits, payload)`` and ``encode(x) -> (N, S, F)`` (see
``commenv_agents.unsupervised.UnsupervisedPopulation``); it runs on 10 fully connected nodes
with ``--agent-family``'s payload (``vae``: mean and log-variance, ``bigan``: codes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from commenv.bench.tools import (
    POPULATION_KWARGS,
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
from commenv.datasets import DatasetSplits, load_dataset
from commenv.evaluation import evaluate
from commenv.node_graph import PARTITIONS, NodeGraphGame
from commenv.probe import BestValidation, fit_linear_probe, stage_steps
from commenv_agents.unsupervised import (
    CONTENT,
    POPULATIONS,
    SHARES,
    SequentialUnsupervised,
)

NAME = "unsupervised"


@dataclass
class Args(NodeGraphOptions):
    """Table 2.3: VAE and BiGAN nodes sharing features on node_graph_v0 (linear-probe accuracy).

    The node-graph options (data, minibatch, consumption, broadcast margin, partition, device,
    threads, seed) are :class:`commenv.bench.tools.NodeGraphOptions`; redeclared here are only
    the preset, the learning rate (each family has its own default) and the temperature (an
    InfoNCE one here, not a softening of logits).
    """

    quick: bool = False
    """digits, 300 steps, 2 stages, hidden 128 (under a minute on 2 CPU cores)"""
    lr: float | None = None
    """Adam learning rate (default: the family's own, 1e-3 for the VAE, 2e-4 for the BiGAN)"""
    temperature: float = 0.1
    """InfoNCE temperature (the contrastive and projected shares)"""
    partition: Literal[PARTITIONS] = "iid"
    """how the training set is split among nodes (exclusive either way; the thesis: iid)"""
    steps: int | None = None
    """parallel unsupervised training steps per run (default 3000; 300 with --quick)"""
    stages: int | None = None
    """evenly spaced probe evaluations, the last at the end (default 4; 2 with --quick)"""
    runs: tuple[str, ...] = ()
    """run names (default all): vae-1 vae-10-none vae-10-match vae-10-contrastive, bigan-1 ..."""
    arch: Literal["mlp", "cnn"] = "mlp"
    """node networks: mlp, or cnn (DCGAN-style strided convolutions)"""
    feature_dim: int = 32
    """code width (the VAE's payload is twice that: mean and log-variance)"""
    hidden: int | None = None
    """hidden width of every network (default 256; 128 with --quick)"""
    share_weight: float = 1.0
    """weight of the thesis' share term (KL for VAE, MSE for BiGAN)"""
    contrastive_weight: float = 1.0
    """weight of the InfoNCE share term (our rows: contrastive, projected)"""
    decorrelate_weight: float = 1.0
    """weight of the cross-correlation share term (our row: decorrelate)"""
    train_size: int | None = None
    """partition only this many random training samples among the nodes (default all); the
    probes always train on the full training split"""
    float_bits: int = 32
    """bits per shared code value (32, 16, or 1-15 levels per vector)"""
    probe_epochs: int = 30
    """most epochs of each linear probe"""
    probe_patience: int = 5
    """early stopping: stop a probe after this many epochs without a better validation score"""
    agent: str | None = None
    """a user population 'module:Class' run on 10 fully connected nodes"""
    agent_family: Literal["vae", "bigan"] = "vae"
    """payload of the --agent population: vae (mean, log-variance) or bigan (codes)"""
    out_dir: Path | None = None
    """where JSON/CSV/PNG go (default results/unsupervised[-quick])"""
    resume: bool = False
    """keep the runs a killed invocation already finished (same --out-dir)"""


# name -> (family, nodes, share, label, thesis avg, thesis collective)
RUNS: dict[str, tuple[str, int, str, str, float | None, float | None]] = {
    "vae-1": ("vae", 1, "none", "VAE, 1 node", 41.8, None),
    "vae-10-none": ("vae", 10, "none", "VAE, 10 nodes, no communication", 41.6, 45.2),
    "vae-10-match": ("vae", 10, "match", "VAE, 10 nodes, full communication (KL)", 41.5, 42.7),
    "vae-10-contrastive": (
        "vae",
        10,
        "contrastive",
        "VAE, 10 nodes, contrastive sharing (ours)",
        None,
        None,
    ),
    "bigan-1": ("bigan", 1, "none", "BiGAN, 1 node", 46.9, None),
    "bigan-10-none": ("bigan", 10, "none", "BiGAN, 10 nodes, no communication", 44.5, 49.9),
    "bigan-10-match": (
        "bigan",
        10,
        "match",
        "BiGAN, 10 nodes, full communication (MSE)",
        44.3,
        46.2,
    ),
    "bigan-10-contrastive": (
        "bigan",
        10,
        "contrastive",
        "BiGAN, 10 nodes, contrastive sharing (ours)",
        None,
        None,
    ),
}
OURS: dict[str, str] = {
    "images": "received images, own objective only (ours)",
    "projected": "InfoNCE through a projection head (ours)",
    "decorrelate": "codes decorrelated from the sender's (ours)",
    "decorrelate-fixed": "control: codes decorrelated from a frozen random encoder's",
}
"""Further sharing objectives beyond the thesis (runs ``<family>-10-<share>``, only when named
in ``--runs``)."""
for _fam, _label in (("vae", "VAE"), ("bigan", "BiGAN")):
    for _share, _what in OURS.items():
        RUNS[f"{_fam}-10-{_share}"] = (_fam, 10, _share, f"{_label}, 10 nodes, {_what}", None, None)
DEFAULT_RUNS: tuple[str, ...] = tuple(r for r, spec in RUNS.items() if spec[2] not in OURS)
"""The runs of a plain invocation (``--runs`` empty): the thesis' six and the contrastive row."""
COLUMNS = [
    "configuration",
    "avg_acc",
    "coll_acc",
    "thesis_avg",
    "thesis_coll",
    "best_stage_step",
    "bits_payload",
    "seconds",
]


def resolve(args: Args) -> Args:
    """Fill the preset-dependent defaults and check the names."""
    args.dataset = args.dataset or ("digits" if args.quick else "fashion-mnist")
    args.steps = args.steps or (300 if args.quick else 3000)
    args.stages = args.stages or (2 if args.quick else 4)
    args.hidden = args.hidden or (128 if args.quick else 256)
    args.out_dir = args.out_dir or Path("results") / (f"{NAME}-quick" if args.quick else NAME)
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        raise ValueError(f"--runs: unknown run(s) {unknown}; valid choices: {list(RUNS)}")
    if args.agent_family not in POPULATIONS:
        raise ValueError(
            f"agent_family must be one of {list(POPULATIONS)}, got {args.agent_family!r}"
        )
    if args.stages < 1 or args.steps < args.stages:
        raise ValueError(f"--stages must be in [1, --steps={args.steps}], got {args.stages}")
    return args


def probe_stage(pop: Any, data: DatasetSplits, args: Args) -> Any:
    """Linear probes ``(N,)`` on every node's encoder: full training split, early stopping on
    validation, test distributions kept at each probe's best epoch."""
    train, val, test = (
        pop.encode(split.x).transpose(0, 1).cpu() for split in (data.train, data.val, data.test)
    )
    # The kept distributions cover validation then test (the epoch is chosen on validation
    # alone), so a stage's validation collective can be computed too.
    res = fit_linear_probe(
        train,
        data.train.y,
        val,
        data.val.y,
        torch.cat([val, test]),
        torch.cat([data.val.y, data.test.y]),
        num_classes=data.num_classes,
        epochs=args.probe_epochs,
        batch_size=256,
        seed=args.seed,
        patience=args.probe_patience,
        keep_probs=True,
        standardize=True,  # z-scored with the train split's statistics: still a linear probe
    )
    n_val = len(val)
    res.val_probs, res.test_probs = res.test_probs[:, :n_val], res.test_probs[:, n_val:]
    res.test_acc = (res.test_probs.argmax(-1) == data.test.y[None]).float().mean(-1)
    return res


def train_and_probe(
    game: NodeGraphGame, pop: Any, data: DatasetSplits, args: Args, bar: Any = None
) -> dict[str, Any]:
    """Train ``pop`` on ``game`` for ``args.steps`` steps, probing at ``args.stages`` stages;
    returns per-node / average / collective test accuracy (%) at each node's best stage and
    the per-stage curve."""
    stages = set(stage_steps(args.steps, args.stages))
    best, best_val = BestValidation(pop.n_nodes), BestValidation(pop.n_nodes)
    curve: list[dict[str, Any]] = []
    game.reset(seed=args.seed)
    obs = game.observe_all()
    out_valid = game.out_valid
    for t in range(1, args.steps + 1):
        bits, payload = pop.step(game.split_obs(obs[0]), out_valid)
        obs, _, _, _ = game.step_tensors(bits[None], None if payload is None else payload[None])
        if bar is not None:
            bar.update(1)
        if t in stages:
            res = probe_stage(pop, data, args)
            best.update(t, res.val_acc, res.test_acc, res.test_probs)
            best_val.update(t, res.val_acc, res.val_acc, res.val_probs)
            stage = evaluate(res.test_probs, data.test.y)
            curve.append(
                {
                    "step": t,
                    "val_average": float(res.val_acc.mean() * 100),
                    "val_collective": evaluate(res.val_probs, data.val.y)["collective"],
                    "average": stage["average"],
                    "collective": stage["collective"],
                }
            )
    ev = evaluate(best.probs_at_best, data.test.y)
    ev_val = evaluate(best_val.probs_at_best, data.val.y)
    return {
        "per_node": (best.test_at_best * 100).tolist(),
        "avg_acc": float(best.test_at_best.mean() * 100),
        "coll_acc": ev["collective"] if pop.n_nodes > 1 else None,
        "val_avg_acc": float(best.best_val.mean() * 100),
        "val_coll_acc": ev_val["collective"] if pop.n_nodes > 1 else None,
        "best_stage_step": float(best.best_step.float().mean()),
        "curve": curve,
    }


def make_game(args: Args, spec: tuple, device: Any) -> NodeGraphGame:
    """The node_graph_v0 game of one configuration."""
    family, n_nodes = spec[:2]
    return NodeGraphGame(
        n_nodes=n_nodes,
        content=CONTENT[family],
        **args.game_config(),
        partition=args.partition,
        feature_dim=args.feature_dim,
        float_bits=args.float_bits,
        train_size=args.train_size,
        device=device,
        max_cycles=args.steps + 1,
    )


WEIGHT_OPTIONS: dict[str, str] = {
    "contrastive": "contrastive_weight",
    "projected": "contrastive_weight",
    "decorrelate": "decorrelate_weight",
    "decorrelate-fixed": "decorrelate_weight",
}
"""The option (:class:`Args` field) that sets the share term's weight of each of our shares
(the thesis' ``match``: ``share_weight``)."""


def inert_options(args: Args) -> dict[str, str]:
    """The options these ``--runs`` and ``--agent`` leave without effect, and why (typed, they
    are refused: :func:`~commenv.bench.tools.refuse_inert`). A user's population is built with
    none of them (:func:`population_kwargs`)."""
    shares = {RUNS[r][2] for r in args.runs or DEFAULT_RUNS if r in RUNS}
    inert = partition_inert([args.partition])
    if not args.agent:
        inert["agent_family"] = "it says what --agent shares; no --agent"
    readers = {
        "share_weight": ("match",),
        "contrastive_weight": ("contrastive", "projected"),
        "decorrelate_weight": ("decorrelate", "decorrelate-fixed"),
        "temperature": ("contrastive", "projected"),
    }
    if not args.agent:  # only what is sent is quantized; a user's population sends too
        readers["float_bits"] = tuple(share for share in SHARES if share != "none")
    return inert | unread(shares, readers, "it acts on the {} runs; --runs selects none")


def population_kwargs(args: Args, spec: tuple, device: Any, builtin: bool) -> dict[str, Any]:
    """The keywords a configuration's population is built with (a user's class, not
    ``builtin``: the documented ones, :data:`~commenv.bench.tools.POPULATION_KWARGS`)."""
    n_nodes, share = spec[1:3]
    kwargs: dict[str, Any] = dict(
        share=share,
        broadcast_prob=args.broadcast_prob(n_nodes),
        feature_dim=args.feature_dim,
        device=device,
        seed=args.seed,
    )
    if builtin:
        kwargs.update(
            arch=args.arch,
            hidden=args.hidden,
            share_weight=getattr(args, WEIGHT_OPTIONS.get(share, "share_weight")),
            temperature=args.temperature,
            lr=args.lr,
        )
    return kwargs


def check_runs(args: Args, jobs: list[tuple[str, tuple, Any]], device: Any) -> None:
    """Every run's values refused before the first one trains: the data set, each game, and
    each built-in population, built once and dropped (nothing is trained; a user's class is
    checked by :func:`~commenv.bench.tools.load_class`). ``ValueError`` names the option as
    it is typed."""
    check_dataset(args.dataset, args.data_root)
    for _, spec, cls in jobs:
        try:
            game = make_game(args, spec, device)
            if cls is None:
                kwargs = population_kwargs(args, spec, device, builtin=True)
                POPULATIONS[spec[0]](spec[1], game.image_shape, game.num_classes, **kwargs)
        except ValueError as exc:
            weight = WEIGHT_OPTIONS.get(spec[2], "share_weight")
            raise as_option_error(exc, args, {"share_weight": weight}) from None


def run_one(
    args: Args, name: str, spec: tuple, data: DatasetSplits, device: Any, bar: Any, cls: Any = None
) -> dict[str, Any]:
    """Build the env and population of one configuration, train, probe; return its row."""
    family, n_nodes, share, label, t_avg, t_coll = spec
    game = make_game(args, spec, device)
    kwargs = population_kwargs(args, spec, device, builtin=cls is None)
    cls = cls or POPULATIONS[family]
    seed_everything(args.seed)
    pop = cls(n_nodes, game.image_shape, game.num_classes, **kwargs)
    start = time.perf_counter()
    result = train_and_probe(game, pop, data, args, bar)
    return {
        "run": name,
        "configuration": label,
        "family": family,
        "nodes": n_nodes,
        "shared": share,
        **result,
        "thesis_avg": t_avg,
        "thesis_coll": t_coll,
        "bits_images": game.bandwidth()["images"],
        "bits_payload": game.bandwidth()["payload"],
        "seconds": time.perf_counter() - start,
    }


def _coll(rows: dict[str, dict[str, Any]], name: str) -> float | None:
    row = rows.get(name)
    if row is None:
        return None
    value = row["coll_acc"] if row["nodes"] > 1 else row["avg_acc"]
    return round(value, 1)


def judge(rows: list[dict[str, Any]], preset: str) -> dict[str, tuple[bool, str]]:
    """The thesis' three claims and ours, on this run's rows (those with their rows present):
    ``{claim: (holds, one line saying what the verdict means)}``. Accuracies are compared as
    the table prints them (one decimal)."""
    by = {r["run"]: r for r in rows}
    claims: dict[str, tuple[bool, str]] = {}

    def per_family(test, a: str, b: str, margin: float) -> list[tuple[str, bool, str]]:
        out = []
        for fam in ("vae", "bigan"):
            x, y = _coll(by, f"{fam}-{a}"), _coll(by, f"{fam}-{b}")
            if x is not None and y is not None:
                ok = test(x, y + margin)
                out.append((fam, ok, f"{fam.upper()} {x} vs {y}" + ("" if ok else " (fails)")))
        return out

    def claim(name: str, found: list, combine, holds: str, fails: str) -> None:
        """Record ``name`` when its rows are present: the per-family lines and what they mean."""
        if found:
            ok = combine(o for _, o, _ in found)
            lines = "; ".join(d for *_, d in found)
            claims[name] = (ok, f"{lines} on {preset}: " + (holds if ok else fails))

    claim(
        "10 independent nodes' collective >= 1 node + 3 points",
        per_family(lambda x, y: x >= y, "10-none", "1", 3.0),
        all,
        "ensembling independent nodes pays as on CIFAR-10",
        "where it fails, the ensemble does not make up for 1/10 of the data per node",
    )
    claim(
        "full communication does not beat no communication (collective)",
        per_family(lambda x, y: x <= y, "10-match", "10-none", 0.0),
        all,
        "matching neighbours' codes brings no gain, as in the thesis",
        "where it fails, matching neighbours' codes helps, unlike the thesis",
    )
    mse, single_bigan = _coll(by, "bigan-10-match"), _coll(by, "bigan-1")
    if mse is not None and single_bigan is not None:
        claim(
            "BiGAN + MSE collective ends below the single BiGAN",
            [("bigan", mse < single_bigan, f"BiGAN {mse} vs {single_bigan}")],
            all,
            "matching codes leaves the BiGAN group behind one node with all the data",
            "the MSE-sharing BiGAN group is not behind one BiGAN with all the data",
        )
    averages = []
    for fam in ("vae", "bigan"):
        one = _coll(by, f"{fam}-1")
        for what in ("none", "match"):
            row = by.get(f"{fam}-10-{what}")
            if one is not None and row is not None:
                avg = round(row["avg_acc"], 1)
                averages.append((fam, avg < one, f"{fam.upper()} 10-{what} avg {avg} vs {one}"))
    claim(
        "no 10-node average reaches the single node (with or without sharing)",
        averages,
        all,
        "one node with all the data beats the average node of every group",
        "where it fails, an average node of 1/10 of the data matches the single node",
    )
    kl, single = _coll(by, "vae-10-match"), _coll(by, "vae-1")
    if kl is not None and single is not None:
        claim(
            "VAE + KL collective ends above the single VAE",
            [("vae", kl > single, f"VAE {kl} vs {single}")],
            all,
            "the KL-sharing group beats one node with all the data",
            "one VAE with all the data stays ahead of the KL-sharing group",
        )
    claim(
        "ours: contrastive collective >= no communication + 1 point (one family)",
        per_family(lambda x, y: x >= y, "10-contrastive", "10-none", 1.0),
        any,
        "a sharing objective collapsed codes cannot meet makes talking pay (for one family"
        " at least)",
        "contrastive sharing does not beat silence here either",
    )
    for share, what in OURS.items():
        what = what.removesuffix(" (ours)")
        if share == "decorrelate-fixed":
            claim(
                "control (decorrelate-fixed): collective >= no communication + 1 point",
                per_family(lambda x, y: x >= y, f"10-{share}", "10-none", 1.0),
                any,
                "decorrelating from any codes, not a neighbour's, gives the gain",
                "without a neighbour's codes the decorrelation does not gain 1 point",
            )
            continue
        claim(
            f"ours ({share}): collective >= no communication + 1 point (one family)",
            per_family(lambda x, y: x >= y, f"10-{share}", "10-none", 1.0),
            any,
            f"{what}: talking pays here (for one family at least)",
            f"{what}: no gain of 1 point over silence here",
        )
    return claims


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Probe test accuracy (collective solid, average dashed) against unsupervised steps."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, fam in zip(axes, ("vae", "bigan"), strict=True):
        for i, row in enumerate(r for r in rows if r["family"] == fam):
            steps = [c["step"] for c in row["curve"]]
            color = f"C{i}"
            label = row["configuration"].split(", ", 1)[1]
            if row["nodes"] > 1:
                ax.plot(
                    steps,
                    [c["collective"] for c in row["curve"]],
                    "o-",
                    color=color,
                    label=f"{label} (collective)",
                )
            ax.plot(
                steps,
                [c["average"] for c in row["curve"]],
                "o--" if row["nodes"] > 1 else "o-",
                color=color,
                label=f"{label} (average)",
            )
        ax.set_title(f"{fam.upper()} — {title}")
        ax.set_xlabel("unsupervised training steps")
        if ax.get_lines():  # a family without runs in this invocation gets an empty panel
            ax.legend(fontsize=7)
    axes[0].set_ylabel("linear-probe test accuracy (%)")
    return save_figure(fig, path)


def resume_config(args: Args) -> dict[str, Any]:
    """The options a run's row depends on, which ``--resume`` must find unchanged (the seed is
    part of each run's name, ``vae-1@0``; the user class only adds a run)."""
    return result_options(args, (*RUN_OPTIONS, "seed", "agent", "agent_family"))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = resolve(
        parse_config(Args, argv, description=__doc__.split("\n\n")[0], inert=inert_options)
    )
    device = select_device(args.device)
    torch.set_num_threads(args.threads)
    jobs: list[tuple[str, tuple, Any]] = [
        (n, spec, None) for n, spec in RUNS.items() if n in (args.runs or DEFAULT_RUNS)
    ]
    if args.agent:
        contract = "commenv_agents.unsupervised.UnsupervisedPopulation"
        cls = load_class(args.agent, "--agent", ("step", "encode"), contract, POPULATION_KWARGS, 3)
        fam = args.agent_family
        jobs.append(
            (
                f"{fam}-10-{cls.__name__}",
                (fam, 10, "match", f"{fam.upper()}, 10 nodes, {cls.__name__}", None, None),
                cls,
            )
        )
    require_runs(jobs, "--runs and --agent")
    check_runs(args, jobs, device)  # every run's values refused now, not after the runs before
    data = load_dataset(args.dataset, root=args.data_root)
    store = RunStore(args.out_dir, NAME, args.resume, resume_config(args), inert_options(args))
    print(
        f"bench unsupervised: {args.dataset}, {args.steps} steps, {args.stages} probe stages, "
        f"arch {args.arch}, device {device}, {len(jobs)} runs"
        + (
            f" ({len([j for j in jobs if j[0] + f'@{args.seed}' in store])} resumed)"
            if args.resume
            else ""
        )
    )
    rows = []
    todo = [j for j in jobs if f"{j[0]}@{args.seed}" not in store]
    with progress(total=args.steps * len(todo), desc=NAME) as bar:
        for name, spec, cls in jobs:
            key = f"{name}@{args.seed}"
            if key in store:
                rows.append(store.rows[key])
                continue
            bar.set_postfix_str(name)
            rows.append(store.add(key, run_one(args, name, spec, data, device, bar, cls)))

    preset = f"{args.dataset} ({args.steps} steps, {args.arch})"
    print(f"\nTable 2.3 on {preset}; thesis: CIFAR-10. Linear-probe test accuracy (%).\n")
    print(markdown_table(rows, COLUMNS))
    claims = judge(rows, preset)
    if claims:
        print("\nThe thesis' claims (and ours) on this run:\n")
        for claim, (ok, line) in claims.items():
            print(f"- {claim}: {'holds' if ok else 'FAILS'} — {line}")
    extra = {
        "thesis_claims": {c: {"holds": ok, "verdict": line} for c, (ok, line) in claims.items()}
    }
    json_path, csv_path = store.finish(rows, args, extra)
    png = figure(plot, rows, Path(args.out_dir) / f"{NAME}.png", preset)
    print(f"\nwrote {json_path}, {csv_path}, {png}")
    return rows


def speed_rows(
    quick: bool,
    n_nodes: int = 10,
    hiddens: tuple[int, ...] = (64, 256),
    families: tuple[str, ...] = ("vae", "bigan"),
) -> list[dict[str, Any]]:
    """Node-steps per second of the batched VAE / BiGAN populations vs a sequential per-node
    loop of the same one-node models, in one run.

    Both drive node_graph_v0 (digits, 32-sample minibatches, ``n_nodes`` fully connected
    nodes sharing codes with the thesis' objective, MLP nodes of width ``hidden`` for each of
    ``hiddens``, 32 latent units, one torch thread), timed in alternating rounds so that load
    from other processes hits both alike. ``steps_per_s`` counts the population's training
    steps (``pop.step``, the part that is batched or not); the env's step, the same batched call
    for both, is timed apart and the note gives the ratio with it included too. Rows: ``name``,
    ``steps_per_s`` (node-steps/s), ``note``. Small models are where the per-node loop's
    overhead dominates; at the benchmark's width (256) both become compute-bound and the ratio
    shrinks. A third row per pair, ``... matrix products alone``, bounds the ratio: ``ratio``
    is the sequential loop's time over the batched step's own matrix-product kernels
    (:func:`matmul_seconds`, their best round), as if nothing else in the step cost anything:
    an upper bound on the ratio, as the speed bench's "observation write alone" rows bound
    theirs; ``ideal`` the same with those products' FLOPs done at :func:`matmul_peak`'s
    rate. Both are ``None`` when the profiler saw no matrix product (a population that does
    its products in kernels :data:`MATMUL_OPS` does not name).
    """
    rows: list[dict[str, Any]] = []
    for family in families:
        for hidden in hiddens:
            rows += _speed_pair(quick, n_nodes, hidden, family)
    return rows


def matmul_peak(sizes: tuple[int, ...] = (256, 512, 1024), flops: float = 2e9) -> float:
    """The best floating-point rate (FLOP/s) of one float32 ``n x n`` matmul on the CPU at
    the current thread count, over ``sizes`` (about ``flops`` of work each): what this core's
    matrix products reach when nothing else is in the way."""
    best, gen = 0.0, torch.Generator().manual_seed(0)  # the global stream left alone
    for n in sizes:
        a, b = torch.rand(n, n, generator=gen), torch.rand(n, n, generator=gen)
        a @ b  # warm-up: the first call pays for the kernel's set-up
        reps = max(1, int(flops / (2 * n**3)))
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


MATMUL_OPS: frozenset[str] = frozenset(
    {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution"}
    | {"aten::convolution_backward", "aten::_convolution", "aten::slow_conv_transpose2d"}
    | {"aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::_conv_depthwise2d"}
)
"""The profiler's names of the CPU kernels that do a step's matrix products: dense layers
(what the speed rows time) and convolutions (``aten::_convolution``'s self time holds a
transposed convolution's oneDNN kernel, and some dispatch besides)."""


def step_matmuls(game: NodeGraphGame, pop: Any, steps: int = 3) -> tuple[int, float]:
    """The matrix products of one ``pop.step`` on ``game``'s observations: their FLOPs
    (forward and backward, as ``FlopCounterMode`` counts them, one step) and their seconds
    (:func:`matmul_seconds`); the steps are taken."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        pop.step(game.split_obs(game.observe_all()[0]), game.out_valid)
    return int(counter.get_total_flops()), matmul_seconds(game, pop, steps)


def matmul_seconds(game: NodeGraphGame, pop: Any, steps: int = 3) -> float:
    """Seconds per ``pop.step`` in the kernels of :data:`MATMUL_OPS` (the profiler's self time,
    the mean over ``steps`` steps on ``game``'s observations; the steps are taken)."""
    from torch.profiler import ProfilerActivity, profile

    views = game.split_obs(game.observe_all()[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            pop.step(views, game.out_valid)
    micros = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return micros / 1e6 / steps


def _speed_pair(quick: bool, n_nodes: int, hidden: int, family: str) -> list[dict[str, Any]]:
    rounds, steps_b, steps_s = (2, 10, 3) if quick else (5, 40, 10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for label in ("batched", "sequential"):
            game = NodeGraphGame(n_nodes=n_nodes, content=CONTENT[family], feature_dim=32)
            kw = dict(
                share="match", broadcast_prob=0.75 / (n_nodes - 1), feature_dim=32, hidden=hidden
            )
            if label == "batched":
                pop: Any = POPULATIONS[family](n_nodes, game.image_shape, **kw)
            else:
                pop = SequentialUnsupervised(family, n_nodes, game.image_shape, **kw)
            game.reset(seed=0)
            runs[label] = [game, pop, steps_b if label == "batched" else steps_s, 0.0, 0.0]
            _drive(game, pop, 2)  # warm-up
        flops, matmul_s = step_matmuls(*runs["batched"][:2])  # FLOPs: the same every step
        peak = 0.0
        for _ in range(rounds):  # each round: the best the core gave this run
            peak = max(peak, matmul_peak())
            matmul_s = min(matmul_s, matmul_seconds(*runs["batched"][:2]))
            for run in runs.values():
                pop_s, env_s = _drive(run[0], run[1], run[2])
                run[3] += pop_s
                run[4] += env_s
    finally:
        torch.set_num_threads(threads)
    rate = {k: n_nodes * r[2] * rounds / r[3] for k, r in runs.items()}
    seen = matmul_s > 0 and flops > 0
    bound = n_nodes / matmul_s / rate["sequential"] if seen else None
    ideal = n_nodes * peak / flops / rate["sequential"] if seen else None
    rate_env = {k: n_nodes * r[2] * rounds / (r[3] + r[4]) for k, r in runs.items()}
    ratio = rate["batched"] / rate["sequential"]
    ratio_env = rate_env["batched"] / rate_env["sequential"]
    name = f"unsupervised {family.upper() if family == 'vae' else 'BiGAN'} population"
    model = f"MLP {family.upper() if family == 'vae' else 'BiGAN'} hidden {hidden}, 1 thread"
    return [
        {
            "name": f"{name} N={n_nodes} hidden={hidden} batched",
            "steps_per_s": rate["batched"],
            "note": f"{model}; {ratio:.1f}x the sequential loop (training step; "
            f"{ratio_env:.1f}x with the env's step)",
        },
        {
            "name": f"{name} N={n_nodes} hidden={hidden} sequential",
            "steps_per_s": rate["sequential"],
            "note": f"{model}; the per-node loop",
        },
        {
            "name": f"{name} N={n_nodes} hidden={hidden} matrix products alone",
            "ratio": bound,
            "ideal": ideal,
            "note": (
                f"{model}; {bound:.1f}x, the most the batched/sequential ratio can be with "
                f"these kernels: the loop's time over the batched step's own matrix products "
                f"({matmul_s * 1e3:.2f} ms of {flops / 1e6:.0f} MFLOP, "
                f"{flops / matmul_s / 1e9:.0f} GFLOP/s); {ideal:.1f}x if they ran at "
                f"{peak / 1e9:.0f} GFLOP/s, this core's best matmul rate in the same run"
                if seen
                else f"{model}; the profiler saw no matrix product of the batched step"
            ),
        },
    ]


def _drive(game: NodeGraphGame, pop: Any, steps: int) -> tuple[float, float]:
    """``steps`` steps of ``pop`` on ``game``; returns (seconds in ``pop.step``, in the env)."""
    pop_s = env_s = 0.0
    obs = game.observe_all()
    for _ in range(steps):
        t0 = time.perf_counter()
        views = game.split_obs(obs[0])
        t1 = time.perf_counter()
        bits, payload = pop.step(views, game.out_valid)
        t2 = time.perf_counter()
        obs, _, _, _ = game.step_tensors(bits[None], payload[None])
        env_s += (t1 - t0) + (time.perf_counter() - t2)
        pop_s += t2 - t1
    return pop_s, env_s


if __name__ == "__main__":
    from commenv.bench.tools import cli_main

    raise SystemExit(cli_main(main, "unsupervised"))
