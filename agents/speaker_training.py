"""Training loops for the chapter-4 speakers on the batched face of ``partial_obs_v0``.

:func:`train_speakers` trains a teacher (``agent_0``) and a student (``agent_1``) together at one
communication level and tracks a linear probe on every agent's features (the thesis' table 4.1
metric: the student's probe test accuracy at its best validation checkpoint). With
``offline_probe_stages`` it also fits, at that many stages of training, a linear probe on the
frozen features of the whole train split (standardized, early-stopped on validation: see
:data:`OFFLINE_PROBE`), the instrument that does not depend on how fast an online probe can
follow features that move under it.

Levels are configurations of the game (:data:`LEVEL_GAMES`); the loops never branch on the
level beyond what the game defines:

- Gumbel-Softmax: loss = MI discriminator loss (max-max) + ``weight`` x likelihood term, where
  the likelihood term exists on levels whose game has one (all but ``"none"``) and the
  messages reach the listener through ``game.channel`` with ``game.grad_mask``: detached on
  ``receive``, attached (the student's error flows into the teacher) on ``feedback``/``both``.
- REINFORCE: reward = the discriminator's MI reward + the game's own rewards from
  ``game.step`` (the likelihood reward by level, see ``commenv.partial_obs``), with a running
  mean baseline and an entropy bonus. With ``likelihood="contrastive"`` the contrastive term
  replaces the game's bit-agreement reward: it trains the listener's own message distribution
  directly and rewards the speaker on the game's feedback edges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

import commenv
from commenv.bench.tools import seed_scope
from commenv.core import (
    check_choice,
    check_device,
    check_float,
    check_int,
    check_probability,
    check_seed,
    describe,
)
from commenv.partial_obs import PartialObsGame
from commenv.probe import BestValidation, LinearProbe, fit_linear_probe, stage_steps
from commenv_agents.speakers import (
    LIKELIHOODS,
    MI_ESTIMATORS,
    GumbelSoftmaxWrapper,
    MIDiscriminator,
    ReinforceWrapper,
    Speaker,
    TemperatureSchedule,
    contrastive_likelihood_loss,
    contrastive_likelihood_terms,
    exchange,
    likelihood_loss,
    listener_mean,
    mi_loss,
    mi_reward,
)

LEVEL_GAMES: dict[str, dict[str, str]] = {
    "none": {"graph": "one_way", "level": "none"},
    "receive": {"graph": "one_way", "level": "receive"},
    "feedback": {"graph": "one_way", "level": "feedback"},
    "both": {"graph": "two_way", "level": "both"},
}
"""Game config of each communication level of table 4.1."""

THESIS_LIKELIHOOD_WEIGHT: dict[str, float] = {
    "none": 0.0,
    "receive": 0.01,
    "feedback": 0.005,
    "both": 0.005,
}
"""Figure 4.3 caption: 0.01 for one-way (receive), 0.005 for the two with gradient feedback."""

OFFLINE_PROBE: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 256,
    "lr": 1e-2,
    "patience": 5,
    "standardize": True,
}
"""The offline probe's settings (:func:`commenv.probe.fit_linear_probe`): z-scored features,
Adam at 1e-2, at most 30 epochs over the train split, each probe stopping after 5 epochs
without a better validation accuracy."""

KINDS: tuple[str, ...] = ("gumbel", "reinforce")
STUDENT = 1  # agent_1, the listener of the one-way graph


@dataclass
class SpeakerRunConfig:
    """One training run. Defaults are the thesis' where it gave them, ours otherwise."""

    kind: str = "gumbel"
    level: str = "both"
    dataset: str = "digits"
    data_root: str | None = None
    message_bits: int = 32
    noise: float = 0.3
    hidden: tuple[int, ...] = (256, 128)
    disc_hidden: tuple[int, ...] = (256,)
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    probe_lr: float = 1e-3
    eval_every: int = 100
    offline_probe_stages: int = 0
    """Stages (evenly spaced, the last at the final step) at which an offline probe is fit on
    the frozen features (:data:`OFFLINE_PROBE`); 0: none."""
    likelihood_weight: float | None = None
    """None: ``likelihood_scale`` x the thesis' weight of the level."""
    likelihood_scale: float = 0.1
    """Our likelihood term sums the cross-entropy over the bits; at the thesis' weights (scale 1)
    it drives both speakers to constant messages on ``feedback`` (MI loss stuck at log 4), so
    we keep the thesis' ratio between levels at a tenth of the size."""
    mi_estimator: str = "gan"
    """``"gan"`` (the thesis' discriminator loss) or ``"infonce"`` (ours; see ``mi_loss``)."""
    mi_negatives: int = 8
    """Marginal pairs per joint pair for ``"infonce"``."""
    likelihood: str = "bce"
    """``"bce"`` (the thesis' term, :func:`~commenv_agents.speakers.likelihood_loss`) or
    ``"contrastive"`` (ours, :func:`~commenv_agents.speakers.contrastive_likelihood_loss`)."""
    temperature: TemperatureSchedule = field(default_factory=TemperatureSchedule)
    straight_through: bool = False
    entropy_coef: float = 0.01
    rl_likelihood_weight: float = 0.5
    """REINFORCE: the game's ``likelihood_weight`` (reward per unit of bit agreement)."""
    baseline_momentum: float = 0.99
    """REINFORCE: momentum of the running-mean reward baseline, which starts at the first
    batch's mean reward (not at 0, which the MI reward sits about log 4 below)."""
    seed: int = 0
    mask_seed: int = 0
    device: str = "cpu"
    speaker_cls: Callable[..., torch.nn.Module] = Speaker

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_choice("level", self.level, tuple(LEVEL_GAMES))
        check_choice("mi_estimator", self.mi_estimator, MI_ESTIMATORS)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)
        for name in ("steps", "batch_size", "eval_every", "message_bits", "mi_negatives"):
            check_int(name, getattr(self, name))
        check_int("offline_probe_stages", self.offline_probe_stages, 0)
        if self.offline_probe_stages > self.steps:
            raise ValueError(
                f"offline_probe_stages must be <= steps ({self.steps}), got "
                f"{self.offline_probe_stages}"
            )
        for name in ("hidden", "disc_hidden"):
            widths = getattr(self, name)
            if not isinstance(widths, tuple | list) or not widths:
                raise ValueError(f"{name} must be a tuple of widths >= 1, got {describe(widths)}")
            for width in widths:
                check_int(name, width)
        check_float("lr", self.lr, 0.0)  # 0: the untrained speakers' row
        check_float("probe_lr", self.probe_lr, 0.0, low_open=True)
        for name in ("likelihood_scale", "entropy_coef", "rl_likelihood_weight"):
            check_float(name, getattr(self, name), 0.0)
        check_float("likelihood_weight", self.likelihood_weight, optional=True)
        check_probability("noise", self.noise)
        check_probability("baseline_momentum", self.baseline_momentum)
        check_seed("seed", self.seed)
        check_seed("mask_seed", self.mask_seed)
        check_device(self.device)
        if not isinstance(self.temperature, TemperatureSchedule):
            raise ValueError(
                f"temperature must be a TemperatureSchedule, got {describe(self.temperature)}"
            )
        if not callable(self.speaker_cls):
            raise ValueError(f"speaker_cls must be a torch module class, got {self.speaker_cls!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (the MI term pairs views across worlds)")

    def weight(self) -> float:
        """The likelihood weight used by the Gumbel-Softmax loss."""
        if self.likelihood_weight is None:
            return self.likelihood_scale * THESIS_LIKELIHOOD_WEIGHT[self.level]
        return float(self.likelihood_weight)


