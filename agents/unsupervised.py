"""Unsupervised node populations for node_graph_v0 (thesis 2.2.4, table 2.3).

Each population holds its ``N`` nodes as **one batched model** built from
:mod:`commenv_agents.layers` (``baddbmm`` for dense layers, grouped (transposed) convolutions
for conv layers, ``BatchNorm2d`` over the ``G * c`` channels is per-node batch norm), so a
training step has no Python loop over nodes; one optimiser over the stacked parameters is
exactly ``N`` independent ones (Adam is per-coordinate and the loss is a sum of per-node losses).
Nodes never see a label: they train on the images of their minibatch (``views["images"]``) and,
for a minibatch that came from the inbox, on the sender's codes (``views["payload"]``). The
payload a node broadcasts is its codes of the current minibatch from the training forward pass
(before the update), as the supervised population sends its logits.

**VAE nodes** (:class:`VAEPopulation`, env ``content="gaussian_codes"``). Encoder ``q(z|x) =
N(mu, diag(exp(logvar)))``, decoder ``p(x|z)`` Bernoulli over pixels. Every minibatch, local or
received, trains the node's own negative ELBO ``BCE(x, dec(z)) + KL(q(z|x) || N(0, I))``
(summed over pixels and latent units, averaged over the minibatch). On a received minibatch
(``share="match"``, the thesis' objective) the node adds ``share_weight *
KL(sender || receiver)``, ``KL(N(mu_s, var_s) || N(mu_r, var_r)) = 1/2 sum(log var_r - log
var_s + (var_s + (mu_s - mu_r)^2) / var_r - 1)``, the sender's Gaussian fixed (it is data, no
gradient goes back through the channel). *Direction*: the thesis pulls "the latter [receiver's]
distribution towards the former's [sender's]"; with the sender as the reference distribution the
receiver's Gaussian must cover the sender's (mass-covering), so it cannot shrink onto one mode
of it. *Weight* 1: the term is a KL in nats over the same latent units as the ELBO's prior term,
so weight 1 gives the sender exactly the say the prior has.

**BiGAN nodes** (:class:`BiGANPopulation`, env ``content="codes"``). Generator ``G: z -> x``,
encoder ``E: x -> z``, joint discriminator ``D(x, z)``; prior ``z ~ N(0, I)``. Losses, per node
and averaged over the minibatch, with ``BCE`` on ``D``'s logits:

- ``L_D = BCE(D(x, E(x)), 0.9) + BCE(D(G(z), z), 0)`` (real pairs: data and its code);
- ``L_GE = BCE(D(x, E(x)), 0) + BCE(D(G(z), z), 1)`` (the non-saturating form: G and E are
  trained to flip D's labels rather than to minimise D's log-likelihood), plus on a received
  minibatch ``share_weight * MSE(E(x), e_sender)`` (``share="match"``, the thesis).

Stabilising tricks: instance noise (Gaussian, sigma 0.1, the same sample added to the real and
the fake images D sees in both steps), one-sided label smoothing (real target 0.9), Adam with
``lr=2e-4``,
``betas=(0.5, 0.999)`` (DCGAN), LeakyReLU(0.2) in D and E, dropout 0.5 in D's hidden layers
(masks from the node's generator, 32 mask bits per random integer), batch norm in the
generator's up-sampling stack (``arch="cnn"``), D updated once per G/E update on the same
minibatch. ``last_losses`` holds the per-node ``L_D`` and ``L_GE`` of the last step;
``tests/test_unsupervised.py`` checks they stay bounded over a small run.

**Beyond the thesis** (``share="contrastive"``, either family). Matching a neighbour's code with
KL or MSE can be satisfied by codes that agree and carry little: the receiver is pulled toward a
coordinate system that is not its own. The contrastive objective asks instead that the receiver's
code of sample ``j`` identify the sender's code of sample ``j`` among the minibatch's ``M``
codes (InfoNCE, cosine similarity at temperature ``temperature``): ``-mean_j log softmax_k(
cos(r_j, s_k) / T)[j]``. A constant or collapsed code cannot satisfy it, and it only asks that
the two codes rank samples alike, not that they be equal (codes are the VAE means for the VAE).
Further shares: ``"projected"`` (the same InfoNCE through a per-node projection head),
``"images"`` (no term: received images trained on with the own objective only),
``"decorrelate"`` (the receiver's code units pushed to be uncorrelated with the sender's over the
received minibatch, :func:`cross_correlation`: what a neighbour already encodes is what a node
should not spend its units on) and its control ``"decorrelate-fixed"`` (the same term against a
frozen random encoder's codes of the received images, not the sender's).

Architectures (``arch``): ``"mlp"`` (``D -> hidden -> feature_dim``, and back) and ``"cnn"``,
DCGAN-style strided convolutions without pooling: encoder ``4x4`` stride-2 convolutions (32, 64
channels) then a dense layer; decoder/generator a dense layer to ``64 x H/4 x W/4`` then two
``4x4`` stride-2 transposed convolutions (image sides must be multiples of 4: 8, 28, 32).

:class:`SequentialUnsupervised` is the per-node loop (``N`` one-node populations, ``N``
optimisers) kept only as the speed baseline.

A user's own population plugs into the ``unsupervised`` benchmark (``--agent module:Class``) if
it has the constructor of :class:`UnsupervisedPopulation` (the keywords it needs) and its two
methods ``step`` and ``encode``.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from commenv.core import check_float, generator_seed
from commenv_agents.layers import (
    BatchedConv2d,
    BatchedConvTranspose2d,
    BatchedLinear,
    BatchedMLP,
    conv_out,
)
from commenv_agents.population import (
    broadcast_bits,
    check_population,
    check_step,
    image_chunks,
    make_adam,
    seeded,
)

ARCHS: tuple[str, ...] = ("mlp", "cnn")
SHARES: tuple[str, ...] = (
    "none",
    "match",
    "contrastive",
    "projected",
    "decorrelate",
    "images",
    "decorrelate-fixed",
)
FAMILIES: tuple[str, ...] = ("vae", "bigan")
CONTENT: dict[str, str] = {"vae": "gaussian_codes", "bigan": "codes"}
"""The node_graph_v0 ``content`` each family broadcasts."""


class UnsupervisedPopulation(Protocol):
    """What the unsupervised benchmark needs from a population of label-free nodes."""

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train on ``views`` (``NodeGraphGame.split_obs`` of the ``(N, obs_dim)`` observations;
        ``views["labels"]`` is all zeros) and return ``(bits (N, K), payload (N, M, P))``."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, S, F)`` of every node's encoder on images ``x`` ``(S, C, H, W)``."""


