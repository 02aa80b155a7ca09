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
loss is the perplexity of calibration windows the gradients did not use.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

from qcbo.problem import Problem

from ..block import block_problem
from ..engine import Block, Objective, SelectionPolicy
from .icbs import _group_block, _groups_ok, _with_group_penalty, row_errors

__all__ = ["RowReconstruction", "DecoderFisher", "LM_POLICY"]

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


class RowReconstruction(Objective):
    """Rows of one Linear: W0 dense (d_out, d_in), W current (zero where ~keep), keep
    bool, H damped XᵀX/N float64. `W` and `keep` are updated in place (float64 copies
    made here; read them back from the attributes)."""

    def __init__(self, W0: torch.Tensor, W: torch.Tensor, keep: torch.Tensor, H: torch.Tensor,
                 *, name: str = "", pattern: tuple[int, int] | None = None) -> None:
        self.W0 = W0.to(torch.float64)
        self.W = W.to(torch.float64).clone()
        self.keep_t = keep.clone()
        self._keep_np = self.keep_t.numpy()  # shares memory with keep_t
        self.H = H
        self.diagH = torch.diagonal(H)
        self.layer, self.pattern = name, pattern
        self.names = [f"{name}[{r}]" for r in range(self.W.shape[0])]

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
        return self.saliency(unit).numpy()

    def selector(self, unit: int, policy: SelectionPolicy, block_size: int) -> Any:
        if self.pattern is not None:
            return _GroupSelector(self, unit, block_size)
        return super().selector(unit, policy, block_size)

    def problem(self, block: Block, step: int) -> Problem:
        r, idx = block.unit, torch.from_numpy(block.indices)
        v = self.values(r)[idx]
        block.data = v
        g = 2.0 * (self.H[idx] @ (self.W[r] - self.W0[r]))
        problem = block_problem(v.numpy(), block.x_current, g.numpy(),
                                (2.0 * self.H[idx][:, idx]).numpy(), gamma=1.0, lam=0.0,
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


class DecoderFisher(Objective):
    """The Linears of one decoder block with their captured (X, δ).

    ``linears``: name -> (module, W0 dense, keep bool); ``captured``: name -> (X (m, T,
    d_in), δ (m, T, d_out)); ``held_out_loss``: () -> perplexity of held-out windows, or
    None for no check. Weights are w0 where kept, 0 where pruned (updated in place).
    """

    def __init__(self, linears: Mapping[str, tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]],
                 captured: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *, gamma: float,
                 lam: float, held_out_loss: Callable[[], float] | None = None) -> None:
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

    def keep(self, unit: int) -> np.ndarray:
        return self._keep[unit]

    def score(self, unit: int) -> np.ndarray:
        if unit not in self._scores:
            G, _ = self._gradients(unit)
            self._scores[unit] = (self.w0[unit] ** 2 * (G * G).mean(dim=0)).numpy()
        return self._scores[unit]

    def keep_tensor(self, unit: int) -> torch.Tensor:
        return torch.from_numpy(self._keep[unit].copy()).view(self.shapes[unit])

    def problem(self, block: Block, step: int) -> Problem:
        G, g = self._gradients(block.unit)
        idx = torch.from_numpy(block.indices)
        Gb = G[:, idx]
        return block_problem(self.w0[block.unit][idx].numpy(), block.x_current, g[idx].numpy(),
                             (Gb.T @ Gb / G.shape[0]).numpy(), gamma=self.gamma, lam=self.lam,
                             metadata={"layer": self.names[block.unit], "step": step,
                                       "objective": "fisher"})

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
