"""Explore & compare: metrics, paired tests, curves and views for stored certifications (stage B only).

The cost grid and everything that depends on the matrix run in one fragment, so a click reruns
only that part of the page; the record choice, ε, α and mode rerun the page."""
import numpy as np
import pandas as pd
import streamlit as st

from csrs_core.certification.bounds import max_certifiable_radius
from csrs_core.certification.comparisons import difference_lines
from csrs_core.certification.certificates import smoothed_confusion
from csrs_core.certification.metrics import eps_curve, per_class
from csrs_core.certification.comparisons import metrics_row, with_holm
from csrs_core.cli.report import to_latex
from csrs_core.certification.stats import paired_comparison
from csrs_core.sampling.store import recertify_command
from csrs_core.dashboard import figures
from csrs_core.dashboard.common import (case_listing, certificate_table, checkpoints_in_case, current_cost,
                                        load_cached_record, require_access, select_readable_case)
from csrs_core.dashboard.cost_editor import cost_grid, cost_tools

require_access()  # first, also when this view is reached some other way than app.py
st.title("Explore & compare")
root, case, classes = select_readable_case()
metas = {name: meta for name, meta in checkpoints_in_case(root, case).items() if isinstance(meta, dict)}
foreign = [name for name, meta in metas.items() if meta["classes"] != classes]
if foreign:  # a case compares checkpoints of one class list; the others are named, never compared
    st.warning(f"Left out: {', '.join(foreign)} in {case}/ classify other classes than the rest "
               f"({', '.join(classes)}); move them into a case folder of their own.")
    metas = {name: meta for name, meta in metas.items() if name not in foreign}
listings, defaults, notes = case_listing(root, case, list(metas))
available = list(defaults)
if not available:
    st.info("No checkpoint of this case has a valid certification yet: run one on the Certify page.")
    for note in notes:
        st.warning(note)
    st.stop()

with st.expander("Certifications shown (one per checkpoint)", expanded=False):
    st.caption("Default: records chosen together, so that as many checkpoints as possible share the examples, n0, "
               "n, seed, precision and sampling scheme (then the largest n, the most examples, the newest). Any "
               "setting in which the records shown differ is named above the metrics. Stale records (made from "
               "other checkpoint content) and corrupt ones are never shown.")
    infos = {}
    for name in available:
        valid = {r.path.name: r for r in listings[name] if r.status == "valid"}
        key = f"record::{case}::{name}"
        if st.session_state.get(key) not in valid:
            st.session_state[key] = defaults[name]
        picked_file = st.selectbox(name, list(valid), key=key, format_func=lambda f, v=valid: v[f].describe())
        infos[name] = valid[picked_file]
    for name in metas:
        for info in listings[name]:
            if info.status == "stale":
                st.warning(f"{name}: a record ({info.describe()}) was made from other content of {name}.pt and is "
                           f"not shown. Re-certify: `{recertify_command(root / case / f'{name}.pt', info.meta)}`")
            elif info.status == "corrupt":
                st.warning(f"{name}: record {info.path.name} is corrupt ({info.reason}) and is not used.")
records = {name: load_cached_record(info) for name, info in infos.items()}

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
# every setting in which the records shown differ (also when picked by hand), named with each one's value
for setting, line in difference_lines({name: infos[name] for name in picked}):
    (st.info if setting == "sigma" else st.warning)(line)
b1, b2 = st.columns(2)
baseline = b1.selectbox("Baseline for paired tests", picked, key=f"baseline::{case}",
                        index=next((i for i, n in enumerate(picked) if metas[n]["method"] == "gaussian"), 0))
focus = b2.selectbox("Checkpoint for the detailed views", picked, key="focus")

# the cost-sensitive radius rests on R1(α/2) in sound mode (R2 never exceeds it), on R1(α) in paper mode
cap_alpha = alpha / 2 if mode == "sound" else alpha
limits = {name: max_certifiable_radius(records[name].meta["sigma"], records[name].meta["n"], cap_alpha)
          for name in picked}
tightest = min(limits, key=limits.get)
limit = limits[tightest]
st.caption(f"Largest cost-sensitive radius these samples can certify at all in {mode} mode "
           f"(σ·Φ⁻¹(a^(1/n)) with a = {'α/2' if mode == 'sound' else 'α'}): {limit:.4f}"
           + ("" if len(set(limits.values())) == 1 else f" (smallest over checkpoints; up to {max(limits.values()):.4f})"))
if eps >= limit:
    st.warning(f"ε = {eps} is at or beyond {limit:.4f}, the largest radius that n = {records[tightest].meta['n']} "
               f"samples can certify at α = {alpha} in {mode} mode: low numbers here reflect the sampling budget, "
               "not a weak model.")
confidence = f"1 − α = {1 - alpha:g}" if mode == "sound" else f"1 − 1.5α = {1 - 1.5 * alpha:g}"


