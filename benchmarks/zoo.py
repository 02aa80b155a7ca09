"""iCBS on the model zoo (`pruning.zoo`): dense, every one-shot baseline, CHITA and iCBS
with the library defaults, per model and density; the worst case decides the defaults.

Each run is one `pruning.run.prune_classifier` call with ``epochs`` epochs (default 8);
test accuracy is recorded after every epoch, so the 4-epoch figure is read off the same
run (its first 4 epochs are exactly a 4-epoch run: same seeds, same steps). Recovered
fraction R = (iCBS - best one-shot) / (dense - best one-shot), test accuracy, with the
best one-shot taken over the mask-only baselines (magnitude, magnitude-row,
magnitude-global, Wanda, gradient). Writes benchmarks/results/NAME.json and NAME.png,
and where a model has several densities NAME_methods.png: one panel per model, test
accuracy against density for every method (masks, CHITA, CHITA++, iCBS per start).

    nice -n 10 python benchmarks/zoo.py                                  # every model, 0.1 and 0.3
    nice -n 10 python benchmarks/zoo.py --models digits-mlp --densities 0.1 0.2 0.3 0.5
    python benchmarks/zoo.py --models fmnist-vit --densities 0.1 --seeds 0 1 2 --starts-only

``--paired``: also compare iCBS's result with CHITA++ image by image on the test split
(McNemar's exact test, `pruning.selection.paired_accuracy_test`; CHITA++ is pruned again
from the run's own batches and checked against its recorded accuracy and test loss).

``--models NAME.r1 NAME.r2 ...``: replicates of a zoo model (`pruning.zoo`), each its own
dense model trained on its own split; `--report` then also pools them per model
(independent test splits on the digits, where 10 seeds share one 300-image test set).

``--starts-only``: no iCBS; every candidate of the automatic start scored on the
calibration set as `pruning.icbs.choose_start` scores it (plain and temperature-scaled
loss, accuracy, temperature), written to results/NAME.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable

# One thread per run for every numeric library, not only torch: lanes run side by side
# (set before numpy or torch is imported; QCBO_TORCH_THREADS overrides).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("QCBO_TORCH_THREADS", "1"))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
MASK_BASELINES = ("magnitude", "magnitude-row", "magnitude-global", "wanda", "gradient")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from pruning.zoo import ZOO

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    def zoo_name(name: str) -> str:
        from pruning.zoo import zoo_spec

        try:
            return zoo_spec(name).name
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--models", nargs="+", default=list(ZOO), type=zoo_name,
                   help="zoo models, or replicates NAME.rK (NAME's recipe on split K of its "
                        "data, training seed + 1000 K; default: every zoo model)")
    p.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="default: the library default (ICBSConfig)")
    p.add_argument("--steps", action="append", default=[], metavar="MODEL=N",
                   help="steps per epoch for one model and its replicates (e.g. fmnist-cnn=25)")
    p.add_argument("--no-chita", action="store_true", help="skip the CHITA and CHITA++ baselines")
    p.add_argument("--inits", nargs="+", default=["auto"], metavar="INIT",
                   help="iCBS starts, one run each (auto, a one-shot mask name or chita)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an ICBSConfig field for every run (value read as JSON), e.g. "
                        "--set loss_check=false --set shrink_steps=0")
    p.add_argument("--starts-only", action="store_true",
                   help="only score the automatic start's candidates (plain and tempered loss)")
    p.add_argument("--calibration", choices=["train", "val"], default="train",
                   help="where iCBS's calibration set comes from: held apart from the "
                        "training split (default) or drawn from the validation split")
    p.add_argument("--paired", action="store_true",
                   help="also compare iCBS with CHITA++ image by image on the test split "
                        "(McNemar's exact test; CHITA++ is pruned again on a copy of the "
                        "dense model, checked against its recorded accuracy and test loss)")
    p.add_argument("--name", default="zoo")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report", nargs="+", metavar="NAME", default=None,
                   help="run nothing: merge results/NAME.json files (e.g. two lanes run side "
                        "by side), print the per-run and per-seed tables, write --name's "
                        "JSON and plot")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return _report(args.report, args.name)
    if args.starts_only:
        return _starts(args)
    import torch

    from pruning.icbs import ICBSConfig
    from pruning.run import prune_classifier
    from pruning.zoo import HELD_OUT, load_zoo

    torch.set_num_threads(int(os.environ.get("QCBO_TORCH_THREADS", "1")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    previous = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    rows: list[dict] = list(previous.get("runs", []))
    done = {(r["model"], r["density"], r["seed"], r.get("init", "auto")) for r in rows}
    per_model = dict(s.split("=", 1) for s in args.steps)
    meta = {"settings": args.set, "command": " ".join(["benchmarks/zoo.py"] + (argv if argv is not None else sys.argv[1:])),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_avg_1m_start": os.getloadavg()[0], "held_out": list(HELD_OUT)}
    baselines = MASK_BASELINES + (() if args.no_chita else ("chita", "chita++"))
    runs = [(m, d, s, i) for m in args.models for d in args.densities for s in args.seeds
            for i in args.inits]
    for model, density, seed, init in runs:
                if (model, density, seed, init) in done:
                    continue
                loaded = load_zoo(model)
                kwargs = {}
                steps = per_model.get(model, per_model.get(_base(model), args.steps_per_epoch))
                if steps is not None:
                    kwargs["steps_per_epoch"] = int(steps)
                for item in args.set:
                    key, _, value = item.partition("=")
                    try:
                        kwargs[key] = json.loads(value)
                    except json.JSONDecodeError:
                        kwargs[key] = value
                config = ICBSConfig(density=density, epochs=args.epochs, seed=seed, init=init,
                                    **kwargs)
                dense_model = copy.deepcopy(loaded.model) if args.paired else None
                r = prune_classifier(loaded, method="icbs", config=config, baselines=baselines,
                                     calibration_split=args.calibration)
                dense = r["dense"]["test_accuracy"]
                one_shot = {k: r["baselines"][k]["test_accuracy"] for k in MASK_BASELINES}
                best = max(one_shot.values())
                by_epoch = {e["epoch"]: e for e in r["epochs"]}

                def recovered(acc: float) -> float:
                    return (acc - best) / (dense - best) if dense > best else float("nan")

                row = {"model": model, "density": density, "seed": seed, "init": init, "dense": dense,
                       "one_shot": one_shot, "best_one_shot": best,
                       "chita": r["baselines"].get("chita", {}).get("test_accuracy"),
                       "chita_time_s": r["baselines"].get("chita", {}).get("wall_time_s"),
                       "chita++": r["baselines"].get("chita++", {}).get("test_accuracy"),
                       "chita++_time_s": r["baselines"].get("chita++", {}).get("wall_time_s"),
                       "settings": args.set, "calibration": args.calibration, "start": r["initial"]["method"], "start_candidates": r["initial"]["candidates"],
                       "steps_per_epoch": config.steps_per_epoch,
                       "epochs": [{k: e.get(k) for k in ("epoch", "test_accuracy", "test_loss", "val_accuracy", "val_loss",
                                                         "calibration_loss", "blocks_applied",
                                                         "blocks_reverted", "elapsed_s", "refit",
                                                         "best_epoch", "best_state")}
                                  for e in r["epochs"]],
                       "start_refit": r["initial"].get("refit"),
                       "final_epoch": r["final_epoch"], "final_state": r["best_state"],
                       "selection": r["selection"], "select_z": config.select_z,
                       "icbs": r["final"]["test_accuracy"], "R": recovered(r["final"]["test_accuracy"]),
                       "icbs_test_loss": r["final"]["test_loss"],
                       "start_test_accuracy": r["initial"].get("test_accuracy"),
                       "chita++_test_loss": r["baselines"].get("chita++", {}).get("test_loss"),
                       "wall_time_s": r["wall_time_s"],
                       "predicted_vs_measured": [(g["predicted"], g["measured"])
                                                 for g in r["engine"]["groups"]
                                                 if g["measured"] is not None],
                       "load_avg_1m": os.getloadavg()[0]}
                if 4 in by_epoch:
                    # what a 4-epoch run would have returned: with keep_best, the state the
                    # selection held after epoch 4 (the run's trajectory is the same)
                    pick = by_epoch[4].get("best_epoch", 4) if config.keep_best else 4
                    start_state = (r["initial"] if by_epoch[4].get("best_state") == "start"
                                   else r["initial"].get("refit") or r["initial"])
                    by_epoch[0] = {"test_accuracy": start_state.get("test_accuracy")}
                    row["icbs_4"] = by_epoch[pick]["test_accuracy"]
                    row["epoch_4"] = pick
                    row["R_4"] = recovered(row["icbs_4"])
                    row["time_4_s"] = by_epoch[4]["elapsed_s"]
                if dense_model is not None:
                    row["paired"] = _paired(loaded, dense_model, config, row, args.calibration)
                rows.append(row)
                out.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
                print(f"{model} d={density} seed={seed} init={init}: dense {100 * dense:.2f}, best "
                      f"one-shot {100 * best:.2f}, chita {100 * (row['chita'] or 0):.2f}, chita++ "
                      f"{100 * (row['chita++'] or 0):.2f}, start {row['start']}, "
                      f"iCBS@4 {100 * row.get('icbs_4', float('nan')):.2f} (R {row.get('R_4', float('nan')):.2f}, "
                      f"{row.get('time_4_s', float('nan')):.0f} s), iCBS@{args.epochs} {100 * row['icbs']:.2f} "
                      f"(R {row['R']:.2f}, {row['wall_time_s']:.0f} s)", flush=True)
    _table(rows)
    if len(args.seeds) > 1:
        _seed_table(rows)
    _selection_table(rows)
    _paired_table(rows)
    _methods_table(rows)
    _plot(rows, RESULTS / f"{args.name}.png")
    print(f"wrote {out} and {RESULTS / (args.name + '.png')}")
    if _methods_plot(rows, RESULTS / f"{args.name}_methods.png"):
        print(f"wrote {RESULTS / (args.name + '_methods.png')} (every method against density)")
    return 0


def _test_outputs(model: Any, data: Any) -> tuple[Any, float]:
    """((N,) bool: which test samples ``model`` classifies right, mean test loss)."""
    import torch
    from torch import nn

    x, y = data.split("test")
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 1024]) for i in range(0, len(x), 1024)])
    return (logits.argmax(dim=-1) == y).numpy(), float(nn.functional.cross_entropy(logits, y))


def _paired(loaded: Any, dense_model: Any, config: Any, row: dict,
            calibration: str = "train") -> dict | None:
    """iCBS's returned model against CHITA++ on every test image (McNemar,
    `pruning.selection.paired_accuracy_test`, a = iCBS, b = CHITA++). CHITA++ is pruned
    again on ``dense_model`` from the batches `pruning.run.prune_classifier` gave it; None
    when either model's test accuracy or the replay's test loss differs from the
    recorded one (then the replay is not the run's CHITA++)."""
    import torch
    from torch import nn

    from pruning.baselines import prunable_weights
    from pruning.chita import PLUS_STAGES, ChitaConfig, chita_prune
    from pruning.run import calibration_data
    from pruning.selection import paired_accuracy_test

    if row.get("chita++") is None:
        return None
    score = calibration_data(loaded.data, config, calibration)[2]()
    weights = prunable_weights(dense_model, config.patterns)
    result = chita_prune(dense_model, nn.functional.cross_entropy, score,
                         ChitaConfig(density=config.density, seed=config.seed,
                                     stages=PLUS_STAGES), patterns=list(weights))
    with torch.no_grad():
        for n, p in weights.items():
            p.mul_(result.masks[n].to(p.dtype))
    ours, _ = _test_outputs(loaded.model, loaded.data)
    theirs, loss = _test_outputs(dense_model, loaded.data)
    recorded = row.get("chita++_test_loss")
    if (abs(ours.mean() - row["icbs"]) > 1e-9 or abs(theirs.mean() - row["chita++"]) > 1e-9
            or recorded is None or abs(loss - recorded) > 1e-5 * max(1.0, abs(recorded))):
        print(f"  paired test skipped: replayed accuracies {ours.mean():.4f} / "
              f"{theirs.mean():.4f} or CHITA++'s test loss {loss:.5f} differ from the "
              f"run's", flush=True)
        return None
    return paired_accuracy_test(ours, theirs)


def _paired_table(rows: list[dict]) -> None:
    """Per model and density, where rows carry ``paired``: iCBS against CHITA++ image by
    image, summed discordant pairs, and the runs where McNemar's p < 0.05 either way."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        if r.get("paired"):
            groups.setdefault((r["model"], r["density"]), []).append(r)
    if not groups:
        return
    print("\n| model | density | runs | iCBS − CHITA++ (points, mean) | images only iCBS / "
          "only CHITA++ gets right (all runs) | runs iCBS < CHITA++ | of them p < 0.05 "
          "| smallest p | runs iCBS > CHITA++ with p < 0.05 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, density), sel in groups.items():
        t = [r["paired"] for r in sel]
        worse = [x for x in t if x["difference"] < 0]
        print(f"| {model} | {density} | {len(t)} "
              f"| {100 * sum(x['difference'] for x in t) / len(t):+.2f} "
              f"| {sum(x['a_only'] for x in t)} / {sum(x['b_only'] for x in t)} "
              f"| {len(worse)} | {sum(1 for x in worse if x['p'] < 0.05)} "
              f"| {min(x['p'] for x in t):.3f} "
              f"| {sum(1 for x in t if x['difference'] > 0 and x['p'] < 0.05)} |")


def _base(model: str) -> str:
    """The zoo model a replicate ``NAME.rK`` is of (NAME itself for NAME)."""
    from pruning.zoo import ZOO

    base, dot, k = model.rpartition(".r")
    return base if dot and base in ZOO and k.isdigit() else model


def _replicate_table(rows: list[dict]) -> None:
    """Where rows include replicates (``NAME.rK``): per base model and density, over its
    replicates (NAME itself counted as replicate 0) with the automatic start, the mean
    test accuracy of CHITA++ and iCBS, on how many runs iCBS >= CHITA++, and where the
    runs carry ``paired``, the discordant test images summed over runs with McNemar's
    exact p on the sums (each replicate has its own dense model and, on the digits,
    its own test split) and a sign test over the runs that differ."""
    from scipy.stats import binomtest

    if not any(_base(r["model"]) != r["model"] for r in rows):
        return
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        if r.get("init", "auto") == "auto" and r.get("chita++") is not None:
            groups.setdefault((_base(r["model"]), r["density"]), []).append(r)
    print("\n| model (replicates pooled) | density | runs (models) | dense | CHITA++ | iCBS "
          "| iCBS >= CHITA++ | images only iCBS / only CHITA++ gets right | McNemar p "
          "(pooled) | runs above / below | sign test p |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, density), sel in groups.items():
        n = len(sel)
        mean = lambda key: 100 * sum(r[key] for r in sel) / n  # noqa: E731
        wins = sum(1 for r in sel if r["icbs"] >= r["chita++"])
        above = sum(1 for r in sel if r["icbs"] > r["chita++"] + 1e-12)
        below = sum(1 for r in sel if r["icbs"] < r["chita++"] - 1e-12)
        sign = binomtest(above, above + below).pvalue if above + below else 1.0
        paired = [r["paired"] for r in sel if r.get("paired")]
        if paired:
            a, b = sum(x["a_only"] for x in paired), sum(x["b_only"] for x in paired)
            images = f"{a} / {b} ({len(paired)} runs)"
            mcnemar = f"{binomtest(a, a + b).pvalue:.3g}" if a + b else "1"
        else:
            images, mcnemar = "—", "—"
        print(f"| {model} | {density} | {n} ({len({r['model'] for r in sel})}) "
              f"| {mean('dense'):.2f} | {mean('chita++'):.2f} | {mean('icbs'):.2f} "
              f"| {wins}/{n} | {images} | {mcnemar} | {above} / {below} | {sign:.3g} |")


def _starts(args: argparse.Namespace) -> int:
    """Score the automatic start's candidates per model, density and seed (no iCBS)."""
    import torch
    from torch import nn

    from pruning.baselines import prunable_weights
    from pruning.icbs import AUTO_CANDIDATES, ICBSConfig, choose_start
    from pruning.run import calibration_data
    from pruning.zoo import load_zoo

    torch.set_num_threads(int(os.environ.get("QCBO_TORCH_THREADS", "1")))
    rows = []
    for model in args.models:
        for density in args.densities:
            for seed in args.seeds:
                loaded = load_zoo(model)
                config = ICBSConfig(density=density, seed=seed)
                _, cal, scoring = calibration_data(loaded.data, config)
                score = scoring()
                chosen, table, _ = choose_start(
                    loaded.model, nn.functional.cross_entropy,
                    prunable_weights(loaded.model, None), density, list(AUTO_CANDIDATES),
                    score, cal, seed=seed, score=config.start_score)
                plain = min(table, key=lambda k: table[k]["calibration_loss"])
                rows.append({"model": model, "density": density, "seed": seed,
                             "chosen": chosen, "plain_choice": plain, "candidates": table})
                print(f"{model} d={density} seed={seed}: chosen {chosen} (plain loss: {plain})")
                for k, v in table.items():
                    print(f"    {k:17s} loss {v['calibration_loss']:.3f}  tempered "
                          f"{v['tempered_loss']:.3f} (T {v['temperature']:.2f})  accuracy "
                          f"{v['calibration_accuracy']:.3f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    return 0


def _report(names: list[str], name: str) -> int:
    """Merge result files, print both tables, write ``name``'s JSON and plot."""
    rows: list[dict] = []
    metas = []
    for n in names:
        path = RESULTS / f"{n}.json"
        if not path.is_file():
            print(f"error: no results file {path}; run benchmarks/zoo.py --name {n} first",
                  file=sys.stderr)
            return 2
        data = json.loads(path.read_text())
        rows += data["runs"]
        metas.append(data["meta"])
    _table(rows)
    _seed_table(rows)
    _selection_table(rows)
    _paired_table(rows)
    _replicate_table(rows)
    _methods_table(rows)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"meta": {"merged": names, "parts": metas}, "runs": rows},
                              indent=1) + "\n")
    _plot(rows, RESULTS / f"{name}.png")
    print(f"wrote {out} and {RESULTS / (name + '.png')}")
    if _methods_plot(rows, RESULTS / f"{name}_methods.png"):
        print(f"wrote {RESULTS / (name + '_methods.png')} (every method against density)")
    return 0


