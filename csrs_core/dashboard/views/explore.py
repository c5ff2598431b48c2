"""Explore & compare: metrics, paired tests, curves and views for stored certifications (stage B only).

The cost grid and everything that depends on the matrix run in one fragment, so a click reruns
only that part of the page; the record choice, ε, α and mode rerun the page. Everything here is
stage B, computed from the stored counts: no setting on this page ever samples again. The table
shows the certified expected cost and Rob_cs(ε, τ) for every matrix; their curves over ε and the τ
slider appear for real-valued matrices only (for a 0/1 matrix they repeat Rob_cs)."""
import numpy as np
import pandas as pd
import streamlit as st

from csrs_core.certification.bounds import max_certifiable_radius
from csrs_core.certification.comparisons import difference_lines
from csrs_core.certification.certificates import certified_cost, smoothed_confusion
from csrs_core.certification.metrics import cost_curve, eps_curve, per_class, summarize_cost
from csrs_core.certification.comparisons import metrics_row, with_holm
from csrs_core.cli.report import to_latex
from csrs_core.reports import SAMPLES, budget, standard_columns
from csrs_core.certification.stats import paired_comparison
from csrs_core.sampling.store import recertify_command
from csrs_core.dashboard import figures
from csrs_core.dashboard.common import (case_listing, certificate_table, checkpoints_in_case, current_cost,
                                        first_value, load_cached_record, require_access, select_readable_case,
                                        show_question)
from csrs_core.dashboard.glossary import GLOSSARY, first_visit_guide
from csrs_core.dashboard.cost_editor import GRID_LIMIT, cost_grid, cost_tools, tau_slider

require_access()  # first, also when this view is reached some other way than app.py
st.title("Explore & compare")
first_visit_guide()
root, case, classes = select_readable_case()
first = show_question(root, case, classes)
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

picked = st.multiselect("Checkpoints", available, key=f"picked::{case}",
                        **first_value(f"picked::{case}", available, available, many=True))
c1, c2, c3, c4 = st.columns(4)
sigma = records[available[0]].meta["sigma"]  # without a case ε: the paper's tables report ε = σ
eps = c1.number_input("ε (ℓ2 radius)", min_value=0.0, max_value=4.0, value=float(first.eps if first.eps is not None
                                                                                 else sigma),
                      step=0.05, key=f"eps::{case}")
alpha = c2.select_slider("α (failure probability)", [0.0001, 0.001, 0.01, 0.05], value=0.001, key="alpha")
mode = c3.radio("Mode", ["sound", "paper"], horizontal=True, key="mode",
                help="sound: max(R1(α/2), R2), valid with probability ≥ 1−α. "
                     "paper: max(R1(α), R2) as Algorithm 1 prints it (≥ 1−1.5α).")
show_overall = c4.checkbox("Show overall certified accuracy", value=False, key="show_overall")
show_band = c4.checkbox("95 % band on the curves", value=True, key="show_band",
                        help="each point's exact (Clopper–Pearson) 95 % interval over the test examples")
if not picked:
    st.info("Pick at least one checkpoint.")
    st.stop()
# every setting in which the records shown differ (also when picked by hand), named with each one's value
for setting, line in difference_lines({name: infos[name] for name in picked}):
    (st.info if setting == "sigma" else st.warning)(line)
b1, b2 = st.columns(2)
baseline = b1.selectbox("Baseline for paired tests", picked, key=f"baseline::{case}",
                        **first_value(f"baseline::{case}", picked, first.baseline))
focus = b2.selectbox("Checkpoint for the detailed views", picked, key=f"focus::{case}",
                     **first_value(f"focus::{case}", picked, first.focus))

# the cost-sensitive radius rests on R1(α/2) in sound mode (R2 never exceeds it), on R1(α) in paper mode
cap_alpha = alpha / 2 if mode == "sound" else alpha
limits = {name: max_certifiable_radius(records[name].meta["sigma"], records[name].meta["n"], cap_alpha)
          for name in picked}
