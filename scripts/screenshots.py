"""Screenshots of every dashboard page on every case at the widths people use, in a real headless Chromium
(Debian's package, driven by Playwright), so that what the dashboard shows can be looked at and kept current.

    python scripts/screenshots.py OUTDIR [--cases cifar10,ham10000,imagenette] [--widths 1400,1000]
        [--pages explore,examples,certify,train,checkpoints] [--checkpoints checkpoints]

Writes OUTDIR/<case>-<page>[-<state>]-<width>.png: each page as it opens, and the states worth seeing
besides (Certify with "Decide at ε" ticked; Examples with an example opened and decided at ε)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dashboard_browser import FLAGS, free_port, serve  # noqa: E402 (the benchmark's server set-up)

PAGES = ("explore", "examples", "certify", "train", "checkpoints")


def settle(page) -> None:
    """Wait until the app has finished running (no status widget) and the figures are drawn."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(800)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000)
    page.wait_for_timeout(1200)


def shoot(page, out: Path, name: str) -> Path:
    """A full-page screenshot named `name`."""
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(path, flush=True)
    return path


def states(page, base: str, page_name: str, case: str, out: Path, width: int) -> None:
    """The page as it opens, and its states worth seeing."""
    page.goto(f"{base}/{page_name}?case={case}")
    settle(page)
    shoot(page, out, f"{case}-{page_name}-{width}")
    if page_name == "certify":
        page.get_by_text("Decide at ε", exact=False).first.click()
        settle(page)
        shoot(page, out, f"{case}-{page_name}-sequential-{width}")
    elif page_name == "examples":
        page.locator("[data-testid=stSelectbox]").filter(has_text="Open an example").first.click()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        settle(page)
        page.get_by_text("Decide this example at ε", exact=False).first.click()
        page.get_by_role("button", name="Decide with").first.click()
        page.get_by_text("estimation copies (").first.wait_for()
        settle(page)
        shoot(page, out, f"{case}-{page_name}-decided-{width}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir")
    parser.add_argument("--cases", default="cifar10,ham10000,imagenette")
    parser.add_argument("--widths", default="1400,1000")
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--checkpoints", default=str(Path(__file__).resolve().parents[1] / "checkpoints"))
    args = parser.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = serve(Path(args.checkpoints), port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS)
            for width in (int(w) for w in args.widths.split(",")):
                page = browser.new_page(viewport={"width": width, "height": 3200})  # the app scrolls inside: a tall view
                page.set_default_timeout(120_000)
                for case in args.cases.split(","):
                    for name in args.pages.split(","):
                        states(page, f"http://127.0.0.1:{port}", name, case, out, width)
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
