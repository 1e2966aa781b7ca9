"""The commenv command line."""

import dataclasses
import importlib
import os
import re
import subprocess
import sys
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


WRONG_AGENT = "class Wrong:\n    pass\n"


@pytest.mark.parametrize(
    "bench, argv, expected",
    [
        ("graph", ["--steps", "-5"], "--steps must be an integer >= 1, got int -5"),
        ("graph", ["--seed", "-1"], "--seed must be an integer in [0,"),
        ("graph", ["--eval-every", "0"], "--eval-every must be an integer >= 1"),
        ("graph", ["--threads", "0"], "--threads must be an integer >= 1"),
        ("speed", ["--seconds", "-1"], "--seconds must be a finite number > 0"),
        ("speed", ["--sizes", "4096", "0"], "--sizes must be an integer >= 1, got int 0"),
        ("quiz", ["--workers", "0"], "--workers must be an integer >= 1"),
        ("graph", ["--agent", "nosuchmod:X"], "cannot import 'nosuchmod:X': No module named"),
        ("graph", ["--agent", "wrong:Wrong"], "must be a class with step(), predict_proba()"),
        ("unsupervised", ["--agent", "wrong:Wrong"], "must be a class with step(), encode()"),
        ("language", ["--agent", "wrong:Wrong"], "must be a class with forward(), to()"),
        ("language", ["--dataset", "bogus"], "unknown dataset 'bogus'; valid choices"),
        (
            "language",
            ["--data-root", "/nonexistent"],
            "existing directory (a missing one is not replaced by another location), "
            "got str '/nonexistent'",
        ),
        ("language", ["--noise", "2"], "--noise must be a finite number in [0.0, 1.0]"),
        ("language", ["--probe-lr", "-1"], "--probe-lr must be a finite number > 0.0"),
        ("language", ["--temp-decay", "2"], "--temp-start/--temp-decay/--temp-every/--temp-f"),
        (
            "language",
            ["--kinds", "gumbel", "--levels", "", "--remedies", "", "--ours", ""],
            "nothing to run: --kinds, --levels",
        ),
        ("frontier", ["--agent", "wrong:Wrong"], "missing step, predict_proba"),
        (
            "quiz",
            ["--teacher", "wrong:Wrong"],
            "--teacher 'wrong:Wrong' must be a class with act()",
        ),
    ],
)
def test_bad_options_are_refused_before_any_work(
    bench, argv, expected, capsys, tmp_path, monkeypatch, device
):
    """One line naming the option as typed, exit 2, and not even a partial file on disk."""
    (tmp_path / "wrong.py").write_text(WRONG_AGENT)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = cli.main(
        ["bench", bench, "--quick", *argv, "--out-dir", str(out), "--device", str(device)]
    )
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_a_device_this_machine_lacks_is_a_usage_error(capsys, tmp_path):
    argv = ["bench", "graph", "--quick", "--device", "gpu", "--out-dir", str(tmp_path)]
    assert cli.main(argv) == 2  # device-free: the bad device is refused before any tensor
    assert "--device must be a device this machine has" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_result_metadata_names_versions_and_command(monkeypatch):
    import numpy as np

    import commenv
    from commenv.bench.tools import run_metadata

    monkeypatch.setattr("sys.argv", ["commenv", "bench", "graph", "--quick"])
    meta = run_metadata({"seed": 0})
    assert meta["commenv"] == commenv.__version__ and meta["numpy"] == np.__version__
    assert meta["argv"] == ["bench", "graph", "--quick"]
    assert meta["dirty"] in (True, False, None) and meta["args"] == {"seed": 0}
    # what a bit-for-bit rerun of the agents' training needs to match (docs/tutorials/reproduce.md)
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_envs_names_each_game_once(capsys):
    assert cli.main(["envs"]) == 0
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith(" "):
            name = line.split(":")[0]
            assert line.count(name) == 1, line


