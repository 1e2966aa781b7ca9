"""Bad input to a benchmark is refused when it arrives and changes nothing.

Every invalid option is refused before the first run trains (not after the runs before the one
that uses it), with exit 2 and one line naming the option as it is typed; an empty selection
is refused instead of writing an empty table; a result folder already there is left as it was.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from commenv import cli, distributed

NARROW = '''
class NarrowPopulation:
    """The methods a population needs, but a constructor that takes one argument."""

    def __init__(self, n_nodes):
        pass

    def step(self, views, out_valid):
        pass

    def predict_proba(self, x):
        pass

    def encode(self, x):
        pass


class NarrowTeacher:
    def __init__(self, game):
        pass

    def act(self, obs, infos):
        pass
'''


@pytest.fixture
def user_classes(tmp_path, monkeypatch):
    """``refusal_agents`` (:data:`NARROW`) importable from the working directory, ``tmp_path``;
    forgotten afterwards, so that no other test imports this one's module of that name."""
    (tmp_path / "refusal_agents.py").write_text(NARROW)
    monkeypatch.chdir(tmp_path)
    yield
    sys.modules.pop("refusal_agents", None)


BUILT_AS = "is built as NarrowPopulation(n_nodes=, image_shape=, num_classes="
F5 = ["--steps", "5", "--eval-every", "5"]  # frontier: short, should an old refusal come late
G10 = ["--steps", "10", "--eval-every", "5"]  # graph: the same
U4 = ["--steps", "4", "--stages", "1"]  # unsupervised: the same
Q1 = ["--max-epochs", "1", "--worlds", "1"]  # quiz: the same


