"""commenv.bench.language: --help, and a tiny end-to-end run with a user speaker."""

import importlib
import json
import subprocess
import sys

import pytest
import torch


@pytest.fixture
def bench_language(monkeypatch):
    """The script as a module, quiet; torch's thread count restored after ``main`` sets it."""
    monkeypatch.setenv("COMMENV_NO_PROGRESS", "1")
    threads = torch.get_num_threads()
    yield importlib.import_module("commenv.bench.language")
    torch.set_num_threads(threads)


def test_help_documents_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "commenv.bench.language", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--quick", "--agent", "--remedies", "--ours", "--likelihood", "--temp-every"):
        assert option in out


def test_tiny_run_writes_table_json_csv_png(tmp_path, bench_language, device):
    rows = bench_language.main(
        [
            "--quick",
            "--steps",
            "12",
            "--eval-every",
            "6",
            "--seeds",
            "1",
            "--levels",
            "none,both",
            "--kinds",
            "gumbel",
            "--remedies",
            "straight-through",
            "--ours",
            "contrastive",
            "--hidden",
            "8",
            "--disc-hidden",
            "8",
            "--batch-size",
            "16",
            "--agent",
            "commenv_agents.speakers:Speaker",
            "--out-dir",
            str(tmp_path),
            "--device",
            str(device),
        ]
    )
    speakers = {r["speaker"] for r in rows}
    assert speakers == {
        "gumbel",
        "gumbel straight-through",
        "gumbel contrastive (ours)",
        "user commenv_agents.speakers:Speaker",
        "untrained (lr 0)",  # the floor, run by default on the first level only
        "user commenv_agents.speakers:Speaker, untrained (lr 0)",  # the user's own floor
    }
    assert {r["level"] for r in rows} == {"none", "both"}
    assert all(0 <= r["ours"] <= 100 and r["thesis (MNIST)"] > 60 for r in rows)
    assert all(0 <= r["offline"] <= 100 for r in rows)  # the quick preset's 2 offline stages
    data = json.loads((tmp_path / "language.json").read_text())
    assert len(data["runs"]) == 8 + 2 and data["meta"]["args"]["steps"] == 12
    claims = data["thesis_claims"]
    user = "user commenv_agents.speakers:Speaker"
    assert f"{user}: every level above the untrained speaker" not in claims  # two levels only
    floors = {r["speaker"]: r for r in rows if "untrained" in r["speaker"]}
    assert (
        bench_language.floor_name(user) in floors and bench_language.floor_name("gumbel") in floors
    )
    likelihoods = {r["speaker"]: r["config"]["likelihood"] for r in data["runs"]}
    assert likelihoods["gumbel contrastive (ours)"] == "contrastive"
    assert likelihoods["gumbel"] == "bce"
    assert (tmp_path / "language.csv").exists()
    assert (tmp_path / "language.png").stat().st_size > 0


def test_unknown_level_or_row_is_a_value_error(tmp_path, bench_language, device):
    with pytest.raises(ValueError, match="valid choices"):
        bench_language.main(
            ["--quick", "--levels", "loud", "--out-dir", str(tmp_path), "--device", str(device)]
        )
    with pytest.raises(ValueError, match="--ours"):
        bench_language.main(
            ["--quick", "--ours", "telepathy", "--out-dir", str(tmp_path), "--device", str(device)]
        )


def test_infonce_and_untrained_rows(tmp_path, bench_language, device):
    rows = bench_language.main(
        [
            "--quick",
            "--steps",
            "6",
            "--eval-every",
            "6",
            "--seeds",
            "1",
            "--levels",
            "none,both",
            "--kinds",
            "gumbel,reinforce",
            "--remedies",
            "",
            "--hidden",
            "8",
            "--disc-hidden",
            "8",
            "--batch-size",
            "16",
            "--mi-estimator",
            "infonce",
            "--mi-negatives",
            "3",
            "--untrained",
            "--out-dir",
            str(tmp_path),
            "--device",
            str(device),
        ]
    )
    levels = {(r["speaker"], r["level"]) for r in rows}
    # the untrained reference runs once (its level does not matter), the others on every level
    assert ("untrained (lr 0)", "none") in levels and ("untrained (lr 0)", "both") not in levels
    assert {("gumbel", "both"), ("reinforce", "both")} <= levels
    runs = json.loads((tmp_path / "language.json").read_text())["runs"]
    assert {r["config"]["mi_estimator"] for r in runs} == {"infonce"}
    assert {r["config"]["mi_negatives"] for r in runs} == {3}