tightest = min(limits, key=limits.get)
limit = limits[tightest]
st.caption(f"Largest cost-sensitive radius these samples can certify at all in {mode} mode "
           f"(σ·Φ⁻¹(a^(1/n)) with a = {'α/2' if mode == 'sound' else 'α'}): {limit:.4f}"
           + ("" if len(set(limits.values())) == 1
              else f" (smallest over checkpoints; up to {max(limits.values()):.4f})"))
if eps >= limit:
    st.warning(f"ε = {eps} is at or beyond {limit:.4f}, the largest radius that n = {records[tightest].meta['n']} "
               f"samples can certify at α = {alpha} in {mode} mode: low numbers here reflect the sampling budget, "
               "not a weak model.")
confidence = f"1 − α = {1 - alpha:g}" if mode == "sound" else f"1 − 1.5α = {1 - 1.5 * alpha:g}"


def certified_costs(record, cost, points) -> np.ndarray:
    """[len(points), N] certified worst-case costs of the record's examples at each ε of `points`
    (stage B only), memoised per record, matrix (equal costs: the same entry), α, mode and points."""
    cache = st.session_state.setdefault("_costs", {})
    key = (str(record.path), record.meta["key"], cost, alpha, mode, tuple(points))
    if key not in cache:
        if len(cache) > 64:
            cache.clear()
        cache[key] = certified_cost(record.counts0, record.counts, record.labels, cost, sigma=record.meta["sigma"],
                                    alpha=alpha, eps=np.asarray(points), mode=mode, bounds=record.bounds)
    return cache[key]


def metrics_table(tables: dict, costs: dict, tau: float) -> pd.DataFrame:
    """One row per checkpoint as `csrs report` makes it: metrics_row at ε, expected_cost and rob_cs_tau
    (summarize_cost of the certified costs at ε, the last of `costs`' rows), paired tests against the
    baseline on the same examples, Holm-adjusted."""
    rows = []
    for name, table in tables.items():
        at_eps = summarize_cost(costs[name][-1], table["sensitive"].to_numpy(), tau)
        row = {"checkpoint": name, "method": metas[name]["method"], **metrics_row(table, eps),
               "expected_cost": at_eps["expected_cost"], "rob_cs_tau": at_eps["rob_cs_tau"]}
        if records[name].meta.get("sequential"):   # a sequential record: what its sampling spent
            row[SAMPLES] = float(records[name].n_used.mean())
        if name != baseline and records[name].data_id == records[baseline].data_id:
            cmp = paired_comparison(tables[baseline], table, eps)
            row.update(d_acc=cmp["d_acc"], p_acc=cmp["p_acc"], d_rob_cs=cmp["d_rob_cs"], p_rob_cs=cmp["p_rob_cs"])
        rows.append(row)
    summary = pd.DataFrame(rows)
    for c in ("d_acc", "p_acc", "d_rob_cs", "p_rob_cs"):  # no comparison at all: empty columns
        if c not in summary:
            summary[c] = np.nan
    return with_holm(summary)


def top_confusions(conf: np.ndarray, names: list[str], k: int = 20) -> pd.DataFrame:
    """The k most frequent mistakes of a confusion matrix (rows: true class), most frequent first,
    with their count and share of the true class's examples."""
    off = conf.astype(float)
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    top = np.argpartition(flat, -k)[-k:] if flat.size > k else np.arange(flat.size)
    top = top[np.argsort(-flat[top], kind="stable")]
    j, c = np.unravel_index(top[flat[top] > 0], off.shape)
    return pd.DataFrame({"true class": [names[i] for i in j], "smoothed top class": [names[i] for i in c],
                         "examples": conf[j, c], "share of the class": conf[j, c] / conf[j].sum(axis=1)})


