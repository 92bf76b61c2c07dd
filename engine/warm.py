"""Warm models for predict checks and small detection runs: a long-lived child of a worker process (``python -m
engine.warm``) that keeps the last models it ran loaded, so that a check skips process start, imports and model
load.

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
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .detect import DetectionJob, detect, detector
from .events import EventTail, fold_progress
from .predict import Loaded, PredictionError
from .processes import PROJECT_ROOT
from .supervisor import ChildResult


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def model_key(job: dict) -> str:
    """What makes two jobs the same model: the worker's key (the model and its files' hashes), else the files'
    paths and modification times (an export written again in the same place is another model)."""
    if job.get("model_key"):
        return str(job["model_key"])
    files = [job.get("onnx") or job.get("onnx_file"), job.get("config") or job.get("config_file")]
    files.append(job.get("checkpoint"))
    return repr([(f, os.stat(f).st_mtime_ns) for f in files if f])


def emitter(events_file: str) -> Callable[..., None]:
    """``emit(event, **payload)`` appending to a detection job's events file, as the detection child does."""

    def emit(event: str, **payload: Any) -> None:
        with open(events_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "time": time.time(), **payload}) + "\n")

    return emit


def answer_job(request: dict, models: OrderedDict[str, Any], max_models: int) -> dict:
    """One job's result, with its model from ``models`` (loaded there when it was not, the least recently used
    dropped past ``max_models``). A predict check (``kind`` "predict", the default) or a small detection run
    ("detect": a ``DetectionJob``, progress in its events file, the result in its result file)."""
    job, kind = request["job"], request.get("kind", "predict")
    key = f"{kind}:{model_key(job)}"
    loaded = models.pop(key, None)
    warm = loaded is not None
    started = time.monotonic()
    if kind == "detect":
        detection = DetectionJob(**job)
        loaded = loaded or detector(detection)
    else:
        loaded = loaded or Loaded(job)
    models[key] = loaded
    while len(models) > max(1, max_models):
        models.popitem(last=False)
    load_seconds = 0.0 if warm else round(time.monotonic() - started, 3)
    if kind == "detect":
        result = detect(detection, emitter(detection.events_file), model=loaded)
        return {"windows": result["windows"], "warm": warm, "load_seconds": load_seconds}
    return {**loaded.run(job), "warm": warm, "load_seconds": load_seconds}


def serve(lines: IO[str], out: IO[str], max_models: int, max_rss_mb: float) -> int:
    """Answer jobs until stdin closes; the exit status the child ends with."""
    models: OrderedDict[str, Any] = OrderedDict()
    for line in lines:
        request = json.loads(line)
        answer: dict[str, Any] = {"id": request.get("id")}
        try:
            answer["result"] = answer_job(request, models, max_models)
        except Exception as exc:  # noqa: BLE001 - every failure is answered in one line, then the child ends
            traceback.print_exc()
            text = str(exc).strip().splitlines()
            answer["error"] = f"{type(exc).__name__}: {text[0] if text else ''}"[:2000]
            if request.get("kind") == "detect":  # the run reads its error where the detection child leaves it
                emitter(request["job"]["events_file"])("error", message=answer["error"])
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
        self.last_answer: dict = {}  # of the last job: whether its model was loaded already, how long loading took

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

    def send(self, job: dict, kind: str = "predict") -> subprocess.Popen:
        """Write the job to a live child; a child that ended since its last check is replaced first."""
        for _ in range(2):
            proc = self.proc if self.proc is not None and self.proc.poll() is None else self.start()
            assert proc.stdin is not None
            self.sent += 1
            try:
                proc.stdin.write(json.dumps({"id": self.sent, "kind": kind, "job": job}, ensure_ascii=False) + "\n")
                proc.stdin.flush()
                return proc
            except BrokenPipeError:  # it ended between the look and the write: once more, in a new one
                self.stop()
        raise PredictionError(f"the model process could not be started: {self.last_error() or 'no reason given'}")

    def receive(self, proc: subprocess.Popen) -> dict:
        """The child's answer to the job it was sent (``error`` in it where it failed or died). A child that died
        is ended; one that ends itself after answering (an error, its memory) is waited for and forgotten."""
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            reason = self.last_error() or f"exit status {proc.returncode}"
            self.stop()
            return {"error": f"the model process ended: {reason}"}
        answer = self.last_answer = json.loads(line)
        if "error" in answer or answer.get("ending"):
            proc.wait(timeout=30)
            self.proc = None
        return answer

    def detect(
        self,
        job: dict,
        *,
        on_progress: Callable[[dict], bool],
        on_start: Callable[[int], None],
        interval: float,
        timeout: float | None,
    ) -> ChildResult:
        """A small detection run's job in the warm child, watched as ``engine.supervisor.run_child`` watches a
        child of its own: progress from its events file every ``interval`` seconds, stopped (the child killed with
        its group; the next job starts a new one) when ``on_progress`` says so or past ``timeout``."""
        with self.lock:
            proc = self.send(job, "detect")
            assert proc.stdout is not None
            on_start(proc.pid)
            tail, result = EventTail(job["events_file"]), ChildResult(returncode=None)
            state: dict = {}
            started = last = time.monotonic()
            while result.returncode is None:
                wait = max(0.0, last + interval - time.monotonic())
                ready, _, _ = select.select([proc.stdout], [], [], wait)
                fold_progress(state, tail.read_new())
                if ready:
                    answer = self.receive(proc)
                    result.returncode = 0 if "result" in answer else 1
                    if "error" in answer:
                        state.setdefault("error", answer["error"])
                    break
                now = time.monotonic()
                if timeout is not None and now - started > timeout:
                    result.timed_out = True
                elif now - last >= interval:
                    last = now
                    result.stopped = not on_progress(dict(state))
                if result.timed_out or result.stopped:
                    self.stop()
                    result.returncode = -signal.SIGKILL
            fold_progress(state, tail.read_new())
            result.state = state
            if result.returncode != 0 and not (result.stopped or result.timed_out):
                result.error = state.get("error") or "the detection failed in the warm child"
            return result

    def run(self, job: dict, *, timeout: float) -> dict:
        """The job's result, as ``engine.predict.run_prediction`` returns it, or PredictionError with the reason."""
        with self.lock:
            proc = self.send(job)
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            if not ready:
                self.stop()
                raise PredictionError(f"the prediction took longer than {timeout:.0f} s and was stopped")
            answer = self.receive(proc)
            if "error" in answer:
                raise PredictionError(answer["error"])
            return answer["result"]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
