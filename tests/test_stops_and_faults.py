"""A signal always stops the work it asks to stop, a busy machine never poisons the plan, and every
fault of the disk or of a setting ends in a message that names it, with nothing lost."""
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from csrs_core.certification.cost import CostMatrixError, parse_cost
from csrs_core.cli import commands as cli
from csrs_core.data import DatasetError, load_dataset
from csrs_core.runtime.atomic import FileWriteError, atomic_write_text
from csrs_core.runtime.locks import output_lock
from csrs_core.runtime.progress import read_progress
from csrs_core.runtime.signals import Stopped, stop_on_sigterm
from csrs_core.sampling import plan as autotune
from csrs_core.sampling.store import recertify_command


@pytest.fixture
def case(tmp_path, synthetic_checkpoint):
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(synthetic_checkpoint, folder / "m.pt")
    return folder


def _certify_args(ckpt, *extra):
    return [sys.executable, "-m", "csrs_core", "certify", "--checkpoint", str(ckpt), "--dataset", "synthetic",
            "--threads", "1", *extra]


def _wait_for(predicate, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------------------ signals
def test_sigterm_while_tuning_waits_stops_at_once(case, tmp_path):
    """The measurement lock is held by another job: the certification waits in tuning; SIGTERM ends it
    within seconds with exit 143 (the old `except Exception` around tuning swallowed the signal)."""
    progress = tmp_path / "p.jsonl"
    with output_lock(autotune.cache_dir() / "autotune-measure"):
        proc = subprocess.Popen(_certify_args(case / "m.pt", "--num-examples", "40", "--n0", "50", "--n", "2000",
                                              "--progress", str(progress), "--quiet"),
                                env=dict(os.environ, CSRS_REMEASURE="1"), stderr=subprocess.PIPE, text=True)
        time.sleep(8)  # loading, hashing: then it waits for the lock in tuning
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and time.time() - t0 < 10, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err


def test_a_signal_inside_the_compile_probe_is_not_taken_for_a_missing_compiler(monkeypatch):
    """The compile probe catches Exception (no compiler here): a stop request must pass through it, and
    no 'compiled: 0' is cached for good."""
    stop_on_sigterm()
    try:
        def compile_then_signal(model, device):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
            return model
        monkeypatch.setattr(autotune, "compile_model", compile_then_signal)
        monkeypatch.setattr(autotune, "measure_eager", lambda *a, **k: ({"eager/fp32/64": 100.0}, True))
        monkeypatch.setattr(autotune, "others_busy", lambda device: False)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        with pytest.raises(Stopped):
            autotune.choose_plan(model, torch.device("cpu"), "auto", None, (3, 2, 2), samples=10**9)
        assert not any(k.startswith("compiled/") for rates in autotune._load_table().values() for k in rates)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_sigterm_while_sampling_keeps_the_partial_counts_and_a_rerun_resumes(case, tmp_path):
    progress = tmp_path / "p.jsonl"
    args = _certify_args(case / "m.pt", "--num-examples", "200", "--n0", "20", "--n", "3000", "--batch", "64",
                         "--precision", "fp32", "--progress", str(progress), "--quiet")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: any(e["event"] == "progress" and e["done"] > 40 * 3020 for e in read_progress(progress)))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert list((case / "m.certs").glob("*.partial/*.npz"))
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    start = [e for e in read_progress(progress) if e["event"] == "start"][-1]
    assert start["resumed"] >= 32 and start["expected_s"] is None  # fixed precision and batch: nothing measured


# ------------------------------------------------------------------------------------ tuning
def _tiny():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))