def metric_columns(baseline: str, tau: float) -> dict:
    """The metrics table's number formats and, as each column's tooltip, what it means (the glossary's
    words where it has them)."""
    def interval(end: str, metric: str) -> str:
        return f"The {end} end of the exact 95 % interval of {metric} over the test examples."

    meaning = {"acc": GLOSSARY["Acc"], "rob_cs": GLOSSARY["Rob_cs(ε)"], "rob_std": GLOSSARY["Rob_std(ε)"],
               "rob_non": GLOSSARY["Rob_non(ε)"],
               "balanced_acc": "The mean over the classes of each class's accuracy.",
               "examples": "Test examples certified.", "sensitive_examples": GLOSSARY["sensitive example"],
               "acc_lo": interval("lower", "Acc"), "acc_hi": interval("upper", "Acc"),
               "rob_cs_lo": interval("lower", "Rob_cs"), "rob_cs_hi": interval("upper", "Rob_cs"),
               "expected_cost": GLOSSARY["certified expected cost"],
               "rob_cs_tau": GLOSSARY["Rob_cs(ε, τ)"] + f" Here τ = {tau:g}.",
               SAMPLES: "Mean Monte Carlo samples per example that sequential certification used.",
               "d_acc": f"Acc minus the baseline's ({baseline}) on the same examples.",
               "d_rob_cs": f"Rob_cs minus the baseline's ({baseline}) on the same examples.",
               "p_acc": "Exact McNemar p-value of d_acc (two-sided).",
               "p_rob_cs": "Exact McNemar p-value of d_rob_cs (two-sided).",
               "p_acc_holm": "p_acc Holm-adjusted over the comparisons with the baseline.",
               "p_rob_cs_holm": "p_rob_cs Holm-adjusted over the comparisons with the baseline."}
    p_values = {"p_acc", "p_rob_cs", "p_acc_holm", "p_rob_cs_holm"}
    counts = {"examples", "sensitive_examples", SAMPLES}
    return {c: st.column_config.NumberColumn(format="%.2g" if c in p_values else "%.0f" if c in counts else "%.3f",
                                             help=text) for c, text in meaning.items()}


def note(text: str) -> str:
    """`text` as Markdown in a caption's style (small, grey), for a caption that shares an element."""
    return f":gray[:small[{text}]]"


STANDARD_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def standard_table(tables: dict) -> None:
    """Cohen et al.'s and MACER's table: certified accuracy at standard radii (and ε), ACR, abstentions;
    none of it depends on the cost matrix, so a grid click leaves it alone."""
    radii = tuple(sorted(set(STANDARD_RADII) | {float(eps)}))
    rows = [{"checkpoint": n, "method": metas[n]["method"], "acc": metrics_row(t, eps)["acc"],
             **standard_columns(t, radii, rob_cs=False), "budget": budget(records[n].meta, records[n].n_used)}
            for n, t in tables.items()]
    table = pd.DataFrame(rows)
    st.subheader("The field's standard table")
    st.caption("cert_acc@r: certified accuracy, the share of all test examples whose standard certificate predicts "
               "the true class with radius R1 > r (Cohen et al.'s tables; Rob_cs at ε is in the metrics above); "
               "acr: average certified radius over all examples (MACER's headline); abstain: share of examples the "
               "standard certificate abstains on; budget: Monte Carlo samples per example (n0 selection, n "
               "estimation).")
    st.dataframe(table, hide_index=True, key="standard_table",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns
                                if c not in ("checkpoint", "method", "budget")})
    s1, s2 = st.columns(2)
    s1.download_button("Download CSV", lambda: table.to_csv(index=False), "csrs-standard.csv", "text/csv",
                       key="standard_csv", on_click="ignore")
    s2.download_button("Download LaTeX table", lambda: to_latex(table, f"{case}: {mode} mode, α = {alpha}", radii),
                       "csrs-standard.tex", "text/plain", key="standard_tex", on_click="ignore")


