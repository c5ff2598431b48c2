"""Dashboard flows under AppTest: the Certify page's time estimate from the tuning cache, importing the
field's checkpoints on the Checkpoints page, training histories, and deletions refused while a job
writes or reads what would be deleted."""
import argparse
import json
import shutil

import pyarrow as pa
import pytest
import torch
from streamlit.testing.v1 import AppTest

from csrs_core import jobs
from csrs_core.dashboard.common import shipped_root
from csrs_core.data import load_dataset
from csrs_core.interop.importers import COHEN_CIFAR10_MEAN, import_checkpoint
from csrs_core.models.checkpoints import load_model, read_meta
from csrs_core.runtime.device import pick_device
from csrs_core.runtime.locks import output_lock
from csrs_core.sampling import plan
from csrs_core.sampling.stage_a import counts_record
from csrs_core.sampling.store import list_records
from csrs_core.training.loop import TrainConfig, train

from dashboard_fixtures import APP, open_app
from test_import import cohen_file, csrs_file, macer_file, torchvision_file  # each project's own layout


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, synthetic_checkpoint):
    """A case `synth` of two real training runs (gaussian, 2 epochs; macer, 3 epochs with λ = 2 warmed
    up over 2 epochs) and the synthetic test set as its shipped sample (64 examples of 16 x 16)."""
    root = tmp_path_factory.mktemp("flows")
    case = root / "synth"
    case.mkdir()
    shutil.copy(synthetic_checkpoint, case / "cohen.pt")
    train(TrainConfig(method="macer", dataset="synthetic", out=str(case / "macer"), arch="resnet8", epochs=3,
                      batch=32, lr=0.01, gauss_num=2, lam=2.0, lam_warmup=2.0, max_steps_per_epoch=2, threads=2))
    load_dataset("synthetic", "test").save_sample(case / "test-sample.npz")
    return root


def _copy(root, tmp_path):
    shutil.copytree(root, tmp_path / "ck")
    return tmp_path / "ck"


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _texts(at) -> str:
    return "\n".join(e.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
                     for e in getattr(at, kind))


# --- Certify: estimated time ---------------------------------------------------------------------

def _cache_rates(monkeypatch, checkpoint, shape, rates):
    """Cache `rates` for the checkpoint's model and input shape on this machine the way a job does:
    choose_plan measuring (the measurement replaced by `rates`) on an idle machine."""
    monkeypatch.setattr(plan, "measure_eager", lambda *a, **k: (dict(rates), True))
    monkeypatch.setattr(plan, "others_busy", lambda device: False)
    model, _ = load_model(checkpoint)
    plan.choose_plan(model, pick_device("auto"), "auto", None, shape, samples=plan.MEASURE_WORTH_SAMPLES)


def _no_measuring(*args, **kwargs):
    raise AssertionError("the page measured")


def test_certify_estimates_the_time_from_the_cached_rate(trained_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CSRS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plan, "forward_rate", _no_measuring)
    at = open_app(trained_root, monkeypatch)
    at.switch_page("views/certify.py").run()
    assert not at.exception, at.exception
    assert "cohen**: no rate measured yet" in _texts(at) and "measured when the job starts" in _texts(at)
    assert not (tmp_path / "cache" / "autotune.json").exists()          # the page never measures

    _cache_rates(monkeypatch, trained_root / "synth" / "cohen.pt", (3, 16, 16), {"eager/fp32/128": 640.0,
                                                                                 "eager/bf16/128": 320.0})
    cached = (tmp_path / "cache" / "autotune.json").read_bytes()
    at.run()
    # 64 examples of the sample x (n0 = 100 + n = 1000) = 70,400 noisy images at 640 images/s = 110 s
    assert "64 examples × 1,100 noisy images = 70,400 at 640 images/s" in _texts(at)
    assert "about **1 min 50 s**" in _texts(at)
    next(n for n in at.number_input if n.label == "n").set_value(2000).run()
    assert "about **3 min 30 s**" in _texts(at)                         # 64 x 2,100 / 640 = 210 s
    at.selectbox(key="certify::source").select("synthetic").run()      # a data set: at most the number typed
    assert "at most 100 examples × 2,100 noisy images" in _texts(at)
    next(n for n in at.number_input if n.label.startswith("Image size")).set_value(32).run()
    assert "no rate measured yet for this model (resnet8, inputs 3×32×32)" in _texts(at)   # another input shape
    assert not at.exception and (tmp_path / "cache" / "autotune.json").read_bytes() == cached