@pytest.mark.parametrize("busy, stable", [(True, True), (False, False)])
def test_a_measurement_under_load_or_unsteady_serves_the_job_but_is_not_cached(monkeypatch, busy, stable):
    monkeypatch.setattr(autotune, "others_busy", lambda device: busy)
    monkeypatch.setattr(autotune, "measure_eager", lambda *a, **k: ({"eager/fp32/64": 100.0}, stable))
    plan = autotune.choose_plan(_tiny(), torch.device("cpu"), "auto", None, (3, 2, 2), samples=60_000)
    assert plan.precision == "fp32" and plan.batch == 64 and plan.cache_key is None
    assert autotune._load_table() == {}


def test_a_quiet_steady_measurement_is_cached_and_a_job_that_contradicts_it_discards_it(monkeypatch):
    monkeypatch.setattr(autotune, "others_busy", lambda device: False)
    monkeypatch.setattr(autotune, "measure_eager", lambda *a, **k: ({"eager/fp32/64": 1000.0}, True))
    plan = autotune.choose_plan(_tiny(), torch.device("cpu"), "auto", None, (3, 2, 2), samples=60_000)
    assert plan.cache_key in autotune._load_table() and plan.expected == 1000.0
    autotune.review(plan, 950.0)                     # as promised: kept
    assert plan.cache_key in autotune._load_table()
    autotune.review(plan, 300.0)                     # three times slower: measured in another state
    assert autotune._load_table() == {}


def test_compiling_is_weighed_by_the_compile_time_last_measured():
    rates = {"eager/bf16/128": 4000.0, "compiled/bf16/128": 4400.0}
    short = 210_000  # 52.5 s eagerly, 47.7 s compiled
    assert autotune._best(rates, short, "cpu") == "eager/bf16/128"              # no compile time known yet:
    assert autotune._best(rates, 4000 * 700, "cpu") == "compiled/bf16/128"      # only a job of over ten minutes
    assert autotune._best({**rates, "compile-seconds/bf16/128": 2.0}, short, "cpu") == "compiled/bf16/128"  # warm
    assert autotune._best({**rates, "compile-seconds/bf16/128": 20.0}, short, "cpu") == "eager/bf16/128"    # cold
    assert autotune._best({**rates, "compiled/bf16/128": 0.0}, 10**9, "cpu") == "eager/bf16/128"  # no compiler


def test_compile_times_are_measured_noted_and_paid_once(monkeypatch):
    """The measuring job runs the module it compiled while measuring; a later, shorter job planned
    from the cache compiles when the noted time repays, and notes its own compile time."""
    from test_faults_tuning import Compiled   # torch.compile's module stand-in
    compiles = []

    def slow_compile(model, device, seconds=0.2):
        compiles.append(model)
        time.sleep(seconds)
        return Compiled(model)
    monkeypatch.setattr(autotune, "compile_model", slow_compile)
    monkeypatch.setattr(autotune, "measure_eager", lambda *a, **k: ({"eager/fp32/64": 100.0}, True))
    monkeypatch.setattr(autotune, "forward_rate", lambda model, *a, **k: 150.0 if isinstance(model, Compiled) else 90.0)
    monkeypatch.setattr(autotune, "others_busy", lambda device: False)
    cpu = torch.device("cpu")
    plan = autotune.choose_plan(_tiny(), cpu, "auto", None, (3, 2, 2), samples=10**6)  # 10,000 s eagerly
    assert plan.compiled and plan.compile_seconds >= 0.2 and plan.runnable(cpu) is not None and len(compiles) == 1
    entry = autotune._load_table()[plan.cache_key]
    assert entry["compiled/fp32/64"] == 150.0 and entry["compile-seconds/fp32/64"] >= 0.2
    later = autotune.choose_plan(_tiny(), cpu, "auto", None, (3, 2, 2), samples=6_000)  # 60 s eagerly, 40 compiled
    assert later.compiled and 40 < later.expected_seconds(6_000) < 41
    monkeypatch.setattr(autotune, "compile_model", lambda model, device: slow_compile(model, device, 0.5))
    later.runnable(cpu)
    assert len(compiles) == 2 and autotune._load_table()[later.cache_key]["compile-seconds/fp32/64"] >= 0.5


