import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from csrs_core.data import load_dataset, select_examples
from csrs_core.models.checkpoints import load_model
from csrs_core.sampling.counts import sample_counts
from csrs_core.sampling.stage_a import counts_record
from csrs_core.sampling.store import cert_dir, key_name, list_records, make_key, partial_folder, write_chunk


@pytest.fixture(scope="module")
def data():
    d = load_dataset("synthetic", "test")
    return d.subset(np.arange(12))


def test_counts_shape_and_determinism_across_batches(synthetic_checkpoint, data):
    model, _ = load_model(synthetic_checkpoint)
    args = (model, data.images, data.indices, 4, 0.5, 10, 50)
    a0, a = sample_counts(*args, batch=64, seed=1)
    b0, b = sample_counts(*args, batch=17, seed=1)
    assert a0.sum(1).tolist() == [10] * 12 and a.sum(1).tolist() == [50] * 12
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a0, b0)
    part0, part = sample_counts(*args, batch=64, seed=1, positions=[3, 7])
    np.testing.assert_array_equal(part[[3, 7]], a[[3, 7]])
    assert part[[0, 1]].sum() == 0
    spread = (model, data.images, data.indices, 4, 3.0, 10, 50)  # σ = 3: votes split in several rows
    _, d = sample_counts(*spread, batch=64, seed=1)
    _, e = sample_counts(*spread, batch=64, seed=2)
    assert (d.max(1) < 50).sum() >= 3 and not np.array_equal(d, e)  # another seed draws other noise


def test_cache_key_depends_on_everything(data):
    base = make_key("abc", data, 0.25, 100, 1000, 0, "fp32", "cpu")
    variants = [make_key("abd", data, 0.25, 100, 1000, 0, "fp32", "cpu"),
                make_key("abc", data.subset(np.arange(11)), 0.25, 100, 1000, 0, "fp32", "cpu"),
                make_key("abc", data, 0.5, 100, 1000, 0, "fp32", "cpu"),
                make_key("abc", data, 0.25, 50, 1000, 0, "fp32", "cpu"),
                make_key("abc", data, 0.25, 100, 2000, 0, "fp32", "cpu"),
                make_key("abc", data, 0.25, 100, 1000, 1, "fp32", "cpu"),
                make_key("abc", data, 0.25, 100, 1000, 0, "bf16", "cpu"),
                make_key("abc", data, 0.25, 100, 1000, 0, "fp32", "cuda")]
    names = {key_name(base)} | {key_name(v) for v in variants}
    assert len(names) == 1 + len(variants)


def test_cache_reuse_corruption_and_resume(synthetic_checkpoint, data, tmp_path):
    import shutil
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    first = counts_record(ckpt, data, n0=10, n=40, batch=64)
    assert not first.from_cache
    again = counts_record(ckpt, data, n0=10, n=40, batch=64)
    assert again.from_cache
    np.testing.assert_array_equal(first.counts, again.counts)
    [info] = list_records(ckpt)
    path, meta = info.path, info.meta
    assert meta["n"] == 40 and meta["num_examples"] == 12
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        redo = counts_record(ckpt, data, n0=10, n=40, batch=64)
    assert not redo.from_cache
    np.testing.assert_array_equal(redo.counts, first.counts)
    # a partial file from an interrupted run is resumed: only missing examples are sampled
    path.unlink()
    partial = partial_folder(cert_dir(ckpt), path.stem)
    fake = first.counts.copy()
    fake[:5] = 0
    fake[:5, 0] = 40  # marks that the resumed rows were not recomputed
    write_chunk(partial, path.stem, np.arange(5), first.counts0[:5], fake[:5])
    resumed = counts_record(ckpt, data, n0=10, n=40, batch=64)
    np.testing.assert_array_equal(resumed.counts[:5], fake[:5])
    np.testing.assert_array_equal(resumed.counts[5:], first.counts[5:])
    assert not partial.exists()


def test_select_examples_stratified():
    labels = np.repeat(np.arange(4), 10)
    idx = select_examples(labels, per_class=3, seed=0)
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(idx, select_examples(labels, per_class=3, seed=0))
    assert len(select_examples(labels, num_examples=7)) == 7


