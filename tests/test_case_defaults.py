"""Each case opens on its own question (its case.json: cost, ε, baseline, the model to look at first), a case
without one on stated defaults; the first-visit guide and the glossary."""
import json
from pathlib import Path

import pytest

from csrs_core.cases import CASE_FILE, case_defaults, write_case_file
from csrs_core.certification.cost import parse_cost
from dashboard_fixtures import APP

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
EXPECTED = {"imagenette": ("seedwise:7", 0.5, "cohen", "cs-macer-seed7", "gas pump"),
            "ham10000": ("pairwise:1>0", 0.5, "cohen", "cs-macer", "malignant"),
            "cifar10": ("seedwise:3", 0.25, "cohen", "cs-macer-seed3", "cat")}


def _open(monkeypatch, case: str):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("CSRS_CHECKPOINTS", str(SHIPPED))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["case"] = case
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("case", list(EXPECTED))
def test_each_shipped_case_opens_on_its_question(case, monkeypatch):
    cost, eps, baseline, focus, words = EXPECTED[case]
    at = _open(monkeypatch, case)
    canonical = parse_cost(cost, 10 if case != "ham10000" else 2).describe()  # pairwise:1>0 of 2 is seedwise:1
    assert at.query_params["cost"] in (canonical, [canonical])
    assert at.number_input(key=f"eps::{case}").value == eps
    assert at.selectbox(key=f"baseline::{case}").value == baseline
    assert at.selectbox(key=f"focus::{case}").value == focus
    assert any(words in m.value for m in at.markdown)  # the question, and the matrix in words
    assert any("reads:" in m.value and words in m.value for m in at.markdown)


def test_the_guide_is_shown_until_dismissed_and_the_glossary_defines_the_words(monkeypatch):
    at = _open(monkeypatch, "ham10000")
    assert any(m.value.startswith("**New here?**") for m in at.markdown)
    at.button(key="guide_dismiss").click().run()
    assert not any(m.value.startswith("**New here?**") for m in at.markdown)
    at.switch_page("views/glossary.py").run()
    assert not at.exception and at.title[0].value == "Glossary"
    text = " ".join(m.value for m in at.markdown)
    for term in ("**Rob_cs(ε)**", "**certified accuracy**", "**n0, n**", "**sound mode**", "**ACR**"):
        assert term in text


def test_case_file_fields_are_checked_and_explained(tmp_path):
    classes = ["benign", "malignant"]
    methods = {"cohen": "gaussian", "cohen-extra": "gaussian", "cs": "cs-macer"}
    first = case_defaults(tmp_path, classes, methods)
    assert first.cost.describe() == "overall" and first.eps is None and first.baseline == "cohen"
    assert first.focus == "cs" and not first.from_file and "no case.json" in first.notes[0]
    write_case_file(tmp_path, cost="pairwise:1>0", eps=0.5, baseline="cs", focus="cohen")
    given = case_defaults(tmp_path, classes, methods)
    assert (given.cost.describe(), given.eps, given.baseline, given.focus, given.notes) == ("seedwise:1", 0.5, "cs",
                                                                                           "cohen", ())
    (tmp_path / CASE_FILE).write_text(json.dumps({"cost": "seedwise:7", "eps": -1, "baseline": "gone", "x": 1}))
    bad = case_defaults(tmp_path, classes, methods)
    assert bad.cost.describe() == "overall" and bad.eps is None and bad.baseline == "cohen"
    assert any("seedwise:7" in n for n in bad.notes) and any("eps -1" in n for n in bad.notes)
    assert any("'gone'" in n for n in bad.notes) and any("unknown field(s) x" in n for n in bad.notes)
    (tmp_path / CASE_FILE).write_text("{not json")
    assert "unreadable" in case_defaults(tmp_path, classes, methods).notes[0]
    with pytest.raises(ValueError, match="unknown case field"):
        write_case_file(tmp_path, colour="red")
