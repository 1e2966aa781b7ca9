"""Speakers of the thesis' chapter 4: agents that describe their partial view in bits.

The pieces follow EGG's separation: plain modules, and wrappers that change one contract.

- :class:`Speaker` — a *population* of ``n_agents`` MLP speakers run as one batched model
  (ReLU hidden layers, then ``L`` heads of 2 units: one score for bit 0, one for bit 1).
  ``speaker(views (B, n, D)) -> (logits (B, n, L, 2), features (B, n, H))``; the features (last
  hidden layer before the message head) are what the linear probe reads.
- :class:`GumbelSoftmaxWrapper` — logits -> one Gumbel-Softmax sample per head, relaxed in
  training (optionally straight-through), hard (argmax) in eval. Messages are the value of the
  bit-1 unit, ``(B, n, L)`` in [0, 1].
- :class:`ReinforceWrapper` — logits -> sampled bits, their log-probability and entropy.
- :class:`TemperatureSchedule` — ``max(floor, start * decay ** (step // every))``.
- :class:`MIDiscriminator` — the mutual-information estimator of section 4.2.2: it tells joint
  pairs ``(view, its message)`` from product-of-marginal pairs ``(view, another view's
  message)``, one discriminator per agent, batched.
- :func:`mi_loss`, :func:`likelihood_loss` — the two terms of the thesis' objective (eq. 4.2.5).
- :func:`contrastive_likelihood_loss` — ours: the likelihood term as InfoNCE over the batch, so
  the listener's prediction must identify its world's message (constant messages cannot win).

A user speaker plugs in by having :class:`Speaker`'s constructor keywords
(``n_agents, in_features, message_bits, hidden``) and its ``forward`` contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from commenv.channel import Channel, Delivery
from commenv.core import check_choice
from commenv_agents.layers import BatchedLinear, BatchedMLP, models_first

_EPS = 1e-6


class Speaker(nn.Module):
    """``n_agents`` MLP speakers (ReLU) whose top layer has ``message_bits`` heads of 2 units.

    Args:
        n_agents: number of speakers in the population (each has its own weights).
        in_features: size ``D`` of a flat view.
        message_bits: message length ``L``.
        hidden: widths of the hidden layers; the last one is the probed feature size ``H``.
    """

    def __init__(
        self, n_agents: int, in_features: int, message_bits: int, hidden: Sequence[int] = (256, 128)
    ) -> None:
        super().__init__()
        if not hidden or min(hidden) < 1 or min(n_agents, in_features, message_bits) < 1:
            raise ValueError(
                "Speaker needs n_agents, in_features, message_bits >= 1 and at least one hidden "
                f"layer; got {n_agents}, {in_features}, {message_bits}, hidden={tuple(hidden)}"
            )
        self.n_agents, self.in_features, self.message_bits = n_agents, in_features, message_bits
        self.feature_size = int(hidden[-1])
        self.body = BatchedMLP(n_agents, [in_features, *hidden], last_activation=True)
        self.head = BatchedLinear(n_agents, self.feature_size, 2 * message_bits)

    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``views (B, n, D) -> (logits (B, n, L, 2), features (B, n, H))``."""
        if views.ndim != 3 or views.shape[1:] != (self.n_agents, self.in_features):
            raise ValueError(
                f"views must be (batch, n_agents={self.n_agents}, D={self.in_features}), got "
                f"{tuple(views.shape)}; did you pass one agent's view instead of game.views(...)?"
            )
        features = self.body(models_first(views))
        logits = self.head(features).unflatten(-1, (self.message_bits, 2))
        return models_first(logits), models_first(features)


