"""Warm models for predict checks: a long-lived child of a worker process (``python -m engine.warm``) that keeps
the last models it ran loaded, so that a check skips process start, imports and model load.

The child is the predict child's (``engine.predict.Loaded``: weights-only, the same minimal environment), reading
one JSON job per line on stdin and answering one JSON line on stdout. It keeps at most ``max_models`` models (the
least recently used goes first) and ends itself after answering when its memory passes ``max_rss_mb`` with one
model left, or after any error: its parent starts a new one for the next check. It ends with its parent (stdin
closes), and its parent ends it (the whole process group) when a check runs past its time limit.

``WarmPredictor`` is the parent's side: one child per worker process, one check at a time.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

from .predict import Loaded, PredictionError
from .processes import PROJECT_ROOT


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def model_key(job: dict) -> str:
    """What makes two jobs the same model: the worker's key (the model and its files' hashes), else the paths."""
    return str(job.get("model_key") or (job.get("onnx"), job.get("config"), job.get("checkpoint")))


def serve(lines: IO[str], out: IO[str], max_models: int, max_rss_mb: float) -> int:
    """Answer jobs until stdin closes; the exit status the child ends with."""
    models: OrderedDict[str, Loaded] = OrderedDict()
    for line in lines:
        request = json.loads(line)
        job, answer = request["job"], {"id": request.get("id")}
        try:
            key = model_key(job)
            loaded = models.pop(key, None)
            warm = loaded is not None
            loaded = loaded or Loaded(job)
            models[key] = loaded
            while len(models) > max(1, max_models):
                models.popitem(last=False)
            result = loaded.run(job)
            answer["result"] = {**result, "warm": warm, "load_seconds": 0.0 if warm else loaded.load_seconds}
        except Exception as exc:  # noqa: BLE001 - every failure is answered in one line, then the child ends
            traceback.print_exc()
            text = str(exc).strip().splitlines()
            answer["error"] = f"{type(exc).__name__}: {text[0] if text else ''}"[:2000]
        if "error" not in answer and rss_mb() > max_rss_mb:
            while len(models) > 1:
                models.popitem(last=False)
            gc.collect()
            answer["ending"] = rss_mb() > max_rss_mb  # freed memory is not always given back: start afresh
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        out.flush()
        if "error" in answer or answer.get("ending"):
            return 1 if "error" in answer else 0
    return 0


def watch_parent(interval: float = 1.0) -> None:
    """End this process when the worker that started it is gone (re-parented), even mid-job."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)  # the worker is gone: nothing waits for the answer

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m engine.warm MAX_MODELS MAX_RSS_MB", file=sys.stderr)
        return 2
    watch_parent()
    # The answers get the real stdout to themselves; whatever else prints (mmengine's log) goes to stderr.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return serve(sys.stdin, answers, int(argv[1]), float(argv[2]))


class WarmPredictor:
    """The worker's side of a warm child: started on first use, and again after it ended, failed or ran past a
    check's time limit (then it is killed with its process group)."""

    def __init__(self, *, env: dict, max_models: int, max_rss_mb: float):
        self.env, self.max_models, self.max_rss_mb = env, max_models, max_rss_mb
        self.proc: subprocess.Popen | None = None
        self.log: Any = None
        self.lock = threading.Lock()
        self.sent = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> subprocess.Popen:
        self.stop()
        if self.log is not None:
            self.log.close()
        # its stderr, read back for the reason it failed; kept open as long as the child lives (closed by stop)
        self.log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.warm", str(self.max_models), str(self.max_rss_mb)],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,  # its own group: ended as a whole
        )
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    def last_error(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        lines = self.log.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def send(self, job: dict) -> subprocess.Popen:
        """Write the job to a live child; a child that ended since its last check is replaced first."""
        for _ in range(2):
            proc = self.proc if self.proc is not None and self.proc.poll() is None else self.start()
            assert proc.stdin is not None
            self.sent += 1
            try:
                proc.stdin.write(json.dumps({"id": self.sent, "job": job}, ensure_ascii=False) + "\n")
                proc.stdin.flush()
                return proc
            except BrokenPipeError:  # it ended between the look and the write: once more, in a new one
                self.stop()
        raise PredictionError(f"the model process could not be started: {self.last_error() or 'no reason given'}")

    def run(self, job: dict, *, timeout: float) -> dict:
        """The job's result, as ``engine.predict.run_prediction`` returns it, or PredictionError with the reason."""
        with self.lock:
            proc = self.send(job)
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            if not ready:
                self.stop()
                raise PredictionError(f"the prediction took longer than {timeout:.0f} s and was stopped")
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                reason = self.last_error() or f"exit status {proc.returncode}"
                self.stop()
                raise PredictionError(f"the model process ended: {reason}")
            answer = json.loads(line)
            if "error" in answer or answer.get("ending"):
                proc.wait(timeout=30)
                self.proc = None
            if "error" in answer:
                raise PredictionError(answer["error"])
            return answer["result"]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
