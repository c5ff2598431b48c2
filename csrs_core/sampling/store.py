"""The counts store: stage-A certification records on disk, their keys, provenance and status.

Beside checkpoint `X.pt`, the folder `X.certs/` holds one `<key>.npz` per certification: counts0,
counts, labels, example indices, JSON metadata and a digest over all of them. A record's key names
everything its counts depend on (checkpoint content, data, σ, n0, n, seed, precision, device type,
sampling scheme), so a record is only ever presented as the result of the exact checkpoint content
and settings that produced it: one whose checkpoint digest differs from the file is *stale*."""
from __future__ import annotations

import hashlib
import json
import shlex
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from csrs_core import CSRSError
from csrs_core.certification.comparisons import choose_together
from csrs_core.certification.radii import CLOPPER_PEARSON
from csrs_core.certification.sequences import BETA_BINOMIAL
from csrs_core.data import ImageSet
from csrs_core.models.checkpoints import CheckpointError, file_digest, read_meta
from csrs_core.runtime.atomic import atomic_write_npz
from csrs_core.sampling.counts import SAMPLING_SCHEME

FORMAT = "csrs-counts-v2"
KEY_FIELDS = ("checkpoint_sha256", "dataset", "split", "indices_sha256", "content_sha256", "sigma",
              "n0", "n", "seed", "precision", "device_type", "scheme", "sequential")
DATA_FIELDS = ("dataset", "split", "indices_sha256", "content_sha256")


class CorruptRecord(CSRSError):
    """A record file that cannot be trusted (unreadable, digest mismatch, unknown format)."""


@dataclass
class CountsRecord:
    """Stage-A counts of one certification and the metadata that names what produced them."""
    counts0: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    meta: dict
    path: Path | None = None
    from_cache: bool = False
    reused: int = 0  # examples taken from an overlapping cached sample instead of sampled

    @property
    def data_id(self) -> tuple:
        return data_identity(self.meta)

    @property
    def n_used(self) -> np.ndarray:
        """Estimation copies each example used: n for a fixed-budget record, its stop for a sequential one."""
        return self.counts.sum(axis=1)

    @property
    def bounds(self):
        """The confidence bounds its counts are read with: a confidence sequence for a sequential record
        (valid at each example's data-dependent stop), else Clopper–Pearson."""
        return BETA_BINOMIAL if self.meta.get("sequential") else CLOPPER_PEARSON


@dataclass
class RecordInfo:
    """A record file as listed: status is 'valid', 'stale' (made from other checkpoint content)
    or 'corrupt' (reason says why); meta is empty for a corrupt file."""
    path: Path
    status: str
    meta: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def data_id(self) -> tuple:
        return data_identity(self.meta)

    def describe(self) -> str:
        m = self.meta
        if not m:
            return f"{self.path.name} ({self.status}: {self.reason})"
        budget = f"n={m['n']}" if not m.get("sequential") else \
            f"sequential at ε {', '.join(f'{e:g}' for e in m['sequential']['eps'])}, cap n={m['n']}, " \
            f"{m.get('samples_per_example', 0):,.0f} samples/example"
        return (f"{m['dataset']}/{m['split']}, {m['num_examples']} examples, n0={m['n0']}, {budget}, "
                f"σ={m['sigma']}, {m['precision']}, seed {m['seed']}")


def data_identity(meta: dict) -> tuple:
    return tuple(meta.get(f) for f in DATA_FIELDS)


def cert_dir(checkpoint) -> Path:
    return Path(checkpoint).with_suffix(".certs")


def make_key(checkpoint_sha: str, data: ImageSet, sigma: float, n0: int, n: int, seed: int,
             precision: str, device_type: str, sequential: dict | None = None) -> dict:
    """Everything stage A's counts depend on (sequential: the stopping rule's key; n is then the cap)."""
    return {"checkpoint_sha256": checkpoint_sha, "dataset": data.name, "split": data.split,
            "indices_sha256": indices_digest(data.indices), "content_sha256": data.content_digest(),
            "sigma": float(sigma), "n0": int(n0), "n": int(n), "seed": int(seed), "precision": precision,
            "device_type": device_type, "scheme": SAMPLING_SCHEME, "sequential": sequential}


