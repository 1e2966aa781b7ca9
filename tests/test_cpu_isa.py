"""Same seed, same episode on every CPU: the games' bits depend on neither the vector ISA nor
the thread count.

PyTorch picks its CPU kernels by the machine's vector extensions (AVX-512, AVX2 or none), and
kernels built on vectorised transcendental functions (``torch.randn``'s Box-Muller, ``exp``,
``softmax``) round their last bits differently on each. A game whose episode went through one
would give another episode for the same seed on another machine, and a digest recorded on one
machine would fail on the next (it did: the ``synthetic`` dataset was drawn with ``randn``).
Each test plays a batched episode in a fresh process at the machine's own ISA and again with
``ATEN_CPU_CAPABILITY=default`` (the scalar kernels) and compares every output's bytes; and
large batches are played on 1 and on 2 threads (a plain ``sum`` over millions of floats gives
other bits on each: PyTorch splits it among threads).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.isa_player import play

ROOT = Path(__file__).resolve().parents[1]

NAMES = ("partial_obs_v0", "node_graph_v0", "quiz_v0")
DATASETS = ("digits", "synthetic")


@functools.cache
def digests(capability: str | None) -> dict[str, str]:
    """Every game's episode digest on every dataset (:func:`tests.isa_player.play`), played in
    one fresh process at ``capability`` (``None``: the machine's own ISA)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    pairs = [f"{n}:{d}" for n in NAMES for d in DATASETS]
    done = subprocess.run(
        [sys.executable, "-m", "tests.isa_player", *pairs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(line.split() for line in done.stdout.splitlines())


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() == "DEFAULT",
    reason="this CPU runs the scalar kernels already: no other ISA to compare with",
)
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", NAMES)
def test_episodes_are_the_same_bits_with_the_scalar_kernels(name, dataset):
    """The CPU faces' episodes at this machine's ISA and with the scalar kernels (the batched
    face on the CPU: the PettingZoo faces replay it bit for bit, ``test_*_faces.py``)."""
    pair = f"{name}:{dataset}"
    assert digests(None)[pair] == digests("default")[pair]


@pytest.mark.parametrize(
    ("name", "num_envs"), [("partial_obs_v0", 4096), ("node_graph_v0", 64), ("quiz_v0", 64)]
)
def test_large_batches_are_the_same_bits_on_any_thread_count(name, num_envs):
    """Batches big enough for PyTorch to split an operation among threads (its grain is
    32,768 elements) give the same episode on 1 thread and on 2: the games add in a fixed
    order, not in the threads' partition."""
    threads = torch.get_num_threads()
    try:
        played = []
        for n in (1, 2):
            torch.set_num_threads(n)
            played.append(play(name, "digits", num_envs))
    finally:
        torch.set_num_threads(threads)
    assert played[0] == played[1]
