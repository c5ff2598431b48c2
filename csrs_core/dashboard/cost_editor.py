"""The cost-matrix editor: a grid of clickable cells (in the page's fragment), presets and JSON import/export."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from csrs_core.certification.cost import CostMatrix, CostMatrixError, parse_cost
from csrs_core.dashboard.common import set_cost

_ASSETS = Path(__file__).parent / "assets"
_GRID = st.components.v2.component("csrs_cost_grid", js=(_ASSETS / "cost_grid.js").read_text(),
                                   css=(_ASSETS / "cost_grid.css").read_text())


def cost_tools(case: str, cost: CostMatrix) -> None:
    """Presets and JSON import (outside the grid's fragment: they rerun the page)."""
    names = cost.class_names or [str(i) for i in range(cost.m)]
    with st.expander("Cost-matrix presets and import", expanded=False):
        _presets(case, cost, names)
        _json_import(case, cost, names)
    if f"import_error::{case}" in st.session_state:
        st.error(st.session_state[f"import_error::{case}"])


def cost_grid(case: str, cost: CostMatrix) -> CostMatrix:
    """The grid of cells (rows: true class, columns: predicted class), one browser-side element that
    sends the whole matrix on a click; returns the current matrix, also kept in session state and the URL."""
    names = cost.class_names or [str(i) for i in range(cost.m)]
    key = f"grid::{case}"

    def clicked():  # runs before the fragment reruns, so the views below see the new matrix
        matrix = _checked_matrix(st.session_state[key].get("matrix"), cost.m)
        if matrix is not None:
            set_cost(case, CostMatrix(matrix, names))

    with st.container(border=True):
        _GRID(key=key, data={"names": list(names), "matrix": cost.matrix.astype(int).tolist()},
              on_matrix_change=clicked)
        st.download_button("Export JSON", cost.to_json(), file_name=f"cost-{case.replace('/', '_')}.json",
                           mime="application/json", key=f"export::{case}")
    return cost


def _checked_matrix(sent, m: int) -> np.ndarray | None:
    """The m x m matrix the browser sent, or None unless it is exactly that: rows of 0/1 (or
    booleans); the diagonal never costs."""
    ok = (isinstance(sent, list) and len(sent) == m
          and all(isinstance(row, list) and len(row) == m and all(v in (0, 1) for v in row) for row in sent))
    if not ok:
        return None
    matrix = np.array(sent, dtype=bool)
    np.fill_diagonal(matrix, False)
    return matrix


def _apply(case, make):
    """A widget callback: make the built matrix current before the grid renders."""
    def callback():
        try:
            set_cost(case, make())
            st.session_state.pop(f"import_error::{case}", None)
        except CostMatrixError as exc:
            st.session_state[f"import_error::{case}"] = f"Could not import that cost matrix: {exc}"
    return callback


def _presets(case, cost, names):
    m, ss = cost.m, st.session_state
    c1, c2, c3, c4 = st.columns([2, 3, 3, 1])
    c1.button("Overall", key=f"preset_overall::{case}", help="every mistake costs",
              on_click=_apply(case, lambda: CostMatrix.overall(m, names)))
    seeds = c2.multiselect("Seedwise seeds", list(range(m)), format_func=lambda i: names[i], key=f"seeds::{case}")
    c2.button("Apply seedwise", key=f"preset_seed::{case}", disabled=not seeds,
              on_click=_apply(case, lambda: CostMatrix.seedwise(m, ss[f"seeds::{case}"], names)))
    seed = c3.selectbox("Pairwise seed", list(range(m)), format_func=lambda i: names[i], key=f"pseed::{case}")
    targets = c3.multiselect("targets", [i for i in range(m) if i != seed], format_func=lambda i: names[i],
                             key=f"ptargets::{case}")
    c3.button("Apply pairwise", key=f"preset_pair::{case}", disabled=not targets,
              on_click=_apply(case, lambda: CostMatrix.pairwise(m, {ss[f"pseed::{case}"]: ss[f"ptargets::{case}"]}, names)))
    c4.button("Clear", key=f"preset_clear::{case}", on_click=_apply(case, lambda: CostMatrix.empty(m, names)))


def _json_import(case, cost, names):
    st.text_input("Import (JSON or preset such as seedwise:3, pairwise:3>5)", key=f"import::{case}")
    st.button("Import", key=f"import_btn::{case}",
              on_click=_apply(case, lambda: parse_cost(st.session_state[f"import::{case}"], cost.m, names,
                                                       allow_files=False)))
