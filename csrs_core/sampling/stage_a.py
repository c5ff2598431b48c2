"""Stage A for a checkpoint on an image set: what to sample, resuming, reuse of overlapping records, torchrun ranks.

`counts_record` returns stage-A counts for a checkpoint and data: from the store when a valid
record with the same key exists, else sampled (resuming a partial run, reusing rows already
certified under the same key in another sample) and written to the store."""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from csrs_core import CSRSError
from csrs_core.certification.sequential import check_eps
from csrs_core.settings import CERTIFY, SettingError, check_settings
from csrs_core.data import ImageSet
from csrs_core.models.checkpoints import CheckpointError, file_digest, load_model
from csrs_core.runtime.device import distributed_setup
from csrs_core.runtime.locks import output_lock
from csrs_core.runtime.progress import ProgressLog
from csrs_core.sampling.counts import check_logits, sample_counts
from csrs_core.sampling.plan import PRECISIONS, choose_plan, machine_id, review
from csrs_core.sampling.sequential import FIRST_ROUND, StoppingRule, sample_sequential
from csrs_core.sampling.store import (
    KEY_FIELDS,
    CorruptRecord,
    CountsRecord,
    cert_dir,
    key_name,
    list_records,
    load_record,
    make_key,
    partial_folder,
    read_chunks,
    write_chunk,
    write_record,
)

CHUNK = 32  # examples between saves of a partial result (more when that is under 16 passes)
SAVE_EVERY_S = 10.0  # a sequential run saves its stopped examples at most this often


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


def _resume(partials: list[Path], key: str, shape) -> tuple:
    """counts0, counts, done gathered from the finished chunks in `partials` (an interrupted run's own
    folder, and the shards of the same record sampled elsewhere); zeros where none."""
    counts0, counts, done = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape[0], bool)
    for partial in partials:
        c0, c, got, notes = read_chunks(partial, key, shape)
        counts0[got], counts[got], done[got] = c0[got], c[got], True
        for note in notes:
            warnings.warn(f"partial result {partial / note}; sampling those examples again")
    return counts0, counts, done


def _load_unchanged(checkpoint, num_classes: int):
    """The checkpoint's model, metadata and content digest; refused when the file changes while read."""
    if not Path(checkpoint).is_file():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    digest = file_digest(checkpoint)
    model, meta = load_model(checkpoint, num_classes)
    if file_digest(checkpoint) != digest:
        raise CSRSError(f"{checkpoint} changed while it was being read (a training run writing it?); try again")
    return model, meta, digest


