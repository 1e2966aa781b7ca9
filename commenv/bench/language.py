"""Table 4.1 and figure 4.3 of the thesis: speakers at four communication levels.

A teacher (``agent_0``) and a student (``agent_1``) see the same world through fixed noise
masks and learn to describe their views in 32-bit messages (mutual-information objective with a
discriminator, plus the likelihood term of the level). A linear probe on each agent's last
hidden layer is trained alongside; the table reports the student's probe test accuracy at its
best validation checkpoint, mean ± std over seeds, beside the thesis' MNIST numbers; the figure
shows the student's validation accuracy over training steps. Peak vs final validation accuracy
shows the early peak the thesis saw as the Gumbel temperature anneals; ``--remedies`` adds
rows for the remedies it proposed (straight-through, longer messages; REINFORCE is its own
speaker kind), and ``--ours`` rows beyond the thesis: ``contrastive``, the Gumbel speaker whose
likelihood term must pick its own world's message out of the batch
(``commenv_agents.speakers.contrastive_likelihood_loss``).

    commenv bench language --quick                    # digits, about two minutes
    commenv bench language                            # Fashion-MNIST, 5 seeds
    commenv bench language --agent mymodule:MySpeaker # your speaker in the table
    commenv bench language --kinds gumbel --ours "" --resume

A user speaker is a class built as ``Class(n_agents=, in_features=, message_bits=, hidden=)``
whose ``forward(views (B, n, D))`` returns ``(logits (B, n, L, 2), features (B, n, H))`` (see
``commenv_agents.speakers.Speaker``); it is trained with the Gumbel-Softmax wrapper and loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from commenv.bench import tools as benchtools
from commenv.bench.tools import parse_config
from commenv_agents.speaker_training import (
    KINDS,
    LEVEL_GAMES,
    RunResult,
    SpeakerRunConfig,
    summarize,
    train_speakers,
)
from commenv_agents.speakers import (
    LIKELIHOODS,
    MI_ESTIMATORS,
    Speaker,
    TemperatureSchedule,
)

CONTRASTIVE_SCALE = 300.0
"""The contrastive row's likelihood weights, as a multiple of the thesis' (0.01 one-way, 0.005
with feedback): its loss is a cross-entropy over the batch, O(1), not a sum over 32 bits."""

THESIS = {"none": 64.4, "receive": 65.7, "feedback": 69.4, "both": 71.4}
"""Table 4.1 (MNIST, student probe test accuracy at best validation, %)."""

REMEDIES = ("straight-through", "long-messages")
OURS: dict[str, tuple[str, dict]] = {
    "contrastive": (
        "gumbel contrastive (ours)",
        {
            "kind": "gumbel",
            "likelihood": "contrastive",
            "likelihood_scale": CONTRASTIVE_SCALE,
        },
    ),
}
"""Beyond-thesis rows: (row name, config overrides)."""


_RUN = SpeakerRunConfig()
_TEMP = TemperatureSchedule()
"""The run config's defaults: the options below that a run takes reuse them, typed once there."""


