"""`qcbo backends`: the registry, availability and each backend's options."""

from __future__ import annotations

import argparse
import json

NAME = "backends"
HELP = "list solver backends, whether they are installed, and their options"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the registry as JSON")


def run(args: argparse.Namespace) -> int:
    from backends import BACKENDS, backend_class

    rows = []
    for name, spec in BACKENDS.items():
        missing = spec.missing()
        row = {"name": name, "available": not missing, "missing": missing, "summary": "",
               "max_variables": None, "options": {}}
        if not missing:
            cls = backend_class(name)
            row["summary"] = cls.summary
            row["max_variables"] = cls.max_variables
            row["options"] = {k: {"default": json.dumps(o.default), "accepts": o.describe(),
                                  "help": o.help}
                              for k, o in cls.options.items()}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        state = "available" if row["available"] else f"missing: {', '.join(row['missing'])}"
        limit = f" (n <= {row['max_variables']})" if row["max_variables"] else ""
        print(f"{row['name']:<14} {state}{limit}")
        if row["summary"]:
            print(f"    {row['summary']}")
        for opt, d in row["options"].items():
            print(f"    -o {opt}=...  {d['accepts']}, default {d['default']}: {d['help']}")
    return 0
