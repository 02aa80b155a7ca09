"""The language-model objectives of the iCBS engine (`pruning.engine`).

`RowReconstruction` (exact, per output row of one Linear): units are rows; row r's error
E_r(ŵ) = (ŵ − w)ᵀ H (ŵ − w) with H = XᵀX / N (damped). A block of row r with values
v = current weight where kept, dense weight where pruned, and pattern x gives
ŵ_B = v ∘ (1 − x); E is quadratic, so `pruning.block.block_problem` with g = ∇E =
2H(ŵ − w), Hessian 2H, γ = 1, λ = 0 is *exactly* the change of E (no held-out check
needed). Selection score: saliency v² H_jj. With an n:m pattern a block is whole groups
of m inputs (`_group_block`) and the group counts are kept by a penalty (checked again
by `admissible`).

`DecoderFisher` (the paper's): units are the Linears of one decoder block; gradient g and
empirical Fisher G_Bᵀ G_B / m of the LM loss from per-sample gradients
G = Σ_t δ_{s,t} x_{s,t}ᵀ (captured once per pass by `capture_fisher_inputs`; formed per
Linear when its blocks are posed). Selection score: OBD saliency w0² F_ii. The held-out
loss is the perplexity of calibration windows the gradients did not use. With m windows
the empirical Fisher has rank ≤ m (8 by default), so ``blend`` β mixes in a full-rank
curvature built from the same capture: the reconstruction Hessian weighted by the
output-gradient covariance (the Kronecker-factored Fisher, K-FAC),
F_kfac = T · Ā ⊗ S̄ with Ā = mean_{s,t} δ δᵀ (d_out²) and S̄ = mean_{s,t} x xᵀ (d_in²), which
is E_s[G_s G_sᵀ] when different positions' terms are uncorrelated. Block curvature
(1 − β) G_Bᵀ G_B / m + β F_kfac[B, B]: still a QCBO of the block.

`RowRefit` (per output row, with the least-squares re-fit of the surviving weights
interleaved): the row is kept at its re-fit optimum (a row is re-fit as its block is
applied, from the block's own Schur factors, so the next block sees the updated
weights), and a block B of row r is posed on the *re-fit-aware*
model: with K the kept set, C = B ∩ K, O = K ∖ C the kept weights outside the block, the
error after the optimal update of the weights in O, as a function of the block's weights
u_B, is exactly the quadratic

    E_O(u_B) = E_now + g_Bᵀ (u_B − ŵ_B) + (u_B − ŵ_B)ᵀ S (u_B − ŵ_B),
    S = H_BB − H_BO H_OO⁻¹ H_OB (Schur complement),  g = 2 H (ŵ − w)  (g_C = 0),

because ŵ is the optimum over K, so at u_B = ŵ_B the optimal u_O is ŵ_O (envelope
theorem). The block's weights take fixed values v (current ŵ_i where kept; the best
single re-entry value −g_i / (2 S_ii) where pruned) and a pattern x sets u_B = v ∘ (1 − x):
`pruning.block.block_problem(v, x_now, g_B, 2S, γ=1, λ=0)`. Its energy × scale is
E_O(v ∘ (1 − x)) − E_now, so (i) at x_now it is 0 = the exact change, and (ii) for every x
it is an *upper bound* on the exact change after re-fitting all surviving weights of the
row (that re-fit also frees the block's own kept weights; the bound fixes them at v).
Every applied answer therefore lowers the re-fitted error by at least its predicted drop.
With ``aware=False`` the block is posed on `RowReconstruction`'s exact no-re-fit model at
the re-fitted weights, and the re-fit follows the group (the same bound, with O fixed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import numpy as np
import torch
from scipy.linalg import lapack

from qcbo.errors import InputError
from qcbo.problem import Problem

from ..block import block_problem
from ..engine import Block, BlockSelector, Objective, SelectionPolicy
from .icbs import (_group_block, _groups_ok, _with_group_penalty, approx_refit_rows, refit_rows,
                   row_errors)

__all__ = ["RowReconstruction", "RowRefit", "DecoderFisher", "LM_POLICY", "trust_region"]

#: LM blocks are few against the weights of a Linear: no fixing, a FIFO tabu list.
LM_POLICY = SelectionPolicy(fix_frac_prune=0.0, fix_frac_keep=0.0, tabu_frac=0.4)


class _GroupSelector:
    """n:m blocks of one row: the most promising whole groups, each group used once."""

    def __init__(self, objective: "RowReconstruction", unit: int, block_size: int) -> None:
        self.objective, self.unit = objective, unit
        self.groups = max(1, block_size // objective.pattern[1])
        self.used: set[int] = set()

    def select(self, n: int, k: int) -> np.ndarray | None:
        obj = self.objective
        idx = _group_block(obj.saliency(self.unit), obj.keep_t[self.unit], obj.pattern,
                           self.groups, self.used)
        if idx is None:
            return None
        self.used.update(idx.tolist())
        return idx.numpy()

    def release(self, idx: np.ndarray) -> None:
        pass


class _LiveSelector(BlockSelector):
    """A row's `BlockSelector` that settles the objective (e.g. re-fits the rows the last
    group changed) and re-reads the row's score before every selection."""

    def __init__(self, objective: "RowReconstruction", unit: int, policy: SelectionPolicy,
                 block_size: int) -> None:
        objective.settle()
        super().__init__(objective.keep(unit), objective.score(unit), policy, block_size)
        self.objective, self.unit = objective, unit

    def select(self, n: int, k: int, score: np.ndarray | None = None) -> np.ndarray | None:
        self.objective.settle()
        return super().select(n, k, score=self.objective.score(self.unit))


