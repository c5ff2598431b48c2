"""Shared dashboard state: folders, the selected case, cached records and the cost matrix."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from csrs_core.cases import CASE_FILE, CaseDefaults, case_defaults
from csrs_core.dashboard.launch import LOOPBACK
from csrs_core.sampling.store import CorruptRecord, cert_dir, load_record, select_for_comparison
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.models.checkpoints import CheckpointError, list_checkpoints, read_meta
from csrs_core.certification.cost import CostMatrix, CostMatrixError, parse_cost

LOOPBACK_HOSTS = LOOPBACK + ("[::1]",)


def shipped_root() -> Path:
    """The shipped checkpoints, records and test samples (the demo): inside the installed package
    (a wheel maps `checkpoints/` to `csrs_core/shipped/`), or `checkpoints/` of a source checkout."""
    package = Path(__file__).resolve().parents[1]
    inside_package = package / "shipped"
    return inside_package if inside_package.is_dir() else package.parent / "checkpoints"


def checkpoint_root() -> Path:
    """Fixed when the dashboard starts: $CSRS_CHECKPOINTS, else ./checkpoints of the folder it was
    started in when that exists, else the shipped demo (read-only); the UI shows it, never changes it."""
    chosen = os.environ.get("CSRS_CHECKPOINTS")
    if chosen:
        return Path(chosen).expanduser().resolve()
    here = Path.cwd() / "checkpoints"
    return here.resolve() if here.is_dir() else shipped_root()


def is_demo(root: Path) -> bool:
    """True when the dashboard shows the shipped demo, which it never writes to."""
    return root == shipped_root() and not os.environ.get("CSRS_CHECKPOINTS") \
        and not (Path.cwd() / "checkpoints").is_dir()


def refuse_writes_to_demo(root: Path) -> None:
    """Stop a page that writes (jobs, uploads) when the dashboard shows the read-only shipped demo."""
    if is_demo(root):
        st.info("This page writes into the checkpoint folder, and the shipped demo is read-only. Start "
                "`csrs dashboard --checkpoints DIR --data DIR` (or start it in a folder with `checkpoints/` and "
                "`data/` sub-folders) to certify and train your own models.")
        st.stop()


def write_failure(exc: OSError) -> str:
    """A message for a failed write under the checkpoint folder: which file, why, what to do."""
    where = Path(exc.filename).name if exc.filename else "the checkpoint folder"
    return (f"Could not write {where} ({exc.strerror or exc}): make the checkpoint folder writable or free some "
            "disk space, then start again. Nothing was lost.")


def data_root() -> Path:
    """Fixed when the dashboard starts: $CSRS_DATA, else ./data of the folder it was started in."""
    return Path(os.environ.get("CSRS_DATA") or Path.cwd() / "data").expanduser().resolve()


def _host_name(host: str | None) -> str:
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def refusal(host: str | None, ip: str | None, exposed: str | None) -> str | None:
    """Why a request with this Host header and client address gets no app, or None. Unless the
    dashboard was started exposed on purpose (`csrs dashboard --address ...` sets CSRS_EXPOSED),
    only clients on this machine that name it by a loopback name are served: a page elsewhere
    reaching the port through DNS rebinding sends its own host name and is refused, and so is a
    remote client of a server that listens on every interface because it was started without
    the project's settings."""
    if exposed:
        return None
    name = _host_name(host)
    if name and name not in LOOPBACK_HOSTS:
        return (f"Refused: this dashboard answers only to localhost / 127.0.0.1, not to host {name!r}. "
                "To serve other machines on purpose, start it with `csrs dashboard --address ADDRESS`.")
    if ip and ip not in ("::1", "localhost") and not ip.startswith("127."):
        return ("Refused: this dashboard serves this machine only. To serve other machines on purpose, "
                "start it with `csrs dashboard --address ADDRESS`.")
    return None


