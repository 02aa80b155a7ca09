"""`qcbo compare`: every backend on every problem, gaps to the reference energy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "compare"
HELP = ("run several backends on problem files; table, report.json and a gap-vs-time PNG "
        "(gap = (E - ref) / max(|ref|, 1e-9))")


def _backend_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one backend, e.g. --backends sa,tabu")
    return names


def _backend_option(text: str) -> tuple[str, str, Any]:
    """'BACKEND.KEY=VALUE'; VALUE read as JSON when it parses, else a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"option {text!r} must look like backend.key=value")
    target, value = text.split("=", 1)
    backend, key = target.split(".", 1)
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return backend.strip(), key.strip().replace("-", "_"), parsed


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_executor_arguments, add_problem_arguments, positive_float

    add_problem_arguments(parser, many=True)
    parser.add_argument("--backends", type=_backend_list, required=True, metavar="A,B,C",
                        help="comma-separated backend names (see `qcbo backends`)")
    parser.add_argument("--time-limit", type=positive_float, default=None, metavar="S",
                        help="seconds per solve, for every backend")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="runs per backend and problem, seeds 0..N-1 (default 1)")
    parser.add_argument("--option", "-o", type=_backend_option, action="append", default=[],
                        metavar="BACKEND.KEY=VALUE",
                        help="backend option, repeatable (e.g. -o dwave-sa.num_reads=50)")
    add_executor_arguments(parser, "the solves")
    parser.add_argument("--out", default="compare-results", metavar="DIR",
                        help="folder for report.json and gap_vs_time.png (default "
                             "./compare-results; created if missing)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backends.compare import compare, format_table, plot_report
    from backends.executor import make_executor

    from ..cli import check_executor_arguments
    from ..errors import InputError
    from ..files import writable_ancestor
    from ..io import atomic_write, read_problems

    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    check_executor_arguments(args)
    options: dict[str, dict[str, Any]] = {}
    for backend, key, value in args.option:
        options.setdefault(backend, {})[key] = value
    problems, names = [], []
    for path in args.paths:
        found = read_problems(path, k=args.k, instance=args.instance)
        for i, problem in enumerate(found, start=1):
            problems.append(problem)
            default = Path(path).name if len(found) == 1 else f"{Path(path).name}#{i}"
            names.append(str(problem.metadata.get("name", default)))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; --out names a folder (created if missing) "
                         "for report.json and gap_vs_time.png")
    writable_ancestor(out, "--out")

    if args.executor == "serial" and args.workers is None and args.ray_address is None:
        report = compare(
            problems, args.backends, time_limit=args.time_limit, seeds=args.seeds,
            options=options, names=names,
            progress=lambda it, total: tqdm(it, total=total, desc="problems", unit="problem"),
        )
    else:
        with make_executor(args.executor, workers=args.workers,
                           ray_address=args.ray_address) as executor:
            report = compare(
                problems, args.backends, time_limit=args.time_limit, seeds=args.seeds,
                options=options, names=names, executor=executor,
                progress=lambda it, total: tqdm(it, total=total, desc="solves", unit="solve"),
            )
    report["paths"] = [str(p) for p in args.paths]
    out.mkdir(parents=True, exist_ok=True)
    # Everything is computed before anything is written; each file appears whole or not
    # at all.
    with atomic_write(out / "gap_vs_time.png", "wb") as handle:
        plot_report(report, handle)
    with atomic_write(out / "report.json", "w") as handle:
        json.dump(report, handle, indent=1, allow_nan=False)
    print(format_table(report))
    print(f"wrote {out / 'report.json'} and {out / 'gap_vs_time.png'}")
    return 0
