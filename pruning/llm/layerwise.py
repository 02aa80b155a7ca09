"""Layer-by-layer processing of a decoder-only transformer.

The calibration token windows are embedded once (the inputs of the first decoder block
are caught with a pre-hook that stops the forward pass). Then, for each decoder block in
order: the current calibration activations run through the block once while hooks
accumulate, for every Linear in the block, XᵀX over all calibration tokens; a callback
prunes the block's Linears; the activations run through the *pruned* block to become the
next block's inputs. Only one block's activations (inputs and outputs) are held at a time.

`PeakMemory` samples the process's resident set size in a thread and reports the peak.
"""

from __future__ import annotations

import copy
import logging
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

__all__ = ["LinearStats", "PeakMemory", "decoder_layers", "prunable_linears",
           "run_layerwise", "rss_bytes"]

log = logging.getLogger(__name__)


@dataclass
class LinearStats:
    """Input statistics of one Linear: ``xtx`` (d_in, d_in) float64 = Σ_tokens x xᵀ over
    its inputs in the model pruned so far; with dense targets also ``cross`` (d_in, d_in)
    float64 = Σ_tokens x x̄ᵀ, x̄ the same token's input in the dense model."""

    xtx: torch.Tensor
    tokens: int = 0
    cross: torch.Tensor | None = None

    @property
    def hessian(self) -> torch.Tensor:
        """XᵀX / tokens (d_in, d_in) float64: the layer-reconstruction Hessian up to 2."""
        return self.xtx / max(self.tokens, 1)

    @property
    def column_norms(self) -> torch.Tensor:
        """‖X_j‖₂ over all calibration tokens, (d_in,) float64 (Wanda's activation norm)."""
        return torch.sqrt(torch.clamp(torch.diagonal(self.xtx), min=0.0))


def rss_bytes() -> int:
    """Current resident set size of this process in bytes (Linux /proc; else peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Context manager: ``peak_bytes`` = highest RSS seen (sampled every ``interval`` s)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self.peak_bytes = rss_bytes()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, rss_bytes())


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks (``config.num_hidden_layers`` long)."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError("cannot find the decoder blocks (a ModuleList of num_hidden_layers)")


def prunable_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers of one decoder block, by name relative to the block."""
    return {name: mod for name, mod in block.named_modules() if isinstance(mod, nn.Linear)}


class _Caught(Exception):
    pass


@torch.no_grad()
def _first_block_inputs(model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor,
                        batch_size: int) -> tuple[list[torch.Tensor], dict[str, Any]]:
    inputs: list[torch.Tensor] = []
    kwargs: dict[str, Any] = {}

    def catch(_mod: nn.Module, args: tuple, kw: dict) -> None:
        inputs.append(args[0] if args else kw["hidden_states"])
        if not kwargs:
            kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _Caught

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for start in range(0, windows.shape[0], batch_size):
            try:
                model(input_ids=windows[start:start + batch_size], use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
    kwargs["use_cache"] = False
    kwargs.pop("past_key_values", None)
    kwargs.pop("past_key_value", None)
    return inputs, kwargs


def _block_out(block: nn.Module, hidden: torch.Tensor, kwargs: Mapping[str, Any]) -> torch.Tensor:
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


BlockPruner = Callable[[int, dict[str, nn.Linear], dict[str, LinearStats]], None]


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1]).to(torch.float32)


