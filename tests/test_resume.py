"""Long runs lose nothing: every benchmark killed mid-run resumes with ``--resume``.

Each test (graph, quiz, language, speed, unsupervised, frontier) starts a tiny ``--quick``
run in a subprocess, kills it (SIGKILL; SIGTERM once) as soon as its first run is recorded in
the partial file, reruns it with ``--resume`` and checks
that the finished rows are every run exactly once and that the first run was not recomputed:
its recorded timing (which a recomputation could not repeat to the last digit) is in the result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commenv.bench.tools import RunStore

TINY = {
    "graph": [
        "--steps",
        "200",
        "--eval-every",
        "200",
        "--runs",
        "1-node,10-nodes-true-labels,20-nodes-true-labels",
    ],
    "quiz": [
        "--runs",
        "stack 2 CE soft,stack-2-random-soft",
        "--max-epochs",
        "5",
        "--worlds",
        "1",
        "--no-plot",
    ],
    "language": [
        *("--steps", "20", "--eval-every", "20", "--seeds", "1", "--levels", "none,both"),
        *("--kinds", "gumbel", "--remedies", "", "--ours", "", "--no-untrained"),
        *("--hidden", "8", "--disc-hidden", "8", "--batch-size", "16"),
    ],
    "speed": [
        *("--seconds", "0.05", "--rounds", "1"),
        *("--runs", "environments,quiz-agents"),
    ],
}


def _recorded(partial: Path) -> list[dict]:
    """The runs a partial file holds (a line cut short by the kill is skipped)."""
    entries = []
    for line in partial.read_text().splitlines() if partial.exists() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "run" in entry:
            entries.append(entry)
    return entries


def _kill_after_first_run(cmd: list[str], cwd: Path, partial: Path, sig: int) -> list[dict]:
    env = {**os.environ, "COMMENV_NO_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while not _recorded(partial):
            if proc.poll() is not None:
                pytest.fail(f"ended before its first run was recorded:\n{proc.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("no run recorded within 300 s")
            time.sleep(0.01)
        proc.send_signal(sig)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -sig, "the run finished before it could be killed"
    return _recorded(partial)


def _finished_runs(bench: str, data: dict) -> dict[str, dict]:
    """Run name -> what the result file holds of it."""
    if bench == "graph":
        return {r["configuration"]: r for r in data["rows"]}
    if bench == "quiz":
        return {r["config"]: r for r in data["rows"]}
    if bench == "language":
        return {f"{r['speaker']} | {r['level']} | seed {r['seed']}": r for r in data["runs"]}
    return {"rows": {"rows": data["rows"]}}  # speed: checked as a prefix below


EXPECTED = {
    "graph": ["1 node", "10 nodes, true labels", "20 nodes, true labels"],
    "quiz": ["baseline", "stack 2 CE soft", "stack 2 random soft"],
    "language": [f"gumbel | {lv} | seed 0" for lv in ("none", "both")],
}


@pytest.mark.parametrize(
    ("bench", "sig"),
    [
        ("graph", signal.SIGKILL),
        # SIGTERM ends the process the same way (no handler): the same path, run by .ci/run
        pytest.param("graph", signal.SIGTERM, marks=pytest.mark.slow),
        ("quiz", signal.SIGKILL),
        ("language", signal.SIGKILL),
        ("speed", signal.SIGKILL),
    ],
)
def test_killed_benchmark_resumes_without_repeating_a_run(bench, sig, tmp_path, device):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", f"commenv.bench.{bench}", "--quick", *TINY[bench]]
    cmd += ["--out-dir", str(out), "--device", str(device)]
    partial = out / f"{bench}.partial.jsonl"
    before = _kill_after_first_run(cmd, tmp_path, partial, sig)
    assert not (out / f"{bench}.json").exists()

    env = {**os.environ, "COMMENV_NO_PROGRESS": "1"}
    done = subprocess.run(
        [*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(before)} resumed" in done.stdout or f"{len(before)} of" in done.stdout
    assert not partial.exists()  # a clean finish leaves no partial file
    data = json.loads((out / f"{bench}.json").read_text())
    first = before[0]
    # the resumed runs say what computed them (this code: no "other code" note)
    assert set(data["resumed"]) == {e["run"] for e in before}
    assert data["resumed"][first["run"]]["commit"] == data["meta"]["commit"]
    assert "other code" not in done.stdout
    if bench == "speed":
        names = [r.get("benchmark") or r["name"] for r in data["rows"]]
        assert len(names) == len(set(names)) and names[0].startswith("MPE2")
        assert data["rows"][: len(first["row"]["rows"])] == first["row"]["rows"]  # not remeasured
        return
    finished = _finished_runs(bench, data)
    assert list(finished) == EXPECTED[bench] and len(data["rows"]) >= 1
    kept = finished[first["run"]]
    timing = {"graph": "seconds", "quiz": "wall s", "language": "seconds"}[bench]
    assert kept[timing] == first["row"][timing]  # the first run was not recomputed
    if bench != "language":
        assert first["row"].items() <= kept.items()


def test_resume_under_other_options_refuses_to_mix_rows(tmp_path):
    store = RunStore(tmp_path, "graph", config={"steps": 10})
    store.add("1 node", {"avg_acc": 50.0})
    assert "1 node" in RunStore(tmp_path, "graph", resume=True, config={"steps": 10})
    with pytest.raises(ValueError, match="steps: 10 then, 20 now"):
        RunStore(tmp_path, "graph", resume=True, config={"steps": 20})
    fresh = RunStore(tmp_path, "graph", resume=False, config={"steps": 20})
    assert "1 node" not in fresh
    backup = tmp_path / "graph.partial.jsonl.bak"
    assert not backup.exists() and '"1 node"' in fresh.path.read_text()  # nothing written yet
    fresh.add("2 nodes", {"avg_acc": 60.0})
    # starting over without --resume kept the finished run aside, at its first write
    assert '"1 node"' in backup.read_text() and '"1 node"' not in fresh.path.read_text()
    store = RunStore(tmp_path, "graph", config={})
    store.finish([{"a": 1}], {"steps": 20})
    assert not store.path.exists() and (tmp_path / "graph.json").exists()


def test_a_narrower_resume_is_lenient_on_the_options_its_runs_do_not_read(tmp_path):
    """A killed run of two protocols resumed for one: the other's option (which the narrower
    command may not even type, bench refusal) need not match, and the partial file keeps the
    value its finished run was computed with."""
    killed = RunStore(tmp_path, "frontier", config={"steps": 10, "topk_ratio": 0.1})
    killed.add("topk", {"avg_acc": 50.0})
    killed.add("isolated", {"avg_acc": 40.0})
    with pytest.raises(ValueError, match="topk_ratio: 0.1 then, 0.01 now"):
        RunStore(tmp_path, "frontier", resume=True, config={"steps": 10, "topk_ratio": 0.01})
    narrow = RunStore(
        tmp_path, "frontier", True, {"steps": 10, "topk_ratio": 0.01}, lenient=["topk_ratio"]
    )
    assert "isolated" in narrow and narrow.config["topk_ratio"] == 0.1
    narrow.start()  # the partial file is rewritten with the value "topk" was computed with
    assert '"topk_ratio": 0.1' in narrow.path.read_text().splitlines()[0]
    with pytest.raises(ValueError, match="steps: 10 then, 20 now"):  # others still must match
        RunStore(tmp_path, "frontier", True, {"steps": 20, "topk_ratio": 0.01}, ["topk_ratio"])


def test_rows_resumed_from_other_code_are_named(tmp_path, capsys):
    """A run the partial file holds from another commit (or one written before runs carried
    their provenance) is kept, listed under "resumed" with what computed it, and named."""
    store = RunStore(tmp_path, "graph", config={})
    store.add("1 node", {"avg_acc": 50.0})
    lines = store.path.read_text().splitlines()
    entry = json.loads(lines[1])
    assert set(entry["meta"]) == {"commit", "dirty", "commenv", "torch", "time"}
    entry["meta"]["commit"] = "0123abc"
    old = json.dumps({"run": "2 nodes", "row": {"avg_acc": 60.0}})  # no meta: an old file
    store.path.write_text("\n".join([lines[0], json.dumps(entry), old]) + "\n")
    resumed = RunStore(tmp_path, "graph", resume=True, config={})
    resumed.finish([{"avg_acc": 50.0}, {"avg_acc": 60.0}], {"steps": 20})
    data = json.loads((tmp_path / "graph.json").read_text())
    assert data["resumed"]["1 node"]["commit"] == "0123abc"
    assert data["resumed"]["2 nodes"] == {"commit": "unrecorded"}
    assert "2 resumed run(s) were computed by other code" in capsys.readouterr().out


# The two benchmarks of this wave, same contract: (extra argv, run keys as the partial file
# names them, the result row's key for a run).
WAVE = {
    "unsupervised": (
        [*("--steps", "40", "--stages", "1", "--hidden", "16", "--feature-dim", "4")],
        [*("--probe-epochs", "2", "--runs", "vae-1", "vae-10-none", "bigan-1")],
        lambda r: f"{r['run']}@0",
    ),
    "frontier": (
        [*("--steps", "60", "--eval-every", "30", "--n-nodes", "3", "--hidden", "32")],
        [*("--protocols", "isolated", "sync_sgd", "labels")],
        lambda r: f"{r['partition']}/{r['protocol']}",
    ),
}


@pytest.mark.parametrize("bench", sorted(WAVE))
def test_killed_wave_benchmark_resumes_without_repeating_a_run(bench, tmp_path, device):
    budget, runs, key = WAVE[bench]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", f"commenv.bench.{bench}", "--quick", *budget, *runs]
    cmd += ["--out-dir", str(out), "--device", str(device)]
    partial = out / f"{bench}.partial.jsonl"
    before = _kill_after_first_run(cmd, tmp_path, partial, signal.SIGKILL)
    assert not (out / f"{bench}.json").exists()  # a killed run presents no result file
    env = {**os.environ, "COMMENV_NO_PROGRESS": "1"}
    done = subprocess.run(
        [*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not partial.exists()
    rows = json.loads((out / f"{bench}.json").read_text())["rows"]
    keys = [key(r) for r in rows]
    assert len(keys) == len(set(keys)) == 3  # every run once
    first = before[0]
    kept = {key(r): r for r in rows}[first["run"]]
    assert kept["seconds"] == first["row"]["seconds"]  # resumed, not recomputed


def test_a_figure_cut_short_leaves_no_png(tmp_path):
    """Figures are written as the result files are, through a temporary file: a save that
    dies half way leaves the old PNG (or none), never half of one."""
    plt = pytest.importorskip("matplotlib.pyplot")
    from commenv.bench.tools import save_figure

    fig = plt.figure()
    path = save_figure(fig, tmp_path / "f.png")
    good = path.read_bytes()
    assert good.startswith(b"\x89PNG") and [p.name for p in tmp_path.iterdir()] == ["f.png"]

    def dies(target, **kw):
        Path(target).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    fig = plt.figure()
    fig.savefig = dies
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_a_store_writes_nothing_until_a_run_finishes(tmp_path):
    """Building the store only reads: a benchmark that refuses its input after building it
    (or selects no run) leaves the out dir, a killed run's partial file included, as it was;
    ``finish`` refuses an empty table rather than replacing the results with it."""
    store = RunStore(tmp_path / "new", "graph", config={})
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="nothing ran"):
        store.finish([], {})
    assert not (tmp_path / "new").exists()
    killed = RunStore(tmp_path, "graph", config={"steps": 10})
    killed.add("1 node", {"avg_acc": 50.0})
    before = killed.path.read_text()
    RunStore(tmp_path, "graph", resume=False, config={"steps": 99})  # then a refusal
    assert killed.path.read_text() == before and not (tmp_path / "graph.partial.jsonl.bak").exists()
    assert "1 node" in RunStore(tmp_path, "graph", resume=True, config={"steps": 10})
