"""Re-fit of a pruned classifier's surviving weights: damped Gauss-Newton steps on the
support, each confirmed on held-out data.

iCBS moves only the mask (ICBS.md: kept weights stay at their dense values); CHITA and
SparseGPT also move the weights they keep. This is the classifier counterpart of the LM
row re-fit: the surviving weights take the step that minimises iCBS's own local model,

    δL(δ) = gᵀδ + ½ δᵀ F δ + ½ λ ‖δ‖²       over δ on the support S (pruned weights stay 0),

with g the mean loss gradient and F = GᵀG / N the empirical Fisher of N fresh training
samples at the current weights (G: N x p per-sample gradients, `pruning.chita`'s factored
operators, so no p x p matrix is formed). With A = G_S and K = A Aᵀ (N x N):

    δ_S = -(AᵀA / N + λ I)⁻¹ g_S = -Aᵀ (K + N λ I)⁻¹ 1         (push-through identity,
                                                                g_S = Aᵀ 1 / N)

one N x N Cholesky factorisation per damping. λ is set relative to the mean non-zero
eigenvalue of F_S, μ = trace(K) / N²: λ = ρ μ for each ρ of a ladder (ρ large: a short
gradient step; ρ small: close to the Gauss-Newton step that lowers every sample's
linearised loss by 1). Each (ρ, scale t) candidate w + t δ is measured on the held-out
calibration set, split in two: the best candidate on one half is kept only if, on the
other half, it lowers the loss by more than ``z`` standard errors of the paired
per-sample change (and the whole set's mean falls); else the weights are restored. So,
as for the block steps, the calibration loss never rises, and a fall inside its noise is
not taken (a 512-sample Fisher predicts such small steps badly: on fmnist-mlp-pm1 at
density 0.3 from CHITA++, three rounds that each lowered the calibration loss by 0.05-0.3 %
lowered test accuracy from 88.81 to 88.57 %).

Shapes: weights are flattened row-major and concatenated in ``names`` order; the
support is a bool vector of the same length (True = kept).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from qcbo.errors import InputError

from .chita import GradientOperator, StackedGradients, gradient_operators

__all__ = ["RefitStep", "damped_steps", "refit_weights", "DAMPINGS", "SCALES", "Z"]

#: Damping ladder ρ (λ = ρ x the mean non-zero Fisher eigenvalue) and step scales tried.
DAMPINGS: tuple[float, ...] = (30.0, 10.0, 3.0, 1.0)
SCALES: tuple[float, ...] = (1.0, 0.5, 0.25)
#: A round is kept only if the held-out loss falls by more than Z standard errors of the
#: paired per-sample change (a fall inside the noise of the calibration set is refused).
Z = 2.0


@dataclass(frozen=True)
class RefitStep:
    """One candidate direction: damping ρ, λ, δ (p,), gᵀδ and δᵀFδ; at scale t the
    predicted loss change is t gᵀδ + ½ t² δᵀFδ (loss units). ``label`` names a candidate
    that is not a Fisher step (its ρ, λ and predictions are NaN)."""

    rho: float
    lam: float
    delta: torch.Tensor
    gradient: float
    curvature: float
    label: str | None = None

    @property
    def predicted(self) -> float:
        """The predicted loss change at scale 1: gᵀδ + ½ δᵀFδ."""
        return self.gradient + 0.5 * self.curvature


def damped_steps(op: GradientOperator, support: torch.Tensor,
                 dampings: Sequence[float] = DAMPINGS) -> list[RefitStep]:
    """δ_S = -Aᵀ (K + N λ I)⁻¹ 1 for each damping ρ (module docs); δ is 0 off ``support``.

    ``op``: per-sample gradients at the current weights (N x p), ``support`` (p,) bool.
    An empty support, or one whose gradients vanish, gives no steps.
    """
    if support.ndim != 1 or support.numel() != op.size:
        raise InputError(f"support must have shape ({op.size},), got {tuple(support.shape)}")
    if any(not (r > 0 and math.isfinite(r)) for r in dampings):
        raise InputError(f"dampings must be positive and finite, got {list(dampings)}")
    N = op.samples
    if N < 1 or not bool(support.any()):
        return []
    K = op.gram(support)
    mu = float(torch.trace(K)) / (N * N)
    if not mu > 0.0:
        return []
    m = support.to(torch.float32)
    ones = torch.ones(N, dtype=torch.float64, device=K.device)
    steps = []
    for rho in dampings:
        lam = float(rho) * mu
        shifted = K.clone()
        shifted.diagonal().add_(N * lam)
        u = torch.cholesky_solve(ones[:, None], torch.linalg.cholesky(shifted)).squeeze(1)
        delta = -op.rmatvec(u.to(torch.float32)) * m
        Ad = op.matvec(delta).double()
        steps.append(RefitStep(float(rho), lam, delta, float(Ad.sum() / N),
                               float((Ad @ Ad) / N)))
    return steps


def refit_weights(model: torch.nn.Module, loss_fn: Callable, params: Sequence[torch.nn.Parameter],
                  names: Sequence[str], support: torch.Tensor,
                  batch: tuple[torch.Tensor, torch.Tensor] | None,
                  held_out_loss: Callable[[], float], *,
                  held_out_samples: Callable[[], np.ndarray | None] | None = None,
                  choose_samples: Callable[[], np.ndarray | None] | None = None,
                  z: float = Z, dampings: Sequence[float] | None = None,
                  scales: Sequence[float] | None = None,
                  extra: Sequence[tuple[str, torch.Tensor]] = (),
                  fisher: bool = True) -> dict:
    """One re-fit round on ``params`` (changed in place; named ``names`` in ``model``).

    Per-sample gradients of ``batch`` (x (N, ...), y (N,)) at the current weights give the
    `damped_steps`; every (ρ, t) candidate is written into the weights and scored by
    ``held_out_loss()`` (which must see the new weights; a caching caller invalidates its
    cache in it). With per-sample losses (``held_out_samples()``: those of the last
    ``held_out_loss()`` call) the held-out set is split in two: the candidate is chosen
    on the even-numbered samples and tested on the odd-numbered ones, where it must lower
    the mean loss by more than ``z`` standard errors of the paired per-sample change (so
    choosing among the candidates does not spend the test's confidence); the whole set's
    mean must fall too. ``choose_samples()``, if given, returns the per-sample losses of
    the even-numbered held-out samples alone at the current weights: candidates are then
    scored on that half only (half the forward cost; the same choice) and only the chosen
    one on the whole set (its candidate entries then have ``loss`` None). Without
    per-sample losses: chosen on the mean, kept on any decrease. ``extra``: more
    candidates, (label, δ (p,)) taken at scale 1 (the layer reconstruction of
    `pruning.reconstruct`), chosen and tested with the same rule; ``fisher=False`` tries
    only those (no per-sample gradients; ``batch`` may then be None). A
    rejected candidate, or an exception on the way, leaves the weights as they were.
    Returns the round's record: accepted, loss before and after, ρ, λ, t, predicted
    change, the test's change and threshold, time, and every candidate's loss.
    """
    if not (z >= 0 and math.isfinite(z)):
        raise InputError(f"z must be >= 0, got {z}")
    dampings = DAMPINGS if dampings is None else tuple(dampings)
    scales = SCALES if scales is None else tuple(scales)
    if any(not (t > 0 and math.isfinite(t)) for t in scales):
        raise InputError(f"scales must be positive and finite, got {list(scales)}")
    t0 = time.perf_counter()
    current = [p.detach().clone() for p in params]
    sizes = [p.numel() for p in params]

    def write(delta: torch.Tensor | None, scale: float) -> None:
        with torch.no_grad():
            parts = [None] * len(params) if delta is None else torch.split(delta, sizes)
            for p, w, part in zip(params, current, parts):
                p.copy_(w if part is None else w + scale * part.view_as(w).to(w.dtype))

    accepted = False
    try:
        before = float(held_out_loss())
        base = _samples(held_out_samples)
        split = base is not None and len(base) >= 4
        steps: list[RefitStep] = []
        if fisher:
            if batch is None:
                raise InputError("the Fisher steps need a batch of training samples")
            weights = dict(zip(names, params))
            ops = gradient_operators(model, loss_fn, weights, list(names), *batch)
            op = ops[names[0]] if len(names) == 1 else StackedGradients([ops[n] for n in names])
            steps = damped_steps(op, support, dampings)
            del ops, op
        nan = float("nan")
        candidates = [(step, t) for step in steps for t in scales] + [
            (RefitStep(nan, nan, delta, nan, nan, label), 1.0) for label, delta in extra]
        tried: list[dict] = []
        best: tuple[float, RefitStep, float, float | None, np.ndarray | None, dict] | None = None
        halves = split and choose_samples is not None
        for step, t in candidates:
            write(step.delta, t)
            value: float | None
            if halves:
                even = _samples(choose_samples)
                if even is None or len(even) != (len(base) + 1) // 2:
                    raise InputError("choose_samples must return the per-sample losses "
                                     "of the even-numbered held-out samples")
                value, values, select = None, None, float(even.mean())
            else:
                value = float(held_out_loss())
                values = _samples(held_out_samples) if split else None
                select = value if values is None else float(values[0::2].mean())
            entry: dict = ({"rho": step.rho, "scale": float(t)} if step.label is None
                           else {"candidate": step.label})
            entry.update(loss=value, select_loss=select)
            tried.append(entry)
            if math.isfinite(select) and (best is None or select < best[0]):
                best = (select, step, float(t), value, values, entry)
        if halves and best is not None:  # the chosen candidate on the whole set
            write(best[1].delta, best[2])
            value = best[5]["loss"] = float(held_out_loss())
            best = (*best[:3], value, _samples(held_out_samples), best[5])
        change, threshold = None, 0.0
        if best is not None and best[3] < before:
            if best[4] is not None and base is not None and len(best[4]) == len(base):
                diff = (best[4] - base)[1::2]
                change = float(diff.mean())
                if z > 0:
                    threshold = -z * float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
                accepted = change < threshold
            else:
                accepted = True
        if accepted:
            assert best is not None
            write(best[1].delta, best[2])
    finally:
        if not accepted:
            write(None, 0.0)
    after = float(held_out_loss())
    record = {"accepted": bool(accepted), "loss_before": before, "loss_after": after,
              "test_change": change, "threshold": threshold, "z": float(z),
              "split": bool(split), "samples": 0 if batch is None else int(len(batch[0])), "candidates": tried,
              "time_s": time.perf_counter() - t0}
    if best is not None:
        t = best[2]
        if best[1].label is not None:
            record.update(candidate=best[1].label, best_loss=best[3])
        else:
            record.update(rho=best[1].rho, lam=best[1].lam, scale=t,
                          predicted=t * best[1].gradient + 0.5 * t * t * best[1].curvature,
                          best_loss=best[3])
    return record


def _samples(fn: Callable[[], np.ndarray | None] | None) -> np.ndarray | None:
    values = None if fn is None else fn()
    return None if values is None else np.asarray(values, dtype=np.float64).copy()
