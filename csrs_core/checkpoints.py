"""One checkpoint format: weights plus JSON metadata, saved atomically, loaded without running code.

A file is a torch.save'd dict {"format", "meta_json", "state_dict", "train_state"?}; it is read with
torch.load(weights_only=True), which refuses any pickled object other than tensors and plain
containers, so a crafted file cannot execute code."""
from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import torch

from csrs_core import CSRSError, __version__
from csrs_core.atomic import atomic_path
from csrs_core.models import build_model

FORMAT = "csrs-checkpoint-v1"
REQUIRED_META = ("arch", "classes", "dataset", "sigma", "method", "mean", "std")


class CheckpointError(CSRSError):
    """A checkpoint that cannot be used; the message says why."""


def save_checkpoint(path, model: torch.nn.Module, meta: dict, train_state: dict | None = None) -> None:
    """Write weights and metadata to `path` atomically (a crash leaves the old file intact)."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {missing}")
    meta = dict(meta, code_version=__version__)
    payload = {"format": FORMAT, "meta_json": json.dumps(meta),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path) -> dict:
    """The raw payload, validated; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "WeightsUnpickler error" in ln), "")
        if "Unsupported global" in detail:
            raise CheckpointError(f"{path} holds objects other than weights and metadata and was refused "
                                  f"for safety (loading it could run code): {detail}") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {detail}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                              f"{str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CSRS checkpoint (a foreign PyTorch file?); "
                              "train with `python -m csrs_core train` or convert it to this format")
    try:
        payload["meta"] = json.loads(payload["meta_json"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has unreadable metadata") from None
    missing = [k for k in REQUIRED_META if k not in payload["meta"]]
    if missing:
        raise CheckpointError(f"{path} metadata lacks {missing}")
    return payload


def read_meta(path) -> dict:
    return read_checkpoint(path)["meta"]


def load_model(path, num_classes: int | None = None):
    """(model in eval mode, metadata); raises CheckpointError on a mismatch with num_classes."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    m = len(meta["classes"])
    if num_classes is not None and num_classes != m:
        raise CheckpointError(f"{path} was trained on {m} classes but the data has {num_classes}")
    model = build_model(meta["arch"], m, meta["mean"], meta["std"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit architecture {meta['arch']} with {m} classes: "
                              f"{str(exc).splitlines()[0]}") from None
    return model.eval(), meta


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_checkpoints(folder) -> list[Path]:
    return sorted(Path(folder).rglob("*.pt"))
