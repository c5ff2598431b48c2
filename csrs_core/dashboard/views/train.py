"""Train: launch any method with every hyperparameter as a background job and watch it.
Every field is built from csrs_core.settings.TRAIN, the definitions the CLI uses. The training
cost matrix is the page's own (per data set; never Explore's, never in the URL), edited below the
form and passed to the job as `--cost <describe()>`."""
from functools import partial

import streamlit as st

from csrs_core import jobs
from csrs_core.data import DATASETS, dataset_missing
from csrs_core.models.architectures import architectures
from csrs_core.settings import TRAIN, SettingError
from csrs_core.cli.options import to_argv
from csrs_core.dashboard.common import (case_classes, checkpoints_in_case, data_root, refuse_writes_to_demo,
                                        require_access, select_case, set_training_cost, training_cost,
                                        write_failure)
from csrs_core.dashboard.cost_editor import cost_grid, cost_tools
from csrs_core.dashboard.jobs_panel import live_jobs
from csrs_core.dashboard.option_widgets import option_widget, plain_name
from csrs_core.training.loop import COSTED

NAMED = [n for n, spec in DATASETS.items() if not spec.takes_path]


def cost_refusal(method: str, cost) -> str | None:
    """Why `method` cannot train with `cost`, or None: CS-MACER and Cohen-R need a costly mistake."""
    if method in COSTED and not cost.matrix.any():
        return (f"{method} trains against the training cost matrix (--cost), and in it no mistake costs anything "
                "('none'). Under \"Training cost matrix\" below, pick a preset, tick cells or import a matrix, "
                "then start again.")
    return None


FORM_COLUMNS = 4  # settings per row: labels and values stay whole at 1,000 px
FIELD_GROUPS = {
    "Run": [("sigma", "σ"), ("epochs", "epochs"), ("batch", "batch"), ("lr", "learning rate"),
            ("schedule", "schedule"), ("precision", "precision"), ("seed", "seed")],
    "The method's loss": [("gauss_num", "k noisy copies"), ("lam", "λ"), ("lam_warmup", "λ warm-up"),
                          ("weight", "Cohen-R w"), ("gamma", "γ (MACER)"), ("gamma1", "γ1 (normal)"),
                          ("gamma2", "γ2 (sensitive)"), ("beta", "β")],
    "Data": [("image_size", "image size"), ("max_steps_per_epoch", "max steps/epoch")]}

require_access()  # first, also when this view is reached some other way than app.py
st.title("Train")
root, case = select_case()
refuse_writes_to_demo(root)
target_case = case or "."
classes = case_classes(root, case) if case else None
case_metas = [v for v in (checkpoints_in_case(root, case).values() if case else []) if isinstance(v, dict)]
case_dataset = next((m["dataset"] for m in case_metas if m["dataset"] in NAMED), NAMED[0])
inits = ["(none)"] + ([k for k, v in checkpoints_in_case(root, target_case).items() if isinstance(v, dict)]
                      if case else [])
st.caption("Defaults follow the paper (MACER: k = 16, β = 16, γ = 8, λ = 12; CS-MACER: γ1 = 4, γ2 = 16, λ = 3; an "
           "empty λ takes the method's default). CS-MACER and Cohen-R train against the training cost matrix "
           "below, this page's own (Explore's matrix is not used).")
dataset = st.selectbox("Data set", NAMED, index=NAMED.index(case_dataset), help=TRAIN["dataset"].help,
                       key="train::dataset")  # outside the form: the cost matrix below follows its classes
cost = training_cost(dataset, list(DATASETS[dataset].classes))

with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    values = {"method": option_widget(TRAIN["method"], c1, "Method", key="train::method", value="cs-macer"),
              "dataset": dataset,
              "arch": c2.selectbox("Architecture", architectures(), index=architectures().index("resnet20"),
                                   help=TRAIN["arch"].help)}
    name = c3.text_input("Output name", "my-model", help="file name of the checkpoint in this case's folder",
                         key="train::name")
    st.caption(f"Training cost matrix (CS-MACER and Cohen-R, passed as --cost): `{cost.describe()}` — "
               f"{cost.in_words()}. Edit it under \"Training cost matrix\" below the form.")
    for heading, fields in FIELD_GROUPS.items():
        st.markdown(f"**{heading}**")
        columns = st.columns(FORM_COLUMNS)
        for i, (option, label) in enumerate(fields):
            values[option] = option_widget(TRAIN[option], columns[i % FORM_COLUMNS], label, key=f"train::{option}")
    init = st.selectbox("Warm start", inits, help=TRAIN["init"].help)
    submitted = st.form_submit_button("Start training")

if submitted:
    try:
        wanted = DATASETS[values["dataset"]].classes
        if classes and wanted and list(wanted) != list(classes):
            raise ValueError(f"The case folder {target_case} holds models of other classes ({', '.join(classes)}) "
                             f"than {values['dataset']} ({', '.join(wanted)}): train it into a case folder of its "
                             "own (start the dashboard on a checkpoint folder whose sub-folder it will be).")
        refused = cost_refusal(values["method"], cost) or dataset_missing(values["dataset"], data_root())
        if refused:
            raise ValueError(refused)
        out = root / target_case / plain_name(name, "Output name")
        values.update(out=str(out), data_root=str(data_root()), log_every=5,
                      cost=cost.describe() if values["method"] in COSTED else TRAIN["cost"].default,
                      init=str(root / target_case / f"{init}.pt") if init != "(none)" else None)
        args = ["train", *to_argv(TRAIN, values)]
        jobs.start_job(root, "train", args, str(out))
        st.success(f"Started training {name}; it appears in the lists when its first epoch ends.")
    except (ValueError, SettingError, jobs.JobError) as exc:
        st.error(str(exc))
    except OSError as exc:
        st.error(write_failure(exc))

st.subheader("Training cost matrix")
st.caption(f"For {dataset} ({cost.m} classes): rows are the true class, columns the predicted class; a ticked cell "
           "costs, its colour says how much. Used by CS-MACER and Cohen-R only; not shared with Explore.")
cost_tools(f"train:{dataset}", cost, partial(set_training_cost, dataset))
cost_grid(f"train:{dataset}", cost, partial(set_training_cost, dataset))

st.subheader("Training jobs")
live_jobs(root, "train")
