"""Regenerate the results pages and the README's headline tables from committed result files.

Every reported run lives in ``docs/results/<bench>/<label>/`` as the files its benchmark wrote
(JSON with commit, arguments, seed, versions and machine; CSV; PNG). This script reads them and
rewrites ``docs/results/<bench>.md``, ``docs/results/index.md`` and the blocks of ``README.md``
between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``; nothing else writes a number into
the docs. ``--check`` rewrites nothing and fails when any generated text differs from what the
files give (``tests/test_docs.py`` runs it).

Usage::

    python -m commenv.bench.report            # rewrite the pages and README blocks
    python -m commenv.bench.report --check    # exit 1 if anything is stale

A run listed in :data:`RUNS` whose folder is missing is shown as "not yet run" with its command
and no number; a results folder not listed in :data:`RUNS` is an error.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commenv.bench.tools import atomic_write, markdown_table


@dataclass(frozen=True)
class Run:
    """One reported run: ``python -m commenv.bench.<bench> <argv> --out-dir <folder>``."""

    bench: str
    label: str
    argv: tuple[str, ...]
    title: str

    @property
    def folder(self) -> str:
        return f"docs/results/{self.bench}/{self.label}"

    @property
    def command(self) -> str:
        return shlex.join(
            ["python", "-m", f"commenv.bench.{self.bench}", *self.argv, "--out-dir", self.folder]
        )


QUIZ_THESIS_ROWS = (
    "baseline,stack 2 CE soft,stack 2 CE true,stack 2 Euclid soft,stack 2 random soft,"
    "stack 5 CE soft,stack 5 CE true"
)
FRONTIER_FULL = ("--steps", "1000", "--eval-every", "200")
CNN_ROWS = (
    "vae-1",
    "vae-10-none",
    "vae-10-match",
    "bigan-1",
    "bigan-10-none",
    "bigan-10-match",
    "bigan-10-decorrelate",
)
"""The unsupervised runs of the strided-CNN tables: the thesis' six and our decorrelation."""


FULL_ROWS = (
    "vae-1",
    "vae-10-none",
    "vae-10-match",
    "vae-10-contrastive",
    "bigan-1",
    "bigan-10-none",
    "bigan-10-match",
    "bigan-10-contrastive",
    "bigan-10-decorrelate",
    "bigan-10-decorrelate-fixed",
)
"""The unsupervised full preset's runs: its default rows (the thesis' six and the contrastive
rows), our decorrelation row and its control, in one file per seed."""


def full_unsupervised_run(seed: int) -> Run:
    """Table 2.3 at the full preset (Fashion-MNIST, MLP nodes, 3,000 steps, 4 probe stages)."""
    return Run(
        "unsupervised",
        f"fashion-mnist-mlp-3000-seed{seed}",
        ("--seed", str(seed), "--runs", *FULL_ROWS, "--resume"),
        f"Fashion-MNIST, MLP nodes, the full preset (3,000 steps, 4 probe stages), seed {seed}: "
        "the thesis' rows, ours and the control",
    )


def probe_each_run(seed: int) -> Run:
    """Table 2.3's full preset rerun with each probe early-stopping on its own (``ec4f43a``),
    and again with the one probe's standardisation (``3cd0bba``), in a folder named as the run
    wrote it."""
    return Run(
        "unsupervised",
        f"probe-each/fashion-mnist-mlp-3000-seed{seed}",
        ("--seed", str(seed), "--threads", "1", "--runs", *FULL_ROWS),
        f"Fashion-MNIST, the full preset, seed {seed}, each probe early-stopping on its own "
        "(the runs of record; the files above stopped a run's probes together)",
    )


def cnn_run(steps: int, seed: int, what: str) -> Run:
    """A strided-CNN table 2.3 run on Fashion-MNIST (:data:`CNN_ROWS`, 2 probe stages)."""
    args = ("--arch", "cnn", "--steps", str(steps), "--stages", "2", "--seed", str(seed))
    return Run(
        "unsupervised",
        f"fashion-mnist-cnn-{steps}-seed{seed}",
        (*args, "--runs", *CNN_ROWS, "--resume"),
        f"Fashion-MNIST, strided-CNN nodes, {what}",
    )


