"""A zoo of classifiers the project builds itself, to choose iCBS defaults on more than
one model (worst case, not mean).

Each `ZooSpec` fixes an architecture, a dataset, an input normalisation (inside the
model, so every model takes the dataset's [0, 1] inputs), an optimiser and a seed.
`load_zoo(name)` trains the model on first use (one thread, seeded, so the build is
deterministic on one machine) and caches it in ``$QCBO_CACHE/zoo`` as
``NAME.safetensors`` + ``NAME.json``; nothing is committed. `python -m pruning.zoo`
builds them all and prints their dense test accuracy.

Replicates: ``NAME.rK`` (K = 1, 2, ...) is NAME's recipe on split K of its dataset (for the
digits a different 300 test, 300 validation and 1,197 training images; for Fashion-MNIST
different validation images, the test set being fixed) with training seed
``seed + 1000 K``: an independent dense model and, on the digits, an independent test
split, for conclusions that one 300-image test set cannot carry. ``NAME.r0`` is NAME.

Shapes: inputs (B, F) float32 in [0, 1] (F = 64 digits, 784 Fashion-MNIST), outputs
(B, C) class scores. Every weight of an nn.Linear / nn.Conv2d is prunable (the
attention model's q/k/v/out projections are plain nn.Linear for that reason).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import nn

from qcbo.errors import InputError

from .data import ClassificationData, load_dataset, make_loader
from .models import LoadedModel, cache_dir, evaluate, read_state_dict, save_cached

__all__ = ["ZooSpec", "ZOO", "TUNING", "HELD_OUT", "build_model", "load_zoo", "zoo_spec"]

log = logging.getLogger(__name__)

Norm = Literal["unit", "pm1", "standard"]


@dataclass(frozen=True)
class ZooSpec:
    """How one zoo model is built and trained."""

    name: str
    dataset: Literal["digits", "fashion-mnist"]
    arch: Literal["mlp", "cnn", "vit"]
    hidden: tuple[int, ...] = ()
    norm: Norm = "unit"
    bias: bool = True
    dropout: float = 0.0
    optimiser: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    split_seed: int = 0


ZOO: dict[str, ZooSpec] = {s.name: s for s in [
    ZooSpec("digits-mlp", "digits", "mlp", (128, 128), epochs=60, batch_size=64),
    ZooSpec("digits-mlp-deep-sgd", "digits", "mlp", (256, 128, 64), norm="standard", bias=False,
            optimiser="sgd", lr=0.05, weight_decay=1e-4, epochs=80, batch_size=32, seed=1),
    ZooSpec("fmnist-mlp-pm1", "fashion-mnist", "mlp", (512, 512), norm="pm1", epochs=8, seed=2),
    ZooSpec("fmnist-lenet300-dropout", "fashion-mnist", "mlp", (300, 100), norm="standard",
            dropout=0.2, optimiser="sgd", lr=0.05, epochs=10, seed=3),
    ZooSpec("fmnist-mlp-nobias-wd", "fashion-mnist", "mlp", (256, 256, 256), bias=False,
            optimiser="adamw", lr=2e-3, weight_decay=5e-2, epochs=6, seed=4),
    ZooSpec("fmnist-cnn", "fashion-mnist", "cnn", (16, 32, 64), optimiser="adam", lr=2e-3,
            epochs=3, seed=5),
    ZooSpec("fmnist-vit", "fashion-mnist", "vit", (64, 128), norm="pm1", optimiser="adamw",
            lr=2e-3, weight_decay=1e-2, epochs=6, seed=6),
]}

#: Models the defaults were tuned on, and the ones kept out of tuning (checked after).
TUNING: tuple[str, ...] = ("digits-mlp", "fmnist-lenet300-dropout", "fmnist-cnn")
HELD_OUT: tuple[str, ...] = tuple(n for n in ZOO if n not in TUNING)


class Normalise(nn.Module):
    """Fixed affine input map x -> (x - mean) / std (buffers, never pruned)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


#: Training seeds of replicate K are ``seed + REPLICATE_SEED_STRIDE * K``.
REPLICATE_SEED_STRIDE = 1000


def zoo_spec(name: str) -> ZooSpec:
    """The spec of a zoo model or replicate (``NAME`` or ``NAME.rK``, K >= 0); InputError
    naming the choices otherwise."""
    base, dot, rest = name.rpartition(".r")
    if dot and base in ZOO and rest.isdigit() and (rest == "0" or not rest.startswith("0")):
        k = int(rest)
        spec = ZOO[base]
        if k == 0:
            return spec
        return replace(spec, name=name, seed=spec.seed + REPLICATE_SEED_STRIDE * k,
                       split_seed=k)
    spec = ZOO.get(name)
    if spec is None:
        raise InputError(f"unknown zoo model {name!r}; choose one of: "
                         + ", ".join(f"zoo:{n}" for n in ZOO)
                         + " (or a replicate NAME.rK, K = 1, 2, ...)")
    return spec


def _spec_record(spec: ZooSpec) -> dict:
    """The spec as recorded in a cache's JSON (``split_seed`` 0 left out, so models cached
    before replicates existed stay valid)."""
    record = json.loads(json.dumps(asdict(spec)))
    if record.get("split_seed") == 0:
        del record["split_seed"]
    return record


def _normaliser(norm: Norm, data: ClassificationData) -> Normalise:
    features = data.num_features
    if norm == "unit":
        return Normalise(torch.zeros(features), torch.ones(features))
    if norm == "pm1":
        return Normalise(torch.full((features,), 0.5), torch.full((features,), 0.5))
    mean = data.x_train.mean(dim=0)
    return Normalise(mean, data.x_train.std(dim=0).clamp_min(1e-2))


class Attention(nn.Module):
    """Single-head self-attention with plain Linear projections; (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-1, -2) * self.scale
        return self.out(torch.softmax(scores, dim=-1) @ self.v(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_residual(self.attention_residual(x))

    def attention_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.ln1(x))

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.ln2(x))))


class PatchViT(nn.Module):
    """28x28 images (B, 784) -> 16 patches of 7x7 -> Linear embedding + position ->
    two transformer blocks -> mean over tokens -> Linear head (B, classes)."""

    def __init__(self, norm: Normalise, dim: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.norm = norm
        self.embed = nn.Linear(49, dim)
        self.position = nn.Parameter(torch.zeros(16, dim))
        self.blocks = nn.Sequential(Block(dim, hidden), Block(dim, hidden))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, stage in self.forward_stages():
            x = stage(x)
        return x

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).reshape(-1, 4, 7, 4, 7).permute(0, 1, 3, 2, 4).reshape(-1, 16, 49)
        return self.embed(x) + self.position

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(x).mean(dim=1))

    def forward_stages(self) -> list[tuple[tuple[str, ...], Callable[[torch.Tensor], torch.Tensor]]]:
        """The forward as a chain of (parameter-name prefixes used, callable): patch
        embedding, the attention and the MLP half of each transformer block (so a step on
        an MLP weight re-runs the loss from that half), the head (see
        `pruning.objectives.CalibrationCache`)."""
        halves = []
        for i, block in enumerate(self.blocks):
            halves += [((f"blocks.{i}.ln1", f"blocks.{i}.attn"), block.attention_residual),
                       ((f"blocks.{i}.ln2", f"blocks.{i}.fc1", f"blocks.{i}.fc2"),
                        block.mlp_residual)]
        return [(("norm", "embed", "position"), self._embed), *halves,
                (("ln", "head"), self._head)]


def build_model(spec: ZooSpec, data: ClassificationData) -> nn.Module:
    """The untrained model of ``spec`` (parameters drawn from torch's global RNG)."""
    norm = _normaliser(spec.norm, data)
    classes = data.num_classes
    if spec.arch == "mlp":
        layers: list[nn.Module] = [norm]
        sizes = (data.num_features, *spec.hidden)
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b, bias=spec.bias), nn.ReLU()]
            if spec.dropout:
                layers.append(nn.Dropout(spec.dropout))
        layers.append(nn.Linear(sizes[-1], classes, bias=spec.bias))
        return nn.Sequential(*layers)
    if spec.arch == "cnn":
        if data.num_features != 784:
            raise InputError(f"zoo {spec.name}: the CNN needs 28x28 images")
        c1, c2, fc = spec.hidden
        return nn.Sequential(
            norm, nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 49, fc), nn.ReLU(), nn.Linear(fc, classes))
    if spec.arch == "vit":
        if data.num_features != 784:
            raise InputError(f"zoo {spec.name}: the attention model needs 28x28 images")
        return PatchViT(norm, spec.hidden[0], spec.hidden[1], classes)
    raise InputError(f"zoo {spec.name}: unknown architecture {spec.arch!r}")


