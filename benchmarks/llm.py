"""Benchmark: LM pruning of SmolLM2-135M on the held-out Wikipedia part.

    nice -n 10 python benchmarks/llm.py [--runs NAME ...] [--eval-windows 16]
        [--calibration-windows 16] [--steps 64] [--orders 3]
    nice -n 10 python benchmarks/llm.py --method-errors 4 [--levels 0.3 0.5 2:4]

Loads the model once, computes the dense perplexity, then for every run restores the
dense weights, prunes (layer by layer, calibration windows from the calibration part)
and measures perplexity (protocol of pruning.llm.perplexity), wall time and peak RSS of
the process during the run. Every method runs ``--orders`` times (default 3), each time
with the same calibration windows in another order (float summation order moves
perplexity by several per cent at high sparsity); a row holds every run's perplexity
and their mean, min and max, and the plot shows the spread. Results are written after every run to
benchmarks/results/llm.json and plotted to benchmarks/results/llm.png.
Run names: METHOD@DENSITY, with DENSITY a number or 2:4; iCBS variants are
icbs-rec, icbs-rec-refit, icbs-fisher (initial mask: Wanda), and the same with the
suffix -sg (initial mask and weights: SparseGPT's) or -alps (ALPS's); one-shot methods magnitude, wanda,
sparsegpt, alps. A method name ending in +dense (e.g. alps+dense@0.3) reconstructs the
dense model's outputs (`LMPruneConfig.targets="dense"`) instead of each Linear's own.

``--method-errors BLOCKS``: instead, the relative layer reconstruction error
‖XW − XŴ‖²/‖XW‖² of Wanda, SparseGPT and ALPS on every Linear of the first BLOCKS decoder
blocks (the same dense inputs for all), at each of ``--levels`` (ALPS paper, Table 7).

``--reload-check FOLDER``: instead, load the folder written by ``qcbo prune --task lm
--out FOLDER`` with transformers' ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` alone (none of this project's loaders), measure its
perplexity with the protocol recorded in its report.json, and compare it with the
reported perplexity and density.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_RUNS = [
    "icbs-fisher@0.5", "wanda@0.5", "sparsegpt@0.5", "icbs-rec@0.5", "icbs-rec-refit@0.5",
    "icbs-rec-refit-sg@0.5", "magnitude@0.5",
    "wanda@0.3", "sparsegpt@0.3", "icbs-rec@0.3", "icbs-rec-refit@0.3", "icbs-rec-refit-sg@0.3",
    "icbs-fisher@0.3", "magnitude@0.3",
    "wanda@2:4", "sparsegpt@2:4", "icbs-rec@2:4", "icbs-rec-refit@2:4", "icbs-rec-refit-sg@2:4",
    "magnitude@2:4",
]


def config_for(name: str, steps: int, block: int, seed: int, row_rounds: int = 0,
               target_ridge: float = 1.0):
    from pruning.llm.baselines import parse_pattern
    from pruning.llm.icbs import LMICBSConfig
    from pruning.llm.prune import LMPruneConfig

    method, level = name.split("@")
    targets = "dense" if method.endswith("+dense") else "pruned"
    method = method.removesuffix("+dense")
    pattern = parse_pattern(level) if ":" in level else None
    density = 0.5 if pattern else float(level)
    options = {"sweeps": 200, "restarts": 4}
    if method.startswith("icbs"):
        init = {"-sg": "sparsegpt", "-alps": "alps"}.get(
            next((s for s in ("-sg", "-alps") if method.endswith(s)), ""), "wanda")
        method = method.removesuffix("-sg").removesuffix("-alps")
        icbs = LMICBSConfig(objective="fisher" if method == "icbs-fisher" else "reconstruction",
                            refit=method.endswith("refit"), backend="sa", init=init,
                            backend_options=options, block_size=block, steps_per_layer=steps,
                            row_rounds=row_rounds, seed=seed)
        return LMPruneConfig(method="icbs", density=density, pattern=pattern, icbs=icbs,
                             targets=targets, target_ridge=target_ridge)
    return LMPruneConfig(method=method, density=density, pattern=pattern, targets=targets,
                         target_ridge=target_ridge)


def window_order(count: int, order: int):
    """Permutation of the calibration windows for run ``order``: 0 keeps the text order,
    others shuffle with ``torch.Generator().manual_seed(order)`` (only float summation
    order changes: the same windows, the same statistics up to rounding)."""
    import torch

    if order == 0:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(order))


def summarise(name: str, runs: list[dict], args) -> dict:
    """One result row: mean, min, max (and each run) of the perplexity over window orders."""
    ppls = [r["perplexity"] for r in runs]
    mean = sum(ppls) / len(ppls)
    row = {"name": name, "executor": args.executor, "workers": args.workers,
           "orders": len(runs), "perplexity": mean, "perplexity_min": min(ppls),
           "perplexity_max": max(ppls), "perplexities": ppls,
           "wall_s": sum(r["wall_s"] for r in runs) / len(runs),
           "prune_s": sum(r["prune_s"] for r in runs) / len(runs),
           "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
           "mean_layer_density": runs[0]["mean_layer_density"], "runs": runs}
    for key in ("reconstruction_error_init", "reconstruction_error_final"):
        if key in runs[0]:
            row[key] = sum(r[key] for r in runs) / len(runs)
    return row


def release_memory() -> None:
    """Return freed heap pages to the OS, so each run's peak RSS starts from the model's."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks may include earlier runs' heap
        pass


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["name"] != "dense"]
    dense = next((r["perplexity"] for r in results if r["name"] == "dense"), None)
    fig, ax = plt.subplots(figsize=(10, 4))
    means = [r["perplexity"] for r in rows]
    low = [m - r.get("perplexity_min", m) for m, r in zip(means, rows)]
    high = [r.get("perplexity_max", m) - m for m, r in zip(means, rows)]
    ax.bar(range(len(rows)), means, yerr=[low, high], capsize=3)
    for i, r in enumerate(rows):  # every run, so the spread is visible, not only its range
        ppls = r.get("perplexities", [r["perplexity"]])
        ax.plot([i] * len(ppls), ppls, "k.", ms=3)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=60, ha="right",
                  fontsize=8)
    ax.set_yscale("log")
    if dense:
        ax.axhline(dense, color="k", ls="--", label=f"dense {dense:.2f}")
        ax.legend()
    ax.set_ylabel("perplexity: mean, min-max, runs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _Enough(Exception):
    """Raised to stop `run_layerwise` once the blocks a measurement needs are done."""


def _first_blocks(model, calibration, count: int, measure) -> None:
    """Run ``measure(index, linears, stats)`` on the first ``count`` decoder blocks only."""
    from pruning.llm.layerwise import run_layerwise


    def call(index, linears, stats):
        if index >= count:
            raise _Enough
        measure(index, linears, stats)

    try:
        run_layerwise(model, calibration, call)
    except _Enough:
        pass


def layer_errors(model, calibration, args, out: Path) -> int:
    """Per-Linear reconstruction errors of every method on the same (dense) inputs."""
    from pruning.engine import BlockSolver
    from pruning.llm.icbs import refine_rows, refit_rows, row_errors
    from pruning.llm.prune import LMPruneConfig, _init_mask
    from pruning.llm.sparsegpt import damped_hessian

    cfg = LMPruneConfig(density=args.density)
    solver = BlockSolver("sa", {"sweeps": 200, "restarts": 4}, seed=args.seed)
    totals: dict[str, float] = {}

    def measure(index, linears, stats):
        for name, lin in linears.items():
            W0 = lin.weight.detach().clone()
            H, _ = damped_hessian(stats[name].hessian)
            rows = {}
            for init in ("wanda", "sparsegpt"):
                W, keep = _init_mask(init, W0, stats[name], cfg)
                rows[init] = W
                Wr = refit_rows(W0, keep, H)
                rows[f"{init}+refit"] = Wr
                if init == "wanda":
                    Wi, ki = refine_rows(W0, W, keep, H, solver, block_size=args.block_size,
                                         steps=args.steps)
                    rows["icbs-rec"] = Wi
                Wi, ki = refine_rows(W0, Wr, keep, H, solver, block_size=args.block_size,
                                     steps=args.steps)
                rows[f"icbs-rec-refit (init {init})"] = refit_rows(W0, ki, H)
            for key, W in rows.items():
                totals[key] = totals.get(key, 0.0) + float(row_errors(W0, W, H).sum())
            logging.info("block %d %s done", index, name)

    _first_blocks(model, calibration, args.layer_errors, measure)
    result = {"density": args.density, "blocks": args.layer_errors, "steps": args.steps,
              "block_size": args.block_size, "target_ridge": args.target_ridge, "error_sum": totals}
    logging.info("%s", json.dumps(result))
    out.with_name(out.stem + "_layer_errors.json").write_text(json.dumps(result, indent=2))
    return 0


def method_errors(model, calibration, args, out: Path) -> int:
    """Relative reconstruction error ‖XW − XŴ‖²/‖XW‖² per Linear of the first BLOCKS
    decoder blocks for Wanda, SparseGPT and ALPS at every level (dense inputs for all)."""
    import torch

    from pruning.llm.baselines import parse_pattern
    from pruning.llm.prune import LMPruneConfig, _init_mask

    methods = ("wanda", "sparsegpt", "alps")
    layers: dict[str, dict] = {}
    seconds = {f"{m}@{lvl}": 0.0 for m in methods for lvl in args.levels}

    def measure(index, linears, stats):
        for name, lin in linears.items():
            W0 = lin.weight.detach().to(torch.float64)
            H = stats[name].hessian
            base = float(((W0 @ H) * W0).sum())
            row = layers.setdefault(f"{index}.{name}", {"shape": list(W0.shape)})
            for level in args.levels:
                pattern = parse_pattern(level) if ":" in level else None
                cfg = LMPruneConfig(density=0.5 if pattern else float(level), pattern=pattern)
                for method in methods:
                    t = time.perf_counter()
                    W, _keep = _init_mask(method, lin.weight.detach().clone(), stats[name], cfg)
                    seconds[f"{method}@{level}"] += time.perf_counter() - t
                    D = W.to(torch.float64) - W0
                    row[f"{method}@{level}"] = float(((D @ H) * D).sum()) / base
            logging.info("block %d %s: %s", index, name, json.dumps(row))

    _first_blocks(model, calibration, args.method_errors, measure)
    keys = [f"{m}@{lvl}" for lvl in args.levels for m in methods]
    mean = {k: sum(r[k] for r in layers.values()) / len(layers) for k in keys}
    result = {"blocks": args.method_errors, "levels": args.levels,
              "calibration_windows": int(calibration.shape[0]),
              "metric": "||XW - XW_hat||^2 / ||XW||^2 per Linear, dense inputs",
              "mean_relative_error": mean, "seconds": seconds, "layers": layers}
    logging.info("%s", json.dumps(mean))
    out.with_name(out.stem + "_method_errors.json").write_text(json.dumps(result, indent=2))
    return 0


def merge(paths: list[str], out: Path) -> int:
    """Combine result files of this script (same setup) into ``out``.

    Rows keep the order of their first appearance. Rows of one name with per-order runs
    are pooled (a later file's run of the same order replaces the earlier one) and their
    mean, min and max recomputed; other rows named again replace the earlier row (a
    re-measurement). The first file's setup is kept.
    """
    import types

    setup, rows = None, {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        setup = setup or data["setup"]
        for r in data["results"]:
            old = rows.get(r["name"])
            if old is not None and "runs" in old and "runs" in r:
                runs = {run["order"]: run for run in old["runs"] + r["runs"]}
                ctx = types.SimpleNamespace(executor=r.get("executor"), workers=r.get("workers"))
                r = summarise(r["name"], [runs[k] for k in sorted(runs)], ctx)
            rows[r["name"]] = r
    results = list(rows.values())
    out.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    plot(results, out.with_suffix(".png"))
    return 0


def reload_check(folder: Path, out: Path) -> int:
    """The issue's check that a saved folder is the reported model (see the docstring)."""
    import torch
    import transformers

    from pruning.llm.perplexity import perplexity, token_windows
    from pruning.llm.text import wiki_text

    try:
        report = json.loads((folder / "report.json").read_text())
        protocol = report["protocol"]
        report["perplexity"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"llm.py: --reload-check {folder}: no readable report.json of a "
                         f"`qcbo prune --task lm --out` run ({type(exc).__name__}: {exc}); "
                         "pass the folder that run wrote") from None
    t = time.perf_counter()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder),
                                                                  dtype=torch.float32).eval()
        tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"llm.py: --reload-check {folder}: transformers cannot load it "
                         f"({str(exc).splitlines()[0]}); pass a complete `--out` folder") from None
    evaluation = token_windows(tok, wiki_text("evaluation"), protocol["window"],
                               protocol["n_windows"])
    ppl = perplexity(model, evaluation)
    linears = [m.weight for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in n]
    kept = sum(int((w != 0).sum()) for w in linears)
    total = sum(w.numel() for w in linears)
    row = {"folder": str(folder), "model": report.get("model"), "method": report.get("method"),
           "reported_perplexity": report["perplexity"], "reloaded_perplexity": ppl,
           "difference": ppl - report["perplexity"],
           "reported_density": report.get("total_density"), "reloaded_density": kept / total,
           "check_s": time.perf_counter() - t}
    print(json.dumps(row, indent=2))
    out.write_text(json.dumps(row, indent=2))
    return 0 if abs(row["difference"]) <= 0.01 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--calibration-windows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64, help="iCBS blocks per Linear")
    parser.add_argument("--row-rounds", type=int, default=0, metavar="R",
                        help="iCBS: every row of every Linear gets R blocks per epoch, in "
                             "groups of one block per row (replaces --steps; default 0: the "
                             "--steps schedule)")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orders", type=int, default=3,
                        help="runs per method, each with another calibration-window order "
                             "(order 0: text order); rows report mean, min and max (default 3)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "llm.json"))
    parser.add_argument("--executor", choices=("serial", "processes", "ray"), default="serial",
                        help="how iCBS solves a Linear's blocks (answers do not depend on it)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--target-ridge", type=float, default=1.0,
                        help="for +dense runs: ridge toward the dense weights, relative to "
                             "mean(diag H) (LMPruneConfig.target_ridge)")
    parser.add_argument("--skip-dense", action="store_true",
                        help="do not measure the dense model (another run did)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only merge result files into --out and plot (a later "
                             "file's row of a run replaces an earlier one)")
    parser.add_argument("--layer-errors", type=int, default=0, metavar="BLOCKS",
                        help="instead: summed reconstruction error ‖(W − Ŵ)X‖² of every method "
                             "on the Linears of the first BLOCKS decoder blocks (dense inputs)")
    parser.add_argument("--density", type=float, default=0.5, help="for --layer-errors")
    parser.add_argument("--method-errors", type=int, default=0, metavar="BLOCKS",
                        help="instead: relative layer error of Wanda, SparseGPT and ALPS on "
                             "the Linears of the first BLOCKS decoder blocks (ALPS Table 7)")
    parser.add_argument("--levels", nargs="+", default=["0.3", "0.5", "2:4"],
                        help="densities or n:m patterns for --method-errors")
    parser.add_argument("--first-order", type=int, default=0, metavar="K",
                        help="run window orders K .. K+orders-1 (to split one row's runs over "
                             "processes; combine their rows' runs afterwards)")
    parser.add_argument("--reload-check", type=Path, default=None, metavar="FOLDER",
                        help="instead: reload a `qcbo prune --task lm --out FOLDER` folder with "
                             "transformers alone and compare its perplexity with the report's "
                             "(exit 1 when they differ by more than 0.01)")
    args = parser.parse_args()
    if args.reload_check is not None:
        return reload_check(args.reload_check, Path(args.out))
    if args.orders < 1 or args.first_order < 0:
        parser.error("--orders must be >= 1 and --first-order >= 0")
    if args.merge:
        return merge(args.merge, Path(args.out))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from pruning.llm.layerwise import PeakMemory
    from pruning.llm.load import load_model
    from pruning.llm.perplexity import perplexity, token_windows
    from pruning.llm.prune import layer_densities, prune_lm
    from pruning.llm.text import wiki_text

    out = Path(args.out)
    model, tok = load_model("builtin:smollm2-135m")
    calibration = token_windows(tok, wiki_text("calibration"), 512, args.calibration_windows)
    evaluation = token_windows(tok, wiki_text("evaluation"), 512, args.eval_windows)
    if args.layer_errors:
        return layer_errors(model, calibration, args, out)
    if args.method_errors:
        return method_errors(model, calibration, args, out)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    setup = {"model": "builtin:smollm2-135m", "eval_windows": int(evaluation.shape[0]),
             "window": 512, "bos": True, "calibration_windows": int(calibration.shape[0]),
             "icbs_steps_per_layer": args.steps, "row_rounds": args.row_rounds,
             "block_size": args.block_size, "target_ridge": args.target_ridge,
             "backend": "sa", "backend_options": {"sweeps": 200, "restarts": 4},
             "torch_threads": torch.get_num_threads()}
    setup["executor"], setup["workers"] = args.executor, args.workers
    setup["orders"] = args.orders
    executor = None
    if args.executor != "serial":
        from backends.executor import make_executor

        executor = make_executor(args.executor, workers=args.workers)
    results: list[dict] = []
    if not args.skip_dense:
        t = time.perf_counter()
        with PeakMemory() as mem:
            dense = perplexity(model, evaluation)
        results.append({"name": "dense", "perplexity": dense, "wall_s": time.perf_counter() - t,
                        "peak_rss_gib": mem.peak_bytes / 2**30})
        logging.info("dense perplexity %.3f", dense)
    for name in args.runs:
        config = config_for(name, args.steps, args.block_size, args.seed, args.row_rounds,
                            args.target_ridge)
        runs = []
        for order in range(args.first_order, args.first_order + args.orders):
            model.load_state_dict(dense_state)
            release_memory()
            windows = calibration[window_order(calibration.shape[0], order)]
            t = time.perf_counter()
            with PeakMemory() as mem:
                report = prune_lm(model, windows, config, executor=executor)
                prune_s = time.perf_counter() - t
                ppl = perplexity(model, evaluation)
            dens = layer_densities(model)
            run = {"order": order, "perplexity": ppl, "wall_s": time.perf_counter() - t,
                   "prune_s": prune_s, "peak_rss_gib": mem.peak_bytes / 2**30,
                   "mean_layer_density": sum(dens.values()) / len(dens),
                   "blocks": report.get("blocks")}
            if "fisher" in report:
                run["fisher"] = report["fisher"]
            layers = list(report.get("layers", {}).values())
            if layers and "admm_iterations" in layers[0]:
                run["alps_admm_iterations_mean"] = (sum(v["admm_iterations"] for v in layers)
                                                    / len(layers))
            if layers and "error_init" in layers[0]:
                run["reconstruction_error_init"] = sum(v["error_init"]
                                                       for v in report["layers"].values())
                run["reconstruction_error_final"] = sum(v["error_final"]
                                                        for v in report["layers"].values())
            runs.append(run)
            logging.info("%s order %d: %s", name, order, json.dumps(run))
            row = summarise(name, runs, args)
            results = [r for r in results if r["name"] != name] + [row]
            out.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
            plot(results, out.with_suffix(".png"))
    out.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    plot(results, out.with_suffix(".png"))
    if executor is not None:
        executor.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