@st.fragment
def cost_dependent_views():
    """The grid and every view that depends on the cost matrix or τ: a click reruns only this. Everything
    is computed before the first view is drawn, so that the rerun's elements reach the browser together
    rather than spread over the computation (each batch that arrives re-renders the page)."""
    cost = cost_grid(case, current_cost(case, classes))
    weighted = not cost.is_binary  # for a 0/1 matrix the cost views would repeat Rob_cs (and cost a click time)
    tau = tau_slider(case, cost) if weighted else 0.0
    grid = np.round(np.linspace(0, max(limit * 1.05, eps), 60), 4)
    tables = {name: certificate_table(records[name], cost, alpha, mode) for name in picked}
    points = np.r_[grid, eps] if weighted else np.array([eps])  # the curves' grid (shown when weighted), then ε
    costs = {name: certified_costs(records[name], cost, points) for name in picked}
    summary = metrics_table(tables, costs, tau)
    banded = [baseline, focus]  # the only checkpoints whose curves get a band: no interval computed for the rest
    curves = pd.concat([figures.with_intervals(eps_curve(t, grid), len(t), int(t["sensitive"].sum()))
                        if show_band and n in banded else eps_curve(t, grid) for n, t in tables.items()],
                       ignore_index=True)
    curves["checkpoint"] = np.repeat(list(tables), len(grid))  # one string column, not one per checkpoint
    axis_key = f"tradeoff_x::{case}"
    axis = st.session_state.get(axis_key, "rob_cs")
    specs = {"fig_curves": figures.eps_curves(curves, show_overall, show_band, banded=banded),
             "fig_tradeoff": figures.tradeoff(summary, axis),
             "fig_r1r2": figures.r1_vs_r2(tables[focus], f"{focus}: sensitive examples")}
    if weighted:
        cost_frame = pd.concat([cost_curve(costs[n][:-1], grid, tables[n]["sensitive"].to_numpy(), tau)
                                .assign(checkpoint=n) for n in picked])
        specs.update(fig_cost=figures.cost_curves(cost_frame, "expected_cost"),
                     fig_rob_tau=figures.cost_curves(cost_frame, "rob_cs_tau"))
    described = cost.describe()
    # each element below is a message the browser renders on every click: a heading and its explanation
    # are one Markdown element, and a warning is a line of it (the charts below never move or remount)
    no_sensitive = summary.sensitive_examples.max() == 0
    st.markdown(f"### Metrics at ε = {eps} ({mode} mode, α = {alpha}, cost: {described})\n\n"
                f"`{described}` reads: {cost.in_words()}.\n\n"
                + (":orange[**No test example is sensitive under this cost matrix: Rob_cs and Rob_std are "
                   "undefined.**]\n\n" if no_sensitive else "")
                + note(f"Each certificate holds with probability ≥ {confidence}. `d_*` and `p_*` compare each "
                       f"checkpoint with the baseline ({baseline}) on the same examples. Point at a column's name "
                       f"for what it means."))
    st.dataframe(summary, hide_index=True, key="summary_table", column_config=metric_columns(baseline, tau))
    with st.container(horizontal=True):  # the files are made when a button is clicked, never on a grid click
        st.download_button("Download CSV", lambda: summary.to_csv(index=False), "csrs-metrics.csv", "text/csv",
                           on_click="ignore")
        st.download_button("Download LaTeX table", lambda: to_latex(summary, f"{case}: cost {described}, ε = {eps}, "
                                                                    f"{mode} mode, α = {alpha}"),
                           "csrs-metrics.tex", "text/plain", on_click="ignore")
    st.markdown("### Certified cost-sensitive robustness vs ε\n\n"
                + note("Rob_cs (solid): share of the sensitive examples certified against every costly mistake; "
                       "Rob_std (dashed): share of them certified correct at ε by the standard certificate"
                       + ("; certified accuracy (dotted): share of all examples" if show_overall else "")
                       + (f". Bands: 95 % intervals of {baseline} and {focus}" if show_band else "")
                       + ". Click a legend entry to pick one checkpoint."
                       + ("" if weighted else " The certified expected cost and Rob_cs(ε, τ) against ε (with a τ "
                          "slider) appear once a cost other than 0 or 1 is set: for a 0/1 matrix they repeat the "
                          "Rob_cs curve.")))
    st.vega_lite_chart(spec=specs["fig_curves"], key="fig_curves")
    if weighted:  # each figure the page's width (side by side, their legends left no room to plot at 1,000 px)
        st.markdown("### Certified expected cost vs ε")
        st.vega_lite_chart(spec=specs["fig_cost"], key="fig_cost")
        st.markdown(f"### Rob_cs(ε, τ) vs ε at τ = {tau:g}")
        st.vega_lite_chart(spec=specs["fig_rob_tau"], key="fig_rob_tau")
    st.markdown("### Accuracy / robustness trade-off")
    st.radio("Horizontal axis", list(figures.TRADEOFF_AXES), horizontal=True, key=axis_key,
             format_func={"rob_cs": "Rob_cs(ε)", "expected_cost": "expected cost"}.get)
    st.vega_lite_chart(spec=specs["fig_tradeoff"], key="fig_tradeoff")
    st.markdown("### R1 vs the cost-sensitive radius")
    st.vega_lite_chart(spec=specs["fig_r1r2"], key="fig_r1r2")


