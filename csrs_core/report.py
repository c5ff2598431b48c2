"""Tables of metrics for many checkpoints from their cached counts alone (no sampling)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from csrs_core.cache import load_record, main_record_path
from csrs_core.certify import certify_from_counts
from csrs_core.checkpoints import CheckpointError, list_checkpoints, read_meta
from csrs_core.cost import parse_cost
from csrs_core.metrics import summarize

COLUMNS = ["checkpoint", "method", "acc", "rob_cs", "rob_std", "rob_non"]


def report_table(folder, cost_spec: str, eps: float, alpha: float = 0.001, mode: str = "sound") -> pd.DataFrame:
    """One row per checkpoint under `folder` that has cached counts."""
    rows = []
    for ckpt in list_checkpoints(folder):
        try:
            meta = read_meta(ckpt)
        except CheckpointError:
            continue
        path = main_record_path(ckpt)
        record = load_record(path) if path else None
        if record is None:
            continue
        cost = parse_cost(cost_spec, len(meta["classes"]), meta["classes"])
        table = certify_from_counts(record.counts0, record.counts, record.labels, cost,
                                    sigma=record.meta["sigma"], alpha=alpha, mode=mode)
        s = summarize(table, eps)
        rows.append({"checkpoint": str(Path(ckpt).relative_to(folder).with_suffix("")), "method": meta["method"],
                     **{k: s[k] for k in COLUMNS[2:]}, "n": s["n"], "n_sensitive": s["n_sensitive"]})
    return pd.DataFrame(rows, columns=COLUMNS + ["n", "n_sensitive"])


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