RUNS: tuple[Run, ...] = (
    Run("graph", "quick", ("--quick", "--threads", "1"), "Quick preset: digits, 1,000 steps"),
    # the CNN run first: the thesis' architecture, so the README's headline table
    Run(
        "graph",
        "fashion-mnist-cnn-20k-seed0",
        ("--threads", "1", "--arch", "cnn", "--train-size", "20000", "--seed", "0"),
        "Fashion-MNIST, CNN nodes, 20,000 partitioned samples, 5,000 steps, seed 0",
    ),
    Run(
        "graph",
        "fashion-mnist-mlp-20k-seed0",
        ("--threads", "1", "--arch", "mlp", "--train-size", "20000", "--seed", "0"),
        "Fashion-MNIST, MLP nodes, 20,000 partitioned samples, 5,000 steps, seed 0",
    ),
    Run(
        "quiz", "quick", ("--quick", "--threads", "1"), "Quick preset: digits, every configuration"
    ),
    Run(
        "quiz",
        "fashion-mnist-seed0",
        ("--threads", "1", "--resume", "--runs", QUIZ_THESIS_ROWS),
        "Fashion-MNIST, the thesis' rows, seed 0 (three students per row)",
    ),
    Run(
        "language",
        "quick",
        ("--quick", "--threads", "1"),
        "Quick preset: digits, 2 seeds x 600 steps",
    ),
    # the thesis' objective first: the README's table 4.1 is the reproduction, ours follows
    Run(
        "language",
        "fashion-mnist-thesis-objective",
        ("--threads", "1", "--kinds", "gumbel,reinforce", "--remedies", "", "--ours", ""),
        "Fashion-MNIST, the thesis' objective (Gumbel and REINFORCE), 5 seeds x 3,000 steps",
    ),
    Run(
        "language",
        "fashion-mnist-contrastive",
        ("--threads", "1", "--kinds", "", "--remedies", "", "--ours", "contrastive"),
        "Fashion-MNIST, Gumbel speakers with the contrastive likelihood, 5 seeds x 3,000 steps",
    ),
    Run(
        "language",
        "fashion-mnist-untrained",
        ("--kinds", "", "--remedies", "", "--ours", "", "--untrained", "--levels", "none"),
        "Fashion-MNIST, the floor: the probe on an untrained speaker (lr 0), 5 seeds x 3,000 steps",
    ),
    Run("speed", "quick", ("--quick", "--threads", "1"), "Quick preset: 3 rounds of short windows"),
    Run(
        "speed",
        "full",
        ("--threads", "1"),
        "Full preset: 2-s windows, every size, after the issue-18 wave (the reported figures)",
    ),
    Run(
        "speed",
        "full-avx512",
        ("--threads", "1"),
        "Full preset again on another host (an Intel Xeon with AVX-512): how the "
        "machine-dependent ratios move",
    ),
    Run(
        "speed",
        "before-issue18",
        ("--threads", "1"),
        "Before issue 18: the full preset on the code before the speed wave (the '2x before' "
        "targets' reference)",
    ),
    Run(
        "unsupervised",
        "digits-quick-seed0",
        ("--quick", "--seed", "0"),
        "Quick preset: digits, 300 steps, 2 probe stages, seed 0",
    ),
    *(full_unsupervised_run(seed) for seed in (0, 1, 2)),
    *(probe_each_run(seed) for seed in (0, 1, 2)),
    *(
        Run(
            "unsupervised",
            f"fashion-mnist-mlp-2000-seed{seed}",
            ("--steps", "2000", "--seed", str(seed)),
            f"Fashion-MNIST, MLP nodes, 2,000 steps, 4 probe stages, seed {seed}",
        )
        for seed in (0, 1, 2)
    ),
    cnn_run(
        300,
        0,
        "a short budget: 300 steps, 2 probe stages, seed 0 (the thesis' rows and ours; a first "
        "CNN reading, not the full preset)",
    ),
    *(
        cnn_run(
            1000,
            seed,
            f"1,000 steps, 2 probe stages, seed {seed} (the thesis' rows and ours; a third of "
            "the full preset's steps)",
        )
        for seed in (0, 1, 2)
    ),
    *(
        Run(
            "unsupervised",
            f"fashion-mnist-mlp-2000-{fam}-variants-seed0",
            (
                "--steps",
                "2000",
                "--seed",
                "0",
                "--runs",
                *(f"{fam}-10-{share}" for share in ("none", "images", "projected", "decorrelate")),
                "--decorrelate-weight",
                weight,
            ),
            f"Ours, exploration: {name} sharing objectives beside silence (selected on "
            "validation), Fashion-MNIST, MLP nodes, 2,000 steps, seed 0",
        )
        for fam, name, weight in (("vae", "VAE", "10"), ("bigan", "BiGAN", "1"))
    ),
    Run(
        "unsupervised",
        "fashion-mnist-mlp-2000-vae-decorrelate100-seed0",
        (
            "--steps",
            "2000",
            "--seed",
            "0",
            "--runs",
            "vae-10-decorrelate",
            "--decorrelate-weight",
            "100",
        ),
        "Ours, exploration: VAE codes decorrelated at weight 100, Fashion-MNIST, seed 0",
    ),
    *(
        Run(
            "unsupervised",
            f"fashion-mnist-mlp-2000-decorrelate-seed{seed}",
            (
                "--steps",
                "2000",
                "--seed",
                str(seed),
                "--runs",
                "bigan-10-none",
                "bigan-10-decorrelate",
            ),
            "Ours: BiGAN codes decorrelated from the sender's vs silence, Fashion-MNIST, MLP "
            f"nodes, 2,000 steps, seed {seed}",
        )
        for seed in (0, 1, 2)
    ),
    Run(
        "unsupervised",
        "fashion-mnist-mlp-2000-decorrelate-control-seed0",
        ("--steps", "2000", "--seed", "0", "--runs", "bigan-10-none", "bigan-10-decorrelate-fixed"),
        "Control: BiGAN codes decorrelated from a frozen random encoder's (no neighbour's codes), "
        "Fashion-MNIST, seed 0",
    ),
    Run("frontier", "digits-quick", ("--quick",), "Quick preset: digits, 10 nodes, 400 steps"),
    *(
        Run(
            "frontier",
            f"fashion-mnist-{part}-seed0",
            ("--partitions", part, *FRONTIER_FULL, "--seed", "0"),
            f"Fashion-MNIST, 10 nodes, {part} partition, 1,000 steps, seed 0",
        )
        for part in ("iid", "dirichlet")
    ),
    *(
        Run(
            "frontier",
            f"fashion-mnist-seed{seed}",
            ("--partitions", "iid", "dirichlet", *FRONTIER_FULL, "--seed", str(seed)),
            f"Fashion-MNIST, 10 nodes, both partitions, 1,000 steps, seed {seed}",
        )
        for seed in (1, 2)
    ),
)

BENCH_TITLES = {
    "graph": "Table 2.2: nodes sharing outputs (`node_graph_v0`)",
    "quiz": "Table 3.1: the hardness-selecting teacher (`quiz_v0`)",
    "language": "Table 4.1: speakers at four communication levels (`partial_obs_v0`)",
    "speed": "Speed: agent-steps per second beside MPE2",
    "unsupervised": "Table 2.3: unsupervised VAE and BiGAN nodes sharing features",
    "frontier": "The bandwidth frontier: accuracy against bits communicated",
}
BENCH_INTROS = {
    "graph": (
        "Average and collective (entropy-weighted) test accuracy after the step budget, steps "
        "to the target accuracy (the single node's final accuracy, rounded down) and the payload "
        "bits beside synchronous SGD's. The thesis' numbers are on CIFAR-10."
    ),
    "quiz": (
        "Student test accuracy at its best-validation checkpoint (mean and std over the "
        "students trained side by side), backward passes (bp) at that checkpoint and to the "
        "baseline's accuracy, and the speed-ups in backward passes. The thesis' numbers are on "
        "MNIST."
    ),
    "language": (
        "The student's linear-probe test accuracy (%) at its best validation checkpoint, mean "
        "and std over seeds (the population std, ddof 0), beside the thesis' MNIST numbers; "
        "peak and final validation accuracy show the fall as the Gumbel temperature anneals. "
        "The probe is trained online beside the speaker, as in the thesis (Adam, one step per "
        "speaker batch, unnormalised features); the likelihood term predicts with the "
        "listener's own message distribution (its softmax at temperature 1). The untrained "
        "speaker's row (lr 0) is the floor: what the same probe reads from random features; "
        "each trained speaker is judged on beating it at every level. The `offline probe` "
        "columns (files made with `--offline-probe-stages`) are a second instrument, ours: at "
        "evenly spaced stages of training, linear probes are fit on the frozen features of the "
        "whole train split, z-scored with its statistics (trained features sit at large "
        "offsets with a small spread, which an online probe on raw features reads badly), "
        "early-stopped on validation; the best stage by validation is reported on test. An "
        "online probe chases features that move under it while the floor's features stand "
        "still; the offline probe removes that advantage, so every claim is judged again "
        "on it."
    ),
    "speed": (
        "Agent-steps per second with random valid actions, median of interleaved rounds on one "
        "torch thread, beside PettingZoo's MPE2 reference (`x MPE2`) and VMAS measured in the "
        "same run; world-steps/s where a world holds many agents (node_graph_v0 at 100 nodes; "
        "TorchRL frames/s). Resident memory per world (`KiB/world`) is the growth of peak RSS "
        "over building, resetting and stepping the game, each size in fresh processes (the "
        "median of 3 in runs after the uint8 rows came), between two sizes, divided by the "
        "difference in worlds; VMAS is measured the same way. The `obs_dtype=uint8` rows are "
        "partial_obs_v0 with 8-bit observations, shown beside the targets, not judged. The "
        "'observation write alone' rows time only a step's observation write, and the "
        "'bound' rows and the memory row of one step's observations say what any step "
        "returning these observations could at most reach; the write's own scaling is beside "
        "the step's (runs after those rows came). Issue "
        "18's targets are judged by the run itself; the two '2x before issue 18' targets divide "
        "this run's `x MPE2` by the before-issue18 run's (a ratio of ratios, so each day's load "
        "cancels). Then the reference agents' training speed, where the run judges issue 15's "
        "target on every unsupervised population it timed (runs after that line came), each "
        "beside its 'matrix products alone' bound: the per-node loop's time over the batched "
        "step's own matrix-product kernels, the most the ratio can be with them (runs after "
        "those rows came). Machine-dependent: read them as ratios."
    ),
    "unsupervised": (
        "Linear-probe test accuracy (%) on each node's encoder at its best validation stage: "
        "average, and collective for populations, beside the thesis' CIFAR-10 numbers; "
        "val coll is the collective on the validation split (what our rows were selected on; "
        "absent from files written before it was recorded); best_stage_step is the nodes' "
        "mean of the unsupervised step of each node's best stage (see "
        "[unsupervised nodes](../unsupervised.md)). Each probe early-stops on its own since "
        "`ec4f43a`; a file whose commit is older stopped all of a run's probes together, when "
        "none improved, which let a 10-node row's probes train longer than the single node's: "
        "the quick preset, rerun at `ec4f43a`, lost a little on its 10-node rows and nothing "
        "on its single nodes (compare its file with the one before it in git). The full "
        "preset's three seeds were rerun with it (`probe-each/`), and again at `3cd0bba`, "
        "whose probes standardise through `commenv.probe.fit_linear_probe(standardize=True)` "
        "(4 of 246 per-node accuracies moved, no verdict: each folder's NOTE.md); the 3-seed "
        "summary reads those, and the earlier files stay on this page."
    ),
    "frontier": (
        "Every protocol on the same partitions, models and step budget: final average and "
        "collective accuracy, total bits through `commenv.Channel`, bits per node-step, steps "
        "and bits to the target accuracy, compute (forward/backward passes, model copies) and "
        "whether the run is on each measured Pareto front: over collective accuracy (the "
        "thesis' entropy-weighted vote, free only for replicated protocols) and over average "
        "accuracy (one node's model alone); see [the bandwidth frontier](../frontier.md)."
    ),
}
HEADLINE = {"graph": "Table 2.2", "quiz": "Table 3.1", "language": "Table 4.1"}
"""The README's generated tables (``<!-- report:NAME -->`` blocks; the README stays short)."""
OVERVIEW = {**HEADLINE, "unsupervised": "Table 2.3", "frontier": "The bandwidth frontier"}
"""The results overview's headline tables: the README's and table 2.3's."""
SEED_SUMMARIES: dict[str, tuple[str, tuple[Run, ...]]] = {
    "unsupervised": (
        "Fashion-MNIST, MLP nodes, the full preset (3,000 steps, 4 probe stages), 3 seeds, each "
        "probe early-stopping on its own",
        tuple(probe_each_run(seed) for seed in (0, 1, 2)),
    ),
    "frontier": (
        "Fashion-MNIST, 10 nodes, 1,000 steps, both partitions, 3 seeds",
        tuple(r for r in RUNS if r.bench == "frontier" and r.label.startswith("fashion-mnist")),
    ),
}
"""Per benchmark, the runs of record that differ only in their seed: their results page opens
with these runs' mean ± std per row and each claim's count of seeds where it holds, which is
also the benchmark's headline in the results overview."""


# -- tables ---------------------------------------------------------------------------------
def _renamed(rows: list[dict[str, Any]], columns: dict[str, str]) -> list[dict[str, Any]]:
    return [{title: row.get(key) for key, title in columns.items()} for row in rows]


def _table(rows: list[dict[str, Any]], columns: dict[str, str], digits: int = 1) -> str:
    return markdown_table(_renamed(rows, columns), list(columns.values()), digits=digits)


GRAPH_COLUMNS = {
    "configuration": "configuration",
    "thesis_avg": "thesis avg",
    "thesis_coll": "thesis coll",
    "avg_acc": "avg",
    "coll_acc": "coll",
    "thesis_steps_to_85": "thesis steps to 85 %",
    "steps_to_target": "steps to target",
    "payload_vs_sgd": "payload / sync SGD",
}
QUIZ_COLUMNS = {
    "config": "configuration",
    "thesis acc": "thesis acc",
    "thesis bp": "thesis bp",
    "test acc": "test acc",
    "±": "±",
    "bp @best": "bp @ best val",
    "bp to base": "bp to baseline (test curve)",
    "speed-up": "speed-up",
    "speed-up -0.5": "speed-up -0.5",
}
UNSUPERVISED_COLUMNS = {
    "configuration": "configuration",
    "thesis_avg": "thesis avg",
    "thesis_coll": "thesis coll",
    "avg_acc": "avg",
    "coll_acc": "coll",
    "val_coll_acc": "val coll",
    "best_stage_step": "best stage (step)",
}
FRONTIER_COLUMNS = {
    "partition": "partition",
    "protocol": "protocol",
    "avg_acc": "avg",
    "coll_acc": "coll",
    "total_bits": "bits",
    "bits_per_node_step": "bits / node-step",
    "steps_to_target": "steps to target",
    "bits_to_target": "bits to target",
    "forward_passes": "forward passes",
    "backward_passes": "backward passes",
    "model_copies": "model copies",
    "pareto": "front (coll)",
    "pareto_avg": "front (avg)",
}
SPEED_COLUMNS = (
    "benchmark",
    "agent-steps/s",
    "x MPE2",
    "world-steps/s",
    "ratio",
    "KiB/world",
    "note",
)
"""The speed env table's columns (those no row fills are left out: older result files)."""
LANGUAGE_COLUMNS = {
    "speaker": "speaker",
    "level": "level",
    "thesis (MNIST)": "thesis (MNIST)",
    "ours": "ours (online probe)",
    "± std": "± std",
    "offline": "offline probe",
    "offline ± std": "offline ± std",
    "peak val": "peak val",
    "final val": "final val",
    "seeds": "seeds",
}


def language_floor(root: Path | None, data: dict[str, Any]) -> dict[str, Any] | None:
    """The untrained speaker's row for a table 4.1 file without one: from the committed run of
    the same dataset, steps and seeds that has it (``None`` if there is none)."""
    from commenv.bench.language import UNTRAINED

    if root is None or any(r.get("speaker") == UNTRAINED for r in data["rows"]):
        return None
    a = data["meta"]["args"]
    for run in RUNS:
        path = result_file(root, run) if run.bench == "language" else None
        other = json.loads(path.read_text()) if path else None
        if other is None:
            continue
        b = other["meta"]["args"]
        same = {"dataset": None, "steps": None, "seeds": None, "seed": 0}  # seed: 0 if unrecorded
        if all(a.get(k, v) == b.get(k, v) for k, v in same.items()):
            row = next((r for r in other["rows"] if r.get("speaker") == UNTRAINED), None)
            if row is not None:
                return {**row, "from": run.folder}
    return None


