"""`bash bench/run.sh [name ...]`: run the benchmarks, print the table, write docs/benchmarks.md."""

from __future__ import annotations

import datetime
import importlib
import logging
import os
import sys
import time
import traceback

import django

BENCHMARKS = [
    "training",
    "aerial",
    "aerial_steps",
    "evaluation",
    "gallery",
    "scale_out",
    "storage",
    "queue_latency",
    "coco_export",
    "zip_import",
    "ortho_tiling",
    "detection",
    "onnx",
    "predict",
    "review_queue",
    "reviewed_sites",
    "api_lists",
    "web_footprint",
    "webhooks",
    "metrics",
    "load",
]


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dumpsite.settings")
    django.setup()
    logging.getLogger("django-q").setLevel(logging.WARNING)  # its "Enqueued" lines would break up the output
    from .common import ROOT, Figure, machine

    chosen = argv or BENCHMARKS
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    figures = []
    started = time.monotonic()
    for name in chosen:
        print(f"running {name} ...", flush=True)
        try:
            figures.extend(importlib.import_module(f"bench.{name}").run())
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            traceback.print_exc()
            figures.append(Figure(name, "did not complete", f"{type(exc).__name__}: {exc}"[:200], "completes", False))
    rows = [f"| {f.benchmark} | {f.name} | {f.value} | {f.target} | {f.verdict()} |" for f in figures]
    table = "\n".join(["| benchmark | figure | measured | target | |", "| --- | --- | --- | --- | --- |", *rows])
    print(table)
    minutes = (time.monotonic() - started) / 60
    if chosen == BENCHMARKS:  # the document holds whole runs only
        doc = ROOT / "docs" / "benchmarks.md"
        doc.write_text(
            f"# Benchmarks\n\nRun with `bash bench/run.sh` on {datetime.date.today()} ({minutes:.0f} min): "
            f"{machine()}.\nEach figure is measured side by side with its baseline in one run (alternating, "
            f"medians).\n\n{table}\n" + (ROOT / "bench" / "analysis.md").read_text(encoding="utf-8"),
            encoding="utf-8",
        )
        print(f"written to {doc.relative_to(ROOT)}")
    else:
        print("(a partial run: docs/benchmarks.md is left as it was)")
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
