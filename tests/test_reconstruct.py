"""Layer reconstruction toward the dense model (`pruning.reconstruct`) and its place among
the re-fit candidates: exact least squares on tiny cases, Conv2d patches, bad input."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pruning.baselines import prunable_weights
from pruning.icbs import ICBSConfig
from pruning.lsq import dense_target_weights, refit_rows
from pruning.objectives import Reconstruction
from pruning.reconstruct import layer_features, reconstruct_layers
from qcbo.errors import InputError

from .test_refit import _prune_blobs


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _random_masks(net: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, w in prunable_weights(net).items():
        masks[name] = torch.rand(w.shape, generator=gen) < density
        masks[name].view(w.shape[0], -1)[:, 0] = True  # every row keeps a weight
    return masks


def _apply(net: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, w in prunable_weights(net).items():
            w.mul_(masks[name])


def test_first_layer_is_the_brute_force_ridge_least_squares_on_its_support():
    dense = _mlp()
    net = copy.deepcopy(dense)
    masks = _random_masks(net, 0.5, 1)
    _apply(net, masks)
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    ridge = 0.05
    record = reconstruct_layers(net, dense, ["0.weight"], masks, x, ridge=ridge)
    # the first layer's inputs are the same in both models: ‖X(w̄ − ŵ)‖²/N + λ‖ŵ − w̄‖²
    X = x.double().numpy()
    N = len(X)
    lam = ridge * np.mean(np.diag(X.T @ X / N))
    Wd = dense[0].weight.detach().double().numpy()
    got = net[0].weight.detach().double().numpy()
    for r in range(Wd.shape[0]):
        S = masks["0.weight"][r].numpy()
        A = np.vstack([X[:, S] / np.sqrt(N), np.sqrt(lam) * np.eye(S.sum())])
        b = np.concatenate([X @ Wd[r] / np.sqrt(N), np.sqrt(lam) * Wd[r, S]])
        want = np.zeros(6)
        want[S] = np.linalg.lstsq(A, b, rcond=None)[0]
        np.testing.assert_allclose(got[r], want, rtol=1e-4, atol=1e-5)
    assert torch.equal(net[0].bias, dense[0].bias)
    layer = record["layers"]["0.weight"]
    assert 0 <= layer["error_after"] < layer["error_before"]
    assert layer["samples"] == 40 and layer["rows"] == 40


def test_second_layer_reconstructs_against_the_dense_models_inputs():
    # the second layer's X comes from the reconstructed first layer, X̄ from the dense
    # model: the result is the dense-target least squares of `pruning.lsq`
    dense = _mlp(3)
    net = copy.deepcopy(dense)
    masks = _random_masks(net, 0.6, 4)
    _apply(net, masks)
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(5))
    reconstruct_layers(net, dense, ["0.weight"], masks, x, ridge=0.01)
    with torch.no_grad():
        X = torch.relu(net[0](x)).double()
        Xd = torch.relu(dense[0](x)).double()
    before = copy.deepcopy(net)
    reconstruct_layers(net, dense, ["2.weight"], masks, x, ridge=0.01)
    Wt, Hl = dense_target_weights(dense[2].weight.detach(), X.T @ X / 64, X.T @ Xd / 64, 0.01)
    want = refit_rows(Wt, masks["2.weight"], Hl)
    np.testing.assert_allclose(net[2].weight.detach().double().numpy(), want.numpy(),
                               rtol=1e-4, atol=1e-5)
    assert torch.equal(net[0].weight, before[0].weight)  # other layers untouched
    # the whole chain never moves a pruned weight, and all-kept masks give back dense
    full = {n: torch.ones_like(m) for n, m in masks.items()}
    again = copy.deepcopy(dense)
    record = reconstruct_layers(again, dense, list(full), full, x, ridge=1e-6)
    for name, w in prunable_weights(again).items():
        np.testing.assert_allclose(w.detach().numpy(),
                                   prunable_weights(dense)[name].detach().numpy(), atol=1e-4)
        assert record["layers"][name]["error_after"] < 1e-8
    for name, w in prunable_weights(net).items():
        assert not bool((w[~masks[name]] != 0).any())


def test_conv_patches_times_the_weight_are_the_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1, stride=2)
    x = torch.randn(2, 3, 7, 7)
    X = layer_features(conv, x)
    out = conv(x).detach()
    manual = (X @ conv.weight.detach().reshape(4, -1).T + conv.bias.detach())
    manual = manual.reshape(2, -1, 4).transpose(1, 2).reshape(out.shape)
    torch.testing.assert_close(manual, out, rtol=1e-5, atol=1e-5)


def test_conv_models_reconstruct_and_the_row_cap_limits_the_samples():
    torch.manual_seed(1)
    dense = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    net = copy.deepcopy(dense)
    masks = _random_masks(net, 0.5, 2)
    _apply(net, masks)
    x = torch.randn(20, 1, 6, 6)
    record = reconstruct_layers(net, dense, list(masks), masks, x, chunk=4, max_rows=100)
    conv = record["layers"]["0.weight"]
    assert conv["samples"] == 4 and conv["rows"] == 144  # one chunk of 4 images, 36 each
    assert record["layers"]["3.weight"]["samples"] == 20  # one row per image
    for layer in record["layers"].values():
        assert 0 <= layer["error_after"] < layer["error_before"]


def test_bad_input_is_refused():
    dense = _mlp()
    masks = _random_masks(dense, 0.5, 0)
    with pytest.raises(InputError, match="ridge"):
        reconstruct_layers(copy.deepcopy(dense), dense, list(masks), masks,
                           torch.randn(5, 6), ridge=0.0)
    with pytest.raises(InputError, match="at least one"):
        reconstruct_layers(copy.deepcopy(dense), dense, list(masks), masks, torch.randn(0, 6))
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(InputError, match="groups=1"):
        layer_features(grouped, torch.randn(1, 4, 5, 5))
    with pytest.raises(InputError, match="Linear and Conv2d"):
        layer_features(nn.Conv1d(2, 2, 3), torch.randn(1, 2, 5))
    with pytest.raises(InputError, match="reconstruct_ridges"):
        ICBSConfig(density=0.5, reconstruct_ridges=(-1.0,)).validate()
    with pytest.raises(InputError, match="reconstruct_samples"):
        ICBSConfig(density=0.5, reconstruct_samples=0).validate()


def test_reconstruction_candidates_are_deltas_on_the_flattened_weights():
    dense = _mlp(2)
    net = copy.deepcopy(dense)
    masks = _random_masks(net, 0.4, 3)
    _apply(net, masks)
    x = torch.randn(30, 6)
    names = list(masks)
    before = {n: p.detach().clone() for n, p in prunable_weights(net).items()}
    deltas, records = Reconstruction(dense, x, (0.01, 1.0)).candidates(net, names, masks)
    assert [label for label, _ in deltas] == ["reconstruct ridge 0.01", "reconstruct ridge 1"]
    assert set(records) == {label for label, _ in deltas}
    for n, p in prunable_weights(net).items():
        assert torch.equal(p, before[n])  # computed on a copy
    copy_ = copy.deepcopy(net)
    reconstruct_layers(copy_, dense, names, masks, x, ridge=0.01)
    want = torch.cat([(prunable_weights(copy_)[n] - before[n]).reshape(-1) for n in names])
    torch.testing.assert_close(deltas[0][1], want.detach())


def test_icbs_offers_the_reconstruction_in_the_first_round_of_each_refit():
    net, _, report = _prune_blobs(1, epochs=2, refit_rounds=2, refit_z=0.0, keep_best=False,
                                  reconstruct_samples=300)
    firsts = {}
    for r in report["refits"]:
        firsts.setdefault(r["epoch"], r)
        labels = [c.get("candidate") for c in r["candidates"]]
        assert (labels.count("reconstruct ridge 0.01") == 1) == (r is firsts[r["epoch"]])
    assert set(firsts) == {0, 1, 2}  # the re-fits go on every epoch
    first = firsts[0]["reconstruction"]["reconstruct ridge 0.01"]
    assert first["samples"] == 300
    assert all(v["error_after"] < v["error_before"] for v in first["layers"].values())
    weights = prunable_weights(net)
    for w in weights.values():
        assert int((w != 0).sum()) == round(0.2 * w.numel())
    _, _, off = _prune_blobs(1, epochs=1, refit_z=0.0, reconstruct=False)
    assert all("reconstruction" not in r for r in off["refits"])



def test_an_unchanged_mask_is_not_offered_the_reconstruction_twice():
    # refit_z = 1e6 refuses everything, so the start's call ends the Fisher steps; with
    # no block steps the masks never change and the later calls are skipped
    _, _, report = _prune_blobs(1, epochs=2, steps_per_epoch=0, min_steps_per_layer=0,
                                refit_z=1e6, keep_best=False, reconstruct_samples=300)
    assert {r["epoch"] for r in report["refits"]} == {0}
    assert all(e["refit"]["skipped"] == "mask unchanged" for e in report["epochs"])
    assert all(e["blocks_solved"] == 0 for e in report["epochs"])
