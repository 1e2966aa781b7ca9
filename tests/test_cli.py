"""The commenv command line."""

import pytest

from commenv import cli


def test_envs_lists_every_game(capsys):
    assert cli.main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "partial_obs_v0" in out


def test_bench_lists_and_rejects_unknown(capsys):
    assert "speed" in cli.available_benchmarks()
    assert cli.main(["bench"]) == 0
    assert "speed" in capsys.readouterr().out
    assert cli.main(["bench", "nope"]) == 2
    assert "valid choices" in capsys.readouterr().err


def test_bench_speed_runs_and_prints_table(capsys, tmp_path, device):
    code = cli.main(
        [
            "bench",
            "speed",
            "--seconds",
            "0.05",
            "--rounds",
            "1",
            "--out-dir",
            str(tmp_path),
            "--runs",
            "environments",
            "--device",
            str(device),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| partial_obs_v0 batched, num_envs=4096 |" in out
    assert "| partial_obs_v0 PettingZoo parallel face |" in out and "wrote " in out
    for suffix in ("json", "csv", "png"):
        assert (tmp_path / f"speed.{suffix}").exists()
    assert not (tmp_path / "speed.partial.jsonl").exists()


def test_bench_bad_run_name_is_a_usage_error(capsys):
    assert cli.main(["bench", "graph", "--quick", "--runs", "2 nodes"]) == 2
    err = capsys.readouterr().err
    assert "commenv bench graph: --runs: unknown run '2 nodes'" in err and "'1-node'" in err
    assert cli.main(["bench", "quiz", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


def test_bench_script_errors_propagate():
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])
