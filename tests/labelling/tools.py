"""Running the labelling tools' own readers (``tool_readers.py`` in ``.venv-formats``) from a test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-formats" / "bin" / "python"
SCRIPT = Path(__file__).with_name("tool_readers.py")


def _run(*args: str) -> str:
    assert PYTHON.exists(), f"{PYTHON} is missing: scripts/test.sh builds it from requirements-formats.txt"
    proc = subprocess.run(
        [str(PYTHON), str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def read_with_tool(fmt: str, folder: Path) -> dict:
    """``{"classes": [...], "boxes": {file name: [[class, x, y, w, h]]}}`` as the tool's reader sees ``folder``."""
    return json.loads(_run("read", fmt, str(folder)).strip().splitlines()[-1])


def edit_with_datumaro(folder: Path, edits: dict, out: Path) -> Path:
    """A person's corrections (file name -> its new boxes) saved the way CVAT exports a task: a COCO 1.0 zip."""
    edits_file = out.with_suffix(".edits.json")
    edits_file.write_text(json.dumps(edits), encoding="utf-8")
    _run("edit", str(folder), str(edits_file), str(out))
    return out
