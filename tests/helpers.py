"""Small helpers shared by the tests: brute-force enumeration of tiny problems and tiny
trained classifiers."""

import itertools

import numpy as np

from qcbo import Problem


def all_states(n: int) -> np.ndarray:
    """Every binary vector of length n, shape (2**n, n) int8."""
    return np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int8)


def brute_force(problem: Problem) -> tuple[float, np.ndarray]:
    """(min energy, feasible states) by enumerating every state."""
    X = all_states(problem.n)
    if problem.k is not None:
        X = X[X.sum(axis=1) == problem.k]
    return float(problem.energies(X).min()), X


def random_problem(n: int, k: int | None, seed: int, offset: float = 0.0) -> Problem:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return Problem((a + a.T) / 2.0, offset, k)


def blob_classifier(seed: int, *, classes: int, features: int, hidden: int, samples: int,
                    train: int, steps: int, spread: float):
    """A features-hidden-classes ReLU MLP trained by Adam (lr 0.01, ``steps`` full-batch
    steps) on the first ``train`` of ``samples`` Gaussian-blob points (centres scaled by
    ``spread``); returns (net, x (samples, features), y (samples,)). Deterministic in seed."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, features, generator=gen) * spread
    y = torch.randint(0, classes, (samples,), generator=gen)
    x = centres[y] + torch.randn(samples, features, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[:train]), y[:train]).backward()
        opt.step()
    return net, x, y