def test_an_installed_copy_inside_another_repo_records_no_commit(tmp_path):
    """The commit is commenv's own checkout's: a copy in some project's .venv says 'unknown'."""
    import shutil

    repo = tmp_path / "project"
    shutil.copytree(Path(cli.__file__).parent, repo / "site" / "commenv")
    (repo / "README").write_text("someone else's project\n")
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    for args in (["init", "-q"], ["add", "README"], ["commit", "-qm", "theirs"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    code = "from commenv.bench.tools import git_commit, git_dirty; print(git_commit(), git_dirty())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo / "site", capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["unknown", "None"]


def test_a_users_file_is_executed_once_and_a_missing_one_named(tmp_path, monkeypatch):
    from commenv.bench.tools import load_object

    (tmp_path / "counted.py").write_text(
        "import builtins\nbuiltins.COMMENV_LOADS = getattr(builtins, 'COMMENV_LOADS', 0) + 1\n"
        "class Agent:\n    pass\n"
    )
    import builtins

    monkeypatch.setattr(builtins, "COMMENV_LOADS", 0, raising=False)
    assert load_object(f"{tmp_path / 'counted.py'}:Agent").__name__ == "Agent"
    assert builtins.COMMENV_LOADS == 1
    with pytest.raises(ValueError, match="no file"):
        load_object(f"{tmp_path / 'absent.py'}:Agent")


def test_python_dash_m_refuses_like_the_console_command(tmp_path):
    """``python -m commenv.bench.<name>`` (the other documented entry) exits 2 with the
    message, not a traceback, and its usage line names the module, not the file."""
    done = subprocess.run(
        [sys.executable, "-m", "commenv.bench.graph", "--seed", "-1", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert "commenv bench graph: --seed must be" in done.stderr
    assert "Traceback" not in done.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "commenv.bench.graph", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert usage.startswith("usage: commenv bench graph ")


def test_an_out_dir_that_cannot_be_a_folder_is_refused(capsys, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("keep me")
    for out, expected in (
        (afile, "which is a file"),
        (afile / "below", "cannot be made"),
    ):
        argv = ["bench", "graph", "--quick", "--out-dir", str(out)]
        assert cli.main(argv) == 2  # device-free: refused while the options are parsed
        err = capsys.readouterr().err
        assert "--out-dir" in err and expected in err
    assert afile.read_text() == "keep me"


def test_a_user_class_whose_constructor_cannot_be_called_is_refused_first(
    capsys, tmp_path, monkeypatch
):
    """An ``--agent`` whose constructor does not take the benchmark's keywords is refused
    before the built-in rows train (it used to fail after them, with a traceback)."""
    (tmp_path / "narrow.py").write_text(
        "import torch\n\n"
        "class Narrow(torch.nn.Module):\n"
        "    def __init__(self, n_agents):\n"
        "        super().__init__()\n\n"
        "    def forward(self, views):\n"
        "        return views\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["bench", "language", "--quick", "--agent", "narrow:Narrow", "--out-dir", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--agent 'narrow:Narrow' is built as Narrow(n_agents=, in_features=" in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["envs", "extra"], ["--bogus", "envs"], ["bench", "--bogus"]])
def test_the_command_refuses_arguments_it_does_not_take(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_load_class_binds_the_positional_arguments_by_position(tmp_path, monkeypatch):
    """A population built as ``Class(n_nodes, image_shape, num_classes, **kw)`` may name its
    first three parameters as it likes; a missing keyword or an extra required one is refused."""
    from commenv.bench.tools import load_class

    (tmp_path / "pops.py").write_text(
        "class Renamed:\n"
        "    def __init__(self, n, shape, classes, *, share, seed=0): pass\n"
        "    def step(self): pass\n\n"
        "class NeedsMore:\n"
        "    def __init__(self, n, shape, classes, share, extra): pass\n"
        "    def step(self): pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ("n_nodes", "image_shape", "num_classes", "share", "seed")
    assert load_class("pops:Renamed", "--agent", ("step",), "doc", names, positional=3)
    with pytest.raises(ValueError, match="refuses that"):
        load_class("pops:Renamed", "--agent", ("step",), "doc", (*names, "device"), 3)
    with pytest.raises(ValueError, match="missing a required argument: 'extra'"):
        load_class("pops:NeedsMore", "--agent", ("step",), "doc", names, positional=3)
