"""`qcbo info`: size, k, density and value range of Q, and metadata."""

from __future__ import annotations

import argparse
import json

import numpy as np

NAME = "info"
HELP = "describe the problem(s) in a file: n, k, density and value range of Q, metadata"


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_problem_arguments

    add_problem_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object per problem")


def describe(problem) -> dict:
    """A JSON-ready summary of one problem."""
    q = problem.Q
    nonzero = q[q != 0]
    iu = np.triu_indices(problem.n)
    return {
        "n": problem.n,
        "k": problem.k,
        "offset": problem.offset,
        "density": float(np.count_nonzero(q[iu]) / len(iu[0])),
        "min": float(q.min()),
        "max": float(q.max()),
        "mean_abs_nonzero": float(np.abs(nonzero).mean()) if nonzero.size else 0.0,
        "labels": problem.labels is not None,
        "metadata": problem.metadata,
    }


def run(args: argparse.Namespace) -> int:
    from ..io import iter_problems

    for index, problem in enumerate(iter_problems(args.path, k=args.k, instance=args.instance), 1):
        d = describe(problem)
        if args.json:
            print(json.dumps(d))
            continue
        name = d["metadata"].get("name", f"#{index}")
        print(f"{name}: n={d['n']} k={d['k']} offset={d['offset']:g} density={d['density']:.3f} "
              f"Q in [{d['min']:.6g}, {d['max']:.6g}] mean|Q_ij|={d['mean_abs_nonzero']:.4g}")
        if d["metadata"]:
            print(f"  metadata: {json.dumps(d['metadata'])[:500]}")
    return 0
