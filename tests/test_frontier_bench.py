"""commenv bench frontier end to end on a tiny budget: table, Pareto front, verdicts, files,
--resume, a user's protocol, and bad names."""

import importlib
import json

import pytest

from commenv.bench.tools import RunStore


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("commenv.bench.frontier")


TINY = ["--quick", "--steps", "6", "--eval-every", "3", "--n-nodes", "3", "--hidden", "32"]


def test_bench_frontier_end_to_end(bench, tmp_path, monkeypatch, capsys, device):
    monkeypatch.setenv("COMMENV_NO_PROGRESS", "1")
    argv = [*TINY, "--partitions", "iid", "dirichlet", "--out-dir", str(tmp_path)]
    argv += ["--device", str(device)]
    protocols = ["isolated", "labels", "sync_sgd", "topk", "centralised"]
    rows = bench.main(
        [*argv, "--protocols", *protocols, "--agent", "commenv_agents.protocols:LocalSGD"]
    )
    names = [*protocols, "agent:LocalSGD"]
    assert [(r["partition"], r["protocol"]) for r in rows] == [
        (p, n) for p in ("iid", "dirichlet") for n in names
    ]
    for row in rows:
        assert row["bits_per_node_step"] == row["total_bits"] / (3 * 6)
        assert row["curve"][-1]["step"] == 6 and len(row["curve"]) == 2
        assert row["forward_passes"] >= 3 * 6
    iid = {r["protocol"]: r for r in rows[: len(names)]}
    assert iid["isolated"]["total_bits"] == 0 and iid["isolated"]["pareto"] == "yes"
    assert iid["centralised"]["pareto"] == "ref"
    assert iid["sync_sgd"]["coll_acc"] == iid["centralised"]["coll_acc"]  # same maths
    assert iid["sync_sgd"]["target"] == pytest.approx(iid["sync_sgd"]["coll_acc"] - 1, abs=0.1)
    assert iid["labels"]["thesis_coll"] == 86.8
    out = capsys.readouterr().out
    assert "| protocol | avg_acc | coll_acc |" in out and "Pareto front" in out
    assert "- sync SGD matches one model on the combined batch (within 0.5 points): holds" in out
    saved = json.loads((tmp_path / "frontier.json").read_text())
    assert set(saved["verdicts"]) == {"iid", "dirichlet"}
    assert len(saved["verdicts"]["iid"]) == 5
    # both fronts: isolated's 0 bits put it on each; the reference is on neither
    assert iid["isolated"]["pareto_avg"] == "yes" and iid["centralised"]["pareto_avg"] == "ref"
    assert "Pareto front over (total bits, average accuracy)" in out
    assert (tmp_path / "frontier.csv").exists() and (tmp_path / "frontier.png").exists()
    assert not (tmp_path / "frontier.partial.jsonl").exists()  # a clean finish
    (tmp_path / "frontier.png").unlink()
    assert bench.replot(tmp_path / "frontier.json") == tmp_path / "frontier.png"
    assert (tmp_path / "frontier.png").exists()


def test_bench_frontier_resumes_finished_runs(bench, tmp_path, monkeypatch, device):
    monkeypatch.setenv("COMMENV_NO_PROGRESS", "1")
    argv = [*TINY, "--protocols", "isolated", "sync_sgd", "--out-dir", str(tmp_path)]
    argv += ["--device", str(device)]
    first = bench.main(argv)
    args = bench.resolve(bench.parse_config(bench.Args, argv))
    store = RunStore(tmp_path, "frontier", config=bench.resume_config(args))  # a killed run
    store.add("iid/sync_sgd", {**first[1], "seconds": -1.0})
    rows = bench.main([*argv, "--resume"])
    assert rows[1]["seconds"] == -1.0  # kept, not run again
    assert rows[0]["seconds"] > 0


def test_pareto_front(bench):
    points = [(0, 50.0), (10, 80.0), (10, 70.0), (100, 80.0), (1000, 90.0)]
    assert bench.pareto_front(points) == [True, True, False, False, True]


def test_front_verdict_names_only_the_protocols_that_dominate(bench):
    """A verdict that fails names the rows that beat true labels by the front's own rule: not
    the reference (it is off the front), not a row that only ties it."""

    def row(protocol, bits, avg, coll):
        curve = [{"step": 1, "bits": bits, "average": avg, "collective": coll}]
        return {"protocol": protocol, "total_bits": bits, "avg_acc": avg, "coll_acc": coll,
                "curve": curve}  # fmt: skip

    rows = [
        row("labels", 100, 80.0, 90.0),
        row("twin", 100, 80.0, 90.0),  # ties: dominates nothing
        row("isolated", 0, 70.0, 91.0),  # a better vote for free, a worse single model
        row("centralised", 50, 95.0, 95.0),  # the reference
    ]
    bench.annotate(rows, target=None)
    claims = bench.verdicts(rows)
    coll = claims["output sharing (true labels) is on the measured Pareto front"]
    avg = next(v for k, v in claims.items() if "average accuracy" in k)
    assert coll.startswith("FAILS: isolated reach(es)"), coll
    assert avg.startswith("holds"), avg
    assert [r["pareto_avg"] for r in rows] == ["yes", "yes", "yes", "ref"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--protocols", "nope"], r"unknown protocol 'nope'; valid choices: \['isolated'"),
        (["--partitions", "odd"], r"unknown partition 'odd'; valid choices: \['iid'"),
        (["--n-nodes", "1"], "n_nodes must be >= 2"),
        (["--topk-ratio", "0"], r"ratio must be a ratio in \(0, 1\]"),
        (["--powersgd-rank", "0"], "rank must be an integer >= 1"),
        (["--local-period", "0"], "period must be an integer >= 1"),
        (["--optimizer", "lamb"], "unknown optimizer 'lamb'"),
    ],
)
def test_bench_frontier_bad_input(bench, tmp_path, monkeypatch, argv, match, device):
    monkeypatch.setenv("COMMENV_NO_PROGRESS", "1")
    protocols = [] if "--protocols" in argv else ["--protocols", "topk", "powersgd", "local_sgd"]
    with pytest.raises(ValueError, match=match):
        bench.main([*TINY, *protocols, *argv, "--out-dir", str(tmp_path), "--device", str(device)])


def test_bench_frontier_help(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    out = capsys.readouterr().out
    assert "--topk-ratio" in out and "fraction of the gradient entries sent" in out


def test_without_matplotlib_the_results_are_written_and_the_figure_is_named(
    bench, tmp_path, monkeypatch, capsys, device
):
    """A plain install (no [plot]): the files come first, then a note instead of a traceback."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    monkeypatch.setenv("COMMENV_NO_PROGRESS", "1")
    argv = [*TINY, "--protocols", "isolated", "--out-dir", str(tmp_path), "--device", str(device)]
    bench.main(argv)
    assert (tmp_path / "frontier.json").is_file() and (tmp_path / "frontier.csv").is_file()
    assert not (tmp_path / "frontier.png").exists()
    assert "no figure (matplotlib is not installed: pip install 'commenv[plot]'" in (
        capsys.readouterr().out
    )
