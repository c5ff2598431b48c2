"""Which certification records are compared side by side, and what differs between them.

One policy for `csrs report` and every dashboard view (docs/design.md section 5, "Comparisons"). The record
choice reads only records' metadata (`store.RecordInfo` or anything with `.meta` and
`.data_id`), so it imports without torch.

Records compared together should share the *comparison settings*: the examples (data set, split,
example indices, content digest), n0, n, the noise seed, the precision and the sampling scheme.
σ is not one of them: it is a property of the smoothed classifier, so checkpoints of different σ
are compared, and the difference is named. (The device type is not one either: it changes no
budget.)

`choose_together` picks one record per checkpoint so that as many checkpoints as possible share
all comparison settings; `describe_differences` names every setting in which the records shown
still differ, one line per setting, each listing every checkpoint's value ("a: n = 400, b: n = 40").
`metrics_row` and `with_holm` make the rows of every metrics table of compared checkpoints.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from csrs_core.certification.metrics import summarize
from csrs_core.certification.stats import holm, paired_outcomes, proportion_interval

SETTINGS = ("n0", "n", "seed", "precision", "scheme", "sequential")
"""Besides the examples, what records compared together share when they can."""

# (what differs, how each value is written, why it matters)
_PAIRED = " Paired tests on the same examples are still computed; they then test model and budget together."
_FIELDS = {
    "examples": ("Records on different examples", None,
                 "Their numbers are not directly comparable, and paired tests are made only between records "
                 "on the same examples."),
    "n0": ("Records differ in n0 (the selection budget)", "n0 = {}",
           "A smaller n0 picks each example's top class less reliably." + _PAIRED),
    "n": ("Records differ in n (the sampling budget)", "n = {}",
          "A larger n certifies larger radii, so these numbers mix model and budget." + _PAIRED),
    "seed": ("Records differ in the noise seed", "seed = {}",
             "Other noise draws: the numbers differ by sampling error too." + _PAIRED),
    "precision": ("Records differ in precision", "precision = {}",
                  "The counts come from other arithmetic." + _PAIRED),
    "scheme": ("Records differ in the sampling scheme", "scheme = {}",
               "Other noise or counting code made the counts." + _PAIRED),
    "sequential": ("Records differ in how the budget was spent", "{}",
                   "A sequential record stops each example once its requested radii are decided and is read with "
                   "confidence-sequence bounds (valid at any stopping time, a little looser than a fixed n's): "
                   "at other radii it certifies less than a fixed-budget record would." + _PAIRED),
    "sigma": ("Records differ in σ", "σ = {:g}",
              "σ belongs to each smoothed classifier, so they are compared as they are; a larger σ trades "
              "accuracy for radius."),
}
ORDER = ("examples", "sigma") + SETTINGS


def settings_of(info) -> tuple:
    """The comparison settings of a record: (data identity, n0, n, seed, precision, scheme, sequential)."""
    return (info.data_id, *(_value(info, f) for f in SETTINGS))


def budget_use(meta: dict) -> str:
    """How a record spent its budget: 'fixed n', or 'sequential at ε …' with its stopping rule's radii."""
    rule = meta.get("sequential")
    if not rule:
        return "fixed n"
    return f"sequential at ε {', '.join(f'{e:g}' for e in rule['eps'])} (α {rule['alpha']:g}, {rule['support']})"


def _value(info, field: str):
    if field == "examples":
        return info.data_id
    return budget_use(info.meta) if field == "sequential" else info.meta.get(field)


def _examples(info) -> str:
    m = info.meta
    return f"{m.get('num_examples')} examples of {m.get('dataset')}/{m.get('split')}"


def _written(records: dict, field: str) -> dict:
    """name -> the field's value as printed; examples that read alike but differ get their digests."""
    if field != "examples":
        fmt = _FIELDS[field][1]
        return {name: fmt.format(_value(info, field)) for name, info in records.items()}
    text = {name: _examples(info) for name, info in records.items()}
    ids = {}
    for name, info in records.items():
        ids.setdefault(text[name], set()).add(info.data_id)
    for name, info in records.items():
        if len(ids[text[name]]) > 1:
            text[name] += (f" (indices {str(info.meta.get('indices_sha256'))[:8]}, "
                           f"images {str(info.meta.get('content_sha256'))[:8]})")
    return text


def differing_fields(records: dict) -> list[str]:
    """The settings ('examples', 'sigma', 'n0', 'n', 'seed', 'precision', 'scheme') in which the
    records {name: RecordInfo} do not all agree, in that order."""
    infos = [r for r in records.values() if r is not None]
    return [f for f in ORDER if len({_value(r, f) for r in infos}) > 1]


def difference_lines(records: dict) -> list[tuple[str, str]]:
    """(setting, line) for each setting in which the records {name: RecordInfo} differ: see
    describe_differences. A viewer may show the 'sigma' line (an allowed difference) more quietly."""
    records = {name: r for name, r in records.items() if r is not None}
    lines = []
    for f in differing_fields(records):
        label, _, why = _FIELDS[f]
        values = _written(records, f)
        lines.append((f, f"{label} — " + ", ".join(f"{name}: {v}" for name, v in values.items()) + ". " + why))
    return lines