def key_name(key: dict) -> str:
    """The record's file name: a digest of its key (a fixed-budget record's key has no 'sequential')."""
    fields = {f: key.get(f) for f in KEY_FIELDS if f != "sequential" or key.get("sequential")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def indices_digest(indices) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def _digest(arrays: dict, meta_json: str) -> str:
    h = hashlib.sha256()
    for name in ("counts0", "counts", "labels", "indices"):
        h.update(np.ascontiguousarray(arrays[name], dtype=np.int64).tobytes())
    h.update(meta_json.encode())
    return h.hexdigest()


def write_record(path, counts0, counts, labels, indices, meta: dict) -> None:
    """Write a complete record atomically."""
    arrays = {"counts0": counts0, "counts": counts, "labels": labels, "indices": indices}
    meta_json = json.dumps({**meta, "format": FORMAT}, sort_keys=True)
    atomic_write_npz(path, **arrays, meta=np.array(meta_json), digest=np.array(_digest(arrays, meta_json)))


def read_arrays(path) -> dict:
    """The arrays and metadata of a record file; CorruptRecord (with the reason) when it cannot be trusted."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta_json = str(arrays.pop("meta"))
        if str(arrays.pop("digest")) != _digest(arrays, meta_json):
            raise CorruptRecord("its digest does not match its content")
        meta = json.loads(meta_json)
    except CorruptRecord:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CorruptRecord(f"unreadable: {exc.__class__.__name__}: {str(exc)[:120]}") from None
    if meta.get("format") != FORMAT:
        raise CorruptRecord(f"format {meta.get('format')!r} is not {FORMAT!r} (re-key it with "
                            "scripts/rekey_records.py, or certify again)")
    arrays["meta"] = meta
    return arrays


def load_record(path) -> CountsRecord:
    """A complete record; CorruptRecord when the file is corrupt."""
    a = read_arrays(path)
    return CountsRecord(a["counts0"], a["counts"], a["labels"], a["indices"], a["meta"], Path(path),
                        from_cache=True)


def partial_folder(folder: Path, key: str, rank: int = 0, world: int = 1) -> Path:
    """Where a run (or a torchrun rank's share of it) keeps the chunks it has finished."""
    return folder / (f"{key}.partial" if world == 1 else f"{key}.rank{rank}-of-{world}")


def _chunk_digest(key: str, arrays: dict) -> str:
    h = hashlib.sha256(key.encode())
    for name in ("positions", "counts0", "counts"):
        h.update(np.ascontiguousarray(arrays[name], dtype=np.int64).tobytes())
    return h.hexdigest()


def write_chunk(partial: Path, key: str, positions, counts0, counts) -> None:
    """Add finished examples (their positions in the data and their count rows) to a run's partial folder as
    a file of their own, written atomically: saving costs the chunk's size, whatever the data's."""
    partial.mkdir(parents=True, exist_ok=True)
    arrays = {"positions": np.asarray(positions, dtype=np.int64), "counts0": np.asarray(counts0),
              "counts": np.asarray(counts)}
    atomic_write_npz(partial / f"{int(arrays['positions'][0]):010d}.npz", **arrays,
                     digest=np.array(_chunk_digest(key, arrays)))


def read_chunks(partial: Path, key: str, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """counts0, counts and done [N] gathered from a partial folder's chunks (zeros where none), and a
    note for every chunk that is unreadable or not of this run (its examples are sampled again)."""
    counts0, counts, done = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape[0], bool)
    notes = []
    for path in sorted(partial.glob("*.npz")) if partial.is_dir() else []:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("positions", "counts0", "counts", "digest")}
            if str(arrays["digest"]) != _chunk_digest(key, arrays) or arrays["counts"].shape[1:] != shape[1:] \
                    or arrays["positions"].max(initial=-1) >= shape[0]:
                raise ValueError("its digest or shape does not match this run")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            notes.append(f"{path.name}: {exc}")
            continue
        rows = arrays["positions"]
        counts0[rows], counts[rows], done[rows] = arrays["counts0"], arrays["counts"], True
    return counts0, counts, done, notes


@lru_cache(maxsize=4096)
def _listed(path: str, size: int, mtime_ns: int) -> tuple[str, str]:
    """(metadata JSON, '') of a record file read alone, or ('', why it cannot be read): its counts are not
    read here (load_record and verified() read and check them when the record is used)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta_json = str(z["meta"])
        fmt = json.loads(meta_json).get("format")
    except (OSError, ValueError, KeyError, EOFError, AttributeError, zipfile.BadZipFile, zlib.error) as exc:
        return "", f"unreadable: {exc.__class__.__name__}: {str(exc)[:120]}"
    if fmt != FORMAT:
        return "", f"format {fmt!r} is not {FORMAT!r} (re-key it with scripts/rekey_records.py, or certify again)"
    return meta_json, ""


@lru_cache(maxsize=1024)
def _check(path: str, size: int, mtime_ns: int) -> str:
    try:
        read_arrays(path)
    except CorruptRecord as exc:
        return str(exc)
    return ""


def verified(info: RecordInfo) -> str:
    """'' when the record's file matches its digest (read once per file version), else why it does not."""
    st = info.path.stat()
    return _check(str(info.path), st.st_size, st.st_mtime_ns)


def list_records(checkpoint) -> list[RecordInfo]:
    """Every complete record file beside `checkpoint`, newest first, each marked valid, stale (its
    checkpoint digest is not the file's current content) or corrupt (its metadata cannot be read), from
    the metadata alone, read once per file version; a record's counts are checked when it is used."""
    folder = cert_dir(checkpoint)
    if not folder.is_dir():
        return []
    current = file_digest(checkpoint) if Path(checkpoint).is_file() else None
    infos = []
    for path in sorted(folder.glob("*.npz")):
        if ".partial" in path.name or ".rank" in path.name:   # an interrupted run's work, not a record
            continue
        st = path.stat()
        meta_json, reason = _listed(str(path), st.st_size, st.st_mtime_ns)
        if reason:
            infos.append(RecordInfo(path, "corrupt", reason=reason))
            continue
        meta = json.loads(meta_json)
        status = "valid" if meta.get("checkpoint_sha256") == current else "stale"
        infos.append(RecordInfo(path, status, meta))
    return sorted(infos, key=lambda r: -r.meta.get("created", 0))


def choose_records(listings: dict) -> dict:
    """The record shown for each checkpoint: {checkpoint: (RecordInfo or None, same_data: bool)}.

    The records are chosen together, by the one comparison policy of csrs_core.certification.comparisons
    (choose_together, whose docstring and the README's "Which record is shown" give the rule):
    the examples, n0, n, seed, precision and scheme shared by the most checkpoints, then the
    largest n, the most examples, the newest. same_data: the record is on the common examples."""
    return choose_together(listings)[0]


def select_for_comparison(checkpoints, name=None, content_sha256: str | None = None
                          ) -> tuple[dict, list[str], dict, list[str]]:
    """The records compared side by side for `checkpoints`, chosen together by the one comparison
    policy (csrs_core.certification.comparisons.choose_together: the examples, n0, n, seed, precision
    and scheme shared by the most checkpoints).

    Returns ({checkpoint: (RecordInfo, same_data)} for checkpoints with a valid record; notes on
    unreadable checkpoints and on corrupt and stale records; {checkpoint: its listing} for every
    readable checkpoint; one line per setting in which the records chosen still differ, each
    checkpoint named by `name(checkpoint)`, default its file name without .pt). With `content_sha256`,
    only records of exactly those examples (ImageSet.content_digest) are considered."""
    notes, listings = [], {}
    for ckpt in checkpoints:
        try:
            read_meta(ckpt)
        except CheckpointError as exc:
            notes.append(f"{ckpt}: left out: {exc}")
            continue
        listings[ckpt] = infos = [i for i in list_records(ckpt)
                                  if content_sha256 is None or i.meta.get("content_sha256") == content_sha256]
        for info in infos:
            if info.status == "corrupt":
                notes.append(f"{ckpt}: record {info.path.name} is corrupt ({info.reason}); not used")
            elif info.status == "stale":
                notes.append(f"{ckpt}: record {info.path.name} ({info.describe()}) was made from other "
                             f"checkpoint content (the file changed since); not shown. Re-certify with: "
                             f"{recertify_command(ckpt, info.meta)}")
    while True:   # the records chosen are checked against their digests; a corrupt one is replaced
        chosen, differences = choose_together(listings, name)
        bad = [(c, info) for c, (info, _) in chosen.items() if info is not None and verified(info)]
        if not bad:
            break
        for ckpt, info in bad:
            notes.append(f"{ckpt}: record {info.path.name} is corrupt ({verified(info)}); not used")
            listings[ckpt] = [RecordInfo(i.path, "corrupt", reason=verified(i)) if i is info else i
                              for i in listings[ckpt]]
    shown = {c: v for c, v in chosen.items() if v[0] is not None}
    return shown, notes, listings, differences


def recertify_command(checkpoint, meta: dict) -> str:
    """The command that certifies `checkpoint` (the file the user has, wherever it now is) again
    with a stale record's settings."""
    if meta.get("command"):
        words = shlex.split(meta["command"])
        for i, word in enumerate(words):
            if word == "--checkpoint" and i + 1 < len(words):
                words[i + 1] = str(checkpoint)
            elif word.startswith("--checkpoint="):
                words[i] = f"--checkpoint={checkpoint}"
        return shlex.join(words)
    return (f"csrs certify --checkpoint {shlex.quote(str(checkpoint))} --dataset {meta.get('dataset')} "
            f"--split {meta.get('split')} --n0 {meta.get('n0')} --n {meta.get('n')} --sigma {meta.get('sigma')} "
            f"--seed {meta.get('seed')} --precision {meta.get('precision')} "
            "(with the same example selection as before)")
