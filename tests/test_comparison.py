"""Comparisons never silently mix certification budgets (docs/design.md section 5, "Comparisons"): records
are chosen together, and every setting in which the records shown differ is named, in `report`
and on the Explore page."""
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dashboard_fixtures import open_app

from csrs_core.certification.comparisons import choose_together, describe_differences
from csrs_core.cli import commands as cli
from csrs_core.reports import report_table
from csrs_core.data import load_dataset
from csrs_core.sampling.stage_a import counts_record
from csrs_core.sampling.store import RecordInfo, cert_dir, choose_records, list_records, load_record, write_record

BUDGET_LINE = "a: n = 400, b: n = 40"


def _twenty():
    return load_dataset("synthetic", "test").subset(np.arange(20))


@pytest.fixture
def case(tmp_path, synthetic_checkpoint):
    """The issue's scenario: two copies of one checkpoint, `a` certified at n = 400 and `b` at
    n = 40, on the same 20 examples."""
    folder = tmp_path / "ck" / "synth"
    folder.mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(synthetic_checkpoint, folder / f"{name}.pt")
    counts_record(folder / "a.pt", _twenty(), n0=10, n=400, batch=400)
    counts_record(folder / "b.pt", _twenty(), n0=10, n=40, batch=400)
    return folder


def _cli(folder, capsys, fmt):
    assert cli.main(["report", "--checkpoints", str(folder), "--cost", "seedwise:1", "--eps", "0.1",
                     "--baseline", "a", "--format", fmt]) == 0
    return capsys.readouterr()


def test_report_names_a_difference_in_n(case, capsys):
    rep = report_table(case, "seedwise:1", eps=0.1, baseline="a")
    assert rep.table.checkpoint.tolist() == ["a", "b"]
    [line] = rep.differences
    assert BUDGET_LINE in line and "sampling budget" in line
    assert line in rep.notes
    # next to the numbers: each row says its own budget
    assert rep.table.set_index("checkpoint")["differs"].to_dict() == {"a": "n = 400", "b": "n = 40"}
    # same examples: still paired and tested, with a note that the test mixes model and budget
    assert rep.table.p_acc.notna().tolist() == [False, True]
    assert any(n.startswith("b: d_*/p_* against baseline a") and "n = 400" in n and "n = 40" in n
               for n in rep.notes)
    for fmt in ("text", "markdown", "csv", "latex"):
        out, err = _cli(case, capsys, fmt)
        assert BUDGET_LINE in out + err, fmt
        if fmt in ("csv", "latex"):   # machine output stays parseable: the line is on stderr only
            assert BUDGET_LINE not in out
        if fmt == "csv":
            assert pd.read_csv(io.StringIO(out)).checkpoint.tolist() == ["a", "b"]
        if fmt == "text":
            row = next(l for l in out.splitlines() if l.split()[:1] == ["b"])
            assert "n = 40" in row


def test_records_of_equal_n_are_the_ones_compared(case, capsys):
    counts_record(case / "a.pt", _twenty(), n0=10, n=40, batch=400)    # a now also has an n = 40 record
    rep = report_table(case, "seedwise:1", eps=0.1, baseline="a")
    [a40] = [r for r in list_records(case / "a.pt") if r.meta["n"] == 40]
    assert rep.table.set_index("checkpoint").loc["a", "record"] == a40.path.name
    assert rep.differences == [] and "differs" not in rep.table.columns
    assert not any("n = 400" in n for n in rep.notes), rep.notes
    out, err = _cli(case, capsys, "text")
    assert "n = 400" not in out + err
    # alone, a checkpoint still shows its largest n
    alone = choose_records({case / "a.pt": list_records(case / "a.pt")})
    assert alone[case / "a.pt"][0].meta["n"] == 400


def _variant(folder, name, **changes):
    """A copy of the checkpoint's record with some settings changed (metadata only)."""
    [info] = [r for r in list_records(folder / "b.pt") if r.meta["n"] == 40]
    rec = load_record(info.path)
    meta = {**rec.meta, **changes, "created": rec.meta["created"] + 1}
    for old in cert_dir(folder / name).glob("*.npz"):
        old.unlink()
    write_record(cert_dir(folder / name) / f"variant-{name}.npz", rec.counts0, rec.counts, rec.labels,
                 rec.indices, meta)


@pytest.mark.parametrize("setting, value, written", [
    ("n0", 5, ("n0 = 10", "n0 = 5")), ("seed", 7, ("seed = 0", "seed = 7")),
    ("precision", None, None), ("scheme", "csrs-noise-v0", None), ("sigma", 0.5, ("σ = 0.25", "σ = 0.5"))])
