"""Output-sharing populations for node_graph_v0 (thesis, chapter 2).

:class:`OutputSharingPopulation` holds the ``N`` node models as **one batched model**: every
layer stores ``N`` weight sets stacked on a leading axis and runs them in one kernel
(``torch.baddbmm`` for dense layers, a grouped convolution for conv layers), so a training step
has no Python loop over nodes. One Adam over the stacked parameters is exactly ``N`` independent
Adams (Adam is per-coordinate and the loss is a sum of per-node losses).

Each node trains on its current minibatch (the env's observation): cross-entropy on its own
labels for local data; for received data, cross-entropy on the received true labels, on the
received logits softened at ``temperature`` (``softmax(z / T)``, eq. 2.2.1-2.2.2), or the MSE
between its top-level features and the received ones (times ``feature_weight``). It then
broadcasts the minibatch to each out-neighbour with probability ``broadcast_prob`` with its
logits or features (computed in the same forward pass) as payload.

:class:`SequentialPopulation` is the thesis' implementation — a Python loop over ``N`` separate
``nn.Module`` s and optimisers — kept only as the speed baseline
(``commenv.bench.graph.speed_rows``).

A user's own population plugs into :func:`run_population` (and ``commenv bench graph
--agent module:Class``) if it has the constructor keywords of :class:`OutputSharingPopulation`
that it needs and the two methods of :class:`NodePopulation`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from commenv.core import (
    check_choice,
    check_device,
    check_float,
    check_int,
    check_seed,
    describe,
    generator_seed,
    torch_seeded,
)
from commenv.evaluation import evaluate
from commenv.node_graph import NodeGraphGame
from commenv_agents.layers import BatchedConv2d, BatchedLinear, conv_out

ARCHS: tuple[str, ...] = ("mlp", "cnn")
SHARES: tuple[str, ...] = ("none", "labels", "logits", "features")


class NodePopulation(Protocol):
    """What :func:`run_population` needs from a population of node agents."""

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train on the minibatches in ``views`` (``NodeGraphGame.split_obs`` of the
        ``(N, obs_dim)`` observations) and return ``(bits (N, K), payload (N, M, P) | None)``;
        ``out_valid`` ``(N, K)`` says which bits have a receiver."""

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Predictive distributions ``(N, S, C)`` of every node on images ``x`` ``(S, C, H, W)``."""


# -- classifiers -------------------------------------------------------------------------
class BatchedClassifier(nn.Module):
    """``G`` classifiers in one module: ``(G, M, C, H, W) -> (features (G, M, F), logits)``.

    ``arch="mlp"``: ``D -> hidden -> ReLU -> feature_dim -> ReLU -> classes``.
    ``arch="cnn"``: DCGAN-style, no pooling: two 4x4 stride-2 convolutions (32 and 64
    channels, LeakyReLU 0.2), then ``feature_dim`` LeakyReLU features and the class layer.
    """

    def __init__(
        self,
        groups: int,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        arch: str = "mlp",
        hidden: int = 256,
        feature_dim: int = 64,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; valid choices: {list(ARCHS)}")
        self.groups, self.arch, self.image_shape = groups, arch, tuple(image_shape)
        c, h, w = self.image_shape
        if arch == "mlp":
            self.body = nn.ModuleList(
                [
                    BatchedLinear(groups, c * h * w, hidden),
                    BatchedLinear(groups, hidden, feature_dim),
                ]
            )
        else:
            self.convs = nn.ModuleList(
                [BatchedConv2d(groups, c, 32, 4, 2, 1), BatchedConv2d(groups, 32, 64, 4, 2, 1)]
            )
            flat = 64 * conv_out(conv_out(h)) * conv_out(conv_out(w))
            self.body = nn.ModuleList([BatchedLinear(groups, flat, feature_dim)])
        self.head = BatchedLinear(groups, feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        G, M = x.shape[:2]
        if self.arch == "mlp":
            h = x.flatten(2)  # (G, M, D), an empty batch too
            for layer in self.body:
                h = F.relu(layer(h))
        else:
            h = x.transpose(0, 1).reshape(M, G * x.shape[2], *x.shape[3:])
            for conv in self.convs:
                h = F.leaky_relu(conv(h), 0.2)
            h = h.unflatten(1, (G, -1)).flatten(2).transpose(0, 1)
            h = F.leaky_relu(self.body[0](h), 0.2)
        return h, self.head(h)


class SingleClassifier(nn.Module):
    """One node's classifier with plain ``torch.nn`` layers (same maths as one group of
    :class:`BatchedClassifier`), for the sequential baseline."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        arch: str = "mlp",
        hidden: int = 256,
        feature_dim: int = 64,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        self.arch = arch
        if arch == "mlp":
            self.body = nn.Sequential(
                nn.Flatten(),
                nn.Linear(c * h * w, hidden),
                nn.ReLU(),
                nn.Linear(hidden, feature_dim),
                nn.ReLU(),
            )
        else:
            flat = 64 * conv_out(conv_out(h)) * conv_out(conv_out(w))
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 4, 2, 1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(32, 64, 4, 2, 1),
                nn.LeakyReLU(0.2),
                nn.Flatten(),
                nn.Linear(flat, feature_dim),
                nn.LeakyReLU(0.2),
            )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


