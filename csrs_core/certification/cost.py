"""Cost matrices: what each (true class -> predicted class) mistake costs.

An m x m matrix of non-negative, finite reals with a zero diagonal (docs/design.md section 1). The
binary matrices of the paper (entries 0 or 1) are the special case. Omega_y, the support of row
y, is all the certificates of section 2 depend on; the weights enter the certified worst-case
cost (section 3) and cost-weighted training (section 4).

Two views of one matrix: `matrix`, the boolean support (C[j, k] > 0), which every binary-era
caller keeps using unchanged, and `weights`, the float64 costs themselves."""
from __future__ import annotations

import json
import math
import os
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from csrs_core import CSRSError


MAX_COST = 1e9  # the largest entry: sums and means of certified costs over any data set stay finite


class CostMatrixError(CSRSError, ValueError):
    """A cost matrix that cannot be used; the message names the problem."""


class CostMatrix:
    """An m x m matrix of non-negative finite costs with a zero diagonal; C[j, k] > 0 means that
    predicting k for an input of true class j costs C[j, k].

    Attributes: `matrix` (bool [m, m], the support: which mistakes cost anything), `weights`
    (float64 [m, m], the costs; equal to `matrix` for a binary matrix), `m`, `class_names`."""

    def __init__(self, matrix, class_names: Sequence[str] | None = None):
        try:
            arr = np.array(matrix, dtype=float)
        except (TypeError, ValueError) as exc:
            raise CostMatrixError(f"cost matrix must be a numeric m x m grid: {exc}") from None
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
            raise CostMatrixError(f"cost matrix must be square (m x m); got shape {arr.shape}")
        if arr.shape[0] < 2:
            raise CostMatrixError(f"cost matrix needs at least 2 classes; got {arr.shape[0]}")
        bad = np.argwhere(~np.isfinite(arr))
        if len(bad):
            j, k = bad[0]
            raise CostMatrixError(
                f"cost matrix entries must be finite; entry [{j}, {k}] is {_num(arr[j, k])}")
        bad = np.argwhere((arr < 0) | (arr > MAX_COST))
        if len(bad):
            j, k = bad[0]
            raise CostMatrixError(
                f"cost matrix entries must lie in [0, {MAX_COST:g}] (costs are relative: scale them down); entry "
                f"[{j}, {k}] is {_num(arr[j, k])}")
        diag = np.flatnonzero(np.diag(arr))
        if len(diag):
            d = diag[0]
            raise CostMatrixError(
                f"diagonal entry [{d}, {d}] is {_num(arr[d, d])}: predicting the true class cannot "
                "cost anything; clear the diagonal")
        self.weights = arr + 0.0          # -0.0 -> 0.0, so equal matrices hash alike
        self.matrix = arr > 0
        self.weights.flags.writeable = self.matrix.flags.writeable = False  # immutable: hash, describe()
        self._description = None
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
        """Every misclassification costs 1."""
        return cls(1 - np.eye(m), class_names)

    @classmethod
    def seedwise(cls, m: int, seeds: Iterable[int] | Mapping[int, float], class_names=None) -> "CostMatrix":
        """Every misclassification of the seed classes costs: 1, or seeds[s] when seeds maps each
        seed class to its row's cost."""
        weights = seeds if isinstance(seeds, Mapping) else {s: 1.0 for s in seeds}
        arr = np.zeros((m, m))
        for s, w in weights.items():
            _check_class(s, m)
            arr[s] = w
            arr[s, s] = 0
        return cls(arr, class_names)

    @classmethod
    def pairwise(cls, m: int, pairs: Mapping[int, Iterable[int] | Mapping[int, float]],
                 class_names=None) -> "CostMatrix":
        """Seed class j predicted as any of pairs[j] costs: 1 each, or pairs[j][k] when pairs[j]
        maps targets to costs."""
        arr = np.zeros((m, m))
        for s, targets in pairs.items():
            _check_class(s, m)
            weights = targets if isinstance(targets, Mapping) else {t: 1.0 for t in targets}
            for t, w in weights.items():
                _check_class(t, m)
                arr[s, t] = w
        return cls(arr, class_names)

    @classmethod
    def empty(cls, m: int, class_names=None) -> "CostMatrix":
        return cls(np.zeros((m, m)), class_names)

    # queries -----------------------------------------------------------------------------
    @property
    def is_binary(self) -> bool:
        """Every entry is 0 or 1 (the paper's setting)."""
        return bool(np.all(self.weights == self.matrix))

    def omega(self, y: int) -> list[int]:
        """Omega_y: the classes whose prediction costs when the true class is y (the support)."""
        return np.flatnonzero(self.matrix[int(y)]).tolist()

    def omega_sizes(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    def row_max(self) -> np.ndarray:
        """[m] the largest cost in each row (0 for a row without costly target; 1 for a binary
        matrix's sensitive rows)."""
        return self.weights.max(axis=1)

    def sensitive_mask(self, labels) -> np.ndarray:
        """True where the example's class has at least one costly target (|Omega_y| >= 1)."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.m):
            raise CostMatrixError(
                f"labels range over {labels.min()}..{labels.max()} but the cost matrix has {self.m} classes")
        return self.omega_sizes()[labels] > 0

    def describe(self) -> str:
        """The matrix in the one cost grammar that parse_cost reads back exactly: 'overall', 'none',
        'seedwise:3', 'seedwise:3=2,5', 'pairwise:3>5;1>0', 'pairwise:3>2=5,4,5' (the CLI's --cost,
        the dashboard's link and import box). A weight is written ('=w') only where it is not 1,
        in the shortest form that reads back as the same float; every matrix has a description:
        one that is neither overall nor seedwise (full rows of one weight each) is written as
        pairwise rows with their weights. Computed once per matrix."""
        if self._description is None:
            self._description = self._describe()
        return self._description

    def _describe(self) -> str:
        rows = [j for j in range(self.m) if self.matrix[j].any()]
        if not rows:
            return "none"
        full = all(self.matrix[j].sum() == self.m - 1 for j in rows)
        uniform = full and all(np.all(self.weights[j][self.matrix[j]] == self.row_max()[j]) for j in rows)
        if uniform and len(rows) == self.m and self.is_binary:
            return "overall"
        if uniform:
            return "seedwise:" + ",".join(f"{j}{_weight_suffix(self.row_max()[j])}" for j in rows)
        return "pairwise:" + ";".join(
            f"{j}>" + ",".join(f"{k}{_weight_suffix(self.weights[j, k])}" for k in self.omega(j))
            for j in rows)

    def in_words(self, rows: int = 3) -> str:
        """How the matrix reads, one clause per costly true class (the first `rows`, then how many more):
        'a true cat predicted as any other class costs 1; a true dog predicted as cat costs 10'."""
        names = self.class_names or [f"class {j}" for j in range(self.m)]
        costly = [j for j in range(self.m) if self.matrix[j].any()]
        if not costly:
            return "no mistake costs anything"
        if self.describe() == "overall":
            return "every mistake costs 1 (Rob_cs is then the certified accuracy)"
        clauses = []
        for j in costly[:rows]:
            targets = self.omega(j)
            weights = sorted({float(self.weights[j, k]) for k in targets})
            where = ("any other class" if len(targets) == self.m - 1 else
                     ", ".join(names[k] for k in targets[:4]) + (f" and {len(targets) - 4} more" if len(targets) > 4
                                                                   else ""))
            cost = f"{weights[0]:g}" if len(weights) == 1 else f"{weights[0]:g} to {weights[-1]:g}"
            clauses.append(f"a true {names[j]} predicted as {where} costs {cost}")
        more = f"; and {len(costly) - rows} more true classes have costly mistakes" if len(costly) > rows else ""
        return "; ".join(clauses) + more + "; every other prediction costs 0"

    # serialisation -----------------------------------------------------------------------
    def to_json(self) -> str:
        """{"matrix": rows, "class_names": ...}: integers for a binary matrix (as always), the
        float costs otherwise (written exactly: Python's float repr reads back to the same float)."""
        rows = self.matrix.astype(int).tolist() if self.is_binary else self.weights.tolist()
        return json.dumps({"matrix": rows, "class_names": self.class_names})

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
        return isinstance(other, CostMatrix) and np.array_equal(self.weights, other.weights)

    def __hash__(self):
        return hash(self.weights.tobytes())

    def __repr__(self):
        return f"CostMatrix({self.describe()}, m={self.m})"


def _check_class(c, m):
    if not (isinstance(c, (int, np.integer)) and 0 <= c < m):
        raise CostMatrixError(f"class {c!r} is out of range for {m} classes (0..{m - 1})")


def _num(w) -> str:
    """w in the shortest text that float() reads back as w: '2', '0.5', '1e-05', 'nan'."""
    w = float(w)
    return str(int(w)) if w.is_integer() and abs(w) < 1e16 else repr(w)


def _weight_suffix(w: float) -> str:
    """'' for a cost of 1, else '=w' (_num)."""
    return "" if float(w) == 1.0 else "=" + _num(w)


_INDEX = re.compile(r"\d+")
_WEIGHT = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _ints(text: str, what: str) -> list[int]:
    """Comma-separated class indices (digits only: '-1' is no class)."""
    return list(_weighted(text, what, weights=False))


def _weighted(text: str, what: str, weights: bool = True) -> dict[int, float]:
    """Comma-separated class indices, each optionally followed by '=w' (a positive finite cost;
    1 when absent). Digits only for indices: '-1' is no class."""
    out: dict[int, float] = {}
    for part in (t.strip() for t in text.split(",")):
        if part == "":
            continue
        index, eq, weight = (t.strip() for t in part.partition("="))
        if not _INDEX.fullmatch(index) or (eq and not weights):
            raise CostMatrixError(f"{what} must be comma-separated class indices (0, 1, ...); got {text!r}")
        w = 1.0
        if eq:
            if not _WEIGHT.fullmatch(weight) or not math.isfinite(float(weight)) or float(weight) <= 0:
                raise CostMatrixError(
                    f"cost {weight!r} of class {index} in {text!r} must be a positive number (e.g. '=2' or "
                    "'=0.5'); leave a class out to make its mistake free")
            w = float(weight)
        c = int(index)
        if c in out and out[c] != w:
            raise CostMatrixError(f"class {c} is given two costs ({_num(out[c])} and {_num(w)}) in {text!r}")
        out[c] = w
    return out


def parse_cost(spec: str, m: int, class_names=None, allow_files: bool = True) -> CostMatrix:
    """A cost matrix from a preset, from JSON, or (allow_files) from a file holding JSON.

    Presets, what CostMatrix.describe writes: 'overall', 'none', 'seedwise:3', 'seedwise:2,4',
    'pairwise:3>5', 'pairwise:3>2,4,5', several pairwise rows joined by ';'. A class may carry a
    cost '=w' (1 without): 'seedwise:3=2' (every mistake on class 3 costs 2), 'pairwise:1>0=10',
    'pairwise:3>2=5,4,5' (3 -> 2 costs 5, 3 -> 4 and 3 -> 5 cost 1). A preset with no class named
    is refused."""
    spec = spec.strip()
    if spec == "overall":
        cm = CostMatrix.overall(m)
    elif spec == "none":
        cm = CostMatrix.empty(m)
    elif spec.startswith("seedwise:"):
        seeds = _weighted(spec[9:], "seedwise seeds")
        if not seeds:
            raise CostMatrixError(f"seedwise preset names no seed class; write e.g. 'seedwise:3'; got {spec!r}")
        cm = CostMatrix.seedwise(m, seeds)
    elif spec.startswith("pairwise:"):
        pairs: dict[int, dict[int, float]] = {}
        for part in spec[9:].split(";"):
            if ">" not in part:
                raise CostMatrixError(f"pairwise preset must look like 'pairwise:3>5'; got {spec!r}")
            seed, targets = part.split(">", 1)
            seed_ids = _ints(seed, "pairwise seed")
            if len(seed_ids) != 1:
                raise CostMatrixError(f"pairwise preset needs exactly one seed before '>'; got {seed!r}")
            target_ids = _weighted(targets, "pairwise targets")
            if not target_ids:
                raise CostMatrixError(f"pairwise row {part!r} names no target class after '>'; write e.g. "
                                      f"'pairwise:3>5'")
            row = pairs.setdefault(seed_ids[0], {})
            for t, w in target_ids.items():
                if t in row and row[t] != w:
                    raise CostMatrixError(f"{seed_ids[0]} > {t} is given two costs ({_num(row[t])} and {_num(w)}) "
                                          f"in {spec!r}")
                row[t] = w
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
            "pairwise:3>2,4,5, with costs e.g. seedwise:3=2 or pairwise:1>0=10, a JSON matrix or a "
            "path to a JSON file")
    if cm.m != m:
        raise CostMatrixError(f"the cost matrix has {cm.m} classes but the data/model has {m}")
    names = class_names if class_names is not None else cm.class_names
    return CostMatrix(cm.weights, names)
