"""The channel: routing, noise, drops, gradient per edge, and exact bit accounting."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from commenv.channel import Channel, float_message_bits, make_adjacency, quantize, ring_offsets


@st.composite
def graphs(draw, max_n: int = 6):
    n = draw(st.integers(2, max_n))
    bits = draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))
    adj = np.array(bits, dtype=bool).reshape(n, n)
    np.fill_diagonal(adj, False)  # user graphs may not have self-loops
    return adj


def brute_force_route(adj, payload, send_mask):
    """Reference: loop over every receiver and sender."""
    b, n = payload.shape[:2]
    out = {}
    for env in range(b):
        for r in range(n):
            for s in range(n):
                if s != r and adj[s, r] and send_mask[env, s, r]:
                    out[(env, r, s)] = payload[env, s]
    return out


@settings(max_examples=60, deadline=None)
@given(adj=graphs(), num_envs=st.integers(1, 3), bits=st.integers(1, 5), seed=st.integers(0, 99))
def test_route_matches_brute_force(adj, num_envs, bits, seed, device):
    n = adj.shape[0]
    chan = Channel(torch.as_tensor(adj), device=device)
    gen = torch.Generator().manual_seed(seed)
    payload = torch.randint(0, 2, (num_envs, n, bits), generator=gen).float()
    send = torch.rand(num_envs, n, n, generator=gen) < 0.7
    d = chan.route(payload.to(device), send_mask=send.to(device))
    expected = brute_force_route(make_adjacency(adj, n), payload, send)
    got = {}
    for env in range(num_envs):
        for r in range(n):
            for j, s in enumerate(chan.senders[r].tolist()):
                if s >= 0 and d.delivered[env, r, j]:
                    got[(env, r, s)] = d.inbox[env, r, j].cpu()
                else:
                    assert torch.all(d.inbox[env, r, j] == 0)
    assert got.keys() == expected.keys()
    for key in got:
        assert torch.equal(got[key], expected[key])
    # Exact accounting: every used edge costs `bits` bits to its sender.
    per_sender = torch.zeros(num_envs, n, dtype=torch.long)
    for env, _, s in expected:
        per_sender[env, s] += bits
    assert torch.equal(d.bits_sent.cpu(), per_sender)
    assert torch.equal(d.bits_received.sum(1).cpu(), per_sender.sum(1))
    assert chan.total_bits() == int(per_sender.sum())


@settings(max_examples=30, deadline=None)
@given(adj=graphs(), drop=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_drops_are_counted_and_never_delivered(adj, drop, seed, device):
    n = adj.shape[0]
    chan = Channel(torch.as_tensor(adj), drop_prob=drop, device=device)
    payload = torch.ones(4, n, 3, device=device)
    d = chan.route(payload, generator=torch.Generator(device).manual_seed(seed))
    sent_edges = int(make_adjacency(adj, n).sum()) * 4
    assert int(d.delivered.sum()) + int(d.dropped.sum()) == sent_edges
    assert int(d.bits_sent.sum()) == sent_edges * 3  # drops still cost the sender
    assert int(d.bits_received.sum()) == int(d.delivered.sum()) * 3
    assert torch.all(d.inbox[~d.delivered] == 0)
    assert int(chan.counters["message"]["messages_dropped"].sum()) == int(d.dropped.sum())


def test_flip_noise_rate_and_bits_stay_bits(device):
    chan = Channel.from_spec("all_to_all", 3, flip_prob=0.25, device=device)
    payload = torch.zeros(2000, 3, 16, device=device)
    d = chan.route(payload, generator=torch.Generator(device).manual_seed(0))
    assert set(d.inbox.unique().tolist()) <= {0.0, 1.0}
    rate = float(d.inbox.mean())
    assert 0.23 < rate < 0.27


def test_flip_noise_refused_for_float_payloads(device):
    chan = Channel.from_spec("one_way", 2, flip_prob=0.1, device=device)
    with pytest.raises(ValueError, match="binary"):
        chan.route(torch.rand(1, 2, 4), binary=False, bits_per_message=128)


def test_gradient_flows_only_on_open_edges(device):
    chan = Channel.from_spec("all_to_all", 3, device=device)
    msgs = torch.rand(2, 3, 4, device=device, requires_grad=True)
    grad_mask = torch.zeros(3, 3, dtype=torch.bool, device=device)
    grad_mask[0, 1] = True  # only agent_1's copy of agent_0's message keeps the graph
    d = chan.route(msgs, grad_mask=grad_mask)
    receiver_1_slot_of_0 = chan.in_neighbours(1).index(0)
    loss = d.inbox.sum()
    loss.backward()
    # agent_0's message reaches agents 1 and 2, but only the edge 0->1 is open.
    assert torch.all(msgs.grad[:, 0] == 1)
    assert torch.all(msgs.grad[:, 1:] == 0)
    assert d.inbox[:, 1, receiver_1_slot_of_0].requires_grad


def test_gradient_through_noisy_channel(device):
    chan = Channel.from_spec("one_way", 2, flip_prob=1.0, device=device)
    msgs = torch.full((1, 2, 3), 0.2, device=device, requires_grad=True)
    d = chan.route(msgs, grad_mask=True, generator=torch.Generator(device).manual_seed(0))
    assert torch.allclose(d.inbox[0, 1, 0].cpu(), torch.full((3,), 0.8))  # flipped 0.2 -> 0.8
    d.inbox.sum().backward()
    assert torch.allclose(msgs.grad[0, 0].cpu(), torch.full((3,), -1.0))  # d(1 - m)/dm


def test_named_graphs():
    assert make_adjacency("one_way", 2).tolist() == [[False, True], [False, False]]
    assert make_adjacency("two_way", 2).tolist() == [[False, True], [True, False]]
    assert int(make_adjacency("all_to_all", 4).sum()) == 12
    ring = make_adjacency("ring", 6, k=2)
    assert ring.sum(1).tolist() == [2] * 6 and ring.sum(0).tolist() == [2] * 6
    assert ring[0, 1] and ring[0, 5] and not ring[0, 2]
    assert torch.equal(make_adjacency("ring", 5, k=4), make_adjacency("all_to_all", 5))
    assert ring_offsets(3) == [1, -1, 2]
    edges = make_adjacency([(0, 2), (2, 1)], 3)
    assert edges.nonzero().tolist() == [[0, 2], [2, 1]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"graph": "star"}, "valid choices"),
        ({"graph": "ring"}, "k"),
        ({"graph": [(0, 5)]}, "edge"),
        ({"graph": np.ones((3, 3))}, "shape"),
    ],
)
def test_bad_graphs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_adjacency(kwargs["graph"], 2)


def test_bad_probabilities_and_payloads(device):
    with pytest.raises(ValueError, match="flip_prob"):
        Channel.from_spec("one_way", 2, flip_prob=1.5, device=device)
    with pytest.raises(ValueError, match="drop_prob"):
        Channel.from_spec("one_way", 2, drop_prob=float("nan"), device=device)
    chan = Channel.from_spec("one_way", 2, device=device)
    with pytest.raises(ValueError, match="payload"):
        chan.route(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="send_mask"):
        chan.route(torch.zeros(1, 2, 4), send_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bits_per_message"):
        chan.route(torch.zeros(1, 2, 4), binary=False)


@pytest.mark.parametrize("drop", [0.0, 0.4])
def test_route_into_out_gives_the_same_delivery(drop, device):
    payload = torch.randint(0, 2, (5, 3, 4), generator=torch.Generator().manual_seed(0)).float()
    payload = payload.to(device)
    plain, into = (Channel.from_spec("ring", 3, k=2, drop_prob=drop, device=device) for _ in "ab")
    out = torch.full((5, 3, plain.max_in_degree, 4), 7.0, device=device)
    got = [
        chan.route(payload, generator=torch.Generator(device=device).manual_seed(1), **kw)
        for chan, kw in ((plain, {}), (into, {"out": out}))
    ]
    assert torch.equal(got[0].inbox, got[1].inbox)
    assert torch.equal(got[0].delivered, got[1].delivered)
    assert plain.total_bits() == into.total_bits()
    with pytest.raises(ValueError, match="out must be a torch.float32 tensor of shape"):
        into.route(payload, out=torch.empty(5, 3, 4, device=device))
    assert into.total_bits() == plain.total_bits()  # the refused call counted nothing


def test_counters_by_tag(device):
    chan = Channel.from_spec("all_to_all", 3, device=device)
    chan.route(torch.zeros(2, 3, 5), tag="a")
    chan.route(torch.zeros(1, 3, 7), binary=False, bits_per_message=32 * 7, tag="b")
    assert chan.total_bits(["a"]) == 2 * 6 * 5
    assert chan.total_bits(["b"]) == 6 * 32 * 7
    assert chan.total_bits() == 60 + 6 * 224
    chan.reset_counters()
    assert chan.total_bits() == 0


@settings(max_examples=30, deadline=None)
@given(adj=graphs(), seed=st.integers(0, 99))
def test_sum_to_senders_matches_brute_force(adj, seed, device):
    n = adj.shape[0]
    chan = Channel(torch.as_tensor(adj), device=device)
    values = torch.rand(
        3, n, max(chan.max_in_degree, 1), generator=torch.Generator().manual_seed(seed)
    )[..., : chan.max_in_degree]
    expected = torch.zeros(3, n)
    for r in range(n):
        for j, s in enumerate(chan.senders[r].tolist()):
            if s >= 0:
                expected[:, s] += values[:, r, j]
    assert torch.allclose(chan.sum_to_senders(values.to(device)).cpu(), expected, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 4, 8, 15])
def test_quantize_uniform_levels_per_vector(bits):
    gen = torch.Generator().manual_seed(bits)
    scale = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)[:, None]
    x = torch.randn(5, 3, 40, generator=gen, dtype=torch.float64) * scale
    q = quantize(x, bits)
    low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    step = (high - low) / (2**bits - 1)
    # every value lands on one of the 2**bits levels of its own vector, the nearest one
    level = (q - low) / step
    torch.testing.assert_close(level, level.round(), atol=1e-3, rtol=0)
    assert ((q - x).abs() <= step / 2 + 1e-5 * high.abs().clamp(min=1)).all()
    assert level.round().unique().numel() <= 2**bits
    torch.testing.assert_close(q.amin(-1), x.amin(-1))  # the ends travel exactly
    assert float_message_bits(7, 40, bits) == 7 * (40 * bits + 64)


def test_quantize_exact_half_and_constant_vectors():
    x = torch.tensor([[0.1, 1 / 3, 1e-4], [2.0, 2.0, 2.0]])
    assert torch.equal(quantize(x, 32), x) and torch.equal(quantize(x, 64), x)
    assert torch.equal(quantize(x, 16), x.half().float())
    assert not torch.equal(quantize(x, 16), x)
    assert torch.equal(quantize(x, 4)[1], x[1])  # no division by a zero range
    assert float_message_bits(3, 10, 32) == 3 * 10 * 32
    assert float_message_bits(3, 10, 16) == 3 * 10 * 16
    for bad in (0, 20, 31, 2.5, True):
        with pytest.raises(ValueError, match="float_bits"):
            quantize(x, bad)


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        ([[1, 1], [0, 0]], "self-loops"),  # agent 0 would hear itself
        ([[0, 2], [0.5, 0]], "only 0/1"),  # was cast to bool: two edges
        ([[0, -1], [0, 0]], "only 0/1"),
        ([[0, 1, 0], [1, 0, 1]], "square"),
    ],
)
def test_a_bad_adjacency_is_refused_not_cast(matrix, match, device):
    """Channel checks a matrix as make_adjacency checks a user graph: nothing is cast or
    cleared silently."""
    with pytest.raises(ValueError, match=match):
        Channel(torch.tensor(matrix), device=device)


def test_half_precision_saturates_instead_of_arriving_as_inf():
    """A finite payload stays finite through a 16-bit channel (+-65504 at most)."""
    x = torch.tensor([[1e5, -1e9, 1.0, 65504.0]])
    got = quantize(x, 16)
    assert torch.isfinite(got).all()
    assert got.tolist() == [[65504.0, -65504.0, 1.0, 65504.0]]
