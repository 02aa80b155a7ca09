"""Pruning benchmark: the Fashion-MNIST MLP 784-512-512-10 at several densities.

For each density and seed: test accuracy and wall time of the dense model, one-shot
magnitude (per layer) and Wanda (per output row), and iCBS (backend sa, blocks of 1024,
k = 512, ICBS.md's gamma, lambda, fixing and tabu fractions, automatic start
(--init), calibration-loss check).
Optionally (--backends) one iCBS run per extra backend at the first density, each
with a block size it can take. Writes a table to stdout, JSON and a PNG of test accuracy
against density under benchmarks/results/.

    nice -n 10 python benchmarks/pruning.py                       # full: 4 densities x 3 seeds
    nice -n 10 python benchmarks/pruning.py --densities 0.1 0.3 --seeds 0
    nice -n 10 python benchmarks/pruning.py --densities 0.1 --seeds 0 \
        --backends tabu cpsat:64 braket-local:12 --backend-steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--init", default="auto")
    p.add_argument("--backends", nargs="*", default=[], metavar="NAME[:BLOCK]",
                   help="extra iCBS runs at the first density and seed, e.g. tabu cpsat:64 "
                        "braket-local:12")
    p.add_argument("--backend-steps", type=int, default=None,
                   help="total steps of each extra-backend run (default: same as sa)")
    p.add_argument("--backend-time-limit", type=float, default=None,
                   help="per-block time limit for the extra backends (e.g. cpsat)")
    p.add_argument("--name", default="pruning", help="result file stem")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in the result file and skip their (density, seed)")
    return p.parse_args(argv)


def run_one(density: float, seed: int, backend: str, block_size: int, args, *,
            method: str = "icbs", epochs: int | None = None, steps: int | None = None,
            time_limit: float | None = None) -> dict:
    from pruning.icbs import ICBSConfig
    from pruning.models import load_builtin
    from pruning.run import prune_classifier

    loaded = load_builtin("mlp-fashion-mnist")
    config = ICBSConfig(density=density, backend=backend, block_size=block_size,
                        init=args.init, epochs=args.epochs if epochs is None else epochs,
                        steps_per_epoch=args.steps_per_epoch if steps is None else steps,
                        solver_time_limit=time_limit, seed=seed)
    return prune_classifier(loaded, method=method, config=config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("QCBO_TORCH_THREADS", "1")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    previous = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    rows: list[dict] = list(previous.get("runs", []))
    backend_rows: list[dict] = list(previous.get("backends", []))
    done = {(r["density"], r["seed"]) for r in rows}
    load_start = os.getloadavg()[0]
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch_threads":
            torch.get_num_threads(), "load_avg_1m_start": load_start,
            "config": {k: v for k, v in vars(args).items()},
            "earlier_commands": [c for m in [previous.get("meta", {})]
                                 for c in m.get("earlier_commands", []) + [m.get("command")] if c]}

    def save() -> None:
        out.write_text(json.dumps({"meta": meta, "runs": rows, "summary": _summarise(rows),
                                   "backends": backend_rows}, indent=1) + "\n")

    for density in args.densities:
        for seed in args.seeds:
            if (density, seed) in done:
                continue
            cpu0 = time.process_time()
            r = run_one(density, seed, "sa", args.block_size, args)
            cpu = time.process_time() - cpu0
            row = {
                "density": density, "seed": seed,
                "dense": r["dense"]["test_accuracy"],
                "magnitude": r["baselines"]["magnitude"]["test_accuracy"],
                "magnitude_time_s": r["baselines"]["magnitude"]["wall_time_s"],
                "wanda": r["baselines"]["wanda"]["test_accuracy"],
                "wanda_time_s": r["baselines"]["wanda"]["wall_time_s"],
                "icbs": r["final"]["test_accuracy"],
                "icbs_val": r["final"]["val_accuracy"],
                "icbs_time_s": r["wall_time_s"],
                "run_cpu_time_s": cpu,
                "icbs_solver_time_s": r["solver_time_s"],
                "icbs_blocks": r["blocks_solved"], "icbs_applied": r["blocks_applied"],
                "icbs_epochs": [{k: e[k] for k in ("epoch", "val_loss", "val_accuracy")}
                                for e in r["epochs"]],
                "load_avg_1m": os.getloadavg()[0],
            }
            rows.append(row)
            save()
            print(f"density {density:.2f} seed {seed}: dense {100 * row['dense']:.2f} "
                  f"magnitude {100 * row['magnitude']:.2f} wanda {100 * row['wanda']:.2f} "
                  f"icbs {100 * row['icbs']:.2f} ({row['icbs_time_s']:.0f} s wall, "
                  f"{row['run_cpu_time_s']:.0f} s CPU for the whole run, load "
                  f"{row['load_avg_1m']:.1f})", flush=True)

    if args.backends:
        density, seed = args.densities[0], args.seeds[0]
        total = args.backend_steps or args.epochs * args.steps_per_epoch
        for spec in args.backends:
            from backends import get_backend

            name, _, block = spec.partition(":")
            block_size = int(block) if block else args.block_size
            limit = get_backend(name).max_variables
            if limit is not None and block_size > limit:
                print(f"{name}: blocks of {block_size} exceed its limit, using {limit}")
                block_size = limit
            epochs = min(args.epochs, total)
            cpu0 = time.process_time()
            r = run_one(density, seed, name, block_size, args, epochs=epochs,
                        steps=max(1, total // epochs), time_limit=args.backend_time_limit)
            cpu = time.process_time() - cpu0
            backend_rows.append({
                "backend": name, "block_size": r["block_size"], "block_k": r["block_k"],
                "density": density, "seed": seed, "steps": r["blocks_solved"],
                "applied": r["blocks_applied"], "test_accuracy": r["final"]["test_accuracy"],
                "val_accuracy": r["final"]["val_accuracy"], "val_loss": r["final"]["val_loss"],
                "wall_time_s": r["wall_time_s"], "solver_time_s": r["solver_time_s"],
                "run_cpu_time_s": cpu, "load_avg_1m": os.getloadavg()[0],
            })
            save()
            b = backend_rows[-1]
            print(f"backend {name} (blocks {b['block_size']}): test {100 * b['test_accuracy']:.2f} "
                  f"in {b['wall_time_s']:.0f} s ({b['solver_time_s']:.0f} s solving)", flush=True)

    summary = _summarise(rows)
    _print_tables(summary, backend_rows)
    save()
    if summary:
        _plot(summary, RESULTS / f"{args.name}.png")
    print(f"wrote {out}" + (f" and {RESULTS / (args.name + '.png')}" if summary else ""))
    return 0


def _summarise(rows: list[dict]) -> list[dict]:
    import numpy as np

    out = []
    for density in sorted({r["density"] for r in rows}):
        sel = [r for r in rows if r["density"] == density]
        entry = {"density": density, "seeds": len(sel)}
        for key in ("dense", "magnitude", "wanda", "icbs", "magnitude_time_s", "wanda_time_s",
                    "icbs_time_s"):
            vals = np.array([r[key] for r in sel], dtype=float)
            entry[key] = float(vals.mean())
            entry[key + "_std"] = float(vals.std())
        out.append(entry)
    return out


def _print_tables(summary: list[dict], backend_rows: list[dict]) -> None:
    if summary:
        print("\n| density | seeds | dense | magnitude | Wanda | iCBS (sa) | iCBS - best one-shot "
              "| iCBS wall time |")
        print("|---|---|---|---|---|---|---|---|")
        for s in summary:
            best = max(s["magnitude"], s["wanda"])
            print(f"| {s['density']:.1f} | {s['seeds']} | {100 * s['dense']:.2f} | "
                  f"{100 * s['magnitude']:.2f} | {100 * s['wanda']:.2f} | "
                  f"{100 * s['icbs']:.2f} ± {100 * s['icbs_std']:.2f} | "
                  f"{100 * (s['icbs'] - best):+.2f} | {s['icbs_time_s']:.0f} s |")
    if backend_rows:
        print("\n| backend | block n | k | blocks | applied | test acc | val loss | wall time "
              "| solver time |")
        print("|---|---|---|---|---|---|---|---|---|")
        for b in backend_rows:
            print(f"| {b['backend']} | {b['block_size']} | {b['block_k']} | {b['steps']} | "
                  f"{b['applied']} | {100 * b['test_accuracy']:.2f} | {b['val_loss']:.3f} | "
                  f"{b['wall_time_s']:.0f} s | {b['solver_time_s']:.0f} s |")


def _plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = [s["density"] for s in summary]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (("dense", "dense", "k--"), ("magnitude", "magnitude", "o-"),
                              ("wanda", "Wanda", "s-"), ("icbs", "iCBS (sa)", "D-")):
        ax.errorbar(d, [100 * s[key] for s in summary],
                    yerr=[100 * s[key + "_std"] for s in summary], fmt=style, label=label,
                    capsize=3)
    ax.set_xlabel("density (fraction of weights kept)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST MLP 784-512-512-10")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
