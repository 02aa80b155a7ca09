"""QAOA benchmark: XY mixer (Dicke start) against X mixer + penalty, on both SDKs.

For 20 random dense QCBO instances per n in 6, 8, 10, 12 (k = n/2; Q symmetric with
N(0, 1) entries) and p = 1, 2, 3: angles are trained once per instance and mixer up to
p = 3 (INTERP passes through p = 1 and 2), then each SDK backend runs and samples the
circuit with those angles (1000 shots). Reported per (n, p, mixer, sdk):
  feasible fraction of the shots; approximation ratio (E_max - <E>)/(E_max - E_min) with
  E_max/E_min over the feasible set and <E> the expectation of the energy the circuit
  optimises (the penalty QUBO for X, so infeasible states count with their penalty);
  P(optimum) from the exact final state; share of instances whose optimum is among the
  shots; wall time per instance of the SDK run (training excluded, reported separately).
Then 20 full `qaoa-qiskit` solves at n = 12, p = 2 (default options) are timed.

    nice -n 10 python benchmarks/qaoa.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import get_backend  # noqa: E402
from backends.qaoa import QAOAModel, index_to_bits, train_angles  # noqa: E402
from qcbo import Problem  # noqa: E402

MIXERS = ("xy-ring", "x")
SDKS = ("qaoa-qiskit", "braket-local")


def instance(n: int, seed: int) -> Problem:
    rng = np.random.default_rng([n, seed])
    a = rng.normal(size=(n, n))
    return Problem((a + a.T) / 2.0, 0.0, n // 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 instances, n in 6, 8")
    parser.add_argument("--count", type=int, default=None,
                        help="instances per n (default 20, or 3 with --quick)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    sizes = (6, 8) if args.quick else (6, 8, 10, 12)
    count = args.count or (3 if args.quick else 20)
    ps = (1, 2, 3)
    backends = {name: get_backend(name) for name in SDKS}
    for b in backends.values():  # load SDKs and numba kernels outside the timings
        b.solve(instance(min(10, b.max_variables), 0), seed=0, p=1,
                angles={"gamma": [0.1], "beta": [0.1]})

    rows: dict[tuple, dict[str, list[float]]] = {}
    train_times: dict[tuple, list[float]] = {}
    for n in sizes:
        for i in range(count):
            problem = instance(n, i)
            feas = index_to_bits(QAOAModel(problem, "xy-ring").basis, n)
            fe = problem.energies(feas)
            e_min, e_max = float(fe.min()), float(fe.max())
            opt = feas[int(np.argmin(fe))]
            for mixer in MIXERS:
                model = QAOAModel(problem, mixer)
                t0 = time.perf_counter()
                training = train_angles(model, max(ps), rng=np.random.default_rng(i))
                train_times.setdefault((n, mixer), []).append(time.perf_counter() - t0)
                opt_pos = int(np.flatnonzero(np.all(model.bits == opt, axis=1))[0])
                for p, angles in zip(ps, training.per_depth):
                    probs = model.probabilities(angles)
                    mean_e = float(probs @ model.energies)
                    ratio = (e_max - mean_e) / (e_max - e_min)
                    for sdk, backend in backends.items():
                        if n > backend.max_variables:
                            continue  # braket-local takes n <= 10
                        res = backend.solve(problem, seed=i, p=p, mixer=mixer, shots=1000,
                                            polish=False, angles=angles.to_dict(),
                                            penalty=None)
                        hit = bool(np.any(np.all(res.samples == opt, axis=1)))
                        r = rows.setdefault((n, p, mixer, sdk), {k: [] for k in (
                            "feasible_fraction", "approx_ratio", "p_opt", "opt_in_shots",
                            "wall_s")})
                        r["feasible_fraction"].append(res.info["feasible_fraction"])
                        r["approx_ratio"].append(ratio)
                        r["p_opt"].append(float(probs[opt_pos]))
                        r["opt_in_shots"].append(float(hit))
                        r["wall_s"].append(res.wall_time_s)
            print(f"n={n} instance {i + 1}/{count} done", file=sys.stderr)

    # full solves (training + circuit + sampling) at n = 12 (10 with --quick), p = 2
    n_full = 8 if args.quick else 12
    full = [backends["qaoa-qiskit"].solve(instance(n_full, 100 + i), seed=i, p=2)
            for i in range(count)]
    full_walls = [r.wall_time_s for r in full]

    header = f"{'n':>3} {'p':>2} {'mixer':<8} {'sdk':<13} {'feasible':>8} {'ratio':>7} " \
             f"{'P(opt)':>7} {'opt@1000':>8} {'wall s':>7}"
    print(header)
    summary = []
    for (n, p, mixer, sdk), r in sorted(rows.items()):
        m = {k: float(np.mean(v)) for k, v in r.items()}
        m["approx_ratio_min"] = float(np.min(r["approx_ratio"]))
        summary.append({"n": n, "p": p, "mixer": mixer, "sdk": sdk, "instances": count, **m})
        print(f"{n:>3} {p:>2} {mixer:<8} {sdk:<13} {m['feasible_fraction']:>8.3f} "
              f"{m['approx_ratio']:>7.3f} {m['p_opt']:>7.3f} {m['opt_in_shots']:>8.2f} "
              f"{m['wall_s']:>7.3f}")
    print("training to p=3 (s, mean): " + ", ".join(
        f"n={n} {mx}: {np.mean(v):.2f}" for (n, mx), v in sorted(train_times.items())))
    print(f"qaoa-qiskit full solve n={n_full}, p=2: mean {np.mean(full_walls):.2f} s, "
          f"max {np.max(full_walls):.2f} s over {count} instances")

    # targets
    xy = [s for s in summary if s["mixer"] == "xy-ring"]
    small_p3 = [s for s in xy if s["n"] <= 10 and s["p"] == 3]
    targets = {
        "xy_feasible_fraction_is_1": all(s["feasible_fraction"] == 1.0 for s in xy),
        "xy_ratio_above_penalty_every_n_p": all(
            s["approx_ratio"] > next(t["approx_ratio"] for t in summary if t["mixer"] == "x"
                                     and (t["n"], t["p"], t["sdk"]) == (s["n"], s["p"], s["sdk"]))
            for s in xy if any(t["mixer"] == "x" and (t["n"], t["p"], t["sdk"]) ==
                               (s["n"], s["p"], s["sdk"]) for t in summary)),
        "opt_in_1000_shots_share_n_le_10_p3": float(np.mean([s["opt_in_shots"] for s in small_p3]))
        if small_p3 else None,
        f"qiskit_full_solve_n{n_full}_p2_max_s": float(np.max(full_walls)),
    }
    print("targets:", json.dumps(targets))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "qaoa_quick" if args.quick else "qaoa"
    (out / f"{tag}.json").write_text(json.dumps({
        "command": " ".join(["python benchmarks/qaoa.py", *sys.argv[1:]]),
        "rows": summary,
        "training_s": {f"{n}/{mx}": float(np.mean(v)) for (n, mx), v in train_times.items()},
        "full_solve_walls_s": full_walls, "full_solve_n": n_full, "targets": targets,
    }, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for mixer, style in (("xy-ring", "-o"), ("x", "--s")):
            for p in ps:
                sel = [s for s in summary if s["mixer"] == mixer and s["p"] == p
                       and s["sdk"] == "qaoa-qiskit"]
                ns = [s["n"] for s in sel]
                label = f"{'XY' if mixer != 'x' else 'X+penalty'} p={p}"
                axes[0].plot(ns, [s["approx_ratio"] for s in sel], style, label=label)
                axes[1].plot(ns, [s["p_opt"] for s in sel], style, label=label)
                axes[2].plot(ns, [s["feasible_fraction"] for s in sel], style, label=label)
        for ax, title in zip(axes, ("approximation ratio of <E>", "P(optimum)",
                                    "feasible fraction of shots")):
            ax.set_title(title)
            ax.set_xlabel("n (k = n/2)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{tag}.png", dpi=110)
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
