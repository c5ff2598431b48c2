"""Shared dashboard state: folders, the selected case, cached records and the cost matrix."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import streamlit as st

from csrs_core.cache import cert_dir, load_record, main_record_path
from csrs_core.certify import certify_from_counts
from csrs_core.checkpoints import CheckpointError, list_checkpoints, read_meta
from csrs_core.cost import CostMatrix, CostMatrixError

REPO = Path(__file__).resolve().parents[1]


def checkpoint_root() -> Path:
    return Path(st.session_state.get("checkpoint_root") or os.environ.get("CSRS_CHECKPOINTS")
                or REPO / "checkpoints").expanduser().resolve()


def data_root() -> Path:
    return Path(st.session_state.get("data_root") or os.environ.get("CSRS_DATA") or REPO / "data").expanduser().resolve()


def inside(path: Path, *roots: Path) -> bool:
    """True when `path` resolves inside one of the roots (no escaping through .. or links)."""
    p = Path(path).expanduser().resolve()
    return any(p == r or r in p.parents for r in roots)


def cases(root: Path) -> list[str]:
    """Sub-folders of the checkpoint root holding checkpoints ('.' for files at the top)."""
    found = sorted({str(p.parent.relative_to(root)) for p in list_checkpoints(root)
                    if ".jobs" not in p.parts})
    return found


@st.cache_data(show_spinner=False)
def _meta(path: str, mtime: float) -> dict | str:
    try:
        return read_meta(path)
    except CheckpointError as exc:
        return str(exc)


def checkpoints_in_case(root: Path, case: str) -> dict[str, dict | str]:
    """name -> metadata (or the error message of an unreadable file)."""
    folder = root / case
    return {p.stem: _meta(str(p), p.stat().st_mtime) for p in sorted(folder.glob("*.pt"))}


@st.cache_resource(show_spinner=False, max_entries=64)
def _record(path: str, mtime: float):
    return load_record(path)


@st.cache_data(show_spinner=False, max_entries=256)
def _main_record_path(checkpoint: str, certs_mtime: float) -> str | None:
    path = main_record_path(checkpoint)
    return str(path) if path else None


def best_record(checkpoint: Path):
    """The checkpoint's main cached certification (see csrs_core.cache.main_record_path), or None;
    the cache folder is re-read only when its contents change (its modification time)."""
    certs = cert_dir(checkpoint)
    path = _main_record_path(str(checkpoint), certs.stat().st_mtime if certs.is_dir() else 0.0)
    return _record(path, Path(path).stat().st_mtime) if path else None


def certificate_table(record, cost: CostMatrix, alpha: float, mode: str):
    """Stage B only (never resamples), memoised per record, matrix, alpha and mode."""
    cache = st.session_state.setdefault("_tables", {})
    key = (id(record), cost.matrix.tobytes(), alpha, mode)
    if key not in cache:
        if len(cache) > 256:
            cache.clear()
        cache[key] = certify_from_counts(record.counts0, record.counts, record.labels, cost,
                                         sigma=record.meta["sigma"], alpha=alpha, mode=mode)
    return cache[key]


# cost matrix ------------------------------------------------------------------------------
def encode_cost(cost: CostMatrix) -> str:
    """Compact URL form: rows 'j>k.k.k' joined by '_' ('-' for an empty matrix)."""
    rows = [f"{j}>{'.'.join(map(str, cost.omega(j)))}" for j in range(cost.m) if cost.omega(j)]
    return "_".join(rows) or "-"


def decode_cost(text: str, m: int, names) -> CostMatrix:
    arr = np.zeros((m, m))
    if text != "-":
        for row in text.split("_"):
            seed, targets = row.split(">")
            for t in targets.split("."):
                arr[int(seed), int(t)] = 1
    return CostMatrix(arr, names)


def current_cost(case: str, classes: list[str]) -> CostMatrix:
    """The case's matrix from session state, else from the URL, else a sensible default."""
    key = f"cost::{case}"
    if key not in st.session_state:
        url = st.query_params.get("cost")
        cost = None
        if url and st.query_params.get("case") == case:
            try:
                cost = decode_cost(url, len(classes), classes)
            except (ValueError, IndexError, CostMatrixError):
                st.warning(f"The cost matrix in the link ({url!r}) is not valid for this case; using the default.")
        if cost is None:
            default_seed = 3 if len(classes) == 10 else len(classes) - 1
            cost = (CostMatrix.seedwise(len(classes), [default_seed], classes) if len(classes) > 2
                    else CostMatrix.pairwise(2, {1: [0]}, classes))
        set_cost(case, cost)
    return st.session_state[key]


def cell_key(case: str, j: int, k: int) -> str:
    return f"cell::{case}::{j}::{k}"


def set_cost(case: str, cost: CostMatrix, sync_grid: bool = False) -> None:
    """Make `cost` current (session and URL); sync_grid also sets the grid's checkboxes, which is
    allowed only before they render (from a widget callback)."""
    st.session_state[f"cost::{case}"] = cost
    if sync_grid:
        for j in range(cost.m):
            for k in range(cost.m):
                st.session_state[cell_key(case, j, k)] = bool(cost.matrix[j, k])
    st.query_params["case"] = case
    st.query_params["cost"] = encode_cost(cost)


def select_case() -> tuple[Path, str | None]:
    """Sidebar: checkpoint folder, data folder and the case (a sub-folder of checkpoints)."""
    root_text = st.sidebar.text_input("Checkpoint folder", value=str(checkpoint_root()),
                                      help="Also settable with CSRS_CHECKPOINTS")
    if root_text != str(checkpoint_root()):
        st.session_state["checkpoint_root"] = root_text
    st.session_state["data_root"] = st.sidebar.text_input("Data folder", value=str(data_root()),
                                                          help="Where data sets live; also CSRS_DATA")
    root = checkpoint_root()
    if not root.is_dir():
        st.error(f"Checkpoint folder {root} does not exist. Create it or pick another folder in the sidebar.")
        return root, None
    options = cases(root)
    if not options:
        st.info(f"No checkpoints in {root} yet: train one (Train page) or upload one (Checkpoints page).")
        return root, None
    wanted = st.query_params.get("case")
    index = options.index(wanted) if wanted in options else 0
    case = st.sidebar.selectbox("Case", options, index=index, key="case",
                                help="A sub-folder of the checkpoint folder, e.g. cifar10 or ham10000")
    if st.query_params.get("case") != case:
        st.query_params["case"] = case
    return root, case


def case_classes(root: Path, case: str) -> list[str] | None:
    for meta in checkpoints_in_case(root, case).values():
        if isinstance(meta, dict):
            return meta["classes"]
    return None
