"""One checkpoint format: weights plus JSON metadata, saved atomically, loaded without running code.

A file is a torch.save'd dict {"format", "meta_json", "state_dict", "train_state"?}; it is read with
torch.load(weights_only=True), which refuses any pickled object other than tensors and plain
containers, so a crafted file cannot execute code."""
from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from csrs_core import CSRSError, __version__
from csrs_core.models.architectures import build_model
from csrs_core.runtime.atomic import FileWriteError, atomic_path

FORMAT = "csrs-checkpoint-v1"
REQUIRED_META = ("arch", "classes", "dataset", "sigma", "method", "mean", "std")


class CheckpointError(CSRSError):
    """A checkpoint that cannot be used; the message says why."""


def save_checkpoint(path, model: torch.nn.Module, meta: dict, train_state: dict | None = None) -> None:
    """Write weights and metadata to `path` atomically (a crash leaves the old file intact)."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {missing}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = dict(meta, code_version=__version__, tensors_sha256=tensors_digest(state))
    payload = {"format": FORMAT, "meta_json": json.dumps(meta), "state_dict": state}
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch reports a failed write (a full disk) as a RuntimeError
            raise FileWriteError(path, str(exc).splitlines()[0]) from exc


def safe_load(path):
    """torch.load(weights_only=True) of `path`: tensors and plain containers only, never code.
    CheckpointError saying whether the file was refused for safety or is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if re.search(r"(?i)global|blocked|not an allowed|unsupported class", text):  # any torch's wording
            detail = next((ln.strip() for ln in text.splitlines() if re.search(r"(?i)global|blocked", ln)), "")
            raise CheckpointError(f"{path} was refused for safety: it holds objects other than tensors and "
                                  f"plain containers (loading it could run code). {detail}".strip()) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or not a "
                              "PyTorch file)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or not a PyTorch "
                              f"file): {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}") from None


def read_checkpoint(path) -> dict:
    """The raw payload, validated; never executes code from the file."""
    path = Path(path)
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CSRS checkpoint (a foreign PyTorch file?); "
                              "train with `csrs train`, or convert it with `csrs import` (formats: cohen, macer, cs-rs, torchvision)")
    try:
        payload["meta"] = json.loads(payload["meta_json"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has unreadable metadata") from None
    _check_contents(path, payload)
    return payload


def _check_contents(path, payload: dict) -> None:
    """CheckpointError naming the first field of the payload that has the wrong type or value."""
    meta = payload["meta"]
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} metadata is not a JSON object")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{path} metadata lacks {missing}")
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{path} metadata 'classes' must be a list of at least 2 names; got {classes!r:.80}")
    sigma = meta["sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise CheckpointError(f"{path} metadata 'sigma' must be a finite number > 0; got {sigma!r:.40}")
    for name in ("mean", "std"):
        v = meta[name]
        if (not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                or (name == "std" and min(v) <= 0)):
            raise CheckpointError(f"{path} metadata {name!r} must be a list of finite numbers"
                                  f"{' > 0' if name == 'std' else ''}; got {v!r:.60}")
    shift = meta.get("logit_shift")
    if shift is not None and (not isinstance(shift, list) or len(shift) != len(classes) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in shift)):
        raise CheckpointError(f"{path} metadata 'logit_shift' must be a list of {len(classes)} finite numbers (one "
                              f"per class); got {shift!r:.60}")
    for name in ("arch", "method", "dataset"):
        if not isinstance(meta[name], str):
            raise CheckpointError(f"{path} metadata {name!r} must be text; got {meta[name]!r:.40}")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (weights)")
    if "tensors_sha256" in meta and meta["tensors_sha256"] != tensors_digest(state):
        raise CheckpointError(f"{path} is corrupt: its weights do not match the digest stored when it was saved "
                              "(a changed byte?); nothing was loaded from it")


def tensors_digest(state: dict) -> str:
    """sha256 over every tensor of a state dict (name, dtype, shape and values, in name order): what a
    checkpoint stores when saved and checks when read."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(state[name].shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_meta(path) -> dict:
    return read_checkpoint(path)["meta"]


def load_model(path, num_classes: int | None = None):
    """(model in eval mode, metadata); raises CheckpointError on a mismatch with num_classes."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    m = len(meta["classes"])
    if num_classes is not None and num_classes != m:
        raise CheckpointError(f"{path} was trained on {m} classes but the data has {num_classes}")
    try:  # an architecture not registered here is refused, never imported because the file names it
        model = build_model(meta["arch"], m, meta["mean"], meta["std"], meta.get("logit_shift"))
    except CSRSError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit architecture {meta['arch']} with {m} classes: "
                              f"{str(exc).splitlines()[0]}") from None
    return model.eval(), meta


def save_shifted(source, out, shift: Sequence[float], method: str = "cohen-shift") -> None:
    """Write to `out` the model of checkpoint `source` with `shift` added to its logits (a decision
    threshold baseline): the same weights, the shift in the metadata, the source named by content."""
    model, meta = load_model(source)
    shift = [float(v) for v in shift]
    meta = {k: v for k, v in meta.items() if k not in ("tensors_sha256", "code_version")}
    meta.update(method=method, logit_shift=shift,
                init={"checkpoint": Path(source).name, "sha256": file_digest(source), "method": meta["method"],
                      "epochs": meta.get("epochs_done")})
    if len(shift) != len(meta["classes"]) or not all(map(math.isfinite, shift)):
        raise CheckpointError(f"a logit shift needs {len(meta['classes'])} finite numbers (one per class); got {shift}")
    save_checkpoint(out, model, meta)  # the weights (the shift is not one of them) and the metadata


@lru_cache(maxsize=512)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path) -> str:
    """sha256 of a file's content (memoised per path, size and modification time)."""
    st = Path(path).stat()
    return _content_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def list_checkpoints(folder) -> list[Path]:
    return sorted(Path(folder).rglob("*.pt"))