def describe_differences(records: dict) -> list[str]:
    """One line per setting in which the records {name: RecordInfo} differ, naming every record's
    value, e.g. "Records differ in n (the sampling budget) — a: n = 400, b: n = 40. A larger n
    certifies larger radii, ...". Empty when they share the examples, σ, n0, n, seed, precision and scheme."""
    return [line for _, line in difference_lines(records)]


def row_differences(records: dict) -> dict:
    """name -> the values of this record in the settings that differ between the records, e.g.
    {'a': 'n = 400', 'b': 'n = 40'} (empty strings when nothing differs): for a column next to the
    numbers they affect."""
    records = {name: r for name, r in records.items() if r is not None}
    fields = differing_fields(records)
    written = {f: _written(records, f) for f in fields}
    return {name: "; ".join(written[f][name] for f in fields) for name in records}


def _created(info) -> float:
    return info.meta.get("created", 0) or 0


def choose_together(listings: dict, name=None) -> tuple[dict, list[str]]:
    """The records compared side by side: ({checkpoint: (RecordInfo or None, same_data)}, differences).

    listings: {checkpoint: [RecordInfo]} (valid, stale and corrupt; only valid ones are chosen).
    The rule (documented in the README, "Which record is shown"):

    1. Every valid record has comparison settings (settings_of: the examples, n0, n, seed,
       precision, scheme). The common settings are those that the most checkpoints have a
       valid record with; ties go to the larger n, then more examples, then the newest record.
    2. Each checkpoint with a record at the common settings shows it; among several (they can
       differ only in σ or device type), the one whose σ the most checkpoints share there, then
       the newest.
    3. A checkpoint with none falls back to its record closest to the common settings: the same
       examples first (so that paired tests remain possible), then the most settings in common,
       then the common σ, then the largest n, the most examples, the newest.

    same_data is True when the record shown is on the common examples. differences:
    describe_differences of the records shown, each checkpoint named by `name(checkpoint)`
    (default: the file name without .pt)."""
    name = name or (lambda c: Path(str(c)).stem)
    valid = {c: [r for r in infos if r.status == "valid"] for c, infos in listings.items()}
    groups: dict[tuple, dict] = {}
    for c, records in valid.items():
        for r in records:
            groups.setdefault(settings_of(r), {}).setdefault(c, []).append(r)
    if not groups:
        return {c: (None, False) for c in valid}, []

    def rank(key):
        members = [r for rs in groups[key].values() for r in rs]
        n, examples = members[0].meta.get("n", 0), members[0].meta.get("num_examples", 0)
        return (len(groups[key]), n, examples, max(_created(r) for r in members))

    common = max(groups, key=rank)
    sigma_votes = Counter(s for rs in groups[common].values() for s in {r.meta.get("sigma") for r in rs})
    chosen = {}
    for c, records in valid.items():
        if not records:
            chosen[c] = (None, False)
            continue
        at_common = groups[common].get(c)
        if at_common:
            best = max(at_common, key=lambda r: (sigma_votes[r.meta.get("sigma")], _created(r)))
        else:
            def closeness(r):
                shared = sum(a == b for a, b in zip(settings_of(r)[1:], common[1:]))
                return (r.data_id == common[0], shared, sigma_votes[r.meta.get("sigma")],
                        r.meta.get("n", 0), r.meta.get("num_examples", 0), _created(r))
            best = max(records, key=closeness)
        chosen[c] = (best, best.data_id == common[0])
    shown = {name(c): info for c, (info, _) in chosen.items() if info is not None}
    return chosen, describe_differences(shown)


def metrics_row(table: pd.DataFrame, eps: float) -> dict:
    """summarize(table, eps) with the exact 95 % intervals of Acc and Rob_cs over the test examples
    (acc_lo, acc_hi, rob_cs_lo, rob_cs_hi): one row of every metrics table, in `report` and on Explore.
    Its counts of test examples are named examples and sensitive_examples (in a table, n is always the
    Monte Carlo budget)."""
    outcomes = paired_outcomes(table, eps)
    acc_lo, acc_hi = proportion_interval(outcomes["acc"].sum(), len(outcomes["acc"]))
    rob_lo, rob_hi = proportion_interval(outcomes["rob_cs"].sum(), len(outcomes["rob_cs"]))
    summary = summarize(table, eps)
    counts = {"examples": summary.pop("n"), "sensitive_examples": summary.pop("n_sensitive")}
    return {**summary, **counts, "acc_lo": acc_lo, "acc_hi": acc_hi, "rob_cs_lo": rob_lo, "rob_cs_hi": rob_hi}


def with_holm(df: pd.DataFrame) -> pd.DataFrame:
    """df with p_acc_holm and p_rob_cs_holm: its p_acc and p_rob_cs Holm-adjusted as one family each."""
    return df.assign(p_acc_holm=holm(df["p_acc"]), p_rob_cs_holm=holm(df["p_rob_cs"]))