def test_another_cpu_bound_process_makes_the_machine_busy():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert autotune.others_busy(torch.device("cpu"))
    finally:
        hog.kill()
        hog.wait()


def test_the_cpu_candidates_include_large_batches():
    assert max(autotune.BATCHES["cpu"]) >= 512


def test_the_record_holds_the_plan_and_the_measured_rate(case):
    from csrs_core.sampling.stage_a import counts_record
    record = counts_record(case / "m.pt", load_dataset("synthetic").subset(np.arange(8)), n0=10, n=100, batch=32,
                            precision="fp32")
    assert record.meta["images_per_s"] > 0 and record.meta["batch"] == 32 and record.meta["runtime"] == "eager"
    assert record.meta["batchnorm_folded"] is True
    assert record.meta["machine"].startswith("cpu:")


# ----------------------------------------------------------------------------- output, locks
def test_a_closed_pipe_loses_no_output(case, tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(_certify_args(case / "m.pt", "--num-examples", "8", "--n0", "10", "--n", "50",
                                          "--out", str(out), "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is printed
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 0, err
    assert "Traceback" not in err and out.read_text().startswith("index,")


def test_no_lock_file_is_left_behind(case):
    assert cli.main(["certify", "--checkpoint", str(case / "m.pt"), "--dataset", "synthetic", "--num-examples",
                     "8", "--n0", "10", "--n", "40", "--quiet"]) == 0
    assert list(case.rglob("*.lock")) == []


def test_a_lock_left_by_a_killed_holder_is_taken_over(tmp_path):
    target = tmp_path / "x.npz"
    (tmp_path / "x.npz.lock").write_text("")  # what a SIGKILLed holder leaves
    with output_lock(target, timeout=0):
        pass
    assert not (tmp_path / "x.npz.lock").exists()


def test_the_recertify_command_names_the_users_file():
    meta = {"command": "csrs certify --checkpoint checkpoints/cifar10/cohen.pt --dataset sample:s.npz --n 1000"}
    command = recertify_command(Path("/home/me/models/my copy.pt"), meta)
    assert "--checkpoint '/home/me/models/my copy.pt'" in command and "checkpoints/cifar10" not in command
    assert "--precision bf16" in recertify_command(Path("a.pt"), {"dataset": "d", "n": 1, "precision": "bf16"})


def test_a_request_larger_than_the_data_set_is_said(case, capsys):
    assert cli.main(["certify", "--checkpoint", str(case / "m.pt"), "--dataset", "synthetic", "--num-examples",
                     "5000", "--n0", "5", "--n", "10", "--quiet"]) == 0
    assert "--num-examples 5000 is more than the 64 examples of synthetic; certifying all 64" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["20000000", "1e20"])
def test_n_is_bounded_and_the_bound_is_named(case, capsys, value):
    assert cli.main(["certify", "--checkpoint", str(case / "m.pt"), "--dataset", "synthetic", "--n", value]) == 2
    assert "--n" in (err := capsys.readouterr().err) and "≤ 10,000,000" in err


def test_the_start_of_a_measured_job_says_how_long_it_will_take(case, tmp_path, monkeypatch):
    from csrs_core.runtime.progress import ProgressLog
    from csrs_core.sampling.stage_a import counts_record
    monkeypatch.setattr(autotune, "measure_eager", lambda *a, **k: ({"eager/fp32/64": 2000.0}, True))
    monkeypatch.setattr(autotune, "others_busy", lambda device: False)
    log = tmp_path / "p.jsonl"
    counts_record(case / "m.pt", load_dataset("synthetic").subset(np.arange(30)), n0=100, n=2000,
                   progress=ProgressLog(log))
    start = next(e for e in read_progress(log) if e["event"] == "start")
    assert start["expected_s"] == round(30 * 2100 / 2000)


# ------------------------------------------------------------------------------- disk faults
def test_a_full_disk_while_certifying_is_a_message_and_a_rerun_resumes(case, capsys, monkeypatch):
    import csrs_core.runtime.atomic as atomic
    real = os.replace

    def full(src, dst):
        if str(dst).endswith(".npz") and ".partial" not in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)
    monkeypatch.setattr(atomic.os, "replace", full)
    args = ["certify", "--checkpoint", str(case / "m.pt"), "--dataset", "synthetic", "--num-examples", "8",
            "--n0", "10", "--n", "40", "--quiet"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "could not write" in err and "No space left on device" in err and "m.certs" in err
    monkeypatch.setattr(atomic.os, "replace", real)
    assert cli.main(args) == 0 and "sampled" in capsys.readouterr().out


def test_a_failed_checkpoint_write_names_the_file(tmp_path, monkeypatch):
    from csrs_core.models.checkpoints import save_checkpoint
    def fail(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 123 vs 456")
    monkeypatch.setattr(torch, "save", fail)
    meta = {"arch": "resnet8", "classes": ["a", "b"], "dataset": "synthetic", "sigma": 0.25, "method": "gaussian",
            "mean": [0, 0, 0], "std": [1, 1, 1]}
    (tmp_path / "m.pt").write_bytes(b"old")
    with pytest.raises(FileWriteError, match="m.pt"):
        save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2), meta)
    assert (tmp_path / "m.pt").read_bytes() == b"old" and list(tmp_path.iterdir()) == [tmp_path / "m.pt"]


def test_the_atomic_writer_leaves_the_umask_alone_and_applies_it(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        assert os.umask(0o027) == 0o027
        assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("extra, words", [
    (["--std", "inf,1,1", "--mean", "0,0,0"], "finite"),
    (["--mean", "nan,0,0", "--std", "1,1,1"], "finite"),
])
def test_import_refuses_non_finite_normalisation(tmp_path, capsys, extra, words):
    src = tmp_path / "src.pth"
    torch.save({"net": {"w": torch.zeros(1)}}, src)
    code = cli.main(["import", str(src), "--out", str(tmp_path / "o.pt"), "--arch", "resnet20", "--dataset",
                     "cifar10", "--sigma", "0.25", "--format", "macer", *extra])
    assert code == 2 and words in capsys.readouterr().err and not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("out, words", [("exists.pt", "existing file"), ("model.pth", "must end in .pt")])
def test_import_refuses_to_replace_a_checkpoint_or_to_write_a_file_no_listing_shows(tmp_path, capsys, out, words):
    src = tmp_path / "src.pth"
    torch.save({"net": {"w": torch.zeros(1)}}, src)
    (tmp_path / "exists.pt").write_bytes(b"keep")
    code = cli.main(["import", str(src), "--out", str(tmp_path / out), "--arch", "resnet20", "--dataset", "cifar10",
                     "--sigma", "0.25"])
    assert code == 2 and words in capsys.readouterr().err and (tmp_path / "exists.pt").read_bytes() == b"keep"


def test_a_float_image_holding_nan_is_refused(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(tmp_path / c / "ok.tif")
    bad = np.full((8, 8), 0.5, np.float32)
    bad[2, 3] = np.nan
    Image.fromarray(bad, mode="F").save(tmp_path / "b" / "bad.tif")
    with pytest.raises(DatasetError, match="bad.tif.*NaN"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_a_saved_sample_refuses_another_split_or_size(tmp_path):
    load_dataset("synthetic").subset(np.arange(4)).save_sample(tmp_path / "s.npz")
    assert len(load_dataset(f"sample:{tmp_path / 's.npz'}", "test")) == 4
    with pytest.raises(DatasetError, match="--split test"):
        load_dataset(f"sample:{tmp_path / 's.npz'}", "val")
    with pytest.raises(DatasetError, match="--image-size"):
        load_dataset(f"sample:{tmp_path / 's.npz'}", "test", image_size=64)


@pytest.mark.parametrize("spec", ["pairwise:-1>0", "pairwise:1>-1", "seedwise:-1", "pairwise:1>0x"])
def test_a_negative_or_odd_class_index_is_refused(spec):
    with pytest.raises(CostMatrixError):
        parse_cost(spec, 10)


def test_the_cost_grammar_reads_back_what_it_writes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = int(rng.integers(2, 7))
        matrix = rng.random((m, m)) < 0.4
        np.fill_diagonal(matrix, False)
        from csrs_core.certification.cost import CostMatrix
        cost = CostMatrix(matrix)
        assert parse_cost(cost.describe(), m) == cost, cost.describe()


# ------------------------------------------------------------------------------- dashboard
def test_hidden_or_reserved_case_folders_are_refused(tmp_path):
    from csrs_core.dashboard.option_widgets import case_folder
    for bad in (".jobs", "cifar10/.jobs", "cohen.certs", "../x"):
        with pytest.raises(ValueError):
            case_folder(tmp_path, bad)
    assert case_folder(tmp_path, "cifar10") == tmp_path.resolve() / "cifar10"


def test_an_upload_refusal_never_shows_the_staging_path(tmp_path):
    from csrs_core.dashboard.checkpoint_files import add_uploaded_checkpoint
    with pytest.raises(ValueError) as info:
        add_uploaded_checkpoint(tmp_path, "case", "mine.pt", b"not a checkpoint")
    assert "mine.pt" in str(info.value) and str(tmp_path) not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="reserved"):
        add_uploaded_checkpoint(tmp_path, ".jobs", "mine.pt", b"x")


def test_a_checkpoint_a_run_is_writing_cannot_be_deleted(case):
    from csrs_core.dashboard.checkpoint_files import delete_checkpoint
    with output_lock(case / "m.pt"):
        with pytest.raises(ValueError, match="being written"):
            delete_checkpoint(case / "m.pt")
    assert (case / "m.pt").exists()
    delete_checkpoint(case / "m.pt")
    assert not (case / "m.pt").exists()


def test_the_radius_limit_follows_the_mode(tmp_path, synthetic_checkpoint, monkeypatch):
    from dashboard_fixtures import build_case
    from streamlit.testing.v1 import AppTest

    from csrs_core.certification.bounds import max_certifiable_radius
    root = build_case(tmp_path, synthetic_checkpoint)  # records at n = 100, alpha 0.001
    monkeypatch.setenv("CSRS_CHECKPOINTS", str(root))
    app = Path(__file__).resolve().parents[1] / "csrs_core" / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    caption = next(c.value for c in at.caption if "Largest cost-sensitive radius" in c.value)
    assert f"{max_certifiable_radius(0.25, 100, 0.0005):.4f}" in caption and "sound mode" in caption


def test_tuning_measures_only_where_it_matters(monkeypatch):
    """Every precision at the middle batch; the fast one outward until a batch is slower; a precision
    several times slower costs one measurement; the two best are measured again for stability."""
    true_rate = {("bf16", 64): 2900, ("bf16", 128): 3100, ("bf16", 256): 2500, ("bf16", 512): 2300,
                 ("fp32", 64): 1200, ("fp32", 128): 1180, ("fp32", 256): 600, ("fp32", 512): 400}
    asked = []

    def fake_rate(model, device, precision, batch, shape, seconds):
        asked.append((precision, batch))
        return true_rate[(precision, batch)]
    monkeypatch.setattr(autotune, "forward_rate", fake_rate)
    rates, stable = autotune.measure_eager(None, torch.device("cpu"), (3, 32, 32), ("fp32", "bf16"), (64, 128, 256, 512))
    assert stable and max(rates, key=rates.get) == "eager/bf16/128"
    assert ("fp32", 256) not in asked and ("bf16", 512) not in asked   # bf16 stopped at 256, fp32 never widened
    assert len(asked) == 2 + 2 + 2