def _train(model: nn.Module, spec: ZooSpec, data: ClassificationData) -> None:
    params = model.parameters()
    if spec.optimiser == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=0.9,
                                                     weight_decay=spec.weight_decay)
    elif spec.optimiser == "adamw":
        opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    loader = make_loader(data.x_train, data.y_train, batch_size=spec.batch_size, shuffle=True,
                         seed=spec.seed)
    steps = spec.epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=steps)
    model.train()
    for epoch in range(spec.epochs):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
        log.info("zoo %s: epoch %d/%d", spec.name, epoch + 1, spec.epochs)
    model.eval()


def load_zoo(name: str) -> LoadedModel:
    """A zoo model by name (without ``zoo:``), trained and cached on first use.

    ``NAME@PATH`` builds the architecture of NAME and loads the state dict at PATH
    (.safetensors, or .pt read with ``weights_only=True``), e.g. a model that
    ``qcbo prune --model zoo:NAME`` wrote, to prune it further.
    """
    from safetensors.torch import load_file

    name, _, path = name.partition("@")
    if path:
        return _load_state(name, Path(path))
    spec = zoo_spec(name)
    name = spec.name
    data = load_dataset(spec.dataset, spec.split_seed)
    weights = cache_dir() / "zoo" / f"{name}.safetensors"
    info_path = weights.with_suffix(".json")
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        model = build_model(spec, data)
    if weights.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("spec") == _spec_record(spec):
            model.load_state_dict(load_file(str(weights)))
            model.eval()
            return LoadedModel(name, model, data, info.get("test_accuracy"))
    log.info("training zoo model %s (cached in %s)", name, weights)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            _train(model, spec, data)
    finally:
        torch.set_num_threads(threads)
    acc = evaluate(model, data.x_test, data.y_test)[1]
    info = {"name": name, "spec": _spec_record(spec), "test_accuracy": acc,
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": time.perf_counter() - start}
    save_cached({k: v.detach().contiguous() for k, v in model.state_dict().items()}, info, weights)
    return LoadedModel(name, model, data, acc)


def _load_state(name: str, path: Path) -> LoadedModel:
    spec = zoo_spec(name)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    state = read_state_dict(path)
    data = load_dataset(spec.dataset, spec.split_seed)
    model = build_model(spec, data)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a state dict of zoo:{name} ({first})") from None
    model.eval()
    return LoadedModel(f"{name}@{path.stem}", model, data, None)


def main(argv: list[str] | None = None) -> int:
    """Build (train and cache) every zoo model, or the named ones; print a table."""
    import sys

    names = (argv if argv is not None else sys.argv[1:]) or list(ZOO)
    for name in names:
        start = time.perf_counter()
        loaded = load_zoo(name)
        params = sum(p.numel() for p in loaded.model.parameters())
        print(f"{name:28s} {zoo_spec(name).arch:4s} {params:8d} params  dense test accuracy "
              f"{100 * (loaded.test_accuracy or 0):.2f} %  ({time.perf_counter() - start:.1f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
