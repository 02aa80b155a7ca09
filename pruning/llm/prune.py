"""Pruning a whole causal LM with one method, layer by layer (library entry point).

`prune_lm` changes the model's Linear weights in place (every Linear inside the decoder
blocks; embeddings, norms and the tied LM head are not pruned) and returns a report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import baselines
from ..engine import BlockSolver, StepRecord
from .icbs import (LayerErrors, LMICBSConfig, capture_fisher_inputs, error_totals,
                   fisher_refine_block, reconstruct_layer)
from .layerwise import LinearStats, decoder_layers, prunable_linears, run_layerwise
from .alps import ALPSInfo, alps
from ..lsq import dense_target_weights as lsq_dense_target_weights
from .sparsegpt import damped_hessian, sparsegpt

__all__ = ["METHODS", "LMPruneConfig", "Method", "check_pattern", "dense_target_weights",
           "layer_densities", "prune_lm"]

log = logging.getLogger(__name__)

Method = Literal["magnitude", "wanda", "sparsegpt", "alps", "icbs"]
METHODS: tuple[str, ...] = ("magnitude", "wanda", "sparsegpt", "alps", "icbs")


@dataclass(frozen=True)
class LMPruneConfig:
    """What to prune and how. ``density``: fraction of weights kept per Linear;
    ``pattern``: (n, m) keeps n of every m inputs per row (density then ignored);
    ``alps_max_iter``: cap on ALPS's ADMM iterations per Linear; ``targets``: what each
    Linear reconstructs from its inputs in the model pruned so far (X): ``"pruned"`` its
    own outputs with those inputs, ‖X(w − ŵ)‖² (SparseGPT's and ALPS's objective), or
    ``"dense"`` the dense model's outputs, ‖X̄w − Xŵ‖² with X̄ the dense model's inputs,
    so that each layer also corrects the error of the layers pruned before it, with
    ``target_ridge`` (relative to mean(diag H)) holding the corrected targets toward the
    dense weights. Every method but magnitude takes either; see `dense_target_weights`."""

    method: Method = "wanda"
    density: float = 0.5
    pattern: tuple[int, int] | None = None
    icbs: LMICBSConfig = field(default_factory=LMICBSConfig)
    batch_size: int = 4
    sparsegpt_blocksize: int = 128
    damp: float = 0.01
    alps_max_iter: int = 300
    targets: Literal["pruned", "dense"] = "pruned"
    target_ridge: float = 1.0

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.targets not in ("pruned", "dense"):
            raise ValueError(f"targets must be 'pruned' or 'dense', got {self.targets!r}")
        if not self.target_ridge > 0:
            raise ValueError(f"target_ridge must be > 0, got {self.target_ridge}")
        if self.targets == "dense" and (self.method == "magnitude" or (
                self.method == "icbs" and self.icbs.objective == "fisher")):
            raise ValueError("dense targets need a layer-wise method (wanda, sparsegpt, alps "
                             "or icbs with the reconstruction objective)")
        if self.pattern is not None and not 0 < self.pattern[0] < self.pattern[1]:
            raise ValueError(f"pattern {self.pattern}: need 0 < n < m")
        if self.alps_max_iter < 1:
            raise ValueError(f"alps_max_iter must be >= 1, got {self.alps_max_iter}")
        if self.pattern is None and not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if self.method == "icbs":
            self.icbs.validate()
            if self.icbs.objective == "fisher" and self.pattern is not None:
                raise ValueError("the fisher objective supports unstructured density only; "
                                 "use --objective reconstruction with --pattern")

    @property
    def effective_density(self) -> float:
        return self.pattern[0] / self.pattern[1] if self.pattern else self.density


def check_pattern(model: nn.Module, config: LMPruneConfig) -> None:
    """ValueError, before any work, when ``config.pattern`` (n:m) does not fit: a decoder
    Linear whose input size m does not divide, or SparseGPT's column blocks."""
    if config.pattern is None:
        return
    n, m = config.pattern
    uses_sparsegpt = config.method == "sparsegpt" or (config.method == "icbs"
                                                      and config.icbs.init == "sparsegpt")
    if uses_sparsegpt and config.sparsegpt_blocksize % m:
        raise ValueError(f"pattern {n}:{m} needs m to divide SparseGPT's column blocks of "
                         f"{config.sparsegpt_blocksize}")
    for i, block in enumerate(decoder_layers(model)):
        for name, lin in prunable_linears(block).items():
            if lin.in_features % m:
                raise ValueError(f"pattern {n}:{m} needs every Linear's input size divisible "
                                 f"by {m}; {i}.{name} has {lin.in_features}")


