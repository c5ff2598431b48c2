"""Train: launch any method with every hyperparameter as a background job and watch it."""
import re

import streamlit as st

from csrs_core import jobs
from csrs_core.models import architectures
from dashboard.common import case_classes, checkpoints_in_case, current_cost, data_root, select_case
from dashboard.jobs_panel import live_jobs

DATASETS = ["synthetic", "cifar10-jpeg", "cifar10", "ham10000", "imagenette"]

st.title("Train")
root, case = select_case()
target_case = case or "."
classes = case_classes(root, case) if case else None
cost = current_cost(case, classes) if classes else None
st.caption("Defaults follow the paper (MACER: k = 16, β = 16, γ = 8, λ = 12; CS-MACER: γ1 = 4, γ2 = 16, λ = 3); "
           "the cost matrix is the one edited on the Explore page" + (f" ({cost.describe()})." if cost else "."))
inits = ["(none)"] + [k for k, v in checkpoints_in_case(root, target_case).items() if isinstance(v, dict)] if case else ["(none)"]

with st.form("train_form"):
    c1, c2, c3, c4 = st.columns(4)
    method = c1.selectbox("Method", ["gaussian", "cohen-r", "macer", "cs-macer"], index=3)
    dataset = c2.selectbox("Data set", DATASETS, index=DATASETS.index("cifar10-jpeg") if case == "cifar10" else 0)
    arch = c3.selectbox("Architecture", architectures(), index=architectures().index("resnet20"))
    name = c4.text_input("Output name", "my-model")
    c1, c2, c3, c4, c5 = st.columns(5)
    sigma = c1.number_input("σ", min_value=0.01, value=0.25, step=0.05)
    epochs = c2.number_input("epochs", min_value=1, value=10)
    batch = c3.number_input("batch", min_value=1, value=64)
    lr = c4.number_input("learning rate", min_value=1e-5, value=0.1, format="%.4f")
    schedule = c5.selectbox("schedule", ["cosine", "step"])
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    weight = c1.number_input("Cohen-R weight w", min_value=1.0, value=1.2, step=0.1)
    gauss_num = c2.number_input("k noisy copies", min_value=1, value=16)
    lam = c3.number_input("λ", min_value=0.0, value=3.0 if method == "cs-macer" else 12.0)
    gamma = c4.number_input("γ (MACER)", value=8.0)
    gamma1 = c5.number_input("γ1 (normal)", value=4.0)
    gamma2 = c6.number_input("γ2 (sensitive)", value=16.0)
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    beta = c1.number_input("β", value=16.0)
    init = c2.selectbox("Warm start", inits)
    seed = c3.number_input("seed", value=0)
    image_size = c4.number_input("image size (0 = native)", min_value=0, value=0)
    max_steps = c5.number_input("max steps/epoch (0 = all)", min_value=0, value=0)
    precision = c6.selectbox("precision", ["fp32", "bf16", "fp16"])
    submitted = st.form_submit_button("Start training")

if submitted:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        st.error("Output name: letters, digits, '_', '-' and '.', at most 64 characters (no folders).")
        st.stop()
    out = root / target_case / name
    args = ["train", "--method", method, "--dataset", dataset, "--arch", arch, "--sigma", str(sigma),
            "--epochs", str(epochs), "--batch", str(batch), "--lr", str(lr), "--schedule", schedule,
            "--weight", str(weight), "--gauss-num", str(gauss_num), "--lam", str(lam), "--gamma", str(gamma),
            "--gamma1", str(gamma1), "--gamma2", str(gamma2), "--beta", str(beta), "--seed", str(seed),
            "--precision", precision, "--data-root", str(data_root()), "--out", str(out), "--log-every", "5"]
    if cost is not None:
        args += ["--cost", cost.to_json()]  # checked against the data set's classes by the job
    if init != "(none)":
        args += ["--init", str(root / target_case / f"{init}.pt")]
    if image_size:
        args += ["--image-size", str(image_size)]
    if max_steps:
        args += ["--max-steps-per-epoch", str(max_steps)]
    try:
        jobs.start_job(root, "train", args, str(out))
        st.success(f"Started training {name}; it appears in the lists when its first epoch ends.")
    except jobs.JobError as exc:
        st.error(str(exc))

st.subheader("Training jobs")
live_jobs(root, "train")
