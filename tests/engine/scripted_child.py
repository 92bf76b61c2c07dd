"""A stand-in training child for supervisor tests: ``python -m tests.engine.scripted_child SCRIPT.json``.

The script says how many iterations to report, how long each takes, whether to ignore SIGTERM, whether to leave
a grandchild process in the group, and how to exit.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    script = json.loads(Path(sys.argv[1]).read_text())
    if script.get("dump_env"):
        Path(script["dump_env"]).write_text(json.dumps(dict(os.environ)))
    if script.get("dump_cwd"):
        Path(script["dump_cwd"]).write_text(os.getcwd())
    if script.get("ignore_term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if script.get("grandchild_pid_file"):
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(script["grandchild_pid_file"]).write_text(str(grandchild.pid))
    steps = script.get("steps", 5)
    with open(script["events"], "a") as fh:
        fh.write(json.dumps({"event": "start", "max_epochs": 1, "max_iters": steps}) + "\n")
        fh.flush()
        for i in range(1, steps + 1):
            time.sleep(script.get("sleep", 0.05))
            fh.write(
                json.dumps(
                    {"event": "iter", "epoch": 1, "iter": i, "max_iters": steps, "losses": {"loss": 1.0 / i}, "eta": 0}
                )
                + "\n"
            )
            fh.flush()
    if script.get("raise"):
        raise RuntimeError(script["raise"])
    return script.get("exit", 0)


if __name__ == "__main__":
    sys.exit(main())
