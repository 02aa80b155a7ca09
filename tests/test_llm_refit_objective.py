"""The reconstruction objective with every row visited and the re-fit interleaved.

Identities are checked by enumerating every feasible pattern of tiny blocks: the
re-fit-aware block QCBO (`RowRefit`) against the exact error after least squares, the
"flip" selection score against single flips.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pruning.llm import baselines  # noqa: E402
from pruning.llm.icbs import (LMICBSConfig, reconstruct_layer, refine_rows,  # noqa: E402
                              refit_rows, row_errors)
from pruning.llm.sparsegpt import damped_hessian  # noqa: E402
from qcbo.errors import InputError  # noqa: E402


def _layer(d_out=4, d_in=12, tokens=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    X = torch.randn(tokens, d_in, generator=g, dtype=torch.float64)
    X = X @ torch.randn(d_in, d_in, generator=g, dtype=torch.float64) * 0.5 + X  # correlated
    H, _ = damped_hessian(X.T @ X / tokens)
    keep = baselines.wanda_mask(W, X.norm(dim=0), 0.5)
    return W, H, keep


def _solver():
    from pruning.engine import BlockSolver

    return BlockSolver("exact", seed=0)


def _patterns(n, k):
    for ones in itertools.combinations(range(n), k):
        x = np.zeros(n, dtype=np.int8)
        x[list(ones)] = 1
        yield x


def _error_outside_refit(W0, H, keep_row, u_block, idx):
    """E after least squares over the kept weights outside the block, block fixed at u."""
    w = W0[0]
    outside = keep_row.clone()
    outside[idx] = False
    O = torch.nonzero(outside).flatten()
    u = torch.zeros_like(w)
    u[idx] = u_block
    if O.numel():
        rhs = (H @ w)[O] - H[O][:, idx] @ u_block
        u[O] = torch.linalg.solve(H[O][:, O], rhs)
    d = u - w
    return float(d @ H @ d)


def test_refit_block_qcbo_is_the_outside_refit_error_and_bounds_the_full_refit():
    """For every feasible x: E_now + energy × scale == error with the kept weights outside
    the block re-fitted (exact), which is >= the error of a full re-fit of the new mask,
    with equality at the current pattern."""
    from pruning.engine import Block
    from pruning.llm.objectives import RowRefit

    W0, H, keep = _layer(d_out=1, d_in=10)
    objective = RowRefit(W0, W0 * keep, keep, H)
    objective.settle()
    e_now = float(row_errors(W0, objective.W, H)[0])
    assert e_now == pytest.approx(float(row_errors(W0, refit_rows(W0, keep, H), H)[0]))
    kept, pruned = torch.nonzero(keep[0]).flatten(), torch.nonzero(~keep[0]).flatten()
    idx = torch.sort(torch.cat([kept[:3], pruned[:3]])).values
    x_now = (~keep[0, idx]).to(torch.int8).numpy()
    block = Block(0, idx.numpy(), x_now)
    problem = objective.problem(block, 1)
    scale = problem.metadata["scale"]
    assert problem.k == 3 and problem.energy(x_now) * scale == pytest.approx(0.0, abs=1e-12)
    v = block.data
    strict = 0
    for x in _patterns(len(idx), problem.k):
        predicted = e_now + problem.energy(x) * scale
        u = v * torch.from_numpy(1 - x).double()
        assert predicted == pytest.approx(_error_outside_refit(W0, H, keep[0], u, idx),
                                          rel=1e-9, abs=1e-12)
        new_keep = keep.clone()
        new_keep[0, idx] = torch.from_numpy(x == 0)
        exact = float(row_errors(W0, refit_rows(W0, new_keep, H), H)[0])
        assert exact <= predicted + 1e-12
        strict += int(exact < predicted - 1e-9)
    assert strict > 0  # a bound, not an identity: the block's own kept weights move too


def test_flip_score_is_the_exact_single_flip_change():
    from pruning.llm.objectives import RowReconstruction

    W0, H, keep = _layer(d_out=2, d_in=8)
    objective = RowReconstruction(W0, W0 * keep, keep, H, score="flip")
    score = objective.score(1)
    e_now = float(row_errors(W0, objective.W, H)[1])
    for i in range(8):
        W = objective.W.clone()
        W[1, i] = 0.0 if keep[1, i] else W0[1, i]
        change = float(row_errors(W0, W, H)[1]) - e_now
        # kept: the cost of removing it; pruned: the gain of its return
        assert score[i] == pytest.approx(change if keep[1, i] else -change, abs=1e-12)


@pytest.mark.parametrize("refit", ["none", "aware", "after"])
def test_every_row_gets_its_rounds_and_errors_only_fall(refit):
    W0, H, keep = _layer(d_out=5, d_in=12)
    records = []
    Wn, kn = refine_rows(W0, W0 * keep, keep, H, _solver(), block_size=6, rounds=2,
                         refit=refit, name="l", on_step=records.append)
    visits = {}
    for r in records:
        visits[r.unit] = visits.get(r.unit, 0) + 1
    assert visits == {f"l[{r}]": 2 for r in range(5)}
    assert kn.sum(dim=1).tolist() == keep.sum(dim=1).tolist()
    assert torch.all(Wn[~kn] == 0)
    if refit == "none":
        assert torch.allclose(Wn[kn], W0[kn])
        assert row_errors(W0, Wn, H).sum() < row_errors(W0, W0 * keep, H).sum()
    else:
        assert torch.allclose(Wn, refit_rows(W0, kn, H), atol=1e-10)
        assert row_errors(W0, Wn, H).sum() < row_errors(W0, refit_rows(W0, keep, H), H).sum()
    assert any(r.applied for r in records)


def test_refit_rounds_never_raise_a_row_error():
    """Each applied block's drop is a lower bound of the real drop (after the re-fit)."""
    from pruning.engine import ICBSEngine
    from pruning.llm.objectives import LM_POLICY, RowRefit

    W0, H, keep = _layer(d_out=4, d_in=12, seed=3)
    objective = RowRefit(W0, W0 * keep, keep, H)
    engine = ICBSEngine(objective, _solver(), block_size=6, policy=LM_POLICY, loss_check=False)
    objective.settle()
    previous = row_errors(W0, objective.W, H)
    predicted: dict[int, float] = {}
    engine.on_step = lambda rec: predicted.__setitem__(int(rec.unit[1:-1]), rec.predicted)
    for _ in range(3):
        predicted.clear()
        engine.step(list(range(4)))
        objective.settle()
        now = row_errors(W0, objective.W, H)
        for r in range(4):
            assert now[r] <= previous[r] + predicted.get(r, 0.0) + 1e-12
        previous = now