@dataclass
class Args:
    """Table 4.1 and figure 4.3 of the thesis: speakers at four communication levels."""

    quick: bool = False
    """quick preset: digits, 2 seeds, 600 steps, smaller speakers (about two minutes)"""
    dataset: str = "fashion-mnist"
    """digits, fashion-mnist, mnist, ..."""
    data_root: str | None = _RUN.data_root
    """directory of the dataset files"""
    seeds: int = 5
    """seeds per configuration (--seed, --seed + 1, ...)"""
    seed: int = _RUN.seed
    """the first seed"""
    steps: int = 3000
    """training steps per run"""
    batch_size: int = _RUN.batch_size
    """worlds per training step"""
    eval_every: int = 250
    """steps between probe evaluations"""
    offline_probe_stages: int = 3
    """stages of training (evenly spaced, the last at the end) at which a linear probe is also
    fit offline on the frozen features of the whole train split (standardized, early-stopped
    on validation); 0: only the thesis' online probe"""
    kinds: str = ",".join(KINDS)
    """comma-separated speaker kinds (gumbel, reinforce; '' for none)"""
    levels: str = ",".join(LEVEL_GAMES)
    """comma-separated communication levels (none, receive, feedback, both)"""
    message_bits: int = _RUN.message_bits
    """message length L (thesis: 32)"""
    noise: float = _RUN.noise
    """mask noise level (the thesis' number was lost; ours: 0.3)"""
    hidden: tuple[int, ...] = _RUN.hidden
    """speaker hidden widths, e.g. 256 128 (last = probed)"""
    disc_hidden: tuple[int, ...] = _RUN.disc_hidden
    """MI discriminator hidden widths"""
    lr: float = _RUN.lr
    """Adam learning rate"""
    probe_lr: float = _RUN.probe_lr
    """learning rate of the online linear probe (Adam, one step per speaker batch)"""
    temp_start: float = _TEMP.start
    """initial Gumbel temperature (the thesis' schedule was lost: ours)"""
    temp_decay: float = _TEMP.decay
    """temperature decay factor (ours)"""
    temp_every: int = 250
    """decay the temperature every N steps (ours)"""
    temp_floor: float = _TEMP.floor
    """temperature floor (ours)"""
    likelihood_scale: float = _RUN.likelihood_scale
    """multiplier on the thesis' likelihood weights (0.01 one-way, 0.005 with feedback); 1.0
    collapses messages in our implementation"""
    mi_estimator: Literal[MI_ESTIMATORS] = _RUN.mi_estimator
    """MI term: the thesis' GAN discriminator loss, or InfoNCE (ours)"""
    mi_negatives: int = _RUN.mi_negatives
    """marginal pairs per joint pair for --mi-estimator infonce"""
    likelihood: Literal[LIKELIHOODS] = _RUN.likelihood
    """likelihood term: the thesis' bit cross-entropy, or contrastive (ours: the listener must
    pick its world's message out of the batch)"""
    untrained: bool = True
    """add the reference row: the probe on an untrained speaker (lr 0, one level), the floor
    every trained row is judged against (--no-untrained leaves it out)"""
    entropy_coef: float = _RUN.entropy_coef
    """REINFORCE entropy bonus"""
    remedies: str = ",".join(REMEDIES)
    """comma-separated Gumbel remedies (straight-through, long-messages; '' for none)"""
    ours: str = ",".join(OURS)
    """comma-separated beyond-thesis rows (contrastive; '' for none)"""
    agent: str | None = None
    """your speaker class as module:Class (trained with the Gumbel wrapper)"""
    device: str = "auto"
    """auto (CUDA when present) | cpu | cuda"""
    threads: int = 1
    """torch CPU threads (small models run fastest on 1)"""
    out_dir: Path = Path("results/language")
    """where JSON/CSV/PNG go (results/language-quick with --quick)"""
    resume: bool = False
    """keep the runs a killed invocation of the same options finished (its partial file) and
    run only the others"""


QUICK: dict = dict(
    dataset="digits",
    seeds=2,
    steps=600,
    eval_every=50,
    offline_probe_stages=2,
    hidden=(64, 64),
    disc_hidden=(128,),
    temp_every=50,
    remedies="straight-through",
    out_dir=Path("results/language-quick"),
)
"""What ``--quick`` changes."""


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_config(
        Args, argv, description=__doc__.split("\n\n")[0], quick=QUICK, inert=inert_options
    )


def inert_options(args: Args) -> dict[str, str]:
    """The options these rows leave without effect, and why (typed, they are refused:
    :func:`~commenv.bench.tools.refuse_inert`): the Gumbel schedule without a Gumbel row (every
    row but REINFORCE's is one), the entropy bonus without REINFORCE, the negatives of an
    estimator that draws one."""
    kinds = set(filter(None, args.kinds.split(",")))
    gumbel = bool(
        kinds - {"reinforce"} or args.remedies or args.ours or args.untrained or args.agent
    )
    inert = {}
    if not gumbel:
        why = "it sets the Gumbel-Softmax temperature; no row is a Gumbel speaker"
        inert.update(dict.fromkeys(("temp_start", "temp_decay", "temp_every", "temp_floor"), why))
    if "reinforce" not in kinds:
        inert["entropy_coef"] = "it is REINFORCE's entropy bonus; --kinds has no reinforce"
    if args.mi_estimator != "infonce":
        inert["mi_negatives"] = "it counts InfoNCE's negatives; --mi-estimator is not infonce"
    return inert


