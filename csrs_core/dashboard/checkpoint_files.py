"""Adding an uploaded checkpoint to a case folder (checked, staged, loaded safely, moved in) and
deleting one with its records, never while a run writes it."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

from csrs_core.runtime.atomic import FileWriteError
from csrs_core.models.checkpoints import CheckpointError, read_meta
from csrs_core.runtime.locks import OutputBusyError, output_lock
from csrs_core.sampling.store import cert_dir
from csrs_core.dashboard.option_widgets import case_folder, plain_name


def add_uploaded_checkpoint(root: Path, target: str, name: str, content: bytes) -> dict:
    """Store `content` as `root/target/name` when it is a readable CSRS checkpoint (weights-only load:
    an upload cannot run code); its metadata. ValueError with a message that names only what the
    user typed (never the server's staging path) when the name, folder or file is refused;
    FileWriteError when the folder cannot be written. Nothing is changed on failure."""
    name = Path(name).name
    folder = case_folder(root, target)
    plain_name(name, "File name")
    if not name.endswith(".pt"):
        raise ValueError(f"File name: {name!r} must end in .pt")
    if (folder / name).exists():
        raise ValueError(f"{target}/{name} already exists; delete it first or rename the upload.")
    try:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            staged = Path(tmp) / name
            staged.write_bytes(content)
            try:
                meta = read_meta(staged)
            except CheckpointError as exc:
                raise ValueError(f"Upload refused: {str(exc).replace(str(staged), name)}") from None
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged), folder / name)
    except OSError as exc:
        raise FileWriteError(f"{target}/{name}", exc.strerror or str(exc)) from exc
    return meta


def delete_checkpoint(path: Path) -> None:
    """Delete the checkpoint at `path`, its certification records and its progress log, holding the
    locks a training or certification run holds while it writes them. ValueError, deleting nothing,
    while such a run is writing; FileWriteError when the folder cannot be written."""
    certs = cert_dir(path)
    with ExitStack() as held:
        try:
            held.enter_context(output_lock(path, timeout=0))
            for lock in certs.glob("*.lock") if certs.is_dir() else ():
                held.enter_context(output_lock(lock.with_suffix(""), timeout=0))
        except OutputBusyError:
            raise ValueError(f"{path.name} is being written by a running job (training or certification): "
                             "cancel it or wait for it, then delete") from None
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise FileWriteError(path.name, exc.strerror or str(exc)) from exc
        shutil.rmtree(certs, ignore_errors=True)
        path.with_suffix(".progress.jsonl").unlink(missing_ok=True)


def delete_record(path: Path) -> None:
    """Delete one certification record file (a stale or corrupt one, say), holding the lock a
    certification holds while it writes it. ValueError, deleting nothing, while one is writing it."""
    try:
        with output_lock(path, timeout=0):
            path.unlink(missing_ok=True)
    except OutputBusyError:
        raise ValueError(f"{path.name} is being written by a running certification: wait for it") from None
    except OSError as exc:
        raise FileWriteError(path.name, exc.strerror or str(exc)) from exc
