"""The iCBS loop on a tiny trained classifier, solved exactly."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from pruning.baselines import prunable_weights
from pruning.data import make_loader
from pruning.engine import BlockSelector, SelectionPolicy
from pruning.icbs import ICBSConfig, prune, resolve_block_size, step_schedule
from qcbo.errors import InputError, UnsupportedProblemError

from .helpers import brute_force, blob_classifier

CE = nn.functional.cross_entropy


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: torch's thread pool only adds contention on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread):
    """A 10-24-3 MLP trained on three Gaussian blobs; returns (state, loaders)."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 10, generator=gen) * 1.5
    y = torch.randint(0, 3, (900,), generator=gen)
    x = centres[y] + torch.randn(900, 10, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 3))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        CE(net(x[:600]), y[:600]).backward()
        opt.step()
    loaders = (
        make_loader(x[:600], y[:600], batch_size=100, shuffle=True, seed=1),
        make_loader(x[600:750], y[600:750], batch_size=150, shuffle=False),
        make_loader(x[750:], y[750:], batch_size=150, shuffle=False),
    )
    return {k: v.clone() for k, v in net.state_dict().items()}, loaders


def _net(state):
    net = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 3))
    net.load_state_dict(state)
    return net


def test_prune_keeps_density_and_never_applies_a_worse_block(trained):
    state, (train, val, test) = trained
    net = _net(state)
    dense = {k: v.clone() for k, v in net.state_dict().items()}
    blocks = []
    cfg = ICBSConfig(density=0.25, backend="exact", block_size=10, epochs=2, steps_per_epoch=6,
                     fisher_samples=200, init="magnitude", loss_check=False, seed=3)
    report = prune(net, CE, train, val, cfg, test_loader=test,
                   block_sink=blocks.append).to_dict()
    weights = prunable_weights(net)
    for name, w in weights.items():
        kept = int((w != 0).sum())
        assert kept == round(0.25 * w.numel())
        assert report["layers"][name]["density"] == pytest.approx(kept / w.numel())
        nz = w != 0
        assert torch.equal(w[nz], dense[name][nz])  # kept weights are never re-fitted
    assert net[0].bias.count_nonzero() == dense["0.bias"].count_nonzero()
    assert report["blocks_solved"] == len(blocks) == 12
    assert 0 < report["blocks_applied"] <= 12
    assert [e["epoch"] for e in report["epochs"]] == [1, 2]
    assert report["final"]["val_loss"] <= report["initial"]["val_loss"]
    for problem in blocks:
        meta = problem.metadata
        assert meta["backend"] == "exact" and meta["status"] == "optimal"
        assert len(meta["indices"]) == problem.n == 10 and problem.k == sum(meta["initial"])
        initial = np.array(meta["initial"], dtype=np.int8)
        # The exact backend's answer is the block's optimum, found here by enumeration.
        assert meta["energy_reached"] <= problem.energy(initial) + 1e-12
        best, _ = brute_force(problem)
        assert meta["energy_reached"] == pytest.approx(best, abs=1e-9 * max(1.0, abs(best)))
        assert meta["applied"] == (meta["energy_reached"] < problem.energy(initial) - 1e-12)


def test_exact_hessian_option_predicts_a_decrease_for_every_applied_block(trained):
    state, (train, val, _) = trained
    net = _net(state)
    blocks = []
    cfg = ICBSConfig(density=0.3, backend="exact", block_size=8, epochs=1, steps_per_epoch=4,
                     fisher_samples=300, hessian="exact", init="magnitude", loss_check=False,
                     seed=0)
    report = prune(net, CE, train, val, cfg, block_sink=blocks.append).to_dict()
    assert len(blocks) == 4 and all(p.metadata["scale"] > 0 for p in blocks)
    applied = [p for p in blocks if p.metadata["applied"]]
    assert report["epochs"][0]["blocks_applied"] == len(applied) > 0
    predicted = sum((p.metadata["energy_reached"] - p.energy(np.array(p.metadata["initial"])))
                    * p.metadata["scale"] for p in applied)
    assert predicted < 0
    assert report["epochs"][0]["predicted_delta_loss"] == pytest.approx(predicted)


