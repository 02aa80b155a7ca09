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

``--part subspace``: the `qaoa-subspace` simulator against QOKit (JPMorgan's state-vector
QAOA simulator, optional: ``pip install --no-deps --target DIR qokit`` and put DIR on
PYTHONPATH; its rows are skipped when it cannot be imported) on the same circuits: XY
ring mixer from the Dicke state, p = 3, k = n/2, n = 12..24. Per n: the time of one
circuit evaluation on each side (single thread: OMP_NUM_THREADS=1 for QOKit's C code),
their ratio and the largest probability difference. QOKit's ring applies the XY gates in
our order; its complete mixer does not (lexicographic pairs against our round-robin
rounds), so the complete mixer is compared on our circuit written with QOKit's ``furxy``
gate, and the gap to QOKit's own complete mixer is reported. Then full qaoa-subspace
solves (training + 1000 shots) per ``--solves n:p:restarts``, and n = 26 in a child
process for its peak RSS (``--part memory``).

``--part icbs``: iCBS on the Fashion-MNIST MLP at density 0.1 with quantum sub-blocks
(``--icbs-runs backend:block:sub_block:polish``), reporting test accuracy and the
fraction of applied blocks whose answer was a QAOA sample.

    nice -n 10 python benchmarks/qaoa.py [--quick]
    OMP_NUM_THREADS=1 PYTHONPATH=/path/to/qokit-site python benchmarks/qaoa.py --part subspace
    python benchmarks/qaoa.py --part icbs --icbs-steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("sdk", "subspace", "memory", "icbs"), default="sdk")
    parser.add_argument("--quick", action="store_true", help="3 instances, n in 6, 8")
    parser.add_argument("--count", type=int, default=None,
                        help="instances per n (default 20, or 3 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[12, 14, 16, 18, 20, 22, 24],
                        help="--part subspace: n values")
    parser.add_argument("--complete-max-n", type=int, default=16,
                        help="--part subspace: largest n for the complete-mixer comparison")
    parser.add_argument("--solves", nargs="*", default=["20:3:3", "20:3:1", "24:3:1"],
                        help="--part subspace: full solves n:p:restarts[:optimizer] (default "
                             "options otherwise)")
    parser.add_argument("--memory-n", type=int, default=26)
    parser.add_argument("--icbs-runs", nargs="*", default=[
        "braket-local:10:0:true", "braket-local:10:0:false",
        "qaoa-subspace:1024:20:true", "qaoa-subspace:1024:20:false"],
        help="--part icbs: backend:block_size:sub_block:polish")
    parser.add_argument("--icbs-steps", type=int, default=40)
    parser.add_argument("--icbs-time-limit", type=float, default=None,
                        help="--part icbs: solver time limit per block (s)")
    parser.add_argument("--icbs-p", type=int, default=2, help="--part icbs: QAOA layers")
    parser.add_argument("--icbs-restarts", type=int, default=1,
                        help="--part icbs: optimiser starts per layer")
    parser.add_argument("--name", default=None, help="result file stem")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    part = {"sdk": sdk_part, "subspace": subspace_part, "memory": memory_part,
            "icbs": icbs_part}[args.part]
    return part(args)


