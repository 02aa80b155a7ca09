"""The per-block QCBO of iCBS (pure numpy; see ../shared/ICBS.md).

A block holds n weights with dense values w0 (n,), current values w_c = w0 * (1 - x_c)
for the current pruning pattern x_c (x_i = 1: weight i pruned), the loss gradient g (n,)
and a Hessian block H (n, n) at w_c. Choosing a new pattern x gives the weights
w0 * (1 - x), i.e. the change delta = -(dw + x * w0) with dw = w_c - w0, and the Taylor model

    dL(delta) = gamma g.delta + 1/2 delta H delta + lambda |delta|^2.

Expanding with x_i^2 = x_i gives dL = x Q x + const with

    Q     = diag(w0 * (H dw)) + 1/2 diag(w0) H diag(w0) - gamma diag(w0 * g)
            + lambda diag(w0 * (2 dw + w0))
    const = 1/2 dw H dw - gamma g.dw + lambda |dw|^2

and the constraint sum(x) = k with k = sum(x_c), so a block never changes its layer's
density. At x = x_c the change is zero, so the current pattern is a feasible warm start
of energy 0 (in the original scale).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from qcbo.problem import Problem

__all__ = ["taylor_change", "block_qcbo", "block_problem"]


def taylor_change(
    delta: np.ndarray, g: np.ndarray, H: np.ndarray, *, gamma: float, lam: float
) -> float:
    """gamma g.delta + 1/2 delta H delta + lambda |delta|^2 for one change delta (n,)."""
    delta = np.asarray(delta, dtype=np.float64)
    return float(gamma * g @ delta + 0.5 * delta @ H @ delta + lam * delta @ delta)


def block_qcbo(
    w0: np.ndarray,
    x_current: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
    *,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, float]:
    """(Q (n, n) symmetric, const) such that x Q x + const = the Taylor model at w0 * (1 - x)."""
    w0 = np.asarray(w0, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    H = (H + H.T) / 2.0
    dw = -np.asarray(x_current, dtype=np.float64) * w0
    Q = 0.5 * (w0[:, None] * H * w0[None, :])
    diag = w0 * (H @ dw) - gamma * w0 * g + lam * w0 * (2.0 * dw + w0)
    Q[np.diag_indices_from(Q)] += diag
    const = 0.5 * dw @ H @ dw - gamma * g @ dw + lam * dw @ dw
    return Q, float(const)


def block_problem(
    w0: np.ndarray,
    x_current: np.ndarray,
    g: np.ndarray,
    H: np.ndarray,
    *,
    gamma: float,
    lam: float,
    rescale: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> Problem:
    """The block QCBO as a `Problem` with ``k = sum(x_current)``.

    With ``rescale`` Q and the constant are divided by the mean |non-zero entry| of Q,
    so solvers with fixed temperature schedules see unit-sized coefficients; the factor
    is ``metadata["scale"]`` and ``energy * scale`` is the Taylor change in loss units.
    """
    Q, const = block_qcbo(w0, x_current, g, H, gamma=gamma, lam=lam)
    scale = 1.0
    if rescale:
        nonzero = np.abs(Q[Q != 0])
        if nonzero.size:
            scale = float(nonzero.mean())
    meta = dict(metadata or {})
    meta.update({"scale": scale, "gamma": float(gamma), "lambda": float(lam)})
    k = int(np.asarray(x_current).sum())
    return Problem(Q / scale, const / scale, k, metadata=meta)