def test_keep_best_restores_the_best_epoch(trained):
    state, (train, val, _) = trained
    net = _net(state)
    cfg = ICBSConfig(density=0.2, backend="exact", block_size=8, epochs=3, steps_per_epoch=3,
                     fisher_samples=100, keep_best=True, select_z=0.0, seed=5)
    report = prune(net, CE, train, val, cfg).to_dict()
    best = report["best_epoch"]
    accs = [report["initial"]["val_accuracy"]] + [e["val_accuracy"] for e in report["epochs"]]
    # select_z=0: plain best validation accuracy (ties to the lower loss)
    assert report["final"]["val_accuracy"] == pytest.approx(max(accs))
    assert report["final_epoch"] == best
    # each epoch records the best epoch so far; without keep_best the last epoch stays
    assert [e["best_epoch"] for e in report["epochs"]][-1] == best
    assert all(e["best_epoch"] <= e["epoch"] for e in report["epochs"])
    assert [s["label"] for s in report["selection"]] == ["start", "epoch 1", "epoch 2", "epoch 3"]
    net2 = _net(state)
    last = prune(net2, CE, train, val, dataclasses.replace(cfg, keep_best=False)).to_dict()
    assert last["final_epoch"] == 3
    assert last["final"]["val_accuracy"] == pytest.approx(last["epochs"][-1]["val_accuracy"])
    assert ICBSConfig(density=0.5).keep_best


def test_guarded_selection_returns_the_state_it_chose(trained):
    """select_z > 0: every replacement passed the paired test, the returned model is the
    chosen state, and a huge z keeps the start (no later state can pass)."""
    state, (train, val, _) = trained
    cfg = ICBSConfig(density=0.2, backend="exact", block_size=8, epochs=3, steps_per_epoch=3,
                     fisher_samples=100, select_z=1.0, seed=5)
    report = prune(_net(state), CE, train, val, cfg).to_dict()
    log = report["selection"]
    assert log[0]["chosen"] and all(e["change"] < e["threshold"] < 0
                                    for e in log[1:] if e["chosen"])
    chosen = [e for e in log if e["chosen"]][-1]
    assert report["best_state"] == chosen["label"]
    assert report["final"]["val_loss"] == pytest.approx(chosen["val_loss"], rel=1e-6)
    strict = prune(_net(state), CE, train, val,
                   dataclasses.replace(cfg, select_z=1e9)).to_dict()
    assert strict["best_state"] == "start" and strict["final_epoch"] == 0
    assert strict["final"]["val_loss"] == pytest.approx(strict["initial"]["val_loss"], rel=1e-6)
    assert strict["density"] == pytest.approx(report["density"])
    with pytest.raises(InputError, match="select_z"):
        ICBSConfig(density=0.5, select_z=-1.0).validate()


def test_tabu_never_starves_a_block():
    rng = np.random.default_rng(0)
    keep = np.zeros(40, dtype=bool)
    keep[:6] = True  # density 0.15: few kept weights, as at low density
    selector = BlockSelector(keep, np.abs(rng.normal(size=40)), SelectionPolicy(0.0, 0.0, 0.9), 10)
    for _ in range(20):
        idx = selector.select(10, 5)
        assert idx is not None and len(idx) == 10
        assert int(keep[idx].sum()) == 5
        selector.release(idx)
        assert selector.in_tabu.sum() <= selector.tabu_capacity


def test_blocks_of_one_group_are_disjoint():
    keep = np.zeros(100, dtype=bool)
    keep[::2] = True
    selector = BlockSelector(keep, np.arange(100.0), SelectionPolicy(0.0, 0.0, 0.4), 10)
    blocks = [selector.select(10, 5) for _ in range(5)]
    flat = np.concatenate(blocks)
    assert len(np.unique(flat)) == flat.size == 50


def _digits_like(seed=0):
    return blob_classifier(seed, classes=4, features=12, hidden=32, samples=1600, train=1000,
                           steps=200, spread=1.2)


