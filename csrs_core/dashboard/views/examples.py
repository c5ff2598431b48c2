"""Examples: the case's shipped test sample as a gallery of its examples with their certificates
(filters, sort, paging), and one example opened above it: the image, noisy copies, the votes of every
compared checkpoint, their bounds and radii, and why each certifies or not (csrs_core.certification.explain).

Stage B only (never resamples), except on request: an opened example can be decided at ε now, sampled
sequentially (csrs_core.dashboard.decide). The sample is decoded once per file version; thumbnails are
built for the current page only. `?example=INDEX` in the address opens an example."""
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
from csrs_core.certification import explain as ex
from csrs_core.certification.comparisons import difference_lines
from csrs_core.data import load_dataset
from csrs_core.dashboard import decide, figures
from csrs_core.dashboard.common import (case_listing, certificate_table, checkpoints_in_case, current_cost,
                                        first_value, load_cached_record, require_access,
                                        select_readable_case, show_question)

PAGE_SIZE = 24
CHART_COLUMNS = 3   # vote histograms side by side
GALLERY_COLUMNS = 6  # thumbnails per row, each with its Open button
THUMB_PX, LARGE_PX, NOISY_PX = 96, 256, 128   # shown sizes; pixels are enlarged by whole factors
NOISE_SEED = 0
SAMPLE_FILE = "test-sample.npz"
ABSTAIN = "abstain"

require_access()  # first, also when this view is reached some other way than app.py
st.title("Examples")


