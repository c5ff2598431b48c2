"""Certify: sample stage-A counts for checkpoints as background jobs; results land in the cache."""

import streamlit as st
import torch

from csrs_core import jobs
from dashboard.common import checkpoints_in_case, data_root, inside, select_case
from dashboard.jobs_panel import live_jobs

NAMED = ["cifar10-jpeg", "cifar10", "ham10000", "imagenette", "synthetic"]

st.title("Certify")
root, case = select_case()
if case is None:
    st.stop()
device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
st.caption(f"Sampling runs on **{device}** (chosen automatically).")
metas = {k: v for k, v in checkpoints_in_case(root, case).items() if isinstance(v, dict)}
sample = root / case / "test-sample.npz"

with st.form("certify_form"):
    picked = st.multiselect("Checkpoints", list(metas), default=list(metas)[:1])
    choices = ([f"shipped test sample ({case}/test-sample.npz)"] if sample.exists() else []) + NAMED + ["image folder…"]
    source = st.selectbox("Data", choices)
    folder = st.text_input("Image folder (inside the data folder), for 'image folder…'", "")
    c1, c2, c3 = st.columns(3)
    split = c1.selectbox("Split", ["test", "train", "val"])
    num = c2.number_input("Examples (0 = all)", min_value=0, value=100, step=50)
    per_class = c3.number_input("…or per class (0 = off)", min_value=0, value=0, step=10)
    c1, c2, c3, c4 = st.columns(4)
    n0 = c1.number_input("n0", min_value=1, value=100)
    n = c2.number_input("n", min_value=10, value=1000, step=100)
    batch = c3.number_input("batch", min_value=1, value=500, step=100)
    precision = c4.selectbox("precision", ["fp32", "bf16", "fp16"],
                             help="bf16/fp16 autocast; on CPUs without native bf16 it is slower than fp32")
    size = st.number_input("Image size (0 = as trained)", min_value=0, value=0)
    submitted = st.form_submit_button("Start certification")

if submitted:
    if source.startswith("shipped"):
        dataset = f"sample:{sample}"
    elif source == "image folder…":
        path = (data_root() / folder).resolve()
        if not folder or not inside(path, data_root()):
            st.error("The image folder must be a folder inside the data folder.")
            st.stop()
        dataset = f"imagefolder:{path}"
    else:
        dataset = source
    for name in picked:
        meta = metas[name]
        args = ["certify", "--checkpoint", str(root / case / f"{name}.pt"), "--dataset", dataset, "--split", split,
                "--data-root", str(data_root()), "--n0", str(n0), "--n", str(n), "--batch", str(batch),
                "--precision", precision, "--cost", "overall"]
        if per_class:
            args += ["--per-class", str(per_class)]
        elif num:
            args += ["--num-examples", str(num)]
        img = size or (meta.get("image_size") or [0])[0]
        if img and not dataset.startswith("sample:"):
            args += ["--image-size", str(img)]
        try:
            jobs.start_job(root, "certify", args, str(root / case / f"{name}.certify"))
            st.success(f"Started certification of {name}.")
        except jobs.JobError as exc:
            st.error(str(exc))

st.subheader("Certification jobs")
live_jobs(root, "certify")
