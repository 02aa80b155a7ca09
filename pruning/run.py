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
from .icbs import AUTO_CANDIDATES, ICBSConfig, _batches_forever, evaluate_loader, prune
from .models import LoadedModel
from .objectives import EVAL_CHUNK
from .pooling import fast_max_pool_during

#: Methods other than iCBS: the one-shot masks and CHITA (which also moves kept weights).
METHODS: tuple[str, ...] = (*BASELINES, "chita", "chita++")

__all__ = ["METHODS", "MODEL_DEFAULTS", "OTHER_DEFAULTS", "calibration_data", "prune_classifier",
           "split_calibration"]

#: Per-model defaults for `qcbo prune` when the user gives none.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp-digits": {"density": 0.2, "epochs": 4, "steps_per_epoch": 25, "block_size": 256},
    "mlp-fashion-mnist": {"density": 0.1, "epochs": 4, "steps_per_epoch": 100,
                          "block_size": 1024},
}
#: The same for every other classifier (zoo models, model files).
OTHER_DEFAULTS = {"density": 0.2, "epochs": 4, "steps_per_epoch": 100, "block_size": 1024}


def split_calibration(x: torch.Tensor, y: torch.Tensor, size: int, seed: int = 0,
                      max_fraction: float = 0.25
                      ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((x, y) to train on, (x, y) calibration set): a seeded random ``size`` samples
    (at most ``max_fraction`` of the data) held apart from the training batches."""
    size = max(1, min(int(size), int(len(x) * max_fraction)))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed) + 7919))
    cal, rest = order[:size], order[size:]
    return (x[rest], y[rest]), (x[cal], y[cal])


Data = tuple[torch.Tensor, torch.Tensor]


def calibration_data(data: Any, config: ICBSConfig, calibration_split: str = "train",
                     batch_size: int = 512) -> tuple[Data, Data, Callable[[], list[Data]]]:
    """What `prune_classifier` prunes from: ((x, y) its training batches come from,
    (x, y) iCBS's calibration set, a function giving the first
    ``config.calibration_batches`` training batches, the ones the baselines and iCBS's
    start are scored on). ``calibration_split``: "train" holds
    ``config.calibration_samples`` seeded training samples apart; "val" draws them from
    the validation split and trains on all training samples."""
    if calibration_split == "train":
        fit, calibration_set = split_calibration(data.x_train, data.y_train,
                                                 config.calibration_samples, config.seed)
    elif calibration_split == "val":
        fit = (data.x_train, data.y_train)
        _, calibration_set = split_calibration(*data.split("val"), config.calibration_samples,
                                               config.seed, max_fraction=1.0)
    else:
        raise InputError(f"calibration split must be train or val, got {calibration_split!r}")

    def score_batches() -> list[Data]:
        batches = _batches_forever(make_loader(*fit, batch_size=batch_size, shuffle=True,
                                               seed=config.seed))
        return [next(batches) for _ in range(max(1, config.calibration_batches))]

    return fit, calibration_set, score_batches


def _metrics(model: nn.Module, loaders: dict[str, Any], loss_fn) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for split in ("val", "test"):
        loss, acc = evaluate_loader(model, loaders[split], loss_fn)
        out[f"{split}_loss"], out[f"{split}_accuracy"] = loss, acc
    return out


@fast_max_pool_during(lambda loaded, *_args, **_kwargs: loaded.model)
def prune_classifier(
    loaded: LoadedModel,
    *,
    method: str,
    config: ICBSConfig,
    baselines: Sequence[str] = tuple(BASELINES),
    batch_size: int = 512,
    block_sink: Callable[[Problem], None] | None = None,
    on_step: Callable[[Any], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    executor: Any = None,
    calibration_split: str = "train",
) -> dict[str, Any]:
    """Prune ``loaded.model`` in place with ``method`` ("icbs" or a `BASELINES` name).

    ``config.calibration_samples`` training samples (seeded) are held apart as the
    calibration set of iCBS (automatic start, loss check, re-fit test); the rest feed the
    training batches, reshuffled with ``config.seed``. ``calibration_split="val"`` draws
    that set from the validation split instead (data the dense model was not trained on;
    all training samples then feed the batches, and ``keep_best`` selects on a split the
    steps have seen). Wanda and gradient scores use the first
    ``config.calibration_batches`` of those batches, for the baselines as for iCBS.
    Non-overlapping ``nn.MaxPool2d`` layers pool by `pruning.pooling.fast_max_pool`
    meanwhile, the baselines included.
    """
    if method != "icbs" and method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose icbs or one of: {', '.join(METHODS)}")
    config.validate()
    start = time.perf_counter()
    data, model = loaded.data, loaded.model
    loss_fn = nn.functional.cross_entropy

    # The scoring batches are the ones `prune` draws first, so iCBS starts from this
    # exact mask.
    (x_fit, y_fit), calibration_set, calibration = calibration_data(
        data, config, calibration_split, batch_size)

    def train_loader():
        return make_loader(x_fit, y_fit, batch_size=batch_size, shuffle=True, seed=config.seed)

    loaders = {split: make_loader(*data.split(split), batch_size=EVAL_CHUNK, shuffle=False)
               for split in ("val", "test")}

    dense = _metrics(model, loaders, loss_fn)
    results: dict[str, dict[str, Any]] = {}
    # CHITA baselines of an automatic iCBS start are the start's own candidates (same
    # batches, same seed): measured there instead of pruned twice.
    reuse = ([b for b in baselines if b in ("chita", "chita++") and b in AUTO_CANDIDATES]
             if method == "icbs" and config.init == "auto" else [])
    for name in dict.fromkeys(list(baselines) + ([method] if method != "icbs" else [])):
        if name in reuse:
            continue
        t0 = time.perf_counter()
        copy_ = copy.deepcopy(model)
        extra: dict[str, Any] = {}
        if name in ("chita", "chita++"):
            from .chita import PLUS_STAGES, ChitaConfig, chita_prune

            stages = PLUS_STAGES if name == "chita++" else 1
            chita = chita_prune(copy_, loss_fn, calibration(),
                                ChitaConfig(density=config.density, seed=config.seed,
                                            stages=stages),
                                patterns=config.patterns)
            masks = chita.masks
            extra = {"objective": chita.objective, "iterations": chita.iterations,
                     "stages": stages,
                     "magnitude_overlap": chita.magnitude_overlap}
        else:
            masks = one_shot(copy_, name, config.density, loss_fn=loss_fn, batches=calibration(),
                             patterns=config.patterns)
        results[name] = {**_metrics(copy_, loaders, loss_fn), "wall_time_s": time.perf_counter() - t0,
                         "layers": layer_densities(masks), **extra}
        if name == method:
            chosen_state = copy_.state_dict()
    if method != "icbs":
        # After the loop: every baseline is pruned from the dense model, not from this one.
        model.load_state_dict(chosen_state)

    if method == "icbs":
        report = prune(model, loss_fn, train_loader(), loaders["val"], config,
                       test_loader=loaders["test"], calibration=calibration_set,
                       block_sink=block_sink, on_step=on_step, on_epoch=on_epoch,
                       executor=executor, measure_starts=reuse).to_dict()
        for name in reuse:
            c = report["initial"]["candidates"][name]
            results[name] = {**{k: c[k] for k in ("val_loss", "val_accuracy", "test_loss",
                                                  "test_accuracy", "layers", "objective",
                                                  "iterations", "stages",
                                                  "magnitude_overlap")},
                             "wall_time_s": c["time_s"], "from_start_candidates": True}
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
                                            "test_accuracy", "objective", "iterations",
                                            "stages", "magnitude_overlap") if k in chosen},
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