def test_calibration_loss_never_rises_across_steps_and_groups_are_reverted():
    net, x, y = _digits_like()
    train = make_loader(x[:1000], y[:1000], batch_size=100, shuffle=True, seed=1)
    val = make_loader(x[1000:1300], y[1000:1300], batch_size=300, shuffle=False)
    calibration = (x[1300:], y[1300:])
    steps = []
    cfg = ICBSConfig(density=0.2, backend="sa", block_size=16, epochs=3, steps_per_epoch=10,
                     group_size=2, fisher_samples=50, lam=0.0, gamma=5.0, seed=0,
                     keep_best=False)
    report = prune(net, CE, train, val, cfg, calibration=calibration,
                   on_step=steps.append).to_dict()
    losses = [e["calibration_loss"] for e in report["epochs"]]
    start = report["initial"]["candidates"][report["initial"]["method"]]["calibration_loss"]
    assert all(b <= a + 1e-12 for a, b in zip([start] + losses, losses))
    assert report["final"]["calibration_loss"] == pytest.approx(losses[-1])
    groups = report["engine"]["groups"]
    measured = [g for g in groups if g["measured"] is not None]
    assert measured and len(steps) == report["blocks_solved"]
    # A large gradient multiplier makes the block model overconfident: some groups must
    # have been reverted (or shrunk), and reverted blocks are not counted as applied.
    assert report["blocks_reverted"] > 0
    assert report["blocks_applied"] == sum(s.applied and not s.reverted for s in steps)


@pytest.mark.parametrize("score,key", [("loss", "calibration_loss"),
                                       ("tempered", "tempered_loss")])
def test_auto_start_picks_the_lowest_calibration_score(score, key):
    net, x, y = _digits_like(1)
    train = make_loader(x[:1000], y[:1000], batch_size=100, shuffle=True, seed=1)
    val = make_loader(x[1000:1300], y[1000:1300], batch_size=300, shuffle=False)
    cfg = ICBSConfig(density=0.3, backend="sa", block_size=16, epochs=0, steps_per_epoch=0,
                     start_score=score)
    report = prune(net, CE, train, val, cfg, calibration=(x[1300:], y[1300:])).to_dict()
    table = report["initial"]["candidates"]
    assert set(table) >= {"magnitude", "wanda", "gradient", "magnitude-global"}
    chosen = report["initial"]["method"]
    assert table[chosen][key] == min(v[key] for v in table.values())
    assert report["final"]["calibration_loss"] == pytest.approx(table[chosen]["calibration_loss"])
    for v in table.values():  # the best temperature is never worse than T = 1
        assert v["tempered_loss"] <= v["calibration_loss"] * (1 + 1e-6)  # float32 forward
        assert v["temperature"] > 0


def test_answers_do_not_depend_on_the_executor():
    from backends.executor import make_executor

    outcomes = []
    for kind in ("serial", "processes"):
        net, x, y = _digits_like(2)
        train = make_loader(x[:1000], y[:1000], batch_size=100, shuffle=True, seed=1)
        val = make_loader(x[1000:1300], y[1000:1300], batch_size=300, shuffle=False)
        cfg = ICBSConfig(density=0.3, backend="sa", block_size=16, epochs=1, steps_per_epoch=8,
                         group_size=4, fisher_samples=50, seed=4)
        with make_executor(kind, workers=2 if kind != "serial" else None) as executor:
            prune(net, CE, train, val, cfg, calibration=(x[1300:], y[1300:]), executor=executor)
        outcomes.append([p.detach().clone() for p in prunable_weights(net).values()])
    for a, b in zip(*outcomes):
        assert torch.equal(a, b)


