"""Perplexity with a fixed protocol.

- The evaluation text is tokenised once, without special tokens (only as long a prefix
  as the windows need, cut at a paragraph break, with ids kept far from the cut).
- Windows: ``window`` tokens (default 512), non-overlapping (stride = window), taken from
  the start of the token stream; the first ``n_windows`` (default 16) complete windows.
- BOS: when the tokenizer has a BOS token, it is prepended to each window (so a window
  holds BOS + ``window - 1`` text tokens) and is never a prediction target. Without a BOS
  token a window is ``window`` text tokens and its first token is not predicted.
- Perplexity = exp(total NLL / number of predicted tokens), summed over all windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PerplexityProtocol", "token_windows", "perplexity"]


@dataclass(frozen=True)
class PerplexityProtocol:
    """Window length (tokens, BOS included), number of windows, batch size."""

    window: int = 512
    n_windows: int = 16
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.window < 2 or self.n_windows < 1 or self.batch_size < 1:
            raise ValueError(f"invalid perplexity protocol {self}")


def token_windows(tokenizer: Any, text: str, window: int, n_windows: int | None,
                  *, bos: bool = True) -> torch.Tensor:
    """(n_windows, window) int64 token windows, non-overlapping, from the start of text.

    With ``bos`` and a tokenizer BOS id, each row is BOS + (window - 1) text tokens.
    Fewer rows come back when the text is too short.
    """
    bos_id = getattr(tokenizer, "bos_token_id", None) if bos else None
    body = window - 1 if bos_id is not None else window
    ids = _prefix_ids(tokenizer, text, None if n_windows is None else n_windows * body)
    count = len(ids) // body
    if n_windows is not None:
        count = min(count, n_windows)
    if count == 0:
        raise ValueError(f"text has {len(ids)} tokens, fewer than one window of {body}")
    rows = torch.tensor(ids[: count * body], dtype=torch.long).view(count, body)
    if bos_id is not None:
        rows = torch.cat([torch.full((count, 1), int(bos_id), dtype=torch.long), rows], dim=1)
    return rows


def _prefix_ids(tokenizer: Any, text: str, needed: int | None, margin: int = 64) -> list[int]:
    """Token ids of ``text`` (no special tokens), at least the first ``needed`` of them.

    Only a prefix is tokenised when it is enough: ids are taken from a prefix that ends at
    a paragraph break and yields ``margin`` ids more than needed, so the ids kept lie far
    from the cut, where a tokenizer's pre-tokenisation is local and gives the same ids as
    for the whole text. The prefix doubles until it is enough or is the whole text.
    """
    size = 8 * needed if needed else len(text)
    while True:
        cut = text.find("\n\n", size) if size < len(text) else -1
        prefix = text if cut < 0 else text[:cut]
        ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        if cut < 0 or needed is None or len(ids) >= needed + margin:
            return ids if cut < 0 else ids[:needed]
        size *= 2


@torch.no_grad()
def perplexity(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 4) -> float:
    """exp(mean NLL) over every predicted token of ``windows`` (m, T) int64.

    Position 0 is never a target (this project's windows start with the BOS token).
    """
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size]
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        targets = batch[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        total += float(nll)
        count += targets.numel()
    return math.exp(total / count)
