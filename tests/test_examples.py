"""The Examples page: the per-example logic (csrs_core.certification.explain) against direct bound computations,
its figure, and the page under Streamlit's AppTest on the synthetic case."""
import shutil

import numpy as np
import pandas as pd
import pytest

from csrs_core.certification import explain as ex
from csrs_core.certification.bounds import lower_confidence_bound, norm_ppf, upper_confidence_bound
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import CostMatrix
from csrs_core.data import load_dataset

SIGMA, ALPHA = 0.25, 0.001
NAMES = ["red", "green", "blue", "grey"]
COST = CostMatrix.seedwise(4, [3], NAMES)          # true grey (3): red, green and blue cost


def _table(counts0, counts, labels, cost=COST, mode="sound"):
    return certify_from_counts(np.array(counts0), np.array(counts), np.array(labels), cost, sigma=SIGMA,
                               alpha=ALPHA, mode=mode)


def _explain(counts0, counts, label, eps=0.25, mode="sound", cost=COST):
    return ex.explain(counts0, counts, label, cost, SIGMA, ALPHA, mode, eps, NAMES)


# the logic ------------------------------------------------------------------------------------------
def test_an_abstaining_example_says_its_lcb_is_at_most_one_half():
    counts0, counts = [45, 30, 25, 0], [450, 300, 250, 0]       # red 45 %: abstains; true red, not sensitive
    info = _explain(counts0, counts, 0)
    lcb = float(lower_confidence_bound(450, 1000, ALPHA))
    assert lcb <= 0.5 and info["p_a_lower"] == pytest.approx(lcb)
    assert info["outcome"] == ex.ABSTAINED and info["pred_std"] == -1
    assert "abstains" in info["reasons"][0] and f"{lcb:.4f}" in info["reasons"][0] and "≤ 1/2" in info["reasons"][0]
    assert info["needed_n"] is None and "No number of samples" in " ".join(info["reasons"])   # 45 % never > 1/2
    t = _table([counts0], [counts], [0])
    assert ex.outcomes(t, COST, 0.25)[0] == ex.ABSTAINED


def test_a_costly_top_class_is_never_cost_robust():
    counts0, counts = [90, 5, 5, 0], [950, 20, 20, 10]           # true grey, top red: red costs for grey
    info = _explain(counts0, counts, 3, eps=0.0)
    assert info["outcome"] == ex.COSTLY and info["radius"] == -np.inf and info["r2"] == -np.inf
    assert "lies in Ω_y" in info["reasons"][0] and info["needed_n"] is None
    assert info["omega"] == [0, 1, 2]
    t = _table([counts0], [counts], [3])
    assert ex.outcomes(t, COST, 0.0)[0] == ex.COSTLY and bool(ex.top_is_costly(t, COST)[0])


def test_a_cost_robust_example_gives_its_radius_and_limiting_class():
    counts0, counts = [0, 2, 0, 98], [3, 12, 0, 985]              # true grey, top grey; green limits R2
    info = _explain(counts0, counts, 3, eps=0.25)
    phi_a = norm_ppf(lower_confidence_bound(985, 1000, ALPHA / 2))
    r2 = SIGMA / 2 * (phi_a - norm_ppf(upper_confidence_bound(12, 1000, ALPHA / 6)))
    radius = max(SIGMA * phi_a, r2)
    assert info["r2"] == pytest.approx(r2) and info["radius"] == pytest.approx(radius) and radius > 0.25
    assert info["limiting"] == 1 and info["outcome"] == ex.CERTIFIED and info["needed_n"] is None
    assert "Cost-robust at ε = 0.25" in info["reasons"][-1] and "costly class green" in info["reasons"][-1]
    ucb = info["costly"].set_index("class").ucb
    assert ucb[1] == pytest.approx(float(upper_confidence_bound(12, 1000, ALPHA / 6)))
    t = _table([counts0], [counts], [3])
    assert t.cost_robust_radius[0] == pytest.approx(radius) and t.r2[0] == pytest.approx(r2)
    assert ex.outcomes(t, COST, 0.25)[0] == ex.CERTIFIED


def _radius_direct(shares, m, mode="sound"):
    """The sensitive example's radius with fractional counts shares * m, straight from the bounds."""
    k_a, k_b = shares[3] * m, shares[:3].max() * m
    phi_a = norm_ppf(lower_confidence_bound(k_a, m, ALPHA / 2))
    r2 = SIGMA / 2 * (phi_a - norm_ppf(upper_confidence_bound(k_b, m, ALPHA / 6)))
    r1 = SIGMA * (phi_a if mode == "sound" else norm_ppf(lower_confidence_bound(k_a, m, ALPHA)))
    return max(r1, r2)


