"""Tables of metrics for a folder of checkpoints from their stored records alone (no sampling):
one row per checkpoint, paired tests against a baseline, and notes on what was left out and why.
The command line (csrs_core.cli.report) formats them; the dashboard shows the same numbers."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from csrs_core import CSRSError
from csrs_core.cases import default_baseline
from csrs_core.certification.certificates import certified_cost, certify_from_counts
from csrs_core.certification.comparisons import differing_fields, metrics_row, row_differences, with_holm
from csrs_core.certification.cost import parse_cost
from csrs_core.certification.metrics import (abstention_rate, average_certified_radius, eps_curve, expected_cost,
                                             rob_cs_at)
from csrs_core.certification.stats import paired_comparison, paired_cost_comparison
from csrs_core.models.checkpoints import list_checkpoints
from csrs_core.sampling.store import load_record, select_for_comparison
from csrs_core.settings import REPORT, SettingError, check_settings

COLUMNS = ["checkpoint", "method", "acc", "rob_cs", "rob_std", "rob_non"]
STAT_COLUMNS = ["balanced_acc", "d_acc", "p_acc", "d_rob_cs", "p_rob_cs"]
INTERVAL_COLUMNS = ["acc_lo", "acc_hi", "rob_cs_lo", "rob_cs_hi", "p_acc_holm", "p_rob_cs_holm"]
TABLE_COLUMNS = COLUMNS + STAT_COLUMNS + ["examples", "sensitive_examples", "record"] + INTERVAL_COLUMNS
COST_COLUMNS = ["expected_cost", "rob_cs_tau", "d_expected_cost", "p_expected_cost"]  # real-valued costs, or τ given
RADIUS_COLUMNS = ["acr", "abstain", "budget"]  # every table: ACR, abstention and the record's Monte Carlo budget
SAMPLES = "samples_per_example"  # mean estimation samples per example, added when a record is sequential
DIFFERS = "differs"  # last column, added only when the records compared differ in some setting


@dataclass
class Report:
    """One row per checkpoint with a valid record, and a note for every checkpoint or record left out.

    header: what the numbers mean (cost, eps, the certificates' confidence in this mode, and the
    paired tests' baseline), for a reader to print above the table; baseline: the reference
    checkpoint of d_*/p_* (None for an empty table); eps: the radii of the table's metric columns
    (metric_columns), each once in the order given, the paired tests at the first.

    differences: one line per setting in which the records compared differ (the examples, σ, n0,
    n, seed, precision, scheme), each naming every checkpoint's value ("a: n = 400, b: n = 40"),
    to print with the table: right under it on stdout for text and markdown, on stderr for CSV
    and LaTeX (so that machine output stays parseable). They are also among the notes, and the
    table then has a column `differs` giving each row's values of those settings."""
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    header: str = ""
    baseline: str | None = None
    differences: list[str] = field(default_factory=list)
    eps: tuple = ()


def eps_column(metric: str, eps: float) -> str:
    """The name of a metric's column at one of several ε: 'cert_acc@0.25', 'rob_cs@0.5'."""
    return f"{metric}@{eps:g}"


def metric_columns(eps: tuple) -> list[str]:
    """The table's first columns, checkpoint to the metrics at ε: COLUMNS for one ε; for several,
    checkpoint, method, acc, then cert_acc@ε for each ε and rob_cs@ε for each ε."""
    if len(eps) == 1:
        return COLUMNS
    return COLUMNS[:3] + [eps_column("cert_acc", e) for e in eps] + [eps_column("rob_cs", e) for e in eps]


def budget(meta: dict, n_used) -> str:
    """A record's Monte Carlo budget per example: 'n0=100, n=1000', or for a sequential record its cap
    and the mean estimation samples spent ('sequential, cap n=100,000, mean 2,345 samples')."""
    if meta.get("sequential"):
        return f"sequential, cap n={meta['n']:,}, mean {float(np.mean(n_used)):,.0f} samples"
    return f"n0={meta['n0']}, n={meta['n']}"


def confidence_line(alpha: float, mode: str) -> str:
    """How sure each certificate is, in `mode` (docs/design.md section 2)."""
    if mode == "paper":
        return (f"certificates hold with probability ≥ 1 − 1.5α = {1 - 1.5 * alpha:g} each "
                f"(paper mode: Algorithm 1 as printed, α = {alpha:g})")
    return f"certificates hold with probability ≥ 1 − α = {1 - alpha:g} each ({mode} mode)"


def _pick_baseline(df: pd.DataFrame, folder: Path, baseline: str | None) -> str:
    names = df["checkpoint"].tolist()
    if baseline is None:
        return default_baseline(dict(zip(names, df["method"])))
    name = baseline[:-3] if baseline.endswith(".pt") else baseline
    if name in names:
        return name
    why = ("names a checkpoint without a valid certification record" if (folder / f"{name}.pt").is_file()
           else "names no checkpoint")
    raise SettingError(f"--baseline = {baseline!r} {why} under {folder}; choose one of: {', '.join(names)}")


def report_table(folder, cost_spec: str, eps, alpha: float = 0.001, mode: str = "sound",
                 baseline: str | None = None, cost_threshold: float | None = None, examples=None) -> Report:
    """Metrics per checkpoint under `folder` from its chosen record (csrs_core.sampling.store.select_for_comparison), and
    paired tests of every checkpoint against `baseline`.

    eps: one perturbation size or several (a sequence, or '0,0.25,0.5'). With one, the metric columns
    are COLUMNS. With several, they are acc, cert_acc@ε (certified accuracy: the share of all examples
    whose standard certificate predicts the true class with R1(α) > ε) and rob_cs@ε (Rob_cs(ε)) for
    each ε (metric_columns), and the paired tests, the intervals and the costs below are at the first ε.
    Every table also has acr (the average certified radius), abstain (the share of examples whose
    standard certificate abstains) and budget (the record's Monte Carlo budget, see `budget`).

    baseline: a checkpoint name as in the table (relative to `folder`, without .pt); by default the
    one whose method is 'gaussian' if exactly one is, else the Gaussian one named 'cohen', else the first row. For every checkpoint whose
    record has the baseline's data identity (the same examples), d_acc and d_rob_cs are its Acc and
    Rob_cs(eps) minus the baseline's, and p_acc, p_rob_cs the exact two-sided McNemar p-values
    (csrs_core.certification.stats); the baseline's own row has d = 0 and p = NaN. Other checkpoints get NaN and a
    note. The p-values are not adjusted for multiple comparisons.

    examples: a sample file (.npz); only records of exactly its examples are compared (by default
    the policy of select_for_comparison chooses the examples).

    Records on the same examples but with other settings (n0, n, seed, precision, scheme, σ) are
    still paired and tested, as the pairing is valid; a note then names the settings in which the
    row's record differs from the baseline's, since the test is of model and settings together.
    Every setting in which the records shown differ is named in Report.differences (and in the
    table's `differs` column).

    For a real-valued cost matrix, or when `cost_threshold` τ is given (default 0), the table also has
    expected_cost (the certified expected cost at eps, docs/design.md section 3), rob_cs_tau (Rob_cs(eps, τ))
    and, against the baseline, d_expected_cost with the p-value p_expected_cost of a two-sided
    paired sign-flip permutation test of the mean of the per-example certified costs (stats)."""
    checked = check_settings(REPORT, {"eps": eps, "alpha": alpha, "mode": mode, "baseline": baseline,
                                      "cost_threshold": cost_threshold})
    eps = tuple(dict.fromkeys(checked["eps"]))  # in the order given, each once
    folder = Path(folder)

    def name_of(ckpt) -> str:
        return str(Path(ckpt).relative_to(folder).with_suffix(""))

    content = None if examples is None else _sample_digest(examples)
    chosen, notes, _, differences = select_for_comparison(list_checkpoints(folder), name_of, content)
    notes += differences
    rows, tables, infos, costs = [], {}, {}, {}
    classes = _common_classes(info for info, _ in chosen.values())
    for ckpt, (info, _) in chosen.items():
        name = name_of(ckpt)
        if info.meta.get("classes") != classes:
            notes.append(f"{name}: left out: its classes ({', '.join(map(str, info.meta.get('classes', [])))}) are not "
                         f"the table's ({', '.join(map(str, classes))}); report it from a folder of its own case")
            continue
        if mode == "paper" and info.meta.get("sequential"):
            notes.append(f"{name}: left out: its record is sequential, read with confidence sequences in sound mode "
                         "only (paper mode does not apply)")
            continue
        infos[name] = info
        row, tables[name], cost = _row(name, info, cost_spec, eps, alpha, mode, cost_threshold)
        if cost is not None:
            costs[name] = cost
        rows.append(row)
    cost_columns = COST_COLUMNS if costs else []
    columns = (metric_columns(eps) + STAT_COLUMNS + ["examples", "sensitive_examples", "record"] + INTERVAL_COLUMNS + cost_columns
               + RADIUS_COLUMNS)
    df = pd.DataFrame(rows, columns=columns)
    for c in metric_columns(eps)[2:] + STAT_COLUMNS + INTERVAL_COLUMNS + cost_columns + ["acr", "abstain"]:
        df[c] = df[c].astype(float)
    if any(i.meta.get("sequential") for i in infos.values()):  # what each row's sampling spent
        df[SAMPLES] = [row[SAMPLES] for row in rows]
    if differences:  # each row's values of the differing settings, on its line (last, so columns keep their places)
        df[DIFFERS] = df["checkpoint"].map(row_differences(infos))
    header = _header(cost_spec, eps, alpha, mode, bool(costs))
    if df.empty:
        return Report(df, notes, header, None, differences, eps)
    ref = _pick_baseline(df, folder, baseline)
    for i, name in enumerate(df["checkpoint"]):
        _paired_columns(df, i, name, ref, tables, infos, costs, eps[0], notes)
    df = with_holm(df)
    at_first = f" at ε = {eps[0]:g}" if len(eps) > 1 else ""
    header += (f"\npaired tests vs baseline {ref} on the same examples{at_first}: d_acc, d_rob_cs = row − baseline; "
               f"p_acc, p_rob_cs = exact two-sided McNemar p-values (Acc over all examples, Rob_cs(ε) over "
               f"the sensitive ones); p_*_holm = the same, Holm-adjusted over the {int(df['p_acc'].notna().sum())} "
               f"comparisons with the baseline; acc_ci, rob_cs_ci = exact 95 % intervals over the test examples")
    if costs:
        header += (f"\nexpected_cost = mean certified worst-case cost at ε (lower is better); rob_cs_tau = share of "
                   f"sensitive examples whose certified cost is ≤ τ = {cost_threshold or 0:g}; p_expected_cost = "
                   f"two-sided paired sign-flip permutation test of the mean cost (20,000 random patterns: "
                   f"5e-05 is its floor)")
    return Report(df, notes, header, ref, differences, eps)


def _sample_digest(path) -> str:
    """The content digest of the examples of a sample file, as records store it; SettingError when unreadable."""
    from csrs_core.data import DatasetError, load_dataset
    try:
        return load_dataset(f"sample:{path}").content_digest()
    except DatasetError as exc:
        raise SettingError(f"--examples = {str(path)!r}: {exc}") from None


def _header(cost_spec: str, eps: tuple, alpha: float, mode: str, costs: bool) -> str:
    """What the columns of every table mean, before the paired tests' line: the cost, ε and confidence,
    with several ε what cert_acc@ε and rob_cs@ε are, then acr, abstain and budget."""
    lines = [f"cost {cost_spec}, ε = {', '.join(f'{e:g}' for e in eps)}: {confidence_line(alpha, mode)}"]
    if len(eps) > 1:
        lines.append(f"cert_acc@ε = certified accuracy, the share of all examples whose standard certificate predicts "
                     f"the true class with R1(α) > ε; rob_cs@ε = Rob_cs(ε); the paired tests and the "
                     f"intervals{' and costs' if costs else ''} are at the first ε = {eps[0]:g}")
    lines.append("acr = average certified radius, the mean over all examples of R1(α) where the standard certificate "
                 "predicts the true class (0 elsewhere); abstain = share of examples whose standard certificate "
                 "abstains; budget = Monte Carlo samples per example (n0 selection, n estimation)")
    return "\n".join(lines)


def _common_classes(infos) -> list:
    """The class names that most of the records compared share (the table's classes)."""
    counted = Counter(json.dumps(info.meta.get("classes")) for info in infos)
    return json.loads(counted.most_common(1)[0][0]) if counted else []


def standard_columns(table: pd.DataFrame, eps, rob_cs: bool = True) -> dict:
    """The field's standard numbers of one certificate table: cert_acc@ε (and, with `rob_cs`, rob_cs@ε)
    for each ε of `eps` (eps_column names), acr and abstain (see report_table). Without rob_cs none of
    them depends on the cost matrix."""
    curve = eps_curve(table, eps)
    return {**{eps_column("cert_acc", e): v for e, v in zip(eps, curve["certified_acc"])},
            **({eps_column("rob_cs", e): v for e, v in zip(eps, curve["rob_cs"])} if rob_cs else {}),
            "acr": average_certified_radius(table), "abstain": abstention_rate(table)}


def _row(name: str, info, cost_spec: str, eps: tuple, alpha: float, mode: str, cost_threshold):
    """One checkpoint's table row from its record (the metrics at every ε of `eps`, the paired ones at
    the first), its certificate table, and its per-example certified costs at the first ε (None unless
    the matrix is real-valued or a threshold is given)."""
    record = load_record(info.path)
    classes = record.meta["classes"]
    cost = parse_cost(cost_spec, len(classes), classes)
    read = {"sigma": record.meta["sigma"], "alpha": alpha, "mode": mode, "bounds": record.bounds}
    table = certify_from_counts(record.counts0, record.counts, record.labels, cost, **read)
    s = metrics_row(table, eps[0])
    row = {"checkpoint": name, "method": record.meta["method"], "record": info.path.name,
           SAMPLES: float(record.n_used.mean()),
           **{k: s[k] for k in TABLE_COLUMNS if k in s}, **standard_columns(table, eps),
           "budget": budget(record.meta, record.n_used)}
    if cost_threshold is None and cost.is_binary:
        return row, table, None
    costs = certified_cost(record.counts0, record.counts, record.labels, cost, eps=eps[0], **read)
    row.update(expected_cost=expected_cost(costs),
               rob_cs_tau=rob_cs_at(costs, table["sensitive"].to_numpy(), cost_threshold or 0.0))
    return row, table, costs


def _paired_columns(df: pd.DataFrame, i: int, name: str, ref: str, tables: dict, infos: dict, costs: dict,
                    eps: float, notes: list[str]) -> None:
    """Fill row i's d_* and p_* against the baseline `ref` (paired on the same examples only), adding a
    note when the row is not compared or its record's settings differ from the baseline's."""
    if name == ref:
        df.loc[i, ["d_acc", "d_rob_cs"]] = [0.0, 0.0 if df.loc[i, "sensitive_examples"] else np.nan]
        if costs:
            df.loc[i, "d_expected_cost"] = 0.0
        return
    if infos[name].data_id != infos[ref].data_id:
        notes.append(f"{name}: not compared with baseline {ref}: certified on other examples "
                     f"({infos[name].describe()} vs {infos[ref].describe()}); d_*/p_* left empty")
        return
    try:
        cmp = paired_comparison(tables[ref], tables[name], eps)
    except CSRSError as exc:
        notes.append(f"{name}: not compared with baseline {ref}: {exc}")
        return
    df.loc[i, ["d_acc", "p_acc", "d_rob_cs", "p_rob_cs"]] = [cmp[k] for k in ("d_acc", "p_acc", "d_rob_cs", "p_rob_cs")]
    if costs:
        paired = paired_cost_comparison(costs[ref], costs[name])
        df.loc[i, ["d_expected_cost", "p_expected_cost"]] = [paired["d_expected_cost"], paired["p_expected_cost"]]
    budget = [f for f in differing_fields({ref: infos[ref], name: infos[name]}) if f != "examples"]
    if budget:
        pair = row_differences({ref: infos[ref], name: infos[name]})
        notes.append(f"{name}: d_*/p_* against baseline {ref} are paired on the same examples, but the records "
                     f"differ ({ref}: {pair[ref]}; {name}: {pair[name]}): they test model and settings together")
