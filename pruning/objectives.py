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

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np
import torch
from torch import nn

from qcbo.errors import InputError
from qcbo.problem import Problem

from .block import block_problem
from .engine import Block, Objective
from .fisher import exact_hessian_block, fisher_block

__all__ = ["EVAL_CHUNK", "CalibrationCache", "ClassifierFisher", "Reconstruction",
           "calibration_loss", "tempered_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]

#: Samples per forward when measuring a loss. Smaller chunks stay in the CPU cache: a
#: forward of 4096 samples took 0.80 s in chunks of 256 against 2.14 s in one piece on
#: fmnist-cnn (0.08 against 0.13 s on fmnist-mlp-pm1, 0.30 against 0.41 s on fmnist-vit;
#: one thread, 2026-12-01).
EVAL_CHUNK = 256
#: A Linear stage is patched while at most 1/_PATCH_FRACTION of its weights differ from
#: its reference: the gather-multiply-scatter of k changed weights cost about as much as
#: the whole layer's matmul at k = in·out/200 (784 x 512, 256 samples: 1.1 ms at k = 1024,
#: 5.5 ms at 4096, 2.7 ms for the matmul).
_PATCH_FRACTION = 256


@torch.no_grad()
def calibration_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                     chunk: int = EVAL_CHUNK) -> tuple[float, float | None]:
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


@torch.no_grad()
def tempered_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                  chunk: int = EVAL_CHUNK) -> tuple[float, float] | None:
    """(min over T >= 1 of the mean loss of logits / T, that T) on x (N, ...), y (N,), in
    eval mode; None unless the outputs are (N, C) logits of integer class targets.

    Softening the logits removes what one global scale would fix in over-confident wrong
    answers, so near chance, where every one-shot mask of a model lands at a loss of
    about ln C, the value measures what the network still ranks right rather than how
    confident its mistakes are. T is searched on log T in [0, 6] (bounded Brent), in
    float64, and T = 1 is always a candidate: the value is never above the plain loss,
    and equals it when softening does not help. Sharpening (T < 1) is not allowed: on a
    calibration set a mask classifies perfectly it would drive every such mask's loss
    to 0 and erase the ranking.
    """
    from scipy.optimize import minimize_scalar

    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    finally:
        model.train(was_training)
    z = torch.cat(outs).double()
    if z.ndim != 2 or y.ndim != 1 or y.is_floating_point():
        return None

    def loss_at(log_t: float) -> float:
        return float(loss_fn(z / float(np.exp(log_t)), y))

    best = minimize_scalar(loss_at, bounds=(0.0, 6.0), method="bounded",
                           options={"xatol": 1e-4})
    plain = loss_at(0.0)
    if not best.fun < plain:
        return plain, 1.0
    return float(best.fun), float(np.exp(best.x))


