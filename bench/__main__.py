"""`bash bench/run.sh [name ...]`: run the benchmarks, print the table, write docs/benchmarks.md."""

from __future__ import annotations

import datetime
import importlib
import os
import sys
from pathlib import Path

import django

BENCHMARKS = ["api_lists", "coco_export"]
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dumpsite.settings")
    django.setup()
    from .common import machine

    chosen = argv or BENCHMARKS
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    figures = []
    for name in chosen:
        print(f"running {name} ...", flush=True)
        figures.extend(importlib.import_module(f"bench.{name}").run())
    rows = [f"| {f.benchmark} | {f.name} | {f.value} | {f.target} | {f.verdict()} |" for f in figures]
    table = "\n".join(["| benchmark | figure | measured | target | |", "| --- | --- | --- | --- | --- |", *rows])
    print(table)
    doc = ROOT / "docs" / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nRun with `bash bench/run.sh` on {datetime.date.today()}: {machine()}.\n"
                   "Each figure is measured side by side with its baseline in one run (alternating, medians).\n\n"
                   f"{table}\n" + (ROOT / "bench" / "analysis.md").read_text(encoding="utf-8"), encoding="utf-8")
    print(f"written to {doc.relative_to(ROOT)}")
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
