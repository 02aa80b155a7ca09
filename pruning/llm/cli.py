"""``qcbo prune --task lm``: load a causal LM, prune it, measure perplexity, write results.

Writes to ``--out``: ``report.json`` (perplexity dense and pruned, wall time, peak RSS,
per-layer density), ``pruned_linears.safetensors`` (the pruned Linear weights of the
decoder blocks, by their model names) and ``density.png`` (per-layer density).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from qcbo.errors import InputError

__all__ = ["run", "config_from_args", "DEFAULT_CALIBRATION_WINDOWS", "DEFAULT_WINDOW"]

log = logging.getLogger(__name__)

#: Calibration: this many non-overlapping 512-token windows of the calibration text.
DEFAULT_CALIBRATION_WINDOWS = 32
DEFAULT_WINDOW = 512
#: Default backend options: light annealing (blocks of ~32 weights).
DEFAULT_SA_OPTIONS = {"sweeps": 200, "restarts": 4}


def config_from_args(args: argparse.Namespace) -> Any:
    """An `LMPruneConfig` from the ``qcbo prune`` namespace (optional fields via getattr)."""
    from .baselines import parse_pattern
    from .icbs import LMICBSConfig
    from .prune import LMPruneConfig

    try:
        pattern = parse_pattern(getattr(args, "pattern", None))
    except ValueError as exc:
        raise InputError(f"--pattern: {exc}") from None
    density = getattr(args, "density", None)
    if density is None:
        density = 0.5
    backend = getattr(args, "backend", "sa") or "sa"
    options = dict(getattr(args, "option", None) or [])
    if backend == "sa" and not options:
        options = dict(DEFAULT_SA_OPTIONS)
    epochs = getattr(args, "epochs", None) or 1
    steps = getattr(args, "steps_per_epoch", None)
    icbs = LMICBSConfig(
        objective=getattr(args, "objective", "reconstruction") or "reconstruction",
        refit=bool(getattr(args, "refit", False)),
        init=getattr(args, "init", "wanda") or "wanda",
        backend=backend,
        backend_options=options,
        block_size=getattr(args, "block_size", None) or 32,
        steps_per_layer=64 if steps is None else int(steps),
        epochs=int(epochs),
        fisher_samples=int(getattr(args, "lm_fisher_samples", 8)),
        loss_check=not getattr(args, "no_loss_check", False),
        seed=int(getattr(args, "seed", 0) or 0),
    )
    config = LMPruneConfig(method=getattr(args, "method", "icbs"), density=float(density),
                           pattern=pattern, icbs=icbs)
    try:
        config.validate()
    except ValueError as exc:
        raise InputError(f"qcbo prune --task lm: {exc}") from None
    if config.method == "icbs":
        from backends import get_backend

        get_backend(backend)  # an unknown name fails here, before the model loads
    return config


def _plot(path: Path, densities: dict[str, float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.bar(range(len(densities)), list(densities.values()), width=1.0)
    ax.set_xlabel("Linear layer (decoder order)")
    ax.set_ylabel("density (fraction kept)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def _progress():
    """Show pruning.llm's INFO lines (one per decoder block, Fisher passes) on stderr.

    Nothing changes when logging already shows INFO (``qcbo --debug``).
    """
    package = logging.getLogger("pruning.llm")
    if package.getEffectiveLevel() <= logging.INFO:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    level, propagate = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        package.propagate = propagate


def run(args: argparse.Namespace) -> int:
    """Entry point of ``qcbo prune --task lm``; returns the exit code."""
    config = config_from_args(args)
    with _progress():
        return _run(args, config)


def _run(args: argparse.Namespace, config: Any) -> int:
    from .load import load_model, require_llm_packages

    require_llm_packages(("gensim",))
    import torch
    from safetensors.torch import save_file

    from .layerwise import PeakMemory, decoder_layers, prunable_linears
    from .perplexity import PerplexityProtocol, perplexity, token_windows
    from .prune import layer_densities, prune_lm
    from .text import wiki_text

    model_spec = getattr(args, "model", None) or "builtin:smollm2-135m"
    if model_spec.startswith("builtin:") and model_spec != "builtin:smollm2-135m":
        raise InputError(f"--model {model_spec}: for --task lm use builtin:smollm2-135m, a "
                         "Hugging Face folder or a .gguf file")
    out = Path(getattr(args, "out", None) or "prune-lm-out")
    protocol = PerplexityProtocol(n_windows=int(getattr(args, "eval_windows", 16)))
    torch.manual_seed(int(getattr(args, "seed", 0) or 0))
    started = time.perf_counter()
    with PeakMemory() as memory:
        model, tokenizer = load_model(model_spec)
        calibration = token_windows(tokenizer, wiki_text("calibration"), DEFAULT_WINDOW,
                                    int(getattr(args, "calibration_windows",
                                                DEFAULT_CALIBRATION_WINDOWS)))
        evaluation = token_windows(tokenizer, wiki_text("evaluation"), protocol.window,
                                   protocol.n_windows)
        ppl_dense = perplexity(model, evaluation, protocol.batch_size)
        log.info("dense perplexity %.3f", ppl_dense)
        writer = None
        export = getattr(args, "export_blocks", None)
        if export and config.method == "icbs":
            from qcbo.io import BlockSetWriter

            writer = BlockSetWriter(export)
        # The writer's context drops the half-written block set if pruning fails.
        executor = None
        if config.method == "icbs" and getattr(args, "executor", "serial") != "serial":
            from backends.executor import make_executor

            executor = make_executor(args.executor, workers=getattr(args, "workers", None),
                                     ray_address=getattr(args, "ray_address", None))
        with writer if writer is not None else contextlib.nullcontext(), \
                executor if executor is not None else contextlib.nullcontext():
            report = prune_lm(model, calibration, config, writer=writer, executor=executor)
        ppl = perplexity(model, evaluation, protocol.batch_size)
    densities = layer_densities(model)
    report.update({
        "model": model_spec, "perplexity_dense": ppl_dense, "perplexity": ppl,
        "wall_time_s": time.perf_counter() - started, "peak_rss_bytes": memory.peak_bytes,
        "layer_density": densities,
        "protocol": {"window": protocol.window, "n_windows": protocol.n_windows,
                     "bos": True, "stride": protocol.window,
                     "calibration_windows": int(calibration.shape[0])},
    })
    tensors = {}
    for i, block in enumerate(decoder_layers(model)):
        for name, lin in prunable_linears(block).items():
            tensors[f"layers.{i}.{name}.weight"] = lin.weight.detach().contiguous()
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no folder
    save_file(tensors, str(out / "pruned_linears.safetensors"))
    with open(out / "report.json", "w") as fh:
        json.dump(report, fh, indent=2)
    _plot(out / "density.png", densities,
          f"{config.method} density {config.effective_density:.2f}: ppl {ppl:.2f} "
          f"(dense {ppl_dense:.2f})")
    print(f"perplexity dense {ppl_dense:.3f} -> pruned {ppl:.3f}; wall {report['wall_time_s']:.0f} s, "
          f"peak RSS {memory.peak_bytes / 2**30:.2f} GiB; wrote {out}")
    return 0
