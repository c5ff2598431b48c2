"""Click-to-update time of the Explore page in a real headless Chromium (Debian's package, driven
by Playwright): on the shipped landing page (CIFAR-10, every shipped checkpoint x 1,000 examples),
click a cost-matrix cell and time until the figures that depend on the matrix show new data.
Goal: median <= 0.25 s.
Usage: python scripts/bench_dashboard_browser.py [--clicks 16] [--case cifar10|ham10000] [--checkpoints checkpoints]"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from csrs_core.dashboard.launch import streamlit_command

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(checkpoints: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, CSRS_CHECKPOINTS=str(checkpoints.resolve()))
    proc = subprocess.Popen(streamlit_command("127.0.0.1", port), env=env, stdout=subprocess.DEVNULL,
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
# In the page: stamp the click (capture phase) and watch every figure's element with a
# MutationObserver (nothing polls the page meanwhile; a figure drawn anew also counts); each change
# notes the time of the next animation frame, when it is painted. Once nothing has changed for
# QUIET ms, the click's time is that of the last frame in which any figure changed. A figure whose numbers the click does not change (unticking one of
# several costly cells of a row can leave Rob_cs as it was) does not change and is not waited for.
QUIET = 1500
ARM = """(quiet) => {
  const charts = Array.from(document.querySelectorAll('%s'));
  const changed = charts.map(() => null);
  window.__clicked = null; window.__updated = null; window.__changed = null;
  const watch = (chart, i) => {
    const seen = new MutationObserver(() => requestAnimationFrame(() => { changed[i] = performance.now(); }));
    seen.observe(chart, {subtree: true, childList: true, attributes: true, characterData: true});
    return seen;
  };
  const observers = charts.map(watch);
  document.addEventListener('click', () => { window.__clicked = performance.now(); }, {capture: true, once: true});
  const check = () => {
    const now = performance.now();
    const times = changed.filter(t => t !== null);
    const last = Math.max(window.__clicked ?? now, ...times);
    if (window.__clicked !== null && now - last > quiet) {
      observers.forEach(o => o.disconnect());
      window.__updated = times.length ? last : null; window.__changed = times.length; return;
    }
    setTimeout(check, 100);
  };
  setTimeout(check, 100);
}""" % FIGURES


def click_times(url: str, clicks: int, cells, figures: int) -> list[tuple[float, int]]:
    """Per click: (seconds from the click, as the page sees it, to the last frame in which a figure
    changed; how many figures changed). Clicks that change no figure are left out."""
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_function(f"() => document.querySelectorAll('{FIGURES} svg').length >= {figures}")
        page.wait_for_timeout(1500)
        for i in range(clicks):
            box = page.get_by_role("checkbox", name=cells[i % len(cells)])
            box.scroll_into_view_if_needed()
            page.evaluate(ARM, QUIET)
            box.click(force=True)
            page.wait_for_function("() => window.__changed !== null")
            updated, changed = page.evaluate("() => [(window.__updated - window.__clicked) / 1000, window.__changed]")
            if changed:
                times.append((updated, changed))
        browser.close()
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clicks", type=int, default=16)
    ap.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    ap.add_argument("--case", default="cifar10", help="cifar10 (10 x 10 grid) or ham10000 (2 x 2)")
    ap.add_argument("--figures", type=int, default=6, help="figures the page shows when loaded")
    a = ap.parse_args()
    port = free_port()
    proc = serve(Path(a.checkpoints), port)
    try:
        # CIFAR-10: 16 different cells, so each click makes a matrix not seen before (nothing cached);
        # HAM10000's 2 x 2 grid has only two cells to click
        cells = ([f"{t} → {p}" for t in ("cat", "dog", "bird", "deer")
                  for p in ("airplane", "automobile", "frog", "horse")]
                 if a.case == "cifar10" else ["benign → malignant", "malignant → benign"])
        results = click_times(f"http://127.0.0.1:{port}/?case={a.case}", a.clicks, cells, a.figures)
    finally:
        proc.terminate()
        proc.wait(10)
    if len(results) < a.clicks:
        print(f"{a.clicks - len(results)} of {a.clicks} clicks changed no figure and are left out")
    if not results:
        sys.exit("no click changed a figure: the page did not update")
    times = [t for t, _ in results]
    print(f"grid click to updated figures in Chromium, {len(times)} clicks that changed a figure: "
          f"median {statistics.median(times):.3f} s, max {max(times):.3f} s   (goal: median <= 0.25 s)")
    print("all (seconds/figures changed):", " ".join(f"{t:.3f}/{n}" for t, n in results))


if __name__ == "__main__":
    sys.exit(main())
