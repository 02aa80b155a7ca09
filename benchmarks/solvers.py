"""Solver benchmark: the native `sa` and `tabu` against known optima and dwave-samplers.

    nice -n 10 python benchmarks/solvers.py                      # everything (~10 min)
    python benchmarks/solvers.py --parts small --small-count 10  # a quick look

Three parts (``--parts``, comma-separated):

* ``orlib``: OR-Library bqp50 and bqp100 (unconstrained; best-known values from
  best_known.json beside the files), each backend with ``--orlib-time`` seconds per
  instance; target: every best-known value reached.
* ``small``: random dense QCBO (entries N(0, 1), symmetrised), k = n/2, n in
  ``--small-sizes``, ``--small-count`` instances each, against the `exact` optimum, each
  backend capped at ``--small-time`` seconds; target: optimum on >= 99 % of instances.
* ``large``: ``--large-count`` random dense blocks n = ``--large-n``, k = n/2: `sa` and
  `tabu` at ``--large-time`` s (sa: as many complete anneals of ``--large-sa-sweeps``
  sweeps as fit; tabu: one search that runs until the time is up), `dwave-tabu` and
  `dwave-sa` (penalty QUBO) at ``--ref-time`` s, side by side with feasibility;
  target: sa and tabu at least as low.

Prints a table per part, writes benchmarks/results/solvers.json and solvers.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import BACKENDS, get_backend  # noqa: E402
from qcbo import Problem  # noqa: E402
from qcbo.io import read_problems  # noqa: E402

NATIVE = ("sa", "tabu")
REFERENCE = ("dwave-tabu", "dwave-sa")
TOL = 1e-6


def random_block(n: int, seed: int) -> Problem:
    """Dense QCBO with N(0, 1) entries (symmetrised) and k = n // 2."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return Problem((a + a.T) / 2.0, 0.0, n // 2, metadata={"name": f"random-n{n}-s{seed}"})


def _run(name: str, problem: Problem, seed: int, time_limit: float | None,
         **options) -> dict:
    cpu = time.process_time()
    result = get_backend(name).solve(problem, seed=seed, time_limit=time_limit, **options)
    cpu = time.process_time() - cpu
    info = result.info
    return {
        "energy": result.energy, "feasible": result.feasible, "wall_s": result.wall_time_s,
        "cpu_s": cpu,
        "status": result.status,
        "restarts_done": info.get("restarts_done"),
        "feasible_fraction": info.get("feasible_fraction"),
    }


def _available(names) -> tuple[list[str], dict[str, str]]:
    ok, missing = [], {}
    for name in names:
        miss = BACKENDS[name].missing()
        if miss:
            missing[name] = "missing " + ", ".join(miss)
        else:
            ok.append(name)
    return ok, missing


def _warm(names) -> None:
    """Compile / load every backend once so no compile time is measured."""
    p = random_block(8, 0)
    for name in names:
        get_backend(name).solve(p, seed=0)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- parts
def part_orlib(args) -> dict:
    names, missing = _available(NATIVE)
    _warm(names)
    out = {"time_limit_s": args.orlib_time, "files": args.orlib_files, "instances": [],
           "missing": missing}
    for fname in args.orlib_files:
        for problem in read_problems(Path(args.orlib_dir) / fname):
            meta = problem.metadata
            row = {"name": meta["name"], "n": problem.n, "best_known": meta.get("best_known")}
            for name in names:
                r = _run(name, problem, args.seed, args.orlib_time)
                known = row["best_known"]
                r["reached"] = known is not None and r["energy"] <= known + TOL
                row[name] = r
            out["instances"].append(row)
    summary = {}
    for name in names:
        runs = [row[name] for row in out["instances"]]
        summary[name] = {
            "reached": sum(r["reached"] for r in runs), "instances": len(runs),
            "median_wall_s": float(np.median([r["wall_s"] for r in runs])),
            "max_wall_s": float(np.max([r["wall_s"] for r in runs])),
        }
    out["summary"] = summary
    headers = ["instance", "n", "best known"] + [f"{b} {c}" for b in names for c in ("energy", "s")]
    rows = [[row["name"], row["n"], row["best_known"]]
            + [x for b in names
               for x in (f"{row[b]['energy']:.0f}" + ("" if row[b]["reached"] else " *"),
                         f"{row[b]['wall_s']:.3f}")]
            for row in out["instances"]]
    print(f"\nOR-Library ({args.orlib_time} s per instance; * = best known missed)")
    print(_table(headers, rows))
    for name, s in summary.items():
        print(f"{name}: reached {s['reached']}/{s['instances']}, median {s['median_wall_s']:.3f} s")
    return out


