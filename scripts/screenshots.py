"""Screenshots of every dashboard page on every case at the widths people use, in a real headless Chromium
(Debian's package, driven by Playwright), so that what the dashboard shows can be looked at and kept current.

    python scripts/screenshots.py OUTDIR [--cases cifar10,ham10000,imagenette] [--widths 1400,1000]
        [--pages explore,examples,certify,train,checkpoints,glossary] [--checkpoints checkpoints] [--jpeg QUALITY]

Writes OUTDIR/<case>-<page>[-<state>]-<width>.png (the glossary, the same page for every case:
glossary-<width>.png; .jpg with --jpeg, as docs/dashboard.md embeds them:
`python scripts/screenshots.py docs/screenshots --widths 1400 --jpeg 60`), each page whole, as it opens, and the
states worth seeing besides (Certify with "Decide at ε" ticked; Examples with an example opened and decided
at ε)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dashboard_browser import FLAGS, free_port, serve  # noqa: E402 (the benchmark's server set-up)

PAGES = ("explore", "examples", "certify", "train", "checkpoints", "glossary")


def settle(page) -> None:
    """Wait until the app has finished running (no status widget) and the figures are drawn."""
    page.wait_for_load_state("networkidle")
    page.wait_for_selector("[data-testid=stMain] h1", timeout=120_000)  # the app has drawn (every page has a title)
    page.wait_for_timeout(800)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000)
    # the script has run to its end (a loaded machine can leave the status widget out of a short run)
    page.wait_for_function("() => document.querySelector('[data-testid=stApp]')?.dataset.testScriptState === "
                           "'notRunning'", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=stSkeleton]')", timeout=120_000)
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=120_000)
    page.wait_for_timeout(1200)


QUALITY = {"jpeg": None}  # --jpeg: the JPEG quality of every screenshot (None: PNG)


def shoot(page, out: Path, name: str) -> Path:
    """A screenshot named `name` of the whole page: the app scrolls inside its main pane, so the view is
    made as tall as that pane's content first (and set back after)."""
    quality = QUALITY["jpeg"]
    path = out / f"{name}.{'png' if quality is None else 'jpg'}"
    view = page.viewport_size
    tall = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    if tall > view["height"]:
        page.set_viewport_size({"width": view["width"], "height": tall})
        page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True, **({} if quality is None else {"type": "jpeg", "quality": quality}))
    page.set_viewport_size(view)
    print(path, flush=True)
    return path


def states(page, base: str, page_name: str, case: str, out: Path, width: int) -> None:
    """The page as it opens, and its states worth seeing."""
    page.goto(f"{base}/{'' if page_name == 'explore' else page_name}?case={case}")  # Explore is the main page
    settle(page)
    shoot(page, out, f"{page_name}-{width}" if page_name == "glossary" else f"{case}-{page_name}-{width}")
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
    parser.add_argument("--jpeg", type=int, default=None, metavar="QUALITY", help="JPEG of this quality, not PNG")
    args = parser.parse_args(argv)
    QUALITY["jpeg"] = args.jpeg
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = serve(Path(args.checkpoints), port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS)
            for width in (int(w) for w in args.widths.split(",")):
                page = browser.new_page(viewport={"width": width, "height": 1000})
                page.set_default_timeout(120_000)
                for i, case in enumerate(args.cases.split(",")):
                    for name in args.pages.split(","):
                        if name != "glossary" or i == 0:  # the glossary is the same page for every case
                            states(page, f"http://127.0.0.1:{port}", name, case, out, width)
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