def require_access() -> None:
    """Stop the script, showing only why, unless refusal() lets the current request through; a
    visible warning when the dashboard is exposed. The entry point and every view call it first."""
    exposed = os.environ.get("CSRS_EXPOSED")
    if exposed:
        st.sidebar.warning(f"This dashboard listens on {exposed}: anyone who can reach it can use it.")
    problem = refusal(st.context.headers.get("Host"), st.context.ip_address, exposed)
    if problem:
        st.error(problem)
        st.stop()


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


def _stamp(path: Path) -> tuple:
    """Changes when the checkpoint or its record folder changes (a record added, removed, replaced)."""
    certs = cert_dir(path)
    return (path.stat().st_mtime_ns if path.exists() else 0, certs.stat().st_mtime_ns if certs.is_dir() else 0)


@st.cache_data(show_spinner=False, max_entries=64)
def _listing(checkpoints: tuple, stamps: tuple):
    chosen, notes, listings, differences = select_for_comparison([Path(c) for c in checkpoints])
    return ({str(c): infos for c, infos in listings.items()},
            {str(c): (info.path.name, same) for c, (info, same) in chosen.items()}, notes + differences)


def case_listing(root: Path, case: str, names) -> tuple[dict, dict, list[str]]:
    """For the case's checkpoints: {name: [RecordInfo]} (valid, stale and corrupt records),
    {name: default record file name}, chosen together by the core's one comparison policy
    (csrs_core.certification.comparisons.choose_together, through sampling.store.select_for_comparison), and the notes on
    what is left out followed by the settings in which the default records differ; the folders are
    re-read only when they change. A view names the differences of the records it actually shows
    with comparison.difference_lines (the user may pick other records)."""
    paths = tuple(str(root / case / f"{n}.pt") for n in names)
    listings, chosen, notes = _listing(paths, tuple(_stamp(Path(p)) for p in paths))
    return ({n: listings.get(p, []) for n, p in zip(names, paths)},
            {n: chosen[p][0] for n, p in zip(names, paths) if p in chosen}, notes)


def load_cached_record(info):
    """The record of `info`, read once per file version; a record that fails its digest stops the page with
    a message (pick another record, or certify again)."""
    try:
        return _record(str(info.path), info.path.stat().st_mtime)
    except CorruptRecord as exc:
        st.error(f"Record {info.path.name} is corrupt ({exc}): pick another record for this checkpoint, or "
                 "certify it again (a new run replaces it).")
        st.stop()


def certificate_table(record, cost: CostMatrix, alpha: float, mode: str):
    """Stage B only (never resamples), memoised per record, matrix, alpha and mode."""
    cache = st.session_state.setdefault("_tables", {})
    key = (str(record.path), record.meta["key"], cost.matrix.tobytes(), alpha, mode)
    if key not in cache:
        if len(cache) > 256:
            cache.clear()
        if mode == "paper" and not record.bounds.fixed_n:
            st.error(f"Paper mode does not apply to {record.meta.get('checkpoint')}'s sequential record (its bounds are "
                     "confidence sequences, read in sound mode only): choose sound mode, or another record.")
            st.stop()
        cache[key] = certify_from_counts(record.counts0, record.counts, record.labels, cost,
                                         sigma=record.meta["sigma"], alpha=alpha, mode=mode, bounds=record.bounds)
    return cache[key]


def opening(root: Path, case: str, classes: list[str]) -> CaseDefaults:
    """What the case opens on (csrs_core.cases.case_defaults: its case.json, else defaults), read once per
    version of its folder and of that file."""
    folder = root / case
    file = folder / CASE_FILE
    stamp = (folder.stat().st_mtime_ns, file.stat().st_mtime_ns if file.is_file() else 0)
    return _opening(str(folder), tuple(classes), stamp)


@st.cache_data(show_spinner=False, max_entries=32)
def _opening(folder: str, classes: tuple, stamp: tuple) -> CaseDefaults:
    methods = {name: meta["method"] for name, meta in checkpoints_in_case(Path(folder).parent, Path(folder).name)
               .items() if isinstance(meta, dict)}
    return case_defaults(folder, list(classes), methods)