class CalibrationCache:
    """The mean loss of ``model`` on a fixed set (x (N, ...), y (N,)), re-run only from
    the first stage whose weights changed since the last `loss` call.

    Stages: the children of a plain top-level ``nn.Sequential``, or what a model's
    ``forward_stages()`` returns, a list of (module-name prefixes whose parameters the
    stage uses, callable), whose composition is the forward (`pruning.zoo.PatchViT` has
    one). The inputs of the stages that hold ``names`` (prunable weights) are kept, per
    chunk of ``chunk`` samples, at the weights of the last call; `touch` marks a weight
    changed. A stage that is a plain ``nn.Linear`` also keeps its output and the weight
    it was computed with (the reference); while few of its weights differ from the
    reference (at most 1/256 of them), its output is that reference output plus the
    exact change x[:, c] Δ for the changed entries, so a step on a large first layer
    costs the layers after it. Otherwise the operations are those of a full forward
    (`calibration_loss`); the value agrees with it to float rounding (the reference is
    always a real forward, never a sum of deltas). Any other model is run in full every
    time. Memory: at most two cached activations per prunable stage and sample.
    """

    def __init__(self, model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor,
                 loss_fn: LossFn, chunk: int = EVAL_CHUNK) -> None:
        self.model, self.x, self.y, self.loss_fn, self.chunk = model, x, y, loss_fn, chunk
        self.stages: list[Callable[[torch.Tensor], torch.Tensor]] | None = None
        self._stage: dict[str, int] = {}
        plan: list[tuple[tuple[str, ...], Callable[[torch.Tensor], torch.Tensor]]] | None = None
        if model._forward_hooks or model._forward_pre_hooks:
            plan = None
        elif callable(getattr(model, "forward_stages", None)):
            plan = list(model.forward_stages())
        elif type(model).forward is nn.Sequential.forward:
            plan = [((key,), child) for key, child in model.named_children()]
        if plan is not None:
            def stage_of(name: str) -> int | None:
                for i, (prefixes, _) in enumerate(plan):
                    if any(name == p or name.startswith(p + ".") for p in prefixes):
                        return i
                return None

            found = {n: stage_of(n) for n in names}
            if all(v is not None for v in found.values()):
                self.stages = [fn for _, fn in plan]
                self._stage = {n: int(v) for n, v in found.items() if v is not None}
        self._cached = set(self._stage.values())
        self._linear = {i for i in self._cached if self.stages is not None
                        and type(self.stages[i]) is nn.Linear
                        and not (self.stages[i]._forward_hooks
                                 or self.stages[i]._forward_pre_hooks)}
        self._outs: dict[int, list[torch.Tensor]] = {}
        self._ref: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._acts: dict[int, list[torch.Tensor]] = {}
        self._dirty = 0
        self._last: float | None = None
        self._per_sample: bool | None = None  # does loss_fn take reduction="none"?
        self._last_samples: np.ndarray | None = None

    def touch(self, name: str) -> None:
        """Weight ``name`` changed: the next `loss` re-runs from its stage."""
        self._dirty = min(self._dirty, self._stage.get(name, 0))

    def samples(self) -> np.ndarray | None:
        """Per-sample losses (N,) of the last `loss` call, or None when ``loss_fn`` does
        not take ``reduction="none"`` (e.g. a lambda)."""
        return self._last_samples

    def _sample_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        if self._per_sample is False:
            return None
        try:
            values = self.loss_fn(out, y, reduction="none")  # type: ignore[call-arg]
        except TypeError:
            values = None
        if values is None or tuple(values.shape) != (len(y),):
            self._per_sample = False
            return None
        self._per_sample = True
        return values.detach().double()

    @torch.no_grad()
    def loss(self) -> float:
        if self.stages is None:
            return self._full_loss()
        if self._dirty >= len(self.stages) and self._last is not None:
            return self._last
        start = self._dirty if self._dirty in self._acts else 0
        delta = self._delta(start)
        was_training = self.model.training
        self.model.eval()
        total = 0.0
        parts: list[torch.Tensor | None] = []
        try:
            for c, lo in enumerate(range(0, len(self.x), self.chunk)):
                h = self.x[lo:lo + self.chunk] if start == 0 else self._acts[start][c]
                for i in range(start, len(self.stages)):
                    if i in self._cached:
                        _store(self._acts.setdefault(i, []), c, h)
                    if i == start and delta is not None:
                        rows, cols, change = delta
                        h = self._outs[i][c].index_add(-1, rows, h[..., cols] * change)
                        continue
                    h = self.stages[i](h)
                    if i in self._linear:
                        _store(self._outs.setdefault(i, []), c, h)
                total += self._chunk_loss(h, self.y[lo:lo + self.chunk], parts)
        finally:
            self.model.train(was_training)
        self._keep_samples(parts)
        for i in self._linear:
            if i >= start and not (i == start and delta is not None):
                layer = self.stages[i]
                self._ref[i] = (layer.weight.detach().reshape(-1).clone(),
                                None if layer.bias is None else layer.bias.detach().clone())
        self._dirty = len(self.stages)
        self._last = total / len(self.x)
        return self._last

    @torch.no_grad()
    def even_samples(self) -> np.ndarray | None:
        """Per-sample losses (⌈N/2⌉,) of the even-numbered samples x[0::2] at the current
        weights, by a plain forward that leaves the cache as it is; None when ``loss_fn``
        does not take ``reduction="none"``."""
        _, parts = self._forward(self.x[0::2], self.y[0::2])
        if not parts or any(p is None for p in parts):
            return None
        return torch.cat(parts).numpy()  # type: ignore[arg-type]

    def _full_loss(self) -> float:
        """`calibration_loss`'s value, keeping the per-sample losses as well."""
        total, parts = self._forward(self.x, self.y)
        self._keep_samples(parts)
        return total / len(self.x)

    def _forward(self, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[float, list[torch.Tensor | None]]:
        """(summed loss, per-chunk per-sample losses) of a plain forward in eval mode."""
        was_training = self.model.training
        self.model.eval()
        total, parts = 0.0, []
        try:
            for lo in range(0, len(x), self.chunk):
                total += self._chunk_loss(self.model(x[lo:lo + self.chunk]),
                                          y[lo:lo + self.chunk], parts)
        finally:
            self.model.train(was_training)
        return total, parts

    def _chunk_loss(self, out: torch.Tensor, y: torch.Tensor,
                    parts: list[torch.Tensor | None]) -> float:
        """Summed loss of one chunk (mean x count, as `calibration_loss` adds it); its
        per-sample losses go to ``parts``."""
        parts.append(self._sample_losses(out, y))
        return float(self.loss_fn(out, y)) * len(y)

    def _keep_samples(self, parts: list[torch.Tensor | None]) -> None:
        self._last_samples = (None if not parts or any(p is None for p in parts)
                              else torch.cat(parts).numpy())  # type: ignore[arg-type]

    def _delta(self, stage: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(rows, cols, W - W_ref at them) when ``stage`` is a Linear whose reference
        output is cached and few of its weights changed; else None (run it in full)."""
        if stage not in self._linear or stage not in self._ref or stage not in self._outs:
            return None
        layer = self.stages[stage]  # type: ignore[index]
        w_ref, b_ref = self._ref[stage]
        if b_ref is not None and not torch.equal(layer.bias, b_ref):
            return None
        w = layer.weight.detach().reshape(-1)
        idx = (w != w_ref).nonzero().squeeze(1)
        if len(idx) > w.numel() // _PATCH_FRACTION:
            return None
        return idx // layer.in_features, idx % layer.in_features, w[idx] - w_ref[idx]


def _store(items: list[torch.Tensor], c: int, value: torch.Tensor) -> None:
    if c < len(items):
        items[c] = value
    else:
        items.append(value)


@dataclass
class Reconstruction:
    """The layer reconstruction as re-fit candidates: ``dense`` (the unpruned model),
    ``inputs`` (N, ...) training inputs, one candidate per ridge (`pruning.reconstruct`)."""

    dense: nn.Module
    inputs: torch.Tensor
    ridges: tuple[float, ...] = (0.01,)

    def candidates(self, model: nn.Module, names: list[str],
                   masks: Mapping[str, torch.Tensor]
                   ) -> tuple[list[tuple[str, torch.Tensor]], dict[str, Any]]:
        """([(label, δ over ``names``' flattened weights)], {label: its record}): each
        ridge's reconstruction, computed on a copy of ``model``."""
        from .reconstruct import reconstruct_layers

        params = dict(model.named_parameters())
        current = torch.cat([params[n].detach().reshape(-1) for n in names])
        out, records = [], {}
        for ridge in self.ridges:
            work = copy.deepcopy(model)
            record = reconstruct_layers(work, self.dense, names, masks, self.inputs,
                                        ridge=ridge)
            moved = dict(work.named_parameters())
            label = f"reconstruct ridge {ridge:g}"
            out.append((label, torch.cat([moved[n].detach().reshape(-1) for n in names])
                        - current))
            records[label] = record
        return out, records


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
        self._cache = (CalibrationCache(model, self.names, *calibration, loss_fn)
                       if calibration is not None else None)
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

    def values(self) -> dict[str, torch.Tensor]:
        """Copies of the dense values kept weights take (``w0``, flat, by name)."""
        return {n: w.clone() for n, w in zip(self.names, self.w0)}

    def set_masks(self, masks: Mapping[str, np.ndarray],
                  values: Mapping[str, torch.Tensor] | None = None) -> None:
        """Restore whole masks (flat bool arrays by name), weights included, with the
        dense values of `values` when given (a state saved before a re-fit moved them)."""
        with torch.no_grad():
            for u, name in enumerate(self.names):
                if values is not None:
                    self.w0[u] = values[name].clone()
                self._keep[u][:] = masks[name]
                self.params[u].copy_((self.w0[u] * torch.from_numpy(self._keep[u]).to(
                    self.w0[u].dtype)).view_as(self.params[u]))
                if self._cache is not None:
                    self._cache.touch(name)

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
        if self._cache is not None:
            self._cache.touch(self.names[block.unit])

    def loss(self) -> float | None:
        return None if self._cache is None else self._cache.loss()

    def loss_samples(self) -> np.ndarray | None:
        return None if self._cache is None else self._cache.samples()

    def refit(self, *, reconstruct: Reconstruction | None = None, fisher: bool = True,
              **options: Any) -> dict:
        """One `pruning.refit.refit_weights` round on the kept weights, from a fresh
        batch of ``samples`` training samples, checked on the calibration loss. An
        accepted step becomes the kept weights' dense values (``w0``), so later blocks
        and `set_masks` use them; pruned weights keep theirs. ``reconstruct``: add the
        layer reconstruction toward the dense model (`pruning.reconstruct`) at each of
        its ridges to the candidates; ``fisher=False``: those alone. Returns the round's
        record.
        """
        if self._cache is None:
            raise InputError("the re-fit needs a calibration set to check its steps on "
                             "(enable the loss check)")
        from .refit import refit_weights

        extra: list[tuple[str, torch.Tensor]] = []
        rebuilt: dict[str, Any] = {}
        if reconstruct is not None:
            extra, rebuilt = reconstruct.candidates(self.model, self.names, self.masks())
        if fisher:  # otherwise no per-sample gradients, so no batch is drawn
            self.refresh()
        support = torch.from_numpy(np.concatenate(self._keep))

        def held_out() -> float:
            for name in self.names:
                self._cache.touch(name)  # type: ignore[union-attr]
            return self._cache.loss()  # type: ignore[union-attr]

        record = refit_weights(self.model, self.loss_fn, self.params, self.names, support,
                               self._batch if fisher else None, held_out,
                               held_out_samples=self._cache.samples,
                               choose_samples=self._cache.even_samples, extra=extra,
                               fisher=fisher, **options)
        if rebuilt:
            record["reconstruction"] = rebuilt
        if record["accepted"]:
            with torch.no_grad():
                for u, p in enumerate(self.params):
                    keep = torch.from_numpy(self._keep[u])
                    self.w0[u] = torch.where(keep, p.detach().reshape(-1), self.w0[u])
        return record
