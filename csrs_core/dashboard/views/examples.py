"""Examples: the case's shipped test sample as a gallery with each example's certificates, filters and
paging, and one example opened above it: its image, noisy copies, votes, bounds, radii and why.

Stage B only (never resamples). The sample is decoded once per file version; thumbnails are built
for the current page only."""
from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from csrs_core import CSRSError
from csrs_core import explain as ex
from csrs_core.comparison import difference_lines
from csrs_core.data import load_dataset
from csrs_core.dashboard import figures
from csrs_core.dashboard.common import (case_classes, case_listing, certificate_table, checkpoints_in_case,
                                        current_cost, load_cached_record, require_access, select_case)
from csrs_core.dashboard.cost_editor import cost_tools

PAGE_SIZE = 24
THUMB_PX, LARGE_PX, NOISY_PX = 96, 256, 128
NOISE_SEED = 0
SAMPLE_FILE = "test-sample.npz"
ABSTAIN = "abstain"

require_access()  # first, also when this view is reached some other way than app.py
st.title("Examples")


@st.cache_resource(show_spinner=False, max_entries=8)
def _sample(path: str, mtime_ns: int) -> dict | str:
    """The decoded sample (uint8 images [N, C, H, W], labels, indices, classes), once per file version;
    the error message when the file is not a sample."""
    try:
        with np.load(path, allow_pickle=False) as z:
            split = str(z["source"][1])
        data = load_dataset(f"sample:{path}", split=split)
    except (CSRSError, OSError, KeyError, IndexError, ValueError, zipfile.BadZipFile) as exc:
        return f"{Path(path).name} cannot be read as a test sample ({exc})."
    indices = np.asarray(data.indices, dtype=np.int64)
    return {"images": data.images.numpy(), "labels": data.labels.numpy().astype(np.int64), "indices": indices,
            "position": pd.Index(indices), "classes": list(data.classes), "name": data.name, "split": data.split}


