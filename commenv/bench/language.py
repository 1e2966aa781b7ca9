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
    commenv bench language --quick

A user speaker is a class built as ``Class(n_agents=, in_features=, message_bits=, hidden=)``
whose ``forward(views (B, n, D))`` returns ``(logits (B, n, L, 2), features (B, n, H))`` (see
``commenv_agents.speakers.Speaker``); it is trained with the Gumbel-Softmax wrapper and loss.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from commenv.bench import tools as benchtools
from commenv_agents.speaker_training import (
    KINDS,
    LEVEL_GAMES,
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

QUICK = dict(
    dataset="digits",
    seeds=2,
    steps=600,
    eval_every=50,
    hidden="64,64",
    disc_hidden="128",
    temp_every=50,
    kinds="gumbel,reinforce",
    remedies="straight-through",
    ours="contrastive",
)
FULL = dict(
    dataset="fashion-mnist",
    seeds=5,
    steps=3000,
    eval_every=250,
    hidden="256,128",
    disc_hidden="256",
    temp_every=250,
    kinds="gumbel,reinforce",
    remedies="straight-through,long-messages",
    ours="contrastive",
)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="quick preset: digits, 2 seeds, 600 steps (about two minutes)",
    )
    p.add_argument("--dataset", help="digits, fashion-mnist, mnist, ... (full: fashion-mnist)")
    p.add_argument("--data-root", default=None, help="directory of the dataset files")
    p.add_argument("--seeds", type=int, help="seeds per configuration (full: 5)")
    p.add_argument("--steps", type=int, help="training steps per run (full: 3000)")
    p.add_argument("--batch-size", type=int, default=128, help="worlds per training step")
    p.add_argument("--eval-every", type=int, help="steps between probe evaluations")
    p.add_argument("--kinds", help=f"comma-separated speaker kinds from {KINDS}")
    p.add_argument(
        "--levels", default=",".join(LEVEL_GAMES), help="comma-separated communication levels"
    )
    p.add_argument("--message-bits", type=int, default=32, help="message length L (thesis: 32)")
    p.add_argument(
        "--noise",
        type=float,
        default=0.3,
        help="mask noise level (the thesis' number was lost; ours: 0.3)",
    )
    p.add_argument("--hidden", help="speaker hidden widths, e.g. 256,128 (last = probed)")
    p.add_argument("--disc-hidden", help="MI discriminator hidden widths")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--temp-start", type=float, default=1.0, help="initial Gumbel temperature")
    p.add_argument("--temp-decay", type=float, default=0.9, help="temperature decay factor")
    p.add_argument("--temp-every", type=int, help="decay the temperature every N steps")
    p.add_argument("--temp-floor", type=float, default=0.1, help="temperature floor")
    p.add_argument(
        "--likelihood-scale",
        type=float,
        default=0.1,
        help="multiplier on the thesis' likelihood weights (0.01 one-way, 0.005 "
        "with feedback); 1.0 collapses messages in our implementation",
    )
    p.add_argument(
        "--mi-estimator",
        default="gan",
        choices=list(MI_ESTIMATORS),
        help="MI term: the thesis' GAN discriminator loss, or InfoNCE (ours)",
    )
    p.add_argument(
        "--mi-negatives",
        type=int,
        default=8,
        help="marginal pairs per joint pair for --mi-estimator infonce",
    )
    p.add_argument(
        "--likelihood",
        default="bce",
        choices=list(LIKELIHOODS),
        help="likelihood term: the thesis' bit cross-entropy, or contrastive (ours: "
        "the listener must pick its world's message out of the batch)",
    )
    p.add_argument(
        "--untrained",
        action="store_true",
        help="add a reference row: the probe on an untrained speaker (lr 0)",
    )
    p.add_argument("--entropy-coef", type=float, default=0.01, help="REINFORCE entropy bonus")
    p.add_argument(
        "--remedies", help=f"comma-separated Gumbel remedies from {REMEDIES} ('' for none)"
    )
    p.add_argument(
        "--ours", help=f"comma-separated beyond-thesis rows from {list(OURS)} ('' for none)"
    )
    p.add_argument(
        "--agent",
        default=None,
        help="your speaker class as module:Class (trained with the Gumbel wrapper)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (small models run fastest on 1)"
    )
    p.add_argument("--out-dir", default="results/language", help="where JSON/CSV/PNG go")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def variants(args: argparse.Namespace) -> list[tuple[str, dict]]:
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
        cls = benchtools.load_object(args.agent)
        out.append((f"user {args.agent}", {"speaker_cls": cls}))
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = benchtools.select_device(args.device)
    levels = [lv for lv in args.levels.split(",") if lv]
    for lv in levels:
        if lv not in LEVEL_GAMES:
            raise ValueError(f"unknown level {lv!r}; valid choices: {list(LEVEL_GAMES)}")
    hidden = tuple(int(h) for h in args.hidden.split(","))
    base = dict(
        dataset=args.dataset,
        data_root=args.data_root,
        message_bits=args.message_bits,
        noise=args.noise,
        hidden=hidden,
        disc_hidden=tuple(int(h) for h in args.disc_hidden.split(",")),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        likelihood_scale=args.likelihood_scale,
        entropy_coef=args.entropy_coef,
        mi_estimator=args.mi_estimator,
        mi_negatives=args.mi_negatives,
        likelihood=args.likelihood,
        device=str(device),
        speaker_cls=Speaker,
        temperature=TemperatureSchedule(
            args.temp_start, args.temp_decay, args.temp_every, args.temp_floor
        ),
    )
    plan = [
        (name, level, seed, {**base, **over, "level": level, "seed": seed})
        for name, over in variants(args)
        for level in levels
        for seed in range(args.seeds)
        if over.get("lr") != 0.0 or level == levels[0]  # without training the level is moot
    ]
    print(
        f"bench_language: {len(plan)} runs on {args.dataset} ({device}), {args.steps} steps each",
        flush=True,
    )
    runs = []
    with benchtools.progress(total=len(plan) * args.steps, desc="speakers", unit="step") as bar:
        for name, level, seed, cfg in plan:
            bar.set_postfix_str(f"{name} {level} seed {seed}")
            result = train_speakers(SpeakerRunConfig(**cfg), progress=bar.update)
            runs.append((name, level, seed, result))

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
        "seeds",
        "s/run",
    ]
    print(
        f"\nStudent (agent_1) linear-probe test accuracy (%) at best validation, "
        f"{args.dataset}, {args.message_bits}-bit messages, mean over seeds\n"
    )
    print(benchtools.markdown_table(rows, columns))
    print_ordering(rows)
    out = Path(args.out_dir)
    raw = [
        {
            "speaker": n,
            "level": lv,
            "seed": s,
            "student_test": r.student_test,
            "teacher_test": r.test_at_best[0],
            **r.peak_final(),
            "seconds": r.seconds,
            "steps": r.steps,
            "val_acc": r.val_acc,
            "test_acc": r.test_acc,
            "temperature": r.temperature,
            "config": r.config,
        }
        for n, lv, s, r in runs
    ]
    name = f"language_{args.dataset}"
    json_path, csv_path = benchtools.write_results(out, name, rows, args, extra={"runs": raw})
    png = plot(runs, levels, out / f"{name}.png", args.dataset)
    print(f"\nwrote {json_path}, {csv_path}, {png}")
    return rows


def table_rows(runs: list, levels: list[str]) -> list[dict]:
    """One row per (speaker, level): mean ± std of the student's test accuracy at best val."""
    rows = []
    for name in dict.fromkeys(n for n, *_ in runs):
        for level in levels:
            group = [r for n, lv, _, r in runs if n == name and lv == level]
            if not group:
                continue
            mean, std = summarize([r.student_test for r in group])
            pf = [r.peak_final() for r in group]
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
                    "seeds": len(group),
                    "s/run": summarize([r.seconds for r in group])[0],
                }
            )
    return rows


def print_ordering(rows: list[dict]) -> None:
    """Say whether the thesis' ordering both > feedback > receive > none holds, per speaker."""
    for name in dict.fromkeys(r["speaker"] for r in rows):
        acc = {r["level"]: r["ours"] for r in rows if r["speaker"] == name}
        if set(acc) >= set(THESIS):
            holds = acc["both"] > acc["feedback"] > acc["receive"] > acc["none"]
            print(
                f"{name}: both > feedback > receive > none: {'yes' if holds else 'no'}; "
                f"both - none = {acc['both'] - acc['none']:+.1f} points (thesis +7.0)"
            )


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
    main()
