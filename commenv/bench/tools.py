"""Shared plumbing for the benchmarks of :mod:`commenv.bench`.

Every benchmark prints a markdown table with the thesis' numbers beside ours, writes JSON and
CSV (with the git commit, arguments and seed), draws a PNG, shows progress bars and can load a
user's own agent from ``module:Class``. Those pieces live here once.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib
import importlib.util
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from commenv.core import torch_seeded
from commenv.node_graph import PARTITIONS


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else must be a device this
    machine has (``ValueError`` naming ``--device`` otherwise, before any work starts)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from commenv.core import check_device

    return check_device(name, "--device")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy users of the global RNG
    torch.manual_seed(seed)


@contextlib.contextmanager
def seed_scope(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Python's, NumPy's, torch's CPU and ``device``'s streams seeded with ``seed`` for the
    block (as :func:`seed_everything` seeds them), then handed back to the caller as they were:
    a library call that trains seeds its own run without moving the user's streams. The
    benchmarks' ``main`` functions own their process and seed it outright instead."""
    import random

    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    try:
        with torch_seeded(seed, device):
            random.seed(seed)
            np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy users of the global RNG
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002


def _git(*argv: str) -> subprocess.CompletedProcess | None:
    """``git argv`` in this package's checkout (``None`` when git cannot run)."""
    try:
        return subprocess.run(
            ["git", *argv],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def _in_checkout() -> bool:
    """Whether this file is tracked by the git repository around it: a commenv checkout, not
    an installed copy inside some other project's repository (a ``.venv`` in a repo). Asked
    of git once per process (the commit and the dirty flag both need it)."""
    out = _git("ls-files", "--error-unmatch", Path(__file__).name)
    return out is not None and out.returncode == 0


def git_commit() -> str:
    """The current git commit of the commenv checkout, or ``"unknown"`` (an installed copy)."""
    out = _git("rev-parse", "--short", "HEAD") if _in_checkout() else None
    return (out.stdout.strip() if out is not None else "") or "unknown"


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
        try:
            mod_spec.loader.exec_module(module)
        except FileNotFoundError:
            raise ValueError(f"cannot import {spec!r}: no file {path}") from None
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # let users name modules in their working dir
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a missing module, or one of its own imports
            raise ValueError(f"cannot import {spec!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None


def load_class(
    spec: str,
    option: str,
    methods: Sequence[str],
    contract: str,
    init_kwargs: Sequence[str] | None = None,
    positional: int = 0,
) -> type:
    """:func:`load_object` for a user's ``--agent``/``--teacher`` class, checked before any
    run starts: a class with each of ``methods`` callable and, given ``init_kwargs``, a
    constructor that takes those arguments (and needs no others; the first ``positional`` of
    them are passed by position, as the benchmark passes them), else ``ValueError`` naming the
    option and pointing at the ``contract`` (where the interface is documented)."""
    import inspect

    cls = load_object(spec)
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        what = f"missing {', '.join(missing)}" if missing else "not a class"
        raise ValueError(
            f"{option} {spec!r} must be a class with {', '.join(f'{m}()' for m in methods)} "
            f"(see {contract}); {what}: got {cls!r}"
        )
    if init_kwargs is not None:
        try:
            signature = inspect.signature(cls)
        except (TypeError, ValueError):  # a builtin's: nothing to check
            return cls
        try:
            names = list(init_kwargs)
            signature.bind(*[None] * positional, **dict.fromkeys(names[positional:]))
        except TypeError as exc:
            call = f"{cls.__name__}({', '.join(f'{k}=' for k in init_kwargs)})"
            raise ValueError(
                f"{option} {spec!r} is built as {call} (see {contract}), but its "
                f"constructor{signature} refuses that: {exc}"
            ) from None
    return cls


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


def git_dirty() -> bool | None:
    """Whether the checkout's tracked files differ from ``HEAD`` (``None``: not a checkout), so
    that a result file says when its ``commit`` is not the whole story."""
    out = _git("status", "--porcelain", "--untracked-files=no") if _in_checkout() else None
    return bool(out.stdout.strip()) if out is not None and out.returncode == 0 else None


def run_metadata(args: Any) -> dict[str, Any]:
    """What every result file records: commit (and whether tracked files had changes), the
    command line, arguments, versions, machine (and the vector ISA of PyTorch's CPU kernels),
    time."""
    import numpy as np

    import commenv

    arg_dict = vars(args) if hasattr(args, "__dict__") else dict(args)
    return {
        "commit": git_commit(),
        "dirty": git_dirty(),
        "argv": list(sys.argv[1:]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in arg_dict.items()},
        "commenv": commenv.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels' vector ISA
        "cpu_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; once the block succeeds it is
    synced to disk and renamed onto ``path``, else removed. A run killed mid-write leaves the
    old file or the new one, never half of one (result files, figures, cached teachers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")
    return Path(path)


def write_results(
    out_dir: str | Path,
    name: str,
    rows: Sequence[dict[str, Any]],
    args: Any,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (rows + metadata) and ``<name>.csv`` atomically."""
    out = Path(out_dir)
    payload = {"meta": run_metadata(args), "rows": list(rows), **(extra or {})}
    json_path = atomic_write(out / f"{name}.json", json.dumps(payload, indent=2, default=_jsonable))
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields and not isinstance(row[k], list | dict)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write(out / f"{name}.csv", buf.getvalue())
    return json_path, csv_path


class RunStore:
    """Completed runs of one benchmark, kept so that a killed benchmark resumes where it stopped.

    Each finished run is appended as one JSON line ``{"run": name, "row": {...}}`` to
    ``<out_dir>/<name>.partial.jsonl`` (flushed and fsynced); a line cut short by a kill is
    ignored. With ``resume=True`` the runs already there are kept, otherwise the file starts
    empty (an earlier one that holds finished runs is kept as ``<name>.partial.jsonl.bak``).
    :meth:`finish` writes the result files atomically and removes the partial file, so a clean
    finish leaves no partial file and a partial file always means "not complete".

    Args:
        out_dir: the benchmark's result folder.
        name: the result files' stem (``<name>.json``, ``<name>.csv``).
        resume: keep the runs a previous, killed invocation completed.
        config: the options the rows depend on (see :func:`result_options`); resuming a partial
            file written under other options raises ``ValueError`` rather than mixing rows.
        lenient: options none of this invocation's runs reads (its ``inert_options``): a
            partial file written with other values of them resumes, and keeps those values
            (they are what its finished runs were computed with).
    """

    def __init__(
        self,
        out_dir: str | Path,
        name: str,
        resume: bool = False,
        config: dict[str, Any] | None = None,
        lenient: Iterable[str] = (),
    ) -> None:
        self.out_dir, self.name = Path(out_dir), name
        self.path = self.out_dir / f"{name}.partial.jsonl"
        self.config = json.loads(json.dumps(config or {}, default=_jsonable))
        self.lenient = set(lenient)
        self.rows: dict[str, dict[str, Any]] = {}
        self.resumed: dict[str, dict[str, Any]] = {}
        """The runs taken from the partial file, with what computed each (:func:`provenance`)."""
        self._opened = False
        if resume and self.path.exists():
            self._load()

    def start(self) -> None:
        """Start the partial file now (it is started by the first write otherwise): for a
        runner whose input is all checked, so that the file marks a run in progress."""
        self._open()

    def _open(self) -> None:
        """Start the partial file, on the first write: a benchmark that refuses its input
        after building the store has changed nothing on disk."""
        if self._opened:
            return
        if not self.resumed and self.path.exists() and '"run"' in self.path.read_text():
            # starting over: the killed invocation's finished runs move aside, not away
            backup = self.path.with_name(f"{self.path.name}.bak")
            os.replace(self.path, backup)
            print(
                f"note: {self.path} held finished runs of an earlier invocation; without "
                f"--resume this one starts over, and they are kept in {backup}"
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        head = json.dumps({"config": self.config}, default=_jsonable) + "\n"
        lines = (_run_line(k, v, self.resumed[k]) for k, v in self.rows.items())
        atomic_write(self.path, head + "".join(lines))
        self._opened = True

    def _load(self) -> None:
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line a kill cut short
                continue
            if "config" in entry:
                self._check_config(entry["config"])
            elif "run" in entry:
                self.rows[entry["run"]] = entry["row"]
                self.resumed[entry["run"]] = entry.get("meta") or {"commit": "unrecorded"}

    def _check_config(self, old: dict[str, Any]) -> None:
        changed = {k: (old.get(k), self.config.get(k)) for k in {*old, *self.config}}
        changed = {k: v for k, v in changed.items() if v[0] != v[1] and k not in self.lenient}
        self.config.update({k: old[k] for k in self.lenient if k in old})
        if changed:
            diff = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in sorted(changed.items()))
            raise ValueError(
                f"--resume: {self.path} was written with other options ({diff}); rerun with "
                "the same options, or without --resume to start over"
            )

    def __contains__(self, run: str) -> bool:
        return run in self.rows

    def add(self, run: str, row: dict[str, Any]) -> dict[str, Any]:
        """Record a finished run (durably, with its :func:`provenance`) and return its row."""
        self._open()
        with self.path.open("a") as f:
            f.write(_run_line(run, row, provenance()))
            f.flush()
            os.fsync(f.fileno())
        self.rows[run] = row
        return row

    def finish(
        self, rows: Sequence[dict[str, Any]], args: Any, extra: dict[str, Any] | None = None
    ) -> tuple[Path, Path]:
        """Write the result files atomically, then remove the partial file. Runs resumed from
        an earlier invocation are listed under ``"resumed"`` with what computed them, and a
        line is printed when that was other code than this process runs."""
        if not rows:
            raise ValueError(f"no rows to write in {self.out_dir}: nothing ran")
        self._open()
        if self.resumed:
            extra = {**(extra or {}), "resumed": self.resumed}
            now = provenance()
            other = sorted(
                run
                for run, src in self.resumed.items()
                if any(src.get(k) != now[k] for k in ("commit", "dirty", "commenv", "torch"))
            )
            if other:
                print(
                    f"note: {len(other)} resumed run(s) were computed by other code than this "
                    f"one ({now['commit']}): {', '.join(other[:5])}"
                    + (", ..." if len(other) > 5 else "")
                    + f"; see 'resumed' in {self.name}.json"
                )
        paths = write_results(self.out_dir, self.name, rows, args, extra)
        self.path.unlink(missing_ok=True)
        return paths


RUN_OPTIONS = (
    "quick",
    "runs",
    "names",
    "resume",
    "out_dir",
    "threads",
    "workers",
    "device",
    "no_plot",
)
"""Options that choose which runs happen, where and how fast, not what a run computes."""


def result_options(args: Any, ignore: Sequence[str] = RUN_OPTIONS) -> dict[str, Any]:
    """The options of ``args`` (a config dataclass) that a run's row depends on: what
    :class:`RunStore` checks before resuming."""
    arg_dict = vars(args) if hasattr(args, "__dict__") else dict(args)
    return {k: v for k, v in arg_dict.items() if k not in ignore}


def provenance() -> dict[str, Any]:
    """What computed a run: the code (commit, uncommitted changes, versions) and when."""
    import commenv

    return {
        "commit": git_commit(),
        "dirty": git_dirty(),
        "commenv": commenv.__version__,
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _run_line(run: str, row: dict[str, Any], meta: dict[str, Any]) -> str:
    return json.dumps({"run": run, "row": row, "meta": meta}, default=_jsonable) + "\n"


T = TypeVar("T")


def parse_config(
    cls: type[T],
    argv: Sequence[str] | None,
    description: str | None = None,
    quick: dict[str, Any] | None = None,
    prog: str | None = None,
    inert: Callable[[T], dict[str, str]] | None = None,
) -> T:
    """Parse ``argv`` into the benchmark's config dataclass ``cls`` (CleanRL's ``Args`` way):
    each field's docstring is its ``--help`` line, its default the only default.

    ``quick`` holds the fields the ``--quick`` preset changes: with ``--quick`` in ``argv`` they
    become the defaults (``--quick --help`` shows them), and options given beside it still win.
    ``prog`` is the command the usage line names (default ``commenv bench <module>`` for a
    benchmark module, not the console script's path). ``inert(config)`` maps the fields that
    would change nothing with these options to why (``--agent-content`` without ``--agent``);
    one of them typed on the command line is refused (:func:`refuse_inert`).
    """
    import tyro

    args = list(sys.argv[1:] if argv is None else argv)
    default = cls(**{"quick": True, **quick}) if quick is not None and "--quick" in args else None
    module = cls.__module__
    if module == "__main__":  # python -m commenv.bench.<name>: the module's real name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    if prog is None and module.startswith("commenv.bench."):
        prog = f"commenv bench {module.rsplit('.', 1)[1]}"
    config = tyro.cli(cls, args=args, description=description, default=default, prog=prog)
    check_options(config)
    if inert is not None:
        refuse_inert(args, config, inert(config), default if default is not None else cls())
    return config


def typed_fields(argv: Sequence[str], config: Any) -> set[str]:
    """The fields of the config dataclass ``config`` that ``argv`` names as options
    (``--eval-every 5``, ``--eval-every=5``, ``--no-resume``, tyro's ``--eval_every`` too)."""
    names = set(vars(config))
    typed = set()
    for token in argv:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0].replace("-", "_")
        if name in names:
            typed.add(name)
        elif name.startswith("no_") and name[3:] in names:
            typed.add(name[3:])
    return typed


def refuse_inert(
    argv: Sequence[str], config: Any, inert: dict[str, str], defaults: Any = None
) -> None:
    """``ValueError`` for an option typed in ``argv`` that ``inert`` lists, with a value other
    than its default in ``defaults`` (a config of the defaults; ``None``: any value): a value
    the runs would silently ignore (a hyperparameter of a protocol not selected, a modifier of
    an option not given) is a mistake the user should hear of before anything runs. An option
    left out, or typed at the value it has anyway (a script that passes every option), is
    never refused."""
    typed = typed_fields(argv, config)
    for field, why in inert.items():
        if field not in typed:
            continue
        if defaults is not None and getattr(config, field) == getattr(defaults, field, None):
            continue
        raise ValueError(f"--{field.replace('_', '-')} has no effect here: {why}")


COUNT_OPTIONS = (
    *("steps", "threads", "eval_every", "batch_size", "workers", "rounds", "stages", "seeds"),
    *("worlds", "n_nodes", "hidden", "feature_dim", "inbox_capacity", "message_bits"),
    *("student_hidden", "teacher_stack", "exam_every", "probe_epochs", "probe_patience"),
    *("patience_epochs", "temp_every", "codistill_period", "ist_period", "local_period"),
    *("mi_negatives", "max_epochs", "train_size", "powersgd_rank", "sizes", "memory_sizes"),
)
"""Options that count something (steps, threads, sizes...): integers >= 1 wherever they occur."""
POSITIVE_OPTIONS = ("lr", "seconds", "timeout")
"""Options that are finite numbers > 0."""


def check_options(config: Any) -> None:
    """The options every benchmark shares a meaning for, checked once they are parsed and
    before anything runs: counts (:data:`COUNT_OPTIONS`, each element of a tuple of sizes) are
    integers >= 1, :data:`POSITIVE_OPTIONS` are > 0 and ``seed`` is an integer in
    [0, 2**63 - 1]. ``ValueError`` names the option as it is typed (``--eval-every``); a field
    left ``None`` takes its preset's value later."""
    from commenv.core import check_float, check_int, check_seed

    for field, value in vars(config).items():
        flag = "--" + field.replace("_", "-")
        if value is None:
            continue
        if field in COUNT_OPTIONS:
            for v in value if isinstance(value, tuple | list) else (value,):
                check_int(flag, v, 1)
        elif field in POSITIVE_OPTIONS:
            check_float(flag, value, 0.0, low_open=True)
        elif field == "seed":
            check_seed(flag, value)
        elif field == "out_dir":
            check_out_dir(flag, value)
        elif field == "broadcast_margin":  # NaN would mean a broadcast probability of 1
            check_float(flag, value, 0.0)


def check_out_dir(flag: str, value: Any) -> Path:
    """A result folder that exists or can be made: not empty, not a file, under a writable
    folder; ``ValueError`` naming ``flag`` otherwise (checked before anything runs)."""
    if str(value).strip() == "":
        raise ValueError(f"{flag} must name a folder, got an empty path")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} must be a folder, got {str(path)!r}, which is a file")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r} cannot be made: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(path)!r} cannot be written: {str(parent)!r} is read-only")
    return path


def cli_main(main: Callable[[list[str] | None], Any], name: str, argv: list[str] | None = None):
    """Run a benchmark's ``main`` as a command (``commenv bench <name>`` and
    ``python -m commenv.bench.<name>`` alike): a bad value found after parsing exits 2 with its
    message, not a traceback; Ctrl-C says how to resume. Returns the exit status."""
    try:
        main(argv)
    except SystemExit as exc:  # --help, or a usage error the option parser reported
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except ValueError as exc:  # a bad option value found after parsing (e.g. an unknown run)
        print(f"commenv bench {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what finished is on disk, say how to go on
        print(
            f"\ncommenv bench {name}: interrupted; the runs that finished are kept in "
            f"<out-dir>/*.partial.jsonl: run the same command with --resume to go on",
            file=sys.stderr,
        )
        return 130
    return 0


def check_dataset(name: str, data_root: str | None) -> None:
    """``--dataset``/``--data-root`` checked before any run: a known data set that is there."""
    from commenv.datasets import check_available

    try:
        check_available(name, data_root)
    except ValueError as exc:
        raise ValueError(f"--dataset {name!r} (--data-root {data_root!r}): {exc}") from None


def as_option_error(
    exc: ValueError, options: Any, aliases: dict[str, str] | None = None
) -> ValueError:
    """``exc`` with the field name it starts with (``temperature must be ...``, the library's
    checks) written as the option the user typed (``--temperature must be ...``) when
    ``options`` has that field; ``aliases`` maps a library name to the option's field where
    they differ (a protocol's ``ratio`` is ``topk_ratio``). Other messages stay as they are."""
    message = str(exc)
    found = re.match(r"[a-z][a-z0-9_]*", message)
    if found:
        field = (aliases or {}).get(found.group(), found.group())
        if field in vars(options):
            message = "--" + field.replace("_", "-") + message[found.end() :]
    return ValueError(message)


def require_runs(plan: Sequence[Any], what: str) -> None:
    """``ValueError`` when the options select no run at all (``what`` says which options
    choose them), before any file is touched: an empty table would replace the results."""
    if not plan:
        raise ValueError(f"nothing to run: {what} select no run")


def unread(selected: Iterable[str], readers: dict[str, Sequence[str]], why: str) -> dict[str, str]:
    """The options of ``readers`` (option -> the kinds of rows that read it) that no kind in
    ``selected`` reads, each with ``why`` formatted with those kinds (for ``inert_options``)."""
    chosen = set(selected)
    return {
        field: why.format(" or ".join(kinds))
        for field, kinds in readers.items()
        if not chosen & set(kinds)
    }


def partition_inert(partitions: Sequence[str]) -> dict[str, str]:
    """``--dirichlet-alpha`` without a Dirichlet partition to shape (for ``inert_options``)."""
    if "dirichlet" in partitions:
        return {}
    return {"dirichlet_alpha": "it shapes the dirichlet partition; every run here is iid"}


@dataclass
class NodeGraphOptions:
    """The node_graph_v0 options every node-graph benchmark shares, written once.

    ``commenv bench graph``, ``commenv bench frontier``, ``commenv bench unsupervised`` and
    ``python -m commenv.distributed graph`` inherit them in their config dataclass (each
    field's docstring is its ``--help`` line, its default the only default) and redeclare a
    field only where their meaning or default really differs (``--quick``'s preset, ``graph``'s
    resolved dataset, the distributed ranks' device and threads, the unsupervised families'
    own learning rates and InfoNCE temperature).
    """

    quick: bool = False
    """the quick preset: digits, a short budget (a minute or two on 2 CPU cores)"""
    dataset: str | None = None
    """digits | fashion-mnist | mnist | cifar10 | synthetic (default fashion-mnist; digits with
    --quick)"""
    data_root: str | None = None
    """directory of the dataset files"""
    batch_size: int = 32
    """minibatch size of every node"""
    lr: float = 1e-3
    """Adam learning rate"""
    temperature: float = 0.5
    """softening of shared logits (the thesis: lower is better)"""
    consumption_prob: float = 0.5
    """probability of training on the inbox rather than local data"""
    broadcast_margin: float = 1.5
    """per-edge broadcast probability = margin * consumption_prob / (N - 1), so inboxes are fed
    slightly faster than they are read"""
    dirichlet_alpha: float = 0.5
    """class concentration of the dirichlet partition (smaller: more skewed)"""
    device: str = "auto"
    """auto (CUDA when present) | cpu | cuda"""
    threads: int = 1
    """torch CPU threads (1 is fastest on a few shared cores: OpenMP threads that wait for each
    other cost more than they compute)"""
    seed: int = 0
    """seed of partitions, models, sampling"""

    def broadcast_prob(self, n_nodes: int) -> float:
        """The per-edge broadcast probability of ``n_nodes`` nodes: ``broadcast_margin *
        consumption_prob / (n_nodes - 1)``, at most 1."""
        return min(1.0, self.broadcast_margin * self.consumption_prob / max(1, n_nodes - 1))

    def game_config(self) -> dict[str, Any]:
        """The ``NodeGraphGame`` keyword arguments these options set (the partition drawn from
        ``seed``); a benchmark adds its nodes, content, device and step budget."""
        return dict(
            dataset=self.dataset,
            data_root=self.data_root,
            batch_size=self.batch_size,
            consumption_prob=self.consumption_prob,
            dirichlet_alpha=self.dirichlet_alpha,
            partition_seed=self.seed,
        )


POPULATION_KWARGS = ("n_nodes", "image_shape", "num_classes", "share", "broadcast_prob")
POPULATION_KWARGS += ("feature_dim", "device", "seed")
"""What a user's node_graph_v0 population (``--agent`` of the graph and unsupervised benches
and of the distributed runner) is built with, the first three by position."""


@dataclass
class OutputSharingOptions(NodeGraphOptions):
    """:class:`NodeGraphOptions` plus the game's own knobs of the output-sharing runs (``commenv
    bench graph``, ``python -m commenv.distributed graph``): one partition, the data-starved
    subset, the payload precision, the inbox size and the features' loss weight."""

    partition: Literal[PARTITIONS] = "iid"
    """how the training set is split among nodes (exclusive either way)"""
    train_size: int | None = None
    """partition only this many random training samples (every configuration the same ones):
    data-starved nodes; default all"""
    float_bits: int = 32
    """bits per shared logit/feature value: 32, 16 (half) or 1-15 (uniform levels per sample;
    what arrives is quantized and billed so)"""
    inbox_capacity: int = 16
    """inbox size in minibatches"""
    feature_weight: float = 1.0
    """weight of the MSE on shared features"""

    def game_config(self) -> dict[str, Any]:
        return dict(
            super().game_config(),
            partition=self.partition,
            train_size=self.train_size,
            float_bits=self.float_bits,
            inbox_capacity=self.inbox_capacity,
        )


def verdict(claim: str, ok: bool, where: str, meaning: str, regime: str) -> str:
    """A thesis claim judged on one run, as one line: the verdict, on what, what it means
    there, and what to run for the thesis' regime."""
    return f"- {claim}: {'holds' if ok else 'FAILS'} on {where} — {meaning}; {regime}"


def slug(name: str) -> str:
    """A run's short name for the command line: ``"10 nodes, logits"`` -> ``"10-nodes-logits"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def select_runs(spec: str | None, names: Sequence[str], option: str = "--runs") -> list[str]:
    """The runs ``spec`` names, in the benchmark's order; ``None``/``"all"``: every run.

    ``spec`` is comma-separated run names (``"1 node,10 nodes, logits"``: a name may itself hold
    a comma) or their :func:`slug` s (``"1-node,10-nodes-logits"``), case-insensitive.
    """
    if spec is None or spec.strip().lower() == "all":
        return list(names)
    lookup = {}
    for name in names:
        lookup[name.lower()] = lookup[slug(name)] = name
    chosen, pending = [], ""
    for piece in spec.split(","):
        pending = f"{pending},{piece}" if pending else piece
        key = pending.strip().lower()
        if key in lookup or slug(key) in lookup:
            chosen.append(lookup.get(key) or lookup[slug(key)])
            pending = ""
    if pending.strip() or not chosen:
        raise ValueError(
            f"{option}: unknown run {pending.strip() or spec!r}; valid choices (names or slugs): "
            + ", ".join(f"{slug(n)!r}" for n in names)
        )
    return [n for n in names if n in chosen]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:  # as the result files: a kill leaves no half a PNG
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return Path(path)


def require(*modules: str, extra: str) -> None:
    """Stop with the install command (``SystemExit``, not a traceback) when an optional
    module of ``extra`` is missing: the examples' first line of work."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"this needs {', '.join(missing)}: pip install 'commenv[{extra}]'")


PLOT_HINT = "matplotlib is not installed: pip install 'commenv[plot]' for the figure"


def figure(draw: Callable[..., Path], *args: Any, **kwargs: Any) -> Path | str:
    """``draw(*args, **kwargs)``, a benchmark's figure, once its result files are written;
    without matplotlib (the ``[plot]`` extra) a note saying so instead of a traceback that
    would hide the files just written."""
    if importlib.util.find_spec("matplotlib") is None:
        return f"no figure ({PLOT_HINT})"
    return draw(*args, **kwargs)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
