"""`pruning.pooling`: the strided max pooling equals ``max_pool2d`` bit for bit, only
non-overlapping pools are switched, and the model gets its classes back."""

import numpy as np
import pytest
import torch
from torch import nn

from pruning.pooling import fast_max_pool, strided_max_pool


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (5, 6, 6), (1, 1, 2, 2)])
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3), (1, 1)])
def test_strided_max_pool_equals_max_pool2d(shape, kernel):
    if shape[-2] < kernel[0] or shape[-1] < kernel[1]:
        pytest.skip("window larger than the input")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    x[..., 0, 0] = float("nan")  # NaN propagates as in max_pool2d
    x.view(-1)[1::7] = 0.0  # ties
    expected = nn.functional.max_pool2d(x, kernel, stride=kernel)
    got = strided_max_pool(x, kernel)
    assert got.shape == expected.shape
    assert torch.equal(torch.nan_to_num(got, nan=7.0), torch.nan_to_num(expected, nan=7.0))
    assert torch.equal(got.isnan(), expected.isnan())


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Unflatten(1, (2, 12, 12)), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.MaxPool2d(3, stride=1), nn.MaxPool2d(2, padding=1),
                         nn.Conv2d(4, 3, 3, padding=1), nn.MaxPool2d((2, 2), stride=2),
                         nn.Flatten(), nn.Linear(3, 5))  # 12 -> 6 -> 4 -> 3 -> 1


def test_only_non_overlapping_pools_switch_and_the_model_is_restored():
    torch.manual_seed(0)
    net = _net()
    x = torch.randn(6, 288)
    expected = net(x)
    with fast_max_pool(net) as switched:
        assert switched == 2  # kernel 2 stride 2, twice; the overlapping and padded ones stay
        assert [type(m).__name__ for m in net[3:8] if isinstance(m, nn.MaxPool2d)] == [
            "_StridedMaxPool2d", "MaxPool2d", "MaxPool2d", "_StridedMaxPool2d"]
        assert all(isinstance(m, nn.MaxPool2d) for m in (net[3], net[7]))
        assert torch.equal(net(x), expected)
        with fast_max_pool(net) as again:  # nested: nothing left to switch
            assert again == 0
        assert type(net[3]).__name__ == "_StridedMaxPool2d"
    assert all(type(m) is nn.MaxPool2d for m in net if isinstance(m, nn.MaxPool2d))
    with pytest.raises(RuntimeError, match="boom"):
        with fast_max_pool(net):
            raise RuntimeError("boom")
    assert type(net[3]) is nn.MaxPool2d and type(net[7]) is nn.MaxPool2d


def test_gradients_equal_without_ties():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 3, 3, padding=1),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 4))  # no ReLU: no zero ties
    x, y = torch.randn(10, 64), torch.randint(0, 4, (10,))

    def grads() -> list[np.ndarray]:
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        return [p.grad.numpy().copy() for p in net.parameters()]

    plain = grads()
    with fast_max_pool(net):
        fast = grads()
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_prune_pools_the_fast_way_and_returns_the_model_as_it_was():
    from pruning.data import make_loader
    from pruning.icbs import ICBSConfig, prune

    torch.manual_seed(2)
    net = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.randn(400, 64), torch.randint(0, 3, (400,))
    seen: set[str] = set()
    net[3].register_forward_pre_hook(lambda m, _inp: seen.add(type(m).__name__))
    cfg = ICBSConfig(density=0.5, backend="sa", block_size=16, epochs=1, steps_per_epoch=2,
                     fisher_samples=20, seed=0)
    train = make_loader(x[:300], y[:300], batch_size=50, shuffle=True, seed=0)
    val = make_loader(x[300:], y[300:], batch_size=100, shuffle=False)
    prune(net, nn.functional.cross_entropy, train, val, cfg)
    assert seen == {"_StridedMaxPool2d"}
    assert type(net[3]) is nn.MaxPool2d
