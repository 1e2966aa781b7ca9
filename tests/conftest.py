"""Suite-wide test settings and helpers."""

import importlib.util
import os
from pathlib import Path
from types import ModuleType

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
# python -m pytest` runs the suite on a GPU unchanged.
DEVICE = os.environ.get("COMMENV_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The test device (``COMMENV_TEST_DEVICE``, default ``cpu``); skips when it is absent."""
    dev = torch.device(DEVICE)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("COMMENV_TEST_DEVICE=cuda but CUDA is not available")
    return dev


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
