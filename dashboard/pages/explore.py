"""Explore & compare: metrics, curves and views for cached certifications (stage B only)."""
import numpy as np
import pandas as pd
import streamlit as st

from csrs_core.bounds import max_certifiable_radius
from csrs_core.certify import smoothed_confusion
from csrs_core.metrics import eps_curve, per_class, summarize
from csrs_core.report import to_latex
from dashboard import figures
from dashboard.common import case_classes, case_records, certificate_table, checkpoints_in_case, current_cost, select_case
from dashboard.cost_editor import cost_editor

st.title("Explore & compare")
root, case = select_case()
if case is None:
    st.stop()
classes = case_classes(root, case)
if classes is None:
    st.error(f"No readable checkpoint in {root / case}.")
    st.stop()
metas = checkpoints_in_case(root, case)
chosen, notes = case_records(root, case, [name for name, meta in metas.items() if isinstance(meta, dict)])
records = {name: rec for name, (rec, _) in chosen.items()}
available = list(records)
for note in notes:
    st.warning(note)
if not available:
    st.info("No checkpoint of this case has a cached certification yet: run one on the Certify page.")
    st.stop()

cost = cost_editor(case, current_cost(case, classes))
picked = st.multiselect("Checkpoints", available, default=available, key=f"picked::{case}")
c1, c2, c3, c4 = st.columns(4)
sigma = records[available[0]].meta["sigma"]  # the paper's tables report ε = σ; a sensible first view
eps = c1.number_input("ε (ℓ2 radius)", min_value=0.0, max_value=4.0, value=float(sigma), step=0.05, key=f"eps::{case}")
alpha = c2.select_slider("α (failure probability)", [0.0001, 0.001, 0.01, 0.05], value=0.001, key="alpha")
mode = c3.radio("Mode", ["sound", "paper"], horizontal=True, key="mode",
                help="sound: max(R1(α/2), R2), valid with probability ≥ 1−α. "
                     "paper: max(R1(α), R2) as Algorithm 1 prints it (≥ 1−1.5α).")
show_overall = c4.checkbox("Show overall certified accuracy", value=False, key="show_overall")
if not picked:
    st.info("Pick at least one checkpoint.")
    st.stop()

limits = {name: max_certifiable_radius(records[name].meta["sigma"], records[name].meta["n"], alpha) for name in picked}
limit = min(limits.values())
st.caption(f"Largest radius these samples can certify at all (σ·Φ⁻¹(α^(1/n)), for R1): {limit:.3f}"
           + ("" if len(set(limits.values())) == 1 else f" (smallest over checkpoints; up to {max(limits.values()):.3f})"))
if eps >= limit:
    st.warning(f"ε = {eps} is at or beyond {limit:.3f}, the largest R1 that n = {records[picked[0]].meta['n']} samples "
               f"can certify at α = {alpha}: low numbers here reflect the sampling budget, not a weak model.")

tables = {name: certificate_table(records[name], cost, alpha, mode) for name in picked}
rows = []
for name, table in tables.items():
    s = summarize(table, eps)
    rows.append({"checkpoint": name, "method": metas[name]["method"], **s})
summary = pd.DataFrame(rows)
st.subheader(f"Metrics at ε = {eps} ({mode} mode, α = {alpha}, cost: {cost.describe()})")
if summary.n_sensitive.max() == 0:
    st.warning("No test example is sensitive under this cost matrix: Rob_cs and Rob_std are undefined.")
st.dataframe(summary, hide_index=True, key="summary_table",
             column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("acc", "rob_cs", "rob_std", "rob_non")})
d1, d2 = st.columns(2)
d1.download_button("Download CSV", summary.to_csv(index=False), "csrs-metrics.csv", "text/csv")
d2.download_button("Download LaTeX table", to_latex(summary, f"{case}: cost {cost.describe()}, ε = {eps}, {mode} mode"),
                   "csrs-metrics.tex", "text/plain")

grid = np.round(np.linspace(0, max(limit * 1.05, eps), 60), 4)
curves = pd.concat([eps_curve(t, grid).assign(checkpoint=n) for n, t in tables.items()])
st.subheader("Certified accuracy vs ε")
st.plotly_chart(figures.eps_curves(curves, show_overall), key="fig_curves")
left, right = st.columns(2)
with left:
    st.subheader("Accuracy / robustness trade-off")
    st.plotly_chart(figures.tradeoff(summary), key="fig_tradeoff")
with right:
    st.subheader("Per-class certified accuracy")
    pc = pd.concat([per_class(t, eps, classes).assign(checkpoint=n) for n, t in tables.items()])
    st.plotly_chart(figures.per_class_bars(pc), key="fig_perclass")
focus = st.selectbox("Checkpoint for the detailed views", picked, key="focus")
left, right = st.columns(2)
with left:
    st.plotly_chart(figures.r1_vs_r2(tables[focus], f"{focus}: R1 vs max(R1, R2), sensitive examples"), key="fig_r1r2")
with right:
    rec = records[focus]
    conf = smoothed_confusion(rec.counts0, rec.labels, len(classes))
    st.plotly_chart(figures.confusion_heatmap(conf, classes, f"{focus}: smoothed classifier's confusion"), key="fig_conf")
st.caption(f"Certification: {records[focus].meta['num_examples']} examples of {records[focus].meta['dataset']} "
           f"({records[focus].meta['split']}), n0 = {records[focus].meta['n0']}, n = {records[focus].meta['n']}, "
           f"σ = {records[focus].meta['sigma']}.")
