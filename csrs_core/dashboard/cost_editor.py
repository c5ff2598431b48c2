"""The cost-matrix editor: a grid of cells coloured by their cost (up to GRID_LIMIT classes; above, an
editor by rows and a compact summary), presets, JSON import and export, and the τ threshold of
Rob_cs(ε, τ). Each function edits one matrix through `store`, so Explore (whose matrix is also in the
URL) and Train (a matrix of its own) share the editor with separate state; `scope` names its widgets.
Without `store`, the editor edits Explore's matrix of the case named by `scope` (common.set_cost)."""
from __future__ import annotations

import math
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st

from csrs_core.certification.cost import CostMatrix, CostMatrixError, parse_cost
from csrs_core.dashboard.common import set_cost

GRID_LIMIT = 30      # classes: up to this many the matrix is a grid of m x m cells; above, it is edited by rows
TAU_LEVELS = 101     # at most this many τ values on the slider
SUMMARY_ROWS = 1000  # rows of a large matrix's summary table at most
Store = Callable[[CostMatrix], None]

_ASSETS = Path(__file__).parent / "assets"
_GRID = st.components.v2.component("csrs_cost_grid", js=(_ASSETS / "cost_grid.js").read_text(),
                                   css=(_ASSETS / "cost_grid.css").read_text())


def _names(cost: CostMatrix) -> list[str]:
    """The matrix's class names, or the class indices as text."""
    return list(cost.class_names or [str(i) for i in range(cost.m)])


def cost_tools(scope: str, cost: CostMatrix, store: Store | None = None) -> None:
    """Presets (setting their entries to a chosen cost) and import (outside Explore's fragment: they
    rerun the page); a refused import or preset is shown as an error under them."""
    names, store = _names(cost), store or partial(set_cost, scope)
    with st.expander("Cost-matrix presets and import", expanded=False):
        _presets(scope, cost, names, store)
        _json_import(scope, cost, names, store)
    if f"import_error::{scope}" in st.session_state:
        st.error(st.session_state[f"import_error::{scope}"])


def cost_grid(scope: str, cost: CostMatrix, store: Store | None = None) -> CostMatrix:
    """The matrix's editor and its JSON export: up to GRID_LIMIT classes the grid (rows: true class,
    columns: predicted class), one browser-side element that sends the whole matrix of costs on every
    change; above, the editor by rows and a compact summary. Returns `cost`, the current matrix."""
    store = store or partial(set_cost, scope)
    with st.container(border=True):
        if cost.m <= GRID_LIMIT:
            _grid(scope, cost, store)
        else:
            _row_editor(scope, cost, store)
            _summary(cost)
        st.download_button("Export JSON", cost.to_json, mime="application/json", key=f"export::{scope}",
                           file_name=f"cost-{scope.replace('/', '_').replace(':', '_')}.json")  # JSON made on click
    return cost


def tau_slider(scope: str, cost: CostMatrix) -> float:
    """τ of Rob_cs(ε, τ), picked among the matrix's distinct costs (0 included), the only thresholds at
    which the share can change; a τ kept from an earlier matrix moves to the largest of them ≤ it,
    which gives the same share."""
    key = f"tau::{scope}"
    levels = tau_levels(cost)
    kept = float(st.session_state.get(key, 0.0))
    st.session_state[key] = max(v for v in levels if v <= kept)
    return float(st.select_slider("τ: cost threshold of Rob_cs(ε, τ), the share of sensitive examples whose "
                                  "certified worst-case cost is ≤ τ", levels, key=key, format_func=short_number))


@lru_cache(maxsize=16)
def tau_levels(cost: CostMatrix) -> list[float]:
    """0 and the matrix's distinct costs in increasing order (at most TAU_LEVELS of them, evenly spread
    over the sorted costs, 0 and the largest always in)."""
    levels = np.unique(np.r_[0.0, np.unique(cost.weights)])
    if levels.size > TAU_LEVELS:
        levels = np.unique(levels[np.linspace(0, levels.size - 1, TAU_LEVELS).round().astype(int)])
    return levels.tolist()