def test_reconstruct_layer_reports_every_stage():
    W0, H, keep = _layer(d_out=4, d_in=12, seed=1)
    cfg = LMICBSConfig(refit=True, row_rounds=2, block_size=6)
    W, _, errors = reconstruct_layer(W0, W0 * keep, keep, H, _solver(), cfg, both=True)
    assert errors.start == pytest.approx(float(row_errors(W0, W0 * keep, H).sum()))
    assert errors.refit < errors.start
    assert errors.blocks is not None and errors.blocks < errors.start
    assert errors.blocks_refit is not None and errors.blocks_refit < errors.refit
    assert errors.blocks_refit == pytest.approx(float(row_errors(W0, W, H).sum()))
    assert 0 < errors.blocks_applied <= errors.blocks_solved == 4 * 2
    _, _, alone = reconstruct_layer(W0, W0 * keep, keep, H, _solver(),
                                    LMICBSConfig(row_rounds=1, block_size=6))
    assert alone.blocks_refit is None and alone.blocks is not None


def test_refine_rows_through_an_executor_gives_the_serial_answer():
    """Blocks are selected and posed lazily as the workers take them: same answers."""
    from backends.executor import make_executor
    from pruning.engine import BlockSolver

    W0, H, keep = _layer(d_out=6, d_in=12, seed=2)
    with make_executor("processes", workers=2) as pool:
        for refit in ("aware", "none"):
            out = []
            for executor in (None, make_executor("serial"), pool):
                solver = BlockSolver("sa", {"sweeps": 50, "restarts": 2}, seed=5,
                                     executor=executor)
                out.append(refine_rows(W0, W0 * keep, keep, H, solver, block_size=6, rounds=2,
                                       refit=refit))
                assert solver.count == 6 * 2
            for W, k in out[1:]:
                assert torch.equal(out[0][1], k) and torch.allclose(out[0][0], W)


