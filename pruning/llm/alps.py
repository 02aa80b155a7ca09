"""ALPS (Meng et al., NeurIPS 2024): one-shot pruning of a Linear by ADMM, then a PCG re-fit.

Written from the paper. Objective, as SparseGPT's: ‖X(W − Ŵ)ᵀ‖² = tr(Δ H Δᵀ) with
Δ = Ŵ − W (d_out, d_in) and H = XᵀX (d_in, d_in), damped as in `sparsegpt.damped_hessian`.

1. Scaling. With s_j = √H_jj, W̃ = W·diag(s) and H̃ = diag(1/s) H diag(1/s) (unit diagonal),
   the objective is unchanged, and magnitude in the scaled space is |W_ij|·‖X_j‖ (Wanda's
   score). Everything below is in scaled coordinates.
2. ADMM on  min ½ tr(Δ H̃ Δᵀ) + ι_S(D)  s.t.  Ŵ = D,  S = the allowed supports (top-k of
   the layer for a density, n of every m consecutive inputs per row for n:m). Scaled form:

       Ŵ ← (W̃ H̃ + ρ(D − V)) (H̃ + ρI)⁻¹      (one eigendecomposition H̃ = QΛQᵀ for all ρ)
       D ← Π_S(Ŵ + V)                         (keep the largest |·| the pattern allows)
       V ← V + Ŵ − D

   ρ grows with the support's stability: every ``update_every`` iterations the number of
   positions s_t whose membership changed is counted; ρ ×= 1.3 if s_t ≥ 0.1 k, ×1.2 if
   s_t ≥ 0.005 k, ×1.1 otherwise while s_t > 0 (k = weights kept). ADMM stops once the
   support has not changed over a check after ρ has grown, or after ``max_iter``.
3. Re-fit on the fixed support: every row solves H̃_KK ŵ_K = (W̃ H̃)_K by preconditioned
   conjugate gradients (all rows at once, Jacobi preconditioner, warm start from D).

`admm_support` and `pcg_refit` are the two steps; `alps` chains them and maps back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sparsegpt import damped_hessian

__all__ = ["ALPSInfo", "project", "admm_support", "pcg_refit", "alps"]


@dataclass
class ALPSInfo:
    """What one ALPS solve did: ADMM iterations, final ρ, PCG iterations and residual."""

    admm_iterations: int = 0
    rho: float = 0.0
    pcg_iterations: int = 0
    pcg_residual: float = 0.0


def project(Z: torch.Tensor, keep_count: int | None, pattern: tuple[int, int] | None,
            forbidden: torch.Tensor | None = None) -> torch.Tensor:
    """Keep mask (bool, Z's shape) of Π_S: the ``keep_count`` largest |Z| of the matrix,
    or the n largest of every m consecutive entries per row. ``forbidden`` (d_in,) bool:
    columns pruned first (dead inputs)."""
    score = Z.abs()
    if forbidden is not None and bool(forbidden.any()):
        score = score.masked_fill(forbidden[None, :], -1.0)
    keep = torch.zeros_like(Z, dtype=torch.bool)
    if pattern is not None:
        n, m = pattern
        d_out, d_in = Z.shape
        groups = score.reshape(d_out, d_in // m, m)
        idx = torch.topk(groups, n, dim=-1, sorted=False).indices
        keep.view(d_out, d_in // m, m).scatter_(-1, idx, True)
        return keep
    if keep_count is None:
        raise ValueError("project needs keep_count or pattern")
    idx = torch.topk(score.reshape(-1), keep_count, sorted=False).indices
    keep.view(-1)[idx] = True
    return keep


def admm_support(W: torch.Tensor, H: torch.Tensor, *, keep_count: int | None,
                 pattern: tuple[int, int] | None = None, rho: float = 0.1,
                 max_iter: int = 300, update_every: int = 3, stop_change: float = 0.0,
                 forbidden: torch.Tensor | None = None,
                 info: ALPSInfo | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, keep): ADMM's sparse iterate (zeros off ``keep``) in W's dtype.

    ``keep_count``: weights kept of the whole matrix (None with ``pattern``);
    ``stop_change``: fraction of ``keep_count`` of support changes per check that counts
    as holding still (0: none).

    ``W`` (d_out, d_in) and ``H`` (d_in, d_in, positive definite) in scaled coordinates;
    the iterations run in W's dtype (float32 is enough to choose a support).
    """
    dtype = W.dtype
    evals, Q = torch.linalg.eigh(H.to(torch.float64))
    evals, Q = evals.to(dtype), Q.to(dtype)
    G = W @ H.to(dtype)  # the data term's right-hand side W̃ H̃
    D = W.clone()
    keep = project(D, keep_count, pattern, forbidden)
    D = D * keep
    V = torch.zeros_like(W)
    k = int(keep.sum())
    grown = False
    last_keep = keep
    it = 0
    for it in range(1, max_iter + 1):
        What = ((G + rho * (D - V)) @ Q) / (evals + rho)[None, :] @ Q.T
        Z = What + V
        keep = project(Z, keep_count, pattern, forbidden)
        D = Z * keep
        V = V + What - D
        if it % update_every == 0:
            changed = int((keep != last_keep).sum())
            last_keep = keep
            if changed <= stop_change * k and grown:
                break
            if changed >= 0.1 * k:
                rho *= 1.3
            elif changed >= 0.005 * k:
                rho *= 1.2
            elif changed > 0:
                rho *= 1.1
            else:  # stable before ρ ever grew: push towards feasibility
                rho *= 1.3
            grown = True
    if info is not None:
        info.admm_iterations, info.rho = it, float(rho)
    return D, keep


def pcg_refit(W: torch.Tensor, H: torch.Tensor, keep: torch.Tensor, *,
              start: torch.Tensor | None = None, max_iter: int = 200, tol: float = 1e-10,
              info: ALPSInfo | None = None) -> torch.Tensor:
    """Least-squares weights on a fixed support, by preconditioned CG (float64).

    Minimises tr((Ŵ − W) H (Ŵ − W)ᵀ) over Ŵ with Ŵ = 0 off ``keep``: for every row r,
    H_KK ŵ_K = (H w_r)_K with K = keep[r]. All rows iterate together (row-wise step
    sizes); Jacobi preconditioner 1/H_jj. Stops when every row's residual norm is below
    ``tol`` times its right-hand side's norm, or after ``max_iter`` iterations.
    """
    H = H.to(torch.float64)
    M = keep.to(torch.float64)
    B = (W.to(torch.float64) @ H) * M
    X = (start.to(torch.float64) * M) if start is not None else torch.zeros_like(B)
    inv_diag = 1.0 / torch.diagonal(H)
    R = B - (X @ H) * M
    Z = R * inv_diag[None, :]
    P = Z.clone()
    rz = (R * Z).sum(dim=1)
    scale = torch.linalg.vector_norm(B, dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    it = 0
    residual = float((torch.linalg.vector_norm(R, dim=1) / scale).max())
    while residual > tol and it < max_iter:
        it += 1
        AP = (P @ H) * M
        pap = (P * AP).sum(dim=1)
        alpha = torch.where(pap > 0, rz / torch.where(pap > 0, pap, 1.0), 0.0)
        X = X + alpha[:, None] * P
        R = R - alpha[:, None] * AP
        Z = R * inv_diag[None, :]
        rz_new = (R * Z).sum(dim=1)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        P = Z + beta[:, None] * P
        rz = rz_new
        residual = float((torch.linalg.vector_norm(R, dim=1) / scale).max())
    if info is not None:
        info.pcg_iterations, info.pcg_residual = it, residual
    return X * M


def alps(weight: torch.Tensor, xtx: torch.Tensor, *, density: float = 0.5,
         pattern: tuple[int, int] | None = None, damp: float = 0.01, rho: float = 0.1,
         max_iter: int = 300, update_every: int = 3, pcg_iter: int = 100,
         pcg_tol: float = 1e-4, stop_change: float = 0.0,
         dtype: torch.dtype = torch.float32, info: ALPSInfo | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned weight (d_out, d_in) in weight's dtype, keep mask bool) for one Linear.

    ``xtx``: (d_in, d_in) Σ x xᵀ over calibration tokens (any positive scale).
    ``density``: fraction kept of the whole matrix (exact: round(density·numel));
    ``pattern=(n, m)`` keeps n of every m consecutive inputs of each row instead.
    ``dtype``: of the ADMM iterations (the re-fit is float64). ``pcg_tol``: relative
    residual per row that ends the re-fit (1e-4 leaves the layer error unchanged to four
    digits on SmolLM2 and costs a tenth of a tight solve).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    d_in = weight.shape[1]
    if pattern is not None and d_in % pattern[1]:
        raise ValueError(f"pattern {pattern[0]}:{pattern[1]} needs d_in divisible by "
                         f"{pattern[1]}, got {d_in}")
    H, dead = damped_hessian(xtx, damp)
    s = torch.sqrt(torch.diagonal(H))
    Hs = H / s[:, None] / s[None, :]
    Ws = weight.detach().to(torch.float64) * s[None, :]
    keep_count = None if pattern is not None else round(density * Ws.numel())
    D, keep = admm_support(Ws.to(dtype), Hs, keep_count=keep_count, pattern=pattern, rho=rho,
                           max_iter=max_iter, update_every=update_every,
                           stop_change=stop_change, forbidden=dead,
                           info=info)
    Wfit = pcg_refit(Ws, Hs, keep, start=D, max_iter=pcg_iter, tol=pcg_tol, info=info)
    W = Wfit / s[None, :]
    W[~keep] = 0.0
    return W.to(weight.dtype), keep
