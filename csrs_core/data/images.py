"""Image sets in memory (uint8 images, labels, class names, original indices) and the compact sample
files that hold them (`sample:PATH.npz`)."""
from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from csrs_core import CSRSError
from csrs_core.runtime.atomic import atomic_write_npz

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


def load_sample(path: Path) -> ImageSet:
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

