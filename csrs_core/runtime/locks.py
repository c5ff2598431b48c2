"""One writer per output: an OS file lock (flock) on `<output>.lock` held while a run writes the output.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, crash), so a lock never
outlives its run; the file is removed on release, and one left by a killed holder is simply taken
over by the next. Usage:

    with output_lock(target_path):
        ...  # write target_path (and whatever belongs to it)

A second holder, in this or another process, gets OutputBusyError at once (after `timeout` seconds)."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from csrs_core import CSRSError


class OutputBusyError(CSRSError):
    """The output is locked by another run; the message names the lock file."""


def lock_path(path) -> Path:
    """The lock file that guards `path`: `<path>.lock` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _try_lock(lock_file: Path) -> int | None:
    """A descriptor holding flock on the file now at `lock_file`, or None when another holder has it.
    A releasing holder unlinks the file while it still holds it, so a lock taken on a file that is no
    longer at the path is dropped and None returned (the caller tries again on the new file)."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(lock_file).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


@contextmanager
def output_lock(path, timeout: float = 0.5):
    """Hold the exclusive lock on `path` for the duration of the block.

    Promises: while the block runs no other `output_lock(path)` holder exists, in any process on this
    machine (or on a file system whose flock is shared). Waits at most `timeout` seconds (0: one
    attempt); if the lock is held elsewhere, raises OutputBusyError saying so. The lock is released,
    and its file removed, when the block ends; the kernel releases it when the process dies."""
    lock_file = lock_path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(float(timeout), 0.0)
    while (fd := _try_lock(lock_file)) is None:
        if time.monotonic() >= deadline:
            raise OutputBusyError(f"{path} is being written by another run (lock {lock_file}); "
                                  "wait for it or cancel it")
        time.sleep(0.05)
    try:
        yield lock_file
    finally:
        lock_file.unlink(missing_ok=True)  # before the release, so no one locks a file about to vanish
        os.close(fd)
