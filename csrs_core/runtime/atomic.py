"""Atomic file writes: write to a temporary file in the same folder, then rename over the target."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from csrs_core import CSRSError


class FileWriteError(CSRSError):
    """A file could not be written (a full disk, a read-only folder); the message names the file and
    what to do. Whatever was there before is intact. Exit code 1."""
    exit_code = 1

    def __init__(self, path, reason: str):
        super().__init__(f"could not write {path} ({reason}): free some disk space or make its folder "
                         "writable, then run the same command again (finished work is kept)")


@contextmanager
def atomic_path(path):
    """Yield a temporary path; on success it replaces `path` in one rename, on failure it is removed
    and `path` is left as it was. OSError while writing becomes FileWriteError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the process umask applies
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise FileWriteError(path, exc.strerror or str(exc)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_npz(path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