@pytest.mark.parametrize(
    "bench, argv, expected",
    [
        # empty selections: refused, not an empty table over the results
        ("frontier", [*F5, "--protocols"], "nothing to run: --protocols, --partitions"),
        ("frontier", [*F5, "--partitions"], "nothing to run: --protocols, --partitions"),
        # values a later run uses: refused before the earlier runs train
        ("graph", [*G10, "--temperature", "0"], "--temperature must be a finite number > 0"),
        ("graph", [*G10, "--consumption-prob", "1.5"], "--consumption-prob must be a finite"),
        ("graph", [*G10, "--broadcast-margin", "-1"], "--broadcast-margin must be a finite"),
        ("graph", [*G10, "--broadcast-margin", "nan"], "--broadcast-margin must be a finite"),
        (
            "graph",
            [*G10, "--partition", "dirichlet", "--dirichlet-alpha", "0"],
            "--dirichlet-alpha must be a finite number > 0",
        ),
        ("graph", [*G10, "--train-size", "5"], "--train-size must be an integer >= 10"),
        ("graph", [*G10, "--float-bits", "20"], "--float-bits must be 32 or 64"),
        ("graph", [*G10, "--feature-weight", "-1"], "--feature-weight must be a finite number"),
        ("graph", [*G10, "--dataset", "bogus"], "--dataset 'bogus'"),
        (
            "graph",
            [*G10, "--data-root", "/nonexistent"],
            "existing directory (a missing one is not replaced by another location), "
            "got str '/nonexistent'",
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "topk", "--topk-ratio", "2"],
            "--topk-ratio must be a ratio in (0, 1], got 2.0",
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "int8", "--int8-bits", "9"],
            "--int8-bits must be in [1, 8]",
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "codistill", "--codistill-weight", "-1"],
            "--codistill-weight must be a finite number >= 0, got -1.0",
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "powersgd", "--powersgd-start", "-5"],
            "--powersgd-start must be an integer >= 0, got int -5",
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "logits", "--temperature", "0"],
            "--temperature must be a finite number > 0",
        ),
        ("frontier", [*F5, "--arch", "bogus"], "unknown --arch 'bogus'"),
        (
            "frontier",
            [*F5, "--arch", "cnn", "--protocols", "isolated", "ist"],
            "--protocols ist: ist trains MLP subnets",
        ),
        ("frontier", [*F5, "--dataset", "bogus"], "--dataset 'bogus'"),
        ("frontier", [*F5, "--n-nodes", "100000"], "--n-nodes=100000 needs"),
        (
            "quiz",
            [*Q1, "--runs", "stack-2-random-soft", "--selection-temperature", "nan"],
            "--selection-temperature must be >= 0, got nan",
        ),
        ("quiz", [*Q1, "--dataset", "bogus"], "--dataset 'bogus'"),
        ("quiz", [*Q1, "--batch-size", "100000"], "--batch-size=100000 exceeds the training"),
        (
            "unsupervised",
            [*U4, "--runs", "vae-1", "vae-10-contrastive", "--contrastive-weight", "nan"],
            "--contrastive-weight must be a finite number >= 0.0, got float nan",
        ),
        (
            "unsupervised",
            [*U4, "--runs", "vae-1", "vae-10-none", "--train-size", "5"],
            "--train-size must be an integer >= 10",
        ),
        # a user's class whose constructor cannot take what the benchmark builds it with
        (
            "graph",
            [*G10, "--runs", "1-node", "--agent", "refusal_agents:NarrowPopulation"],
            BUILT_AS,
        ),
        (
            "unsupervised",
            [*U4, "--runs", "vae-1", "--agent", "refusal_agents:NarrowPopulation"],
            BUILT_AS,
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "--agent", "refusal_agents:NarrowPopulation"],
            BUILT_AS,
        ),
        (
            "quiz",
            [*Q1, "--runs", "baseline", "--teacher", "refusal_agents:NarrowTeacher"],
            "is built as NarrowTeacher(game=, model=, seed=)",
        ),
        # values that used to be accepted
        ("frontier", [*F5, "--target", "150"], "--target must be a finite number in (0.0, 100.0]"),
        ("frontier", [*F5, "--target", "-5"], "--target must be a finite number in (0.0, 100.0]"),
        (
            "frontier",
            [*F5, "--protocols", "labels", "labels"],
            "--protocols must name each row once",
        ),
        (
            "quiz",
            [*Q1, "--runs", "stack-2-random-soft", "--selection-temperature", "-1"],
            "--selection-temperature must be >= 0, got -1.0",
        ),
        ("speed", ["--runs", "environments", "--before", "notjson.json"], "--before must be a"),
        (
            "speed",
            ["--runs", "environments", "--before", "/nonexistent.json"],
            "--before must name an existing speed.json result file, got '/nonexistent.json'",
        ),
        # options these runs would ignore: typed, they are refused (left out, never)
        ("graph", [*G10, "--agent-content", "logits"], "--agent-content has no effect here"),
        (
            "graph",
            [*G10, "--runs", "1-node,10-nodes-true-labels", "--temperature", "2"],
            "--temperature has no effect here: it acts on runs sharing logits",
        ),
        (
            "graph",
            [*G10, "--runs", "10-nodes-logits", "--feature-weight=2"],
            "--feature-weight has no effect here",
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "topk", "--powersgd-rank", "3"],
            "--powersgd-rank has no effect here: it sets the powersgd protocol",
        ),
        (
            "frontier",
            [*F5, "--protocols", "isolated", "sync_sgd", "--broadcast-margin", "2"],
            "--broadcast-margin has no effect here: it acts on output sharing",
        ),
        ("unsupervised", [*U4, "--agent-family", "bigan"], "--agent-family has no effect here"),
        (
            "unsupervised",
            [*U4, "--runs", "vae-1", "bigan-10-none", "--float-bits", "8"],
            "--float-bits has no effect here: it acts on the match or",
        ),
        (
            "frontier",
            [*F5, "--protocols", "labels", "sync_sgd", "--temperature", "0.1"],
            "--temperature has no effect here: it acts on output sharing (logits)",
        ),
        (
            "frontier",
            [*F5, "--protocols", "sync_sgd", "topk", "--consumption-prob", "0.9"],
            "--consumption-prob has no effect here",
        ),
        ("graph", [*G10, "--dirichlet-alpha", "2"], "--dirichlet-alpha has no effect here"),
        (
            "frontier",
            [*F5, "--partitions", "iid", "--dirichlet-alpha", "2"],
            "--dirichlet-alpha has no effect here: it shapes the dirichlet partition",
        ),
        (
            "unsupervised",
            [*U4, "--runs", "vae-1", "vae-10-match", "--decorrelate-weight", "2"],
            "--decorrelate-weight has no effect here: it acts on the decorrelate or",
        ),
        ("quiz", [*Q1, "--teacher-stack", "3"], "--teacher-stack has no effect here"),
        (
            "quiz",
            [*Q1, "--runs", "baseline", "--selection-temperature", "1"],
            "--selection-temperature has no effect here: only the reference teachers select",
        ),
        ("quiz", [*Q1, "--runs", "baseline", "--teacher-arch", "cnn"], "--teacher-arch has no"),
        (
            "language",
            ["--kinds", "gumbel", "--entropy-coef", "0.1"],
            "--entropy-coef has no effect here: it is REINFORCE's entropy bonus",
        ),
        (
            "language",
            ["--kinds", "reinforce", "--remedies", "", "--ours", "", "--no-untrained"]
            + ["--temp-floor", "0.3"],
            "--temp-floor has no effect here: it sets the Gumbel-Softmax temperature",
        ),
        ("language", ["--mi-negatives", "4"], "--mi-negatives has no effect here"),
        ("speed", ["--runs", "memory", "--sizes", "8"], "--sizes has no effect here"),
        ("speed", ["--runs", "quiz-agents", "--seed", "3"], "--seed has no effect here"),
    ],
)
def test_bad_values_are_refused_before_the_first_run(
    bench, argv, expected, capsys, tmp_path, user_classes, device
):
    """Exit 2, one line naming the option as typed, quickly (no run trained) and nothing on
    disk: not even the partial file the runs before the bad one used to leave."""
    (tmp_path / "notjson.json").write_text("not json\n")
    out = tmp_path / "out"
    start = time.perf_counter()
    code = cli.main(
        ["bench", bench, "--quick", *argv, "--out-dir", str(out), "--device", str(device)]
    )
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert seconds < 20


