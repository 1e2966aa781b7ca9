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

ROOT = Path(__file__).resolve().parents[1]

PLAY = r"""
import hashlib, sys
import torch
import commenv


def eat(x):
    if isinstance(x, dict):
        for k in sorted(x):
            eat(x[k])
    elif isinstance(x, (tuple, list)):
        for v in x:
            eat(v)
    elif isinstance(x, torch.Tensor):
        h.update(x.detach().contiguous().numpy().tobytes())


def distributions(shape):  # exact in float32 on any CPU: small integers over their sum
    w = torch.randint(1, 9, shape, generator=rng).float()
    return w / w.sum(-1, keepdim=True)


def play(name, dataset, num_envs=None):
    global h, rng
    h = hashlib.sha256()
    rng = torch.Generator().manual_seed(7)
    family = getattr(commenv, name)
    if name == "partial_obs_v0":
        B = num_envs or 3
        game = family.batched(num_envs=B, device="cpu", dataset=dataset, noise=0.3)
        eat(game.reset(seed=5))
        n = game.action_space(game.possible_agents[0]).n
        for _ in range(30):
            eat(game.step({a: torch.randint(0, 2, (B, n), generator=rng)
                           for a in game.possible_agents}))
    elif name == "node_graph_v0":
        B = num_envs or 2
        # float payloads as sent (32 bits), rounded to half precision, and at 8-bit levels
        for content, float_bits in (("logits", 32), ("codes", 16), ("gaussian_codes", 8)):
            game = family.batched(num_envs=B, device="cpu", dataset=dataset, n_nodes=4,
                                  content=content, batch_size=8, feature_dim=4,
                                  float_bits=float_bits)
            eat(game.reset(seed=5))
            N, K, M, P = game.n_nodes, game.max_out, game.batch_size, game.payload_dim
            for _ in range(30):
                bits = torch.randint(0, 2, (B, N, K), generator=rng)
                eat(game.step_tensors(bits, torch.rand(B, N, M, P, generator=rng) * 8 - 4))
    else:
        W = num_envs or 2
        game = family.batched(W, "cpu", dataset=dataset, stack_size=2, batch_size=8,
                              exam_every=2, exam_size=20, max_lessons=6)
        eat(game.reset(seed=5))
        B, C = game.batch_size, game.num_classes
        M = game.stack_size * B
        for _ in range(60):
            if game.agent_selection == "teacher":
                k = torch.randint(0, B + 1, (W, 1), generator=rng)
                ranks = torch.rand(W, M, generator=rng).argsort(1).argsort(1)
                act = {"select": ranks < k, "targets": distributions((W, M, C))}
            else:
                act = distributions((W, B, C))
            eat(game.step({game.agent_selection: act}))
    return h.hexdigest()


for pair in sys.argv[1:]:
    print(pair, play(*pair.split(':')))
"""


NAMES = ("partial_obs_v0", "node_graph_v0", "quiz_v0")
DATASETS = ("digits", "synthetic")


@functools.cache
def digests(capability: str | None) -> dict[str, str]:
    """Every game's episode digest on every dataset, played in one fresh process at
    ``capability`` (``None``: the machine's own ISA)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    pairs = [f"{n}:{d}" for n in NAMES for d in DATASETS]
    done = subprocess.run(
        [sys.executable, "-c", PLAY, *pairs],
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
    scope = {"__name__": "play"}
    exec(PLAY.split("for pair in sys.argv")[0], scope)  # the same episode player
    threads = torch.get_num_threads()
    try:
        digests = []
        for n in (1, 2):
            torch.set_num_threads(n)
            digests.append(scope["play"](name, "digits", num_envs))
    finally:
        torch.set_num_threads(threads)
    assert digests[0] == digests[1]