def test_schedule_and_block_size_rules():
    sched = step_schedule([401408, 262144, 5120], 30)
    counts = np.bincount(sched)
    assert counts.sum() == 30 and counts[0] >= counts[1] > counts[2] >= 1
    assert step_schedule([100, 10], 1, min_steps=2).count(1) == 2

    from backends import get_backend
    from backends.base import Backend

    class Small(Backend):
        name, max_variables, block_size_hint = "tiny-qpu", 12, None

        def _solve(self, problem, **options):  # pragma: no cover - never called
            raise NotImplementedError

    assert resolve_block_size(Small, None) == 12
    with pytest.raises(UnsupportedProblemError, match="at most 12"):
        resolve_block_size(Small, 20)
    # QAOA with sub-blocks works on big blocks; without, on device-size ones
    sub = get_backend("qaoa-subspace")
    assert resolve_block_size(sub, None) == sub.block_size_hint == 20
    assert resolve_block_size(sub, None, options={"sub_block": 20}) == 1024
    with pytest.raises(InputError, match="density"):
        ICBSConfig(density=0.0).validate()


def test_chita_baselines_of_an_automatic_start_are_the_start_candidates():
    """prune_classifier does not prune CHITA twice: the baseline figures come from the
    start candidate, and equal a separate CHITA baseline run."""
    import copy

    from pruning.data import ClassificationData
    from pruning.models import LoadedModel
    from pruning.run import prune_classifier

    net, x, y = _digits_like(3)
    data = ClassificationData("blobs", x[:1000], y[:1000], x[1000:1300], y[1000:1300],
                              x[1300:], y[1300:])
    cfg = dict(density=0.3, backend="sa", block_size=16, epochs=0, steps_per_epoch=0,
               calibration_samples=200)
    auto = prune_classifier(LoadedModel("blobs", copy.deepcopy(net), data, None),
                            method="icbs", config=ICBSConfig(**cfg),
                            baselines=("magnitude", "chita", "chita++"), batch_size=100)
    alone = prune_classifier(LoadedModel("blobs", copy.deepcopy(net), data, None),
                             method="chita++", config=ICBSConfig(**cfg, init="chita++"),
                             baselines=("chita++",), batch_size=100)
    reused = auto["baselines"]["chita++"]
    assert reused["from_start_candidates"] is True
    assert "from_start_candidates" not in alone["baselines"]["chita++"]
    for key in ("test_accuracy", "test_loss", "val_accuracy", "objective", "iterations",
                "magnitude_overlap"):
        assert reused[key] == pytest.approx(alone["baselines"]["chita++"][key], rel=1e-6)
    assert reused["layers"] == pytest.approx(alone["baselines"]["chita++"]["layers"])
    assert reused["stages"] > 1
    # one-stage CHITA is not an automatic start candidate: pruned as a baseline of its own
    assert "chita" not in auto["initial"]["candidates"]
    assert "from_start_candidates" not in auto["baselines"]["chita"]
    assert auto["baselines"]["chita"]["stages"] == 1
    assert set(auto["baselines"]) == {"magnitude", "chita", "chita++"}


def test_calibration_drawn_from_the_validation_split():
    import copy

    from pruning.baselines import one_shot
    from pruning.data import ClassificationData
    from pruning.models import LoadedModel
    from pruning.run import prune_classifier

    net, x, y = _digits_like(4)
    data = ClassificationData("blobs", x[:1000], y[:1000], x[1000:1300], y[1000:1300],
                              x[1300:], y[1300:])
    cfg = ICBSConfig(density=0.3, backend="sa", block_size=16, epochs=0, steps_per_epoch=0,
                     init="magnitude", calibration_samples=10_000)
    report = prune_classifier(LoadedModel("blobs", copy.deepcopy(net), data, None),
                              method="icbs", config=cfg, baselines=(), batch_size=100,
                              calibration_split="val")
    pruned = copy.deepcopy(net)
    one_shot(pruned, "magnitude", 0.3)
    val = make_loader(x[1000:1300], y[1000:1300], batch_size=300, shuffle=False)
    from pruning.icbs import evaluate_loader

    # the whole validation split (300 < 10,000 asked) in a seeded order: the same mean
    expected, _ = evaluate_loader(pruned, val, CE)
    got = report["initial"]["candidates"]["magnitude"]["calibration_loss"]
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InputError, match="calibration split"):
        prune_classifier(LoadedModel("blobs", copy.deepcopy(net), data, None), method="icbs",
                         config=cfg, baselines=(), calibration_split="test")
