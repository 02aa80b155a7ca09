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
import os
import pkgutil
import signal
import sys
import threading
from typing import NoReturn, Sequence

from . import commands as _commands_pkg
from .errors import QCBOError, SolverError

__all__ = ["main", "build_parser", "add_problem_arguments", "check_executor_arguments",
           "non_negative_int", "positive_float", "positive_int"]

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


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text} must be >= {low}")
    return value


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def add_problem_arguments(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """PATH (or PATHS...), --k and --instance, shared by the problem-reading commands."""
    kinds = (": .npz (native or block set), .ubqp, .txt/.bqp/.orlib (OR-Library, or UBQP "
             "text, told by the first line), .json (dimod), .lp; or sample:bqp50, "
             "sample:block, sample:blocks (shipped examples)")
    if many:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="problem files" + kinds)
    else:
        parser.add_argument("path", metavar="PATH", help="problem file" + kinds)
    parser.add_argument("--k", type=non_negative_int, default=None,
                        help="cardinality Σx = k for formats that carry none (UBQP, OR-Library)")
    parser.add_argument("--instance", type=int, default=None, metavar="I",
                        help="1-based instance of a multi-problem file (OR-Library, block set)")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"qcbo: error: {message} (see {self.prog} --help)\n")


def add_executor_arguments(parser: "argparse._ActionsContainer", what: str) -> None:
    """--executor, --workers, --ray-address (see `backends.executor`); ``what`` names the
    work spread ("the blocks", "the solves", ...)."""
    parser.add_argument("--executor", choices=("serial", "processes", "ray"), default="serial",
                        help=f"where {what} run: this process, local worker processes or Ray "
                             "(default serial); answers do not depend on it")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (processes) or CPUs of a local Ray (default: "
                             "one per CPU)")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="join this Ray cluster (default $RAY_ADDRESS, else a local Ray)")


def check_executor_arguments(args: argparse.Namespace) -> None:
    """Refuse, before any work, --workers below 1 and --workers or --ray-address that the
    chosen --executor would ignore (InputError)."""
    from .errors import InputError

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.ray_address is not None and args.executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    if args.executor == "serial" and args.workers not in (None, 1):
        raise InputError(f"--workers {args.workers} needs --executor processes or ray (the "
                         "default serial executor runs one task at a time)")


def _command_modules() -> list:
    names = [m.name for m in pkgutil.iter_modules(_commands_pkg.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    return [importlib.import_module(f"{_commands_pkg.__name__}.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
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


class Terminated(SystemExit):
    """Raised by the SIGTERM handler so that clean-up code (temporary files) runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


def _stdout_closed() -> int:
    """`qcbo info big.npz | head -1`: the reader went away; exit quietly like cat does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


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
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("qcbo: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print("qcbo: terminated", file=sys.stderr)
        return int(exc.code)
    except BrokenPipeError:
        return _stdout_closed()
    except SolverError as exc:
        if args.debug:
            raise
        print(f"qcbo: solver failed: {exc}", file=sys.stderr)
        return 1
    except QCBOError as exc:
        # InputError (UnknownOptionError, UnsupportedProblemError) and
        # BackendUnavailableError: the user's to fix.
        if args.debug:
            raise
        print(f"qcbo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_closed()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
