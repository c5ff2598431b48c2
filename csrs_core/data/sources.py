"""Where data sets are read from: the data root, zips and folders read alike, image decoding, and the
decode cache in the user's cache folder."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from csrs_core.data.images import DatasetError
from csrs_core.runtime.atomic import atomic_write_npz

HAM_MALIGNANT = {"mel", "bcc", "akiec"}
HAM_BENIGN = {"nv", "bkl", "df", "vasc"}


def data_root(root=None) -> Path:
    return Path(root or os.environ.get("CSRS_DATA") or "data").expanduser()


def cache_dir() -> Path:
    """The user's cache folder for decoded data and measurements ($CSRS_CACHE, else ~/.cache/csrs)."""
    return Path(os.environ.get("CSRS_CACHE") or Path.home() / ".cache" / "csrs").expanduser()


def to_uint8(img: Image.Image, size) -> np.ndarray:
    """RGB uint8 [3, H, W]; a floating-point image holding NaN or infinity is refused (converting it
    would turn those pixels black without a word)."""
    if img.mode == "F" and not np.isfinite(np.asarray(img)).all():
        raise ValueError("it holds NaN or infinite pixel values")
    img = img.convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


class Source:
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
            return to_uint8(img, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"{name} in {self.path} is not a readable image ({exc.__class__.__name__}: {exc}): "
                               "remove it or replace it") from None


def find_source(root: Path, stem: str) -> Path:
    """root/stem.zip or the folder root/stem."""
    for cand in (root / f"{stem}.zip", root / stem):
        if cand.is_file() or cand.is_dir():
            return cand
    raise DatasetError(f"data set {stem!r} not found: put {stem}.zip or the folder {stem}/ "
                       f"under {root.resolve()} (or set --data-root / CSRS_DATA)")


def decode_cached(key: str, build):
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


def image_folder(src: Source, prefix: str, size, stem: str):
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


def split_prefix(src: Source, split: str, stem: str) -> str:
    """The folder prefix of a split, whether the tree has a top folder or not."""
    for prefix in (f"{stem}/{split}/", f"{split}/"):
        if any(n.startswith(prefix) for n in src.names):
            return prefix
    tops = sorted({n.split("/")[0] for n in src.names})[:5]
    raise DatasetError(f"split {split!r} not found in {src.path} (top-level entries: {tops})")


def folder_split(path: Path, stem: str, folder: str, size):
    src = Source(path)
    prefix = split_prefix(src, folder, stem)
    return decode_cached(f"{stem}:{src.fingerprint()}:{folder}:{size}",
                          lambda: image_folder(src, prefix, size, stem))


def load_cifar10(root: Path, split: str):
    import torchvision
    train = split == "train"
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
    except RuntimeError:
        raise DatasetError(
            f"CIFAR-10 not found: put torchvision's files at {root.resolve()}/cifar-10-batches-py/ (from "
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or use --dataset cifar10-jpeg") from None
    return ds.data.transpose(0, 3, 1, 2).copy(), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


def ham_split_of(lesion_id: str) -> str:
    """Split by lesion (never the same lesion in two splits), by a hash of the lesion id:
    20 % of lesions are test, 10 % validation, the rest training."""
    bucket = int(hashlib.sha256(lesion_id.encode()).hexdigest(), 16) % 10
    return "test" if bucket in (0, 5) else "val" if bucket == 1 else "train"


def load_ham10000(path: Path, split: str, size):
    src = Source(path)
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
            if ham_split_of(row["lesion_id"]) != split:
                continue
            if row["image_id"] not in by_id:
                raise DatasetError(f"image {row['image_id']}.jpg listed in the metadata is missing from {path}")
            images.append(src.image(by_id[row["image_id"]], size))
            labels.append(int(dx in HAM_MALIGNANT))
        return np.stack(images), np.array(labels, dtype=np.int64), ["benign", "malignant"]

    return decode_cached(f"ham10000:{src.fingerprint()}:{split}:{size}", build)


def synthetic(split: str, size: int = 16):
    """Four colour classes with pixel noise: learnable in seconds, deterministic."""
    rng = np.random.default_rng({"train": 0, "test": 1, "val": 2}[split])
    n = 256 if split == "train" else 64
    palette = np.array([[0.8, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.2, 0.8], [0.5, 0.5, 0.5]])
    labels = np.arange(n) % 4
    imgs = palette[labels][:, :, None, None] + rng.normal(0, 0.15, (n, 3, size, size))
    images = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)
    return images, labels.astype(np.int64), ["red", "green", "blue", "grey"]