def test_a_start_already_refit_is_not_refit_again_and_gives_the_same_answer():
    """``fitted=True`` (the caller passes refit_rows' own answer) skips only that re-fit."""
    W0, H, keep = _layer(d_out=5, d_in=12, seed=3)
    start = refit_rows(W0, keep, H)
    out = [refine_rows(W0, start, keep, H, _solver(), block_size=6, rounds=1, refit="aware",
                       fitted=fitted) for fitted in (False, True)]
    assert torch.equal(out[0][1], out[1][1]) and torch.equal(out[0][0], out[1][0])


def test_a_lazy_start_refit_reports_the_same_stages_and_returns_a_full_refit():
    """``lazy_refit``: rows are re-fit from their first block's factors (a row no block
    reaches, here one with every weight pruned, at the end); the reported start re-fit
    error equals the up-front re-fit's, and the returned weights are the least-squares
    re-fit of the returned mask."""
    W0, H, keep = _layer(d_out=6, d_in=12, seed=6)
    keep[0] = False
    errors = {}
    for lazy in (False, True):
        cfg = LMICBSConfig(refit=True, row_rounds=2, block_size=6, lazy_refit=lazy)
        W, k, errors[lazy] = reconstruct_layer(W0, W0 * keep, keep, H, _solver(), cfg)
        assert torch.allclose(W, refit_rows(W0, k, H), rtol=1e-9, atol=1e-12)
        assert torch.equal(k.sum(dim=1), keep.sum(dim=1))
    assert errors[True].refit == pytest.approx(errors[False].refit, rel=1e-9)
    assert errors[True].refit == pytest.approx(float(row_errors(W0, refit_rows(W0, keep, H), H).sum()), rel=1e-9)
    assert errors[True].blocks_refit < errors[True].refit
    assert errors[True].blocks_solved == errors[False].blocks_solved == 5 * 2
    with pytest.raises(InputError, match="lazy"):
        refine_rows(W0, W0 * keep, keep, H, _solver(), block_size=6, rounds=1, refit="aware",
                    fitted=True, lazy=True)


def test_approximate_refit_converges_to_the_exact_one():
    from pruning.llm.icbs import approx_refit_rows

    W0, H, keep = _layer(d_out=5, d_in=12, seed=7)
    exact = refit_rows(W0, keep, H)
    errors = [float(row_errors(W0, approx_refit_rows(W0, keep, H, W0 * keep, iters), H).sum())
              for iters in (0, 2, 4, 12)]
    assert errors[0] > errors[1] > errors[2] >= errors[3]
    close = approx_refit_rows(W0, keep, H, W0 * keep, iters=12)  # d_in steps: exact
    assert torch.allclose(close, exact, atol=1e-8)
    assert torch.equal(close[~keep], torch.zeros_like(close[~keep]))


def test_lapack_factors_solve_like_numpy_and_refuse_an_indefinite_matrix():
    from pruning.llm.objectives import _cholesky_upper, _solve_lt, _solve_u

    _, H, _ = _layer(d_in=40)
    A = H.numpy()[:30, :30]
    B = np.random.default_rng(0).standard_normal((30, 5))
    U = _cholesky_upper(A.copy())
    np.testing.assert_allclose(U.T @ U, A, rtol=1e-12, atol=1e-12)
    assert np.allclose(np.tril(U, -1), 0.0)
    L = np.linalg.cholesky(A)
    np.testing.assert_allclose(_solve_lt(U, B), np.linalg.solve(L, B), rtol=1e-10)
    np.testing.assert_allclose(_solve_u(U, B[:, 0]), np.linalg.solve(L.T, B[:, 0]),
                               rtol=1e-10)
    indefinite = A.copy()
    indefinite[3, 3] = -1.0
    with pytest.raises(np.linalg.LinAlgError, match="order 4"):
        _cholesky_upper(indefinite)


