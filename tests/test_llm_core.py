"""pruning.llm numeric cores: masks, SparseGPT, iCBS block models, refit (no model needed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pruning.llm import baselines  # noqa: E402
from qcbo.errors import InputError  # noqa: E402
from pruning.llm.icbs import (_groups_ok, _with_group_penalty, fisher_refine_block,  # noqa: E402
                              refine_rows, refit_rows, row_errors)
from pruning.llm.sparsegpt import damped_hessian, sparsegpt  # noqa: E402


def _data(d_out=6, d_in=16, tokens=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    X = torch.randn(tokens, d_in, generator=g, dtype=torch.float64) * torch.linspace(0.2, 2, d_in)
    return W, X


def Exhaustive():
    """The engine's block solver with the exact backend (every feasible pattern)."""
    from pruning.engine import BlockSolver

    return BlockSolver("exact", seed=0)


def test_ties_are_broken_towards_lower_index():
    w = torch.tensor([[1.0, -1.0, 1.0, 0.5]])
    assert baselines.magnitude_mask(w, 0.5).tolist() == [[True, True, False, False]]
    assert baselines.nm_mask(w.abs(), 2, 4).tolist() == [[True, True, False, False]]


def test_wanda_keeps_per_row_and_2_4_is_valid():
    W, X = _data(d_in=16)
    norms = X.norm(dim=0)
    keep = baselines.wanda_mask(W, norms, 0.25)
    assert keep.sum(dim=1).tolist() == [4] * W.shape[0]
    keep24 = baselines.wanda_mask(W, norms, 0.9, (2, 4))
    assert (keep24.view(W.shape[0], -1, 4).sum(-1) == 2).all()


def test_sparsegpt_beats_its_mask_without_update_and_respects_density():
    W, X = _data(d_out=8, d_in=32, tokens=128)
    xtx = X.T @ X
    H, _ = damped_hessian(xtx, 0.01)
    for pattern in (None, (2, 4)):
        Wp, keep = sparsegpt(W, xtx, density=0.5, pattern=pattern, blocksize=16)
        assert int(keep.sum()) == W.numel() // 2
        assert torch.all(Wp[~keep] == 0)
        if pattern:
            assert (keep.view(8, -1, 4).sum(-1) == 2).all()
        err = row_errors(W, Wp, H).sum()
        assert err < row_errors(W, W * keep, H).sum()
        # a magnitude mask without update is worse still
        assert err < row_errors(W, W * baselines.magnitude_mask(W, 0.5, pattern), H).sum()


def test_refit_is_the_least_squares_optimum():
    W, X = _data()
    H, _ = damped_hessian(X.T @ X)
    keep = baselines.magnitude_mask(W, 0.5)
    Wr = refit_rows(W, keep, H)
    assert torch.all(Wr[~keep] == 0)
    for r in range(W.shape[0]):
        K = torch.nonzero(keep[r]).flatten()
        expected = torch.linalg.solve(H[K][:, K], (H @ W[r])[K])
        assert torch.allclose(Wr[r, K], expected, atol=1e-9)
    # any perturbation of the kept weights is worse
    noise = torch.randn_like(Wr) * 1e-3 * keep
    assert row_errors(W, Wr, H).sum() < row_errors(W, Wr + noise, H).sum()


def test_reconstruct_with_refit_equals_a_full_refit_of_the_final_mask():
    """Only changed rows are re-fitted after the block steps; the result must not differ."""
    from pruning.llm.icbs import LMICBSConfig
    from pruning.llm.layerwise import LinearStats
    from pruning.llm.prune import LMPruneConfig, _reconstruct

    W, X = _data(d_out=8, d_in=16)
    stats = LinearStats(X.T @ X, tokens=X.shape[0])
    keep = baselines.magnitude_mask(W, 0.5)
    cfg = LMPruneConfig(method="icbs", density=0.5,
                        icbs=LMICBSConfig(refit=True, block_size=6, steps_per_layer=5))
    solver = Exhaustive()
    layers = {}
    Wf, kf = _reconstruct("l", W, W * keep, keep, stats, cfg, solver, layers)
    assert solver.count > 0 and bool((kf != keep).any())  # some row really changed
    H, _ = damped_hessian(stats.hessian)
    assert torch.allclose(Wf, refit_rows(W, kf, H), atol=1e-10)
    assert layers["l"]["error_final"] < layers["l"]["error_init"]