def first_value(key: str, options: list, default, many: bool = False) -> dict:
    """A select widget's keyword arguments for its first value: none when the session already holds one
    that fits the options (set by the user, or by a link from another page: Streamlit warns when both are
    given), else `default` (a list of options for a multiselect with `many`)."""
    held = st.session_state.get(key)
    fits = held is not None and (all(v in options for v in held) if many else held in options)
    if fits:
        return {}
    st.session_state.pop(key, None)
    if many:
        return {"default": [v for v in default if v in options]}
    return {"index": options.index(default) if default in options else 0}


def show_question(root: Path, case: str, classes: list[str]) -> CaseDefaults:
    """The case's question under the page title, and what its case.json could not set; its defaults."""
    first = opening(root, case, classes)
    if first.question:
        st.markdown(f"**{case}:** {first.question}")
    for note in first.notes:
        st.caption(f"ⓘ {note}")
    return first


# cost matrix ------------------------------------------------------------------------------
def current_cost(case: str, classes: list[str]) -> CostMatrix:
    """The case's matrix from session state, else from the URL, else the case's own (its case.json,
    csrs_core.cases)."""
    key = f"cost::{case}"
    if key not in st.session_state:
        url = st.query_params.get("cost")
        cost = None
        if url and st.query_params.get("case") == case:
            try:
                cost = parse_cost(url, len(classes), classes, allow_files=False)
            except CostMatrixError:
                st.warning(f"The cost matrix in the link ({url!r}) is not valid for this case; using the default.")
        if cost is None:
            cost = opening(checkpoint_root(), case, classes).cost
        set_cost(case, cost)
    return st.session_state[key]


def set_cost(case: str, cost: CostMatrix) -> None:
    """Make `cost` current (session and URL, as its describe() text, which parse_cost reads back
    exactly: 'overall' for every mistake of a 1,000-class matrix); the grid shows it at its next render."""
    st.session_state[f"cost::{case}"] = cost
    if st.query_params.get("case") != case:  # each change of the URL is a message to the browser
        st.query_params["case"] = case
    st.query_params["cost"] = cost.describe()


def training_cost(dataset: str, classes: list[str]) -> CostMatrix:
    """The Train page's matrix for `dataset`: its own state, never Explore's and never in the URL;
    no mistake costs until it is edited."""
    return st.session_state.setdefault(f"train_cost::{dataset}", CostMatrix.empty(len(classes), classes))


def set_training_cost(dataset: str, cost: CostMatrix) -> None:
    """Make `cost` the Train page's matrix for `dataset`."""
    st.session_state[f"train_cost::{dataset}"] = cost


def select_case() -> tuple[Path, str | None]:
    """Sidebar: the folders fixed at launch (read-only) and the case (a sub-folder of checkpoints)."""
    root = checkpoint_root()
    if is_demo(root):
        st.sidebar.info("Showing the shipped demo results (read-only). To use your own checkpoints and data, "
                        "start `csrs dashboard --checkpoints DIR --data DIR`, or start it in a folder that has "
                        "`checkpoints/` and `data/` sub-folders.")
    else:
        st.sidebar.caption(f"Checkpoints: `{root}`  \nData: `{data_root()}`  \n(fixed when the dashboard "
                           "starts: `csrs dashboard --checkpoints DIR --data DIR`)")
    if not root.is_dir():
        st.error(f"Checkpoint folder {root} does not exist. Create it, or start the dashboard with "
                 "`csrs dashboard --checkpoints DIR`.")
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


def select_readable_case() -> tuple[Path, str, list[str]]:
    """select_case() for pages that need a case with a readable checkpoint: (root, case, its class
    names); otherwise the page says why and stops."""
    root, case = select_case()
    if case is None:
        st.stop()
    classes = case_classes(root, case)
    if classes is None:
        st.error(f"No readable checkpoint in {root / case}.")
        st.stop()
    return root, case, classes


def case_classes(root: Path, case: str) -> list[str] | None:
    for meta in checkpoints_in_case(root, case).values():
        if isinstance(meta, dict):
            return meta["classes"]
    return None
