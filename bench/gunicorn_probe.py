"""gunicorn settings for the web-footprint benchmark: the worker reports what it imported when it exits."""

import json
import os
import sys

HEAVY = ("torch", "mmdet", "mmengine", "mmcv", "cv2")


def worker_exit(server, worker):
    report = os.environ.get("BENCH_WEB_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "pid": os.getpid(),
                    "heavy": sorted(m for m in HEAVY if m in sys.modules),
                    "modules": len(sys.modules),
                },
                fh,
            )
