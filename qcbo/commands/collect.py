"""`qcbo collect`: fetch the finished Braket tasks of a manifest, score them, stitch
sub-blocks back into their blocks, list the rest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "collect"
HELP = ("fetch finished Braket tasks of a submit manifest, score them, stitch sub-blocks back, "
        "list the queued ones")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest written by qcbo submit")
    parser.add_argument("--out", metavar="FILE",
                        help="results JSON (default: MANIFEST with .results.json); tasks "
                             "already there are not fetched again")


def default_results(manifest: str) -> Path:
    path = Path(manifest)
    stem = path.name.removesuffix(".json")
    return path.with_name(f"{stem}.results.json")


def _aws_task_loader():
    """ARN -> AwsQuantumTask, after checking that credentials exist (one line if not)."""
    from backends.braket_device import aws_errors, require_aws_credentials

    require_aws_credentials()
    with aws_errors("loading the Braket SDK"):
        from braket.aws import AwsQuantumTask
    return AwsQuantumTask


def _labels(manifest: dict) -> list[str]:
    """Per task: "block B" (a whole block) or "block B sub-block S"."""
    seen: dict[int, int] = {}
    out = []
    for entry in manifest["blocks"]:
        b = entry.get("block", entry["index"])
        if entry.get("variables") is None:
            out.append(f"block {b + 1}")
        else:
            seen[b] = seen.get(b, 0) + 1
            out.append(f"block {b + 1} sub-block {seen[b]}")
    return out


def run(args: argparse.Namespace, *, load_task=None) -> int:
    """``load_task`` (tests): ARN -> task object, used instead of AwsQuantumTask."""
    from backends.braket_device import collect_results, load_manifest

    from ..io import check_output, read_problems

    manifest = load_manifest(args.manifest)
    out = check_output(Path(args.out) if args.out else default_results(args.manifest), "--out")
    source = manifest["source"]
    problems = read_problems(source["path"], k=source.get("k"), instance=source.get("instance"))
    if load_task is None and any(b.get("task_arn") for b in manifest["blocks"]):
        load_task = _aws_task_loader()
    summary = collect_results(args.manifest, problems, load_task, out)
    labels = _labels(manifest)
    for item in summary["results"]:
        print(f"{labels[item['problem']['block']]}: energy {item['energy']:.10g}, feasible "
              f"{item['feasible']}, feasible fraction {item['info']['feasible_fraction']:.3f}")
    for task, arn, state in summary["pending"]:
        print(f"{labels[task - 1]}: {state} {arn}")
    for task, arn, state in summary["failed"]:
        print(f"{labels[task - 1]}: {state} {arn}", file=sys.stderr)
    for b in summary["blocks"]:
        print(f"block {b['block'] + 1} (n={b['n']}, {b['collected']}/{b['sub_blocks']} sub-blocks "
              f"collected, {b['kept']} kept): energy {b['energy']:.10g} against the classical "
              f"{b['classical_energy']:.10g} ({b['classical_source']}), improvement "
              f"{b['improvement']:.6g}")
    unsent = [i for i, entry in enumerate(manifest["blocks"]) if not entry.get("task_arn")]
    for i in unsent:
        print(f"{labels[i]}: never submitted (run qcbo submit again with --yes to send it)")
    print(f"{summary['collected']} newly collected, {len(summary['results'])} done, "
          f"{len(summary['pending'])} still queued, {len(summary['failed'])} failed"
          + (f", {len(unsent)} never submitted" if unsent else "") + f"; results {out}")
    return 1 if summary["failed"] else 0