def judged(bench: str, data: dict[str, Any], root: Path | None = None) -> dict[str, Any] | None:
    """The thesis' claims on a result file's rows: judged again from the rows by the
    benchmark's own judge where it has one that needs nothing but the rows (table 3.1,
    table 2.3), so that a file written before a claim was added is judged on it too; else as
    the run stored them."""
    import copy

    rows = copy.deepcopy(data["rows"])
    if bench == "quiz" and any(r.get("config") == "baseline" for r in rows):
        from commenv.bench.quiz import add_comparisons, thesis_claims

        add_comparisons(rows)
        return thesis_claims(rows)
    if bench == "unsupervised" and rows and "run" in rows[0]:
        from commenv.bench.unsupervised import judge

        a = data["meta"]["args"]
        preset = f"{a['dataset']} ({a['steps']} steps, {a['arch']})"
        return {c: {"holds": ok, "verdict": why} for c, (ok, why) in judge(rows, preset).items()}
    if bench == "language" and rows and "level" in rows[0]:
        from commenv.bench.language import thesis_claims

        floor = language_floor(root, data)
        claims = thesis_claims([*rows, floor] if floor else rows)
        if floor:  # say where the floor was measured
            claims = {
                (f"{c} (floor: `{floor['from']}/`)" if "untrained speaker" in c else c): ok
                for c, ok in claims.items()
            }
        return claims
    return data.get("thesis_claims")


def _claims(data: dict[str, Any], bench: str = "", root: Path | None = None) -> list[str]:
    """One line per thesis claim the files can judge."""
    if data.get("verdict_lines"):  # speed: the issue-18 targets, as the run judged them
        return list(data["verdict_lines"])
    claims = judged(bench, data, root)
    if claims:
        return [f"- {claim}: {_verdict(ok)}" for claim, ok in claims.items()]
    verdicts = data.get("verdicts")  # frontier: per partition, claim -> "holds: why"
    if verdicts:
        return [
            f"- {part}, {claim}: {v}" for part, vs in verdicts.items() for claim, v in vs.items()
        ]
    return []


def _verdict(ok: Any) -> str:
    """``True``/``False``, or ``{"holds": bool, "verdict": why}`` (unsupervised)."""
    if isinstance(ok, dict):
        return f"{'holds' if ok['holds'] else 'FAILS'} ({ok['verdict']})"
    return "holds" if ok else "FAILS"


def run_table(bench: str, data: dict[str, Any]) -> str:
    """The markdown table of one result file, as its results page shows it."""
    rows = data["rows"]
    if bench == "graph":
        return _table(rows, GRAPH_COLUMNS)
    if bench == "quiz":
        return _table(rows, QUIZ_COLUMNS)
    if bench == "language":
        columns = {
            k: v for k, v in LANGUAGE_COLUMNS.items() if any(r.get(k) is not None for r in rows)
        }
        return _table(rows, columns)  # files from before the offline probe: no such columns
    if bench == "unsupervised":
        return _table(rows, UNSUPERVISED_COLUMNS)
    if bench == "frontier":
        return _table(rows, FRONTIER_COLUMNS, digits=2)
    if bench == "speed":
        env_rows = [r for r in rows if "benchmark" in r]
        agent_rows = [r for r in rows if "name" in r]
        columns = [c for c in SPEED_COLUMNS if any(r.get(c) is not None for r in env_rows)]
        parts = [markdown_table(env_rows, columns, digits=2)]
        if agent_rows:
            parts.append(markdown_table(agent_rows, ["name", "steps_per_s", "note"], digits=0))
        return "\n\n".join(parts)
    raise ValueError(f"no table for benchmark {bench!r}; valid choices: {list(BENCH_TITLES)}")


def language_pivot(data: dict[str, Any]) -> str:
    """Table 4.1 compact: one row per level, one ``mean ± std`` column per speaker (the online
    probe's, the thesis' metric), then one per speaker for the offline probe where the file
    has it."""
    rows = data["rows"]
    speakers = list(dict.fromkeys(r["speaker"] for r in rows))
    offline = [
        n for n in speakers if all(r.get("offline") is not None for r in rows if r["speaker"] == n)
    ]
    out = []
    for level in dict.fromkeys(r["level"] for r in rows):
        row: dict[str, Any] = {"level": level}
        for r in rows:
            if r["level"] == level:
                row["thesis (MNIST)"] = r["thesis (MNIST)"]
                row[r["speaker"]] = f"{r['ours']:.1f} ± {r['± std']:.1f}"
                if r["speaker"] in offline:
                    row[f"{r['speaker']}, offline"] = f"{r['offline']:.1f}"
        out.append(row)
    columns = ["level", "thesis (MNIST)", *speakers, *(f"{n}, offline" for n in offline)]
    return markdown_table(out, columns)


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.1f} ± {std:.1f}"