def variants(args: Args) -> list[tuple[str, dict]]:
    """(row name, config overrides) for every speaker variant in the table."""
    out = []
    for kind in filter(None, args.kinds.split(",")):
        if kind not in KINDS:
            raise ValueError(f"unknown speaker kind {kind!r}; valid choices: {list(KINDS)}")
        out.append((kind, {"kind": kind}))
    for remedy in filter(None, args.remedies.split(",")):
        if remedy == "straight-through":
            out.append(("gumbel straight-through", {"straight_through": True}))
        elif remedy == "long-messages":
            bits = 2 * args.message_bits
            out.append((f"gumbel {bits}-bit", {"message_bits": bits}))
        else:
            raise ValueError(f"unknown remedy {remedy!r}; valid choices: {list(REMEDIES)}")
    for name in filter(None, args.ours.split(",")):
        if name not in OURS:
            raise ValueError(f"unknown row {name!r} for --ours; valid choices: {list(OURS)}")
        out.append(OURS[name])
    if args.untrained:  # what the probe reads from random features: the floor to beat
        out.append(("untrained (lr 0)", {"kind": "gumbel", "lr": 0.0}))
    if args.agent:
        contract = "docs/agents.md#partial-observation: a torch.nn.Module"
        cls = benchtools.load_class(
            args.agent, "--agent", ("forward", "to"), contract, SPEAKER_KWARGS
        )
        out.append((f"user {args.agent}", {"speaker_cls": cls}))
        if args.untrained:  # the user's own architecture untrained: the floor its row needs
            out.append((floor_name(f"user {args.agent}"), {"speaker_cls": cls, "lr": 0.0}))
    return out


def floor_name(speaker: str) -> str:
    """The untrained row a speaker's floor claim is judged against: a user's speaker has its
    own (its architecture at lr 0), the reference speakers share :data:`UNTRAINED`."""
    return f"{speaker}, untrained (lr 0)" if speaker.startswith("user ") else UNTRAINED


def _schedule(args: Args) -> TemperatureSchedule:
    """The Gumbel temperature schedule of ``--temp-*``, refused with the options named."""
    try:
        return TemperatureSchedule(
            args.temp_start, args.temp_decay, args.temp_every, args.temp_floor
        )
    except ValueError as exc:
        raise ValueError(f"--temp-start/--temp-decay/--temp-every/--temp-floor: {exc}") from None


def run_configs(args: Args, device: torch.device) -> list[tuple[str, str, int, dict]]:
    """(speaker, level, seed, SpeakerRunConfig keywords) of every run in the table."""
    levels = [lv for lv in args.levels.split(",") if lv]
    for lv in levels:
        if lv not in LEVEL_GAMES:
            raise ValueError(f"unknown level {lv!r}; valid choices: {list(LEVEL_GAMES)}")
    shared = {f.name for f in fields(SpeakerRunConfig)} & {f.name for f in fields(Args)}
    base = {name: getattr(args, name) for name in shared}
    base.update(
        device=str(device),
        speaker_cls=Speaker,
        temperature=_schedule(args),
    )
    return [
        (name, level, seed, {**base, **over, "level": level, "seed": seed})
        for name, over in variants(args)
        for level in levels
        for seed in range(args.seed, args.seed + args.seeds)
        if over.get("lr") != 0.0 or level == levels[0]  # without training the level is moot
    ]


SPEAKER_KWARGS = ("n_agents", "in_features", "message_bits", "hidden")
"""What a speaker class is built with (``agents.speaker_training``)."""


def resume_options(args: Args) -> dict:
    """The options a partial file must match to be resumed; without the offline probe the
    rows are those of files from before it existed, so their partial files resume too."""
    options = benchtools.result_options(args)
    if args.offline_probe_stages == 0:
        options.pop("offline_probe_stages", None)
    return options


