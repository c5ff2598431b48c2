"""Binary cost matrices: which (true class -> predicted class) mistakes cost something."""
from __future__ import annotations

import json
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from csrs_core import CSRSError


class CostMatrixError(CSRSError, ValueError):
    """A cost matrix that cannot be used; the message names the problem."""


class CostMatrix:
    """An m x m binary matrix with a zero diagonal; C[j, k] = 1 means true j -> predicted k costs."""

    def __init__(self, matrix, class_names: Sequence[str] | None = None):
        try:
            arr = np.asarray(matrix, dtype=float)
        except (TypeError, ValueError) as exc:
            raise CostMatrixError(f"cost matrix must be a numeric m x m grid: {exc}") from None
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise CostMatrixError(f"cost matrix must be square (m x m); got shape {arr.shape}")
        if arr.shape[0] < 2:
            raise CostMatrixError(f"cost matrix needs at least 2 classes; got {arr.shape[0]}")
        bad = np.argwhere(~np.isin(arr, (0.0, 1.0)))
        if len(bad):
            j, k = bad[0]
            raise CostMatrixError(
                f"cost matrix entries must be 0 or 1; entry [{j}, {k}] is {arr[j, k]!r}")
        diag = np.flatnonzero(np.diag(arr))
        if len(diag):
            raise CostMatrixError(
                f"diagonal entry [{diag[0]}, {diag[0]}] is 1: predicting the true class cannot "
                "cost anything; clear the diagonal")
        self.matrix = arr.astype(bool)
        self.m = arr.shape[0]
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) != self.m:
                raise CostMatrixError(
                    f"{len(class_names)} class names given for a {self.m}-class cost matrix")
        self.class_names = class_names

    # presets -----------------------------------------------------------------------------
    @classmethod
    def overall(cls, m: int, class_names=None) -> "CostMatrix":
        """Every misclassification costs."""
        return cls(1 - np.eye(m), class_names)

    @classmethod
    def seedwise(cls, m: int, seeds: Iterable[int], class_names=None) -> "CostMatrix":
        """Every misclassification of the seed classes costs."""
        arr = np.zeros((m, m))
        for s in seeds:
            _check_class(s, m)
            arr[s] = 1
            arr[s, s] = 0
        return cls(arr, class_names)

    @classmethod
    def pairwise(cls, m: int, pairs: Mapping[int, Iterable[int]], class_names=None) -> "CostMatrix":
        """Seed class j predicted as any of pairs[j] costs."""
        arr = np.zeros((m, m))
        for s, targets in pairs.items():
            _check_class(s, m)
            for t in targets:
                _check_class(t, m)
                arr[s, t] = 1
        return cls(arr, class_names)

    @classmethod
    def empty(cls, m: int, class_names=None) -> "CostMatrix":
        return cls(np.zeros((m, m)), class_names)

    # queries -----------------------------------------------------------------------------
    def omega(self, y: int) -> list[int]:
        """Omega_y: the classes whose prediction costs when the true class is y."""
        return np.flatnonzero(self.matrix[int(y)]).tolist()

    def omega_sizes(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    def sensitive_mask(self, labels) -> np.ndarray:
        """True where the example's class has at least one costly target (|Omega_y| >= 1)."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.m):
            raise CostMatrixError(
                f"labels range over {labels.min()}..{labels.max()} but the cost matrix has {self.m} classes")
        return self.omega_sizes()[labels] > 0

    def describe(self) -> str:
        """A short human-readable name such as 'seedwise 3' or 'pairwise 3>5'."""
        rows = {j: self.omega(j) for j in range(self.m) if self.matrix[j].any()}
        if not rows:
            return "empty"
        if len(rows) == self.m and all(len(v) == self.m - 1 for v in rows.values()):
            return "overall"
        if all(len(v) == self.m - 1 for v in rows.values()):
            return "seedwise " + ",".join(map(str, rows))
        return "pairwise " + "; ".join(f"{j}>{','.join(map(str, v))}" for j, v in rows.items())

    # serialisation -----------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"matrix": self.matrix.astype(int).tolist(), "class_names": self.class_names})

    @classmethod
    def from_json(cls, s: str) -> "CostMatrix":
        try:
            obj = json.loads(s)
        except (json.JSONDecodeError, TypeError) as exc:
            raise CostMatrixError(f"cost matrix JSON could not be parsed: {exc}") from None
        if isinstance(obj, list):
            obj = {"matrix": obj}
        if not isinstance(obj, dict) or "matrix" not in obj:
            raise CostMatrixError('cost matrix JSON must be {"matrix": [[0, 1, ...], ...]} or a list of rows')
        return cls(obj["matrix"], obj.get("class_names"))

    def __eq__(self, other):
        return isinstance(other, CostMatrix) and np.array_equal(self.matrix, other.matrix)

    def __hash__(self):
        return hash(self.matrix.tobytes())

    def __repr__(self):
        return f"CostMatrix({self.describe()}, m={self.m})"


def _check_class(c, m):
    if not (isinstance(c, (int, np.integer)) and 0 <= c < m):
        raise CostMatrixError(f"class {c!r} is out of range for {m} classes (0..{m - 1})")


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise CostMatrixError(f"{what} must be comma-separated class indices; got {text!r}") from None


def parse_cost(spec: str, m: int, class_names=None, allow_files: bool = True) -> CostMatrix:
    """A cost matrix from a preset ('overall', 'seedwise:3', 'seedwise:2,4', 'pairwise:3>5',
    'pairwise:3>2,4,5', several pairwise rows joined by ';'), from JSON, or (allow_files) from a
    file holding JSON. A preset with no class named is refused."""
    spec = spec.strip()
    if spec == "overall":
        cm = CostMatrix.overall(m)
    elif spec == "none":
        cm = CostMatrix.empty(m)
    elif spec.startswith("seedwise:"):
        seeds = _ints(spec[9:], "seedwise seeds")
        if not seeds:
            raise CostMatrixError(f"seedwise preset names no seed class; write e.g. 'seedwise:3'; got {spec!r}")
        cm = CostMatrix.seedwise(m, seeds)
    elif spec.startswith("pairwise:"):
        pairs: dict[int, list[int]] = {}
        for part in spec[9:].split(";"):
            if ">" not in part:
                raise CostMatrixError(f"pairwise preset must look like 'pairwise:3>5'; got {spec!r}")
            seed, targets = part.split(">", 1)
            seed_ids = _ints(seed, "pairwise seed")
            if len(seed_ids) != 1:
                raise CostMatrixError(f"pairwise preset needs exactly one seed before '>'; got {seed!r}")
            target_ids = _ints(targets, "pairwise targets")
            if not target_ids:
                raise CostMatrixError(f"pairwise row {part!r} names no target class after '>'; write e.g. "
                                      f"'pairwise:3>5'")
            pairs.setdefault(seed_ids[0], []).extend(target_ids)
        cm = CostMatrix.pairwise(m, pairs)
    elif spec.startswith("{") or spec.startswith("["):
        cm = CostMatrix.from_json(spec)
    elif allow_files and os.path.isfile(spec):
        with open(spec) as fh:
            cm = CostMatrix.from_json(fh.read())
    elif allow_files and (os.sep in spec or spec.endswith(".json")):
        raise CostMatrixError(f"cost matrix file {spec!r} does not exist")
    else:
        raise CostMatrixError(
            f"unknown cost matrix {spec!r}: use overall, seedwise:3, seedwise:2,4, pairwise:3>5, "
            "pairwise:3>2,4,5, a JSON matrix or a path to a JSON file")
    if cm.m != m:
        raise CostMatrixError(f"the cost matrix has {cm.m} classes but the data/model has {m}")
    names = class_names if class_names is not None else cm.class_names
    return CostMatrix(cm.matrix, names)
