"""Built-in classifiers: ReLU MLPs trained once with a fixed seed and cached.

A builtin model lives in ``$QCBO_CACHE/models`` (default ``~/.cache/qcbo/models``) as
``NAME.safetensors`` plus ``NAME.json`` (architecture, seed, test accuracy). The first
use trains it (seconds for digits, a minute or two for Fashion-MNIST on 2 CPU cores);
later uses load it. Files are written atomically, so concurrent first uses are safe.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from qcbo.errors import InputError

from .data import ClassificationData, load_dataset, make_loader

__all__ = [
    "BuiltinSpec",
    "BUILTIN_MODELS",
    "LoadedModel",
    "mlp",
    "cache_dir",
    "evaluate",
    "train_classifier",
    "load_builtin",
    "load_model",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinSpec:
    """A built-in classifier: MLP layer sizes, its dataset and how it is trained."""

    name: str
    dataset: str
    sizes: tuple[int, ...]
    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


BUILTIN_MODELS: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in [
        BuiltinSpec("mlp-fashion-mnist", "fashion-mnist", (784, 512, 512, 10), epochs=8),
        BuiltinSpec("mlp-digits", "digits", (64, 128, 128, 10), epochs=60, batch_size=64),
    ]
}


@dataclass
class LoadedModel:
    """A model ready to prune, its data and the dense test accuracy recorded at training."""

    name: str
    model: nn.Module
    data: ClassificationData
    test_accuracy: float | None


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (no activation at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cache_dir() -> Path:
    """``$QCBO_CACHE`` or ``~/.cache/qcbo``."""
    return Path(os.environ.get("QCBO_CACHE") or Path.home() / ".cache" / "qcbo")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    batch_size: int = 4096,
) -> tuple[float, float]:
    """(mean loss, accuracy in [0, 1]) of a classifier on inputs x (N, ...) and labels y (N,)."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start: start + batch_size], y[start: start + batch_size]
        out = model(xb)
        total_loss += float(loss_fn(out, yb)) * len(xb)
        correct += int((out.argmax(dim=-1) == yb).sum())
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


def train_classifier(
    model: nn.Module,
    data: ClassificationData,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> float:
    """Train with Adam and cross-entropy on the train split; returns the test accuracy."""
    torch.manual_seed(seed)  # only parameter init below; a local Generator drives batches
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loader = make_loader(data.x_train, data.y_train, batch_size=batch_size, shuffle=True, seed=seed)
    iterator = range(epochs)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="training", unit="epoch", leave=False)
    model.train()
    for _ in iterator:
        for xb, yb in loader:
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimiser.step()
    model.eval()
    return evaluate(model, data.x_test, data.y_test)[1]


def save_cached(state: dict[str, torch.Tensor], info: dict, weights: Path) -> None:
    """``weights`` (.safetensors) and its ``.json`` info beside it, each written atomically
    (`qcbo.io.atomic_write`), so concurrent first uses are safe."""
    from safetensors.torch import save

    from qcbo.io import atomic_write

    weights.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(weights) as handle:
        handle.write(save(state))
    with atomic_write(weights.with_suffix(".json"), "w") as handle:
        handle.write(json.dumps(info, indent=2))


def load_builtin(name: str, *, progress: bool = False) -> LoadedModel:
    """A built-in model by name (without the ``builtin:`` prefix), trained on first use."""
    from safetensors.torch import load_file

    spec = BUILTIN_MODELS.get(name)
    if spec is None:
        raise InputError(
            f"unknown builtin model {name!r}; choose one of: "
            + ", ".join(f"builtin:{n}" for n in BUILTIN_MODELS)
        )
    data = load_dataset(spec.dataset)
    weights = cache_dir() / "models" / f"{name}.safetensors"
    info_path = weights.with_suffix(".json")
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        model = mlp(spec.sizes)
    if weights.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if tuple(info.get("sizes", ())) == spec.sizes and info.get("seed") == spec.seed:
            model.load_state_dict(load_file(str(weights)))
            model.eval()
            return LoadedModel(name, model, data, info.get("test_accuracy"))
    log.info("training builtin model %s on %s (cached in %s)", name, spec.dataset, weights)
    start = time.perf_counter()
    with torch.random.fork_rng():
        acc = train_classifier(model, data, epochs=spec.epochs, batch_size=spec.batch_size,
                               lr=spec.lr, seed=spec.seed, progress=progress)
    info = {"name": name, "dataset": spec.dataset, "sizes": list(spec.sizes), "seed": spec.seed,
            "epochs": spec.epochs, "test_accuracy": acc,
            "train_seconds": time.perf_counter() - start}
    save_cached({k: v.detach().contiguous() for k, v in model.state_dict().items()}, info, weights)
    return LoadedModel(name, model, data, acc)


