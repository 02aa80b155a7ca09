"""Regenerate the sample files shipped in this folder (``python -m qcbo.data.make_samples``).

Every file is generated here from fixed seeds (none is copied from a third-party
collection), so they carry the project's own licence:

- ``bqp50-like.txt``: one OR-Library-format instance shaped like Beasley's bqp50 set
  (n = 50, about 10 % of the pairs non-zero, integers in [-100, 100], maximisation).
  No best-known value is shipped: cpsat does not prove this instance within 10 minutes.
- ``block.ubqp``: one UBQP block, n = 24, of the shape pruning produces (a dense
  positive-definite-ish saliency matrix minus a linear reward); read it with ``--k 12``.
- ``blocks.npz``: a block set of 8 such blocks, n = 32, k = 16, with provenance metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def bqp_like(n: int = 50, density: float = 0.1, seed: int = 50) -> np.ndarray:
    """Upper-triangular integer matrix in the bqp style (diagonal always present)."""
    rng = np.random.default_rng(seed)
    q = np.zeros((n, n))
    iu = np.triu_indices(n, 1)
    keep = rng.random(len(iu[0])) < density
    q[iu[0][keep], iu[1][keep]] = rng.integers(-100, 101, keep.sum())
    q[np.diag_indices(n)] = rng.integers(-100, 101, n)
    return q


def pruning_block(n: int, seed: int) -> np.ndarray:
    """A symmetric block like iCBS's: Gram-matrix curvature plus a linear term."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(2 * n, n)) / np.sqrt(2 * n)
    curvature = g.T @ g
    reward = rng.gamma(2.0, 0.5, size=n)
    return np.round(curvature - np.diag(reward), 6)


def main() -> None:
    from qcbo import Problem
    from qcbo.io import write_blockset, write_ubqp

    q = bqp_like()
    iu, ju = np.nonzero(q)
    lines = ["1", f"{q.shape[0]} {len(iu)}"]
    lines += [f"{i + 1} {j + 1} {int(q[i, j])}" for i, j in zip(iu, ju)]
    (HERE / "bqp50-like.txt").write_text("\n".join(lines) + "\n")

    write_ubqp(HERE / "block.ubqp", Problem(pruning_block(24, seed=24)))
    blocks = [Problem(pruning_block(32, seed=100 + i), 0.0, 16,
                      metadata={"layer": f"fc{1 + i // 4}", "block": i % 4,
                                "rows": [32 * (i % 4), 32 * (i % 4) + 32], "source": "generated"})
              for i in range(8)]
    write_blockset(HERE / "blocks.npz", blocks,
                   metadata={"source": "qcbo/data/make_samples.py", "model": "generated"})


if __name__ == "__main__":
    main()
