"""A case's defaults: the question its checkpoints were made to answer.

A case is a folder of checkpoints of one class list. An optional `case.json` beside them names its
cost matrix, ε, the baseline of the paired tests and the checkpoint to look at first, with one sentence
saying what is asked, e.g. {"question": "Can a gas pump be pushed to another class?", "cost":
"seedwise:7", "eps": 0.5, "baseline": "cohen", "focus": "cs-macer-seed7"}. Every field is optional;
a case without the file (or with a field that does not fit it) gets the defaults of `case_defaults`,
and `notes` says what was used instead and how to set it."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from csrs_core.certification.cost import CostMatrix, CostMatrixError, parse_cost
from csrs_core.runtime.atomic import atomic_path

CASE_FILE = "case.json"
FIELDS = ("question", "cost", "eps", "baseline", "focus")
EXAMPLE = '{"cost": "seedwise:3", "eps": 0.25, "baseline": "cohen", "focus": "cs-macer"}'


@dataclass(frozen=True)
class CaseDefaults:
    """What a case opens on. eps None: the records' σ (the paper's tables report ε = σ)."""
    cost: CostMatrix
    eps: float | None
    baseline: str | None
    focus: str | None
    question: str = ""
    from_file: bool = False
    notes: tuple = field(default=())


def case_defaults(folder, classes: list[str], checkpoints: dict[str, str]) -> CaseDefaults:
    """The defaults of the case in `folder` for its `checkpoints` ({name: method}), from its case.json
    where it has one. Without one: every mistake costs (overall), ε = σ, the baseline is the Gaussian
    model named cohen (else the only Gaussian one, else the first), the focus the first CS-MACER model
    (else the first other than the baseline)."""
    path = Path(folder) / CASE_FILE
    notes, given = [], {}
    if path.is_file():
        try:
            given = json.loads(path.read_text())
            if not isinstance(given, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            notes.append(f"{path.name} is unreadable ({exc}); using the defaults")
            given = {}
        unknown = sorted(set(given) - set(FIELDS))
        if unknown:
            notes.append(f"{path.name}: unknown field(s) {', '.join(unknown)} ignored (known: {', '.join(FIELDS)})")
    else:
        notes.append(f"no {CASE_FILE} beside this case's checkpoints: every mistake costs the same and ε = σ. To "
                     f"open it on its own question, write {CASE_FILE} there, e.g. {EXAMPLE}")
    cost = CostMatrix.overall(len(classes), classes)  # every mistake costs 1
    if "cost" in given:
        try:
            cost = parse_cost(str(given["cost"]), len(classes), classes, allow_files=False)
        except CostMatrixError as exc:
            notes.append(f"{path.name}: cost {given['cost']!r} does not fit this case ({exc}); every mistake costs")
    eps = given.get("eps")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps)
                            or not 0 <= eps <= 4):
        notes.append(f"{path.name}: eps {eps!r} is not a radius in [0, 4]; using σ")
        eps = None
    baseline = _named(given, "baseline", checkpoints, notes, path) or default_baseline(checkpoints)
    others = {n: m for n, m in checkpoints.items() if n != baseline}
    focus = (_named(given, "focus", checkpoints, notes, path)
             or next((n for n, m in others.items() if m == "cs-macer"), next(iter(others), baseline)))
    return CaseDefaults(cost, None if eps is None else float(eps), baseline, focus, str(given.get("question", "")),
                        bool(given), tuple(notes))


def write_case_file(folder, **fields) -> None:
    """Write `folder`/case.json (atomically) with the given FIELDS."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown case field(s) {unknown}; known: {FIELDS}")
    with atomic_path(Path(folder) / CASE_FILE) as tmp:
        Path(tmp).write_text(json.dumps(fields, indent=1, ensure_ascii=False) + "\n")


def _named(given: dict, key: str, checkpoints: dict, notes: list, path: Path) -> str | None:
    name = given.get(key)
    if name is None:
        return None
    if name not in checkpoints:
        notes.append(f"{path.name}: {key} {name!r} is not a checkpoint of this case with a certification")
        return None
    return name


def default_baseline(checkpoints: dict[str, str]) -> str | None:
    """The baseline when none is named, from {checkpoint: method} in listing order: the Gaussian
    model named `cohen`, else the only Gaussian model, else the first checkpoint (None without any)."""
    gaussian = [n for n, m in checkpoints.items() if m == "gaussian"]
    if "cohen" in gaussian:
        return "cohen"
    return gaussian[0] if len(gaussian) == 1 else next(iter(checkpoints), None)
