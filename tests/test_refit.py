"""The classifier re-fit of the kept weights (`pruning.refit`): the damped step against a
dense solve, held-out acceptance, and its place in the iCBS driver."""

import numpy as np
import pytest
import torch
from torch import nn

from pruning.baselines import prunable_weights
from pruning.chita import DenseGradients, gradient_operators, per_sample_gradients
from pruning.data import make_loader
from pruning.icbs import ICBSConfig, prune
from pruning.refit import _curvature, damped_steps, refit_weights
from qcbo.errors import InputError

CE = nn.functional.cross_entropy


def test_damped_step_is_the_dense_regularised_newton_step_on_the_support():
    gen = torch.Generator().manual_seed(0)
    N, p = 7, 12
    G = torch.randn(N, p, generator=gen, dtype=torch.float32)
    support = torch.rand(p, generator=gen) < 0.6
    S = support.numpy()
    steps = damped_steps(DenseGradients(G), support, dampings=(10.0, 1.0, 0.1))
    assert [s.rho for s in steps] == [10.0, 1.0, 0.1]
    Gd = G.double().numpy()
    F = Gd.T @ Gd / N
    g = Gd.mean(axis=0)
    mu = np.trace(Gd[:, S] @ Gd[:, S].T) / N**2
    for step in steps:
        assert step.lam == pytest.approx(step.rho * mu)
        d = np.zeros(p)
        d[S] = -np.linalg.solve(F[np.ix_(S, S)] + step.lam * np.eye(S.sum()), g[S])
        got = step.delta.double().numpy()
        np.testing.assert_allclose(got, d, rtol=1e-4, atol=1e-6)
        assert np.all(got[~S] == 0)
        pred = g @ d + 0.5 * d @ F @ d
        assert step.predicted == pytest.approx(pred, rel=1e-4)
        assert step.predicted < 0
        # the scaled prediction the record reports uses dᵀFd recovered from the step
        assert _curvature(step) == pytest.approx(d @ F @ d, rel=1e-3)


def test_damped_steps_of_an_empty_support_and_bad_input():
    G = torch.randn(4, 5)
    assert damped_steps(DenseGradients(G), torch.zeros(5, dtype=torch.bool)) == []
    with pytest.raises(InputError, match="support"):
        damped_steps(DenseGradients(G), torch.ones(4, dtype=torch.bool))
    with pytest.raises(InputError, match="dampings"):
        damped_steps(DenseGradients(G), torch.ones(5, dtype=torch.bool), dampings=(0.0,))


def test_gradient_operators_match_vmap_per_sample_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    weights = prunable_weights(net)
    names = list(weights)
    ops = gradient_operators(net, CE, weights, names, x, y)
    ref = per_sample_gradients(net, CE, names, x, y)
    for n in names:
        v = torch.randn(weights[n].numel())
        torch.testing.assert_close(ops[n].matvec(v), ref[n] @ v, rtol=1e-4, atol=1e-5)


def _blobs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 10, generator=gen) * 1.5
    y = torch.randint(0, 3, (1200,), generator=gen)
    x = centres[y] + torch.randn(1200, 10, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        CE(net(x[:600]), y[:600]).backward()
        opt.step()
    return net, x, y


def _pruned(net, density=0.2):
    weights = prunable_weights(net)
    with torch.no_grad():
        for w in weights.values():
            keep = w.abs() >= w.abs().flatten().kthvalue(int((1 - density) * w.numel())).values
            w.mul_(keep)
    names = list(weights)
    support = torch.cat([(weights[n] != 0).reshape(-1) for n in names])
    return weights, names, support


@pytest.mark.parametrize("z", [0.0, 1e6])
def test_refit_round_lowers_the_held_out_loss_or_restores_the_weights_exactly(z):
    torch.manual_seed(0)
    net, x, y = _blobs()
    weights, names, support = _pruned(net)
    before = {n: w.detach().clone() for n, w in weights.items()}
    held = (x[900:], y[900:])

    def loss():
        with torch.no_grad():
            return float(CE(net(held[0]), held[1]))

    def samples():
        with torch.no_grad():
            return CE(net(held[0]), held[1], reduction="none").numpy()

    record = refit_weights(net, CE, [weights[n] for n in names], names, support,
                           (x[600:900], y[600:900]), loss, held_out_samples=samples, z=z)
    assert len(record["candidates"]) == 12
    for n, w in weights.items():
        assert torch.all(w[before[n] == 0] == 0)  # pruned weights stay pruned
    if z == 0.0:
        # magnitude pruning to 20 % leaves a lot for the kept weights to win back
        assert record["accepted"]
        assert record["loss_after"] < record["loss_before"]
        assert record["loss_after"] == pytest.approx(min(c["loss"] for c in record["candidates"]))
        assert any(not torch.equal(w, before[n]) for n, w in weights.items())
    else:
        assert not record["accepted"] and record["threshold"] < 0
        assert record["loss_after"] == record["loss_before"]
        for n, w in weights.items():
            assert torch.equal(w, before[n])


def test_refit_rejects_bad_options():
    net, x, y = _blobs()
    weights, names, support = _pruned(net)
    params = [weights[n] for n in names]
    with pytest.raises(InputError, match="scales"):
        refit_weights(net, CE, params, names, support, (x[:50], y[:50]), lambda: 0.0,
                      scales=(-1.0,))
    with pytest.raises(InputError, match="z must"):
        refit_weights(net, CE, params, names, support, (x[:50], y[:50]), lambda: 0.0, z=-1.0)


@pytest.mark.parametrize("where", ["final", "epoch"])
def test_icbs_with_refit_keeps_its_mask_and_never_raises_the_calibration_loss(where):
    torch.manual_seed(0)
    net, x, y = _blobs(1)
    train = make_loader(x[:600], y[:600], batch_size=100, shuffle=True, seed=1)
    val = make_loader(x[600:750], y[600:750], batch_size=150, shuffle=False)
    cal = (x[750:1200], y[750:1200])
    cfg = ICBSConfig(density=0.2, backend="exact", block_size=10, epochs=2, steps_per_epoch=4,
                     fisher_samples=200, init="magnitude", refit=where, refit_rounds=2,
                     refit_z=0.0, seed=0)
    report = prune(net, CE, train, val, cfg, calibration=cal).to_dict()
    weights = prunable_weights(net)
    for name, w in weights.items():
        assert int((w != 0).sum()) == round(0.2 * w.numel())
    refits = report["refits"]
    assert refits and {r["epoch"] for r in refits} == ({2} if where == "final" else {0, 1, 2})
    assert refits[0]["accepted"]  # magnitude at 0.2 leaves room on this model
    for r in refits:
        assert r["loss_after"] <= r["loss_before"]
    epochs = {e["epoch"]: e for e in report["epochs"]}
    assert ("refit" in epochs[1]) == (where == "epoch") and "refit" in epochs[2]
    assert epochs[2]["refit"]["loss_after"] <= epochs[2]["refit"]["loss_before"]
    assert report["final"]["calibration_loss"] == pytest.approx(epochs[2]["calibration_loss"])


def test_refit_config_errors():
    with pytest.raises(InputError, match="refit must be"):
        ICBSConfig(density=0.5, refit="always").validate()
    with pytest.raises(InputError, match="loss_check"):
        ICBSConfig(density=0.5, refit="final", loss_check=False).validate()
    with pytest.raises(InputError, match="refit_rounds"):
        ICBSConfig(density=0.5, refit="final", refit_rounds=0).validate()
    with pytest.raises(InputError, match="refit_z"):
        ICBSConfig(density=0.5, refit="final", refit_z=-1.0).validate()
