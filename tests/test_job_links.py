"""A finished job says what it wrote and opens the page that shows it: a certification record on Explore
(selected, the detailed views on its checkpoint), a trained checkpoint on Certify (chosen)."""

import pytest

from csrs_core import jobs
from csrs_core.sampling.store import list_records
from dashboard_fixtures import build_case, open_app


@pytest.fixture(scope="module")
def root(tmp_path_factory, synthetic_checkpoint):
    return build_case(tmp_path_factory.mktemp("links"), synthetic_checkpoint)


def _finished_job(root, kind: str, argv: list[str], out) -> None:
    job = jobs.start_job(root, kind, argv, str(out))
    assert jobs.wait(root, job, 300) == "done"


def test_a_finished_certification_opens_its_record_on_explore(root, monkeypatch):
    case = root / "synth"
    before = {i.path.name for i in list_records(case / "cohen.pt")}
    _finished_job(root, "certify", ["certify", "--checkpoint", str(case / "cohen.pt"), "--dataset", "synthetic",
                                    "--num-examples", "12", "--n0", "8", "--n", "24", "--quiet"],
                  case / "cohen.certify")
    [new] = {i.path.name for i in list_records(case / "cohen.pt")} - before
    at = open_app(root, monkeypatch)
    at.switch_page("views/certify.py").run()
    assert any(new in s.value and "cohen" in s.value for s in at.success), [s.value for s in at.success]
    next(b for b in at.button if b.label == "Show it on Explore & compare").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Explore & compare"
    assert at.selectbox(key="record::synth::cohen").value == new  # the record just written is the one shown
    assert at.selectbox(key="focus::synth").value == "cohen"
    assert not at.warning or all("Session State" not in w.value for w in at.warning)


def test_a_finished_training_opens_certify_with_the_checkpoint_chosen(root, tmp_path, monkeypatch,
                                                                      synthetic_checkpoint):
    case = root / "synth"
    _finished_job(root, "train", ["train", "--method", "gaussian", "--dataset", "synthetic", "--arch", "resnet8",
                                  "--epochs", "1", "--max-steps-per-epoch", "2", "--batch", "16",
                                  "--out", str(case / "quick"), "--quiet"], case / "quick")
    at = open_app(root, monkeypatch)
    at.switch_page("views/train.py").run()
    assert any("quick" in s.value for s in at.success), [s.value for s in at.success]
    next(b for b in at.button if b.label == "Certify it").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Certify"
    assert at.multiselect(key="certify::picked::synth").value == ["quick"]