def short_number(value: float) -> str:
    """value in few characters ('2', '0.5', '1e-05'), never two floats in one text."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def _grid(scope: str, cost: CostMatrix, store: Store) -> None:
    names = _names(cost)
    key = f"grid::{scope}"

    def changed():  # runs before the (fragment's) rerun, so the views below see the new matrix
        weights = _checked_matrix(st.session_state[key].get("matrix"), cost.m)
        if weights is not None:
            store(CostMatrix(weights, names))

    _GRID(key=key, data={"names": names, "matrix": _numbers(cost.weights)}, on_matrix_change=changed)


def _numbers(weights: np.ndarray) -> list[list[float | int]]:
    """The costs as JSON-ready rows, whole numbers as integers (a binary matrix is sent as 0/1)."""
    return [[int(w) if w.is_integer() else w for w in row] for row in weights.tolist()]


def _checked_matrix(sent, m: int) -> np.ndarray | None:
    """The m x m costs the browser sent as floats, or None unless it is exactly that: m rows of m
    non-negative finite numbers (booleans count as 0/1); the diagonal is set to 0 (a correct
    prediction never costs)."""
    ok = (isinstance(sent, list) and len(sent) == m
          and all(isinstance(row, list) and len(row) == m and all(map(_is_cost, row)) for row in sent))
    if not ok:
        return None
    weights = np.array(sent, dtype=float)
    np.fill_diagonal(weights, 0.0)
    return weights


def _is_cost(value) -> bool:
    """True for a non-negative finite number."""
    if not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value)) and float(value) >= 0
    except OverflowError:  # an integer too large for a float
        return False


def _apply(scope: str, store: Store, make, what: str = "apply that"):
    """A widget callback: store the built matrix before the editor renders, or keep the reason it
    was refused for cost_tools to show."""
    def callback():
        try:
            store(make())
            st.session_state.pop(f"import_error::{scope}", None)
        except CostMatrixError as exc:
            st.session_state[f"import_error::{scope}"] = f"Could not {what}: {exc}"
    return callback


def _preset_cost(scope: str) -> float:
    """The cost the presets give their entries; CostMatrixError unless it is > 0."""
    cost = float(st.session_state[f"preset_weight::{scope}"])
    if not cost > 0:
        raise CostMatrixError("the cost of the entries a preset sets must be > 0 (Clear makes every mistake free)")
    return cost


def _presets(scope: str, cost: CostMatrix, names: list[str], store: Store) -> None:
    m, ss = cost.m, st.session_state
    st.number_input("Cost of the entries a preset sets", min_value=0.0, value=1.0, step=0.5, format="%g",
                    key=f"preset_weight::{scope}",
                    help="Overall, seedwise and pairwise set their costly mistakes to this cost, every other one to 0")
    c1, c2, c3, c4 = st.columns([2, 3, 3, 1])
    c1.button("Overall", key=f"preset_overall::{scope}", help="every mistake costs",
              on_click=_apply(scope, store, lambda: CostMatrix.seedwise(m, dict.fromkeys(range(m), _preset_cost(scope)),
                                                                        names)))
    seeds = c2.multiselect("Seedwise seeds", list(range(m)), format_func=names.__getitem__, key=f"seeds::{scope}")
    c2.button("Apply seedwise", key=f"preset_seed::{scope}", disabled=not seeds,
              on_click=_apply(scope, store, lambda: CostMatrix.seedwise(
                  m, dict.fromkeys(ss[f"seeds::{scope}"], _preset_cost(scope)), names)))
    seed = c3.selectbox("Pairwise seed", list(range(m)), format_func=names.__getitem__, key=f"pseed::{scope}")
    targets = c3.multiselect("targets", [i for i in range(m) if i != seed], format_func=names.__getitem__,
                             key=f"ptargets::{scope}")
    c3.button("Apply pairwise", key=f"preset_pair::{scope}", disabled=not targets,
              on_click=_apply(scope, store, lambda: CostMatrix.pairwise(
                  m, {ss[f"pseed::{scope}"]: dict.fromkeys(ss[f"ptargets::{scope}"], _preset_cost(scope))}, names)))
    c4.button("Clear", key=f"preset_clear::{scope}", on_click=_apply(scope, store, lambda: CostMatrix.empty(m, names)))


def _json_import(scope: str, cost: CostMatrix, names: list[str], store: Store) -> None:
    st.text_input("Import (JSON, with any costs, or a preset such as seedwise:3, pairwise:3>5, pairwise:1>0=10)",
                  key=f"import::{scope}",
                  help="seedwise:0,1=10: every mistake on a true class 0 costs 1, on a true class 1 costs 10. "
                       "pairwise:3>5,2;1>0=10: a true 3 predicted as 5 or 2 costs 1, a true 1 predicted as 0 costs "
                       "10. overall: every mistake costs 1; none: nothing costs. Classes are numbered from 0.")
    st.button("Import", key=f"import_btn::{scope}",
              on_click=_apply(scope, store, lambda: parse_cost(st.session_state[f"import::{scope}"], cost.m, names,
                                                               allow_files=False), "import that cost matrix"))


def _row_editor(scope: str, cost: CostMatrix, store: Store) -> None:
    """For more classes than a grid shows: pick a true class, then its costly predicted classes and
    their cost; Apply replaces that row. The widgets show the picked row of the current matrix
    whenever the row or the matrix changes."""
    names, ss, m = _names(cost), st.session_state, cost.m
    row_key, targets_key, weight_key = f"row::{scope}", f"row_targets::{scope}", f"row_weight::{scope}"
    row = int(ss.get(row_key, 0))
    if ss.get(f"row_shown::{scope}") != (row, cost):
        ss[targets_key] = cost.omega(row)
        ss[weight_key] = float(cost.row_max()[row]) or 1.0
        ss[f"row_shown::{scope}"] = (row, cost)

    def apply():
        weights = cost.weights.copy()
        weights[ss[row_key]] = 0.0
        weights[ss[row_key], ss[targets_key]] = ss[weight_key]
        store(CostMatrix(weights, names))

    st.caption(f"{m} classes: too many for a grid, so the matrix is edited one true class (row) at a time.")
    c1, c2, c3, c4 = st.columns([2, 5, 1, 1], vertical_alignment="bottom")
    c1.selectbox("True class", range(m), format_func=names.__getitem__, key=row_key)
    c2.multiselect("Its costly predicted classes", [k for k in range(m) if k != row], format_func=names.__getitem__,
                   key=targets_key)
    c3.number_input("their cost", min_value=0.0, step=0.5, format="%g", key=weight_key)
    c4.button("Apply to this row", key=f"row_apply::{scope}", on_click=apply)
    if len(set(cost.weights[row][cost.matrix[row]].tolist())) > 1:
        st.caption(f"{names[row]}'s costly mistakes have different costs; Apply gives them all the one cost above.")


def _summary(cost: CostMatrix) -> None:
    """A matrix too large for a grid in a few lines: how many rows cost, the range of the costs, its
    description, and a table of the rows that cost."""
    names = _names(cost)
    rows = np.flatnonzero(cost.matrix.any(axis=1))
    if not rows.size:
        st.caption("No mistake costs anything (`none`).")
        return
    costly = cost.weights[cost.matrix]
    text = cost.describe()
    st.caption(f"{rows.size} of {cost.m} true classes have costly mistakes ({int(cost.matrix.sum()):,} entries, "
               f"costs {costly.min():g} to {costly.max():g}): `{text if len(text) <= 300 else text[:300] + '…'}`")
    shown = rows[:SUMMARY_ROWS]
    weights = np.where(cost.matrix[shown], cost.weights[shown], np.nan)
    st.dataframe(pd.DataFrame({
        "true class": [names[j] for j in shown],
        "costly predictions": cost.matrix[shown].sum(axis=1),
        "first of them": [", ".join(names[k] for k in np.flatnonzero(cost.matrix[j])[:4]) for j in shown],
        "lowest cost": np.nanmin(weights, axis=1), "highest cost": np.nanmax(weights, axis=1)}),
        hide_index=True, height=240)
    if rows.size > SUMMARY_ROWS:
        st.caption(f"The first {SUMMARY_ROWS} of {rows.size} rows with costly mistakes are listed.")
