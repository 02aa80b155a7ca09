"""Block gradients from torch.func equal per-sample autograd; exact Hessian block."""

import torch
from torch import nn

from pruning.fisher import block_gradients, exact_hessian_block, fisher_block

CE = nn.functional.cross_entropy


def _per_sample_reference(net, weight, idx, x, y):
    rows = []
    for i in range(len(x)):
        net.zero_grad()
        CE(net(x[i: i + 1]), y[i: i + 1]).backward()
        rows.append(weight.grad.reshape(-1)[idx].clone())
    return torch.stack(rows)


def test_linear_block_gradients_match_autograd():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    idx = torch.tensor([0, 4, 7, 13, 29])
    G = block_gradients(net, CE, "0.weight", idx, x, y)
    assert G.shape == (9, 5)
    assert torch.allclose(G, _per_sample_reference(net, net[0].weight, idx, x, y), atol=1e-6)
    g, H = fisher_block(net, CE, "2.weight", torch.tensor([1, 2, 14]), x, y)
    G2 = _per_sample_reference(net, net[2].weight, torch.tensor([1, 2, 14]), x, y).double()
    assert torch.allclose(g, G2.mean(0), atol=1e-6)
    assert torch.allclose(H, G2.T @ G2 / 9, atol=1e-6)


def test_conv_block_gradients_match_autograd():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    x, y = torch.randn(5, 2, 6, 6), torch.randint(0, 3, (5,))
    idx = torch.tensor([1, 5, 20, 53])
    G = block_gradients(net, CE, "0.weight", idx, x, y, chunk_size=2)
    assert torch.allclose(G, _per_sample_reference(net, net[0].weight, idx, x, y), atol=1e-5)


def test_exact_hessian_block_matches_double_backward():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    idx = torch.tensor([0, 3, 11, 17])
    g, H = exact_hessian_block(net, CE, "0.weight", idx, x, y)
    w = net[0].weight
    (grad_w,) = torch.autograd.grad(CE(net(x), y), w, create_graph=True)
    flat = grad_w.reshape(-1)[idx]
    assert torch.allclose(g, flat.detach().double(), atol=1e-6)
    ref = torch.stack([torch.autograd.grad(flat[i], w, retain_graph=True)[0].reshape(-1)[idx]
                       for i in range(len(idx))]).double()
    assert torch.allclose(H, (ref + ref.T) / 2, atol=1e-5)
    # The model itself is left untouched (no hooks, no parameter change).
    assert not net[0]._forward_hooks


def test_linear_fast_path_equals_vmap_on_an_mlp_and_on_token_inputs():
    from pruning.zoo import Normalise, PatchViT

    torch.manual_seed(5)
    mlp = nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Dropout(0.3), nn.Linear(9, 4)).train()
    x, y = torch.randn(33, 7), torch.randint(0, 4, (33,))
    idx = torch.tensor([0, 5, 17, 40, 62])
    fast = block_gradients(mlp, CE, "0.weight", idx, x, y)
    slow = block_gradients(mlp, CE, "0.weight", idx, x, y, exact=True)
    assert torch.allclose(fast, slow, atol=1e-6)
    assert mlp.training and all(p.requires_grad for p in mlp.parameters())
    assert not mlp[0]._forward_hooks
    vit = PatchViT(Normalise(torch.zeros(784), torch.ones(784)), 8, 16, 10)
    xv, yv = torch.rand(12, 784), torch.randint(0, 10, (12,))
    for name in ("blocks.0.attn.q.weight", "blocks.1.fc1.weight", "embed.weight", "head.weight"):
        numel = dict(vit.named_parameters())[name].numel()
        idx = torch.randperm(numel, generator=torch.Generator().manual_seed(1))[:6]
        fast = block_gradients(vit, CE, name, idx, xv, yv)
        slow = block_gradients(vit, CE, name, idx, xv, yv, exact=True)
        assert torch.allclose(fast, slow, atol=1e-5), name


def test_linear_fast_path_sums_over_every_call_of_a_shared_layer():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))

    torch.manual_seed(6)
    net = Twice()
    x, y = torch.randn(11, 5), torch.randint(0, 3, (11,))
    idx = torch.tensor([0, 6, 12, 24])
    fast = block_gradients(net, CE, "a.weight", idx, x, y)
    assert torch.allclose(fast, block_gradients(net, CE, "a.weight", idx, x, y, exact=True),
                          atol=1e-6)
