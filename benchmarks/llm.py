"""Benchmark: LM pruning of SmolLM2-135M on the held-out Wikipedia part.

    nice -n 10 python benchmarks/llm.py [--runs NAME ...] [--eval-windows 16]
        [--calibration-windows 16] [--steps 64]

Loads the model once, computes the dense perplexity, then for every run restores the
dense weights, prunes (layer by layer, calibration windows from the calibration part)
and measures perplexity (protocol of pruning.llm.perplexity), wall time and peak RSS of
the process during the run. Results are written after every run to
benchmarks/results/llm.json and plotted to benchmarks/results/llm.png.
Run names: METHOD@DENSITY, with DENSITY a number or 2:4; iCBS variants are
icbs-rec, icbs-rec-refit, icbs-fisher (initial mask: Wanda), and the same with the
suffix -sg (initial mask and weights: SparseGPT's).
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


def config_for(name: str, steps: int, block: int, seed: int):
    from pruning.llm.baselines import parse_pattern
    from pruning.llm.icbs import LMICBSConfig
    from pruning.llm.prune import LMPruneConfig

    method, level = name.split("@")
    pattern = parse_pattern(level) if ":" in level else None
    density = 0.5 if pattern else float(level)
    options = {"sweeps": 200, "restarts": 4}
    if method.startswith("icbs"):
        init = "sparsegpt" if method.endswith("-sg") else "wanda"
        method = method.removesuffix("-sg")
        icbs = LMICBSConfig(objective="fisher" if method == "icbs-fisher" else "reconstruction",
                            refit=method.endswith("refit"), backend="sa", init=init,
                            backend_options=options, block_size=block, steps_per_layer=steps,
                            seed=seed)
        return LMPruneConfig(method="icbs", density=density, pattern=pattern, icbs=icbs)
    return LMPruneConfig(method=method, density=density, pattern=pattern)


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
    ax.bar(range(len(rows)), [r["perplexity"] for r in rows])
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=60, ha="right",
                  fontsize=8)
    ax.set_yscale("log")
    if dense:
        ax.axhline(dense, color="k", ls="--", label=f"dense {dense:.2f}")
        ax.legend()
    ax.set_ylabel("perplexity (held-out Wikipedia)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def layer_errors(model, calibration, args, out: Path) -> int:
    """Per-Linear reconstruction errors of every method on the same (dense) inputs."""
    from pruning.engine import BlockSolver
    from pruning.llm.icbs import refine_rows, refit_rows, row_errors
    from pruning.llm.layerwise import run_layerwise
    from pruning.llm.prune import LMPruneConfig, _init_mask
    from pruning.llm.sparsegpt import damped_hessian

    cfg = LMPruneConfig(density=args.density)
    solver = BlockSolver("sa", {"sweeps": 200, "restarts": 4}, seed=args.seed)
    totals: dict[str, float] = {}

    class Done(Exception):
        pass

    def measure(index, linears, stats):
        if index >= args.layer_errors:
            raise Done
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

    try:
        run_layerwise(model, calibration, measure)
    except Done:
        pass
    result = {"density": args.density, "blocks": args.layer_errors, "steps": args.steps,
              "block_size": args.block_size, "error_sum": totals}
    logging.info("%s", json.dumps(result))
    out.with_name(out.stem + "_layer_errors.json").write_text(json.dumps(result, indent=2))
    return 0


def merge(paths: list[str], out: Path) -> int:
    """Combine result files of this script (same setup) into ``out``.

    Rows keep the order of their first appearance; a run named again in a later file
    replaces the earlier row (a re-measurement). The first file's setup is kept.
    """
    setup, rows = None, {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        setup = setup or data["setup"]
        for r in data["results"]:
            rows[r["name"]] = r
    results = list(rows.values())
    out.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    plot(results, out.with_suffix(".png"))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--calibration-windows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64, help="iCBS blocks per Linear")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "llm.json"))
    parser.add_argument("--executor", choices=("serial", "processes", "ray"), default="serial",
                        help="how iCBS solves a Linear's blocks (answers do not depend on it)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-dense", action="store_true",
                        help="do not measure the dense model (another run did)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only merge result files into --out and plot (a later "
                             "file's row of a run replaces an earlier one)")
    parser.add_argument("--layer-errors", type=int, default=0, metavar="BLOCKS",
                        help="instead: summed reconstruction error ‖(W − Ŵ)X‖² of every method "
                             "on the Linears of the first BLOCKS decoder blocks (dense inputs)")
    parser.add_argument("--density", type=float, default=0.5, help="for --layer-errors")
    args = parser.parse_args()
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
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    setup = {"model": "builtin:smollm2-135m", "eval_windows": int(evaluation.shape[0]),
             "window": 512, "bos": True, "calibration_windows": int(calibration.shape[0]),
             "icbs_steps_per_layer": args.steps, "block_size": args.block_size,
             "backend": "sa", "backend_options": {"sweeps": 200, "restarts": 4},
             "torch_threads": torch.get_num_threads()}
    setup["executor"], setup["workers"] = args.executor, args.workers
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
        model.load_state_dict(dense_state)
        release_memory()
        config = config_for(name, args.steps, args.block_size, args.seed)
        t = time.perf_counter()
        with PeakMemory() as mem:
            report = prune_lm(model, calibration, config, executor=executor)
            prune_s = time.perf_counter() - t
            ppl = perplexity(model, evaluation)
        dens = layer_densities(model)
        row = {"name": name, "executor": args.executor, "workers": args.workers,
               "perplexity": ppl, "wall_s": time.perf_counter() - t,
               "prune_s": prune_s, "peak_rss_gib": mem.peak_bytes / 2**30,
               "mean_layer_density": sum(dens.values()) / len(dens),
               "blocks": report.get("blocks")}
        if "fisher" in report:
            row["fisher"] = report["fisher"]
        if "layers" in report and report["layers"]:
            row["reconstruction_error_init"] = sum(v["error_init"] for v in report["layers"].values())
            row["reconstruction_error_final"] = sum(v["error_final"] for v in report["layers"].values())
        results.append(row)
        logging.info("%s", json.dumps(row))
        out.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
        plot(results, out.with_suffix(".png"))
    out.write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    plot(results, out.with_suffix(".png"))
    if executor is not None:
        executor.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