@dataclass
class RunResult:
    """What one run measured (accuracies in %, lists over evaluation checkpoints)."""

    config: dict[str, Any]
    steps: list[int]
    val_acc: list[list[float]]
    """``[checkpoint][agent]`` probe validation accuracy."""
    test_acc: list[list[float]]
    temperature: list[float]
    best_val: list[float]
    test_at_best: list[float]
    best_step: list[int]
    seconds: float
    offline: dict[str, Any] | None = None
    """The offline probe (``offline_probe_stages`` > 0): ``steps`` of the stages, ``val_acc``
    and ``test_acc`` ``[stage][agent]``, per agent ``best_val``, ``test_at_best`` and
    ``best_step``, the stage of best validation (%), and ``seconds``, the probes' share of
    ``seconds``."""

    @property
    def student_test(self) -> float:
        """Table 4.1's number: the student's probe test accuracy at its best validation."""
        return self.test_at_best[STUDENT]

    def peak_final(self, agent: int = STUDENT) -> dict[str, float]:
        """Peak and final validation accuracy of ``agent`` and the test accuracy at the end."""
        curve = [row[agent] for row in self.val_acc]
        peak = max(range(len(curve)), key=curve.__getitem__)
        return {
            "peak_val": curve[peak],
            "peak_step": self.steps[peak],
            "final_val": curve[-1],
            "final_test": self.test_acc[-1][agent],
        }

    @property
    def offline_student_test(self) -> float | None:
        """The offline probe's student test accuracy at its best validation stage."""
        return None if self.offline is None else self.offline["test_at_best"][STUDENT]