def run_key(name: str, level: str, seed: int) -> str:
    """A run's name in the partial file."""
    return f"{name} | {level} | seed {seed}"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = benchtools.select_device(args.device)
    plan = run_configs(args, device)
    benchtools.require_runs(plan, "--kinds, --levels, --remedies, --ours and --untrained")
    try:  # every run's values refused now, not after the runs before it
        plan = [(name, level, seed, SpeakerRunConfig(**cfg)) for name, level, seed, cfg in plan]
    except ValueError as exc:  # named as typed: --noise, not noise
        raise benchtools.as_option_error(exc, args) from None
    benchtools.check_dataset(args.dataset, args.data_root)
    levels = list(dict.fromkeys(level for _, level, _, _ in plan))
    store = benchtools.RunStore(
        args.out_dir, "language", args.resume, resume_options(args), inert_options(args)
    )
    todo = [p for p in plan if run_key(*p[:3]) not in store]
    print(
        f"bench language: {len(plan)} runs on {args.dataset} ({device}), {args.steps} steps each "
        f"({len(plan) - len(todo)} resumed)",
        flush=True,
    )
    with benchtools.progress(total=len(todo) * args.steps, desc="speakers", unit="step") as bar:
        for name, level, seed, cfg in todo:
            bar.set_postfix_str(f"{name} {level} seed {seed}")
            result = train_speakers(cfg, progress=bar.update)
            store.add(run_key(name, level, seed), asdict(result))
    result_fields = [f.name for f in fields(RunResult)]
    runs = []
    for name, level, seed, _ in plan:
        stored = store.rows[run_key(name, level, seed)]
        kept = {k: stored[k] for k in result_fields if k in stored}  # older files: no offline
        runs.append((name, level, seed, RunResult(**kept)))

    rows = table_rows(runs, levels)
    columns = [
        "speaker",
        "level",
        "thesis (MNIST)",
        "ours",
        "± std",
        "teacher",
        "peak val",
        "final val",
        "peak step",
        "offline",
        "offline ± std",
        "seeds",
        "s/run",
    ]
    print(
        f"\nStudent (agent_1) linear-probe test accuracy (%) at best validation, "
        f"{args.dataset}, {args.message_bits}-bit messages, mean over seeds\n"
    )
    print(benchtools.markdown_table(rows, columns))
    claims = thesis_claims(rows)
    if claims:
        print("\nThe thesis' claims on this run:\n")
        print("\n".join(verdict_lines(claims, rows, args)))
    raw = [
        {
            "speaker": n,
            "level": lv,
            "seed": s,
            "student_test": r.student_test,
            "teacher_test": r.test_at_best[0],
            **r.peak_final(),
            "offline_student_test": r.offline_student_test,
            "offline": r.offline,
            "seconds": r.seconds,
            "steps": r.steps,
            "val_acc": r.val_acc,
            "test_acc": r.test_acc,
            "temperature": r.temperature,
            "config": r.config,
        }
        for n, lv, s, r in runs
    ]
    extra = {"runs": raw, "thesis_claims": claims}
    json_path, csv_path = store.finish(rows, args, extra)
    png = benchtools.figure(plot, runs, levels, Path(args.out_dir) / "language.png", args.dataset)
    print(f"\nwrote {json_path}, {csv_path}, {png}")
    return rows


def table_rows(runs: list, levels: list[str]) -> list[dict]:
    """One row per (speaker, level): mean ± std of the student's test accuracy at best val,
    of the online probe (``ours``, the thesis' metric) and of the offline one (``offline``,
    ``None`` for runs without it)."""
    rows = []
    for name in dict.fromkeys(n for n, *_ in runs):
        for level in levels:
            group = [r for n, lv, _, r in runs if n == name and lv == level]
            if not group:
                continue
            mean, std = summarize([r.student_test for r in group])
            pf = [r.peak_final() for r in group]
            offline = [r.offline_student_test for r in group]
            off_mean, off_std = (None, None) if None in offline else summarize(offline)
            rows.append(
                {
                    "speaker": name,
                    "level": level,
                    "thesis (MNIST)": THESIS[level],
                    "ours": mean,
                    "± std": std,
                    "teacher": summarize([r.test_at_best[0] for r in group])[0],
                    "peak val": summarize([p["peak_val"] for p in pf])[0],
                    "final val": summarize([p["final_val"] for p in pf])[0],
                    "peak step": int(summarize([p["peak_step"] for p in pf])[0]),
                    "offline": off_mean,
                    "offline ± std": off_std,
                    "seeds": len(group),
                    "s/run": summarize([r.seconds for r in group])[0],
                }
            )
    return rows


ORDERING = "both > feedback > receive > none"


FLOOR = "every level above the untrained speaker"
OFFLINE = " (offline probe)"
LEVELS_UP = ("none", "receive", "feedback", "both")


def _standard_error(a: dict, b: dict, column: str = "ours") -> float:
    """Standard error of the difference of two rows' means over seeds (their std, ``± std``
    beside ``ours`` and ``offline ± std`` beside ``offline``, is the population std over
    ``seeds`` runs, so the sample variance is ``std**2 * n / (n - 1)``)."""
    std = INSTRUMENTS[column]
    var = [r[std] ** 2 * r["seeds"] / (r["seeds"] - 1) / r["seeds"] for r in (a, b)]
    return (var[0] + var[1]) ** 0.5


UNTRAINED = "untrained (lr 0)"
INSTRUMENTS = {"ours": "± std", "offline": "offline ± std"}
"""The two probes' mean columns and their std columns: the thesis' online probe, and the
offline one (its claims carry :data:`OFFLINE`)."""


