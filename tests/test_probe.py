"""Linear probe: learns, is batched over probes, never touches the probed model, seeds."""

import pytest
import torch

from commenv.probe import BestValidation, LinearProbe, fit_linear_probe


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (n,), generator=g)
    centres = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    return centres[y] + torch.randn(n, 4, generator=g), y


def test_fit_separates_informative_from_noise_features_and_is_seeded(device):
    x, y = _blobs(600, 0)
    noise = torch.randn(600, 4, generator=torch.Generator().manual_seed(1))
    feats = torch.stack([x, noise], 1).to(device)  # probe 0 informative, probe 1 pure noise
    y = y.to(device)
    split = dict(
        train_x=feats[:400],
        train_y=y[:400],
        val_x=feats[400:500],
        val_y=y[400:500],
        test_x=feats[500:],
        test_y=y[500:],
        num_classes=3,
        epochs=15,
        batch_size=64,
    )
    a = fit_linear_probe(**split, seed=3)
    b = fit_linear_probe(**split, seed=3)
    assert a.test_acc[0] > 0.9
    assert a.test_acc[1] < 0.55  # chance is 1/3
    assert torch.equal(a.test_acc, b.test_acc) and torch.equal(a.val_curve, b.val_curve)
    assert a.val_curve.shape == (15, 2)
    assert int(a.best_epoch[0]) == int(a.val_curve[:, 0].argmax())


def test_online_update_leaves_the_features_graph_alone(device):
    x, y = (t.to(device) for t in _blobs(256, 2))
    encoder = torch.nn.Linear(4, 4).to(device)
    feats = encoder(x)
    probe = LinearProbe(1, 4, 3, lr=1e-2).to(device)
    before = probe.accuracy(feats, y)
    for _ in range(100):
        probe.update(feats, y)
    assert encoder.weight.grad is None  # the probe's loss never reaches the probed model
    assert probe.accuracy(feats, y)[0] > before[0]


def test_best_validation_keeps_test_at_best_val():
    best = BestValidation(2)
    best.update(1, torch.tensor([0.5, 0.9]), torch.tensor([0.4, 0.8]))
    best.update(2, torch.tensor([0.7, 0.6]), torch.tensor([0.65, 0.1]))
    best.update(3, torch.tensor([0.7, 0.2]), torch.tensor([0.0, 0.0]))  # tie: keep the first
    assert best.test_at_best.tolist() == pytest.approx([0.65, 0.8])
    assert best.best_step.tolist() == [2, 1]


def test_bad_inputs_raise_value_error():
    probe = LinearProbe(2, 4, 3)
    with pytest.raises(ValueError, match=r"features must be \(N, 2, 4\)"):
        probe(torch.zeros(5, 3, 4))
    with pytest.raises(ValueError, match="labels must lie in"):
        probe.update(torch.zeros(5, 2, 4), torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="labels must be"):
        probe.accuracy(torch.zeros(5, 2, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        LinearProbe(1, 4, 1)
    with pytest.raises(ValueError, match="BestValidation|val_acc"):
        BestValidation(2).update(0, torch.zeros(3), torch.zeros(3))
    x, y = _blobs(30, 0)
    with pytest.raises(ValueError, match="share"):
        fit_linear_probe(x, y, x[:, :3], y, x, y, num_classes=3)


def test_each_probe_stops_early_on_its_own(device):
    """With patience, a probe keeps the checkpoint it had when its own validation accuracy
    stopped improving, however long the probes beside it go on improving: the best epoch of
    every probe is the one its own curve and the patience rule give."""
    x, y = _blobs(600, 0)
    noise = torch.randn(600, 4, generator=torch.Generator().manual_seed(1))
    feats = torch.stack([noise, x * 0.2], 1).to(device)  # 1 learns slowly: it goes on longer
    y = y.to(device)
    res = fit_linear_probe(
        feats[:400], y[:400], feats[400:500], y[400:500], feats[500:], y[500:],
        num_classes=3, epochs=40, batch_size=64, lr=1e-3, seed=0, patience=2,
    )  # fmt: skip
    curve = res.val_curve
    for p in range(2):
        best, best_epoch, since = -1.0, -1, 0
        for epoch, v in enumerate(curve[:, p].tolist()):  # the rule, probe by probe
            if v > best:
                best, best_epoch, since = v, epoch, 0
            else:
                since += 1
                if since >= 2:
                    break
        assert int(res.best_epoch[p]) == best_epoch, p
    # the noise probe stopped long before the run ended (probe 1 kept it going)
    assert len(curve) > int(res.best_epoch[0]) + 2 + 5
    assert int(curve[:, 0].argmax()) > int(res.best_epoch[0])  # it improved after it stopped
    # the tracker itself: a probe outside `active` keeps its checkpoint
    track = BestValidation(2)
    track.update(0, torch.tensor([0.5, 0.5]), torch.tensor([0.4, 0.4]))
    improved = track.update(
        1, torch.tensor([0.9, 0.9]), torch.tensor([0.8, 0.8]), active=torch.tensor([False, True])
    )
    assert improved.tolist() == [False, True]
    assert torch.allclose(track.test_at_best, torch.tensor([0.4, 0.8]))


def test_standardize_removes_a_per_unit_affine_map(device):
    """With ``standardize``, a probe reads features through the train split's z-scores, so a
    per-unit scale and offset of every split (what training often does to hidden units) leaves
    the fit as it was; without it, the same map costs Adam most of its accuracy."""
    x, y = _blobs(900, 0)
    x, y = x.to(device), y.to(device)
    scale = torch.tensor([40.0, 0.02, 7.0, 300.0], device=device)
    shift = torch.tensor([500.0, -3.0, 90.0, 1e3], device=device)
    warped = x * scale + shift

    def fit(f, **kw):
        return fit_linear_probe(
            f[:600], y[:600], f[600:750], y[600:750], f[750:], y[750:],
            num_classes=3, epochs=15, batch_size=64, lr=1e-2, seed=0, **kw,
        )  # fmt: skip

    plain = fit(x, standardize=True)
    moved = fit(warped, standardize=True)
    assert torch.allclose(moved.val_curve, plain.val_curve, atol=2 / 150)  # a sample at most
    assert abs(float(moved.test_acc[0]) - float(plain.test_acc[0])) <= 2 / 150
    assert float(plain.test_acc[0]) > 0.9
    raw = fit(warped)
    assert float(raw.test_acc[0]) < float(moved.test_acc[0]) - 0.1
