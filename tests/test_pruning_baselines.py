"""One-shot baselines: which weights, exact densities, tie-breaking, Wanda and |w g|."""

import numpy as np
import pytest
import torch
from torch import nn

from pruning.baselines import (
    apply_masks,
    gradient_scores,
    layer_densities,
    masks_from_scores,
    one_shot,
    prunable_weights,
    wanda_scores,
)
from qcbo.errors import InputError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3),
    )


def test_prunable_weights_are_linear_and_conv_weights_only():
    net = _net()
    assert list(prunable_weights(net)) == ["0.weight", "4.weight", "7.weight"]
    assert list(prunable_weights(net, ["4.*", "7.weight"])) == ["4.weight", "7.weight"]
    with pytest.raises(InputError, match="no prunable weights"):
        prunable_weights(net, ["1.*"])


@pytest.mark.parametrize("density", [0.1, 0.3, 0.5, 1.0])
def test_exact_density_per_layer_and_row(density):
    scores = {"a": torch.rand(7, 13), "b": torch.rand(5, 3, 2, 2)}
    masks = masks_from_scores(scores, density, "layer")
    for name, s in scores.items():
        assert int(masks[name].sum()) == round(density * s.numel())
        kept_min = s[masks[name]].min() if masks[name].any() else np.inf
        dropped = s[~masks[name]]
        assert dropped.numel() == 0 or dropped.max() <= kept_min
    rows = masks_from_scores(scores, density, "row")
    for name, s in scores.items():
        per_row = rows[name].reshape(s.shape[0], -1).sum(dim=1)
        assert int(per_row.sum()) == round(density * s.numel())
        assert int(per_row.max() - per_row.min()) <= 1
    glob = masks_from_scores(scores, density, "global")
    total = sum(s.numel() for s in scores.values())
    assert sum(int(m.sum()) for m in glob.values()) == round(density * total)


def test_ties_keep_the_lower_index_and_density_is_validated():
    masks = masks_from_scores({"w": torch.ones(2, 5)}, 0.3, "layer")
    assert masks["w"].reshape(-1).tolist() == [True] * 3 + [False] * 7
    rows = masks_from_scores({"w": torch.ones(2, 5)}, 0.4, "row")
    assert rows["w"].tolist() == [[True, True, False, False, False]] * 2
    rows = masks_from_scores({"w": torch.ones(2, 5)}, 0.3, "row")
    assert rows["w"].tolist() == [[True, True, False, False, False],
                                  [True, False, False, False, False]]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match="density"):
            masks_from_scores({"w": torch.ones(3)}, bad)


def test_wanda_is_weight_times_input_column_norm():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    xs = [torch.randn(6, 5), torch.randn(3, 5)]
    weights = prunable_weights(net)
    scores = wanda_scores(net, weights, [(x, None) for x in xs])
    x = torch.cat(xs)
    expected0 = net[0].weight.abs() * x.norm(dim=0)
    hidden = torch.relu(net[0](x))
    expected2 = net[2].weight.abs() * hidden.norm(dim=0)
    assert torch.allclose(scores["0.weight"], expected0.detach(), atol=1e-5)
    assert torch.allclose(scores["2.weight"], expected2.detach(), atol=1e-5)


def test_gradient_score_and_one_shot_prunes_in_place():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    weights = prunable_weights(net)
    scores = gradient_scores(net, weights, nn.functional.cross_entropy, [(x, y)])
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    assert torch.allclose(scores["2.weight"], (net[2].weight * net[2].weight.grad).abs().detach())
    masks = one_shot(net, "magnitude", 0.5)
    assert layer_densities(masks) == {"0.weight": 0.5, "2.weight": 0.5}
    assert int((net[0].weight == 0).sum()) == 10
    masks = one_shot(net, "wanda", 0.25, batches=[(x, y)])
    assert int((net[2].weight != 0).sum()) == 3  # one per row of 4 inputs
    with pytest.raises(InputError, match="unknown one-shot"):
        one_shot(net, "random", 0.5)
    apply_masks(weights, {"0.weight": torch.zeros(4, 5, dtype=torch.bool)})
    assert not net[0].weight.any()