@st.fragment
def cost_dependent_views():
    """The grid and every view that depends on the cost matrix: a click reruns only this."""
    cost = cost_grid(case, current_cost(case, classes))
    tables = {name: certificate_table(records[name], cost, alpha, mode) for name in picked}
    rows = []
    for name, table in tables.items():
        row = {"checkpoint": name, "method": metas[name]["method"], **metrics_row(table, eps)}
        if name != baseline and records[name].data_id == records[baseline].data_id:
            cmp = paired_comparison(tables[baseline], table, eps)
            row.update(d_acc=cmp["d_acc"], p_acc=cmp["p_acc"], d_rob_cs=cmp["d_rob_cs"], p_rob_cs=cmp["p_rob_cs"])
        rows.append(row)
    summary = pd.DataFrame(rows)
    for c in ("d_acc", "p_acc", "d_rob_cs", "p_rob_cs"):  # no comparison at all: empty columns
        if c not in summary:
            summary[c] = np.nan
    summary = with_holm(summary)
    st.subheader(f"Metrics at ε = {eps} ({mode} mode, α = {alpha}, cost: {cost.describe()})")
    st.caption(f"Each certificate holds with probability ≥ {confidence}. d_* and p_*: difference from the baseline "
               f"({baseline}) and the exact McNemar p-value on the same examples; p_*_holm: Holm-adjusted over "
               f"the comparisons with the baseline; *_lo, *_hi: exact 95 % intervals over the test examples.")
    notice = st.empty()  # always one element here, so a warning never shifts (and remounts) the charts below
    if summary.n_sensitive.max() == 0:
        notice.warning("No test example is sensitive under this cost matrix: Rob_cs and Rob_std are undefined.")
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(summary, hide_index=True, key="summary_table",
                 column_config={**{c: number for c in ("acc", "balanced_acc", "rob_cs", "rob_std", "rob_non",
                                                       "d_acc", "d_rob_cs", "acc_lo", "acc_hi", "rob_cs_lo",
                                                       "rob_cs_hi")},
                                **{c: st.column_config.NumberColumn(format="%.2g")
                                   for c in ("p_acc", "p_rob_cs", "p_acc_holm", "p_rob_cs_holm")}})
    d1, d2 = st.columns(2)
    d1.download_button("Download CSV", summary.to_csv(index=False), "csrs-metrics.csv", "text/csv")
    d2.download_button("Download LaTeX table", to_latex(summary, f"{case}: cost {cost.describe()}, ε = {eps}, "
                                                        f"{mode} mode, α = {alpha}"), "csrs-metrics.tex", "text/plain")
    grid = np.round(np.linspace(0, max(limit * 1.05, eps), 60), 4)
    curves = pd.concat([eps_curve(t, grid).assign(checkpoint=n) for n, t in tables.items()])
    st.subheader("Certified accuracy vs ε")
    st.vega_lite_chart(spec=figures.eps_curves(curves, show_overall), key="fig_curves")
    left, right = st.columns(2)
    with left:
        st.subheader("Accuracy / robustness trade-off")
        st.vega_lite_chart(spec=figures.tradeoff(summary), key="fig_tradeoff")
    with right:
        st.subheader("R1 vs the cost-sensitive radius")
        st.vega_lite_chart(spec=figures.r1_vs_r2(tables[focus], f"{focus}: sensitive examples"), key="fig_r1r2")


cost_tools(case, current_cost(case, classes))
st.caption("Cost matrix: rows are the true class, columns the predicted class; a ticked cell means that mistake "
           "costs (the diagonal cannot cost).")
cost_dependent_views()

# the views below do not depend on the cost matrix, so a grid click leaves them alone
left, right = st.columns(2)
standard = {name: certificate_table(records[name], current_cost(case, classes), alpha, mode)
            for name in picked}  # their R1, top class and p_A bound do not depend on the matrix
with left:
    st.subheader("Per-class certified accuracy")
    pc = pd.concat([per_class(t, eps, classes).assign(checkpoint=n) for n, t in standard.items()])
    st.vega_lite_chart(spec=figures.per_class_bars(pc), key="fig_perclass")
with right:
    st.subheader("Lower confidence bound of p_A")
    bounds = pd.concat([pd.DataFrame({"checkpoint": n, "p_lower": t.p_a_lower}) for n, t in standard.items()])
    st.vega_lite_chart(spec=figures.lower_bound_ecdf(bounds), key="fig_plower")
left, _ = st.columns(2)
with left:
    conf = smoothed_confusion(records[focus].counts0, records[focus].labels, len(classes))
    st.subheader("Smoothed classifier's confusion")
    st.vega_lite_chart(spec=figures.confusion_heatmap(conf, classes, focus), key="fig_conf")
meta = records[focus].meta
st.caption(f"{focus}: {meta['num_examples']} examples of {meta['dataset']} ({meta['split']}), n0 = {meta['n0']}, "
           f"n = {meta['n']}, σ = {meta['sigma']}, {meta['precision']} on {meta['device_type']}, seed {meta['seed']}, "
           f"checkpoint sha256 {meta['checkpoint_sha256'][:12]}…, record {infos[focus].path.name}.")