def seed_summary(root: Path, bench: str) -> str | None:
    """The mean ± std (over seeds) table of :data:`SEED_SUMMARIES`' runs of ``bench`` and, per
    claim, in how many of the seeds it holds; ``None`` when no run of them is committed."""
    if bench not in SEED_SUMMARIES:
        return None
    title, runs = SEED_SUMMARIES[bench]
    files = {run: result_file(root, run) for run in runs}
    done = [run for run, path in files.items() if path is not None]
    if not done:
        return None
    datas = [json.loads(files[run].read_text()) for run in done]  # type: ignore[union-attr]
    if bench == "frontier":
        return frontier_summary(done, datas)
    seeds = [d["meta"]["args"]["seed"] for d in datas]
    rows: dict[str, dict[str, Any]] = {}
    for data in datas:
        for r in data["rows"]:
            row = rows.setdefault(r["configuration"], {"avg": [], "coll": [], "first": r})
            for key, col in (("avg", "avg_acc"), ("coll", "coll_acc")):
                if r.get(col) is not None:
                    row[key].append(r[col])
    table = [
        {
            "configuration": name,
            "thesis avg": row["first"].get("thesis_avg"),
            "thesis coll": row["first"].get("thesis_coll"),
            "avg": _mean_std(row["avg"]),
            "coll": _mean_std(row["coll"]),
            "seeds": len(row["avg"]),
        }
        for name, row in rows.items()
    ]
    columns = ["configuration", "thesis avg", "thesis coll", "avg", "coll", "seeds"]
    lines = [
        f"{title}: mean ± std over seeds {', '.join(map(str, seeds))} "
        f"({', '.join(f'`{run.folder}/`' for run in done)}):",
        "",
        markdown_table(table, columns),
    ]
    claims: dict[str, list[bool]] = {}
    for data in datas:
        for claim, ok in (judged(bench, data, root) or {}).items():
            claims.setdefault(claim, []).append(ok["holds"] if isinstance(ok, dict) else bool(ok))
    if claims:
        lines.append("")
        lines += [
            f"- {claim}: holds in {sum(oks)} of {len(oks)} seeds" for claim, oks in claims.items()
        ]
    missing = [run for run in runs if run not in done]
    for run in missing:
        lines += ["", f"Not yet run: {run.title} (its command is on the {bench} results page)."]
    return "\n".join(lines)