def layer_densities(model: nn.Module) -> dict[str, float]:
    """Fraction of non-zero weights of every Linear in the decoder blocks."""
    out = {}
    for i, block in enumerate(decoder_layers(model)):
        for name, lin in prunable_linears(block).items():
            out[f"{i}.{name}"] = float((lin.weight != 0).float().mean())
    return out


def dense_target_weights(W: torch.Tensor, stats: LinearStats, ridge: float) -> torch.Tensor:
    """The weights W* (d_out, d_in) whose layer error equals the dense-target objective.

    With H = XᵀX/N (inputs of the model pruned so far), C = XᵀX̄/N (X̄: the dense model's
    inputs, ``stats.cross``) and λ = ridge·mean(diag H),
    ‖X̄w − Xŵ‖²/N + λ‖ŵ − w‖² = (ŵ − w*)ᵀ(H + λI)(ŵ − w*) + const with
    w* = (H + λI)⁻¹(C + λI)w, row by row. Each method then prunes W* with its usual
    (damped) objective. Where X̄ = X, W* = W; a large ridge gives W* → W. The least-squares
    correction over-fits the calibration tokens when λ is small (at density 0.5 on
    SmolLM2: ridge 0.01 is worse than no correction, ridge 1 better; benchmarks/HISTORY.md,
    session 11).
    """
    if stats.cross is None:
        raise ValueError("dense targets need the cross products (run_layerwise(..., "
                         "dense_targets=True))")
    n = max(stats.tokens, 1)
    Wt, _ = lsq_dense_target_weights(W, stats.hessian, stats.cross.to(torch.float64) / n, ridge)
    return Wt.to(W.dtype).contiguous()


