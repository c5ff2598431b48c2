"""`csrs report --seeds`: methods compared over training seeds, each number checked against the per-folder
tables it summarises and the t-test against an independent computation."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from csrs_core.cli import commands as cli
from csrs_core.reports import report_table
from csrs_core.seed_report import over_seeds_p, seeds_table
from csrs_core.settings import SettingError

CIFAR = Path(__file__).resolve().parents[1] / "checkpoints" / "cifar10"


def _run(folder: Path, names: dict) -> Path:
    """A folder standing for one seed's run: shipped checkpoints (and their records) under other names."""
    folder.mkdir()
    for name, source in names.items():
        shutil.copy(CIFAR / f"{source}.pt", folder / f"{name}.pt")
        shutil.copytree(CIFAR / f"{source}.certs", folder / f"{name}.certs")
    return folder


@pytest.fixture()
def runs(tmp_path):
    a = _run(tmp_path / "a", {"cohen": "cohen", "cs": "cs-macer-seed3", "mac": "macer"})
    b = _run(tmp_path / "b", {"cohen": "cohen-r", "cs": "cs-macer-pair3to5", "mac": "cohen"})
    c = _run(tmp_path / "c", {"cohen": "cohen", "cs": "cs-macer-pair3to5", "mac": "cs-macer-seed3"})
    return [a, b, c]


def test_means_sds_and_tests_are_those_of_the_per_seed_tables(runs):
    report = seeds_table(runs, "seedwise:3", 0.25, baseline="cohen")
    tables = [report_table(f, "seedwise:3", 0.25, baseline="cohen").table.set_index("checkpoint") for f in runs]
    df = report.table.set_index("checkpoint")
    assert list(df.index) == ["cohen", "cs", "mac"] and report.baseline == "cohen"
    for name in df.index:
        for m in ("acc", "rob_cs", "acr"):
            v = np.array([t.loc[name, m] for t in tables])
            assert df.loc[name, m] == pytest.approx(v.mean()) and df.loc[name, f"{m}_sd"] == pytest.approx(v.std(ddof=1))
        d = np.array([t.loc[name, "rob_cs"] - t.loc["cohen", "rob_cs"] for t in tables])
        assert df.loc[name, "d_rob_cs"] == pytest.approx(d.mean())
        assert df.loc[name, "p_rob_cs_each"] == ", ".join(
            "-" if np.isnan(t.loc[name, "p_rob_cs"]) else f"{t.loc[name, 'p_rob_cs']:.2g}" for t in tables)
        if name != "cohen":  # an independent t-test: t = mean / (sd / √k), k − 1 degrees of freedom
            t_stat = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
            assert df.loc[name, "p_rob_cs_seeds"] == pytest.approx(2 * stats.t.sf(abs(t_stat), len(d) - 1))
    assert np.isnan(df.loc["cohen", "p_rob_cs_seeds"]) and df.loc["cs", "seeds"] == "0,0,0"
    assert "t-test over seeds" in report.header and any("same training seed" in n for n in report.notes)


def test_edge_cases_of_the_test_over_seeds():
    assert np.isnan(over_seeds_p([0.1])) and over_seeds_p([0, 0, 0]) == 1.0 and np.isnan(over_seeds_p([0.1, 0.1]))
    assert over_seeds_p([0.1, -0.1, 0.0]) == pytest.approx(1.0)


def test_refusals(runs, tmp_path):
    with pytest.raises(SettingError, match="at least two folders"):
        seeds_table(runs[:1], "seedwise:3", 0.25)
    extra = _run(tmp_path / "d", {"cohen": "cohen", "cs": "cs-macer-seed3"})
    report = seeds_table([runs[0], extra], "seedwise:3", 0.25, baseline="cohen")
    assert list(report.table["checkpoint"]) == ["cohen", "cs"] and "mac: left out: not in every folder" in report.notes


def test_command_line(runs, capsys):
    argv = ["report", "--checkpoints", str(runs[0]), "--seeds", f"{runs[1]},{runs[2]}", "--cost", "seedwise:3",
            "--eps", "0.25", "--baseline", "cohen", "--format", "markdown"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| checkpoint | method | seeds | acc | acc_sd |") and len(out) == 5
    assert cli.main(argv[:-1] + ["latex"]) != 0 and "not available with --seeds" in capsys.readouterr().err
