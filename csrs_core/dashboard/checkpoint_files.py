"""Adding an uploaded checkpoint to a case folder (checked, staged, loaded safely, moved in),
importing an uploaded checkpoint of the field through the core's importer, and deleting one with its
records, never while a run writes or reads it."""
from __future__ import annotations

import errno
import shutil
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

from csrs_core import CSRSError, jobs
from csrs_core.interop.importers import DATASET_CLASSES, describe_source, import_checkpoint
from csrs_core.runtime.atomic import FileWriteError
from csrs_core.models.checkpoints import CheckpointError, read_meta
from csrs_core.runtime.locks import OutputBusyError, output_lock
from csrs_core.sampling.store import cert_dir
from csrs_core.dashboard.option_widgets import case_folder, plain_name


def add_uploaded_checkpoint(root: Path, target: str, name: str, content: bytes) -> dict:
    """Store `content` as `root/target/name` when it is a readable CSRS checkpoint (weights-only load:
    an upload cannot run code); its metadata. ValueError, with a message that names only what the
    user typed (never a path of the server), when the name or folder is refused, the file exists, a
    queued or running job writes it, or the folder cannot be written. Nothing is changed on failure."""
    name = Path(name).name
    folder = _case_folder(root, target)
    plain_name(name, "File name")
    if not name.endswith(".pt"):
        raise ValueError(f"File name: {name!r} must end in .pt")
    path, shown = folder / name, f"{target}/{name}"
    try:
        if path.exists():
            raise ValueError(f"{shown} already exists; delete it first or rename the upload.")
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            staged = Path(tmp) / name
            staged.write_bytes(content)
            try:
                meta = read_meta(staged)
            except CheckpointError as exc:
                raise ValueError(f"Upload refused: {str(exc).replace(str(staged), name)}") from None
            folder.mkdir(parents=True, exist_ok=True)
            with _output_free(root, path, shown):
                if path.exists():
                    raise ValueError(f"{shown} already exists; delete it first or rename the upload.")
                shutil.move(str(staged), path)
    except OSError as exc:
        raise _file_refusal("add", shown, exc) from None
    return meta


@contextmanager
def _output_free(root: Path, path: Path, shown: str):
    """Hold, for the block, the lock a training or certification run holds on its output `path` (when
    its folder exists: no run writes into one that does not). ValueError naming `shown` when a queued
    or running job writes or reads `path` (job_using: also before the job takes its lock) or a run
    holds the lock."""
    if job := job_using(root, path):
        raise ValueError(f"{shown} is used by the {job.get('kind', '')} job {job['id']} ({job['state']}): "
                         "choose another name, or wait for the job or cancel it")
    with ExitStack() as held:
        try:
            if path.parent.is_dir():
                held.enter_context(output_lock(path, timeout=0))
        except OutputBusyError:
            raise ValueError(f"{shown} is being written by a running job (training or certification): choose "
                             "another name, or wait for the job or cancel it") from None
        yield


def _case_folder(root: Path, target: str) -> Path:
    """case_folder() of `target`, also refusing a folder name ending in .pt: the checkpoint listing
    (every *.pt under the root) would show such a folder as a broken checkpoint."""
    folder = case_folder(root, target)
    if any(part.endswith(".pt") for part in Path(target).parts):
        raise ValueError(f"Case folder: {target!r} is not allowed: a folder name must not end in .pt (it would be "
                         "listed as a checkpoint); choose a plain name such as cifar10")
    return folder


def _file_refusal(action: str, shown: str, exc: OSError) -> ValueError:
    """The OSError met while trying to `action` (add, delete, import) `shown`, what the user typed or
    chose, as a message that names only that: a name too long for the file system, a folder that is
    not writable, or the system's reason."""
    if exc.errno == errno.ENAMETOOLONG:
        return ValueError(f"Cannot {action} {shown[:60]}{'...' if len(shown) > 60 else ''}: a folder or file name "
                          "is too long for this file system (at most 255 bytes each on most); choose a shorter one")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ValueError(f"Cannot {action} {shown}: its folder is not writable ({exc.strerror}); make it "
                          "writable, then try again")
    return ValueError(f"Cannot {action} {shown}: {exc.strerror or exc.__class__.__name__}")


def delete_checkpoint(path: Path, shown: str | None = None) -> None:
    """Delete the checkpoint at `path`, its certification records and its progress log, holding the
    locks a training or certification run holds while it writes them. ValueError, deleting nothing,
    while such a run is writing or when its folder is not writable; messages name the checkpoint as
    `shown` (what the user chose; its file name by default), never a path of the server."""
    shown = shown or path.name
    certs = cert_dir(path)
    try:
        with ExitStack() as held:
            held.enter_context(output_lock(path, timeout=0))
            for lock in certs.glob("*.lock") if certs.is_dir() else ():
                held.enter_context(output_lock(lock.with_suffix(""), timeout=0))
            path.unlink(missing_ok=True)
            shutil.rmtree(certs, ignore_errors=True)
            path.with_suffix(".progress.jsonl").unlink(missing_ok=True)
    except OutputBusyError:
        raise ValueError(f"{shown} is being written by a running job (training or certification): "
                         "cancel it or wait for it, then delete") from None
    except OSError as exc:
        raise _file_refusal("delete", shown, exc) from None


