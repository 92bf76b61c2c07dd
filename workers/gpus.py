"""What a worker's GPUs hold: memory in use and in all, per GPU it declared, read with ``nvidia-smi`` (the driver's
own tool; no CUDA library enters the worker's process). Reported with the heartbeat, shown on /metrics."""

from __future__ import annotations

import logging
import shutil
import subprocess

logger = logging.getLogger(__name__)
MIB = 1024 * 1024
QUERY = ["--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"]


def gpu_memory(gpus: list[str], *, timeout: float = 5) -> list[dict]:
    """``[{"gpu", "used_bytes", "total_bytes"}]`` for the declared ``gpus``; [] where there are none or the tool
    cannot tell (missing, failing, slow: a heartbeat never waits on it for long)."""
    tool = shutil.which("nvidia-smi")
    if not gpus or tool is None:
        return []
    try:
        out = subprocess.run([tool, *QUERY], capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("nvidia-smi failed: %s", exc)
        return []
    found = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or parts[0] not in gpus:
            continue
        try:
            used, total = int(float(parts[1]) * MIB), int(float(parts[2]) * MIB)
        except ValueError:
            continue
        found.append({"gpu": parts[0], "used_bytes": used, "total_bytes": total})
    return found
