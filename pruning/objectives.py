"""The classifier objective of the iCBS engine: the Taylor/Fisher block model of ICBS.md.

Units are the prunable weights (nn.Linear / nn.Conv2d), flattened. Each group of blocks
is posed from one fresh batch of ``samples`` training samples at the current weights:
gradient g and Hessian block H (empirical Fisher GᵀG/m, or the exact autograd block) via
`pruning.fisher`, turned into the QCBO of `pruning.block.block_problem`. A pattern x
sets the block's weights to w0 ∘ (1 − x) (iCBS keeps dense values on kept weights).
The held-out loss is the mean loss on a fixed calibration set that the gradient batches
never come from (the caller keeps it apart; see `pruning.run.prune_classifier`).
"""

from __future__ import annotations

from typing import Callable, Iterator, Literal, Mapping

import numpy as np
import torch
from torch import nn

from qcbo.problem import Problem

from .block import block_problem
from .engine import Block, Objective
from .fisher import exact_hessian_block, fisher_block

__all__ = ["ClassifierFisher", "calibration_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def calibration_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                     chunk: int = 4096) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) of ``model`` on x (N, ...), y (N,), in eval mode."""
    was_training = model.training
    model.eval()
    total, correct, classify = 0.0, 0, True
    try:
        for start in range(0, len(x), chunk):
            out = model(x[start:start + chunk])
            yb = y[start:start + chunk]
            total += float(loss_fn(out, yb)) * len(yb)
            if classify and out.ndim == 2 and yb.ndim == 1 and not yb.is_floating_point():
                correct += int((out.argmax(dim=-1) == yb).sum())
            else:
                classify = False
    finally:
        model.train(was_training)
    return total / len(x), (correct / len(x) if classify else None)


class ClassifierFisher(Objective):
    """Blocks of a classifier's weights with the Fisher (or exact) Hessian block.

    ``weights``: name -> parameter (changed in place); ``masks``: name -> bool tensor
    (True = kept) shaped like the weight, already applied or not (applied here);
    ``scores``: name -> selection score tensor (higher = more important).
    ``batches`` yields training batches forever; ``calibration`` is (x, y) or None.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, weights: Mapping[str, nn.Parameter],
                 masks: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
                 batches: Iterator[Batch], *, samples: int, gamma: float, lam: float,
                 hessian: Literal["fisher", "exact"] = "fisher", rescale: bool = True,
                 calibration: Batch | None = None) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.names = list(weights)
        self.params = [weights[n] for n in self.names]
        self.w0 = [p.detach().reshape(-1).clone() for p in self.params]
        self._keep = [masks[n].detach().reshape(-1).numpy().astype(bool).copy() for n in self.names]
        self._score = [scores[n].detach().double().reshape(-1).numpy() for n in self.names]
        self.batches = batches
        self.samples = int(samples)
        self.gamma, self.lam, self.rescale = float(gamma), float(lam), bool(rescale)
        self.block_fn = fisher_block if hessian == "fisher" else exact_hessian_block
        self.calibration = calibration
        self._batch: Batch | None = None
        with torch.no_grad():
            for p, w0, keep in zip(self.params, self.w0, self._keep):
                p.copy_((w0 * torch.from_numpy(keep).to(w0.dtype)).view_as(p))

    def keep(self, unit: int) -> np.ndarray:
        return self._keep[unit]

    def score(self, unit: int) -> np.ndarray:
        return self._score[unit]

    def masks(self) -> dict[str, torch.Tensor]:
        """Current masks, name -> bool tensor shaped like the weight."""
        return {n: torch.from_numpy(k.copy()).view_as(p)
                for n, k, p in zip(self.names, self._keep, self.params)}

    def set_masks(self, masks: Mapping[str, np.ndarray]) -> None:
        """Restore whole masks (flat bool arrays by name), weights included."""
        with torch.no_grad():
            for u, name in enumerate(self.names):
                self._keep[u][:] = masks[name]
                self.params[u].copy_((self.w0[u] * torch.from_numpy(self._keep[u]).to(
                    self.w0[u].dtype)).view_as(self.params[u]))

    def refresh(self) -> None:
        xs, ys, count = [], [], 0
        while count < self.samples:
            xb, yb = next(self.batches)
            xs.append(xb)
            ys.append(yb)
            count += len(xb)
        self._batch = (torch.cat(xs)[:self.samples], torch.cat(ys)[:self.samples])

    def problem(self, block: Block, step: int) -> Problem:
        assert self._batch is not None, "refresh() first"
        idx = torch.from_numpy(block.indices)
        g, H = self.block_fn(self.model, self.loss_fn, self.names[block.unit], idx, *self._batch)
        w0 = self.w0[block.unit][idx].double().numpy()
        return block_problem(w0, block.x_current, g.numpy(), H.numpy(), gamma=self.gamma,
                             lam=self.lam, rescale=self.rescale,
                             metadata={"layer": self.names[block.unit], "objective": "fisher",
                                       "step": step})

    @torch.no_grad()
    def apply(self, block: Block, x: np.ndarray) -> None:
        keep = np.asarray(x) == 0
        self._keep[block.unit][block.indices] = keep
        idx = torch.from_numpy(block.indices)
        w0 = self.w0[block.unit]
        self.params[block.unit].view(-1)[idx] = w0[idx] * torch.from_numpy(keep).to(w0.dtype)

    def loss(self) -> float | None:
        if self.calibration is None:
            return None
        return calibration_loss(self.model, *self.calibration, self.loss_fn)[0]
