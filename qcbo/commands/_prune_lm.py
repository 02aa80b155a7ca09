"""``qcbo prune --task lm``: parsed arguments -> `LMPruneConfig` -> `pruning.llm.run.run_lm`.

Only argument handling and terminal output live here; the work is the library function
`pruning.llm.run.run_lm` (see it for what ``--out`` receives). `pruning.llm` is imported
inside the functions, so ``qcbo --help`` imports neither torch nor transformers, and an
installation without `pruning` still runs every other command.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

__all__ = ["run", "config_from_args", "DEFAULT_SA_OPTIONS", "DEFAULT_OUT"]

#: Backend options when none are given for ``--backend sa``: light annealing.
DEFAULT_SA_OPTIONS = {"sweeps": 200, "restarts": 4}
DEFAULT_OUT = "prune-lm-out"


def config_from_args(args: argparse.Namespace):
    """(`LMPruneConfig`, `LMRunOptions`) from the ``qcbo prune`` namespace.

    Unset (None) arguments take the dataclasses' defaults, except the backend options of
    ``sa``: `DEFAULT_SA_OPTIONS`, with any ``-o`` keys overriding theirs. Raises InputError
    for an invalid combination.
    """
    from pruning.llm.baselines import parse_pattern
    from pruning.llm.icbs import LMICBSConfig
    from pruning.llm.prune import LMPruneConfig
    from pruning.llm.run import LMRunOptions

    try:
        pattern = parse_pattern(args.pattern)
    except ValueError as exc:
        raise InputError(f"--pattern: {exc}") from None
    if pattern is not None and args.density is not None and not math.isclose(
            args.density, pattern[0] / pattern[1]):
        raise InputError(f"--pattern {args.pattern} keeps {pattern[0]} of every {pattern[1]} "
                         f"weights (density {pattern[0] / pattern[1]:g}), not --density "
                         f"{args.density:g}; drop --density")
    icbs_fields: dict = {"objective": args.objective or "fisher", "refit": args.refit,
                         "init": args.init, "backend": args.backend,
                         "block_size": args.block_size, "steps_per_layer": args.steps_per_epoch,
                   "row_rounds": args.row_rounds,
                         "epochs": args.epochs, "fisher_samples": args.lm_fisher_samples,
                         "loss_check": not args.no_loss_check, "seed": args.seed,
                         "fisher_groups": args.fisher_groups, "blend": args.blend}
    options = dict(args.option or [])
    if args.backend == "sa":
        # -o overrides keys of the LM preset, keeping the others.
        options = {**DEFAULT_SA_OPTIONS, **options}
    icbs_fields["backend_options"] = options
    if args.method in (None, "icbs"):
        # The backend's options and size limit, before the model loads: an unset
        # --block-size is the LM default (32), or the backend's hint when smaller (e.g. a
        # simulator's qubit count).
        from backends import get_backend
        from pruning.icbs import resolve_block_size

        from .prune import _check_backend_fits

        backend = get_backend(args.backend or "sa")
        default = LMICBSConfig.__dataclass_fields__["block_size"].default
        size = resolve_block_size(backend, args.block_size, default, options=options)
        if args.block_size is None:
            size = min(size, default)
        if size < 2:
            raise InputError(f"--block-size must be >= 2, got {size}")
        icbs_fields["block_size"] = size
        _check_backend_fits(backend, size, options, None)
    icbs = LMICBSConfig(**{k: v for k, v in icbs_fields.items() if v is not None})
    prune_fields = {"method": args.method, "density": args.density, "pattern": pattern,
                    "targets": args.targets, "target_ridge": args.target_ridge}
    config = LMPruneConfig(icbs=icbs, **{k: v for k, v in prune_fields.items()
                                         if v is not None})
    run_options = LMRunOptions(**{k: v for k, v in (
        ("calibration_windows", args.calibration_windows),
        ("eval_windows", args.eval_windows)) if v is not None})
    try:
        config.validate()
        run_options.validate()
    except ValueError as exc:  # the library's field names, said as this command's flags
        text = str(exc)
        for field, flag in _LM_FLAGS.items():  # only where the field is the subject
            text = re.sub(rf"\b{field}\b(?= (?:must|applies|apply|and|>=|>))", flag, text)
        raise InputError(f"qcbo prune --task lm: {text}") from None
    return config, run_options


#: LM config fields in validation messages -> the flags that set them.
_LM_FLAGS = {"fisher_samples": "--lm-fisher-samples",
             "calibration_windows": "--calibration-windows",
             "eval_windows": "--eval-windows", "blend": "--blend",
             "target_ridge": "--target-ridge",
             "row_rounds": "--row-rounds", "block_size": "--block-size",
             "steps_per_layer": "--steps-per-epoch", "epochs": "--epochs", "seed": "--seed",
             "fisher_groups": "--fisher-groups", "targets": "--targets", "density": "--density",
             "refit": "--refit", "init": "--init", "objective": "--objective",
             "pattern": "--pattern", "method": "--method"}


@contextlib.contextmanager
def _progress() -> Iterator[None]:
    """Show pruning.llm's INFO lines (one per decoder block, the sparsity table) on stderr.

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
    from pruning.llm.load import resolve_model
    from pruning.llm.run import DEFAULT_MODEL, run_lm

    from ..files import check_out_folder, check_outside

    if args.model is not None:
        resolve_model(args.model)  # a missing or wrong --model, before anything else
    config, options = config_from_args(args)
    out = Path(args.out or DEFAULT_OUT)
    model = args.model if args.model and Path(args.model).exists() else None
    check_out_folder(out, inputs=(model,) if model else ())
    if args.export_blocks:
        check_outside(args.export_blocks, out, "--export-blocks")
    executor = None
    if config.method == "icbs" and args.executor != "serial":
        from backends.executor import make_executor

        executor = make_executor(args.executor, workers=args.workers,
                                 ray_address=args.ray_address)
    with _progress(), executor if executor is not None else contextlib.nullcontext():
        report = run_lm(args.model or DEFAULT_MODEL, config, out, options=options,
                        export_blocks=args.export_blocks, executor=executor)
    print(f"perplexity dense {report['perplexity_dense']:.3f} -> pruned "
          f"{report['perplexity']:.3f} at density {report['total_density']:.3f}; wall "
          f"{report['wall_time_s']:.0f} s, peak RSS {report['peak_rss_bytes'] / 2**30:.2f} GiB; "
          f"wrote {out} (a Hugging Face model folder, report.json, sparsity.json)")
    return 0
