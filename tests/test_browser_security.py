"""What a page in the browser can make the server do: never reach another host.

Gradio serves /gradio_api/file=http://... by fetching that URL itself. A cross-site <img>
sends no Origin, so only the guard's address check stops it: the server must answer 403
and make no network attempt at all (the audit hook logs even a DNS lookup).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS, start_app, stop_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    _missing = "Debian chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI") == "true":  # CI may never pass without the browser tests
        pytest.fail(f"{_missing}; CI=true requires the browser tests", pytrace=False)
    pytest.skip(_missing, allow_module_level=True)

UNROUTABLE = "http://10.255.255.1/x"  # a private address: a fetch would hang, then fail


def test_file_address_naming_a_url_is_refused_without_touching_the_network(tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.network_audit import attempts

    proc, url = start_app(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            answer = page.goto(f"{url}gradio_api/file={UNROUTABLE}", timeout=30_000)
            assert answer.status == 403 and "fetches no other address" in answer.text()
            # the same request as another site's <img> makes it: no Origin, our Host
            page.goto("about:blank")
            page.set_content(f'<img id="probe" src="{url}gradio_api/file={UNROUTABLE}.png">')
            page.wait_for_function("document.getElementById('probe').complete", timeout=30_000)
            assert page.evaluate("document.getElementById('probe').naturalWidth") == 0
            browser.close()
    finally:
        stop_app(proc)
    assert attempts(tmp_path / "audit") == []
