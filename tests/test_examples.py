"""The example scripts run as a user would run them."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_help(script):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()
    assert "--device" in out.stdout and "--threads" in out.stdout  # auto = CUDA; 1 thread on CPU


def test_custom_agents_plug_in_and_the_function_agent_beats_random(capsys, example, device):
    argv = ["--episodes", "3", "--num-envs", "16", "--device", str(device)]
    results = example("custom_agent").main(argv)
    assert results["pixel function"] > results["random"] + 5
    assert "| pixel function |" in capsys.readouterr().out


def test_ppo_smoke_trains_and_prints_beside_random(capsys, example, device):
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("supersuit")
    results = example("ppo_partial_obs").main(
        ["--timesteps", "1024", "--num-envs", "2", "--eval-episodes", "2", "--max-cycles", "8"]
        + ["--device", str(device)]
    )
    out = capsys.readouterr().out
    assert "| PPO (shared policy) |" in out and "| random |" in out
    assert set(results) == {"ppo", "random", "train_seconds"}
    assert results["ppo"] >= 0 and results["random"] >= 0
