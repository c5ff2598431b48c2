"""Data loaders: synthetic always; the real data sets where CSRS_TEST_DATA names their folder (else skipped)."""
import numpy as np
import pytest
import torch

from csrs_core.data import DatasetError, ImageSet, load_dataset


def test_synthetic_is_deterministic_and_in_range():
    a, b = load_dataset("synthetic", "train"), load_dataset("synthetic", "train")
    assert a.images.dtype.is_floating_point is False and a.images.shape[1:] == (3, 16, 16)
    assert np.array_equal(a.images.numpy(), b.images.numpy()) and a.classes == ["red", "green", "blue", "grey"]
    x = a.float_images(np.arange(4))
    assert 0 <= x.min() and x.max() <= 1


def test_missing_and_unknown_data_sets_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="put cifar10-jpeg.zip or the folder cifar10-jpeg/"):
        load_dataset("cifar10-jpeg", "test", root=tmp_path)
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "test", root=tmp_path)
    with pytest.raises(DatasetError, match="unknown data set"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="not a CSRS sample"):
        (tmp_path / "x.npz").write_bytes(b"junk")
        load_dataset(f"sample:{tmp_path / 'x.npz'}")


def test_image_folder_and_sample_round_trip(tmp_path):
    from PIL import Image
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0) if c == "cat" else (0, i * 40, 0)).save(
                    tmp_path / "tree" / split / c / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path / 'tree'}", "test")
    assert d.classes == ["cat", "dog"] and len(d) == 6 and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    d.subset([1, 4]).save_sample(tmp_path / "s.npz")
    s = load_dataset(f"sample:{tmp_path / 's.npz'}")
    assert s.indices.tolist() == [1, 4] and s.name.startswith("imagefolder:") and s.classes == ["cat", "dog"]
    assert s.content_digest() == d.subset([1, 4]).content_digest()


def test_sample_files_are_lossless_and_compact(tmp_path):
    ramp = torch.arange(32, dtype=torch.uint8)[None, None, :, None] * 7 + torch.arange(32, dtype=torch.uint8)
    images = (ramp + torch.arange(8, dtype=torch.uint8)[:, None, None, None] * 20).expand(8, 3, 32, 32).contiguous()
    d = ImageSet("smooth", "test", images, torch.arange(8) % 2, ["a", "b"])
    d.save_sample(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as z:
        assert "webp" in z.files and "images" not in z.files
        assert z["webp"].nbytes < d.images.numpy().nbytes
    assert load_dataset(f"sample:{tmp_path / 's.npz'}").content_digest() == d.content_digest()
    noise = load_dataset("synthetic", "test")  # incompressible: WebP would be larger, so stored raw
    grey = noise.subset(np.arange(4))
    grey.images = grey.images[:, :1].contiguous()  # not RGB: stored raw
    for other, name in ((noise, "n.npz"), (grey, "g.npz")):
        other.save_sample(tmp_path / name)
        with np.load(tmp_path / name) as z:
            assert "images" in z.files
        assert load_dataset(f"sample:{tmp_path / name}").content_digest() == other.content_digest()


def test_cifar10_jpeg_zip(real_data):
    d = load_dataset("cifar10-jpeg", "test", root=real_data)
    assert len(d) == 10_000 and d.images.shape[1:] == (3, 32, 32) and d.classes[3] == "cat"
    assert np.bincount(d.labels.numpy()).tolist() == [1000] * 10
    tr = load_dataset("cifar10-jpeg", "train", root=real_data)
    va = load_dataset("cifar10-jpeg", "val", root=real_data)
    assert len(tr) == 45_000 and len(va) == 5_000 and not set(tr.indices) & set(va.indices)
    assert va.indices.max() < 50_000 and len(set(tr.indices) | set(va.indices)) == 50_000


def test_ham10000_grouping_and_lesion_split(real_data):
    import csv
    import io
    import zipfile
    from csrs_core.data.sources import ham_split_of
    tr = load_dataset("ham10000", "train", root=real_data, image_size=32)
    va = load_dataset("ham10000", "val", root=real_data, image_size=32)
    te = load_dataset("ham10000", "test", root=real_data, image_size=32)
    assert tr.classes == ["benign", "malignant"] and len(tr) + len(va) + len(te) == 10_015
    assert (tr.labels.sum() + va.labels.sum() + te.labels.sum()).item() == 1113 + 514 + 327
    assert 0.07 < len(va) / 10_015 < 0.13 and va.split == "val"
    with zipfile.ZipFile(real_data / "ham10000.zip") as z:
        name = [n for n in z.namelist() if n.endswith("HAM10000_metadata.csv")][0]
        rows = list(csv.DictReader(io.StringIO(z.read(name).decode())))
    splits = {}
    for r in rows:
        splits.setdefault(r["lesion_id"], set()).add(ham_split_of(r["lesion_id"]))
    assert all(len(s) == 1 for s in splits.values())          # no lesion in both splits
    assert 0.15 < len(te) / 10_015 < 0.25
    assert len(te) == 1981  # the test split is the one the shipped results were certified on


def test_imagenette_zip(real_data):
    d = load_dataset("imagenette", "test", root=real_data, image_size=32)
    assert len(d) == 3925 and d.classes[7] == "gas pump" and d.images.shape[1] == 3
    va = load_dataset("imagenette", "val", root=real_data, image_size=32)
    tr = load_dataset("imagenette", "train", root=real_data, image_size=32)
    assert len(va) == 500 and len(tr) == 4500 and not set(va.indices) & set(tr.indices)


def _tree(root, classes=("cat", "dog"), n=2):
    from PIL import Image
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 40, 0, 0) if c == "cat" else (0, i * 40, 0)).save(root / c / f"{i}.png")
    return root


