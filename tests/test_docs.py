"""The docs site: it builds with warnings as errors, its code runs, its tables are generated.

- ``mkdocs build --strict`` into a temporary folder (offline: no plugin fetches anything);
- every ```python block of every page runs, page by page in one namespace;
- every shell command in a ```bash block names a real benchmark or example, and every option
  it uses appears in that program's ``--help``;
- ``python -m commenv.bench.report --check``: every generated table in the docs and README
  matches the committed result files.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from commenv.bench import BENCHMARKS, report

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OPTIONAL_MODULES = ("torchrl", "tensordict", "vmas")
PAGES = sorted(p for p in DOCS.rglob("*.md"))
PYTHON = re.compile(r"```python\n(.*?)```", re.S)
SHELL = re.compile(r"```bash\n(.*?)```", re.S)


def python_blocks(path: Path) -> list[str]:
    return PYTHON.findall(path.read_text())


def shell_commands(path: Path) -> list[list[str]]:
    """Each command line of the page's bash blocks, split on ``&&``, comments dropped."""
    commands = []
    for block in SHELL.findall(path.read_text()):
        for line in block.replace("\\\n", " ").splitlines():  # join continued lines
            line = line.split("  #")[0].strip()
            if line.startswith("#"):
                continue
            for part in line.split("&&"):
                if part.strip():
                    commands.append(shlex.split(part))
    return commands


def test_docs_build_strict(tmp_path):
    """The site builds with every warning an error (broken links, griffe, missing pages)."""
    pytest.importorskip("mkdocs", reason="pip install -e '.[docs]' (in .[test])")
    result = subprocess.run(
        # no -q: mkdocs counts a warning for --strict only when it logs it
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "agents" / "index.html").is_file()
    game_page = (tmp_path / "site" / "games" / "partial_obs" / "index.html").read_text()
    assert "Real spaces" in game_page and "MultiBinary(36)" in game_page


@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.relative_to(DOCS).as_posix()
)
def test_page_python_blocks_run(page, monkeypatch, tmp_path):
    for module in OPTIONAL_MODULES:  # a page about an optional extra runs where it is installed
        if re.search(rf"^\s*(import|from) {module}\b", page.read_text(), re.M):
            pytest.importorskip(module, reason=f"the page needs the optional {module}")
    # Blocks run as a reader runs them from the repository root (they may read the committed
    # docs/results), but in a scratch folder so whatever they write lands there.
    (tmp_path / "docs").symlink_to(DOCS)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for i, block in enumerate(python_blocks(page)):
            exec(compile(block, f"{page}[block {i}]", "exec"), namespace)


def program_help(argv: list[str]) -> str | None:
    """``--help`` of the benchmark or example ``argv`` runs (None for other commands)."""
    if argv[:2] == ["commenv", "bench"]:
        module = f"commenv.bench.{argv[2]}"
        assert argv[2] in BENCHMARKS, f"unknown benchmark in {shlex.join(argv)}"
    elif argv[:2] == ["python", "-m"] and argv[2].startswith("commenv.bench."):
        module = argv[2]
    elif argv[:1] == ["python"] and argv[1].startswith("examples/"):
        module = None
    else:
        return None
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        if module is None:
            sys.argv = [argv[1], "--help"]
            runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
        else:
            importlib.import_module(module).main(["--help"])
    assert exit_.value.code in (0, None), shlex.join(argv)
    return out.getvalue()


SHELL_PAGES = [p for p in [*PAGES, ROOT / "README.md"] if SHELL.search(p.read_text())]