def _init_mask(kind: str, W0: torch.Tensor, stats: LinearStats, cfg: LMPruneConfig,
               facts: dict[str, Any] | None = None, *, refit_after: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, keep) of a one-shot method on one Linear; ``facts`` receives what the
    method reports about itself (ALPS: iterations, final ρ). ``refit_after``: the caller
    re-fits the kept weights exactly, so ALPS skips its own PCG re-fit (its weights are
    then ADMM's iterate on the support; ``facts["pcg_skipped"]``)."""
    if kind == "magnitude":
        keep = baselines.magnitude_mask(W0, cfg.density, cfg.pattern)
    elif kind == "wanda":
        keep = baselines.wanda_mask(W0, stats.column_norms, cfg.density, cfg.pattern)
    elif kind == "sparsegpt":
        return sparsegpt(W0, stats.xtx, density=cfg.density, pattern=cfg.pattern,
                         blocksize=cfg.sparsegpt_blocksize, damp=cfg.damp)
    elif kind == "alps":
        info = ALPSInfo()
        result = alps(W0, stats.xtx, density=cfg.density, pattern=cfg.pattern, damp=cfg.damp,
                      max_iter=cfg.alps_max_iter, info=info,
                      **({"pcg_iter": 0} if refit_after else {}))
        if facts is not None:
            facts.update(asdict(info), pcg_skipped=refit_after)
        return result
    else:
        raise ValueError(f"unknown one-shot method {kind!r}")
    return W0 * keep, keep


class _Counts:
    """Solved and applied blocks (the engine's ``on_step``)."""

    def __init__(self) -> None:
        self.solved = self.applied = 0

    def __call__(self, record: StepRecord) -> None:
        self.solved += 1
        self.applied += int(record.applied and not record.reverted)


def prune_lm(model: nn.Module, calibration: torch.Tensor, config: LMPruneConfig, *,
             writer: Any = None, executor: Any = None) -> dict[str, Any]:
    """Prune ``model`` in place with calibration windows (m, T) int64; returns a report.

    ``writer``: an optional `qcbo.io.BlockSetWriter` receiving every iCBS block problem;
    ``executor`` (`backends.executor`): with several workers and no ``writer``, prunes a
    decoder block's Linears in parallel (`Executor.map`, one Linear per task); otherwise
    solves each Linear's blocks through it. The answers are the same either way.
    """
    config.validate()
    check_pattern(model, config)
    started = time.perf_counter()
    report: dict[str, Any] = {"method": config.method, "density": config.effective_density,
                              "targets": config.targets,
                              "pattern": None if config.pattern is None else
                              f"{config.pattern[0]}:{config.pattern[1]}", "layers": {}}
    icfg = config.icbs
    counts = _Counts()
    sink = writer.add if writer is not None else None
    solver = None
    if config.method == "icbs":
        # Built here so a bad backend or option fails before any work; the fisher objective
        # solves with it (reconstruction builds one per Linear, in `_prune_linear`).
        solver = BlockSolver(icfg.backend, icfg.backend_options, seed=icfg.seed,
                             executor=executor)
    fisher_state: dict[str, tuple[nn.Linear, torch.Tensor, torch.Tensor]] = {}

    if config.method == "magnitude":
        with torch.no_grad():
            for i, block in enumerate(decoder_layers(model)):
                for name, lin in prunable_linears(block).items():
                    keep = baselines.magnitude_mask(lin.weight, config.density, config.pattern)
                    lin.weight.mul_(keep)
    else:
        # One task per Linear: its start, then (reconstruction iCBS) its block steps. With
        # an executor of several workers (and no block writer, which must see every
        # problem here), a decoder block's Linears run in parallel, each solving its own
        # blocks serially; otherwise one after another here, their blocks solved through
        # the executor. Each Linear's solver is seeded by its position in the model, so
        # the answers are the same either way.
        by_linears = (executor is not None and getattr(executor, "workers", 1) > 1
                      and writer is None)
        numbered = 0

        def prune_block(index: int, linears: dict[str, nn.Linear],
                        stats: dict[str, LinearStats]) -> None:
            nonlocal numbered
            weights = {name: lin.weight.detach().clone() for name, lin in linears.items()}
            if config.targets == "dense":
                weights = {name: dense_target_weights(W, stats[name], config.target_ridge)
                           for name, W in weights.items()}
            tasks = [_LinearTask(f"{index}.{name}", weights[name], stats[name], config,
                                 numbered + j) for j, name in enumerate(linears)]
            numbered += len(tasks)
            if by_linears and _split_rows(config, len(tasks), executor.workers):
                results = _prune_split(tasks, executor)
            elif by_linears:  # the costliest first, so the workers finish at about the same
                # time: d_out x d_in^2 (ADMM's products and a row's factorisations grow as
                # d_in^3 x density^3, so down_proj, 4x wider, costs most per row)
                order = sorted(range(len(tasks)), key=lambda j: -_cost(tasks[j].W0))
                results = dict(zip(order, executor.map(_prune_linear, [tasks[j] for j in order])))
            else:
                results = {j: _prune_linear(task, executor=executor, block_sink=sink)
                           for j, task in enumerate(tasks)}
            for j, (name, lin) in enumerate(linears.items()):
                task, result = tasks[j], results[j]
                if result.facts:
                    report["layers"][task.name] = result.facts
                counts.solved += result.solved
                counts.applied += result.applied
                if config.method == "icbs" and icfg.objective == "fisher":
                    fisher_state[task.name] = (lin, task.W0, result.keep)
                with torch.no_grad():
                    lin.weight.copy_(result.W.to(lin.weight.dtype))

        report["layerwise"] = run_layerwise(model, calibration, prune_block,
                                            batch_size=config.batch_size,
                                            dense_targets=config.targets == "dense")
        if config.method == "icbs" and icfg.objective == "reconstruction":
            report["reconstruction_errors"] = error_totals(report["layers"])

    if config.method == "icbs" and icfg.objective == "fisher":
        report["fisher"] = _fisher(model, calibration, fisher_state, config, solver,
                                   block_sink=sink, on_step=counts)
    if config.method == "icbs":
        report["blocks"] = {"solved": counts.solved, "applied": counts.applied,
                            "backend": icfg.backend, "block_size": icfg.block_size,
                            "steps_per_layer": icfg.steps_per_layer,
                            "objective": icfg.objective, "refit": icfg.refit,
                            "init": icfg.init}
    report["prune_s"] = time.perf_counter() - started
    return report


@dataclass
class _LinearTask:
    """One Linear to prune: its dense weights W0 (d_out, d_in), input statistics, the
    run's config and its running number in the model (its iCBS solver's seed)."""

    name: str
    W0: torch.Tensor
    stats: LinearStats
    config: LMPruneConfig
    number: int


@dataclass
class _LinearResult:
    """What `_prune_linear` gives back: weights (zero where ~keep), mask, the layer
    report entry, and its iCBS blocks solved and applied."""

    W: torch.Tensor
    keep: torch.Tensor
    facts: dict[str, Any]
    solved: int = 0
    applied: int = 0


def _cost(W0: torch.Tensor) -> int:
    """Relative cost of pruning a (d_out, d_in) Linear: d_out * d_in^2."""
    return int(W0.shape[0]) * int(W0.shape[1]) ** 2


def _prune_linear(task: _LinearTask, *, executor: Any = None,
                  block_sink: Any = None) -> _LinearResult:
    """The one-shot start of one Linear and, for reconstruction iCBS, its block steps
    (module-level: an executor's worker runs it). ``executor`` and ``block_sink`` apply
    when it runs in the calling process."""
    with _one_blas_thread():
        return _prune_linear_body(task, executor=executor, block_sink=block_sink)


def _one_blas_thread() -> Any:
    """A context of one BLAS thread: numpy's and scipy's BLAS only serve the many small
    factorisations and products of the row blocks, which two threads slow down
    (down_proj's rows: 1.4x slower here); torch's own thread count is the caller's."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _start_linear(task: _LinearTask) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(W, keep, facts) of ``task``'s one-shot start (module-level: an executor's worker
    runs it)."""
    config, icfg = task.config, task.config.icbs
    icbs = config.method == "icbs"
    kind = icfg.init if icbs else config.method
    facts: dict[str, Any] = {}
    # An exact re-fit follows (reconstruction + refit): ALPS's own is redundant.
    exact_refit = icbs and icfg.objective == "reconstruction" and icfg.refit
    W, keep = _init_mask(kind, task.W0, task.stats, config, facts, refit_after=exact_refit)
    return W, keep, facts


def _split_rows(config: LMPruneConfig, linears: int, workers: int) -> bool:
    """Whether a group of ``linears`` Linears runs its row blocks split into row chunks:
    reconstruction iCBS visiting every row (``row_rounds``), whose rows are independent
    problems, with fewer Linears than workers (with dense targets o_proj and down_proj
    are groups of one; down_proj's rows are about half of a decoder block's work)."""
    icfg = config.icbs
    return (config.method == "icbs" and icfg.objective == "reconstruction"
            and icfg.row_rounds > 0 and linears < workers)


@dataclass
class _RowsTask:
    """Rows ``rows`` (a slice) of a Linear's start (W, keep), their block steps seeded by
    ``seed``."""

    task: _LinearTask
    rows: slice
    W: torch.Tensor
    keep: torch.Tensor
    seed: int


def _refine_rows(rt: _RowsTask) -> tuple[torch.Tensor, torch.Tensor, LayerErrors]:
    """The block steps of one row chunk (module-level: an executor's worker runs it):
    (W, keep, errors) of the chunk's rows."""
    task, layers = rt.task, {}
    with _one_blas_thread():
        solver = BlockSolver(task.config.icbs.backend, task.config.icbs.backend_options,
                             seed=rt.seed)
        W, keep = _reconstruct(task.name, task.W0[rt.rows], rt.W, rt.keep, task.stats,
                               task.config, solver, layers)
    return W, keep, LayerErrors(**layers[task.name]["errors"])


def _prune_split(tasks: list[_LinearTask], executor: Any) -> dict[int, _LinearResult]:
    """`_prune_linear` of ``tasks`` on ``executor.workers`` workers when there are fewer
    Linears than workers: the starts in parallel, then each Linear's rows in
    ⌈workers / len(tasks)⌉ contiguous chunks, every chunk's solver seeded by the Linear's
    number and the chunk's. The layer errors add up over rows, so the report is the same
    as one task's; only the solvers' random streams differ."""
    from backends.executor import task_seed

    starts = list(executor.map(_start_linear, tasks))
    parts = -(-executor.workers // len(tasks))
    chunks: list[tuple[int, _RowsTask]] = []
    for j, (task, (W, keep, _facts)) in enumerate(zip(tasks, starts)):
        bounds = np.linspace(0, W.shape[0], parts + 1).round().astype(int)
        base = task_seed(task.config.icbs.seed, task.number)
        for c in range(parts):
            rows = slice(int(bounds[c]), int(bounds[c + 1]))
            if rows.stop > rows.start:
                chunks.append((j, _RowsTask(task, rows, W[rows].clone(), keep[rows].clone(),
                                            task_seed(base, c))))
    done = list(executor.map(_refine_rows, [rt for _, rt in chunks]))
    results: dict[int, _LinearResult] = {}
    for j, (task, (_W, _keep, facts)) in enumerate(zip(tasks, starts)):
        mine = [out for (owner, _), out in zip(chunks, done) if owner == j]
        W = torch.cat([out[0] for out in mine])
        keep = torch.cat([out[1] for out in mine])
        errors = LayerErrors.total([out[2] for out in mine])
        results[j] = _LinearResult(W, keep, _layer_facts(facts, errors, task.config.icbs),
                                   errors.blocks_solved, errors.blocks_applied)
    return results


def _prune_linear_body(task: _LinearTask, *, executor: Any = None,
                       block_sink: Any = None) -> _LinearResult:
    config, icfg = task.config, task.config.icbs
    icbs = config.method == "icbs"
    W, keep, facts = _start_linear(task)
    counts = _Counts()
    if icbs and icfg.objective == "reconstruction":
        from backends.executor import task_seed

        solver = BlockSolver(icfg.backend, icfg.backend_options,
                             seed=task_seed(icfg.seed, task.number), executor=executor)
        layers = {task.name: facts} if facts else {}
        W, keep = _reconstruct(task.name, task.W0, W, keep, task.stats, config, solver,
                               layers, block_sink=block_sink, on_step=counts)
        facts = layers[task.name]
    return _LinearResult(W, keep, facts, counts.solved, counts.applied)


def _reconstruct(name: str, W0: torch.Tensor, W: torch.Tensor, keep: torch.Tensor,
                 stats: LinearStats, config: LMPruneConfig, solver: BlockSolver,
                 layers: dict[str, Any], *, block_sink: Any = None,
                 on_step: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    icfg = config.icbs
    H, _dead = damped_hessian(stats.hessian, config.damp)
    W, keep, errors = reconstruct_layer(W0, W, keep, H, solver, icfg, name=name,
                                        pattern=config.pattern, block_sink=block_sink,
                                        on_step=on_step)
    layers[name] = _layer_facts(layers.get(name, {}), errors, icfg)
    return W, keep


def _layer_facts(start: dict[str, Any], errors: LayerErrors, icfg: LMICBSConfig
                 ) -> dict[str, Any]:
    """A Linear's report entry: its start's facts (ALPS's), if any, and its errors."""
    return {**start, "error_init": errors.refit if icfg.refit else errors.start,
            "error_final": errors.blocks_refit if icfg.refit else errors.blocks,
            "errors": errors.to_dict()}


def _fisher(model: nn.Module, calibration: torch.Tensor,
            state: dict[str, tuple[nn.Linear, torch.Tensor, torch.Tensor]],
            config: LMPruneConfig, solver: BlockSolver, *, block_sink: Any = None,
            on_step: Any = None) -> dict[str, Any]:
    """Fisher-objective iCBS over the decoder blocks (after the one-shot initial masks).

    Per pass (``blocks_per_pass`` decoder blocks, or with ``fisher_groups`` one group of a
    decoder block's Linears: its attention, then its MLP): per-sample gradients on
    ``fisher_samples`` random calibration windows at the current masks, then, per decoder
    block (or group), one engine group of block steps on its Linears
    (`fisher_refine_block`). With ``loss_check`` each is checked on the perplexity of
    held-out calibration windows (other rows than the gradient's, when there are enough):
    reverted, or its answers halved, when it rises. The report counts the checked units
    (``check_unit``), how many were restored and how many halved.
    """
    from .perplexity import perplexity

    icfg = config.icbs
    rng = np.random.default_rng(icfg.seed)
    units: dict[tuple[int, str], list[str]] = {}
    for name in state:  # names are "<decoder block>.<module path>"
        block, _, path = name.partition(".")
        group = path.split(".")[0] if icfg.fisher_groups else ""
        units.setdefault((int(block), group), []).append(name)
    order = sorted(units, key=lambda key: key[0])  # stable: groups in module order
    n_blocks = len(decoder_layers(model))
    if icfg.fisher_groups:
        passes = [[key] for key in order]
    else:
        passes = [[key for key in order if first <= key[0] < first + icfg.blocks_per_pass]
                  for first in range(0, n_blocks, icfg.blocks_per_pass)]
        passes = [p for p in passes if p]
    started = time.perf_counter()
    checked = restored = shrunk = 0
    for epoch in range(icfg.epochs):
        for keys in passes:
            m = min(icfg.fisher_samples, calibration.shape[0])
            perm = rng.permutation(calibration.shape[0])
            rows, others = np.sort(perm[:m]), np.sort(perm[m:2 * m])
            windows = calibration[rows, : icfg.fisher_window]
            held_out = calibration[others if others.size else rows, : icfg.fisher_window]
            captured = capture_fisher_inputs(
                model, windows, {n: state[n][0] for key in keys for n in units[key]})
            check = (lambda: perplexity(model, held_out)) if icfg.loss_check else None
            reference = check() if check is not None else None
            for key in keys:
                names = units[key]
                keeps, stats = fisher_refine_block(
                    {n: state[n] for n in names}, {n: captured.pop(n) for n in names}, solver,
                    block_size=icfg.block_size, steps=icfg.steps_per_layer, gamma=icfg.gamma,
                    lam=icfg.lam, held_out_loss=check, initial_loss=reference,
                    trust=icfg.trust, blend=icfg.blend, block_sink=block_sink,
                    on_step=on_step)
                for n in names:
                    lin, W0, _ = state[n]
                    state[n] = (lin, W0, keeps[n])
                if check is not None and stats.groups:
                    checked += 1
                    restored += int(stats.groups_reverted)
                    shrunk += int(stats.groups_shrunk)
                    reference = stats.final_loss
            log.info("fisher epoch %d, %s done (%.1f s)", epoch,
                     ", ".join(f"{b}.{g}" if g else f"block {b}" for b, g in keys),
                     time.perf_counter() - started)
    return {"fisher_s": time.perf_counter() - started, "epochs": icfg.epochs,
            "check_unit": "group of Linears" if icfg.fisher_groups else "decoder block",
            "passes": len(passes) * icfg.epochs, "blend": icfg.blend, "trust": icfg.trust,
            "blocks_checked": checked, "blocks_restored": restored, "blocks_shrunk": shrunk}
