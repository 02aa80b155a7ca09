"""CHITA: one-shot pruning as sparse regression on per-sample gradients (Benbaki et al. 2023).

Written from the paper's mathematics ("Fast as CHITA: Neural Network Pruning with
Combinatorial Optimization", ICML 2023); no code is copied.

The model. With w̄ the dense weights, G the N x p matrix of per-sample loss gradients at
w̄ (row s: the gradient of sample s's loss) and d = w - w̄,

    f(w) = (1 / (2N)) ||G d||^2 + (lam / 2) ||d||^2          subject to  ||w||_0 <= k.

The first term is ½ dᵀ F d with F = GᵀG / N the empirical Fisher, the usual stand-in for
the Hessian of the mean loss, so f is a predicted loss increase in the loss's own units
(nats for cross-entropy) plus the ridge. Ridge convention: ``lam / 2`` multiplies the
squared distance, i.e. the paper's ``(N lam / 2) ||w - w̄||^2`` beside ``½ ||G d||^2``
divided by N. The gradient term ∇L(w̄)ᵀ d is left out (w̄ is trained, ∇L ≈ 0).

The solve (`solve_sparse_quadratic`), on one block of weights (a layer for budget
"layer", all prunable weights for "global"):

1. start from the magnitude mask H_k(w̄) (w̄ kept on the k largest |w̄|), so the answer
   is never worse than magnitude pruning on the same model;
2. iterative hard thresholding w <- H_k(w - eta ∇f(w)), eta from a backtracking line
   search that accepts the first step that does not increase f (one exists once
   eta <= 1/L: the quadratic majoriser equals f at w and H_k minimises it over k-sparse
   points); the first eta is 1 / L, L the top eigenvalue of GᵀG/N + lam I by power
   iteration (with a 5 % margin), each later search starts at twice the last eta;
3. active-set refinement: f minimised exactly over the weights of the support (the rest
   fixed at 0) by conjugate gradients on the normal equations
   (G_SᵀG_S / N + lam I) d_S = -G_Sᵀ G d_{S^c} / N. Then up to 3 rounds of swaps: from
   the refined point, IHT steps with a ladder of step sizes (eta * 4^j, j < 5) propose
   supports; each gets 25 CG steps, the best is refined fully and kept if it lowers f.
   CG decreases the quadratic monotonically and a result is kept only if f did not
   increase, so refinement never raises f. A full refinement is solved directly instead
   of by CG when that is cheaper (N·|S| <= 2·300·p, i.e. almost always for N = 512): by
   Woodbury, d_S = -G_Sᵀ (G_S G_Sᵀ + N lam I)⁻¹ G d_{S^c}, one N x N Cholesky (on
   fmnist-mlp-pm1 at lam 1e-4, CG stopped at its 300-step cap in every CHITA++ stage).

When the support stays magnitude's. For a support S with pruned set P (d_P = -w̄_P), the
refined f is min over d_S of (1/(2N)) ||G_P d_P + G_S d_S||^2 + (lam/2)(||w̄_P||^2 +
||d_S||^2), which is at least (lam/2) ||w̄_P||^2; over supports of size k that bound is
smallest for the magnitude mask, where it is B = ``ridge_bound``. So no support has f
below B, and a support that beats the answer f* must prune weights whose (lam/2)
||w̄_P||^2 is below f*: when f* is close to B, only supports close to magnitude's can.
That is the usual case when k is many times N: G_S (N x k) then cancels G_P d_P with a
small d_S. On the zoo's MLPs at density 0.3 (k >= 7,757 = 15 N) CHITA keeps at least
0.998 of magnitude-global's kept weights, so it is that mask with re-fitted weights; on
digits-mlp at 0.1 (k = 5 N) the share falls to 0.78 (benchmarks/HISTORY.md,
session 18). Each stage records ``magnitude_overlap`` and ``ridge_bound``; the result's
``magnitude_overlap`` compares with the dense model's magnitude mask.

Only products G v, Gᵀ r and the N x N Gram G_S G_Sᵀ of a support are used; neither GᵀG
nor any p x p matrix is formed.

CHITA++ (``stages > 1``): densities density^(t / stages), t = 1..stages, each stage
re-computing the gradients at the weights the previous stage left (pruned weights at 0).

Per-sample gradients and memory. An nn.Linear weight's per-sample gradient is
Σ_t δ_{s,t} x_{s,t}ᵀ (x its input, δ the gradient of sample s's loss with respect to its
output, t over positions), so G is kept factored as (x, δ): memory N·T·(in + out), and a
product costs N·T·in·out, the same as with G itself when T = 1. With T > 1 (a layer
applied to every token) G is materialised instead while it fits `_MATERIALISE_BYTES`,
which makes each product T times cheaper. An nn.Conv2d weight's G is
materialised (N x numel float32, by torch.func vmap of grad): 512 samples x 100k weights
is 200 MB, 1M weights 2 GB, which is where memory becomes the limit (budget "global"
holds every conv layer's G at once, "layer" one at a time). The factored form assumes
``loss_fn`` returns the mean of per-sample losses (cross-entropy with mean reduction
does) and that samples do not interact in eval mode (no batch statistics).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from qcbo.errors import InputError

from .baselines import prunable_weights
from .fisher import linear_input_grads

__all__ = [
    "ChitaConfig",
    "ChitaResult",
    "GradientOperator",
    "DenseGradients",
    "LinearGradients",
    "StackedGradients",
    "SparseQuadraticSolution",
    "PLUS_STAGES",
    "chita_prune",
    "first_samples",
    "gradient_operators",
    "per_sample_gradients",
    "quadratic_objective",
    "solve_sparse_quadratic",
    "stage_densities",
]

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Active-set refinement: CG iterations per solve (the system is lam I plus a rank <= N
#: term, so CG converges in at most N + 1 steps in exact arithmetic), its relative
#: residual tolerance, and the rounds of "refine, then one IHT step" at most.
_CG_MAX_ITER = 300
_CG_TOL = 1e-6
_REFINE_ROUNDS = 3
#: Steps eta * ratio^j, j < _LADDER, tried in each refinement round.
_LADDER = 5
_LADDER_RATIO = 4.0
#: CG steps spent on each ladder candidate before ranking them.
_CG_PROBE = 25
#: IHT stops early when the support is unchanged and f fell by less than this fraction.
_IHT_TOL = 1e-7
_POWER_ITERATIONS = 30
#: Elements of G formed at once by the Gram products (64 MB of float32).
_GRAM_CHUNK = 1 << 24
#: Samples per vmap chunk for materialised (Conv2d) gradients.
_VMAP_CHUNK = 32
#: A Linear called at T > 1 positions per sample (tokens) has its G materialised while
#: the materialised total of one `gradient_operators` call stays under this many bytes:
#: a product then costs N·out·in instead of N·T·out·in (the zoo ViT: 69k weights x 512
#: samples = 142 MB, T = 16). With T = 1 the factored form costs the same and is smaller.
_MATERIALISE_BYTES = 512 << 20


@dataclass(frozen=True)
class ChitaConfig:
    """Options of a CHITA run.

    density: fraction of prunable weights kept, in (0, 1]. samples: N, the calibration
    samples whose per-sample gradients form G. lam: ridge, ``(lam / 2) ||w - w̄||^2``.
    iterations: IHT iterations at most per block and stage. budget: "layer" keeps
    ``round(density * numel)`` in every layer, "global" ``round(density * total)``
    over all of them. stages: 1 is CHITA, > 1 CHITA++. refine: active-set refinement
    on the support. seed: the power iteration's start vector.

    Defaults (lam 1e-4, budget "global") were chosen on digits-mlp and
    fmnist-lenet300-dropout at density 0.3 by validation accuracy and loss over lam in
    {1e-4, 1e-3, 1e-2, 1e-1} x budget x samples {512, 2048}, and checked on the held-out
    zoo models (benchmarks/HISTORY.md, "Zoo with CHITA and CHITA++ starts").
    """

    density: float
    samples: int = 512
    lam: float = 1e-4
    iterations: int = 100
    budget: Literal["layer", "global"] = "global"
    stages: int = 1
    refine: bool = True
    seed: int = 0

    def validate(self) -> None:
        """Raise `InputError` naming the first bad option."""
        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(self.density, (int, float)) or isinstance(self.density, bool) \
                or not 0.0 < float(self.density) <= 1.0:
            raise InputError(f"chita: density must be in (0, 1], got {self.density!r}")
        if not is_int(self.samples) or self.samples < 1:
            raise InputError(f"chita: samples must be an integer >= 1, got {self.samples!r}")
        if not isinstance(self.lam, (int, float)) or isinstance(self.lam, bool) \
                or not math.isfinite(self.lam) or self.lam < 0:
            raise InputError(f"chita: lam must be a finite number >= 0, got {self.lam!r}")
        if not is_int(self.iterations) or self.iterations < 0:
            raise InputError(f"chita: iterations must be an integer >= 0, got {self.iterations!r}")
        if self.budget not in ("layer", "global"):
            raise InputError(f"chita: budget must be 'layer' or 'global', got {self.budget!r}")
        if not is_int(self.stages) or self.stages < 1:
            raise InputError(f"chita: stages must be an integer >= 1, got {self.stages!r}")
        if not isinstance(self.refine, bool):
            raise InputError(f"chita: refine must be a bool, got {self.refine!r}")
        if not is_int(self.seed):
            raise InputError(f"chita: seed must be an integer, got {self.seed!r}")


#: CHITA++ as the project runs it: this many stages toward the target density.
PLUS_STAGES = 4


@dataclass
class ChitaResult:
    """What `chita_prune` did.

    masks: bool, True = kept, shaped like each weight. objective: f of the last stage
    (summed over layers for budget "layer"), in loss units, ridge included; for
    ``stages > 1`` it is measured around the previous stage's weights. iterations: IHT
    iterations summed over blocks and stages. stages: per stage ``density``,
    ``objective``, ``magnitude_objective`` (f of the magnitude mask with no weight
    update, the start), ``ridge_bound`` (the lower bound on f over all supports, module
    docs), ``magnitude_overlap`` (the fraction of the kept weights that the start,
    magnitude's mask of the same budget on the weights the stage starts from, also
    keeps: 1.0 when IHT and the swaps left the support where they found it),
    ``iterations``, ``cg_iterations``, ``time_s``. magnitude_overlap: the fraction of
    the kept weights that the dense model's magnitude mask at ``density`` (same budget)
    also keeps; for one stage, the stage's.
    """

    masks: dict[str, torch.Tensor]
    objective: float
    iterations: int
    wall_time_s: float
    stages: list[dict] = field(default_factory=list)
    samples: int = 0
    seed: int = 0
    magnitude_overlap: float = 1.0


# --------------------------------------------------------------------------- operators


class GradientOperator(Protocol):
    """G (N x size) by its products: matvec v (size,) -> G v (N,); rmatvec r (N,) -> Gᵀ r."""

    samples: int
    size: int

    def matvec(self, v: torch.Tensor) -> torch.Tensor: ...

    def rmatvec(self, r: torch.Tensor) -> torch.Tensor: ...


class DenseGradients:
    """G held as a (N, size) tensor."""

    def __init__(self, G: torch.Tensor) -> None:
        if G.ndim != 2:
            raise InputError(f"G must be 2-D (N, p), got shape {tuple(G.shape)}")
        self.G = G
        self.samples, self.size = int(G.shape[0]), int(G.shape[1])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.G @ v

    def rmatvec(self, r: torch.Tensor) -> torch.Tensor:
        return self.G.T @ r

    def gram(self, support: torch.Tensor) -> torch.Tensor:
        """G_S G_Sᵀ (N, N) float64 for a bool ``support`` (size,)."""
        K = torch.zeros(self.samples, self.samples, dtype=torch.float64, device=self.G.device)
        cols = support.nonzero().squeeze(1)
        step = max(1, _GRAM_CHUNK // max(self.samples, 1))
        for i in range(0, len(cols), step):
            part = self.G[:, cols[i:i + step]]
            K += (part @ part.T).double()
        return K


class LinearGradients:
    """Per-sample gradients of a Linear weight (out, in), row s = vec(Σ_t δ_st x_stᵀ).

    x: (N, T, in) layer inputs, delta: (N, T, out) per-sample loss gradients w.r.t. the
    layer outputs. Vectors are the weight flattened row-major (out * in,).
    """

    def __init__(self, x: torch.Tensor, delta: torch.Tensor) -> None:
        self.x, self.delta = x, delta
        self.samples, self.positions = int(x.shape[0]), int(x.shape[1])
        self.out_features, self.in_features = int(delta.shape[-1]), int(x.shape[-1])
        self.size = self.out_features * self.in_features

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        V = v.reshape(self.out_features, self.in_features)
        return ((self.x @ V.T) * self.delta).sum(dim=(1, 2))

    def rmatvec(self, r: torch.Tensor) -> torch.Tensor:
        weighted = (self.delta * r[:, None, None]).reshape(-1, self.out_features)
        return (weighted.T @ self.x.reshape(-1, self.in_features)).reshape(-1)

    def dense(self) -> DenseGradients:
        """G itself, (N, out * in) float32: Σ_t δ_st x_stᵀ for every sample s."""
        G = torch.einsum("nto,nti->noi", self.delta, self.x)
        return DenseGradients(G.reshape(self.samples, self.size))

    def gram(self, support: torch.Tensor) -> torch.Tensor:
        """G_S G_Sᵀ (N, N) float64 for a bool ``support`` (size,), rows of G formed a few
        output units at a time."""
        N, T = self.samples, int(self.x.shape[1])
        mask = support.view(self.out_features, self.in_features)
        K = torch.zeros(N, N, dtype=torch.float64, device=self.x.device)
        step = max(1, _GRAM_CHUNK // max(N * max(T, 1) * self.in_features, 1))
        for o in range(0, self.out_features, step):
            m = mask[o:o + step].reshape(-1)
            if not bool(m.any()):
                continue
            rows = torch.einsum("nto,nti->noi", self.delta[:, :, o:o + step], self.x)
            part = rows.reshape(N, -1)[:, m]
            K += (part @ part.T).double()
        return K


class StackedGradients:
    """[G_1 G_2 ...]: the blocks side by side (the global budget)."""

    def __init__(self, blocks: Sequence[GradientOperator]) -> None:
        if not blocks or len({b.samples for b in blocks}) != 1:
            raise InputError("stacked gradients need blocks with one sample count")
        self.blocks = list(blocks)
        self.samples = blocks[0].samples
        self.size = sum(b.size for b in blocks)
        self._splits = [b.size for b in blocks]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, self._splits)
        out = self.blocks[0].matvec(parts[0])
        for block, part in zip(self.blocks[1:], parts[1:]):
            out = out + block.matvec(part)
        return out

    def rmatvec(self, r: torch.Tensor) -> torch.Tensor:
        return torch.cat([b.rmatvec(r) for b in self.blocks])

    def gram(self, support: torch.Tensor) -> torch.Tensor:
        parts = torch.split(support, self._splits)
        K = self.blocks[0].gram(parts[0])
        for block, part in zip(self.blocks[1:], parts[1:]):
            K = K + block.gram(part)
        return K


# --------------------------------------------------------------------------- the solve


def quadratic_objective(op: GradientOperator, w_bar: torch.Tensor, w: torch.Tensor,
                        lam: float) -> float:
    """f(w) = ||G (w - w̄)||^2 / (2N) + (lam / 2) ||w - w̄||^2, as a Python float."""
    d = w - w_bar
    return _objective(op.matvec(d), d, lam, op.samples)


def _objective(Gd: torch.Tensor, d: torch.Tensor, lam: float, samples: int) -> float:
    Gd, d = Gd.double(), d.double()
    return float(Gd @ Gd) / (2.0 * samples) + 0.5 * lam * float(d @ d)


def _hard_threshold(v: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(v on its ``keep`` largest |v|, zero elsewhere; that support as a bool mask)."""
    support = torch.zeros(v.shape, dtype=torch.bool, device=v.device)
    if 0 < keep < v.numel() and v.device.type == "cpu":
        # numpy's introselect: O(n), about 3x faster than topk for large keep
        a = v.detach().abs().numpy()
        support[torch.from_numpy(np.argpartition(a, a.size - keep)[a.size - keep:])] = True
    elif keep > 0:
        support[torch.topk(v.abs(), keep, sorted=False).indices] = True
    return v * support, support