def sdk_part(args: argparse.Namespace) -> int:
    sizes = (6, 8) if args.quick else (6, 8, 10, 12)
    count = args.count or (3 if args.quick else 20)
    ps = (1, 2, 3)
    backends = {name: get_backend(name) for name in SDKS}
    for b in backends.values():  # load SDKs and numba kernels outside the timings
        b.solve(instance(min(10, b.max_qubits), 0), seed=0, p=1,
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
                        if n > backend.max_qubits:
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


def _load() -> dict:
    la = os.getloadavg()
    return {"load_avg_1m": la[0], "load_avg_5m": la[1]}


def _qokit() -> Any:
    """QOKit's C simulators and gate, or None. QOKit's package __init__ imports optional
    packages (qiskit_aer, pytket, ...) that its simulators do not need, so the two
    package levels are bound by hand and only ``qokit.fur.c`` is imported."""
    import importlib.util
    import types

    try:
        spec = importlib.util.find_spec("qokit")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = spec.submodule_search_locations[0]
    for name, path in (("qokit", root), ("qokit.fur", os.path.join(root, "fur"))):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module
    try:
        from qokit.fur.c import csim
        from qokit.fur.c.qaoa_simulator import (QAOAFURXYCompleteSimulatorC,
                                                QAOAFURXYRingSimulatorC)
    except (ImportError, OSError) as exc:
        print(f"QOKit not usable here ({exc}); its rows are skipped", file=sys.stderr)
        return None
    return types.SimpleNamespace(ring=QAOAFURXYRingSimulatorC,
                                 complete=QAOAFURXYCompleteSimulatorC, csim=csim)


def _median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _median_cpu(fn: Any, repeats: int) -> float:
    """Median CPU time of this process over ``repeats`` calls (single-threaded code: close
    to the unloaded wall time when other jobs share the cores)."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times))


def subspace_part(args: argparse.Namespace) -> int:
    from backends import _qaoa_kernels as kernels
    from backends.qaoa import Angles
    from backends.qaoa_subspace import SubspaceQAOABackend

    qk = _qokit()
    rng = np.random.default_rng(0)
    p = 3
    gammas_n = rng.uniform(0.2, 0.8, p)
    betas = rng.uniform(0.2, 1.2, p)
    rows, complete_rows = [], []
    SubspaceQAOABackend().solve(instance(8, 0), seed=0, p=1)  # numba cache
    for n in args.sizes:
        problem = instance(n, 0)
        t0 = time.perf_counter()
        model = QAOAModel(problem, "xy-ring")
        build_s = time.perf_counter() - t0
        angles = Angles(tuple(g / model.scale for g in gammas_n), tuple(betas))
        repeats = 5 if n <= 20 else 2
        ours_s, probs = _median_time(lambda: model.probabilities(angles), repeats)
        row = {"n": n, "k": n // 2, "p": p, "mixer": "xy-ring", "amplitudes": len(model.basis),
               "ours_build_s": build_s, "ours_circuit_s": ours_s,
               "ours_circuit_cpu_s": _median_cpu(lambda: model.probabilities(angles), repeats),
               **_load()}
        if qk is not None:
            t0 = time.perf_counter()
            costs = kernels.mask_energies(np.arange(2**n, dtype=np.int64),
                                          np.ascontiguousarray(problem.Q), problem.offset)
            sim = qk.ring(n, costs=costs)
            row["qokit_costs_s"] = time.perf_counter() - t0
            dicke = np.zeros(2**n, dtype=np.complex128)
            dicke[model.basis] = 1.0 / np.sqrt(len(model.basis))
            # QOKit's phase is exp(-i gamma/2 C): its gamma is twice ours
            q_gammas = [2.0 * g for g in angles.gamma]
            qk_s, q_probs = _median_time(lambda: sim.get_probabilities(
                sim.simulate_qaoa(q_gammas, list(betas), sv0=dicke)), repeats)
            qk_cpu = _median_cpu(lambda: sim.get_probabilities(
                sim.simulate_qaoa(q_gammas, list(betas), sv0=dicke)), repeats)
            row.update({"qokit_circuit_s": qk_s, "time_ratio_qokit_over_ours": qk_s / ours_s,
                        "qokit_circuit_cpu_s": qk_cpu,
                        "cpu_ratio_qokit_over_ours": qk_cpu / row["ours_circuit_cpu_s"],
                        "max_abs_prob_diff": float(np.abs(q_probs[model.basis] - probs).max()),
                        "qokit_prob_outside_weight_k": float(q_probs.sum() - q_probs[model.basis].sum())})
            del sim, costs, dicke, q_probs
        rows.append(row)
        print(json.dumps(row), flush=True)
        if qk is not None and n <= args.complete_max_n:
            cm = QAOAModel(problem, "xy-complete")
            ca = Angles(tuple(g / cm.scale for g in gammas_n), tuple(betas))
            ours = cm.probabilities(ca)
            costs = cm.energies  # on the weight-k basis; scattered below
            full_costs = np.zeros(2**n)
            full_costs[cm.basis] = costs
            re = np.zeros(2**n)
            re[cm.basis] = 1.0 / np.sqrt(len(cm.basis))
            im = np.zeros(2**n)

            def ours_order() -> np.ndarray:
                r, i = re.copy(), im.copy()
                for g, b in zip(ca.gamma, ca.beta):
                    phase = np.exp(-1j * g * full_costs)
                    z = (r + 1j * i) * phase
                    r, i = np.ascontiguousarray(z.real), np.ascontiguousarray(z.imag)
                    for a, c in cm.edges:
                        qk.csim.furxy(r, i, float(b), int(a), int(c))
                return r * r + i * i

            t0 = time.perf_counter()
            via_gates = ours_order()
            gates_s = time.perf_counter() - t0
            own = qk.complete(n, costs=full_costs)
            own_probs = own.get_probabilities(own.simulate_qaoa(
                [2.0 * g for g in ca.gamma], list(betas), sv0=re + 1j * im))
            crow = {"n": n, "mixer": "xy-complete",
                    "max_abs_prob_diff_our_order_with_qokit_furxy": float(
                        np.abs(via_gates[cm.basis] - ours).max()),
                    "max_abs_prob_diff_qokit_own_complete_order": float(
                        np.abs(own_probs[cm.basis] - ours).max()),
                    "qokit_furxy_circuit_s": gates_s,
                    "ours_circuit_s": _median_time(lambda: cm.probabilities(ca), 3)[0], **_load()}
            complete_rows.append(crow)
            print(json.dumps(crow), flush=True)

    solves = []
    for spec in args.solves:
        n, depth, restarts = (int(v) for v in spec.split(":")[:3])
        extra = {"optimizer": spec.split(":")[3]} if spec.count(":") >= 3 else {}
        problem = instance(n, 1)
        cpu0 = time.process_time()
        result = SubspaceQAOABackend().solve(problem, seed=0, p=depth, restarts=restarts,
                                             shots=1000, **extra)
        info = result.info
        solve = {"n": n, "p": depth, "restarts": restarts, "optimizer": info["optimizer"],
                 "wall_s": result.wall_time_s,
                 "cpu_s": time.process_time() - cpu0,
                 "train_s": info["train_time_s"], "evaluations": info["optimizer_evaluations"],
                 "simulate_s": info["simulate_time_s"], "source": info["source"],
                 "expectation": info["expectation"], "energy": result.energy, **_load()}
        solves.append(solve)
        print(json.dumps(solve), flush=True)

    memory = None
    if args.memory_n:
        import subprocess

        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", "memory", "--memory-n",
               str(args.memory_n)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        memory = json.loads(lines[-1]) if lines else {"error": done.stderr[-500:]}
        print(json.dumps(memory), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or "qaoa_subspace"
    (out / f"{name}.json").write_text(json.dumps({
        "command": " ".join(["python benchmarks/qaoa.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "qokit": qk is not None, "angles_normalised": {"gamma": gammas_n.tolist(),
                                                       "beta": betas.tolist()},
        "ring": rows, "complete": complete_rows, "solves": solves, "memory": memory,
    }, indent=1) + "\n")
    _plot_subspace(rows, out / f"{name}.png")
    return 0


def _plot_subspace(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ns = [r["n"] for r in rows]
    ax.semilogy(ns, [r["ours_circuit_s"] for r in rows], "-o", label="qaoa-subspace (C(n,k))")
    qk = [r for r in rows if "qokit_circuit_s" in r]
    if qk:
        ax.semilogy([r["n"] for r in qk], [r["qokit_circuit_s"] for r in qk], "--s",
                    label="QOKit C, full 2^n")
    ax.set_xlabel("n (k = n/2), XY ring, p = 3")
    ax.set_ylabel("one circuit evaluation (s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def memory_part(args: argparse.Namespace) -> int:
    """One solve at n = memory_n (given angles: one circuit, 1000 shots, polish); prints
    JSON with its wall time and the process's peak RSS (VmHWM: unlike ru_maxrss it is not
    inherited from a parent across fork + exec)."""
    from backends.qaoa_subspace import SubspaceQAOABackend

    def peak_mb() -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    n = args.memory_n
    problem = instance(n, 2)
    backend = SubspaceQAOABackend()
    backend.solve(instance(8, 0), seed=0, p=1)
    base = peak_mb()
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = backend.solve(problem, seed=0, shots=1000, p=3,
                           angles={"gamma": [0.05, 0.1, 0.15], "beta": [0.6, 0.4, 0.2]})
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = peak_mb()
    print(json.dumps({"n": n, "k": n // 2, "p": 3, "amplitudes": result.info["amplitudes"],
                      "wall_s": wall, "cpu_s": cpu, "simulate_s": result.info["simulate_time_s"],
                      "peak_rss_mb": peak, "peak_rss_before_solve_mb": base,
                      "source": result.info["source"], **_load()}))
    return 0


def icbs_part(args: argparse.Namespace) -> int:
    import torch

    from pruning.icbs import ICBSConfig
    from pruning.models import load_builtin
    from pruning.run import prune_classifier

    torch.set_num_threads(int(os.environ.get("QCBO_TORCH_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or "qaoa_icbs"
    path = out / f"{name}.json"
    runs = []
    for spec in args.icbs_runs:
        backend, block, sub, polish = spec.split(":")
        options: dict[str, Any] = {"p": args.icbs_p, "restarts": args.icbs_restarts,
                                   "polish": polish == "true"}
        if int(sub):
            options["sub_block"] = int(sub)
        epochs = min(4, args.icbs_steps)
        config = ICBSConfig(density=0.1, backend=backend, block_size=int(block),
                            backend_options=options, epochs=epochs,
                            steps_per_epoch=max(1, args.icbs_steps // epochs),
                            solver_time_limit=args.icbs_time_limit, seed=0,
                            refit="none")  # the block steps alone: the solvers are compared
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        r = prune_classifier(load_builtin("mlp-fashion-mnist"), method="icbs", config=config)
        run = {"backend": backend, "block_size": int(block), "options": options,
               "steps": r["blocks_solved"], "applied": r["blocks_applied"],
               "test_accuracy": r["final"]["test_accuracy"],
               "start_test_accuracy": r["initial"].get("test_accuracy"),
               "applied_by_source": r.get("applied_by_source"),
               "qaoa_answer_fraction": r.get("qaoa_answer_fraction"),
               "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
               "solver_time_s": r["solver_time_s"], **_load()}
        runs.append(run)
        print(json.dumps(run), flush=True)
        path.write_text(json.dumps({
            "command": " ".join(["python benchmarks/qaoa.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "model": "builtin:mlp-fashion-mnist", "density": 0.1, "seed": 0,
            "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
