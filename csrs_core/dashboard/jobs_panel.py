"""A live list of background jobs of one kind: progress bar, ETA, cancel, log of failures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from csrs_core import jobs
from csrs_core.dashboard import figures


def _fraction(job) -> tuple[float, str]:
    p = job["progress"] or {}
    if job["state"] == "done":
        return 1.0, "done"
    if p.get("event") in ("progress", "start") and p.get("total"):
        return min(p.get("done", 0) / p["total"], 1.0), f"{p.get('done', 0):,} / {p['total']:,} samples"
    if p.get("event") in ("step", "epoch") and p.get("steps") and job.get("epochs"):
        epochs = job["epochs"]
        frac = (p["epoch"] + p["step"] / p["steps"]) / epochs
        return min(frac, 1.0), f"epoch {p['epoch'] + 1}/{epochs}, step {p['step']}/{p['steps']}"
    return 0.0, p.get("event", "waiting")


def _epochs(job) -> int | None:
    """The epochs a training run was started for, as the run itself reports them (its start event),
    not as its command line may or may not spell them (a default is not on it)."""
    starts = [e for e in job["events"] if e.get("event") == "start" and e.get("epochs")]
    return int(starts[-1]["epochs"]) if starts else None


def _eta(job) -> str:
    eta = (job["progress"] or {}).get("eta_s")
    if eta is None or job["state"] != "running":
        return ""
    return f" · ETA {int(eta // 60)} min {int(eta % 60)} s"


def _written(job) -> Path | None:
    """The file a finished job wrote, as its last 'done' event names it (a record, or a checkpoint)."""
    done = [e for e in job["events"] if e.get("event") == "done" and (e.get("file") or e.get("checkpoint"))]
    return Path(done[-1].get("file") or done[-1]["checkpoint"]) if done else None


def _case_of(root, checkpoint: Path) -> str | None:
    """The case (a folder under the checkpoint root) of `checkpoint`, or None when it lies elsewhere."""
    try:
        return str(checkpoint.resolve().parent.relative_to(Path(root).resolve()))
    except ValueError:
        return None


def _set_state(state: dict) -> None:
    """A button's callback (it runs before the widgets are made): `state` into the session."""
    for key, value in state.items():
        st.session_state[key] = value
    st.query_params["case"] = state["case"]


def _link(label: str, key: str, page: str, state: dict) -> None:
    """A button that opens `page` with `state` set in the session (its widgets then show these values)."""
    if st.button(label, key=key, on_click=_set_state, args=(state,)):
        st.switch_page(page)


def _finished(root, job) -> None:
    """What a finished job wrote, and the page that shows it: a record opens on Explore, selected for its
    checkpoint (the focus of the detailed views, in the comparison with the case's baseline); a trained
    checkpoint opens on Certify, chosen."""
    written = _written(job)
    if written is None:
        return
    if job.get("kind") == "certify" and written.parent.name.endswith(".certs"):
        name = written.parent.name[:-len(".certs")]
        case = _case_of(root, written.parent.parent / f"{name}.pt")
        st.success(f"Wrote the certification record `{written.name}` of **{name}** ({written.parent}).")
        if case is not None:
            picked = st.session_state.get(f"picked::{case}")
            _link("Show it on Explore & compare", f"show::{job['id']}", "views/explore.py", {
                "case": case, f"record::{case}::{name}": written.name, f"focus::{case}": name,
                **({f"picked::{case}": list(dict.fromkeys([*picked, name]))} if picked else {})})
    elif job.get("kind") == "train":
        case = _case_of(root, written)
        st.success(f"Wrote the checkpoint **{written.stem}** ({written}).")
        if case is not None:
            _link("Certify it", f"certify::{job['id']}", "views/certify.py",
                  {"case": case, f"certify::picked::{case}": [written.stem]})


def jobs_panel(root, kind: str) -> bool:
    """Show the jobs of `kind`; True while one is still active (the caller refreshes)."""
    everything = jobs.list_jobs(root)
    listed = [j for j in everything if j.get("kind") == kind]
    broken = [j for j in everything if j["state"] == "broken"]
    if broken:
        st.warning(f"{len(broken)} job folder(s) under {jobs.jobs_dir(root)} cannot be read and are ignored: "
                   + "; ".join(f"{j['id']}: {j.get('reason') or j.get('error', '')}" for j in broken[:3]))
    if not listed:
        st.caption("No jobs yet.")
        return False
    for job in listed[:10]:
        job["epochs"] = _epochs(job)
        frac, text = _fraction(job)
        with st.container(border=True):
            reason = f" ({job['reason']})" if job.get("reason") and job["state"] != "done" else ""
            st.markdown(f"**{job['out']}** — {job['state']}{reason}")
            st.progress(frac, text=text + _eta(job))
            if job["state"] in jobs.ACTIVE and st.button("Cancel", key=f"cancel::{job['id']}"):
                jobs.cancel(root, job["id"])
                st.rerun()
            if kind == "train":
                steps = pd.DataFrame([e for e in job["events"] if e.get("event") == "step"])
                if len(steps):
                    st.vega_lite_chart(spec=figures.training_curves(steps), key=f"curve::{job['id']}")
            if job["state"] == "done":
                _finished(root, job)
            if job["state"] in ("failed", "interrupted"):
                errors = [e["message"] for e in job["events"] if e.get("event") == "error"]
                st.error(errors[-1] if errors else "The job failed; its log follows.")
                st.code(job["log_tail"][-2000:] or "(empty log)")
    return any(j["state"] in jobs.ACTIVE for j in listed)


def live_jobs(root, kind: str) -> None:
    """Re-render the panel every 2 s while jobs run, without rerunning the rest of the page."""
    @st.fragment(run_every=2.0)
    def panel():
        jobs_panel(root, kind)
    panel()
