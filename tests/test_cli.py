"""The commenv command line."""

import dataclasses
import importlib
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from commenv import cli
from commenv.bench import BENCHMARKS


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
    out = capsys.readouterr().out
    assert "--resume" in out and out.startswith("usage: commenv bench quiz ")


def test_bench_script_errors_propagate():
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


CUDA_CHECK = Path(__file__).resolve().parents[1] / ".ci" / "cuda"


def test_cuda_check_runs_every_benchmark_on_the_gpu():
    """``.ci/cuda`` (the prepared GPU check) runs each benchmark's quick preset on cuda."""
    text = CUDA_CHECK.read_text()
    loop = re.search(r"^for bench in ([\w ]+); do$", text, re.M)
    assert loop, "no benchmark loop in .ci/cuda"
    assert sorted(loop.group(1).split()) == sorted(BENCHMARKS)
    assert '--quick --device cuda --out-dir "$out/$bench"' in text
    assert "COMMENV_TEST_DEVICE=cuda python -m pytest" in text
    for name in BENCHMARKS:  # every benchmark takes the two options the check passes
        fields = {
            f.name
            for f in dataclasses.fields(importlib.import_module(f"commenv.bench.{name}").Args)
        }
        assert {"quick", "device", "out_dir"} <= fields, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check runs for real where CUDA is")
def test_cuda_check_stops_cleanly_without_cuda(tmp_path):
    done = subprocess.run(
        ["bash", str(CUDA_CHECK)],
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert "no CUDA on this machine" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written