def delete_record(path: Path) -> None:
    """Delete one certification record file (a stale or corrupt one, say), holding the lock a
    certification holds while it writes it. ValueError, deleting nothing, while one is writing it or
    when its folder is not writable; messages name the record's file name only."""
    try:
        with output_lock(path, timeout=0):
            path.unlink(missing_ok=True)
    except OutputBusyError:
        raise ValueError(f"{path.name} is being written by a running certification: wait for it") from None
    except OSError as exc:
        raise _file_refusal("delete", path.name, exc) from None


@contextmanager
def _staged(root: Path, name: str, content: bytes):
    """The upload as a file named `name` in a private folder under `root`, removed afterwards."""
    if not name or name in (".", "..") or any(ord(c) < 32 for c in name):
        raise ValueError(f"File name: {name!r} is not a file name")
    try:
        with tempfile.TemporaryDirectory(dir=root, prefix=".import-") as tmp:
            staged = Path(tmp) / name
            staged.write_bytes(content)
            yield staged
    except OSError as exc:
        raise FileWriteError(name, exc.strerror or str(exc)) from exc


def describe_upload(root: Path, name: str, content: bytes, dataset: str, fmt: str = "auto") -> dict:
    """interop.importers.describe_source of an uploaded file (format, architecture, class count,
    default normalisation), read weights-only, nothing kept; ValueError with the importer's reason,
    naming the upload and never the staging path, when it would refuse the file."""
    name = Path(name).name
    with _staged(root, name, content) as staged:
        try:
            return describe_source(staged, dataset, fmt)
        except CheckpointError as exc:
            raise ValueError(str(exc).replace(str(staged), name)) from None


def folder_classes(folder: Path) -> list[str] | None:
    """The class names of the first readable checkpoint in `folder` (None when it has none)."""
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else ():
        try:
            return read_meta(path)["classes"]
        except CheckpointError:
            continue
    return None


def import_uploaded_checkpoint(root: Path, target: str, name: str, content: bytes, out_name: str, *,
                               arch: str | None, dataset: str, sigma: float, fmt: str = "auto",
                               mean: list[float] | None = None, std: list[float] | None = None) -> tuple[Path, dict]:
    """Import the uploaded file `name` with interop.importers.import_checkpoint (weights-only loading,
    every check of `csrs import`) as `root/target/out_name` (.pt added when missing); the path written
    and its metadata. ValueError, writing nothing, when the folder or name is refused, the file exists,
    the folder holds checkpoints of other classes than `dataset`, or the importer refuses; messages
    name the upload and the case folder, never the server's paths. ValueError too when a queued or
    running job writes that output, or the folder cannot be made; FileWriteError when the file cannot
    be written."""
    folder = _case_folder(root, target)
    file = plain_name(out_name if out_name.endswith(".pt") else f"{out_name}.pt", "Output name")
    out, shown, name = folder / file, f"{target}/{file}", Path(name).name
    try:
        if out.exists():
            raise ValueError(f"{shown} already exists; importing over it would make its certifications stale: "
                             "choose another output name, or delete it first")
        wanted, held = DATASET_CLASSES.get(dataset), folder_classes(folder)
        if wanted is not None and held is not None and list(held) != list(wanted):
            raise ValueError(f"The case folder {target} holds models of other classes ({', '.join(held)}) than "
                             f"{dataset} ({', '.join(wanted)}): import it into a case folder of its own")
        with _output_free(root, out, shown), _staged(root, name, content) as staged:
            try:
                meta = import_checkpoint(staged, out, arch, dataset, sigma, fmt, mean, std)
            except FileWriteError as exc:
                raise FileWriteError(shown, getattr(exc.__cause__, "strerror", None) or "not writable") from None
            except CSRSError as exc:
                raise ValueError(str(exc).replace(str(out), shown).replace(str(staged), name)) from None
    except OSError as exc:
        raise _file_refusal("import", shown, exc) from None
    return out, meta


def job_using(root: Path, path: Path) -> dict | None:
    """The first active job (queued, running or orphaned) that writes the checkpoint at `path` (a
    resolved path under `root`) or its certifications, or whose command reads it (--checkpoint,
    --init), as the dashboard starts them (paths under the resolved root); None when no job does.
    Covers the moments before a job takes its locks."""
    def stem(text) -> str | None:
        if not isinstance(text, str):
            return None
        return next((text[:-len(end)] for end in (".pt", ".certify") if text.endswith(end)), text)

    target = stem(str(path))
    for job in jobs.list_jobs(root):
        named = [job.get("out"), *(job.get("argv") or [])]
        if job["state"] in jobs.ACTIVE and any(stem(text) == target for text in named):
            return job
    return None
