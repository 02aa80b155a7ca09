"""Layer-wise reconstruction of a pruned classifier toward its dense model's outputs.

The classifier counterpart of the LM layer problems with dense targets: for each pruned
Linear or Conv2d weight, in model order, the kept weights take the least-squares values

    Ŵ = argmin over W on the support of ‖X̄W̄ᵀ − XWᵀ‖² / N + λ‖W − W̄‖²,

with X the layer's inputs in the model pruned (and reconstructed) so far, X̄ the dense
model's inputs for the same samples, W̄ the dense weights and λ = ridge·mean(diag XᵀX/N).
Pruned weights stay 0, biases keep their values. `pruning.lsq` solves it row by row (one
Cholesky factorisation per row of its kept columns). A Conv2d is the same problem on its
unfolded patches (X: one row per sample and output position); grouped convolutions are
not supported. Each layer sees the inputs its reconstructed predecessors produce, so the
error a layer leaves is what the next one reconstructs against.

Why: the block steps choose masks on a local Fisher model, and the Fisher re-fit
(`pruning.refit`) moves kept weights by 512-sample Gauss-Newton steps that the calibration
test mostly refuses near dense. The reconstruction uses thousands of samples per layer
and no labels; on the zoo at density 0.3 it takes CHITA++'s test accuracy to within
0.1-0.2 points of dense (benchmarks/HISTORY.md, session 13).
"""

from __future__ import annotations

import time
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from qcbo.errors import InputError

from .baselines import _modules_by_weight
from .lsq import dense_target_weights, refit_rows

__all__ = ["MAX_ROWS", "RIDGE", "layer_features", "reconstruct_layers"]

#: Default ridge, relative to mean(diag XᵀX/N): the best of 1e-3..1 on CHITA++ starts of
#: LeNet, pm1 and nobias-wd at density 0.3 (benchmarks/HISTORY.md, session 13).
RIDGE = 0.01
#: Rows of X read per layer at most (module docs).
MAX_ROWS = 1 << 19


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the input is recorded."""


def layer_features(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The rows X (rows, d_in) whose product with the flattened weight (d_out, d_in)ᵀ is
    ``module``'s output before its bias: a Linear's inputs with leading dims merged, a
    Conv2d's unfolded patches (one row per sample and output position)."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or isinstance(module.padding, str):
            raise InputError("reconstruction supports Conv2d with groups=1 and numeric "
                             "padding only")
        patches = F.unfold(inputs, module.kernel_size, dilation=module.dilation,
                           padding=module.padding, stride=module.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    if isinstance(module, nn.Linear):
        return inputs.reshape(-1, inputs.shape[-1])
    raise InputError(f"reconstruction supports Linear and Conv2d, not {type(module).__name__}")


def _inputs(model: nn.Module, module: nn.Module, x: torch.Tensor, chunk: int
            ) -> Iterator[torch.Tensor]:
    """``module``'s input for each chunk of ``x`` in ``model``, chunk by chunk (each
    forward stops once the input is recorded)."""
    found: list[torch.Tensor] = []

    def hook(_mod: nn.Module, args: tuple) -> None:
        found.append(args[0].detach())
        raise _Stop

    for i in range(0, len(x), chunk):
        handle = module.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                model(x[i:i + chunk])
        except _Stop:
            pass
        finally:
            handle.remove()
        if not found:
            raise InputError("reconstruction: a pruned layer was not reached by the "
                             "forward pass")
        yield found.pop()


def reconstruct_layers(model: nn.Module, dense: nn.Module, names: Sequence[str],
                       masks: Mapping[str, torch.Tensor], x: torch.Tensor, *,
                       ridge: float = RIDGE, chunk: int = 256,
                       max_rows: int = MAX_ROWS) -> dict:
    """Re-fit the kept weights ``names`` of ``model`` in place (module docs).

    ``dense``: the dense model (same architecture, unchanged); ``masks``: name -> bool
    tensor shaped like the weight (True = kept); ``x`` (N, ...): model inputs (training
    samples, no labels needed). Both models are evaluated in eval mode. Returns a record:
    per layer the relative output error ‖X̄W̄ᵀ − XWᵀ‖² / ‖X̄W̄ᵀ‖² before and after, the
    samples, the ridge and the time. A layer stops reading chunks once it holds
    ``max_rows`` rows of X (a Conv2d has one per output position: 784 per image on
    Fashion-MNIST), so its Gram matrices cost O(max_rows · d_in²) at most.
    """
    if not (ridge > 0 and ridge == ridge):
        raise InputError(f"reconstruction ridge must be > 0, got {ridge}")
    if len(x) < 1:
        raise InputError("reconstruction needs at least one input sample")
    t0 = time.perf_counter()
    modules = _modules_by_weight(model, names)
    dense_modules = _modules_by_weight(dense, names)
    was_training = (model.training, dense.training)
    model.eval()
    dense.eval()
    layers: dict[str, dict[str, float]] = {}
    try:
        for name in names:
            mod, dmod = modules[name], dense_modules[name]
            H = C = Hd = None
            rows = used = 0
            for a, b in zip(_inputs(model, mod, x, chunk), _inputs(dense, dmod, x, chunk)):
                fa, fb = layer_features(mod, a), layer_features(dmod, b)
                # float32 products per chunk, float64 sums over chunks
                parts = [(fa.T @ fa).double(), (fa.T @ fb).double(), (fb.T @ fb).double()]
                if H is None:
                    H, C, Hd = parts
                else:
                    H.add_(parts[0]), C.add_(parts[1]), Hd.add_(parts[2])
                rows += len(fa)
                used += len(a)
                if rows >= max_rows:
                    break
            assert H is not None and C is not None and Hd is not None
            H, C, Hd = H / rows, C / rows, Hd / rows
            Wd = dmod.weight.detach().reshape(dmod.weight.shape[0], -1).double()
            keep = masks[name].reshape(Wd.shape).to(torch.bool)
            W = mod.weight.detach().reshape(Wd.shape).double()
            Wt, Hl = dense_target_weights(Wd, H, C, ridge)
            new = refit_rows(Wt, keep, Hl) * keep
            target = float(torch.einsum("ij,jk,ik->", Wd, Hd, Wd))

            def error(Wx: torch.Tensor) -> float:
                value = (torch.einsum("ij,jk,ik->", Wx, H, Wx)
                         - 2 * torch.einsum("ij,jk,ik->", Wx, C, Wd)) + target
                return float(value) / max(target, 1e-300)

            layers[name] = {"error_before": error(W), "error_after": error(new),
                            "samples": used, "rows": rows}
            with torch.no_grad():
                mod.weight.copy_(new.reshape(mod.weight.shape).to(mod.weight.dtype))
    finally:
        model.train(was_training[0])
        dense.train(was_training[1])
    return {"ridge": float(ridge), "samples": int(len(x)), "layers": layers,
            "time_s": time.perf_counter() - t0}
