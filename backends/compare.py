"""Run several backends on several problems and compare them against a reference energy.

    >>> report = compare(problems, ["exact", "sa", "tabu"], time_limit=1.0, seeds=3)
    >>> print(format_table(report))

The reference energy of a problem is the lowest feasible energy that any backend found
on it (any seed), or ``metadata["best_known"]`` when that is lower and applies to the
problem as posed (see `applicable_best_known`: an OR-Library best-known value is for the
unconstrained instance and never the reference once a k is set). It is marked
``reference_proven`` when a backend proved it optimal (status "optimal") and nothing
lower is known.

With an ``executor`` (see `backends.executor`), the problems x seeds of each backend run
as parallel tasks; the report is the same as a serial one (wall times aside).

The relative gap of a feasible answer with energy E is

    gap = (E - ref) / max(|ref|, GAP_FLOOR)

which is >= 0, scale-free for |ref| >= GAP_FLOOR, and stays finite when ref is 0 or
negative (minimisation energies are often negative; dividing by |ref| keeps the sign of
E - ref). An answer "reached" the reference when E <= ref + REACH_RTOL * max(|ref|, 1).
Infeasible and failed answers have no gap; they count against the feasibility rate and
never reach the reference; a solve that runs out of memory is a failed run. A problem
that a backend refuses (UnsupportedProblemError, e.g. too large for ``exact``) is recorded
as skipped with the reason and leaves that backend's statistics untouched.

Before any solve, `compare` checks every backend's option names and values (InputError)
and that at least one backend takes at least one problem (UnsupportedProblemError with
the first refusal's reason otherwise).
"""

from __future__ import annotations

import logging
import math
import statistics
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from qcbo.errors import InputError, OutOfMemoryError, SolverError, UnsupportedProblemError
from qcbo.problem import Problem
from qcbo.result import SolveResult

from . import get_backend

if TYPE_CHECKING:
    from .executor import Executor

__all__ = ["compare", "relative_gap", "applicable_best_known", "format_table", "plot_report",
           "GAP_FLOOR", "REACH_RTOL"]

log = logging.getLogger(__name__)

#: Smallest denominator of the relative gap (energies with |ref| below it are compared
#: in absolute terms, scaled by 1 / GAP_FLOOR).
GAP_FLOOR = 1e-9
#: Relative tolerance under which an energy counts as equal to the reference.
REACH_RTOL = 1e-9

Progress = Callable[[Iterable[Any], int], Iterable[Any]]


def relative_gap(energy: float, reference: float) -> float:
    """(energy - reference) / max(|reference|, GAP_FLOOR); see the module docstring."""
    return (energy - reference) / max(abs(reference), GAP_FLOOR)


def _reached(energy: float, reference: float) -> bool:
    return energy <= reference + REACH_RTOL * max(abs(reference), 1.0)


def applicable_best_known(problem: Problem) -> float | None:
    """``metadata["best_known"]`` when it holds for ``problem`` as posed, else None.

    A value recorded with ``metadata["best_known_k"]`` holds only for that k. Without
    one, an OR-Library value (``metadata["format"] == "orlib"``, kept through
    conversions) is for the unconstrained instance, so it does not hold once a
    cardinality k is set (``--k``); any other value is taken to hold.
    """
    meta = problem.metadata
    value = meta.get("best_known")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if "best_known_k" in meta:
        return float(value) if meta["best_known_k"] == problem.k else None
    if meta.get("format") == "orlib" and problem.k is not None:
        return None
    return float(value)


def _run_one(backend: Any, problem: Problem, seed: int, time_limit: float | None,
             options: Mapping[str, Any]) -> dict[str, Any]:
    try:
        result = backend.solve(problem, seed=seed, time_limit=time_limit, **options)
    except (UnsupportedProblemError, SolverError, OutOfMemoryError) as exc:
        return _run_record(backend.name, seed, exc)
    return _run_record(backend.name, seed, result)