def _mlp_from_state(state: dict[str, torch.Tensor], source: str) -> nn.Sequential:
    weights = sorted(
        (k for k in state if k.endswith(".weight")), key=lambda k: int(k.split(".")[0])
        if k.split(".")[0].isdigit() else -1
    )
    if not weights or any(state[k].ndim != 2 for k in weights):
        raise InputError(f"{source}: not the state dict of an MLP (need 2-D '<i>.weight' tensors)")
    sizes = [int(state[weights[0]].shape[1])] + [int(state[k].shape[0]) for k in weights]
    model = mlp(sizes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{source}: state dict does not fit an MLP of sizes {sizes} ({first})") from None
    return model


#: The torch.nn classes a full-module file (``torch.save(model)``) may be built from.
#: It is read with ``weights_only=True`` and exactly these classes allowed, so no code
#: from the file runs; a module of any other class is refused in one line.
SAFE_MODULE_CLASSES: tuple[type, ...] = (
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Linear, nn.Conv1d, nn.Conv2d,
    nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Softmax,
    nn.LogSoftmax, nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout2d,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.LayerNorm, nn.GroupNorm,
)


def _read_torch_file(path: Path) -> Any:
    import re

    try:
        with torch.serialization.safe_globals(list(SAFE_MODULE_CLASSES)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input here
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise InputError(
                f"{path}: the file needs {found.group(1)}, which qcbo will not load (that would "
                "run code from the file); save model.state_dict() instead, or build the model "
                "from torch.nn layers only") from None
        raise InputError(f"{path}: not a PyTorch model file torch.load can read safely "
                         f"({type(exc).__name__}); give a .safetensors or .pt state dict, "
                         "or a torch.save'd module of torch.nn layers") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a .pt file read with ``weights_only=True``
    (no code runs); any reader failure is an InputError."""
    state = read_model_file(path)
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict (name -> tensor)")
    return state


def read_model_file(path: Path) -> dict[str, torch.Tensor] | nn.Module:
    """A state dict (.safetensors or .pt) or a full module (.pt of `SAFE_MODULE_CLASSES`)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: cannot read model file ({type(exc).__name__}: {exc})") from None
    obj = _read_torch_file(path)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise InputError(f"{path}: expected a state dict (name -> tensor) or a torch.nn module, "
                     f"got {type(obj).__name__}")


def _dataset_of(model: nn.Module, source: str) -> str:
    """The dataset a module takes: the first of Fashion-MNIST (784 inputs) and digits (64)
    on which a forward pass gives 10 class scores."""
    for width, name in ((784, "fashion-mnist"), (64, "digits")):
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, width))
        except Exception:  # noqa: BLE001 - a shape mismatch: try the next dataset
            continue
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 10):
            return name
    raise InputError(f"{source}: the module takes neither 784 (Fashion-MNIST) nor 64 (digits) "
                     "flat inputs to 10 class scores")


def load_model(spec: str, *, progress: bool = False) -> LoadedModel:
    """``builtin:NAME``, ``zoo:NAME`` (`pruning.zoo`), a path to an MLP state dict
    (.safetensors or .pt), or a full module saved with ``torch.save(model)`` whose classes
    are all in `SAFE_MODULE_CLASSES` (loaded without running code from the file).

    For a path the architecture is read off the weight shapes (``0.weight``,
    ``2.weight``, ... as `mlp` names them) and the dataset off the input width:
    784 -> Fashion-MNIST, 64 -> digits. A pruned model written by ``qcbo prune`` loads
    this way, so it can be pruned further.
    """
    if spec.startswith("builtin:"):
        return load_builtin(spec[len("builtin:"):], progress=progress)
    if spec.startswith("zoo:"):
        from .zoo import load_zoo

        return load_zoo(spec[len("zoo:"):])
    path = Path(spec)
    if path.is_dir():
        raise InputError(f"{spec}: is a folder; classifiers take a model file (.safetensors "
                         "or .pt); a Hugging Face model folder is for --task lm")
    if path.is_file() and path.suffix not in (".safetensors", ".pt", ".pth", ".bin"):
        raise InputError(f"{spec}: unsupported model file type {path.suffix or '(none)'!r}; "
                         "give a .safetensors or .pt file")
    if not path.is_file():
        raise InputError(
            f"{spec}: no such model file; use builtin:mlp-digits, builtin:mlp-fashion-mnist, "
            "zoo:NAME (see `python -m pruning.zoo`), a path to an MLP state dict "
            "(.safetensors or .pt) or a torch.save'd module of torch.nn layers (.pt)"
        )
    loaded = read_model_file(path)
    if isinstance(loaded, nn.Module):
        model = loaded
        if not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules()):
            raise InputError(f"{spec}: the module has no nn.Linear or nn.Conv2d weights to prune")
        model.eval()
        dataset = _dataset_of(model, spec)
    else:
        model = _mlp_from_state(loaded, spec)
        width = model[0].in_features
        dataset = {784: "fashion-mnist", 64: "digits"}.get(width)
        if dataset is None:
            raise InputError(f"{spec}: input width {width} matches no known dataset (784 or 64)")
        outputs = model[-1].out_features
        if outputs != 10:
            raise InputError(f"{spec}: the MLP has {outputs} outputs; {dataset} has 10 classes")
        if not all(torch.isfinite(t).all() for t in model.state_dict().values()):
            raise InputError(f"{spec}: the model has NaN or inf weights")
    model.eval()
    return LoadedModel(path.stem, model, load_dataset(dataset), None)
