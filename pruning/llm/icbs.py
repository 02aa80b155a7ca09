"""iCBS for causal language models, with two objectives.

``reconstruction`` (per output row, exact): for a Linear with dense weight W (d_out, d_in)
and H = XᵀX / N (damped as in SparseGPT), row r's error is E_r(ŵ) = (ŵ − w)ᵀ H (ŵ − w).
A block is n indices of the row (the currently pruned ones with the highest saliency
v² H_jj and the kept ones with the lowest), with v = current value if kept, dense value if
pruned. A new pattern x (x_i = 1: prune) gives ŵ_B = v ∘ (1 − x); E is quadratic, so the
iCBS block QCBO (`pruning.block.block_problem` with g = ∇E = 2 H (ŵ − w), Hessian 2H,
γ = 1, λ = 0) is *exactly* the change of E, with k = the block's current pruned count,
so every row keeps its pruned count. With ``row_rounds`` = R > 0 every row of the Linear
gets R blocks per epoch, one per group (a group: one block of every row, rows being
independent, solved in parallel through the solver's executor), selected by the exact
single-flip change ("flip" score, re-read before each selection); with R = 0 (the old
schedule) ``steps_per_layer`` blocks go to the rows of largest E_r, in one group.
With ``refit`` the surviving weights of every row are set to the least-squares optimum
ŵ_K = argmin E_r (H_KK ŵ_K = (H w)_K) before the block steps and, with R > 0, after
every group that changed the row, so the next block sees the re-fitted weights; with
``refit_aware`` (default) blocks are posed on the re-fit-aware bound of
`pruning.llm.objectives.RowRefit` (error after re-fitting the kept weights outside the
block: a Schur-complement QCBO), else on the fixed-weight model. `reconstruct_layer`
returns the summed layer error after the start, the re-fit alone and the block steps.

``fisher`` (the paper's): blocks of one Linear with the gradient g and the empirical
Fisher H_B = G_Bᵀ G_B / m of the LM loss, from per-sample gradients G. For a Linear,
the per-sample gradient is Σ_t δ_{s,t} x_{s,t}ᵀ (δ: gradient at the layer's output), so
one forward/backward per calibration window (m in all) keeps, per Linear, only its inputs
X and output gradients δ; a layer's per-sample gradients are formed when it is refined.
Gradients are taken once per group of decoder blocks and epoch at the current (pruned)
weights; later changes in the same group are not reflected (a documented approximation).
Far from the dense weights (density 0.3) the Taylor model can mislead badly, so by default
(``loss_check``) a decoder block's new masks are kept only when the perplexity of held-out
calibration windows does not rise (the engine's check: reverted, or answers halved).

Both objectives (`pruning.llm.objectives`) run on the iCBS engine (`pruning.engine`): one
selection and tabu policy, one acceptance rule (re-scored on the exact block model,
strictly better than the current pattern), warm starts, one export hook, and groups of
blocks solved in parallel when the solver has an executor.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from qcbo.errors import InputError
from qcbo.problem import Problem

from ..lsq import refit_rows, row_errors

__all__ = ["LMICBSConfig", "LayerErrors", "refit_rows", "approx_refit_rows", "row_errors",
           "refine_rows", "reconstruct_layer", "error_totals", "fisher_refine_block", "capture_fisher_inputs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMICBSConfig:
    """Options of iCBS for LMs (see the module docstring).

    ``steps_per_layer``: blocks solved per Linear (rows for "reconstruction").
    ``block_size``: weights per block n (k_b = current pruned count, ≈ n / 2).
    ``fisher_samples``/``fisher_window``: calibration windows and tokens per gradient pass.
    ``loss_check`` (fisher): keep a decoder block's new masks only if the perplexity of
    held-out calibration windows does not rise (see `pruning.llm.prune`).
    ``row_rounds`` (reconstruction): blocks per row per epoch, every row visited (0: the
    old schedule of ``steps_per_layer`` blocks on the worst rows); ``refit_aware``: with
    ``refit``, pose blocks on the re-fit-aware bound (else fixed weights, re-fit after).
    ``lazy_refit`` (re-fit-aware rows): re-fit each row of the start when its first block
    is posed, from that block's Schur factors, instead of all rows up front by their own
    factorisations (half the factorisations; a row's first block is then selected on an
    approximate re-fit, `approx_refit_rows`).
    ``trust`` (fisher): cost per flipped weight added to each block QCBO, in units of the
    block's mean |coefficient| (`pruning.llm.objectives.trust_region`): a bounded step.
    ``fisher_groups`` (fisher): refresh the gradients per group of Linears of a decoder
    block (its attention, then its MLP: the first component of the module path) instead
    of per ``blocks_per_pass`` decoder blocks; each group is checked on its own.
    ``blend`` (fisher): weight β in [0, 1] of the Kronecker-factored curvature (the
    reconstruction Hessian weighted by the output-gradient covariance) in each block's
    curvature (`pruning.llm.objectives.DecoderFisher`).
    """

    objective: Literal["reconstruction", "fisher"] = "reconstruction"
    refit: bool = False
    init: Literal["wanda", "magnitude", "sparsegpt", "alps"] = "wanda"
    backend: str = "sa"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    block_size: int = 32
    steps_per_layer: int = 64
    epochs: int = 1
    gamma: float = 0.75
    lam: float = 1e-3
    fisher_samples: int = 8
    fisher_window: int = 256
    blocks_per_pass: int = 10
    loss_check: bool = True
    seed: int = 0
    row_rounds: int = 0
    refit_aware: bool = True
    trust: float = 0.0
    lazy_refit: bool = True
    fisher_groups: bool = False
    blend: float = 0.0

    def validate(self) -> None:
        if self.objective not in ("reconstruction", "fisher"):
            raise ValueError(f"objective must be reconstruction or fisher, got {self.objective!r}")
        if self.init not in ("wanda", "magnitude", "sparsegpt", "alps"):
            raise ValueError(f"init must be wanda, magnitude, sparsegpt or alps, "
                             f"got {self.init!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.block_size < 2 or self.steps_per_layer < 0 or self.epochs < 1:
            raise ValueError("need block_size >= 2, steps_per_layer >= 0, epochs >= 1")
        if self.fisher_samples < 1:
            raise InputError(f"fisher_samples must be >= 1, got {self.fisher_samples}")
        if self.fisher_window < 2:
            raise InputError(f"fisher_window must be >= 2, got {self.fisher_window}")
        if self.row_rounds < 0:
            raise InputError(f"row_rounds must be >= 0, got {self.row_rounds}")
        if not self.trust >= 0.0:
            raise InputError(f"trust must be >= 0, got {self.trust}")
        if not 0.0 <= self.blend <= 1.0:
            raise InputError(f"blend must be in [0, 1], got {self.blend}")
        if self.blocks_per_pass < 1:
            raise InputError(f"blocks_per_pass must be >= 1, got {self.blocks_per_pass}")
        if self.objective != "fisher" and (self.blend or self.fisher_groups):
            raise ValueError("blend and fisher_groups apply to the fisher objective only")
        if self.objective == "fisher" and self.refit:
            raise ValueError("refit applies to the reconstruction objective only")
        if self.objective == "fisher" and self.row_rounds:
            raise ValueError("row_rounds applies to the reconstruction objective only")
        if self.objective == "fisher" and self.init in ("sparsegpt", "alps"):
            name = {"sparsegpt": "SparseGPT", "alps": "ALPS"}[self.init]
            raise ValueError(f"the fisher objective keeps dense values on kept weights and would "
                             f"discard {name}'s updates; use init wanda or magnitude")


# ---------------------------------------------------------------- reconstruction objective
def approx_refit_rows(W0: torch.Tensor, keep: torch.Tensor, H: torch.Tensor, W: torch.Tensor,
                      iters: int = 20) -> torch.Tensor:
    """``iters`` steps of Jacobi-preconditioned conjugate gradients on every row's
    re-fit H_KK ŵ_K = (H w)_K at once, from W (zero where ~keep): each step is one
    (d_out, d_in) x (d_in, d_in) product, far cheaper than a factorisation per row.
    An approximation of `refit_rows` (float64, zero where ~keep), for scoring only."""
    M = keep.to(torch.float64)
    H = H.to(torch.float64)
    X = W.to(torch.float64) * M
    R = (W0.to(torch.float64) @ H - X @ H) * M  # residual on K
    inv_diag = M / torch.diagonal(H)[None, :]
    Z = R * inv_diag
    P = Z.clone()
    rz = (R * Z).sum(dim=1)
    for _ in range(iters):
        AP = (P @ H) * M
        pap = (P * AP).sum(dim=1)
        alpha = torch.where(pap > 0, rz / pap.clamp(min=1e-300), torch.zeros_like(pap))
        X += alpha[:, None] * P
        R -= alpha[:, None] * AP
        Z = R * inv_diag
        rz_new = (R * Z).sum(dim=1)
        beta = torch.where(rz > 0, rz_new / rz.clamp(min=1e-300), torch.zeros_like(rz))
        P = Z + beta[:, None] * P
        rz = rz_new
    return X


#: Memory for the Schur factors of one group of re-fit-aware blocks (bytes).
FACTOR_BYTES = 256 * 2**20


def refine_rows(W0: torch.Tensor, W: torch.Tensor, keep: torch.Tensor, H: torch.Tensor,
                solver: Any, *, block_size: int, steps: int = 0, rounds: int = 0,
                refit: Literal["none", "aware", "after"] = "none", name: str = "",
                pattern: tuple[int, int] | None = None, fitted: bool = False,
                lazy: bool = False, info: dict[str, Any] | None = None,
                block_sink: Callable[[Problem], None] | None = None,
                on_step: Callable[[Any], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """iCBS block steps on the rows of one Linear (reconstruction objective), on the engine.

    W0 dense (d_out, d_in), W current weights (zero where ~keep), H damped XᵀX/N float64;
    ``solver`` a `pruning.engine.BlockSolver`. Returns the new (W float64, keep); row
    pruned counts never change.

    ``rounds`` > 0: every row gets ``rounds`` blocks, one group (one block of every row,
    solved in parallel when the solver has an executor; with "aware", groups of as many
    rows as ``FACTOR_BYTES`` of Schur factors allow) per round, the "flip" score re-read
    before each selection. ``rounds`` = 0: ``steps`` blocks on the rows in
    decreasing order of error, all posed from the same weights as one group.
    ``refit``: "none" keeps the values of the kept weights (exact block model); "aware"
    and "after" re-fit every row before its first block and after every group that
    changed it (`pruning.llm.objectives.RowRefit`: the re-fit-aware bound, or the fixed-
    weight model), so the returned W is the least-squares re-fit of the returned keep;
    ``fitted``: W already is `refit_rows(W0, keep, H)`, so that first re-fit is skipped.
    ``lazy`` (with "aware", W not fitted): each row is re-fit when its first block is
    posed, from that block's Schur factors, instead of by a factorisation of its own
    (`RowRefit`); ``info["refit_error"]`` then receives Σ_r E_r of the start re-fitted.
    With ``pattern=(n, m)`` a block is ``block_size // m`` whole groups of m inputs and
    each group's count is kept by the penalty P Σ_groups (Σ_group x − (m − n))², P from
    `Problem.default_penalty` (so a violating answer never beats a feasible one); answers
    are checked per group before they are applied.
    """
    from pruning.engine import ICBSEngine

    from .objectives import LM_POLICY, RowReconstruction, RowRefit

    if refit not in ("none", "aware", "after"):
        raise InputError(f"refit must be none, aware or after, got {refit!r}")
    if steps < 0 or rounds < 0:
        raise InputError(f"steps and rounds must be >= 0, got {steps} and {rounds}")
    objective: RowReconstruction
    if refit == "none":
        objective = RowReconstruction(W0, W, keep, H, name=name, pattern=pattern,
                                      score="flip" if rounds else "saliency")
    else:
        objective = RowRefit(W0, W, keep, H, name=name, pattern=pattern,
                             aware=refit == "aware", fitted=fitted, lazy=lazy)
    engine = ICBSEngine(objective, solver, block_size=block_size, policy=LM_POLICY,
                        loss_check=False, block_sink=block_sink, on_step=on_step)
    if rounds:
        rows = list(range(W0.shape[0]))
        # "aware" holds a Cholesky factor of H_OO per block of a group until it is applied.
        size = len(rows)
        if refit == "aware":
            kept = int(keep.sum(dim=1).max()) if keep.numel() else 0
            size = max(1, min(size, FACTOR_BYTES // max(1, 8 * kept * kept)))
        for _ in range(rounds):
            for start in range(0, len(rows), size):
                engine.step(rows[start:start + size])
    else:
        order = objective.row_order()
        schedule = [order[s % len(order)] for s in range(steps)]
        engine.run(schedule, group_size=max(1, len(schedule)))
    objective.finish()
    if lazy and info is not None:
        info["refit_error"] = objective.refit_error
    return objective.W, objective.keep_t


@dataclass
class LayerErrors:
    """Summed layer error Σ_r E_r of one Linear (H-weighted, as `row_errors`) at the
    stages of `reconstruct_layer`; None where a stage was not run."""

    start: float
    refit: float | None = None
    blocks: float | None = None
    blocks_refit: float | None = None
    blocks_applied: int = 0
    blocks_solved: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def total(cls, parts: Sequence["LayerErrors"]) -> "LayerErrors":
        """The errors of a Linear from those of its row chunks: every stage is a sum
        over rows; a stage missing in one chunk is missing."""
        def added(stage: str) -> float | None:
            values = [getattr(p, stage) for p in parts]
            return None if any(v is None for v in values) else float(sum(values))

        return cls(start=float(sum(p.start for p in parts)), refit=added("refit"),
                   blocks=added("blocks"), blocks_refit=added("blocks_refit"),
                   blocks_applied=sum(p.blocks_applied for p in parts),
                   blocks_solved=sum(p.blocks_solved for p in parts))


def reconstruct_layer(W0: torch.Tensor, W: torch.Tensor, keep: torch.Tensor, H: torch.Tensor,
                      solver: Any, config: LMICBSConfig, *, name: str = "",
                      pattern: tuple[int, int] | None = None, both: bool = False,
                      block_sink: Callable[[Problem], None] | None = None,
                      on_step: Callable[[Any], None] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, LayerErrors]:
    """The reconstruction-objective iCBS of one Linear from a start (W, keep).

    Returns (W float64, keep, `LayerErrors`): the error of the start, of the start mask
    re-fitted (only when ``config.refit`` or ``both``), and after the block steps of ``config`` (``blocks`` without re-fit,
    ``blocks_refit`` with). ``both``: also run the other variant for the report (its
    weights are not returned). ``config.row_rounds`` = 0 keeps the old schedule, whose
    re-fit comes only before and after the block steps.
    """
    H64 = H.to(torch.float64)
    W = W.to(torch.float64)
    errors = LayerErrors(start=float(row_errors(W0, W, H64).sum()))
    refitted: torch.Tensor | None = None
    rounds = config.row_rounds * config.epochs
    # A lazy start re-fit: each row is re-fit from its first block's factors (see RowRefit).
    lazy = config.lazy_refit and config.refit and config.refit_aware and rounds > 0 and not both
    if (config.refit or both) and not lazy:
        # A Cholesky solve per row: most of a run without re-fit, so only when it is used.
        refitted = refit_rows(W0, keep, H64)
        errors.refit = float(row_errors(W0, refitted, H64).sum())
    counter = _StepCounter(on_step)
    steps = config.steps_per_layer * config.epochs
    variants = [config.refit, not config.refit] if both else [config.refit]
    result: tuple[torch.Tensor, torch.Tensor] | None = None
    for with_refit in variants:
        primary = result is None
        mode = ("aware" if config.refit_aware else "after") if with_refit else "none"
        if with_refit and not rounds:
            mode = "none"  # the old schedule: blocks at the re-fit weights, re-fit at the end
        start = refitted if with_refit and refitted is not None else W
        info: dict[str, Any] = {}
        Wn, kn = refine_rows(W0, start, keep, H64, solver, block_size=config.block_size,
                             steps=steps, rounds=rounds, refit=mode, name=name,
                             pattern=pattern, fitted=with_refit and refitted is not None,
                             lazy=lazy and with_refit, info=info,
                             block_sink=block_sink if primary else None,
                             on_step=counter if primary else None)
        if "refit_error" in info:
            errors.refit = info["refit_error"]
        if with_refit and mode == "none":
            changed = torch.nonzero((kn != keep).any(dim=1)).flatten()
            if changed.numel():
                Wn[changed] = refit_rows(W0[changed], kn[changed], H64)
        error = float(row_errors(W0, Wn, H64).sum())
        if with_refit:
            errors.blocks_refit = error
        else:
            errors.blocks = error
        if primary:
            result = (Wn, kn)
    errors.blocks_solved, errors.blocks_applied = counter.solved, counter.applied
    assert result is not None
    return result[0], result[1], errors


def error_totals(layers: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Sums over Linears of each `LayerErrors` stage present in every layer's ``errors``
    (a `pruning.llm.prune` report's ``layers``), with the relative reductions of the
    block steps: ``blocks_vs_start`` (no re-fit) and ``blocks_refit_vs_refit``."""
    rows = [v["errors"] for v in layers.values() if "errors" in v]
    totals: dict[str, float] = {}
    for stage in ("start", "refit", "blocks", "blocks_refit"):
        if rows and all(r.get(stage) is not None for r in rows):
            totals[stage] = float(sum(r[stage] for r in rows))
    if "blocks" in totals and totals.get("start"):
        totals["blocks_vs_start"] = 1.0 - totals["blocks"] / totals["start"]
    if "blocks_refit" in totals and totals.get("refit"):
        totals["blocks_refit_vs_refit"] = 1.0 - totals["blocks_refit"] / totals["refit"]
    return totals


