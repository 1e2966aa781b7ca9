"""Unsupervised nodes: label-free payloads, the no-label guarantee, the KL term, the probe's
early stopping, bounded BiGAN losses (thesis 2.2.4, table 2.3)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import commenv
from commenv.channel import quantize
from commenv.node_graph import NodeGraphGame
from commenv.probe import fit_linear_probe
from commenv_agents.layers import BatchedConvTranspose2d
from commenv_agents.unsupervised import (
    BatchedDecoder,
    BatchedEncoder,
    BiGANPopulation,
    SequentialUnsupervised,
    VAEPopulation,
    cross_correlation,
    dropout,
    gaussian_kl,
    info_nce,
)

M, F_ = 4, 3


def game_of(content, device, **kw):
    config = dict(n_nodes=3, content=content, feature_dim=F_, batch_size=M)
    return NodeGraphGame(**{**config, **kw}, device=device)


# -- payloads --------------------------------------------------------------------------------
@pytest.mark.parametrize("content,width", [("codes", F_), ("gaussian_codes", 2 * F_)])
def test_label_free_payload_width_bits_and_no_labels_in_observations(content, width, device):
    game = game_of(content, device, consumption_prob=1.0)
    game.reset(seed=0)
    assert game.payload_dim == width
    assert game.action_space("node_0")["payload"].shape == (M, width)
    assert game.bits_per_payload_message == M * width * 32
    payload = torch.randn(1, 3, M, width, device=device)
    bits = torch.tensor([[[1, 0], [0, 0], [0, 0]]], device=device)  # node 0 -> node 1 only
    obs, _, _, infos = game.step_tensors(bits, payload)
    view = game.split_obs(obs)
    assert int(infos["sender"][0, 1]) == 0
    assert torch.equal(view["payload"][0, 1], payload[0, 0])
    assert float(view["labels"].abs().sum()) == 0.0  # not even a node's own labels
    assert game.bandwidth()["payload"] == M * width * 32


def test_gaussian_codes_quantize_mean_and_log_variance_apart_and_bill_exactly(device):
    game = game_of("gaussian_codes", device, consumption_prob=1.0, float_bits=4)
    assert game.bits_per_payload_message == 2 * M * (F_ * 4 + 64)
    game.reset(seed=0)
    mean = torch.randn(M, F_, device=device)
    logvar = 100.0 + torch.randn(M, F_, device=device)  # a very different range
    payload = torch.zeros(1, 3, M, 2 * F_, device=device)
    payload[0, 0] = torch.cat([mean, logvar], -1)
    obs, *_ = game.step_tensors(torch.tensor([[[1, 0], [0, 0], [0, 0]]], device=device), payload)
    got = game.split_obs(obs)["payload"][0, 1]
    assert torch.allclose(got[:, :F_], quantize(mean, 4))
    assert torch.allclose(got[:, F_:], quantize(logvar, 4))
    assert game.bandwidth()["payload"] == 2 * M * (F_ * 4 + 64)


def _inbox_state(game):
    return {k: v.clone() for k, v in game._state.items()}


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda p: {"payload": p.astype(np.int64)}, "node_1.*float.*look like labels"),
        (lambda p: {"payload": np.zeros((M, 2 * F_ + 1), np.float32)}, "node_1.*shape"),
        (lambda p: {"payload": p, "labels": np.zeros(M, np.int64)}, "node_1.*label-free"),
        (lambda p: {"payload": np.where(np.eye(M, 2 * F_) > 0, np.nan, p)}, "node_1.*NaN"),
        (lambda p: {"payload": np.where(np.eye(M, 2 * F_) > 0, np.inf, p)}, "node_1.*NaN or inf"),
    ],
)
def test_bad_label_free_payload_names_the_node_and_enqueues_nothing(bad, match, device):
    game = game_of("gaussian_codes", device)
    game.reset(seed=0)
    before = _inbox_state(game)
    good = {
        a: {"broadcast": torch.ones(1, 2), "payload": torch.zeros(1, M, 2 * F_)}
        for a in game.possible_agents
    }
    entry = bad(np.zeros((M, 2 * F_), np.float32))
    action = {"broadcast": torch.ones(1, 2)}
    action.update({k: torch.as_tensor(v)[None] for k, v in entry.items()})
    with pytest.raises(ValueError, match=match):
        game.step(dict(good, node_1=action))
    after = _inbox_state(game)
    assert all(torch.equal(before[k], after[k]) for k in before)
    game.step(good)  # the env goes on as if the bad call never happened


def test_batched_face_rejects_integer_codes(device):
    game = game_of("codes", device)
    game.reset(seed=0)
    with pytest.raises(ValueError, match="label-free.*float"):
        game.step_tensors(torch.ones(1, 3, 2), torch.zeros(1, 3, M, F_, dtype=torch.long))


def test_pettingzoo_suite_for_label_free_contents():
    from commenv.testing import pettingzoo_suite

    pettingzoo_suite(
        commenv.node_graph_v0,
        num_cycles=10,
        **dict(n_nodes=3, content="gaussian_codes", feature_dim=2, batch_size=2, inbox_capacity=2),
    )


# -- the no-label guarantee ------------------------------------------------------------------
class Recorder:
    """Wraps a population; records every view its training step receives."""

    def __init__(self, pop):
        self.pop, self.seen = pop, []

    def step(self, views, out_valid):
        self.seen.append({k: v.clone() for k, v in views.items()})
        return self.pop.step(views, out_valid)


@pytest.mark.parametrize("family", ["vae", "bigan"])
def test_no_label_reaches_an_unsupervised_training_step(family, device):
    """Two worlds identical but for their labels (one relabelled at random): everything an
    unsupervised population's training step receives is bit for bit the same, so it carries
    no information about the labels."""
    seen = []
    for relabel in (False, True):
        content = "gaussian_codes" if family == "vae" else "codes"
        game = game_of(content, device, n_nodes=4, consumption_prob=0.7)
        if relabel:
            g = torch.Generator().manual_seed(1)
            game.labels = torch.randint(0, 10, game.labels.shape, generator=g).to(device)
        cls = VAEPopulation if family == "vae" else BiGANPopulation
        pop = Recorder(
            cls(
                4,
                game.image_shape,
                share="match",
                broadcast_prob=0.5,
                feature_dim=F_,
                hidden=8,
                device=device,
                seed=0,
            )
        )
        game.reset(seed=0)
        obs = game.observe_all()
        for _ in range(12):
            bits, payload = pop.step(game.split_obs(obs[0]), game.out_valid)
            obs, _, _, infos = game.step_tensors(bits[None], payload[None])
        seen.append(pop.seen)
        assert any(float(v["from_inbox"].sum()) > 0 for v in pop.seen)  # sharing happened
    for a, b in zip(*seen, strict=True):
        assert float(a["labels"].abs().sum()) == 0.0
        for key in a:
            assert torch.equal(a[key], b[key]), key


# -- VAE: the KL term ------------------------------------------------------------------------
def test_gaussian_kl_against_hand_computed_values():
    # KL(N(1, 1) || N(0, 4)) = 1/2 (log 4 - 0 + (1 + 1) / 4 - 1)
    got = gaussian_kl(
        torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([math.log(4.0)])
    )
    assert float(got) == pytest.approx(0.5 * (math.log(4.0) + 0.5 - 1.0), abs=1e-6)
    # ... and the other direction: KL(N(0, 4) || N(1, 1)) = 1/2 (0 - log 4 + 4 + 1 - 1)
    back = gaussian_kl(
        torch.tensor([0.0]), torch.tensor([math.log(4.0)]), torch.tensor([1.0]), torch.tensor([0.0])
    )
    assert float(back) == pytest.approx(0.5 * (-math.log(4.0) + 4.0), abs=1e-6)
    assert float(gaussian_kl(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3))) == 0


def test_vae_share_term_is_kl_sender_to_receiver_on_received_data_only(device):
    pop = VAEPopulation(
        2, (1, 8, 8), share="match", feature_dim=F_, hidden=8, device=device, share_weight=0.5
    )
    x = torch.rand(2, M, 1, 8, 8, device=device)
    mu_s, lv_s = torch.randn(2, M, F_, device=device), torch.randn(2, M, F_, device=device)
    views = {
        "images": x,
        "payload": torch.cat([mu_s, lv_s], -1),
        "from_inbox": torch.tensor([1.0, 0.0], device=device),
    }
    with torch.no_grad():
        terms = pop.losses(views)
        mu, lv = pop.gaussian(x)
    expected = 0.5 * gaussian_kl(mu_s, lv_s, mu, lv).mean(-1)
    assert float(terms["share"][0]) == pytest.approx(float(expected[0]), rel=1e-5)
    assert float(terms["share"][1]) == 0.0  # local minibatch: no share term
    wrong_way = 0.5 * gaussian_kl(mu, lv, mu_s, lv_s).mean(-1)
    assert float(terms["share"][0]) != pytest.approx(float(wrong_way[0]), rel=1e-3)


def test_info_nce_rewards_identification_not_collapse():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(1, 8, 5, generator=g)
    aligned = float(info_nce(codes, codes, 0.1))
    collapsed = float(info_nce(torch.ones(1, 8, 5), codes, 0.1))
    assert aligned < 0.5
    # One code for every sample: each target row is the same softmax, so the mean of
    # -log p_j over j is at least log M (Jensen) -- collapsing can never satisfy it.
    assert collapsed >= math.log(8) - 1e-5


def test_cross_correlation_is_one_for_a_copy_and_small_for_independent_codes():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 4000, 1, generator=g)
    assert float(cross_correlation(a, 3.0 * a + 1.0)) == pytest.approx(1.0, abs=1e-3)
    b = torch.randn(1, 4000, 6, generator=g)
    c = torch.randn(1, 4000, 6, generator=g)
    assert float(cross_correlation(b, c)) < 0.01  # about F / M = 6 / 4000


@pytest.mark.parametrize("share", ["projected", "decorrelate", "images", "decorrelate-fixed"])
def test_further_shares_train_only_on_received_minibatches(share, device):
    pop = VAEPopulation(2, (1, 8, 8), share=share, feature_dim=F_, hidden=8, device=device)
    views = {
        "images": torch.rand(2, M, 1, 8, 8, device=device),
        "payload": torch.randn(2, M, 2 * F_, device=device),
        "from_inbox": torch.tensor([1.0, 0.0], device=device),
    }
    share_term = pop.losses(views)["share"].detach()
    assert float(share_term[1]) == 0.0
    assert (float(share_term[0]) == 0.0) == (share == "images")
    assert hasattr(pop, "head") == (share == "projected")
    if share == "decorrelate-fixed":  # the control: a frozen encoder, not the sender's codes
        assert not any(p.requires_grad for p in pop.fixed_encoder.parameters())
        mu = pop.gaussian(views["images"])[0]
        target = pop.fixed_encoder(views["images"])[..., :F_]
        expected = cross_correlation(mu, target)[0].detach()
        assert float(share_term[0]) == pytest.approx(float(expected), rel=1e-4)
    assert pop.broadcast_prob > 0  # every one of them still broadcasts


def test_dropout_keeps_a_fraction_and_rescales():
    g = torch.Generator().manual_seed(0)
    h = torch.ones(20_000)
    for p in (0.5, 0.2):
        out = dropout(h, p, True, g)
        assert set(out.unique().tolist()) == {0.0, 1.0 / (1.0 - p)}
        assert float(out.mean()) == pytest.approx(1.0, abs=0.03)
    assert dropout(h, 0.5, False, g) is h
    a = dropout(h, 0.5, True, torch.Generator().manual_seed(1))
    assert torch.equal(a, dropout(h, 0.5, True, torch.Generator().manual_seed(1)))


def test_half_dropout_keeps_unit_32w_plus_i_when_bit_i_of_word_w_is_set(device):
    """The documented mask layout (what every BiGAN result was trained with): one random int32
    per 32 units, its bits low first, on every device and for sizes not a multiple of 32."""
    for n in (45, 64, 4096 + 7):
        h = torch.ones(n, device=device)
        out = dropout(h, 0.5, True, torch.Generator(device=device).manual_seed(4))
        words = torch.randint(
            -(2**31), 2**31 - 1, ((n + 31) // 32,), dtype=torch.int32, device=device,
            generator=torch.Generator(device=device).manual_seed(4),
        )  # fmt: skip
        bits = [(int(words[i // 32]) >> (i % 32)) & 1 for i in range(n)]
        assert out.tolist() == [2.0 * b for b in bits]


# -- BiGAN: bounded losses -------------------------------------------------------------------
def bigan_losses(game, pop, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``pop`` on ``game`` for ``steps`` steps from seed 0; its D and G/E loss per step."""
    game.reset(seed=0)
    obs = game.observe_all()
    d_hist, g_hist = [], []
    for _ in range(steps):
        bits, payload = pop.step(game.split_obs(obs[0]), game.out_valid)
        obs, *_ = game.step_tensors(bits[None], payload[None])
        d_hist.append(pop.last_losses["d"])
        g_hist.append(pop.last_losses["ge"])
    return torch.stack(d_hist), torch.stack(g_hist)


