"""Communication protocols: exact bits per tag, error feedback, sync SGD = one model on the
combined batch, PowerSGD = torch's hook, short convergence runs, and bad input."""

import math
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from commenv.channel import Channel, make_adjacency, quantize
from commenv.node_graph import NodeGraphGame
from commenv_agents.protocols import (
    PROTOCOL_SPECS,
    PROTOCOLS,
    Int8,
    PowerSGDCompressor,
    Sign,
    TopK,
    index_bits,
    make_protocol,
    ring_allreduce_bits,
    run_protocol,
)

N, M, HIDDEN, FEAT = 3, 8, 16, 8
SHAPE, C = (1, 8, 8), 10
D = 64
# P of the MLP 64-16-8-10
P = D * HIDDEN + HIDDEN + HIDDEN * FEAT + FEAT + FEAT * C + C


def small(name, device, channel=None, **options):
    chan = channel or Channel(make_adjacency("all_to_all", N), device=device)
    proto = make_protocol(
        name,
        N,
        SHAPE,
        C,
        channel=chan,
        hidden=HIDDEN,
        feature_dim=FEAT,
        device=device,
        options={name: options} if options else None,
    )
    return proto, chan


def fake_views(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (N, M), generator=g)
    return {
        "images": torch.rand(N, M, *SHAPE, generator=g).to(device),
        "labels": torch.nn.functional.one_hot(labels, C).float().to(device),
        "payload": torch.zeros(N, M, 0, device=device),
        "from_inbox": torch.zeros(N, device=device),
        "inbox_fill": torch.zeros(N, device=device),
    }


def run_steps(proto, device, steps):
    out_valid = torch.ones(N, N - 1, dtype=torch.bool, device=device)
    for t in range(steps):
        bits, payload = proto.step(fake_views(device, t), out_valid)
        assert payload is None and int(bits.sum()) == 0  # gradient protocols never broadcast


def sent(chan, tag):
    return chan.counters[tag]["bits_sent"].tolist()


def test_ring_allreduce_bit_model():
    assert ring_allreduce_bits(10, 100) == 2 * 9 * 10 * 32  # 2 (N-1)/N 32 P when N | P
    assert ring_allreduce_bits(4, 10) == 2 * 3 * 3 * 32  # chunks of ceil(10 / 4)
    assert ring_allreduce_bits(1, 10) == 0 and ring_allreduce_bits(3, 0) == 0


@pytest.mark.parametrize(
    ("name", "per_step"),
    [
        ("sync_sgd", ring_allreduce_bits(N, P)),
        ("topk", (N - 1) * math.floor(0.05 * P) * (32 + index_bits(P))),
        ("int8", 2 * (N - 1) * (8 * math.ceil(P / N) + 64)),  # 2 (N - 1) compressed chunks
        ("sign", 2 * (N - 1) * (math.ceil(P / N) + 32)),
    ],
)
def test_gradient_bits_match_the_analytic_count(name, per_step, device):
    proto, chan = small(name, device, **({"ratio": 0.05} if name == "topk" else {}))
    run_steps(proto, device, 3)
    assert proto.num_params_per_node == P
    assert sent(chan, "gradients") == [3 * per_step] * N
    assert sent(chan, "init") == [(N - 1) * 32 * P, 0, 0]
    if name == "topk":  # an all-gather: one message to each peer
        assert proto.message_bits() * (N - 1) == per_step
    elif name != "sync_sgd":  # a compressed all-reduce: message_bits is the node's whole step
        assert proto.message_bits() == per_step
        assert per_step < ring_allreduce_bits(N, P) / 3  # 8 or 1 bits where sync sends 32
    assert proto.compute.forward == proto.compute.backward == 3 * N


def test_powersgd_bits_match_the_analytic_count(device):
    proto, chan = small("powersgd", device, rank=2)
    run_steps(proto, device, 2)
    # (n, m) per node, nn.Linear's (out, in) as the hook sees them: the weights compress at
    # rank 2 ((n + m) 2 * 2 < n m), the biases not
    compressed = [(16, 64), (8, 16), (10, 8)]
    lengths = [
        HIDDEN + FEAT + C,
        sum(n * 2 for n, _ in compressed),
        sum(m * 2 for _, m in compressed),
    ]
    assert proto.compressor.allreduce_lengths() == lengths
    per_step = sum(ring_allreduce_bits(N, n) for n in lengths)
    assert sent(chan, "gradients") == [2 * per_step] * N
    assert per_step < ring_allreduce_bits(N, P) / 4


