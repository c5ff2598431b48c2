"""Certify: sample stage-A counts for checkpoints as background jobs; results land in the store.
Every field is built from csrs_core.settings.CERTIFY, the definitions the CLI uses. Before a
start, the time each job will take is estimated from the rate measured on this machine for the model
(the tuning cache of csrs_core.sampling.plan; the page never measures)."""
from pathlib import Path

import streamlit as st
import torch

from csrs_core import CSRSError, jobs
from csrs_core.data import DATASETS, DatasetError, dataset_missing, select_examples
from csrs_core.data.images import load_sample
from csrs_core.certification.sequential import check_eps
from csrs_core.sampling.sequential import FIRST_ROUND
from csrs_core.settings import CERTIFY, SettingError
from csrs_core.cli.options import to_argv
from csrs_core.models.architectures import build_model
from csrs_core.runtime.device import pick_device
from csrs_core.sampling.plan import cached_rate
from csrs_core.dashboard.common import (checkpoints_in_case, current_cost, data_root, refuse_writes_to_demo,
                                        first_value, require_access, select_case, write_failure)
from csrs_core.dashboard.jobs_panel import live_jobs
from csrs_core.dashboard.option_widgets import inside_folder, option_widget

NAMED = [n for n, spec in DATASETS.items() if not spec.takes_path]


@st.cache_data(show_spinner=False, max_entries=8)
def _sample_facts(path: str, mtime: float) -> tuple:
    """(labels, image shape) of a sample file."""
    data = load_sample(Path(path))
    return data.labels.numpy(), tuple(data.images.shape[1:])


@st.cache_resource(show_spinner=False, max_entries=16)
def _architecture(arch: str, classes: int, mean: tuple, std: tuple):
    """An untrained model of the architecture (what the tuning cache is keyed by), built once."""
    return build_model(arch, classes, mean, std)


def image_size(meta: dict, values: dict) -> int | None:
    """The square size a job resizes a data set's images to: the size typed, else the one trained at."""
    trained = meta.get("image_size")
    return values["image_size"] or (trained[0] if isinstance(trained, list) and trained else None)


def duration(seconds: float) -> str:
    """A rough duration in words: '40 s', '3 min 20 s', '2 h 5 min'."""
    s = round(seconds)
    if s < 1:
        return "under a second"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def planned_examples(values: dict, classes: int, labels=None) -> tuple[int | None, bool]:
    """(how many examples the job certifies, whether exactly): exactly from the sample's labels, else
    at most the number (or per-class number) typed; None for all of a data set this page does not read."""
    if labels is not None:
        return len(select_examples(labels, values["num_examples"], values["per_class"])), True
    if values["per_class"]:
        return values["per_class"] * classes, False
    return values["num_examples"], False


def estimate(name: str, meta: dict, examples: tuple, shape: tuple | None, values: dict) -> str:
    """One line saying how long `name`'s job will sample: examples × (n0 + n) / the cached rate of
    this model and input shape on this machine, or why there is no estimate."""
    count, exact = examples
    if count is None:
        return (f"**{name}**: no estimate: give a number of examples (or per class); this page does not read "
                "the whole data set to count them.")
    if shape is None:
        return f"**{name}**: no estimate: the input size follows the data; give an image size for an estimate."
    per_example = values["n0"] + (max(FIRST_ROUND, values["n"] // 20) if values["sequential"] else values["n"])
    samples = count * per_example
    try:
        model = _architecture(meta["arch"], len(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"]))
    except CSRSError as exc:
        return f"**{name}**: no estimate: {exc}."
    rate = cached_rate(model, pick_device("auto"), values["precision"], values["batch"], shape, samples)
    if rate is None:
        return (f"**{name}**: no rate measured yet for this model ({meta['arch']}, inputs "
                f"{'×'.join(map(str, shape))}) on this machine: it is measured when the job starts (a few "
                "seconds), and the job's progress bar then shows the time left.")
    if values["sequential"]:
        most = count * (values["n0"] + values["n"])
        return (f"**{name}**: {'' if exact else 'at most '}{count:,} examples, each stopping once every ε is decided: "
                f"typically about {per_example:,} noisy images each (a twentieth of the cap or less), "
                f"{samples:,} in all at {rate:,.0f} images/s: about **{duration(samples / rate)}**; at most "
                f"{duration(most / rate)} if every example ran to the cap.")
    return (f"**{name}**: {'' if exact else 'at most '}{count:,} examples × {per_example:,} noisy images = "
            f"{samples:,} at {rate:,.0f} images/s (measured on this machine for this model): about "
            f"**{duration(samples / rate)}**.")


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

picked = st.multiselect("Checkpoints", list(metas), key=f"certify::picked::{case}",
                        **first_value(f"certify::picked::{case}", list(metas), list(metas)[:1], many=True))
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
c1, c2 = st.columns([1, 2])
values["sequential"] = option_widget(CERTIFY["sequential"], c1, "Decide at ε")
eps_text = option_widget(CERTIFY["eps"], c2, "ε to decide (comma-separated)", disabled=not values["sequential"])
decided_cost = current_cost(case, next(iter(metas.values()))["classes"]).describe() if metas else "overall"
if values["sequential"]:
    c2.caption(f"Sequential: n is the cap. Decided for the cost matrix shown on Explore (`{decided_cost}`): each "
               "example stops once its deciding radius is decided at every ε (certified, or out of reach within n). "
               "The record then answers any matrix, ε and α too, only less tightly than these.")
try:
    values["eps"] = CERTIFY["eps"].check(eps_text, "ε to decide")
except SettingError as exc:
    st.error(str(exc))
    values["eps"] = CERTIFY["eps"].default
labels, sample_shape = None, None
if source.startswith("shipped"):
    try:
        labels, sample_shape = _sample_facts(str(sample), sample.stat().st_mtime)
    except (DatasetError, OSError) as exc:
        st.warning(f"No estimate: the shipped sample cannot be read ({exc}).")
for name in picked:
    size = image_size(metas[name], values)
    shape = sample_shape if source.startswith("shipped") else (len(metas[name]["mean"]), size, size) if size else None
    st.markdown(estimate(name, metas[name], planned_examples(values, len(metas[name]["classes"]), labels), shape,
                         values))
if picked:
    st.caption("Sampling time only: loading and start-up add seconds, and stored counts that the job reuses take "
               "none. A job runs slower while other jobs share the machine.")
submitted = st.button("Start certification")

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
        missing = dataset_missing(dataset, data_root())
        if missing:
            raise ValueError(missing)
        if values["per_class"]:
            values["num_examples"] = None
        for name in picked:
            if values["sequential"]:
                check_eps(values["eps"], metas[name]["sigma"], values["n"], CERTIFY["alpha"].default)
            run = {**values, "checkpoint": str(root / case / f"{name}.pt"), "dataset": dataset,
                   **({"cost": decided_cost} if values["sequential"] else {}),
                   "data_root": str(data_root()),
                   "image_size": None if dataset.startswith("sample:") else image_size(metas[name], values)}
            jobs.start_job(root, "certify", ["certify", *to_argv(CERTIFY, run), "--quiet"],
                           str(root / case / f"{name}.certify"))
            st.success(f"Started certification of {name}.")
    except (ValueError, SettingError, jobs.JobError) as exc:
        st.error(str(exc))
    except OSError as exc:
        st.error(write_failure(exc))

st.subheader("Certification jobs")
live_jobs(root, "certify")