class RowReconstruction(Objective):
    """Rows of one Linear: W0 dense (d_out, d_in), W current (zero where ~keep), keep
    bool, H damped XᵀX/N float64. `W` and `keep` are updated in place (float64 copies
    made here; read them back from the attributes).

    ``score``: "saliency" (v² H_jj, fixed at the start) or "flip" (the exact change of
    E_r from flipping one weight alone at the current weights, re-read before every
    selection: the pruned weights whose return gains most and the kept weights whose
    removal costs least enter a block).
    """

    def __init__(self, W0: torch.Tensor, W: torch.Tensor, keep: torch.Tensor, H: torch.Tensor,
                 *, name: str = "", pattern: tuple[int, int] | None = None,
                 score: Literal["saliency", "flip"] = "saliency") -> None:
        if score not in ("saliency", "flip"):
            raise InputError(f"score must be saliency or flip, got {score!r}")
        self.W0 = W0.to(torch.float64)
        self.W = W.to(torch.float64).clone()
        self.keep_t = keep.clone()
        self._keep_np = self.keep_t.numpy()  # shares memory with keep_t
        self.H = H
        self.diagH = torch.diagonal(H)
        self.layer, self.pattern, self.score_kind = name, pattern, score
        self.names = [f"{name}[{r}]" for r in range(self.W.shape[0])]
        # "flip" reads every row's gradient: all rows in one (d_out, d_in) x (d_in, d_in)
        # product, then only the rows whose weights changed (`_touch`), again in one product.
        self._batch = score == "flip"
        self._grad: torch.Tensor | None = None
        self._stale = torch.zeros(self.W.shape[0], dtype=torch.bool)

    def _touch(self, rows: Any) -> None:
        """Rows whose weights changed: their cached gradients are recomputed when read."""
        self._stale[rows] = True

    def settle(self) -> None:
        """Bring the weights to the state blocks are posed from (nothing to do here)."""

    def finish(self) -> None:
        """Bring the weights to their final state after the last group (`settle`)."""
        self.settle()

    def gradient(self, unit: int) -> torch.Tensor:
        """∇E_r = 2 H (ŵ_r − w_r), (d_in,) float64."""
        if not self._batch:
            return 2.0 * (self.H @ (self.W[unit] - self.W0[unit]))
        if self._grad is None:
            self._grad = 2.0 * ((self.W - self.W0) @ self.H)  # H is symmetric
            self._stale.zero_()
        elif self._stale[unit]:
            rows = torch.nonzero(self._stale).flatten()
            self._grad[rows] = 2.0 * ((self.W[rows] - self.W0[rows]) @ self.H)
            self._stale[rows] = False
        return self._grad[unit]

    def row_order(self) -> list[int]:
        """Rows by decreasing error (the order iCBS visits them)."""
        errors = row_errors(self.W0, self.W, self.H)
        return torch.argsort(errors, descending=True, stable=True).tolist()

    def values(self, unit: int) -> torch.Tensor:
        return torch.where(self.keep_t[unit], self.W[unit], self.W0[unit])

    def saliency(self, unit: int) -> torch.Tensor:
        v = self.values(unit)
        return v * v * self.diagH

    def keep(self, unit: int) -> np.ndarray:
        return self._keep_np[unit]

    def score(self, unit: int) -> np.ndarray:
        if self.score_kind == "saliency":
            return self.saliency(unit).numpy()
        # Flip i alone by Δ (kept: −v_i, pruned: +v_i): ΔE = g_i Δ + H_ii Δ².
        v, g = self.values(unit), self.gradient(unit)
        kept = self.keep_t[unit]
        change = torch.where(kept, -g * v, g * v) + self.diagH * v * v
        return torch.where(kept, change, -change).numpy()

    def selector(self, unit: int, policy: SelectionPolicy, block_size: int) -> Any:
        if self.pattern is not None:
            return _GroupSelector(self, unit, block_size)
        if self.score_kind == "flip":
            return _LiveSelector(self, unit, policy, block_size)
        return super().selector(unit, policy, block_size)

    def problem(self, block: Block, step: int) -> Problem:
        r, idx = block.unit, torch.from_numpy(block.indices)
        v = self.values(r)[idx]
        block.data = v
        g = (self.gradient(r)[idx] if self._batch
             else 2.0 * (self.H[idx] @ (self.W[r] - self.W0[r])))
        problem = block_problem(v.numpy(), block.x_current, g.numpy(),
                                (2.0 * self.H[idx[:, None], idx]).numpy(), gamma=1.0, lam=0.0,
                                metadata={"layer": self.layer, "row": int(r), "step": step,
                                          "objective": "reconstruction"})
        return problem if self.pattern is None else _with_group_penalty(problem, self.pattern)

    def admissible(self, block: Block, x: np.ndarray) -> bool:
        return self.pattern is None or _groups_ok(x, self.pattern)

    def apply(self, block: Block, x: np.ndarray) -> None:
        r, idx = block.unit, torch.from_numpy(block.indices)
        pruned = torch.from_numpy(np.asarray(x).astype(np.bool_))
        self.W[r, idx] = torch.where(pruned, torch.zeros_like(block.data), block.data)
        self.keep_t[r, idx] = ~pruned
        self._touch(r)


