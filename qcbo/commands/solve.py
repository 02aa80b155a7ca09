"""`qcbo solve`: one problem, one backend."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

NAME = "solve"
HELP = "solve one problem with a backend and print the answer (or one JSON object with --json)"


def parse_option(text: str) -> tuple[str, Any]:
    """'key=value' with value read as JSON when it parses (numbers, true, lists), else str."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"option {text!r} must look like key=value")
    key, value = text.split("=", 1)
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip().replace("-", "_"), parsed


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_problem_arguments, positive_float

    add_problem_arguments(parser)
    parser.add_argument("--backend", default="sa", help="backend name (see `qcbo backends`); default sa")
    parser.add_argument("--time-limit", type=positive_float, default=None, metavar="S",
                        help="stop the solver after S seconds (the answer may then be non-optimal)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (recorded in the result)")
    parser.add_argument("--option", "-o", type=parse_option, action="append", default=[],
                        metavar="KEY=VALUE", help="backend option, repeatable (e.g. -o restarts=20)")
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON object: backend, energy, feasible, status, x, "
                             "wall_time_s, seed, info")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")


def run(args: argparse.Namespace) -> int:
    from backends import get_backend

    from ..io import atomic_write, read_problem

    problem = read_problem(args.path, k=args.k, instance=args.instance)
    backend = get_backend(args.backend)
    result = backend.solve(problem, seed=args.seed, time_limit=args.time_limit, **dict(args.option))
    payload = result.to_dict()
    payload["problem"] = {"path": str(args.path), "instance": args.instance, "n": problem.n,
                          "k": problem.k, "name": problem.metadata.get("name")}
    if args.out:
        with atomic_write(args.out, "w") as handle:
            json.dump(payload, handle, indent=1)
    if args.json:
        print(json.dumps(payload))
    else:
        best_known = problem.metadata.get("best_known")
        print(f"backend {result.backend}: status {result.status}, energy {result.energy:.10g}, "
              f"feasible {result.feasible}, {result.wall_time_s:.3f} s, seed {result.seed}")
        if best_known is not None and math.isfinite(result.energy):
            print(f"best known {best_known:.10g} (gap {result.energy - best_known:+.6g})")
        ones = [] if result.x is None else [int(i) for i in result.x.nonzero()[0]]
        print(f"x = 1 at {len(ones)} of {problem.n} variables: {ones[:64]}{' ...' if len(ones) > 64 else ''}")
    if result.status == "failed":
        print(f"qcbo: solver failed: {result.info.get('reason', 'no answer')}", file=sys.stderr)
        return 1
    return 0
