"""Decide one example at ε from the browser: the checkpoint's smoothed classifier samples that example
sequentially (docs/sequential.md) until its deciding radius is decided at ε or the cap is reached."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from csrs_core import SmoothedClassifier
from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.explain import radius as deciding_radius
from csrs_core.models.checkpoints import load_model

CAP = 100_000


@st.cache_resource(show_spinner=False, max_entries=8)
def _smoothed(path: str, mtime_ns: int) -> SmoothedClassifier:
    """The checkpoint's smoothed classifier, loaded once per file version."""
    model, meta = load_model(path)
    return SmoothedClassifier(model, num_classes=len(meta["classes"]), sigma=float(meta["sigma"]))


def decide(checkpoint: Path, pixels: np.ndarray, label: int, index: int, cost: CostMatrix, eps: float,
           alpha: float, seed: int = 0) -> dict:
    """Sample example `index` (uint8 pixels [C, H, W]) until its deciding radius is decided at ε for `cost`
    (certified with probability ≥ 1 − α, or out of reach within CAP copies): the radius, whether it
    exceeds ε, the estimation copies used and the seconds taken."""
    smooth = _smoothed(str(checkpoint), checkpoint.stat().st_mtime_ns)
    t0 = time.perf_counter()
    table = smooth.certify(torch.from_numpy(pixels[None]), [label], cost, n=CAP, alpha=alpha, seed=seed,
                           indices=[index], sequential=True, eps=[eps])
    r = float(deciding_radius(table)[0])
    return {"radius": r, "certified": r > eps, "n_used": int(table["n_used"].iloc[0]),
            "seconds": time.perf_counter() - t0, "plan": smooth.last_plan}