# -- shared loss and actions ---------------------------------------------------------------
def node_losses(
    features: torch.Tensor,
    logits: torch.Tensor,
    views: dict[str, torch.Tensor],
    share: str,
    temperature: float,
    feature_weight: float,
) -> torch.Tensor:
    """Per-node training loss ``(N,)`` on the observed minibatches (see module docstring)."""
    inbox = views["from_inbox"] > 0.5  # (N,)
    targets = views["labels"]
    if share == "logits":
        soft = torch.softmax(views["payload"] / temperature, -1)
        targets = torch.where(inbox[:, None, None], soft, targets)
    ce = -(targets * torch.log_softmax(logits, -1)).sum(-1).mean(-1)
    if share != "features":
        return ce
    mse = (features - views["payload"]).pow(2).mean((-1, -2))
    return torch.where(inbox, feature_weight * mse, ce)


def make_adam(params: Any, lr: float, **kw: Any) -> torch.optim.Adam:
    """Adam (``kw``: its other options) with the fused kernel (3x faster on CPU here), plain
    Adam where it is missing for these tensors."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kw)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, **kw)


OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
"""Optimisers a population trains with: Adam (the thesis'), or SGD with momentum 0.9 (what
the gradient-compression papers train with: error feedback's guarantee is SGD's)."""


def make_optimizer(params: Any, lr: float, kind: str = "adam") -> torch.optim.Optimizer:
    """``kind`` of :data:`OPTIMIZERS` over ``params`` at learning rate ``lr``."""
    check_choice("optimizer", kind, OPTIMIZERS)
    if kind == "sgd":
        return torch.optim.SGD(list(params), lr=lr, momentum=0.9)
    return make_adam(params, lr)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for a model's initialisation (layers draw from it), then hand
    the caller's RNG state back: building a population never reseeds the user's stream."""
    with torch_seeded(generator_seed(seed), device):
        yield


