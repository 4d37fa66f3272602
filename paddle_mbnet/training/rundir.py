"""The run directory: refuse to mix two runs in one, and lock it while a run writes there."""
from __future__ import annotations

import fcntl
import os
import shutil

from ..errors import CheckpointError

# What a run writes into its directory; a directory holding any of these holds a run.
RUN_FILES = ("config.yaml", "last.pdckpt", "best.pdckpt", "metrics.json", "run_summary.json", "curves.png")
RUN_DIRS = ("vdl",)
LOCK_NAME = ".lock"


def holds_run(out: str) -> bool:
    return any(os.path.exists(os.path.join(out, name)) for name in RUN_FILES + RUN_DIRS)


def claim(out: str, resuming: bool, overwrite: bool) -> "RunLock":
    """Create ``out``, lock it for this run, and refuse a new run over an existing one unless ``overwrite``
    (``clear`` then empties it, once the run is built); returns the held lock. The lock comes first, so no run
    clears a directory another writes."""
    prepare(out)
    lock = RunLock(out)
    if not resuming and not overwrite and holds_run(out):
        lock.release()
        raise CheckpointError(f"{out!r} already holds a run; continue it with -o Global.resume={out}, pick "
                              f"another -o Global.output_dir=..., or replace it with -o Global.overwrite=true")
    return lock


def clear(out: str) -> None:
    """Remove the run files of ``out`` (``Global.overwrite``), leaving the lock and anything else there."""
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    for name in RUN_DIRS:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)


def prepare(out: str) -> None:
    """Create ``out`` and make sure it can be written."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CheckpointError(f"Global.output_dir={out!r} is a file, not a directory; "
                              f"choose another with -o Global.output_dir=...")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(f"cannot write to Global.output_dir={out!r} ({e.strerror or e}); "
                              f"choose another with -o Global.output_dir=...") from None


class RunLock:
    """An exclusive ``flock`` on ``<out>/.lock`` for as long as the run lives; the OS drops it when the process
    ends, so a killed run leaves no stale lock behind."""

    def __init__(self, out: str):
        self.path = os.path.join(out, LOCK_NAME)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            owner = self._file.read().strip() or "another process"
            self._file.close()
            raise CheckpointError(f"another run (pid {owner}) is writing to {out!r}; wait for it to end, or choose "
                                  f"another -o Global.output_dir=...") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
