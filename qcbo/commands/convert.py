"""`qcbo convert`: between native .npz, block sets, UBQP, OR-Library, dimod .json and .lp.

Block sets stream: one block is in memory at a time, whatever the size of the set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

NAME = "convert"
HELP = ("convert a problem file; formats from the extensions (.npz .ubqp .txt/.bqp/.orlib "
        ".json .lp)")

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_problem_arguments
    from ..io import FORMATS

    parser.epilog = "formats: " + "; ".join(
        f"{f.name} ({' '.join(f.suffixes)}): {f.description}" for f in FORMATS.values())
    add_problem_arguments(parser)
    parser.add_argument("out", metavar="OUT", help="output file; .npz holding several problems "
                        "is written as a block set")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..io import (BlockSetWriter, check_output, detect_format, iter_problems,
                      output_format, problem_count, read_blockset, write_orlib)
    from ..io import resolve_path

    source = resolve_path(args.path)
    out = check_output(args.out)
    fmt = output_format(out)
    if out.resolve() == Path(source).resolve():
        raise InputError(f"{out}: output would overwrite the input; choose another name")
    count = problem_count(source, instance=args.instance)
    problems = iter_problems(source, k=args.k, instance=args.instance)
    if count > 1:
        if fmt.name in ("native", "blockset"):
            metadata = None
            if detect_format(source) == "blockset":
                with read_blockset(source) as blocks:
                    metadata = blocks.metadata
            with BlockSetWriter(out, metadata=metadata) as writer:
                for problem in problems:
                    writer.add(problem)
        elif fmt.name == "orlib":
            kept = []

            def noting() -> Iterator[Any]:
                for problem in problems:
                    kept.append(fmt.lost(problem))
                    yield problem

            write_orlib(out, noting(), count=count)
            lost = sorted({name for names in kept for name in names})
            if lost:
                print(f"qcbo: note: the {fmt.name} format ({out.suffix}) does not keep "
                      f"{', '.join(lost)} of the problems"
                      + ("; give --k when reading it back" if "k" in lost else ""),
                      file=sys.stderr)
        else:
            raise InputError(f"{args.path} holds {count} problems; write them to a "
                             ".npz block set or pick one with --instance")
    else:
        problem = next(iter(problems))
        lost = fmt.lost(problem)
        if lost:
            extra = "; give --k when reading it back" if "k" in lost else ""
            print(f"qcbo: note: the {fmt.name} format ({out.suffix}) does not keep "
                  f"{', '.join(lost)} (offset={problem.offset:g}, k={problem.k}){extra}",
                  file=sys.stderr)
        assert fmt.write is not None
        fmt.write(out, problem)
    print(f"wrote {count} problem(s) to {out}")
    return 0
