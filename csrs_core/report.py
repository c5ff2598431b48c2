"""Tables of metrics for many checkpoints from their stored counts alone (no sampling)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from csrs_core.certify import certify_from_counts
from csrs_core.checkpoints import CheckpointError, list_checkpoints, read_meta
from csrs_core.cost import parse_cost
from csrs_core.metrics import summarize
from csrs_core.options import REPORT, check_settings
from csrs_core.store import choose_records, list_records, load_record, recertify_command

COLUMNS = ["checkpoint", "method", "acc", "rob_cs", "rob_std", "rob_non"]


@dataclass
class Report:
    """One row per checkpoint with a valid record, and a note for every checkpoint or record left out."""
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def select_for_comparison(checkpoints) -> tuple[dict, list[str]]:
    """{checkpoint: (RecordInfo, same_data)} for checkpoints with a valid record (choose_records's
    rule), and notes on unreadable checkpoints, corrupt and stale records and differing data."""
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
    return {c: v for c, v in chosen.items() if v[0] is not None}, notes


def report_table(folder, cost_spec: str, eps: float, alpha: float = 0.001, mode: str = "sound") -> Report:
    """Metrics per checkpoint under `folder` from its chosen record (see select_for_comparison)."""
    check_settings(REPORT, {"eps": eps, "alpha": alpha, "mode": mode})
    folder = Path(folder)
    chosen, notes = select_for_comparison(list_checkpoints(folder))
    rows = []
    for ckpt, (info, _) in chosen.items():
        record = load_record(info.path)
        classes = record.meta["classes"]
        cost = parse_cost(cost_spec, len(classes), classes)
        table = certify_from_counts(record.counts0, record.counts, record.labels, cost,
                                    sigma=record.meta["sigma"], alpha=alpha, mode=mode)
        s = summarize(table, eps)
        rows.append({"checkpoint": str(Path(ckpt).relative_to(folder).with_suffix("")),
                     "method": record.meta["method"], **{k: s[k] for k in COLUMNS[2:]},
                     "n": s["n"], "n_sensitive": s["n_sensitive"], "record": info.path.name})
    return Report(pd.DataFrame(rows, columns=COLUMNS + ["n", "n_sensitive", "record"]), notes)


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