@pytest.mark.parametrize("refit", [False, True])
def test_row_block_energy_is_the_exact_error_change(refit):
    """Every feasible pattern of a block: QCBO energy × scale == E(new) − E(current)."""
    from pruning.block import block_problem  # the shared block formula

    W, X = _data(d_out=1, d_in=8)
    H, _ = damped_hessian(X.T @ X)
    keep = baselines.magnitude_mask(W, 0.5)
    Wc = refit_rows(W, keep, H) if refit else W * keep
    idx = torch.tensor([0, 2, 3, 5, 6, 7])
    v = torch.where(keep[0], Wc[0], W[0])
    x_cur = (~keep[0, idx]).to(torch.int8).numpy()
    g = 2 * (H[idx] @ (Wc[0] - W[0]))
    problem = block_problem(v[idx].numpy(), x_cur, g.numpy(), (2 * H[idx][:, idx]).numpy(),
                            gamma=1.0, lam=0.0)
    scale = problem.metadata["scale"]
    e_cur = float(row_errors(W, Wc, H)[0])
    for ones in itertools.combinations(range(len(idx)), problem.k):
        x = np.zeros(len(idx), dtype=np.int8)
        x[list(ones)] = 1
        Wn = Wc.clone()
        Wn[0, idx] = v[idx] * torch.from_numpy(1 - x).double()
        assert problem.energy(x) * scale == pytest.approx(float(row_errors(W, Wn, H)[0]) - e_cur,
                                                          abs=1e-9)


def test_group_penalty_keeps_feasible_energies_and_punishes_violations():
    from qcbo.problem import Problem

    rng = np.random.default_rng(0)
    A = rng.normal(size=(8, 8))
    base = Problem(A @ A.T - 3 * np.eye(8), 0.5, 4)
    pen = _with_group_penalty(base, (2, 4))
    energies = {}
    for ones in itertools.combinations(range(8), 4):
        x = np.zeros(8, dtype=np.int8)
        x[list(ones)] = 1
        energies[ones] = (pen.energy(x), _groups_ok(x, (2, 4)), base.energy(x))
    best_feasible = min(e for e, ok, _ in energies.values() if ok)
    for e, ok, e0 in energies.values():
        if ok:
            assert e == pytest.approx(e0)
        else:
            assert e > best_feasible


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_refine_rows_never_worsens_and_keeps_counts(pattern):
    W, X = _data(d_out=4, d_in=16)
    H, _ = damped_hessian(X.T @ X)
    keep = baselines.magnitude_mask(W, 0.5, pattern)
    solver = Exhaustive()
    Wn, keep_n = refine_rows(W, W * keep, keep, H, solver, block_size=8, steps=8,
                             pattern=pattern)
    assert solver.count > 0
    assert keep_n.sum(dim=1).tolist() == keep.sum(dim=1).tolist()
    assert torch.all(Wn[~keep_n] == 0)
    assert torch.allclose(Wn[keep_n], W[keep_n])
    assert row_errors(W, Wn, H).sum() < row_errors(W, W * keep, H).sum()
    if pattern:
        assert (keep_n.view(4, -1, 4).sum(-1) == 2).all()


