"""Channel.send: sparse routing of listed messages, billed exactly as route() bills them."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from commenv.channel import Channel


@st.composite
def graphs(draw, max_n: int = 6):
    n = draw(st.integers(2, max_n))
    bits = draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))
    adj = np.array(bits, dtype=bool).reshape(n, n)
    np.fill_diagonal(adj, False)
    return adj


@settings(max_examples=40, deadline=None)
@given(adj=graphs(), num_envs=st.integers(1, 3), seed=st.integers(0, 99))
def test_send_matches_route_and_its_counters(adj, num_envs, seed):
    """The same traffic through route(send_mask) and send(edges): same deliveries (slot order,
    arrival ranks), same per-agent counts, same counters under every tag."""
    n = adj.shape[0]
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(num_envs, n, n, generator=gen) < 0.6) & torch.as_tensor(adj)
    # device-free: CPU generators drive the traffic being compared
    dense = Channel(torch.as_tensor(adj))  # device-free: as above
    sparse = Channel(torch.as_tensor(adj))  # device-free: as above
    payload = torch.randn(num_envs, n, 2, generator=gen)
    d = dense.route(payload, send_mask=mask, binary=False, bits_per_message=7, tag="a")
    b, s, r = mask.nonzero(as_tuple=True)
    shuffle = torch.randperm(len(b), generator=gen)  # any order in, slot order out
    m = sparse.send(
        b[shuffle], s[shuffle], r[shuffle], num_envs=num_envs, bits_per_message={"a": 7}
    )
    assert torch.equal(m.sent * 7, d.bits_sent)
    assert torch.equal(m.arrivals * 7, d.bits_received)
    for key in ("bits_sent", "bits_received", "messages_sent", "messages_dropped"):
        assert torch.equal(sparse.counters["a"][key], dense.counters["a"][key]), key
    rank = d.delivered.long().cumsum(-1) - 1  # arrival order in slot order
    expected = []
    for env, rcv, j in d.delivered.nonzero().tolist():
        snd = int(dense.senders[rcv, j])
        expected.append((env, snd, rcv, int(rank[env, rcv, j])))
        assert torch.equal(d.inbox[env, rcv, j], payload[env, snd])
    columns = (m.env, m.sender, m.receiver, m.rank)
    got = list(zip(*(c.tolist() for c in columns), strict=True))
    assert got == expected
    assert torch.equal(m.gather(payload), payload[m.env, m.sender])


def test_send_drops_and_bad_messages():
    chan = Channel.from_spec(
        "all_to_all", 3, drop_prob=0.5
    )  # device-free: CPU generators drive the traffic being compared
    b = torch.zeros(6, dtype=torch.long)
    s = torch.tensor([0, 0, 1, 1, 2, 2])
    r = torch.tensor([1, 2, 0, 2, 0, 1])
    gen = torch.Generator().manual_seed(0)
    m = chan.send(b, s, r, num_envs=1, bits_per_message={"x": 3}, generator=gen)
    lost = int((~m.delivered).sum())
    assert int(m.sent.sum()) == 6 and int(m.arrivals.sum()) == 6 - lost
    assert bool((m.rank[~m.delivered] == -1).all())
    counters = chan.counters["x"]
    assert int(counters["bits_sent"].sum()) == 18  # drops still cost the sender
    assert int(counters["bits_received"].sum()) == 3 * (6 - lost)
    assert int(counters["messages_dropped"].sum()) == lost
    ring = Channel.from_spec(
        "one_way", 3
    )  # device-free: CPU generators drive the traffic being compared
    with pytest.raises(ValueError, match="not an edge"):
        ring.send(
            torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), num_envs=1, bits_per_message={}
        )
    with pytest.raises(ValueError, match="not an edge"):
        ring.send(
            torch.tensor([2]), torch.tensor([0]), torch.tensor([1]), num_envs=1, bits_per_message={}
        )
    with pytest.raises(ValueError, match="twice"):
        ring.send(
            torch.tensor([0, 0]),
            torch.tensor([0, 0]),
            torch.tensor([2, 2]),
            num_envs=1,
            bits_per_message={},
        )
    with pytest.raises(ValueError, match="flip_prob"):
        Channel.from_spec(
            "one_way", 2, flip_prob=0.1
        ).send(  # device-free: CPU generators drive the traffic being compared
            b[:1], s[:1], r[:1], num_envs=1, bits_per_message={}
        )
    empty = ring.send(b[:0], s[:0], r[:0], num_envs=2, bits_per_message={"x": 1})
    assert empty.sent.shape == (2, 3) and int(empty.arrivals.sum()) == 0
