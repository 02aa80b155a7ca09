"""The faster pieces of pruning.llm.sparsegpt equal the textbook ones they replace."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pruning.llm.sparsegpt import inverse_cholesky_upper, smallest_stable  # noqa: E402


def test_inverse_cholesky_upper_matches_the_textbook_route():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 40, generator=g, dtype=torch.float64)
    H = A @ A.T + 0.1 * torch.eye(40, dtype=torch.float64)
    U = inverse_cholesky_upper(H)
    want = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    assert torch.equal(U, torch.triu(U)) and torch.all(torch.diagonal(U) > 0)
    assert torch.allclose(U, want, rtol=1e-9, atol=1e-11)


def test_smallest_stable_equals_a_stable_argsort_with_ties():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        score = torch.randint(0, 6, (50,), generator=g).to(torch.float64)  # many ties
        count = int(torch.randint(0, 51, (1,), generator=g))
        want = torch.zeros(50, dtype=torch.bool)
        want[torch.argsort(score, stable=True)[:count]] = True
        assert torch.equal(smallest_stable(score, count), want)