def _png(pixels: np.ndarray, target: int) -> bytes:
    """uint8 [C, H, W] -> PNG, upscaled by a whole factor with nearest neighbour (pixels stay sharp)."""
    img = Image.fromarray(pixels.transpose(1, 2, 0) if pixels.shape[0] in (3, 4) else pixels[0])
    scale = max(1, target // max(img.size))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumb(path: str, mtime_ns: int, position: int, target: int) -> bytes:
    return _png(_sample(path, mtime_ns)["images"][position], target)


def _noisy(pixels: np.ndarray, sigma: float, index: int, copies: int = 4) -> list[bytes]:
    """`copies` draws of x + N(0, σ²I) in pixel space [0, 1], with a fixed seed per example, clipped for display."""
    rng = np.random.default_rng([NOISE_SEED, int(index)])
    x = pixels.astype(np.float64) / 255.0
    return [_png((np.clip(x + sigma * rng.standard_normal(x.shape), 0, 1) * 255).round().astype(np.uint8), NOISY_PX)
            for _ in range(copies)]


def _seed(key: str, value) -> None:
    """A widget's first value on this page: what the Explore page last had, else `value`."""
    if key not in st.session_state:
        st.session_state[key] = value


def _class_name(classes, k) -> str:
    return ABSTAIN if k < 0 else str(classes[k])


def _radius_text(r: float) -> str:
    return "—" if not r > 0 else f"{r:.3f}"


# the case, its checkpoints, records and sample ------------------------------------------------------
root, case = select_case()
if case is None:
    st.stop()
classes = case_classes(root, case)
if classes is None:
    st.error(f"No readable checkpoint in {root / case}.")
    st.stop()
sample_path = root / case / SAMPLE_FILE
if not sample_path.is_file():
    st.info(f"This case has no shipped test sample ({SAMPLE_FILE}), so there are no images to show. Certify on "
            f"the shipped sample first: save one with the core's `ImageSet.save_sample('{case}/{SAMPLE_FILE}')` "
            "(or `csrs certify ... --save-sample`) and certify the checkpoints on `sample:PATH`.")
    st.stop()
sample = _sample(str(sample_path), sample_path.stat().st_mtime_ns)
if isinstance(sample, str):
    st.error(sample)
    st.stop()
spath, smtime = str(sample_path), sample_path.stat().st_mtime_ns

metas = {name: meta for name, meta in checkpoints_in_case(root, case).items() if isinstance(meta, dict)}
listings, defaults, notes = case_listing(root, case, list(metas))
if not defaults:
    st.info("No checkpoint of this case has a valid certification yet: run one on the Certify page.")
    st.stop()

records, infos, problems = {}, {}, []
for name in defaults:
    valid = {r.path.name: r for r in listings[name] if r.status == "valid"}
    remembered = f"examples::record::{case}::{name}"
    chosen = st.session_state.get(f"record::{case}::{name}")    # the Explore page's choice, while it lasts
    if chosen in valid:
        st.session_state[remembered] = chosen
    chosen = st.session_state.get(remembered)
    info = valid.get(chosen) or valid.get(defaults[name])
    if info is None:
        continue
    try:
        records[name] = load_cached_record(info)
        infos[name] = info
    except (OSError, CSRSError) as exc:
        problems.append(f"{name}: its record {info.path.name} vanished or cannot be read ({exc}); it is left out. "
                        "Reload the page once the certification is back.")

# match each record to the sample by example index (and the data set it was made on)
matches = {}
for name, rec in records.items():
    if (rec.meta.get("dataset"), rec.meta.get("split")) != (sample["name"], sample["split"]):
        problems.append(f"{name}: its record is on {rec.meta.get('dataset')}/{rec.meta.get('split')}, not on the "
                        f"sample's {sample['name']}/{sample['split']}; it is left out.")
        continue
    rows = pd.Index(np.asarray(rec.indices, dtype=np.int64)).get_indexer(sample["indices"])
    on = rows >= 0
    if not on.any():
        problems.append(f"{name}: its record holds none of the sample's examples; it is left out (certify it on the "
                        f"shipped sample, `sample:{case}/{SAMPLE_FILE}`).")
        continue
    if np.any(np.asarray(rec.labels)[rows[on]] != sample["labels"][on]):
        problems.append(f"{name}: its record's labels differ from the sample's on the same examples; it is left out.")
        continue
    matches[name] = rows
for line in problems:
    st.warning(line)
if not matches:
    st.info("No certification of this case is on the examples of its test sample: certify on the shipped sample "
            f"first (`sample:{case}/{SAMPLE_FILE}`).")
    st.stop()
available = list(matches)

# settings ------------------------------------------------------------------------------------------
first_sigma = float(records[available[0]].meta["sigma"])
_seed(f"examples::picked::{case}", [n for n in st.session_state.get(f"picked::{case}", available) if n in available]
      or available)
_seed(f"examples::eps::{case}", float(st.session_state.get(f"eps::{case}", first_sigma)))
_seed("examples::alpha", st.session_state.get("alpha", 0.001))
_seed("examples::mode", st.session_state.get("mode", "sound"))
picked = st.multiselect("Checkpoints compared", available, key=f"examples::picked::{case}")
if not picked:
    st.info("Pick at least one checkpoint.")
    st.stop()
c1, c2, c3 = st.columns(3)
eps = c1.number_input("ε (ℓ2 radius)", min_value=0.0, max_value=4.0, step=0.05, key=f"examples::eps::{case}")
alpha = c2.select_slider("α (failure probability)", [0.0001, 0.001, 0.01, 0.05], key="examples::alpha")
mode = c3.radio("Mode", ["sound", "paper"], horizontal=True, key="examples::mode",
                help="sound: max(R1(α/2), R2), valid with probability ≥ 1−α. "
                     "paper: max(R1(α), R2) as Algorithm 1 prints it (≥ 1−1.5α).")
for setting, line in difference_lines({name: infos[name] for name in picked}):
    (st.info if setting == "sigma" else st.warning)(line)
cost_tools(case, current_cost(case, classes))
cost = current_cost(case, classes)
st.caption(f"Cost matrix: {cost.describe()} (edit it cell by cell on Explore & compare). Outcome at ε: "
           f"{ex.OUTCOME_RULE}")

# one long table: every compared checkpoint on the examples in the sample and in all its records
common = np.logical_and.reduce([matches[n] >= 0 for n in picked])
positions = np.flatnonzero(common)                     # positions in the sample
if len(positions) < len(sample["indices"]):
    st.caption(f"{len(positions)} of the sample's {len(sample['indices'])} examples have a record for every compared "
               "checkpoint; only those are shown.")
tables = {}
for name in picked:
    table = certificate_table(records[name], cost, alpha, mode).iloc[matches[name][positions]].reset_index(drop=True)
    table.insert(0, "index", sample["indices"][positions])
    table["radius"] = ex.radius(table)
    table["outcome"] = ex.outcomes(table, cost, eps)
    tables[name] = table
long = pd.concat([t.assign(checkpoint=n, method=metas[n]["method"], sigma=records[n].meta["sigma"],
                           n=records[n].meta["n"]) for n, t in tables.items()], ignore_index=True)
long["true_class"] = [classes[k] for k in long.label]
long["top_class"] = [classes[k] for k in long.c_a]

# gallery controls --------------------------------------------------------------------------------------
with st.container(border=True):
    g1, g2, g3 = st.columns(3)
    a = g1.selectbox("Checkpoint A (gallery, filters, sort)", picked, key=f"examples::a::{case}")
    b = g2.selectbox("Checkpoint B (discordance)", picked, key=f"examples::b::{case}",
                     index=min(1, len(picked) - 1))
    basis = g3.radio("Predicted class", ["cost-sensitive (pred)", "standard (pred_std)"], horizontal=True,
                     key="examples::basis", help="pred: ĉ_A where the mode's cost-sensitive radius is > 0; pred_std: "
                     "ĉ_A where LCB(p_A) at α > 1/2 (the standard certificate); otherwise abstain.")
    f1, f2, f3, f4 = st.columns(4)
    true_filter = f1.multiselect("True class", classes, key=f"examples::true::{case}", placeholder="all")
    pred_filter = f2.multiselect("Predicted class", classes + [ABSTAIN], key=f"examples::pred::{case}",
                                 placeholder="all")
    sens_filter = f3.selectbox("Sensitive", ["all", "sensitive", "not sensitive"], key="examples::sensitive")
    outcome_filter = f4.multiselect("Outcome at ε (checkpoint A)", list(ex.OUTCOMES), key="examples::outcome",
                                    placeholder="all")
    s1, s2, s3 = st.columns(3)
    only_discordant = s1.checkbox("Only examples where A and B disagree at ε", key=f"examples::discordant::{case}",
                                  disabled=a == b, help="Their outcomes at ε differ (e.g. certified for A, "
                                                        "abstained for B).")
    sort_by = s2.selectbox("Sort by (checkpoint A)", ["radius", "LCB(p_A)", "index"], key="examples::sort")
    descending = s3.toggle("Largest first", value=False, key="examples::descending")

ta = tables[a]
pred_col = "pred" if basis.startswith("cost") else "pred_std"
keep = np.ones(len(ta), bool)
if true_filter:
    keep &= ta.label.isin([classes.index(c) for c in true_filter]).to_numpy()
if pred_filter:
    keep &= ta[pred_col].isin([-1 if c == ABSTAIN else classes.index(c) for c in pred_filter]).to_numpy()
if sens_filter != "all":
    keep &= ta.sensitive.to_numpy() == (sens_filter == "sensitive")
if outcome_filter:
    keep &= ta.outcome.isin(outcome_filter).to_numpy()
if only_discordant and a != b:
    keep &= ex.discordant(ta.outcome, tables[b].outcome)
shown = ta[keep]
key_col = {"radius": "radius", "LCB(p_A)": "p_a_lower", "index": "index"}[sort_by]
shown = shown.sort_values([key_col, "index"], ascending=[not descending, True], kind="stable")
order = shown["index"].tolist()

# the open example: the URL's ?example=, else the select box -------------------------------------------
open_key = f"examples::open::{case}"
url_value = st.query_params.get("example")
url_problem = None
known = set(int(i) for i in ta["index"])
if url_value is not None:
    try:
        wanted = int(url_value.strip())
    except ValueError:
        wanted, url_problem = None, (f"The link asks for example {url_value!r}, which is not an example index (a "
                                     "whole number such as ?example=12). Pick one below.")
    if wanted is not None and wanted not in known:
        url_problem = (f"Example {wanted} is not in this case's test sample" if wanted not in sample["position"]
                       else f"Example {wanted} has no record for every compared checkpoint") + \
            f" (it holds {len(known)} examples, indices {min(known)}…{max(known)}). Pick one below."
        wanted = None
    if wanted is not None and st.session_state.get("examples::_url") != url_value:
        st.session_state[open_key] = wanted       # a new link (or the first run): it opens its example
    st.session_state["examples::_url"] = url_value
if url_problem:
    st.warning(url_problem)
current = st.session_state.get(open_key)
if current not in known:
    current = st.session_state[open_key] = None
options = [None] + ([current] if current is not None and current not in set(order) else []) + order
opened = st.selectbox(f"Open an example ({len(order)} match the filters)", options, key=open_key,
                      format_func=lambda i: "—" if i is None else f"{i}: {classes[int(sample['labels'][sample['position'].get_loc(i)])]}")
if opened is None:
    if url_value is not None and not url_problem:
        del st.query_params["example"]
        st.session_state.pop("examples::_url", None)
elif url_value != str(opened):
    st.query_params["example"] = str(opened)
    st.session_state["examples::_url"] = str(opened)

# the single-example view (above the gallery) ----------------------------------------------------------
if opened is not None:
    pos = int(sample["position"].get_loc(opened))
    label = int(sample["labels"][pos])
    pixels = sample["images"][pos]
    with st.container(border=True):
        st.subheader(f"Example {opened}: true class {classes[label]}"
                     + (f" (sensitive: Ω_y = {{{', '.join(classes[k] for k in cost.omega(label))}}})"
                        if cost.omega(label) else " (not sensitive: no costly class)"))
        left, right = st.columns([1, 2])
        left.image(_png(pixels, LARGE_PX), caption=f"example {opened} ({pixels.shape[-1]}×{pixels.shape[-2]} pixels, "
                   "enlarged with nearest neighbour)")
        for sigma in sorted({float(records[n].meta["sigma"]) for n in picked}):
            right.image(_noisy(pixels, sigma, opened), caption=[f"x + δ, σ = {sigma} (draw {i + 1})" for i in range(4)])
        right.caption(f"Four noisy copies x + δ, δ ~ N(0, σ²I) in pixel space [0, 1], drawn here with a fixed seed "
                      f"({NOISE_SEED}, example {opened}) for illustration (not the certification's draws); clipped to "
                      "[0, 1] for display only: the classifier sees the unclipped noise.")
        rows, csv_rows = [], []
        for name in picked:
            rec = records[name]
            row = matches[name][pos]
            sigma = float(rec.meta["sigma"])
            info = ex.explain(rec.counts0[row], rec.counts[row], label, cost, sigma, alpha, mode, eps, classes)
            omega = set(info["omega"])
            votes = pd.DataFrame([{"class": classes[k], "sample": s, "votes": int(c[k]), "share": c[k] / max(c.sum(), 1),
                                   "costly": "in Ω_y" if k in omega else "not in Ω_y"}
                                  for s, c in zip(figures.VOTE_SAMPLES, (rec.counts0[row], rec.counts[row]))
                                  for k in range(len(classes))])
            st.markdown(f"**{name}** ({metas[name]['method']}, σ = {sigma}, n0 = {info['n0']}, n = {info['n']}): "
                        f"**{info['outcome']}** at ε = {eps}")
            h, t = st.columns([3, 2])
            with h:
                st.vega_lite_chart(spec=figures.vote_histogram(votes, classes), key=f"fig_votes::{name}")
            ucbs = "; ".join(f"{r['name']}: {r['votes']} votes, UCB {r['ucb']:.4f}" for _, r in info["costly"].iterrows())
            numbers = {
                "top class ĉ_A": f"{classes[info['c_a']]} (n_A = {info['n_a']} of {info['n']})",
                "LCB(p_A) at α": f"{info['p_a_lower']:.4f}",
                "R1(α)": f"{info['r1']:.4f}",
                "R2": ex._fmt(info["r2"]),
                f"radius ({mode})": ex._fmt(info["radius"]),
                f"costly classes: UCB at α/(2|Ω_y|)": ucbs or "none (not sensitive)",
                "n needed (estimate)": ("—" if info["needed_n"] is None else f"{info['needed_n']:,}"),
            }
            t.dataframe(pd.DataFrame({"value": numbers}), key=f"numbers::{name}")
            for reason in info["reasons"]:
                st.markdown(f"- {reason}")
            csv_rows.append({"checkpoint": name, "method": metas[name]["method"], "index": opened,
                             "true_class": classes[label], "sensitive": info["sensitive"],
                             "top_class": classes[info["c_a"]], "n_a": info["n_a"], "n": info["n"], "n0": info["n0"],
                             "sigma": sigma, "alpha": alpha, "mode": mode, "eps": eps,
                             "p_a_lower": info["p_a_lower"], "r1": info["r1"], "r2": info["r2"],
                             "radius": info["radius"], "outcome": info["outcome"], "needed_n": info["needed_n"],
                             "costly_ucbs": ucbs, "reasons": " ".join(info["reasons"])})
        st.download_button("Download this example's table (CSV, every compared checkpoint)",
                           pd.DataFrame(csv_rows).to_csv(index=False), f"csrs-example-{opened}.csv", "text/csv",
                           key="examples::download_one")

# the gallery -----------------------------------------------------------------------------------------
st.subheader(f"Gallery: {len(order)} of {len(ta)} examples (checkpoint {a}, {mode} mode, ε = {eps})")
pages = max(1, math.ceil(len(order) / PAGE_SIZE))
page_key = f"examples::page::{case}"
signature = (a, b, basis, tuple(true_filter), tuple(pred_filter), sens_filter, tuple(outcome_filter),
             only_discordant, sort_by, descending, eps, alpha, mode, cost.describe(), tuple(picked))
if st.session_state.get("examples::_signature") != signature or st.session_state.get(page_key, 1) > pages:
    st.session_state[page_key] = 1               # a new selection starts on its first page
st.session_state["examples::_signature"] = signature
p1, p2 = st.columns([1, 3])
page = p1.number_input(f"Page (of {pages}, {PAGE_SIZE} per page)", min_value=1, max_value=pages, step=1, key=page_key)
p2.download_button("Download the filtered examples (CSV, every compared checkpoint, long format)",
                   long[long["index"].isin(order)].to_csv(index=False), "csrs-examples.csv", "text/csv",
                   key="examples::download_all")
if not order:
    st.info("No example matches these filters.")
else:
    part = shown.iloc[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    thumbs = [_thumb(spath, smtime, int(sample["position"].get_loc(i)), THUMB_PX) for i in part["index"]]
    captions = [f"#{i} {classes[y]} → {_class_name(classes, p)}, r = {_radius_text(r)}"
                for i, y, p, r in zip(part["index"], part.label, part[pred_col], part.radius)]
    st.image(thumbs, caption=captions, width=THUMB_PX)
    st.caption(f"Caption: #index, true class → predicted class ({pred_col} of checkpoint {a}; abstain = no prediction), "
               "r = the radius that decides the outcome (the cost-sensitive radius of a sensitive example, R1 of a "
               "non-sensitive one predicted correctly; — when there is none). Open one with the box above or "
               "with ?example=INDEX in the address.")