def part_small(args) -> dict:
    names, missing = _available(NATIVE)
    _warm(names + ["exact"])
    exact = get_backend("exact")
    out = {"time_limit_s": args.small_time, "sizes": {}, "missing": missing}
    rows = []
    for n in args.small_sizes:
        hits = {b: 0 for b in names}
        walls = {b: [] for b in names}
        exact_s = []
        for i in range(args.small_count):
            problem = random_block(n, seed=1_000_000 * n + i)
            ref = exact.solve(problem, seed=0)
            exact_s.append(ref.wall_time_s)
            for name in names:
                r = _run(name, problem, args.seed + i, args.small_time)
                hits[name] += bool(r["feasible"] and r["energy"] <= ref.energy + TOL)
                walls[name].append(r["wall_s"])
        out["sizes"][str(n)] = {
            "instances": args.small_count,
            "exact_median_s": float(np.median(exact_s)),
            **{b: {"optimal": hits[b], "optimal_rate": hits[b] / args.small_count,
                   "mean_wall_s": float(np.mean(walls[b])),
                   "max_wall_s": float(np.max(walls[b]))} for b in names},
        }
        rows.append([n, args.small_count]
                    + [x for b in names for x in (f"{100 * hits[b] / args.small_count:.0f} %",
                                                  f"{1e3 * np.mean(walls[b]):.1f}",
                                                  f"{1e3 * np.max(walls[b]):.1f}")])
    headers = ["n", "instances"] + [f"{b} {c}" for b in names
                                    for c in ("optimal", "mean ms", "max ms")]
    print(f"\nRandom dense QCBO, k = n/2, against exact (cap {args.small_time} s per run)")
    print(_table(headers, rows))
    return out


def part_large(args) -> dict:
    native, missing = _available(NATIVE)
    refs, missing_refs = _available(REFERENCE)
    missing.update(missing_refs)
    _warm(native + refs)
    budgets = {**{b: args.large_time for b in native}, **{b: args.ref_time for b in refs}}
    out = {"n": args.large_n, "k": args.large_n // 2, "budgets_s": budgets, "blocks": [],
           "missing": missing}
    for i in range(args.large_count):
        problem = random_block(args.large_n, seed=7_000 + i)
        row = {"name": problem.metadata["name"]}
        for name in native + refs:
            # The native backends fill their budget: sa with complete re-anneals, tabu
            # with one long search (it perturbs itself when stalled).
            fill = {"sa": {"restarts": 10**4, "sweeps": args.large_sa_sweeps},
                    "tabu": {"iterations": 10**9}}.get(name, {})
            row[name] = _run(name, problem, args.seed + i, budgets[name], **fill)
            print(f"  block {i} {name}: {row[name]['energy']:.2f} "
                  f"({row[name]['wall_s']:.2f} s, feasible={row[name]['feasible']})", flush=True)
        feasible = [row[b]["energy"] for b in native + refs if row[b]["feasible"]]
        row["best"] = min(feasible) if feasible else None
        out["blocks"].append(row)
    summary = {}
    for name in native + refs:
        runs = [row[name] for row in out["blocks"]]
        gaps = [(r["energy"] - row["best"]) / abs(row["best"]) if r["feasible"] else math.inf
                for r, row in zip(runs, out["blocks"])]
        summary[name] = {
            "budget_s": budgets[name],
            "mean_energy": float(np.mean([r["energy"] for r in runs])),
            "feasible_rate": float(np.mean([r["feasible"] for r in runs])),
            "mean_gap_to_best": float(np.mean(gaps)),
            "best_count": int(sum(g <= 1e-12 for g in gaps)),
            "median_wall_s": float(np.median([r["wall_s"] for r in runs])),
            "mean_feasible_sample_fraction": (
                float(np.mean([r["feasible_fraction"] for r in runs]))
                if all(r["feasible_fraction"] is not None for r in runs) else None),
        }
    out["summary"] = summary
    if refs:
        out["native_at_least_as_low"] = {
            b: all(row[b]["feasible"] and all(row[b]["energy"] <= row[r]["energy"] + TOL
                                              or not row[r]["feasible"] for r in refs)
                   for row in out["blocks"])
            for b in native}
    headers = ["backend", "budget s", "mean energy", "mean gap", "best of", "feasible",
               "median s"]
    rows = [[b, s["budget_s"], f"{s['mean_energy']:.2f}", f"{100 * s['mean_gap_to_best']:.3f} %",
             f"{s['best_count']}/{args.large_count}", f"{100 * s['feasible_rate']:.0f} %",
             f"{s['median_wall_s']:.2f}"] for b, s in summary.items()]
    rows += [[b, "-", "missing", "", "", "", ""] for b in missing]
    print(f"\nRandom dense n = {args.large_n}, k = {args.large_n // 2} "
          f"({args.large_count} blocks)")
    print(_table(headers, rows))
    return out


