"""One-shot masks for a Linear weight W (d_out, d_in): magnitude and Wanda.

A mask is a bool tensor of W's shape, True = kept. ``density`` is the fraction kept;
``pattern=(n, m)`` keeps n of every m consecutive inputs of each row (2:4: ``(2, 4)``)
and then ``density`` is ignored. Ties (the SmolLM2 GGUF weights sit on a 4-bit grid) are
broken deterministically: among equal scores the lower flat index is kept.
"""

from __future__ import annotations

import torch

__all__ = ["parse_pattern", "keep_count", "top_mask_per_row", "top_mask_layer", "nm_mask",
           "magnitude_mask", "wanda_mask"]


def parse_pattern(pattern: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """"2:4" -> (2, 4); None stays None."""
    if pattern is None or isinstance(pattern, tuple):
        return pattern
    try:
        n, m = (int(p) for p in pattern.split(":"))
    except ValueError:
        raise ValueError(f"pattern must look like '2:4', got {pattern!r}") from None
    if not 0 < n < m:
        raise ValueError(f"pattern {pattern!r}: need 0 < n < m")
    return n, m


def keep_count(size: int, density: float) -> int:
    """round(density * size), the number of weights kept out of ``size``."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return int(round(density * size))


def _stable_top(score: torch.Tensor, keep: int) -> torch.Tensor:
    order = torch.argsort(score, dim=-1, descending=True, stable=True)
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask.scatter_(-1, order[..., :keep], True)
    return mask


def top_mask_per_row(score: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``round(density * d_in)`` highest scores of every row."""
    return _stable_top(score, keep_count(score.shape[-1], density))


def top_mask_layer(score: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``round(density * numel)`` highest scores of the whole matrix."""
    flat = _stable_top(score.reshape(-1), keep_count(score.numel(), density))
    return flat.view_as(score)


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n highest scores in each group of m consecutive columns (d_in % m == 0)."""
    d_out, d_in = score.shape
    if d_in % m:
        raise ValueError(f"{n}:{m} pattern needs d_in divisible by {m}, got {d_in}")
    return _stable_top(score.reshape(d_out, d_in // m, m), n).reshape(d_out, d_in)


def _mask(score: torch.Tensor, density: float, pattern: tuple[int, int] | None,
          per_row: bool) -> torch.Tensor:
    if pattern is not None:
        return nm_mask(score, *pattern)
    return top_mask_per_row(score, density) if per_row else top_mask_layer(score, density)


def magnitude_mask(weight: torch.Tensor, density: float,
                   pattern: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep the largest |W| of the whole layer (or n:m per row)."""
    return _mask(weight.abs(), density, pattern, per_row=False)


def wanda_mask(weight: torch.Tensor, column_norms: torch.Tensor, density: float,
               pattern: tuple[int, int] | None = None) -> torch.Tensor:
    """Wanda: keep the largest |W_ij| ‖X_j‖₂ of every output row (or n:m per row)."""
    score = weight.abs().to(torch.float64) * column_norms.to(torch.float64)[None, :]
    return _mask(score, density, pattern, per_row=True)
