"""Training histories of checkpoints as one long table and Vega-Lite figures (one per quantity,
x = epoch, colour = checkpoint), in the manner of figures.py; no Streamlit here.

A checkpoint trained by CSRS keeps one row per finished epoch in its metadata ("history", written
by training.loop after every epoch): the epoch's mean loss, its training accuracy (on noisy inputs)
and the learning rate at its last step. λ is not in those rows: it follows from the run's settings
(lam, lam_warmup), so it is computed here with the loop's own schedule, at each epoch's end."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd

from csrs_core.settings import DEFAULT_LAMBDA, TRAIN
from csrs_core.dashboard.figures import SCHEME, vega_spec
from csrs_core.training.loop import robustness_weight

QUANTITIES = {"loss": "training loss (epoch mean)", "acc": "training accuracy (noisy inputs)",
              "lam": "λ at the epoch's end", "lr": "learning rate at the epoch's end"}
COLUMNS = ["checkpoint", "epoch", "quantity", "value"]


def _number(value) -> float | None:
    """`value` as a finite float, else None (a history row from a damaged file holds anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _epochs(meta: dict) -> list[dict]:
    """The history rows of a checkpoint that have an epoch number, in epoch order."""
    rows = meta.get("history")
    if not isinstance(rows, list):
        return []
    kept = [r for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int) and r["epoch"] >= 1]
    return sorted(kept, key=lambda r: r["epoch"])


def _lam(meta: dict, epoch: int) -> float | None:
    """λ at the end of `epoch` (1-based) for methods with a robustness term; None for the others
    or when the settings are not readable. A setting an older run did not record ran at its default."""
    settings = meta.get("hyperparameters")
    if meta.get("method") not in DEFAULT_LAMBDA or not isinstance(settings, dict):
        return None
    lam = _number(settings.get("lam", DEFAULT_LAMBDA[meta["method"]]))
    warmup = _number(settings.get("lam_warmup", TRAIN["lam_warmup"].default))
    if lam is None or warmup is None:
        return None
    return robustness_weight(SimpleNamespace(lam=lam, lam_warmup=warmup), epoch, 0, 1)


def history_frame(metas: dict[str, dict]) -> pd.DataFrame:
    """checkpoint, epoch, quantity, value: one row per checkpoint, finished epoch and quantity of
    QUANTITIES that its metadata holds (non-numeric values are left out)."""
    rows = []
    for name, meta in metas.items():
        for entry in _epochs(meta):
            values = {**{q: _number(entry.get(q)) for q in ("loss", "acc", "lr")}, "lam": _lam(meta, entry["epoch"])}
            rows += [(name, entry["epoch"], q, v) for q, v in values.items() if v is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def without_history(metas: dict[str, dict]) -> list[str]:
    """The checkpoints whose metadata hold no training history (imported ones, for instance)."""
    return [name for name, meta in metas.items() if not _epochs(meta)]


def history_figure(frame: pd.DataFrame, quantity: str, names: list[str]) -> dict:
    """The spec of one quantity's curves: a line with a point per epoch for each checkpoint of
    `names` (colours in that order); the spec depends only on the quantity and the names."""
    part = frame[frame.quantity == quantity][["checkpoint", "epoch", "value"]].reset_index(drop=True)
    return vega_spec({"history": part}, data={"name": "history"}, title=QUANTITIES[quantity], height=220,
                     mark={"type": "line", "point": True}, encoding={
                         "x": {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"tickMinStep": 1}},
                         "y": {"field": "value", "type": "quantitative", "title": QUANTITIES[quantity],
                               "scale": {"zero": False}},
                         "color": {"field": "checkpoint", "type": "nominal", "title": "checkpoint", "sort": names,
                                   "scale": {"domain": names, "scheme": SCHEME}},
                         "tooltip": [{"field": "checkpoint", "type": "nominal"},
                                     {"field": "epoch", "type": "quantitative"},
                                     {"field": "value", "type": "quantitative", "format": ".4g"}]})
