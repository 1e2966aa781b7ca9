"""The TorchRL route: the batched face as a TorchRL env and its PPO example."""

import subprocess
import sys

import pytest
import torch

import commenv

pytest.importorskip("torchrl", reason="pip install -e '.[torchrl]'")

from tensordict import TensorDict  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

from commenv.torchrl_env import INFO_KEYS, BatchedTorchRLEnv, make_torchrl_env  # noqa: E402

SMALL = {"message_bits": 4, "num_candidates": 2, "max_cycles": 5}


@pytest.fixture
def env(device):
    return make_torchrl_env("partial_obs_v0", num_envs=8, device=device, **SMALL)


def test_check_env_specs_passes(env):
    check_env_specs(env, seed=0)


def test_uint8_observations_keep_their_dtype_through_the_adapter(device):
    env = make_torchrl_env("partial_obs_v0", num_envs=4, device=device, obs_dtype="uint8", **SMALL)
    assert env.observation_spec["agents", "observation"].dtype == torch.uint8
    check_env_specs(env, seed=0)
    obs = env.rollout(3)["agents", "observation"]
    assert obs.dtype == torch.uint8 and int(obs.max()) <= 255 and int(obs.max()) > 1


def test_a_bad_seed_is_refused_at_set_seed(env):
    with pytest.raises(ValueError, match="seed must be an integer"):
        env.set_seed(-1)


def test_make_torchrl_env_takes_the_action_dtype(device):
    env = make_torchrl_env("partial_obs_v0", num_envs=4, device=device, action_dtype=torch.int8)
    assert env.full_action_spec["agents", "action"].dtype == torch.int8
    check_env_specs(env, seed=0)


def test_node_graph_with_label_payloads_passes_check_env_specs(device):
    env = make_torchrl_env("node_graph_v0", num_envs=2, device=device, n_nodes=3)
    check_env_specs(env, seed=0)
    assert env.reward_spec["agents", "reward"].shape == (2, 3, 1)


def test_specs_follow_the_marl_convention(env):
    game = env.game
    obs_dim = game.observation_space("agent_0").shape[0]
    n_bits = game.action_space("agent_0").n
    assert env.batch_size == torch.Size([8])
    assert env.observation_spec["agents", "observation"].shape == (8, 2, obs_dim)
    assert env.action_spec["agents", "action"].shape == (8, 2, n_bits)
    assert type(env.action_spec["agents", "action"]).__name__ == "Binary"
    assert env.reward_spec["agents", "reward"].shape == (8, 2, 1)
    assert set(env.done_keys) == {"done", "terminated", "truncated"}
    assert set(env.observation_spec["agents", "info"].keys()) == set(INFO_KEYS)


def _twins(num_envs: int, device, seed: int):
    """The adapter and the bare batched game, reset with one seed, and a generator of
    actions: ``(env, td, game, obs, gen)``."""
    env = make_torchrl_env("partial_obs_v0", num_envs=num_envs, device=device, **SMALL)
    game = commenv.partial_obs_v0.batched(num_envs=num_envs, device=device, **SMALL)
    env.set_seed(seed)
    obs, _ = game.reset(seed=seed)
    return env, env.reset(), game, obs, torch.Generator(device=device).manual_seed(0)


def test_steps_are_the_batched_face_steps(device):
    """Same seed, same actions: the adapter returns exactly what the game returns."""
    env, td, game, obs, gen = _twins(4, device, seed=7)
    for _ in range(SMALL["max_cycles"]):
        assert torch.equal(td["agents", "observation"][:, 1], obs["agent_1"])
        action = torch.randint(0, 2, (4, 2, 6), generator=gen, device=device).float()
        td["agents", "action"] = action
        out = env.step(td)["next"]
        obs, rew, _, trunc, infos = game.step({"agent_0": action[:, 0], "agent_1": action[:, 1]})
        assert torch.equal(out["agents", "reward"][:, 0, 0], rew["agent_0"])
        assert torch.equal(out["truncated"][:, 0], trunc["agent_0"])
        assert torch.equal(out["agents", "info", "label"][:, 1], infos["agent_1"]["label"])
        td = out
    assert bool(out["done"].all())


