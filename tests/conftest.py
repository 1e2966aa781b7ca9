"""Suite-wide test settings and helpers."""

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread for the whole suite: the models are tiny, and on a few shared cores
    OpenMP threads waiting on each other cost more than they compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session")
def example():
    """Import a script of ``examples/`` as a module: ``example("bench_graph").main([...])``."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


# The device every test that builds a game or a population uses: `COMMENV_TEST_DEVICE=cuda
# python -m pytest` runs the suite on a GPU unchanged. Tests take it from the `device` fixture
# (tests/test_devices.py checks that none hard-codes "cpu").
DEVICE = os.environ.get("COMMENV_TEST_DEVICE", "cpu")


def device_problem(name: str = DEVICE) -> str | None:
    """Why the test device ``name`` cannot run here (None when it can)."""
    dev = torch.device(name)
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        return f"COMMENV_TEST_DEVICE={name}: only cpu and cuda[:index] are supported"
    if not torch.cuda.is_available():
        return (
            f"COMMENV_TEST_DEVICE={name} but CUDA is not available on this machine: every test "
            "that builds a game or a population is skipped"
        )
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"COMMENV_TEST_DEVICE={name} but this machine has {torch.cuda.device_count()} GPU(s)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    """A device name torch does not know is a usage error, said once (not one per test)."""
    try:
        torch.device(DEVICE)
    except (RuntimeError, ValueError):
        raise pytest.UsageError(
            f"COMMENV_TEST_DEVICE={DEVICE!r} is not a torch device; use cpu (the default), "
            "cuda or cuda:<index>"
        ) from None
    config.addinivalue_line("markers", "requires_cuda: needs a CUDA device (skipped without one)")


def pytest_report_header(config: pytest.Config) -> str:
    problem = device_problem()
    return f"commenv test device: {DEVICE}" + (f" (SKIPPING: {problem})" if problem else "")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    problem = device_problem()
    if problem:
        terminalreporter.write_line(f"commenv: {problem}", yellow=True, bold=True)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The test device (``COMMENV_TEST_DEVICE``, default ``cpu``); every test taking it skips,
    with one reason, when this machine does not have it."""
    problem = device_problem()
    if problem:
        pytest.skip(problem)
    return torch.device(DEVICE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``requires_cuda`` skip cleanly on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (requires_cuda)")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


requires_cuda = pytest.mark.requires_cuda