def _cholesky_upper(A: np.ndarray) -> np.ndarray:
    """U (n, n), Fortran order, with Uᵀ U = A, for a symmetric positive-definite float64
    A in C order (overwritten): LAPACK's dpotrf through scipy, given Aᵀ = A as a Fortran
    array, so nothing is copied. On one thread it (with `_solve_lt`) is about 1.5x faster
    here than torch's float64 Cholesky factorisation and triangular solve at n = 460-750,
    a row's kept weights outside its block."""
    U, info = lapack.dpotrf(A.T, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotrf: the leading minor of order {info} is not "
                                    "positive definite")
    return U


def _solve_lt(U: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Uᵀ⁻¹ B (= L⁻¹ B with L = Uᵀ) for U from `_cholesky_upper`; B (n,) or (n, m)."""
    X, info = lapack.dtrtrs(U, B, lower=0, trans=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dtrtrs: singular factor (info {info})")
    return X


def _solve_u(U: np.ndarray, B: np.ndarray) -> np.ndarray:
    """U⁻¹ B for U from `_cholesky_upper`; B (n,) or (n, m)."""
    X, info = lapack.dtrtrs(U, B, lower=0, trans=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dtrtrs: singular factor (info {info})")
    return X


@dataclass
class _Factors:
    """A posed block's Schur factors: O (kept outside the block), U = chol(H_OO) upper
    (Uᵀ U = H_OO, numpy), Y = U⁻ᵀ H_OB (numpy), S, and the row's weights when posed."""

    O: torch.Tensor
    U: np.ndarray | None
    Y: np.ndarray | None
    S: torch.Tensor | None = None
    row: torch.Tensor | None = None

    def refit(self, b: torch.Tensor, idx: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The least-squares row on O ∪ idx[kept] (b = H w, (d_in,)): block elimination
        of O, so the cost is O(|O|²), not a new factorisation."""
        C = idx[kept]
        S_CC = self.S[kept][:, kept]
        out = torch.zeros_like(b)
        if self.U is None:
            out[C] = torch.linalg.solve(S_CC, b[C])
            return out
        Y_C = self.Y[:, kept.numpy()]
        z = _solve_lt(self.U, b[self.O].numpy())
        u_C = torch.linalg.solve(S_CC, b[C] - torch.from_numpy(Y_C.T @ z))
        u_O = _solve_u(self.U, z - Y_C @ u_C.numpy())
        out[self.O], out[C] = torch.from_numpy(u_O), u_C
        return out


class RowRefit(RowReconstruction):
    """Rows of one Linear kept at their least-squares re-fit; blocks posed on the
    re-fit-aware model (``aware=True``) or on the fixed-weight model followed by a re-fit
    (see the module docstring). Same arguments as `RowReconstruction`; W is re-fit on
    ``keep`` before the first block. "aware" re-fits a row as its block is applied, from
    the block's Schur factors (kept until the next `refresh`); otherwise rows changed by
    a group are re-fit (`settle`) before the next group is selected, and after the last
    group by calling `settle`. Selection score ("flip"): kept ŵ_j² H_jj (removal without
    re-fit, since g_j = 0), pruned g_i² / (4 H_ii) (best single return, no re-fit).
    ``lazy`` ("aware", start not fitted): a row is re-fit when its first block is posed,
    by the block elimination of that block's factors (one factorisation per row, not
    two), and selected until then on an approximate re-fit (`approx_refit_rows`: a few
    batched CG steps); call `finish` after the last group; ``refit_error`` sums the
    start re-fit's (exact) row errors.
    """

    def __init__(self, W0: torch.Tensor, W: torch.Tensor, keep: torch.Tensor, H: torch.Tensor,
                 *, name: str = "", pattern: tuple[int, int] | None = None,
                 aware: bool = True, fitted: bool = False, lazy: bool = False) -> None:
        super().__init__(W0, W, keep, H, name=name, pattern=pattern, score="flip")
        self.aware = bool(aware)
        if lazy and (fitted or not aware):
            raise InputError("lazy applies to the re-fit-aware model of an unfitted start")
        self._H_np = self.H.contiguous().numpy()
        self._b = self.W0 @ self.H  # row r: H w0_r, the right-hand side of its re-fits
        rows = self.W.shape[0]
        # ``fitted``: W is already `refit_rows(W0, keep, H)` (the caller's), not re-fit again.
        # ``lazy``: each row is re-fit when its first block is posed, from that block's
        # Schur factors (no factorisation of its own); until then it is selected on the
        # start's weights. `finish` re-fits the rows no block reached.
        self.lazy = bool(lazy)
        if self.lazy:  # selection scores from an approximate re-fit (a few batched CG steps)
            self.W = approx_refit_rows(self.W0, self.keep_t, self.H, self.W)
        self.dirty = torch.full((rows,), not (fitted or lazy), dtype=torch.bool)
        self.pending = torch.full((rows,), self.lazy, dtype=torch.bool)
        #: Σ_r E_r of the start mask re-fitted, summed as rows are re-fit (lazy only).
        self.refit_error = 0.0
        self._factors: dict[int, _Factors] = {}

    def settle(self) -> None:
        """Re-fit every row a group changed (all rows at the start, unless lazy)."""
        rows = torch.nonzero(self.dirty).flatten()
        if rows.numel():
            self.W[rows] = refit_rows(self.W0[rows], self.keep_t[rows], self.H)
            self.dirty[rows] = False
            self._touch(rows)

    def finish(self) -> None:
        """`settle`, and re-fit the rows of a lazy start that no block reached."""
        rows = torch.nonzero(self.pending).flatten()
        if rows.numel():
            self.W[rows] = refit_rows(self.W0[rows], self.keep_t[rows], self.H)
            self.refit_error += float(row_errors(self.W0[rows], self.W[rows], self.H).sum())
            self.pending[rows] = False
            self._touch(rows)
        self.settle()

    def score(self, unit: int) -> np.ndarray:
        g, w = self.gradient(unit), self.W[unit]
        return torch.where(self.keep_t[unit], w * w * self.diagH,
                           g * g / (4.0 * self.diagH)).numpy()

    def schur(self, unit: int, idx: torch.Tensor) -> tuple[torch.Tensor, _Factors]:
        """S = H_BB − H_BO H_OO⁻¹ H_OB (n, n) float64 for block ``idx`` of row ``unit``,
        with the factors that re-fit the row exactly once the block's pattern is chosen."""
        outside = self.keep_t[unit].clone()
        outside[idx] = False
        O = torch.nonzero(outside).flatten()
        H_BB = self.H[idx[:, None], idx]
        if O.numel() == 0:
            return H_BB, _Factors(O, None, None)
        # numpy's np.ix_ gathers the two sub-blocks faster than torch's row slab (same values)
        # (and LAPACK through scipy factorises about 1.5x faster than torch on one thread)
        on, bn = O.numpy(), idx.numpy()
        U = _cholesky_upper(self._H_np[np.ix_(on, on)])
        Y = _solve_lt(U, self._H_np[np.ix_(on, bn)])
        S = H_BB - torch.from_numpy(Y.T @ Y)
        return (S + S.T) / 2.0, _Factors(O, U, Y)

    def problem(self, block: Block, step: int) -> Problem:
        if not self.aware:
            problem = super().problem(block, step)
            problem.metadata["objective"] = "reconstruction-refit-after"
            return problem
        r, idx = block.unit, torch.from_numpy(block.indices)
        S, factors = self.schur(r, idx)
        factors.S = S
        if self.pending[r]:  # a lazy start: the row's re-fit, from this block's factors
            w = factors.refit(self._b[r], idx, self.keep_t[r, idx])
            self.W[r] = w
            d = w - self.W0[r]
            self.refit_error += float(d @ (self.H @ d))
            self.pending[r] = False
            self._touch(r)
        g = self.gradient(r)[idx]
        v = torch.where(self.keep_t[r, idx], self.W[r, idx], -g / (2.0 * torch.diagonal(S)))
        factors.row = self.W[r].clone()
        block.data = v
        self._factors[id(block)] = factors
        problem = block_problem(v.numpy(), block.x_current, g.numpy(), (2.0 * S).numpy(),
                                gamma=1.0, lam=0.0,
                                metadata={"layer": self.layer, "row": int(r), "step": step,
                                          "objective": "reconstruction-refit-bound"})
        return problem if self.pattern is None else _with_group_penalty(problem, self.pattern)

    def refresh(self) -> None:
        self._factors.clear()
        self.settle()

    def apply(self, block: Block, x: np.ndarray) -> None:
        factors = self._factors.get(id(block)) if self.aware else None
        super().apply(block, x)
        r = block.unit
        if factors is None:
            self.dirty[r] = True
        elif np.array_equal(np.asarray(x), block.x_current):
            self.W[r] = factors.row  # the pattern it was posed at, with its re-fit
        else:
            self.W[r] = factors.refit(self._b[r], torch.from_numpy(block.indices),
                                      torch.from_numpy(np.asarray(x) == 0))
        self._touch(r)


def trust_region(problem: Problem, x_current: np.ndarray, weight: float) -> Problem:
    """The block QCBO plus ``weight`` (problem units) per flipped weight: energy(x) +
    weight · Σ_i (x_i − c_i)², with Σ_i (x_i − c_i)² = Σ_i x_i (1 − 2 c_i) + Σ_i c_i
    (x_i² = x_i), a linear term, so the result is still a QCBO; 0 at x = c, so the current
    pattern keeps energy 0 and an answer is applied only if its model gain pays for its
    flips: a trust region on the size of the step."""
    c = np.asarray(x_current, dtype=np.float64)
    Q = problem.Q.copy()
    Q[np.diag_indices_from(Q)] += weight * (1.0 - 2.0 * c)
    return problem.replace(Q=Q, offset=problem.offset + weight * float(c.sum()))


class DecoderFisher(Objective):
    """The Linears of one decoder block with their captured (X, δ).

    ``linears``: name -> (module, W0 dense, keep bool); ``captured``: name -> (X (m, T,
    d_in), δ (m, T, d_out)); ``held_out_loss``: () -> perplexity of held-out windows, or
    None for no check; ``blend`` β in [0, 1]: weight of the K-FAC curvature (module docs).
    Weights are w0 where kept, 0 where pruned (updated in place).
    """

    def __init__(self, linears: Mapping[str, tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]],
                 captured: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, gamma: float,
                 lam: float, held_out_loss: Callable[[], float] | None = None,
                 trust: float = 0.0, blend: float = 0.0) -> None:
        if not trust >= 0.0:
            raise InputError(f"trust must be >= 0, got {trust}")
        if not 0.0 <= blend <= 1.0:
            raise InputError(f"blend must be in [0, 1], got {blend}")
        self.trust, self.blend = float(trust), float(blend)
        self._kfac: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.names = list(linears)
        self.modules = [linears[n][0] for n in self.names]
        self.w0 = [linears[n][1].reshape(-1).double() for n in self.names]
        self._keep = [linears[n][2].reshape(-1).numpy().copy() for n in self.names]
        self.shapes = [linears[n][2].shape for n in self.names]
        self.captured = dict(captured)
        self.gamma, self.lam = float(gamma), float(lam)
        self.held_out_loss = held_out_loss
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._scores: dict[int, np.ndarray] = {}

    def _gradients(self, unit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(G (m, P), g (P,)) of one Linear, formed once per objective (a decoder block's
        Linears: m x their weights in float64, e.g. 8 x 884k x 8 B = 57 MB per Linear)."""
        if unit not in self._cache:
            x, delta = self.captured[self.names[unit]]
            G = torch.einsum("std,ste->sde", delta.double(), x.double()).reshape(x.shape[0], -1)
            self._cache[unit] = (G, G.mean(dim=0))
        return self._cache[unit]

    def _kronecker(self, unit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(T · Ā (d_out, d_out), S̄ (d_in, d_in)) float64 of one Linear: F_kfac = T Ā ⊗ S̄."""
        if unit not in self._kfac:
            x, delta = self.captured[self.names[unit]]
            positions = int(x.shape[1])
            X = x.reshape(-1, x.shape[-1]).double()
            D = delta.reshape(-1, delta.shape[-1]).double()
            self._kfac[unit] = (D.T @ D * (positions / D.shape[0]), X.T @ X / X.shape[0])
        return self._kfac[unit]

    def curvature(self, unit: int, idx: torch.Tensor) -> torch.Tensor:
        """The block's curvature (n, n) float64 for flat weight indices ``idx`` (row-major):
        (1 − β) G_Bᵀ G_B / m + β (T Ā ⊗ S̄)[B, B]."""
        G, _ = self._gradients(unit)
        Gb = G[:, idx]
        C = Gb.T @ Gb / G.shape[0]
        if self.blend:
            A, S = self._kronecker(unit)
            d_in = int(S.shape[0])
            r, c = idx // d_in, idx % d_in
            C = (1.0 - self.blend) * C + self.blend * A[r][:, r] * S[c][:, c]
        return C

    def keep(self, unit: int) -> np.ndarray:
        return self._keep[unit]

    def score(self, unit: int) -> np.ndarray:
        if unit not in self._scores:
            G, _ = self._gradients(unit)
            diag = (G * G).mean(dim=0)
            if self.blend:
                A, S = self._kronecker(unit)
                diag = (1.0 - self.blend) * diag + self.blend * torch.outer(
                    A.diagonal(), S.diagonal()).reshape(-1)
            self._scores[unit] = (self.w0[unit] ** 2 * diag).numpy()
        return self._scores[unit]

    def keep_tensor(self, unit: int) -> torch.Tensor:
        return torch.from_numpy(self._keep[unit].copy()).view(self.shapes[unit])

    def problem(self, block: Block, step: int) -> Problem:
        _, g = self._gradients(block.unit)
        idx = torch.from_numpy(block.indices)
        problem = block_problem(self.w0[block.unit][idx].numpy(), block.x_current,
                                g[idx].numpy(), self.curvature(block.unit, idx).numpy(),
                                gamma=self.gamma, lam=self.lam,
                                metadata={"layer": self.names[block.unit], "step": step,
                                          "objective": "fisher", "trust": self.trust,
                                          "blend": self.blend})
        return trust_region(problem, block.x_current, self.trust) if self.trust else problem

    @torch.no_grad()
    def apply(self, block: Block, x: np.ndarray) -> None:
        keep = np.asarray(x) == 0
        self._keep[block.unit][block.indices] = keep
        weight = self.modules[block.unit].weight
        idx = torch.from_numpy(block.indices)
        w0 = self.w0[block.unit][idx]
        weight.view(-1)[idx] = (w0 * torch.from_numpy(keep).double()).to(weight.dtype)

    def loss(self) -> float | None:
        return None if self.held_out_loss is None else float(self.held_out_loss())
