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


def sentence(record: dict) -> str:
    """A non-progress event as one line a person reads: each event that sampling, its plan and training
    write, in words; any other as 'event: key value, ...'. A field that is None is left out, never printed."""
    fields = {k: v for k, v in record.items() if k not in ("event", "time") and v is not None}
    for event, needs, words in _SENTENCES:
        if record["event"] == event and needs <= fields.keys():
            return words(fields)
    return _plain(record["event"], fields)


def _plain(event: str, fields: dict) -> str:
    """'event: key value, key value' (an event no sentence is written for)."""
    return f"{event}: {_pairs(fields)}" if fields else event


def _pairs(fields: dict) -> str:
    """'key value, key value' of the fields that are not None."""
    return ", ".join(f"{k.replace('_', ' ')} {_value(v)}" for k, v in fields.items() if v is not None)


def _value(v) -> str:
    """A field's value in words: numbers with separators or 4 digits, yes/no, a dict as '(key value, ...)'."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return f"({_pairs(v)})"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v if x is not None)
    return str(v)


def _duration(seconds: float) -> str:
    """'40 s', '12 min' or '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _setup(f: dict) -> list[str]:
    """['bf16', 'batch 128', 'eager'] from the fields that are there."""
    parts = [f.get("precision"), f"batch {f['batch']:,}" if "batch" in f else None,
             {True: "compiled", False: "eager"}.get(f.get("compiled")),
             "BatchNorm folded" if f.get("batchnorm_folded") else None]
    return [p for p in parts if p]


def _sampling_start(f: dict) -> str:
    """'sampling 100 examples × 1,100 noisy copies on cpu (bf16, batch 128, eager) — about 40 s'."""
    examples, total = f["examples"], f["total"]
    kept = [text for text in (f"{f['resumed']:,} examples done before (resumed)" if f.get("resumed") else "",
                              f"{f['reused']:,} reused from an overlapping record" if f.get("reused") else "") if text]
    kept = "; " + ", ".join(kept) if kept else ""
    if not examples:
        return "nothing left to sample" + kept
    copies = f"{total // examples:,} noisy copies"
    what = f"sampling {examples:,} examples" + (" sequentially" if f.get("sequential") else f" × {copies}")
    where = f" on {f['device']}" if "device" in f else ""
    setup = f" ({', '.join(_setup(f))})" if _setup(f) else ""
    cap = f", at most {copies} each" if f.get("sequential") else ""
    about = f" — about {_duration(f['expected_s'])}" if "expected_s" in f else ""
    return what + where + setup + cap + about + kept


def _plan(f: dict) -> str:
    """'sampling plan: bf16, batch 128, eager, 12,345 noisy images/s'."""
    rate = f", {f['images_per_s']:,.0f} noisy images/s" if "images_per_s" in f else ""
    alone = " (measured for this job only)" if f.get("cached") is False else ""
    return "sampling plan: " + ", ".join(_setup(f)) + rate + alone


def _training_start(f: dict) -> str:
    """'training macer for 10 epochs (781 steps each)', or 'resuming macer training at epoch 4 of 10 (…)'."""
    method = f"{f['method']} " if "method" in f else ""
    steps = f" ({f['steps_per_epoch']:,} steps each)" if "steps_per_epoch" in f else ""
    if f.get("resumed") and "epoch" in f:
        return f"resuming {method}training at epoch {f['epoch'] + 1} of {f['epochs']}{steps}"
    return f"training {method}for {f['epochs']} epochs{steps}"


def _epoch(f: dict) -> str:
    """'epoch 3: loss 0.4321 (ce 0.41, i2 0.02), train acc 0.812, lr 0.01, 1,234 noisy images/s, 12 s'."""
    known = ("epoch", "loss", "acc", "lr", "images_per_s", "seconds")
    parts = {k: v for k, v in f.items() if k not in known}
    text = f"epoch {f['epoch']}:"
    text += f" loss {f['loss']:.4f}" if "loss" in f else ""
    text += f" ({_pairs(parts)})" if parts else ""
    extra = [f"train acc {f['acc']:.3f}" if "acc" in f else "", f"lr {f['lr']:.4g}" if "lr" in f else "",
             f"{f['images_per_s']:,.0f} noisy images/s" if "images_per_s" in f else "",
             _duration(f["seconds"]) if "seconds" in f else ""]
    return ", ".join([text] + [e for e in extra if e])


def _trained(f: dict) -> str:
    """'trained 10 epochs in 12 min: out.pt'."""
    epochs = f" {f['epoch']} epochs" if "epoch" in f else ""
    took = f" in {_duration(f['seconds'])}" if "seconds" in f else ""
    return f"trained{epochs}{took}: {f['checkpoint']}"


def _with_epoch(f: dict) -> str:
    """The event's message, with the epochs done when given."""
    return f["message"] + (f" ({f['epoch']} epochs done)" if "epoch" in f else "")


_SENTENCES = [  # (event, the fields its sentence needs, the sentence); the first that fits is used
    ("start", {"examples", "total"}, _sampling_start),
    ("start", {"epochs"}, _training_start),
    ("plan", {"message"}, lambda f: f"sampling plan: {f['message']}"),
    ("plan", {"precision", "batch"}, _plan),
    ("cached", {"total"}, lambda f: f"reusing the stored counts of {f['total']:,} examples"
                                    + (f": {f['file']}" if "file" in f else "")),
    ("done", {"file"}, lambda f: f"sampling done: record {f['file']}"),
    ("done", {"checkpoint"}, _trained),
    ("done", {"message"}, _with_epoch),
    ("epoch", {"epoch"}, _epoch),
    ("interrupted", {"message"}, lambda f: f["message"]),
    ("error", {"message"}, lambda f: f"training stopped: {f['message']}"),
]


class TerminalProgress:
    """Shows progress events to a person: a tqdm bar with rate and ETA on a terminal, a plain line
    at most every `every` seconds otherwise (logs, jobs); other events as one sentence each (`sentence`)."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every, self.last, self.bar, self.label = every, 0.0, None, None

    def __call__(self, record: dict) -> None:
        event = record["event"]
        if event not in ("progress", "step"):
            self._close()
            print(sentence(record), file=self.stream, flush=True)
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