def _fisher_case(seed):
    """A 6 -> 4 Linear at density 0.5 with captured inputs and output gradients."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(4, 6, generator=g)
    keep = baselines.magnitude_mask(w0, 0.5)
    lin = torch.nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w0 * keep)
    return lin, w0, keep, torch.randn(5, 7, 6, generator=g), torch.randn(5, 7, 4, generator=g)


def test_fisher_refine_keeps_density_and_weights():
    lin, w0, keep, x, delta = _fisher_case(3)
    solver = Exhaustive()
    keeps, stats = fisher_refine_block({"l": (lin, w0, keep)}, {"l": (x, delta)}, solver,
                                       block_size=6, steps=3, gamma=0.75, lam=1e-3)
    new_keep = keeps["l"]
    assert solver.count == stats.blocks_solved > 0
    assert int(new_keep.sum()) == int(keep.sum())
    assert torch.equal(lin.weight.detach(), w0 * new_keep)


def test_fisher_refine_reverts_a_group_that_raises_the_held_out_loss():
    lin, w0, keep, x, delta = _fisher_case(4)
    before = lin.weight.detach().clone()
    # A held-out loss that rises with any change: every group must be undone.
    keeps, stats = fisher_refine_block(
        {"l": (lin, w0, keep)}, {"l": (x, delta)}, Exhaustive(), block_size=6, steps=3,
        gamma=0.75, lam=1e-3, held_out_loss=lambda: float((lin.weight - before).abs().sum()))
    assert stats.blocks_solved > 0 and stats.blocks_applied == 0
    assert torch.equal(keeps["l"], keep) and torch.equal(lin.weight.detach(), before)


def test_fisher_blend_is_the_kronecker_factored_curvature():
    """Block curvature (1 − β) G_Bᵀ G_B / m + β T (Ā ⊗ S̄)[B, B], checked against an
    explicit Kronecker product; for one window of one position the K-FAC curvature is the
    empirical Fisher itself (δ ⊗ x)(δ ⊗ x)ᵀ, so every β gives the same block."""
    from pruning.llm.objectives import DecoderFisher

    lin, w0, keep, x, delta = _fisher_case(5)
    idx = torch.tensor([0, 3, 7, 11, 16, 23])
    m, T = x.shape[0], x.shape[1]
    G = torch.einsum("std,ste->sde", delta.double(), x.double()).reshape(m, -1)
    X, D = x.reshape(-1, 6).double(), delta.reshape(-1, 4).double()
    kfac = T * np.kron((D.T @ D / (m * T)).numpy(), (X.T @ X / (m * T)).numpy())
    for beta in (0.0, 0.3, 1.0):
        fisher = DecoderFisher({"l": (lin, w0, keep)}, {"l": (x, delta)}, gamma=0.75, lam=1e-3,
                               blend=beta)
        expected = ((1 - beta) * (G[:, idx].T @ G[:, idx] / m).numpy()
                    + beta * kfac[np.ix_(idx.numpy(), idx.numpy())])
        assert np.allclose(fisher.curvature(0, idx).numpy(), expected, rtol=1e-10, atol=1e-12)
        diag = (1 - beta) * (G * G).mean(dim=0).numpy() + beta * np.diag(kfac)
        assert np.allclose(fisher.score(0), w0.reshape(-1).double().numpy() ** 2 * diag)
    one = (x[:1, :1], delta[:1, :1])
    plain = DecoderFisher({"l": (lin, w0, keep)}, {"l": one}, gamma=0.75, lam=1e-3)
    blended = DecoderFisher({"l": (lin, w0, keep)}, {"l": one}, gamma=0.75, lam=1e-3, blend=0.7)
    assert torch.allclose(plain.curvature(0, idx), blended.curvature(0, idx), rtol=1e-12)
    with pytest.raises(InputError, match="blend"):
        DecoderFisher({"l": (lin, w0, keep)}, {"l": (x, delta)}, gamma=0.75, lam=1e-3, blend=1.5)


def test_icbs_config_rejects_contradictory_options():
    from pruning.llm.icbs import LMICBSConfig

    for bad, text in [(dict(objective="fisher", refit=True), "refit"),
                      (dict(objective="fisher", init="sparsegpt"), "SparseGPT's updates"),
                      (dict(objective="fisher", init="alps"), "ALPS's updates"),
                      (dict(init="obs"), "init must be"), (dict(block_size=1), "block_size")]:
        with pytest.raises(ValueError, match=text):
            LMICBSConfig(**bad).validate()
    LMICBSConfig(objective="reconstruction", init="sparsegpt", refit=True).validate()
    LMICBSConfig(objective="reconstruction", init="alps", refit=True, row_rounds=1).validate()
