"""Benchmark: do the iCBS block steps earn their gain? Layer errors of SmolLM2-135M.

    nice -n 10 python benchmarks/llm_blocks.py [--blocks 2] [--density 0.5] [--rounds 4]
        [--block-size 32] [--workers 2] [--eval-windows 16]

For every Linear of the first BLOCKS decoder blocks (layer by layer, calibration windows
from the calibration part, inputs through the blocks already pruned with the re-fit-aware
variant), from the Wanda mask at DENSITY, the summed layer error Σ_r (ŵ_r − w_r)ᵀ H (ŵ_r − w_r)
(H = damped XᵀX / N) after:
  start            the Wanda mask, dense values;
  refit            the Wanda mask, surviving weights re-fitted (least squares);
  blocks           ROUNDS block steps per row, no re-fit (exact block model);
  blocks_after     ROUNDS block steps per row on the fixed-weight model, each row re-fitted
                   after every group;
  blocks_refit     ROUNDS block steps per row on the re-fit-aware bound (RowRefit), rows
                   re-fitted after every group.
Blocks are solved by SA through a process executor (WORKERS). Then the held-out Wikipedia
perplexity of the model with only those BLOCKS decoder blocks pruned, per variant.
Writes benchmarks/results/llm_blocks.json (after every Linear) and llm_blocks.png.

    nice -n 10 python benchmarks/llm_blocks.py --full [--rounds 1] [--density 0.5]

instead prunes the whole model with `pruning.llm.prune.prune_lm` (iCBS, reconstruction
objective with the re-fit-aware blocks, or with --no-refit the exact blocks at dense
values, every row visited ROUNDS times, Wanda start) and writes its perplexity, time and
summed layer errors to llm_blocks_full.json; --fisher [--trust T] [--blocks-per-pass B]
runs the Fisher objective instead (64 blocks of BLOCK_SIZE per Linear, held-out check;
--fisher-groups: a gradient pass and check per attention / MLP group; --blend B: K-FAC
curvature weight).
torch runs on one thread: on shared cores its second thread spins and slows every
small factorisation down many times over.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("llm_blocks")

VARIANTS = ("start", "refit", "blocks", "blocks_after", "blocks_refit")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    names = list(layers)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(VARIANTS)
    for j, variant in enumerate(VARIANTS):
        rel = [layers[n][variant] / layers[n]["start"] for n in names if variant in layers[n]]
        ax.bar([i + j * width for i in range(len(rel))], rel, width, label=variant)
    ax.set_xticks([i + 0.4 for i in range(len(names))], names, rotation=60, ha="right",
                  fontsize=7)
    ax.set_ylabel("layer error / Wanda start")
    ax.set_ylim(0, 1.25)
    ax.legend(fontsize=8, ncol=len(VARIANTS), loc="upper center")
    totals = result["totals"]
    bx.bar(range(len(totals)), [totals[v] / totals["start"] for v in totals])
    bx.set_xticks(range(len(totals)), list(totals), rotation=60, ha="right", fontsize=8)
    bx.set_title(f"sum over {len(names)} Linears", fontsize=9)
    fig.suptitle(f"SmolLM2-135M, density {result['setup']['density']}, "
                 f"{result['setup']['rounds']} blocks of {result['setup']['block_size']} per row")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def full_run(args: argparse.Namespace) -> int:
    """The whole model through `prune_lm`: perplexity, time, summed layer errors."""
    import torch

    torch.set_num_threads(1)
    from backends.executor import make_executor
    from pruning.llm.icbs import LMICBSConfig
    from pruning.llm.layerwise import PeakMemory
    from pruning.llm.load import load_model
    from pruning.llm.perplexity import perplexity, token_windows
    from pruning.llm.prune import LMPruneConfig, prune_lm
    from pruning.llm.text import wiki_text

    model, tok = load_model("builtin:smollm2-135m")
    calibration = token_windows(tok, wiki_text("calibration"), 512, args.calibration_windows)
    evaluation = token_windows(tok, wiki_text("evaluation"), 512, args.eval_windows)
    options = {"sweeps": 100, "restarts": 2}
    if args.fisher:
        options = {"sweeps": 200, "restarts": 4}
        icbs = LMICBSConfig(objective="fisher", backend="sa", backend_options=options,
                            block_size=args.block_size, steps_per_layer=64, seed=args.seed,
                            blocks_per_pass=args.blocks_per_pass, trust=args.trust,
                            fisher_groups=args.fisher_groups, blend=args.blend)
    else:
        icbs = LMICBSConfig(refit=not args.no_refit, row_rounds=args.rounds,
                            block_size=args.block_size, backend="sa", backend_options=options,
                            seed=args.seed)
    config = LMPruneConfig(method="icbs", density=args.density, icbs=icbs)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with make_executor("processes", workers=args.workers) as executor, PeakMemory() as mem:
        t = time.perf_counter()
        report = prune_lm(model, calibration, config, executor=executor)
        prune_s = time.perf_counter() - t
        ppl = perplexity(model, evaluation)
    result = {"setup": {"model": "builtin:smollm2-135m", "density": args.density,
                        "start": "wanda", "objective": icbs.objective, "refit": icbs.refit,
                        "rounds": icbs.row_rounds, "trust": icbs.trust,
                        "blocks_per_pass": icbs.blocks_per_pass,
                        "fisher_groups": icbs.fisher_groups, "blend": icbs.blend,
                        "block_size": args.block_size,
                        "backend": "sa", "backend_options": options, "executor": "processes",
                        "workers": args.workers, "torch_threads": 1,
                        "calibration_windows": int(calibration.shape[0]),
                        "eval_windows": int(evaluation.shape[0]), "window": 512},
              "started": started, "perplexity": ppl, "prune_s": prune_s,
              "peak_rss_gib": mem.peak_bytes / 2**30, "blocks": report.get("blocks"),
              "reconstruction_errors": report.get("reconstruction_errors"),
              "fisher": report.get("fisher"),
              "layers": report.get("layers")}
    log.info("perplexity %.3f prune %.0f s errors %s", ppl, prune_s,
                 json.dumps(result["reconstruction_errors"]))
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2, help="decoder blocks to prune")
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=4, help="blocks per row")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calibration-windows", type=int, default=16)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-after", action="store_true", help="skip blocks_after")
    parser.add_argument("--full", action="store_true", help="prune the whole model (prune_lm)")
    parser.add_argument("--no-refit", action="store_true",
                        help="with --full: block steps without re-fit (dense values kept)")
    parser.add_argument("--fisher", action="store_true",
                        help="with --full: the Fisher objective (64 blocks per Linear)")
    parser.add_argument("--trust", type=float, default=0.0, help="with --fisher: cost per flip")
    parser.add_argument("--blocks-per-pass", type=int, default=10,
                        help="with --fisher: decoder blocks per gradient pass")
    parser.add_argument("--fisher-groups", action="store_true",
                        help="with --fisher: a gradient pass per group of Linears "
                             "(attention, MLP) of each decoder block")
    parser.add_argument("--blend", type=float, default=0.0,
                        help="with --fisher: weight of the K-FAC curvature in each block")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.out is None:
        name = "llm_blocks_full.json" if args.full else "llm_blocks.json"
        args.out = str(Path(__file__).parent / "results" / name)
    if args.full:
        return full_run(args)

    import torch

    torch.set_num_threads(1)
    from backends.executor import make_executor
    from pruning.engine import BlockSolver
    from pruning.llm import baselines
    from pruning.llm.icbs import (
        LMICBSConfig,
        reconstruct_layer,
        refine_rows,
        refit_rows,
        row_errors,
    )
    from pruning.llm.layerwise import decoder_layers, run_layerwise
    from pruning.llm.load import load_model
    from pruning.llm.perplexity import perplexity, token_windows
    from pruning.llm.sparsegpt import damped_hessian
    from pruning.llm.text import wiki_text

    out = Path(args.out)
    model, tok = load_model("builtin:smollm2-135m")
    calibration = token_windows(tok, wiki_text("calibration"), 512, args.calibration_windows)
    evaluation = token_windows(tok, wiki_text("evaluation"), 512, args.eval_windows)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    options = {"sweeps": 100, "restarts": 2}
    setup = {"model": "builtin:smollm2-135m", "density": args.density, "start": "wanda",
             "decoder_blocks": args.blocks, "rounds": args.rounds, "block_size": args.block_size,
             "backend": "sa", "backend_options": options, "executor": "processes",
             "workers": args.workers, "calibration_windows": int(calibration.shape[0]),
             "eval_windows": int(evaluation.shape[0]), "window": 512, "seed": args.seed,
             "torch_threads": 1}
    result: dict = {"setup": setup, "layers": {}, "totals": {}}
    weights: dict[str, dict[str, torch.Tensor]] = {v: {} for v in VARIANTS}
    cfg = LMICBSConfig(refit=True, row_rounds=args.rounds, block_size=args.block_size,
                       seed=args.seed)

    class Done(Exception):
        pass

    executor = make_executor("processes", workers=args.workers)
    solver = BlockSolver("sa", options, seed=args.seed, executor=executor)
    started = time.perf_counter()

    def prune_block(index: int, linears: dict, stats: dict) -> None:
        if index >= args.blocks:
            raise Done
        for name, lin in linears.items():
            full = f"{index}.{name}"
            t = time.perf_counter()
            W0 = lin.weight.detach().to(torch.float64).clone()
            H, _ = damped_hessian(stats[name].hessian)
            keep = baselines.wanda_mask(W0, stats[name].column_norms, args.density)
            W, _, errors = reconstruct_layer(W0, W0 * keep, keep, H, solver, cfg, name=full)
            row = {"start": errors.start, "refit": errors.refit,
                   "blocks_refit": errors.blocks_refit, "blocks_solved": errors.blocks_solved,
                   "blocks_applied": errors.blocks_applied, "time_refit_s": time.perf_counter() - t}
            weights["start"][full] = (W0 * keep).float()
            weights["refit"][full] = refit_rows(W0, keep, H).float()
            weights["blocks_refit"][full] = W.float()
            Wb, _ = refine_rows(W0, W0 * keep, keep, H, solver, block_size=args.block_size,
                                rounds=args.rounds, refit="none", name=full)
            row["blocks"] = float(row_errors(W0, Wb, H).sum())
            weights["blocks"][full] = Wb.float()
            if not args.no_after:
                Wa, _ = refine_rows(W0, W0 * keep, keep, H, solver, block_size=args.block_size,
                                    rounds=args.rounds, refit="after", name=full)
                row["blocks_after"] = float(row_errors(W0, Wa, H).sum())
                weights["blocks_after"][full] = Wa.float()
            row["time_s"] = time.perf_counter() - t
            result["layers"][full] = row
            result["totals"] = {v: sum(r[v] for r in result["layers"].values())
                                for v in VARIANTS if all(v in r for r in result["layers"].values())}
            log.info("%s %s", full, json.dumps(row))
            out.write_text(json.dumps(result, indent=2))
            with torch.no_grad():
                lin.weight.copy_(W.to(lin.weight.dtype))

    load_start = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        run_layerwise(model, calibration, prune_block)
    except Done:
        pass
    executor.close()
    result["prune_s"] = time.perf_counter() - started
    totals = result["totals"]
    result["reduction"] = {
        "blocks_vs_start": 1 - totals["blocks"] / totals["start"],
        "blocks_refit_vs_refit": 1 - totals["blocks_refit"] / totals["refit"]}
    if "blocks_after" in totals:
        result["reduction"]["blocks_after_vs_refit"] = 1 - totals["blocks_after"] / totals["refit"]
    log.info("totals %s reduction %s", json.dumps(totals), json.dumps(result["reduction"]))
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))

    ppl = {}
    if args.eval_windows:
        model.load_state_dict(dense_state)
        ppl["dense"] = perplexity(model, evaluation)
        blocks = decoder_layers(model)
        for variant, ws in weights.items():
            if not ws:
                continue
            model.load_state_dict(dense_state)
            with torch.no_grad():
                for full, W in ws.items():
                    index, name = full.split(".", 1)
                    blocks[int(index)].get_submodule(name).weight.copy_(W)
            ppl[variant] = perplexity(model, evaluation)
            log.info("perplexity %s %.3f", variant, ppl[variant])
        result["perplexity"] = ppl
    result["started"] = load_start
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
