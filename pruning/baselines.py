"""Which weights are pruned, their scores, and one-shot masks from scores.

Conventions: a *mask* is a bool tensor shaped like its weight, True = kept. Scores are
float tensors shaped like the weight; higher = more important (kept first). Every
method keeps exactly ``round(density * numel)`` weights per layer ("layer"; "row": spread evenly over the
output rows, the remainder going one each to the rows whose next candidate scores
highest), or ``round(density * total)`` over all layers ("global"). Ties are broken deterministically: among equal scores the
weight with the lower flat index is kept.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from qcbo.errors import InputError

__all__ = [
    "Granularity",
    "ScoreMethod",
    "BASELINES",
    "prunable_weights",
    "magnitude_scores",
    "wanda_scores",
    "gradient_scores",
    "scores_for",
    "masks_from_scores",
    "apply_masks",
    "one_shot",
    "layer_densities",
]

Granularity = Literal["layer", "row", "global"]
ScoreMethod = Literal["magnitude", "wanda", "gradient"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

#: One-shot baselines by name: (score method, granularity).
BASELINES: dict[str, tuple[ScoreMethod, Granularity]] = {
    "magnitude": ("magnitude", "layer"),
    "magnitude-row": ("magnitude", "row"),
    "magnitude-global": ("magnitude", "global"),
    "wanda": ("wanda", "row"),
    "gradient": ("gradient", "layer"),
}


def prunable_weights(
    model: nn.Module, patterns: Sequence[str] | None = None
) -> dict[str, nn.Parameter]:
    """The ``weight`` of every nn.Linear and nn.Conv2d, by parameter name, in model order.

    ``patterns`` (fnmatch, e.g. ``["0.weight", "layers.*.fc*"]``) keeps only matching
    names; biases and normalisation layers are never included.
    """
    found: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight is not None:
            name = f"{module_name}.weight" if module_name else "weight"
            if patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns):
                found[name] = module.weight
    if not found:
        what = "matching " + ", ".join(patterns) if patterns else "of type Linear or Conv2d"
        raise InputError(f"model has no prunable weights {what}")
    return found


def _modules_by_weight(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    return {name: modules[name.rsplit(".", 1)[0] if "." in name else ""] for name in names}


def magnitude_scores(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """|w| per weight."""
    return {name: w.detach().abs().clone() for name, w in weights.items()}


@torch.no_grad()
def wanda_scores(
    model: nn.Module, weights: Mapping[str, torch.Tensor], batches: Batches
) -> dict[str, torch.Tensor]:
    """Wanda: |W_ij| * ||X_j||_2, X_j the j-th input feature over all calibration rows.

    For Conv2d the norm is taken per input channel (over batch and positions) and
    shared by every kernel position of that channel.
    """
    modules = _modules_by_weight(model, weights)
    sq: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in modules.items():
        def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor,
                 name: str = name) -> None:
            x = inputs[0].detach()
            if isinstance(mod, nn.Conv2d):
                s = x.pow(2).transpose(0, 1).reshape(x.shape[1], -1).sum(dim=1)
            else:
                s = x.reshape(-1, x.shape[-1]).pow(2).sum(dim=0)
            sq[name] = sq.get(name, 0) + s.double()
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        seen = 0
        for xb, _ in batches:
            model(xb)
            seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not seen:
        raise InputError("wanda: no calibration batches given")
    out = {}
    for name, w in weights.items():
        norm = sq[name].sqrt().to(w.dtype)
        shape = (1, -1) + (1,) * (w.ndim - 2)
        out[name] = w.detach().abs() * norm.reshape(shape)
    return out


def gradient_scores(
    model: nn.Module, weights: Mapping[str, torch.Tensor], loss_fn: LossFn, batches: Batches
) -> dict[str, torch.Tensor]:
    """|w * g| averaged over calibration batches (g: each batch's mean-loss gradient)."""
    total = {name: torch.zeros_like(w, dtype=torch.float64) for name, w in weights.items()}
    params = list(weights.values())
    was_training = model.training
    model.eval()
    count = 0
    try:
        for xb, yb in batches:
            grads = torch.autograd.grad(loss_fn(model(xb), yb), params)
            for (name, w), g in zip(weights.items(), grads):
                total[name] += (w.detach() * g).abs().double()
            count += 1
    finally:
        model.train(was_training)
    if not count:
        raise InputError("gradient scores: no calibration batches given")
    return {name: (t / count).to(weights[name].dtype) for name, t in total.items()}


def scores_for(
    method: ScoreMethod,
    model: nn.Module,
    weights: Mapping[str, torch.Tensor],
    *,
    loss_fn: LossFn | None = None,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
) -> dict[str, torch.Tensor]:
    """Scores of ``method`` ("magnitude", "wanda", "gradient")."""
    if method == "magnitude":
        return magnitude_scores(weights)
    if method == "wanda":
        return wanda_scores(model, weights, batches)
    if method == "gradient":
        if loss_fn is None:
            raise InputError("gradient scores need a loss function")
        return gradient_scores(model, weights, loss_fn, batches)
    raise InputError(f"unknown score method {method!r}; choose magnitude, wanda or gradient")


def _top_mask(score: np.ndarray, keep: int) -> np.ndarray:
    """Bool mask of the ``keep`` highest scores along the last axis (ties: lower index)."""
    order = np.argsort(-score, axis=-1, kind="stable")
    mask = np.zeros(score.shape, dtype=bool)
    np.put_along_axis(mask, order[..., :keep], True, axis=-1)
    return mask


def _row_mask(rows: np.ndarray, density: float) -> np.ndarray:
    """Per-row top scores with exactly ``round(density * size)`` kept in the layer.

    Every row keeps ``floor(total / rows)``; the remaining weights go, one each, to the
    rows whose next candidate scores highest (ties: lower row index).
    """
    order = np.argsort(-rows, axis=-1, kind="stable")
    total = int(round(density * rows.size))
    base, extra = divmod(total, rows.shape[0])
    counts = np.full(rows.shape[0], base)
    if extra and base < rows.shape[1]:
        nxt = np.take_along_axis(rows, order[:, base: base + 1], axis=-1)[:, 0]
        counts[np.argsort(-nxt, kind="stable")[:extra]] += 1
    keep = np.arange(rows.shape[1])[None, :] < counts[:, None]
    mask = np.zeros(rows.shape, dtype=bool)
    np.put_along_axis(mask, order, keep, axis=-1)
    return mask


def _check_density(density: float) -> float:
    density = float(density)
    if not 0.0 < density <= 1.0:
        raise InputError(f"density must be in (0, 1], got {density}")
    return density


def masks_from_scores(
    scores: Mapping[str, torch.Tensor], density: float, granularity: Granularity = "layer"
) -> dict[str, torch.Tensor]:
    """Masks (True = kept) keeping the highest scores at ``density``; see module docs."""
    density = _check_density(density)
    masks: dict[str, torch.Tensor] = {}
    if granularity == "global":
        flat = np.concatenate([s.detach().double().reshape(-1).numpy() for s in scores.values()])
        keep = _top_mask(flat, int(round(density * flat.size)))
        start = 0
        for name, s in scores.items():
            masks[name] = torch.from_numpy(keep[start: start + s.numel()].reshape(s.shape).copy())
            start += s.numel()
        return masks
    for name, s in scores.items():
        arr = s.detach().double().numpy()
        if granularity == "layer":
            keep = _top_mask(arr.reshape(-1), int(round(density * arr.size))).reshape(arr.shape)
        elif granularity == "row":
            keep = _row_mask(arr.reshape(arr.shape[0], -1), density).reshape(arr.shape)
        else:
            raise InputError(f"unknown granularity {granularity!r}; choose layer, row or global")
        masks[name] = torch.from_numpy(keep)
    return masks


@torch.no_grad()
def apply_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every pruned weight in place."""
    for name, mask in masks.items():
        weights[name].mul_(mask.to(weights[name].dtype))


def one_shot(
    model: nn.Module,
    method: str,
    density: float,
    *,
    loss_fn: LossFn | None = None,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    patterns: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place with a one-shot baseline of `BASELINES`; returns the masks."""
    if method not in BASELINES:
        raise InputError(f"unknown one-shot method {method!r}; choose one of: {', '.join(BASELINES)}")
    score_method, granularity = BASELINES[method]
    weights = prunable_weights(model, patterns)
    scores = scores_for(score_method, model, weights, loss_fn=loss_fn, batches=batches)
    masks = masks_from_scores(scores, density, granularity)
    apply_masks(weights, masks)
    return masks


def layer_densities(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Fraction of kept weights per layer."""
    return {name: float(m.float().mean()) for name, m in masks.items()}
