"""`qcbo convert`: between native .npz, block sets, UBQP, OR-Library, dimod .json and .lp."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "convert"
HELP = "convert a problem file; formats from the extensions (.npz .ubqp .txt .json .lp)"
log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_problem_arguments

    add_problem_arguments(parser)
    parser.add_argument("out", metavar="OUT", help="output file; .npz holding several problems "
                        "is written as a block set")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..io import read_problems, write_blockset, write_orlib, write_problem

    problems = read_problems(args.path, k=args.k, instance=args.instance)
    out = Path(args.out)
    suffix = out.suffix.lower()
    if out.resolve() == Path(args.path).resolve():
        raise InputError(f"{out}: output would overwrite the input; choose another name")
    if len(problems) > 1:
        if suffix == ".npz":
            write_blockset(out, problems)
        elif suffix in (".txt", ".bqp", ".orlib"):
            write_orlib(out, problems)
        else:
            raise InputError(f"{args.path} holds {len(problems)} problems; write them to a "
                             ".npz block set or pick one with --instance")
    else:
        problem = problems[0]
        lossy = suffix in (".ubqp", ".txt", ".bqp", ".orlib") and (problem.offset or problem.k is not None)
        if lossy:
            print(f"qcbo: note: {suffix} keeps neither offset nor k (offset={problem.offset:g}, "
                  f"k={problem.k}); give --k when reading it back")
        write_problem(out, problem)
    print(f"wrote {len(problems)} problem(s) to {out}")
    return 0