# pictures -------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=8)
def _sample(path: str, mtime_ns: int) -> dict | str:
    """The decoded sample (uint8 images [N, C, H, W], labels, indices, classes, the data set it holds),
    once per file version; the reason as a string when the file is not a sample."""
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
    """uint8 [C, H, W] -> PNG, enlarged by a whole factor with nearest neighbour (pixels stay sharp)."""
    img = Image.fromarray(pixels.transpose(1, 2, 0) if pixels.shape[0] in (3, 4) else pixels[0])
    scale = max(1, target // max(img.size))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumb(path: str, mtime_ns: int, position: int) -> bytes:
    return _png(_sample(path, mtime_ns)["images"][position], THUMB_PX)


def _noisy(pixels: np.ndarray, sigma: float, index: int, copies: int = 4) -> list[bytes]:
    """`copies` draws of x + δ, δ ~ N(0, σ²I) in pixel space [0, 1], seeded by the example, clipped for display."""
    rng = np.random.default_rng([NOISE_SEED, int(index)])
    x = pixels.astype(np.float64) / 255.0
    return [_png((np.clip(x + sigma * rng.standard_normal(x.shape), 0, 1) * 255).round().astype(np.uint8), NOISY_PX)
            for _ in range(copies)]


def _class_name(classes, k) -> str:
    return ABSTAIN if k < 0 else str(classes[k])


def _seed(key: str, value) -> None:
    """A widget's first value on this page (the Explore page's setting when it has one)."""
    if key not in st.session_state:
        st.session_state[key] = value


# records on the sample ------------------------------------------------------------------------------
def _records(case, listings, defaults, problems):
    """name -> (RecordInfo, record): the record the Explore page shows (its choice is remembered here),
    else the default chosen together; a record that vanished is named in `problems` and left out."""
    out = {}
    for name in defaults:
        valid = {r.path.name: r for r in listings[name] if r.status == "valid"}
        remembered = f"examples::record::{case}::{name}"
        if st.session_state.get(f"record::{case}::{name}") in valid:   # Explore's widget, while it lasts
            st.session_state[remembered] = st.session_state[f"record::{case}::{name}"]
        info = valid.get(st.session_state.get(remembered)) or valid.get(defaults[name])
        if info is None:
            continue
        try:
            out[name] = (info, load_cached_record(info))
        except (OSError, CSRSError) as exc:
            problems.append(f"{name}: its record {info.path.name} vanished or cannot be read ({exc}); it is left "
                            "out. Reload the page once the certification is back.")
    return out


def _match(case, name, rec, sample, problems):
    """For every example of the sample, its row in the record (-1: not in it); None when the record is
    on other data or holds none of the sample's examples."""
    if (rec.meta.get("dataset"), rec.meta.get("split")) != (sample["name"], sample["split"]):
        problems.append(f"{name}: its record is on {rec.meta.get('dataset')}/{rec.meta.get('split')}, not on the "
                        f"sample's {sample['name']}/{sample['split']}; it is left out.")
        return None
    rows = pd.Index(np.asarray(rec.indices, dtype=np.int64)).get_indexer(sample["indices"])
    on = rows >= 0
    if not on.any():
        problems.append(f"{name}: its record holds none of the sample's examples; it is left out (certify it on the "
                        f"sample: `--dataset sample:{case}/{SAMPLE_FILE}`).")
        return None
    if np.any(np.asarray(rec.labels)[rows[on]] != sample["labels"][on]):
        problems.append(f"{name}: its record's labels differ from the sample's on the same examples; it is left out.")
        return None
    return rows


# the open example -----------------------------------------------------------------------------------
def _url_example(known: set, sample) -> tuple[int | None, str | None]:
    """The example the address asks for (?example=INDEX), or None and why it cannot be opened."""
    value = st.query_params.get("example")
    if value is None:
        return None, None
    try:
        wanted = int(value.strip())
    except ValueError:
        return None, (f"The address asks for example {value!r}, which is not an example index (a whole number, "
                      "e.g. ?example=12). Pick an example below.")
    if wanted in known:
        return wanted, None
    where = ("is not in this case's test sample" if wanted not in sample["position"]
             else "has no record for every compared checkpoint")
    return None, (f"Example {wanted} {where} (shown here: {len(known)} examples, indices {min(known)} to "
                  f"{max(known)}). Pick an example below.")


def _votes(counts0, counts, classes, omega) -> pd.DataFrame:
    return pd.DataFrame([{"class": str(classes[k]), "sample": s, "votes": int(c[k]), "share": c[k] / max(c.sum(), 1),
                          "costly": "in Ω_y" if k in omega else "not in Ω_y"}
                         for s, c in zip(figures.VOTE_SAMPLES, (counts0, counts)) for k in range(len(classes))])


UCB_COLUMN = "UCB(p) at α/(2|Ω_y|)"


def _numbers(info: dict, classes, mode: str) -> dict:
    """One checkpoint's column of the example's table of bounds and radii (formatted for reading)."""
    costly = info["costly"]
    limiting = costly[costly["class"] == info["limiting"]]
    return {"top class ĉ_A": f"{classes[info['c_a']]} (n_A = {info['n_a']} of {info['n']})",
            "LCB(p_A) at α": f"{info['p_a_lower']:.4f}",
            "R1(α)": f"{info['r1']:.4f}",
            "R2": ex.format_radius(info["r2"]),
            f"deciding radius ({mode} mode)": ex.format_radius(info["radius"]),
            "costly class limiting R2": (f"{limiting['name'].iloc[0]} ({limiting['votes'].iloc[0]} votes)"
                                         if len(limiting) else "—"),
            "n needed (estimate)": "—" if info["needed_n"] is None else f"{info['needed_n']:,}"}


def _costly_table(costly: pd.DataFrame) -> None:
    """The classes of Ω_y for every compared checkpoint, most votes first: votes, Clopper–Pearson upper
    bound, r_k."""
    number = st.column_config.NumberColumn
    st.dataframe(costly.rename(columns={"name": "costly class", "ucb": UCB_COLUMN})
                 [["checkpoint", "costly class", "votes", UCB_COLUMN, "r_k"]],
                 hide_index=True, key="examples::costly", height=min(36 * (len(costly) + 1) + 2, 320),
                 column_config={UCB_COLUMN: number(format="%.4f", help="Clopper–Pearson upper bound of the class's "
                                                   "probability under noise"),
                                "r_k": number(format="%.4f", help="σ/2·(Φ⁻¹(LCB(p_A) at α/2) − Φ⁻¹(UCB)): "
                                              "within this radius the class cannot become the prediction "
                                              "(none for ĉ_A)")})


def _example_view(index: int, sample, picked, records, matches, metas, cost, classes, alpha, mode, eps, folder):
    """One example: the image, noisy copies, and per compared checkpoint its votes, bounds, radii and reasons."""
    pos = int(sample["position"].get_loc(index))
    label = int(sample["labels"][pos])
    pixels = sample["images"][pos]
    omega = cost.omega(label)
    st.subheader(f"Example {index}: true class {classes[label]}"
                 + (f" (sensitive: Ω_y = {{{', '.join(classes[k] for k in omega)}}})" if omega
                    else " (not sensitive: no costly class)"))
    left, right = st.columns([1, 2])
    left.image(_png(pixels, LARGE_PX), output_format="PNG",
               caption=f"example {index} ({pixels.shape[-1]}×{pixels.shape[-2]} pixels, enlarged)")
    for sigma in sorted({float(records[n].meta["sigma"]) for n in picked}):
        right.image(_noisy(pixels, sigma, index), output_format="PNG",
                    caption=[f"x + δ, σ = {sigma} (draw {i + 1})" for i in range(4)])
    right.caption(f"Noisy copies x + δ, δ ~ N(0, σ²I) in pixel space [0, 1] at each record's σ, drawn here with a "
                  f"fixed seed ({NOISE_SEED}, example {index}) to illustrate (not the certification's draws); clipped "
                  "to [0, 1] for display only: the classifier sees the unclipped noise.")
    infos, slots = {}, st.columns(min(len(picked), CHART_COLUMNS))
    for i, name in enumerate(picked):
        rec, row, sigma = records[name], matches[name][pos], float(records[name].meta["sigma"])
        info = infos[name] = ex.explain(rec.counts0[row], rec.counts[row], label, cost, sigma, alpha, mode, eps,
                                        classes, rec.bounds)
        with slots[i % len(slots)]:
            st.markdown(f"**{name}** ({metas[name]['method']}, σ = {sigma}, n0 = {info['n0']}, n = {info['n']}): "
                        f"outcome at ε = {eps}: **{info['outcome']}**\n"
                        + "\n".join(f"- {reason}" for reason in info["reasons"]))
            st.vega_lite_chart(spec=figures.vote_histogram(_votes(rec.counts0[row], rec.counts[row], classes,
                                                                  set(info["omega"])), classes),
                               key=f"fig_votes::{name}")
    st.dataframe(pd.DataFrame({name: _numbers(info, classes, mode) for name, info in infos.items()}),
                 key="examples::numbers")
    _decide_now(index, pixels, label, picked, folder, cost, alpha, eps)
    costly = pd.concat([info["costly"].sort_values(["votes", "class"], ascending=[False, True]).assign(checkpoint=name)
                        for name, info in infos.items()], ignore_index=True)
    if len(costly):
        _costly_table(costly)
    rows = [{"checkpoint": name, "method": metas[name]["method"], "index": index, "true_class": classes[label],
             "sensitive": info["sensitive"], "top_class": classes[info["c_a"]], "n_a": info["n_a"], "n": info["n"],
             "n0": info["n0"], "sigma": float(records[name].meta["sigma"]), "alpha": alpha, "mode": mode, "eps": eps,
             "p_a_lower": info["p_a_lower"], "r1": info["r1"], "r2": info["r2"], "radius": info["radius"],
             "outcome": info["outcome"], "needed_n": info["needed_n"],
             "costly_ucbs": "; ".join(f"{r['name']}: {r['votes']} votes, UCB {r['ucb']:.4f}"
                                      for _, r in info["costly"].iterrows()),
             "reasons": " ".join(info["reasons"])} for name, info in infos.items()]
    st.download_button("Download this example's table (CSV, every compared checkpoint)",
                       ex.for_download(pd.DataFrame(rows)).to_csv(index=False), f"csrs-example-{index}.csv", "text/csv",
                       key="examples::download_one")


def _decide_now(index: int, pixels, label: int, picked, folder: Path, cost, alpha: float, eps: float) -> None:
    """Buttons that decide this example at ε with each compared checkpoint, sampling now (sequentially)."""
    sensitive = bool(cost.matrix[label].any())
    with st.expander(f"Decide this example at ε = {eps:g} now, with as few noisy copies as it takes"):
        st.caption(f"Samples this example's smoothed classifier until its {'cost-sensitive' if sensitive else 'standard'}"
                   f" radius is certified above ε or cannot be within n = {decide.CAP:,} copies (confidence sequences: "
                   f"valid at any stop, with probability ≥ 1 − α = {1 - alpha:g}; the noise seed is 0, as in the "
                   "records). Most examples are decided within a few thousand copies, in a second or two.")
        for name in picked:
            if st.button(f"Decide with {name}", key=f"examples::decide::{name}"):
                with st.spinner(f"Sampling {name}…"):
                    got = decide.decide(folder / f"{name}.pt", pixels, label, index, cost, eps, alpha)
                verdict = "**certified**" if got["certified"] else "**not certified**"
                why = " (its top class alone decides: it is costly, or not the true class)" if not got["n_used"] else ""
                st.markdown(f"{name}: {verdict} at ε = {eps:g}: radius {ex.format_radius(got['radius'])} after "
                            f"{got['n_used']:,} estimation copies{why} ({got['seconds']:.1f} s, "
                            f"{got['plan']['device']}, {got['plan']['precision']}).")


# the page -------------------------------------------------------------------------------------------
root, case, classes = select_readable_case()
first = show_question(root, case, classes)
sample_path = root / case / SAMPLE_FILE
if not sample_path.is_file():
    st.info(f"This case has no test sample ({SAMPLE_FILE} beside its checkpoints), so there are no images to show. "
            f"Certify on a shipped sample first: `csrs certify --checkpoint {case}/NAME.pt --dataset DATA "
            f"--save-sample {case}/{SAMPLE_FILE} ...` writes it, then certify the other checkpoints with "
            f"`--dataset sample:{case}/{SAMPLE_FILE}`.")
    st.stop()
spath, smtime = str(sample_path), sample_path.stat().st_mtime_ns
sample = _sample(spath, smtime)
if isinstance(sample, str):
    st.error(sample)
    st.stop()

metas = {name: meta for name, meta in checkpoints_in_case(root, case).items() if isinstance(meta, dict)}
listings, defaults, _ = case_listing(root, case, list(metas))
problems = []
loaded = _records(case, listings, defaults, problems)
matches = {name: rows for name, (info, rec) in loaded.items()
           if (rows := _match(case, name, rec, sample, problems)) is not None}
for line in problems:
    st.warning(line)
if not matches:
    st.info("No certification of this case is on the examples of its test sample: certify on the sample first "
            f"(`csrs certify --checkpoint {case}/NAME.pt --dataset sample:{case}/{SAMPLE_FILE} ...`).")
    st.stop()
available = list(matches)
records = {name: loaded[name][1] for name in available}

# settings (seeded from the Explore page's when it has them)
_seed(f"examples::picked::{case}",
      [n for n in st.session_state.get(f"picked::{case}", available) if n in available] or available)
_seed(f"examples::eps::{case}", float(st.session_state.get(
    f"eps::{case}", first.eps if first.eps is not None else records[available[0]].meta["sigma"])))
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
for setting, line in difference_lines({name: loaded[name][0] for name in picked}):
    (st.info if setting == "sigma" else st.warning)(line)
cost = current_cost(case, classes)
st.caption(f"Cost matrix: {cost.describe()} (edit it cell by cell on Explore & compare). **Outcome at ε** — "
           f"{ex.OUTCOME_RULE}")

# one table per compared checkpoint, on the examples in the sample and in every compared record
positions = np.flatnonzero(np.logical_and.reduce([matches[n] >= 0 for n in picked]))
if not len(positions):
    st.info("The compared checkpoints' records share no example of the sample: compare fewer checkpoints, or certify "
            f"them on the same examples (`--dataset sample:{case}/{SAMPLE_FILE}`).")
    st.stop()
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

with st.container(border=True):
    g1, g2, g3 = st.columns(3)
    a = g1.selectbox("Checkpoint A (gallery, filters, sort)", picked, key=f"examples::a::{case}",
                     **first_value(f"examples::a::{case}", picked, first.focus))
    b = g2.selectbox("Checkpoint B (discordance)", picked, key=f"examples::b::{case}",
                     **first_value(f"examples::b::{case}", picked, first.baseline if first.baseline != a
                                   else picked[min(1, len(picked) - 1)]))
    basis = g3.radio("Predicted class", ["standard (pred_std)", "cost-sensitive (pred)"], horizontal=True,
                     key="examples::basis", help="pred_std: ĉ_A where LCB(p_A) at α > 1/2 (the standard "
                     "certificate); pred: ĉ_A where the mode's cost-sensitive radius is > 0, so it abstains on every "
                     "non-sensitive example (no cost-sensitive certificate there). Otherwise: abstain.")
    f1, f2, f3, f4 = st.columns(4)
    true_filter = f1.multiselect("True class", classes, key=f"examples::true::{case}", placeholder="all")
    pred_filter = f2.multiselect("Predicted class", classes + [ABSTAIN], key=f"examples::pred::{case}",
                                 placeholder="all")
    sens_filter = f3.selectbox("Sensitive", ["all", "sensitive", "not sensitive"], key="examples::sensitive")
    outcome_filter = f4.multiselect("Outcome at ε (checkpoint A)", list(ex.OUTCOMES), key="examples::outcome",
                                    placeholder="all")
    s1, s2, s3 = st.columns(3)
    only_discordant = s1.checkbox("Only examples where A and B differ at ε", key=f"examples::discordant::{case}",
                                  disabled=a == b, help="Their outcomes at ε differ (e.g. certified for A, "
                                                        "abstained for B). Pick two different checkpoints.")
    sort_by = s2.selectbox("Sort by (checkpoint A)", ["radius", "LCB(p_A)", "index"], key="examples::sort")
    descending = s3.toggle("Largest first", value=False, key="examples::descending")

ta = tables[a]
pred_col = "pred_std" if basis.startswith("standard") else "pred"
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
sort_col = {"radius": "radius", "LCB(p_A)": "p_a_lower", "index": "index"}[sort_by]
shown = ta[keep].sort_values([sort_col, "index"], ascending=[not descending, True], kind="stable")
order = [int(i) for i in shown["index"]]

# the example to open: a new ?example= in the address, else the select box (which writes the address)
open_key = f"examples::open::{case}"
known = set(int(i) for i in ta["index"])
url_value = st.query_params.get("example")
wanted, url_problem = _url_example(known, sample)
if wanted is not None and st.session_state.get("examples::_url") != url_value:
    st.session_state[open_key] = wanted
st.session_state["examples::_url"] = url_value
if url_problem:
    st.warning(url_problem)
if st.session_state.get(open_key) not in known:
    st.session_state[open_key] = None
current = st.session_state[open_key]
options = [None] + ([current] if current is not None and current not in set(order) else []) + order
true_of = dict(zip(ta["index"].tolist(), ta.label.tolist()))
opened = st.selectbox(f"Open an example ({len(order)} match the filters)", options, key=open_key,
                      format_func=lambda i: "—" if i is None else f"{i}: {classes[true_of[i]]}")
if opened is not None and url_value != str(opened):
    st.query_params["example"] = st.session_state["examples::_url"] = str(opened)
elif opened is None and url_value is not None and not url_problem:
    del st.query_params["example"]

if opened is not None:
    with st.container(border=True):
        _example_view(opened, sample, picked, records, matches, metas, cost, classes, alpha, mode, eps, root / case)

# the gallery
st.subheader(f"Gallery: {len(order)} of {len(ta)} examples (checkpoint {a}, {mode} mode, ε = {eps})")
pages = max(1, math.ceil(len(order) / PAGE_SIZE))
page_key = f"examples::page::{case}"
signature = (a, b, basis, tuple(true_filter), tuple(pred_filter), sens_filter, tuple(outcome_filter),
             only_discordant, sort_by, descending, eps, alpha, mode, cost.describe(), tuple(picked))
if st.session_state.get("examples::_signature") != signature or st.session_state.get(page_key, 1) > pages:
    st.session_state[page_key] = 1               # another selection starts on its first page
st.session_state["examples::_signature"] = signature
p1, p2 = st.columns([1, 3])
page = p1.number_input(f"Page (of {pages}; {PAGE_SIZE} per page)", min_value=1, max_value=pages, step=1,
                       key=page_key)


def _filtered_csv() -> str:
    """Built only when the button is clicked (the full table of the shipped case is about 1 MB)."""
    long = pd.concat([t[t["index"].isin(order)].assign(checkpoint=n, method=metas[n]["method"],
                                                      sigma=records[n].meta["sigma"], n=records[n].meta["n"])
                      for n, t in tables.items()], ignore_index=True)
    long.insert(2, "true_class", [classes[k] for k in long.label])
    return ex.for_download(long).to_csv(index=False)


p2.download_button("Download the filtered examples (CSV, every compared checkpoint, one row per example and "
                   "checkpoint)", _filtered_csv, "csrs-examples.csv", "text/csv", on_click="ignore",
                   key="examples::download_all")
if not order:
    st.info("No example matches these filters.")
else:
    part = shown.iloc[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    cells = st.columns(GALLERY_COLUMNS)
    for k, (i, y, p, r) in enumerate(zip(part["index"], part.label, part[pred_col], part.radius)):
        with cells[k % GALLERY_COLUMNS]:
            st.image(_thumb(spath, smtime, int(sample["position"].get_loc(i))),
                     caption=f"#{i} {classes[y]} → {_class_name(classes, p)}, r = {ex.format_radius(r)}",
                     width=THUMB_PX, output_format="PNG")
            st.button("Open", key=f"examples::thumb::{i}", help=f"open example #{i} above the gallery",
                      on_click=st.session_state.__setitem__, args=(open_key, int(i)))
    st.caption(f"#index true class → predicted class ({pred_col} of checkpoint {a}), r = the radius that decides "
               "the outcome (the cost-sensitive radius of a sensitive example, R1 of a non-sensitive one whose "
               "standard certificate is correct; — when there is none). Open an example with its button, the box "
               "above, or ?example=INDEX in the address.")