def _method_rows(rows: list[dict]) -> dict[tuple[str, float], dict[str, Any]]:
    """Per (model, density), seed 0 or the first seed present: every method's test
    accuracy (fraction) and, where recorded, wall time in seconds. Methods: the mask-only
    baselines, CHITA, CHITA++, and iCBS from each start run (``iCBS (init)``). Rows of
    several seeds keep only the first seed met, so each cell is one run."""
    cells: dict[tuple[str, float], dict[str, Any]] = {}
    first_seed: dict[tuple[str, float], int] = {}
    for r in rows:
        key = (r["model"], r["density"])
        if first_seed.setdefault(key, r["seed"]) != r["seed"]:
            continue
        c = cells.setdefault(key, {"dense": r["dense"]})
        for m, acc in r["one_shot"].items():
            c.setdefault(m, (acc, None))
        for m in ("chita", "chita++"):
            if r.get(m) is not None:
                c.setdefault(m, (r[m], r.get(f"{m}_time_s")))
        init = r.get("init", "auto")
        label = f"iCBS ({init})" if init != "auto" else "iCBS (auto)"
        c[label] = (r["icbs"], r["wall_time_s"])
        if init == "auto":
            c["auto start"] = r["start"]
    return cells


def _methods_table(rows: list[dict]) -> None:
    """Every method side by side per model and density (issue 14's rows): test accuracy
    (%) and, for CHITA, CHITA++ and iCBS, the wall time of that method within its run."""
    cells = _method_rows(rows)
    if not cells:
        return
    inits = sorted({k for c in cells.values() for k in c if k.startswith("iCBS (")},
                   key=lambda k: (k != "iCBS (auto)", k))
    head = ["magnitude", "magnitude-row", "magnitude-global", "wanda", "gradient", "chita",
            "chita++", *inits]
    print("\n| model | density | dense | " + " | ".join(head) + " | auto start |")
    print("|---|---|---|" + "---|" * (len(head) + 1))
    for (model, density), c in sorted(cells.items()):
        out = []
        for m in head:
            if m not in c:
                out.append("—")
                continue
            acc, t = c[m]
            out.append(f"{100 * acc:.2f}" + ("" if t is None else f" ({t:.0f} s)"))
        print(f"| {model} | {density} | {100 * c['dense']:.2f} | " + " | ".join(out)
              + f" | {c.get('auto start', '—')} |")


