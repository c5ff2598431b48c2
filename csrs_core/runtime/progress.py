"""Machine-readable progress: one JSON object per line, appended and flushed as work goes on."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm


class ProgressLog:
    """Appends events ({"event": ..., "time": ...}) to a JSON-lines file; None path means no file."""

    def __init__(self, path=None, fresh: bool = False, display=None):
        self.path = Path(path) if path else None
        self.display = display
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh and self.path.exists():
                self.path.unlink()

    def write(self, event: str, **fields) -> dict:
        record = {"event": event, "time": time.time(), **{k: _clean(v) for k, v in fields.items()}}
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.display:
            self.display(record)
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


class TerminalProgress:
    """Shows progress events to a person: a tqdm bar with rate and ETA on a terminal, a plain line
    at most every `every` seconds otherwise (logs, jobs); other events as one line each."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every, self.last, self.bar, self.label = every, 0.0, None, None

    def __call__(self, record: dict) -> None:
        event = record["event"]
        if event not in ("progress", "step"):
            self._close()
            fields = {k: v for k, v in record.items() if k not in ("event", "time", "measured")}
            text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            print(f"{event}: {text}", file=self.stream, flush=True)
            return
        if event == "progress":
            done, total, label = record["done"], record["total"], record.get("unit", "samples")
        else:
            done, total, label = record["step"], record["steps"], f"epoch {record['epoch'] + 1}"
        if self.tty:
            if self.bar is None or self.label != label:
                self._close()
                self.bar = tqdm(total=total, desc=label, file=self.stream, unit_scale=True, smoothing=0.1)
                self.label = label
            self.bar.update(done - self.bar.n)
            if "loss" in record:
                self.bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        elif time.time() - self.last >= self.every or done >= total:
            self.last = time.time()
            rate = record.get("samples_per_s") or record.get("images_per_s")
            eta = record.get("eta_s")
            extra = (f", {rate:,.0f}/s" if rate else "") + (f", ETA {eta:,.0f} s" if eta is not None else "")
            loss = f", loss {record['loss']:.4f}" if "loss" in record else ""
            loss += f", {record['samples']:,} samples spent" if "samples" in record else ""
            print(f"{label}: {done:,}/{total:,}{extra}{loss}", file=self.stream, flush=True)

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
