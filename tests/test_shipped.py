"""The shipped checkpoints: loadable, certified, and their test samples hit the committed caches."""
from pathlib import Path

import numpy as np
import pytest

from csrs_core.reports import report_table
from csrs_core.sampling.store import select_for_comparison
from csrs_core.data import load_dataset
from csrs_core.models.checkpoints import list_checkpoints, load_model
from csrs_core.sampling.stage_a import counts_record

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
CASES = {"cifar10": ("seedwise:3", 10), "ham10000": ("pairwise:1>0", 2), "imagenette": ("seedwise:7", 10)}


@pytest.mark.parametrize("case", CASES)
def test_every_shipped_checkpoint_has_a_certification(case):
    cost, m = CASES[case]
    ckpts = list_checkpoints(SHIPPED / case)
    assert len(ckpts) >= 4
    report = report_table(SHIPPED / case, cost, eps=0.25)
    table = report.table
    assert not [n for n in report.notes if "stale" in n or "corrupt" in n or "other content" in n], report.notes
    assert len(table) == len(ckpts) and table.acc.between(0, 1).all()
    for path in ckpts:
        model, meta = load_model(path)
        assert len(meta["classes"]) == m and meta["epochs_done"] == meta["epochs"]


@pytest.mark.parametrize("case", CASES)
def test_shipped_sample_reuses_the_committed_counts(case):
    sample = load_dataset(f"sample:{SHIPPED / case / 'test-sample.npz'}")
    ckpt = SHIPPED / case / "cohen.pt"
    rec = counts_record(ckpt, sample, n0=100, n=1000, precision="auto")  # a record at any auto precision
    chosen, _, _, _ = select_for_comparison(list_checkpoints(SHIPPED / case))
    assert rec.from_cache and chosen[ckpt][0].path == rec.path


@pytest.mark.parametrize("case", CASES)
def test_the_sampler_reproduces_shipped_counts_exactly(case):
    """The noise scheme named in the records (csrs-noise-v1) is the one the code draws today: the
    same counts exactly in fp32; in bf16 (whose arithmetic differs between CPUs) the same top
    classes and nearly the same votes."""
    from csrs_core.sampling.counts import SAMPLING_SCHEME, sample_counts
    from csrs_core.sampling.store import load_record
    sample = load_dataset(f"sample:{SHIPPED / case / 'test-sample.npz'}")
    ckpt = SHIPPED / case / "cohen.pt"
    chosen, _, _, _ = select_for_comparison(list_checkpoints(SHIPPED / case))
    record = load_record(chosen[ckpt][0].path)
    assert record.meta["scheme"] == SAMPLING_SCHEME
    model, meta = load_model(ckpt)
    part = sample.subset([0, 1, 2])
    precision = record.meta["precision"]
    c0, c = sample_counts(model, part.images, part.indices, len(meta["classes"]), record.meta["sigma"],
                          record.meta["n0"], record.meta["n"], batch=record.meta.get("batch", 256),
                          seed=record.meta["seed"], precision=precision)
    if precision == "fp32":
        assert (c0 == record.counts0[:3]).all() and (c == record.counts[:3]).all()
    else:
        assert (c.argmax(1) == record.counts[:3].argmax(1)).all()
        assert np.abs(c - record.counts[:3]).sum(1).max() / 2 <= 0.03 * record.meta["n"]


SEED_FOLDERS = sorted(p for p in SHIPPED.glob("*-seeds/seed*") if p.is_dir())


@pytest.mark.parametrize("folder", SEED_FOLDERS, ids=[f"{p.parent.name}/{p.name}" for p in SEED_FOLDERS])
def test_every_seed_run_is_that_seed_and_certified_on_its_case_sample(folder):
    """checkpoints/CASE-seeds/seedK/: the shipped recipes at training seed K, certified on CASE's test sample."""
    case = folder.parent.name[:-len("-seeds")]
    seed = int(folder.name[len("seed"):])
    report = report_table(folder, CASES[case][0], eps=0.25, examples=SHIPPED / case / "test-sample.npz")
    assert sorted(report.table.checkpoint) == sorted(p.stem for p in list_checkpoints(folder)), report.notes
    for path in list_checkpoints(folder):
        model, meta = load_model(path)
        assert meta["hyperparameters"]["seed"] == seed  # cohen-shift: that seed's Cohen model, shifted