def test_bad_refit_mode_is_an_input_error():
    W0, H, keep = _layer()
    with pytest.raises(InputError, match="refit must be"):
        refine_rows(W0, W0 * keep, keep, H, _solver(), block_size=6, rounds=1, refit="full")
    with pytest.raises(InputError, match="row_rounds"):
        LMICBSConfig(row_rounds=-1).validate()
    with pytest.raises(InputError, match="trust"):
        LMICBSConfig(objective="fisher", trust=-1.0).validate()


def _tiny_llama(transformers, layers: int):
    """A random LlamaForCausalLM (hidden 16) and 4 calibration windows of 16 tokens."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=layers, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(cfg).eval()
    return model, torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))


def test_prune_lm_visits_every_row_and_reports_the_stages():
    transformers = pytest.importorskip("transformers")
    from pruning.llm.prune import LMPruneConfig, prune_lm

    model, calibration = _tiny_llama(transformers, layers=1)
    icbs = LMICBSConfig(backend="exact", refit=True, row_rounds=1, block_size=6)
    report = prune_lm(model, calibration, LMPruneConfig(method="icbs", density=0.5, icbs=icbs),
                      executor=None)
    rows = sum(lin.out_features for lin in model.model.layers[0].modules()
               if isinstance(lin, torch.nn.Linear))
    assert report["blocks"]["solved"] == rows  # one block per row of every Linear
    totals = report["reconstruction_errors"]
    assert totals["blocks_refit"] < totals["refit"] < totals["start"]
    assert totals["blocks_refit_vs_refit"] > 0
    layer = next(iter(report["layers"].values()))
    assert set(layer["errors"]) >= {"start", "refit", "blocks_refit"}


def test_applying_a_block_refits_its_row_and_reverting_restores_it():
    from pruning.engine import Block
    from pruning.llm.objectives import RowRefit

    W0, H, keep = _layer(d_out=2, d_in=12, seed=4)
    objective = RowRefit(W0, W0 * keep, keep, H)
    objective.refresh()
    before = objective.W.clone()
    kept, pruned = torch.nonzero(keep[1]).flatten(), torch.nonzero(~keep[1]).flatten()
    idx = torch.sort(torch.cat([kept[:3], pruned[:3]])).values.numpy()
    x_now = (~keep[1, idx]).to(torch.int8).numpy()
    block = Block(1, idx, x_now)
    objective.problem(block, 1)
    x = 1 - x_now  # swap all three pairs
    objective.apply(block, x)
    assert torch.allclose(objective.W, refit_rows(W0, objective.keep_t, H), atol=1e-10)
    assert not torch.equal(objective.keep_t, keep)
    objective.apply(block, x_now)
    assert torch.equal(objective.keep_t, keep) and torch.equal(objective.W, before)


def test_trust_region_adds_its_weight_per_flip_and_stops_big_steps():
    from pruning.llm.icbs import fisher_refine_block
    from pruning.llm.objectives import trust_region
    from qcbo.problem import Problem

    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 6))
    base = Problem(A + A.T, 0.3, 3)
    c = np.array([1, 0, 1, 0, 0, 1], dtype=np.int8)
    region = trust_region(base, c, 0.7)
    for x in _patterns(6, 3):
        assert region.energy(x) == pytest.approx(base.energy(x) + 0.7 * np.sum(x != c))

    g = torch.Generator().manual_seed(2)
    w0 = torch.randn(4, 6, generator=g)
    keep = baselines.magnitude_mask(w0, 0.5)
    # small output gradients: the gradient term beats the Fisher term, blocks move
    x, delta = torch.randn(5, 7, 6, generator=g), 0.1 * torch.randn(5, 7, 4, generator=g)
    applied = []
    for trust in (0.0, 1e6):
        lin = torch.nn.Linear(6, 4, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w0 * keep)
        _, stats = fisher_refine_block({"l": (lin, w0, keep)}, {"l": (x, delta)}, _solver(),
                                       block_size=6, steps=3, gamma=0.75, lam=1e-3, trust=trust)
        applied.append(stats.blocks_applied)
    assert applied[0] > 0 and applied[1] == 0


def test_refit_aware_blocks_keep_an_n_m_pattern():
    W0, H, _ = _layer(d_out=3, d_in=16, seed=5)
    keep = baselines.magnitude_mask(W0, 0.5, (2, 4))
    Wn, kn = refine_rows(W0, W0 * keep, keep, H, _solver(), block_size=8, rounds=2,
                         refit="aware", pattern=(2, 4))
    assert (kn.view(3, -1, 4).sum(-1) == 2).all()
    assert torch.allclose(Wn, refit_rows(W0, kn, H), atol=1e-10)
    assert row_errors(W0, Wn, H).sum() < row_errors(W0, refit_rows(W0, keep, H), H).sum()


def test_prune_lm_gives_the_same_model_with_linears_in_parallel():
    """An executor of 2 processes prunes a decoder block's Linears in parallel (each
    solving its blocks serially); per-Linear seeds make the answers equal to the serial
    run's, block counts included."""
    transformers = pytest.importorskip("transformers")
    from backends.executor import make_executor
    from pruning.llm.prune import LMPruneConfig, prune_lm

    dense, calibration = _tiny_llama(transformers, layers=2)
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    icbs = LMICBSConfig(backend="sa", backend_options={"sweeps": 20, "restarts": 2},
                        init="alps", refit=True, row_rounds=1, block_size=6, seed=3)
    config = LMPruneConfig(method="icbs", density=0.4, icbs=icbs, alps_max_iter=20)
    weights, reports = [], []
    with make_executor("processes", workers=2) as pool:
        for executor in (None, pool):
            dense.load_state_dict(state)
            reports.append(prune_lm(dense, calibration, config, executor=executor))
            weights.append({k: v.clone() for k, v in dense.state_dict().items()})
    assert reports[0]["blocks"] == reports[1]["blocks"]
    assert reports[0]["blocks"]["solved"] > 0
    assert reports[0]["layers"].keys() == reports[1]["layers"].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    assert reports[0]["reconstruction_errors"] == reports[1]["reconstruction_errors"]


