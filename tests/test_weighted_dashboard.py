"""Real-valued cost matrices on the dashboard (AppTest): the grid of costs, presets and import with
costs, the τ threshold, the expected-cost views, the 95 % bands, the editor by rows for 1,000 classes,
and the Train page's own matrix."""
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from csrs_core import jobs
from csrs_core.certification.certificates import certified_cost, certify_from_counts
from csrs_core.certification.cost import CostMatrix
from csrs_core.certification.metrics import cost_curve, expected_cost, rob_cs_at, summarize
from csrs_core.certification.stats import proportion_interval
from csrs_core.dashboard import figures
from csrs_core.sampling.store import list_records, load_record

from dashboard_fixtures import build_case, build_large_case, click_grid, open_app, open_train_page

NAMES = ["red", "green", "blue", "grey"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, synthetic_checkpoint):
    return build_case(tmp_path_factory.mktemp("weighted"), synthetic_checkpoint)


def _param(at, name):
    value = at.query_params[name]
    return value[0] if isinstance(value, list) else value


def _metrics(at) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "checkpoint" in d.value)


def _row(at, name):
    df = _metrics(at)
    return df[df.checkpoint == name].iloc[0]


def _record(root, name, case="synth"):
    [info] = list_records(root / case / f"{name}.pt")
    return load_record(info.path)


def _costs(rec, cost, eps, alpha=0.001):
    return certified_cost(rec.counts0, rec.counts, rec.labels, cost, sigma=rec.meta["sigma"], alpha=alpha, eps=eps)


def _chart(at, y_field):
    """(spec, {dataset name: frame}) of the figure whose vertical axis (or one of its layers') shows y_field."""
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        fields = [part.get("encoding", {}).get("y", {}).get("field") for part in [spec, *spec.get("layer", [])]]
        if y_field in fields:
            return spec, {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets}
    raise AssertionError(f"no figure shows {y_field}")


def _weighted():
    """seedwise:3 with grey -> red costing 5 and red -> green costing 2.5."""
    weights = CostMatrix.seedwise(4, [3], NAMES).weights.copy()
    weights[3, 0], weights[0, 1] = 5.0, 2.5
    return weights


def test_the_grid_sends_costs_and_the_metrics_follow(root, monkeypatch):
    at = open_app(root, monkeypatch)
    at.number_input(key="eps::synth").set_value(0.5).run()  # beyond what n = 100 certifies: mistakes cost
    weights = _weighted()
    click_grid(at, weights)
    assert not at.exception, at.exception
    cost = CostMatrix(weights, NAMES)
    assert _param(at, "cost") == cost.describe() == "pairwise:0>1=2.5;3>0=5,1,2"
    [grid] = at.get("bidi_component")
    assert json.loads(grid.proto.json)["matrix"] == weights.tolist()  # the grid shows the costs it holds
    for name in ("cohen", "csmacer"):
        rec = _record(root, name)
        costs = _costs(rec, cost, 0.5)
        row = _row(at, name)
        assert row.expected_cost == pytest.approx(expected_cost(costs))
        assert row.rob_cs_tau == pytest.approx(rob_cs_at(costs, cost.sensitive_mask(rec.labels), 0.0))
    binary = CostMatrix(cost.matrix, NAMES)  # the same support with every cost 1: another expected cost
    assert _row(at, "cohen").expected_cost != pytest.approx(expected_cost(_costs(_record(root, "cohen"), binary, 0.5)))
    weights[3, 0] = 0.0  # a click on a cell of cost 5: the browser sends it free
    click_grid(at, weights)
    assert _param(at, "cost") == "pairwise:0>1=2.5;3>1,2"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "2", None, 10 ** 400, "short row"])
def test_the_grid_refuses_anything_but_non_negative_finite_costs(root, monkeypatch, bad):
    sent = [[0, 1, 0]] * 4 if bad == "short row" else [[0, bad, 0, 0]] * 4
    at = open_app(root, monkeypatch)
    before = _param(at, "cost")
    click_grid(at, np.array(sent, dtype=object))
    assert not at.exception and _param(at, "cost") == before