@pytest.mark.parametrize("mode", ["sound", "paper"])
def test_a_not_yet_robust_example_estimates_the_n_that_would_certify_it(mode):
    counts0, counts = [10, 0, 0, 90], [100, 20, 0, 880]           # true grey, top grey, red limits R2
    eps = 0.28                                                    # radius ≈ 0.27 now, ≈ 0.31 as n → ∞
    info = _explain(counts0, counts, 3, eps=eps, mode=mode)
    assert info["outcome"] == ex.NOT_CERTIFIED and info["radius"] <= eps and info["limiting"] == 0
    reasons = " ".join(info["reasons"])
    assert "Not cost-robust at ε = 0.28" in reasons and "costly class red" in reasons
    need = info["needed_n"]
    shares = np.array(counts) / 1000
    assert need is not None and need > 1000
    assert _radius_direct(shares, need, mode) > eps >= _radius_direct(shares, need - 1, mode)
    assert f"{need:,}" in " ".join(info["reasons"]) and "estimate" in " ".join(info["reasons"])
    t = _table([counts0], [counts], [3], mode=mode)
    assert t.cost_robust_radius[0] == pytest.approx(info["radius"])
    assert info["limit"] == pytest.approx(max(SIGMA * norm_ppf(0.88), SIGMA / 2 * (norm_ppf(0.88) - norm_ppf(0.1))))


def test_the_needed_n_of_a_non_sensitive_example_and_when_no_n_helps():
    counts0, counts = [0, 100, 0, 0], [5, 960, 20, 15]            # true green (not sensitive), R1 too small
    info = _explain(counts0, counts, 1, eps=0.42)                  # R1 ≈ 0.39 now, 0.44 as n → ∞
    need = info["needed_n"]
    r1 = lambda m: SIGMA * norm_ppf(lower_confidence_bound(0.96 * m, m, ALPHA))  # noqa: E731
    assert need is not None and r1(need) > 0.42 >= r1(need - 1)
    assert ex.needed_n(counts, 1, 1, np.zeros(4, bool), SIGMA, ALPHA, "sound", eps=3.0) is None   # limit 0.44
    wrong = _explain([100, 0, 0, 0], [960, 40, 0, 0], 1)           # top red, true green: wrong class
    assert wrong["outcome"] == ex.NOT_CERTIFIED and "not the true class" in wrong["reasons"][0]
    assert wrong["needed_n"] is None


def test_r2_can_certify_an_example_whose_standard_certificate_abstains():
    counts0, counts = [0, 0, 0, 100], [0, 0, 560, 440]             # true grey, top grey with 44 %: abstains
    cost = CostMatrix.pairwise(4, {3: [0]}, NAMES)                 # only grey -> red costs, and red gets no vote
    info = _explain(counts0, counts, 3, eps=0.1, cost=cost)
    assert info["pred_std"] == -1 and info["r2"] > 0.1 and info["outcome"] == ex.CERTIFIED
    assert "abstains" in info["reasons"][0] and "Cost-robust" in info["reasons"][1]


def test_outcomes_match_explain_row_by_row_and_discordance():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 200)
    counts = rng.multinomial(400, rng.dirichlet(np.ones(4) * 0.4, 200)).astype(np.int64)
    counts0 = rng.multinomial(50, counts / 400).astype(np.int64)
    cost = CostMatrix.pairwise(4, {3: [0, 1], 2: [0]}, NAMES)
    for mode in ("sound", "paper"):
        t = _table(counts0, counts, labels, cost, mode)
        for eps in (0.0, 0.2):
            out = ex.outcomes(t, cost, eps)
            for i in range(200):
                info = ex.explain(counts0[i], counts[i], labels[i], cost, SIGMA, ALPHA, mode, eps, NAMES)
                assert info["outcome"] == out[i], (mode, eps, i)
                assert info["p_a_lower"] == pytest.approx(t.p_a_lower[i])
                assert info["radius"] == pytest.approx(ex.radius(t)[i])
    a, b = ex.outcomes(t, cost, 0.0), ex.outcomes(t, cost, 0.2)
    assert np.array_equal(ex.discordant(a, b), a != b) and ex.discordant(a, b).any()
    assert set(np.unique(a)) <= set(ex.OUTCOMES)


def test_vote_histogram_spec_does_not_depend_on_the_numbers():
    from csrs_core.dashboard import figures

    def votes(scale):
        return pd.DataFrame([{"class": n, "sample": s, "votes": scale * k, "share": 0.1 * k, "costly": "in Ω_y"}
                             for s in figures.VOTE_SAMPLES for k, n in enumerate(NAMES)])
    one, two = figures.vote_histogram(votes(1), NAMES), figures.vote_histogram(votes(2), NAMES)
    assert {k: v for k, v in one.items() if k != "datasets"} == {k: v for k, v in two.items() if k != "datasets"}
    assert one["encoding"]["x"]["sort"] == NAMES and len(one["datasets"]["votes"]) == 8


