"""Held-out answer NLL against honest bits per weight, ours and the peers', per task.

Reads bench/results/quality.json and peers.json (calibration seed 0, rows with per-example
values) and draws one panel per task and bit width with each method's 95 % bootstrap
interval: bench/results/pareto.html (plotly, with plotly.min.js beside it) and, with the chromium the
browser tests use, bench/results/pareto.png for the bench README.

    python bench/pareto.py                 # every task and bit width that has peer rows
    python bench/pareto.py --bits 2
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from _common import ROOT

RESULTS = ROOT / "bench" / "results"
COLOURS = {"ours": "#1f77b4", "auto-round": "#d62728", "hqq": "#2ca02c"}


def points(quality: list[dict], peers: list[dict], task: str, bits: int) -> pd.DataFrame:
    """One row per method: name, bpw (honest), nll, low, high, by."""
    from tacq.eval.stats import bootstrap

    rows = []
    n = {r["heldout_examples"] for r in peers if (r["task"], r["bits"]) == (task, bits)}
    for r in [*quality, *peers]:
        if (r["task"], r["bits"], r.get("seed", 0)) != (task, bits, 0) or "error" in r:
            continue
        if r["method"] == "fp" or "nll_each" not in r or r["heldout_examples"] not in n:
            continue
        iv = bootstrap(r["nll_each"])
        by = r.get("package", "ours").split(" ")[0]
        rows.append(
            {
                "name": r["method"],
                "bpw": r["bpw_honest"],
                "nll": r["answer_nll"],
                "low": iv.low,
                "high": iv.high,
                "by": by,
            }
        )
    return pd.DataFrame(rows, columns=["name", "bpw", "nll", "low", "high", "by"])


def figure(quality: list[dict], peers: list[dict], bits_list: list[int]):
    """One panel per (task, bits) with peer rows, log-scaled NLL."""
    from plotly.subplots import make_subplots

    from app.figures import pareto_traces
    from tacq.data.tasks import list_tasks

    seven = set(list_tasks())  # the never-tuned tasks and other seeds are reported apart
    panels = sorted(
        {
            (r["task"], r["bits"])
            for r in peers
            if "error" not in r
            and r.get("seed", 0) == 0
            and r["task"] in seven
            and r["bits"] in bits_list
        }
    )
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{t}, {b}-bit" for t, b in panels])
    for i, (task, bits) in enumerate(panels):
        pts = points(quality, peers, task, bits)
        n = {r["heldout_examples"] for r in peers if (r["task"], r["bits"]) == (task, bits)}
        fp = next(
            (
                r
                for r in quality
                if (r["task"], r["bits"], r["method"]) == (task, bits, "fp")
                and r["heldout_examples"] in n
            ),
            None,
        )
        row, col = divmod(i, cols)
        for trace in pareto_traces(pts, COLOURS, legend=i == 0):
            fig.add_trace(trace, row=row + 1, col=col + 1)
        if fp:
            fig.add_hline(y=fp["answer_nll"], line_dash="dot", row=row + 1, col=col + 1)
        fig.update_xaxes(title_text="honest bits per weight", row=row + 1, col=col + 1)
        fig.update_yaxes(title_text="answer NLL", row=row + 1, col=col + 1)
    fig.update_layout(
        height=380 * rows,
        width=1200,
        title="Held-out answer NLL (95 % interval) against honest BPW; dotted: 16-bit original",
        margin={"l": 60, "r": 20, "t": 80, "b": 50},
    )
    return fig


def screenshot(html: Path, png: Path, width: int, height: int) -> bool:
    """PNG of the HTML page by headless chromium (Playwright); False when none is here."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    if chromium is None:
        return False
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width + 40, "height": height + 40})
        page.goto(html.as_uri())
        page.wait_for_selector(".main-svg", timeout=30_000)
        page.screenshot(path=str(png), full_page=True)
        browser.close()
    return True


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bits", default="2,3")
    args = ap.parse_args()
    quality = json.loads((RESULTS / "quality.json").read_text())["rows"]
    peers = json.loads((RESULTS / "peers.json").read_text())["rows"]
    fig = figure(quality, peers, [int(b) for b in args.bits.split(",")])
    html = RESULTS / "pareto.html"
    # plotly.min.js beside it: one copy in the repository, whatever the regenerations
    fig.write_html(html, include_plotlyjs="directory", full_html=True)
    print(f"wrote {html.relative_to(ROOT)}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "pareto.png"
        if screenshot(html, tmp, fig.layout.width, fig.layout.height):
            shutil.copy(tmp, RESULTS / "pareto.png")
            print(f"wrote {(RESULTS / 'pareto.png').relative_to(ROOT)}")
        else:
            print("no chromium/playwright here: pareto.png not drawn")


if __name__ == "__main__":
    main()
