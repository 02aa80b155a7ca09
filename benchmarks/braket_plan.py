"""Offline Braket plan time: `qcbo submit --plan-only` on n = 1024 blocks, per device snapshot.

The block set is either one written by ``qcbo prune --export-blocks`` (``--blocks PATH``;
its blocks carry their classical answer) or synthetic (``--synthetic COUNT``: n = 1024,
k = 512, 40 % non-zero couplings, a random feasible answer in the metadata, like an export).
Per device: the wall time of the whole command in a fresh process (imports, reading the
block set, sub-blocks, native-gate and routing estimates, the table), as a user sees it,
``--repeats`` times; and an in-process breakdown (read / plan / format). The target is
<= 10 s on the IonQ Aria snapshot, on 2 shared cores.

    qcbo prune --model builtin:mlp-fashion-mnist --density 0.1 --epochs 1 \\
        --steps-per-epoch 8 --export-blocks /tmp/blocks1024.npz --out /tmp/prune
    nice -n 5 python benchmarks/braket_plan.py --blocks /tmp/blocks1024.npz

Writes benchmarks/results/braket_plan.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.braket_plan import (format_submission_plan, plan_submission,  # noqa: E402
                                  snapshot_target)
from qcbo import Problem  # noqa: E402
from qcbo.io import BlockSetWriter, read_problems  # noqa: E402

DEVICES = {
    "ionq-aria-1": "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1",
    "ionq-forte-1": "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1",
    "iqm-garnet": "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet",
    "rigetti-ankaa-3": "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3",
}


def synthetic(path: Path, count: int, n: int = 1024, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with BlockSetWriter(path, metadata={"source": "benchmarks/braket_plan.py"}) as writer:
        for i in range(count):
            a = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.4)
            x = np.zeros(n, dtype=int)
            x[rng.choice(n, n // 2, replace=False)] = 1
            writer.add(Problem((a + a.T) / 2, 0.0, n // 2,
                               metadata={"name": f"synthetic{i}", "answer": x.tolist()}))


def command_time(blocks: Path, arn: str, shots: int) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "qcbo", "submit", str(blocks), "--device", arn, "--shots",
           str(shots), "--plan-only"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - t0, proc.returncode, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=Path,
                        help="block set (e.g. from qcbo prune --export-blocks)")
    parser.add_argument("--synthetic", type=int, default=8, metavar="COUNT",
                        help="without --blocks: this many synthetic n = 1024 blocks (default 8)")
    parser.add_argument("--devices", nargs="+", default=list(DEVICES), choices=list(DEVICES))
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "braket_plan.json")
    args = parser.parse_args()
    load_start = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        blocks = args.blocks
        if blocks is None:
            blocks = Path(tmp) / "blocks1024.npz"
            synthetic(blocks, args.synthetic)
        problems = read_problems(blocks)
        rows = []
        for name in args.devices:
            arn = DEVICES[name]
            walls, rc, text = [], 0, ""
            for _ in range(args.repeats):
                wall, rc, text = command_time(blocks, arn, args.shots)
                walls.append(wall)
                if rc != 0:
                    raise SystemExit(f"{name}: qcbo submit --plan-only failed:\n{text}")
            t0 = time.perf_counter()
            loaded = read_problems(blocks)
            t1 = time.perf_counter()
            plan = plan_submission(loaded, snapshot_target(arn), shots=args.shots)
            t2 = time.perf_counter()
            format_submission_plan(plan)
            t3 = time.perf_counter()
            tasks = plan.tasks
            row = {
                "device": name, "arn": arn, "snapshot": plan.target.source,
                "blocks": len(plan.blocks), "block_n": sorted({p.n for p in problems}),
                "sub_block": plan.sub_block, "tasks": len(tasks),
                "max_depth": max(t.estimate.depth for t in tasks),
                "max_two_qubit": max(t.estimate.two_qubit for t in tasks),
                "native_two_qubit_gate": tasks[0].estimate.native,
                "swaps_total": sum(t.estimate.swaps for t in tasks),
                "cost_usd": plan.cost(), "shots": args.shots,
                "command_wall_s": walls, "command_wall_s_median": float(np.median(walls)),
                "read_s": t1 - t0, "plan_s": t2 - t1, "format_s": t3 - t2,
                "classical_sources": sorted({b.classical_source or "whole" for b in plan.blocks}),
            }
            rows.append(row)
            print(f"{name:16} {row['tasks']:4} tasks  depth {row['max_depth']:6}  2q "
                  f"{row['max_two_qubit']:6}  ${row['cost_usd']:9.2f}  command "
                  f"{row['command_wall_s_median']:.2f} s (median of {len(walls)}; read "
                  f"{row['read_s']:.2f} s, plan {row['plan_s']:.2f} s in-process)")
        print(text.splitlines()[0] if text else "")
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "blocks_file": str(args.blocks) if args.blocks else f"synthetic x{args.synthetic}",
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "machine": platform.machine(),
        "target_s": 10.0, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