def test_image_folder_cache_sees_replaced_and_added_images(tmp_path):
    import os
    import time
    from PIL import Image
    tree = _tree(tmp_path / "tree")
    first = load_dataset(f"imagefolder:{tree}")
    top = os.stat(tree)
    Image.new("RGB", (8, 8), (255, 255, 255)).save(tree / "cat" / "0.png")   # replaced in place
    os.utime(tree, ns=(top.st_atime_ns, top.st_mtime_ns))  # the top folder's date does not change
    time.sleep(0.01)
    replaced = load_dataset(f"imagefolder:{tree}")
    assert replaced.content_digest() != first.content_digest()
    assert replaced.images[0].max() == 255
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tree / "dog" / "9.png")           # added in a sub-folder
    os.utime(tree, ns=(top.st_atime_ns, top.st_mtime_ns))
    assert len(load_dataset(f"imagefolder:{tree}")) == len(first) + 1


def test_bad_files_and_folders_get_clear_messages(tmp_path):
    tree = _tree(tmp_path / "tree")
    (tree / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="notes.txt .* is not a readable image"):
        load_dataset(f"imagefolder:{tree}")
    one = _tree(tmp_path / "one", classes=("cat",))
    with pytest.raises(DatasetError, match="one class only"):
        load_dataset(f"imagefolder:{one}")
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar10-jpeg.zip").write_bytes(b"this is not a zip")
    with pytest.raises(DatasetError, match="not a readable zip"):
        load_dataset("cifar10-jpeg", "test", root=root)
    with pytest.raises(DatasetError, match="split must be one of"):
        load_dataset("synthetic", "validation")


def test_registry_names_every_data_set():
    from csrs_core.data import DATASETS, dataset_names
    assert {"cifar10", "cifar10-jpeg", "imagenette", "ham10000", "imagefolder", "synthetic"} <= set(DATASETS)
    assert "imagefolder:PATH" in dataset_names() and "sample:PATH.npz" in dataset_names()
    assert DATASETS["ham10000"].classes == ("benign", "malignant")
    val, train = load_dataset("synthetic", "val"), load_dataset("synthetic", "train")
    assert not np.array_equal(val.images[:4].numpy(), train.images[:4].numpy())
