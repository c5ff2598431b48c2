"""Data sets by name (cifar10 | cifar10-jpeg | imagenette | ham10000 | imagefolder:PATH | synthetic,
and sample:PATH.npz) and their splits: train, val (held out from the training files), test."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from csrs_core.data.images import IMAGENET_MEAN, IMAGENET_STD, DatasetError, ImageSet, load_sample
from csrs_core.data.sources import (
    Source,
    data_root,
    decode_cached,
    find_source,
    folder_split,
    image_folder,
    load_cifar10,
    load_ham10000,
    synthetic,
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
IMAGENETTE_CLASSES = ["tench", "English springer", "cassette player", "chain saw", "church",
                      "French horn", "garbage truck", "gas pump", "golf ball", "parachute"]
DATASET_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "ham10000": ((0.763, 0.546, 0.570), (0.141, 0.153, 0.170)),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set: how to load a split (images, labels, classes, original indices) and its
    normalisation. `held_out` carves a fixed validation split out of the training files."""
    name: str
    load: Callable            # (root, split, size, arg) -> images, labels, classes[, indices]
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    default_size: int | None = None
    classes: tuple | None = None   # known without data files (for imports)
    takes_path: bool = False       # name:PATH
    missing: Callable | None = None  # (root, arg) -> what the loader says when its files are absent, else None


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, **kw):
    def wrap(fn):
        DATASETS[name] = DatasetSpec(name, fn, **kw)
        return fn
    return wrap


def _held_out(train_split, split: str, n_val: int, seed: int):
    """Split a training set into train and a fixed, seeded validation part of n_val examples;
    indices stay positions in the original training files (they seed the certification noise)."""
    images, labels, classes = train_split
    order = np.random.default_rng(seed).permutation(len(labels))
    keep = np.sort(order[:n_val] if split == "val" else order[n_val:])
    return images[keep], labels[keep], classes, keep


VAL_SEED = 20260
CIFAR10_VAL = 5000
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta")


def _cifar10_missing(root: Path, arg) -> str | None:
    """torchvision's CIFAR-10 files under root/cifar-10-batches-py/: the first one absent, named."""
    folder = root.resolve() / "cifar-10-batches-py"
    absent = next((name for name in CIFAR10_FILES if not (folder / name).is_file()), None)
    if absent is None:
        return None
    return (f"CIFAR-10 not found: {folder / absent} does not exist. Put torchvision's files at {folder}/ (unpack "
            f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz under {root.resolve()}), or set --data-root / "
            "CSRS_DATA, or use --dataset cifar10-jpeg")


def _source_missing(stem: str):
    """The `missing` check of a data set read from root/stem.zip or the folder root/stem/."""
    def missing(root: Path, arg) -> str | None:
        try:
            find_source(root, stem)
        except DatasetError as exc:
            return str(exc)
        return None
    return missing


def _folder_missing(root, arg: str) -> str | None:
    """imagefolder:PATH: the folder (or zip) PATH itself."""
    path = Path(arg).expanduser()
    return None if path.exists() else (f"image folder {path.resolve()} does not exist: give a folder of images, "
                                       "PATH/<class>/<image> or PATH/<split>/<class>/<image>")


@register_dataset("cifar10", mean=DATASET_STATS["cifar10"][0], std=DATASET_STATS["cifar10"][1],
                  classes=tuple(CIFAR10_CLASSES), missing=_cifar10_missing)
def _cifar10(root, split, size, arg):
    if split == "test":
        return load_cifar10(root, "test")
    return _held_out(load_cifar10(root, "train"), split, CIFAR10_VAL, VAL_SEED)


@register_dataset("cifar10-jpeg", mean=DATASET_STATS["cifar10"][0], std=DATASET_STATS["cifar10"][1],
                  classes=tuple(CIFAR10_CLASSES), missing=_source_missing("cifar10-jpeg"))
def _cifar10_jpeg(root, split, size, arg):
    path = find_source(root, "cifar10-jpeg")
    if split == "test":
        return folder_split(path, "cifar10-jpeg", "test", size)
    return _held_out(folder_split(path, "cifar10-jpeg", "train", size), split, CIFAR10_VAL, VAL_SEED)


@register_dataset("imagenette", default_size=224, classes=tuple(IMAGENETTE_CLASSES),
                  missing=_source_missing("imagenette"))
