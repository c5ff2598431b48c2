"""The main flows in a real headless Chromium (Debian's package) driven by Playwright for Python."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from csrs_core.models.checkpoints import read_meta
from dashboard_fixtures import build_case

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason="Chromium not installed (apt-get install chromium): real-browser test skipped")]
REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)


def _start_dashboard(root: Path, port: int) -> subprocess.Popen:
    """The dashboard's server on `root`, started from that folder (not the repository)."""
    from csrs_core.dashboard.launch import streamlit_command
    proc = subprocess.Popen(streamlit_command("127.0.0.1", port), cwd=root,
                            env=dict(os.environ, CSRS_CHECKPOINTS=str(root)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_port(port)
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory, synthetic_checkpoint):
    root = build_case(tmp_path_factory.mktemp("browser"), synthetic_checkpoint)
    port = _free_port()
    proc = _start_dashboard(root, port)
    yield f"http://127.0.0.1:{port}", root
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def playwright():
    """One Playwright driver per module (its sync API cannot be started twice at once)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


# Figures draw on canvases: every page keeps, per canvas, each text drawn on it (Vega draws every label,
# title and legend entry with fillText), once as it is and once marked " ↻" when drawn turned (the
# slanted labels of a horizontal class axis) or " ↔" when drawn level (those of a vertical one)
DRAWN_TEXTS = """(() => {
  const drawn = new WeakMap();
  window.__drawnTexts = (canvas) => Array.from(drawn.get(canvas) ?? []);
  const fill = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...args) {
    if (!drawn.has(this.canvas)) drawn.set(this.canvas, new Set());
    const turned = Math.abs(this.getTransform().b) > 1e-6;
    drawn.get(this.canvas).add(String(text)).add(`${text} ${turned ? "↻" : "↔"}`);
    return fill.call(this, text, ...args);
  };
})();"""
# the texts each figure's canvas drew
FIGURE_TEXTS = ("() => Array.from(document.querySelectorAll('[data-testid=stVegaLiteChart] canvas'))"
                ".map(c => window.__drawnTexts(c))")


@pytest.fixture(scope="module")
def page(server, playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    pg = browser.new_page(viewport={"width": 1600, "height": 1200})
    pg.add_init_script(DRAWN_TEXTS)
    pg.set_default_timeout(60_000)
    yield pg
    browser.close()


MARKS = ("() => JSON.stringify(Array.from(document.querySelectorAll('[data-testid=stVegaLiteChart]')).map("
         "c => c.querySelector('canvas')?.toDataURL() "
         "?? Array.from(c.querySelectorAll('svg [class*=\"mark-\"]')).map(m => m.innerHTML).join('|')))")
FIGURES_DRAWN = "() => document.querySelectorAll('[data-testid=stVegaLiteChart] :is(svg, canvas)').length >= 6"


def _marks(page) -> str:
    """What every figure draws (its canvas's pixels, or its marks' SVG)."""
    return page.evaluate(MARKS)


def test_grid_clicks_change_the_figures(server, page):
    url, _ = server
    page.goto(url)
    page.get_by_text("Metrics at ε").first.wait_for()
    page.wait_for_function(FIGURES_DRAWN)
    before = _marks(page)
    assert "seedwise:3" in page.get_by_text("Metrics at ε").first.inner_text()
    page.get_by_role("checkbox", name="red → green").click(force=True)
    page.get_by_text("pairwise:0>1").first.wait_for()
    page.wait_for_function(f"(before) => ({MARKS})() !== before", arg=before)
    assert "pairwise:0>1;3>0,1,2" in urllib.parse.unquote(page.url)
    page.get_by_text("Cost-matrix presets and import").click()
    page.get_by_role("button", name="Overall").click()
    page.get_by_text("cost: overall").first.wait_for()
    assert _marks(page) != before
    from playwright.sync_api import expect
    expect(page.get_by_role("checkbox", name="green → blue")).to_be_checked()  # the grid follows the preset
    expect(page.get_by_role("checkbox", name="green → green")).to_be_disabled()


def test_a_cost_typed_in_the_grid_changes_the_expected_cost_curve(server, page):
    """Shift-click selects a cell without ticking it; its cost typed under the grid goes to the server,
    the cell takes the colour of its cost and the certified expected cost curve appears (for a 0/1
    matrix it would repeat Rob_cs); a click on the costly cell makes it free and the curve goes."""
    from playwright.sync_api import expect
    url, _ = server
    page.goto(url)
    page.get_by_text("Metrics at ε").first.wait_for()
    page.get_by_text("appear once a cost other than 0 or 1 is set").first.wait_for()
    # the figure under its heading, drawn on a canvas (its text is not part of the page)
    chart = page.locator("[data-testid=stElementContainer]:has(h3:has-text('Certified expected cost vs ε'))"
                         " + [data-testid=stElementContainer] [data-testid=stVegaLiteChart]")
    expect(chart).to_have_count(0)
    cell = page.get_by_role("checkbox", name="grey → red")
    cell.click(modifiers=["Shift"], force=True)
    expect(cell).to_be_checked()  # selected, not toggled
    cost = page.get_by_role("spinbutton", name="cost of the selected cell")
    expect(cost).to_have_value("1")
    cost.fill("7")
    cost.press("Enter")
    page.get_by_text("cost: pairwise:3>0=7,1,2").first.wait_for()
    assert "pairwise:3>0=7,1,2" in urllib.parse.unquote(page.url)
    chart.locator("canvas").first.wait_for()
    shade = "b => getComputedStyle(b.parentElement).backgroundColor"
    assert cell.evaluate(shade) != page.get_by_role("checkbox", name="grey → green").evaluate(shade)
    cell.click(force=True)  # a click on a cell of cost 7 makes it free
    page.get_by_text("cost: pairwise:3>1,2").first.wait_for()
    expect(chart).to_have_count(0)


def test_certification_and_training_jobs_finish(server, page):
    url, root = server
    page.goto(url + "/certify")
    page.get_by_role("button", name="Start certification").click()
    page.get_by_text("Started certification").wait_for()
    page.get_by_text("— done").first.wait_for(timeout=180_000)
    page.get_by_role("button", name="Show it on Explore & compare").first.click()  # the record, where it is read
    page.get_by_text("Metrics at ε").first.wait_for()
    assert "Explore" in page.locator("h1").first.inner_text()
    _start_training(page, url, "browser-run", 1, max_steps=2)
    page.get_by_text("— done").first.wait_for(timeout=300_000)
    assert (root / "synth" / "browser-run.pt").exists()


def _start_training(page, url, name, epochs, max_steps=None):
    page.goto(url + "/train")
    page.get_by_role("checkbox", name="red → green").click(force=True)  # CS-MACER needs a costly mistake
    page.get_by_text("pairwise:0>1").first.wait_for()
    page.get_by_role("textbox", name="Output name", exact=True).fill(name)
    page.get_by_role("spinbutton", name="epochs", exact=True).fill(str(epochs))
    page.get_by_role("spinbutton", name="k noisy copies", exact=True).fill("2")
    if max_steps:
        page.get_by_role("spinbutton", name="max steps/epoch", exact=True).fill(str(max_steps))
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(f"Started training {name}").wait_for()


def test_a_running_training_job_can_be_cancelled(server, page):
    url, root = server
    _start_training(page, url, "to-cancel", 200)
    page.get_by_text("to-cancel — running").first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Cancel").first.click()
    page.get_by_text("to-cancel — cancelled").first.wait_for(timeout=120_000)


def test_a_path_outside_the_data_folder_is_refused(server, page):
    url, _ = server
    page.goto(url + "/certify")
    page.get_by_text("Start certification").wait_for()
    page.locator("[data-testid='stSelectbox']").filter(has_text="Data").first.click()
    page.get_by_role("option", name="image folder…").click()
    page.get_by_role("textbox", name="Image folder (inside the data folder), for 'image folder…'").fill("../../etc")
    page.get_by_role("button", name="Start certification").click()
    page.get_by_text("not an absolute path or '..'").wait_for()


@pytest.fixture
def fresh_server(tmp_path, synthetic_checkpoint):
    """A server nobody has opened yet (Streamlit knows only the entry script until a tab loads it)."""
    root = build_case(tmp_path, synthetic_checkpoint)
    port = _free_port()
    proc = _start_dashboard(root, port)
    yield port, root
    proc.terminate()
    proc.wait(10)


def test_a_foreign_host_gets_no_page_on_a_fresh_server(fresh_server, playwright):
    """DNS rebinding: a page of another origin whose host name resolves to this machine asks for
    every page of a server that no legitimate tab has opened; each shows only the refusal."""
    port, root = fresh_server
    before = sorted(p.name for p in (root / "synth").iterdir())
    browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                         args=FLAGS + ["--host-resolver-rules=MAP attacker.example 127.0.0.1"])
    page = browser.new_page()
    page.set_default_timeout(120_000)
    for path in ("", "/explore", "/certify", "/train", "/checkpoints", "/app", "/views/train"):
        page.goto(f"http://attacker.example:{port}{path}")
        if path != "/views/train":  # a script's own path is no page at all: nothing renders
            page.get_by_text("Refused").first.wait_for()
        page.wait_for_timeout(3000)  # give anything else time to render
        text = page.locator("body").inner_text()
        for content in ("Start training", "Start certification", "Upload a checkpoint", "Delete a checkpoint",
                        "Metrics at", "Explore & compare", "cohen"):
            assert content not in text, (path, content)
    browser.close()
    assert sorted(p.name for p in (root / "synth").iterdir()) == before


def test_the_installed_dashboard_shows_the_demo_when_started_in_an_empty_folder(installed_package, tmp_path,
                                                                                  playwright):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSRS_")}
    proc = subprocess.Popen([sys.executable, "-m", "csrs_core", "dashboard", "--port", str(port)], cwd=tmp_path,
                            env=dict(env, PYTHONPATH=str(installed_package)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.set_default_timeout(120_000)
        _wait_for_port(port)
        page.goto(f"http://127.0.0.1:{port}")
        page.get_by_text("Metrics at ε").first.wait_for()
        assert "shipped demo results" in page.locator("body").inner_text()
        page.goto(f"http://127.0.0.1:{port}/train")
        page.get_by_text("the shipped demo is read-only").first.wait_for()
        browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)  # `csrs dashboard` passes it on to its server
        assert proc.wait(30) == 143
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the Streamlit server outlived `csrs dashboard`"


IMAGES = "() => document.querySelectorAll('[data-testid=stImage] img').length"
HISTOGRAMS = f"() => ({FIGURE_TEXTS})().filter(t => t.includes(\"share of the sample's votes\")).length"


def test_examples_gallery_shows_a_page_of_images(server, page):
    url, _ = server
    page.goto(url + "/examples")
    page.get_by_text("Gallery: 64 of 64").first.wait_for()
    page.wait_for_function(f"() => ({IMAGES})() >= 24")
    page.wait_for_function("() => Array.from(document.querySelectorAll('[data-testid=stImage] img'))"
                           ".filter(i => i.complete && i.naturalWidth >= 96).length >= 24")  # 16×16 enlarged
    assert "#" in page.get_by_test_id("stImageCaption").first.inner_text()


def test_opening_one_of_the_examples_shows_its_vote_histograms(server, page):
    import numpy as np
    url, root = server
    with np.load(root / "synth" / "test-sample.npz") as z:
        index = int(z["indices"][5])
    page.goto(f"{url}/examples?example={index}")
    page.get_by_text(f"Example {index}: true class").first.wait_for()
    page.wait_for_function(f"() => ({HISTOGRAMS})() >= 2")     # one histogram per compared checkpoint
    text = page.locator("body").inner_text()
    assert "LCB(p_A) at α" in text and "outcome at ε" in text
    page.goto(f"{url}/examples?example=abc")
    page.get_by_text("not an example index").first.wait_for()





@pytest.fixture(scope="module")
def shipped_server():
    """The dashboard on the shipped checkpoints (read-only demo folder)."""
    port = _free_port()
    proc = _start_dashboard(REPO / "checkpoints", port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("case, cost, classes", [("imagenette", "seedwise:7", 10), ("cifar10", "seedwise:3", 10)])
def test_a_shipped_case_opens_on_its_question_with_every_class_named(shipped_server, page, case, cost, classes):
    page.goto(f"{shipped_server}/?case={case}")
    page.get_by_text(f"cost: {cost}").first.wait_for()
    page.wait_for_function(FIGURES_DRAWN)
    names = read_meta(REPO / "checkpoints" / case / "cohen.pt")["classes"]
    assert len(names) == classes
    # every figure with a 'true class' axis names every class on it: the per-class bars on their
    # slanted horizontal axis, the confusion matrix on both axes
    page.wait_for_function(f"() => ({FIGURE_TEXTS})().filter(t => t.includes('true class')).length >= 2")
    drawn = [set(texts) for texts in page.evaluate(FIGURE_TEXTS) if "true class" in texts]
    assert len(drawn) == 2 and all({f"{n} ↻" for n in names} <= texts for texts in drawn), (names, drawn)
    [heat] = [texts for texts in drawn if "predicted class (smoothed top class)" in texts]
    assert {f"{n} ↔" for n in names} <= heat, (names, heat)