def test_torchrun_two_ranks_merge_into_one_cache(synthetic_checkpoint, tmp_path):
    import shutil
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "csrs_core", "--", "certify", "--checkpoint", str(ckpt), "--dataset", "synthetic",
           "--num-examples", "12", "--n0", "10", "--n", "40", "--batch", "64", "--threads", "1", "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    [info] = list_records(ckpt)
    data = load_dataset("synthetic", "test")
    data = data.subset(select_examples(data.labels.numpy(), 12))
    single = counts_record(ckpt, data, n0=10, n=40, batch=64)
    assert single.from_cache  # the merged file is exactly the single-process cache entry
    ref0, ref = sample_counts(load_model(ckpt)[0], data.images, data.indices, 4, 0.25, 10, 40, 64)
    np.testing.assert_array_equal(single.counts, ref)
    assert not list(cert_dir(ckpt).glob("*rank*-of-*.npz"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_sampling_matches_cpu_closely(synthetic_checkpoint, data, precision):
    model, _ = load_model(synthetic_checkpoint)
    args = (data.images, data.indices, 4, 0.5, 10, 200)
    _, cpu = sample_counts(model, *args, batch=64, seed=1)
    _, gpu = sample_counts(model, *args, batch=64, seed=1, device=torch.device("cuda"), precision=precision)
    assert gpu.sum() == cpu.sum()
    # different generators (CUDA vs CPU): agreement in distribution, not sample by sample
    assert np.abs(gpu.argmax(1) - cpu.argmax(1)).sum() <= 2


def test_growing_a_sample_reuses_the_overlap_exactly(synthetic_checkpoint, tmp_path):
    import shutil
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    full = load_dataset("synthetic", "test")
    small = full.subset(select_examples(full.labels.numpy(), per_class=2))
    large = full.subset(select_examples(full.labels.numpy(), per_class=4))
    assert set(small.indices) < set(large.indices)
    first = counts_record(ckpt, small, n0=10, n=40, batch=64)
    grown = counts_record(ckpt, large, n0=10, n=40, batch=64)
    assert grown.reused == len(small) and not grown.from_cache
    model, _ = load_model(ckpt)
    ref0, ref = sample_counts(model, large.images, large.indices, 4, 0.25, 10, 40, 64)
    np.testing.assert_array_equal(grown.counts, ref)
    np.testing.assert_array_equal(grown.counts0, ref0)
    # another sigma, or images that differ from the ones the cached counts came from: nothing reused
    assert counts_record(ckpt, large, n0=10, n=40, batch=64, sigma=0.3).reused == 0
    (cert_dir(ckpt) / next(r.path.name for r in list_records(ckpt) if r.meta["num_examples"] == len(large)
                           and r.meta["sigma"] == 0.25)).unlink()
    altered = large.subset(np.arange(len(large)))
    shared = int(np.flatnonzero(np.isin(large.indices, small.indices))[0])
    altered.images[shared] = 255 - altered.images[shared]
    assert counts_record(ckpt, altered, n0=10, n=40, batch=64).reused == 0
    assert first.counts.shape[0] == len(small)


class _ChannelMeans(torch.nn.Module):
    """A base classifier with no weights: the class is the channel with the largest mean (3 classes)."""
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_golden_counts_of_the_noise_scheme():
    """Exact fp32 counts for fixed images, example ids and seed: any change to the noise stream (seeding,
    block order, σ scaling, the division by 255) breaks this test, as it would silently change every
    record made with the scheme named by SAMPLING_SCHEME. Change the scheme's name with these numbers."""
    from csrs_core.sampling.counts import SAMPLING_SCHEME
    images = torch.tensor(np.arange(5 * 3 * 4 * 4).reshape(5, 3, 4, 4) * 37 % 256, dtype=torch.uint8)
    ids = np.array([0, 1, 2, 17, 123456])
    c0, c = sample_counts(_ChannelMeans(), images, ids, 3, 0.5, 5, 40, batch=16, seed=7, precision="fp32")
    assert SAMPLING_SCHEME == "csrs-noise-v1"
    assert c0.tolist() == [[0, 2, 3], [1, 0, 4], [1, 2, 2], [2, 1, 2], [3, 2, 0]]
    assert c.tolist() == [[5, 15, 20], [15, 15, 10], [9, 11, 20], [26, 7, 7], [19, 3, 18]]


def test_shards_sampled_apart_merge_into_the_counts_of_one_run(synthetic_checkpoint, data, tmp_path):
    """Each --shard I/K samples every K-th example into a shard folder; the same call without a shard samples
    nothing the shards hold and writes counts identical to one unsharded run's (and removes the shards)."""
    import shutil

    from csrs_core.runtime.progress import ProgressLog, read_progress
    ckpt, alone = tmp_path / "m.pt", tmp_path / "alone" / "m.pt"
    alone.parent.mkdir()
    shutil.copy(synthetic_checkpoint, ckpt)
    shutil.copy(synthetic_checkpoint, alone)
    args = dict(n0=10, n=60, batch=32, precision="fp32")
    for i in range(3):
        assert counts_record(ckpt, data, shard=(i, 3), **args) is None
    assert len(list(cert_dir(ckpt).glob("*.rank*-of-3"))) == 3 and not list_records(ckpt)
    log = tmp_path / "merge.jsonl"
    merged = counts_record(ckpt, data, progress=ProgressLog(log), **args)
    start = next(e for e in read_progress(log) if e["event"] == "start")
    assert start["examples"] == 0 and start["resumed"] == len(data)            # nothing left to sample
    one = counts_record(alone, data, **args)
    np.testing.assert_array_equal(merged.counts, one.counts)
    np.testing.assert_array_equal(merged.counts0, one.counts0)
    assert not list(cert_dir(ckpt).glob("*.rank*"))


@pytest.mark.parametrize("args, words", [(["--shard", "3/3", "--precision", "fp32"], "--shard = '3/3'"),
                                         (["--shard", "0/2"], "needs an explicit --precision")])
def test_a_shard_is_refused_before_any_work(synthetic_checkpoint, tmp_path, capsys, args, words):
    import shutil

    from csrs_core.cli import commands as cli
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    code = cli.main(["certify", "--checkpoint", str(ckpt), "--dataset", "synthetic", "--num-examples", "4",
                     "--n0", "5", "--n", "10", "--quiet", *args])
    assert code == 2 and words in capsys.readouterr().err and not cert_dir(ckpt).exists()