def test_powersgd_sees_the_matrices_torch_layers_hold(device):
    """The compressor gets each node's parameters in nn.Linear's layout (weight (out, in)),
    the matrices torch's PowerSGD hook compresses under DDP, not BatchedLinear's (in, out)."""
    proto, _ = small("powersgd", device)
    flat = torch.cat([p.detach().reshape(N, -1) for p in proto.model.parameters()], 1)
    layers = [*proto.model.body, proto.model.head]
    node = 1
    hook_view = torch.cat(
        [
            t
            for layer in layers
            for t in (layer.weight[node].T.flatten(), layer.bias[node].flatten())
        ]
    )
    assert torch.equal(flat[node, proto.perm], hook_view.detach())
    assert torch.equal(flat[:, proto.perm][:, proto.unperm], flat)
    assert [s for s in proto.compressor.shapes if len(s) == 2] == [(16, 64), (8, 16), (10, 8)]


def test_periodic_protocols_bits(device):
    local, chan = small("local_sgd", device, period=2)
    run_steps(local, device, 5)
    assert sent(chan, "parameters") == [2 * ring_allreduce_bits(N, P)] * N
    codistill, chan = small("codistill", device, period=2)
    run_steps(codistill, device, 5)
    assert sent(chan, "checkpoints") == [2 * (N - 1) * 32 * P] * N
    assert codistill.compute.forward == 5 * N + 3 * N * (N - 1)  # peers from step 3 on
    assert codistill.compute.model_copies == N - 1


def test_ist_bits_are_the_subnets_both_ways(device):
    ist, chan = small("ist", device, period=2)
    run_steps(ist, device, 2)  # one round: download, 2 steps, upload
    sub = ist.subnet_params()
    assert int(sub.sum()) <= P  # the subnets share only the output bias
    assert ist.owner1.bincount().tolist() == [6, 5, 5]
    down_up = 2 * 32 * int(sub[1:].sum())
    assert sum(sent(chan, "subnets")) == down_up
    assert sent(chan, "subnets")[0] == down_up // 2  # node 0 (the server) sends the downloads
    assert 0 < ist.compute.pass_fraction < 1


def test_centralised_bits_are_the_shipped_minibatches(device):
    proto, chan = small("centralised", device)
    run_steps(proto, device, 2)
    assert sent(chan, "data") == [0] + [2 * M * (8 * D + index_bits(C))] * (N - 1)


def test_output_sharing_bits_are_the_games(device):
    game = NodeGraphGame(n_nodes=N, content="labels", batch_size=M, device=device, max_cycles=50)
    proto = make_protocol(
        "labels", N, game.image_shape, C, channel=game.channel, feature_dim=64, device=device
    )
    hist = run_protocol(game, proto, 20, test=(game.test_images, game.test_labels))
    assert hist[-1]["bits"] == game.bandwidth()["total"] > 0
    assert hist[-1]["compute"]["forward_passes"] == 20 * N