def test_a_cost_sent_on_the_diagonal_is_dropped(root, monkeypatch):
    at = open_app(root, monkeypatch)
    weights = _weighted()
    np.fill_diagonal(weights, 3.0)
    click_grid(at, weights)
    assert _param(at, "cost") == "pairwise:0>1=2.5;3>0=5,1,2"


def test_presets_and_import_carry_costs(root, monkeypatch):
    at = open_app(root, monkeypatch)
    at.number_input(key="preset_weight::synth").set_value(3.0)
    at.button(key="preset_overall::synth").click().run()
    assert _param(at, "cost") == "seedwise:0=3,1=3,2=3,3=3"
    assert json.loads(at.get("bidi_component")[0].proto.json)["matrix"] == (3 * (1 - np.eye(4))).tolist()
    at.number_input(key="preset_weight::synth").set_value(0.5)
    at.multiselect(key="seeds::synth").set_value([1]).run()  # the button is enabled once a seed is picked
    at.button(key="preset_seed::synth").click().run()
    assert _param(at, "cost") == "seedwise:1=0.5"
    at.number_input(key="preset_weight::synth").set_value(4.0)
    at.selectbox(key="pseed::synth").set_value(2).run()  # the targets offered follow the seed
    at.multiselect(key="ptargets::synth").set_value([0, 3]).run()
    at.button(key="preset_pair::synth").click().run()
    assert _param(at, "cost") == "pairwise:2>0=4,3=4"
    at.number_input(key="preset_weight::synth").set_value(0.0)
    at.button(key="preset_overall::synth").click().run()
    assert _param(at, "cost") == "pairwise:2>0=4,3=4" and any("must be > 0" in e.value for e in at.error)
    at.text_input(key="import::synth").input(CostMatrix(_weighted(), NAMES).to_json())
    at.button(key="import_btn::synth").click().run()
    assert _param(at, "cost") == "pairwise:0>1=2.5;3>0=5,1,2" and not at.error
    at.text_input(key="import::synth").input("pairwise:1>0=10")
    at.button(key="import_btn::synth").click().run()
    assert _param(at, "cost") == "pairwise:1>0=10"


