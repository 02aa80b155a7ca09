"""CHITA's support against magnitude's mask and the mask-only baselines, per zoo model.

Where CHITA chooses its own mask, and how it compares with the mask-only baselines
(issue 14's "CHITA beats the best mask-only baseline at 0.3 ... if it does not, find out
why").

Per zoo model (replicates ``NAME.rK`` too) and density, with the calibration batches
`pruning.run.prune_classifier` gives its baselines:

- the dense model's calibration loss and the empirical Fisher's mean diagonal
  tr(F)/p (F = GᵀG/N over the first 512 calibration samples), beside CHITA's ridge;
- CHITA (library defaults) and its ``magnitude_overlap``: the fraction of its kept
  weights that magnitude's global mask also keeps (`pruning.chita`, "When the support
  stays magnitude's"), and its objective f over ``ridge_bound`` B, the lower bound on f
  over every support (f / B near 1: no other support can do much better);
- the five mask-only baselines; the best by test accuracy (issue 14's comparison, a
  choice made on the test set) and the one validation would choose (accuracy, ties to
  the lower loss);
- ``--variants``: CHITA with gradients of held-out samples ("val-grads": the first 512
  of the validation split) and with the logits divided by the temperature fitted on the
  validation split ("temperature", T in [e^-3, e^6]); "plus" adds CHITA++ (`PLUS_STAGES`
  stages), whose last stage's ``magnitude_overlap`` is against magnitude's mask of the
  re-fitted weights that stage starts from, and ``overlap_with_magnitude_global``
  against the dense model's (`ChitaResult.magnitude_overlap`).

Test accuracy, one seed (the calibration draw). Writes benchmarks/results/NAME.json and
NAME.png (overlap and CHITA's gain over magnitude-global against density).

    python benchmarks/chita_support.py --models digits-mlp-deep-sgd.r0 ... --densities 0.3 0.1 0.03
    python benchmarks/chita_support.py --report NAME     # tables and plot of results/NAME.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
MASKS = ("magnitude", "magnitude-row", "magnitude-global", "wanda", "gradient")
VARIANTS = ("val-grads", "temperature", "plus")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from pruning.zoo import zoo_spec

    def zoo_name(name: str) -> str:
        try:
            return zoo_spec(name).name
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def density(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(f"density must be in (0, 1), got {text}")
        return value

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", type=zoo_name,
                   help="zoo models or replicates (NAME.rK)")
    p.add_argument("--report", metavar="NAME",
                   help="no runs: print the tables and redraw the plot of results/NAME.json")
    p.add_argument("--densities", nargs="+", type=density, default=[0.3, 0.1, 0.03])
    p.add_argument("--variants", nargs="*", choices=VARIANTS, default=[],
                   help="CHITA variants to measure beside the default")
    p.add_argument("--seed", type=int, default=0, help="calibration draw (default 0)")
    p.add_argument("--name", default="chita_support", help="results/NAME.json and .png")
    args = p.parse_args(argv)
    if bool(args.models) == bool(args.report):
        p.error("give --models to measure, or --report NAME to redraw earlier results")
    return args


def _fisher_diagonal_mean(model, loss_fn, x, y) -> float:
    """tr(GᵀG/N)/p over the prunable weights: the mean squared per-sample gradient."""
    from pruning.baselines import prunable_weights

    weights = prunable_weights(model)
    total = 0.0
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[i:i + 1]), y[i:i + 1]).backward()
        total += sum(float((p.grad ** 2).sum()) for p in weights.values())
    model.zero_grad()
    return total / len(x) / sum(p.numel() for p in weights.values())


def _validation_temperature(model, x, y) -> float:
    import numpy as np
    import torch
    from scipy.optimize import minimize_scalar

    with torch.no_grad():
        z = model(x).double()
    ce = torch.nn.functional.cross_entropy
    fit = minimize_scalar(lambda t: float(ce(z / float(np.exp(t)), y)), bounds=(-3.0, 6.0),
                          method="bounded")
    return float(np.exp(fit.x))


def measure(name: str, densities: list[float], variants: list[str], seed: int
            ) -> list[dict[str, Any]]:
    import torch
    from torch import nn

    from pruning.baselines import one_shot
    from pruning.chita import PLUS_STAGES, ChitaConfig, chita_prune, first_samples
    from pruning.data import make_loader
    from pruning.icbs import ICBSConfig
    from pruning.run import EVAL_CHUNK, _metrics, calibration_data
    from pruning.zoo import load_zoo

    ce = nn.functional.cross_entropy
    loaded = load_zoo(name)
    data, model = loaded.data, loaded.model.eval()
    _, _, calibration = calibration_data(data, ICBSConfig(density=densities[0], seed=seed))
    loaders = {s: make_loader(*data.split(s), batch_size=EVAL_CHUNK, shuffle=False)
               for s in ("val", "test")}
    x, y = first_samples(calibration(), 512)
    with torch.no_grad():
        calib_loss = float(ce(model(x), y))
    fisher = _fisher_diagonal_mean(model, ce, x, y)
    x_val, y_val = data.split("val")
    temperature = _validation_temperature(model, x_val, y_val) if "temperature" in variants \
        else None
    dense = _metrics(model, loaders, ce)
    rows = []
    for density in densities:
        row: dict[str, Any] = {"model": name, "density": density, "seed": seed,
                               "calibration_loss": calib_loss,
                               "fisher_diagonal_mean": fisher, "chita_lam": ChitaConfig(density).lam,
                               "dense": dense, "masks": {}, "chita": {}}
        for method in MASKS:
            pruned = copy.deepcopy(model)
            one_shot(pruned, method, density, loss_fn=ce, batches=calibration())
            row["masks"][method] = _metrics(pruned, loaders, ce)
        runs = [("default", ce, calibration())]
        if "val-grads" in variants:
            runs.append(("val-grads", ce, [(x_val, y_val)]))
        if "temperature" in variants:
            runs.append(("temperature", lambda o, t, T=temperature: ce(o / T, t), calibration()))
        if "plus" in variants:
            runs.append(("plus", ce, calibration()))
        for label, loss_fn, batches in runs:
            pruned = copy.deepcopy(model)
            t0 = time.perf_counter()
            stages = PLUS_STAGES if label == "plus" else 1
            result = chita_prune(pruned, loss_fn, batches,
                                 ChitaConfig(density, seed=seed, stages=stages))
            last = result.stages[-1]
            row["chita"][label] = {**_metrics(pruned, loaders, ce),
                                   "magnitude_overlap": last["magnitude_overlap"],
                                   "overlap_with_magnitude_global": result.magnitude_overlap,
                                   "objective": result.objective,
                                   "magnitude_objective": last["magnitude_objective"],
                                   "ridge_bound": last["ridge_bound"],
                                   "time_s": time.perf_counter() - t0}
        if temperature is not None:
            row["validation_temperature"] = temperature
        by_val = max(MASKS, key=lambda m: (row["masks"][m]["val_accuracy"],
                                           -row["masks"][m]["val_loss"]))
        row["mask_by_validation"] = by_val
        row["best_mask_test"] = max(row["masks"][m]["test_accuracy"] for m in MASKS)
        rows.append(row)
        c = row["chita"]["default"]
        print(f"{name} d={density:g}: calibration loss {calib_loss:.4f}, tr(F)/p {fisher:.2e} "
              f"(ridge {row['chita_lam']:g}), overlap {c['magnitude_overlap']:.4f}; test % "
              f"dense {100 * dense['test_accuracy']:.2f}, best mask {100 * row['best_mask_test']:.2f}, "
              f"mask by val ({by_val}) {100 * row['masks'][by_val]['test_accuracy']:.2f}, "
              f"magnitude-global {100 * row['masks']['magnitude-global']['test_accuracy']:.2f}, "
              + ", ".join(f"chita {k} {100 * v['test_accuracy']:.2f} (overlap with dense "
                          f"magnitude-global {v['overlap_with_magnitude_global']:.3f})"
                          for k, v in row["chita"].items()), flush=True)
    return rows


def _compare(a: float, b: float) -> str:
    return "above" if a > b + 1e-12 else ("below" if a < b - 1e-12 else "level")


def report(rows: list[dict[str, Any]], name: str, meta: dict[str, Any] | None = None) -> None:
    """Tables per base model and density (replicates pooled), JSON and a plot; ``meta``
    (default: this run's) goes into the JSON."""
    import numpy as np

    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"].split(".r")[0], r["density"]), []).append(r)
    labels = [k for k in ("default", *VARIANTS) if any(k in r["chita"] for r in rows)]
    plus = int(any("plus" in r["chita"] for r in rows))
    print("\n| model | d | runs | tr(F)/p | overlap min | f / B | dense | best mask (test-chosen) "
          "| mask by val | magnitude-global | "
          + " | ".join(f"CHITA {k}" for k in labels)
          + " | CHITA vs best mask (above/level/below) | CHITA vs mask by val "
          + ("| CHITA++ kept weights in dense magnitude-global's mask |" if plus else "|"))
    print("|" + "---|" * (12 + len(labels) + plus))
    summary = []
    for (base, d), sel in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        mean = lambda f: 100 * float(np.mean([f(r) for r in sel]))  # noqa: E731

        def counts(key) -> str:
            c = [_compare(r["chita"]["default"]["test_accuracy"], key(r)) for r in sel]
            return f"{c.count('above')}/{c.count('level')}/{c.count('below')}"

        entry = {"model": base, "density": d, "runs": len(sel),
                 "fisher_diagonal_mean": float(np.mean([r["fisher_diagonal_mean"] for r in sel])),
                 "overlap_min": min(r["chita"]["default"]["magnitude_overlap"] for r in sel),
                 "overlap_mean": float(np.mean([r["chita"]["default"]["magnitude_overlap"]
                                                for r in sel])),
                 "objective_over_bound": float(np.mean(
                     [r["chita"]["default"]["objective"] / r["chita"]["default"]["ridge_bound"]
                      for r in sel])),
                 "dense": mean(lambda r: r["dense"]["test_accuracy"]),
                 "best_mask": mean(lambda r: r["best_mask_test"]),
                 "mask_by_validation": mean(lambda r: r["masks"][r["mask_by_validation"]]
                                            ["test_accuracy"]),
                 "magnitude_global": mean(lambda r: r["masks"]["magnitude-global"]
                                          ["test_accuracy"]),
                 "chita": {k: mean(lambda r, k=k: r["chita"][k]["test_accuracy"])
                           for k in labels if all(k in r["chita"] for r in sel)},
                 "vs_best_mask": counts(lambda r: r["best_mask_test"]),
                 "vs_mask_by_validation": counts(
                     lambda r: r["masks"][r["mask_by_validation"]]["test_accuracy"])}
        if plus:
            entry["plus_overlap_with_magnitude_global"] = float(np.mean(
                [r["chita"]["plus"]["overlap_with_magnitude_global"] for r in sel]))
        summary.append(entry)
        print(f"| {base} | {d:g} | {len(sel)} | {entry['fisher_diagonal_mean']:.1e} "
              f"| {entry['overlap_min']:.4f} | {entry['objective_over_bound']:.2f} "
              f"| {entry['dense']:.2f} | {entry['best_mask']:.2f} "
              f"| {entry['mask_by_validation']:.2f} | {entry['magnitude_global']:.2f} | "
              + " | ".join(f"{entry['chita'][k]:.2f}" if k in entry["chita"] else "—"
                           for k in labels)
              + f" | {entry['vs_best_mask']} | {entry['vs_mask_by_validation']} |"
              + (f" {entry['plus_overlap_with_magnitude_global']:.3f} |" if plus else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    meta = meta or {"python": platform.python_version(), "machine": platform.machine(),
                    "command": " ".join(sys.argv)}
    tmp.write_text(json.dumps({"meta": meta,
                               "summary": summary, "runs": rows}, indent=1))
    tmp.replace(out)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"wrote {out} (no matplotlib: no plot)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, base in enumerate(sorted({s["model"] for s in summary})):
        sel = sorted((s for s in summary if s["model"] == base), key=lambda s: s["density"])
        ds = [s["density"] for s in sel]
        axes[0].plot(ds, [s["overlap_mean"] for s in sel], "o-", color=f"C{i}", label=base)
        axes[1].plot(ds, [s["chita"]["default"] - s["magnitude_global"] for s in sel], "o-",
                     color=f"C{i}", label=base)
        if plus:
            axes[0].plot(ds, [s["plus_overlap_with_magnitude_global"] for s in sel], "s--",
                         color=f"C{i}", ms=3, label=f"{base}, CHITA++")
            axes[1].plot(ds, [s["chita"]["plus"] - s["magnitude_global"] for s in sel], "s--",
                         color=f"C{i}", ms=3)
    densities = sorted({s["density"] for s in summary})
    for ax, title in ((axes[0], "share of kept weights in the dense magnitude-global mask"),
                      (axes[1], "test accuracy minus magnitude-global's (points)")):
        ax.set_xscale("log")
        ax.set_xticks(densities, [f"{d:g}" for d in densities])
        ax.minorticks_off()
        ax.set_xlabel("density")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="CHITA (solid), CHITA++ (dashed); means",
                   title_fontsize=7)
    fig.tight_layout()
    png = RESULTS / f"{name}.png"
    fig.savefig(png, dpi=120)
    print(f"wrote {out} and {png}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        path = RESULTS / f"{args.report}.json"
        try:
            data = json.loads(path.read_text())
            rows, meta = data["runs"], data["meta"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"chita_support: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        report(rows, args.report, meta)
        return 0
    import torch

    torch.set_num_threads(int(os.environ.get("QCBO_TORCH_THREADS", "1")))
    rows = []
    for i, model in enumerate(args.models, 1):
        print(f"[{i}/{len(args.models)}] {model}", flush=True)
        rows += measure(model, args.densities, args.variants, args.seed)
    report(rows, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
