"""The package as a user gets it: a wheel installed (not editable) into a fresh virtual
environment, run from an empty directory.

The venv sees the system site-packages (torch and the other dependencies are not downloaded:
the wheel goes in with ``--no-deps``); its own site-packages come first, so ``commenv`` and
``commenv_agents`` must resolve to the installed wheel, which the test checks. Slow (about a
minute on 2 shared cores): ``.ci/run`` runs it explicitly with ``-m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(
    ".git", "build", "dist", "results", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["COMMENV_NO_PROGRESS"] = "1"
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.mark.slow
def test_wheel_installs_and_runs_from_an_empty_directory(tmp_path):
    start = time.perf_counter()
    src = tmp_path / "src"  # a clean copy: no stale build/ folder can leak into the wheel
    shutil.copytree(ROOT, src, ignore=SKIP)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."], src)
    (wheel,) = wheels.glob("commenv-*.whl")

    venv = tmp_path / "venv"
    _run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        tmp_path,
    )
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "-q", "--no-deps", str(wheel)], tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run(
        [
            str(python),
            "-c",
            "import commenv, commenv_agents; print(commenv.__file__); "
            "print(commenv_agents.__file__)",
        ],
        empty,
    ).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel, not a checkout

    commenv = str(venv / "bin" / "commenv")
    envs = _run([commenv, "envs"], empty).stdout
    assert "partial_obs_v0" in envs and "node_graph_v0" in envs and "quiz_v0" in envs
    assert "speed" in _run([commenv, "bench", "--help"], empty).stdout

    bench_start = time.perf_counter()
    out = _run([commenv, "bench", "graph", "--quick"], empty).stdout
    bench_seconds = time.perf_counter() - bench_start
    result = empty / "results" / "graph-quick"
    assert "| 10 nodes, true labels |" in out and "wrote results/graph-quick/graph.json" in out
    data = json.loads((result / "graph.json").read_text())
    assert len(data["rows"]) == 6 and (result / "graph.png").exists()
    assert not (result / "graph.partial.jsonl").exists()
    print(
        f"\nwheel test: {time.perf_counter() - start:.0f} s in all; "
        f"`commenv bench graph --quick` from the wheel: {bench_seconds:.0f} s"
    )
