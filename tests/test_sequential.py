"""Sequential certification (docs/sequential.md): the confidence sequence's coverage at every
sample size (Monte Carlo at the boundary), its bounds against Clopper–Pearson, the stopping rule, stage A's
counts at the stop, records, stage B and the command line's refusals."""
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.special import betaln

from csrs_core import CostMatrix, certify_from_counts
from csrs_core.certification.bounds import lower_confidence_bound, upper_confidence_bound
from csrs_core.certification.comparisons import describe_differences
from csrs_core.certification.sequences import BETA_BINOMIAL, PRIOR, cs_lower, cs_upper
from csrs_core.certification.sequential import largest_certifiable_radius, running_radius, undecided
from csrs_core.data import load_dataset
from csrs_core.models.checkpoints import load_model
from csrs_core.sampling.counts import sample_counts
from csrs_core.sampling.sequential import StoppingRule, next_check, sample_sequential
from csrs_core.sampling.stage_a import counts_record
from csrs_core.sampling.store import RecordInfo, list_records

SEQUENCES = 100_000
CHECKS = np.unique(np.concatenate([np.arange(1, 101), np.geomspace(100, 20_000, 60).astype(int)]))


def _log_martingale(c, t, p):
    """ln M_t(p) of the beta-binomial mixture, written from its definition (not the module's code)."""
    return (betaln(c + PRIOR, t - c + PRIOR) - betaln(PRIOR, PRIOR)
            - c * np.log(p) - (t - c) * np.log1p(-p))


@pytest.mark.parametrize("p", [0.5, 0.8413, 0.99])   # 0.8413 = Φ(1): the boundary of ε = σ
def test_the_confidence_sequence_covers_at_every_sample_size_at_once(p):
    """P(∃t: M_t(p) ≥ 1/a) ≤ a over 10^5 simulated sequences, checked at every t ≤ 100 and 60 sizes up to
    20,000: the worst of all stopping rules on those sizes (stop as soon as the bound misses)."""
    a, rng = 0.05, np.random.default_rng(int(p * 1e4))
    steps = np.diff(np.concatenate([[0], CHECKS]))
    missed = np.zeros(SEQUENCES, bool)
    for lo in range(0, SEQUENCES, 20_000):
        c = np.cumsum(rng.binomial(steps, p, size=(20_000, len(steps))), axis=1)
        missed[lo:lo + 20_000] = (_log_martingale(c, CHECKS, p) >= np.log(1 / a)).any(axis=1)
    tolerance = 3 * np.sqrt(a * (1 - a) / SEQUENCES)
    assert missed.mean() <= a + tolerance, missed.mean()


def test_the_bounds_are_the_ends_of_the_confidence_set():
    """p < cs_lower or p > cs_upper exactly when M_t(p) ≥ 1/a (up to the bisection's outward rounding)."""
    rng = np.random.default_rng(0)
    t = rng.integers(1, 100_000, 20_000)
    c = rng.binomial(t, rng.uniform(0, 1, t.size))
    a = rng.choice([1e-4, 1e-3, 0.05], t.size)
    lo, hi = cs_lower(c, t, a), cs_upper(c, t, a)
    assert np.all((0 <= lo) & (lo <= c / t) & (c / t <= hi) & (hi <= 1))
    inside = (lo + hi) / 2
    assert np.all(_log_martingale(c, t, inside) < np.log(1 / a))
    for edge, step in ((lo, -1e-9), (hi, 1e-9)):
        beyond = np.clip(edge + step, 1e-300, 1 - 1e-16)
        ok = (edge == 0) | (edge == 1) | (_log_martingale(c, t, beyond) >= np.log(1 / a) - 1e-9)
        assert ok.all()


def test_the_bounds_are_close_to_clopper_pearson_and_never_tighter():
    """At a fixed t the sequence pays for holding at every t: within 0.03 of Clopper–Pearson at n = 1,000 and
    within 0.005 at n = 100,000 for shares from 0.5 to 1 (the table of docs/sequential.md)."""
    for t, slack in ((1_000, 0.03), (100_000, 0.005)):
        c = (np.array([0.5, 0.9, 0.99, 1.0]) * t).astype(int)
        cp, cs = lower_confidence_bound(c, t, 0.0005), cs_lower(c, t, 0.0005)
        assert np.all(cs <= cp) and np.all(cp - cs <= slack)
        cp, cs = upper_confidence_bound(t - c, t, 0.0005 / 9), cs_upper(t - c, t, 0.0005 / 9)
        assert np.all(cs >= cp) and np.all(cs - cp <= slack * 1.5)


