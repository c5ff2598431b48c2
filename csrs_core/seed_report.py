"""Methods compared over independently seeded training runs: each folder holds one seed's run of the
same recipes (checkpoints matched by name), each certified on the same test examples. Per checkpoint
name: the mean and standard deviation over the seeds of Acc, Rob_cs(ε) and ACR, and against the
baseline both kinds of test a reviewer asks for: each seed's exact paired McNemar test (test-sample
variation within one training run) and a t-test over seeds of the per-seed differences (training-run
variation: does the mean difference exceed what reseeding gives)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from csrs_core.models.checkpoints import read_meta
from csrs_core.reports import Report, report_table
from csrs_core.settings import SettingError

METRICS = ("acc", "rob_cs", "acr")
SEED_COLUMNS = (["checkpoint", "method", "seeds"] + [f"{m}{s}" for m in METRICS for s in ("", "_sd")]
                + ["d_acc", "p_acc_seeds", "p_acc_each", "d_rob_cs", "p_rob_cs_seeds", "p_rob_cs_each"])


def over_seeds_p(differences) -> float:
    """Two-sided p-value of a one-sample t-test that the mean of the per-seed differences is 0: 1 when every
    difference is 0; NaN for fewer than two seeds, or when the differences are equal but not 0 (no spread
    between seeds: the test is undefined, and more seeds are needed)."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    if np.all(d == d[0]):
        return float("nan")
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def seeds_table(folders, cost_spec: str, eps: float, alpha: float = 0.001, mode: str = "sound",
                baseline: str | None = None, examples=None) -> Report:
    """One row per checkpoint name present in every folder (csrs_core.reports.report_table of each
    folder at `eps`; the baseline as there, and the same in every folder). Columns: seeds (the training
    seeds the checkpoints' metadata record), the mean and sd (ddof 1) over folders of acc, rob_cs and
    acr, the mean differences d_acc and d_rob_cs against the baseline, p_*_seeds (over_seeds_p of the
    per-seed differences) and p_*_each (each seed's exact McNemar p-value, in folder order)."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise SettingError(f"a comparison over seeds needs at least two folders (one per seed); got {len(folders)}")
    first = report_table(folders[0], cost_spec, (eps,), alpha, mode, baseline, examples=examples)
    if first.baseline is None:
        raise SettingError(f"no checkpoint with a valid certification record under {folders[0]}")
    reports = [first] + [report_table(f, cost_spec, (eps,), alpha, mode, first.baseline, examples=examples)
                         for f in folders[1:]]
    tables = [r.table.set_index("checkpoint") for r in reports]
    names = [n for n in tables[0].index if all(n in t.index for t in tables[1:])]
    notes = [f"{n}: left out: not in every folder" for n in tables[0].index if n not in names]
    examples = {r.table["examples"].iloc[0] for r in reports}
    if len(examples) > 1:
        notes.append(f"the folders' records cover different numbers of examples ({sorted(examples)})")
    rows = []
    seeds = {name: [_seed(f / f"{name}.pt") for f in folders] for name in names}
    repeated = [n for n, s in seeds.items() if len(set(s)) < len(s)]
    if repeated:
        notes.append(f"{', '.join(repeated)}: some folders hold runs with the same training seed "
                     f"({'; '.join(f'{n}: {seeds[n]}' for n in repeated)}): they are not independent runs")
    for name in names:
        values = {m: np.array([t.loc[name, m] for t in tables], dtype=float) for m in (*METRICS, "d_acc", "d_rob_cs")}
        row = {"checkpoint": name, "method": tables[0].loc[name, "method"],
               "seeds": ",".join(map(str, seeds[name]))}
        for m in METRICS:
            row[m], row[f"{m}_sd"] = values[m].mean(), values[m].std(ddof=1)
        for m in ("acc", "rob_cs"):
            row[f"d_{m}"] = values[f"d_{m}"].mean()
            row[f"p_{m}_seeds"] = np.nan if name == first.baseline else over_seeds_p(values[f"d_{m}"])
            row[f"p_{m}_each"] = ", ".join("-" if pd.isna(t.loc[name, f"p_{m}"]) else f"{t.loc[name, f'p_{m}']:.2g}"
                                           for t in tables)
        rows.append(row)
    header = (first.header.splitlines()[0] + f"\nover {len(folders)} training seeds: each value is the mean over the "
              f"seeds' runs, *_sd their standard deviation; d_* = mean of the per-seed differences from baseline "
              f"{first.baseline}; p_*_seeds = two-sided one-sample t-test over seeds of those differences "
              f"(variation between training runs); p_*_each = each seed's exact McNemar p-value on the same "
              f"test examples (variation of the test sample within one run)")
    return Report(pd.DataFrame(rows, columns=SEED_COLUMNS), notes + [n for r in reports for n in r.notes], header,
                  first.baseline, [], (eps,))


def _seed(path: Path):
    """The training seed a checkpoint's metadata records ('?' when it records none)."""
    return read_meta(path).get("hyperparameters", {}).get("seed", "?")
