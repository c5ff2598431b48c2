"""The command line's formats of a report (csrs_core.reports) beyond pandas' own: the LaTeX table."""
from __future__ import annotations

import pandas as pd

from csrs_core.reports import eps_column

ROB_CS = r"Rob$_{c\text{-}s}$"
_TEX = str.maketrans({"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$",
                      "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                      ">": r"\textgreater{}", "<": r"\textless{}"})


def tex(text) -> str:
    """`text` as LaTeX typesets it literally (names, cost matrices, budgets)."""
    return str(text).translate(_TEX)


def metric_groups(eps: tuple) -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """The numeric columns in groups: (group heading or '', [(column, heading, best in bold)]). One ε:
    the paper's Table 1 (Acc, Rob_cs, Rob_std, Rob_non); several: Cohen et al.'s shape, certified
    accuracy at each ε, then Rob_cs at each ε. Both end with ACR and the abstention rate."""
    if len(eps) <= 1:
        groups = [("", [("acc", "Acc", True), ("rob_cs", ROB_CS, True), ("rob_std", r"Rob$_{std}$", False),
                        ("rob_non", r"Rob$_{non}$", False)])]
    else:
        groups = [(r"Certified accuracy at $\varepsilon$", [(eps_column("cert_acc", e), f"{e:g}", True) for e in eps]),
                  (rf"{ROB_CS} at $\varepsilon$", [(eps_column("rob_cs", e), f"{e:g}", True) for e in eps])]
    return groups + [("", [("acr", "ACR", True), ("abstain", "Abstain", False)])]


def _cell(value, best) -> str:
    """A number to three decimals ('--' for none), in bold when it equals the column's best as printed."""
    if pd.isna(value):
        return "--"
    text = f"{value:.3f}"
    return rf"\textbf{{{text}}}" if best is not None and text == f"{best:.3f}" else text


def _best(column: pd.Series) -> float | None:
    """The column's largest value, or None where nothing stands out (no number, or all equal as printed)."""
    printed = {f"{v:.3f}" for v in column.dropna()}
    return column.max() if len(printed) > 1 else None


def _heading(groups, budget: bool) -> list[str]:
    """The header rows: the group headings with their rules (only when a group has one), then the columns'
    (with Budget last when `budget`)."""
    lines, start, spans = [], 3, []
    for title, columns in groups:
        spans.append(rf"\multicolumn{{{len(columns)}}}{{c}}{{{title}}}" if title else " & ".join([""] * len(columns)))
        if title:
            lines.append(rf"\cmidrule(lr){{{start}-{start + len(columns) - 1}}}")
        start += len(columns)
    names = [heading for _, columns in groups for _, heading, _ in columns]
    head = ["Checkpoint & Method & " + " & ".join(names + ["Budget"] * budget) + r" \\"]
    if any(title for title, _ in groups):
        return [" & & " + " & ".join(spans + [""] * budget) + r" \\", " ".join(lines)] + head
    return head


def to_latex(df: pd.DataFrame, caption: str, eps: tuple = ()) -> str:
    """A booktabs table, one row per checkpoint, the best value of each marked column in bold (where the
    rows differ): for one ε (or none given) like the paper's Table 1, for several like Cohen et al.'s
    (metric_groups); then ACR, the abstention rate and the Monte Carlo budget, those of them `df` has."""
    groups = [(title, [c for c in group if c[0] in df]) for title, group in metric_groups(eps)]
    groups = [(title, group) for title, group in groups if group]
    columns = [(c, bold) for _, group in groups for c, _, bold in group]
    best = {c: _best(df[c]) if bold else None for c, bold in columns}
    budget = "budget" in df
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(caption)}}}",
             r"\begin{tabular}{ll" + "c" * len(columns) + "l" * budget + "}", r"\toprule", *_heading(groups, budget),
             r"\midrule"]
    for _, r in df.iterrows():
        cells = [_cell(r[c], best[c]) for c, _ in columns] + ([tex(r["budget"])] if budget else [])
        lines.append(f"{tex(r['checkpoint'])} & {tex(r['method'])} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)
