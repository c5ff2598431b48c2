"""Checkpoints: metadata table, training histories, safe upload, import of the field's checkpoints,
delete with confirmation."""
import json
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from csrs_core.settings import TRAIN
from csrs_core.interop.importers import DATASET_CLASSES, FORMATS
from csrs_core.models.architectures import architectures
from csrs_core.runtime.atomic import FileWriteError
from csrs_core.models.checkpoints import CheckpointError, list_checkpoints, read_meta
from csrs_core.sampling.store import list_records
from csrs_core.dashboard.common import checkpoints_in_case, inside, is_demo, require_access, select_case
from csrs_core.dashboard.checkpoint_files import (add_uploaded_checkpoint, delete_checkpoint, delete_record,
                                                  describe_upload, import_uploaded_checkpoint, job_using)
from csrs_core.dashboard.history import QUANTITIES, history_figure, history_frame, without_history
from csrs_core.dashboard.option_widgets import option_widget


def show_histories(metas: dict[str, dict], case: str) -> None:
    """The training histories of the checkpoints picked among `metas`, overlaid: one figure per
    quantity; checkpoints without a history are named."""
    picked = st.multiselect("Checkpoints to show", list(metas), default=list(metas), key=f"history::{case}")
    chosen = {name: metas[name] for name in picked}
    missing = without_history(chosen)
    if missing:
        st.info(f"No training history in {', '.join(missing)}: checkpoints imported from other projects (and "
                "files written by other tools) carry none; the figures show the others.")
    frame = history_frame(chosen)
    shown = [name for name in picked if name not in missing]
    if not shown:
        return
    if not (frame.quantity == "lam").any():
        st.caption("λ: none of these checkpoints was trained with a robustness term (gaussian and cohen-r "
                   "have none).")
    quantities = [q for q in QUANTITIES if (frame.quantity == q).any()]
    for quantity in quantities:  # one per row: beside each other at 1,000 px they left no room to plot
        st.vega_lite_chart(spec=history_figure(frame, quantity, shown), key=f"history::{quantity}")


def _numbers(text: str, what: str) -> list[float] | None:
    """Comma- or space-separated numbers typed into a box; None for an empty box."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        return None
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what}: give numbers separated by commas, e.g. 0.4914, 0.4822, 0.4465; "
                         f"got {text!r}") from None


def _shown(values) -> str:
    return "" if values is None else ", ".join(f"{v:g}" for v in values)


def _default_output(name: str) -> str:
    """The upload's name without .tar/.pth/.pt, in the letters an output name allows."""
    stem = Path(name).name
    while Path(stem).suffix in (".tar", ".pth", ".pt"):
        stem = stem[:-len(Path(stem).suffix)]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip(".-_")[:60] or "imported"


def import_section(root: Path, case: str | None) -> None:
    """Upload a checkpoint of Cohen et al., MACER, CS-RS or torchvision: its format, architecture
    and normalisation shown (the last overridable), σ and what the file does not say asked, then
    the core's importer writes it into a case folder."""
    done = st.session_state.pop("import::done", None)
    if done:
        st.success(done)
    source = st.file_uploader("Checkpoint of another project (.pth, .pt, .tar)", type=["pth", "pt", "tar"],
                              key="import::file")
    if source is None:
        return
    target = st.text_input("Into case folder", value=case or "imported", key="import::target")
    metas = [m for m in (checkpoints_in_case(root, case).values() if case else []) if isinstance(m, dict)]
    datasets = list(DATASET_CLASSES)
    usual = next((m["dataset"] for m in metas if m["dataset"] in datasets), datasets[0])
    c1, c2 = st.columns(2)
    fmt = c1.selectbox("Format", FORMATS, key="import::format", help="auto: detected from the file's layout")
    dataset = c2.selectbox("Data set (gives the class names)", datasets, index=datasets.index(usual),
                           key="import::dataset")
    try:
        found = describe_upload(root, source.name, source.getvalue(), dataset, fmt)
    except (ValueError, FileWriteError) as exc:
        st.error(f"Cannot import {Path(source.name).name}: {exc}")
        return
    st.markdown(f"**{Path(source.name).name}**: format **{found['format']}** "
                f"({'detected' if fmt == 'auto' else 'as chosen'}), a classifier of {found['outputs']} classes.")
    if found["arch_from"] == "file":
        st.markdown(f"Architecture **{found['arch']}** (named in the file).")
        arch = None
    else:
        arch = st.selectbox("Architecture (the file does not name it; this one fits its weights)", architectures(),
                            index=architectures().index(found["arch"]), key="import::arch")
    c1, c2, c3 = st.columns(3)
    sigma = option_widget(TRAIN["sigma"], c1, "σ the model was trained with (no file says)", key="import::sigma")
    where = f"{found['format']}::{dataset}"
    mean = c2.text_input("Normalisation mean", _shown(found["mean"]), key=f"import::mean::{where}",
                         help="the format's default for this data set; change it if the model was trained otherwise")
    std = c3.text_input("Normalisation std", _shown(found["std"]), key=f"import::std::{where}")
    if found["mean"] is None:
        st.warning("The file and its format do not say how inputs were normalised for this data set: "
                   "give mean and std.")
    name = st.text_input("Output name", _default_output(source.name), key=f"import::out::{source.file_id}")
    if st.button("Import", key="import::go"):
        try:
            out, meta = import_uploaded_checkpoint(
                root, target, source.name, source.getvalue(), name, arch=arch, dataset=dataset, sigma=sigma,
                fmt=fmt, mean=_numbers(mean, "Normalisation mean"), std=_numbers(std, "Normalisation std"))
        except (ValueError, FileWriteError) as exc:
            st.error(f"Nothing was imported: {exc}")
        else:
            st.session_state["import::done"] = (
                f"Imported {Path(source.name).name} as {out.relative_to(root)}: {meta['arch']}, {meta['dataset']} "
                f"({len(meta['classes'])} classes), σ = {meta['sigma']:g}, from a {meta['source_format']} file, "
                f"mean {_shown(meta['mean'])}, std {_shown(meta['std'])}.")
            st.rerun()


