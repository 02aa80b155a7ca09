"""The README's CLI examples run as written, from a fresh clone (shipped samples only).

Examples are read from README.md: every fenced ``bash`` block directly after the line
``<!-- test: cli -->`` is run line by line with bash in an empty temporary folder
(``# comments`` and blank lines skipped). Blocks without the marker (prune: minutes;
submit/collect: AWS) are not run. Until README.md carries markers, the proposed
examples in `PROPOSED` run instead, so that the samples they rely on stay tested.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- test: cli -->"

PROPOSED = [
    "qcbo backends",
    "qcbo info sample:bqp50",
    "qcbo solve sample:bqp50 --backend sa --time-limit 1 --json",
    "qcbo solve sample:block --k 12 --backend exact -o max_seconds=120",
    "qcbo convert sample:bqp50 --k 5 k5.lp && qcbo info k5.lp",
    "qcbo convert sample:blocks blocks.npz && qcbo info blocks.npz --instance 2 --json",
]


def marked_commands(readme: str) -> list[str]:
    """Commands of the fenced blocks that follow the marker line."""
    commands = []
    for block in re.findall(re.escape(MARKER) + r"\s*\n```(?:bash|sh|console)?\n(.*?)```",
                            readme, flags=re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return marked_commands(readme) or PROPOSED


def test_marker_parsing():
    text = f"x\n{MARKER}\n```bash\nqcbo a  # note\n\n# skip\nqcbo b\n```\n```bash\nqcbo c\n```\n"
    assert marked_commands(text) == ["qcbo a  # note", "qcbo b"]


@pytest.mark.parametrize("command", _commands())
def test_readme_example_runs(command, tmp_path):
    executable = Path(sys.executable).parent / "qcbo"
    if not executable.exists() and shutil.which("qcbo") is None:
        pytest.skip("the qcbo console script is not installed (pip install -e .)")
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "-c", f"set -eo pipefail; {command}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr
