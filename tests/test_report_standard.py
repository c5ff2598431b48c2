"""`csrs report` as a reader of Cohen et al.'s and MACER's tables expects it: certified accuracy and Rob_cs
at several radii, the average certified radius, abstentions and the Monte Carlo budget in every format,
a LaTeX table in Cohen et al.'s shape, and progress events as sentences."""
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import parse_cost
from csrs_core.certification.metrics import abstention_rate, average_certified_radius
from csrs_core.cli import commands as cli
from csrs_core.cli.report import to_latex
from csrs_core.reports import budget, report_table
from csrs_core.runtime.progress import TerminalProgress
from csrs_core.sampling.store import cert_dir, load_record

CIFAR = Path(__file__).resolve().parents[1] / "checkpoints" / "cifar10"
EPS = (0.0, 0.25, 0.5)
SINGLE = ["checkpoint", "method", "acc", "rob_cs", "rob_std", "rob_non", "balanced_acc", "d_acc", "p_acc",
          "d_rob_cs", "p_rob_cs", "examples", "sensitive_examples", "record", "acc_lo", "acc_hi", "rob_cs_lo", "rob_cs_hi"]


def _certificates(name: str, record_file: str) -> pd.DataFrame:
    """The certify_from_counts table of a shipped record, seedwise:3, sound mode, α = 0.001."""
    record = load_record(cert_dir(CIFAR / f"{name}.pt") / record_file)
    cost = parse_cost("seedwise:3", len(record.meta["classes"]), record.meta["classes"])
    return certify_from_counts(record.counts0, record.counts, record.labels, cost, sigma=record.meta["sigma"])


def test_several_eps_give_a_column_per_eps_that_the_certificates_confirm():
    report = report_table(CIFAR, "seedwise:3", eps="0,0.25,0.5")
    df = report.table
    per_eps = [f"cert_acc@{e:g}" for e in EPS] + [f"rob_cs@{e:g}" for e in EPS]
    assert list(df.columns[:3 + len(per_eps)]) == ["checkpoint", "method", "acc", *per_eps]
    assert "rob_std" not in df and report.eps == EPS and "first ε = 0" in report.header
    for _, row in df.iterrows():
        t = _certificates(row["checkpoint"], row["record"])
        correct = (t.pred_std == t.label).to_numpy()
        for e in EPS:
            assert row[f"cert_acc@{e:g}"] == pytest.approx(np.mean(correct & (t.r1.to_numpy() > e)))
            assert row[f"rob_cs@{e:g}"] == pytest.approx(np.mean(t.cost_robust_radius[t.sensitive].to_numpy() > e))
        assert row["cert_acc@0"] == pytest.approx(row["acc"])  # R1 > 0 is exactly "the certificate predicts"
    first = report_table(CIFAR, "seedwise:3", eps=0.0, baseline=report.baseline).table.set_index("checkpoint")
    for c in ("d_acc", "p_acc", "d_rob_cs", "p_rob_cs", "rob_cs_lo", "rob_cs_hi"):  # the paired tests: at the first ε
        assert df.set_index("checkpoint")[c].to_numpy() == pytest.approx(first[c].to_numpy(), nan_ok=True)


def test_one_eps_keeps_its_columns_and_adds_acr_abstain_budget_last():
    df = report_table(CIFAR, "seedwise:3", eps=0.25).table
    assert list(df.columns) == SINGLE + ["p_acc_holm", "p_rob_cs_holm", "acr", "abstain", "budget"]
    for _, row in df.iterrows():
        t = _certificates(row["checkpoint"], row["record"])
        correct = (t.pred_std == t.label).to_numpy()
        assert row["acr"] == pytest.approx(np.where(correct, t.r1, 0.0).mean())
        assert row["abstain"] == pytest.approx(np.mean(t.pred_std == -1)) and row["budget"] == "n0=100, n=1000"


def test_acr_and_abstention_by_hand():
    table = pd.DataFrame({"label": [0, 1, 2, 0, 1], "pred_std": [0, -1, 1, 0, 1], "r1": [0.5, -0.1, 0.3, 0.2, 0.05]})
    assert average_certified_radius(table) == pytest.approx((0.5 + 0.2 + 0.05) / 5)  # wrong or abstained: 0
    assert abstention_rate(table) == pytest.approx(1 / 5)
    empty = table.iloc[:0]
    assert np.isnan(average_certified_radius(empty)) and np.isnan(abstention_rate(empty))


def test_budget_names_the_samples_of_a_fixed_and_of_a_sequential_record():
    assert budget({"n0": 100, "n": 1000}, np.full(4, 1000)) == "n0=100, n=1000"
    sequential = {"n0": 100, "n": 100_000, "sequential": {"eps": [0.25]}}
    assert budget(sequential, np.array([1000, 3000])) == "sequential, cap n=100,000, mean 2,000 samples"


