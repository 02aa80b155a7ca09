"""`qcbo submit`: QAOA circuits for the problems of a file, checked, priced and submitted
to an Amazon Braket device; task ARNs go to a manifest as they are created."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "submit"
HELP = "plan (and with --yes submit) QAOA circuits for each problem to an Amazon Braket device"


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_problem_arguments, non_negative_int

    add_problem_arguments(parser)
    parser.add_argument("--device", required=True, metavar="ARN",
                        help="Braket device ARN, e.g. arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1")
    parser.add_argument("--shots", required=True, type=non_negative_int, help="shots per task")
    parser.add_argument("--p", type=int, default=2, help="QAOA layers when training (default 2)")
    parser.add_argument("--mixer", default="auto", choices=["auto", "xy-ring", "xy-complete", "x"],
                        help="auto: xy-ring when the problem has k, else x")
    parser.add_argument("--angles", metavar="FILE",
                        help='JSON {"gamma": [...], "beta": [...]} for every block, or a list with '
                             "one per block; default: train on the local state vector")
    parser.add_argument("--s3", metavar="s3://BUCKET/PREFIX", help="where Braket stores results")
    parser.add_argument("--manifest", metavar="FILE",
                        help="manifest to write (default: <PATH stem>.braket-manifest.json here); "
                             "an existing one is resumed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the angle training")
    parser.add_argument("--yes", action="store_true",
                        help="really submit (without it only the plan and cost are printed)")


def default_manifest(path: str) -> Path:
    from ..io import resolve_path

    return Path(f"{resolve_path(path).stem}.braket-manifest.json")


def run(args: argparse.Namespace, *, device=None) -> int:
    """``device`` (tests): an object with Braket's device interface used instead of AwsDevice."""
    from backends.braket_device import (device_info, format_plan, plan_blocks,
                                        require_aws_credentials, submit_blocks)

    from ..errors import InputError
    from ..io import check_output, read_problems, resolve_path

    if args.shots < 1:
        raise InputError("--shots must be >= 1")
    manifest_path = check_output(Path(args.manifest) if args.manifest
                                 else default_manifest(args.path), "--manifest")
    problems = read_problems(args.path, k=args.k, instance=args.instance)
    angles = None
    if args.angles:
        try:
            angles = json.loads(Path(args.angles).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{args.angles}: cannot read angles ({exc})") from None
    if device is None:
        require_aws_credentials()
        from braket.aws import AwsDevice

        device = AwsDevice(args.device)
    info = device_info(device.properties)
    plans = plan_blocks(problems, info, p=args.p, mixer=args.mixer, angles=angles, seed=args.seed)
    if manifest_path.exists():
        from backends.braket_device import load_manifest

        old = load_manifest(manifest_path)
        for plan, prev in zip(plans, old.get("blocks", [])):
            if prev.get("task_arn") and prev.get("fingerprint") == plan["fingerprint"]:
                plan["task_arn"], plan["status"] = prev["task_arn"], prev.get("status", "submitted")
    print(format_plan(plans, args.device, args.shots))
    if not args.yes:
        print("nothing submitted; add --yes to submit", file=sys.stderr)
        return 0
    from tqdm import tqdm

    todo = sum(1 for p in plans if not p.get("task_arn"))
    source = {"path": str(resolve_path(args.path).resolve()), "k": args.k, "instance": args.instance}
    with tqdm(total=todo, desc="submit", unit="task", file=sys.stderr, disable=todo == 0) as bar:
        manifest = submit_blocks(plans, device, manifest_path, device_arn=args.device,
                                 shots=args.shots, source=source, s3=args.s3, progress=bar.update)
    done = sum(1 for b in manifest["blocks"] if b.get("task_arn"))
    print(f"{done} of {len(manifest['blocks'])} blocks submitted; manifest {manifest_path}")
    return 0
