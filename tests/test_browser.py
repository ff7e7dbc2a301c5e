"""Drive the real app in chromium with the real SmolLM2: the whole loop and the bad inputs.

Screenshots of every screen go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    drag_slider,
    pick,
    shot,
    start_app,
    stop_app,
    toast_text,
    upload,
    wait_text,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if (
    not Path(CHROMIUM).exists()
    or shutil.which("chromium") is None
    and CHROMIUM == "/usr/bin/chromium"
):
    pytest.skip(
        "Debian chromium is not installed (apt-get install chromium)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("app_home")
    proc, url = start_app(home)
    yield url
    stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(app_url)
    wait_text(page, "#model-info", "SmolLM2")
    yield page
    context.close()


@pytest.fixture
def small_task_file(tmp_path):
    """12 antonym examples (9 calibration, 3 held-out by the every-4th rule)."""
    rows = [
        json.loads(x)
        for x in (Path(__file__).parent.parent / "assets" / "tasks" / "antonyms.jsonl")
        .read_text()
        .splitlines()[:12]
    ]
    path = tmp_path / "small.jsonl"
    path.write_text(
        "\n".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"]}) for r in rows)
    )
    return path


def test_whole_loop(page, small_task_file):
    info = page.inner_text("#model-info")
    assert "SmolLM2-135M-Instruct" in info and "30" in info
    shot(page, "01_model")

    page.get_by_role("tab", name="Examples & gradients").click()
    upload(page, str(small_task_file))
    wait_text(page, "#data-problems", r"Read 12 example")
    page.get_by_role("button", name="Use these examples").click()
    status = wait_text(page, "#data-status", r"calibration")
    assert "9 calibration / 3 held-out" in status
    page.get_by_role("button", name="Collect gradients").click()
    status = wait_text(page, "#data-status", r"Collected|Cache hit", 300)
    assert "over 9 examples" in status
    shot(page, "02_examples")
    page.get_by_role("button", name="Collect gradients").click()
    wait_text(page, "#data-status", r"Cache hit", 120)

    page.get_by_role("tab", name="Circuit").click()
    pick(page, "Saliency metric", "MSG |G·W|")
    page.get_by_role("button", name="Show circuit").click()
    before = wait_text(page, "#circuit-stats", r"BPW", 300)
    assert "0.35%" in before and "BPW 2.1050" in before
    heat_before = page.locator("#heatmap .heatmaplayer").inner_html()
    shot(page, "03_circuit")
    drag_slider(page, "#ratio", 0.6)
    after = wait_text(page, "#circuit-stats", r"^(?![\s\S]*0\.35%)[\s\S]*BPW", 30)
    pct = float(re.search(r"at ([\d.]+)%", after).group(1))
    bpw = float(re.search(r"BPW ([\d.]+)", after).group(1))
    assert 0.9 < pct < 1.5 and bpw == pytest.approx(2 + 30 * pct / 100, abs=2e-3)
    page.wait_for_function(
        "(old) => document.querySelector('#heatmap .heatmaplayer').innerHTML !== old",
        arg=heat_before,
        timeout=30_000,
    )
    shot(page, "04_circuit_moved")

    page.get_by_role("tab", name="Quantize").click()
    page.get_by_label("3", exact=True).check()
    pick(page, "Which weights stay in 16 bits", "MSG |G·W|")
    page.get_by_role("button", name="Quantize").click()
    made = wait_text(page, "#quant-status", r"Made", 600)
    name = re.search(r"Made (\S+):", made).group(1)
    assert name.startswith("msg-3bit-")
    assert name in page.inner_text("#variants-table")
    shot(page, "05_quantize")

    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-prompt textarea").fill("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    for i in (0, 1):
        wait_text(page, f"#chat-{i}", r"capital of France\?[\s\S]*\w+", 180)
    page.wait_for_timeout(1500)
    for i in (0, 1):
        text = page.inner_text(f"#chat-{i}")
        reply = text.split("capital of France?", 1)[1]
        assert len(reply.strip()) > 3, f"column {i} did not answer: {text!r}"
    shot(page, "06_chat")

    page.get_by_role("tab", name="Evaluate & export").click()
    page.get_by_role("button", name=re.compile("Evaluate all variants")).click()
    table = wait_text(page, "#eval-table", name, 300)
    assert "original" in table and "answer NLL" in table
    shot(page, "07_evaluate")


def test_empty_table_is_refused(page):
    page.get_by_role("tab", name="Examples & gradients").click()
    page.get_by_role("button", name="Use these examples").click()
    wait_text(page, "#data-status", r"calibration")  # the default table works
    # clear every cell of the prompt/answer columns through an upload of nothing useful
    upload(page, [{"name": "empty.csv", "mimeType": "text/csv", "buffer": b"prompt,answer\n"}])
    assert "no examples" in toast_text(page, r"no examples")


def test_malformed_upload_names_the_line(page):
    page.get_by_role("tab", name="Examples & gradients").click()
    bad = b'{"prompt": "a ->", "answer": " b"}\n{"prompt": broken\n{"question": "x"}\n'
    upload(page, [{"name": "bad.jsonl", "mimeType": "application/json", "buffer": bad}])
    text = wait_text(page, "#data-problems", r"bad row")
    assert "line 2" in text and "not valid JSON" in text
    assert "line 3" in text and "expected prompt and answer" in text
    page.get_by_role("button", name="Keep only the good rows").click()
    assert "Kept 1 good row" in wait_text(page, "#data-problems", r"Kept")


def test_binary_upload_is_refused(page):
    page.get_by_role("tab", name="Examples & gradients").click()
    upload(page, [{"name": "x.csv", "mimeType": "text/csv", "buffer": b"\x00\x01\x02binary"}])
    assert "binary" in toast_text(page, r"binary")


def test_bad_model_path_keeps_previous_model(page):
    page.locator("#model-source textarea, #model-source input").first.fill("/no/such/folder")
    page.get_by_role("button", name="Load model").click()
    assert "/no/such/folder" in toast_text(page, r"no/such/folder")
    assert "SmolLM2-135M-Instruct" in page.inner_text("#model-info")
    shot(page, "08_bad_model")


def test_examples_survive_a_reload(page):
    page.get_by_role("tab", name="Examples & gradients").click()
    page.get_by_label("Bundled task set").first.click()
    page.get_by_role("option", name=re.compile(r"\(plurals\)")).click()
    page.get_by_role("button", name="Use these examples").click()
    wait_text(page, "#data-status", r"plurals")
    page.reload()
    wait_text(page, "#model-info", "SmolLM2")
    page.get_by_role("tab", name="Examples & gradients").click()
    status = wait_text(page, "#data-status", r"Restored", 60)
    assert "plurals" in status
