"""The README is a short front door whose code runs, whose links resolve and whose numbers
are generated (``tests/test_docs.py`` checks the generated tables against the result files)."""

import contextlib
import io
import re
from pathlib import Path

from commenv.bench import BENCHMARKS, report

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_is_at_most_10_kb():
    assert len(README.read_bytes()) <= 10 * 1024


def test_readme_python_blocks_run(monkeypatch, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    assert set(namespace["rewards"]) == {"agent_0", "agent_1"}


def test_quick_start_is_two_commands_setup_then_tests():
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert (
        commands[0].startswith("pip install torch") and "commenv bench graph --quick" in commands[0]
    )
    assert commands[1] == "python -m pytest"


def test_readme_test_command_is_what_ci_runs():
    ci = ROOT / ".ci" / "run"
    assert "python -m pytest" in README.read_text()
    assert ci.read_text().strip().splitlines()[-1] == "python -m pytest"


def test_install_names_the_cpu_and_cuda_builds():
    text = README.read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "CUDA" in text and "torch==2.13.0" in text


def test_relative_links_resolve():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text()):
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_one_bring_your_own_agent_link_per_benchmark_option():
    text = README.read_text()
    for anchor in ("#node-graph", "#quiz", "#partial-observation"):
        assert f"docs/agents.md{anchor})" in text
    agents = (ROOT / "docs" / "agents.md").read_text()
    for heading in ("## Node graph", "## Quiz", "## Partial observation"):
        assert heading in agents


def test_one_generated_headline_table_per_thesis_table():
    text = README.read_text()
    for name in report.HEADLINE:
        assert f"<!-- report:{name} -->" in text and f"<!-- /report:{name} -->" in text
    assert set(report.HEADLINE) <= set(BENCHMARKS)


def test_no_hand_copied_number_outside_the_generated_blocks():
    text = report.BLOCK.sub("", README.read_text())
    text = re.sub(r"```.*?```|`[^`]*`|[Tt]able \d\.\d", "", text, flags=re.S)  # code, names
    allowed = {"3.10"}  # Python >= 3.10
    numbers = set(re.findall(r"\d+\.\d+(?:\.\d+)?", text)) - allowed
    assert not numbers, f"numbers typed into the README by hand: {sorted(numbers)}"


def test_layout_section_matches_the_tree():
    layout = README.read_text().split("## Layout", 1)[1]
    folders = re.findall(r"^([\w/]+/)\s", layout, flags=re.M)
    assert folders == ["commenv/", "commenv/bench/", "agents/", "examples/", "tests/", "docs/"]
    for folder in folders:
        assert (ROOT / folder).is_dir()
    for name in re.findall(r"\b(\w+\.py)\b", layout):
        assert list(ROOT.glob(f"*/{name}")) or list(ROOT.glob(f"*/*/{name}")), name
