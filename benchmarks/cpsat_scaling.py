"""CP-SAT proof scaling: the largest dense n proven optimal within a time limit.

    nice -n 10 python benchmarks/cpsat_scaling.py                    # n = 16, 20, 22, ...
    python benchmarks/cpsat_scaling.py --sizes 16,20 --count 2       # a quick look

Random dense QCBO, Q = (A + A^T) / 2 with A_ij ~ N(0, 1), k = n / 2, ``--count`` instances
per n, `cpsat` with its defaults (all cores as workers) and ``--time-limit`` seconds per
solve. Sizes run in increasing order and stop after the first size where some instance
is not proven. Variants (``--variants``) switch formulation pieces off for comparison:
``default``, ``no-triangles``, ``no-cut``.

Prints a table, writes benchmarks/results/cpsat_scaling.json and cpsat_scaling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import get_backend  # noqa: E402
from qcbo import Problem  # noqa: E402

VARIANTS = {"default": {}, "no-triangles": {"triangles": False}, "no-cut": {"cut": False}}


def dense_problem(n: int, seed: int) -> Problem:
    """Q = (A + A^T) / 2, A_ij ~ N(0, 1); k = n // 2."""
    a = np.random.default_rng(seed).normal(size=(n, n))
    return Problem((a + a.T) / 2.0, 0.0, n // 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,20,22,24,26,28,30,32,34,36")
    parser.add_argument("--count", type=int, default=3, help="instances per n")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--variants", default="default")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    backend = get_backend("cpsat")
    backend.solve(dense_problem(6, 0), seed=0)  # import and warm up outside the timings

    rows = []
    print(f"{'variant':<14}{'n':>4}{'inst':>5}{'status':>10}{'wall s':>9}{'gap':>10}")
    for variant in args.variants.split(","):
        options = VARIANTS[variant]
        for n in sizes:
            all_proven = True
            for inst in range(args.count):
                problem = dense_problem(n, seed=1000 * n + inst)
                result = backend.solve(problem, seed=inst, time_limit=args.time_limit, **options)
                gap = result.info.get("relative_gap")
                rows.append({"variant": variant, "n": n, "instance": inst,
                             "status": result.status, "wall_time_s": result.wall_time_s,
                             "energy": result.energy, "relative_gap": gap,
                             "cpsat_status": result.info.get("cpsat_status")})
                all_proven &= result.status == "optimal"
                print(f"{variant:<14}{n:>4}{inst:>5}{result.status:>10}"
                      f"{result.wall_time_s:>9.2f}{'-' if gap is None else f'{gap:.2e}':>10}",
                      flush=True)
            if not all_proven:
                break

    summary = {}
    for variant in args.variants.split(","):
        proven_n = [n for n in sizes
                    if (rs := [r for r in rows if r["variant"] == variant and r["n"] == n])
                    and all(r["status"] == "optimal" for r in rs)]
        summary[variant] = {"largest_n_all_proven": max(proven_n, default=None)}
        print(f"{variant}: largest n with every instance proven within {args.time_limit:g} s: "
              f"{summary[variant]['largest_n_all_proven']}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "cpsat_scaling", "time_limit_s": args.time_limit,
               "count": args.count, "workers": len(os.sched_getaffinity(0)),
               "machine": platform.platform(), "processor": platform.processor(),
               "summary": summary, "rows": rows}
    (out / "cpsat_scaling.json").write_text(json.dumps(payload, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, variant in enumerate(args.variants.split(",")):
        rs = [r for r in rows if r["variant"] == variant]
        for proven, marker in ((True, "o"), (False, "x")):
            pts = [r for r in rs if (r["status"] == "optimal") == proven]
            ax.scatter([r["n"] for r in pts], [r["wall_time_s"] for r in pts], marker=marker,
                       color=f"C{i}", label=f"{variant} ({'proven' if proven else 'not proven'})")
    ax.axhline(args.time_limit, color="gray", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("n (dense, k = n/2)")
    ax.set_ylabel("wall time [s]")
    ax.set_title(f"cpsat proofs, {payload['workers']} workers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cpsat_scaling.png", dpi=120)
    print(f"wrote {out / 'cpsat_scaling.json'} and {out / 'cpsat_scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
