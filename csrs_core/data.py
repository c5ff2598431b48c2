"""Datasets by name. Every loader returns an ImageSet: uint8 images [N, C, H, W], integer labels,
class names, and the example indices in the original split (they seed the certification noise).

Names: the registry below (cifar10 | cifar10-jpeg | imagenette | ham10000 | imagefolder:PATH |
synthetic) and sample:PATH.npz. Splits: train, val (held out from the training files), test.
The data root comes from the `root` argument, else $CSRS_DATA, else ./data."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from csrs_core import CSRSError
from csrs_core.atomic import atomic_write_npz

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
IMAGENETTE_CLASSES = ["tench", "English springer", "cassette player", "chain saw", "church",
                      "French horn", "garbage truck", "gas pump", "golf ball", "parachute"]
HAM_MALIGNANT = {"mel", "bcc", "akiec"}
HAM_BENIGN = {"nv", "bkl", "df", "vasc"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASET_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "ham10000": ((0.763, 0.546, 0.570), (0.141, 0.153, 0.170)),
}


class DatasetError(CSRSError):
    """A data set that is missing or malformed; the message says where the files go."""


@dataclass
class ImageSet:
    """A split held in memory as uint8 images."""
    name: str
    split: str
    images: torch.Tensor          # uint8 [N, C, H, W]
    labels: torch.Tensor          # int64 [N]
    classes: list[str]
    indices: np.ndarray = field(default=None)  # position of each example in the original split
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __post_init__(self):
        if self.indices is None:
            self.indices = np.arange(len(self.labels))

    def __len__(self):
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def float_images(self, idx) -> torch.Tensor:
        return self.images[idx].float().div_(255.0)

    def subset(self, positions) -> "ImageSet":
        positions = np.asarray(positions, dtype=np.int64)
        return ImageSet(self.name, self.split, self.images[positions], self.labels[positions],
                        self.classes, self.indices[positions], self.mean, self.std)

    def content_digest(self) -> str:
        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()

    def save_sample(self, path) -> None:
        """Write this set as a compact .npz, loadable offline as dataset 'sample:PATH': RGB images
        as lossless WebP (about half the size of compressed raw pixels for photographs) when that is
        smaller and decodes to the very same pixels, else raw, so cached certifications stay valid."""
        images = self.images.numpy()
        packed = _pack_webp(images) if images.ndim == 4 and images.shape[1] == 3 else None
        pixels = {"images": images} if packed is None else packed
        atomic_write_npz(path, **pixels, labels=self.labels.numpy(),
                         indices=self.indices, classes=np.array(self.classes),
                         source=np.array([self.name, self.split]),
                         mean=np.array(self.mean), std=np.array(self.std))


def data_root(root=None) -> Path:
    return Path(root or os.environ.get("CSRS_DATA") or "data").expanduser()


def cache_dir() -> Path:
    """The user's cache folder for decoded data and measurements ($CSRS_CACHE, else ~/.cache/csrs)."""
    return Path(os.environ.get("CSRS_CACHE") or Path.home() / ".cache" / "csrs").expanduser()


def _to_uint8(img: Image.Image, size) -> np.ndarray:
    """RGB uint8 [3, H, W]; a floating-point image holding NaN or infinity is refused (converting it
    would turn those pixels black without a word)."""
    if img.mode == "F" and not np.isfinite(np.asarray(img)).all():
        raise ValueError("it holds NaN or infinite pixel values")
    img = img.convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


class _Source:
    """Files inside a zip or a folder, read the same way."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(f"{path} is not a readable zip archive ({exc}): give a zip or a folder") from None
            self.names = [n for n in self.zip.namelist() if not n.endswith("/")]
        else:
            self.zip = None
            self.names = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        if self.zip:
            return self.zip.read(name)
        return (self.path / name).read_bytes()

    def fingerprint(self) -> str:
        """Changes whenever any file is added, removed or changed: every member's name, size and
        CRC for a zip; every file's name, size and modification time for a folder."""
        h = hashlib.sha256(str(self.path.resolve()).encode())
        if self.zip:
            for info in self.zip.infolist():
                h.update(f"{info.filename}:{info.file_size}:{info.CRC}\n".encode())
        else:
            for name in self.names:
                st = (self.path / name).stat()
                h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def image(self, name: str, size) -> np.ndarray:
        """The file `name` as uint8 RGB [3, H, W] (resized to size×size when given)."""
        try:
            img = Image.open(io.BytesIO(self.read(name)))
            return _to_uint8(img, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"{name} in {self.path} is not a readable image ({exc.__class__.__name__}: {exc}): "
                               "remove it or replace it") from None


def _find(root: Path, stem: str) -> Path:
    """root/stem.zip or the folder root/stem."""
    for cand in (root / f"{stem}.zip", root / stem):
        if cand.is_file() or cand.is_dir():
            return cand
    raise DatasetError(f"data set {stem!r} not found: put {stem}.zip or the folder {stem}/ "
                       f"under {root.resolve()} (or set --data-root / CSRS_DATA)")