def test_stopping_rule_decides_each_eps_and_futility_never_stops_a_reachable_one():
    cost = CostMatrix.seedwise(4, seeds=[0])
    counts0 = np.array([[10, 0, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0], [10, 0, 0, 0]])
    counts = np.array([[100, 0, 0, 0], [60, 40, 0, 0], [0, 100, 0, 0], [85, 15, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    go_on = undecided(counts0, counts, labels, cost, 0.25, 0.001, [0.25], cap=100_000)
    # certified at 100; hopeless (p_A ≈ 0.6 cannot reach Φ(1)); top class costs; p_A ≈ Φ(1): undecided;
    # a non-sensitive example before its first estimation copy; one whose top class is wrong
    assert go_on.tolist() == [False, False, False, True, True, False]
    assert running_radius(counts0, counts, labels, cost, 0.25, 0.001)[0] > 0.25
    assert not undecided(counts0, counts, labels, cost, 0.25, 0.001, [0.25], cap=120)[3]   # out of reach by 120
    assert 0.9 < largest_certifiable_radius(0.25, 100_000, 0.001) < 0.95


@pytest.fixture(scope="module")
def small():
    return load_dataset("synthetic", "test").subset(np.arange(12))


def test_counts_at_the_stop_are_the_first_copies_of_a_fixed_run_whatever_the_batch(synthetic_checkpoint, small):
    model, meta = load_model(synthetic_checkpoint)
    cost = CostMatrix.seedwise(4, seeds=[1])
    rule = StoppingRule((0.2, 0.4), 0.001, cost, cap=3_000, sigma=0.5)
    args = (model, small.images, small.indices, small.labels.numpy(), 4, 0.5, 20, rule)
    a0, a = sample_sequential(*args, batch=64, seed=3)
    b0, b = sample_sequential(*args, batch=23, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a0, b0)
    used = a.sum(axis=1)
    assert used.max() <= 3_000 and (used < 3_000).any()
    for i in range(12):
        f0, f = sample_counts(model, small.images, small.indices, 4, 0.5, 20, int(used[i]), batch=64, seed=3,
                              positions=[i])
        np.testing.assert_array_equal(f[i], a[i])
        np.testing.assert_array_equal(f0[i], a0[i])
    # every stop is a decision (or the cap), and every check falls on the fixed schedule
    assert not undecided(a0, a, small.labels.numpy(), cost, 0.5, 0.001, (0.2, 0.4), 3_000).any()
    schedule, t = {0}, 0
    while t < 3_000:
        t = next_check(t, 3_000)
        schedule.add(t)
    assert set(used.tolist()) <= schedule


def test_a_sequential_record_is_keyed_read_with_the_sequence_and_named_in_comparisons(synthetic_checkpoint, small,
                                                                                       tmp_path):
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    cost = CostMatrix.seedwise(4, seeds=[1])
    request = {"eps": (0.2,), "alpha": 0.001, "cost": cost}
    seq = counts_record(ckpt, small, n0=20, n=2_000, batch=64, precision="fp32", sequential=request)
    fixed = counts_record(ckpt, small, n0=20, n=2_000, batch=64, precision="fp32")
    assert seq.path != fixed.path and seq.meta["sequential"]["eps"] == [0.2]
    assert seq.bounds is BETA_BINOMIAL and fixed.n_used.tolist() == [2_000] * 12
    assert counts_record(ckpt, small, n0=20, n=2_000, batch=64, precision="fp32", sequential=request).from_cache
    table = certify_from_counts(seq.counts0, seq.counts, seq.labels, cost, 0.5, bounds=seq.bounds)
    assert len(table) == 12
    with pytest.raises(Exception, match="paper mode does not apply"):
        certify_from_counts(seq.counts0, seq.counts, seq.labels, cost, 0.5, mode="paper", bounds=seq.bounds)
    uneven = np.array([[100, 0, 0, 0], [300, 0, 0, 0]])
    with pytest.raises(Exception, match="same number n"):
        certify_from_counts(uneven, uneven, [0, 0], cost, 0.5)                # Clopper–Pearson needs one n
    assert len(certify_from_counts(uneven, uneven, [0, 0], cost, 0.5, bounds=BETA_BINOMIAL)) == 2
    infos = {i.meta.get("sequential") is not None: i for i in list_records(ckpt)}
    [line] = [l for l in describe_differences({"fixed": infos[False], "seq": infos[True]}) if "budget was spent" in l]
    assert "fixed n" in line and "sequential at ε 0.2" in line
    assert isinstance(infos[True], RecordInfo)


def _certify(args, cwd):
    return subprocess.run([sys.executable, "-m", "csrs_core", "certify", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_the_command_line_refuses_bad_sequential_settings_before_any_work(synthetic_checkpoint, tmp_path):
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    base = ["--checkpoint", str(ckpt), "--dataset", "synthetic", "--num-examples", "4", "--n0", "10", "--quiet"]
    cases = [(["--sequential", "--eps", ""], "--eps"), (["--sequential", "--eps", "0.2,-1"], "--eps"),
             (["--sequential", "--eps", "5", "--n", "1000"], "largest certifiable radius at that cap is"),
             (["--sequential", "--mode", "paper"], "--mode paper does not apply")]
    for extra, message in cases:
        out = _certify(base + extra, tmp_path)
        assert out.returncode == 2 and message in out.stderr, (extra, out.stderr)
    assert not (tmp_path / "m.certs").exists()           # nothing was sampled or written
    taken = tmp_path / "taken.npz"
    taken.write_bytes(b"precious")
    out = _certify(base + ["--save-sample", str(taken)], tmp_path)
    assert out.returncode == 2 and "--save-sample" in out.stderr and taken.read_bytes() == b"precious"


def test_the_command_line_certifies_sequentially_and_writes_n_used(synthetic_checkpoint, tmp_path):
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    out = _certify(["--checkpoint", str(ckpt), "--dataset", "synthetic", "--num-examples", "8", "--n0", "20",
                    "--n", "5000", "--sequential", "--eps", "0.1,0.3", "--cost", "seedwise:1", "--precision", "fp32",
                    "--out", str(tmp_path / "r.csv"), "--quiet"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "estimation samples per example on average" in out.stdout and "eps 0.3:" in out.stdout
    import pandas as pd
    table = pd.read_csv(tmp_path / "r.csv")
    assert table["n_used"].between(0, 5_000).all() and table["n_used"].mean() < 5_000


class _Broken(torch.nn.Module):
    """A model whose output is NaN logits, or one row whatever the batch."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.w = kind, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        if self.kind == "nan":
            return torch.full((len(x), 4), float("nan")) + self.w
        return torch.zeros(1, 4) + self.w


@pytest.mark.parametrize("kind, words", [("nan", "non-finite logits"), ("one row", "(1, 4)")])
def test_a_model_without_finite_logits_per_image_is_refused_everywhere(kind, words, small, tmp_path, monkeypatch):
    """Before any sampling: in the Python API, and for a checkpoint (the CLI and dashboard jobs run through
    counts_record), naming the checkpoint and what came back."""
    from csrs_core import CSRSError, SmoothedClassifier
    from csrs_core.sampling import stage_a
    with pytest.raises(CSRSError, match=f"the model returns {re.escape(words)}"):
        SmoothedClassifier(_Broken(kind), num_classes=4, sigma=0.25, device="cpu").certify(
            small.images[:2], [0, 1], "overall", n0=10, n=10)
    monkeypatch.setattr(stage_a, "_load_unchanged", lambda checkpoint, m: (_Broken(kind), {"sigma": 0.25}, "d"))
    with pytest.raises(CSRSError, match=f"broken.pt: its model returns {re.escape(words)}"):
        counts_record(tmp_path / "broken.pt", small, n0=10, n=10, precision="fp32")
    assert not (tmp_path / "broken.certs").exists()


def test_a_stopped_sequential_run_keeps_every_decided_example_and_a_rerun_resumes(synthetic_checkpoint, small,
                                                                                    tmp_path, monkeypatch):
    from csrs_core.runtime.progress import ProgressLog, read_progress
    from csrs_core.sampling import stage_a
    ckpt = tmp_path / "m.pt"
    shutil.copy(synthetic_checkpoint, ckpt)
    request = {"eps": (0.2,), "alpha": 0.001, "cost": CostMatrix.seedwise(4, seeds=[1])}
    real = stage_a._Decided.stopped

    def interrupted(self, examples, samples):
        real(self, examples, samples)
        raise KeyboardInterrupt                     # Ctrl-C right after the first examples stopped
    monkeypatch.setattr(stage_a._Decided, "stopped", interrupted)
    with pytest.raises(KeyboardInterrupt):
        counts_record(ckpt, small, n0=20, n=2_000, batch=64, precision="fp32", sequential=request)
    monkeypatch.setattr(stage_a._Decided, "stopped", real)
    log = tmp_path / "p.jsonl"
    again = counts_record(ckpt, small, n0=20, n=2_000, batch=64, precision="fp32", sequential=request,
                          progress=ProgressLog(log))
    start = next(e for e in read_progress(log) if e["event"] == "start")
    assert start["resumed"] >= 1 and start["examples"] == len(small) - start["resumed"]
    fresh = tmp_path / "fresh" / "m.pt"
    fresh.parent.mkdir()
    shutil.copy(synthetic_checkpoint, fresh)
    one = counts_record(fresh, small, n0=20, n=2_000, batch=64, precision="fp32", sequential=request)
    np.testing.assert_array_equal(again.counts, one.counts)