def test_a_sequential_job_is_estimated_and_queued_with_its_radii_and_the_matrix_shown(trained_root, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("CSRS_CACHE", str(tmp_path / "cache"))
    _cache_rates(monkeypatch, trained_root / "synth" / "cohen.pt", (3, 16, 16), {"eager/fp32/128": 640.0})
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda root, kind, argv, out: started.append(argv))
    at = open_app(trained_root, monkeypatch)
    at.switch_page("views/certify.py").run()
    next(n for n in at.number_input if n.label == "n").set_value(2000)
    next(c for c in at.checkbox if c.label.startswith("Decide at ε")).check().run()
    next(t for t in at.text_input if t.label.startswith("ε to decide")).input("0.1,0.2").run()
    # 64 examples x (n0 = 100 + 2,000 / 20) = 12,800 noisy images at 640 images/s = 20 s; at most 64 x 2,100
    assert "each stopping once every ε is decided" in _texts(at) and "about **20 s**" in _texts(at)
    assert "at most 3 min 30 s" in _texts(at)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [argv] = started
    assert argv[argv.index("--eps") + 1] == "0.1,0.2" and "--sequential" in argv
    # decided for Explore's matrix: this case has no case.json, so every mistake costs (the default, not written)
    assert "(`overall`)" in _texts(at) and "--cost" not in argv
    next(t for t in at.text_input if t.label.startswith("ε to decide")).input("9").run()
    at.button[0].click().run()
    assert any("largest certifiable radius" in e.value for e in at.error) and len(started) == 1