# -- losses ------------------------------------------------------------------------------
def gaussian_kl(
    mu_p: torch.Tensor, logvar_p: torch.Tensor, mu_q: torch.Tensor, logvar_q: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mu_p, exp(logvar_p)) || N(mu_q, exp(logvar_q)))`` of diagonal Gaussians, summed
    over the last axis (nats)."""
    var_p, var_q = logvar_p.exp(), logvar_q.exp()
    return 0.5 * (logvar_q - logvar_p + (var_p + (mu_p - mu_q).pow(2)) / var_q - 1.0).sum(-1)


def info_nce(codes: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-group InfoNCE ``(G,)``: ``codes[g, j]`` must pick ``targets[g, j]`` among the
    ``M`` targets of its group by cosine similarity / ``temperature``."""
    sim = F.normalize(codes, dim=-1) @ F.normalize(targets, dim=-1).transpose(-1, -2)
    labels = torch.arange(codes.shape[1], device=codes.device).expand(codes.shape[0], -1)
    return (
        F.cross_entropy((sim / temperature).flatten(0, 1), labels.flatten(), reduction="none")
        .view(codes.shape[:2])
        .mean(-1)
    )


def cross_correlation(codes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-group mean squared cross-correlation ``(G,)`` between the units of ``codes`` and of
    ``targets`` ``(G, M, F)`` over the ``M`` samples of a minibatch (each unit standardised
    over the minibatch): 0 when every unit of one is uncorrelated with every unit of the other,
    1 when each unit is a copy of one of the other's."""
    zc = (codes - codes.mean(1, keepdim=True)) / (codes.std(1, keepdim=True) + 1e-4)
    zt = (targets - targets.mean(1, keepdim=True)) / (targets.std(1, keepdim=True) + 1e-4)
    corr = zc.transpose(1, 2) @ zt / (codes.shape[1] - 1)  # (G, F, F)
    return corr.pow(2).sum((-1, -2)) / codes.shape[-1]


@functools.cache
def _half_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``p = 0.5`` mask's lookups on ``device``: the ``(4,)`` int32 shifts that bring each
    byte of an int32 to the low end, and the ``(256, 8)`` table whose row ``b`` is byte ``b``'s
    bits, low bit first, as inverted-dropout multipliers (0 or 2)."""
    bits = (torch.arange(256)[:, None] >> torch.arange(8)) & 1
    shifts = torch.tensor([0, 8, 16, 24], dtype=torch.int32)
    return shifts.to(device), (bits * 2.0).to(device)


def dropout(
    h: torch.Tensor, p: float, training: bool, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Inverted dropout with a mask drawn from ``gen``. For ``p = 0.5`` (the discriminator's)
    every random 32-bit integer gives 32 mask bits (unit ``32 w + i`` is kept when bit ``i`` of
    integer ``w`` is set): one draw per 32 units instead of a Bernoulli draw per unit
    (``F.dropout``'s ``bernoulli_`` dominated a batched BiGAN step on CPU), and the bits become
    the multipliers in one table lookup per byte rather than a chain of shifts, masks and
    casts over the whole activation (each a pass over memory that cost more than the matmuls
    around it in a batched step)."""
    if not training or p == 0.0:
        return h
    if p == 0.5:
        n = h.numel()
        words = torch.randint(
            -(2**31),
            2**31 - 1,
            ((n + 31) // 32,),
            dtype=torch.int32,
            generator=gen,
            device=h.device,
        )
        # byte k of a word holds its bits 8k..8k+7 (shifted out, not viewed: the same masks
        # whatever the machine's byte order)
        shifts, table = _half_tables(h.device)
        index = (words[:, None] >> shifts) & 255
        scale = table.index_select(0, index.view(-1)).view(-1)[:n].view(h.shape)
        return h * scale.to(h.dtype)
    keep = torch.rand(h.shape, generator=gen, device=h.device) >= p
    return h * (keep.to(h.dtype) / (1.0 - p))


# -- batched networks --------------------------------------------------------------------
def _check_arch(arch: str, image_shape: tuple[int, int, int]) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid choices: {list(ARCHS)}")
    if arch == "cnn" and (image_shape[1] % 4 or image_shape[2] % 4):
        raise ValueError(
            f"arch='cnn' needs image sides that are multiples of 4, got image_shape={image_shape}"
        )


def _to_channels(x: torch.Tensor) -> torch.Tensor:
    """``(G, M, C, H, W) -> (M, G * C, H, W)`` for the grouped convolutions."""
    G, M = x.shape[:2]
    return x.transpose(0, 1).reshape(M, G * x.shape[2], *x.shape[3:])


def _from_channels(h: torch.Tensor, groups: int) -> torch.Tensor:
    """``(M, G * c, H, W) -> (G, M, c * H * W)``."""
    return h.unflatten(1, (groups, -1)).flatten(2).transpose(0, 1)


class BatchedEncoder(nn.Module):
    """``G`` encoders ``(G, M, C, H, W) -> (G, M, out_dim)`` (MLP or strided CNN)."""

    def __init__(
        self, groups: int, image_shape: tuple[int, int, int], out_dim: int, arch: str, hidden: int
    ) -> None:
        super().__init__()
        _check_arch(arch, image_shape)
        c, h, w = image_shape
        self.groups, self.arch = groups, arch
        if arch == "cnn":
            self.convs = nn.ModuleList(
                [BatchedConv2d(groups, c, 32, 4, 2, 1), BatchedConv2d(groups, 32, 64, 4, 2, 1)]
            )
            d_in = 64 * conv_out(conv_out(h)) * conv_out(conv_out(w))
        else:
            d_in = c * h * w
        self.fc = BatchedLinear(groups, d_in, hidden)
        self.out = BatchedLinear(groups, hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "cnn":
            h = _to_channels(x)
            for conv in self.convs:
                h = F.leaky_relu(conv(h), 0.2)
            h = _from_channels(h, self.groups)
        else:
            h = x.flatten(2)
        return self.out(F.leaky_relu(self.fc(h), 0.2))


class BatchedDecoder(nn.Module):
    """``G`` decoders / generators ``(G, M, in_dim) -> (G, M, C, H, W)`` pixel logits."""

    def __init__(
        self, groups: int, in_dim: int, image_shape: tuple[int, int, int], arch: str, hidden: int
    ) -> None:
        super().__init__()
        _check_arch(arch, image_shape)
        self.groups, self.arch, self.image_shape = groups, arch, tuple(image_shape)
        c, h, w = image_shape
        if arch == "cnn":
            self.base = (64, h // 4, w // 4)
            self.fc = BatchedLinear(groups, in_dim, 64 * (h // 4) * (w // 4))
            self.bn = nn.BatchNorm2d(groups * 64)
            self.up1 = BatchedConvTranspose2d(groups, 64, 32, 4, 2, 1)
            self.bn1 = nn.BatchNorm2d(groups * 32)
            self.up2 = BatchedConvTranspose2d(groups, 32, c, 4, 2, 1)
        else:
            self.fc = BatchedLinear(groups, in_dim, hidden)
            self.out = BatchedLinear(groups, hidden, c * h * w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        G, M = z.shape[:2]
        if self.arch == "cnn":
            h = self.fc(z).reshape(G, M, *self.base)
            h = F.relu(self.bn(_to_channels(h)))
            h = F.relu(self.bn1(self.up1(h)))
            h = self.up2(h)  # (M, G * c, H, W)
            return h.reshape(M, G, *self.image_shape).transpose(0, 1)
        return self.out(F.relu(self.fc(z))).reshape(G, M, *self.image_shape)


class BatchedJointDiscriminator(nn.Module):
    """``G`` BiGAN discriminators ``D(x, z)``: ``(G, M, C, H, W), (G, M, F) -> (G, M)`` logits."""

    def __init__(
        self,
        groups: int,
        image_shape: tuple[int, int, int],
        feature_dim: int,
        arch: str,
        hidden: int,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.x_branch = BatchedEncoder(groups, image_shape, hidden, arch, hidden)
        self.z_branch = BatchedLinear(groups, feature_dim, hidden)
        self.joint = BatchedLinear(groups, 2 * hidden, hidden)
        self.out = BatchedLinear(groups, hidden, 1)
        self.dropout = dropout
        self.gen: torch.Generator | None = None
        """Where the dropout masks come from (the population's generator; torch's if None)."""

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        hx = F.leaky_relu(self.x_branch(x), 0.2)
        hz = F.leaky_relu(self.z_branch(z), 0.2)
        h = dropout(torch.cat([hx, hz], -1), self.dropout, self.training, self.gen)
        h = dropout(F.leaky_relu(self.joint(h), 0.2), self.dropout, self.training, self.gen)
        return self.out(h).squeeze(-1)


# -- populations -------------------------------------------------------------------------
class _Population:
    """What both families share: argument checks, broadcasting, the share term, encoding."""

    content: str = ""

    def __init__(
        self,
        n_nodes: int,
        image_shape: tuple[int, int, int],
        num_classes: int | None = None,
        *,
        arch: str = "mlp",
        share: str = "match",
        broadcast_prob: float = 0.1,
        share_weight: float = 1.0,
        temperature: float = 0.1,
        feature_dim: int = 32,
        hidden: int = 256,
        lr: float | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if share not in SHARES:
            raise ValueError(f"unknown share {share!r}; valid choices: {list(SHARES)}")
        # num_classes is not checked: label-free nodes ignore it
        n_nodes, image_shape, _, self.device = check_population(
            n_nodes, image_shape, hidden=hidden, feature_dim=feature_dim, lr=lr, seed=seed,
            device=device,
        )  # fmt: skip
        broadcast_prob = check_float("broadcast_prob", broadcast_prob, 0.0, 1.0)
        temperature = check_float("temperature", temperature, 0.0, low_open=True)
        share_weight = check_float("share_weight", share_weight, 0.0)
        _check_arch(arch, image_shape)
        self.n_nodes, self.share, self.arch = n_nodes, share, arch
        self.image_shape, self.feature_dim = image_shape, feature_dim
        self.broadcast_prob = broadcast_prob if share != "none" else 0.0
        self.share_weight, self.temperature = share_weight, temperature
        self.gen = torch.Generator(device=self.device).manual_seed(generator_seed(seed))
        self._hidden, self._lr = hidden, lr
        self.last_losses: dict[str, torch.Tensor] = {}
        with seeded(seed, self.device):  # the family's networks; the caller's RNG untouched
            self._build()

    def _build(self) -> None:
        """The family's networks and optimisers (from the seeded global stream)."""
        raise NotImplementedError

    def _share_term(
        self,
        codes: torch.Tensor,
        received: torch.Tensor,
        inbox: torch.Tensor,
        kl: Any = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-node share loss ``(N,)`` (zero for local minibatches)."""
        if self.share in ("none", "images"):
            return torch.zeros(codes.shape[0], device=codes.device)
        sent = received[..., : codes.shape[-1]]  # the sender's codes (VAE: its means)
        if self.share == "decorrelate-fixed":  # the control: a frozen random encoder's codes
            with torch.no_grad():
                sent = self.fixed_encoder(images)[..., : codes.shape[-1]]
            return self.share_weight * cross_correlation(codes, sent) * inbox
        if self.share == "contrastive":
            term = info_nce(codes, sent, self.temperature)
        elif self.share == "projected":
            term = info_nce(self.head(codes), sent, self.temperature)
        elif self.share == "decorrelate":
            term = cross_correlation(codes, sent)
        elif kl is not None:
            term = kl
        else:
            term = (codes - received).pow(2).mean((-1, -2))
        return self.share_weight * term * inbox

    def _share_params(self) -> list[nn.Parameter]:
        """The projection head of ``share="projected"`` (built after the nodes' networks, so
        the other shares' initialisation is unchanged); no parameters otherwise. For
        ``share="decorrelate-fixed"`` (the control of ``"decorrelate"``) a frozen, randomly
        initialised encoder per node, whose codes of the received images replace the sender's."""
        if self.share == "decorrelate-fixed":
            width = 2 * self.feature_dim if self.content == "gaussian_codes" else self.feature_dim
            self.fixed_encoder = BatchedEncoder(
                self.n_nodes, self.image_shape, width, self.arch, self._hidden
            ).to(self.device)
            self.fixed_encoder.requires_grad_(False)
            return []
        if self.share != "projected":
            return []
        F_, N = self.feature_dim, self.n_nodes
        self.head = BatchedMLP(N, [F_, 2 * F_, F_], activation=F.relu).to(self.device)
        return list(self.head.parameters())

    def _check_step(self, views: dict[str, torch.Tensor], out_valid: torch.Tensor) -> None:
        """The step's inputs, before any update: the game's views (payload as wide as this
        family's codes) and ``out_valid``."""
        check_step(views, out_valid, self.n_nodes, ("images", "payload", "from_inbox"))
        width = 2 * self.feature_dim if self.content == "gaussian_codes" else self.feature_dim
        if views["payload"].shape[-1] != width:
            raise ValueError(
                f"views['payload'] must hold {width} values per sample ({self.content} of "
                f"feature_dim={self.feature_dim}), got shape {tuple(views['payload'].shape)}"
            )

    def _bits(self, out_valid: torch.Tensor) -> torch.Tensor:
        return broadcast_bits(out_valid, self.broadcast_prob, self.gen)

    def _batched_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        return x.unsqueeze(0).expand(self.n_nodes, *x.shape)

    def encode(self, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        """Every node's features ``(N, S, feature_dim)`` of images ``x`` ``(S, C, H, W)``."""
        raise NotImplementedError


class VAEPopulation(_Population):
    """``n_nodes`` VAE nodes as one batched model (see the module docstring).

    Arguments (the constructor every population shares; all but the first two are keywords):

    - ``n_nodes``: population size ``N``.
    - ``image_shape``: ``(C, H, W)`` of the images.
    - ``num_classes``: ignored (label-free); accepted so every population is built alike.
    - ``arch``: ``"mlp"`` or ``"cnn"`` (DCGAN-style strided convolutions).
    - ``share``: ``"none"`` (never broadcast), ``"match"`` (KL(sender || receiver), the thesis)
      or ``"contrastive"`` (InfoNCE on the means, ours).
    - ``broadcast_prob``: probability of sending the current minibatch on each out-edge.
    - ``share_weight``: weight of the share term (1: the ELBO's own KL scale).
    - ``temperature``: InfoNCE temperature (``share="contrastive"``).
    - ``feature_dim``: latent units (the env's ``feature_dim``; the payload is twice as wide).
    - ``hidden``: hidden width.
    - ``lr``: Adam learning rate (default 1e-3).
    - ``device``: ``"cpu"`` or ``"cuda"``: same code.
    - ``seed``: initialisation and broadcast sampling seed.
    """

    content = "gaussian_codes"

    def _build(self) -> None:
        lr = 1e-3 if self._lr is None else self._lr  # 0.0 is a learning rate too
        hidden = self._hidden
        self.encoder = BatchedEncoder(
            self.n_nodes, self.image_shape, 2 * self.feature_dim, self.arch, hidden
        ).to(self.device)
        self.decoder = BatchedDecoder(
            self.n_nodes, self.feature_dim, self.image_shape, self.arch, hidden
        ).to(self.device)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.num_params_per_node = sum(p.numel() for p in params) // self.n_nodes
        self.optimizer = make_adam(params + self._share_params(), lr)

    def gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(N, M, feature_dim)``; log-variance kept in [-10, 10]."""
        mu, logvar = self.encoder(x).chunk(2, -1)
        return mu, 10.0 * torch.tanh(logvar / 10.0)

    def losses(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-node ``(N,)`` terms on the observed minibatches: ``rec``, ``prior_kl``,
        ``share`` (KL(sender || receiver) times the weight, 0 on local data) and ``total``."""
        x = views["images"].to(self.device)
        inbox = (views["from_inbox"] > 0.5).float().to(self.device)
        mu, logvar = self.gaussian(x)
        eps = torch.randn(mu.shape, generator=self.gen, device=self.device)
        recon = self.decoder(mu + (0.5 * logvar).exp() * eps)
        rec = F.binary_cross_entropy_with_logits(recon, x, reduction="none")
        rec = rec.flatten(2).sum(-1).mean(-1)
        prior_kl = gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))
        prior_kl = prior_kl.mean(-1)
        received = views["payload"].to(self.device)
        kl = None
        if self.share == "match":
            mu_s, lv_s = received.chunk(2, -1)
            kl = gaussian_kl(mu_s, lv_s, mu, logvar).mean(-1)
        share = self._share_term(mu, received, inbox, kl, images=x)
        self._code = torch.cat([mu, logvar], -1).detach()  # what this forward pass broadcasts
        return {"rec": rec, "prior_kl": prior_kl, "share": share, "total": rec + prior_kl + share}

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step of every node on ``views`` (the game's ``split_obs``; labels never
        reach it); returns the broadcast bits ``(N, K)`` and the codes sent with them."""
        self._check_step(views, out_valid)
        terms = self.losses(views)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].sum().backward()
        self.optimizer.step()
        self.last_losses = {k: v.detach() for k, v in terms.items()}
        return self._bits(out_valid), self._code

    @torch.no_grad()
    def encode(self, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        """Every node's features ``(N, S, feature_dim)`` of images ``x`` ``(S, C, H, W)``."""
        spans = image_chunks(x, chunk)
        return torch.cat([self.gaussian(self._batched_input(x[a:b]))[0] for a, b in spans], 1)


class BiGANPopulation(_Population):
    """``n_nodes`` BiGAN nodes as one batched model (see the module docstring).

    Args: as :class:`VAEPopulation`, with ``share="match"`` the MSE to the sender's codes
    (the thesis) and ``lr`` default 2e-4 (Adam betas 0.5, 0.999).
    """

    content = "codes"

    def _build(self) -> None:
        lr = 2e-4 if self._lr is None else self._lr
        hidden = self._hidden
        self.instance_noise = 0.1
        N, F_, arch = self.n_nodes, self.feature_dim, self.arch
        self.encoder = BatchedEncoder(N, self.image_shape, F_, arch, hidden).to(self.device)
        self.generator = BatchedDecoder(N, F_, self.image_shape, arch, hidden).to(self.device)
        self.discriminator = BatchedJointDiscriminator(N, self.image_shape, F_, arch, hidden).to(
            self.device
        )
        self.discriminator.gen = self.gen
        ge = [*self.encoder.parameters(), *self.generator.parameters()]
        self.num_params_per_node = (
            sum(p.numel() for p in ge) + sum(p.numel() for p in self.discriminator.parameters())
        ) // N
        self._ge_params = ge + self._share_params()
        self.opt_ge = make_adam(self._ge_params, lr, betas=(0.5, 0.999))
        self.opt_d = make_adam(self.discriminator.parameters(), lr, betas=(0.5, 0.999))

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step of every node on ``views`` (the game's ``split_obs``; labels never
        reach it); returns the broadcast bits ``(N, K)`` and the codes sent with them."""
        self._check_step(views, out_valid)
        x = views["images"].to(self.device)
        inbox = (views["from_inbox"] > 0.5).float().to(self.device)
        N, M = x.shape[:2]
        z = torch.randn(N, M, self.feature_dim, generator=self.gen, device=self.device)
        fake = torch.sigmoid(self.generator(z))
        codes = self.encoder(x)
        bce = F.binary_cross_entropy_with_logits

        # Instance noise: D sees real and fake images through the same Gaussian blur of noise.
        x_d = x + self.instance_noise * torch.randn(x.shape, generator=self.gen, device=x.device)
        fake_d = fake + self.instance_noise * torch.randn(
            fake.shape, generator=self.gen, device=x.device
        )
        d_real = self.discriminator(x_d, codes.detach())
        d_fake = self.discriminator(fake_d.detach(), z)
        loss_d = bce(d_real, torch.full_like(d_real, 0.9), reduction="none").mean(-1) + bce(
            d_fake, torch.zeros_like(d_fake), reduction="none"
        ).mean(-1)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.sum().backward()
        self.opt_d.step()

        d_real = self.discriminator(x_d, codes)
        d_fake = self.discriminator(fake_d, z)
        loss_ge = bce(d_real, torch.zeros_like(d_real), reduction="none").mean(-1) + bce(
            d_fake, torch.ones_like(d_fake), reduction="none"
        ).mean(-1)
        share = self._share_term(codes, views["payload"].to(self.device), inbox, images=x)
        self.opt_ge.zero_grad(set_to_none=True)
        (loss_ge + share).sum().backward(inputs=self._ge_params)
        self.opt_ge.step()
        self.last_losses = {"d": loss_d.detach(), "ge": loss_ge.detach(), "share": share.detach()}
        return self._bits(out_valid), codes.detach()

    @torch.no_grad()
    def encode(self, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        """Every node's features ``(N, S, feature_dim)`` of images ``x`` ``(S, C, H, W)``."""
        return torch.cat(
            [self.encoder(self._batched_input(x[a:b])) for a, b in image_chunks(x, chunk)],
            1,
        )


POPULATIONS: dict[str, type[_Population]] = {"vae": VAEPopulation, "bigan": BiGANPopulation}


class SequentialUnsupervised:
    """The per-node loop: ``N`` one-node populations of ``family``, each with its own
    optimiser, stepped one after the other (the speed benchmark's baseline)."""

    def __init__(self, family: str, n_nodes: int, image_shape: tuple[int, int, int], **kw: Any):
        if family not in POPULATIONS:
            raise ValueError(f"unknown family {family!r}; valid choices: {list(POPULATIONS)}")
        seed = kw.pop("seed", 0)
        self.nodes = [
            POPULATIONS[family](1, image_shape, seed=seed + i, **kw) for i in range(n_nodes)
        ]
        self.n_nodes = n_nodes

    def step(
        self, views: dict[str, torch.Tensor], out_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As the batched population's ``step``, one node after the other."""
        bits, payload = [], []
        for i, node in enumerate(self.nodes):
            b, p = node.step({k: v[i : i + 1] for k, v in views.items()}, out_valid[i : i + 1])
            bits.append(b)
            payload.append(p)
        return torch.cat(bits), torch.cat(payload)

    def encode(self, x: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        """Every node's features ``(N, S, feature_dim)``, one node after the other."""
        return torch.cat([node.encode(x, chunk) for node in self.nodes])