# the page -------------------------------------------------------------------------------------------
PAGE = "views/examples.py"


@pytest.fixture(scope="module")
def root(tmp_path_factory, synthetic_checkpoint):
    from dashboard_fixtures import build_case
    return build_case(tmp_path_factory.mktemp("examples"), synthetic_checkpoint)


def _open(root, monkeypatch, example=None):
    from dashboard_fixtures import APP
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("CSRS_CHECKPOINTS", str(root))
    at = AppTest.from_file(APP, default_timeout=60)
    if example is not None:
        at.query_params["example"] = example
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _gallery(at):
    """The gallery's thumbnails' captions ('#index true → predicted, r = ...'), in page order."""
    return [img.caption for e in at.get("image") for img in e.proto.imgs if img.caption.startswith("#")]


def _sample_indices(root):
    with np.load(root / "synth" / "test-sample.npz") as z:
        return z["indices"], z["labels"]


def _outcomes(root, name, eps=None):
    from csrs_core.sampling.store import list_records, load_record
    [info] = list_records(root / "synth" / f"{name}.pt")
    rec = load_record(info.path)
    t = certify_from_counts(rec.counts0, rec.counts, rec.labels, COST, sigma=rec.meta["sigma"], alpha=ALPHA)
    return t, ex.outcomes(t, COST, rec.meta["sigma"] if eps is None else eps)


def _shown(at) -> int:
    [head] = [h.value for h in at.subheader if h.value.startswith("Gallery")]
    return int(head.split()[1])


def test_the_page_shows_a_gallery_and_a_filter_narrows_it(root, monkeypatch):
    at = _open(root, monkeypatch)
    assert _shown(at) == 64 and any(h.value.startswith("Gallery: 64 of 64") for h in at.subheader)
    captions = _gallery(at)
    assert len(captions) == 24 and captions[0].startswith("#")
    at.number_input(key="examples::page::synth").set_value(3).run()
    assert len(_gallery(at)) == 16                                 # 64 = 24 + 24 + 16
    at.multiselect(key="examples::true::synth").select("grey").run()
    assert not at.exception and _shown(at) == 16
    captions = _gallery(at)
    assert len(captions) == 16 and all(" grey → " in c for c in captions)   # back on page 1
    at.multiselect(key="examples::outcome").select(ex.CERTIFIED).run()
    t, outcomes = _outcomes(root, "cohen")
    assert not at.exception and _shown(at) == int(((t.label == 3) & (outcomes == ex.CERTIFIED)).sum())


def test_discordance_and_sort(root, monkeypatch):
    at = _open(root, monkeypatch)
    # the case's defaults: A is the model to look at first (its CS-MACER), B the baseline of its paired tests
    assert at.selectbox(key="examples::a::synth").value == "csmacer"
    assert at.selectbox(key="examples::b::synth").value == "cohen"
    at.checkbox(key="examples::discordant::synth").check().run()
    assert not at.exception
    assert _shown(at) == int(ex.discordant(_outcomes(root, "cohen")[1], _outcomes(root, "csmacer")[1]).sum())
    at.checkbox(key="examples::discordant::synth").uncheck().run()
    at.selectbox(key="examples::sort").select("LCB(p_A)").run()
    at.toggle(key="examples::descending").set_value(True).run()
    assert not at.exception


def test_example_in_the_address_opens_it_with_its_numbers(root, monkeypatch):
    indices, labels = _sample_indices(root)
    index = int(indices[7])
    at = _open(root, monkeypatch, str(index))
    assert any(h.value.startswith(f"Example {index}: true class {NAMES[labels[7]]}") for h in at.subheader)
    from csrs_core.sampling.store import list_records, load_record
    [info] = list_records(root / "synth" / "cohen.pt")
    rec = load_record(info.path)
    row = int(np.flatnonzero(rec.indices == index)[0])
    t = certify_from_counts(rec.counts0, rec.counts, rec.labels, COST, sigma=rec.meta["sigma"], alpha=ALPHA)
    numbers = at.dataframe[0].value["cohen"]          # one column per compared checkpoint
    assert numbers["LCB(p_A) at α"] == f"{t.p_a_lower[row]:.4f}" and numbers["R1(α)"] == f"{t.r1[row]:.4f}"
    assert any("outcome at ε" in m.value and "**cohen**" in m.value for m in at.markdown)
    assert len(at.get("vega_lite_chart")) == 2          # the vote histograms of both checkpoints
    assert at.query_params["example"] in (str(index), [str(index)])
    at.selectbox(key="examples::open::synth").select(None).run()   # closing it clears the address
    assert not at.exception and "example" not in at.query_params
    assert not any(h.value.startswith("Example") for h in at.subheader)