cost_tools(case, current_cost(case, classes))
st.caption("Cost matrix: rows are the true class, columns the predicted class; a ticked cell means that mistake "
           "costs, its colour how much (the diagonal cannot cost). A click ticks a cell (cost 1) or clears it; type "
           "the selected cell's cost in the box under the grid (shift-click selects a cell without ticking it)."
           if len(classes) <= GRID_LIMIT else "Cost matrix: rows are the true class, columns the predicted class.")
cost_dependent_views()

# the views below do not depend on the cost matrix, so a grid click leaves them alone; every figure has
# the page's width (side by side, their legends left no room to plot at 1,000 px)
standard = {name: certificate_table(records[name], current_cost(case, classes), alpha, mode)
            for name in picked}  # their R1, top class and p_A bound do not depend on the matrix
standard_table(standard)
st.subheader("Per-class certified accuracy")
pc = pd.concat([per_class(t, eps, classes).assign(checkpoint=n) for n, t in standard.items()])
st.vega_lite_chart(spec=figures.per_class_bars(pc), key="fig_perclass")
st.subheader("Lower confidence bound of p_A")
bounds = pd.concat([pd.DataFrame({"checkpoint": n, "p_lower": t.p_a_lower}) for n, t in standard.items()])
st.vega_lite_chart(spec=figures.lower_bound_ecdf(bounds), key="fig_plower")
conf = smoothed_confusion(records[focus].counts0, records[focus].labels, len(classes))
st.subheader("Smoothed classifier's confusion")
if len(classes) <= GRID_LIMIT:
    st.vega_lite_chart(spec=figures.confusion_heatmap(conf, classes, focus), key="fig_conf")
else:  # a heat map of m² cells says nothing at this size
    st.caption(f"{focus}: the most frequent mistakes (true class → smoothed top class) of "
               f"{len(classes)} classes.")
    st.dataframe(top_confusions(conf, classes), hide_index=True)
meta = records[focus].meta
st.caption(f"{focus}: {meta['num_examples']} examples of {meta['dataset']} ({meta['split']}), n0 = {meta['n0']}, "
           f"n = {meta['n']}, σ = {meta['sigma']}, {meta['precision']} on {meta['device_type']}, seed {meta['seed']}, "
           f"checkpoint sha256 {meta['checkpoint_sha256'][:12]}…, record {infos[focus].path.name}.")