def test_bigan_losses_stay_bounded_on_a_small_run(device):
    game = game_of("codes", device, n_nodes=3, feature_dim=8, batch_size=32)
    pop = BiGANPopulation(
        3,
        game.image_shape,
        share="match",
        broadcast_prob=0.5,
        feature_dim=8,
        hidden=32,
        device=device,
        seed=0,
    )
    d, g = bigan_losses(game, pop, 150)
    assert bool(torch.isfinite(d).all() and torch.isfinite(g).all())
    # D never reaches the floor of its smoothed loss (-0.9 log 0.9 - 0.1 log 0.1 = 0.325) and
    # never gives up (2 log 2 = 1.39 is chance); G/E stay far from divergence.
    assert 0.33 < float(d[-50:].mean()) < 1.6
    assert float(g.max()) < 15.0


# -- networks --------------------------------------------------------------------------------
def test_batched_transposed_conv_is_per_group_transposed_conv():
    torch.manual_seed(0)
    layer = BatchedConvTranspose2d(3, 4, 2, 4, 2, 1)
    x = torch.randn(5, 3 * 4, 7, 7)
    out = layer(x)
    assert out.shape == (5, 3 * 2, 14, 14)
    for g in range(3):
        ref = F.conv_transpose2d(
            x[:, 4 * g : 4 * g + 4],
            layer.weight[4 * g : 4 * g + 4],
            layer.bias[2 * g : 2 * g + 2],
            2,
            1,
        )
        assert torch.allclose(out[:, 2 * g : 2 * g + 2], ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_cnn_encoder_decoder_shapes(shape):
    enc = BatchedEncoder(2, shape, 6, "cnn", 16)
    dec = BatchedDecoder(2, 6, shape, "cnn", 16)
    x = torch.rand(2, 3, *shape)
    z = enc(x)
    assert z.shape == (2, 3, 6)
    assert dec(z).shape == x.shape
    with pytest.raises(ValueError, match="multiples of 4"):
        BatchedEncoder(2, (1, 10, 10), 6, "cnn", 16)


def test_sequential_loop_runs_the_same_contract(device):
    game = game_of("gaussian_codes", device)
    seq = SequentialUnsupervised(
        "vae", 3, game.image_shape, feature_dim=F_, hidden=8, broadcast_prob=0.5, device=device
    )
    game.reset(seed=0)
    bits, payload = seq.step(game.split_obs(game.observe_all()[0]), game.out_valid)
    assert bits.shape == (3, 2) and payload.shape == (3, M, 2 * F_)
    assert seq.encode(game.test_images[:5]).shape == (3, 5, F_)
    with pytest.raises(ValueError, match="family"):
        SequentialUnsupervised("gan", 3, game.image_shape, device=device)


# -- the probe's early stopping --------------------------------------------------------------
def test_probe_early_stopping_stops_and_scores_the_best_validation_epoch(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, 6, generator=g)
    y = (x[:, 0, 0] > 0).long()
    x[:, 1] = torch.randn(600, 6, generator=g)  # probe 1 reads pure noise
    x, y = x.to(device), y.to(device)
    split = dict(
        train_x=x[:400],
        train_y=y[:400],
        val_x=x[400:500],
        val_y=y[400:500],
        test_x=x[500:],
        test_y=y[500:],
        num_classes=2,
        batch_size=32,
        seed=0,
    )
    full = fit_linear_probe(**split, epochs=40)
    early = fit_linear_probe(**split, epochs=40, patience=3, keep_probs=True)
    assert len(full.val_curve) == 40
    assert len(early.val_curve) < 40  # it stopped
    # It stopped exactly `patience` epochs after the last improvement of any probe ...
    curve = early.val_curve
    best_so_far = torch.cummax(curve, 0).values
    first = torch.ones(1, 2, dtype=torch.bool, device=curve.device)
    improved = torch.cat([first, best_so_far[1:] > best_so_far[:-1]])
    last = int(improved.any(1).nonzero().max())
    assert len(curve) == last + 1 + 3
    # ... each probe is scored at its first best validation epoch ...
    assert torch.equal(early.best_epoch, curve.argmax(0))
    assert torch.equal(early.val_acc, curve.max(0).values)
    # ... and the kept test distributions are that epoch's: their accuracy is the test accuracy.
    acc = (early.test_probs.argmax(-1) == y[500:][None]).float().mean(-1)
    assert torch.allclose(acc, early.test_acc)
    assert float(early.test_acc[0]) > 0.9 > float(early.test_acc[1])
    with pytest.raises(ValueError, match="patience"):
        fit_linear_probe(**split, epochs=3, patience=0)


def test_cnn_bigan_trains_stably_on_fashion_mnist(device):
    """The strided-CNN BiGAN on a few hundred real Fashion-MNIST images (28x28): over 80
    steps D neither wins outright nor gives up, G/E stay bounded, and the generator's images
    are not constant (no collapse to one image)."""
    try:
        game = game_of(
            "codes",
            device,
            n_nodes=2,
            feature_dim=16,
            batch_size=32,
            dataset="fashion-mnist",
            train_size=600,
        )
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {err}")
    assert game.image_shape == (1, 28, 28)
    torch.manual_seed(0)
    pop = BiGANPopulation(
        2,
        game.image_shape,
        arch="cnn",
        share="match",
        broadcast_prob=0.5,
        feature_dim=16,
        hidden=64,
        device=device,
        seed=0,
    )
    d, g = bigan_losses(game, pop, 80)
    assert bool(torch.isfinite(d).all() and torch.isfinite(g).all())
    assert 0.33 < float(d[-30:].mean()) < 1.6  # floor 0.325 (smoothed labels), chance 1.39
    assert float(g.max()) < 15.0
    with torch.no_grad():
        pop.generator.eval()
        z = torch.randn(
            2, 16, 16, generator=torch.Generator(device=device).manual_seed(1), device=device
        )
        fake = torch.sigmoid(pop.generator(z))
    assert float(fake.std(1).mean()) > 0.02  # samples differ from one another


def test_speed_bound_counts_a_vae_steps_matrix_products_by_hand():
    """The FLOPs under the speed bench's 'matrix products alone' bound are the MLP VAE's:
    each dense layer ``2 G M d_in d_out`` forward, twice that backward, but the first layer
    has no input gradient (the images need none)."""
    from commenv.bench.unsupervised import step_matmuls

    G, hidden, F_ = 3, 16, 4
    game = NodeGraphGame(n_nodes=G, content="gaussian_codes", feature_dim=F_)  # device-free: CPU
    game.reset(seed=0)
    pop = VAEPopulation(G, game.image_shape, hidden=hidden, feature_dim=F_)  # device-free: CPU
    d, M = math.prod(game.image_shape), game.batch_size
    layers = [d * hidden, hidden * 2 * F_, F_ * hidden, hidden * d]  # encoder, then decoder
    forward = 2 * G * M * sum(layers)
    flops, seconds = step_matmuls(game, pop, steps=2)
    assert flops == 3 * forward - 2 * G * M * layers[0]
    assert 0 < seconds < 1
