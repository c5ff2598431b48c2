"""Click-to-update time of the Explore page in a real headless Chromium (Debian's package, driven
by Playwright): on the shipped landing page (CIFAR-10, every shipped checkpoint x 1,000 examples),
click a cost-matrix cell and time until every figure shows new data. Goal: median <= 0.25 s.
Usage: python scripts/bench_dashboard_browser.py [--clicks 12] [--checkpoints checkpoints]"""
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

from csrs_core.dashboard_launch import streamlit_command

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TRACES = ("() => JSON.stringify(Array.from(document.querySelectorAll('.js-plotly-plot'))"
          ".map(p => p.data.map(t => t.y)))")


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


def click_times(url: str, clicks: int, cells) -> list[float]:
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 5")
        page.wait_for_timeout(1500)
        for i in range(clicks):
            name = cells[i % len(cells)]
            before = page.evaluate(TRACES)
            box = page.get_by_role("checkbox", name=name)
            box.scroll_into_view_if_needed()
            t0 = time.perf_counter()
            box.click(force=True)
            page.wait_for_function(f"() => ({TRACES})() !== {before!r}", polling="raf")
            times.append(time.perf_counter() - t0)
            page.wait_for_timeout(300)
        browser.close()
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clicks", type=int, default=12)
    ap.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    a = ap.parse_args()
    port = free_port()
    proc = serve(Path(a.checkpoints), port)
    try:
        cells = ["cat → dog", "cat → bird", "dog → cat", "bird → cat"]
        times = click_times(f"http://127.0.0.1:{port}/?case=cifar10", a.clicks, cells)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"grid click to updated figures in Chromium, {len(times)} clicks: "
          f"median {statistics.median(times):.3f} s, max {max(times):.3f} s   (goal: median <= 0.25 s)")
    print("all:", " ".join(f"{t:.3f}" for t in times))


if __name__ == "__main__":
    sys.exit(main())
