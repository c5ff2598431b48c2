"""On-disk cache of stage-A counts, keyed by everything they depend on; resumable and verified.

Layout: beside checkpoint `X.pt`, a folder `X.certs/` with `<key>.npz` per certification
(counts0, counts, labels, indices, a digest of them and JSON metadata)."""
from __future__ import annotations

import hashlib
import json
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.distributed as dist

from csrs_core.atomic import atomic_write_npz
from csrs_core.checkpoints import file_digest, load_model
from csrs_core.data import ImageSet
from csrs_core.device import distributed_setup
from csrs_core.progress import ProgressLog
from csrs_core.sampling import sample_counts

CHUNK = 32  # examples between saves of a partial result


@dataclass
class CountsRecord:
    counts0: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    meta: dict
    from_cache: bool = False
    reused: int = 0  # examples taken from an overlapping cached sample instead of sampled


def cert_dir(checkpoint) -> Path:
    return Path(checkpoint).with_suffix(".certs")


def cache_key(checkpoint_sha: str, data: ImageSet, sigma: float, n0: int, n: int, seed: int, precision: str) -> dict:
    """Everything stage A depends on."""
    return {"checkpoint_sha256": checkpoint_sha, "dataset": data.name, "split": data.split,
            "indices_sha256": hashlib.sha256(np.asarray(data.indices, dtype=np.int64).tobytes()).hexdigest(),
            "content_sha256": data.content_digest(), "sigma": float(sigma), "n0": int(n0), "n": int(n),
            "seed": int(seed), "precision": precision}


def key_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()


def write_counts(path, counts0, counts, labels, indices, meta, done=None):
    """Write a cache file atomically (with `done`, a partial one)."""
    extra = {} if done is None else {"done": done}
    atomic_write_npz(path, counts0=counts0, counts=counts, labels=labels, indices=indices,
                     digest=np.array(_digest(counts0, counts, labels, indices)),
                     meta=np.array(json.dumps(meta)), **extra)