def _lipschitz(op: GradientOperator, lam: float, dtype: torch.dtype, device: torch.device,
               seed: int) -> float:
    """Top eigenvalue of GᵀG / N + lam I by power iteration, with a 5 % margin."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(op.size, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    estimate = 0.0
    for _ in range(_POWER_ITERATIONS):
        norm = float(v.norm())
        if norm == 0.0:
            break
        v = v / norm
        u = op.rmatvec(op.matvec(v)) / op.samples
        estimate = float(v @ u)
        v = u
    return 1.05 * max(estimate, 0.0) + lam


@dataclass
class SparseQuadraticSolution:
    """w (size,) with exactly ``keep`` entries on ``support`` (bool), f(w), the start's f;
    the start's support (magnitude's) and ``ridge_bound``, the lower bound on f over every
    support (module docs)."""

    w: torch.Tensor
    support: torch.Tensor
    objective: float
    start_objective: float
    iterations: int
    cg_iterations: int
    refine_rounds: int
    exact_solves: int = 0
    start_support: torch.Tensor | None = None
    ridge_bound: float = 0.0


def _iht(op: GradientOperator, w_bar: torch.Tensor, w: torch.Tensor, support: torch.Tensor,
         keep: int, lam: float, iterations: int, eta: float
         ) -> tuple[torch.Tensor, torch.Tensor, float, int, float]:
    """Up to ``iterations`` IHT steps from a feasible w; (w, support, f, steps, eta)."""
    N = op.samples
    d = w - w_bar
    Gd = op.matvec(d)
    f = _objective(Gd, d, lam, N)
    done = 0
    for _ in range(iterations):
        g = op.rmatvec(Gd) / N + lam * d
        trial = 2.0 * eta
        accepted = None
        for _ in range(60):
            w_new, s_new = _hard_threshold(w - trial * g, keep)
            d_new = w_new - w_bar
            Gd_new = op.matvec(d_new)
            f_new = _objective(Gd_new, d_new, lam, N)
            # Accept any descent. One always exists for trial <= 1/L: the quadratic
            # majoriser at w equals f(w) there and H_k minimises it over k-sparse points.
            if f_new <= f:
                accepted = (w_new, s_new, d_new, Gd_new, f_new)
                break
            trial *= 0.5
        if accepted is None:
            break
        eta = trial
        w_new, s_new, d, Gd, f_new = accepted
        done += 1
        same = bool(torch.equal(s_new, support))
        w, support, f_old, f = w_new, s_new, f, f_new
        if same and f_old - f <= _IHT_TOL * max(abs(f_old), 1e-30):
            break
    return w, support, f, done, eta


def _refine_on_support(op: GradientOperator, w_bar: torch.Tensor, w: torch.Tensor,
                       support: torch.Tensor, lam: float, max_iter: int = _CG_MAX_ITER
                       ) -> tuple[torch.Tensor, float, int]:
    """min f over the weights on ``support`` (others 0) by CG from w; (w, f, CG steps).

    With ``max_iter`` below convergence the answer is a partial minimisation, still no
    worse than w restricted to ``support``.
    """
    N = op.samples
    m = support.to(w.dtype)
    d = (w - w_bar) * m - w_bar * (1 - m)
    Gd = op.matvec(d)
    f_start = _objective(Gd, d, lam, N)
    res = -m * (op.rmatvec(Gd) / N + lam * d)
    p = res.clone()
    rs = float(res.double() @ res.double())
    rs0 = rs
    steps = 0
    for _ in range(max_iter):
        if rs <= (_CG_TOL ** 2) * rs0 or rs == 0.0:
            break
        Gp = op.matvec(p)
        Ap = m * (op.rmatvec(Gp) / N) + lam * p
        curvature = float(p.double() @ Ap.double())
        if curvature <= 0.0:
            break
        alpha = rs / curvature
        d = d + alpha * p
        Gd = Gd + alpha * Gp
        res = res - alpha * Ap
        rs_new = float(res.double() @ res.double())
        p = res + (rs_new / rs) * p
        rs = rs_new
        steps += 1
    w_new = (w_bar + d) * m
    f_new = quadratic_objective(op, w_bar, w_new, lam)  # fresh, not the CG recursion's
    if f_new <= f_start:
        return w_new, f_new, steps
    return w * m, f_start, steps


def _refine_exact(op: GradientOperator, w_bar: torch.Tensor, w: torch.Tensor,
                  support: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """min f over the weights on ``support`` (others 0), solved directly in sample space:
    d_S = -G_Sᵀ (G_S G_Sᵀ + N lam I)⁻¹ G d_{S^c} (Woodbury; lam > 0). (w, f); w restricted
    to ``support`` when that is no worse (round-off on an ill-conditioned system)."""
    N = op.samples
    m = support.to(w.dtype)
    d_off = -w_bar * (1 - m)
    r0 = op.matvec(d_off).double()
    K = op.gram(support)
    K.diagonal().add_(N * lam)
    u = torch.cholesky_solve(r0[:, None], torch.linalg.cholesky(K)).squeeze(1)
    d = d_off - op.rmatvec(u.to(w.dtype)) * m
    w_new = (w_bar + d) * m
    f_new = quadratic_objective(op, w_bar, w_new, lam)
    f_start = quadratic_objective(op, w_bar, w * m, lam)
    return (w_new, f_new) if f_new <= f_start else (w * m, f_start)


def _refine_full(op: GradientOperator, w_bar: torch.Tensor, w: torch.Tensor,
                 support: torch.Tensor, lam: float) -> tuple[torch.Tensor, float, int, int]:
    """A full refinement: exact when cheaper than the CG cap, else CG;
    (w, f, CG steps, exact solves)."""
    N = op.samples
    direct = (lam > 0 and hasattr(op, "gram") and N <= 8192
              and N * int(support.sum()) <= 2 * _CG_MAX_ITER * op.size)
    if direct:
        try:
            w_new, f = _refine_exact(op, w_bar, w, support, lam)
            return w_new, f, 0, 1
        except RuntimeError:  # not positive definite in floating point: CG instead
            pass
    w_new, f, steps = _refine_on_support(op, w_bar, w, support, lam)
    return w_new, f, steps, 0


def solve_sparse_quadratic(op: GradientOperator, w_bar: torch.Tensor, keep: int, lam: float,
                           *, iterations: int = 100, refine: bool = True, seed: int = 0
                           ) -> SparseQuadraticSolution:
    """min f(w) s.t. ||w||_0 <= keep (module docs): magnitude start, IHT, refinement.

    w_bar: (size,) in the dtype and device of ``op``'s products. The answer keeps exactly
    ``keep`` weights (``support``); a kept weight may be 0 only by coincidence.
    """
    if w_bar.ndim != 1 or w_bar.numel() != op.size:
        raise InputError(f"w_bar must have shape ({op.size},), got {tuple(w_bar.shape)}")
    if not 0 <= keep <= op.size:
        raise InputError(f"keep must be in [0, {op.size}], got {keep}")
    w, support = _hard_threshold(w_bar, keep)
    start = quadratic_objective(op, w_bar, w, lam)
    start_info = {"start_support": support,
                  "ridge_bound": lam / 2 * float((w_bar.double() ** 2).sum()
                                                 - (w.double() ** 2).sum())}
    if keep == 0 or keep == op.size:
        return SparseQuadraticSolution(w, support, start, start, 0, 0, 0, **start_info)
    eta = 1.0 / _lipschitz(op, lam, w_bar.dtype, w_bar.device, seed)
    w, support, f, total, eta = _iht(op, w_bar, w, support, keep, lam, iterations, eta)
    cg_total, rounds, exact = 0, 0, 0
    if refine:
        w, f, cg_total, exact = _refine_full(op, w_bar, w, support, lam)
        for _ in range(_REFINE_ROUNDS):
            # At a refined point the support's gradient is 0, so an IHT step only swaps
            # weights; a swap pays off only after the new support is refined, so rank
            # the supports of a ladder of steps by f after a few CG steps on each, then
            # refine the best one fully.
            d = w - w_bar
            g = op.rmatvec(op.matvec(d)) / op.samples + lam * d
            best = None
            for j in range(_LADDER):
                _, s_try = _hard_threshold(w - eta * _LADDER_RATIO ** j * g, keep)
                if torch.equal(s_try, support):
                    continue
                w_try, f_try, cg = _refine_on_support(op, w_bar, w, s_try, lam, _CG_PROBE)
                cg_total += cg
                if best is None or f_try < best[2]:
                    best = (w_try, s_try, f_try)
            rounds += 1
            if best is None or best[2] >= f:
                break
            w, f, cg, ex = _refine_full(op, w_bar, best[0], best[1], lam)
            support = best[1]
            cg_total += cg
            exact += ex
    return SparseQuadraticSolution(w, support, f, start, total, cg_total, rounds, exact,
                                   **start_info)


# --------------------------------------------------------------------------- gradients


def per_sample_gradients(model: nn.Module, loss_fn: LossFn, names: Sequence[str],
                         inputs: torch.Tensor, targets: torch.Tensor, *,
                         chunk_size: int = _VMAP_CHUNK) -> dict[str, torch.Tensor]:
    """Per-sample gradients of the named weights by vmap(grad): name -> (N, numel) float32.

    Sample s's loss is ``loss_fn(model(inputs[s:s+1]), targets[s:s+1])``, in eval mode.
    """
    state = {k: p.detach() for k, p in model.named_parameters()}
    state.update({k: b.detach() for k, b in model.named_buffers()})
    chosen = {n: state[n] for n in names}

    def sample_loss(sel: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
                    ) -> torch.Tensor:
        return loss_fn(functional_call(model, {**state, **sel}, (x.unsqueeze(0),)),
                       y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(inputs), chunk_size):
            grads = per_sample(chosen, inputs[i: i + chunk_size], targets[i: i + chunk_size])
            for n in names:
                parts[n].append(grads[n].detach().reshape(grads[n].shape[0], -1).float())
    finally:
        model.train(was_training)
    return {n: torch.cat(p) for n, p in parts.items()}


def _linear_gradients(model: nn.Module, loss_fn: LossFn, modules: dict[str, nn.Linear],
                      weights: dict[str, nn.Parameter], inputs: torch.Tensor,
                      targets: torch.Tensor, chunk_size: int = 512
                      ) -> dict[str, LinearGradients]:
    """Factored per-sample gradients (x, δ) of Linear weights (`linear_input_grads`);
    ``weights`` name the same layers as ``modules``."""
    assert set(weights) == set(modules)
    try:
        pairs = linear_input_grads(model, loss_fn, modules, inputs, targets, chunk_size)
    except InputError as exc:
        raise InputError(f"chita: {exc}") from None
    return {n: LinearGradients(x, delta) for n, (x, delta) in pairs.items()}


def gradient_operators(model: nn.Module, loss_fn: LossFn, weights: dict[str, nn.Parameter],
                       names: Sequence[str], inputs: torch.Tensor, targets: torch.Tensor
                       ) -> dict[str, GradientOperator]:
    """Per-sample gradients (N x numel) of the named weights at the model's current
    values: factored `LinearGradients` for nn.Linear, materialised `DenseGradients`
    otherwise; name -> operator, in ``names`` order."""
    all_modules = dict(model.named_modules())
    module_of = {n: all_modules[n.rsplit(".", 1)[0] if "." in n else ""] for n in names}
    linear = {n: m for n, m in module_of.items() if isinstance(m, nn.Linear)}
    ops: dict[str, GradientOperator] = {}
    if linear:
        factored = _linear_gradients(model, loss_fn, linear, {n: weights[n] for n in linear},
                                     inputs, targets)
        room = _MATERIALISE_BYTES
        for n, op in factored.items():
            need = 4 * op.samples * op.size
            if op.positions > 1 and need <= room:
                ops[n], room = op.dense(), room - need
            else:
                ops[n] = op
    other = [n for n in names if n not in linear]
    if other:
        for n, G in per_sample_gradients(model, loss_fn, other, inputs, targets).items():
            ops[n] = DenseGradients(G)
    return {n: ops[n] for n in names}


# --------------------------------------------------------------------------- the method


def stage_densities(density: float, stages: int) -> list[float]:
    """CHITA++ schedule density^(t / stages), t = 1..stages (the last is ``density``)."""
    return [density ** (t / stages) for t in range(1, stages)] + [density]


def first_samples(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], samples: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): the first ``samples`` samples ``batches`` yields (fewer, with a warning, if
    it runs out first)."""
    xs, ys, seen = [], [], 0
    for xb, yb in batches:
        take = min(len(xb), samples - seen)
        xs.append(xb[:take])
        ys.append(yb[:take])
        seen += take
        if seen >= samples:
            break
    if not seen:
        raise InputError("chita: no calibration samples given")
    if seen < samples:
        log.warning("chita: asked for %d calibration samples, got %d", samples, seen)
    return torch.cat(xs), torch.cat(ys)