def test_every_other_setting_is_named(case, setting, value, written):
    b = next(r for r in list_records(case / "b.pt")).meta
    if setting == "precision":
        value = "fp32" if b["precision"] != "fp32" else "bf16"
    written = written or (f"{setting} = {b[setting]}", f"{setting} = {value}")
    _variant(case, "a", **{setting: value})   # a: b's record with one setting changed
    rep = report_table(case, "seedwise:1", eps=0.1, baseline="b")
    [line] = rep.differences
    assert f"a: {written[1]}, b: {written[0]}" in line, line
    assert rep.table.set_index("checkpoint")["differs"].to_dict() == {"a": written[1], "b": written[0]}
    assert rep.table.set_index("checkpoint").loc["a", "p_acc"] == 1.0   # same counts, same examples


def _info(n, data="X", n0=10, seed=0, precision="fp32", scheme="csrs-noise-v1", sigma=0.25, examples=20,
          created=0.0, status="valid"):
    meta = {"dataset": "synthetic", "split": "test", "indices_sha256": data, "content_sha256": data,
            "num_examples": examples, "sigma": sigma, "n0": n0, "n": n, "seed": seed, "precision": precision,
            "scheme": scheme, "created": created}
    return RecordInfo(Path(f"{data}-{n}-{n0}-{seed}-{precision}-{sigma}-{created}.npz"), status, meta)


def test_the_rule_shared_settings_then_largest_n_then_examples_then_newest():
    # shared by most checkpoints beats a larger n
    chosen, diffs = choose_together({"a": [_info(400), _info(40)], "b": [_info(40)], "c": [_info(40, n0=5)]})
    assert chosen["a"][0].meta["n"] == 40 and chosen["b"][0].meta["n"] == 40
    assert len(diffs) == 1 and diffs[0].startswith("Records differ in n0") and "c: n0 = 5" in diffs[0]
    # equal coverage: the larger n
    chosen, diffs = choose_together({"a": [_info(400), _info(40)], "b": [_info(400), _info(40)]})
    assert {c: v[0].meta["n"] for c, v in chosen.items()} == {"a": 400, "b": 400} and not diffs
    # then more examples (other examples: another data identity), then the newest
    chosen, _ = choose_together({"a": [_info(40, "X", examples=20), _info(40, "Y", examples=30)],
                                 "b": [_info(40, "X", examples=20), _info(40, "Y", examples=30)]})
    assert chosen["a"][0].meta["num_examples"] == 30 and chosen["a"][1]
    chosen, _ = choose_together({"a": [_info(40, created=1.0), _info(40, created=2.0, sigma=0.5)],
                                 "b": [_info(40, created=1.0)]})
    assert chosen["a"][0].meta["sigma"] == 0.25   # among equal settings: the σ the others share, then newest
    chosen, _ = choose_together({"a": [_info(40, created=2.0), _info(40, created=3.0), _info(40, created=1.0)]})
    assert chosen["a"][0].meta["created"] == 3.0
    # no common set: the fallback keeps the examples (paired tests stay possible) and names the rest
    chosen, diffs = choose_together({"a": [_info(40, "X")], "c": [_info(40, "X")],
                                     "b": [_info(400, "X"), _info(40, "Y")]})
    assert chosen["b"][0].meta["n"] == 400 and chosen["b"][1]
    assert [d.split(" — ")[1].split(".")[0] for d in diffs] == ["a: n = 40, c: n = 40, b: n = 400"]
    # stale and corrupt records are never chosen
    chosen, _ = choose_together({"a": [_info(400, status="stale")], "b": [_info(40)]})
    assert chosen["a"] == (None, False)


def test_examples_that_read_alike_are_told_apart():
    [line] = describe_differences({"a": _info(40, "X" * 10), "b": _info(40, "Y" * 10)})
    assert line.startswith("Records on different examples") and "indices XXXXXXXX" in line and "YYYYYYYY" in line
    assert describe_differences({"a": _info(40), "b": _info(40, created=5.0)}) == []


_app = open_app


def _budget_warnings(at):
    return [w.value for w in at.warning if "Records differ in n (" in w.value]


def test_explore_names_the_difference_of_the_records_shown(case, monkeypatch):
    root = case.parent
    at = _app(root, monkeypatch)
    [warning] = _budget_warnings(at)
    assert BUDGET_LINE in warning
    # with equal-n records for both, those are shown by default, and nothing is flagged
    counts_record(case / "a.pt", _twenty(), n0=10, n=40, batch=400)
    at = _app(root, monkeypatch)
    choice = at.selectbox(key="record::synth::a")
    assert "n=40," in choice.format_func(choice.value)
    assert not _budget_warnings(at)
    # the user picks a's n = 400 record by hand: the note is back, for the records now shown
    other = next(o for o in choice.options if "n=400," in o)   # AppTest lists the options as shown
    choice.select(other).run()
    assert not at.exception, at.exception
    [warning] = _budget_warnings(at)
    assert BUDGET_LINE in warning
