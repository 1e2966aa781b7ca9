"""Speakers: shapes, wrappers, the MI and likelihood terms, the four levels via the channel."""

import math

import pytest
import torch

import commenv
from commenv_agents.speaker_training import LEVEL_GAMES, SpeakerRunConfig, train_speakers
from commenv_agents.speakers import (
    GumbelSoftmaxWrapper,
    MIDiscriminator,
    ReinforceWrapper,
    Speaker,
    TemperatureSchedule,
    contrastive_likelihood_loss,
    exchange,
    gumbel_softmax_bits,
    likelihood_loss,
    mi_loss,
    mi_reward,
)


def _game(device, level: str, num_envs: int = 16):
    return commenv.partial_obs_v0.batched(
        num_envs, device=device, **LEVEL_GAMES[level], num_candidates=0, message_bits=8
    )


def test_speaker_shapes_and_bad_views(device):
    speaker = Speaker(2, 64, 32, hidden=(16, 8)).to(device)
    logits, feats = speaker(torch.rand(5, 2, 64, device=device))
    assert logits.shape == (5, 2, 32, 2) and feats.shape == (5, 2, 8)
    with pytest.raises(ValueError, match=r"views must be \(batch, n_agents=2, D=64\)"):
        speaker(torch.rand(5, 64, device=device))
    with pytest.raises(ValueError, match="hidden"):
        Speaker(2, 64, 32, hidden=())


def test_temperature_schedule():
    sched = TemperatureSchedule(start=2.0, decay=0.5, every=10, floor=0.3)
    assert [sched(s) for s in (0, 9, 10, 25, 1000)] == [2.0, 2.0, 1.0, 0.5, 0.3]
    with pytest.raises(ValueError):
        TemperatureSchedule(decay=1.5)
    with pytest.raises(ValueError):
        TemperatureSchedule(every=0)


def test_gumbel_bits_relaxed_hard_and_straight_through(device):
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(64, 8, 2, device=device, requires_grad=True)
    soft = gumbel_softmax_bits(logits, 1.0, generator=g)
    assert soft.shape == (64, 8) and 0 <= soft.min() and soft.max() <= 1
    cold = gumbel_softmax_bits(logits, 0.01, generator=g)
    assert ((cold < 0.01) | (cold > 0.99)).float().mean() > 0.95
    st = gumbel_softmax_bits(logits, 1.0, straight_through=True, generator=g)
    assert set(st.unique().tolist()) <= {0.0, 1.0}
    st.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_wrappers_train_vs_eval(device):
    speaker = Speaker(2, 10, 6, hidden=(8,)).to(device)
    views = torch.rand(4, 2, 10, device=device)
    gs = GumbelSoftmaxWrapper(speaker, schedule=TemperatureSchedule(1.0, 0.5, 1, 0.1))
    assert gs.set_step(3) == pytest.approx(0.125)
    soft = gs(views).message
    assert not set(soft.unique().tolist()) <= {0.0, 1.0}
    gs.eval()
    out = gs(views)
    assert torch.equal(out.message, (out.logits[..., 1] > out.logits[..., 0]).float())

    rf = ReinforceWrapper(speaker)
    out = rf(views, generator=torch.Generator(device=device).manual_seed(0))
    p1 = torch.softmax(out.logits, -1)[..., 1]
    bern = torch.distributions.Bernoulli(probs=p1)
    assert torch.allclose(out.log_prob, bern.log_prob(out.message).sum(-1), atol=1e-5)
    assert torch.allclose(out.entropy, bern.entropy().sum(-1), atol=1e-5)


def test_mi_discriminator_learns_to_tell_joint_from_marginal_pairs(device):
    torch.manual_seed(0)
    views = torch.rand(128, 2, 12).to(device)
    messages = (views[..., :6] > 0.5).float()  # a message that is a function of the view
    disc = MIDiscriminator(2, 12, 6, hidden=(32,)).to(device)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    first = mi_loss(disc, views, messages)
    assert first.shape == (2,)
    for _ in range(150):
        opt.zero_grad()
        mi_loss(disc, views, messages).sum().backward()
        opt.step()
    assert (mi_loss(disc, views, messages) < 0.5 * math.log(4)).all()
    assert (mi_reward(disc, views, messages) > math.log(0.25)).float().mean() > 0.9
    with pytest.raises(ValueError, match="at least 2"):
        mi_loss(disc, views[:1], messages[:1])


