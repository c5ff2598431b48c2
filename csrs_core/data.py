"""Datasets by name. Every loader returns an ImageSet: uint8 images [N, C, H, W], integer labels,
class names, and the example indices in the original split (they seed the certification noise).

Names: cifar10 | cifar10-jpeg | imagenette | ham10000 | imagefolder:PATH | sample:PATH.npz | synthetic.
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
DEFAULT_IMAGE_SIZE = {"ham10000": 64, "imagenette": 224}


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


def _cache_dir() -> Path:
    return Path(os.environ.get("CSRS_CACHE") or Path.home() / ".cache" / "csrs").expanduser()


def _to_uint8(img: Image.Image, size) -> np.ndarray:
    img = img.convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


class _Source:
    """Files inside a zip or a folder, read the same way."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.suffix == ".zip" else None
        if self.zip:
            self.names = [n for n in self.zip.namelist() if not n.endswith("/")]
        else:
            self.names = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]

    def read(self, name: str) -> bytes:
        if self.zip:
            return self.zip.read(name)
        return (self.path / name).read_bytes()

    def stamp(self) -> str:
        st = self.path.stat()
        return f"{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _find(root: Path, stem: str) -> Path:
    """root/stem.zip or the folder root/stem."""
    for cand in (root / f"{stem}.zip", root / stem):
        if cand.is_file() or cand.is_dir():
            return cand
    raise DatasetError(f"data set {stem!r} not found: put {stem}.zip or the folder {stem}/ "
                       f"under {root.resolve()} (or set --data-root / CSRS_DATA)")


def _decode_cached(key: str, build):
    """Decode once, keep the arrays in the user's cache folder keyed by the source's size and date."""
    path = _cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
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
    lookup = {c: i for i, c in enumerate(classes)}
    arrays = [_to_uint8(Image.open(io.BytesIO(src.read(f))), size) for f in files]
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


def _load_folder_dataset(path: Path, stem: str, split: str, size):
    src = _Source(path)
    prefix = _split_prefix(src, split, stem)
    return _decode_cached(f"{stem}:{src.stamp()}:{split}:{size}",
                          lambda: _image_folder(src, prefix, size, stem))


def _load_cifar10(root: Path, split: str):
    import torchvision
    train = split == "train"
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=False)
    except RuntimeError:
        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=train, download=True)
        except Exception as exc:
            raise DatasetError(
                f"CIFAR-10 not found and could not be downloaded ({exc.__class__.__name__}). Put "
                f"torchvision's files at {root.resolve()}/cifar-10-batches-py/ (from "
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or use --dataset cifar10-jpeg") from None
    return ds.data.transpose(0, 3, 1, 2).copy(), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


def _ham_split_of(lesion_id: str) -> str:
    """Split by lesion (never the same lesion in both splits): 20% of lesions are test, by hash."""
    return "test" if int(hashlib.sha256(lesion_id.encode()).hexdigest(), 16) % 5 == 0 else "train"


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
            images.append(_to_uint8(Image.open(io.BytesIO(src.read(by_id[row["image_id"]]))), size))
            labels.append(int(dx in HAM_MALIGNANT))
        return np.stack(images), np.array(labels, dtype=np.int64), ["benign", "malignant"]

    return _decode_cached(f"ham10000:{src.stamp()}:{split}:{size}", build)


def _synthetic(split: str, size: int = 16):
    """Four colour classes with pixel noise: learnable in seconds, deterministic."""
    rng = np.random.default_rng(0 if split == "train" else 1)
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


def load_dataset(spec: str, split: str = "test", root=None, image_size: int | None = None) -> ImageSet:
    """The split of a named data set, decoded into memory (decoded arrays are cached on disk)."""
    if spec.startswith("sample:"):
        return _load_sample(Path(spec[7:]).expanduser())
    if split not in ("train", "test", "val"):
        raise DatasetError(f"split must be train, test or val; got {split!r}")
    base = data_root(root)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    size = image_size or DEFAULT_IMAGE_SIZE.get(spec)
    if spec == "synthetic":
        images, labels, classes = _synthetic(split)
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    elif spec == "cifar10":
        images, labels, classes = _load_cifar10(base, split)
        mean, std = DATASET_STATS["cifar10"]
    elif spec == "cifar10-jpeg":
        images, labels, classes = _load_folder_dataset(_find(base, "cifar10-jpeg"), "cifar10-jpeg", split, image_size)
        mean, std = DATASET_STATS["cifar10"]
    elif spec == "imagenette":
        split = "val" if split == "test" else split
        images, labels, classes = _load_folder_dataset(_find(base, "imagenette"), "imagenette", split, size)
        if len(classes) == len(IMAGENETTE_CLASSES):  # wnid folders, in the usual label order
            classes = IMAGENETTE_CLASSES
    elif spec == "ham10000":
        images, labels, classes = _load_ham10000(_find(base, "ham10000"), "test" if split == "val" else split, size)
        mean, std = DATASET_STATS["ham10000"]
    elif spec.startswith("imagefolder:"):
        path = Path(spec[12:]).expanduser()
        if not path.exists():
            raise DatasetError(f"image folder {path} does not exist")
        src = _Source(path)
        has_split = any(n.startswith(f"{split}/") for n in src.names)
        prefix = f"{split}/" if has_split else ""
        images, labels, classes = _decode_cached(f"folder:{src.stamp()}:{prefix}:{image_size}",
                                                 lambda: _image_folder(src, prefix, image_size, path.name))
    else:
        raise DatasetError(f"unknown data set {spec!r}: use cifar10, cifar10-jpeg, imagenette, ham10000, "
                           "imagefolder:PATH, sample:PATH.npz or synthetic")
    return ImageSet(spec, split, torch.from_numpy(np.ascontiguousarray(images)),
                    torch.from_numpy(np.asarray(labels, dtype=np.int64)), [str(c) for c in classes],
                    mean=mean, std=std)


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
