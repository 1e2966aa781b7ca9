"""The ``commenv`` command line: ``commenv bench <name> [script args]``, ``commenv envs``.

``commenv bench quiz --quick`` runs ``examples/bench_quiz.py --quick``; every argument after
the benchmark name goes to the script (``commenv bench quiz --help`` shows them).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path


def examples_dir() -> Path:
    """The ``examples/`` folder of the source checkout this package was installed from."""
    here = Path(__file__).resolve().parent.parent / "examples"
    if not here.is_dir():
        raise SystemExit(
            "commenv bench needs the examples/ folder of a source checkout; install with "
            "`pip install -e .` from a clone of the repository"
        )
    return here


def available_benchmarks() -> list[str]:
    """Benchmark names: the ``examples/bench_<name>.py`` scripts."""
    try:
        return sorted(p.stem.removeprefix("bench_") for p in examples_dir().glob("bench_*.py"))
    except SystemExit:
        return []


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``commenv`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="commenv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run a benchmark script from examples/", add_help=False)
    bench.add_argument("name", nargs="?", help=f"one of {available_benchmarks()}")
    sub.add_parser("envs", help="list the games and their defaults")
    args, rest = parser.parse_known_args(argv)

    if args.command == "envs":
        import commenv

        for name, family in commenv.ENVS.items():
            summary = (family.__doc__ or "").strip().splitlines()[0]
            print(f"{name:18s} {summary}")
        return 0

    names = available_benchmarks()
    if args.name is None or args.name in ("-h", "--help"):
        print(f"usage: commenv bench {{{','.join(names)}}} [script options]")
        return 0
    if args.name not in names:
        print(f"unknown benchmark {args.name!r}; valid choices: {names}", file=sys.stderr)
        return 2
    script = examples_dir() / f"bench_{args.name}.py"
    sys.argv = [str(script), *rest]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:  # scripts call sys.exit / argparse exits
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
