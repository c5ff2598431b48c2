"""Tables of metrics for many checkpoints from their stored counts alone (no sampling)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from csrs_core import CSRSError
from csrs_core.certify import certify_from_counts
from csrs_core.checkpoints import CheckpointError, list_checkpoints, read_meta
from csrs_core.cost import parse_cost
from csrs_core.metrics import summarize
from csrs_core.options import REPORT, SettingError, check_settings
from csrs_core.stats import paired_comparison
from csrs_core.store import choose_records, list_records, load_record, recertify_command

COLUMNS = ["checkpoint", "method", "acc", "rob_cs", "rob_std", "rob_non"]
STAT_COLUMNS = ["balanced_acc", "d_acc", "p_acc", "d_rob_cs", "p_rob_cs"]
TABLE_COLUMNS = COLUMNS + STAT_COLUMNS + ["n", "n_sensitive", "record"]


@dataclass
class Report:
    """One row per checkpoint with a valid record, and a note for every checkpoint or record left out.

    header: what the numbers mean (cost, eps, the certificates' confidence in this mode, and the
    paired tests' baseline), for a reader to print above the table; baseline: the reference
    checkpoint of d_*/p_* (None for an empty table)."""
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    header: str = ""
    baseline: str | None = None


def confidence_line(alpha: float, mode: str) -> str:
    """How sure each certificate is, in `mode` (design.md section 2)."""
    if mode == "paper":
        return (f"certificates hold with probability ≥ 1 − 1.5α = {1 - 1.5 * alpha:g} each "
                f"(paper mode: Algorithm 1 as printed, α = {alpha:g})")
    return f"certificates hold with probability ≥ 1 − α = {1 - alpha:g} each ({mode} mode)"


def select_for_comparison(checkpoints) -> tuple[dict, list[str], dict]:
    """{checkpoint: (RecordInfo, same_data)} for checkpoints with a valid record (choose_records's
    rule); notes on unreadable checkpoints, corrupt and stale records, differing data and
    differing settings; and every readable checkpoint's listing of records."""
    notes, listings = [], {}
    for ckpt in checkpoints:
        try:
            read_meta(ckpt)
        except CheckpointError as exc:
            notes.append(f"{ckpt}: left out: {exc}")
            continue
        listings[ckpt] = infos = list_records(ckpt)
        for info in infos:
            if info.status == "corrupt":
                notes.append(f"{ckpt}: record {info.path.name} is corrupt ({info.reason}); not used")
            elif info.status == "stale":
                notes.append(f"{ckpt}: record {info.path.name} ({info.describe()}) was made from other "
                             f"checkpoint content (the file changed since); not shown. Re-certify with: "
                             f"{recertify_command(ckpt, info.meta)}")
    chosen = choose_records(listings)
    for ckpt, (info, same) in chosen.items():
        if info is not None and not same:
            notes.append(f"{ckpt}: certified on other examples than the rest ({info.describe()}): "
                         "its numbers are not directly comparable")
    shown = {c: v for c, v in chosen.items() if v[0] is not None}
    for setting in ("sigma", "n0", "seed", "precision"):
        values = {info.meta[setting] for info, _ in shown.values()}
        if len(values) > 1:
            notes.append(f"the records compared differ in {setting} ({', '.join(map(str, sorted(values, key=str)))}): "
                         "the smoothed classifiers are not the same kind of object")
    return shown, notes, listings


def _pick_baseline(df: pd.DataFrame, folder: Path, baseline: str | None) -> str:
    names = df["checkpoint"].tolist()
    if baseline is None:
        gaussian = df.loc[df["method"] == "gaussian", "checkpoint"].tolist()
        return gaussian[0] if len(gaussian) == 1 else names[0]
    name = baseline[:-3] if baseline.endswith(".pt") else baseline
    if name in names:
        return name
    why = ("names a checkpoint without a valid certification record" if (folder / f"{name}.pt").is_file()
           else "names no checkpoint")
    raise SettingError(f"--baseline = {baseline!r} {why} under {folder}; choose one of: {', '.join(names)}")


def report_table(folder, cost_spec: str, eps: float, alpha: float = 0.001, mode: str = "sound",
                 baseline: str | None = None) -> Report:
    """Metrics per checkpoint under `folder` from its chosen record (see select_for_comparison), and
    paired tests of every checkpoint against `baseline`.

    baseline: a checkpoint name as in the table (relative to `folder`, without .pt); by default the
    one whose method is 'gaussian' if exactly one is, else the first row. For every checkpoint whose
    record has the baseline's data identity (the same examples), d_acc and d_rob_cs are its Acc and
    Rob_cs(eps) minus the baseline's, and p_acc, p_rob_cs the exact two-sided McNemar p-values
    (csrs_core.stats); the baseline's own row has d = 0 and p = NaN. Other checkpoints get NaN and a
    note. The p-values are not adjusted for multiple comparisons."""
    check_settings(REPORT, {"eps": eps, "alpha": alpha, "mode": mode, "baseline": baseline})
    folder = Path(folder)
    chosen, notes, _ = select_for_comparison(list_checkpoints(folder))
    rows, tables, infos = [], {}, {}
    for ckpt, (info, _) in chosen.items():
        record = load_record(info.path)
        classes = record.meta["classes"]
        cost = parse_cost(cost_spec, len(classes), classes)
        table = certify_from_counts(record.counts0, record.counts, record.labels, cost,
                                    sigma=record.meta["sigma"], alpha=alpha, mode=mode)
        s = summarize(table, eps)
        name = str(Path(ckpt).relative_to(folder).with_suffix(""))
        tables[name], infos[name] = table, info
        rows.append({"checkpoint": name, "method": record.meta["method"], **{k: s[k] for k in COLUMNS[2:]},
                     "balanced_acc": s["balanced_acc"], "n": s["n"], "n_sensitive": s["n_sensitive"],
                     "record": info.path.name})
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for c in STAT_COLUMNS:
        df[c] = df[c].astype(float)
    header = f"cost {cost_spec}, ε = {eps:g}: {confidence_line(alpha, mode)}"
    if df.empty:
        return Report(df, notes, header, None)
    ref = _pick_baseline(df, folder, baseline)
    for i, name in enumerate(df["checkpoint"]):
        if name == ref:
            df.loc[i, ["d_acc", "d_rob_cs"]] = [0.0, 0.0 if df.loc[i, "n_sensitive"] else np.nan]
            continue
        if infos[name].data_id != infos[ref].data_id:
            notes.append(f"{name}: not compared with baseline {ref}: certified on other examples "
                         f"({infos[name].describe()} vs {infos[ref].describe()}); d_*/p_* left empty")
            continue
        try:
            cmp = paired_comparison(tables[ref], tables[name], eps)
        except CSRSError as exc:
            notes.append(f"{name}: not compared with baseline {ref}: {exc}")
            continue
        df.loc[i, ["d_acc", "p_acc", "d_rob_cs", "p_rob_cs"]] = [cmp["d_acc"], cmp["p_acc"],
                                                                 cmp["d_rob_cs"], cmp["p_rob_cs"]]
    header += (f"\npaired tests vs baseline {ref} on the same examples: d_acc, d_rob_cs = row − baseline; "
               f"p_acc, p_rob_cs = exact two-sided McNemar p-values (Acc over all examples, Rob_cs(ε) over "
               f"the sensitive ones), not adjusted for multiple comparisons")
    return Report(df, notes, header, ref)


def to_latex(df: pd.DataFrame, caption: str) -> str:
    """A LaTeX table like the paper's Table 1 (best Acc and Rob_cs in bold)."""
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", r"\begin{tabular}{llcccc}",
             r"\toprule", r"Checkpoint & Method & Acc & Rob$_{c\text{-}s}$ & Rob$_{std}$ & Rob$_{non}$ \\", r"\midrule"]
    best = {c: df[c].max() for c in ("acc", "rob_cs")}
    for _, r in df.iterrows():
        cells = []
        for c in ("acc", "rob_cs", "rob_std", "rob_non"):
            v = f"{r[c]:.3f}" if pd.notna(r[c]) else "--"
            cells.append(rf"\textbf{{{v}}}" if c in best and r[c] == best[c] else v)
        name = str(r["checkpoint"]).replace("_", r"\_")
        lines.append(f"{name} & {r['method']} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)
