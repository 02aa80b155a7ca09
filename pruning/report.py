"""Outputs of a pruning run: the pruned state dict, the JSON report and its plot.

The report is the dict `pruning.icbs.prune` returns, optionally with ``baselines``
(name -> metrics of one-shot pruning at the same density) added by the caller.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from qcbo.io import atomic_write
from qcbo.result import jsonable

__all__ = ["save_state_dict", "write_json", "plot_report", "write_outputs"]


def save_state_dict(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """The model's state dict (masks already folded into the weights) as safetensors."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(path) as handle:
        handle.write(save(state))


def write_json(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """The report as indented JSON (NaN/inf as null)."""
    text = json.dumps(jsonable(dict(report)), indent=2)
    with atomic_write(path, "w") as handle:
        handle.write(text + "\n")


def plot_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """PNG: validation accuracy and loss per epoch (0 = initial mask) against the dense
    model and the one-shot baselines (horizontal lines); for a checked iCBS run, each
    group's predicted against measured change of the calibration loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [0] + [e["epoch"] for e in report.get("epochs", [])]
    initial = report.get("initial", {})
    series = {
        "val_accuracy": [initial.get("val_accuracy")]
        + [e.get("val_accuracy") for e in report.get("epochs", [])],
        "val_loss": [initial.get("val_loss")] + [e.get("val_loss") for e in report.get("epochs", [])],
    }
    groups = [g for g in report.get("engine", {}).get("groups", []) if g.get("measured") is not None]
    fig, axes = plt.subplots(1, 3 if groups else 2, figsize=(16 if groups else 11, 4))
    titles = {"val_accuracy": "validation accuracy", "val_loss": "validation loss"}
    for ax, key in zip(axes, ("val_accuracy", "val_loss")):
        values = series[key]
        if any(v is not None for v in values) and report.get("method") == "icbs":
            ax.plot(epochs, [math.nan if v is None else v for v in values], "o-",
                    label=f"iCBS ({report.get('backend', '?')})", color="C3")
        dense = report.get("dense", {}).get(key)
        if dense is not None:
            ax.axhline(dense, color="k", ls="--", label="dense")
        for i, (name, metrics) in enumerate(report.get("baselines", {}).items()):
            if metrics.get(key) is not None:
                ax.axhline(metrics[key], color=f"C{i}", ls=":", label=name)
        ax.set_xlabel("epoch (0 = initial mask)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(titles[key])
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    if groups:
        ax = axes[2]
        kept = [g for g in groups if not g["reverted"]]
        undone = [g for g in groups if g["reverted"]]
        for sel, colour, label in ((kept, "C2", "kept"), (undone, "C3", "reverted")):
            ax.scatter([g["predicted"] for g in sel], [g["measured"] for g in sel], s=8,
                       color=colour, label=f"{label} ({len(sel)})", alpha=0.6)
        lo = min(min(g["predicted"] for g in groups), min(g["measured"] for g in groups))
        ax.plot([lo, 0], [lo, 0], "k--", lw=0.8)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("predicted δL (block model)")
        ax.set_ylabel("measured δL (calibration loss)")
        ax.set_title("each step's group: model against real loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    density = report.get("density")
    fig.suptitle(f"{report.get('model', 'model')} at density "
                 f"{density:.3g}" if isinstance(density, float) else str(report.get("model", "")))
    fig.tight_layout()

    try:
        with atomic_write(path) as handle:
            fig.savefig(handle, dpi=110, format="png")
    finally:
        plt.close(fig)


def write_outputs(model: nn.Module, report: Mapping[str, Any],
                  out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """pruned.safetensors, report.json and report.png in ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"state_dict": out / "pruned.safetensors", "report": out / "report.json",
             "plot": out / "report.png"}
    save_state_dict(model, paths["state_dict"])
    plot_report(report, paths["plot"])
    write_json(report, paths["report"])
    return {k: str(v) for k, v in paths.items()}
