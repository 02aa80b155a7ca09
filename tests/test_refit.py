"""The classifier re-fit of the kept weights (`pruning.refit`): the damped step against a
dense solve, held-out acceptance, and its place in the iCBS driver."""

import numpy as np
import pytest
import torch
from torch import nn

from pruning.baselines import prunable_weights
from pruning.chita import DenseGradients, gradient_operators, per_sample_gradients
from pruning.data import make_loader
from pruning.engine import Block
from pruning.icbs import REFIT_MIN_CALIBRATION, ICBSConfig, prune
from pruning.objectives import ClassifierFisher
from pruning.refit import damped_steps, refit_weights
from qcbo.errors import InputError

from .helpers import blob_classifier

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
        assert step.gradient == pytest.approx(g @ d, rel=1e-4)
        assert step.curvature == pytest.approx(d @ F @ d, rel=1e-4)
        assert step.predicted == pytest.approx(g @ d + 0.5 * d @ F @ d, rel=1e-4)
        assert step.predicted < 0


def _tiny_gradients():
    """Factored and vmap per-sample gradients of a 6-5-3 MLP on 9 samples."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    weights = prunable_weights(net)
    names = list(weights)
    return (weights, names, gradient_operators(net, CE, weights, names, x, y),
            per_sample_gradients(net, CE, names, x, y))


def test_damped_steps_agree_for_factored_and_stacked_linear_gradients():
    _, names, ops, dense = _tiny_gradients()
    from pruning.chita import StackedGradients

    stacked = StackedGradients([ops[n] for n in names])
    G = torch.cat([dense[n] for n in names], dim=1)
    support = torch.rand(G.shape[1]) < 0.5
    for a, b in zip(damped_steps(stacked, support), damped_steps(DenseGradients(G), support)):
        torch.testing.assert_close(a.delta, b.delta, rtol=1e-3, atol=1e-5)
        assert a.predicted == pytest.approx(b.predicted, rel=1e-3)


def test_damped_steps_of_an_empty_support_and_bad_input():
    G = torch.randn(4, 5)
    assert damped_steps(DenseGradients(G), torch.zeros(5, dtype=torch.bool)) == []
    with pytest.raises(InputError, match="support"):
        damped_steps(DenseGradients(G), torch.ones(4, dtype=torch.bool))
    with pytest.raises(InputError, match="dampings"):
        damped_steps(DenseGradients(G), torch.ones(5, dtype=torch.bool), dampings=(0.0,))


def test_gradient_operators_match_vmap_per_sample_gradients():
    weights, names, ops, ref = _tiny_gradients()
    for n in names:
        v = torch.randn(weights[n].numel())
        torch.testing.assert_close(ops[n].matvec(v), ref[n] @ v, rtol=1e-4, atol=1e-5)


def _blobs(seed=0):
    return blob_classifier(seed, classes=3, features=10, hidden=24, samples=1200, train=600,
                           steps=150, spread=1.5)


def _loaders(x, y):
    """(shuffled training loader on the first 600 samples, validation loader on 150)."""
    return (make_loader(x[:600], y[:600], batch_size=100, shuffle=True, seed=1),
            make_loader(x[600:750], y[600:750], batch_size=150, shuffle=False))


def _prune_blobs(seed: int, **options):
    """iCBS (exact backend, blocks of 10, magnitude start, re-fit every epoch) at density
    0.2 on `_blobs(seed)`, calibration = its last 450 samples; (net, val, report dict)."""
    torch.manual_seed(0)
    net, x, y = _blobs(seed)
    train, val = _loaders(x, y)
    settings = dict(density=0.2, backend="exact", block_size=10, steps_per_epoch=4,
                    fisher_samples=200, init="magnitude", refit="epoch", seed=0)
    cfg = ICBSConfig(**{**settings, **options})
    return net, val, prune(net, CE, train, val, cfg, calibration=(x[750:], y[750:])).to_dict()


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
    assert len(record["candidates"]) == 12 and record["split"]
    for n, w in weights.items():
        assert torch.all(w[before[n] == 0] == 0)  # pruned weights stay pruned
    if z == 0.0:
        # magnitude pruning to 20 % leaves a lot for the kept weights to win back
        assert record["accepted"] and record["test_change"] < 0
        assert record["loss_after"] < record["loss_before"]
        # chosen on the even half of the held-out samples, not on the whole mean
        chosen = min(record["candidates"], key=lambda c: c["select_loss"])
        assert record["loss_after"] == pytest.approx(chosen["loss"])
        assert (record["rho"], record["scale"]) == (chosen["rho"], chosen["scale"])
        assert any(not torch.equal(w, before[n]) for n, w in weights.items())
    else:
        assert not record["accepted"] and record["threshold"] < 0
        assert record["loss_after"] == record["loss_before"]
        for n, w in weights.items():
            assert torch.equal(w, before[n])


def test_scoring_candidates_on_the_choosing_half_alone_makes_the_same_choice():
    torch.manual_seed(0)
    net, x, y = _blobs()
    weights, names, support = _pruned(net)
    start = {n: w.detach().clone() for n, w in weights.items()}
    held = (x[900:], y[900:])
    calls = {"whole": 0}

    def loss():
        calls["whole"] += 1
        with torch.no_grad():
            return float(CE(net(held[0]), held[1]))

    def samples():
        with torch.no_grad():
            return CE(net(held[0]), held[1], reduction="none").numpy()

    def even():
        with torch.no_grad():
            return CE(net(held[0][0::2]), held[1][0::2], reduction="none").numpy()

    records = []
    for choose in (None, even):
        with torch.no_grad():
            for n, w in weights.items():
                w.copy_(start[n])
        calls["whole"] = 0
        records.append(refit_weights(net, CE, [weights[n] for n in names], names, support,
                                     (x[600:900], y[600:900]), loss, held_out_samples=samples,
                                     choose_samples=choose, z=0.0))
        records[-1]["whole_calls"] = calls["whole"]
    full, half = records
    assert full["accepted"] and half["accepted"]
    assert (half["rho"], half["scale"]) == (full["rho"], full["scale"])
    assert half["loss_after"] == pytest.approx(full["loss_after"], rel=1e-6)
    assert [c["select_loss"] for c in half["candidates"]] == pytest.approx(
        [c["select_loss"] for c in full["candidates"]], rel=1e-5)
    # before, the chosen one, after: three whole-set losses instead of 12 + 2
    assert (full["whole_calls"], half["whole_calls"]) == (14, 3)
    assert sum(c["loss"] is not None for c in half["candidates"]) == 1
    with pytest.raises(InputError, match="even-numbered"):
        refit_weights(net, CE, [weights[n] for n in names], names, support,
                      (x[600:900], y[600:900]), loss, held_out_samples=samples,
                      choose_samples=samples, z=0.0)


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
    net, _, report = _prune_blobs(1, epochs=2, refit=where, refit_rounds=2, refit_z=0.0,
                                  keep_best=False)
    weights = prunable_weights(net)
    for name, w in weights.items():
        assert int((w != 0).sum()) == round(0.2 * w.numel())
    refits = report["refits"]
    assert refits and {r["epoch"] for r in refits} == ({2} if where == "final" else {0, 1, 2})
    assert refits[0]["accepted"]  # magnitude at 0.2 leaves room on this model
    epochs = {e["epoch"]: e for e in report["epochs"]}
    assert ("refit" in epochs[1]) == (where == "epoch") and "refit" in epochs[2]
    assert epochs[2]["refit"]["loss_after"] <= epochs[2]["refit"]["loss_before"]
    assert report["final"]["calibration_loss"] == pytest.approx(epochs[2]["calibration_loss"])


def test_refit_config_errors():
    with pytest.raises(InputError, match="refit must be"):
        ICBSConfig(density=0.5, refit="always").validate()
    assert ICBSConfig(density=0.5).refit_mode() == "epoch"
    assert ICBSConfig(density=0.5).refit_mode(REFIT_MIN_CALIBRATION - 1) == "none"
    assert ICBSConfig(density=0.5, refit="epoch").refit_mode(10) == "epoch"
    assert ICBSConfig(density=0.5, loss_check=False).refit_mode() == "none"
    assert ICBSConfig(density=0.5, refit="final").refit_mode() == "final"
    with pytest.raises(InputError, match="loss_check"):
        ICBSConfig(density=0.5, refit="final", loss_check=False).validate()
    with pytest.raises(InputError, match="refit_rounds"):
        ICBSConfig(density=0.5, refit="final", refit_rounds=0).validate()
    with pytest.raises(InputError, match="refit_z"):
        ICBSConfig(density=0.5, refit="final", refit_z=-1.0).validate()


def test_an_exception_while_measuring_restores_the_weights():
    net, x, y = _blobs()
    weights, names, support = _pruned(net)
    before = {n: w.detach().clone() for n, w in weights.items()}
    calls = []

    def loss():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("measurement failed")
        return 1.0

    with pytest.raises(RuntimeError, match="measurement failed"):
        refit_weights(net, CE, [weights[n] for n in names], names, support,
                      (x[600:900], y[600:900]), loss)
    for n, w in weights.items():
        assert torch.equal(w, before[n])


def test_refitted_values_survive_later_block_changes():
    # ClassifierFisher keeps an accepted re-fit as the kept weights' dense values, so a
    # block applied afterwards leaves the re-fitted weights outside it in place.
    torch.manual_seed(0)
    net, x, y = _blobs()
    weights = prunable_weights(net)
    first = next(iter(weights))
    masks = {n: w.abs() >= w.abs().flatten().kthvalue(int(0.8 * w.numel())).values
             for n, w in weights.items()}
    scores = {n: w.detach().abs() for n, w in weights.items()}
    original = weights[first].detach().reshape(-1).clone()

    def forever():
        while True:
            yield from make_loader(x[:600], y[:600], batch_size=100, shuffle=True, seed=1)

    obj = ClassifierFisher(net, CE, weights, masks, scores, forever(), samples=200,
                           gamma=0.75, lam=1e-3, calibration=(x[900:], y[900:]))
    assert obj.refit(z=0.0)["accepted"]
    refitted = weights[first].detach().reshape(-1).clone()
    keep = obj.keep(0).copy()
    assert not torch.equal(refitted[keep], original[keep])
    # swap two kept weights out and two pruned ones in
    idx = np.concatenate([np.flatnonzero(keep)[:2], np.flatnonzero(~keep)[:2]])
    x_now = (~keep[idx]).astype(np.int8)
    obj.apply(Block(unit=0, indices=idx, x_current=x_now), 1 - x_now)
    w = weights[first].detach().reshape(-1)
    outside = np.setdiff1d(np.flatnonzero(keep), idx)
    assert torch.equal(w[outside], refitted[outside])
    assert torch.equal(w[idx[:2]], torch.zeros(2))
    # a weight re-entering comes back at its dense value, which the re-fit never moved
    assert torch.equal(w[idx[2:]], original[idx[2:]])


def test_keep_best_restores_the_best_epochs_refitted_values():
    net, val, report = _prune_blobs(1, epochs=3, refit_z=0.0, keep_best=True)
    from pruning.icbs import evaluate_loader

    loss, acc = evaluate_loader(net, val, CE)
    best, label = report["best_epoch"], report["best_state"]
    seen = {"start": report["initial"], "start re-fit": report["initial"].get("refit")}.get(
        label, report["epochs"][best - 1])
    assert label in ("start", "start re-fit", f"epoch {best}")
    # the restored model is the one that was measured as best, weights included
    assert loss == pytest.approx(seen["val_loss"], rel=1e-5)
    assert acc == pytest.approx(seen["val_accuracy"])


def test_the_refitted_start_is_measured_after_its_refit_and_offered_as_such():
    """epochs=0 with the last state kept: the model returned is the re-fitted start, so
    its measured figures are report.initial["refit"]'s; the start before it is offered
    too, with its own figures."""
    net, val, report = _prune_blobs(1, epochs=0, refit_z=0.0, keep_best=False)
    from pruning.icbs import evaluate_loader

    assert report["initial"]["refit"]["rounds_kept"] > 0
    loss, acc = evaluate_loader(net, val, CE)
    assert report["initial"]["refit"]["val_loss"] == pytest.approx(loss, rel=1e-6)
    assert report["initial"]["refit"]["val_loss"] != pytest.approx(report["initial"]["val_loss"])
    start, refitted = report["selection"]
    assert (start["label"], refitted["label"]) == ("start", "start re-fit")
    assert start["val_loss"] == pytest.approx(report["initial"]["val_loss"])
    assert refitted["val_loss"] == pytest.approx(loss, rel=1e-6)


def test_refit_with_paired_tests_in_the_engine_and_no_epochs():
    _, _, report = _prune_blobs(2, epochs=1, refit_z=1.0, loss_z=1.0, keep_best=False)
    kept = [r for r in report["refits"] if r["accepted"]]
    assert kept and all(r["test_change"] < r["threshold"] < 0 for r in kept)
    assert report["final"]["calibration_loss"] == pytest.approx(
        report["epochs"][-1]["calibration_loss"])
    _, _, report0 = _prune_blobs(2, epochs=0, refit="final", refit_z=0.0)
    assert [r["epoch"] for r in report0["refits"]][:1] == [0]
    assert report0["initial"]["refit"]["loss_after"] < report0["initial"]["refit"]["loss_before"]