require_access()  # first, also when this view is reached some other way than app.py
st.title("Checkpoints")
root, case = select_case()
if not root.is_dir():
    st.stop()

rows = []
for path in list_checkpoints(root):
    if ".jobs" in path.parts:
        continue
    entry = {"file": str(path.relative_to(root))}
    try:
        meta = read_meta(path)
        hp = meta.get("hyperparameters", {})
        cost = json.loads(meta["cost"]) if meta.get("cost") else None
        entry.update(method=meta["method"], arch=meta["arch"], dataset=meta["dataset"], sigma=meta["sigma"],
                     epochs=f"{meta.get('epochs_done', '?')}/{meta.get('epochs', '?')}",
                     classes=len(meta["classes"]), cost=hp.get("cost", "") if cost else "",
                     warm_start=(meta.get("init") or {}).get("checkpoint", ""),
                     certifications=sum(r.status == "valid" for r in list_records(path)), status="ok")
    except CheckpointError as exc:
        entry.update(status=f"unreadable: {exc}")
    rows.append(entry)
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="ckpt_table")
else:
    st.info(f"No checkpoints under {root}.")

if case is not None:
    st.subheader("Training history")
    show_histories({k: v for k, v in checkpoints_in_case(root, case).items() if isinstance(v, dict)}, case)

if is_demo(root):
    st.info("The shipped demo is read-only: start `csrs dashboard --checkpoints DIR` to upload, import or delete "
            "checkpoints.")
    st.stop()

st.subheader("Upload a checkpoint")
target = st.text_input("Into case folder", value=case or "uploaded")
upload = st.file_uploader("CSRS checkpoint (.pt)", type=["pt"])
if upload is not None and st.button("Add uploaded checkpoint"):
    try:
        meta = add_uploaded_checkpoint(root, target, upload.name, upload.getvalue())
    except (ValueError, FileWriteError) as exc:
        st.error(str(exc))
    else:
        st.success(f"Added {target}/{Path(upload.name).name} ({meta['method']}, {meta['arch']}, "
                   f"{len(meta['classes'])} classes).")

st.subheader("Import a checkpoint of Cohen et al., MACER, CS-RS or torchvision")
st.caption("As `csrs import` converts them: read weights-only (a file holding anything but tensors is refused), "
           "checked tensor by tensor against the architecture, written as a CSRS checkpoint that records the source "
           "file's sha256 and format.")
import_section(root, case)

st.subheader("Delete a checkpoint")
choices = [r["file"] for r in rows]
victim = st.selectbox("Checkpoint", ["(choose)"] + choices)
if victim != "(choose)":
    sure = st.checkbox(f"Yes, delete {victim} and its cached certifications")
    if st.button("Delete", disabled=not sure):
        path = (root / victim).resolve()
        if inside(path, root):
            try:
                if job := job_using(root, path):
                    raise ValueError(f"{victim} is used by the {job.get('kind', '')} job {job['id']} "
                                     f"({job['state']}): cancel it or wait for it, then delete")
                delete_checkpoint(path, victim)
            except (ValueError, FileWriteError) as exc:
                st.error(f"Nothing was deleted: {exc}")
            else:
                st.success(f"Deleted {victim}.")
                st.rerun()

stale = [(path, info) for path in list_checkpoints(root) if ".jobs" not in path.parts
         for info in list_records(path) if info.status != "valid"]
if stale:
    st.subheader("Stale and corrupt certification records")
    st.caption("Never shown as a checkpoint's result: made from other checkpoint content, or unreadable.")
    for path, info in stale:
        label = f"{path.relative_to(root)}: {info.path.name} ({info.status}{': ' + info.reason if info.reason else ''})"
        if st.button(f"Delete {info.path.name}", key=f"delete_record::{info.path}", help=label):
            try:
                delete_record(info.path)
            except (ValueError, FileWriteError) as exc:
                st.error(f"Nothing was deleted: {exc}")
            else:
                st.success(f"Deleted {label}.")
                st.rerun()
        st.caption(label)
