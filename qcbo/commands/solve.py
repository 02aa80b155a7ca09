"""`qcbo solve`: one problem, one backend; or, with --all, every block of a block set."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, Iterator

NAME = "solve"
HELP = ("solve one problem with a backend and print the answer (or one JSON object with "
        "--json); with --all, every block of a block set into a JSON-lines file")


def parse_option(text: str) -> tuple[str, Any]:
    """'key=value' with value read as JSON when it parses (numbers, true, lists), else str."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"option {text!r} must look like key=value")
    key, value = text.split("=", 1)
    if not key.strip():
        raise argparse.ArgumentTypeError(f"option {text!r} has no name; use key=value")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip().replace("-", "_"), parsed


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_executor_arguments, add_problem_arguments, positive_float

    add_problem_arguments(parser)
    parser.add_argument("--backend", default="sa", help="backend name (see `qcbo backends`); default sa")
    parser.add_argument("--time-limit", type=positive_float, default=None, metavar="S",
                        help="stop the solver after S seconds (the answer may then be non-optimal)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: a fresh one, printed and recorded in the "
                             "result); with --all the run seed (default 0), from which each "
                             "block's seed is derived")
    parser.add_argument("--option", "-o", type=parse_option, action="append", default=[],
                        metavar="KEY=VALUE", help="backend option, repeatable (e.g. -o restarts=20)")
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON object: backend, energy, feasible, status, x, "
                             "wall_time_s, seed, info, problem (path, instance, n, k, name)")
    parser.add_argument("--out", metavar="FILE",
                        help="also write the JSON result to FILE (not when the solver fails: "
                             "an existing FILE is kept); with --all (required): the JSON-lines "
                             "results file, resumed when it exists")
    group = parser.add_argument_group("block sets (--all)")
    group.add_argument("--all", action="store_true",
                       help="solve every block of the block set PATH; one JSON line per block "
                            "goes to --out as blocks finish; blocks already there are skipped")
    add_executor_arguments(group, "the blocks")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError

    if args.all:
        return _run_all(args)
    if args.executor != "serial" or args.workers is not None or args.ray_address is not None:
        raise InputError("--executor, --workers and --ray-address need --all")

    from backends import get_backend

    from ..io import atomic_write, check_output, read_problem, resolve_path

    if args.out is not None:
        check_output(args.out, "--out", inputs=(resolve_path(args.path),))
    problem = read_problem(args.path, k=args.k, instance=args.instance)
    backend = get_backend(args.backend)
    result = backend.solve(problem, seed=args.seed, time_limit=args.time_limit, **dict(args.option))
    payload = result.to_dict()
    payload["problem"] = {"path": str(args.path), "instance": args.instance, "n": problem.n,
                          "k": problem.k, "name": problem.metadata.get("name")}
    if args.out and result.status != "failed":  # a failed solve leaves --out as it was
        with atomic_write(args.out, "w") as handle:
            json.dump(payload, handle, indent=1)
    if args.json:
        print(json.dumps(payload))
    else:
        from backends.compare import applicable_best_known

        best_known = applicable_best_known(problem)
        print(f"backend {result.backend}: status {result.status}, energy {result.energy:.10g}, "
              f"feasible {result.feasible}, {result.wall_time_s:.3f} s, seed {result.seed}")
        if best_known is not None and math.isfinite(result.energy):
            print(f"best known {best_known:.10g} (gap {result.energy - best_known:+.6g})")
        ones = [] if result.x is None else [int(i) for i in result.x.nonzero()[0]]
        print(f"x = 1 at {len(ones)} of {problem.n} variables: {ones[:64]}{' ...' if len(ones) > 64 else ''}")
    if result.status == "failed":
        kept = f"; {args.out} not written" if args.out else ""
        print(f"qcbo: solver failed: {result.info.get('reason', 'no answer')}{kept}",
              file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- --all
def _run_all(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from backends import backend_class
    from backends.executor import make_executor, task_seed

    from ..cli import check_executor_arguments
    from ..errors import InputError
    from ..io import check_output, detect_format, read_blockset, resolve_path, with_k

    if not args.out:
        raise InputError("--all writes one JSON line per block: give the results file with --out")
    for flag, given in (("--instance", args.instance is not None), ("--json", args.json)):
        if given:
            raise InputError(f"{flag} does not go with --all")
    check_executor_arguments(args)
    if detect_format(args.path) != "blockset":
        raise InputError(f"{args.path}: not a block set; --all solves every block of a block set "
                         "(write one with `qcbo convert` or pruning's export)")
    run_seed = 0 if args.seed is None else args.seed
    task_seed(run_seed, 0)  # a negative seed fails here, before any work
    backend = backend_class(args.backend)()
    options = dict(args.option)
    out = check_output(args.out, "--out", inputs=(resolve_path(args.path),))

    with read_blockset(args.path) as blocks:
        if len(blocks) == 0:
            raise InputError(f"{args.path}: the block set holds no problems")
        settings = {"options": options, "time_limit": args.time_limit, "k": args.k}
        done, good_bytes = _read_results(out, len(blocks), args.backend, run_seed, settings)
        todo = [i for i in range(len(blocks)) if i not in done]
        if not todo:
            print(f"all {len(blocks)} blocks are already in {out}; nothing to do")
            return 0
        # Options and k are checked on the blocks before the results file is touched
        # (k on every block to solve, options on the first).
        checked = [with_k(blocks[i], args.k, args.path)
                   for i in (todo if args.k is not None else todo[:1])]
        backend.prepare(checked[0], options)
        failed = 0
        about: dict[int, tuple[str, int, int | None]] = {}

        def problems() -> Iterator[Any]:
            for i in todo:
                problem = with_k(blocks[i], args.k, args.path)
                name = problem.metadata.get("name") or f"{Path(args.path).name}[{i}]"
                about[i] = (str(name), problem.n, problem.k)
                yield problem

        with make_executor(args.executor, workers=args.workers,
                           ray_address=args.ray_address) as executor, \
                _open_results(out, good_bytes) as handle, \
                tqdm(total=len(blocks), initial=len(done), unit="block", file=sys.stderr,
                     desc=f"{args.backend}, {executor.workers} worker(s)") as bar:
            outcomes = executor.solve_iter(problems(), args.backend, options, seed=run_seed,
                                           time_limit=args.time_limit, indices=todo)
            for index, result, info in outcomes:
                name, n, k = about.pop(index)
                line = {"index": index, "name": name, "n": n, "k": k, "run_seed": run_seed,
                        **result.to_dict(), "worker": info["worker"], "node": info["node"],
                        "settings": settings}
                handle.write((json.dumps(line, allow_nan=False) + "\n").encode())
                handle.flush()
                os.fsync(handle.fileno())
                failed += result.status == "failed"
                bar.update(1)
    print(f"solved {len(todo)} block(s) ({len(done)} already in {out}) with {args.backend} "
          f"on the {args.executor} executor; wrote {out}")
    if failed:
        print(f"qcbo: solver failed on {failed} block(s); see status in {out}", file=sys.stderr)
        return 1
    return 0


#: How every line of a results file starts (json.dumps of a dict whose first key is
#: "index"): a torn last line must start so too.
_LINE_START = b'{"index": '


def _read_results(path: Path, count: int, backend: str, run_seed: int,
                  settings: dict[str, Any] | None = None) -> tuple[set[int], int]:
    """Indices already in a results file, and the length in bytes of its whole lines.

    Every line ends with a newline when written whole, so a last line without one was
    cut short by an interrupted run: it is left out (and overwritten). Any other line
    that is not a result of this block set, backend and seed is an error.
    """
    from ..errors import InputError

    if not path.exists():
        return set(), 0
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the results file ({exc.strerror})") from None
    done: set[int] = set()
    good = 0
    *whole, torn = data.split(b"\n")  # b"" unless the last write was cut short
    if torn and not (_LINE_START.startswith(torn[:len(_LINE_START)])):
        raise InputError(f"{path}: not a results file of `qcbo solve --all` (its last line "
                         "is not a result line); use another --out")
    for number, raw in enumerate(whole, start=1):
        try:
            line = json.loads(raw)
            index = line["index"]
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: not a result line of `qcbo solve --all` for "
                             f"this block set of {count} blocks") from None
        if line.get("backend") != backend or line.get("run_seed") != run_seed:
            raise InputError(f"{path}: holds results of backend {line.get('backend')} with seed "
                             f"{line.get('run_seed')}; use another --out for {backend} with "
                             f"seed {run_seed}")
        if settings is not None and "settings" in line and line["settings"] != settings:
            raise InputError(f"{path}: holds results made with other settings "
                             f"({json.dumps(line['settings'], sort_keys=True)}); resume with "
                             "the same -o, --time-limit and --k, or use another --out")
        if index in done:
            raise InputError(f"{path}:{number}: block {index} appears twice")
        done.add(index)
        good += len(raw) + 1
    return done, good


@contextlib.contextmanager
def _open_results(path: Path, keep: int) -> Iterator[BinaryIO]:
    """The results file opened for appending after its first ``keep`` bytes."""
    from ..errors import InputError

    try:
        handle = open(path, "r+b" if path.exists() else "wb")
    except OSError as exc:
        raise InputError(f"{path}: cannot write the results file ({exc.strerror})") from None
    with handle:
        handle.truncate(keep)
        handle.seek(keep)
        yield handle
