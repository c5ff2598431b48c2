"""Checkpoints: metadata table, safe upload, delete with confirmation."""
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from csrs_core.store import cert_dir, list_records
from csrs_core.checkpoints import CheckpointError, list_checkpoints, read_meta
from dashboard.common import inside, select_case
from dashboard.option_widgets import inside_folder, plain_name

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

st.subheader("Upload a checkpoint")
target = st.text_input("Into case folder", value=case or "uploaded")
upload = st.file_uploader("CSRS checkpoint (.pt)", type=["pt"])
if upload is not None and st.button("Add uploaded checkpoint"):
    name = Path(upload.name).name
    try:
        folder = inside_folder(root, target, "Case folder")
        plain_name(name, "File name")
        if not name.endswith(".pt"):
            raise ValueError(f"File name: {name!r} must end in .pt")
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    if (folder / name).exists():
        st.error(f"{target}/{name} already exists; delete it first or rename the upload.")
    else:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            staged = Path(tmp) / name
            staged.write_bytes(upload.getvalue())
            try:
                meta = read_meta(staged)   # weights-only load: an upload cannot run code
            except CheckpointError as exc:
                st.error(f"Upload refused: {exc}")
            else:
                folder.mkdir(parents=True, exist_ok=True)
                shutil.move(str(staged), folder / name)
                st.success(f"Added {target}/{name} ({meta['method']}, {meta['arch']}, {len(meta['classes'])} classes).")

st.subheader("Delete a checkpoint")
choices = [r["file"] for r in rows]
victim = st.selectbox("Checkpoint", ["(choose)"] + choices)
if victim != "(choose)":
    sure = st.checkbox(f"Yes, delete {victim} and its cached certifications")
    if st.button("Delete", disabled=not sure):
        path = (root / victim).resolve()
        if inside(path, root):
            path.unlink(missing_ok=True)
            shutil.rmtree(cert_dir(path), ignore_errors=True)
            path.with_suffix(".progress.jsonl").unlink(missing_ok=True)
            st.success(f"Deleted {victim}.")
            st.rerun()