def _imagenette(root, split, size, arg):
    """test: Imagenette's own val folder; val: 10 % of the train folder, held out."""
    path = find_source(root, "imagenette")
    if split == "test":
        images, labels, classes = folder_split(path, "imagenette", "val", size)
        out = images, labels, classes, None
    else:
        train = folder_split(path, "imagenette", "train", size)
        out = _held_out(train, split, len(train[1]) // 10, VAL_SEED)
    images, labels, classes, indices = out
    if len(classes) == len(IMAGENETTE_CLASSES):  # wnid folders, in the usual label order
        classes = IMAGENETTE_CLASSES
    return images, labels, classes, indices


@register_dataset("ham10000", mean=DATASET_STATS["ham10000"][0], std=DATASET_STATS["ham10000"][1],
                  default_size=64, classes=("benign", "malignant"), missing=_source_missing("ham10000"))
def _ham10000(root, split, size, arg):
    return load_ham10000(find_source(root, "ham10000"), split, size)


@register_dataset("imagefolder", takes_path=True, missing=_folder_missing)
def _imagefolder(root, split, size, arg):
    """PATH/<split>/<class>/<image> when PATH has split folders, else PATH/<class>/<image> for any split."""
    path = Path(arg).expanduser()
    src = Source(path)
    has_splits = any(n.startswith(("train/", "test/", "val/")) for n in src.names)
    if has_splits and not any(n.startswith(f"{split}/") for n in src.names):
        raise DatasetError(f"{path} has no {split}/ folder")
    prefix = f"{split}/" if has_splits else ""
    return decode_cached(f"folder:{src.fingerprint()}:{prefix}:{size}",
                          lambda: image_folder(src, prefix, size, path.name))


@register_dataset("synthetic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), classes=("red", "green", "blue", "grey"))
def _synthetic_set(root, split, size, arg):
    return synthetic(split)


SPLITS = ("train", "val", "test")


def dataset_names() -> list[str]:
    return [f"{n}:PATH" if s.takes_path else n for n, s in DATASETS.items()] + ["sample:PATH.npz"]


def dataset_spec(spec: str) -> tuple[DatasetSpec, str | None]:
    """The registry entry of a data set name ('imagefolder:PATH' included) and its argument."""
    name, _, arg = spec.partition(":")
    entry = DATASETS.get(name)
    if entry is None or entry.takes_path != bool(arg):
        raise DatasetError(f"unknown data set {spec!r}: use {', '.join(dataset_names())}")
    return entry, arg or None


def dataset_missing(spec: str, root=None) -> str | None:
    """What load_dataset(spec, root=root) says when the data set's files are not where it reads them (the
    file or folder, under which root; an unknown name's message too), else None. Cheap: it only looks
    whether paths exist, so a data set it passes may still hold unreadable files."""
    if spec.startswith("sample:"):
        path = Path(spec[7:]).expanduser()
        return None if path.is_file() else (f"sample file {path.resolve()} not found: give a .npz written by "
                                            "`csrs certify --save-sample`")
    try:
        entry, arg = dataset_spec(spec)
    except DatasetError as exc:
        return str(exc)
    return entry.missing(data_root(root), arg) if entry.missing else None


def load_dataset(spec: str, split: str = "test", root=None, image_size: int | None = None) -> ImageSet:
    """The split of a named data set, decoded into memory (decoded arrays are cached on disk).
    'train' never contains the 'val' examples."""
    missing = dataset_missing(spec, root)
    if missing:
        raise DatasetError(missing)
    if spec.startswith("sample:"):
        sample = load_sample(Path(spec[7:]).expanduser())
        if split != sample.split:
            raise DatasetError(f"{spec} holds {sample.split} examples of {sample.name}, not the {split} split: "
                               f"use --split {sample.split}, or load {sample.name} itself for its {split} split")
        if image_size is not None and tuple(sample.images.shape[-2:]) != (image_size, image_size):
            raise DatasetError(f"{spec} holds {sample.images.shape[-1]}×{sample.images.shape[-2]} images: "
                               "--image-size cannot resize a saved sample; leave it out")
        return sample
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    entry, arg = dataset_spec(spec)
    loaded = entry.load(data_root(root), split, image_size or entry.default_size, arg)
    images, labels, classes = loaded[:3]
    indices = loaded[3] if len(loaded) > 3 else None
    return ImageSet(spec, split, torch.from_numpy(np.ascontiguousarray(images)),
                    torch.from_numpy(np.asarray(labels, dtype=np.int64)), [str(c) for c in classes],
                    indices=indices, mean=entry.mean, std=entry.std)