def _methods_plot(rows: list[dict], path: Path) -> bool:
    """One panel per model: test accuracy against density for every method present
    (needs at least two densities for some model); returns whether a plot was written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _method_rows(rows)
    models = list(dict.fromkeys(m for m, _ in cells))
    models = [m for m in models if sum(1 for k in cells if k[0] == m) > 1]
    if not models:
        return False
    styles = {"magnitude-global": ("x:", "C0"), "wanda": ("+:", "C1"), "gradient": ("1:", "C2"),
              "chita": ("s--", "C3"), "chita++": ("D--", "C4")}
    cols = min(4, len(models))
    nrows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.4 * nrows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        ds = sorted(d for m, d in cells if m == model)
        methods = list(dict.fromkeys(k for d in ds for k in cells[(model, d)]
                                     if k in styles or k.startswith("iCBS (")))
        for j, m in enumerate(methods):
            pts = [(d, cells[(model, d)][m][0]) for d in ds if m in cells[(model, d)]]
            fmt, color = styles.get(m, ("o-", f"C{5 + j % 5}"))
            ax.plot([d for d, _ in pts], [100 * a for _, a in pts], fmt, color=color, label=m,
                    lw=2 if m.startswith("iCBS") else 1)
        ax.axhline(100 * cells[(model, ds[0])]["dense"], color="k", lw=0.8, ls="-.",
                   label="dense")
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("density")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(ds)
        ax.grid(alpha=0.3)
        lo = min(100 * cells[(model, d)][m][0] for d in ds for m in cells[(model, d)]
                 if m in ("chita++",) or m.startswith("iCBS"))
        ax.set_ylim(max(0.0, lo - 10), 100 * cells[(model, ds[0])]["dense"] + 2)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _seed_table(rows: list[dict]) -> None:
    """Per model and density over seeds: mean (min-max) of test accuracy, R and time at 4
    epochs, and on how many seeds iCBS >= CHITA++."""
    import statistics

    def fmt(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
        v = [scale * x for x in values if x is not None and x == x]
        if not v:
            return "—"
        if len(v) == 1:
            return f"{v[0]:.{digits}f}"
        return f"{statistics.mean(v):.{digits}f} ({min(v):.{digits}f}–{max(v):.{digits}f})"

    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        if r.get("init", "auto") == "auto":
            groups.setdefault((r["model"], r["density"]), []).append(r)
    print("\n| model | density | seeds | dense | best one-shot | CHITA++ | iCBS 4 ep | R 4 ep "
          "| iCBS >= CHITA++ | time 4 ep (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (model, density), sel in groups.items():
        icbs = [r.get("icbs_4", r["icbs"]) for r in sel]
        plus = [r.get("chita++") for r in sel]
        wins = sum(1 for a, b in zip(icbs, plus) if b is not None and a >= b)
        print(f"| {model} | {density} | {len(sel)} | {fmt([r['dense'] for r in sel])} "
              f"| {fmt([r['best_one_shot'] for r in sel])} | {fmt(plus)} | {fmt(icbs)} "
              f"| {fmt([r.get('R_4', r['R']) for r in sel], 1.0)} "
              f"| {wins}/{sum(1 for b in plus if b is not None)} "
              f"| {fmt([r.get('time_4_s', r['wall_time_s']) for r in sel], 1.0, 0)} |")


def plain_choice(row: dict) -> tuple[str, float | None, float | None]:
    """(label, test accuracy, test loss) of the state that ``select_z=0`` (best
    validation accuracy, ties to the lower loss) picks from a run's selection log: the
    same trajectory, so a guarded run shows what the plain rule would have returned.
    None where the row does not hold the figure."""
    best: tuple[tuple[float, float], str] | None = None
    for entry in row["selection"]:
        key = (entry["val_accuracy"] or 0.0, -entry["val_loss"])
        if best is None or key > best[0]:
            best = (key, entry["label"])
    assert best is not None
    label = best[1]
    if label == "start":
        state = row["start_candidates"][row["start"]]
        acc = row.get("start_test_accuracy", state.get("test_accuracy"))
    elif label == "start re-fit":
        state = row["start_refit"]
        acc = state["test_accuracy"]
    else:
        state = {e["epoch"]: e for e in row["epochs"]}[int(label.split()[1])]
        acc = state["test_accuracy"]
    return label, acc, state.get("test_loss")


def _selection_table(rows: list[dict]) -> None:
    """Where runs carry a guarded selection (select_z > 0): the state it returned against
    the plain rule's on the same trajectory, per model and density ("—" where a figure
    is missing, e.g. CHITA++ under --no-chita)."""
    guarded = [r for r in rows if r.get("selection")]
    if not any(r.get("select_z", 0) > 0 or any("change" in e for e in r["selection"])
               for r in guarded):
        return
    groups: dict[tuple[str, float, str], list[dict]] = {}
    for r in guarded:
        groups.setdefault((r["model"], r["density"], r.get("init", "auto")), []).append(r)

    def mean(values: list[float | None]) -> str:
        v = [x for x in values if x is not None]
        return f"{100 * sum(v) / len(v):.2f}" if v else "—"

    def count(pairs: list[tuple[Any, Any]], better: Callable[[Any, Any], bool]) -> str:
        known = [(a, b) for a, b in pairs if a is not None and b is not None]
        return f"{sum(1 for a, b in known if better(a, b))}/{len(known)}" if known else "—"

    print("\n| model | density | init | seeds | CHITA++ | guarded (returned) | plain (same "
          "runs) | plain: worst R | guarded − plain | guarded kept the start | guarded >= "
          "CHITA++ | plain >= CHITA++ | plain: test loss < CHITA++'s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, density, init), sel in groups.items():
        picks = [plain_choice(r) for r in sel]
        plus = [r.get("chita++") for r in sel]
        ours = [r["icbs"] for r in sel]
        plain = [p[1] for p in picks]
        both = [(a, b) for a, b in zip(ours, plain) if b is not None]
        recovered = [(p - r["best_one_shot"]) / (r["dense"] - r["best_one_shot"])
                     for p, r in zip(plain, sel)
                     if p is not None and r["dense"] > r["best_one_shot"]]
        diff = (f"{100 * sum(a - b for a, b in both) / len(both):+.2f}" if both else "—")
        losses = [(p[2], r.get("chita++_test_loss")) for p, r in zip(picks, sel)]
        print(f"| {model} | {density} | {init} | {len(sel)} | {mean(plus)} | {mean(ours)} "
              f"| {mean(plain)} | {f'{min(recovered):.2f}' if recovered else '—'} | {diff} "
              f"| {sum(1 for r in sel if r.get('final_state') == 'start')}/{len(sel)} "
              f"| {count(list(zip(ours, plus)), lambda a, b: a >= b)} "
              f"| {count(list(zip(plain, plus)), lambda a, b: a >= b)} "
              f"| {count(losses, lambda a, b: a < b)} |")


def _table(rows: list[dict]) -> None:
    print("\n| model | density | init | dense | best one-shot | CHITA | CHITA++ | start "
          "| iCBS 4 ep (R, time) | iCBS final (R) | final − 4 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        i4 = r.get("icbs_4", float("nan"))
        chita = "—" if r["chita"] is None else f"{100 * r['chita']:.2f}"
        plus = "—" if r.get("chita++") is None else f"{100 * r['chita++']:.2f}"
        print(f"| {r['model']} | {r['density']} | {r.get('init', 'auto')} | {100 * r['dense']:.2f} "
              f"| {100 * r['best_one_shot']:.2f} "
              f"| {chita} | {plus} | {r['start']} | {100 * i4:.2f} ({r.get('R_4', float('nan')):.2f}, "
              f"{r.get('time_4_s', float('nan')):.0f} s) | {100 * r['icbs']:.2f} ({r['R']:.2f}) "
              f"| {100 * (r['icbs'] - i4):+.2f} |")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    if not models:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, model in enumerate(models):
        sel = sorted((r for r in rows if r["model"] == model and r.get("init", "auto") == "auto"),
                     key=lambda r: r["density"])
        if not sel:
            continue
        d = [r["density"] for r in sel]
        axes[0].plot(d, [100 * r["icbs"] for r in sel], "o-", color=f"C{i}", label=f"{model} iCBS")
        axes[0].plot(d, [100 * r["best_one_shot"] for r in sel], "x:", color=f"C{i}")
        if all(r.get("chita++") is not None for r in sel):
            axes[0].plot(d, [100 * r["chita++"] for r in sel], "s--", color=f"C{i}", ms=3)
        pairs = [p for r in sel for p in r["predicted_vs_measured"]]
        if pairs:
            axes[1].scatter([p[0] for p in pairs], [p[1] for p in pairs], s=4, color=f"C{i}",
                            label=model, alpha=0.5)
    axes[0].set_xlabel("density")
    axes[0].set_ylabel("test accuracy (%): solid iCBS, dotted best one-shot, dashed CHITA++")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    lim = axes[1].get_xlim()
    axes[1].plot(lim, lim, "k--", lw=0.8)
    axes[1].set_xlabel("predicted δL of a group (block model)")
    axes[1].set_ylabel("measured δL on the calibration set")
    axes[1].set_title("block model against the real loss")
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