def _run_record(backend: str, seed: int, result: SolveResult | Exception) -> dict[str, Any]:
    """One run of the report, from a result or the error a backend raised."""
    if isinstance(result, UnsupportedProblemError):
        return {"seed": seed, "status": "skipped", "reason": str(result)}
    if isinstance(result, (SolverError, OutOfMemoryError)):
        log.warning("%s failed on a problem: %s", backend, result)
        return {"seed": seed, "status": "failed", "reason": str(result), "energy": None,
                "feasible": False, "wall_time_s": None}
    if isinstance(result, Exception):
        raise result
    info = dict(result.info)
    run: dict[str, Any] = {
        "seed": seed,
        "status": result.status,
        "energy": result.energy if math.isfinite(result.energy) else None,
        "feasible": bool(result.feasible),
        "wall_time_s": result.wall_time_s,
    }
    for key in ("feasible_fraction", "relative_gap", "best_bound", "energy_error_bound"):
        if key in info:
            run[f"info_{key}"] = info[key]
    return run


def compare(
    problems: Sequence[Problem],
    backends: Sequence[str],
    *,
    time_limit: float | None = None,
    seeds: int | Sequence[int] = 1,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    names: Sequence[str] | None = None,
    progress: Progress | None = None,
    warm_up: bool = True,
    executor: "Executor | None" = None,
) -> dict[str, Any]:
    """Run every backend on every problem (once per seed) and summarise.

    Args:
        problems: the problems; ``names`` (same length) label them in the report,
            defaulting to ``metadata["name"]`` or "problem<i>".
        backends: registry names (each is instantiated once; unknown or unavailable
            names raise BackendUnavailableError before anything runs).
        time_limit: seconds per solve, passed to every backend.
        seeds: a count N (seeds 0..N-1) or explicit seeds.
        options: per-backend solve options, ``{"dwave-sa": {"num_reads": 50}}``.
        progress: wraps the iteration over problems, e.g. ``lambda it, total: tqdm(it,
            total=total)``.
        warm_up: solve a 3-variable problem with each backend first (untimed), so that
            imports and JIT compilation do not count against the first problem (an
            executor's workers warm themselves up).
        executor: run the problems x seeds of each backend as parallel tasks on it;
            ``progress`` then wraps the finished solves instead of the problems.

    Returns a JSON-ready dict: ``problems`` (reference, best known, every run with
    energy, gap, reached, status, wall time) and ``summary`` per backend (mean and worst
    gap, reached fraction, feasibility rate, median wall time, skipped problems).
    """
    if not problems:
        raise InputError("compare: no problems to compare on")
    if not backends:
        raise InputError("compare: no backends given")
    if len(set(backends)) != len(backends):
        raise InputError(f"compare: backend listed twice in {list(backends)}")
    seed_list = list(range(seeds)) if isinstance(seeds, (int, np.integer)) else list(seeds)
    if not seed_list:
        raise InputError("compare: need at least one seed")
    options = dict(options or {})
    extra = sorted(set(options) - set(backends))
    if extra:
        raise InputError(f"compare: options given for backends not compared: {extra}")
    if names is not None and len(names) != len(problems):
        raise InputError(f"compare: {len(names)} names for {len(problems)} problems")
    instances = {name: get_backend(name) for name in backends}
    # Before any solve: option names and values (prepare checks them before the fit, so
    # on the first problem), and that some backend takes some problem (a backend that
    # takes none is skipped on every problem in the report).
    unfit: list[str] = []
    for name, backend in instances.items():
        for problem in problems:
            try:
                backend.prepare(problem, options.get(name, {}))
                break
            except UnsupportedProblemError as exc:
                unfit.append(str(exc))
    if problems and len(unfit) == len(problems) * len(instances):
        raise UnsupportedProblemError(f"compare: no backend takes any of the problems: {unfit[0]}")
    if executor is not None:
        all_runs = _runs_on(executor, problems, backends, seed_list, time_limit, options,
                            progress)
    elif warm_up:
        # Imports and JIT compilation happen here, not inside the first timed solve.
        tiny = Problem(np.array([[1.0, -0.5, 0.2], [-0.5, -1.0, 0.3], [0.2, 0.3, 0.5]]), 0.0, 1)
        for name, backend in instances.items():
            try:
                backend.solve(tiny, seed=0, time_limit=5.0, **options.get(name, {}))
            except (InputError, SolverError) as exc:
                log.debug("warm-up of %s failed: %s", name, exc)

    rows: list[dict[str, Any]] = []
    iterator: Iterable[int] = range(len(problems))
    if progress is not None and executor is None:
        iterator = progress(iterator, len(problems))
    for index in iterator:
        problem = problems[index]
        meta = problem.metadata
        name = names[index] if names is not None else str(meta.get("name", f"problem{index}"))
        if executor is not None:
            runs = {b: all_runs[b][index] for b in backends}
        else:
            runs = {b: [_run_one(instances[b], problem, s, time_limit, options.get(b, {}))
                        for s in seed_list] for b in backends}
        rows.append(_score_problem(name, problem, runs))

    return {
        "backends": list(backends),
        "time_limit": time_limit,
        "seeds": seed_list,
        "gap_definition": "(E - ref) / max(|ref|, %g)" % GAP_FLOOR,
        "problems": rows,
        "summary": {b: _summarise(b, rows) for b in backends},
    }