def make_games(cfg: SpeakerRunConfig, num_envs: int) -> dict[str, PartialObsGame]:
    """The train / val / test games of a run: one config, the same fixed masks."""
    # the contrastive term replaces the game's bit-agreement reward (see _reinforce_step)
    rl_weight = 0.0 if cfg.likelihood == "contrastive" else cfg.rl_likelihood_weight
    common = dict(
        **LEVEL_GAMES[cfg.level],
        dataset=cfg.dataset,
        data_root=cfg.data_root,
        message_bits=cfg.message_bits,
        noise=cfg.noise,
        num_candidates=0,
        likelihood_weight=rl_weight,
        mask_seed=cfg.mask_seed,
        max_cycles=cfg.steps + 1,
    )
    return {
        split: commenv.partial_obs_v0.batched(
            num_envs if split == "train" else 1, cfg.device, split=split, **common
        )
        for split in ("train", "val", "test")
    }


class _Evaluator:
    """Probe accuracy on the full val and test splits, batched over agents."""

    def __init__(
        self, games: dict[str, PartialObsGame], chunk: int = 4096, train: bool = False
    ) -> None:
        self.data = {}
        for split in ("train", "val", "test") if train else ("val", "test"):
            g = games[split]
            idx = torch.arange(len(g.images), device=g.device)
            self.data[split] = (idx, g, g.labels)
        self.chunk = chunk

    @torch.no_grad()
    def features(self, speaker: torch.nn.Module, split: str) -> torch.Tensor:
        idx, game, _ = self.data[split]
        return torch.cat([speaker(game.views(i))[1] for i in idx.split(self.chunk)])

    def __call__(self, speaker: torch.nn.Module, probe: LinearProbe) -> tuple[torch.Tensor, ...]:
        return tuple(
            probe.accuracy(self.features(speaker, s), self.data[s][2]) for s in ("val", "test")
        )

    def offline(self, speaker: torch.nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Val and test accuracy ``(n_agents,)`` of linear probes fit on the frozen features
        of the whole train split (:data:`OFFLINE_PROBE`)."""
        feats = {s: self.features(speaker, s) for s in ("train", "val", "test")}
        res = fit_linear_probe(
            feats["train"],
            self.data["train"][2],
            feats["val"],
            self.data["val"][2],
            feats["test"],
            self.data["test"][2],
            num_classes=self.data["train"][1].num_classes,
            seed=seed,
            **OFFLINE_PROBE,
        )
        return res.val_acc, res.test_acc


def train_speakers(
    cfg: SpeakerRunConfig, progress: Callable[[int], None] | None = None
) -> RunResult:
    """Train a teacher and a student at ``cfg.level`` and probe their features.

    ``progress(n)`` is called with the number of steps done since the last call. The run is
    seeded by ``cfg.seed`` alone; the caller's Python, NumPy and torch RNG states are left as
    they were.
    """
    with seed_scope(cfg.seed, cfg.device):
        return _train_speakers(cfg, progress)


def _train_speakers(cfg: SpeakerRunConfig, progress: Callable[[int], None] | None) -> RunResult:
    device = torch.device(cfg.device)
    games = make_games(cfg, cfg.batch_size)
    game = games["train"]
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    speaker = cfg.speaker_cls(
        n_agents=game.n_agents,
        in_features=game.num_features,
        message_bits=cfg.message_bits,
        hidden=tuple(cfg.hidden),
    ).to(device)
    disc = MIDiscriminator(game.n_agents, game.num_features, cfg.message_bits, cfg.disc_hidden).to(
        device
    )
    feat_size = int(getattr(speaker, "feature_size", cfg.hidden[-1]))
    probe = LinearProbe(game.n_agents, feat_size, game.num_classes, lr=cfg.probe_lr).to(device)
    if cfg.kind == "gumbel":
        wrapper: torch.nn.Module = GumbelSoftmaxWrapper(
            speaker, cfg.temperature.start, cfg.straight_through, cfg.temperature
        )
        step_fn = _gumbel_step
    else:
        wrapper = ReinforceWrapper(speaker)
        step_fn = _reinforce_step
    opt = torch.optim.Adam([*wrapper.parameters(), *disc.parameters()], lr=cfg.lr)
    evaluate = _Evaluator(games, train=cfg.offline_probe_stages > 0)
    best = BestValidation(game.n_agents)
    stages = stage_steps(cfg.steps, cfg.offline_probe_stages)
    offline_best = BestValidation(game.n_agents)
    offline_curves: dict[str, list] = {"steps": [], "val_acc": [], "test_acc": []}
    offline_seconds = 0.0
    steps, val_curve, test_curve, temps = [], [], [], []
    state: dict[str, Any] = {"baseline": None}  # set from the first batch's rewards
    if cfg.kind == "reinforce":
        state["obs"], state["infos"] = game.reset(seed=cfg.seed)

    start, done_since = time.perf_counter(), 0
    for step in range(1, cfg.steps + 1):
        temp = wrapper.set_step(step) if cfg.kind == "gumbel" else float("nan")
        features, labels = step_fn(cfg, game, wrapper, disc, opt, gen, state)
        probe.update(features, labels)
        done_since += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            wrapper.eval()
            val_acc, test_acc = evaluate(speaker, probe)
            wrapper.train()
            best.update(step, val_acc, test_acc)
            steps.append(step)
            val_curve.append([100 * float(a) for a in val_acc])
            test_curve.append([100 * float(a) for a in test_acc])
            temps.append(temp)
        if step in stages:  # the probe's own seeded streams: training's are left alone
            wrapper.eval()
            began = time.perf_counter()
            if cfg.lr > 0 or not offline_curves["steps"]:  # lr 0: the same features each stage
                off_val, off_test = evaluate.offline(speaker, cfg.seed)
            offline_seconds += time.perf_counter() - began
            wrapper.train()
            offline_best.update(step, off_val, off_test)
            offline_curves["steps"].append(step)
            offline_curves["val_acc"].append([100 * float(a) for a in off_val])
            offline_curves["test_acc"].append([100 * float(a) for a in off_test])
        if step % cfg.eval_every == 0 or step == cfg.steps:
            if progress is not None:
                progress(done_since)
                done_since = 0
    config = {k: v for k, v in asdict(cfg).items() if k != "speaker_cls"}
    config["speaker_cls"] = getattr(cfg.speaker_cls, "__qualname__", str(cfg.speaker_cls))
    config["likelihood_weight_used"] = cfg.weight()
    return RunResult(
        config=config,
        steps=steps,
        val_acc=val_curve,
        test_acc=test_curve,
        temperature=temps,
        best_val=[100 * float(v) for v in best.best_val],
        test_at_best=[100 * float(v) for v in best.test_at_best],
        best_step=[int(s) for s in best.best_step],
        seconds=time.perf_counter() - start,
        offline=None
        if not stages
        else {
            **offline_curves,
            "best_val": [100 * float(v) for v in offline_best.best_val],
            "test_at_best": [100 * float(v) for v in offline_best.test_at_best],
            "best_step": [int(s) for s in offline_best.best_step],
            "seconds": offline_seconds,
        },
    )


def _mi(cfg: SpeakerRunConfig) -> dict[str, Any]:
    return {"estimator": cfg.mi_estimator, "negatives": cfg.mi_negatives}


def _gumbel_step(cfg, game, wrapper, disc, opt, gen, state) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randint(len(game.images), (cfg.batch_size,), generator=gen, device=game.device)
    views = game.views(idx)  # (B, n, D)
    out = wrapper(views, generator=gen)
    loss = mi_loss(disc, views, out.message, **_mi(cfg)).sum()
    weight = cfg.weight()
    if game.level != "none" and weight:  # the game's "none" has no likelihood term
        delivery = exchange(out.message, game.channel, game.grad_mask, gen)
        own = torch.softmax(out.logits, -1)[..., 1]  # the listener's own message distribution
        term = contrastive_likelihood_loss if cfg.likelihood == "contrastive" else likelihood_loss
        loss = loss + weight * term(own, delivery).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out.features, game.labels[idx]


def _reinforce_step(cfg, game, wrapper, disc, opt, gen, state) -> tuple[torch.Tensor, torch.Tensor]:
    agents = game.possible_agents
    obs, infos = state["obs"], state["infos"]
    views = torch.stack([obs[a][:, game.obs_layout["view"]] for a in agents], 1)
    out = wrapper(views, generator=gen)
    obs, rewards, _, truncated, next_infos = game.step(
        {a: out.message[:, i] for i, a in enumerate(agents)}
    )
    reward = mi_reward(disc, views, out.message, **_mi(cfg))
    reward = reward + torch.stack([rewards[a] for a in agents], 1)
    listener_loss = out.message.new_zeros(())
    if cfg.likelihood == "contrastive" and game.level != "none":
        ce, credit = _contrastive_credit(cfg, game, out, gen)
        listener_loss, reward = ce, reward + credit
    if state["baseline"] is None:  # a baseline started at 0 sat ~log 4 off the MI reward for
        # hundreds of steps at momentum 0.99: every advantage then had the same sign
        state["baseline"] = reward.mean(0).detach()
    advantage = reward - state["baseline"]
    policy = -(advantage.detach() * out.log_prob).mean(0).sum()
    policy = policy - cfg.entropy_coef * out.entropy.mean(0).sum()
    loss = policy + listener_loss + mi_loss(disc, views, out.message.detach(), **_mi(cfg)).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    m = cfg.baseline_momentum
    state["baseline"] = m * state["baseline"] + (1 - m) * reward.mean(0).detach()
    if bool(truncated[agents[0]].any()):
        obs, next_infos = game.reset()
    labels = infos[agents[0]]["label"]
    state["obs"], state["infos"] = obs, next_infos
    return out.features, labels


def _contrastive_credit(cfg, game, out, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with the contrastive likelihood term: the listener's loss, differentiable in
    its own message distribution, and each speaker's reward ``(B, n)``: minus the mean loss of
    the listeners it reached over the edges the game opens to feedback (``game.grad_mask``)."""
    delivery = exchange(out.message, game.channel, False, gen)  # sampled bits: no graph
    own = torch.softmax(out.logits, -1)[..., 1]
    ce = contrastive_likelihood_terms(own, delivery)  # (B, n, S)
    d = delivery.delivered.to(ce.dtype)
    weight = cfg.weight()
    loss = weight * listener_mean(ce, delivery).sum()
    if isinstance(game.grad_mask, bool):
        open_slots = d * float(game.grad_mask)
    else:
        open_slots = d * game.channel.edge_mask_to_slots(game.grad_mask).to(d.dtype)
    total = game.channel.sum_to_senders(ce.detach() * open_slots)
    count = game.channel.sum_to_senders(open_slots)
    return loss, -weight * total / count.clamp(min=1)


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation."""
    t = torch.tensor(list(values), dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if len(t) > 1 else 0.0