class _Hooks:
    """Forward hooks on a block's Linears, removed on exit."""

    def __init__(self, linears: dict[str, nn.Linear], make: Callable[[str], Callable]) -> None:
        self.handles = [lin.register_forward_hook(make(name)) for name, lin in linears.items()]

    def __enter__(self) -> "_Hooks":
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def _input_groups(block: nn.Module, linears: dict[str, nn.Linear], hidden: torch.Tensor,
                  kwargs: Mapping[str, Any]) -> list[list[str]]:
    """The block's Linears grouped by the tensor they are fed (q/k/v; o; gate/up; down),
    in the order the forward pass reaches them (one batch ``hidden`` is run)."""
    groups: list[tuple[torch.Tensor, int, list[str]]] = []

    def record(name: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            x = args[0]
            if groups and groups[-1][0] is x and groups[-1][1] == x._version:
                groups[-1][2].append(name)
            else:
                groups.append((x, x._version, [name]))
        return hook

    with _Hooks(linears, record):
        _block_out(block, hidden, kwargs)
    ordered = [names for _x, _v, names in groups]
    unused = [name for name in linears if not any(name in names for names in ordered)]
    return ordered + ([unused] if unused else [])  # Linears the forward never reaches: last


@torch.no_grad()
def _block_stats(block: nn.Module, linears: dict[str, nn.Linear], hidden: list[torch.Tensor],
                 kwargs: Mapping[str, Any], stats: dict[str, LinearStats], *,
                 dense_block: nn.Module | None = None,
                 dense: list[torch.Tensor] | None = None) -> list[torch.Tensor] | None:
    """Run every batch of ``hidden`` through ``block`` and add the XᵀX and token count of
    each Linear in ``linears`` to ``stats``. With ``dense`` (the dense model's hidden
    states, batch for batch) and ``dense_block`` (the block's dense copy), also run those
    and add Σ x x̄ᵀ to ``stats[name].cross``; then returns the dense block's outputs
    (the same for every group of a block: recomputed rather than every Linear's dense
    inputs held in memory)."""
    paired = dense is not None and dense_block is not None
    # Linears fed the same tensor (q/k/v, gate/up) share one product per batch; the
    # tensor's version counter tells an in-place change apart.
    last: list[Any] = [None, -1, None]  # that input tensor, its version, its XᵀX float64
    inputs: dict[str, torch.Tensor] = {}  # this batch's pruned-stream input per Linear
    # id -> (tensor, version, copy): Linears fed one tensor share one copy (holding the
    # tensor keeps its id from being reused within the batch)
    copies: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def add_xtx(name: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            x = args[0]
            if last[0] is not x or last[1] != x._version:
                flat = _flat(x)
                last[:] = [x, x._version, (flat.T @ flat).to(torch.float64)]
            stats[name].xtx += last[2]
            stats[name].tokens += x.numel() // x.shape[-1]
            if paired:  # kept as it is now (a later in-place change is not seen)
                seen = copies.get(id(x))
                if seen is None or seen[0] is not x or seen[1] != x._version:
                    seen = copies[id(x)] = (x, x._version, x.clone())
                inputs[name] = seen[2]
        return hook

    pair: list[Any] = [None, None, None]  # pruned input, dense input, their product

    def add_cross(name: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            mine, theirs = inputs[name], args[0]
            if pair[0] is not mine or pair[1] is not theirs:
                pair[:] = [mine, theirs, (_flat(mine).T @ _flat(theirs)).to(torch.float64)]
            cross = stats[name].cross
            stats[name].cross = pair[2].clone() if cross is None else cross.add_(pair[2])
        return hook

    modules = dict(dense_block.named_modules()) if paired else {}
    dense_linears = {name: modules[name] for name in linears} if paired else {}
    outputs: list[torch.Tensor] = []
    for b, h in enumerate(hidden):
        with _Hooks(linears, add_xtx):
            _block_out(block, h, kwargs)
        last[:] = [None, -1, None]
        if paired:
            with _Hooks(dense_linears, add_cross):
                outputs.append(_block_out(dense_block, dense[b], kwargs))
            inputs.clear()
            copies.clear()
            pair[:] = [None, None, None]
    return outputs if paired else None


@torch.no_grad()
def run_layerwise(model: nn.Module, windows: torch.Tensor, prune_block: BlockPruner,
                  *, batch_size: int = 4, dense_targets: bool = False) -> dict[str, Any]:
    """Prune ``model`` block by block on calibration ``windows`` (m, T) int64.

    ``prune_block(index, linears, stats)`` changes the weights of ``linears`` in place
    (names relative to the block); ``stats`` holds each Linear's XᵀX from the current
    (already-pruned upstream) activations: all of a block's Linears at once, from the
    block's dense weights.

    ``dense_targets``: also carry the dense model's activations alongside and give every
    Linear ``stats.cross`` = Σ x x̄ᵀ (x from the pruned stream, x̄ the dense model's input
    for the same token), so that a pruner can aim at the dense model's outputs
    ‖X̄w − Xŵ‖² rather than ‖X(w − ŵ)‖². Then a block is pruned group by group of
    Linears fed one tensor (q/k/v; o; gate/up; down: ``prune_block`` is called once per
    group), each group's statistics taken after the groups before it were pruned: a
    Linear must correct the error its inputs really carry, or corrections made upstream
    in the block are made twice. This costs about 2 forward passes per group and the
    dense stream's activations in memory.

    Batches must share one shape, so m should be a multiple of ``batch_size``. Returns
    timing facts.
    """
    layers = decoder_layers(model)
    started = time.perf_counter()
    hidden, kwargs = _first_block_inputs(model, layers, windows, batch_size)
    dense_hidden = [h.clone() for h in hidden] if dense_targets else None
    sizes = {h.shape for h in hidden}
    if len(sizes) != 1:
        raise ValueError(f"calibration batches differ in shape {sizes}; use m divisible by "
                         "batch_size")
    for index, block in enumerate(layers):
        linears = prunable_linears(block)
        if dense_hidden is None:
            stats = {name: LinearStats(torch.zeros(lin.in_features, lin.in_features,
                                                   dtype=torch.float64))
                     for name, lin in linears.items()}
            _block_stats(block, linears, hidden, kwargs, stats)
            prune_block(index, linears, stats)
        else:
            dense_block = copy.deepcopy(block)
            next_dense: list[torch.Tensor] | None = None
            for names in _input_groups(block, linears, hidden[0], kwargs):
                group = {name: linears[name] for name in names}
                stats = {name: LinearStats(torch.zeros(lin.in_features, lin.in_features,
                                                       dtype=torch.float64))
                         for name, lin in group.items()}
                next_dense = _block_stats(block, group, hidden, kwargs, stats,
                                          dense_block=dense_block, dense=dense_hidden)
                prune_block(index, group, stats)
            dense_hidden = next_dense
            del dense_block
        hidden = [_block_out(block, h, kwargs) for h in hidden]
        log.info("block %d/%d pruned (%.1f s)", index + 1, len(layers),
                 time.perf_counter() - started)
    return {"blocks": len(layers), "layerwise_s": time.perf_counter() - started}
