"""Drive the real app in chromium with the real SmolLM2: the whole loop and the bad inputs.

Screenshots of every screen go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.browser_helpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    click_cell_until,
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
FAKE_PEERS = Path(__file__).parent / "fixtures" / "fake_peers"
TASKS = Path(__file__).parent.parent / "assets" / "tasks"
SCREEN_BITS = 3  # the bit width the Circuit and Quantize screens open on (app.common)
HEALTH_BOUND_S = 15  # /healthz must answer under load within this (a hang, not a speed check)

if not Path(CHROMIUM).exists():
    _missing = "Debian chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI") == "true":  # CI may never pass without the browser tests
        pytest.fail(f"{_missing}; CI=true requires the browser tests", pytrace=False)
    pytest.skip(_missing, allow_module_level=True)


APP_HOME: list[Path] = []  # the running app's TACQ_HOME (the library reads its caches)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("app_home")
    APP_HOME[:] = [home]
    proc, url = start_app(home, {"PYTHONPATH": str(FAKE_PEERS)})  # a stand-in hqq package
    yield url
    stop_app(proc)
    from tests.network_audit import attempts

    # The whole module's session (load, collect, quantize, chat, ...) stayed on loopback.
    audit = attempts(home / "audit")
    shutil.rmtree(home, ignore_errors=True)  # its gradient caches are GBs; CI disks are small
    assert audit == []


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


@functools.lru_cache(maxsize=1)
def _small_study(task_file: Path):
    """A Study of the page's 12-example upload (9 calibration examples), in this process
    (one for every comparison: loading and collecting once). Its gradients come from the
    app's own cache when the keys agree (they should: same model, examples and settings),
    so the run writes one 1.3 GB gradient file, not two."""
    from tacq.data.reading import read_examples
    from tacq.data.tasks import task_from_examples
    from tacq.models import load_model
    from tacq.study.workflow import Study

    study = Study(load_model(), task_from_examples("small", read_examples(task_file)))
    before = os.environ.get("TACQ_HOME")
    os.environ["TACQ_HOME"] = str(APP_HOME[0])
    try:
        study.collect()
        print(f"library study: gradients from the app's cache: {study.stats.from_cache}")
    finally:
        if before is None:
            os.environ.pop("TACQ_HOME")
        else:
            os.environ["TACQ_HOME"] = before
    return study


def library_heads(task_file: Path, pct: float):
    """The query head holding most MSG-kept weights, computed by the library in this process
    on the same 9 calibration examples the page uses."""
    from tacq.circuit.select import Selection

    heads = _small_study(task_file).anatomy(Selection("msg", SCREEN_BITS, pct / 100), "query")
    return heads.sort_values(["kept", "score"], ascending=False).iloc[0]


def library_halves(task_file: Path, pct: float):
    """Jaccard of the MSG circuits of the two halves of the page's 9 examples."""
    from tacq.circuit.select import Selection
    from tacq.circuit.stability import stability

    res = stability(_small_study(task_file), Selection("msg", SCREEN_BITS, pct / 100), "halves")
    return float(res.matrix.iloc[0, 1])


def library_causal(task_file: Path, pct: float):
    """The causal table the page should show: MSG circuit zeroed, 3 examples, 1 seed."""
    from tacq.circuit.causal import CausalConfig, causal_test
    from tacq.circuit.select import Selection

    cfg = CausalConfig("zero", seeds=1, task_examples=3, control_examples=3)
    res = causal_test(
        _small_study(task_file), Selection("msg", SCREEN_BITS, pct / 100), "capitals", cfg
    )
    return res.table.set_index("weights damaged")