def test_a_refused_run_leaves_the_previous_results_byte_for_byte(capsys, tmp_path, device):
    """A result folder holding a finished table and a killed run's partial file: a refusal
    (a value the second configuration uses) moves, rewrites and adds nothing."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "graph.json").write_text('{"meta": {}, "rows": [{"configuration": "1 node"}]}\n')
    (out / "graph.csv").write_text("configuration\n1 node\n")
    (out / "graph.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    partial = {"config": {"dataset": "digits"}}
    run = {"run": "1 node", "row": {"configuration": "1 node"}, "meta": {"commit": "abc"}}
    (out / "graph.partial.jsonl").write_text(
        json.dumps(partial) + "\n" + json.dumps(run) + '\n{"run": "10 no'  # a kill cut it
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = ["bench", "graph", "--quick", "--steps", "10", "--eval-every", "5"]
    argv += ["--runs", "1-node,10-nodes-logits", "--train-size", "5"]
    assert cli.main([*argv, "--out-dir", str(out), "--device", str(device)]) == 2
    assert "must be an integer >= 10" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_speed_threads_help_says_what_it_takes(capsys):
    """``--threads 0`` is refused (a count), so its help no longer offers 0."""
    assert cli.main(["bench", "speed", "--help"]) == 0
    out = capsys.readouterr().out
    assert "0 = torch default" not in out
    assert "torch CPU threads, >= 1" in out


SOURCE = Path(__file__).resolve().parents[1] / "docs/results/distributed/digits-p1/distributed.json"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--bandwidth-gbps", "-1"], "--bandwidth-gbps must be a finite number > 0.0"),
        (["--bandwidth-gbps", "0"], "--bandwidth-gbps must be a finite number > 0.0"),
        (["--latency-us", "-1"], "--latency-us must be a finite number >= 0.0"),
        (["--machines", "bogus"], "--machines must be distinct integers >= 1"),
        (["--machines", ""], "--machines must be distinct integers >= 1"),
        (["--machines", "0"], "--machines must be distinct integers >= 1"),
        (["--machines", "1,1"], "--machines must be distinct integers >= 1"),
        (["--results", "notjson.json"], "--results must be a distributed.json"),
        (["--results", "absent.json"], "which is not a file (run `graph` first)"),
        (["--results", "two.json"], "was run on 2 processes"),
    ],
)
def test_projection_refuses_bad_options_with_exit_2(argv, expected, capsys, tmp_path, monkeypatch):
    """``python -m commenv.distributed project``: one line naming the option, exit 2, no
    traceback and no file written."""
    shutil.copy(SOURCE, tmp_path / "source.json")
    (tmp_path / "notjson.json").write_text("not json\n")
    two = json.loads(SOURCE.read_text())
    (tmp_path / "two.json").write_text(json.dumps({**two, "world_size": 2}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python -m commenv.distributed"])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        distributed.main(
            ["project", "--results", "source.json", *argv, "--out-dir", str(out)]
        )  # device-free: arithmetic on a result file
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_projection_still_projects_a_good_source(capsys, tmp_path):
    out = tmp_path / "out"
    rows = distributed.main(
        ["project", "--results", str(SOURCE), "--out-dir", str(out)]
    )  # device-free: arithmetic on a result file
    assert rows and {r["machines"] for r in rows} == {1, 2, 4, 8, 16, 32, 64, 128}
    assert (out / "projection.json").exists()


def test_an_inert_option_is_refused_only_when_typed():  # device-free: parsing only
    """Left out, an option is never refused whatever its default; typed where a run reads it,
    it is accepted; every spelling tyro takes is recognised as typed."""
    from commenv.bench import graph, tools

    assert graph.parse_args(["--runs", "1-node"]).temperature == 0.5
    assert graph.parse_args(["--runs", "10-nodes-logits", "--temperature", "2"]).temperature == 2
    args = graph.parse_args(["--agent-content", "logits", "--agent", "commenv_agents:Foo"])
    assert args.agent_content == "logits"
    user_codes = ["--runs", "1-node", "--agent", "m:C", "--agent-content", "codes"]
    assert graph.parse_args([*user_codes, "--float-bits", "8"]).float_bits == 8  # quantized
    # typed at the value it has anyway (a script passing every option): not refused
    assert graph.parse_args(["--runs", "1-node", "--temperature", "0.5"]).temperature == 0.5
    from commenv.bench import language  # its --quick preset changes an option then inert

    no_gumbel = ["--quick", "--kinds", "reinforce", "--remedies", "", "--ours", ""]
    no_gumbel.append("--no-untrained")
    assert language.parse_args([*no_gumbel, "--temp-every", "50"]).temp_every == 50
    with pytest.raises(ValueError, match="--temp-every has no effect here"):
        language.parse_args([*no_gumbel, "--temp-every", "250"])  # the default without --quick
    with pytest.raises(ValueError, match="--temperature has no effect here"):
        graph.parse_args(["--runs", "1-node", "--temperature", "0.4"])
    argv = ["--eval-every", "5", "--feature_weight=2", "--no-resume", "--runs", "temperature"]
    assert tools.typed_fields(argv, args) == {"eval_every", "feature_weight", "resume", "runs"}
