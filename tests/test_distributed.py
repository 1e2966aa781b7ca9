"""commenv.distributed: real gloo processes on 127.0.0.1 against the single-process simulation.

Each process test launches ``python -m commenv.distributed graph`` ranks the way torchrun does
(``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``), on a free port, with a bounded wait,
and kills whatever is left in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from commenv.channel import quantize
from commenv.distributed import (
    GraphArgs,
    RecordCodec,
    check_args,
    free_port,
    pack_bits,
    project_rows,
    shards,
    simulate,
    unpack_bits,
)
from tests.conftest import requires_cuda

SMALL = [
    "--quick",
    "--n-nodes", "4",
    "--steps", "20",
    "--eval-every", "10",
    "--hidden", "32",
    "--feature-dim", "16",
    "--batch-size", "16",
    "--inbox-capacity", "2",
    "--broadcast-margin", "3",
    "--timeout", "60",
    # gloo ranks on this machine's CPU whatever COMMENV_TEST_DEVICE says: several NCCL ranks
    # cannot share one GPU; test_one_cuda_process_matches_the_cuda_simulation runs CUDA.
    "--device", "cpu",
]  # fmt: skip


def small_args(*extra: str) -> GraphArgs:
    from commenv.bench.tools import parse_config

    return parse_config(GraphArgs, [*SMALL, *extra]).finalize()


def launch(world, argv, *, out_dir, wait=120.0, per_rank=None, action=None):
    """Start ``world`` ranks; return ``[(returncode, stderr), ...]`` (always cleaned up)."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env.update(WORLD_SIZE=str(world), COMMENV_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    procs = []
    try:
        for rank in range(world):
            extra = per_rank(rank) if per_rank else []
            cmd = [sys.executable, "-m", "commenv.distributed", "graph", *argv, *extra]
            cmd += ["--out-dir", str(out_dir)]
            rank_env = dict(env, RANK=str(rank), LOCAL_RANK=str(rank))
            procs.append(
                subprocess.Popen(
                    cmd, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
        if action is not None:
            action(procs)
        deadline = time.monotonic() + wait
        results = []
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# -- units --------------------------------------------------------------------------------------
def test_pack_bits_round_trip():
    g = torch.Generator().manual_seed(0)
    for bits in (1, 3, 4, 7, 8, 12):
        v = torch.randint(0, 2**bits, (5, 13), generator=g)
        packed = pack_bits(v, bits)
        assert packed.dtype == torch.uint8 and packed.shape == (5, -(-13 * bits // 8))
        assert torch.equal(unpack_bits(packed, 13, bits), v)
    assert pack_bits(torch.zeros(0, 16, dtype=torch.long), 4).shape == (0, 8)


@pytest.mark.parametrize(
    ("content", "float_bits", "M", "n"),
    [
        ("labels", 32, 8, 3),
        ("logits", 32, 8, 3),
        ("logits", 16, 8, 3),
        ("logits", 64, 8, 3),  # shipped as fp64: what is billed
        ("features", 5, 8, 3),
        ("features", 8, 8, 3),
        # one record whose length is no multiple of 4 (a slice view that cannot be reinterpreted)
        ("labels", 32, 10, 1),
        ("features", 5, 7, 1),
    ],
)
def test_codec_round_trip_matches_channel_bill(content, float_bits, M, n):
    D, P = 64, 10 if content != "features" else 6
    codec = RecordCodec(M, D, content, P, 10, float_bits)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 1000, (n, M), generator=g)
    pixels = torch.randint(0, 256, (n, M, D), generator=g).to(torch.uint8)
    if content == "labels":
        payload = torch.randint(0, 10, (n, M), generator=g)
        expected = payload
    else:
        payload = torch.randn(n, M, P, generator=g)
        expected = quantize(payload, float_bits)  # what the simulation delivers
    rec = codec.encode(torch.arange(n), torch.arange(n) + 1, idx, pixels, payload)
    assert rec.shape == (n, codec.record_bytes)
    out = codec.decode(rec)
    assert torch.equal(out["idx"], idx) and torch.equal(out["pixels"], pixels)
    assert torch.equal(out["sender"], torch.arange(n))
    assert torch.equal(out["payload"], expected)
    bill = codec.image_bits + codec.payload_bits  # the game's bits per message
    assert codec.message_bytes == -(-bill // 8)


def test_bad_input_named_before_training():
    with pytest.raises(ValueError, match="world size 5 cannot host n_nodes=4"):
        check_args(small_args(), 5)
    with pytest.raises(ValueError, match="names node 7, but n_nodes=4"):
        check_args(small_args("--graph", "0-1,1-7"), 2)
    with pytest.raises(ValueError, match="content"):
        check_args(small_args("--content", "labels,gossip"), 2)
    with pytest.raises(ValueError, match="sync_sgd"):
        check_args(small_args("--sync-sgd", "topk"), 2)
    with pytest.raises(ValueError, match=r"content.*'features'\]"):  # no label-free codes here
        check_args(small_args("--content", "codes"), 2)
    with pytest.raises(ValueError, match="dataset"):  # synthetic images are not 8-bit pixels
        check_args(small_args("--dataset", "synthetic"), 2)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        check_args(small_args("--temperature", "0"), 2)
    assert [len(s) for s in shards(10, 4)] == [3, 3, 2, 2]


def test_projection_rows_from_measured_inputs():
    share = {
        "protocol": "output sharing (labels)", "curve": [{}], "nodes": 10, "steps": 100,
        "compute_ms_per_node_step": 1.0, "message_bytes_handed": 750 * 1000.0,
        "message_bytes_per_message": 1000, "header_bytes_per_message": 100,
    }  # fmt: skip
    ddp = {
        "protocol": "DDP (allreduce)", "curve": [], "processes": 1, "step_ms": 2.0,
        "bytes_per_node_step": 1.25e6, "allreduce_calls_per_step": 1.0,
    }  # fmt: skip
    rows = project_rows([share, ddp], [1, 2], gbps=10.0, latency_us=0.0)
    by = {(r["protocol"], r["machines"]): r for r in rows}
    assert by["output sharing (labels)", 1]["step_ms"] == pytest.approx(1.0)
    # 0.75 messages of 1,100 bytes + 8 count bytes at 1.25e9 B/s
    assert by["output sharing (labels)", 2]["comm_ms"] == pytest.approx(
        1e3 * (0.75 * 1100 + 8) / 1.25e9
    )
    assert by["DDP (allreduce)", 2]["comm_ms"] == pytest.approx(1.0)  # 1.25e6 B on the ring


# -- processes ----------------------------------------------------------------------------------
def _rows(out_dir: Path) -> dict[str, dict]:
    data = json.loads((out_dir / "distributed.json").read_text())
    return {r["protocol"]: r for r in data["rows"]}


def _check_against_simulation(row, sim):
    assert row["per_node"] == sim["per_node"]  # bit-identical per-node accuracies
    assert row["avg_acc"] == sim["avg_acc"] and row["coll_acc"] == sim["coll_acc"]
    assert (row["bits_images"], row["bits_payload"]) == (sim["bits_images"], sim["bits_payload"])
    assert row["dropped"] == sim["dropped"]
    # the Channel's bill is exactly the message bytes handed to the collectives
    assert row["message_bytes_handed"] == row["channel_bytes"]


def test_two_uneven_processes_match_simulation_and_run_ddp(tmp_path):
    # 5 nodes on 2 processes: uneven shards (3, 2)
    extra = [
        "--n-nodes",
        "5",
        "--content",
        "labels,logits",
        "--sync-sgd",
        "allreduce,fp16,powersgd",
    ]
    # 200 steps: enough training that a receiver fed the wrong images ends elsewhere (at 20
    # steps the nodes are near chance and such a bug matched the simulation)
    longer = ["--steps", "200", "--eval-every", "100"]
    argv = [*SMALL, *extra, *longer, "--exchange", "all_to_all"]
    results = launch(2, argv, out_dir=tmp_path)
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    rows = _rows(tmp_path)
    for share in ("labels", "logits"):
        row = rows[f"output sharing ({share})"]
        assert row["processes"] == 2 and row["exchange"] == "all_to_all"
        sim = simulate(small_args("--n-nodes", "5", "--content", share, *longer), share)
        _check_against_simulation(row, sim)
    params = rows["DDP (allreduce)"]["params_per_node"]
    assert rows["DDP (allreduce)"]["bytes_per_node_step"] == 4 * params
    assert rows["DDP (fp16)"]["bytes_per_node_step"] == 2 * params
    assert rows["DDP (powersgd)"]["bytes_per_node_step"] < 2 * params
    assert not (tmp_path / "distributed.partial.jsonl").exists()


def test_four_processes_all_gather_match_simulation(tmp_path):
    argv = [
        *SMALL,
        "--content",
        "features",
        "--exchange",
        "all_gather",
        "--overflow",
        "drop_newest",
        *("--steps", "200", "--eval-every", "100"),  # trained enough to tell wrong images
    ]
    results = launch(4, argv, out_dir=tmp_path)
    assert [rc for rc, _ in results] == [0] * 4, results[0][1][-3000:]
    row = _rows(tmp_path)["output sharing (features)"]
    assert row["exchange"] == "all_gather"
    sim_args = small_args(
        "--content",
        "features",
        "--overflow",
        "drop_newest",
        "--steps",
        "200",
        "--eval-every",
        "100",
    )
    _check_against_simulation(row, simulate(sim_args, "features"))
    assert row["dropped"] > 0  # the overflow policy was exercised


def test_mismatched_configs_stop_every_rank(tmp_path):
    results = launch(
        2, SMALL, out_dir=tmp_path, per_rank=lambda r: ["--steps", str(20 + r)], wait=60
    )
    for rc, err in results:
        assert rc == 2
        assert "different configurations" in err
    assert not (tmp_path / "distributed.json").exists()


@pytest.mark.slow  # test_bad_input_named_before_training checks the message in-process
def test_bad_graph_stops_every_rank(tmp_path):
    results = launch(2, [*SMALL, "--graph", "0-1,1-9"], out_dir=tmp_path, wait=60)
    for rc, err in results:
        assert rc == 2 and "names node 9, but n_nodes=4" in err


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)
    time.sleep(1.0)  # well into the training loop


def test_resume_under_other_options_stops_every_rank(tmp_path):
    """A partial file of another step budget (or process count): both ranks stop, none hangs."""
    from commenv.bench.tools import RunStore

    RunStore(tmp_path, "distributed", config={"steps": 21}).add("share:labels", {"avg_acc": 1.0})
    start = time.monotonic()
    results = launch(2, [*SMALL, "--content", "labels", "--resume"], out_dir=tmp_path, wait=60)
    assert time.monotonic() - start < 60
    assert [rc for rc, _ in results] == [2, 2], results[0][1][-2000:]
    assert "was written with other options" in results[0][1]
    assert not (tmp_path / "distributed.json").exists()


# The hung peer (SIGSTOP: only the timeout tells) is the slow variant; the killed one is default.
@pytest.mark.parametrize("fault", ["kill", pytest.param("hang", marks=pytest.mark.slow)])
def test_a_dead_or_hung_peer_stops_the_other_with_a_clear_error(tmp_path, fault):
    argv = [*SMALL, "--steps", "1000000", "--eval-every", "1000000", "--timeout", "3"]

    def strike(procs):
        _wait_for(tmp_path / "distributed.partial.jsonl", 60)
        procs[1].send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        procs[0].wait(timeout=40)  # rank 0 must stop by itself
        procs[1].kill()  # a stopped process never exits: end it

    start = time.monotonic()
    (rc0, err0), _ = launch(2, argv, out_dir=tmp_path, wait=60, action=strike)
    assert time.monotonic() - start < 60
    assert rc0 == 3, err0[-2000:]
    assert "a peer process died or did not answer within --timeout=3 s" in err0
    assert "no result file was written" in err0
    assert not (tmp_path / "distributed.json").exists()
    assert (tmp_path / "distributed.partial.jsonl").exists()  # "not complete" stays visible


@requires_cuda
def test_one_cuda_process_matches_the_cuda_simulation(tmp_path):
    results = launch(1, [*SMALL, "--device", "cuda"], out_dir=tmp_path)
    assert results[0][0] == 0, results[0][1][-2000:]
    row = _rows(tmp_path)["output sharing (labels)"]
    sim = simulate(small_args("--device", "cuda"), "labels", device="cuda")
    diffs = [abs(a - b) for a, b in zip(row["per_node"], sim["per_node"], strict=True)]
    assert max(diffs) <= 1.0  # GPU kernels may reorder sums with fewer models per batch


def test_docs_page_python_blocks_run(monkeypatch, capsys):
    root = Path(__file__).resolve().parent.parent
    page = root / "docs" / "distributed.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks  # the tables themselves are generated blocks (report:distributed)
    monkeypatch.chdir(root)
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})
    assert "output sharing (labels)" in capsys.readouterr().out


def test_graph_help_lists_the_options(capsys):
    from commenv.distributed import main

    with pytest.raises(SystemExit) as exit_info:
        main(["graph", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--content", "--sync-sgd", "--exchange", "--timeout", "--check-simulation"):
        assert option in out


def test_graph_refuses_options_its_rows_ignore(capsys):  # device-free: refused at parse
    """As ``commenv bench graph`` does: a ring's ``--k`` on another graph, the PowerSGD rank
    without the hook, the logits' temperature without a logits row; before any process group."""
    from commenv.distributed import main

    for extra, message in (
        (["--graph", "all_to_all", "--k", "2"], "--k has no effect here"),
        (["--sync-sgd", "allreduce", "--powersgd-rank", "4"], "--powersgd-rank has no effect"),
        (["--content", "labels,features", "--temperature", "2"], "--temperature has no effect"),
        (["--content", "", "--sync-sgd", "allreduce", "--k", "3"], "--k has no effect here"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["graph", *SMALL, *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