def test_whole_loop(page, small_task_file):
    info = page.inner_text("#model-info")
    assert "SmolLM2-135M-Instruct" in info and "30" in info
    shot(page, "01_model")

    page.get_by_role("tab", name="Examples & gradients").click()
    upload(page, str(small_task_file))
    wait_text(page, "#data-problems", r"Read 12 example")
    page.get_by_role("button", name="Use these examples").click()
    status = wait_text(page, "#data-status", r"calibration")
    assert "9 calib / 0 dev / 3 held-out" in status
    page.get_by_role("button", name="Collect gradients").click()
    status = wait_text(page, "#data-status", r"Collected|Cache hit", 300)
    assert "over 9 examples" in status
    assert "fp32 sums on the model's device" in status  # the accumulator chosen to fit
    shot(page, "02_examples")
    page.get_by_role("button", name="Collect gradients").click()
    wait_text(page, "#data-status", r"Cache hit", 120)

    page.get_by_role("tab", name="Circuit").click()
    pick(page, "Saliency metric", "MSG |G·W|")
    page.get_by_role("button", name="Show circuit").click()
    before = wait_text(page, "#circuit-stats", r"BPW", 300)
    assert SCREEN_BITS == 3  # the Circuit screen opens at the Quantize screen's bit width
    assert "0.35%" in before and "BPW 3.1015" in before  # 3 (1 - r) + 32 r
    heat_before = page.locator("#heatmap .heatmaplayer").inner_html()
    shot(page, "03_circuit")
    drag_slider(page, "#ratio", 0.6)
    after = wait_text(page, "#circuit-stats", r"^(?![\s\S]*0\.35%)[\s\S]*BPW", 30)
    pct = float(re.search(r"at ([\d.]+)%", after).group(1))
    bpw = float(re.search(r"BPW ([\d.]+)", after).group(1))
    assert 0.9 < pct < 1.5 and bpw == pytest.approx(3 + 29 * pct / 100, abs=2e-3)
    page.wait_for_function(
        "(old) => document.querySelector('#heatmap .heatmaplayer').innerHTML !== old",
        arg=heat_before,
        timeout=30_000,
    )
    shot(page, "04_circuit_moved")

    # a click on the heatmap's top-right cell (layer 0, down) opens its explanation
    why = click_cell_until(page, 13 / 14, 1 / 60, "#explain", r"layer 0 down_proj")
    m = re.search(r"keeps ([\d.]+)% of its weights \(([\d,]+) of ([\d,]+)\), ([\d.]+)x", why)
    share, kept, total, times = float(m[1]), int(m[2].replace(",", "")), m[3], float(m[4])
    assert total == "884,736" and share == pytest.approx(100 * kept / 884_736, abs=0.01)
    assert times == pytest.approx(share / pct, abs=0.06)
    shot(page, "04b_explain")
    table = wait_text(page, "#explain-table", r"score[\s\S]*\d")
    busiest_row = re.search(r"output rows (\d+)", why)[1]
    assert re.search(rf"(^|\n){busiest_row}\s+\d+\s+-?[\d.]+", table)  # row, col, W, ...

    # heads and neurons at this ratio: what the page shows is what the library computes
    page.get_by_text("Heads and neurons", exact=True).click()
    page.get_by_role("button", name="Show heads and neurons").click()
    said = wait_text(page, "#heads-stats", r"holding most kept", 120)
    m = re.search(r"layer (\d+) head (\d+) with ([\d,]+) of ([\d,]+)", said)
    layer, head, kept = int(m[1]), int(m[2]), int(m[3].replace(",", ""))
    assert m[4] == "73,728"  # a SmolLM2 query head: 64 rows of q_proj + 64 columns of o_proj
    top = library_heads(small_task_file, pct)
    assert (layer, head) == (int(top["layer"]), int(top["head"]))
    assert kept == pytest.approx(int(top["kept"]), abs=2)
    neurons = wait_text(page, "#neurons-table", r"neuron[\s\S]*1728")  # 3 x 576 weights each
    assert re.search(r"(^|\n)\d+\s+\d+\s+\d+\s+1728\s", neurons), neurons
    shot(page, "04c_heads")

    # the causal test at this ratio: the numbers shown are the library's
    page.get_by_text("Causal test: damage only the circuit", exact=True).click()
    page.locator("#causal-damage").get_by_label("set to zero").check()
    page.locator("#causal-scored input").fill("3")
    page.locator("#causal-scored input").press("Tab")  # commit the value before the click reads it
    page.locator("#causal-seeds input").fill("1")
    page.locator("#causal-seeds input").press("Tab")  # commit the value before the click reads it
    page.get_by_role("button", name="Run causal test").click()
    said = wait_text(page, "#causal-summary", r"Zeroing these", 300)
    m = re.search(
        r"task NLL by ([-+][\d.]+) and the control task's \(capitals\) by ([-+][\d.]+)", said
    )
    want = library_causal(small_task_file, pct).loc["circuit (msg)"]
    assert float(m[1]) == pytest.approx(want["task NLL change"], abs=0.01)
    assert float(m[2]) == pytest.approx(want["control NLL change"], abs=0.01)
    table = wait_text(page, "#causal-table", r"largest \|W\|")
    assert "random, same count per Linear" in table and "circuit (msg)" in table
    shot(page, "04d_causal")

    # stability across the two halves of the 9 examples: the overlap shown is the library's
    page.get_by_text("Stability: would other examples give the same circuit?").click()
    page.locator("#stability-go").click()
    said = wait_text(page, "#stability-summary", r"mean Jaccard", 300)
    assert said.startswith(f"2 halves of the examples at {pct:.2f}%")
    shown = float(re.search(r"mean Jaccard ([\d.]+)", said)[1])
    assert shown == pytest.approx(library_halves(small_task_file, pct), abs=1e-3)
    table = wait_text(page, "#stability-table", r"half 1 \(5 examples\)")
    assert "half 2 (4 examples)" in table and "x chance" in table
    shot(page, "04e_stability")

    page.get_by_role("tab", name="Quantize").click()
    settings = page.locator("#quant-settings")
    from playwright.sync_api import expect

    # the ratio slider dragged above is one of the levers: the settings are "my own" now
    expect(settings.get_by_label("my own", exact=True)).to_be_checked()
    expect(page.locator("#quant-bits").get_by_label("3", exact=True)).to_be_checked()
    settings.get_by_label("paper's", exact=True).check()  # the paper's: one click away
    wait_text(page, "#quant-status", r"\(the paper's\)", 30)
    expect(page.locator("#quant-basis input")).to_have_value("as is (paper)")
    settings.get_by_label("best measured for these bits", exact=True).check()
    wait_text(page, "#quant-status", r"measured best at 3 bits", 30)
    expect(page.locator("#quant-basis input")).to_have_value("rotated (Hadamard)")
    page.get_by_role("tab", name="Circuit").click()  # the preset moved the slider (from ~1 %)
    wait_text(page, "#circuit-stats", r"at 0\.35%", 30)  # and the circuit followed it
    page.get_by_role("tab", name="Quantize").click()
    pick(page, "Which weights stay in 16 bits", "MSG |G·W|")
    pick(page, "GPTQ damping", "10 %")
    pick(page, "Basis of the unkept weights", "rotated (Hadamard)")
    expect(settings.get_by_label("my own", exact=True)).to_be_checked()  # touched by hand
    page.get_by_role("button", name="Quantize").click()
    made = wait_text(page, "#quant-status", r"Made", 600)
    name = re.search(r"Made (\S+):", made).group(1)
    assert name.startswith("msg-3bit-d0.1-roth-")  # the damping and the basis reached it
    assert name in page.inner_text("#variants-table")
    # packed in memory: codes, scales and kept weights only (SmolLM2's 3-bit Linears in
    # fp16 are 202 MB; the packed file also carries the fp16 embeddings)
    on_disk, in_memory = map(
        float, re.search(r"([\d.]+) MB as a packed file.*?([\d.]+) MB of its own", made).groups()
    )
    assert 30 < in_memory < 0.25 * 202.5 and in_memory < on_disk
    shot(page, "05_quantize")

    # a peer's variant, made by its package in a child process (the fake hqq: plain RTN)
    pick(page, "Or a peer quantizer", "HQQ 2-bit g64")
    page.get_by_role("button", name="Make peer variant").click()
    made = wait_text(page, "#quant-status", r"Made hqq-2bit-g64", 300)
    assert "with hqq 0.0.0+fake: BPW 2.500 with its scales and zeros" in made
    table = page.inner_text("#variants-table")
    assert re.search(r"hqq-2bit-g64\s+2\s+64\s[\s\S]*?2\.5\s[\s\S]*?hqq 0\.0\.0\+fake", table), (
        table
    )
    shot(page, "05b_peer")

    page.get_by_role("tab", name="Chat").click()
    choose_chat_template(page)  # a free question, not the task's few-shot pattern
    page.locator("#chat-prompt textarea").fill("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    for i in (0, 1):  # polls until both columns' replies hold 4+ characters (no fixed wait)
        wait_text(page, f"#chat-{i}", r"capital of France\?\s*(\S\s*){4}", 180)
    for i in (0, 1):
        text = page.inner_text(f"#chat-{i}")
        reply = text.split("capital of France?", 1)[1]
        assert len(reply.strip()) > 3, f"column {i} did not answer: {text!r}"
    shot(page, "06_chat")

    page.get_by_role("tab", name="Evaluate & export").click()
    page.locator("#eval-limit input").fill("2")  # the first 2 of the 3 held-out examples
    page.locator("#eval-limit input").press("Tab")  # commit the value before the click reads it
    page.get_by_role("button", name=re.compile("Evaluate all variants")).click()
    table = wait_text(page, "#eval-table", r"exact match[\s\S]*" + re.escape(name), 300)
    assert "original" in table and "answer NLL" in table and "95 % interval" in table
    iv = r"\[[\d.]+, [\d.]+\]"  # each mean has its 95 % interval; 2 examples were scored
    row = rf"{re.escape(name)}\s+[\d.]+\s+{iv}\s+[\d.]+\s+{iv}\s+[\d.]+\s+2[ \t]*$"
    assert re.search(row, table, re.M), table
    # the Pareto plot: one point per variant, labelled, at its honest BPW
    page.locator("#pareto-plot .textpoint").first.wait_for(timeout=60_000)
    points = page.locator("#pareto-plot .textpoint").all_text_contents()
    assert sorted(points) == sorted([name, "hqq-2bit-g64"])
    title = page.locator("#pareto-plot .gtitle").text_content()
    assert title == "2 variant(s) on 2 held-out examples"
    shot(page, "07_evaluate")

    page.locator("#export-variant input").click()  # ours: a peer's exports as fp16 only
    page.get_by_role("option", name=name, exact=True).click()
    page.get_by_role("button", name="Export", exact=True).click()
    wrote = wait_text(page, "#export-status", r"Wrote", 300)
    mb = float(re.search(r"\(([\d.]+) MB;", wrote)[1])
    assert 90 < mb < 110  # a 3-bit packed SmolLM2, not a 257 MB fp16 copy
    with page.expect_download() as dl:
        page.get_by_role("button", name=re.compile("Download an HTML report")).click()
        page.locator("#report-file a").first.click(timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    saved = ARTIFACTS / "report.html"
    dl.value.save_as(saved)
    report = saved.read_text(encoding="utf-8")
    assert "plotly" in report.lower() and name in report and "answer NLL" in report
    assert not re.search(r"<script[^>]+src=", report)  # everything inline: no CDN
    offline = page.context.browser.new_context(offline=True)
    view = offline.new_page()
    view.goto(saved.as_uri())
    view.wait_for_selector(".heatmaplayer", timeout=30_000)  # plotly drew with no network
    view.screenshot(path=str(ARTIFACTS / "11_report.png"), full_page=True)
    offline.close()

    # a reload (as after a restart: the session's memory is gone) brings the variant back
    page.reload()
    wait_text(page, "#model-info", "SmolLM2")
    page.get_by_role("tab", name="Examples & gradients").click()
    wait_text(page, "#data-status", rf"Restored your variants: {re.escape(name)}", 120)
    page.get_by_role("tab", name="Quantize").click()
    assert name in page.inner_text("#variants-table")


def test_settings_choice_fills_the_quantize_options(page):
    """ "best measured" puts the bit width's preset in every option and the Circuit slider,
    follows a change of bits, and touching an option by hand makes the settings "my own"."""
    from playwright.sync_api import expect

    from tacq.quant.recipe import Recipe

    page.get_by_role("tab", name="Quantize").click()
    settings = page.locator("#quant-settings")  # a fresh page opens on the measured preset
    expect(settings.get_by_label("best measured for these bits", exact=True)).to_be_checked()
    expect(page.locator("#quant-bits").get_by_label("3", exact=True)).to_be_checked()
    expect(page.locator("#quant-damp input")).to_have_value("10 %")
    expect(page.locator("#quant-basis input")).to_have_value("rotated (Hadamard)")
    page.locator("#quant-bits").get_by_label("2", exact=True).check()
    settings.get_by_label("best measured for these bits", exact=True).check()
    said = wait_text(page, "#quant-status", r"measured best at 2 bits", 30)
    assert Recipe.preset("measured", 2).describe() in said
    expect(page.locator("#quant-damp input")).to_have_value("10 %")
    expect(page.locator("#quant-basis input")).to_have_value("rotated (Hadamard)")
    shot(page, "05b_settings")
    page.get_by_role("tab", name="Circuit").click()  # the ratio is the Circuit slider's
    expect(page.locator("#ratio input[type=number]")).to_have_value("0.2")
    page.get_by_role("tab", name="Quantize").click()
    page.locator("#quant-bits").get_by_label("3", exact=True).check()  # follows the bits
    wait_text(page, "#quant-status", r"measured best at 3 bits", 30)
    pick(page, "GPTQ damping", "30 %")
    expect(settings.get_by_label("my own", exact=True)).to_be_checked()
    expect(page.locator("#quant-damp input")).to_have_value("30 %")  # the hand's choice stays
    page.locator("#quant-bits").get_by_label("2", exact=True).check()
    expect(page.locator("#quant-damp input")).to_have_value("30 %")
    settings.get_by_label("paper's", exact=True).check()
    wait_text(page, "#quant-status", r"\(the paper's\)", 30)
    expect(page.locator("#quant-damp input")).to_have_value("1 % (paper)")
    expect(page.locator("#quant-basis input")).to_have_value("as is (paper)")
    page.get_by_role("tab", name="Circuit").click()
    expect(page.locator("#ratio input[type=number]")).to_have_value("0.35")


@pytest.fixture
def fit_task_file(tmp_path):
    """Bundled records rows: 8 calibration, 16 dev (auto-fit's least) and 4 held-out."""
    rows = [json.loads(x) for x in (TASKS / "records.jsonl").read_text().splitlines()]
    left, keep = {"calib": 8, "dev": 16, "heldout": 4}, []
    for r in rows:
        if left[r["split"]]:
            left[r["split"]] -= 1
            keep.append(r)
    path = tmp_path / "fit.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in keep))
    return path


def test_find_the_smallest_two_candidates(page, fit_task_file):
    """Auto-fit at 2 bits with 2 candidates: the frontier, its plot and the choice shown are
    one search's, and the target is applied as stated."""
    page.get_by_role("tab", name="Examples & gradients").click()
    upload(page, str(fit_task_file))
    wait_text(page, "#data-problems", r"Read 28 example")
    page.get_by_role("button", name="Use these examples").click()
    assert "8 calib / 16 dev / 4 held-out" in wait_text(page, "#data-status", r"calibration")
    page.get_by_role("tab", name="Quantize").click()
    empty = page.inner_text("#fit-table")  # before a search: the frontier's own headers
    assert "bits per weight" in empty and "keeps the task" in empty, empty
    page.locator("#fit-bits").get_by_label("3", exact=True).uncheck()
    page.locator("#fit-bits").get_by_label("4", exact=True).uncheck()
    page.locator("#fit-most input").fill("2")
    page.locator("#fit-most input").press("Tab")  # commit the value before the click reads it
    page.locator("#fit-keep input[type=number]").fill("0.5")
    page.locator("#fit-keep input[type=number]").press("Tab")
    page.locator("#fit-go").click()
    bar = page.locator(".progress-text:visible")
    bar.first.wait_for(timeout=60_000)
    assert bar.count() == 1  # one progress display for the job, not one per output
    said = wait_text(page, "#fit-status", r"Searched", 600)
    fp_em, target = map(
        float, re.search(r"dev exact match ([\d.]+); target 0.5 x = ([\d.]*\d)", said).groups()
    )
    assert target == pytest.approx(0.5 * fp_em, abs=1e-3)
    assert "16 dev examples" in said
    table = wait_text(page, "#fit-table", r"stops at 2", 30)
    rows = re.findall(
        r"(tacq-2bit\S+)\s.*?\s(2\.\d+)\s+([\d.]+)\s+([\d.]+)\s+\[.*?\]\s+(yes|no)", table
    )
    assert len(rows) == 2, table
    assert float(rows[0][1]) < float(rows[1][1])  # smallest first
    for _, _, em, _, meets in rows:
        assert (meets == "yes") == (float(em) >= target - 1e-9)
    assert table.count("stops at 2") == 2  # the other two 2-bit candidates, said why
    chosen = re.search(r"Smallest that keeps it: (\S+) at ([\d.]+) bits", said)
    if chosen:  # the first that met the target, kept as a variant, scored on held-out
        first = next(r for r in rows if r[4] == "yes")
        assert chosen[1] == first[0] and chosen[2] == first[1]
        assert "Scored once on 4 held-out examples" in said
        assert chosen[1] in page.inner_text("#variants-table")
    else:
        assert "No candidate of 2 scored" in said and all(r[4] == "no" for r in rows)
    legend = page.locator("#fit-plot .legendtext")
    legend.first.wait_for(timeout=60_000)
    shot(page, "05c_find_the_smallest")
    starred = [t for t in legend.all_text_contents() if t.startswith("chosen: ")]
    assert starred == ([f"chosen: {chosen[1]}"] if chosen else [])  # the star is the choice
    assert page.locator("#fit-plot .scatterlayer .point").count() >= 4  # 2 points x 2 panels


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
    before = page.inner_text("#examples-table")
    page.get_by_label("Bundled task set").first.click()
    page.get_by_role("option", name=re.compile(r"\(plurals\)")).click()
    page.wait_for_function(  # the table shows the plurals rows before they are used
        "(old) => document.querySelector('#examples-table').innerText !== old",
        arg=before,
        timeout=60_000,
    )
    wait_text(page, "#examples-table", r"thief -> thieves")  # the first plurals row is drawn
    page.get_by_role("button", name="Use these examples").click()
    status = wait_text(page, "#data-status", r"plurals|my-task", 300)  # a 269-row table
    assert "plurals" in status, status
    page.reload()
    wait_text(page, "#model-info", "SmolLM2")
    page.get_by_role("tab", name="Examples & gradients").click()
    status = wait_text(page, "#data-status", r"Restored", 60)
    assert "plurals" in status


def test_how_it_works_toy_follows_the_formula(page):
    """The toy's kept count is floor(p * 96) for each slider position; bits change dW."""
    page.get_by_role("tab", name="How it works").click()
    first = wait_text(page, "#toy-summary", r"k = ")
    assert "k = ⌊0.10 × 96⌋ = 9" in first
    page.wait_for_selector("#toy-plot .heatmaplayer", timeout=30_000)
    assert page.locator("#toy-plot .heatmaplayer").count() >= 7  # W, G, dW + four scores
    shot(page, "09_how_it_works")
    outlines_before = page.locator("#toy-plot path[style*='stroke: rgb(0, 0, 0)']").count()
    drag_slider(page, "#toy-ratio", 0.8)
    after = wait_text(page, "#toy-summary", r"^(?![\s\S]*⌊0\.10 ×)[\s\S]*k = ")
    p = float(re.search(r"⌊([\d.]+) × 96⌋", after).group(1))
    k = int(re.search(r"⌋ = (\d+)", after).group(1))
    assert p > 0.15 and k == int(p * 96)
    page.wait_for_function(
        "(n) => document.querySelectorAll(\"#toy-plot path[style*='stroke: rgb(0, 0, 0)']\")"
        ".length > n",
        arg=outlines_before,
        timeout=30_000,
    )
    dw2 = float(re.search(r"Mean \|dW\| at 2 bits: (\d+\.\d+)", after).group(1))
    page.locator("#toy-bits").get_by_label("4", exact=True).check()
    four = wait_text(page, "#toy-summary", r"at 4 bits")
    dw4 = float(re.search(r"Mean \|dW\| at 4 bits: (\d+\.\d+)", four).group(1))
    assert dw4 < dw2 / 2  # finer grid, smaller rounding error
    shot(page, "10_how_it_works_moved")


def test_one_click_demo_quick(page):
    from tacq.data.reading import load_task
    from tacq.study.demo import DEMO_TASK, QUICK_GPTQ, demo_recipe

    tacq2, gptq = demo_recipe(2).name, QUICK_GPTQ[-1].name  # g128: what practitioners run
    page.get_by_role("tab", name="One-click demo").click()
    page.get_by_label("Quick (8 examples, no 3-bit").check()
    page.get_by_role("button", name="Run the demo").click()
    wait_text(page, "#demo-timeline", r"running", 120)
    shot(page, "12_demo_running")
    # a finished demo shows the gallery: the first 10 held-out prompts, answers marked
    said = wait_text(page, "#demo-gallery-summary", r"Right answers in the gallery", 900)
    right = {m[1]: int(m[2]) for m in re.finditer(r"([\w.%-]+) (\d+) of 10", said)}
    assert set(right) == {"original", *(r.name for r in QUICK_GPTQ), tacq2}, said
    assert right[tacq2] >= 5 and right[tacq2] > right[gptq], said  # measured default
    gallery = page.inner_text("#demo-gallery")
    n = 2 + len(QUICK_GPTQ)
    assert gallery.count("✓") + gallery.count("✗") == 10 * n
    assert re.search(rf"{re.escape(gptq)} · 2\.\d\d BPW", gallery), gallery[:300]
    assert re.search(rf"{re.escape(tacq2)} · 2\.\d\d BPW", gallery), gallery[:300]
    timeline = wait_text(page, "#demo-timeline", rf"(done[\s\S]*){{{n + 1}}}", 30)
    assert timeline.count("done") == n + 1 and "running" not in timeline
    assert "quantize gptq-2bit-g128" in timeline
    assert re.search(r"Done in \d+ s", page.inner_text("#demo-status"))
    shot(page, "13_demo_gallery")
    # the chat has the task's first held-out prompt ready and the held-out table
    page.get_by_role("tab", name="Chat").click()
    prompt = load_task(DEMO_TASK).heldout[0].prompt
    assert page.locator("#chat-prompt textarea").input_value() == prompt
    table = wait_text(page, "#chat-eval", re.escape(gptq), 30)
    nll = {
        name: float(re.search(rf"{re.escape(name)}\s+([\d.]+)", table)[1])
        for name in ("original", tacq2, gptq)
    }
    assert nll["original"] < nll[tacq2] < nll[gptq]
    # Send on the suggested prompt: the chat sends it raw, as the gallery did, so each
    # model answers it as in the gallery's first row (original, TaCQ 2-bit, GPTQ 2-bit):
    # a right answer word for word; a wrong one wrong in the chat too (the gallery's comes
    # from evaluation's left-padded batch of 16, and a 2-bit model's garbage can part from
    # the unpadded chat's at a near-tie of two tokens: seen once, "l" against "l =>url:")
    assert page.locator("#chat-style input:checked").get_attribute("value") == "completion"
    assert page.get_by_label("Variant 1").input_value() == tacq2
    assert page.get_by_label("Variant 2").input_value() == gptq
    first_row = re.findall(r"([✓✗]) ([^\n]*)", gallery)[:3]
    page.get_by_role("button", name="Send").click()
    replies = _settled_replies(page, 3)
    answer = load_task(DEMO_TASK).heldout[0].answer.strip()
    for (mark, shown), reply in zip(first_row, replies, strict=True):
        line = reply.split("\n")[0].strip()
        if mark == "✓":  # the same greedy answer, a whole line in both
            assert line == shown.strip() == answer, (replies, first_row)
        else:
            assert line != answer, (replies, first_row)
    assert first_row[0][0] == "✓"  # the original answers it right, in the chat too
    shot(page, "14_demo_chat")


def choose_chat_template(page) -> None:
    """Pick the chat template for a free question. Opening the Chat tab sets the loaded
    task's style (raw completion) once per task; a choice made after it stays."""
    for _ in range(10):
        page.locator("#chat-style").get_by_text("chat template").click()
        page.wait_for_timeout(1500)
        if page.locator("#chat-style input:checked").get_attribute("value") == "chat":
            return
    raise AssertionError("the Prompt style would not stay on chat template")


def _settled_replies(page, columns: int, timeout_s: float = 300) -> list[str]:
    """Each chat column's last reply once none has changed for 3 s (a one-line answer
    ends early; no fixed wait)."""
    import time

    bots = [page.locator(f"#chat-{i} [data-testid=bot]") for i in range(columns)]
    last, since, deadline = None, time.time(), time.time() + timeout_s
    while time.time() < deadline:
        now = [b.last.inner_text() if b.count() else "" for b in bots]
        if now != last:
            last, since = now, time.time()
        elif all(t.strip() for t in now) and time.time() - since > 3:
            return now
        time.sleep(0.5)
    raise AssertionError(f"the chat did not settle: {last}")


def test_eight_sessions_chat_while_one_quantizes(browser, app_url, tmp_path):
    """8 browser sessions chat at once while a 9th quantizes: all answered, no error, the
    server stays responsive, and each session keeps its own examples."""
    import time
    import urllib.request

    contexts, pages = [], []
    for _ in range(9):
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        contexts.append(ctx)
        p = ctx.new_page()
        p.goto(app_url)
        wait_text(p, "#model-info", "SmolLM2")
        pages.append(p)
    try:
        for i, p in enumerate(pages[:8]):  # each session uploads its own examples
            rows = [{"prompt": f"session{i} word{j} ->", "answer": f" w{j}"} for j in range(8)]
            path = tmp_path / f"session{i}.jsonl"
            path.write_text("\n".join(json.dumps(r) for r in rows))
            p.get_by_role("tab", name="Examples & gradients").click()
            upload(p, str(path))
            wait_text(p, "#data-problems", r"Read 8 example")
            p.get_by_role("button", name="Use these examples").click()
            wait_text(p, "#data-status", r"calibration")
        worker = pages[8]
        worker.get_by_role("tab", name="Examples & gradients").click()
        worker.get_by_role("button", name="Use these examples").click()
        wait_text(worker, "#data-status", "calibration")
        worker.get_by_role("tab", name="Quantize").click()
        worker.get_by_label("round to nearest").check()
        from playwright.sync_api import expect

        expect(worker.locator("#quant-damp input")).to_be_disabled()  # RTN has no Hessian
        expect(worker.locator("#quant-rounding input")).to_be_disabled()  # nor GPTQ's grid
        expect(worker.locator("#quant-basis input")).to_be_disabled()  # nor rotated inputs
        worker.get_by_label("Keep the circuit (ratio from the slider)").uncheck()
        worker.get_by_role("button", name="Quantize").click()
        for i, p in enumerate(pages[:8]):
            p.get_by_role("tab", name="Chat").click()
            choose_chat_template(p)
            p.locator("#chat-prompt textarea").fill(f"Say the number {i}.")
            p.get_by_role("button", name="Send").click()
        # the page server answers while the CPU is busy; how fast is bench/health_latency.py's
        # figure (a timed assert here failed on a 2-core machine saturated by this test)
        for _ in range(5):
            with urllib.request.urlopen(app_url + "healthz", timeout=HEALTH_BOUND_S) as r:
                assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}
            time.sleep(0.5)
        for i, p in enumerate(pages[:8]):
            wait_text(p, "#chat-0", rf"Say the number {i}\.[\s\S]*\w", 600)
            errors = p.locator(".toast-item").all_inner_texts()
            assert errors == [], f"session {i} saw: {errors}"
        wait_text(worker, "#quant-status", r"Made rtn-\dbit", 600)
        for i, p in enumerate(pages[:8]):  # nobody's examples leaked into another session
            p.get_by_role("tab", name="Examples & gradients").click()
            # the tab renders its table after the click: read it once it shows rows
            table = wait_text(p, "#examples-table", r"session\d", 60)
            seen = set(re.findall(r"session(\d)", table))
            assert seen == {str(i)}, f"session {i} sees examples of sessions {seen}"
        shot(pages[3], "15_load_session")
    finally:
        for ctx in contexts:
            ctx.close()


def test_oversize_upload_is_refused_before_it_is_read(page, tmp_path):
    big = tmp_path / "big.jsonl"
    row = json.dumps({"prompt": "x" * 900, "answer": "y"}) + "\n"
    big.write_text(row * (21 * 2**20 // len(row) + 1))  # just over the 20 MB limit
    page.get_by_role("tab", name="Examples & gradients").click()
    upload(page, str(big))
    msg = toast_text(page, r"size|large|MB", 60)
    assert re.search(r"maximum allowed size of 20(\.0)? ?MB", msg, re.I), msg
    assert "Read " not in page.inner_text("#data-problems")  # the parser never saw it
    shot(page, "16_oversize_upload")
