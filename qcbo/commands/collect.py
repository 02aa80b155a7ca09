"""`qcbo collect`: fetch the finished Braket tasks of a manifest, score them, list the rest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "collect"
HELP = "fetch finished Braket tasks of a submit manifest, score them, list the queued ones"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="manifest written by qcbo submit")
    parser.add_argument("--out", metavar="FILE",
                        help="results JSON (default: MANIFEST with .results.json); blocks "
                             "already there are not fetched again")


def default_results(manifest: str) -> Path:
    path = Path(manifest)
    stem = path.name.removesuffix(".json")
    return path.with_name(f"{stem}.results.json")


def run(args: argparse.Namespace, *, load_task=None) -> int:
    """``load_task`` (tests): ARN -> task object, used instead of AwsQuantumTask."""
    from backends.braket_device import collect_results, load_manifest, require_aws_credentials

    from ..io import check_output, read_problems

    manifest = load_manifest(args.manifest)
    out = check_output(Path(args.out) if args.out else default_results(args.manifest), "--out")
    source = manifest["source"]
    problems = read_problems(source["path"], k=source.get("k"), instance=source.get("instance"))
    if load_task is None:
        require_aws_credentials()
        from braket.aws import AwsQuantumTask

        load_task = AwsQuantumTask
    summary = collect_results(args.manifest, problems, load_task, out)
    for item in summary["results"]:
        print(f"block {item['problem']['block'] + 1}: energy {item['energy']:.10g}, feasible "
              f"{item['feasible']}, feasible fraction {item['info']['feasible_fraction']:.3f}")
    for block, arn, state in summary["pending"]:
        print(f"block {block}: {state} {arn}")
    for block, arn, state in summary["failed"]:
        print(f"block {block}: {state} {arn}", file=sys.stderr)
    print(f"{summary['collected']} newly collected, {len(summary['results'])} done, "
          f"{len(summary['pending'])} still queued, {len(summary['failed'])} failed; results {out}")
    return 1 if summary["failed"] else 0
