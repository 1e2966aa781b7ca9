"""Train TorchRL's multi-agent PPO on partial_obs_v0's batched face, compare with random play.

The recipe of TorchRL's multi-agent PPO tutorial, on :mod:`commenv.torchrl_env`: a
``MultiAgentMLP`` policy (parameters shared by the agents) whose logits feed one Bernoulli per
message/choice bit, a centralised ``MultiAgentMLP`` critic (MAPPO), ``SyncDataCollector``
(``Collector`` since TorchRL 0.14), GAE and ``ClipPPOLoss``. All ``num_envs`` worlds step as
one batch, on CPU or CUDA.

It prints the mean episode reward per agent of the trained policy (sampled actions) beside a
uniformly random policy's, on the same evaluation seed.

    python examples/torchrl_ppo.py                  # about a minute on one CPU thread
    python examples/torchrl_ppo.py --iterations 40 --device cuda
"""

import inspect
import time
from dataclasses import dataclass

import torch
from torch import nn

from commenv.bench.tools import (
    markdown_table,
    parse_config,
    pyplot,
    save_figure,
    seed_everything,
    select_device,
    write_results,
)

try:  # --help works without TorchRL; main() says what to install
    from tensordict.nn import TensorDictModule
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import MultiAgentMLP, ProbabilisticActor
    from torchrl.objectives import ClipPPOLoss, ValueEstimators

    from commenv.torchrl_env import BatchedTorchRLEnv, make_torchrl_env

    try:  # TorchRL < 0.14 names its single-process collector SyncDataCollector
        from torchrl.collectors import SyncDataCollector as Collector
    except ImportError:  # TorchRL >= 0.14: the same collector, renamed
        from torchrl.collectors import Collector
except ImportError as exc:
    TORCHRL_MISSING: ImportError | None = exc
else:
    TORCHRL_MISSING = None


def collector_kwargs() -> dict:
    """TorchRL 0.14 warns that it will add an InitTracker for the policy; this one needs none."""
    params = inspect.signature(Collector.__init__).parameters
    return (
        {"auto_register_policy_transforms": False}
        if "auto_register_policy_transforms" in params
        else {}
    )


@dataclass
class Args:
    iterations: int = 30
    """PPO iterations (one collected batch each)"""
    num_envs: int = 64
    """worlds stepped as one batch"""
    max_cycles: int = 25
    """steps per episode; one batch is num_envs * max_cycles frames"""
    n_agents: int = 2
    """agents in the game"""
    message_bits: int = 4
    """bits per message"""
    num_candidates: int = 2
    """worlds a listener picks from (K)"""
    noise: float = 0.1
    """pixel inversion probability of the agents' masks"""
    epochs: int = 4
    """PPO epochs over each batch"""
    minibatch_size: int = 400
    """frames per gradient step"""
    lr: float = 3e-4
    """Adam learning rate"""
    clip_epsilon: float = 0.2
    """PPO clipping"""
    entropy_coef: float = 1e-3
    """entropy bonus"""
    gamma: float = 0.9
    """discount"""
    lmbda: float = 0.9
    """GAE lambda"""
    hidden: int = 128
    """hidden units of the policy and critic MLPs (two layers)"""
    eval_envs: int = 256
    """worlds in the evaluation of each policy (one episode each)"""
    seed: int = 0
    """seed of torch, the game and the evaluation"""
    device: str = "auto"
    """auto = CUDA when present"""
    threads: int = 1
    """torch CPU threads"""
    out: str = "results/torchrl_ppo"
    """folder for torchrl_ppo.json/.csv (per-iteration rows) and .png (the learning curve)"""