def test_the_url_brings_back_a_matrix_of_costs(root, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from dashboard_fixtures import APP
    monkeypatch.setenv("CSRS_CHECKPOINTS", str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["case"], at.query_params["cost"] = "synth", "pairwise:0>1=2.5;3>0=5,1,2"
    at.run()
    assert json.loads(at.get("bidi_component")[0].proto.json)["matrix"] == _weighted().tolist()


def test_tau_and_the_expected_cost_curves(root, monkeypatch):
    at = open_app(root, monkeypatch)
    at.number_input(key="eps::synth").set_value(0.5).run()  # every costly class reachable: grey costs 5, red 2.5
    click_grid(at, _weighted())
    tau = at.select_slider(key="tau::synth")
    assert tau.options == ["0", "1", "2.5", "5"] and tau.value == 0
    tau.set_value(2.5).run()
    cost = CostMatrix(_weighted(), NAMES)
    _, data = _chart(at, "rob_cs_tau")
    for name in ("cohen", "csmacer"):
        rec = _record(root, name)
        sensitive = cost.sensitive_mask(rec.labels)
        at_eps = _costs(rec, cost, 0.5)
        assert _row(at, name).rob_cs_tau == pytest.approx(rob_cs_at(at_eps, sensitive, 2.5))
        assert rob_cs_at(at_eps, sensitive, 2.5) != rob_cs_at(at_eps, sensitive, 0.0)
        shown = data["costs"][data["costs"].checkpoint == name]
        expected = cost_curve(_costs(rec, cost, shown.eps.to_numpy()), shown.eps, sensitive, 2.5)
        assert np.allclose(shown.rob_cs_tau, expected.rob_cs_tau)
        _, costs = _chart(at, "expected_cost")
        line = costs["costs"][costs["costs"].checkpoint == name]
        assert np.allclose(line.expected_cost, expected.expected_cost) and line.expected_cost.iloc[-1] > 0
    assert any(s.value.startswith("### Rob_cs(ε, τ) vs ε at τ = 2.5") for s in at.markdown)
    click_grid(at, CostMatrix(_weighted(), NAMES).matrix)  # binary now: the cost views would repeat Rob_cs
    assert "tau::synth" not in [s.key for s in at.select_slider]
    assert not any(s.value.startswith("### Rob_cs(ε, τ)") for s in at.markdown)
    assert any("appear once a cost other than 0 or 1 is set" in m.value for m in at.markdown)
    for name in ("cohen", "csmacer"):
        assert _row(at, name).rob_cs_tau == pytest.approx(_row(at, name).rob_cs)   # τ = 0: Rob_cs itself


def test_the_tradeoff_can_put_the_expected_cost_on_its_axis(root, monkeypatch):
    at = open_app(root, monkeypatch)
    click_grid(at, _weighted())
    spec, _ = _chart(at, "acc")
    assert spec["layer"][1]["encoding"]["x"]["field"] == "rob_cs"
    at.radio(key="tradeoff_x::synth").set_value("expected_cost").run()
    spec, data = _chart(at, "acc")
    assert spec["layer"][1]["encoding"]["x"]["field"] == "expected_cost"
    table = _metrics(at).set_index("checkpoint")
    shown = data["points"].set_index("checkpoint").expected_cost
    assert np.allclose(shown, table.expected_cost[shown.index])


def test_the_curves_have_a_95_percent_band_that_can_be_hidden(root, monkeypatch):
    at = open_app(root, monkeypatch)
    spec, data = _chart(at, "share")
    area = spec["layer"][0]
    assert area["mark"]["type"] == "area" and area["mark"]["opacity"] < 1
    curves = data["bands"]
    assert (curves.lo <= curves.share + 1e-12).all() and (curves.share <= curves.hi + 1e-12).all()
    rec = _record(root, "cohen")
    table = certify_from_counts(rec.counts0, rec.counts, rec.labels, CostMatrix.seedwise(4, [3], NAMES),
                                sigma=rec.meta["sigma"])
    n_sensitive = int(table.sensitive.sum())
    point = curves[(curves.checkpoint == "cohen") & (curves.metric == "Rob_cs")].iloc[5]
    assert (point.lo, point.hi) == pytest.approx(proportion_interval(round(point.share * n_sensitive), n_sensitive))
    at.checkbox(key="show_band").uncheck().run()
    spec, data = _chart(at, "share")
    assert [layer["mark"] for layer in spec["layer"]] == ["line"] and "bands" not in data


def test_no_setting_on_explore_samples_again(root, monkeypatch):
    """Matrix, τ, α, ε and mode only rerun stage B: stage A's sampling is never reached and the stored
    records stay as they are."""
    from csrs_core.sampling import stage_a

    def no_sampling(*args, **kwargs):
        raise AssertionError("Explore sampled")

    monkeypatch.setattr(stage_a, "_sample_share", no_sampling)
    stored = {p: p.stat().st_mtime_ns for p in (root / "synth").rglob("*.npz")}
    at = open_app(root, monkeypatch)
    click_grid(at, _weighted())
    at.select_slider(key="tau::synth").set_value(5).run()
    at.select_slider(key="alpha").set_value(0.01).run()
    at.number_input(key="eps::synth").set_value(0.5).run()
    at.radio(key="mode").set_value("paper").run()
    assert not at.exception, at.exception
    assert {p: p.stat().st_mtime_ns for p in (root / "synth").rglob("*.npz")} == stored


def test_figure_helpers_for_costs():
    points = pd.DataFrame({"checkpoint": list("abc"), "method": ["gaussian", "macer", "cs-macer"],
                           "acc": [0.9, 0.8, 0.7], "rob_cs": [0.1, 0.5, 0.4], "expected_cost": [2.0, 0.5, 1.0]})
    assert figures.pareto_front(points, "expected_cost").checkpoint.tolist() == ["b", "a"]  # c: less acc, more cost
    assert figures.pareto_front(points).checkpoint.tolist() == ["b", "a"]
    curve = pd.DataFrame({"eps": [0.0, 0.5], "rob_cs": [0.5, np.nan], "rob_std": [0.25, 0.0],
                          "certified_acc": [0.75, 0.1]})
    banded = figures.with_intervals(curve, examples=20, sensitive_examples=8)
    assert (banded.rob_cs_lo[0], banded.rob_cs_hi[0]) == proportion_interval(4, 8)
    assert (banded.certified_acc_lo[1], banded.certified_acc_hi[1]) == proportion_interval(2, 20)
    assert np.isnan(banded.rob_cs_lo[1])


@pytest.fixture(scope="module")
def large_root(tmp_path_factory):
    return build_large_case(tmp_path_factory.mktemp("large"))


def test_a_case_of_1000_classes_opens_in_seconds_and_is_edited_by_rows(large_root, monkeypatch):
    started = time.perf_counter()
    at = open_app(large_root, monkeypatch)
    opened = time.perf_counter() - started
    assert opened < 30, f"opening a 1,000-class case took {opened:.1f} s"
    assert not at.get("bidi_component")  # no grid of a million cells
    assert _param(at, "cost") == "overall"  # no case.json: every mistake costs, and the page says how to set one
    assert any("no case.json" in c.value for c in at.caption)
    at.button(key="preset_clear::many").click().run()
    at.button(key="preset_overall::many").click().run()
    assert _param(at, "cost") == "overall" and len(at.query_params["cost"][0]) < 2000
    assert any("1000 of 1000 true classes" in c.value for c in at.caption)
    at.button(key="preset_clear::many").click().run()
    rec = _record(large_root, "wide", "many")
    row = int(rec.labels[0])
    at.selectbox(key="row::many").set_value(row).run()
    assert at.multiselect(key="row_targets::many").value == []
    at.multiselect(key="row_targets::many").set_value([7, 9])
    at.number_input(key="row_weight::many").set_value(4.0)
    at.button(key="row_apply::many").click().run()
    assert not at.exception, at.exception
    assert _param(at, "cost") == f"pairwise:{row}>7=4,9=4"
    cost = CostMatrix.pairwise(1000, {row: {7: 4.0, 9: 4.0}})
    table = certify_from_counts(rec.counts0, rec.counts, rec.labels, cost, sigma=rec.meta["sigma"])
    shown = _row(at, "wide")
    assert shown.sensitive_examples == summarize(table, 0.25)["n_sensitive"] > 0
    assert shown.expected_cost == pytest.approx(expected_cost(_costs(rec, cost, 0.25)))
    assert at.multiselect(key="row_targets::many").value == [7, 9]  # the editor shows the stored row


def _train_page(tmp_path, synthetic_checkpoint, monkeypatch):
    return open_train_page(tmp_path / "ck", synthetic_checkpoint, monkeypatch), tmp_path / "ck"


@pytest.mark.parametrize("method", ["cs-macer", "cohen-r"])
def test_train_refuses_a_cost_method_without_a_costly_mistake(tmp_path, synthetic_checkpoint, monkeypatch, method):
    at, root = _train_page(tmp_path, synthetic_checkpoint, monkeypatch)
    assert any("`none`" in m.value for m in at.caption)  # the matrix is shown before starting, not Explore's
    at.selectbox(key="train::method").select(method)
    at.button[0].click().run()
    assert any(method in e.value and "--cost" in e.value and "'none'" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert jobs.list_jobs(root) == []


def test_train_passes_its_own_matrix_as_cost(tmp_path, synthetic_checkpoint, monkeypatch):
    at, root = _train_page(tmp_path, synthetic_checkpoint, monkeypatch)
    weights = np.zeros((4, 4))
    weights[0, 1] = 2.5
    click_grid(at, weights)
    assert not at.exception, at.exception
    assert any("`pairwise:0>1=2.5`" in m.value for m in at.caption)
    assert "cost" not in at.query_params  # the training matrix is not in the link
    at.number_input(key="train::epochs").set_value(1)
    at.number_input(key="train::max_steps_per_epoch").set_value(1)
    at.text_input(key="train::name").input("weighted")
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [job] = jobs.list_jobs(root)
    argv = job["argv"]
    assert argv[argv.index("--cost") + 1] == "pairwise:0>1=2.5" and argv[argv.index("--method") + 1] == "cs-macer"
    jobs.cancel(root, job["id"])
    jobs.wait(root, job["id"], 120)