def test_large_batches_get_the_games_tensors_uncopied_and_never_overwritten(device):
    """Above the pool's size the tensordicts hold the game's own observation tensors: a held
    one is never written again, and dropped ones come back (no fresh memory every step)."""
    from commenv.core import POOL_SIZE

    env, td, game, obs, gen = _twins(1024, device, seed=3)
    held, expected = [], []
    for _ in range(2 * SMALL["max_cycles"]):
        action = torch.randint(0, 2, (1024, 2, 6), generator=gen, device=device).float()
        td["agents", "action"] = action
        td = env.step(td)["next"]
        obs, *_ = game.step({"agent_0": action[:, 0], "agent_1": action[:, 1]})
        held.append(td)
        expected.append(torch.stack([obs["agent_0"], obs["agent_1"]], 1).clone())
        if bool(td["done"].all()):  # both restart every world: the same episodes
            td = env.reset()
            obs, _ = game.reset()
            held.append(td)
            expected.append(torch.stack([obs["agent_0"], obs["agent_1"]], 1).clone())
    for kept, want in zip(held, expected, strict=True):
        assert torch.equal(kept["agents", "observation"], want)
    del held, kept  # nothing holds the old observations any more
    buffers = set()
    for _ in range(12):
        td["agents", "action"] = torch.randint(0, 2, (1024, 2, 6), device=device).float()
        _, td = env.step_and_maybe_reset(td)
        buffers.add(td["agents", "observation"].data_ptr())
    if torch.device(device).type == "cpu":  # the pool recycles CPU buffers only
        assert len(buffers) <= POOL_SIZE


def test_reuse_obs_games_are_copied(device):
    env = make_torchrl_env("partial_obs_v0", num_envs=1024, device=device, reuse_obs=True, **SMALL)
    first = env.reset()["agents", "observation"]
    td = env.rand_step(env.reset())
    assert first.data_ptr() != env.game._obs_buf.data_ptr()
    assert td["next", "agents", "observation"].data_ptr() != env.game._obs_buf.data_ptr()


def test_same_seed_same_rollout(env):
    def rollout(seed):
        env.set_seed(seed)
        torch.manual_seed(0)  # the random actions come from torch's RNG
        return env.rollout(12, break_when_any_done=False)

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert (a == b).all()
    assert not torch.equal(a["agents", "observation"], c["agents", "observation"])


def test_rollout_resets_every_world_at_max_cycles(env):
    td = env.rollout(12, break_when_any_done=False)
    done = td["next", "done"][..., 0]
    assert done[:, [4, 9]].all() and done.sum() == 2 * 8  # all worlds end together
    # after the reset the heard slots and candidates are empty again (step 0 of an episode)
    layout = env.game.obs_layout
    first = td["agents", "observation"][:, 5]
    assert not first[..., layout["heard"]].any() and not first[..., layout["candidates"]].any()


def test_reset_mask_all_none_or_partial(env):
    start = env.reset()
    keep = start.clone().set("_reset", torch.zeros(8, 1, dtype=torch.bool))
    kept = env.reset(keep)
    assert torch.equal(kept["agents", "observation"], start["agents", "observation"])
    fresh = env.reset(start.clone().set("_reset", torch.ones(8, 1, dtype=torch.bool)))
    assert not torch.equal(fresh["agents", "observation"], start["agents", "observation"])
    td = env.rand_step(fresh)["next"]
    partial = torch.zeros(8, 1, dtype=torch.bool, device=env.device)
    partial[3] = True
    out = env._reset(TensorDict({"_reset": partial}, batch_size=[8], device=env.device))
    assert env.game.steps.tolist() == [1, 1, 1, 0, 1, 1, 1, 1]  # only world 3 restarted
    keep = [0, 1, 2, 4, 5, 6, 7]  # the adapter's own output: every world, the kept ones as is
    obs = out["agents", "observation"]
    assert torch.equal(obs[keep], td["agents", "observation"][keep])
    assert not obs[3][:, env.game.obs_layout["heard"]].any()
    # a seed set now waits for the next full reset: a partial mask restarts its worlds only
    env.set_seed(11)
    env._reset(TensorDict({"_reset": partial}, batch_size=[8], device=env.device))
    assert env.game.steps.tolist() == [1, 1, 1, 0, 1, 1, 1, 1]
    seeded = env.reset()["agents", "observation"]
    twin = make_torchrl_env("partial_obs_v0", num_envs=8, device=env.device, **SMALL)
    twin.set_seed(11)
    assert torch.equal(seeded, twin.reset()["agents", "observation"])


