"""End-to-end pruning of a built-in (or loaded) classifier: what `qcbo prune` and the
pruning benchmark both run.

`prune_classifier` evaluates the dense model, the one-shot baselines at the same
density (on copies), then prunes the model in place with the chosen method (iCBS or a
one-shot baseline) and returns one report dict.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from qcbo.errors import InputError
from qcbo.problem import Problem

from .baselines import BASELINES, layer_densities, one_shot
from .data import make_loader
from .icbs import ICBSConfig, _batches_forever, evaluate_loader, prune
from .models import LoadedModel

__all__ = ["MODEL_DEFAULTS", "preferred_block_size", "prune_classifier"]

#: Per-model defaults for `qcbo prune` when the user gives none.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp-digits": {"density": 0.2, "epochs": 4, "steps_per_epoch": 25, "block_size": 256},
    "mlp-fashion-mnist": {"density": 0.1, "epochs": 3, "steps_per_epoch": 100,
                          "block_size": 1024},
}
_FALLBACK = {"density": 0.2, "epochs": 3, "steps_per_epoch": 50, "block_size": 1024}
_SMALL_BLOCK_BACKENDS = {"exact": 16, "cpsat": 64}


def preferred_block_size(backend: Any, preferred: int) -> int:
    """The default block size for ``backend``: ``preferred``, capped by the backend's
    ``max_variables`` (quantum backends), 16 for exact and 64 for cpsat."""
    limit = getattr(backend, "max_variables", None)
    if limit is not None:
        return min(int(preferred), int(limit))
    return _SMALL_BLOCK_BACKENDS.get(backend.name, int(preferred))


def _metrics(model: nn.Module, loaders: dict[str, Any], loss_fn) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for split in ("val", "test"):
        loss, acc = evaluate_loader(model, loaders[split], loss_fn)
        out[f"{split}_loss"], out[f"{split}_accuracy"] = loss, acc
    return out


def prune_classifier(
    loaded: LoadedModel,
    *,
    method: str,
    config: ICBSConfig,
    baselines: Sequence[str] = ("magnitude", "wanda"),
    batch_size: int = 512,
    block_sink: Callable[[Problem], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Prune ``loaded.model`` in place with ``method`` ("icbs" or a `BASELINES` name).

    The train loader reshuffles with ``config.seed``; calibration data for Wanda and the
    gradient score are its first ``config.calibration_batches`` batches.
    """
    if method != "icbs" and method not in BASELINES:
        raise InputError(f"unknown method {method!r}; choose icbs or one of: {', '.join(BASELINES)}")
    config.validate()
    start = time.perf_counter()
    data, model = loaded.data, loaded.model
    loss_fn = nn.functional.cross_entropy

    def train_loader():
        return make_loader(data.x_train, data.y_train, batch_size=batch_size, shuffle=True,
                           seed=config.seed)

    loaders = {split: make_loader(*data.split(split), batch_size=4096, shuffle=False)
               for split in ("val", "test")}

    def calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
        # The same batches `prune` draws first, so iCBS starts from this exact mask.
        batches = _batches_forever(train_loader())
        return [next(batches) for _ in range(max(1, config.calibration_batches))]

    dense = _metrics(model, loaders, loss_fn)
    results: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(list(baselines) + ([method] if method != "icbs" else [])):
        t0 = time.perf_counter()
        copy_ = copy.deepcopy(model)
        masks = one_shot(copy_, name, config.density, loss_fn=loss_fn, batches=calibration(),
                         patterns=config.patterns)
        results[name] = {**_metrics(copy_, loaders, loss_fn), "wall_time_s": time.perf_counter() - t0,
                         "layers": layer_densities(masks)}
        if name == method:
            model.load_state_dict(copy_.state_dict())

    if method == "icbs":
        report = prune(model, loss_fn, train_loader(), loaders["val"], config,
                       test_loader=loaders["test"], block_sink=block_sink, on_epoch=on_epoch,
                       progress=progress)
    else:
        chosen = results[method]
        kept = sum(d * p.numel() for d, p in zip(chosen["layers"].values(),
                                                   (dict(model.named_parameters())[n]
                                                    for n in chosen["layers"])))
        total = sum(dict(model.named_parameters())[n].numel() for n in chosen["layers"])
        report = {
            "method": method,
            "config": {"density": config.density, "seed": config.seed},
            "dense": {k: v for k, v in dense.items()},
            "final": {k: chosen[k] for k in ("val_loss", "val_accuracy", "test_loss",
                                            "test_accuracy")},
            "layers": {n: {"density": d} for n, d in chosen["layers"].items()},
            "density": float(kept / total),
            "epochs": [],
        }
    report["model"] = loaded.name
    report["dense"] = dense
    report["dense_test_accuracy_recorded"] = loaded.test_accuracy
    report["baselines"] = {k: v for k, v in results.items() if k in baselines}
    report["total_wall_time_s"] = time.perf_counter() - start
    return report