def test_an_opened_example_is_decided_at_eps_from_the_browser(root, monkeypatch):
    """The button samples the example sequentially with the checkpoint's smoothed classifier, exactly as the
    Python API does (same seed and example index)."""
    from csrs_core import SmoothedClassifier
    from csrs_core.models.checkpoints import load_model
    indices, labels = _sample_indices(root)
    index = int(indices[7])
    at = _open(root, monkeypatch, str(index))
    at.button(key="examples::decide::cohen").click().run()
    assert not at.exception, at.exception
    [said] = [m.value for m in at.markdown if m.value.startswith("cohen: **")]
    model, meta = load_model(root / "synth" / "cohen.pt")
    data = load_dataset(f"sample:{root / 'synth' / 'test-sample.npz'}")
    pos = int(np.flatnonzero(np.asarray(data.indices) == index)[0])
    eps = float(at.number_input(key="examples::eps::synth").value)
    table = SmoothedClassifier(model, num_classes=4, sigma=meta["sigma"]).certify(
        data.images[pos:pos + 1], [int(labels[7])], COST, n=100_000, alpha=ALPHA, indices=[index], sequential=True,
        eps=[eps])
    assert f"after {int(table['n_used'].iloc[0]):,} estimation copies" in said


def test_the_select_box_opens_an_example_and_writes_the_address(root, monkeypatch):
    indices, _ = _sample_indices(root)
    at = _open(root, monkeypatch)
    at.selectbox(key="examples::open::synth").select(int(indices[3])).run()
    assert not at.exception
    assert any(h.value.startswith(f"Example {int(indices[3])}:") for h in at.subheader)
    assert at.query_params["example"] in (str(indices[3]), [str(indices[3])])
    assert len(at.get("download_button")) == 2


@pytest.mark.parametrize("value, words", [("abc", "not an example index"), ("99999", "not in this case's test sample"),
                                          ("-1", "not in this case's test sample"), ("1.5", "not an example index")])
def test_a_bad_example_in_the_address_gives_a_message(root, monkeypatch, value, words):
    at = _open(root, monkeypatch, value)
    assert any(words in w.value for w in at.warning), [w.value for w in at.warning]
    assert any(h.value.startswith("Gallery") for h in at.subheader)
    assert not any(h.value.startswith("Example") for h in at.subheader)


def test_a_case_without_a_sample_or_with_a_vanished_record(root, monkeypatch, tmp_path):
    copy = tmp_path / "ck"
    shutil.copytree(root, copy)
    (copy / "synth" / "test-sample.npz").unlink()
    at = _open(copy, monkeypatch)
    assert any("Certify on a shipped sample first" in i.value for i in at.info)
    shutil.copy(root / "synth" / "test-sample.npz", copy / "synth" / "test-sample.npz")
    for record in (copy / "synth" / "csmacer.certs").glob("*.npz"):
        record.unlink()
    indices, _ = _sample_indices(root)
    at = _open(copy, monkeypatch, str(int(indices[2])))
    assert any(h.value.startswith(f"Example {int(indices[2])}") for h in at.subheader)
    assert len(at.get("vega_lite_chart")) == 1


def test_a_record_that_vanishes_while_the_page_is_open(root, monkeypatch, tmp_path):
    copy = tmp_path / "ck"
    shutil.copytree(root, copy)
    at = _open(copy, monkeypatch)
    from csrs_core.dashboard import common
    monkeypatch.setattr(common, "_record", _gone)   # the file goes between the listing and the load
    at.run()
    assert not at.exception, at.exception
    assert sum("vanished or cannot be read" in w.value for w in at.warning) == 2
    assert any("No certification" in i.value for i in at.info)


def _gone(path, mtime):
    raise FileNotFoundError(2, "No such file or directory", path)


def test_a_thumbnail_opens_its_example(root, monkeypatch):
    at = _open(root, monkeypatch)
    index = int(_gallery(at)[4].split()[0][1:])
    at.button(key=f"examples::thumb::{index}").click().run()
    assert not at.exception, at.exception
    assert any(h.value.startswith(f"Example {index}: true class") for h in at.subheader)
    assert at.query_params["example"] in (str(index), [str(index)])


def test_a_radius_reads_one_way_on_the_page_and_in_the_downloads():
    assert ex.format_radius(-np.inf) == "—" and ex.format_radius(0.12345) == "0.1235"
    down = ex.for_download(pd.DataFrame({"radius": [-np.inf, 0.5], "r2": [-np.inf, -0.25]}))
    assert np.isnan(down.radius[0]) and down.radius[1] == 0.5 and down.r2[1] == -0.25
