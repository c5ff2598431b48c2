"""The dashboard's speed in a real headless Chromium (Debian's package, driven by Playwright), each
time also as a ratio to the same action on a trivial Streamlit page served by the same machine in the
same run (a button that reruns a one-line script), since machines differ 2x and more:

1. Explore click: on the shipped landing page (CIFAR-10, every shipped checkpoint x 1,000 examples),
   click a cost-matrix cell and time until the figures that depend on the matrix show new data.
   Goal: median <= 0.25 s.
2. Examples page open: from navigation start until the gallery shows >= 8 decoded thumbnails and the
   opened example's vote histograms are drawn. Goal: median < 2 s.
With --against DIR, another checkout's dashboard (an earlier commit: `git worktree add DIR COMMIT`) is
served too and clicked in turn with this one, so that a change is measured against what it changes in
one run.
Usage: python scripts/bench_dashboard_browser.py [--clicks 16] [--opens 5] [--case cifar10|ham10000]
       [--checkpoints checkpoints] [--against DIR]"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

from csrs_core.dashboard.launch import streamlit_command

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRIVIAL_APP = """import streamlit as st
st.session_state.setdefault("n", 0)
if st.button("again"):
    st.session_state.n += 1
st.write(f"clicked {st.session_state.n} times")
"""


def serve(checkpoints: Path, port: int, command=None, code: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, CSRS_CHECKPOINTS=str(checkpoints.resolve()))
    if code is not None:  # the dashboard of another checkout
        env["PYTHONPATH"] = str(code.resolve())
    proc = subprocess.Popen(command or streamlit_command("127.0.0.1", port), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the dashboard did not start")


FIGURES = "[data-testid=stVegaLiteChart]"
# Vega paints a canvas figure by clearing it first: every page of the run notes each canvas painted and
# reports each clearRect to window.__painted (when a click is being timed), since a repaint changes no element
PAINTS = """(() => {
  const clear = CanvasRenderingContext2D.prototype.clearRect;
  window.__paintedCanvases = new WeakSet();
  CanvasRenderingContext2D.prototype.clearRect = function (...args) {
    window.__paintedCanvases.add(this.canvas);
    if (window.__painted) window.__painted(this.canvas);
    return clear.apply(this, args);
  };
})();"""
# In the page: stamp the click (capture phase) and watch every figure: its SVG's elements with a
# MutationObserver, its canvas through the repaints PAINTS reports (nothing polls the page meanwhile;
# a figure drawn anew also counts); each change notes the time of the next animation frame, when it is
# painted. Once nothing has changed for QUIET ms, the click's time is that of the last frame in which
# any figure changed. A figure whose numbers the click does not change (unticking one of several
# costly cells of a row can leave Rob_cs as it was) does not change and is not waited for.
QUIET = 1500
ARM = """(quiet) => {
  const charts = Array.from(document.querySelectorAll('%s'));
  const changed = charts.map(() => null);
  window.__clicked = null; window.__updated = null; window.__changed = null;
  const mark = (i) => requestAnimationFrame(() => { changed[i] = performance.now(); });
  const watch = (chart, i) => {
    const seen = new MutationObserver(() => mark(i));
    seen.observe(chart, {subtree: true, childList: true, attributes: true, characterData: true});
    return seen;
  };
  const observers = charts.map(watch);
  window.__painted = (canvas) => {
    const i = charts.findIndex(c => c.contains(canvas));
    if (i >= 0 && window.__clicked !== null) mark(i);
  };
  document.addEventListener('click', () => { window.__clicked = performance.now(); }, {capture: true, once: true});
  const check = () => {
    const now = performance.now();
    const times = changed.filter(t => t !== null);
    const last = Math.max(window.__clicked ?? now, ...times);
    if (window.__clicked !== null && now - last > quiet) {
      observers.forEach(o => o.disconnect());
      window.__painted = null;
      window.__updated = times.length ? last : null; window.__changed = times.length; return;
    }
    setTimeout(check, 100);
  };
  setTimeout(check, 100);
}""" % FIGURES


def new_page(p):
    browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS)
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.add_init_script(PAINTS)
    page.set_default_timeout(60_000)
    return browser, page


def trivial_times(clicks: int, opens: int) -> tuple[list[float], list[float]]:
    """On a one-button Streamlit page: seconds from a click to the rerun's text shown, and from
    navigation start to the page shown, as the page sees them."""
    folder = Path(tempfile.mkdtemp())
    (folder / "app.py").write_text(TRIVIAL_APP)
    port = free_port()
    proc = serve(folder, port, [sys.executable, "-m", "streamlit", "run", str(folder / "app.py"),
                                "--server.headless", "true", "--server.port", str(port),
                                "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"])
    try:
        with sync_playwright() as p:
            browser, page = new_page(p)
            shown = "() => document.body.innerText.includes('clicked 0')"
            loads = [goto_until(page, f"http://127.0.0.1:{port}/", shown) for _ in range(opens)]
            page.wait_for_timeout(500)
            times = []
            for i in range(clicks):
                t0 = page.evaluate("() => performance.now()")
                page.get_by_role("button", name="again").click()
                page.wait_for_function(f"() => document.body.innerText.includes('clicked {i + 1} times')",
                                       polling="raf")
                times.append((page.evaluate("() => performance.now()") - t0) / 1000)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return times, loads


def goto_until(page, url: str, condition: str) -> float:
    """Seconds from navigation start to the first animation frame in which `condition` holds."""
    page.goto(url)
    page.wait_for_function(condition, polling="raf")
    return page.evaluate("() => performance.now()") / 1000


EXAMPLES_READY = ("() => Array.from(document.querySelectorAll('[data-testid=stImage] img'))"
                  ".filter(i => i.complete && i.naturalWidth > 0).length >= 8 + 1 + 4"   # gallery, image, noisy copies
                  " && Array.from(document.querySelectorAll('[data-testid=stVegaLiteChart] canvas')).filter("
                  "c => window.__paintedCanvases.has(c)).length >= 1")


def examples_open_times(url: str, opens: int) -> list[float]:
    """Seconds from navigation start to the Examples page with >= 8 thumbnails, the opened example
    (its image and noisy copies) and its vote histograms, each open in a fresh page load."""
    with sync_playwright() as p:
        browser, page = new_page(p)
        goto_until(page, url, EXAMPLES_READY)   # the first open decodes the sample: not counted
        times = [goto_until(page, url, EXAMPLES_READY) for _ in range(opens)]
        browser.close()
    return times


def click_times(urls: list[str], clicks: int, cells, figures: int) -> list[list[tuple[float, int]]]:
    """Per page of `urls` (one browser, one tab each; with several, the same click goes to each in turn,
    the order alternating, so that they share the machine's state) and per click: (seconds from the
    click, as the page sees it, to the last frame in which a figure changed; how many figures changed).
    Clicks that change no figure are left out."""
    times = [[] for _ in urls]
    with sync_playwright() as p:
        browsers, pages = zip(*[new_page(p) for _ in urls])  # a browser each: no page waits in a background tab
        for page, url in zip(pages, urls):
            page.goto(url)
            page.wait_for_function(f"() => document.querySelectorAll('{FIGURES} :is(svg, canvas)').length >= "
                                   f"{figures}")
            page.wait_for_timeout(1500)
        for i in range(clicks):
            order = list(range(len(urls)))
            for k in (order if i % 2 == 0 else order[::-1]):
                page = pages[k]
                box = page.get_by_role("checkbox", name=cells[i % len(cells)])
                box.scroll_into_view_if_needed()
                page.evaluate(ARM, QUIET)
                box.click(force=True)
                page.wait_for_function("() => window.__changed !== null")
                updated, changed = page.evaluate("() => [(window.__updated - window.__clicked) / 1000, "
                                                 "window.__changed]")
                if changed:
                    times[k].append((updated, changed))
        for browser in browsers:
            browser.close()
    return times


def grid_cells(case: str) -> list[str]:
    """The cost-grid cells a benchmark clicks, by their labels: on CIFAR-10 16 different cells, so each
    click makes a matrix not seen before (nothing cached); HAM10000's 2 x 2 grid has only two."""
    if case == "cifar10":
        return [f"{t} → {p}" for t in ("cat", "dog", "bird", "deer")
                for p in ("airplane", "automobile", "frog", "horse")]
    return ["benign → malignant", "malignant → benign"]