def chita_prune(model: nn.Module, loss_fn: LossFn,
                batches: Iterable[tuple[torch.Tensor, torch.Tensor]], config: ChitaConfig,
                *, patterns: Sequence[str] | None = None) -> ChitaResult:
    """Prune ``model``'s Linear/Conv2d weights in place with CHITA (module docs).

    Pruned weights become 0; kept weights take CHITA's updated values. ``batches`` yields
    (inputs, targets); the first ``config.samples`` samples are used. ``loss_fn(outputs,
    targets)`` must return the mean loss of a batch. ``patterns`` selects weights as in
    `prunable_weights`.
    """
    config.validate()
    start_time = time.perf_counter()
    weights = prunable_weights(model, patterns)
    names = list(weights)
    device = next(iter(weights.values())).device
    inputs, targets = first_samples(batches, config.samples)
    inputs, targets = inputs.to(device), targets.to(device)
    masks: dict[str, torch.Tensor] = {}
    stages: list[dict] = []
    total_iterations = 0
    objective = 0.0
    groups = [[n] for n in names] if config.budget == "layer" else [names]
    # the dense model's magnitude mask at the target density, same budget (for the result)
    dense_magnitude: dict[str, torch.Tensor] = {}
    for group in groups:
        w_bar = torch.cat([weights[n].detach().reshape(-1).float() for n in group])
        support = _hard_threshold(w_bar, int(round(float(config.density) * w_bar.numel())))[1]
        for n, part in zip(group, support.split([weights[n].numel() for n in group])):
            dense_magnitude[n] = part.reshape(weights[n].shape).cpu()
    for stage, density in enumerate(stage_densities(float(config.density), config.stages)):
        t0 = time.perf_counter()
        stage_info = {"density": density, "objective": 0.0, "magnitude_objective": 0.0,
                      "ridge_bound": 0.0, "iterations": 0, "cg_iterations": 0,
                      "exact_solves": 0}
        kept = kept_by_magnitude = 0
        new_values: dict[str, torch.Tensor] = {}
        for group in groups:
            # One layer's gradients at a time for budget "layer": memory of the largest.
            ops = gradient_operators(model, loss_fn, weights, group, inputs, targets)
            op = ops[group[0]] if len(group) == 1 else StackedGradients([ops[n] for n in group])
            w_bar = torch.cat([weights[n].detach().reshape(-1).float() for n in group])
            keep = int(round(density * w_bar.numel()))
            sol = solve_sparse_quadratic(op, w_bar, keep, config.lam,
                                         iterations=config.iterations, refine=config.refine,
                                         seed=config.seed + stage)
            kept += keep
            kept_by_magnitude += int((sol.support & sol.start_support).sum())
            stage_info["ridge_bound"] += sol.ridge_bound
            offset = 0
            for n in group:
                size = weights[n].numel()
                shape = weights[n].shape
                masks[n] = sol.support[offset: offset + size].reshape(shape).cpu()
                new_values[n] = sol.w[offset: offset + size].reshape(shape)
                offset += size
            stage_info["objective"] += sol.objective
            stage_info["magnitude_objective"] += sol.start_objective
            stage_info["iterations"] += sol.iterations
            stage_info["cg_iterations"] += sol.cg_iterations
            stage_info["exact_solves"] += sol.exact_solves
            del ops, op
        with torch.no_grad():
            for n, value in new_values.items():
                weights[n].copy_(value.to(weights[n].dtype) * masks[n].to(device))
        stage_info["time_s"] = time.perf_counter() - t0
        stage_info["magnitude_overlap"] = kept_by_magnitude / kept if kept else 1.0
        log.info("chita stage %d/%d: density %.4f, objective %.6g (magnitude %.6g), "
                 "%.4f of the kept weights in magnitude's mask, "
                 "%d IHT + %d CG iterations, %d exact solves, %.2f s", stage + 1, config.stages,
                 density, stage_info["objective"], stage_info["magnitude_objective"],
                 stage_info["magnitude_overlap"],
                 stage_info["iterations"], stage_info["cg_iterations"],
                 stage_info["exact_solves"], stage_info["time_s"])
        stages.append(stage_info)
        total_iterations += stage_info["iterations"]
        objective = stage_info["objective"]
    kept_total = sum(int(m.sum()) for m in masks.values())
    overlap = (sum(int((masks[n] & dense_magnitude[n]).sum()) for n in masks) / kept_total
               if kept_total else 1.0)
    return ChitaResult(masks=masks, objective=objective, iterations=total_iterations,
                       wall_time_s=time.perf_counter() - start_time, stages=stages,
                       samples=int(len(inputs)), seed=config.seed, magnitude_overlap=overlap)