@pytest.mark.parametrize("eps", ["0.25", "0,0.25,0.5"])
@pytest.mark.parametrize("form", ["text", "markdown", "csv", "latex"])
def test_abstain_and_budget_in_every_format(form, eps, capsys):
    assert cli.main(["report", "--checkpoints", str(CIFAR), "--cost", "seedwise:3", "--eps", eps,
                     "--format", form]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\babstain\b", out, flags=re.I) and "n0=100, n=1000" in out
    assert ("ACR" if form == "latex" else "acr") in out
    if "," in eps:
        assert ("Certified accuracy at" if form == "latex" else "cert_acc@0.5") in out
    if form == "csv":
        assert list(pd.read_csv(io.StringIO(out)).columns[-3:]) == ["acr", "abstain", "budget"]
    if form == "markdown":
        assert out.splitlines()[0].endswith("| acr | abstain | budget |")


def test_latex_in_cohen_et_al_shape():
    df = pd.DataFrame({"checkpoint": ["cohen_110", "macer"], "method": ["gaussian", "macer"],
                       "cert_acc@0": [0.81, 0.79], "cert_acc@0.5": [0.60, 0.63], "rob_cs@0": [0.5, 0.5],
                       "rob_cs@0.5": [0.2, np.nan], "acr": [0.52, 0.54], "abstain": [0.05, 0.01],
                       "budget": ["n0=100, n=100000", "n0=100, n=100000"]})
    lines = to_latex(df, "CIFAR-10, σ = 0.25", (0.0, 0.5)).splitlines()
    assert lines[3] == r"\begin{tabular}{llccccccl}" and lines[4] == r"\toprule" and lines[-3] == r"\bottomrule"
    assert lines[5] == (r" & & \multicolumn{2}{c}{Certified accuracy at $\varepsilon$} & "   # 2 + 2 + 2 + 2 + 1 columns
                        r"\multicolumn{2}{c}{Rob$_{c\text{-}s}$ at $\varepsilon$} &  &  &  \\")
    assert lines[6] == r"\cmidrule(lr){3-4} \cmidrule(lr){5-6}"
    assert lines[7] == r"Checkpoint & Method & 0 & 0.5 & 0 & 0.5 & ACR & Abstain & Budget \\"
    assert lines[8] == r"\midrule"
    assert lines[9] == (r"cohen\_110 & gaussian & \textbf{0.810} & 0.600 & 0.500 & 0.200 & 0.520 & 0.050 "
                        r"& n0=100, n=100000 \\")
    assert lines[10] == (r"macer & macer & 0.790 & \textbf{0.630} & 0.500 & -- & \textbf{0.540} & 0.010 "
                         r"& n0=100, n=100000 \\")  # nothing to rank (a tie, a lone number) is not bold, nor abstaining
    assert [line.count("&") for line in lines[7:11] if "&" in line] == [8, 8, 8]


def _shown(record: dict) -> str:
    stream = io.StringIO()
    TerminalProgress(stream)({"time": 0.0, **record})
    return stream.getvalue()


def test_progress_events_read_as_sentences_without_none():
    start = {"event": "start", "examples": 100, "total": 110_000, "device": "cpu", "precision": "bf16",
             "batch": 128, "compiled": False, "resumed": 0, "reused": 0}
    assert _shown({**start, "expected_s": None}) == \
        "sampling 100 examples × 1,100 noisy copies on cpu (bf16, batch 128, eager)\n"
    assert _shown({**start, "expected_s": 40}).endswith("eager) — about 40 s\n")
    shown = [_shown(r) for r in (
        {"event": "plan", "precision": "fp32", "batch": 64, "compiled": None, "images_per_s": 5000, "cached": True},
        {"event": "cached", "done": 40, "total": 40, "file": "m.certs/k.npz"},
        {"event": "start", "epoch": 0, "epochs": 10, "steps_per_epoch": 781, "method": "macer", "resumed": False},
        {"event": "epoch", "epoch": 1, "loss": 0.5, "ce": 0.4, "robust": None, "acc": 0.8, "seconds": 12.0},
        {"event": "unheard-of", "size": None, "rate": 2.5})]
    assert shown == ["sampling plan: fp32, batch 64, 5,000 noisy images/s\n",
                     "reusing the stored counts of 40 examples: m.certs/k.npz\n",
                     "training macer for 10 epochs (781 steps each)\n",
                     "epoch 1: loss 0.5000 (ce 0.4), train acc 0.800, 12 s\n",
                     "unheard-of: rate 2.5\n"]


def test_a_model_of_other_classes_is_named_and_left_out(tmp_path, synthetic_checkpoint):
    """A 4-class table does not take in a model of 2 classes: the note names it and says why."""
    import shutil

    from csrs_core.data import load_dataset
    from csrs_core.models.architectures import build_model
    from csrs_core.models.checkpoints import save_checkpoint
    from csrs_core.reports import report_table
    from csrs_core.sampling.stage_a import counts_record
    from csrs_core.sampling.store import list_records, load_record, write_record
    folder = tmp_path / "case"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(synthetic_checkpoint, folder / f"{name}.pt")
        counts_record(folder / f"{name}.pt", load_dataset("synthetic").subset(np.arange(8)), n0=5, n=20,
                      precision="fp32")
    meta = {"arch": "resnet8", "classes": ["benign", "malignant"], "dataset": "ham10000", "sigma": 0.25,
            "method": "gaussian", "mean": [0.5] * 3, "std": [0.25] * 3}
    save_checkpoint(folder / "two.pt", build_model("resnet8", 2, meta["mean"], meta["std"]), meta)
    from csrs_core.models.checkpoints import file_digest
    record = load_record(list_records(folder / "a.pt")[0].path)
    two = {**record.meta, "classes": meta["classes"], "checkpoint_sha256": file_digest(folder / "two.pt")}
    (folder / "two.certs").mkdir()
    write_record(folder / "two.certs" / "r.npz", record.counts0[:, :2], record.counts[:, :2], record.labels % 2,
                 record.indices, two)
    report = report_table(folder, "overall", eps=0.1)
    assert report.table.checkpoint.tolist() == ["a", "b"]
    assert any(n.startswith("two: left out: its classes (benign, malignant) are not the table's") for n in report.notes)