def frontier_summary(runs: list[Run], datas: list[dict[str, Any]]) -> str:
    """Per partition and protocol, over the seeds: accuracies (mean ± std), bits, and on how
    many seeds the row is on each Pareto front; then each verdict's count of seeds."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    claims: dict[tuple[str, str], list[bool]] = {}
    seeds: dict[str, set[int]] = {}
    for data in datas:
        seed = data["meta"]["args"]["seed"]
        for r in data["rows"]:
            seeds.setdefault(r["partition"], set()).add(seed)
            row = rows.setdefault((r["partition"], r["protocol"]), {"rows": []})
            row["rows"].append(r)
        for partition, verdicts in (data.get("verdicts") or {}).items():
            for claim, verdict in verdicts.items():
                claims.setdefault((partition, claim), []).append(verdict.startswith("holds"))

    def on(rs: list[dict[str, Any]], key: str) -> str:
        if any(key not in r for r in rs):
            return "–"
        return "ref" if rs[0][key] == "ref" else f"{sum(r[key] == 'yes' for r in rs)}/{len(rs)}"

    table = [
        {
            "partition": partition,
            "protocol": protocol,
            "avg": _mean_std([r["avg_acc"] for r in row["rows"]]),
            "coll": _mean_std([r["coll_acc"] for r in row["rows"]]),
            "bits (mean)": round(sum(r["total_bits"] for r in row["rows"]) / len(row["rows"])),
            "front (coll)": on(row["rows"], "pareto"),
            "front (avg)": on(row["rows"], "pareto_avg"),
            "seeds": len(row["rows"]),
        }
        for (partition, protocol), row in rows.items()
    ]
    columns = list(table[0]) if table else []
    per = "; ".join(f"{p}: {', '.join(map(str, sorted(s)))}" for p, s in seeds.items())
    lines = [
        f"Mean ± std over the seeds (per partition: {per}) of "
        f"{', '.join(f'`{run.folder}/`' for run in runs)}:",
        "",
        markdown_table(table, columns),
        "",
    ]
    lines += [
        f"- {partition}: {claim}: holds in {sum(oks)} of {len(oks)} seeds"
        for (partition, claim), oks in claims.items()
    ]
    return "\n".join(lines)


# -- reading the files ----------------------------------------------------------------------
def result_file(root: Path, run: Run) -> Path | None:
    """The JSON result file of ``run`` (None when the run has not been committed yet)."""
    folder = root / run.folder
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if len(files) > 1:
        raise ValueError(f"{folder} holds {len(files)} JSON files; expected one result file")
    return files[0] if files else None


def unlisted_folders(root: Path) -> list[str]:
    """Result folders of the reported benchmarks that :data:`RUNS` does not list (feature
    pages such as distributed.md read their own folders)."""
    known = {run.folder for run in RUNS}
    base = root / "docs" / "results"
    found = {
        p.parent.relative_to(root).as_posix()
        for bench in BENCH_TITLES
        for p in base.glob(f"{bench}/*/*.json")
    }
    return sorted(found - known)


def _meta_line(data: dict[str, Any]) -> str:
    meta = data["meta"]
    seed = meta.get("args", {}).get("seed")
    parts = [
        f"commit `{meta.get('commit')}`",
        f"seed {seed}" if seed is not None else None,
        f"torch {meta.get('torch')}",
        f"python {meta.get('python')}",
        f"{meta.get('machine')}, {meta.get('cpu_threads')} torch thread(s)",
        f"finished {meta.get('time')}",
    ]
    return "Recorded in the result file: " + ", ".join(p for p in parts if p) + "."


def _files_line(root: Path, run: Run) -> str:
    folder = root / run.folder
    links = [
        f"[`{p.name}`]({run.bench}/{run.label}/{p.name})"
        for p in sorted(folder.iterdir())
        if p.suffix in {".json", ".csv", ".png"} or p.name == "NOTE.md"
    ]
    return "Result files: " + ", ".join(links) + "."


# -- pages ----------------------------------------------------------------------------------
GENERATED = (
    "<!-- generated by `python -m commenv.bench.report` from the result files: do not edit -->"
)


def run_section(root: Path, run: Run, level: str = "##") -> str:
    path = result_file(root, run)
    lines = [f"{level} {run.title}", "", "```bash", run.command, "```", ""]
    if path is None:
        lines.append(
            "**Not yet run.** The command above writes its result files; then rerun "
            "`python -m commenv.bench.report`."
        )
        return "\n".join(lines)
    data = json.loads(path.read_text())
    lines += [_meta_line(data), "", run_table(run.bench, data), ""]
    claims = _claims(data, run.bench, root)
    if claims:
        lines += ["Claims judged on this run:", "", *claims, ""]
    lines.append(_files_line(root, run))
    pngs = sorted((root / run.folder).glob("*.png"))
    for png in pngs:
        lines += ["", f"![{run.title}]({run.bench}/{run.label}/{png.name})"]
    return "\n".join(lines)


def bench_page(root: Path, bench: str) -> str:
    sections = [run_section(root, run) for run in RUNS if run.bench == bench]
    summary = seed_summary(root, bench)
    if summary is not None:
        sections.insert(0, f"## {SEED_SUMMARIES[bench][0]}\n\n{summary}")
    head = [GENERATED, "", f"# {BENCH_TITLES[bench]}", "", BENCH_INTROS[bench], ""]
    return "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"


def _brief(claims: list[str], bench: str) -> list[str]:
    """The README's one line for a run's claim lines: how many hold (the list is on the
    results page)."""
    held = sum(": holds" in line for line in claims)
    return [f"Claims judged on this run: {held} of {len(claims)} hold (listed on the {bench} "
            "results page)."]  # fmt: skip


def headline(root: Path, bench: str, brief: bool = False) -> str:
    """The README/overview table of one thesis table: its runs of record over seeds
    (:func:`seed_summary`), else its fullest committed run. ``brief`` (the README): each run's
    claims as one count."""
    summary = seed_summary(root, bench)
    if summary is not None:
        return summary
    runs = [run for run in RUNS if run.bench == bench]
    done = [run for run in runs if result_file(root, run) is not None]
    full = [run for run in done if run.label != "quick"]
    pending = [run for run in runs if run not in done]
    lines = []
    if full or done:
        run = (full or done)[0]
        data = json.loads(result_file(root, run).read_text())  # type: ignore[union-attr]
        table = language_pivot(data) if bench == "language" else run_table(bench, data)
        lines += [f"{run.title} (`{run.folder}/`):", "", table]
        claims = _claims(data, bench, root)
        if claims:
            lines += ["", *(_brief(claims, bench) if brief else claims)]
        # the verdicts of the other full runs too, so the front page hides no failed claim
        others = [
            (r, _claims(json.loads(result_file(root, r).read_text()), bench, root))  # type: ignore[union-attr]
            for r in full[1:]
        ]
        for other, other_claims in others:
            if other_claims:  # its table is on the results page: say so, not a bare colon
                shown = _brief(other_claims, bench) if brief else other_claims
                where = f"its table is on the {bench} results page"
                lines += ["", f"{other.title} (`{other.folder}/`; {where}):", "", *shown]
    for run in pending:
        lines += ["", f"Not yet run: {run.title} (its command is on the {bench} results page)."]
    return "\n".join(lines)


def index_page(root: Path) -> str:
    lines = [
        GENERATED,
        "",
        "# Results",
        "",
        "Every number on these pages is read from a result file committed under "
        "`docs/results/<bench>/<label>/` (JSON with the commit, arguments, seed, versions and "
        "machine; CSV; PNG), exactly as the benchmark wrote it. One page per benchmark: "
        "[table 2.2](graph.md), [table 3.1](quiz.md), [table 4.1](language.md), "
        "[speed](speed.md), [table 2.3](unsupervised.md), [the frontier](frontier.md).",
        "",
        "| benchmark | run | status |",
        "|---|---|---|",
    ]
    for run in RUNS:
        status = "committed" if result_file(root, run) else "not yet run"
        lines.append(f"| [{run.bench}]({run.bench}.md) | {run.title} | {status} |")
    for bench, name in OVERVIEW.items():
        lines += ["", f"## {name}", "", headline(root, bench)]
    return "\n".join(lines) + "\n"


def expected_files(root: Path) -> dict[Path, str]:
    """Every fully generated page and its text."""
    pages = {root / "docs" / "results" / "index.md": index_page(root)}
    for bench in BENCH_TITLES:
        pages[root / "docs" / "results" / f"{bench}.md"] = bench_page(root, bench)
    return pages


BLOCK = re.compile(r"(<!-- report:([\w-]+) -->\n)(.*?)(<!-- /report:\2 -->)", re.S)


DISTRIBUTED_COLUMNS = [
    "configuration",
    "processes",
    "avg_acc",
    "coll_acc",
    "sim_max_node_diff",
    "bytes_per_node_step",
    "wire_bytes_per_node_step",
    "step_ms",
    "comm_ms",
]
DISTRIBUTED_RUNS = ("digits-p1", "digits-p2")
"""The two measured placements of docs/distributed.md (one process, two processes)."""
DISTRIBUTED_LARGER = (
    "fashion-p1-300steps",
    ("10 nodes, labels", "sync SGD, 1 DDP workers, allreduce hook"),
)
"""The same measurement on larger images, and the rows whose bytes per node-step are compared
with ``digits-p1``'s (a row matches by the start of its configuration)."""


