"""Shared plumbing for the benchmark scripts in ``examples/``.

Every benchmark prints a markdown table with the thesis' numbers beside ours, writes JSON and
CSV (with the git commit, arguments and seed), draws a PNG, shows progress bars and can load a
user's own agent from ``module:Class``. Those pieces live here once.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy users of the global RNG
    torch.manual_seed(seed)


def git_commit() -> str:
    """The current git commit of the checkout, or ``"unknown"``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_object(spec: str) -> Any:
    """Import ``"package.module:Name"`` (a file path ``"path/to/file.py:Name"`` works too)."""
    if ":" not in spec:
        raise ValueError(f"expected 'module:Name', got {spec!r}")
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ValueError(f"cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # let users name modules in their working dir
        module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm progress bar on stderr (disabled with ``COMMENV_NO_PROGRESS=1``)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", os.environ.get("COMMENV_NO_PROGRESS") == "1")
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def fmt(value: Any, digits: int = 1) -> str:
    """Format a table cell: floats to ``digits`` places, None/NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], digits: int = 1) -> str:
    """Render ``rows`` (dicts) as a markdown table with the given column order."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c), digits) for c in columns) + " |")
    return "\n".join(lines)


def run_metadata(args: Any) -> dict[str, Any]:
    """What every result file records: commit, arguments, versions, machine, time."""
    arg_dict = vars(args) if hasattr(args, "__dict__") else dict(args)
    return {
        "commit": git_commit(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in arg_dict.items()},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(
    out_dir: str | Path,
    name: str,
    rows: Sequence[dict[str, Any]],
    args: Any,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (rows + metadata) and ``<name>.csv``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    payload = {"meta": run_metadata(args), "rows": list(rows), **(extra or {})}
    json_path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields and not isinstance(row[k], list | dict)]
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