# --------------------------------------------------------------------------- plot
def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("orlib", "small", "large") if p in results]
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4.2), squeeze=False)
    colors = {"sa": "C0", "tabu": "C1", "dwave-tabu": "C2", "dwave-sa": "C3"}
    for ax, part in zip(axes[0], parts):
        res = results[part]
        if part == "orlib":
            for name in NATIVE:
                pts = [(row[name]["wall_s"], row[name]["energy"] - row["best_known"])
                       for row in res["instances"] if name in row]
                if pts:
                    t, g = zip(*pts)
                    ax.scatter(t, g, label=name, color=colors[name], alpha=0.7)
            ax.set_xlabel("wall time per instance (s)")
            ax.set_ylabel("energy - best known")
            ax.set_title(f"OR-Library {', '.join(res['files'])}")
        elif part == "small":
            sizes = sorted(res["sizes"], key=int)
            for off, name in zip((-0.2, 0.2), NATIVE):
                rates = [100 * res["sizes"][s][name]["optimal_rate"] for s in sizes
                         if name in res["sizes"][s]]
                if rates:
                    ax.bar(np.arange(len(rates)) + off, rates, width=0.4, label=name,
                           color=colors[name])
            ax.axhline(99, color="k", lw=0.8, ls="--")
            ax.set_xticks(range(len(sizes)), [f"n={s}" for s in sizes])
            ax.set_ylim(0, 102)
            ax.set_ylabel("% instances at the exact optimum")
            ax.set_title(f"random dense, k = n/2 (cap {res['time_limit_s']} s)")
        else:
            for name, s in res["summary"].items():
                ax.scatter(s["median_wall_s"], 100 * s["mean_gap_to_best"], s=60,
                           color=colors.get(name),
                           label=f"{name} ({100 * s['feasible_rate']:.0f} % feas.)")
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=0.001)
            ax.set_ylim(0, 300)
            ax.set_xlabel("median wall time per block (s)")
            ax.set_ylabel("mean gap to best found (%)")
            ax.set_title(f"random dense n = {res['n']}, k = {res['k']}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="orlib,small,large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orlib-dir", default=str(ROOT.parent / "shared" / "data" / "orlib"))
    parser.add_argument("--orlib-files", default="bqp50.txt,bqp100.txt")
    parser.add_argument("--orlib-time", type=float, default=1.0)
    parser.add_argument("--small-sizes", default="16,20,24")
    parser.add_argument("--small-count", type=int, default=100)
    parser.add_argument("--small-time", type=float, default=0.05)
    parser.add_argument("--large-n", type=int, default=1024)
    parser.add_argument("--large-count", type=int, default=3)
    parser.add_argument("--large-time", type=float, default=1.0)
    parser.add_argument("--ref-time", type=float, default=10.0)
    parser.add_argument("--large-sa-sweeps", type=int, default=500,
                        help="sa sweeps per anneal in the large part (re-anneals fill the time)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw solvers.png from the solvers.json in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.plot_only:
        plot(json.loads((out / "solvers.json").read_text()), out / "solvers.png")
        return 0
    args.orlib_files = [f for f in args.orlib_files.split(",") if f]
    args.small_sizes = [int(s) for s in args.small_sizes.split(",") if s]
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"orlib", "small", "large"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from orlib, small, large")

    runners = {"orlib": part_orlib, "small": part_small, "large": part_large}
    results: dict = {
        "command": " ".join(["python", "benchmarks/solvers.py"] + (argv or sys.argv[1:])),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for part in parts:
        t0 = time.perf_counter()
        results[part] = runners[part](args)
        results[part]["part_wall_s"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "solvers.json").write_text(json.dumps(results, indent=1, default=float))
    plot(results, out / "solvers.png")
    print(f"\nwrote {out / 'solvers.json'} and {out / 'solvers.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
