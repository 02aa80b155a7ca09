"""Scale-out benchmark: blocks per second on 1 and 2 workers, executor overhead, shipping.

    python benchmarks/scale.py                       # the full run
    python benchmarks/scale.py --quick               # a reduced run (a few minutes)

Parts:

* ``throughput``: dense random blocks (N(0, 1), symmetrised, k = n/2) of n in
  ``--sizes``; sa and tabu with their default options and no time limit (so every
  executor must return the same energies, which is checked), cpsat (one search worker,
  ``--cpsat-time`` s, at most 6 blocks) at n = 64 only. Serial, then the processes executor with 1 and 2
  workers: blocks/s and the speed-up of 2 workers over 1.
* ``overhead``: an "empty" task (exact on a 2-variable block, ~0.1 ms of work) on each
  executor, per task; and the cost of shipping one n = 1024 block (exact refuses it
  before solving, so the task is all shipping): end to end, and its parts (the copy into
  shared memory in the parent, opening it in the worker, and for comparison a pickle
  round trip and a validated Problem() of the same block).
* ``target``: the issue's target, 200 blocks of n = 256, sa with a 0.2 s time limit
  (never reached with sa's defaults here, so answers stay deterministic): serial against
  2 processes, wall ratio and identical energies.
* ``estimate``: core-hours for pruning a 7B model with the paper's settings, from the
  sa time measured on an n = 4096 block with 20 restarts; the assumptions are written
  into the JSON.

Writes benchmarks/results/scale.json and scale.png. The machine may be shared; each
figure is what one run measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import get_backend  # noqa: E402
from backends.executor import ProcessExecutor, make_executor  # noqa: E402
from qcbo import Problem  # noqa: E402

OPTIONS = {"sa": {}, "tabu": {}, "cpsat": {"workers": 1}}


def random_block(n: int, seed: int) -> Problem:
    """Dense QCBO with N(0, 1) entries (symmetrised) and k = n // 2."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return Problem((a + a.T) / 2.0, 0.0, n // 2, metadata={"name": f"n{n}-s{seed}"})


def _timed(executor, problems, backend, options, time_limit=None, results=None):
    start = time.perf_counter()
    solved = list(executor.solve_many(problems, backend, options, seed=0,
                                      time_limit=time_limit))
    if results is not None:
        results.extend(solved)
    return time.perf_counter() - start, [r.energy for r in solved]


def _warm(executor, backend, options, n):
    """First call: pool start-up, imports, numba load; not timed."""
    _timed(executor, [random_block(n, 10_000 + i) for i in range(2 * executor.workers)],
           backend, options, 1.0 if backend == "cpsat" else None)


def throughput(sizes, counts, cpsat_time):
    rows = []
    pools = {w: ProcessExecutor(w) for w in (1, 2)}
    serial = make_executor("serial")
    try:
        for n in sizes:
            for backend in ("sa", "tabu", "cpsat"):
                if backend == "cpsat" and n != 64:
                    continue
                count = min(counts[n], 6) if backend == "cpsat" else counts[n]
                problems = [random_block(n, i) for i in range(count)]
                limit = cpsat_time if backend == "cpsat" else None
                row = {"n": n, "backend": backend, "blocks": len(problems), "time_limit": limit}
                energies = {}
                for label, executor in (("serial", serial), ("w1", pools[1]), ("w2", pools[2])):
                    _warm(executor, backend, OPTIONS[backend], n)
                    results = []
                    wall, energies[label] = _timed(executor, problems, backend,
                                                   OPTIONS[backend], limit, results)
                    row[f"{label}_wall_s"] = wall
                    row[f"{label}_blocks_per_s"] = len(problems) / wall
                    # The solver's own time per block: it grows with 2 workers only when
                    # the two cores are not both free (a shared machine).
                    row[f"{label}_solve_s_per_block"] = float(np.mean(
                        [r.wall_time_s for r in results]))
                row["speedup_2_over_1"] = row["w1_wall_s"] / row["w2_wall_s"]
                row["identical_energies"] = energies["serial"] == energies["w1"] == energies["w2"]
                rows.append(row)
                print(f"n={n:5d} {backend:5s} {len(problems):3d} blocks: serial "
                      f"{row['serial_blocks_per_s']:7.2f}/s, 1 worker {row['w1_blocks_per_s']:7.2f}/s"
                      f", 2 workers {row['w2_blocks_per_s']:7.2f}/s, speed-up "
                      f"{row['speedup_2_over_1']:.2f}, identical {row['identical_energies']}; "
                      f"solve s/block 1 worker {row['w1_solve_s_per_block']:.4f}, 2 workers "
                      f"{row['w2_solve_s_per_block']:.4f}", flush=True)
    finally:
        for pool in pools.values():
            pool.close()
    return rows


def _per_task(executor, problems, backend="exact"):
    list(executor.solve_iter(problems[:4], backend, errors="return"))  # warm
    start = time.perf_counter()
    list(executor.solve_iter(problems, backend, errors="return"))
    return (time.perf_counter() - start) / len(problems)