def test_infonce_estimator_learns_and_checks_its_arguments(device):
    torch.manual_seed(0)
    views = torch.rand(128, 2, 12).to(device)
    messages = (views[..., :6] > 0.5).float()
    disc = MIDiscriminator(2, 12, 6, hidden=(32,)).to(device)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    kw = {"estimator": "infonce", "negatives": 7}
    first = mi_loss(disc, views, messages, **kw)
    # an untrained critic cannot pick the joint pair among 8: the loss starts near log 8
    assert first.shape == (2,) and torch.allclose(
        first, torch.full((2,), math.log(8), device=device), atol=0.3
    )
    for _ in range(150):
        opt.zero_grad()
        mi_loss(disc, views, messages, **kw).sum().backward()
        opt.step()
    assert (mi_loss(disc, views, messages, **kw) < 0.5 * math.log(8)).all()
    reward = mi_reward(disc, views, messages, **kw)
    assert reward.shape == (128, 2) and float(reward.mean()) > 0.5 * math.log(1 / 8)
    with pytest.raises(ValueError, match="negatives must be in"):
        mi_loss(disc, views[:4], messages[:4], **kw)
    with pytest.raises(ValueError, match="valid choices"):
        mi_loss(disc, views, messages, estimator="mine")


@pytest.mark.parametrize("term", [likelihood_loss, contrastive_likelihood_loss])
@pytest.mark.parametrize("level", list(LEVEL_GAMES))
def test_levels_come_from_the_channel(level, term, device):
    """The likelihood term's gradient reaches the teacher exactly on feedback/both."""
    game = _game(device, level)
    torch.manual_seed(0)
    speaker = Speaker(2, game.num_features, 8, hidden=(8,)).to(device)
    views = game.views(torch.arange(16, device=device))
    out = GumbelSoftmaxWrapper(speaker)(views)
    delivery = exchange(out.message, game.channel, game.grad_mask)
    own = torch.softmax(out.logits, -1)[..., 1]
    ll = term(own, delivery)
    heard = delivery.delivered.any(-1).any(0)  # which agents listen
    assert heard.tolist() == ([False, True] if level != "both" else [True, True])
    assert (ll[~heard] == 0).all() and (ll[heard] > 0).all()
    ll.sum().backward()
    head = speaker.head.weight.grad.abs().sum((1, 2))  # per agent
    teacher_gets_feedback = level in ("feedback", "both")
    assert bool(head[0] > 0) == teacher_gets_feedback
    assert head[1] > 0  # the student always learns from predicting what it heard


def _brute_contrastive(own, delivery):
    """Loop-by-loop reference of ``contrastive_likelihood_loss``."""
    B, n, _ = own.shape
    total = torch.zeros(n, dtype=torch.float64, device=own.device)
    count = torch.zeros(n, dtype=torch.float64, device=own.device)
    p = own.double().clamp(1e-6, 1 - 1e-6)
    for b in range(B):
        for i in range(n):
            for s in range(delivery.inbox.shape[2]):
                if not delivery.delivered[b, i, s]:
                    continue
                cands = [c for c in range(B) if delivery.delivered[c, i, s]]
                scores = torch.stack(
                    [
                        (
                            delivery.inbox[c, i, s].double() * p[b, i].log()
                            + (1 - delivery.inbox[c, i, s].double()) * (1 - p[b, i]).log()
                        ).sum()
                        for c in cands
                    ]
                )
                total[i] -= torch.log_softmax(scores, 0)[cands.index(b)]
                count[i] += 1
    return total / count.clamp(min=1)


def test_contrastive_likelihood_matches_brute_force_and_defeats_constant_messages(device):
    game = _game(device, "both", 12)
    gen = torch.Generator().manual_seed(1)
    messages = torch.rand(12, 2, 8, generator=gen).round().to(device)
    own = torch.rand(12, 2, 8, generator=gen).to(device)
    delivery = exchange(messages, game.channel, False)
    # drop some deliveries by hand: the loss must average over delivered slots only
    delivery.delivered = delivery.delivered.clone()
    delivery.delivered[::3] = False
    got = contrastive_likelihood_loss(own, delivery)
    expected = _brute_contrastive(own, delivery)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)
    # every world sends the same message: nothing to identify, the loss is log(#candidates)
    same = exchange(torch.ones(12, 2, 8, device=device), game.channel, False)
    flat = contrastive_likelihood_loss(torch.full((12, 2, 8), 0.9, device=device), same)
    torch.testing.assert_close(flat, torch.full((2,), math.log(12), device=device))
    # whereas the thesis' term is nearly satisfied by those constant messages
    assert (likelihood_loss(torch.full((12, 2, 8), 0.999, device=device), same) < 0.01).all()
    # a listener whose own distribution points at its world's message pays almost nothing
    bits = [[int(c) for c in f"{b:08b}"] for b in range(12)]
    distinct = torch.tensor(bits, dtype=torch.float, device=device)
    sent = exchange(distinct[:, None].expand(12, 2, 8), game.channel, False)
    sharp = distinct[:, None].expand(12, 2, 8) * 0.998 + 0.001
    assert (contrastive_likelihood_loss(sharp, sent) < 0.01).all()