class IndependentBernoulli(torch.distributions.Independent):
    """One Bernoulli per action bit, log-probabilities summed over the bits."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__(torch.distributions.Bernoulli(logits=logits), 1)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return (self.base_dist.logits > 0).to(self.base_dist.logits.dtype)


def make_env(args: Args, num_envs: int, device: torch.device) -> "BatchedTorchRLEnv":
    return make_torchrl_env(
        "partial_obs_v0",
        num_envs=num_envs,
        device=device,
        infos=False,
        n_agents=args.n_agents,
        message_bits=args.message_bits,
        num_candidates=args.num_candidates,
        noise=args.noise,
        max_cycles=args.max_cycles,
    )


def make_modules(env: "BatchedTorchRLEnv", args: Args, device: torch.device):
    """The policy (shared-parameter MLP -> Bernoulli bits) and the centralised critic."""
    obs_dim = env.observation_spec[env.group, "observation"].shape[-1]
    n_bits = env.action_spec[env.group, "action"].shape[-1]
    n = len(env.agents)
    mlp = {"n_agents": n, "device": device, "depth": 2, "num_cells": args.hidden}
    policy_net = MultiAgentMLP(
        obs_dim, n_bits, centralised=False, share_params=True, activation_class=nn.Tanh, **mlp
    )
    policy = ProbabilisticActor(
        TensorDictModule(
            policy_net, in_keys=[(env.group, "observation")], out_keys=[(env.group, "logits")]
        ),
        spec=env.full_action_spec_unbatched[env.group, "action"],
        in_keys={"logits": (env.group, "logits")},
        out_keys=[(env.group, "action")],
        distribution_class=IndependentBernoulli,
        return_log_prob=True,
        log_prob_key=(env.group, "action_log_prob"),
    )
    critic_net = MultiAgentMLP(
        obs_dim, 1, centralised=True, share_params=True, activation_class=nn.Tanh, **mlp
    )
    critic = TensorDictModule(
        critic_net, in_keys=[(env.group, "observation")], out_keys=[(env.group, "state_value")]
    )
    return policy, critic


def episode_reward(env: "BatchedTorchRLEnv", policy, seed: int, steps: int) -> tuple[float, float]:
    """Mean over worlds of one episode's summed reward per agent, and its standard error
    (worlds as samples); ``policy=None`` plays uniformly random bits."""
    env.set_seed(seed)
    torch.manual_seed(seed)  # the random policy draws from the action spec (torch's RNG)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        td = env.rollout(steps, policy=policy, break_when_any_done=False)
    per_world = td["next", env.group, "reward"].sum(1).mean((-2, -1))  # (num_envs,)
    return float(per_world.mean()), float(per_world.std() / len(per_world) ** 0.5)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_config(Args, argv, description=__doc__.splitlines()[0])
    if TORCHRL_MISSING is not None:
        raise SystemExit(
            f"this example needs TorchRL: pip install 'commenv[torchrl]' ({TORCHRL_MISSING})"
        )
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = select_device(args.device)

    env = make_env(args, args.num_envs, device)
    env.set_seed(args.seed)
    policy, critic = make_modules(env, args, device)
    frames = args.num_envs * args.max_cycles
    if not 1 <= args.minibatch_size <= frames:
        raise ValueError(
            f"minibatch_size must be in [1, num_envs * max_cycles = {frames}], "
            f"got {args.minibatch_size}"
        )
    collector = Collector(
        env,
        policy,
        **collector_kwargs(),
        device=device,
        frames_per_batch=frames,
        total_frames=frames * args.iterations,
    )
    buffer = ReplayBuffer(
        storage=LazyTensorStorage(frames, device=device),
        sampler=SamplerWithoutReplacement(),
        batch_size=args.minibatch_size,
    )
    loss_module = ClipPPOLoss(
        actor_network=policy,
        critic_network=critic,
        clip_epsilon=args.clip_epsilon,
        entropy_coeff=args.entropy_coef,
        normalize_advantage=False,
    )
    group = env.group
    loss_module.set_keys(
        reward=(group, "reward"),
        action=(group, "action"),
        sample_log_prob=(group, "action_log_prob"),
        value=(group, "state_value"),
        done=(group, "done"),
        terminated=(group, "terminated"),
    )
    loss_module.make_value_estimator(ValueEstimators.GAE, gamma=args.gamma, lmbda=args.lmbda)
    optim = torch.optim.Adam(loss_module.parameters(), args.lr)

    eval_env = make_env(args, args.eval_envs, device)
    random_reward, random_se = episode_reward(eval_env, None, args.seed + 1, args.max_cycles)
    print(f"random policy: mean episode reward per agent {random_reward:.2f} ± {random_se:.2f}")
    rows = []
    start = time.perf_counter()
    for it, data in enumerate(collector):
        # The root done flags, expanded to every agent (the tutorial's step for VMAS).
        for key in ("done", "terminated"):
            flag = data.get(("next", key))
            data.set(
                ("next", group, key),
                flag.unsqueeze(-1).expand(data.get_item_shape(("next", group, "reward"))),
            )
        with torch.no_grad():
            loss_module.value_estimator(
                data,
                params=loss_module.critic_network_params,
                target_params=loss_module.target_critic_network_params,
            )
        buffer.extend(data.reshape(-1))
        for _ in range(args.epochs):
            for _ in range(frames // args.minibatch_size):
                loss = loss_module(buffer.sample())
                total = loss["loss_objective"] + loss["loss_critic"] + loss["loss_entropy"]
                optim.zero_grad()
                total.backward()
                torch.nn.utils.clip_grad_norm_(loss_module.parameters(), 1.0)
                optim.step()
        collector.update_policy_weights_()
        step_reward = float(data["next", group, "reward"].mean())
        rows.append(
            {
                "iteration": it + 1,
                "frames": (it + 1) * frames,
                "mean_step_reward": step_reward,
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"iteration {it + 1}/{args.iterations}: mean reward per agent-step "
            f"{step_reward:.3f} ({time.perf_counter() - start:.0f} s)"
        )
    train_seconds = time.perf_counter() - start
    collector.shutdown()
    trained_reward, trained_se = episode_reward(eval_env, policy, args.seed + 1, args.max_cycles)
    beats = trained_reward > random_reward + 3 * (random_se**2 + trained_se**2) ** 0.5
    summary = {
        "random": random_reward,
        "random_se": random_se,
        "trained": trained_reward,
        "trained_se": trained_se,
        "beats_random": beats,
        "train_seconds": train_seconds,
    }
    table = [
        {"policy": "random bits", "episode reward per agent": random_reward, "± s.e.": random_se},
        {
            "policy": "MAPPO (TorchRL)",
            "episode reward per agent": trained_reward,
            "± s.e.": trained_se,
        },
    ]
    print(markdown_table(table, ["policy", "episode reward per agent", "± s.e."], digits=2))
    print(
        f"verdict: the trained policy {'beats' if beats else 'does not beat'} random play by "
        f"more than 3 standard errors ({trained_reward / random_reward:.2f}x) after "
        f"{args.iterations * frames} frames ({train_seconds:.0f} s)"
    )
    paths = write_results(args.out, "torchrl_ppo", rows, args, extra={"summary": summary})
    paths += (plot_curve(rows, random_reward / args.max_cycles, f"{args.out}/torchrl_ppo.png"),)
    print("wrote " + ", ".join(str(p) for p in paths if p is not None))
    return summary


def plot_curve(rows: list[dict], random_step_reward: float, path: str):
    """The mean reward per agent-step of each collected batch, beside random play's."""
    try:
        plt = pyplot()
    except ImportError:  # matplotlib is optional (commenv[plot])
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([r["frames"] for r in rows], [r["mean_step_reward"] for r in rows], label="MAPPO")
    ax.axhline(random_step_reward, color="grey", linestyle="--", label="random bits")
    ax.set_xlabel("frames (world-steps)")
    ax.set_ylabel("mean reward per agent-step")
    ax.legend()
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