def test_the_estimate_follows_the_chosen_precision_and_batch(trained_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CSRS_CACHE", str(tmp_path / "cache"))
    _cache_rates(monkeypatch, trained_root / "synth" / "cohen.pt", (3, 16, 16), {"eager/fp32/128": 640.0,
                                                                                 "eager/bf16/256": 1280.0})
    at = open_app(trained_root, monkeypatch)
    at.switch_page("views/certify.py").run()
    assert "at 1,280 images/s" in _texts(at)                            # auto: the fastest measured
    next(n for n in at.number_input if n.label.startswith("batch")).set_value(128)
    next(s for s in at.selectbox if s.label == "precision").select("fp32").run()
    assert "at 640 images/s" in _texts(at)                              # given: that measurement
    next(n for n in at.number_input if n.label.startswith("batch")).set_value(64).run()
    assert "cohen**: no rate measured yet" in _texts(at)


# --- Checkpoints: training history ---------------------------------------------------------------

def _charts(at) -> dict:
    """{figure title: its data frame} of the page's Vega-Lite charts."""
    charts = {}
    for chart in at.get("vega_lite_chart"):
        [data] = chart.proto.datasets
        charts[json.loads(chart.proto.spec)["title"]] = pa.ipc.open_stream(data.data.data).read_pandas()
    return charts


def test_training_histories_are_overlaid_one_figure_per_quantity(trained_root, tmp_path, monkeypatch):
    root = _copy(trained_root, tmp_path)
    macer_file(tmp_path / "macer-project.pth", classes=4)
    import_checkpoint(tmp_path / "macer-project.pth", root / "synth" / "imported.pt", None, "synthetic", 0.25)
    at = open_app(root, monkeypatch)
    at.switch_page("views/checkpoints.py").run()
    assert not at.exception, at.exception
    charts = _charts(at)
    assert set(charts) == {"training loss (epoch mean)", "training accuracy (noisy inputs)", "λ at the epoch's end",
                           "learning rate at the epoch's end"}
    loss = charts["training loss (epoch mean)"]
    assert loss.groupby("checkpoint").size().to_dict() == {"cohen": 2, "macer": 3}
    history = read_meta(root / "synth" / "macer.pt")["history"]
    assert loss[loss.checkpoint == "macer"].value.tolist() == pytest.approx([h["loss"] for h in history])
    lam = charts["λ at the epoch's end"]
    assert lam.checkpoint.unique().tolist() == ["macer"] and lam.value.tolist() == [1.0, 2.0, 2.0]
    assert any("No training history in imported" in i.value for i in at.info)

    at.multiselect(key="history::synth").set_value(["cohen"]).run()
    assert not at.exception and "λ at the epoch's end" not in _charts(at)
    assert _charts(at)["learning rate at the epoch's end"].epoch.tolist() == [1, 2]
    assert any("λ: none of these checkpoints" in c.value for c in at.caption)
    at.multiselect(key="history::synth").set_value(["imported"]).run()
    assert not at.exception and _charts(at) == {}


def test_the_shipped_checkpoints_show_their_histories(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                   # no checkpoints/ here: the shipped demo, read-only
    monkeypatch.delenv("CSRS_CHECKPOINTS", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/checkpoints.py").run()
    assert not at.exception, at.exception
    case = at.sidebar.selectbox(key="case").value
    expected = {p.stem: read_meta(p)["epochs_done"] for p in sorted((shipped_root() / case).glob("*.pt"))}
    assert _charts(at)["training loss (epoch mean)"].groupby("checkpoint").size().to_dict() == expected
    assert any("read-only" in i.value for i in at.info)
    assert not [u for u in at.file_uploader if u.key == "import::file"]   # no import into the demo


# --- Checkpoints: importing the field's checkpoints ----------------------------------------------

FORMATS = {  # format: (builder, data set, architecture, named in the file, default mean shown)
    "cohen": (cohen_file, "cifar10", "resnet20", True, ", ".join(f"{v:g}" for v in COHEN_CIFAR10_MEAN)),
    "macer": (macer_file, "cifar10-jpeg", "resnet8", False, "0, 0, 0"),
    "cs-rs": (csrs_file, "cifar10", "resnet20", False, ", ".join(f"{v:g}" for v in COHEN_CIFAR10_MEAN)),
    "torchvision": (torchvision_file, "imagenette", "resnet18", False, "0.485, 0.456, 0.406"),
}


def _upload(at, path):
    at.file_uploader(key="import::file").upload(path.name, path.read_bytes()).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_importing_each_format_lands_in_the_case_folder(fmt, tmp_path, monkeypatch):
    build, dataset, arch, named, mean = FORMATS[fmt]
    root = tmp_path / "ck"
    root.mkdir()
    src = tmp_path / f"{fmt}-source.pth"
    original = build(src)
    at = open_app(root, monkeypatch)
    at.switch_page("views/checkpoints.py").run()
    _upload(at, src)
    assert f"format **{fmt}** (detected)" in _texts(at)
    assert bool([s for s in at.selectbox if s.key == "import::arch"]) != named   # asked only where the file is silent
    if not named:
        assert at.selectbox(key="import::arch").value == arch
    at.selectbox(key="import::dataset").select(dataset).run()
    mean_box = next(t for t in at.text_input if t.label == "Normalisation mean")
    assert mean_box.value == mean
    at.text_input(key="import::target").input("field")
    at.number_input(key="import::sigma").set_value(0.5)
    at.button(key="import::go").click().run()
    assert not at.exception, at.exception
    assert any(f"as field/{fmt}-source.pt" in s.value and f"from a {fmt} file" in s.value for s in at.success)
    assert f"field/{fmt}-source.pt" in at.dataframe[0].value.file.tolist()
    model, meta = load_model(root / "field" / f"{fmt}-source.pt")
    assert (meta["arch"], meta["dataset"], meta["sigma"], meta["source_format"]) == (arch, dataset, 0.5, fmt)
    assert meta["source_file"] == src.name
    x = torch.rand(2, 3, 64 if fmt == "torchvision" else 32, 64 if fmt == "torchvision" else 32)
    with torch.no_grad():
        assert (original(x) - model(x)).abs().max().item() <= 1e-5
    assert not [p for p in root.iterdir() if p.name.startswith(".import-")]


def test_the_normalisation_can_be_overridden(tmp_path, monkeypatch):
    root = tmp_path / "ck"
    root.mkdir()
    macer_file(tmp_path / "m.pth")
    at = _upload(open_app(root, monkeypatch).switch_page("views/checkpoints.py").run(), tmp_path / "m.pth")
    next(t for t in at.text_input if t.label == "Normalisation mean").input("0.5, 0.5, 0.5")
    next(t for t in at.text_input if t.label == "Normalisation std").input("0.25 0.25 0.25")
    at.button(key="import::go").click().run()
    meta = read_meta(root / "imported" / "m.pt")
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.25] * 3


def _refused(at, root, words):
    before = _files(root)
    at.button(key="import::go").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any(words in e and "Nothing was imported" in e for e in errors), errors
    assert not any(".import-" in e or f"{root}/" in e for e in errors)   # no staging or output path
    assert _files(root) == before


def test_import_refusals_show_the_reason_and_write_nothing(trained_root, tmp_path, monkeypatch):
    root = _copy(trained_root, tmp_path)
    cohen_file(tmp_path / "c.pth")
    at = _upload(open_app(root, monkeypatch).switch_page("views/checkpoints.py").run(), tmp_path / "c.pth")
    at.selectbox(key="import::dataset").select("cifar10").run()
    assert at.text_input(key="import::target").value == "synth"
    _refused(at, root, "holds models of other classes (red, green, blue, grey) than cifar10")
    at.text_input(key="import::target").input("cifar")
    at.selectbox(key="import::dataset").select("ham10000").run()
    _refused(at, root, "10 output classes but data set ham10000 has 2")
    at.selectbox(key="import::dataset").select("cifar10").run()
    next(t for t in at.text_input if t.label == "Normalisation std").input("0, 1, 1")
    _refused(at, root, "is not allowed: must be one or more finite numbers, comma-separated, ≥ 0.001 and ≤ 10")
    next(t for t in at.text_input if t.label == "Normalisation mean").input("half, 0, 0")
    _refused(at, root, "Normalisation mean: give numbers separated by commas")
    next(t for t in at.text_input if t.label == "Normalisation mean").input("")
    next(t for t in at.text_input if t.label == "Normalisation std").input("")
    at.text_input(key="import::target").input("../outside")
    _refused(at, root, "not an absolute path or '..'")
    at.text_input(key="import::target").input("cifar")
    at.button(key="import::go").click().run()
    assert any("Imported c.pth as cifar/c.pt" in s.value for s in at.success)
    written = (root / "cifar" / "c.pt").read_bytes()
    _refused(at, root, "cifar/c.pt already exists")
    assert (root / "cifar" / "c.pt").read_bytes() == written


def test_an_unsafe_or_foreign_upload_is_named_and_refused(tmp_path, monkeypatch):
    root = tmp_path / "ck"
    root.mkdir()
    torch.save({"net": {"conv1.weight": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "p.pth")
    at = _upload(open_app(root, monkeypatch).switch_page("views/checkpoints.py").run(), tmp_path / "p.pth")
    [error] = at.error
    assert "Cannot import p.pth" in error.value and "refused for safety" in error.value
    assert str(root) not in error.value and not [b for b in at.button if b.key == "import::go"]
    torch.save({"weights": [1, 2, 3]}, tmp_path / "foreign.pth")
    at = _upload(at, tmp_path / "foreign.pth")
    assert any("matches none of the formats" in e.value for e in at.error)
    assert _files(root) == []


# --- deleting: never what a job writes or reads --------------------------------------------------

def _delete(at, victim):
    next(s for s in at.selectbox if s.label == "Checkpoint").select(victim).run()
    next(c for c in at.checkbox if c.label.startswith(f"Yes, delete {victim}")).check().run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert not at.exception, at.exception
    return at


def test_a_checkpoint_a_run_writes_or_a_job_reads_is_not_deleted(trained_root, tmp_path, monkeypatch):
    root = _copy(trained_root, tmp_path)
    at = open_app(root, monkeypatch)
    at.switch_page("views/checkpoints.py").run()
    with output_lock(root / "synth" / "macer.pt"):                     # a training run writing it
        _delete(at, "synth/macer.pt")
    assert any("being written by a running job" in e.value for e in at.error)
    assert (root / "synth" / "macer.pt").exists()

    queued = {"id": "20260101-000000-abcdef", "kind": "certify", "state": "queued",
              "out": str(root / "synth" / "macer.certify"),
              "argv": ["certify", "--checkpoint", str(root / "synth" / "macer.pt")]}
    monkeypatch.setattr(jobs, "list_jobs", lambda r: [queued])          # started, no lock taken yet
    at = _delete(open_app(root, monkeypatch).switch_page("views/checkpoints.py").run(), "synth/macer.pt")
    assert any("used by the certify job 20260101-000000-abcdef (queued)" in e.value for e in at.error)
    assert (root / "synth" / "macer.pt").exists()
    monkeypatch.setattr(jobs, "list_jobs", lambda r: [dict(queued, state="done")])
    _delete(at, "synth/macer.pt")
    assert not (root / "synth" / "macer.pt").exists() and (root / "synth" / "cohen.pt").exists()


def test_a_record_being_written_is_not_deleted(trained_root, tmp_path, monkeypatch):
    root = _copy(trained_root, tmp_path)
    case = root / "synth"
    counts_record(case / "cohen.pt", load_dataset("synthetic", "test"), n0=10, n=20, batch=64)
    shutil.copy(case / "macer.pt", case / "cohen.pt")                   # cohen's record is stale now
    [stale] = list_records(case / "cohen.pt")
    at = open_app(root, monkeypatch)
    at.switch_page("views/checkpoints.py").run()
    with output_lock(stale.path):
        at.button(key=f"delete_record::{stale.path}").click().run()
    assert any("being written by a running certification" in e.value for e in at.error)
    assert stale.path.exists()
    at.button(key=f"delete_record::{stale.path}").click().run()
    assert not at.exception and not stale.path.exists()


def test_history_figures_are_valid_vega_lite_and_damaged_rows_are_skipped():
    import altair as alt
    from csrs_core.dashboard.history import QUANTITIES, history_figure, history_frame, without_history
    metas = {"a": {"method": "cs-macer", "hyperparameters": {"lam": 3.0, "lam_warmup": 4.0},
                   "history": [{"epoch": 1, "loss": 1.5, "acc": 0.4, "lr": 0.1}, "junk", {"epoch": "2", "loss": 1.0},
                               {"epoch": 2, "loss": float("nan"), "acc": True, "lr": 0.05}]},
             "b": {"method": "gaussian", "history": "not a list"}}
    frame = history_frame(metas)
    assert sorted(map(tuple, frame[["epoch", "quantity", "value"]].values.tolist())) == [
        (1, "acc", 0.4), (1, "lam", 0.75), (1, "loss", 1.5), (1, "lr", 0.1), (2, "lam", 1.5), (2, "lr", 0.05)]
    assert without_history(metas) == ["b"]
    for quantity in QUANTITIES:
        spec = history_figure(frame, quantity, ["a"])
        rows = json.loads(spec["datasets"]["history"].to_json(orient="records"))
        alt.Chart.from_dict({**spec, "datasets": {"history": rows}}, validate=True)
