"""Paired tests a reviewer asks for: exact McNemar (checked by hand and by Monte Carlo under the
null), paired comparisons of two certificate tables, balanced accuracy, and the report's columns."""
import io
import math
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from csrs_core import CSRSError
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.metrics import balanced_accuracy, per_class, per_class_recall, summarize
from csrs_core.certification.stats import mcnemar, paired_comparison
from csrs_core.cli import commands as cli
from csrs_core.settings import SettingError
from csrs_core.reports import report_table
from csrs_core.data import load_dataset
from csrs_core.models.checkpoints import load_model, save_checkpoint
from csrs_core.sampling.stage_a import counts_record
from csrs_core.sampling.store import list_records, load_record

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
CSV_HEAD = ("checkpoint,method,acc,rob_cs,rob_std,rob_non,balanced_acc,d_acc,p_acc,d_rob_cs,p_rob_cs,"
            "acc_lo,acc_hi,rob_cs_lo,rob_cs_hi,p_acc_holm,p_rob_cs_holm,acr,abstain,budget")


def hand_p(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value from first principles: under H0, n01 ~ Binomial(d, 1/2)
    given d = n01 + n10; p = P(X as far from d/2 as observed, either side)."""
    d = n01 + n10
    k = min(n01, n10)
    if 2 * k == d:
        return 1.0
    tail = sum(Fraction(math.comb(d, i), 2 ** d) for i in range(k + 1))
    return float(min(Fraction(1), 2 * tail))


def pairs(n11, n10, n01, n00, seed=0):
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, bool)
    order = np.random.default_rng(seed).permutation(a.size)
    return a[order], b[order]


@pytest.mark.parametrize("n01, n10", [(0, 0), (3, 3), (14, 0), (0, 14), (1, 6), (7, 2), (12, 24),
                                      (27, 39), (40, 20), (100, 70), (300, 250)])
def test_exact_mcnemar_equals_the_hand_computation(n01, n10):
    a, b = pairs(50, n10, n01, 30)
    r = mcnemar(a, b)
    assert (r.n01, r.n10) == (n01, n10)
    assert r.diff == pytest.approx(b.mean() - a.mean()) and r.diff == pytest.approx((n01 - n10) / a.size)
    assert r.p_value == pytest.approx(hand_p(n01, n10), rel=1e-9, abs=1e-300)
    assert mcnemar(b, a).p_value == pytest.approx(r.p_value) and mcnemar(b, a).diff == pytest.approx(-r.diff)


def test_exact_mcnemar_equals_scipys_two_sided_binomial_test():
    """The closed form p = min(1, 2·P(X ≤ min)) against scipy.stats.binomtest's own two-sided p-value,
    every split of up to 120 discordant pairs and a few large ones."""
    from scipy.stats import binomtest
    splits = [(k, d - k) for d in range(1, 121) for k in range(d + 1)] + [(480, 520), (4000, 4301), (0, 900)]
    for n01, n10 in splits:
        a, b = pairs(0, n10, n01, 0)
        expected = binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue
        assert mcnemar(a, b).p_value == pytest.approx(expected, rel=1e-9, abs=1e-300), (n01, n10)


def test_mcnemar_known_values_and_edges():
    a, b = pairs(10, 0, 14, 76)
    assert mcnemar(a, b).p_value == pytest.approx(2 / 2 ** 14)          # 1.22e-4
    assert mcnemar(*pairs(5, 0, 5, 0)).p_value == pytest.approx(2 / 32)
    assert mcnemar(*pairs(5, 0, 0, 5)).p_value == 1.0                   # no discordant pair
    empty = mcnemar(np.array([], bool), np.array([], bool))
    assert math.isnan(empty.diff) and math.isnan(empty.p_value)
    with pytest.raises(CSRSError, match="paired outcomes"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


@pytest.mark.parametrize("n, p_disc, p_both", [(30, 0.2, 0.5), (200, 0.05, 0.6), (200, 0.3, 0.4), (1000, 0.04, 0.6)])
def test_mcnemar_keeps_its_level_under_the_null(n, p_disc, p_both):
    """Simulated paired outcomes with P(a right, b wrong) = P(a wrong, b right) (H0 true, a and b
    correlated): the rejection rate at 0.05 must not exceed 0.05 beyond Monte Carlo error."""
    rng = np.random.default_rng(n)
    reps = 2000
    cells = rng.choice(4, size=(reps, n), p=[p_both, p_disc / 2, p_disc / 2, 1 - p_both - p_disc])
    a = (cells == 0) | (cells == 1)
    b = (cells == 0) | (cells == 2)
    rejected = np.array([mcnemar(a[i], b[i]).p_value <= 0.05 for i in range(reps)])
    assert rejected.mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps), rejected.mean()


def test_mcnemar_detects_a_real_difference():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(300):
        cells = rng.choice(4, size=200, p=[0.5, 0.02, 0.12, 0.36])   # b better by 0.10
        hits += mcnemar((cells == 0) | (cells == 1), (cells == 0) | (cells == 2)).p_value <= 0.05
    assert hits / 300 > 0.9


def _counts(labels, confident, n0=20, n=200, m=3):
    """Count tables where a `confident` example votes all for its label (certified, large radius)
    and any other splits its votes nearly evenly (top class = label, but no certificate)."""
    labels = np.asarray(labels)
    counts0 = np.zeros((len(labels), m), int)
    counts = np.zeros((len(labels), m), int)
    for i, (y, ok) in enumerate(zip(labels, confident)):
        counts0[i, y] = n0
        if ok:
            counts[i, y] = n
        else:
            counts[i] = n // m
            counts[i, y] += n - counts[i].sum()
    return counts0, counts, labels


def test_paired_comparison_on_synthetic_count_tables():
    labels = np.arange(90) % 3                        # 30 per class; class 0 sensitive (seedwise:0)
    conf_a = np.arange(90) < 40                       # a certifies examples 0..39
    conf_b = (np.arange(90) < 60) & (np.arange(90) != 3)   # b: 0..59 except 3
    cost = CostMatrix.seedwise(3, seeds=[0])
    ta = certify_from_counts(*_counts(labels, conf_a), cost, sigma=0.25)
    tb = certify_from_counts(*_counts(labels, conf_b), cost, sigma=0.25)
    assert np.array_equal(ta.pred_std == ta.label, conf_a) and np.array_equal(tb.pred_std == tb.label, conf_b)
    eps = 0.1
    c = paired_comparison(ta, tb, eps)
    assert (c["acc_n01"], c["acc_n10"]) == (20, 1)
    assert c["p_acc"] == pytest.approx(hand_p(20, 1)) and c["d_acc"] == pytest.approx(19 / 90)
    sa, sb = summarize(ta, eps), summarize(tb, eps)
    assert c["acc_a"] == pytest.approx(sa["acc"]) and c["acc_b"] == pytest.approx(sb["acc"])
    assert c["rob_cs_a"] == pytest.approx(sa["rob_cs"]) and c["rob_cs_b"] == pytest.approx(sb["rob_cs"])
    # sensitive = class 0 = examples 0, 3, ..., 87; only b: 42, 45, ..., 57 (6); only a: 3
    assert c["n_sensitive"] == 30 and (c["rob_cs_n01"], c["rob_cs_n10"]) == (6, 1)
    assert c["d_rob_cs"] == pytest.approx(5 / 30) and c["p_rob_cs"] == pytest.approx(hand_p(6, 1))
    assert c["d_balanced_acc"] == pytest.approx(sb["balanced_acc"] - sa["balanced_acc"])
    with pytest.raises(CSRSError, match="same examples"):
        paired_comparison(ta, tb.iloc[::-1].reset_index(drop=True), eps)
    other_cost = certify_from_counts(*_counts(labels, conf_b), CostMatrix.seedwise(3, seeds=[1]), sigma=0.25)
    with pytest.raises(CSRSError, match="sensitive"):
        paired_comparison(ta, other_cost, eps)


def test_balanced_accuracy_and_per_class_certified_recall():
    labels = np.array([0] * 8 + [1] * 2)               # imbalanced: 8 of class 0, 2 of class 1
    confident = np.array([True] * 8 + [True, False])   # every class-0 example right, half of class 1
    t = certify_from_counts(*_counts(labels, confident, m=2), CostMatrix.empty(2), sigma=0.25)
    s = summarize(t, 0.1)
    assert s["acc"] == pytest.approx(0.9) and s["balanced_acc"] == pytest.approx(0.75)
    assert set(s) >= {"acc", "rob_cs", "rob_std", "rob_non", "n", "n_sensitive"}
    assert per_class_recall(t).tolist() == pytest.approx([1.0, 0.5])
    rec = per_class_recall(t, eps=0.1, num_classes=3)
    assert rec[:2].tolist() == pytest.approx([1.0, 0.5]) and math.isnan(rec[2])   # class 2: no example
    assert rec[:2] == pytest.approx(per_class(t, 0.1).certified_acc.to_numpy())
    assert per_class_recall(t, eps=10.0).tolist() == [0.0, 0.0]                   # beyond every radius
    assert balanced_accuracy(t, eps=10.0) == 0.0
    assert math.isnan(balanced_accuracy(t.iloc[:0]))


@pytest.fixture
def folder(tmp_path, synthetic_checkpoint):
    """'cohen' (gaussian) and 'other' (a perturbed copy, method macer) certified on the same 16
    synthetic examples, and 'elsewhere' certified on 16 other examples."""
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(synthetic_checkpoint, case / "cohen.pt")
    model, meta = load_model(synthetic_checkpoint)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    save_checkpoint(case / "other.pt", model, {**meta, "method": "macer"})
    save_checkpoint(case / "elsewhere.pt", model, {**meta, "method": "cohen-r"})
    data = load_dataset("synthetic", "test")
    for name in ("cohen", "other"):
        counts_record(case / f"{name}.pt", data.subset(np.arange(16)), n0=10, n=40, batch=64)
    counts_record(case / "elsewhere.pt", data.subset(np.arange(16, 32)), n0=10, n=40, batch=64)
    return case


def _table(ckpt, cost, alpha=0.001, mode="sound"):
    [info] = list_records(ckpt)
    rec = load_record(info.path)
    return certify_from_counts(rec.counts0, rec.counts, rec.labels, cost, sigma=rec.meta["sigma"],
                               alpha=alpha, mode=mode)


def test_report_on_a_small_folder_shows_paired_p_values(folder, capsys):
    rep = report_table(folder, "seedwise:1", eps=0.1)
    df = rep.table.set_index("checkpoint")
    assert list(rep.table.columns[:6]) == ["checkpoint", "method", "acc", "rob_cs", "rob_std", "rob_non"]
    assert rep.baseline == "cohen"                                       # the one gaussian checkpoint
    assert "1 − α = 0.999" in rep.header and "sound mode" in rep.header and "baseline cohen" in rep.header
    cost = CostMatrix.seedwise(load_dataset("synthetic", "test").num_classes, seeds=[1])
    expected = paired_comparison(_table(folder / "cohen.pt", cost), _table(folder / "other.pt", cost), 0.1)
    for col in ("d_acc", "p_acc", "d_rob_cs", "p_rob_cs"):
        assert df.loc["other", col] == pytest.approx(expected[col], nan_ok=True)
    assert 0 < df.loc["other", "p_acc"] <= 1 and 0 < df.loc["other", "p_rob_cs"] <= 1
    assert df.loc["other", "sensitive_examples"] == 4                           # class 1 of 4, 16 examples
    assert df.loc["cohen", "d_acc"] == 0 and math.isnan(df.loc["cohen", "p_acc"])
    assert df[["d_acc", "p_acc", "d_rob_cs", "p_rob_cs"]].loc["elsewhere"].isna().all()
    assert any(n.startswith("elsewhere: not compared with baseline cohen") for n in rep.notes)
    assert df.loc["cohen", "balanced_acc"] == pytest.approx(summarize(_table(folder / "cohen.pt", cost), 0.1)["balanced_acc"])

    flipped = report_table(folder, "seedwise:1", eps=0.1, baseline="other.pt", mode="paper")
    assert flipped.baseline == "other" and "1 − 1.5α = 0.9985" in flipped.header
    fdf = flipped.table.set_index("checkpoint")
    assert fdf.loc["cohen", "p_acc"] == pytest.approx(mcnemar(*[
        (t.pred_std == t.label).to_numpy() for t in (_table(folder / "other.pt", cost, mode="paper"),
                                                       _table(folder / "cohen.pt", cost, mode="paper"))]).p_value)
    with pytest.raises(SettingError, match="--baseline = 'nope' names no checkpoint"):
        report_table(folder, "seedwise:1", eps=0.1, baseline="nope")
    (folder / "bare.pt").write_bytes((folder / "other.pt").read_bytes())
    with pytest.raises(SettingError, match="without a valid certification record"):
        report_table(folder, "seedwise:1", eps=0.1, baseline="bare")

    assert cli.main(["report", "--checkpoints", str(folder), "--cost", "seedwise:1", "--eps", "0.1",
                     "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == CSV_HEAD and len(lines) == 4
    assert "certificates hold with probability ≥ 1 − α = 0.999" in err and "baseline cohen" in err
    row = dict(zip(CSV_HEAD.split(","), next(l for l in lines if l.startswith("other,")).split(",")))
    assert float(row["p_acc"]) == pytest.approx(expected["p_acc"], rel=1e-3)


def test_shipped_cifar10_reviewer_p_values(capsys):
    """cs-macer-seed3 vs cohen-r on the shipped 1,000 CIFAR-10 images, seedwise:3, eps 0.25:
    Rob_cs differs significantly (9 discordant cat images, 8 for cs-macer: p = 2·10/2^9 = 0.039),
    Acc does not (27 vs 21 discordant, p = 0.47)."""
    rep = report_table(SHIPPED / "cifar10", "seedwise:3", eps=0.25, baseline="cohen-r")
    assert not rep.notes, rep.notes
    row = rep.table.set_index("checkpoint").loc["cs-macer-seed3"]
    assert row.p_rob_cs < 0.05 and row.p_rob_cs == pytest.approx(hand_p(8, 1)) == pytest.approx(20 / 2 ** 9)
    assert row.p_acc > 0.05 and row.p_acc == pytest.approx(hand_p(27, 21))
    assert row.d_rob_cs == pytest.approx(0.07) and row.d_acc == pytest.approx(0.006)
    assert row.balanced_acc == pytest.approx(row.acc)      # the shipped sample has 100 images per class

    assert cli.main(["report", "--checkpoints", str(SHIPPED / "cifar10"), "--cost", "seedwise:3",
                     "--eps", "0.25", "--baseline", "cohen-r"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("cost seedwise:3, ε = 0.25: certificates hold with probability ≥ 1 − α = 0.999 each")
    line = next(l for l in out.splitlines() if l.split()[:1] == ["cs-macer-seed3"])
    assert "0.039" in line and "0.47" in line and "+0.070" in line
    assert cli.main(["report", "--checkpoints", str(SHIPPED / "cifar10"), "--cost", "seedwise:3",
                     "--eps", "0.25", "--baseline", "cohen-r", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    df = pd.read_csv(io.StringIO(out))
    assert ",".join(df.columns) == CSV_HEAD and "baseline cohen-r" in err
    assert df.set_index("checkpoint").loc["cs-macer-seed3", "p_rob_cs"] == pytest.approx(20 / 2 ** 9, rel=1e-3)


def test_proportion_intervals_are_exact_and_cover():
    from scipy.stats import binomtest

    from csrs_core.certification.stats import proportion_interval
    for k, n in [(0, 10), (3, 10), (10, 10), (37, 100), (672, 1000)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert proportion_interval(k, n) == pytest.approx((ci.low, ci.high))
    rng = np.random.default_rng(3)  # coverage by Monte Carlo: at least 95 % for a true proportion of 0.3
    hits = [lo <= 0.3 <= hi for lo, hi in (proportion_interval(rng.binomial(60, 0.3), 60) for _ in range(2000))]
    assert np.mean(hits) >= 0.95 - 2.5 * np.sqrt(0.05 * 0.95 / 2000)
    assert all(math.isnan(v) for v in proportion_interval(0, 0))


def test_holm_matches_its_definition():
    from csrs_core.certification.stats import holm
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 with m = 4: 0.04, max(0.04, 0.09), max(0.09, 0.08), max(0.09, 0.5)
    np.testing.assert_allclose(holm(p), [0.04, np.nan, 0.09, 0.09, 0.5])
    assert np.all(np.isnan(holm([np.nan])))