def test_train_speakers_is_seeded_and_reports_curves(device):
    cfg = SpeakerRunConfig(
        level="both",
        steps=30,
        eval_every=10,
        hidden=(16,),
        disc_hidden=(16,),
        batch_size=32,
        message_bits=8,
        device=str(device),
    )
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    a = train_speakers(cfg)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is left alone
    torch.manual_seed(99)  # and the run does not depend on it
    b = train_speakers(cfg)
    assert a.steps == [10, 20, 30] and len(a.val_acc) == 3 and len(a.val_acc[0]) == 2
    assert a.val_acc == b.val_acc and a.test_at_best == b.test_at_best
    assert 0 <= a.student_test <= 100
    pf = a.peak_final()
    assert pf["peak_val"] >= pf["final_val"] and pf["peak_step"] in a.steps


TINY = dict(eval_every=10, hidden=(16,), disc_hidden=(16,), batch_size=32, message_bits=8)
"""The small speakers of the training-loop tests."""


def test_reinforce_trains_through_the_env_rewards(device):
    cfg = SpeakerRunConfig(**TINY, kind="reinforce", level="feedback", steps=20, device=str(device))
    result = train_speakers(cfg)
    assert len(result.steps) == 2 and all(math.isnan(t) for t in result.temperature)
    assert result.val_acc == train_speakers(cfg).val_acc


def test_config_errors(device):
    with pytest.raises(ValueError, match="valid choices"):
        SpeakerRunConfig(level="loud", device=str(device))
    with pytest.raises(ValueError, match="valid choices"):
        SpeakerRunConfig(kind="ppo", device=str(device))
    with pytest.raises(ValueError, match="valid choices"):
        SpeakerRunConfig(likelihood="telepathy", device=str(device))
    with pytest.raises(ValueError, match="batch_size"):
        SpeakerRunConfig(batch_size=1, device=str(device))


@pytest.mark.parametrize("level", ["receive", "feedback", "both"])  # "none" has no such term
def test_reinforce_contrastive_credit_follows_the_feedback_edges(level, device):
    from commenv_agents.speaker_training import _contrastive_credit

    cfg = SpeakerRunConfig(
        kind="reinforce",
        level=level,
        likelihood="contrastive",
        likelihood_weight=1.0,
        message_bits=8,
        device=str(device),
    )
    game = _game(device, level)
    torch.manual_seed(0)
    speaker = Speaker(2, game.num_features, 8, hidden=(8,)).to(device)
    out = ReinforceWrapper(speaker)(game.views(torch.arange(16, device=device)))
    gen = torch.Generator(device=device).manual_seed(0)
    loss, credit = _contrastive_credit(cfg, game, out, gen)
    assert credit.shape == (16, 2) and not credit.requires_grad
    loss.backward()
    head = speaker.head.weight.grad.abs().sum((1, 2))
    listeners = [1] if level != "both" else [0, 1]
    assert [bool(h > 0) for h in head] == [i in listeners for i in range(2)]
    rewarded = {"receive": [], "feedback": [0], "both": [0, 1]}[level]
    assert [bool((c != 0).any()) for c in credit.T] == [i in rewarded for i in range(2)]
    assert (credit <= 0).all()  # a speaker is paid minus its listeners' cross-entropy


