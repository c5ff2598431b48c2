"""The certification runner: what to sample, resuming, reuse of overlapping records, torchrun ranks.

`certify_counts` returns stage-A counts for a checkpoint and data: from the store when a valid
record with the same key exists, else sampled (resuming a partial run, reusing rows already
certified under the same key in another sample) and written to the store."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch.distributed as dist

from csrs_core import CSRSError
from csrs_core.autotune import PRECISIONS, choose_plan, machine_id, review
from csrs_core.checkpoints import CheckpointError, file_digest, load_model
from csrs_core.data import ImageSet
from csrs_core.device import distributed_setup
from csrs_core.locks import output_lock
from csrs_core.options import CERTIFY, check_settings
from csrs_core.progress import ProgressLog
from csrs_core.sampling import sample_counts
from csrs_core.store import (KEY_FIELDS, CorruptRecord, CountsRecord, cert_dir, key_name, list_records,
                             load_record, make_key, read_arrays, write_record)

CHUNK = 32  # examples between saves of a partial result (more when that is under 16 passes)


def _reuse_overlapping(checkpoint, key: dict, data: ImageSet, counts0, counts, done) -> int:
    """Fill rows of examples already certified under the same key in another valid record of this
    checkpoint (e.g. a 500-image sample inside a 1,000-image one). A row is taken only when that
    record's images, gathered from `data`, hash to the digest it was made from, and every other
    key field (checkpoint content, σ, n0, n, seed, precision, device type, scheme) is equal, so a
    reused row is the same draws from the same smoothed classifier. Returns the rows filled."""
    same = [f for f in KEY_FIELDS if f not in ("indices_sha256", "content_sha256")]
    position = {int(i): p for p, i in enumerate(data.indices)}
    filled = 0
    for info in list_records(checkpoint):
        if done.all():
            break
        if info.status != "valid" or any(info.meta.get(f) != key[f] for f in same):
            continue
        record = load_record(info.path)
        if not all(int(i) in position for i in record.indices):
            continue
        rows = np.array([position[int(i)] for i in record.indices], dtype=np.int64)
        if data.subset(rows).content_digest() != info.meta["content_sha256"]:
            continue
        new = ~done[rows]
        counts0[rows[new]], counts[rows[new]], done[rows[new]] = record.counts0[new], record.counts[new], True
        filled += int(new.sum())
    return filled


def _cached(final: Path, progress: ProgressLog) -> CountsRecord | None:
    if not final.exists():
        return None
    try:
        record = load_record(final)
    except CorruptRecord as exc:
        warnings.warn(f"certification record {final} is corrupt ({exc}); it is being recomputed")
        return None
    progress.write("cached", done=len(record.labels), total=len(record.labels), file=str(final))
    return record


def _resume(shard: Path, shape) -> tuple:
    """counts0, counts, done of a partial run in `shard` (zeros when there is none or it is unusable)."""
    counts0, counts, done = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape[0], bool)
    if shard.exists():
        try:
            old = read_arrays(shard)
            if old["counts"].shape == shape and "done" in old:
                return old["counts0"], old["counts"], old["done"]
        except CorruptRecord as exc:
            warnings.warn(f"partial record {shard} is corrupt ({exc}); sampling those examples again")
    return counts0, counts, done


def certify_counts(checkpoint, data: ImageSet, n0: int = CERTIFY["n0"].default, n: int = CERTIFY["n"].default,
                   batch: int | None = None, seed: int = 0, sigma: float | None = None, device: str = "auto",
                   precision: str = "auto", progress: ProgressLog | None = None,
                   command: str | None = None) -> CountsRecord | None:
    """Stage-A counts of `data` under the checkpoint's smoothed classifier (every setting checked
    before any work). Under torchrun each rank samples every world-th example still missing and
    rank 0 merges the shares into one record (the other ranks return None)."""
    s = check_settings(CERTIFY, {"n0": n0, "n": n, "batch": batch, "seed": seed, "sigma": sigma,
                                 "precision": precision})
    progress = progress or ProgressLog(None)
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    digest = file_digest(checkpoint)
    model, ckpt_meta = load_model(checkpoint, data.num_classes)
    if file_digest(checkpoint) != digest:
        raise CSRSError(f"{checkpoint} changed while it was being read (a training run writing it?); try again")
    sigma = float(ckpt_meta["sigma"] if s["sigma"] is None else s["sigma"])
    world, rank, dev = distributed_setup(device)
    folder = cert_dir(checkpoint)

    base_key = make_key(digest, data, sigma, s["n0"], s["n"], s["seed"], "auto", dev.type)  # hashes the data once

    def final_path(precision):
        key = {**base_key, "precision": precision}
        return key, folder / f"{key_name(key)}.npz"

    if s["precision"] == "auto":  # a record made at any precision auto may choose is the answer already
        for precision in PRECISIONS[dev.type if dev.type == "cuda" else "cpu"]:
            record = _cached(final_path(precision)[1], progress)
            if record is not None:
                return record if rank == 0 else None
    plan = choose_plan(model, dev, s["precision"], s["batch"], tuple(data.images.shape[1:]),
                       samples=len(data) * (s["n0"] + s["n"]), progress=progress if rank == 0 else None)
    if world > 1:  # every rank samples with rank 0's plan, so all shards share one key
        shared = [(plan.precision, plan.batch, plan.compiled)]
        dist.broadcast_object_list(shared, src=0)
        plan.precision, plan.batch, plan.compiled = shared[0]
    key, final = final_path(plan.precision)
    name = key_name(key)
    record = _cached(final, progress)
    if record is not None:
        return record if rank == 0 else None
    N, m = len(data), data.num_classes
    labels = data.labels.numpy()
    meta = {**key, "key": name, "checkpoint": Path(checkpoint).name, "method": ckpt_meta["method"],
            "classes": data.classes, "num_examples": N, "device": str(dev), "batch": plan.batch,
            "runtime": "compiled" if plan.compiled else "eager", "machine": machine_id(dev),
            "planned_images_per_s": None if plan.expected is None else round(plan.expected)}
    if command:
        meta["command"] = command
    shard = folder / (f"{name}.partial.npz" if world == 1 else f"{name}.rank{rank}-of-{world}.npz")
    with output_lock(shard):
        counts0, counts, done = _resume(shard, (N, m))
        resumed = int(done.sum())
        reused = _reuse_overlapping(checkpoint, key, data, counts0, counts, done)
        mine = [p for p in range(N) if p % world == rank and not done[p]]
        total = len(mine) * (s["n0"] + s["n"])
        progress.write("start", examples=len(mine), total=total, device=str(dev), precision=plan.precision,
                       batch=plan.batch, resumed=resumed, reused=reused,
                       expected_s=None if plan.expected is None else round(total / plan.expected))
        write_record(shard, counts0, counts, labels, data.indices, meta, done=done)
        tracker = _Rate(progress, total)
        chunk = max(CHUNK, -(-16 * plan.batch // (s["n0"] + s["n"])))  # at least 16 full passes per call
        for start in range(0, len(mine), chunk):
            part = mine[start:start + chunk]
            t0 = time.perf_counter()
            c0, c = sample_counts(plan.runnable(dev), data.images, data.indices, m, sigma, s["n0"], s["n"], plan.batch,
                                  s["seed"], dev, plan.precision, positions=part, on_batch=tracker)
            if start == chunk:  # the job's own second chunk (the first may include compiling) is a measurement too
                review(plan, len(part) * (s["n0"] + s["n"]) / (time.perf_counter() - t0), progress)
            counts0[part], counts[part], done[part] = c0[part], c[part], True
            write_record(shard, counts0, counts, labels, data.indices, meta, done=done)
    shards = [shard]
    if world > 1:
        dist.barrier()
        if rank == 0:
            shards = [folder / f"{name}.rank{r}-of-{world}.npz" for r in range(world)]
            for path in shards:
                a = read_arrays(path)
                sel = a["done"]
                counts0[sel], counts[sel], done[sel] = a["counts0"][sel], a["counts"][sel], True
        dist.barrier()
    if rank != 0:
        return None
    if not done.all():
        raise RuntimeError(f"{int((~done).sum())} examples were not sampled")  # a bug, never expected
    meta["created"] = time.time()
    if tracker.done:
        meta["images_per_s"] = round(tracker.rate())  # this job's own sampling rate, start-up excluded
    with output_lock(final):
        write_record(final, counts0, counts, labels, data.indices, meta)
    for path in shards:
        path.unlink(missing_ok=True)
    progress.write("done", done=total, total=total, file=str(final))
    return CountsRecord(counts0, counts, labels, np.asarray(data.indices), meta, final, reused=reused)


class _Rate:
    """on_batch callback: writes a progress event (samples/s, ETA) at most once a second."""

    def __init__(self, progress: ProgressLog, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self.t0, self.last = time.time(), 0.0

    def rate(self) -> float:
        """Samples per second so far."""
        return self.done / max(time.time() - self.t0, 1e-9)

    def __call__(self, k: int) -> None:
        self.done += k
        now = time.time()
        if now - self.last > 1.0 or self.done >= self.total:
            self.last = now
            rate = self.rate()
            self.progress.write("progress", done=self.done, total=self.total, samples_per_s=rate,
                                eta_s=(self.total - self.done) / max(rate, 1e-9))
