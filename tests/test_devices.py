"""The suite runs on the device ``COMMENV_TEST_DEVICE`` names: a static check that keeps it so.

``COMMENV_TEST_DEVICE=cuda python -m pytest`` runs every test that builds a batched game, a
population, a teacher, a student, a channel or a benchmark on the GPU, because those tests take
the ``device`` fixture of ``tests/conftest.py``. A machine without CUDA cannot show that a test
forgot to, so this module reads the test sources with :mod:`ast` instead:

- a call of one of :data:`BUILDERS` passes ``device=`` (not the literal ``"cpu"``), or carries a
  ``# device-free: <why>`` comment on one of its lines (configuration checks that raise before
  any tensor exists, hostile ``device`` values);
- a benchmark's ``main([...])`` that writes results (``--out-dir``) passes ``--device``, not
  ``cpu``.

Inherently CPU faces (PettingZoo/Gymnasium numpy faces, which always run one world on the CPU;
the gloo multi-process tests) do not go through these builders.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from tests.conftest import device_problem, requires_cuda

TESTS = Path(__file__).resolve().parent
BUILDERS = frozenset(
    {
        # games (the batched face) and their adapters
        "NodeGraphGame",
        "PartialObsGame",
        "QuizGame",
        "batched",
        "make_torchrl_env",
        "Channel",
        "from_spec",
        # populations, protocols, the quiz's student and teacher, the speakers' runs
        "OutputSharingPopulation",
        "SequentialPopulation",
        "VAEPopulation",
        "BiGANPopulation",
        "SequentialUnsupervised",
        "make_protocol",
        "Student",
        "train_teacher",
        "load_teacher",
        "SpeakerRunConfig",
        "speed_rows",
    }
)
EXEMPT = "device-free:"


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_cpu(node: ast.expr) -> bool:
    """``"cpu"`` or ``torch.device("cpu")``."""
    if isinstance(node, ast.Constant):
        return node.value == "cpu"
    return (
        isinstance(node, ast.Call)
        and _name(node.func) == "device"
        and any(_is_cpu(a) for a in node.args)
    )


def _exempt(call: ast.Call, lines: list[str]) -> bool:
    return any(EXEMPT in line for line in lines[call.lineno - 1 : call.end_lineno])


def builder_problems(source: str, filename: str = "<test>") -> list[str]:
    """Calls of :data:`BUILDERS` that leave the device to its default or hard-code the CPU."""
    lines = source.splitlines()
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or _name(node.func) not in BUILDERS:
            continue
        if _name(node.func) == "batched" and not isinstance(node.func, ast.Attribute):
            continue  # a local helper or model named so, not ``family.batched``
        where = f"{filename}:{node.lineno} {_name(node.func)}(...)"
        device = [k.value for k in node.keywords if k.arg == "device"]
        if _exempt(node, lines):  # says why this call needs no device or must be the CPU
            continue
        if any(_is_cpu(v) for v in device) or any(_is_cpu(a) for a in node.args):
            problems.append(f"{where} hard-codes the CPU; take the `device` fixture")
        elif not device:
            problems.append(
                f"{where} leaves device to its default (cpu); pass device=device, or mark the "
                f"call `# {EXEMPT} <why>` when no tensor is built"
            )
    return problems


def main_problems(source: str, filename: str = "<test>") -> list[str]:
    """Benchmark ``main([...])`` calls that write results without ``--device`` or on ``cpu``."""
    lines = source.splitlines()
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and _name(node.func) == "main" and node.args):
            continue
        if _exempt(node, lines):
            continue
        argv = node.args[0]
        if isinstance(argv, ast.BinOp):  # [...] + [...]
            parts = [argv.left, argv.right]
            argv = ast.List(elts=[e for p in parts if isinstance(p, ast.List) for e in p.elts])
        if not isinstance(argv, ast.List):
            continue
        words = [e.value if isinstance(e, ast.Constant) else None for e in argv.elts]
        if "--out-dir" not in words:
            continue
        where = f"{filename}:{node.lineno} main([...])"
        if "--device" not in words:
            problems.append(f'{where} writes results without "--device", str(device)')
        elif words.index("--device") + 1 < len(words) and words[words.index("--device") + 1]:
            problems.append(f"{where} hard-codes --device; pass str(device)")
    return problems


def test_every_test_takes_its_device_from_the_fixture():
    problems = []
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        source = path.read_text()
        problems += builder_problems(source, path.name) + main_problems(source, path.name)
    assert not problems, "\n".join(problems)


def test_the_check_catches_what_it_is_for():
    bad = (
        "def test_a():\n"
        "    NodeGraphGame(n_nodes=2)\n"
        "    commenv.partial_obs_v0.batched(8, 'cpu')\n"
        "    OutputSharingPopulation(2, (1, 8, 8), 10, device=torch.device('cpu'))\n"
        "    bench.main(['--quick', '--out-dir', str(tmp)])\n"
        "    bench.main(['--out-dir', str(tmp), '--device', 'cpu'])\n"
    )
    good = (
        "def test_b(device):\n"
        "    NodeGraphGame(n_nodes=2, device=device)\n"
        "    family.batched(**config)  # device-free: raises before any tensor\n"
        "    family.batched(device='cuda:99')  # a hostile value, not the CPU\n"
        "    bench.main(['--out-dir', str(tmp), '--device', str(device)])\n"
        "    bench.main(['--help'])\n"
    )
    assert len(builder_problems(bad)) == 3 and len(main_problems(bad)) == 2
    assert builder_problems(good) == [] and main_problems(good) == []


def test_the_device_problem_is_said_for_each_kind_of_name(monkeypatch):
    assert device_problem("cpu") is None
    assert "only cpu and cuda" in device_problem("meta")
    if not torch.cuda.is_available():
        assert "CUDA is not available" in device_problem("cuda")
        assert "every test that builds a game or a population is skipped" in device_problem("cuda")
    else:
        assert device_problem("cuda") is None
        assert "GPU(s)" in device_problem(f"cuda:{torch.cuda.device_count()}")


@requires_cuda
def test_a_game_and_a_population_run_on_cuda():
    """The smallest end-to-end proof on a GPU machine, whatever COMMENV_TEST_DEVICE says."""
    from commenv.node_graph import NodeGraphGame
    from commenv_agents.population import OutputSharingPopulation, run_population

    game = NodeGraphGame(n_nodes=3, batch_size=8, device="cuda")
    pop = OutputSharingPopulation(
        3, game.image_shape, game.num_classes, share="labels", broadcast_prob=0.5, device="cuda"
    )
    hist = run_population(game, pop, 4, test=(game.test_images[:32], game.test_labels[:32]))
    assert hist[-1]["step"] == 4 and game.images.device.type == "cuda"