def test_claims_weigh_the_seeds_noise_and_the_untrained_floor(bench_language):
    """The ordering is judged on the means, then again with every step beyond two standard
    errors of the difference (the rows' std is over seeds, ddof 0), and against the floor."""

    def row(speaker, level, ours, std, seeds=5):
        return {"speaker": speaker, "level": level, "ours": ours, "± std": std, "seeds": seeds}

    means = {"none": 46.6, "receive": 50.3, "feedback": 61.7, "both": 71.4}
    stds = {"none": 2.7, "receive": 4.2, "feedback": 1.1, "both": 0.6}
    rows = [row("g", lv, means[lv], stds[lv]) for lv in means]
    rows.append(row("untrained (lr 0)", "none", 71.6, 0.7))
    claims = bench_language.thesis_claims(rows)
    ordering = "both > feedback > receive > none"
    assert claims[f"g: {ordering}"]  # on the means
    assert not claims[f"g: {ordering}, each step beyond 2 standard errors"]  # 3.7 < 2 x 2.5
    assert not claims["g: every level above the untrained speaker"]  # 71.4 < 71.6
    rows[1]["ours"] = 56.0  # receive - none = 9.4 > 2 s.e.
    assert bench_language.thesis_claims(rows)[f"g: {ordering}, each step beyond 2 standard errors"]
    lines = bench_language.verdict_lines(claims, rows, bench_language.parse_args(["--quick"]))
    assert len(lines) == len(claims)


def test_the_floor_is_judged_again_with_the_offline_probe(bench_language):
    """Rows with offline-probe means get the floor claim a second time on those means, and
    rows without them (files from before the offline probe) do not."""

    def row(speaker, level, ours, offline):
        return {"speaker": speaker, "level": level, "ours": ours, "± std": 1.0, "seeds": 5,
                "offline": offline}  # fmt: skip

    levels = ("none", "receive", "feedback", "both")
    rows = [row("g", lv, 50.0 + i, 80.0 + i) for i, lv in enumerate(levels)]
    rows.append(row("untrained (lr 0)", "none", 71.6, 79.5))
    rows[0]["ours"] = 55.0  # online: none above both
    for r in rows:
        r["offline ± std"] = 0.1
    claims = bench_language.thesis_claims(rows)
    assert not claims["g: every level above the untrained speaker"]
    assert claims["g: every level above the untrained speaker (offline probe)"]
    ordering = "g: both > feedback > receive > none"
    assert not claims[ordering] and claims[f"{ordering} (offline probe)"]
    assert claims[f"{ordering}, each step beyond 2 standard errors (offline probe)"]  # 1 > 0.14
    assert not claims[f"{ordering}, each step beyond 2 standard errors"]
    lines = bench_language.verdict_lines(claims, rows, bench_language.parse_args(["--quick"]))
    assert len(lines) == len(claims) and any("untrained 79.5" in line for line in lines)
    rows[0]["offline"] = 79.0
    assert not bench_language.thesis_claims(rows)[
        "g: every level above the untrained speaker (offline probe)"
    ]
    for r in rows:
        r.pop("offline")
    assert "g: every level above the untrained speaker (offline probe)" not in (
        bench_language.thesis_claims(rows)
    )


def test_a_users_speaker_is_judged_against_its_own_untrained_floor(bench_language):
    """The floor of a user's row is its own architecture at lr 0, not the reference speaker's."""
    levels = ("none", "receive", "feedback", "both")
    user = "user mod:Mine"

    def row(speaker, level, ours):
        return {"speaker": speaker, "level": level, "ours": ours, "± std": 1.0, "seeds": 5}

    rows = [row(user, lv, 60.0 + i) for i, lv in enumerate(levels)]
    rows += [row("untrained (lr 0)", "none", 50.0), row(f"{user}, untrained (lr 0)", "none", 70.0)]
    claims = bench_language.thesis_claims(rows)
    assert not claims[f"{user}: every level above the untrained speaker"]  # 60 < its own 70
    lines = bench_language.verdict_lines(claims, rows, bench_language.parse_args(["--quick"]))
    assert any("untrained 70.0" in line for line in lines)


def test_a_partial_file_from_before_the_offline_probe_resumes_without_it(bench_language):
    """``--offline-probe-stages 0`` computes the rows of files from before the option existed,
    so their partial files' options (which lack it) still match."""
    old = bench_language.resume_options(bench_language.parse_args(["--quick"]))
    assert "offline_probe_stages" in old  # with the probe: part of what a row depends on
    args = bench_language.parse_args(["--quick", "--offline-probe-stages", "0"])
    assert "offline_probe_stages" not in bench_language.resume_options(args)


def test_report_shows_offline_columns_only_where_rows_have_them():
    from commenv.bench import report

    rows = [
        {"speaker": "a", "level": "none", "thesis (MNIST)": 1.0, "ours": 50.0, "± std": 1.0,
         "offline": 60.0},
        {"speaker": "user m:C", "level": "none", "thesis (MNIST)": 1.0, "ours": 40.0,
         "± std": 1.0, "offline": None},
    ]  # fmt: skip
    pivot = report.language_pivot({"rows": rows})
    assert "a, offline" in pivot and "user m:C, offline" not in pivot
    for r in rows:
        r["offline"] = None
    assert "offline" not in report.run_table("language", {"rows": rows})