@pytest.mark.parametrize("page", SHELL_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shell_commands_match_their_help(page, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    for argv in shell_commands(page):
        text = program_help(argv)
        if text is None:
            continue
        for option in (a.split("=")[0] for a in argv if a.startswith("--") and a != "--help"):
            assert option in text, f"{page.name}: {shlex.join(argv)}: {option} not in --help"


def test_generated_tables_match_the_result_files():
    stale = report.stale(ROOT)
    assert not stale, f"stale generated files (run python -m commenv.bench.report): {stale}"


def test_every_result_folder_holds_what_its_benchmark_writes():
    for run in report.RUNS:
        path = report.result_file(ROOT, run)
        if path is None:
            continue
        data = json.loads(path.read_text())
        meta = data["meta"]
        for key in ("commit", "args", "torch", "python", "machine", "time"):
            assert key in meta, f"{path}: meta has no {key!r}"
        # the folder the run wrote: its docs folder, or a scratch folder of the same name whose
        # files were copied there unchanged (a long run kept out of the working tree)
        out = Path(meta["args"].get("out_dir") or meta["args"]["out"])
        assert out == Path(run.folder) or out.name == Path(run.folder).name, (path, out)
        assert path.with_suffix(".csv").is_file(), f"{path}: no CSV beside it"
        assert not list(path.parent.glob("*.partial*")), f"{path.parent}: partial file left"


def test_report_rejects_an_unlisted_folder(tmp_path):
    (tmp_path / "docs" / "results" / "graph" / "mystery").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "graph" / "mystery" / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not listed"):
        report.generated(tmp_path)


def test_report_shows_a_missing_run_as_not_yet_run(tmp_path):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    page = report.bench_page(tmp_path, "graph")
    assert "Not yet run" in page and "python -m commenv.bench.graph" in page
    assert "|---" not in page  # no table, so no number, for a run without files


def test_seed_summary_is_mean_and_std_over_the_seed_files(tmp_path):
    """Table 2.3's headline: per row the mean ± std (n - 1) over the seeds' files, per claim the
    seeds where it holds; a seed not yet committed is named as pending."""
    _, runs = report.SEED_SUMMARIES["unsupervised"]
    accs = {0: (80.0, 82.0, True), 1: (81.0, 85.0, False)}  # seed: (avg, coll, claim holds)
    for run, (seed, (avg, coll, holds)) in zip(runs, accs.items(), strict=False):
        folder = tmp_path / run.folder
        folder.mkdir(parents=True)
        data = {
            "meta": {"args": {"seed": seed}},
            "rows": [
                {"configuration": "VAE, 1 node", "avg_acc": avg, "coll_acc": None},
                {"configuration": "VAE, 10 nodes", "avg_acc": avg, "coll_acc": coll},
            ],
            "thesis_claims": {"a claim": {"holds": holds, "verdict": "why"}},
        }
        (folder / "unsupervised.json").write_text(json.dumps(data))
    summary = report.seed_summary(tmp_path, "unsupervised")
    assert "| VAE, 1 node | – | – | 80.5 ± 0.7 | – | 2 |" in summary
    assert "| VAE, 10 nodes | – | – | 80.5 ± 0.7 | 83.5 ± 2.1 | 2 |" in summary
    assert "- a claim: holds in 1 of 2 seeds" in summary
    assert f"Not yet run: {runs[2].title}" in summary
    assert report.headline(tmp_path, "unsupervised") == summary
    assert report.seed_summary(tmp_path, "graph") is None


def test_feature_pages_blocks_are_generated_from_their_files():
    """docs/distributed.md's tables come from the two placements' result files."""
    text = report.distributed_tables(ROOT)
    for label in report.DISTRIBUTED_RUNS:
        path = ROOT / "docs" / "results" / "distributed" / label / "distributed.json"
        rows = json.loads(path.read_text())["rows"]
        assert f"`docs/results/distributed/{label}/`" in text
        assert all(f"| {row['configuration']} | {row['processes']} |" in text for row in rows)
    page = (ROOT / "docs" / "distributed.md").read_text()
    assert text in page and ROOT / "docs" / "distributed.md" in report.generated(ROOT)


def test_distributed_growth_factors_are_the_files_ratio():
    base = ROOT / "docs" / "results" / "distributed"
    label, (labels_row, ddp_row) = report.DISTRIBUTED_LARGER

    def bytes_of(run: str, config: str) -> float:
        rows = json.loads((base / run / "distributed.json").read_text())["rows"]
        return next(r["bytes_per_node_step"] for r in rows if r["configuration"] == config)

    text = report.distributed_tables(ROOT)
    for config in (labels_row, ddp_row):
        ratio = bytes_of(label, config) / bytes_of("digits-p1", config)
        assert f"{config}: {ratio:.1f}x" in text