def distributed_tables(root: Path) -> str:
    """docs/distributed.md's tables: each placement's rows, read from its result file."""
    base = root / "docs" / "results" / "distributed"
    larger, prefixes = DISTRIBUTED_LARGER
    datas = {
        label: json.loads(path.read_text())
        for label in (*DISTRIBUTED_RUNS, larger)
        if (path := base / label / "distributed.json").is_file()
    }
    parts = []
    for label in DISTRIBUTED_RUNS:
        if label not in datas:
            parts.append(f"Not yet run: `docs/results/distributed/{label}/`.")
            continue
        data = datas[label]
        size = data.get("world_size")
        procs = f"{size} {'process' if size == 1 else 'processes'}"
        parts.append(
            f"`docs/results/distributed/{label}/`, {procs}. {_meta_line(data)}\n\n"
            + markdown_table(data["rows"], DISTRIBUTED_COLUMNS, digits=2)
        )
    small = DISTRIBUTED_RUNS[0]
    if small in datas and larger in datas:
        ratios = []
        for prefix in prefixes:
            pick = [
                next(r["bytes_per_node_step"] for r in datas[label]["rows"]
                     if r["configuration"].startswith(prefix))
                for label in (small, larger)
            ]  # fmt: skip
            ratios.append(f"{prefix}: {pick[1] / pick[0]:.1f}x")
        parts.append(
            f"Bytes per node-step on Fashion-MNIST (`{larger}/`) over digits (`{small}/`): "
            + "; ".join(ratios)
            + "."
        )
    return "\n\n".join(parts)


DOC_BLOCKS = {"distributed": distributed_tables}
"""Generated blocks of feature pages (``<!-- report:NAME -->`` in ``docs/*.md``)."""


def fill_blocks(root: Path, text: str, brief: bool = False) -> str:
    """``text`` with every ``<!-- report:NAME -->`` block replaced by that headline table (or
    feature-page table, :data:`DOC_BLOCKS`); ``brief``: claims as counts (the README)."""
    valid = [*HEADLINE, *DOC_BLOCKS]

    def replace(m: re.Match) -> str:
        name = m.group(2)
        if name not in valid:
            raise ValueError(f"unknown report block {name!r}; valid choices: {valid}")
        table = DOC_BLOCKS[name](root) if name in DOC_BLOCKS else headline(root, name, brief)
        return f"{m.group(1)}{table}\n{m.group(4)}"

    return BLOCK.sub(replace, text)


def generated(root: Path) -> dict[Path, str]:
    """Every generated file (pages and README) and the text it must hold."""
    unlisted = unlisted_folders(root)
    if unlisted:
        raise ValueError(f"result folders not listed in commenv.bench.report.RUNS: {unlisted}")
    files = expected_files(root)
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for page in pages:
        if page.is_file() and BLOCK.search(page.read_text()):
            files[page] = fill_blocks(root, page.read_text(), brief=page.name == "README.md")
    return files


def stale(root: Path) -> list[Path]:
    """Generated files whose text differs from what the result files give."""
    return [p for p, text in generated(root).items() if not p.is_file() or p.read_text() != text]


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=".", help="repository root (holds README.md and docs/)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = p.parse_args(argv)
    root = Path(args.root)
    if not (root / "docs" / "results").is_dir():
        p.error(f"--root {root} has no docs/results folder; run from the repository root")
    if args.check:
        out = stale(root)
        for path in out:
            print(f"stale: {path} (run python -m commenv.bench.report)")
        if out:
            sys.exit(1)
        print("every generated table matches its result files")
        return out
    written = []
    for path, text in generated(root).items():
        if not path.is_file() or path.read_text() != text:
            atomic_write(path, text)
            written.append(path)
    print("wrote " + (", ".join(map(str, written)) if written else "nothing (up to date)"))
    return written


if __name__ == "__main__":
    main()