def _read(path):
    """The arrays and metadata of a cache file, or None (with a warning) when it is corrupt."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if str(arrays["digest"]) != _digest(arrays["counts0"], arrays["counts"], arrays["labels"], arrays["indices"]):
            raise ValueError("digest mismatch")
        arrays["meta"] = json.loads(str(arrays["meta"]))
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, json.JSONDecodeError) as exc:
        warnings.warn(f"cache file {path} is corrupt ({exc}); it will be recomputed")
        return None


def load_record(path) -> CountsRecord | None:
    a = _read(path)
    if a is None or "done" in a:
        return None
    return CountsRecord(a["counts0"], a["counts"], a["labels"], a["indices"], a["meta"], from_cache=True)


def cached_records(checkpoint) -> list[tuple[Path, dict]]:
    """(file, metadata) of every complete certification cached for a checkpoint, newest first."""
    out = []
    for path in sorted(cert_dir(checkpoint).glob("*.npz")):
        if ".partial" in path.name or ".rank" in path.name:
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                out.append((path, json.loads(str(z["meta"]))))
        except Exception:
            continue
    return sorted(out, key=lambda pm: -pm[1].get("created", 0))


def main_record_path(checkpoint) -> Path | None:
    """The cached certification shown by default: the one with the most examples, newest among equals."""
    records = cached_records(checkpoint)
    if not records:
        return None
    return max(records, key=lambda pm: (pm[1].get("num_examples", 0), pm[1].get("created", 0)))[0]


def _reuse_overlapping(checkpoint, key: dict, data: ImageSet, counts0, counts, done) -> int:
    """Fill rows of examples already certified under the same key in another cached sample of
    this checkpoint (e.g. a 500-image sample inside a 1,000-image one). A row is taken only when
    that sample's images, gathered from `data`, hash to the digest it was made from, so reused
    counts are exactly what sampling them again would give. Returns the number of rows filled."""
    same = ("checkpoint_sha256", "dataset", "split", "sigma", "n0", "n", "seed", "precision")
    position = {int(i): p for p, i in enumerate(data.indices)}
    filled = 0
    for path, meta in cached_records(checkpoint):
        if done.all():
            break
        if any(meta.get(f) != key[f] for f in same):
            continue
        record = load_record(path)
        if record is None or not all(int(i) in position for i in record.indices):
            continue
        rows = np.array([position[int(i)] for i in record.indices], dtype=np.int64)
        if data.subset(rows).content_digest() != meta.get("content_sha256"):
            continue
        new = ~done[rows]
        counts0[rows[new]], counts[rows[new]], done[rows[new]] = record.counts0[new], record.counts[new], True
        filled += int(new.sum())
    return filled


def certify_counts(checkpoint, data: ImageSet, n0: int = 100, n: int = 10000, batch: int = 1000,
                   seed: int = 0, sigma: float | None = None, device: str = "auto", precision: str = "fp32",
                   progress: ProgressLog | None = None) -> CountsRecord | None:
    """Stage-A counts for `data` under the checkpoint's smoothed classifier, from the cache when
    present; otherwise sampled (resuming a partial run) and cached. Under torchrun each rank
    samples its share (every world-th example) and rank 0 merges the shares into one cache file
    (the other ranks return None)."""
    progress = progress or ProgressLog(None)
    model, ckpt_meta = load_model(checkpoint, data.num_classes)
    sigma = float(ckpt_meta["sigma"] if sigma is None else sigma)
    key = cache_key(file_digest(checkpoint), data, sigma, n0, n, seed, precision)
    name = key_name(key)
    final = cert_dir(checkpoint) / f"{name}.npz"
    if final.exists():
        record = load_record(final)
        if record is not None:
            progress.write("cached", done=len(record.labels), total=len(record.labels), file=str(final))
            return record
    world, rank, dev = distributed_setup(device)
    N, m = len(data), data.num_classes
    labels = data.labels.numpy()
    meta = {**key, "key": name, "checkpoint": Path(checkpoint).name, "method": ckpt_meta["method"],
            "classes": data.classes, "num_examples": N, "device": str(dev)}
    shard = cert_dir(checkpoint) / (f"{name}.partial.npz" if world == 1 else f"{name}.rank{rank}-of-{world}.npz")
    counts0, counts, done = np.zeros((N, m), np.int64), np.zeros((N, m), np.int64), np.zeros(N, bool)
    old = _read(shard) if shard.exists() else None
    if old is not None and old["counts"].shape == (N, m):
        counts0, counts, done = old["counts0"], old["counts"], old["done"]
    reused = _reuse_overlapping(checkpoint, key, data, counts0, counts, done)
    mine = [p for p in range(N) if p % world == rank and not done[p]]
    total = len(mine) * (n0 + n)
    state = {"samples": 0, "t0": time.time(), "last": 0.0}

    def on_batch(k):
        state["samples"] += k
        now = time.time()
        if now - state["last"] > 1.0:
            state["last"] = now
            rate = state["samples"] / max(now - state["t0"], 1e-9)
            progress.write("progress", done=state["samples"], total=total, samples_per_s=rate,
                           eta_s=(total - state["samples"]) / max(rate, 1e-9))

    progress.write("start", examples=len(mine), total=total, device=str(dev), resumed=int(done.sum()) - reused,
                   reused=reused)
    for start in range(0, len(mine), CHUNK):
        part = mine[start:start + CHUNK]
        c0, c = sample_counts(model, data.images, data.indices, m, sigma, n0, n, batch, seed, dev,
                              precision, positions=part, on_batch=on_batch)
        counts0[part], counts[part], done[part] = c0[part], c[part], True
        write_counts(shard, counts0, counts, labels, data.indices, meta, done=done)
    if world > 1:
        dist.barrier()
        if rank == 0:
            shards = [cert_dir(checkpoint) / f"{name}.rank{r}-of-{world}.npz" for r in range(world)]
            for s in shards:
                a = _read(s)
                sel = a["done"]
                counts0[sel], counts[sel], done[sel] = a["counts0"][sel], a["counts"][sel], True
        dist.barrier()
    else:
        shards = [shard]
    if rank != 0:
        return None
    meta["created"] = time.time()
    write_counts(final, counts0, counts, labels, data.indices, meta)
    for s in shards:
        s.unlink(missing_ok=True)
    progress.write("done", done=total, total=total, file=str(final))
    return CountsRecord(counts0, counts, labels, np.asarray(data.indices), meta, reused=reused)
