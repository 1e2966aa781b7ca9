"""The unsupervised benchmark (table 2.3) end to end on a tiny budget, its resume, its user
agent, its claims and its speed rows."""

import json

import pytest

from commenv.bench import BENCHMARKS
from commenv.bench import unsupervised as bench
from commenv.bench.tools import RunStore

TINY = [
    "--quick",
    "--steps", "12",
    "--stages", "2",
    "--hidden", "16",
    "--feature-dim", "4",
    "--probe-epochs", "2",
]  # fmt: skip


def test_registered():
    assert "unsupervised" in BENCHMARKS


def test_end_to_end_tiny(tmp_path, capsys, device):
    runs = ["vae-1", "vae-10-none", "vae-10-match", "bigan-10-contrastive"]
    rows = bench.main([*TINY, "--runs", *runs, "--out-dir", str(tmp_path), "--device", str(device)])
    assert [r["run"] for r in rows] == runs
    for row in rows:
        assert len(row["per_node"]) == row["nodes"]
        assert 0 <= row["avg_acc"] <= 100
        assert [c["step"] for c in row["curve"]] == [6, 12]
        assert (row["coll_acc"] is None) == (row["nodes"] == 1)
    assert rows[1]["bits_payload"] == 0 and rows[2]["bits_payload"] > 0
    out = capsys.readouterr().out
    assert "| configuration |" in out and "41.8" in out  # the thesis beside ours
    assert "10 independent nodes' collective >= 1 node + 3 points:" in out
    assert "VAE + KL collective ends above the single VAE:" in out
    for ext in ("json", "csv", "png"):
        assert (tmp_path / f"unsupervised.{ext}").exists()
    assert not (tmp_path / "unsupervised.partial.jsonl").exists()
    result = json.loads((tmp_path / "unsupervised.json").read_text())
    assert result["meta"]["args"]["seed"] == 0 and "commit" in result["meta"]
    assert set(result["thesis_claims"]) >= {
        "full communication does not beat no communication (collective)"
    }


def test_resume_skips_finished_runs(tmp_path, monkeypatch, device):
    argv = [*TINY, "--runs", "vae-1", "vae-10-none", "--out-dir", str(tmp_path), "--resume"]
    argv += ["--device", str(device)]
    config = bench.resume_config(bench.resolve(bench.parse_config(bench.Args, argv)))
    store = RunStore(tmp_path, "unsupervised", config=config)  # a killed run
    done = {
        "run": "vae-1",
        "configuration": "VAE, 1 node",
        "family": "vae",
        "nodes": 1,
        "avg_acc": 50.0,
        "coll_acc": None,
        "curve": [{"step": 12, "average": 50.0, "collective": 50.0}],
    }
    store.add("vae-1@0", done)
    calls = []
    real = bench.run_one
    monkeypatch.setattr(
        bench, "run_one", lambda args, name, *a: calls.append(name) or real(args, name, *a)
    )
    with pytest.raises(ValueError, match="steps: 12 then, 13 now"):  # other options: refused
        bench.main([*argv, "--steps", "13"])
    assert calls == []
    rows = bench.main(argv)
    assert calls == ["vae-10-none"]
    assert rows[0] == done


def test_user_agent_joins_the_table(tmp_path, device):
    rows = bench.main(
        [
            *TINY,
            "--runs",
            "vae-1",
            "--out-dir",
            str(tmp_path),
            "--agent",
            "commenv_agents.unsupervised:VAEPopulation",
            "--agent-family",
            "vae",
            "--device",
            str(device),
        ]
    )
    assert rows[-1]["run"] == "vae-10-VAEPopulation" and rows[-1]["nodes"] == 10


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown run.*valid choices"):
        bench.main([*TINY, "--runs", "vae-2"])
    with pytest.raises(SystemExit):  # tyro lists the valid choices
        bench.main([*TINY, "--agent-family", "gan"])


def test_help_comes_from_the_config_docstrings(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    out = capsys.readouterr().out
    assert "--probe-patience" in out and "early stopping" in out


def row(run, nodes, acc):
    family = run.split("-")[0]
    return {"run": run, "family": family, "nodes": nodes, "avg_acc": acc, "coll_acc": acc}


def test_claims_are_judged_on_the_rows():
    rows = [
        row("vae-1", 1, 40.0),
        row("vae-10-none", 10, 44.0),
        row("vae-10-match", 10, 41.0),
        row("vae-10-contrastive", 10, 45.0),
    ]
    claims = bench.judge(rows, "test")
    assert claims["10 independent nodes' collective >= 1 node + 3 points"][0]
    assert claims["full communication does not beat no communication (collective)"][0]
    assert claims["VAE + KL collective ends above the single VAE"][0]
    assert claims["ours: contrastive collective >= no communication + 1 point (one family)"][0]
    rows[1]["coll_acc"], rows[3]["coll_acc"] = 42.9, 43.5
    claims = bench.judge(rows, "test")
    assert not claims["10 independent nodes' collective >= 1 node + 3 points"][0]
    assert not claims["ours: contrastive collective >= no communication + 1 point (one family)"][0]
    assert "FAILS" not in claims["VAE + KL collective ends above the single VAE"][1]


def test_speed_rows():
    rows = bench.speed_rows(quick=True, hiddens=(16,))  # device-free: it takes no device (yet)
    name = "unsupervised {} population N=10 hidden=16 {}"
    parts = ("batched", "sequential", "matrix products alone")
    assert [r["name"] for r in rows] == [name.format(f, p) for f in ("VAE", "BiGAN") for p in parts]
    timed = rows[0:2] + rows[3:5]
    assert all(r["steps_per_s"] > 0 for r in timed)
    assert "x the sequential loop (training step;" in rows[0]["note"]
    assert "with the env's step" in rows[3]["note"]
    # the bound: the loop's time over the batched step's matrix products, which cannot take
    # longer than the whole step (so the bound is above the measured ratio)
    for batched, sequential, bound in (rows[0:3], rows[3:6]):
        ratio = batched["steps_per_s"] / sequential["steps_per_s"]
        assert bound["ratio"] > ratio and bound["ideal"] > 0
        assert "MFLOP" in bound["note"] and "GFLOP/s" in bound["note"]


def test_further_shares_are_judged_against_silence():
    rows = [row("bigan-10-none", 10, 79.0), row("bigan-10-decorrelate", 10, 80.0)]
    claims = bench.judge(rows, "test")
    ok, line = claims["ours (decorrelate): collective >= no communication + 1 point (one family)"]
    assert ok and "BIGAN 80.0 vs 79.0" in line
    rows[1]["coll_acc"] = 79.9
    assert not bench.judge(rows, "test")[
        "ours (decorrelate): collective >= no communication + 1 point (one family)"
    ][0]
    assert set(bench.DEFAULT_RUNS) == {
        f"{f}-{r}" for f in ("vae", "bigan") for r in ("1", "10-none", "10-match", "10-contrastive")
    }
