"""Dashboard pages under Streamlit's AppTest: metrics equal csrs_core's, bad input gives messages."""
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from csrs_core.sampling.store import list_records, load_record
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.metrics import summarize

from dashboard_fixtures import APP, build_case, click_grid, open_app, open_train_page



@pytest.fixture(scope="module")
def root(tmp_path_factory, synthetic_checkpoint):
    return build_case(tmp_path_factory.mktemp("dash"), synthetic_checkpoint)


_app = open_app


def _expected(root, name, cost, eps=0.25):
    [info] = list_records(root / "synth" / f"{name}.pt")
    rec = load_record(info.path)
    t = certify_from_counts(rec.counts0, rec.counts, rec.labels, cost, sigma=rec.meta["sigma"], alpha=0.001)
    return summarize(t, eps)


def _row(at, name):
    df = at.dataframe[0].value
    return df[df.checkpoint == name].iloc[0]


def test_explore_metrics_follow_the_grid(root, monkeypatch):
    at = _app(root, monkeypatch)
    names = ["red", "green", "blue", "grey"]
    # default for 4 classes: seedwise on the last class
    cost = CostMatrix.seedwise(4, [3], names)
    for name in ("cohen", "csmacer"):
        assert _row(at, name).rob_cs == pytest.approx(_expected(root, name, cost)["rob_cs"])
    # click a cell: red -> green now costs
    cost = CostMatrix(cost.matrix | np.eye(4, k=1, dtype=bool) * np.array([[1], [0], [0], [0]], bool), names)
    click_grid(at, cost.matrix)
    assert not at.exception
    exp = _expected(root, "cohen", cost)
    row = _row(at, "cohen")
    assert row.sensitive_examples == exp["n_sensitive"] and row.rob_cs == pytest.approx(exp["rob_cs"])
    assert at.query_params["cost"] in (["pairwise:0>1;3>0,1,2"], "pairwise:0>1;3>0,1,2")
    # a preset
    at.button(key="preset_overall::synth").click().run()
    exp = _expected(root, "csmacer", CostMatrix.overall(4))
    assert _row(at, "csmacer").rob_cs == pytest.approx(exp["rob_cs"])
    assert _row(at, "csmacer").sensitive_examples == 64
    at.button(key="preset_clear::synth").click().run()
    assert any("Rob_cs and Rob_std are undefined" in m.value for m in at.markdown)  # under the heading



def test_a_click_that_repeats_an_earlier_matrix_still_counts(root, monkeypatch):
    """A preset changes the matrix without a click; clicking back to the matrix of the last click
    must still apply (the grid sends each click as a one-shot event, not as a state value)."""
    at = _app(root, monkeypatch)
    names = ["red", "green", "blue", "grey"]
    clicked = CostMatrix.seedwise(4, [3], names).matrix.copy()
    clicked[0, 1] = True
    click_grid(at, clicked)
    assert at.query_params["cost"] in (["pairwise:0>1;3>0,1,2"], "pairwise:0>1;3>0,1,2")
    at.button(key="preset_clear::synth").click().run()
    assert at.query_params["cost"] in (["none"], "none")
    click_grid(at, clicked)
    assert at.query_params["cost"] in (["pairwise:0>1;3>0,1,2"], "pairwise:0>1;3>0,1,2")
    assert _row(at, "cohen").rob_cs == pytest.approx(_expected(root, "cohen", CostMatrix(clicked, names))["rob_cs"])


@pytest.mark.parametrize("sent", [[[0, 1], [1, 0]], [["0", "1", "0", "0"]] * 4, [[0, -1, 0, 0]] * 4,
                                  [[0, float("nan"), 0, 0]] * 4, "x", None])
def test_a_malformed_grid_message_changes_nothing(root, monkeypatch, sent):
    at = _app(root, monkeypatch)
    before = at.query_params["cost"]
    click_grid(at, np.array(sent, dtype=object) if isinstance(sent, list) else sent)
    assert not at.exception and at.query_params["cost"] == before


def test_bad_json_import_gives_a_message(root, monkeypatch):
    at = _app(root, monkeypatch)
    at.text_input(key="import::synth").input("{not json").run()
    at.button(key="import_btn::synth").click().run()
    assert not at.exception
    assert any("Could not import" in e.value for e in at.error)
    at.text_input(key="import::synth").input('{"matrix": [[1, 0], [0, 0]]}').run()
    at.button(key="import_btn::synth").click().run()
    assert any("diagonal" in e.value or "4" in e.value for e in at.error)


def test_eps_beyond_sampling_limit_is_flagged(root, monkeypatch):
    at = _app(root, monkeypatch)
    at.number_input(key="eps::synth").set_value(2.0).run()
    assert any("sampling budget" in w.value for w in at.warning)