def overhead(tasks, with_ray):
    tiny = [Problem(np.array([[1.0, -0.5], [-0.5, 0.5]]), 0.0, 1) for _ in range(tasks)]
    big = random_block(1024, 0)
    ships = [big] * 20
    out = {"empty_tasks": tasks}
    solve = get_backend("exact")
    start = time.perf_counter()
    for p in tiny:
        solve.solve(p, seed=0)
    out["empty_solve_in_process_ms"] = 1e3 * (time.perf_counter() - start) / tasks
    kinds = [("serial", {}), ("processes", {"workers": 2})]
    if with_ray:
        kinds.append(("ray", {"workers": 2}))
    for kind, kwargs in kinds:
        t0 = time.perf_counter()
        with make_executor(kind, **kwargs) as executor:
            started = time.perf_counter() - t0
            per_task = _per_task(executor, tiny)
            per_ship = _per_task(executor, ships)
        out[kind] = {
            "start_s": started,
            "empty_task_ms": 1e3 * per_task,
            "overhead_per_task_ms": 1e3 * per_task - out["empty_solve_in_process_ms"],
            "n1024_task_ms": 1e3 * per_ship,
            "ship_n1024_ms": 1e3 * (per_ship - per_task),
        }
        print(f"{kind:9s}: start {started:5.2f} s, empty task {1e3 * per_task:6.2f} ms, "
              f"n=1024 block task {1e3 * per_ship:6.2f} ms (shipping {1e3 * (per_ship - per_task):6.2f} ms)",
              flush=True)
    # The parts of shipping one n = 1024 block to a process worker.
    shm_pool = ProcessExecutor(1)
    reps = 20
    t = time.perf_counter()
    packed = [shm_pool._pack(big) for _ in range(reps)]
    out["shm_pack_ms"] = 1e3 * (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for data in packed:
        with data.open() as problem:
            float(problem.Q[-1, -1])
            del problem
    out["shm_open_ms"] = 1e3 * (time.perf_counter() - t) / reps
    for data in packed:
        shm_pool._release(SimpleNamespace(problem=data))
    t = time.perf_counter()
    for _ in range(reps):
        shm_pool._release(SimpleNamespace(problem=shm_pool._pack(big)))
    out["shm_pack_recycled_ms"] = 1e3 * (time.perf_counter() - t) / reps
    shm_pool.close()
    t = time.perf_counter()
    for _ in range(reps):
        pickle.loads(pickle.dumps(big, protocol=5))
    out["pickle_roundtrip_ms"] = 1e3 * (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(reps):
        Problem(big.Q, 0.0, big.k)
    out["problem_rebuild_ms"] = 1e3 * (time.perf_counter() - t) / reps
    out["n1024_bytes"] = big.Q.nbytes
    print(f"n=1024 block ({big.Q.nbytes / 2**20:.0f} MiB): shared memory pack "
          f"{out['shm_pack_ms']:.2f} ms (recycled segment {out['shm_pack_recycled_ms']:.2f} ms)"
          f" + open {out['shm_open_ms']:.3f} ms; pickle round trip "
          f"(no pipe) {out['pickle_roundtrip_ms']:.2f} ms; a validated Problem() "
          f"{out['problem_rebuild_ms']:.2f} ms", flush=True)
    return out


def target(count, n, time_limit):
    problems = [random_block(n, 50_000 + i) for i in range(count)]
    walls, energies, cut = {}, {}, {}
    for label, kind, workers in (("serial", "serial", None), ("processes2", "processes", 2)):
        with make_executor(kind, workers=workers) as executor:
            _warm(executor, "sa", {}, n)
            results = []
            walls[label], energies[label] = _timed(executor, problems, "sa", {}, time_limit,
                                                   results)
            # sa stops between restarts when the limit comes: its answer then depends on
            # the machine's speed at that moment.
            cut[label] = sum(bool(r.info.get("stopped_by_time_limit")) for r in results)
    out = {
        "blocks": count, "n": n, "backend": "sa", "time_limit": time_limit,
        "serial_wall_s": walls["serial"], "processes2_wall_s": walls["processes2"],
        "wall_ratio": walls["processes2"] / walls["serial"],
        "identical_energies": energies["serial"] == energies["processes2"],
        "identical_blocks": sum(a == b for a, b in zip(energies["serial"],
                                                       energies["processes2"])),
        "blocks_cut_by_the_time_limit": cut,
        "target": "wall <= 0.6 x serial, identical energies",
    }
    out["met"] = out["wall_ratio"] <= 0.6 and out["identical_energies"]
    print(f"target: {count} blocks n={n} sa (limit {time_limit} s): serial {walls['serial']:.2f} s,"
          f" 2 workers {walls['processes2']:.2f} s, ratio {out['wall_ratio']:.3f}, identical "
          f"{out['identical_blocks']}/{count} (blocks cut by the time limit: {cut})", flush=True)
    return out


def estimate(restarts, sweeps, sizes=(1024, 4096), counts=(3, 1)):
    """Seconds per n=4096 sa block with the paper's restarts (measured), then 7B totals."""
    sa = get_backend("sa")
    times = {}
    for n, count in zip(sizes, counts):
        blocks = [random_block(n, 70_000 + i) for i in range(count)]
        sa.solve(blocks[0], seed=0, sweeps=2, restarts=1)
        start = time.perf_counter()
        for b in blocks:
            sa.solve(b, seed=0, sweeps=sweeps, restarts=restarts)
        times[n] = (time.perf_counter() - start) / count
    exponent = math.log(times[sizes[1]] / times[sizes[0]]) / math.log(sizes[1] / sizes[0])
    t4096 = times[4096]
    linears = 32 * 7
    steps_per_linear = 10 * 300
    solves = linears * steps_per_linear
    core_hours = solves * t4096 / 3600
    cores_per_node = 64
    chain_hours = steps_per_linear * t4096 / 3600
    out = {
        "assumptions": [
            "Mistral-7B: 32 decoder blocks x 7 Linear layers (q, k, v, o, gate, up, down) = "
            "224 Linears, each pruned with iCBS as in the paper: blocks of n = 4096, "
            "10 outer iterations x 300 block steps (3000 block QCBO solves per Linear)",
            f"each solve: our sa with {restarts} restarts of {sweeps} sweeps (the paper's 20 "
            "restarts; sweeps per restart as iCBS uses here), one core per solve",
            f"time per n = 4096 block measured here on {counts[1]} dense random block(s) "
            f"(k = n/2; t ~ n^{exponent:.2f} between n = {sizes[0]} and {sizes[1]}); real "
            "iCBS blocks anneal faster or slower with their structure",
            "the objective's gradient/Fisher work, data loading and the 134 MB per n = 4096 "
            "block shipping (about 16x the n = 1024 cost) are not counted",
            f"nodes of {cores_per_node} cores; steps of one Linear run one after another "
            "(group size 1), Linears and their row blocks in parallel",
        ],
        "sa_seconds_per_block": {str(n): t for n, t in times.items()},
        "fitted_exponent": exponent,
        "sa_seconds_per_n4096_block": t4096,
        "block_solves": solves,
        "core_hours": core_hours,
        "nodes_for_one_hour": math.ceil(core_hours / cores_per_node),

        "critical_path_hours_per_linear": chain_hours,
        "note": "with one step at a time per Linear, no node count finishes in under "
                "critical_path_hours_per_linear; groups of g disjoint blocks per step "
                "(issue 11, item 3) divide that path by about g",
    }
    print(f"7B estimate: {t4096:.2f} s per n=4096 block (measured), {solves} solves, "
          f"{core_hours:.0f} core-hours, {out['nodes_for_one_hour']} nodes of {cores_per_node} "
          f"cores for one hour; critical path per Linear {chain_hours:.2f} h", flush=True)
    return out


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, backend in enumerate(("sa", "tabu", "cpsat")):
        rows = [r for r in report["throughput"] if r["backend"] == backend]
        if not rows:
            continue
        ns = [r["n"] for r in rows]
        left.plot(ns, [r["w1_blocks_per_s"] for r in rows], "o--", color=f"C{i}",
                  label=f"{backend}, 1 worker")
        left.plot(ns, [r["w2_blocks_per_s"] for r in rows], "s-", color=f"C{i}",
                  label=f"{backend}, 2 workers")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("block size n")
    left.set_ylabel("blocks per second")
    left.set_title("throughput (processes executor)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    kinds = [k for k in ("serial", "processes", "ray") if k in report["overhead"]]
    x = np.arange(len(kinds))
    right.bar(x - 0.2, [report["overhead"][k]["overhead_per_task_ms"] for k in kinds], 0.4,
              label="empty task")
    right.bar(x + 0.2, [report["overhead"][k]["ship_n1024_ms"] for k in kinds], 0.4,
              label="shipping an n=1024 block")
    right.set_xticks(x, kinds)
    right.set_ylabel("ms per task")
    right.set_title("executor overhead")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer blocks per size (a few minutes on 2 cores)")
    parser.add_argument("--sizes", default="64,256,1024")
    parser.add_argument("--cpsat-time", type=float, default=1.0)
    parser.add_argument("--empty-tasks", type=int, default=300)
    parser.add_argument("--target-count", type=int, default=200)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray overhead")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = ({64: 24, 256: 12, 1024: 4} if args.quick else {64: 80, 256: 40, 1024: 12})
    counts = {n: counts.get(n, 8) for n in sizes}
    with_ray = not args.no_ray
    if with_ray:
        import importlib.util

        with_ray = importlib.util.find_spec("ray") is not None
    started = time.perf_counter()
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()},
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "throughput": throughput(sizes, counts, args.cpsat_time),
        "overhead": overhead(args.empty_tasks, with_ray),
        "target": target(args.target_count, 256, 0.2),
        "estimate_7b": estimate(restarts=20, sweeps=100),
    }
    report["total_s"] = time.perf_counter() - started
    report["machine"]["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} in {report['total_s']:.0f} s")


if __name__ == "__main__":
    main()