def _runs_on(executor: "Executor", problems: Sequence[Problem], backends: Sequence[str],
             seeds: list[int], time_limit: float | None,
             options: Mapping[str, Mapping[str, Any]],
             progress: Progress | None) -> dict[str, list[list[dict[str, Any]]]]:
    """Every backend x problem x seed through ``executor``: runs[backend][problem][seed]."""
    runs: dict[str, list[list[Any]]] = {
        b: [[None] * len(seeds) for _ in problems] for b in backends}
    pairs = [(p, s) for p in range(len(problems)) for s in range(len(seeds))]

    def outcomes() -> Iterable[tuple[str, int, Any]]:
        for backend in backends:
            finished = executor.solve_iter(
                (problems[p] for p, _ in pairs), backend, options.get(backend, {}),
                time_limit=time_limit, seeds=[seeds[s] for _, s in pairs], errors="return")
            for position, result, _info in finished:
                yield backend, position, result

    iterator: Iterable[tuple[str, int, Any]] = outcomes()
    if progress is not None:
        iterator = progress(iterator, len(pairs) * len(backends))
    for backend, position, result in iterator:
        p, s = pairs[position]
        runs[backend][p][s] = _run_record(backend, seeds[s], result)
    return runs


def _score_problem(name: str, problem: Problem,
                   runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    recorded = problem.metadata.get("best_known")
    best_known = applicable_best_known(problem)
    found = [(r["energy"], b, r["status"]) for b, rs in runs.items() for r in rs
             if r.get("feasible") and r.get("energy") is not None]
    reference, source, proven = None, None, False
    if found:
        reference, source, _ = min(found)
        proven = any(st == "optimal" and _reached(e, reference) for e, _, st in found)
    if best_known is not None:
        if reference is None or best_known < reference - REACH_RTOL * max(abs(reference), 1.0):
            reference, source, proven = float(best_known), "best_known", False
    for rs in runs.values():
        for r in rs:
            if r.get("feasible") and reference is not None:
                r["gap"] = relative_gap(r["energy"], reference)
                r["reached"] = _reached(r["energy"], reference)
            elif r["status"] != "skipped":
                r["gap"], r["reached"] = None, False
    row = {
        "name": name,
        "n": problem.n,
        "k": problem.k,
        "best_known": best_known,
        "reference": reference,
        "reference_from": source,
        "reference_proven": proven,
        "runs": runs,
    }
    if best_known is None and recorded is not None:
        row["best_known_ignored"] = {
            "value": recorded,
            "reason": f"recorded for k={problem.metadata.get('best_known_k')}, the problem "
                      f"has k={problem.k}"}
    return row


def _summarise(backend: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for row in rows for r in row["runs"][backend] if r["status"] != "skipped"]
    skipped = [{"problem": row["name"], "reason": row["runs"][backend][0]["reason"]}
               for row in rows if all(r["status"] == "skipped" for r in row["runs"][backend])]
    gaps = [r["gap"] for r in done if r.get("gap") is not None]
    times = [r["wall_time_s"] for r in done if r.get("wall_time_s") is not None]
    return {
        "runs": len(done),
        "skipped": skipped,
        "failed": sum(r["status"] == "failed" for r in done),
        "proven_optimal": sum(r["status"] == "optimal" for r in done),
        "mean_gap": float(np.mean(gaps)) if gaps else None,
        "worst_gap": float(np.max(gaps)) if gaps else None,
        "reached_fraction": (sum(bool(r.get("reached")) for r in done) / len(done)
                             if done else None),
        "feasible_rate": sum(bool(r.get("feasible")) for r in done) / len(done) if done else None,
        "median_wall_s": float(statistics.median(times)) if times else None,
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(report: Mapping[str, Any]) -> str:
    """A fixed-width text table of the per-backend summary."""
    head = (f"{'backend':<14}{'runs':>6}{'skipped':>9}{'mean gap':>12}{'worst gap':>12}"
            f"{'reached':>9}{'feasible':>10}{'median s':>10}{'proven':>8}")
    lines = [head, "-" * len(head)]
    for backend in report["backends"]:
        s = report["summary"][backend]
        lines.append(
            f"{backend:<14}{s['runs']:>6}{len(s['skipped']):>9}{_fmt(s['mean_gap'], '.3e'):>12}"
            f"{_fmt(s['worst_gap'], '.3e'):>12}{_fmt(s['reached_fraction'], '.0%'):>9}"
            f"{_fmt(s['feasible_rate'], '.0%'):>10}{_fmt(s['median_wall_s'], '.3f'):>10}"
            f"{s['proven_optimal']:>8}"
        )
    proven = sum(bool(row["reference_proven"]) for row in report["problems"])
    from_known = sum(row["reference_from"] == "best_known" for row in report["problems"])
    lines.append(f"{len(report['problems'])} problems; reference proven optimal on {proven}, "
                 f"taken from best_known on {from_known}; gap = {report['gap_definition']}")
    for backend in report["backends"]:
        for item in report["summary"][backend]["skipped"]:
            lines.append(f"skipped {backend} on {item['problem']}: {item['reason']}")
    return "\n".join(lines)


def plot_report(report: Mapping[str, Any], handle: Any) -> None:
    """Gap against wall time, one marker per backend, as PNG into a binary file handle.

    Gaps of 0 are drawn at the bottom of the symlog axis; every run is a small point and
    each backend's (median time, mean gap) a large marker.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "osD^v<>PXh*"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, backend in enumerate(report["backends"]):
        runs = [r for row in report["problems"] for r in row["runs"][backend]
                if r.get("gap") is not None and r.get("wall_time_s") is not None]
        marker = markers[i % len(markers)]
        color = f"C{i % 10}"
        if runs:
            ax.scatter([r["wall_time_s"] for r in runs], [r["gap"] for r in runs], s=10,
                       alpha=0.35, marker=marker, color=color)
        s = report["summary"][backend]
        if s["median_wall_s"] is not None and s["mean_gap"] is not None:
            ax.scatter([s["median_wall_s"]], [s["mean_gap"]], s=90, marker=marker, color=color,
                       edgecolors="black", label=f"{backend} (feasible {s['feasible_rate']:.0%})")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.set_xlabel("wall time per solve [s]")
    ax.set_ylabel("relative gap to reference")
    ax.set_title(f"{len(report['problems'])} problems, time limit {report['time_limit']} s")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