def _shared_plan(model, dev, settings: dict, data: ImageSet, world: int, progress, sequential: bool):
    """The autotuned plan; under torchrun every rank takes rank 0's, so all shares have one key. A
    sequential job is planned for a twentieth of its cap (what it typically spends)."""
    n = max(FIRST_ROUND, settings["n"] // 20) if sequential else settings["n"]
    plan = choose_plan(model, dev, settings["precision"], settings["batch"], tuple(data.images.shape[1:]),
                       samples=len(data) * (settings["n0"] + n), progress=progress)
    if world > 1:
        shared = [(plan.precision, plan.batch, plan.compiled)]
        dist.broadcast_object_list(shared, src=0)
        plan.precision, plan.batch, plan.compiled = shared[0]  # folding is the same on every rank
    return plan


def _sample_share(checkpoint, data: ImageSet, key: dict, meta: dict, plan, model_dev, sigma: float,
                  settings: dict, shard: Path, world: int, rank: int, progress: ProgressLog,
                  rule: StoppingRule | None = None, merged: tuple = ()):
    """Sample this rank's share of the examples not yet done (resumed from `shard`, or reused from
    overlapping records, or taken from the `merged` shard folders), saving `shard` as work is done: after
    every chunk of a fixed-budget run, at most every SAVE_EVERY_S seconds of a sequential one (with `rule`:
    each example stops by it).
    Returns counts0, counts, done, reused and the rate tracker."""
    n0, n = settings["n0"], settings["n"]
    N, m = len(data), data.num_classes
    with output_lock(shard):
        counts0, counts, done = _resume([shard, *merged], meta["key"], (N, m))
        resumed = int(done.sum())
        reused = _reuse_overlapping(checkpoint, key, data, counts0, counts, done)
        mine = [p for p in range(N) if p % world == rank and not done[p]]
        total = len(mine) * (n0 + n)
        expected_s = plan.expected_seconds(total)
        progress.write("start", examples=len(mine), total=total, device=str(model_dev), precision=plan.precision,
                       batch=plan.batch, compiled=plan.compiled, resumed=resumed, reused=reused,
                       expected_s=None if expected_s is None or rule else round(expected_s),
                       **({"sequential": True, "cap_samples": total} if rule else {}))
        if rule is None:
            tracker = _Rate(progress, total)
            _fixed_chunks(data, plan, model_dev, sigma, settings, mine, tracker, counts0, counts, done,
                          lambda rows: write_chunk(shard, meta["key"], rows, counts0[rows], counts[rows]))
        else:
            tracker = _Decided(progress, len(mine))
            _sequential(data, plan, model_dev, sigma, settings, mine, rule, tracker, counts0, counts, done,
                        lambda rows: write_chunk(shard, meta["key"], rows, counts0[rows], counts[rows]))
    return counts0, counts, done, reused, tracker


def _fixed_chunks(data, plan, model_dev, sigma, settings, mine, tracker, counts0, counts, done, save) -> None:
    """n0 + n copies of every example of `mine`, a chunk at a time, saved after each chunk."""
    n0, n = settings["n0"], settings["n"]
    chunk = max(CHUNK, -(-16 * plan.batch // (n0 + n)))  # at least 16 full passes per call
    for start in range(0, len(mine), chunk):
        part = mine[start:start + chunk]
        t0 = time.perf_counter()
        c0, c = sample_counts(plan.runnable(model_dev), data.images, data.indices, data.num_classes, sigma, n0, n,
                              plan.batch, settings["seed"], model_dev, plan.precision, positions=part,
                              on_batch=tracker)
        if start == chunk:  # the job's own second chunk (the first may include compiling) is a measurement too
            review(plan, len(part) * (n0 + n) / (time.perf_counter() - t0), progress=tracker.progress)
        counts0[part], counts[part], done[part] = c0[part], c[part], True
        save(part)


def _sequential(data, plan, model_dev, sigma, settings, mine, rule, tracker, counts0, counts, done, save) -> None:
    """Every example of `mine` sampled until `rule` stops it; stopped examples saved at most every
    SAVE_EVERY_S seconds, and when the run ends or is stopped (a signal, an error), so a rerun keeps every
    example that had stopped (after SIGKILL, all but those of the last SAVE_EVERY_S seconds)."""
    last, unsaved = [time.monotonic()], []

    def stopped(positions, c0, c):
        counts0[positions], counts[positions], done[positions] = c0, c, True
        unsaved.extend(positions)
        tracker.stopped(len(positions), int(c.sum()))
        if time.monotonic() - last[0] >= SAVE_EVERY_S:
            save(unsaved[:])
            unsaved.clear()
            last[0] = time.monotonic()

    try:
        sample_sequential(plan.runnable(model_dev), data.images, data.indices, data.labels.numpy(),
                          data.num_classes, sigma, settings["n0"], rule, plan.batch, settings["seed"], model_dev,
                          plan.precision, positions=mine, on_batch=tracker, on_stop=stopped)
    finally:
        if unsaved:
            save(unsaved)


def _merge_shares(folder: Path, name: str, world: int, rank: int, counts0, counts, done) -> list[Path]:
    """Under torchrun rank 0 gathers every rank's share into its arrays; returns the shares' folders."""
    shards = [partial_folder(folder, name, r, world) for r in range(world)]
    dist.barrier()
    if rank == 0:
        for path in shards:
            c0, c, sel, _ = read_chunks(path, name, counts.shape)
            counts0[sel], counts[sel], done[sel] = c0[sel], c[sel], True
    dist.barrier()
    return shards


def counts_record(checkpoint, data: ImageSet, n0: int = CERTIFY["n0"].default, n: int = CERTIFY["n"].default,
                  batch: int | None = None, seed: int = 0, sigma: float | None = None, device: str = "auto",
                  precision: str = "auto", progress: ProgressLog | None = None,
                  command: str | None = None, sequential: dict | None = None,
                  shard: tuple[int, int] | None = None) -> CountsRecord | None:
    """Stage-A counts of `data` under the checkpoint's smoothed classifier (every setting checked
    before any work): the stored record when one with the same key exists, else sampled and stored.
    Under torchrun each rank samples every world-th example still missing and rank 0 merges the
    shares into one record (the other ranks return None).

    sequential: {"eps": radii, "alpha": α, "cost": CostMatrix} samples each example until every radius
    is decided for that matrix's support (docs/sequential.md), n being the cap; the record is then
    read with confidence-sequence bounds (CountsRecord.bounds).

    shard (i, k): sample only every k-th example from the i-th (one machine's share, e.g. a Slurm array
    task) into a shard folder beside the record, and return None; a later call without `shard` takes every
    shard of the same record, samples only what they lack, and writes counts identical to one run's."""
    s = check_settings(CERTIFY, {"n0": n0, "n": n, "batch": batch, "seed": seed, "sigma": sigma,
                                 "precision": precision})
    progress = progress or ProgressLog(None)
    model, ckpt_meta, digest = _load_unchanged(checkpoint, data.num_classes)
    sigma = float(ckpt_meta["sigma"] if s["sigma"] is None else s["sigma"])
    if len(data):
        check_logits(model, data.images[0], data.num_classes, sigma, torch.device("cpu"), "fp32",
                     f"{Path(checkpoint).name}: its model")
    rule = None if sequential is None else StoppingRule(
        check_eps(sequential["eps"], sigma, s["n"], sequential["alpha"]), sequential["alpha"], sequential["cost"],
        s["n"], sigma)
    world, rank, dev = distributed_setup(device)
    if shard is not None and (world > 1 or s["precision"] == "auto"):
        raise SettingError("--shard splits the work itself (not under torchrun) and needs an explicit --precision "
                           "(fp32, bf16 or fp16), so that every shard belongs to one record")
    folder = cert_dir(checkpoint)
    base_key = make_key(digest, data, sigma, s["n0"], s["n"], s["seed"], "auto", dev.type,  # hashes the data once
                        None if rule is None else rule.key())

    def stored(precision):
        key = {**base_key, "precision": precision}
        return key, folder / f"{key_name(key)}.npz"

    # with precision auto, a record made at any precision auto may choose is the answer already
    for candidate in (PRECISIONS["cuda" if dev.type == "cuda" else "cpu"] if s["precision"] == "auto" else ()):
        record = _cached(stored(candidate)[1], progress)
        if record is not None:
            return record if rank == 0 else None
    plan = _shared_plan(model, dev, s, data, world, progress if rank == 0 else None, rule is not None)
    key, final = stored(plan.precision)
    record = _cached(final, progress)
    if record is not None:
        return record if rank == 0 else None
    name = key_name(key)
    meta = {**key, "key": name, "checkpoint": Path(checkpoint).name, "method": ckpt_meta["method"],
            "classes": data.classes, "num_examples": len(data), "device": str(dev), "batch": plan.batch,
            "runtime": "compiled" if plan.compiled else "eager", "batchnorm_folded": plan.folded,
            "machine": machine_id(dev),
            "planned_images_per_s": None if plan.expected is None else round(plan.expected),
            **({"command": command} if command else {})}
    share, of = shard or (rank, world)
    own = partial_folder(folder, name, share, of)
    merged = sorted(folder.glob(f"{name}.rank*-of-*")) if shard is None and world == 1 else []
    counts0, counts, done, reused, tracker = _sample_share(checkpoint, data, key, meta, plan, dev, sigma, s,
                                                           own, of, share, progress, rule, tuple(merged))
    if shard is not None:
        progress.write("shard", shard=f"{share}/{of}", folder=str(own))
        return None
    shards = _merge_shares(folder, name, world, rank, counts0, counts, done) if world > 1 else [own, *merged]
    if rank != 0:
        return None
    if not done.all():
        raise RuntimeError(f"{int((~done).sum())} examples were not sampled")  # a bug, never expected
    meta["created"] = time.time()
    if rule is not None:
        meta["samples_per_example"] = round(float(counts.sum(axis=1).mean()), 1)
    if tracker.done:
        meta["images_per_s"] = round(tracker.rate())  # this job's own sampling rate, start-up excluded
    if plan.compile_seconds is not None:
        meta["compile_seconds"] = round(plan.compile_seconds, 2)
    with output_lock(final):
        write_record(final, counts0, counts, data.labels.numpy(), data.indices, meta)
    for path in shards:
        shutil.rmtree(path, ignore_errors=True)
    progress.write("done", done=tracker.total, total=tracker.total, file=str(final))
    return CountsRecord(counts0, counts, data.labels.numpy(), np.asarray(data.indices), meta, final, reused=reused)


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


class _Decided(_Rate):
    """_Rate for a sequential run, whose total is examples, not samples: progress events (at most once a
    second) say how many examples have stopped, how many are undecided and the samples spent."""

    def __init__(self, progress: ProgressLog, examples: int):
        super().__init__(progress, examples)
        self.decided = 0

    def stopped(self, examples: int, samples: int) -> None:
        self.decided += examples
        self._write(force=self.decided >= self.total)

    def __call__(self, k: int) -> None:
        self.done += k
        self._write(force=False)

    def _write(self, force: bool) -> None:
        now = time.time()
        if force or now - self.last > 1.0:
            self.last = now
            self.progress.write("progress", done=self.decided, total=self.total, unit="examples decided",
                                undecided=self.total - self.decided, samples=self.done, samples_per_s=self.rate())