def test_reinforce_trains_with_the_contrastive_term(device):
    cfg = SpeakerRunConfig(
        kind="reinforce",
        level="both",
        likelihood="contrastive",
        steps=20,
        eval_every=10,
        hidden=(16,),
        disc_hidden=(16,),
        batch_size=32,
        message_bits=8,
        device=str(device),
    )
    result = train_speakers(cfg)
    assert result.val_acc == train_speakers(cfg).val_acc and len(result.steps) == 2


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 2.5),
        ("message_bits", 2.5),
        ("mi_negatives", 0),
        ("hidden", (0,)),
        ("hidden", 8),
        ("lr", float("nan")),
        ("probe_lr", 0.0),
        ("noise", 2.0),
        ("baseline_momentum", 2.0),
        ("entropy_coef", float("nan")),
        ("likelihood_weight", float("nan")),
        ("seed", -1),
        ("seed", 1.5),
        ("device", "bogus"),
        ("temperature", 0.5),
        ("speaker_cls", 3),
    ],
)
def test_speaker_run_config_refuses_bad_values_when_built(field, value):
    from commenv_agents.speaker_training import SpeakerRunConfig

    with pytest.raises(ValueError, match=field):
        SpeakerRunConfig(**{field: value})  # device-free: refused while the config is built


def test_reinforce_baseline_starts_at_the_first_rewards(monkeypatch, device):
    """The running-mean baseline starts at the first batch's mean reward: started at 0 it sat
    about log 4 off the MI reward for hundreds of steps, every advantage had the same sign and
    the speaker learned nothing in the quick preset."""
    import commenv_agents.speaker_training as training

    seen = []
    step = training._reinforce_step

    def spy(cfg, game, wrapper, disc, opt, gen, state):
        out = step(cfg, game, wrapper, disc, opt, gen, state)
        seen.append(state["baseline"].clone())
        return out

    monkeypatch.setattr(training, "_reinforce_step", spy)
    monkeypatch.setattr(
        training, "mi_reward", lambda disc, views, msg, **kw: torch.full(msg.shape[:2], -1.386)
    )
    cfg = SpeakerRunConfig(
        kind="reinforce", level="none", steps=1, eval_every=1, hidden=(16,), disc_hidden=(16,),
        batch_size=32, message_bits=8, device=str(device),
    )  # fmt: skip
    train_speakers(cfg)
    assert len(seen) == 1 and bool((seen[0] < -1.0).all())  # about the first rewards, not 0


def test_offline_probe_stages_leave_training_alone_and_pick_the_best_stage(device):
    """The offline probes (fit on frozen train-split features at each stage) draw nothing from
    the training streams: the online curves are those of a run without them, bit for bit; the
    reported stage is each agent's best by validation, and its test accuracy is that stage's."""
    kw = dict(TINY, level="both", steps=30)
    plain = train_speakers(SpeakerRunConfig(**kw, device=str(device)))
    probed = train_speakers(SpeakerRunConfig(**kw, device=str(device), offline_probe_stages=3))
    assert probed.val_acc == plain.val_acc and probed.test_acc == plain.test_acc
    assert plain.offline is None and plain.offline_student_test is None
    off = probed.offline
    assert off["steps"] == [10, 20, 30] and len(off["val_acc"]) == 3
    for agent in range(2):
        curve = [stage[agent] for stage in off["val_acc"]]
        best = max(range(3), key=curve.__getitem__)
        assert off["best_step"][agent] == off["steps"][best]
        assert off["test_at_best"][agent] == off["test_acc"][best][agent]
    assert probed.offline_student_test == off["test_at_best"][1]
    assert 0 < off["seconds"] < probed.seconds
    again = train_speakers(SpeakerRunConfig(**kw, device=str(device), offline_probe_stages=3))
    assert again.offline["test_acc"] == off["test_acc"]  # seeded


def test_offline_probe_stages_are_checked_when_built():
    with pytest.raises(ValueError, match="offline_probe_stages must be <= steps"):
        SpeakerRunConfig(steps=5, offline_probe_stages=6)  # device-free: refused when built
    with pytest.raises(ValueError, match="offline_probe_stages"):
        SpeakerRunConfig(offline_probe_stages=-1)  # device-free: refused when built


def test_an_untrained_speaker_is_probed_offline_once(device, monkeypatch):
    """At lr 0 the features are the same at every stage: one fit serves them all, with the
    values a fit at each stage would give."""
    import commenv_agents.speaker_training as st

    calls = []
    original = st._Evaluator.offline
    monkeypatch.setattr(
        st._Evaluator, "offline", lambda self, *a: calls.append(1) or original(self, *a)
    )
    kw = dict(TINY, level="none", steps=20, lr=0.0, offline_probe_stages=2)
    result = train_speakers(SpeakerRunConfig(**kw, device=str(device)))
    assert len(calls) == 1
    assert result.offline["test_acc"][0] == result.offline["test_acc"][1]