def test_dense_targets_split_a_lone_linear_rows_over_the_workers(monkeypatch):
    """With dense targets o_proj and down_proj are groups of one Linear: with 2 workers
    their rows run in two chunks. With an exact solver the answers do not depend on the
    seeds, so the model, block counts and layer errors equal the serial run's."""
    transformers = pytest.importorskip("transformers")
    from backends.executor import make_executor
    from pruning.llm import prune as lm_prune

    dense, calibration = _tiny_llama(transformers, layers=2)
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    icbs = LMICBSConfig(backend="exact", init="wanda", refit=True, row_rounds=1, block_size=6)
    config = lm_prune.LMPruneConfig(method="icbs", density=0.4, icbs=icbs, targets="dense")
    split_groups = []
    real = lm_prune._prune_split

    def spy(tasks, executor):
        split_groups.append([t.name for t in tasks])
        return real(tasks, executor)

    monkeypatch.setattr(lm_prune, "_prune_split", spy)
    weights, reports = [], []
    with make_executor("processes", workers=2) as pool:
        for executor in (None, pool):
            dense.load_state_dict(state)
            reports.append(lm_prune.prune_lm(dense, calibration, config, executor=executor))
            weights.append({k: v.clone() for k, v in dense.state_dict().items()})
    assert sorted(split_groups) == [["0.mlp.down_proj"], ["0.self_attn.o_proj"],
                                    ["1.mlp.down_proj"], ["1.self_attn.o_proj"]]
    assert reports[0]["blocks"] == reports[1]["blocks"]
    assert reports[0]["blocks"]["solved"] > 0
    for key, value in weights[0].items():
        assert torch.allclose(value, weights[1][key], atol=1e-6), key
        assert torch.equal(value == 0, weights[1][key] == 0), key
    for stage, total in reports[0]["reconstruction_errors"].items():
        assert reports[1]["reconstruction_errors"][stage] == pytest.approx(total, rel=1e-9)
