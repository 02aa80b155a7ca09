"""SparseGPT (Frantar & Alistarh, 2023): prune a Linear with OBS updates, column by column.

Implemented from the paper's Algorithm 1. Objective: ‖(W − Ŵ)X‖² with H = XᵀX (d_in, d_in).
With the damped H (H + damp·mean(diag H)·I) and U the upper Cholesky factor of H⁻¹,
columns are visited left to right. Removing column j's pruned entries and compensating
the not-yet-visited columns of the same row is the OBS update

    err = (w_j − m_j ∘ w_j) / U_jj,     W[:, j:] −= err ⊗ U[j, j:].

Updates are applied lazily: within a block of ``blocksize`` columns immediately, to the
columns right of the block once per block (one matrix product). Masks are chosen
adaptively: for each block of columns (unstructured) or each group of m columns (n:m),
from the current weights with the OBS saliency w² / U_jj².

Unstructured selection is global within each column block (the paper's choice), so row
densities vary a little while the layer density is exact up to rounding per block.
"""

from __future__ import annotations

import torch

from ..lsq import damped_hessian

__all__ = ["damped_hessian", "inverse_cholesky_upper", "smallest_stable", "sparsegpt"]


def inverse_cholesky_upper(H: torch.Tensor) -> torch.Tensor:
    """Upper-triangular U with UᵀU = H⁻¹ (positive diagonal), from one Cholesky.

    With J the order reversal, L the lower Cholesky factor of J H J and U = J L⁻¹ J:
    UᵀU = J L⁻ᵀ L⁻¹ J = J (J H J)⁻¹ J = H⁻¹, and J (lower) J is upper triangular. The
    textbook route (Cholesky of H, its inverse, Cholesky again) needs two factorisations.
    """
    flip = torch.flip(H, dims=(0, 1))
    L = torch.linalg.cholesky(flip)
    eye = torch.eye(H.shape[0], dtype=H.dtype)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False)
    return torch.flip(Linv, dims=(0, 1))


def smallest_stable(score: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the ``count`` smallest entries of the 1-D ``score``, ties going to
    the lower index: the first ``count`` of a stable ascending argsort, found with one
    selection (kthvalue) instead of a sort."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    if count <= 0:
        return mask
    if count >= score.numel():
        return ~mask
    threshold = torch.kthvalue(score, count).values
    below = score < threshold
    ties = torch.nonzero(score == threshold).flatten()
    mask |= below
    mask[ties[: count - int(below.sum())]] = True
    return mask


def sparsegpt(weight: torch.Tensor, xtx: torch.Tensor, *, density: float = 0.5,
              pattern: tuple[int, int] | None = None, blocksize: int = 128,
              damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned weight (d_out, d_in) in weight's dtype, keep mask bool) for one Linear.

    ``xtx``: (d_in, d_in) Σ x xᵀ over calibration tokens. ``pattern=(n, m)`` keeps n of
    every m consecutive inputs of each row (density is then ignored).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    W = weight.detach().to(torch.float64).clone()
    d_out, d_in = W.shape
    if pattern is not None and (blocksize % pattern[1] or d_in % pattern[1]):
        raise ValueError(f"pattern {pattern} needs blocksize and d_in divisible by {pattern[1]}")
    H, dead = damped_hessian(xtx, damp)
    W[:, dead] = 0.0
    U = inverse_cholesky_upper(H)
    keep = torch.ones_like(W, dtype=torch.bool)
    for i1 in range(0, d_in, blocksize):
        i2 = min(i1 + blocksize, d_in)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        err1 = torch.zeros_like(W1)
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        diag = torch.diagonal(U1)
        if pattern is None:
            saliency = (W1 ** 2 / diag[None, :] ** 2).reshape(-1)
            n_prune = int(round((1.0 - density) * saliency.numel()))
            prune1.view(-1)[:] = smallest_stable(saliency, n_prune)
        for j in range(i2 - i1):
            if pattern is not None and j % pattern[1] == 0:
                n, m = pattern
                sal = W1[:, j:j + m] ** 2 / diag[None, j:j + m] ** 2
                order = torch.argsort(sal, dim=1, stable=True)
                prune1[:, j:j + m].scatter_(1, order[:, : m - n], True)
            w = W1[:, j]
            q = w.masked_fill(prune1[:, j], 0.0)
            err = (w - q) / U1[j, j]
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]
            W1[:, j] = q
            err1[:, j] = err
        W[:, i1:i2] = W1
        keep[:, i1:i2] = ~prune1
        W[:, i2:] -= err1 @ U[i1:i2, i2:]
    keep &= ~dead[None, :]
    W[~keep] = 0.0
    return W.to(weight.dtype), keep
