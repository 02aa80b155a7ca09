"""`CalibrationCache` re-runs a Sequential from the first changed layer (a Linear by its
exact weight change against a reference output) and gives the full forward's loss."""

import pytest
import torch
from torch import nn

from pruning.objectives import CalibrationCache, calibration_loss

CE = nn.functional.cross_entropy


def _cnn() -> nn.Sequential:
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 16, 12), nn.Dropout(0.5), nn.ReLU(),
                         nn.Linear(12, 3))


def test_cache_equals_full_forward_after_every_change_in_any_layer():
    torch.manual_seed(0)
    net = _cnn().train()  # dropout: the cache must run in eval mode, as calibration_loss does
    x, y = torch.randn(50, 64), torch.randint(0, 3, (50,))
    names = ["1.weight", "4.weight", "7.weight", "10.weight"]
    params = dict(net.named_parameters())
    for chunk in (50, 16):  # one chunk, and uneven chunks
        cache = CalibrationCache(net, names, x, y, CE, chunk=chunk)
        assert cache.loss() == calibration_loss(net, x, y, CE, chunk=chunk)[0]
        gen = torch.Generator().manual_seed(chunk)
        for step in range(12):
            name = names[int(torch.randint(0, 4, (1,), generator=gen))]
            with torch.no_grad():
                flat = params[name].view(-1)
                flat[int(torch.randint(0, flat.numel(), (1,), generator=gen))] = 0.0
            cache.touch(name)
            if step % 3 == 2:  # several changes before one check
                continue
            full = calibration_loss(net, x, y, CE, chunk=chunk)[0]
            got = cache.loss()
            assert got == pytest.approx(full, rel=1e-6, abs=1e-9)
            assert cache.loss() == got  # nothing changed: the same value again
        assert net.training  # mode restored


def test_cache_reruns_only_the_layers_after_the_change():
    torch.manual_seed(1)
    net = _cnn()
    x, y = torch.randn(20, 64), torch.randint(0, 3, (20,))
    calls = {i: 0 for i in range(len(net))}
    for i, child in enumerate(net):
        child.register_forward_hook(lambda *_args, i=i: calls.__setitem__(i, calls[i] + 1))
    cache = CalibrationCache(net, ["1.weight", "7.weight"], x, y, CE)
    cache.loss()
    assert all(v == 1 for v in calls.values())
    cache.touch("7.weight")
    cache.loss()
    assert calls[1] == 1 and calls[4] == 1 and calls[7] == 2 and calls[10] == 2
    # A hook on a Linear stage disables its delta path: here 7 is run, not patched.


def test_a_linear_stage_is_patched_by_its_weight_change_and_refreshed_when_many_change():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 16), nn.ReLU(),
                        nn.Linear(16, 3))  # 8192 first-layer weights: up to 32 patched
    x, y = torch.randn(64, 64), torch.randint(0, 3, (64,))
    names = ["0.weight", "2.weight", "4.weight"]
    cache = CalibrationCache(net, names, x, y, CE, chunk=24)
    runs = {"first": 0}
    forward = net[0].forward

    def counted(h):
        runs["first"] += 1
        return forward(h)

    net[0].forward = counted  # counts real forwards of the first layer (3 chunks each)
    cache.loss()
    assert runs["first"] == 3
    w = net[0].weight
    original = w.detach().clone()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):  # a few entries zeroed, then restored: patched, never re-run
        idx = torch.randint(0, w.numel(), (4,), generator=gen)
        with torch.no_grad():
            w.view(-1)[idx] = 0.0
        cache.touch("0.weight")
        assert cache.loss() == pytest.approx(calibration_loss(net, x, y, CE)[0], rel=1e-6)
        with torch.no_grad():
            w.copy_(original)
        cache.touch("0.weight")
        assert cache.loss() == pytest.approx(calibration_loss(net, x, y, CE)[0], rel=1e-6)
    assert runs["first"] == 3 + 10  # only the 10 reference calibration_loss calls ran it
    with torch.no_grad():
        w.view(-1)[: w.numel() // 8] = 0.0  # more than 1/256 changed: a real forward again
    cache.touch("0.weight")
    before = runs["first"]
    assert cache.loss() == pytest.approx(calibration_loss(net, x, y, CE)[0], rel=1e-6)
    assert runs["first"] - before == 3 + 1  # the cache's 3 chunks, calibration_loss's 1


def test_models_that_are_not_a_plain_sequential_run_in_full():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)) + 0.0)

    torch.manual_seed(2)
    net = Net()
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    cache = CalibrationCache(net, ["a.weight", "b.weight"], x, y, CE)
    assert cache.stages is None
    with torch.no_grad():
        net.a.weight[0, 0] = 0.0
    cache.touch("a.weight")
    assert cache.loss() == calibration_loss(net, x, y, CE)[0]