def test_channel_account_counts_per_tag(device):
    chan = Channel(make_adjacency("all_to_all", 3), device=device)
    chan.account("x", 5)
    chan.account("x", torch.tensor([1, 2, 3]), bits_received=0, messages=1)
    assert sent(chan, "x") == [6, 7, 8]
    assert chan.counters["x"]["bits_received"].tolist() == [5, 5, 5]
    assert chan.total_bits(["x"]) == 21
    with pytest.raises(ValueError, match="per agent"):
        chan.account("x", [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        chan.account("x", -1)


@pytest.mark.parametrize("cls", [TopK, Int8, Sign])
def test_error_feedback_keeps_the_residual_bounded(cls, device):
    options = {"ratio": 0.01} if cls is TopK else {}
    proto = cls(N, SHAPE, C, hidden=HIDDEN, feature_dim=FEAT, device=device, **options)
    g = torch.Generator().manual_seed(0)
    norms = []
    for _ in range(300):
        grads = torch.randn(N, P, generator=g).to(device)
        proto.exchange(grads)
        norms.append(float(proto.residual.norm(dim=1).max()))
    grad_norm = math.sqrt(P)
    # bounded: the residual stops growing and stays within a constant of one gradient
    assert max(norms[150:]) <= 1.2 * max(norms[:150])
    bound = {TopK: 1 / 0.01, Int8: 1.0, Sign: 2.0}[cls]
    assert max(norms) <= bound * grad_norm


@pytest.mark.parametrize("cls", [Int8, Sign])
def test_compressed_allreduce_by_hand(cls, device):
    """Step one of the reduce-scatter / all-gather, computed by hand from the chunks: every
    node applies the same re-compressed mean of the compressed chunks."""
    proto = cls(N, SHAPE, C, hidden=HIDDEN, feature_dim=FEAT, device=device)
    L = math.ceil(P / N)
    if cls is Int8:
        compress = lambda x: quantize(x, 8)  # noqa: E731 - the channel's own 8-bit levels
    else:
        compress = lambda x: x.abs().mean(-1, keepdim=True) * torch.where(x >= 0, 1.0, -1.0)  # noqa: E731
    grads = torch.randn(N, P, generator=torch.Generator().manual_seed(1)).to(device)
    applied = proto.exchange(grads)
    chunks = [[grads[i, j * L : (j + 1) * L] for j in range(N)] for i in range(N)]
    means = [sum(compress(chunks[i][j]) for i in range(N)) / N for j in range(N)]
    expected = torch.cat([compress(m) for m in means])
    assert applied.shape == (N, P)
    for node in range(N):
        torch.testing.assert_close(applied[node], expected, rtol=1e-6, atol=1e-6)
    own = torch.cat([compress(c) for c in chunks[0]])
    torch.testing.assert_close(proto.residual[0], grads[0] - own, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [Int8, Sign])
def test_compressed_allreduce_error_feedback_loses_nothing(cls, device):
    """With residuals on both sides, what was applied over T steps is the mean gradient over T
    steps minus what the residuals still hold: the compression delays, it never drops."""
    proto = cls(N, SHAPE, C, hidden=HIDDEN, feature_dim=FEAT, device=device)
    g = torch.Generator().manual_seed(2)
    applied = torch.zeros(P, dtype=torch.float64, device=device)
    true = torch.zeros(P, dtype=torch.float64, device=device)
    for _ in range(20):
        grads = torch.randn(N, P, generator=g).to(device)
        applied += proto.exchange(grads)[0].double()
        true += grads.double().mean(0)
    held = proto.residual.double().mean(0) + proto.server_residual.double().flatten()[:P]
    torch.testing.assert_close(applied, true - held, rtol=0, atol=1e-4)


def test_sync_sgd_is_one_model_on_the_combined_batch(device):
    sync, _ = small("sync_sgd", device)
    central, _ = small("centralised", device)
    run_steps(sync, device, 25)
    run_steps(central, device, 25)
    for p, q in zip(sync.model.parameters(), central.model.parameters(), strict=True):
        p = p.detach().reshape(N, -1)
        torch.testing.assert_close(p, q.detach().reshape(1, -1).expand_as(p), atol=1e-5, rtol=0)


def test_powersgd_full_rank_is_the_exact_average():
    g = torch.Generator().manual_seed(0)
    comp = PowerSGDCompressor(4, [(6, 3)], rank=3, min_compression_rate=0.1)
    error = torch.zeros(4, 18, dtype=torch.float64)
    for _ in range(3):
        flat = torch.randn(4, 18, generator=g, dtype=torch.float64)
        out, lengths = comp(flat)
        # the error residuals average to zero, so every node applies the mean gradient
        torch.testing.assert_close(out, flat.mean(0, keepdim=True).expand_as(out))
        assert lengths == [0, 18, 9]
        error = flat + error - out  # what the hook keeps: the input minus what was applied
        torch.testing.assert_close(comp.error, error)


WORKER = textwrap.dedent(
    """
    import datetime, os, sys, torch, torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=30))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    ddp = DDP(model)
    state = ps.PowerSGDState(process_group=None, matrix_approximation_rank=2,
                             start_powerSGD_iter=2, random_seed=0)
    order = []  # DDP rebuilds its bucket after the first step: keep the latest order
    def hook(state, bucket):
        order[:] = [tuple(t.shape) for t in bucket.gradients()]
        return ps.powerSGD_hook(state, bucket)
    ddp.register_comm_hook(state, hook)
    local, reduced = [], []
    for t in range(6):
        g = torch.Generator().manual_seed(100 * t + rank)
        x, y = torch.randn(16, 12, generator=g), torch.randint(0, 10, (16,), generator=g)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        local.append({tuple(p.shape): q.clone() for p, q in zip(model.parameters(), grads)})
        ddp.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        reduced.append({tuple(p.shape): p.grad.clone() for p in model.parameters()})
    torch.save({"order": order, "local": local, "reduced": reduced}, out)
    dist.barrier()  # gloo aborts a process whose pairs are torn down while its peer still sends
    dist.destroy_process_group()
    sys.stdout.flush()
    # skip the interpreter's teardown: gloo's threads can still call std::terminate there
    # ("terminate called without an active exception", rc -6) after the results are saved
    os._exit(0)
    """
)


def test_powersgd_matches_torchs_hook_on_two_gloo_processes(tmp_path):
    """The real hook under DistributedDataParallel, 2 processes on 127.0.0.1 (bounded timeout),
    against PowerSGDCompressor fed both workers' local gradients."""
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(port), str(outs[r])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    try:
        for proc in procs:
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, output.decode()[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    runs = [torch.load(out) for out in outs]
    order = runs[0]["order"]
    assert len(set(order)) == len(order) == 4  # shapes name the tensors unambiguously
    # the Gaussian Q of each matrix is drawn in bucket order: the order matters
    comp = PowerSGDCompressor(2, order, rank=2, start_iter=2, seed=0)
    assert len(comp.plan) == 2  # both weight matrices are compressed, the biases are not
    for t in range(6):
        flat = torch.stack(
            [torch.cat([run["local"][t][s].reshape(-1) for s in order]) for run in runs]
        )
        out, _ = comp(flat)
        for r, run in enumerate(runs):
            hook = torch.cat([run["reduced"][t][s].reshape(-1) for s in order])
            torch.testing.assert_close(out[r], hook, atol=1e-6, rtol=1e-5, msg=f"step {t}")


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocol_learns_digits(name, device):
    spec = PROTOCOL_SPECS[name]
    game = NodeGraphGame(
        n_nodes=4,
        content=spec.content,
        float_bits=spec.float_bits,
        feature_dim=32,
        device=device,
        max_cycles=1000,
    )
    options = {"topk": {"ratio": 0.05}, "codistill": {"period": 30}, "ist": {"period": 5}}
    proto = make_protocol(
        name,
        4,
        game.image_shape,
        game.num_classes,
        channel=game.channel,
        hidden=64,
        feature_dim=32,
        device=device,
        options=options,
    )
    hist = run_protocol(game, proto, 150, eval_every=50, test=(game.test_images, game.test_labels))
    floor = 30.0 if name == "ist" else 60.0  # chance is 10 %
    assert hist[-1]["average"] > floor, hist[-1]["average"]
    assert hist[-1]["average"] > hist[0]["average"] - 5


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("nope", {}, r"unknown protocol 'nope'; valid choices: \['isolated'"),
        ("topk", {"ratio": 0.0}, r"ratio must be a ratio in \(0, 1\]"),
        ("topk", {"ratio": 1.5}, r"ratio must be a ratio in \(0, 1\]"),
        ("powersgd", {"rank": 0}, "rank must be an integer >= 1"),
        ("local_sgd", {"period": 0}, "period must be an integer >= 1"),
        ("codistill", {"period": 0}, "period must be an integer >= 1"),
        ("ist", {"period": 0}, "period must be an integer >= 1"),
        ("int8", {"bits": 9}, r"bits must be in \[1, 8\]"),
        ("sync_sgd", {"ratio": 0.1}, r"has no option\(s\) \['ratio'\]; valid choices: \[\]"),
    ],
)
def test_bad_input_raises_at_construction(name, options, match, device):
    with pytest.raises(ValueError, match=match):
        if name == "nope":
            make_protocol("nope", N, SHAPE, C, device=device)
        else:
            small(name, device, **options)


def test_bad_setups_raise(device):
    with pytest.raises(ValueError, match="arch must be 'mlp'"):
        make_protocol("ist", N, SHAPE, C, arch="cnn", device=device)
    ring = Channel(make_adjacency("ring", 4, k=1), device=device)
    with pytest.raises(ValueError, match="fully connected channel"):
        make_protocol("topk", 4, SHAPE, C, channel=ring, device=device)
    with pytest.raises(ValueError, match="n_nodes must be an integer >= 2"):
        make_protocol("sync_sgd", 1, SHAPE, C, device=device)


@pytest.mark.parametrize(
    ("name", "graph", "missing"),
    [
        ("sync_sgd", "one_way", "1->2"),  # a ring all-reduce needs i -> i + 1
        ("local_sgd", "one_way", "1->2"),
        ("powersgd", "one_way", "1->2"),
        ("ist", "one_way", "1->0"),  # the subnets come back to node 0
        ("centralised", "one_way", "1->0"),
    ],
)
def test_collectives_need_the_edges_they_travel_on(name, graph, missing, device):
    """A collective billed on edges the channel does not have is refused at construction;
    the ring (sync, local, PowerSGD) is enough for the all-reduces."""
    lean = Channel(make_adjacency(graph, N), device=device)
    with pytest.raises(ValueError, match=f"lacks: .*{missing}"):
        make_protocol(name, N, SHAPE, C, channel=lean, hidden=HIDDEN, device=device)
    ring = Channel(make_adjacency("ring", N, k=1), device=device)
    if name in ("sync_sgd", "local_sgd", "powersgd"):
        proto = make_protocol(name, N, SHAPE, C, channel=ring, hidden=HIDDEN, device=device)
        run_steps(proto, device, 1)


def test_ist_evaluates_what_node_0_holds(device):
    """Mid-round, the subnets' updates have not travelled (nor been billed): the population is
    evaluated as node 0's model of the last merge, which moves only when a round ends."""
    ist, chan = small("ist", device, period=4)
    x = torch.rand(5, *SHAPE, device=device)
    run_steps(ist, device, 4)
    after_round = ist.predict_proba(x)
    billed = sum(sent(chan, "subnets"))
    run_steps(ist, device, 2)  # half a round
    torch.testing.assert_close(ist.predict_proba(x), after_round, rtol=0, atol=0)
    assert sum(sent(chan, "subnets")) == billed * 3 // 2  # only the next round's download
    run_steps(ist, device, 2)
    assert not torch.equal(ist.predict_proba(x), after_round)


def test_docs_page_example_runs():
    """The python blocks of docs/frontier.md ("how to add a protocol") run as written."""
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "frontier.md"
    blocks = page.read_text().split("```python\n")[1:]
    assert blocks
    for block in blocks:
        exec(compile(block.split("```")[0], str(page), "exec"), {})


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocol_trains_with_the_sgd_optimizer_on_request(name, device):
    """optimizer="sgd" (momentum SGD, what error feedback's guarantee assumes) reaches every
    node of every protocol; Adam stays the default."""
    options = {"ist": {"period": 2}}.get(name, {})
    for kind, cls in (("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        chan = Channel(make_adjacency("all_to_all", N), device=device)
        proto = make_protocol(
            name, N, SHAPE, C, channel=chan, hidden=HIDDEN, feature_dim=FEAT, device=device,
            options={name: options} if options else None,
            **({"optimizer": kind} if kind == "sgd" else {}),
        )  # fmt: skip
        holders = [proto, getattr(proto, "pop", None)]
        found = [
            v for h in holders if h is not None for v in vars(h).values()
            if isinstance(v, torch.optim.Optimizer)
        ]  # fmt: skip
        if name != "isolated" or found:
            assert found and all(type(o) is cls for o in found), (name, kind, found)
        if name not in ("isolated", "labels", "logits", "features", "features_8bit"):
            run_steps(proto, device, 2)
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_protocol(name, N, SHAPE, C, optimizer="lamb", device=device)
