"""ALPS (pruning.llm.alps) on small random layers: exact masks, a PCG re-fit equal to the
direct least-squares solve, and a lower layer error than SparseGPT and magnitude."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pruning.llm.alps import ALPSInfo, alps, pcg_refit, project  # noqa: E402
from pruning.llm.baselines import magnitude_mask  # noqa: E402
from pruning.llm.sparsegpt import damped_hessian, sparsegpt  # noqa: E402


def _layer(d_out=24, d_in=48, tokens=400, seed=0):
    """Weights and XᵀX of correlated, unevenly scaled inputs (as in real LMs)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d_in, d_in, generator=g) / d_in ** 0.5 + torch.eye(d_in)
    X = torch.randn(tokens, d_in, generator=g) @ mix * (0.2 + 3 * torch.rand(d_in, generator=g))
    W = torch.randn(d_out, d_in, generator=g)
    return W, (X.T @ X).to(torch.float64)


def _error(W0, W, xtx):
    D = (W - W0).to(torch.float64)
    return float(((D @ xtx) * D).sum())


@pytest.mark.parametrize("density,pattern", [(0.3, None), (0.5, (2, 4))])
@pytest.mark.parametrize("seed", [0, 1])
def test_alps_beats_sparsegpt_and_magnitude(density, pattern, seed):
    W0, xtx = _layer(seed=seed)
    W, keep = alps(W0, xtx, density=density, pattern=pattern)
    Ws, _ = sparsegpt(W0, xtx, density=density, pattern=pattern, blocksize=16)
    Wm = W0 * magnitude_mask(W0, density, pattern)
    assert _error(W0, W, xtx) <= _error(W0, Ws, xtx)
    assert _error(W0, W, xtx) <= _error(W0, Wm, xtx)
    assert torch.all(W[~keep] == 0)


def test_alps_mask_is_exact():
    W0, xtx = _layer(d_out=20, d_in=36)
    _, keep = alps(W0, xtx, density=0.3)
    assert int(keep.sum()) == round(0.3 * W0.numel())
    for n, m in [(2, 4), (1, 4), (3, 6)]:
        W, keep = alps(W0, xtx, pattern=(n, m))
        assert torch.all(keep.view(20, -1, m).sum(-1) == n)
        assert torch.all((W != 0) <= keep)
    with pytest.raises(ValueError, match="divisible"):
        alps(W0, xtx, pattern=(2, 5))
    with pytest.raises(ValueError, match="density"):
        alps(W0, xtx, density=0.0)


def test_projection_keeps_the_largest():
    Z = torch.tensor([[0.1, -3.0, 2.0, 0.5], [4.0, 0.0, -0.2, 1.0]])
    assert project(Z, 3, None).tolist() == [[False, True, True, False],
                                            [True, False, False, False]]
    assert project(Z, None, (1, 2)).tolist() == [[False, True, True, False],
                                                 [True, False, False, True]]
    dead = torch.tensor([False, True, False, False])
    assert not project(Z, 3, None, dead)[:, 1].any()


def test_pcg_refit_equals_the_direct_least_squares_solve():
    W0, xtx = _layer(d_out=10, d_in=32, seed=3)
    H, _ = damped_hessian(xtx)
    g = torch.Generator().manual_seed(4)
    keep = torch.rand(W0.shape, generator=g) < 0.4
    info = ALPSInfo()
    got = pcg_refit(W0, H, keep, tol=1e-12, max_iter=500, info=info)
    assert info.pcg_residual <= 1e-12
    W64 = W0.to(torch.float64)
    for r in range(W0.shape[0]):
        K = torch.nonzero(keep[r]).flatten()
        want = torch.linalg.solve(H[K][:, K], (W64[r] @ H)[K])
        assert torch.allclose(got[r, K], want, rtol=1e-8, atol=1e-10)
        assert torch.all(got[r, ~keep[r]] == 0)
    # any other weights on the same support do worse
    other = got + 0.01 * torch.randn(got.shape, generator=g, dtype=got.dtype) * keep
    assert _error(W0, got, H) < _error(W0, other, H)
