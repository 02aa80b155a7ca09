"""`run_lm`: load a causal LM, prune it, measure perplexity and write a loadable model.

The library side of ``qcbo prune --task lm`` (no argparse, no global seeding, no terminal
output: progress goes to ``logging.getLogger("pruning.llm")``).

``out`` becomes, atomically (built in a temporary folder beside it, then renamed; a
failed run leaves nothing behind and an earlier ``out`` untouched):

- a Hugging Face model folder: ``config.json``, ``generation_config.json``,
  ``model.safetensors`` (float32, zeros at the pruned weights) and the tokenizer files,
  so that ``AutoModelForCausalLM.from_pretrained(out)`` loads the pruned model;
- ``report.json``: perplexity dense and pruned, wall time, peak RSS, protocol, per-layer
  density and what the method reported;
- ``sparsity.json``: per pruned Linear its shape, number of weights, non-zeros and density,
  with totals (in the spirit of llm-compressor's sparsity report);
- ``density.png``: per-layer density.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcbo.errors import InputError
from qcbo.files import atomic_folder, check_out_folder

from .prune import LMPruneConfig

__all__ = ["LMRunOptions", "DEFAULT_MODEL", "run_lm", "sparsity_report", "sparsity_table"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "builtin:smollm2-135m"


@dataclass(frozen=True)
class LMRunOptions:
    """How a run is measured: 512-token calibration and evaluation windows."""

    calibration_windows: int = 32
    eval_windows: int = 16
    window: int = 512

    def validate(self) -> None:
        for name, low in (("calibration_windows", 1), ("eval_windows", 1), ("window", 2)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")


def sparsity_report(model: Any) -> dict[str, Any]:
    """Per decoder Linear (by its module name in ``model``): shape, weights, non-zeros,
    density; plus totals over them."""
    from torch import nn

    from .layerwise import decoder_layers

    blocks = {id(b) for b in decoder_layers(model)}
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in blocks:
            inside.update(id(m) for m in module.modules())
    layers = {}
    total = nonzero = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) in inside:
            count = module.weight.numel()
            nz = int((module.weight != 0).sum())
            layers[name] = {"shape": list(module.weight.shape), "weights": count,
                            "nonzeros": nz, "density": nz / count}
            total += count
            nonzero += nz
    return {"layers": layers, "total": {"weights": total, "nonzeros": nonzero,
                                        "density": nonzero / total if total else 0.0}}


def sparsity_table(report: dict[str, Any]) -> str:
    """`sparsity_report` as an aligned text table."""
    rows = [(name, "x".join(map(str, r["shape"])), f"{r['nonzeros']}", f"{r['density']:.4f}")
            for name, r in report["layers"].items()]
    t = report["total"]
    rows.append(("total", "", f"{t['nonzeros']}", f"{t['density']:.4f}"))
    head = ("layer", "shape", "nonzeros", "density")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


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


def run_lm(model_spec: str, config: LMPruneConfig, out: Path | None, *,
           options: LMRunOptions = LMRunOptions(), export_blocks: str | os.PathLike | None = None,
           executor: Any = None) -> dict[str, Any]:
    """Prune the causal LM ``model_spec`` with ``config``; returns the report.

    ``model_spec``: ``builtin:smollm2-135m``, a local Hugging Face causal-LM folder or a
    ``.gguf`` file. ``out``: folder to write (see the module docstring), or None to write
    nothing. ``export_blocks``: block set receiving every iCBS block problem.
    ``executor``: a `backends.executor` executor solving iCBS blocks in parallel.
    Raises InputError for a bad configuration, model or output, before the model loads
    where it can. Randomness comes only from ``config.icbs.seed``.
    """
    try:
        config.validate()
        options.validate()
    except ValueError as exc:
        raise InputError(f"qcbo prune --task lm: {exc}") from None
    if config.method == "icbs":
        from backends import get_backend

        get_backend(config.icbs.backend)  # an unknown name fails here, before the model loads
    if out is not None:
        check_out_folder(Path(out))
    from .load import load_model, require_llm_packages, resolve_model

    require_llm_packages(("gensim",))
    resolve_model(model_spec)  # a missing or malformed --model fails before the work
    from .layerwise import PeakMemory
    from .perplexity import PerplexityProtocol, perplexity, token_windows
    from .prune import check_pattern, layer_densities, prune_lm
    from .text import wiki_text

    protocol = PerplexityProtocol(window=options.window, n_windows=options.eval_windows)
    started = time.perf_counter()
    with PeakMemory() as memory:
        model, tokenizer = load_model(model_spec)
        try:
            check_pattern(model, config)
        except ValueError as exc:
            raise InputError(f"--pattern: {exc}; choose another pattern") from None
        try:
            calibration = token_windows(tokenizer, wiki_text("calibration"), options.window,
                                        options.calibration_windows)
            evaluation = token_windows(tokenizer, wiki_text("evaluation"), protocol.window,
                                       protocol.n_windows)
        except ValueError as exc:
            raise InputError(f"--model {model_spec}: {exc}") from None
        usable = calibration.shape[0] - calibration.shape[0] % config.batch_size
        if usable:  # run_layerwise needs batches of one shape
            calibration = calibration[:usable]
        ppl_dense = perplexity(model, evaluation, protocol.batch_size)
        log.info("dense perplexity %.3f", ppl_dense)
        writer = None
        if export_blocks and config.method == "icbs":
            from qcbo.io import BlockSetWriter

            writer = BlockSetWriter(export_blocks, metadata={
                "source": "qcbo prune --task lm", "model": model_spec,
                "density": config.effective_density, "backend": config.icbs.backend,
                "seed": config.icbs.seed})
        # The writer's context drops the half-written block set if pruning fails.
        with writer if writer is not None else contextlib.nullcontext():
            report = prune_lm(model, calibration, config, writer=writer, executor=executor)
        ppl = perplexity(model, evaluation, protocol.batch_size)
    densities = layer_densities(model)
    sparsity = sparsity_report(model)
    report.update({
        "model": model_spec, "perplexity_dense": ppl_dense, "perplexity": ppl,
        "wall_time_s": time.perf_counter() - started, "peak_rss_bytes": memory.peak_bytes,
        "layer_density": densities, "total_density": sparsity["total"]["density"],
        "protocol": {"window": protocol.window, "n_windows": protocol.n_windows,
                     "bos": getattr(tokenizer, "bos_token_id", None) is not None,
                     "stride": protocol.window,
                     "calibration_windows": int(calibration.shape[0])},
    })
    if writer is not None:
        report["exported_blocks"] = {"path": str(export_blocks), "count": len(writer)}
    log.info("sparsity per Linear:\n%s", sparsity_table(sparsity))
    if out is not None:
        with atomic_folder(Path(out)) as folder:
            model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
            (folder / "report.json").write_text(json.dumps(report, indent=2))
            (folder / "sparsity.json").write_text(json.dumps(sparsity, indent=2))
            _plot(folder / "density.png", densities,
                  f"{config.method} density {config.effective_density:.2f}: ppl {ppl:.2f} "
                  f"(dense {ppl_dense:.2f})")
        report["out"] = str(out)
    return report
