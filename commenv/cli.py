"""The ``commenv`` command line: ``commenv bench <name> [options]``, ``commenv envs``.

``commenv bench quiz --quick`` runs :mod:`commenv.bench.quiz` with ``--quick``; every argument
after the benchmark name goes to the benchmark (``commenv bench quiz --help`` shows them).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from commenv.bench import BENCHMARKS


def available_benchmarks() -> list[str]:
    """Benchmark names: the modules of :mod:`commenv.bench`."""
    return sorted(BENCHMARKS)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``commenv`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    description = "commenv bench <name> [options] runs a benchmark; commenv envs lists the games"
    parser = argparse.ArgumentParser(prog="commenv", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench", help=f"run a benchmark: {', '.join(available_benchmarks())}", add_help=False
    )
    bench.add_argument("name", nargs="?", help=f"one of {available_benchmarks()}")
    sub.add_parser("envs", help="list the games and their defaults")
    args, rest = parser.parse_known_args(argv)
    # only a benchmark's own options follow its name; anything else is a usage error
    asks_help = args.command == "bench" and args.name is None and rest in (["-h"], ["--help"])
    if rest and (args.command == "envs" or args.name is None) and not asks_help:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    if args.command == "envs":
        return _print_envs()

    names = available_benchmarks()
    if args.name is None:
        print(f"usage: commenv bench {{{','.join(names)}}} [options]\n")
        for name in names:
            print(f"  {name:13s} {BENCHMARKS[name]}")
        return 0
    if args.name not in names:
        print(f"unknown benchmark {args.name!r}; valid choices: {names}", file=sys.stderr)
        return 2
    from commenv.bench.tools import cli_main

    module = importlib.import_module(f"commenv.bench.{args.name}")
    return cli_main(module.main, args.name, rest)


def _print_envs() -> int:
    """Each game, its one-line summary and its constructor defaults."""
    import commenv

    try:
        for name, family in commenv.ENVS.items():
            summary = (family.__doc__ or "").strip().splitlines()[0]
            summary = summary.removeprefix(name).lstrip(" —-:")  # the docstring names it too
            print(f"{name}: {summary}")
            defaults = ", ".join(f"{k}={v!r}" for k, v in family.defaults().items())
            print(f"    {defaults}")
        sys.stdout.flush()
    except BrokenPipeError:  # `commenv envs | head` closed the pipe: not an error
        sys.stdout = None  # type: ignore[assignment]  # no flush at interpreter exit
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