def test_forward_stages_of_the_attention_model_give_the_same_loss():
    from pruning.zoo import Normalise, PatchViT

    torch.manual_seed(3)
    vit = PatchViT(Normalise(torch.zeros(784), torch.ones(784)), 16, 32, 10)
    x, y = torch.rand(40, 784), torch.randint(0, 10, (40,))
    names = [n for n, p in vit.named_parameters() if n.endswith("weight") and p.ndim == 2]
    cache = CalibrationCache(vit, names, x, y, CE, chunk=16)
    # embedding, the attention and MLP halves of both blocks, the head
    assert cache.stages is not None and len(cache.stages) == 6
    assert cache._stage["blocks.0.fc1.weight"] == 2 and cache._stage["blocks.1.attn.v.weight"] == 3
    assert cache.loss() == calibration_loss(vit, x, y, CE, chunk=16)[0]
    params = dict(vit.named_parameters())
    for name in ("blocks.1.fc2.weight", "head.weight", "blocks.0.attn.q.weight", "embed.weight",
                 "blocks.0.fc1.weight", "blocks.1.attn.v.weight"):
        with torch.no_grad():
            params[name].view(-1)[3] = 0.0
        cache.touch(name)
        assert cache.loss() == calibration_loss(vit, x, y, CE, chunk=16)[0]


@pytest.mark.parametrize("plain", [False, True])
def test_per_sample_losses_follow_every_change_and_average_to_the_loss(plain):
    """`samples()` (the engine's paired test) are the model's per-sample losses now, for
    the staged cache and for a model run in full; a loss without ``reduction`` gives None."""
    torch.manual_seed(2)
    net = _cnn()
    if plain:  # not a plain Sequential: run in full every time
        net = nn.Sequential(net, nn.Identity())
        net.register_forward_hook(lambda *_: None)
    x, y = torch.randn(40, 64), torch.randint(0, 3, (40,))
    prefix = "0." if plain else ""
    names = [f"{prefix}1.weight", f"{prefix}7.weight"]
    cache = CalibrationCache(net, names, x, y, CE, chunk=16)
    params = dict(net.named_parameters())
    for name in [None, *names]:
        if name is not None:
            with torch.no_grad():
                params[name].view(-1)[:5] = 0.0
            cache.touch(name)
        loss = cache.loss()
        samples = cache.samples()
        with torch.no_grad():
            expected = CE(net.eval()(x), y, reduction="none").double().numpy()
        assert samples.shape == (40,)
        assert samples == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert samples.mean() == pytest.approx(loss, rel=1e-6)
    mean_only = CalibrationCache(net, names, x, y, lambda out, t: CE(out, t))
    mean_only.loss()
    assert mean_only.samples() is None


def test_tempered_loss_is_the_loss_at_the_best_temperature():
    from pruning.objectives import tempered_loss

    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 4))
    x, y = torch.randn(200, 5), torch.randint(0, 4, (200,))
    with torch.no_grad():
        net[0].weight.mul_(25.0)  # over-confident logits: a temperature above 1 helps
    value, T = tempered_loss(net, x, y, CE)
    plain = calibration_loss(net, x, y, CE)[0]
    assert T > 1.0 and value < plain
    with torch.no_grad():
        z = net(x).double()
    grid = [float(CE(z / t, y)) for t in torch.logspace(0, 3, 2001, dtype=torch.float64)]
    assert value == pytest.approx(min(grid), rel=1e-4)
    assert value == pytest.approx(float(CE(z / T, y)), rel=1e-9)
    # Perfectly separated, confident logits: sharpening would reach 0; softening only.
    sep = nn.Sequential(nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        sep[0].weight.copy_(torch.eye(4) * 3.0)
    xs = torch.eye(4).repeat(10, 1)
    ys = torch.arange(4).repeat(10)
    value, T = tempered_loss(sep, xs, ys, CE)
    assert T == 1.0 and value == pytest.approx(calibration_loss(sep, xs, ys, CE)[0], rel=1e-6)
    # Not a classifier (regression outputs): no temperature.
    reg = nn.Sequential(nn.Linear(5, 1), nn.Flatten(0))
    assert tempered_loss(reg, x, torch.randn(200), nn.functional.mse_loss) is None
