"""The `qcbo` command line.

Subcommands live in `qcbo.commands`, one module each, discovered at start-up; a module
defines ``NAME``, ``HELP``, ``configure(parser)`` and ``run(args) -> int`` and imports
heavy packages only inside ``run`` so that ``qcbo --help`` is instant.

Exit codes: 0 success; 2 bad input, usage or a missing optional package; 1 a solver
that failed. Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Sequence

from . import commands as _commands_pkg
from .errors import BackendUnavailableError, InputError, QCBOError, SolverError

__all__ = ["main", "build_parser", "add_problem_arguments", "non_negative_int", "positive_float"]

#: Order in `qcbo --help`; modules not listed here follow alphabetically.
_ORDER = ["prune", "solve", "compare", "info", "convert", "backends", "submit", "collect"]


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive finite number")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def add_problem_arguments(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """PATH (or PATHS...), --k and --instance, shared by the problem-reading commands."""
    if many:
        parser.add_argument("paths", nargs="+", metavar="PATH",
                            help="problem files: .npz (native or block set), .ubqp, "
                                 ".txt/.bqp (OR-Library), .json (dimod), .lp")
    else:
        parser.add_argument("path", metavar="PATH",
                            help="problem file: .npz (native or block set), .ubqp, "
                                 ".txt/.bqp (OR-Library), .json (dimod), .lp")
    parser.add_argument("--k", type=non_negative_int, default=None,
                        help="cardinality Σx = k for formats that carry none (UBQP, OR-Library)")
    parser.add_argument("--instance", type=int, default=None, metavar="I",
                        help="1-based instance of a multi-problem file (OR-Library, block set)")


def _command_modules() -> list:
    names = [m.name for m in pkgutil.iter_modules(_commands_pkg.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    return [importlib.import_module(f"{_commands_pkg.__name__}.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="qcbo",
        description="Quadratic constrained binary optimisation: min xᵀQx + offset over binary "
                    "x with Σx = k, classical and quantum solvers, and iCBS network pruning.",
    )
    parser.add_argument("--version", action="version", version=f"qcbo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("qcbo: interrupted", file=sys.stderr)
        return 130
    except SolverError as exc:
        if args.debug:
            raise
        print(f"qcbo: solver failed: {exc}", file=sys.stderr)
        return 1
    except (InputError, BackendUnavailableError, QCBOError) as exc:
        if args.debug:
            raise
        print(f"qcbo: error: {exc}", file=sys.stderr)
        return 2
    except TypeError as exc:
        # Unknown backend options arrive as TypeError from Backend.solve.
        if args.debug or "unknown option" not in str(exc):
            raise
        print(f"qcbo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