def check_population(
    n_nodes: Any,
    image_shape: Any,
    num_classes: Any = None,
    *,
    hidden: Any = 1,
    feature_dim: Any = 1,
    lr: Any = None,
    seed: Any = 0,
    device: Any = "cpu",
    min_nodes: int = 1,
) -> tuple[int, tuple[int, int, int], int | None, torch.device]:
    """The constructor arguments every reference population shares, checked before anything is
    built (or any RNG seeded): ``ValueError`` naming the argument, else ``(n_nodes,
    image_shape, num_classes, device)`` as the population stores them. ``num_classes=None``
    is for label-free populations; ``lr=None`` takes the population's default."""
    n_nodes = check_int("n_nodes", n_nodes, min_nodes)
    shape_ok = isinstance(image_shape, tuple | list | torch.Size) and len(image_shape) == 3
    if not shape_ok or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in image_shape
    ):
        raise ValueError(
            f"image_shape must be (C, H, W), three integers >= 1, got {describe(image_shape)}"
        )
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, 2)
    check_int("hidden", hidden)
    check_int("feature_dim", feature_dim)
    if lr is not None:
        check_float("lr", lr, 0.0)
    check_seed("seed", seed)
    return n_nodes, tuple(image_shape), num_classes, check_device(device)


def image_chunks(x: Any, chunk: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` spans a population's ``predict_proba``/``encode`` runs ``x`` in,
    after checking it: a floating-point ``(S, C, H, W)`` tensor (an empty batch is one empty
    span, so the result is ``(N, 0, ...)``) and ``chunk >= 1``."""
    check_int("chunk", chunk)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise ValueError(
            "images must be a floating-point tensor (S, C, H, W) in [0, 1] (uint8 pixels: "
            f"x.float() / 255), got {describe(x)}"
        )
    return [(s, s + chunk) for s in range(0, len(x), chunk)] or [(0, 0)]


STEP_KEYS = ("images", "labels", "payload", "from_inbox")
"""The views an output-sharing step reads (the game's ``split_obs``)."""


def check_step(views: dict[str, Any], out_valid: Any, n_nodes: int, keys: tuple[str, ...]) -> None:
    """A population step's inputs, checked before any update: the views hold ``keys`` and
    ``out_valid`` is the game's ``(n_nodes, K)`` bool mask (``game.out_valid``)."""
    missing = [k for k in keys if k not in views]
    if missing:
        raise ValueError(
            f"views lack {missing} (expected the game's split_obs() keys, at least {list(keys)})"
        )
    ok = isinstance(out_valid, torch.Tensor) and out_valid.dtype == torch.bool
    if not ok or out_valid.ndim != 2 or out_valid.shape[0] != n_nodes:
        raise ValueError(
            f"out_valid must be the game's ({n_nodes}, K) bool mask (game.out_valid), got "
            f"{describe(out_valid)}"
        )


def broadcast_bits(out_valid: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Independent Bernoulli(``prob``) bits for every real out-edge, zeros on padding."""
    u = torch.rand(out_valid.shape, generator=gen, device=out_valid.device)
    return ((u < prob) & out_valid).long()


class OutputSharingPopulation:
    """``n_nodes`` node agents as one batched model (see module docstring).

    Args:
        n_nodes: population size ``N``.
        image_shape: ``(C, H, W)`` of the images.
        num_classes: number of classes.
        arch: ``"mlp"`` or ``"cnn"`` (DCGAN-style strided convolutions, no pooling).
        share: what is broadcast: ``"none"`` (never broadcast), ``"labels"``, ``"logits"``,
            ``"features"``; must match the env's ``content`` (``"none"`` runs on any).
        broadcast_prob: probability of sending the current minibatch on each out-edge.
        temperature: softening of received logits.
        feature_weight: weight of the feature MSE.
        hidden: width of the hidden layers.
        feature_dim: width of the top-level features (must match the env's).
        lr: learning rate (the thesis: Adam with defaults).
        device: ``"cpu"`` or ``"cuda"``: same code.
        seed: initialisation and broadcast sampling seed.
        optimizer: ``"adam"`` (the thesis) or ``"sgd"`` (momentum 0.9), :data:`OPTIMIZERS`.
    """

    def __init__(
        self,
        n_nodes: int,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        arch: str = "mlp",
        share: str = "labels",
        broadcast_prob: float = 0.1,
        temperature: float = 1.0,
        feature_weight: float = 1.0,
        hidden: int = 256,
        feature_dim: int = 64,
        lr: float = 1e-3,
        device: str | torch.device = "cpu",
        seed: int = 0,
        optimizer: str = "adam",
    ) -> None:
        check_choice("optimizer", optimizer, OPTIMIZERS)
        if share not in SHARES:
            raise ValueError(f"unknown share {share!r}; valid choices: {list(SHARES)}")
        n_nodes, image_shape, num_classes, self.device = check_population(
            n_nodes, image_shape, num_classes, hidden=hidden, feature_dim=feature_dim, lr=lr,
            seed=seed, device=device,
        )  # fmt: skip
        broadcast_prob = check_float("broadcast_prob", broadcast_prob, 0.0, 1.0)
        temperature = check_float("temperature", temperature, 0.0, low_open=True)
        feature_weight = check_float("feature_weight", feature_weight, 0.0)
        self.n_nodes, self.share = n_nodes, share
        self.broadcast_prob = broadcast_prob if share != "none" else 0.0
        self.temperature, self.feature_weight = float(temperature), float(feature_weight)
        with seeded(seed, self.device):
            net = {"arch": arch, "hidden": hidden, "feature_dim": feature_dim}
            self._build_models(n_nodes, image_shape, num_classes, **net)
        self.optimizer = make_optimizer(self.model.parameters(), lr, optimizer)
        self.gen = torch.Generator(device=self.device).manual_seed(generator_seed(seed))
        self.num_params_per_node = sum(p.numel() for p in self.model.parameters()) // n_nodes

    def _build_models(self, n_nodes: int, image_shape: tuple, num_classes: int, **net: Any) -> None:
        """The networks (``net``: arch, hidden, feature_dim), initialised from the seeded
        global stream (:func:`seeded`)."""
        self.model = BatchedClassifier(n_nodes, image_shape, num_classes, **net).to(self.device)

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One training step of every node on its observed minibatch ``views`` (the game's
        ``split_obs``); returns the broadcast bits ``(N, K)`` (each out-edge of ``out_valid``)
        and the payload ``(N, M, P)`` sent with them (``None`` for ``share="labels"``)."""
        check_step(views, out_valid, self.n_nodes, STEP_KEYS)
        features, logits = self.model(views["images"])
        loss = node_losses(
            features, logits, views, self.share, self.temperature, self.feature_weight
        ).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        bits = broadcast_bits(out_valid, self.broadcast_prob, self.gen)
        payload = {"logits": logits, "features": features}.get(self.share)
        return bits, None if payload is None else payload.detach()

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        """Every node's class distribution ``(N, S, C)`` of images ``x`` ``(S, C, H, W)``
        (``chunk`` samples at a time)."""
        out = []
        for start, stop in image_chunks(x, chunk):
            xb = x[start:stop].to(self.device, torch.float32)
            _, logits = self.model(xb.unsqueeze(0).expand(self.n_nodes, *xb.shape))
            out.append(logits.softmax(-1))
        return torch.cat(out, 1)


class SequentialPopulation(OutputSharingPopulation):
    """The thesis' per-node loop: ``N`` separate models and optimisers (speed baseline)."""

    def __init__(
        self,
        n_nodes: int,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        arch: str = "mlp",
        hidden: int = 256,
        feature_dim: int = 64,
        lr: float = 1e-3,
        device: str | torch.device = "cpu",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self._loop_nodes = n_nodes  # built by _build_models, within the seeded initialisation
        super().__init__(
            1,
            image_shape,
            num_classes,
            arch=arch,
            hidden=hidden,
            feature_dim=feature_dim,
            lr=lr,
            device=device,
            seed=seed,
            **kwargs,
        )
        self.n_nodes = n_nodes
        self.optimizers = [make_adam(m.parameters(), lr) for m in self.models]
        self.num_params_per_node = sum(p.numel() for p in self.models[0].parameters())

    def _build_models(self, n_nodes: int, image_shape: tuple, num_classes: int, **net: Any) -> None:
        """The one-node model of the base class, then the loop's own models (in that order, as
        the loop was always initialised)."""
        super()._build_models(n_nodes, image_shape, num_classes, **net)
        self.models = [
            SingleClassifier(image_shape, num_classes, **net).to(self.device)
            for _ in range(self._loop_nodes)
        ]

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As :meth:`OutputSharingPopulation.step`, one node after the other."""
        check_step(views, out_valid, self.n_nodes, STEP_KEYS)
        feats, logits = [], []
        for i, (model, opt) in enumerate(zip(self.models, self.optimizers, strict=True)):
            f, z = model(views["images"][i])
            node_view = {k: v[i : i + 1] for k, v in views.items()}
            loss = node_losses(
                f[None], z[None], node_view, self.share, self.temperature, self.feature_weight
            ).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            feats.append(f.detach())
            logits.append(z.detach())
        bits = broadcast_bits(out_valid, self.broadcast_prob, self.gen)
        payload = {"logits": logits, "features": feats}.get(self.share)
        return bits, None if payload is None else torch.stack(payload)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        """As :meth:`OutputSharingPopulation.predict_proba`, one model after the other."""
        image_chunks(x, chunk)  # the same checks
        x = x.to(self.device, torch.float32)
        return torch.stack([m(x)[1].softmax(-1) for m in self.models])


# -- the loop against the env --------------------------------------------------------------
def run_population(
    game: NodeGraphGame,
    population: NodePopulation,
    steps: int,
    *,
    eval_every: int = 0,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    progress: Any = None,
    weighting: str = "softmax",
    extra: Callable[[], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train ``population`` against ``game`` (``num_envs=1``) for ``steps`` parallel steps.

    Evaluates on ``test`` (images, labels) every ``eval_every`` steps and at the end; returns
    the history ``[{"step", "average", "collective", "per_node", "bits_*"}, ...]``, each entry
    updated with ``extra()`` when given (e.g. a protocol's per-tag bits and compute).
    """
    if game.num_envs != 1:
        raise ValueError(f"run_population drives one world (num_envs=1), got {game.num_envs}")
    check_int("steps", steps, 0)
    check_int("eval_every", eval_every, 0)  # 0: only at the end
    if steps > game.max_cycles:
        raise ValueError(
            f"steps={steps} is more than the game's max_cycles={game.max_cycles}: the episode "
            "would end first; build the game with max_cycles >= steps"
        )
    nodes = getattr(population, "n_nodes", game.n_nodes)
    if nodes != game.n_nodes:
        raise ValueError(f"the population has {nodes} nodes, the game n_nodes={game.n_nodes}")
    if test is not None:  # checked now, not after the whole training run
        ok = isinstance(test, tuple | list) and len(test) == 2
        if not ok or len(test[0]) != len(test[1]) or len(test[0]) == 0:
            raise ValueError(
                f"test must be (images (S, C, H, W), labels (S,)) with S >= 1, got {describe(test)}"
            )
    obs, _ = game.reset(seed=seed)
    obs_all = game.observe_all()
    out_valid = game.out_valid
    history: list[dict[str, Any]] = []

    def record(step: int) -> None:
        if test is None:
            return
        probs = population.predict_proba(test[0])
        ev = evaluate(probs.cpu(), test[1], weighting)
        bw = game.bandwidth()
        history.append(
            {
                "step": step,
                **ev,
                "bits_images": bw["images"],
                "bits_payload": bw["payload"],
                **(extra() if extra is not None else {}),
            }
        )

    for t in range(1, steps + 1):
        views = game.split_obs(obs_all[0])
        bits, payload = population.step(views, out_valid)
        obs_all, _, _, _ = game.step_tensors(bits[None], None if payload is None else payload[None])
        if eval_every and t % eval_every == 0 and t != steps:
            record(t)
        if progress is not None:
            progress.update(1)
    record(steps)
    return history
