"""`qcbo submit`: QAOA circuits for the problems of a file, checked, priced and submitted
to an Amazon Braket device; task ARNs go to a manifest as they are created.

Order: the device (a shipped snapshot with --plan-only or without credentials, else live
properties), then sizes, sub-blocks and circuit checks for every block (no training), the
plan; only with --yes are angles trained and tasks submitted."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

NAME = "submit"
HELP = "plan (and with --yes submit) QAOA circuits for each problem to an Amazon Braket device"


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_problem_arguments, non_negative_int, positive_int

    add_problem_arguments(parser)
    parser.add_argument("--device", required=True, metavar="ARN",
                        help="Braket device ARN, e.g. arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1")
    parser.add_argument("--shots", required=True, type=positive_int,
                        help="shots per task (checked against the device's accepted range "
                             "when its live properties are read)")
    parser.add_argument("--p", type=int, default=2, help="QAOA layers when training (default 2)")
    parser.add_argument("--mixer", default="auto", choices=["auto", "xy-ring", "xy-complete", "x"],
                        help="auto: xy-ring when the problem has k, else x")
    parser.add_argument("--sub-block", type=non_negative_int, default=None, metavar="Q",
                        help="cut blocks larger than Q variables into sub-blocks of at most Q "
                             "around a classical answer; 2 to the device's qubit count (default: "
                             "that count, at most 20; 0: off, and a block larger than the device "
                             "is refused)")
    parser.add_argument("--classical", default="sa", metavar="BACKEND",
                        help="solver of the classical answer that sub-blocks are cut around, for "
                             "blocks that carry none (default sa; a block from qcbo prune "
                             "--export-blocks carries its answer)")
    parser.add_argument("--classical-time", type=float, default=2.0, metavar="S",
                        help="time limit of that solve per block (default 2 s)")
    parser.add_argument("--plan-only", action="store_true",
                        help="print the plan from the shipped device snapshot, with no network "
                             "and no angle training")
    parser.add_argument("--angles", metavar="FILE",
                        help='JSON {"gamma": [...], "beta": [...]} for every task, or a list with '
                             "one per task; default: train on the local state vector")
    parser.add_argument("--s3", metavar="s3://BUCKET/PREFIX",
                        help="where Braket stores results (default: Braket's default bucket; "
                             "prefix qcbo when none is given)")
    parser.add_argument("--manifest", metavar="FILE",
                        help="manifest written with --yes (default: <PATH stem>.braket-manifest"
                             ".json here); an existing one is resumed")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the angle training (>= 0; default 0)")
    parser.add_argument("--yes", action="store_true",
                        help="really submit (without it only the plan and cost are printed)")


def default_manifest(path: str) -> Path:
    from ..io import resolve_path

    return Path(f"{resolve_path(path).stem}.braket-manifest.json")


def _target(args: argparse.Namespace, device):
    """The device to plan for, and the AwsDevice to submit to (None when offline)."""
    from backends.braket_device import aws_credentials_available, open_aws_device
    from backends.braket_plan import live_target, snapshot_target

    from ..errors import BackendUnavailableError, InputError

    snapshot = snapshot_target(args.device)
    if args.plan_only:
        if snapshot is None:
            from backends.braket_plan import snapshots

            known = ", ".join(t.arn.rsplit("/", 2)[-2] + "/" + t.arn.rsplit("/", 1)[-1]
                              for t in snapshots())
            raise InputError(f"no offline snapshot of {args.device} (snapshots: {known}); "
                             "without --plan-only its live properties are read with AWS "
                             "credentials")
        return snapshot, None
    if device is not None:
        return live_target(args.device, device.properties), device
    if aws_credentials_available():
        aws = open_aws_device(args.device)
        return live_target(args.device, aws.properties), aws
    if args.yes or snapshot is None:
        what = "to submit" if args.yes else f"to read {args.device}, which has no offline snapshot"
        raise BackendUnavailableError(
            f"no AWS credentials found {what}; configure them (aws configure, AWS_PROFILE or "
            "the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables)" +
            ("" if args.yes else " or use a device with a snapshot and --plan-only"))
    print(f"qcbo: no AWS credentials; planning on the {snapshot.source} of {snapshot.name}",
          file=sys.stderr)
    return snapshot, None


def run(args: argparse.Namespace, *, device=None) -> int:
    """``device`` (tests): an object with Braket's device interface used instead of AwsDevice."""
    import numpy as np

    from backends import backend_class
    from backends.braket_device import (check_shots, fingerprint, load_manifest, parse_s3,
                                        plan_blocks, submit_blocks)
    from backends.braket_plan import (format_submission_plan, manifest_parts, parse_device_arn,
                                      plan_submission)

    from ..errors import InputError
    from ..io import check_output, read_problems, resolve_path

    if args.shots < 1:
        raise InputError("--shots must be >= 1")
    if args.p < 1:
        raise InputError("--p must be >= 1")
    if not (args.classical_time > 0 and math.isfinite(args.classical_time)):
        raise InputError(f"--classical-time must be a finite number of seconds > 0, got "
                         f"{args.classical_time}")
    backend_class(args.classical)  # an unknown --classical fails here, not on a later block
    if args.s3:  # as submit_blocks reads it: empty means Braket's default bucket
        parse_s3(args.s3)
    parse_device_arn(args.device)
    manifest_path = check_output(Path(args.manifest) if args.manifest
                                 else default_manifest(args.path), "--manifest")
    problems = read_problems(args.path, k=args.k, instance=args.instance)
    angles = None
    if args.angles:
        try:
            angles = json.loads(Path(args.angles).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{args.angles}: cannot read angles ({exc})") from None
    old = load_manifest(manifest_path) if manifest_path.exists() else None
    answers = {}
    for parent in (old or {}).get("parents", []):
        b = parent["index"]
        if b < len(problems) and fingerprint(problems[b]) == parent["fingerprint"]:
            answers[b] = (np.asarray(parent["classical"]["x"], dtype=np.int8),
                          str(parent["classical"].get("source") or "manifest"))

    target, aws = _target(args, device)
    check_shots(args.shots, target.info, target.name)
    plan = plan_submission(problems, target, shots=args.shots, p=args.p, mixer=args.mixer,
                           sub_block=args.sub_block, classical=args.classical,
                           classical_time=args.classical_time, seed=args.seed, answers=answers)
    entries, parents = manifest_parts(plan)
    previous = {}
    for prev in (old or {}).get("blocks", []):
        if prev.get("task_arn"):
            previous[(prev.get("block", prev["index"]), prev["fingerprint"])] = prev
    done = sum(1 for e in entries if (e["block"], e["fingerprint"]) in previous)
    print(format_submission_plan(plan, done=done))
    if not plan.tasks:
        print("nothing to submit: every block has a single feasible state (k = 0 or k = n)",
              file=sys.stderr)
        return 0
    if args.plan_only or not args.yes:
        print("plan only: nothing trained or submitted" if args.plan_only
              else "nothing submitted; add --yes to train angles and submit", file=sys.stderr)
        return 0
    from tqdm import tqdm

    tasks = plan.tasks
    if isinstance(angles, list) and len(angles) != len(tasks):
        raise InputError(f"{args.angles}: {len(angles)} angle sets for {len(tasks)} tasks")
    per_task = []
    for i, entry in enumerate(entries):
        prev = previous.get((entry["block"], entry["fingerprint"]))
        given = angles[i] if isinstance(angles, list) else angles
        per_task.append(prev["angles"] if prev is not None else given)
    with tqdm(total=len(tasks), desc="train", unit="task", file=sys.stderr) as bar:
        trained = plan_blocks([t.problem for t in tasks], target.info, p=args.p,
                              mixer=args.mixer, angles=per_task, seed=args.seed,
                              progress=bar.update)
    for row, entry in zip(trained, entries):
        row.update(entry)
        prev = previous.get((entry["block"], entry["fingerprint"]))
        if prev is not None:
            row["task_arn"], row["status"] = prev["task_arn"], prev.get("status", "submitted")
    todo = sum(1 for row in trained if not row.get("task_arn"))
    source = {"path": str(resolve_path(args.path).resolve()), "k": args.k,
              "instance": args.instance}
    with tqdm(total=todo, desc="submit", unit="task", file=sys.stderr, disable=todo == 0) as bar:
        manifest = submit_blocks(trained, aws, manifest_path, device_arn=args.device,
                                 shots=args.shots, source=source, s3=args.s3, progress=bar.update,
                                 parents=parents, sub_block=plan.sub_block or None)
    submitted = sum(1 for b in manifest["blocks"] if b.get("task_arn"))
    print(f"{submitted} of {len(manifest['blocks'])} tasks submitted; manifest {manifest_path}")
    return 0
