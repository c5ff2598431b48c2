"""Machine-readable progress: one JSON object per line, appended and flushed as work goes on."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path


class ProgressLog:
    """Appends events ({"event": ..., "time": ...}) to a JSON-lines file; None path means no file."""

    def __init__(self, path=None, fresh: bool = False):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh and self.path.exists():
                self.path.unlink()

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "time": time.time(), **{k: _clean(v) for k, v in fields.items()}}
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        return record


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def read_progress(path) -> list[dict]:
    """Every complete event in the file (a half-written last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
