"""Stopping work on a signal: SIGTERM stops a command the way Ctrl-C does, and nothing in between
can mistake the request for an error and carry on."""
from __future__ import annotations

import signal


class Stopped(BaseException):
    """SIGTERM asked this process to stop. A BaseException, like KeyboardInterrupt, so that an
    `except Exception` around optional work (a compiler probe, a clean-up) never swallows it; the
    CLI exits with `exit_code` (128 + the signal number, as a shell reports it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises Stopped in the main thread, wherever it is."""
    def handler(signum, _frame):
        raise Stopped(signum)
    signal.signal(signal.SIGTERM, handler)
