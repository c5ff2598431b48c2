"""Checkpoints: metadata table, safe upload, delete with confirmation."""
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from csrs_core.runtime.atomic import FileWriteError
from csrs_core.models.checkpoints import CheckpointError, list_checkpoints, read_meta
from csrs_core.sampling.store import list_records
from csrs_core.dashboard.common import inside, is_demo, require_access, select_case
from csrs_core.dashboard.checkpoint_files import add_uploaded_checkpoint, delete_checkpoint, delete_record

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

if is_demo(root):
    st.info("The shipped demo is read-only: start `csrs dashboard --checkpoints DIR` to upload or delete checkpoints.")
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

st.subheader("Delete a checkpoint")
choices = [r["file"] for r in rows]
victim = st.selectbox("Checkpoint", ["(choose)"] + choices)
if victim != "(choose)":
    sure = st.checkbox(f"Yes, delete {victim} and its cached certifications")
    if st.button("Delete", disabled=not sure):
        path = (root / victim).resolve()
        if inside(path, root):
            try:
                delete_checkpoint(path)
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