@dataclass(frozen=True)
class TemperatureSchedule:
    """Gumbel-Softmax temperature ``max(floor, start * decay ** (step // every))``.

    The thesis anneals "by a factor every N steps, never below a floor"; its numbers were lost,
    these defaults are ours: start 1.0, x0.9 every 100 steps, floor 0.1. ``commenv bench
    language`` anneals every 250 steps (50 with ``--quick``): 0.28 at 3,000 steps, so its floor
    is never reached.
    """

    start: float = 1.0
    decay: float = 0.9
    every: int = 100
    floor: float = 0.1

    def __post_init__(self) -> None:
        if not (self.start > 0 and 0 < self.decay <= 1 and self.every >= 1 and self.floor > 0):
            raise ValueError(
                "TemperatureSchedule needs start > 0, 0 < decay <= 1, every >= 1, floor > 0; "
                f"got {self}"
            )

    def __call__(self, step: int) -> float:
        return max(self.floor, self.start * self.decay ** (step // self.every))


def gumbel_softmax_bits(
    logits: torch.Tensor,
    temperature: float,
    *,
    straight_through: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A Gumbel-Softmax sample per 2-unit head of ``logits`` ``(..., L, 2)``; returns the bit-1
    unit ``(..., L)`` (relaxed, or hard with straight-through gradients)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(u.clamp(_EPS, 1 - _EPS)))
    y = torch.softmax((logits + gumbel) / temperature, -1)[..., 1]
    if straight_through:
        y = (y > 0.5).to(y.dtype) - y.detach() + y
    return y


class Message(NamedTuple):
    """What a speaker wrapper returns (batched over worlds and agents)."""

    message: torch.Tensor
    """``(B, n, L)`` bits: relaxed floats in training, 0/1 in eval (Gumbel-Softmax), or sampled
    0/1 bits (REINFORCE)."""
    features: torch.Tensor
    """``(B, n, H)``: last hidden layer, for the probe."""
    logits: torch.Tensor
    """``(B, n, L, 2)``."""
    log_prob: torch.Tensor | None = None
    """``(B, n)``: log-probability of the sampled message (REINFORCE only)."""
    entropy: torch.Tensor | None = None
    """``(B, n)``: entropy of the message distribution (REINFORCE only)."""


class GumbelSoftmaxWrapper(nn.Module):
    """Logits -> a Gumbel-Softmax message: relaxed in training, hard argmax in eval.

    Args:
        agent: a :class:`Speaker`-like module, ``views -> (logits (B, n, L, 2), features)``.
        temperature: the initial temperature (see :meth:`set_step` for the schedule).
        straight_through: send hard bits forward with the relaxed gradient.
        schedule: optional :class:`TemperatureSchedule` applied by :meth:`set_step`.
    """

    def __init__(
        self,
        agent: nn.Module,
        temperature: float = 1.0,
        straight_through: bool = False,
        schedule: TemperatureSchedule | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.agent = agent
        self.temperature = float(temperature)
        self.straight_through = straight_through
        self.schedule = schedule

    def set_step(self, step: int) -> float:
        """Set the temperature from the schedule at training ``step``; return it."""
        if self.schedule is not None:
            self.temperature = self.schedule(step)
        return self.temperature

    def forward(self, views: torch.Tensor, generator: torch.Generator | None = None) -> Message:
        logits, features = self.agent(views)
        if self.training:
            msg = gumbel_softmax_bits(
                logits,
                self.temperature,
                straight_through=self.straight_through,
                generator=generator,
            )
        else:
            msg = (logits[..., 1] > logits[..., 0]).to(logits.dtype)
        return Message(msg, features, logits)


class ReinforceWrapper(nn.Module):
    """Logits -> sampled bits with their log-probability and entropy (argmax in eval)."""

    def __init__(self, agent: nn.Module) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, views: torch.Tensor, generator: torch.Generator | None = None) -> Message:
        logits, features = self.agent(views)
        logit1 = logits[..., 1] - logits[..., 0]  # a 2-unit softmax is a sigmoid of the gap
        p1 = torch.sigmoid(logit1)
        if self.training:
            u = torch.rand(p1.shape, generator=generator, device=p1.device, dtype=p1.dtype)
            bits = (u < p1.detach()).to(p1.dtype)
        else:
            bits = (logit1 > 0).to(p1.dtype)
        log_prob = -F.binary_cross_entropy_with_logits(logit1, bits, reduction="none").sum(-1)
        entropy = F.binary_cross_entropy_with_logits(logit1, p1, reduction="none").sum(-1)
        return Message(bits, features, logits, log_prob, entropy)


class MIDiscriminator(nn.Module):
    """Per-agent discriminator ``T_i(view, message) -> logit`` of "joint pair" (batched).

    Args:
        n_agents: one discriminator per agent.
        view_features: ``D``.
        message_bits: ``L``.
        hidden: hidden widths (ReLU).
    """

    def __init__(
        self, n_agents: int, view_features: int, message_bits: int, hidden: Sequence[int] = (256,)
    ) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.body = BatchedMLP(
            n_agents, [view_features + message_bits, *hidden], last_activation=True
        )
        width = hidden[-1] if hidden else view_features + message_bits
        self.out = BatchedLinear(n_agents, width, 1)

    def forward(self, views: torch.Tensor, messages: torch.Tensor) -> torch.Tensor:
        """``views (B, n, D)``, ``messages (B, n, L)`` -> logits ``(B, n)``."""
        if views.shape[:2] != messages.shape[:2] or views.shape[1] != self.n_agents:
            raise ValueError(
                f"views (B, n={self.n_agents}, D) and messages (B, n, L) must agree, got "
                f"{tuple(views.shape)} and {tuple(messages.shape)}"
            )
        joint = models_first(torch.cat([views, messages], -1))
        return models_first(self.out(self.body(joint))).squeeze(-1)


MI_ESTIMATORS: tuple[str, ...] = ("gan", "infonce")


def _check_negatives(batch: int, negatives: int) -> None:
    if batch < 2:
        raise ValueError("the MI terms need a batch of at least 2 worlds to form marginal pairs")
    if not 1 <= negatives < batch:
        raise ValueError(f"negatives must be in [1, batch size - 1 = {batch - 1}], got {negatives}")


def mi_loss(
    discriminator: MIDiscriminator,
    views: torch.Tensor,
    messages: torch.Tensor,
    *,
    estimator: str = "gan",
    negatives: int = 8,
) -> torch.Tensor:
    """The mutual-information term, a loss ``(n,)`` minimised by the discriminator *and* the
    speaker (the thesis' max-max game: the speaker too pushes joint and marginal pairs apart).

    - ``"gan"`` (the thesis): vanilla-GAN discriminator loss on joint pairs ``(x_b, m(x_b))``
      vs marginal pairs ``(x_b, m(x_{b+1}))``, the message of another world of the batch.
    - ``"infonce"`` (ours, beyond the thesis): InfoNCE with the same discriminator as critic:
      cross-entropy of picking the joint pair among it and ``negatives`` marginal pairs. More
      negatives make a view's message harder to confuse with other views' messages.
    """
    check_choice("estimator", estimator, MI_ESTIMATORS)
    if estimator == "infonce":  # the view is fixed, the messages vary
        _check_negatives(views.shape[0], negatives)
        scores = torch.stack(
            [discriminator(views, messages.roll(j, 0)) for j in range(negatives + 1)], -1
        )
        return -torch.log_softmax(scores, -1)[..., 0].mean(0)
    _check_negatives(views.shape[0], 1)
    joint = discriminator(views, messages)
    marginal = discriminator(views, messages.roll(1, 0))
    loss = F.binary_cross_entropy_with_logits(joint, torch.ones_like(joint), reduction="none")
    loss = loss + F.binary_cross_entropy_with_logits(
        marginal, torch.zeros_like(marginal), reduction="none"
    )
    return loss.mean(0)


def mi_reward(
    discriminator: MIDiscriminator,
    views: torch.Tensor,
    messages: torch.Tensor,
    *,
    estimator: str = "gan",
    negatives: int = 8,
) -> torch.Tensor:
    """Per-message reward ``(B, n)`` of the same game for a speaker that cannot take a gradient.

    ``"gan"``: ``log D(x, m(x)) + log(1 - D(x', m(x)))``, with ``x'`` another world's view;
    ``"infonce"``: the log-probability the critic gives the message's own view among its view
    and ``negatives`` other worlds' views.
    """
    check_choice("estimator", estimator, MI_ESTIMATORS)
    with torch.no_grad():
        if estimator == "infonce":  # the message is fixed, the views vary
            _check_negatives(views.shape[0], negatives)
            scores = torch.stack(
                [discriminator(views.roll(-j, 0), messages) for j in range(negatives + 1)], -1
            )
            return torch.log_softmax(scores, -1)[..., 0]
        joint = F.logsigmoid(discriminator(views, messages))
        other = F.logsigmoid(-discriminator(views.roll(-1, 0), messages))
    return joint + other


def exchange(
    messages: torch.Tensor,
    channel: Channel,
    grad_mask: torch.Tensor | bool,
    generator: torch.Generator | None = None,
) -> Delivery:
    """Route relaxed messages ``(B, n, L)`` over ``channel``; ``grad_mask`` (the env's, e.g.
    ``game.grad_mask``) decides per edge whether the listener's loss reaches the speaker."""
    return channel.route(messages, grad_mask=grad_mask, generator=generator, tag="message")


def likelihood_loss(own: torch.Tensor, delivery: Delivery) -> torch.Tensor:
    """The thesis' likelihood term per listener, ``(n,)`` (eq. 4.2.6).

    Each listener predicts every message it received from *its own* generated message ``own``
    ``(B, n, L)`` (bit probabilities): binary cross-entropy summed over bits, target = the
    received message, averaged over the worlds and slots that delivered something. Whether the
    gradient also reaches the speaker was decided by the channel when it routed the message.
    """
    pred = own.clamp(_EPS, 1 - _EPS).unsqueeze(2)  # (B, n, 1, L)
    target = delivery.inbox  # (B, n, max_in, L)
    ce = -(target * pred.log() + (1 - target) * (1 - pred).log()).sum(-1)
    return listener_mean(ce, delivery)


def listener_mean(per_slot: torch.Tensor, delivery: Delivery) -> torch.Tensor:
    """Average ``(B, n, S)`` per-slot values over the worlds and slots that delivered a
    message, per listener ``(n,)`` (0 for a listener that heard nothing)."""
    delivered = delivery.delivered.to(per_slot.dtype)
    return (per_slot * delivered).sum((0, 2)) / delivered.sum((0, 2)).clamp(min=1)


LIKELIHOODS: tuple[str, ...] = ("bce", "contrastive")


def contrastive_likelihood_terms(own: torch.Tensor, delivery: Delivery) -> torch.Tensor:
    """Per world, listener and slot ``(B, n, S)``: the cross-entropy of
    :func:`contrastive_likelihood_loss` before averaging (0 where nothing was delivered)."""
    p = own.clamp(_EPS, 1 - _EPS)
    # sum_l log(1 - p) is the same for every candidate, so the log-odds alone rank them
    logit = p.log() - (1 - p).log()  # (B, n, L)
    scores = torch.einsum("bil,cisl->bisc", logit, delivery.inbox)  # (B, n, S, B candidates)
    delivered = delivery.delivered  # (B, n, S)
    # a large finite value, not -inf, so a slot that got nothing anywhere keeps finite gradients
    scores = scores.masked_fill(~delivered.permute(1, 2, 0)[None], -1e9)
    own_world = torch.arange(own.shape[0], device=own.device)
    ce = -torch.log_softmax(scores, -1)[own_world, :, :, own_world]  # (B, n, S)
    return ce.masked_fill(~delivered, 0.0)


def contrastive_likelihood_loss(own: torch.Tensor, delivery: Delivery) -> torch.Tensor:
    """A likelihood term that constant messages cannot satisfy, per listener ``(n,)`` (ours).

    The thesis' term (:func:`likelihood_loss`) asks listener ``i`` to predict the message it
    received from its own message distribution ``own`` ``(B, n, L)``; both speakers sending the
    same constant message satisfies it perfectly. Here the same prediction must *identify* the
    message: among what slot ``s`` of ``i`` received in every world of the batch, the listener
    scores each candidate by the log-likelihood its own distribution gives it, and pays the
    cross-entropy of picking its own world's message (InfoNCE with the likelihood as critic).
    Only two views of the same world agree here, so the speakers must describe the world, not
    their noise mask, which is what the probe reads.
    """
    return listener_mean(contrastive_likelihood_terms(own, delivery), delivery)
