"""Where a grid click's browser time goes: Chrome's sampling CPU profiler (DevTools protocol) over grid
clicks on the shipped Explore page, summed per function and divided by the clicks.

Prints per click: the main thread's busy time (everything sampled but idle, the work after the last
figure changed included), then the functions with the most time of their own and with the most time
including what they call, named by function and script (Streamlit's bundles are minified: the script
names say whose code it is: react-dom, emotion, embed (Vega), vega-interpreter, StreamlitMarkdown,
DataFrame, ...; "(program)" is the browser's native work: style, layout, paint, message decoding).
Usage: python scripts/profile_dashboard_click.py [--clicks 8] [--case cifar10] [--top 40]"""
import argparse
import collections
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dashboard_browser import FIGURES, REPO, free_port, grid_cells, new_page, serve  # noqa: E402


def profile_clicks(url: str, cells: list[str], figures: int) -> dict:
    """The CPU profile (DevTools `Profiler.Profile`) of clicking each of `cells` on the page at `url`,
    1.5 s apart, once the page shows `figures` figures."""
    with sync_playwright() as p:
        browser, page = new_page(p)
        page.goto(url)
        page.wait_for_function(f"() => document.querySelectorAll('{FIGURES} :is(svg, canvas)').length >= {figures}")
        page.wait_for_timeout(2000)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 200})
        cdp.send("Profiler.start")
        for cell in cells:
            page.get_by_role("checkbox", name=cell).click(force=True)
            page.wait_for_timeout(1500)
        profile = cdp.send("Profiler.stop")["profile"]
        browser.close()
    return profile


def per_function(profile: dict) -> tuple[collections.Counter, collections.Counter]:
    """Milliseconds per function: of its own, and including its callees (each counted once per stack)."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {child: n["id"] for n in profile["nodes"] for child in n.get("children", [])}
    sampled = collections.Counter()
    for node, delta in zip(profile["samples"], profile["timeDeltas"]):
        sampled[node] += delta / 1000

    def name(node: dict) -> str:
        frame = node["callFrame"]
        return f'{frame["functionName"] or "(anonymous)"} {frame["url"].rsplit("/", 1)[-1]}'

    own, total = collections.Counter(), collections.Counter()
    for node, ms in sampled.items():
        own[name(nodes[node])] += ms
        seen, current = set(), node
        while current in nodes:
            label = name(nodes[current])
            if label not in seen:
                total[label] += ms
                seen.add(label)
            current = parent.get(current)
    return own, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clicks", type=int, default=8)
    ap.add_argument("--case", default="cifar10", help="cifar10 (10 x 10 grid) or ham10000 (2 x 2)")
    ap.add_argument("--figures", type=int, default=6, help="figures the page shows when loaded")
    ap.add_argument("--top", type=int, default=40, help="functions listed")
    a = ap.parse_args()
    cells = grid_cells(a.case)
    cells = [cells[i % len(cells)] for i in range(a.clicks)]
    port = free_port()
    server = serve(REPO / "checkpoints", port)
    try:
        profile = profile_clicks(f"http://127.0.0.1:{port}/?case={a.case}", cells, a.figures)
    finally:
        server.terminate()
        server.wait(10)
    own, total = per_function(profile)
    idle = own.pop("(idle) ", 0.0)
    print(f"per click: main thread busy {(sum(own.values())) / a.clicks:.0f} ms (idle {idle / a.clicks:.0f} ms)")
    print("own time (ms per click)")
    for label, ms in own.most_common(a.top):
        print(f"{ms / a.clicks:8.1f}  {label}")
    print("including callees (ms per click)")
    for label, ms in total.most_common(a.top):
        if label not in ("(root) ", "(idle) "):
            print(f"{ms / a.clicks:8.1f}  {label}")


if __name__ == "__main__":
    main()