def other_checkout(folder: Path, port: int) -> list[str]:
    """The same `streamlit run` command for the dashboard of another checkout of CSRS (its code, these
    checkpoints), run with PYTHONPATH set to it."""
    command = streamlit_command("127.0.0.1", port)
    command[command.index("run") + 1] = str(folder.resolve() / "csrs_core" / "dashboard" / "app.py")
    return command


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clicks", type=int, default=16)
    ap.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    ap.add_argument("--case", default="cifar10", help="cifar10 (10 x 10 grid) or ham10000 (2 x 2)")
    ap.add_argument("--figures", type=int, default=6, help="figures the page shows when loaded")
    ap.add_argument("--opens", type=int, default=5, help="Examples page loads to time (0: skip)")
    ap.add_argument("--cost", default=None, help="the matrix the page starts with, in the --cost grammar (e.g. "
                    "'seedwise:3=2' for a real-valued one; clicks then toggle cells of cost 1 next to those of cost 2)")
    ap.add_argument("--figures-weighted", type=int, default=8, help="figures the page shows with a real-valued matrix")
    ap.add_argument("--against", type=Path, default=None, help="another checkout of CSRS (e.g. `git worktree add "
                    "/tmp/before HEAD~1`): its dashboard on the same checkpoints is clicked too, click for click "
                    "alternating with this one's, and both medians are printed")
    a = ap.parse_args()
    trivial_clicks, trivial_loads = trivial_times(a.clicks, max(a.opens, 1))
    port = free_port()
    proc = serve(Path(a.checkpoints), port)
    other = None
    if a.against:
        other_port = free_port()
        other = serve(Path(a.checkpoints), other_port, other_checkout(a.against, other_port), a.against)
    try:
        cells = grid_cells(a.case)
        query = f"/?case={a.case}" + (f"&cost={urllib.parse.quote(a.cost)}" if a.cost else "")
        weighted = a.cost is not None and "=" in a.cost
        urls = [f"http://127.0.0.1:{port}{query}"] + ([f"http://127.0.0.1:{other_port}{query}"] if other else [])
        results, *others = click_times(urls, a.clicks, cells, a.figures_weighted if weighted else a.figures)
        with np.load(Path(a.checkpoints) / a.case / "test-sample.npz") as z:
            first = int(z["indices"][0])
        examples = f"http://127.0.0.1:{port}/examples?case={a.case}&example={first}"
        opens = examples_open_times(examples, a.opens) if a.opens else []
    finally:
        for server in [proc] + ([other] if other else []):
            server.terminate()
            server.wait(10)
    if len(results) < a.clicks:
        print(f"{a.clicks - len(results)} of {a.clicks} clicks changed no figure and are left out")
    if not results:
        sys.exit("no click changed a figure: the page did not update")
    times = [t for t, _ in results]
    ref_click, ref_load = statistics.median(trivial_clicks), statistics.median(trivial_loads)
    print(f"trivial Streamlit page: button click to rerun shown median {ref_click:.3f} s; page load {ref_load:.3f} s")
    print(f"grid click to updated figures in Chromium, {len(times)} clicks that changed a figure: "
          f"median {statistics.median(times):.3f} s ({statistics.median(times) / ref_click:.1f}x the trivial click), "
          f"max {max(times):.3f} s   (goal: median <= 0.25 s)")
    print("all (seconds/figures changed):", " ".join(f"{t:.3f}/{n}" for t, n in results))
    for before in others:
        other_times = [t for t, _ in before] or [float("nan")]
        print(f"{a.against}, the same clicks alternating with these: median {statistics.median(other_times):.3f} s "
              f"({statistics.median(other_times) / ref_click:.1f}x the trivial click); this checkout's median is "
              f"{statistics.median(times) / statistics.median(other_times):.2f}x it")
    if opens:
        print(f"Examples page open (>= 8 thumbnails, the opened example and its votes): median "
              f"{statistics.median(opens):.3f} s ({statistics.median(opens) / ref_load:.1f}x the trivial page load), "
              f"max {max(opens):.3f} s   (goal: < 2 s)")


if __name__ == "__main__":
    sys.exit(main())