def thesis_claims(rows: list[dict]) -> dict[str, bool]:
    """Per speaker with all four levels: does the thesis' ordering of the levels hold (on the
    means, then with every step beyond 2 standard errors), and (with the untrained row) does
    every level's student probe beat an untrained speaker's, the floor that shows the training
    taught the features something? Judged on the online probe (the thesis'), then again on
    the offline probe where every row has it."""
    claims = {}
    for name in dict.fromkeys(r["speaker"] for r in rows):
        spread = {r["level"]: r for r in rows if r["speaker"] == name}
        floor_row = next((r for r in rows if r["speaker"] == floor_name(name)), None)
        if not set(spread) >= set(THESIS):
            continue
        for column, std in INSTRUMENTS.items():
            acc = {lv: r.get(column) for lv, r in spread.items()}
            if None in acc.values():
                continue  # a file from before the offline probe
            tag = OFFLINE if column == "offline" else ""
            claims[f"{name}: {ORDERING}{tag}"] = (
                acc["both"] > acc["feedback"] > acc["receive"] > acc["none"]
            )
            if all(r.get("seeds", 0) > 1 and r.get(std) is not None for r in spread.values()):
                claims[f"{name}: {ORDERING}, each step beyond 2 standard errors{tag}"] = all(
                    acc[hi] - acc[lo] > 2 * _standard_error(spread[hi], spread[lo], column)
                    for lo, hi in zip(LEVELS_UP, LEVELS_UP[1:], strict=False)
                )
            floor = None if floor_row is None else floor_row.get(column)
            if floor is not None:
                claims[f"{name}: {FLOOR}{tag}"] = all(acc[lv] > floor for lv in THESIS)
    return claims


def verdict_lines(claims: dict[str, bool], rows: list[dict], args: Args) -> list[str]:
    """One line per claim: verdict, the measured gap, what it means on this preset and what to
    run for the thesis' regime."""
    preset = f"{args.dataset}, {args.seeds} seeds, {args.steps} steps"
    regime = (
        "the thesis' regime (MNIST-size images, 5 seeds) is `commenv bench language` on "
        "Fashion-MNIST, reported in the README"
    )
    lines = []
    for claim, ok in claims.items():
        column = "offline" if claim.endswith(OFFLINE) else "ours"
        body = claim.removesuffix(OFFLINE)
        # the speaker the claim is about: the longest name it starts with ("user m:C" has ':')
        name = max((r["speaker"] for r in rows if claim.startswith(f"{r['speaker']}: ")), key=len)
        floor_row = next((r for r in rows if r["speaker"] == floor_name(name)), None)
        acc = {r["level"]: r[column] for r in rows if r["speaker"] == name}
        floor = None if floor_row is None else floor_row.get(column)
        if "standard errors" in claim:
            meaning = (
                "each level's gain is larger than the seeds' noise"
                if ok
                else "at least one step of the ordering is within the seeds' noise"
            )
        elif body.endswith(FLOOR):
            meaning = (
                "training taught the features what the probe reads"
                if ok
                else "some levels' students read less from the features than from an untrained "
                "speaker's"
            )
            meaning += f" (lowest level {min(acc.values()):.1f}, untrained {floor:.1f})"
        else:
            gap = acc["both"] - acc["none"]
            meaning = (
                "more communication, a better student probe"
                if ok
                else "the levels do not order the student's probe accuracy here"
            )
            meaning += f" (both - none = {gap:+.1f} points, thesis +7.0)"
        lines.append(benchtools.verdict(claim, ok, preset, meaning, regime))
    return lines


def plot(runs: list, levels: list[str], path: Path, dataset: str) -> Path:
    """Figure 4.3: the student's validation accuracy per step, mean ± std band per level."""
    plt = benchtools.pyplot()
    names = list(dict.fromkeys(n for n, *_ in runs))
    fig, axes = plt.subplots(
        1, len(names), figsize=(5 * len(names), 3.8), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], names, strict=True):
        for level in levels:
            group = [r for n, lv, _, r in runs if n == name and lv == level]
            if not group:
                continue
            curves = torch.tensor([[row[1] for row in r.val_acc] for r in group])
            mean, std = curves.mean(0), curves.std(0, unbiased=False)
            steps = group[0].steps
            ax.plot(steps, mean, label=level)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"student probe val. accuracy (%), {dataset}")
    axes[0][-1].legend(title="level")
    return benchtools.save_figure(fig, path)


if __name__ == "__main__":
    from commenv.bench.tools import cli_main

    raise SystemExit(cli_main(main, "language"))