def _decode_cached(key: str, build):
    """Decode once, keep the arrays in the user's cache folder; `key` holds the source's fingerprint,
    so any change to the files decodes again."""
    path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["images"], z["labels"], list(z["classes"])
        except Exception:
            path.unlink(missing_ok=True)
    images, labels, classes = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_npz(path, images=images, labels=labels, classes=np.array(classes))
    return images, labels, classes


def _image_folder(src: _Source, prefix: str, size, stem: str):
    """Class-per-folder images under prefix (inside a zip or a folder), classes in sorted order."""
    files = sorted(n for n in src.names if n.startswith(prefix) and n.count("/") == prefix.count("/") + 1)
    if not files:
        raise DatasetError(f"no images under {prefix!r} in {src.path}: expected {stem} in the layout "
                           f"{prefix}<class>/<image>")
    classes = sorted({f[len(prefix):].split("/")[0] for f in files})
    if len(classes) < 2:
        raise DatasetError(f"{src.path} holds one class only ({classes[0]!r} under {prefix!r}): a classifier "
                           "needs a folder per class, at least two")
    lookup = {c: i for i, c in enumerate(classes)}
    arrays = [src.image(f, size) for f in files]
    if len({a.shape for a in arrays}) > 1:
        raise DatasetError(f"images in {src.path} have different sizes: pass --image-size to resize them")
    images = np.stack(arrays)
    labels = np.array([lookup[f[len(prefix):].split("/")[0]] for f in files], dtype=np.int64)
    return images, labels, classes


def _split_prefix(src: _Source, split: str, stem: str) -> str:
    """The folder prefix of a split, whether the tree has a top folder or not."""
    for prefix in (f"{stem}/{split}/", f"{split}/"):
        if any(n.startswith(prefix) for n in src.names):
            return prefix
    tops = sorted({n.split("/")[0] for n in src.names})[:5]
    raise DatasetError(f"split {split!r} not found in {src.path} (top-level entries: {tops})")


def _folder_split(path: Path, stem: str, folder: str, size):
    src = _Source(path)
    prefix = _split_prefix(src, folder, stem)
    return _decode_cached(f"{stem}:{src.fingerprint()}:{folder}:{size}",
                          lambda: _image_folder(src, prefix, size, stem))


def _load_cifar10(root: Path, split: str):
    import torchvision
    train = split == "train"
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
    except RuntimeError:
        raise DatasetError(
            f"CIFAR-10 not found: put torchvision's files at {root.resolve()}/cifar-10-batches-py/ (from "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or use --dataset cifar10-jpeg") from None
    return ds.data.transpose(0, 3, 1, 2).copy(), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


def _ham_split_of(lesion_id: str) -> str:
    """Split by lesion (never the same lesion in two splits), by a hash of the lesion id:
    20 % of lesions are test, 10 % validation, the rest training."""
    bucket = int(hashlib.sha256(lesion_id.encode()).hexdigest(), 16) % 10
    return "test" if bucket in (0, 5) else "val" if bucket == 1 else "train"


def _load_ham10000(path: Path, split: str, size):
    src = _Source(path)
    meta = [n for n in src.names if n.endswith("HAM10000_metadata.csv")]
    if not meta:
        raise DatasetError(f"HAM10000_metadata.csv not found in {path}: expected ham10000/HAM10000_metadata.csv "
                           "and ham10000/images/ISIC_*.jpg")
    by_id = {Path(n).stem: n for n in src.names if n.lower().endswith(".jpg")}

    def build():
        rows = list(csv.DictReader(io.StringIO(src.read(meta[0]).decode("utf-8"))))
        images, labels = [], []
        for row in sorted(rows, key=lambda r: r["image_id"]):
            dx = row["dx"]
            if dx not in HAM_MALIGNANT | HAM_BENIGN:
                raise DatasetError(f"unknown HAM10000 diagnosis {dx!r} for {row['image_id']}")
            if _ham_split_of(row["lesion_id"]) != split:
                continue
            if row["image_id"] not in by_id:
                raise DatasetError(f"image {row['image_id']}.jpg listed in the metadata is missing from {path}")
            images.append(src.image(by_id[row["image_id"]], size))
            labels.append(int(dx in HAM_MALIGNANT))
        return np.stack(images), np.array(labels, dtype=np.int64), ["benign", "malignant"]

    return _decode_cached(f"ham10000:{src.fingerprint()}:{split}:{size}", build)


def _synthetic(split: str, size: int = 16):
    """Four colour classes with pixel noise: learnable in seconds, deterministic."""
    rng = np.random.default_rng({"train": 0, "test": 1, "val": 2}[split])
    n = 256 if split == "train" else 64
    palette = np.array([[0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.2, 0.8], [0.5, 0.5, 0.5]])
    labels = np.arange(n) % 4
    imgs = palette[labels][:, :, None, None] + rng.normal(0, 0.15, (n, 3, size, size))
    images = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
    return images, labels.astype(np.int64), ["red", "green", "blue", "grey"]


def _pack_webp(images: np.ndarray) -> dict | None:
    blobs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img.transpose(1, 2, 0)).save(buf, "WEBP", lossless=True, method=2)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    packed = {"webp": np.concatenate(blobs), "offsets": np.cumsum([0] + [len(b) for b in blobs])}
    smaller = packed["webp"].nbytes < images.nbytes
    return packed if smaller and np.array_equal(_unpack_webp(packed["webp"], packed["offsets"]), images) else None


