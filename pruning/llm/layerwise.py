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
    """Input statistics of one Linear: ``xtx`` (d_in, d_in) float64 = Σ_tokens x xᵀ."""

    xtx: torch.Tensor
    tokens: int = 0

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


@torch.no_grad()
def run_layerwise(model: nn.Module, windows: torch.Tensor, prune_block: BlockPruner,
                  *, batch_size: int = 4) -> dict[str, Any]:
    """Prune ``model`` block by block on calibration ``windows`` (m, T) int64.

    ``prune_block(index, linears, stats)`` changes the weights of ``linears`` in place
    (names relative to the block); ``stats`` holds each Linear's XᵀX from the current
    (already-pruned upstream) activations. Batches must share one shape, so m should be a
    multiple of ``batch_size``. Returns timing facts.
    """
    layers = decoder_layers(model)
    started = time.perf_counter()
    hidden, kwargs = _first_block_inputs(model, layers, windows, batch_size)
    sizes = {h.shape for h in hidden}
    if len(sizes) != 1:
        raise ValueError(f"calibration batches differ in shape {sizes}; use m divisible by "
                         "batch_size")
    for index, block in enumerate(layers):
        linears = prunable_linears(block)
        stats = {name: LinearStats(torch.zeros(lin.in_features, lin.in_features,
                                               dtype=torch.float64)) for name, lin in linears.items()}

        # Linears fed the same tensor (q/k/v, gate/up) share one XᵀX product per batch;
        # the tensor's version counter tells an in-place change apart.
        last: list[Any] = [None, -1, None]  # that input tensor, its version, its XᵀX float64

        def make_hook(name: str) -> Callable:
            def hook(_mod: nn.Module, args: tuple, _out: torch.Tensor) -> None:
                if last[0] is not args[0] or last[1] != args[0]._version:
                    x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float32)
                    last[:] = [args[0], args[0]._version, (x.T @ x).to(torch.float64)]
                stats[name].xtx += last[2]
                stats[name].tokens += args[0].numel() // args[0].shape[-1]
            return hook

        handles = [lin.register_forward_hook(make_hook(name)) for name, lin in linears.items()]
        try:
            for h in hidden:
                _block_out(block, h, kwargs)
        finally:
            last[:] = [None, -1, None]
            for handle in handles:
                handle.remove()
        prune_block(index, linears, stats)
        hidden = [_block_out(block, h, kwargs) for h in hidden]
        log.info("block %d/%d pruned (%.1f s)", index + 1, len(layers),
                 time.perf_counter() - started)
    return {"blocks": len(layers), "layerwise_s": time.perf_counter() - started}
