"""Block-set file throughput: stream-write and lazily read many n = 1024 blocks.

    python benchmarks/blockset_io.py --blocks 200 --n 1024

Prints a table and writes benchmarks/results/blockset_io.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qcbo import Problem  # noqa: E402
from qcbo.io import BlockSetWriter, read_blockset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "blockset_io.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    a = rng.normal(size=(args.n, args.n))
    base = (a + a.T) / 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blocks.npz"
        t0 = time.perf_counter()
        with BlockSetWriter(path) as writer:
            for i in range(args.blocks):
                writer.add(Problem(base, float(i), args.n // 2, metadata={"step": i}))
        write_s = time.perf_counter() - t0
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        with read_blockset(path) as blocks:
            open_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            last = blocks[len(blocks) - 1]
            random_access_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            total = sum(p.offset for p in blocks)
            read_s = time.perf_counter() - t0
        assert last.offset == args.blocks - 1 and total == sum(range(args.blocks))
    mb = size / 2**20
    row = {
        "blocks": args.blocks, "n": args.n, "file_MiB": round(mb, 1),
        "MiB_per_block": round(mb / args.blocks, 2),
        "write_s": round(write_s, 2), "write_MiB_per_s": round(mb / write_s, 1),
        "open_s": round(open_s, 4), "one_block_s": round(random_access_s, 4),
        "read_all_s": round(read_s, 2), "read_MiB_per_s": round(mb / read_s, 1),
    }
    print(" | ".join(f"{k}={v}" for k, v in row.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