def _unpack_webp(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB")).transpose(2, 0, 1)
                     for a, b in zip(offsets[:-1], offsets[1:])])


def _load_sample(path: Path) -> ImageSet:
    if not path.is_file():
        raise DatasetError(f"sample file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"] if "images" in z.files else _unpack_webp(z["webp"], z["offsets"])
            return ImageSet(str(z["source"][0]), str(z["source"][1]), torch.from_numpy(images),
                            torch.from_numpy(z["labels"]), [str(c) for c in z["classes"]],
                            z["indices"], tuple(z["mean"].tolist()), tuple(z["std"].tolist()))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"{path} is not a CSRS sample file ({exc})") from None


# ------------------------------------------------------------------------------ the registry
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


@register_dataset("cifar10", mean=DATASET_STATS["cifar10"][0], std=DATASET_STATS["cifar10"][1],
                  classes=tuple(CIFAR10_CLASSES))
def _cifar10(root, split, size, arg):
    if split == "test":
        return _load_cifar10(root, "test")
    return _held_out(_load_cifar10(root, "train"), split, CIFAR10_VAL, VAL_SEED)


@register_dataset("cifar10-jpeg", mean=DATASET_STATS["cifar10"][0], std=DATASET_STATS["cifar10"][1],
                  classes=tuple(CIFAR10_CLASSES))
def _cifar10_jpeg(root, split, size, arg):
    path = _find(root, "cifar10-jpeg")
    if split == "test":
        return _folder_split(path, "cifar10-jpeg", "test", size)
    return _held_out(_folder_split(path, "cifar10-jpeg", "train", size), split, CIFAR10_VAL, VAL_SEED)


@register_dataset("imagenette", default_size=224, classes=tuple(IMAGENETTE_CLASSES))
def _imagenette(root, split, size, arg):
    """test: Imagenette's own val folder; val: 10 % of the train folder, held out."""
    path = _find(root, "imagenette")
    if split == "test":
        images, labels, classes = _folder_split(path, "imagenette", "val", size)
        out = images, labels, classes, None
    else:
        train = _folder_split(path, "imagenette", "train", size)
        out = _held_out(train, split, len(train[1]) // 10, VAL_SEED)
    images, labels, classes, indices = out
    if len(classes) == len(IMAGENETTE_CLASSES):  # wnid folders, in the usual label order
        classes = IMAGENETTE_CLASSES
    return images, labels, classes, indices


@register_dataset("ham10000", mean=DATASET_STATS["ham10000"][0], std=DATASET_STATS["ham10000"][1],
                  default_size=64, classes=("benign", "malignant"))
def _ham10000(root, split, size, arg):
    return _load_ham10000(_find(root, "ham10000"), split, size)


@register_dataset("imagefolder", takes_path=True)
def _imagefolder(root, split, size, arg):
    """PATH/<split>/<class>/<image> when PATH has split folders, else PATH/<class>/<image> for any split."""
    path = Path(arg).expanduser()
    if not path.exists():
        raise DatasetError(f"image folder {path} does not exist")
    src = _Source(path)
    has_splits = any(n.startswith(("train/", "test/", "val/")) for n in src.names)
    if has_splits and not any(n.startswith(f"{split}/") for n in src.names):
        raise DatasetError(f"{path} has no {split}/ folder")
    prefix = f"{split}/" if has_splits else ""
    return _decode_cached(f"folder:{src.fingerprint()}:{prefix}:{size}",
                          lambda: _image_folder(src, prefix, size, path.name))


@register_dataset("synthetic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), classes=("red", "green", "blue", "grey"))
def _synthetic_set(root, split, size, arg):
    return _synthetic(split)


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


def load_dataset(spec: str, split: str = "test", root=None, image_size: int | None = None) -> ImageSet:
    """The split of a named data set, decoded into memory (decoded arrays are cached on disk).
    'train' never contains the 'val' examples."""
    if spec.startswith("sample:"):
        sample = _load_sample(Path(spec[7:]).expanduser())
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


def select_examples(labels, num_examples: int | None = None, per_class: int | None = None,
                    seed: int = 0) -> np.ndarray:
    """Sorted positions of a fixed sample: per_class of each class (stratified) or num_examples
    in all, drawn by a seeded permutation; everything when neither is given."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    if per_class is not None:
        picked = np.concatenate([order[labels[order] == c][:per_class] for c in np.unique(labels)])
    elif num_examples is not None:
        picked = order[:num_examples]
    else:
        picked = order
    return np.sort(picked)