def test_missing_folder_and_corrupt_checkpoint(tmp_path, monkeypatch, root):
    monkeypatch.setenv("CSRS_CHECKPOINTS", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception and any("does not exist" in e.value for e in at.error)
    bad = tmp_path / "bad" / "case"
    bad.mkdir(parents=True)
    (bad / "broken.pt").write_bytes(b"garbage")
    monkeypatch.setenv("CSRS_CHECKPOINTS", str(tmp_path / "bad"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    at.switch_page("views/checkpoints.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "unreadable" in table.status.iloc[0]


@pytest.mark.parametrize("page", ["views/certify.py", "views/train.py", "views/checkpoints.py", "views/examples.py"])
def test_other_pages_render(root, monkeypatch, page):
    at = _app(root, monkeypatch)
    at.switch_page(page).run()
    assert not at.exception, at.exception


def test_switching_to_the_shipped_medical_case(monkeypatch):
    shipped = Path(__file__).resolve().parents[1] / "checkpoints"
    at = _app(shipped, monkeypatch)
    at.sidebar.selectbox(key="case").select("ham10000").run()
    assert not at.exception, at.exception
    [grid] = at.get("bidi_component")
    assert json.loads(grid.proto.json) == {"names": ["benign", "malignant"], "matrix": [[0, 0], [1, 0]]}
    assert at.query_params["case"] in ("ham10000", ["ham10000"])
    assert len(at.dataframe[0].value) >= 5 and at.number_input(key="eps::ham10000").value == 0.5


def test_requests_for_other_host_names_or_from_other_machines_get_no_app():
    from csrs_core.dashboard.common import refusal
    assert refusal("localhost:8501", "127.0.0.1", None) is None
    assert refusal("127.0.0.1:8501", "127.0.0.1", None) is None
    assert refusal("[::1]:8501", "::1", None) is None
    assert "not to host 'evil.example'" in refusal("evil.example:8501", "127.0.0.1", None)   # DNS rebinding
    assert "this machine only" in refusal("localhost:8501", "10.1.2.3", None)
    assert refusal("evil.example", "10.1.2.3", "0.0.0.0") is None                           # exposed on purpose


def test_dashboard_launch_is_loopback_without_telemetry_or_deploy():
    from csrs_core.dashboard.launch import streamlit_command
    cmd = streamlit_command("127.0.0.1", 8501)
    opts = dict(zip(cmd[5::2], cmd[6::2]))
    assert opts["--server.address"] == "127.0.0.1" and opts["--browser.gatherUsageStats"] == "false"
    assert opts["--client.toolbarMode"] == "minimal"


def _job_args(root):
    from csrs_core import jobs
    return [j for j in jobs.list_jobs(root)]


def test_train_page_keeps_typed_lambda_and_builds_args_through_the_core(tmp_path, monkeypatch, synthetic_checkpoint):
    import json
    from csrs_core import jobs
    at = open_train_page(tmp_path / "ck", synthetic_checkpoint, monkeypatch)
    at.selectbox(key="train::method").select("macer")
    at.number_input(key="train::lam").set_value(1.0)
    at.text_input(key="train::name").input("lam-one")
    at.button[0].click().run()
    assert not at.exception, at.exception
    [job] = jobs.list_jobs(tmp_path / "ck")
    argv = job["argv"]
    assert argv[argv.index("--lam") + 1] == "1.0" and argv[argv.index("--method") + 1] == "macer"
    jobs.cancel(tmp_path / "ck", job["id"])
    jobs.wait(tmp_path / "ck", job["id"], 120)
    assert json.loads((jobs.jobs_dir(tmp_path / "ck") / job["id"] / "job.json").read_text())["kind"] == "train"


@pytest.mark.parametrize("folder, words", [("../../etc", "not an absolute path or '..'"), ("/etc", "absolute"),
                                           ("bad\x00name", "control characters")])
def test_certify_page_refuses_paths_outside_the_data_folder(root, monkeypatch, folder, words):
    from csrs_core import jobs
    at = _app(root, monkeypatch)
    at.switch_page("views/certify.py").run()
    at.selectbox(key="certify::source").select("image folder…")
    at.text_input(key="certify::folder").input(folder)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any(words in e.value for e in at.error), [e.value for e in at.error]
    assert not [j for j in jobs.list_jobs(root) if j.get("kind") == "certify"]


def test_explore_offers_a_choice_of_records_and_flags_stale_ones(tmp_path, monkeypatch, synthetic_checkpoint):
    import shutil
    import numpy as np
    from csrs_core.data import load_dataset
    from csrs_core.sampling.stage_a import counts_record
    case = tmp_path / "ck" / "synth"
    case.mkdir(parents=True)
    shutil.copy(synthetic_checkpoint, case / "a.pt")
    shutil.copy(synthetic_checkpoint, case / "b.pt")
    data = load_dataset("synthetic", "test")
    counts_record(case / "a.pt", data, n0=10, n=40, batch=64)
    counts_record(case / "a.pt", data.subset(np.arange(20)), n0=10, n=80, batch=64)
    counts_record(case / "b.pt", data, n0=10, n=40, batch=64)
    at = _app(tmp_path / "ck", monkeypatch)
    choice = at.selectbox(key="record::synth::a")
    assert len(choice.options) == 2
    assert "64 examples" in choice.value or "64 examples" in str(choice.format_func(choice.value))
    assert not any("different examples" in w.value for w in at.warning)
    choice.select(choice.options[1] if choice.index == 0 else choice.options[0]).run()
    assert any("different examples" in w.value for w in at.warning)
    with open(case / "b.pt", "ab") as fh:   # the file changes: its record is stale
        fh.write(b"\0")
    at = _app(tmp_path / "ck", monkeypatch)
    assert any("made from other content of b.pt" in w.value for w in at.warning)


def test_job_progress_reads_the_epochs_from_the_run_itself():
    """A run started with the default epoch count has no --epochs on its command line: the bar must
    still say 'epoch 3/10', not 'epoch 3/1' and full."""
    from csrs_core.dashboard.jobs_panel import _epochs, _fraction
    job = {"state": "running", "argv": ["train", "--method", "gaussian"],
           "events": [{"event": "start", "epoch": 0, "epochs": 10, "steps_per_epoch": 50}],
           "progress": {"event": "step", "epoch": 2, "step": 25, "steps": 50}}
    job["epochs"] = _epochs(job)
    frac, text = _fraction(job)
    assert job["epochs"] == 10 and frac == pytest.approx(0.25) and text.startswith("epoch 3/10")
    job["events"], job["epochs"] = [], None  # before its start event: no made-up total
    assert _fraction(job)[0] == 0.0


def test_a_case_holds_one_class_list(tmp_path, synthetic_checkpoint, monkeypatch):
    """Training another data set's classes into a case is refused; a foreign checkpoint already in the
    folder is named and left out of Explore, never a traceback."""
    import shutil
    from csrs_core import jobs
    from csrs_core.models.checkpoints import save_checkpoint
    from csrs_core.models.architectures import build_model
    root = build_case(tmp_path / "ck", synthetic_checkpoint)
    at = _app(root, monkeypatch)
    at.switch_page("views/train.py").run()
    at.selectbox(key="train::dataset").select("ham10000")
    at.text_input(key="train::name").input("two-classes")
    at.button[0].click().run()
    assert not at.exception and any("holds models of other classes" in e.value for e in at.error)
    assert jobs.list_jobs(root) == []
    meta = {"arch": "resnet8", "classes": ["benign", "malignant"], "dataset": "ham10000", "sigma": 0.5,
            "method": "gaussian", "mean": [0.5] * 3, "std": [0.25] * 3}
    save_checkpoint(root / "synth" / "zz-ham.pt", build_model("resnet8", 2, meta["mean"], meta["std"]), meta)
    at = _app(root, monkeypatch)
    assert any("zz-ham" in w.value and "other classes" in w.value for w in at.warning)
    shutil.rmtree(root)


def test_the_split_applies_to_the_shipped_sample(root, monkeypatch):
    from csrs_core import jobs
    at = _app(root, monkeypatch)
    at.switch_page("views/certify.py").run()
    split = next(s for s in at.selectbox if s.label == "Split")
    split.select("val")
    at.button[0].click().run()
    assert not at.exception and any("holds test examples only" in e.value for e in at.error)
    assert not [j for j in jobs.list_jobs(root) if j.get("kind") == "certify" and j["state"] in jobs.ACTIVE]


def test_a_single_stale_record_can_be_deleted(tmp_path, synthetic_checkpoint, monkeypatch):
    import shutil
    from csrs_core.sampling.store import list_records
    root = build_case(tmp_path / "ck", synthetic_checkpoint)
    case = root / "synth"
    shutil.copy(case / "csmacer.pt", case / "cohen.pt")   # cohen's record now describes other content
    [stale] = list_records(case / "cohen.pt")
    assert stale.status == "stale"
    at = _app(root, monkeypatch)
    at.switch_page("views/checkpoints.py").run()
    at.button(key=f"delete_record::{stale.path}").click().run()
    assert not at.exception and not stale.path.exists()
    assert [r.status for r in list_records(case / "csmacer.pt")] == ["valid"]


def test_the_repository_entry_opens_the_same_app(monkeypatch):
    """`streamlit run dashboard/app.py` from the repository's root: the same pages as `csrs dashboard`, on the
    shipped checkpoints, the repository's config keeping it on loopback with usage statistics off."""
    import tomllib

    from streamlit.testing.v1 import AppTest
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    monkeypatch.delenv("CSRS_CHECKPOINTS", raising=False)
    at = AppTest.from_file(str(repo / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Explore & compare"]
    config = tomllib.loads((repo / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1" and config["browser"]["gatherUsageStats"] is False