def test_collector_restarts_only_the_worlds_that_finished(device):
    """A tiny TorchRL collection over worlds whose clocks are staggered: each world restarts
    on its own when it is truncated (partial '_reset' masks), none is reset early."""
    collectors = pytest.importorskip("torchrl.collectors")
    collector_cls = getattr(collectors, "Collector", None) or collectors.SyncDataCollector
    env = make_torchrl_env("partial_obs_v0", num_envs=4, device=device, **SMALL)
    collector = collector_cls(
        env, policy=None, frames_per_batch=4 * 11, total_frames=4 * 11, device=device
    )
    zeros = {a: torch.zeros(4, 6, device=device) for a in env.agents}
    for _ in range(2):
        env.game.step(zeros)
    env.game.reset(env_index=[1, 3])  # worlds 1 and 3 now run two steps behind
    assert env.game.steps.tolist() == [2, 0, 2, 0]
    batch = next(iter(collector))
    collector.shutdown()
    done = batch["next", "done"][..., 0]  # (4 worlds, 11 steps)
    ends = [torch.nonzero(done[w]).flatten().tolist() for w in range(4)]
    assert ends == [[2, 7], [4, 9], [2, 7], [4, 9]]  # every max_cycles = 5 on its own clock
    traj = batch["collector", "traj_ids"]
    assert [len(set(traj[w].tolist())) for w in range(4)] == [3, 3, 3, 3]
    assert env.game.steps.tolist() == [3, 1, 3, 1]


def test_without_torchrl_the_module_imports_and_names_the_extra():
    code = (
        "import sys; sys.modules['torchrl'] = None\n"
        "import commenv.torchrl_env as m\n"
        "try:\n    m.make_torchrl_env(num_envs=2)\n"
        "except ImportError as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'commenv[torchrl]'" in out.stdout


def test_bad_games_are_named(device):
    with pytest.raises(TypeError, match="BatchedEnv"):
        BatchedTorchRLEnv(commenv.partial_obs_v0())
    with pytest.raises(TypeError, match="same spaces for each; agent 'teacher'"):
        make_torchrl_env("quiz_v0", num_envs=2, device=device)
    with pytest.raises(ValueError, match="infos=True copies partial_obs_v0's"):
        make_torchrl_env("node_graph_v0", num_envs=2, infos=True, device=device)
    with pytest.raises(ValueError, match="unknown name"):
        make_torchrl_env("partial_obs_v1", device=device)


def test_ppo_example_beats_random(example, device, tmp_path):
    """A tiny run (8 iterations of 32 worlds, ~10 s on one thread) must beat random play.

    Random play earns about 24.5 per agent and episode here; this run measured 28.2-29.0 on
    seeds 0-3, with a standard error of about 0.35 for each mean (128 evaluation worlds). The
    assert asks for more than 3 standard errors of the difference above random: a loop that
    does not learn fails it (a chance of about 0.1 %), and this run clears it by about 8.
    """
    results = example("torchrl_ppo").main(
        [
            "--iterations", "8",
            "--num-envs", "32",
            "--message-bits", "1",
            "--lr", "3e-3",
            "--epochs", "8",
            "--minibatch-size", "200",
            "--eval-envs", "128",
            "--device", str(device),
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    margin = 3 * (results["random_se"] ** 2 + results["trained_se"] ** 2) ** 0.5
    assert results["trained"] > results["random"] + margin, results
    assert results["beats_random"]
    assert (tmp_path / "torchrl_ppo.json").is_file() and (tmp_path / "torchrl_ppo.csv").is_file()
