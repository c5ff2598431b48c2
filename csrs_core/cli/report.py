"""The command line's formats of a report (csrs_core.reports) beyond pandas' own: the paper's LaTeX table."""
from __future__ import annotations

import pandas as pd


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
