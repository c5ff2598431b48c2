"""A data set whose files are absent is named before any work: dataset_missing says which file or folder
under which root (what the loader says too), and the Train and Certify pages queue no job then."""
import shutil

import pytest

from csrs_core import jobs
from csrs_core.data import DatasetError, dataset_missing, load_dataset

from dashboard_fixtures import open_app

CIFAR10_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]


def test_each_kind_of_data_set_names_what_is_missing_and_where(tmp_path):
    root = tmp_path / "data"
    assert dataset_missing("synthetic", root) is None
    cifar = root / "cifar-10-batches-py"
    assert f"{cifar / 'data_batch_1'} does not exist" in dataset_missing("cifar10", root)
    cifar.mkdir(parents=True)
    for name in CIFAR10_FILES[:-1]:
        (cifar / name).touch()
    assert f"{cifar / 'batches.meta'} does not exist" in dataset_missing("cifar10", root)
    (cifar / "batches.meta").touch()
    assert dataset_missing("cifar10", root) is None            # present (their contents are the loader's to read)
    for name in ("cifar10-jpeg", "imagenette", "ham10000"):
        message = dataset_missing(name, root)
        assert f"put {name}.zip or the folder {name}/ under {root}" in message
        (root / name).mkdir()
        assert dataset_missing(name, root) is None
    assert dataset_missing("imagenette", tmp_path / "elsewhere") is not None   # the root given is where it looks
    assert (dataset_missing(f"imagefolder:{tmp_path / 'pets'}", root)
            == f"image folder {tmp_path / 'pets'} does not exist: give a folder of images, PATH/<class>/<image> or "
               "PATH/<split>/<class>/<image>")
    assert f"sample file {tmp_path / 's.npz'} not found" in dataset_missing(f"sample:{tmp_path / 's.npz'}", root)
    assert "unknown data set 'mnist'" in dataset_missing("mnist", root)


@pytest.mark.parametrize("spec", ["cifar10", "ham10000", "imagefolder:{tmp}/pets", "sample:{tmp}/s.npz"])
def test_the_loader_says_the_same(tmp_path, spec):
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(DatasetError) as refused:
        load_dataset(spec, "test", root=tmp_path)
    assert str(refused.value) == dataset_missing(spec, tmp_path)


@pytest.fixture
def no_jobs(monkeypatch):
    """jobs.start_job recording its calls instead of starting anything."""
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda *args: started.append(args))
    return started


def test_the_train_page_queues_no_job_for_a_data_set_that_is_not_there(tmp_path, monkeypatch, no_jobs):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CSRS_DATA", str(data))
    (tmp_path / "ck").mkdir()
    at = open_app(tmp_path / "ck", monkeypatch)
    at.switch_page("views/train.py").run()
    for name, path in [("cifar10", data / "cifar-10-batches-py" / "data_batch_1"), ("ham10000", data)]:
        at.selectbox(key="train::dataset").select(name).run()
        at.selectbox(key="train::method").select("gaussian")   # trains without a cost matrix
        at.button[0].click().run()
        assert not at.exception, at.exception
        assert any(str(path) in e.value for e in at.error), [e.value for e in at.error]
    assert no_jobs == []
    at.selectbox(key="train::dataset").select("synthetic").run()
    at.selectbox(key="train::method").select("gaussian")
    at.button[0].click().run()
    assert not at.exception and len(no_jobs) == 1 and not at.error     # a data set that is there starts


def test_the_certify_page_queues_no_job_for_a_data_set_that_is_not_there(tmp_path, monkeypatch, no_jobs,
                                                                        synthetic_checkpoint):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CSRS_DATA", str(data))
    (tmp_path / "ck" / "synth").mkdir(parents=True)
    shutil.copy(synthetic_checkpoint, tmp_path / "ck" / "synth" / "cohen.pt")
    at = open_app(tmp_path / "ck", monkeypatch)
    at.switch_page("views/certify.py").run()
    at.selectbox(key="certify::source").select("imagenette").run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any(f"put imagenette.zip or the folder imagenette/ under {data}" in e.value for e in at.error)
    at.selectbox(key="certify::source").select("image folder…")
    at.text_input(key="certify::folder").input("pets").run()
    at.button[0].click().run()
    assert any(f"image folder {data / 'pets'} does not exist" in e.value for e in at.error)
    assert no_jobs == []
    at.selectbox(key="certify::source").select("synthetic").run()
    at.button[0].click().run()
    assert not at.exception and len(no_jobs) == 1 and not at.error
