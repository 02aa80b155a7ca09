"""Gradient and Hessian blocks for a set of weights of one layer, via torch.func.

The block is a perturbation v (n,) added to the weights at ``flat_indices`` of one
layer's weight: the loss as a function of v, at v = 0, has gradient = the loss gradient
restricted to the block. Per-sample gradients come from ``vmap(grad(.))`` over v alone:

- for nn.Linear the perturbation enters as an extra term ``x[..., cols] * v`` added to
  the output units ``rows`` by a forward hook, so per-sample gradients cost O(m n) and
  the full per-sample weight gradient (m, out, in) is never formed;
- for other layers (nn.Conv2d) v is scattered into the weight itself and the samples
  are processed in chunks to bound memory.

For nn.Linear, `block_gradients` takes a shorter road with the same answer: one forward
and one backward of the batch's summed loss give every sample's gradient δ_s at the
layer's output (samples do not interact in eval mode), and the block's per-sample
gradient is δ_s[rows] x_s[cols] (summed over positions for token inputs). That assumes
``loss_fn`` is the mean of per-sample losses and no cross-sample operation in eval mode
(no batch statistics), as CHITA's factored gradients do; ``exact=True`` keeps vmap.

Shapes: inputs (m, ...), targets (m, ...); gradients (m, n) float32; Hessian (n, n).
``loss_fn(outputs, targets)`` must return the mean loss of a batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, hessian, vmap

from qcbo.errors import InputError

__all__ = ["block_gradients", "fisher_block", "exact_hessian_block", "linear_input_grads"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Elements of the per-sample full weight gradient (m, out, in) formed at once for a
#: Linear with token inputs (128 MB of float32).
_FULL_GRADIENT_LIMIT = 1 << 25


def _module_of(model: nn.Module, weight_name: str) -> nn.Module:
    module_name = weight_name.rsplit(".", 1)[0] if "." in weight_name else ""
    return dict(model.named_modules())[module_name]


@contextmanager
def _block_loss(
    model: nn.Module, loss_fn: LossFn, weight_name: str, flat_indices: torch.Tensor
) -> Iterator[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]:
    """Yields loss(v, x, y): the batch loss with v added to the block's weights."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    params.update({k: b.detach() for k, b in model.named_buffers()})
    weight = params[weight_name]
    module = _module_of(model, weight_name)
    idx = flat_indices.to(torch.long)
    state: dict[str, torch.Tensor] = {}
    handle = None
    if isinstance(module, nn.Linear):
        rows = idx // weight.shape[1]
        cols = idx % weight.shape[1]
        def hook(_mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            return output.index_add(-1, rows, inputs[0][..., cols] * state["v"])

        handle = module.register_forward_hook(hook)

        def loss(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            state["v"] = v
            return loss_fn(functional_call(model, params, (x,)), y)
    else:
        def loss(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            perturbed = dict(params)
            perturbed[weight_name] = weight.reshape(-1).index_add(0, idx, v).view_as(weight)
            return loss_fn(functional_call(model, perturbed, (x,)), y)

    was_training = model.training
    model.eval()
    try:
        yield loss
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)


def linear_input_grads(model: nn.Module, loss_fn: LossFn, modules: dict[str, nn.Linear],
                       inputs: torch.Tensor, targets: torch.Tensor, chunk_size: int = 512
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-sample inputs x (N, T, in) and output gradients δ (N, T, out) of Linear layers
    from ordinary backward passes; a layer called T times per sample has T positions.

    With L = mean_s l_s over a chunk of n samples, n ∂L/∂out_s = ∂l_s/∂out_s = δ_s, so
    sample s's gradient of a weight is Σ_t δ_st x_stᵀ (eval mode: samples independent).
    """
    xs: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
    ds: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    handles = []
    for name, module in modules.items():
        def hook(_mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor,
                 name: str = name) -> None:
            calls.setdefault(name, []).append((args[0].detach(), out))
        handles.append(module.register_forward_hook(hook))
    flags = {n: m.weight.requires_grad for n, m in modules.items()}
    was_training = model.training
    model.eval()
    try:
        for m in modules.values():
            m.weight.requires_grad_(True)
        for i in range(0, len(inputs), chunk_size):
            x, y = inputs[i: i + chunk_size], targets[i: i + chunk_size]
            n = len(x)
            calls.clear()
            with torch.enable_grad():
                loss = loss_fn(model(x), y)
                missing = [name for name in modules if name not in calls]
                if missing:
                    raise InputError(f"layers not used by the forward pass: {missing}")
                outs = [out for name in modules for _, out in calls[name]]
                grads = iter(torch.autograd.grad(loss, outs, allow_unused=True))
            for name, module in modules.items():
                x_parts, d_parts = [], []
                for inp, out in calls[name]:
                    g = next(grads)
                    g = torch.zeros_like(out) if g is None else g
                    x_parts.append(inp.reshape(n, -1, module.in_features))
                    d_parts.append((g.detach() * n).reshape(n, -1, module.out_features))
                xs[name].append(torch.cat(x_parts, dim=1).float())
                ds[name].append(torch.cat(d_parts, dim=1).float())
    finally:
        for h in handles:
            h.remove()
        for name, m in modules.items():
            m.weight.requires_grad_(flags[name])
        model.train(was_training)
    return {n: (torch.cat(xs[n]), torch.cat(ds[n])) for n in modules}


def _linear_block_gradients(model: nn.Module, loss_fn: LossFn, module: nn.Linear,
                            flat_indices: torch.Tensor, inputs: torch.Tensor,
                            targets: torch.Tensor) -> torch.Tensor:
    """(m, n) per-sample gradients of a Linear block from one forward and backward."""
    idx = flat_indices.to(torch.long)
    rows, cols = idx // module.in_features, idx % module.in_features
    x, delta = linear_input_grads(model, loss_fn, {"block": module}, inputs, targets,
                                  chunk_size=max(1, len(inputs)))["block"]
    m, out_f, in_f = len(inputs), module.out_features, module.in_features
    if delta.shape[1] > 1 and m * out_f * in_f <= _FULL_GRADIENT_LIMIT:
        # Token inputs: each sample's whole weight gradient δ_sᵀ x_s by one bmm, then the
        # block's entries (gathering along a last axis is several times slower).
        return torch.bmm(delta.transpose(1, 2), x).reshape(m, -1)[:, idx]
    d = delta.permute(2, 0, 1).contiguous().index_select(0, rows)  # (n, m, T)
    v = x.permute(2, 0, 1).contiguous().index_select(0, cols)
    return (d * v).sum(dim=-1).T.contiguous()


def block_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    weight_name: str,
    flat_indices: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int = 64,
    exact: bool = False,
) -> torch.Tensor:
    """Per-sample loss gradients restricted to the block: (m, n) float32. ``exact``:
    vmap over single samples even for nn.Linear (no independence assumption)."""
    module = _module_of(model, weight_name)
    if isinstance(module, nn.Linear) and not exact:
        return _linear_block_gradients(model, loss_fn, module, flat_indices, inputs, targets)
    with _block_loss(model, loss_fn, weight_name, flat_indices) as loss:
        def sample_loss(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss(v, x.unsqueeze(0), y.unsqueeze(0))

        v0 = torch.zeros(len(flat_indices), dtype=inputs.dtype if inputs.is_floating_point()
                         else torch.float32)
        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
        step = len(inputs) if isinstance(module, nn.Linear) else max(1, chunk_size)
        parts = [per_sample(v0, inputs[i: i + step], targets[i: i + step])
                 for i in range(0, len(inputs), step)]
    return torch.cat(parts).detach()


def fisher_block(
    model: nn.Module,
    loss_fn: LossFn,
    weight_name: str,
    flat_indices: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g (n,), H (n, n)) float64: mean gradient and empirical Fisher G^T G / m."""
    G = block_gradients(model, loss_fn, weight_name, flat_indices, inputs, targets)
    # float32 product (half the time of float64); the Fisher is an estimate anyway.
    H = (G.T @ G).double() / G.shape[0]
    return G.double().mean(dim=0), (H + H.T) / 2.0


def exact_hessian_block(
    model: nn.Module,
    loss_fn: LossFn,
    weight_name: str,
    flat_indices: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g (n,), H (n, n)) float64: batch gradient and the exact autograd Hessian block.

    Costs n forward-mode passes over the batch; meant for small models and blocks.
    """
    with _block_loss(model, loss_fn, weight_name, flat_indices) as loss:
        v0 = torch.zeros(len(flat_indices), dtype=torch.float32)
        g = grad(loss)(v0, inputs, targets)
        H = hessian(loss)(v0, inputs, targets)
    H = H.double()
    return g.detach().double(), ((H + H.T) / 2.0).detach()
