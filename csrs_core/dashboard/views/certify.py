"""Certify: sample stage-A counts for checkpoints as background jobs; results land in the store.
Every field is built from csrs_core.cli.options.CERTIFY, the definitions the CLI uses."""
import streamlit as st
import torch

from csrs_core import jobs
from csrs_core.data import DATASETS
from csrs_core.cli.options import CERTIFY, SettingError, to_argv
from csrs_core.dashboard.common import (checkpoints_in_case, data_root, refuse_writes_to_demo, require_access,
                                        select_case, write_failure)
from csrs_core.dashboard.jobs_panel import live_jobs
from csrs_core.dashboard.option_widgets import inside_folder, option_widget

NAMED = [n for n, spec in DATASETS.items() if not spec.takes_path]

require_access()  # first, also when this view is reached some other way than app.py
st.title("Certify")
root, case = select_case()
refuse_writes_to_demo(root)
if case is None:
    st.stop()
device = "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu"
st.caption(f"Sampling runs on **{device}** (chosen automatically); precision auto measures the fastest this "
           "machine runs the model at (once) and records the choice with the certification.")
metas = {k: v for k, v in checkpoints_in_case(root, case).items() if isinstance(v, dict)}
sample = root / case / "test-sample.npz"

with st.form("certify_form"):
    picked = st.multiselect("Checkpoints", list(metas), default=list(metas)[:1])
    choices = ([f"shipped test sample ({case}/test-sample.npz)"] if sample.exists() else []) + NAMED + ["image folder…"]
    source = st.selectbox("Data", choices, key="certify::source")
    folder = st.text_input("Image folder (inside the data folder), for 'image folder…'", "", key="certify::folder")
    c1, c2, c3 = st.columns(3)
    values = {"split": option_widget(CERTIFY["split"], c1, "Split"),
              "num_examples": option_widget(CERTIFY["num_examples"], c2, "Examples (empty = all)", value=100),
              "per_class": option_widget(CERTIFY["per_class"], c3, "…or per class (empty = off)")}
    c1, c2, c3, c4, c5 = st.columns(5)
    values["n0"] = option_widget(CERTIFY["n0"], c1, "n0")
    values["n"] = option_widget(CERTIFY["n"], c2, "n", value=1000)
    values["batch"] = option_widget(CERTIFY["batch"], c3, "batch (empty = auto)")
    values["precision"] = option_widget(CERTIFY["precision"], c4, "precision")
    values["seed"] = option_widget(CERTIFY["seed"], c5, "seed")
    values["image_size"] = option_widget(CERTIFY["image_size"], st, "Image size (empty = as trained)")
    submitted = st.form_submit_button("Start certification")

if submitted:
    try:
        if source.startswith("shipped"):
            if values["split"] != "test":
                raise ValueError(f"Split: the shipped sample holds test examples only, not {values['split']!r}; "
                                 "choose test, or a named data set for its val or train split.")
            dataset = f"sample:{sample}"
        elif source == "image folder…":
            dataset = f"imagefolder:{inside_folder(data_root(), folder, 'Image folder')}"
        else:
            dataset = source
        if values["per_class"]:
            values["num_examples"] = None
        for name in picked:
            size = values["image_size"] or (metas[name].get("image_size") or [None])[0]
            run = {**values, "checkpoint": str(root / case / f"{name}.pt"), "dataset": dataset,
                   "data_root": str(data_root()), "image_size": None if dataset.startswith("sample:") else size}
            jobs.start_job(root, "certify", ["certify", *to_argv(CERTIFY, run), "--quiet"],
                           str(root / case / f"{name}.certify"))
            st.success(f"Started certification of {name}.")
    except (ValueError, SettingError, jobs.JobError) as exc:
        st.error(str(exc))
    except OSError as exc:
        st.error(write_failure(exc))

st.subheader("Certification jobs")
live_jobs(root, "certify")
