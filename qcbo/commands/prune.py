"""`qcbo prune`: prune a classifier (or, with --task lm, a language model) with iCBS.

With no arguments it prunes the built-in digits MLP (trained on first use, cached) to
density 0.2 with the `sa` backend and writes runs/prune-mlp-digits/.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

NAME = "prune"
HELP = "prune a network with iCBS (any backend) or a one-shot baseline; default: built-in digits MLP"

_METHODS = ["icbs", "magnitude", "magnitude-row", "magnitude-global", "wanda", "gradient",
            "chita", "chita++", "sparsegpt", "alps"]
_INITS = ["auto", "magnitude", "magnitude-row", "magnitude-global", "wanda", "gradient", "chita",
          "chita++", "sparsegpt", "alps"]


def _density(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"density must be in (0, 1], got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_executor_arguments, non_negative_int, positive_float
    from .solve import parse_option

    parser.add_argument("--task", choices=["classifier", "lm"], default="classifier",
                        help="classifier (built-in MLPs; default) or lm (language models)")
    parser.add_argument("--model", default=None,
                        help="builtin:mlp-digits (default), builtin:mlp-fashion-mnist, zoo:NAME or "
                             "zoo:NAME@STATE.safetensors "
                             "(`python -m pruning.zoo` lists and builds them), or a path to an MLP "
                             "state dict (.safetensors/.pt/.pth/.bin) or a torch.save'd module "
                             "of torch.nn layers; --task lm: builtin:smollm2-135m "
                             "(default), a local Hugging Face causal-LM folder or a .gguf file")
    parser.add_argument("--density", type=_density, default=None,
                        help="fraction of weights kept, in (0, 1] (default: 0.1 "
                             "builtin:mlp-fashion-mnist, 0.2 other classifiers, 0.5 --task lm)")
    parser.add_argument("--method", choices=_METHODS, default="icbs",
                        help="icbs (default) or a one-shot method. Classifiers: "
                             "magnitude[-row|-global], wanda, gradient, chita or chita++. "
                             "--task lm: magnitude, wanda, sparsegpt or alps")
    parser.add_argument("--init", choices=_INITS, default=None,
                        help="start of iCBS. Classifiers: auto (default: every one-shot mask "
                             "and CHITA++ scored on the calibration set, lowest loss wins), one "
                             "of the masks, or chita / chita++ (its mask and updated weights). "
                             "--task lm: wanda (default), magnitude, or, with --objective "
                             "reconstruction, sparsegpt or alps (their mask and re-fitted "
                             "weights)")
    parser.add_argument("--backend", default="sa",
                        help="block solver, any of `qcbo backends` (default sa)")
    parser.add_argument("--option", "-o", type=parse_option, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="backend option, repeatable (e.g. -o restarts=4); each overrides "
                             "that key of prune's own settings and keeps the rest "
                             "(classifiers: the backend's iCBS preset, e.g. sa sweeps=100 "
                             "restarts=2, tabu iterations=4000; --task lm: sa sweeps=200 "
                             "restarts=4; `qcbo backends` lists every option)")
    parser.add_argument("--epochs", type=non_negative_int, default=None,
                        help="iCBS epochs, validation after each (default 4; --task lm 1)")
    parser.add_argument("--steps-per-epoch", type=non_negative_int, default=None,
                        help="blocks solved per epoch (default 25 builtin:mlp-digits, 100 "
                             "other classifiers; --task lm: per Linear, 64)")
    parser.add_argument("--block-size", type=int, default=None, metavar="N",
                        help="variables per block (default: the backend's preferred size if it "
                             "has one: exact 16, cpsat 64, qaoa-subspace 20, qaoa-qiskit 14, "
                             "braket-local 10, QAOA with -o sub_block 1024; else 256 "
                             "builtin:mlp-digits, 1024 other classifiers; --task lm 32 or the "
                             "backend's size if smaller). Refused above the backend's limit "
                             "(`qcbo backends`)")
    parser.add_argument("--block-k", type=int, default=None, metavar="K",
                        help="classifiers: pruned weights aimed for per block (default N/2)")
    parser.add_argument("--fisher-samples", type=int, default=None,
                        help="classifiers: samples per step for the gradient and Fisher blocks "
                             "(default 512; --task lm: --lm-fisher-samples)")
    parser.add_argument("--hessian", choices=["fisher", "exact"], default=None,
                        help="classifiers: Hessian block, empirical Fisher (default) or exact "
                             "(small models)")
    parser.add_argument("--solver-time-limit", type=positive_float, default=None, metavar="S",
                        help="classifiers: time limit per block solve in seconds (default: "
                             "none)")
    parser.add_argument("--layers", nargs="+", default=None, metavar="PATTERN",
                        help="classifiers: prune only weights whose names match these fnmatch "
                             "patterns")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder, written whole at the end; an earlier run's folder "
                             "is replaced, a folder of other files refused (default "
                             "runs/prune-<model>; --task lm prune-lm-out)")
    parser.add_argument("--export-blocks", default=None, metavar="PATH",
                        help="write every solved block problem, with provenance, as a block set")
    parser.add_argument("--group-size", type=int, default=None, metavar="G",
                        help="classifiers: blocks posed from one batch, solved together (in "
                             "parallel with --executor) and checked together (default 1)")
    parser.add_argument("--calibration-samples", type=int, default=None, metavar="N",
                        help="classifiers: training samples held apart to choose the start and "
                             "check every step on the real loss (default 4096, at most a quarter "
                             "of the data)")
    parser.add_argument("--loss-z", type=float, default=None, metavar="Z",
                        help="classifiers: keep a group only when the calibration loss falls by "
                             "more than Z standard errors of its paired per-sample change "
                             "(a noise-aware check; default 0)")
    parser.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                        help="re-fit the surviving weights (iCBS alone keeps them at their "
                             "dense values): classifiers by damped Gauss-Newton steps on the "
                             "start and after every epoch, each kept only when the calibration "
                             "loss falls beyond its noise; --task lm (--objective "
                             "reconstruction) by least squares per row (default: classifiers "
                             "on when the loss check has a calibration set of >= 1024 samples, "
                             "lm off)")
    parser.add_argument("--refit-rounds", type=int, default=None, metavar="R",
                        help="classifiers: re-fit rounds each time, from fresh samples "
                             "(default 3)")
    parser.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=None,
                        help="classifiers: with the re-fit, also offer the layer-by-layer "
                             "least-squares reconstruction of the dense model's outputs on the "
                             "kept weights, kept only when the calibration loss falls beyond "
                             "its noise (default: on)")
    add_executor_arguments(parser, "a group's blocks (--task lm: a decoder block's Linears)")
    parser.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=None,
                        help="classifiers: end with the mask and weights of the best state on "
                             "the validation split (the start, the start re-fitted, each "
                             "epoch's end); the validation split is used by nothing else "
                             "(default: on)")
    parser.add_argument("--select-z", type=float, default=None, metavar="Z",
                        help="classifiers, with --keep-best: a later state replaces the best "
                             "so far only when its validation accuracy is higher (ties: lower "
                             "loss) and its per-sample validation loss is lower by more than Z "
                             "standard errors of the paired change (default 0: no such "
                             "test; 2 kept changes a 300-image split could not confirm from "
                             "replacing the start, at a cost on average)")
    lm = parser.add_argument_group("language models (--task lm)")
    lm.add_argument("--objective", choices=["fisher", "reconstruction"], default=None,
                    help="block objective for language models (default fisher)")
    lm.add_argument("--pattern", default=None, metavar="N:M",
                    help="semi-structured pattern, e.g. 2:4: N of every M weights kept, so "
                         "density N/M (a different --density is refused); with --method icbs "
                         "needs --objective reconstruction")
    lm.add_argument("--row-rounds", type=non_negative_int, default=None, metavar="R",
                    help="reconstruction objective: every row of every Linear gets R blocks "
                         "per epoch, one block of each row per group, re-fit after each group "
                         "with --refit (default 0: --steps-per-epoch blocks on the rows of "
                         "largest error)")
    lm.add_argument("--targets", choices=["pruned", "dense"], default=None,
                    help="what each Linear reconstructs from its inputs in the model pruned so "
                         "far: its own outputs (pruned, the default, as SparseGPT and ALPS) or "
                         "the dense model's outputs (dense: also corrects the error of the "
                         "layers before it; a block's Linears are then pruned group by group; "
                         "needs --method wanda, sparsegpt, alps, or icbs with --objective "
                         "reconstruction)")
    lm.add_argument("--target-ridge", type=float, default=None, metavar="R",
                    help="--targets dense: ridge toward the dense weights, relative to the "
                         "mean input energy (default 1; small values over-fit the calibration "
                         "windows)")
    lm.add_argument("--eval-windows", type=int, default=None, metavar="W",
                    help="512-token evaluation windows for perplexity (default 16)")
    lm.add_argument("--calibration-windows", type=int, default=None, metavar="W",
                    help="512-token calibration windows (default 32)")
    lm.add_argument("--lm-fisher-samples", type=int, default=None, metavar="M",
                    help="sequences per per-sample-gradient pass, fisher objective (default 8)")
    lm.add_argument("--fisher-groups", action="store_true", default=None,
                    help="fisher objective: a fresh gradient pass and loss check per group of "
                         "a decoder block's Linears (attention, then MLP) instead of per 10 "
                         "decoder blocks")
    lm.add_argument("--blend", type=float, default=None, metavar="B",
                    help="fisher objective: weight in [0, 1] of the Kronecker-factored "
                         "curvature (the reconstruction Hessian weighted by the output-gradient "
                         "covariance) beside the rank-M empirical Fisher (default 0)")
    parser.add_argument("--no-loss-check", action="store_true",
                        help="keep every step the block model accepts, even when the held-out "
                             "calibration loss (perplexity for --task lm, fisher objective) "
                             "rises (default: revert it)")


def _run_lm(args: argparse.Namespace) -> int:
    from ..errors import BackendUnavailableError

    try:
        importlib.import_module("pruning.llm.run")
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == "pruning" or exc.name.startswith("pruning.llm")):
            raise BackendUnavailableError(
                "--task lm needs pruning.llm, which this installation does not have"
            ) from None
        raise BackendUnavailableError(
            f"--task lm needs the Python package {exc.name!r}, which is not installed; "
            "install the language-model extra: pip install -e '.[llm]'") from None
    from . import _prune_lm as prune_lm

    return int(prune_lm.run(args) or 0)


#: ICBSConfig fields in validation messages -> the flags that set them.
_FLAGS = {"select_z": "--select-z", "loss_z": "--loss-z", "refit_rounds": "--refit-rounds",
          "fisher_samples": "--fisher-samples", "calibration_samples": "--calibration-samples",
          "seed": "--seed", "block size": "--block-size", "group size": "--group-size",
          "loss_check on": "the loss check: drop --no-loss-check"}


def _given(*flags: tuple[str, Any]) -> list[str]:
    """The flags of (flag, value) pairs the user set (value not None)."""
    return [flag for flag, value in flags if value is not None]


def _model_file(spec: str) -> str | None:
    """The file a --model spec reads, if any (builtin and zoo names read the cache)."""
    if spec.startswith(("builtin:", "zoo:")):
        _, _, path = spec.partition("@")
        return path or None
    return spec


def _check_export_path(path: Path, model_file: str | None, out: Path) -> None:
    """--export-blocks, before any work: a writable place, not a folder, not the model,
    not inside --out (replaced whole at the end), and no file other than an earlier
    block set replaced."""
    from ..errors import InputError
    from ..files import check_output, check_outside, writable_ancestor
    from ..io import detect_format

    check_outside(path, out, "--export-blocks")

    writable_ancestor(path.parent, "--export-blocks")
    if path.parent.exists():
        check_output(path, "--export-blocks", inputs=(model_file,) if model_file else ())
    if path.is_file():
        try:
            kind = detect_format(path)
        except InputError:
            kind = None
        if kind != "blockset":
            raise InputError(f"--export-blocks {path}: exists and is not a block set; choose "
                             "another path (an earlier export is replaced, nothing else)")


def _check_backend_fits(backend: Any, block_size: int, options: dict[str, Any],
                        block_k: int | None) -> None:
    """The backend's options and its size limit, on a dense block like iCBS's (at most
    4096 variables), before the model is loaded."""
    import numpy as np

    from qcbo.problem import Problem

    from ..errors import UnsupportedProblemError

    n = min(block_size, 4096)
    k = block_k if block_k is not None and 0 < block_k < n else n // 2
    probe = Problem(np.ones((n, n)), k=k, source="block")
    try:
        backend.prepare(probe, options)
    except UnsupportedProblemError as exc:
        raise UnsupportedProblemError(f"--block-size {block_size} does not fit --backend "
                                      f"{backend.name}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from ..cli import check_executor_arguments

    check_executor_arguments(args)
    if args.task == "lm":
        from ..errors import InputError

        if args.loss_z is not None:
            raise InputError("--loss-z is for classifiers; --task lm checks perplexity "
                             "without a paired test")
        if args.reconstruct is not None:
            raise InputError("--reconstruct is for classifiers; --task lm reconstructs each "
                             "layer by its objective (use --targets dense for the dense "
                             "model's outputs)")
        if args.refit_rounds is not None:
            raise InputError("--refit-rounds is for classifiers; --task lm re-fits each row "
                             "exactly (use --row-rounds for its block rounds)")
        if args.keep_best is not None or args.select_z is not None:
            raise InputError("--keep-best and --select-z are for classifiers (they pick an "
                             "epoch on their validation split); drop them for --task lm")
        classifier_only = _given(
            ("--hessian", args.hessian), ("--fisher-samples", args.fisher_samples),
            ("--block-k", args.block_k), ("--calibration-samples", args.calibration_samples),
            ("--group-size", args.group_size), ("--layers", args.layers),
            ("--solver-time-limit", args.solver_time_limit))
        if classifier_only:
            hint = (" (its Fisher samples: --lm-fisher-samples)"
                    if args.fisher_samples is not None else "")
            raise InputError(f"{', '.join(classifier_only)}: for classifiers only; drop for "
                             f"--task lm{hint}")
        return _run_lm(args)

    import torch

    from backends import get_backend
    from pruning.icbs import ICBSConfig, resolve_block_size
    from pruning.models import load_model
    from pruning.report import write_outputs
    from pruning.run import MODEL_DEFAULTS, OTHER_DEFAULTS, prune_classifier

    from ..errors import InputError
    from ..files import atomic_folder, check_out_folder

    if args.method in ("sparsegpt", "alps"):
        raise InputError(f"--method {args.method} re-fits weights and is for --task lm only; "
                         "use icbs, chita or a one-shot mask for classifiers")
    if args.init in ("sparsegpt", "alps"):
        raise InputError(f"--init {args.init} is for --task lm only; use --init auto, chita or a "
                         "one-shot mask for classifiers")
    if args.pattern is not None:
        raise InputError("--pattern is for --task lm only; classifiers are pruned unstructured")
    if args.row_rounds is not None:
        raise InputError("--row-rounds is for --task lm only; classifiers take --epochs and "
                         "--steps-per-epoch")
    if args.fisher_groups is not None or args.blend is not None:
        raise InputError("--fisher-groups and --blend are for --task lm --objective fisher "
                         "only; drop them for classifiers")
    lm_only = _given(("--objective", args.objective), ("--targets", args.targets),
                     ("--target-ridge", args.target_ridge), ("--eval-windows", args.eval_windows),
                     ("--calibration-windows", args.calibration_windows),
                     ("--lm-fisher-samples", args.lm_fisher_samples))
    if lm_only:
        raise InputError(f"{', '.join(lm_only)}: for --task lm only; drop for classifiers")
    if args.method != "icbs":
        icbs_only = _given(
            ("--init", args.init), ("--epochs", args.epochs),
            ("--steps-per-epoch", args.steps_per_epoch), ("--option", args.option or None),
            ("--export-blocks", args.export_blocks), ("--block-size", args.block_size),
            ("--block-k", args.block_k), ("--solver-time-limit", args.solver_time_limit),
            ("--refit", args.refit), ("--keep-best", args.keep_best),
            ("--select-z", args.select_z), ("--group-size", args.group_size),
            ("--hessian", args.hessian), ("--loss-z", args.loss_z),
            ("--refit-rounds", args.refit_rounds), ("--reconstruct", args.reconstruct),
            ("--no-loss-check", args.no_loss_check or None),
            ("--fisher-samples", args.fisher_samples))
        if icbs_only:
            raise InputError(f"{', '.join(icbs_only)}: for --method icbs only; --method "
                             f"{args.method} is one-shot")
    if args.group_size is not None and args.group_size < 1:
        raise InputError(f"--group-size must be >= 1, got {args.group_size}")
    if args.calibration_samples is not None and args.calibration_samples < 1:
        raise InputError(f"--calibration-samples must be >= 1, got {args.calibration_samples}")
    # Small dense models: one thread avoids pathological contention on shared machines.
    torch.set_num_threads(int(os.environ.get("QCBO_TORCH_THREADS", "1")))
    model_spec = args.model or "builtin:mlp-digits"
    backend = get_backend(args.backend)
    if model_spec.startswith(("builtin:", "zoo:")):
        name = model_spec.split(":", 1)[1].split("@", 1)[0]
    else:
        name = Path(model_spec).stem
    defaults = MODEL_DEFAULTS.get(name, OTHER_DEFAULTS)
    block_size = resolve_block_size(backend, args.block_size, defaults["block_size"],
                                    options=dict(args.option))
    # Flags left unset keep ICBSConfig's defaults.
    optional = {"fisher_samples": args.fisher_samples, "hessian": args.hessian,
                "keep_best": args.keep_best, "select_z": args.select_z,
                "group_size": args.group_size, "loss_z": args.loss_z,
                "refit": None if args.refit is None else ("epoch" if args.refit else "none"),
                "refit_rounds": args.refit_rounds, "reconstruct": args.reconstruct,
                "calibration_samples": args.calibration_samples}
    config = ICBSConfig(
        **{key: value for key, value in optional.items() if value is not None},
        density=args.density if args.density is not None else defaults["density"],
        backend=args.backend,
        # -o overrides keys of the backend's iCBS preset, keeping the others.
        backend_options={**backend.icbs_options, **dict(args.option)} if args.option else None,
        init=args.init or "auto",
        block_size=block_size,
        block_k=args.block_k,
        epochs=args.epochs if args.epochs is not None else defaults["epochs"],
        steps_per_epoch=(args.steps_per_epoch if args.steps_per_epoch is not None
                         else defaults["steps_per_epoch"]),
        solver_time_limit=args.solver_time_limit,
        loss_check=not args.no_loss_check,
        patterns=tuple(args.layers) if args.layers else None,
        seed=args.seed,
    )
    try:
        config.validate()
    except InputError as exc:  # the library's field names, said as this command's flags
        text = str(exc)
        for field, flag in _FLAGS.items():
            text = re.sub(rf"\b{field}\b", flag, text)
        raise InputError(text) from None
    if args.method == "icbs" and config.block_k is not None and not 0 < config.block_k < block_size:
        raise InputError(f"--block-k must be in 1..{block_size - 1}, got {config.block_k}")
    if args.method == "icbs":
        _check_backend_fits(backend, block_size, dict(args.option), args.block_k)
    model_file = _model_file(model_spec)
    out = check_out_folder(args.out or f"runs/prune-{name}", "--out",
                           inputs=(model_file,) if model_file else ())
    if args.export_blocks and args.method == "icbs":
        _check_export_path(Path(args.export_blocks), model_file, out)
    if args.block_size is not None and args.block_size > 16384:
        print(f"qcbo prune: warning: blocks of {args.block_size} make dense {args.block_size}^2 "
              "block Hessians; each step will be slow", file=sys.stderr)

    loaded = load_model(model_spec, progress=True)
    print(f"qcbo prune: {loaded.name}, density {config.density:g}, method {args.method}"
          + (f", backend {backend.name}, blocks of {block_size}, {config.epochs} epochs x "
             f"{config.steps_per_epoch} steps" if args.method == "icbs" else ""),
          file=sys.stderr)

    writer = None
    if args.export_blocks and args.method == "icbs":
        from ..io import BlockSetWriter

        Path(args.export_blocks).parent.mkdir(parents=True, exist_ok=True)
        writer = BlockSetWriter(args.export_blocks, metadata={
            "source": "qcbo prune", "model": loaded.name, "density": config.density,
            "backend": backend.name, "seed": config.seed})

    from tqdm import tqdm

    # The baselines and the automatic start come before the first step (CHITA++ on a
    # Fashion-MNIST model: about a minute), with no bar of their own.
    print("qcbo prune: scoring the one-shot baselines" + (
        " and choosing iCBS's start" if args.method == "icbs" else "") + " ...", file=sys.stderr)
    from pruning.baselines import prunable_weights
    from pruning.icbs import step_schedule

    # Every layer gets at least config.min_steps_per_layer steps an epoch, so an epoch
    # can hold more steps than --steps-per-epoch.
    sizes = [w.numel() for w in prunable_weights(loaded.model, config.patterns).values()]
    per_epoch = len(step_schedule(sizes, config.steps_per_epoch, config.min_steps_per_layer))
    bar = tqdm(total=config.epochs * per_epoch, desc="iCBS", unit="block",
               leave=False, disable=args.method != "icbs")
    counts = {"applied": 0, "solved": 0}

    def on_step(record) -> None:
        counts["solved"] += 1
        counts["applied"] += int(record.applied and not record.reverted)
        bar.update(1)
        bar.set_postfix(applied=f"{counts['applied']}/{counts['solved']}", refresh=False)

    def on_epoch(record: dict) -> None:
        acc = record.get("val_accuracy")
        bar.clear()  # the epoch line goes above the bar
        print(f"epoch {record['epoch']}/{config.epochs}: val loss {record['val_loss']:.4f}, "
              f"val accuracy {100 * acc:.2f} %, {record['blocks_applied']}/"
              f"{record['blocks_solved']} blocks applied ({record['blocks_reverted']} reverted "
              f"by the calibration check), {record['wall_time_s']:.1f} s", file=sys.stderr)
        bar.refresh()

    executor = None
    if args.method == "icbs" and args.executor != "serial":
        from backends.executor import make_executor

        executor = make_executor(args.executor, workers=args.workers,
                                 ray_address=args.ray_address)
    # The writer's context drops the half-written block set if pruning fails.
    try:
        with writer if writer is not None else contextlib.nullcontext(), \
                executor if executor is not None else contextlib.nullcontext():
            report = prune_classifier(loaded, method=args.method, config=config,
                                      block_sink=writer.add if writer is not None else None,
                                      on_step=on_step, on_epoch=on_epoch, executor=executor)
    finally:
        bar.close()
    if writer is not None:
        report["exported_blocks"] = {"path": str(args.export_blocks), "count": len(writer)}
    with atomic_folder(out) as folder:  # all three files, or none (an earlier run kept)
        written = write_outputs(loaded.model, report, folder)
    paths = {key: str(out / Path(path).name) for key, path in written.items()}
    dense, final = report["dense"], report["final"]
    line = (f"test accuracy {100 * final['test_accuracy']:.2f} % (dense "
            f"{100 * dense['test_accuracy']:.2f} %")
    for base, metrics in report.get("baselines", {}).items():
        line += f", {base} {100 * metrics['test_accuracy']:.2f} %"
    line += f") at density {report['density']:.3f} in {report['total_wall_time_s']:.1f} s"
    if "magnitude_overlap" in final:  # CHITA: how much of its mask is magnitude's
        line += (f"; {100 * final['magnitude_overlap']:.1f} % of the kept weights are in "
                 "magnitude-global's mask")
    print(line)
    print(f"wrote {paths['state_dict']}, {paths['report']}, {paths['plot']}"
          + (f", {args.export_blocks}" if writer is not None else ""))
    return 0