class _StepCounter:
    """Counts solved and applied blocks, passing every record on."""

    def __init__(self, inner: Callable[[Any], None] | None) -> None:
        self.inner, self.solved, self.applied = inner, 0, 0

    def __call__(self, record: Any) -> None:
        self.solved += 1
        self.applied += int(record.applied and not record.reverted)
        if self.inner is not None:
            self.inner(record)


def _group_block(sal: torch.Tensor, keep_row: torch.Tensor, pattern: tuple[int, int],
                 groups: int, tabu: set[int]) -> torch.Tensor | None:
    """Indices of the ``groups`` most promising whole n:m groups of one row.

    A group's promise: its best pruned saliency over its worst kept saliency.
    """
    m = pattern[1]
    s = sal.view(-1, m)
    k = keep_row.view(-1, m)
    best_pruned = s.masked_fill(k, -1.0).max(dim=1).values
    worst_kept = s.masked_fill(~k, float("inf")).min(dim=1).values
    promise = best_pruned / torch.clamp(worst_kept, min=1e-300)
    free = [gi for gi in torch.argsort(promise, descending=True, stable=True).tolist()
            if gi * m not in tabu and bool((~k[gi]).any()) and bool(k[gi].any())]
    if not free:
        return None
    chosen = sorted(free[:groups])
    return torch.tensor([gi * m + j for gi in chosen for j in range(m)])


