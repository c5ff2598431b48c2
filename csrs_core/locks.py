"""One writer per output: an OS file lock (flock) on `<output>.lock` held while a run writes the output.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, crash), so a lock never
outlives its run and needs no stale-lock cleanup. Usage:

    with output_lock(target_path):
        ...  # write target_path (and whatever belongs to it)

A second holder, in this or another process, gets OutputBusyError at once (after `timeout` seconds)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from csrs_core import CSRSError


class OutputBusyError(CSRSError):
    """The output is locked by another run; the message names the lock file."""


def lock_path(path) -> Path:
    """The lock file that guards `path`: `<path>.lock` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def output_lock(path, timeout: float = 0.5):
    """Hold the exclusive lock on `path` for the duration of the block.

    Promises: while the block runs no other `output_lock(path)` holder exists, in any process on this
    machine (or on a file system whose flock is shared). Waits at most `timeout` seconds (0: one
    attempt); if the lock is held elsewhere, raises OutputBusyError saying so. The lock is released
    when the block ends or the process dies."""
    lock_file = lock_path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=max(float(timeout), 0.0))
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusyError(f"{path} is being written by another run (lock {lock_file}); "
                              "wait for it or cancel it") from None
    try:
        yield lock_file
    finally:
        lock.release()