def _with_group_penalty(problem: Problem, pattern: tuple[int, int]) -> Problem:
    n_keep, m = pattern
    p = problem.default_penalty()
    size = problem.n
    Q = problem.Q.copy()
    for start in range(0, size, m):
        sl = slice(start, start + m)
        # P (Σ x − c)² = P Σ_ij x_i x_j − 2 c P Σ x_i + P c²  with c = m − n pruned.
        Q[sl, sl] += p
        Q[np.arange(start, start + m), np.arange(start, start + m)] -= 2 * (m - n_keep) * p
    offset = problem.offset + p * (m - n_keep) ** 2 * (size // m)
    meta = problem.metadata
    meta["group_penalty"] = {"weight": p, "pattern": f"{n_keep}:{m}"}
    return problem.replace(Q=Q, offset=offset, metadata=meta)


def _groups_ok(x: np.ndarray, pattern: tuple[int, int]) -> bool:
    n_keep, m = pattern
    return bool(np.all(np.asarray(x).reshape(-1, m).sum(axis=1) == m - n_keep))


# ---------------------------------------------------------------- fisher objective
class _Capture:
    """Forward/backward hooks keeping one Linear's inputs X and output gradients δ."""

    def __init__(self, module: torch.nn.Linear) -> None:
        self.x: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._forward)

    def _forward(self, _mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        self.x = args[0].detach()
        if out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> None:
        self.delta = grad.detach()

    def remove(self) -> None:
        self._handle.remove()


def capture_fisher_inputs(model: torch.nn.Module, windows: torch.Tensor,
                          linears: Mapping[str, torch.nn.Linear]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (X (m, T, d_in), δ (m, T, d_out))} from one forward/backward per window.

    Window s's pass backpropagates its own loss L_s (mean next-token NLL), so δ_s is the
    gradient of L_s alone; one window at a time keeps the activation memory (the logits
    over the vocabulary above all) that of a single window. Parameter gradients are not
    accumulated.
    """
    captures = {name: _Capture(mod) for name, mod in linears.items()}
    xs: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    deltas: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        embed = model.get_input_embeddings()
        for s in range(windows.shape[0]):
            window = windows[s:s + 1]
            inputs = embed(window).detach().requires_grad_(True)
            logits = model(inputs_embeds=inputs, use_cache=False).logits[0, :-1]
            torch.nn.functional.cross_entropy(logits.float(), window[0, 1:]).backward()
            del logits
            for name, c in captures.items():
                xs[name].append(c.x)
                deltas[name].append(c.delta)
                c.x = c.delta = None
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for c in captures.values():
            c.remove()
    return {name: (torch.cat(xs[name]), torch.cat(deltas[name])) for name in linears}


def fisher_refine_block(linears: Mapping[str, tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]],
                        captured: Mapping[str, tuple[torch.Tensor, torch.Tensor]], solver: Any, *,
                        block_size: int, steps: int, gamma: float, lam: float,
                        held_out_loss: Callable[[], float] | None = None,
                        initial_loss: float | None = None, trust: float = 0.0,
                        blend: float = 0.0,
                        block_sink: Callable[[Problem], None] | None = None,
                        on_step: Callable[[Any], None] | None = None) -> tuple[dict[str, torch.Tensor], Any]:
    """iCBS steps on the Linears of one decoder block with the empirical Fisher.

    ``linears``: name -> (module, W0 dense, keep); weights are updated in place (w0 where
    kept, 0 where pruned). ``steps`` blocks per Linear, all posed from the captured
    gradients and solved as one group; with ``held_out_loss`` the group is checked on it
    (reverted, or its answers halved, when it rises); ``trust``: cost per flipped weight
    (`pruning.llm.objectives.trust_region`); ``blend``: weight of the K-FAC curvature
    (`pruning.llm.objectives.DecoderFisher`). Returns ({name: new keep}, the
    engine's `EngineStats`) and leaves the engine's final loss in ``stats.final_loss``.
    """
    from pruning.engine import ICBSEngine

    from .objectives import LM_POLICY, DecoderFisher

    objective = DecoderFisher(linears, captured, gamma=gamma, lam=lam, held_out_loss=held_out_loss,
                              trust=trust, blend=blend)
    engine = ICBSEngine(objective, solver, block_size=block_size, policy=LM_POLICY,
                        loss_check=held_out_loss is not None, initial_loss=initial_loss,
                        block_sink=block_sink, on_step=on_step)
    schedule = [u for u in range(len(objective.names)) for _ in range(steps)]
    engine.run(schedule, group_size=max(1, len(schedule)))
    engine.stats.final_loss = engine.loss  # type: ignore[attr-defined]
    return {n: objective.keep_tensor(u) for u, n in enumerate(objective.names)}, engine.stats
