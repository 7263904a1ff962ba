"""The whole flow in a real browser: `python app.py` driven by Chromium through Playwright.

Training → start the default CPT run → the Monitoring chart gains points → Stop → Chat with the run's
checkpoint streams a reply → Publishing fuses it and pushes it to the Hub-protocol test server on
127.0.0.1. A screenshot of each tab is saved under `test-artifacts/browser/` (git-ignored).

Needs Debian's `chromium` (`apt-get install chromium`; `.ci/run` installs it) and the `playwright` Python
package from requirements.txt; Playwright's own browser download is never used. Skipped, saying so,
where either is missing.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
TOKEN = "hf_browser_test_token_0123456789"
# Chromium flags for a machine with no network, no GPU and no user session.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian/Ubuntu: sudo apt-get install chromium)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_app(home: Path, hub_url: str) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    log = home / "app.log"
    env = {
        **os.environ,
        "FORGELLM_HOME": str(home),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "127.0.0.1,localhost",
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": TOKEN,
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            opener.open(url, timeout=5)
            return proc, url, log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"the app did not serve: {log.read_text()[-3000:]}")


def _pick(page, label: str, option: str) -> None:
    """Choose `option` in the Gradio dropdown labelled `label`."""
    page.get_by_label(label, exact=True).filter(visible=True).first.click()
    page.get_by_role("option", name=re.compile(re.escape(option))).filter(visible=True).first.click()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# Data points in the Monitoring tab's first chart (the loss), as Plotly holds them once drawn (`_length`
# of each full trace: the figure's own arrays may arrive base64-encoded).
PLOT_POINTS_JS = """() => { const plot = document.querySelector('.js-plotly-plot');
    return plot && plot._fullData ? plot._fullData.reduce((n, t) => n + (t._length || 0), 0) : 0; }"""


def test_train_watch_stop_chat_fuse_and_push_in_a_browser(forgellm_home: Path, tiny_model: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements.txt)")
    from hub_server import HubServer, User

    with HubServer({TOKEN: User("alice")}) as hub:
        proc, url, log = _launch_app(forgellm_home, hub.url)
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                page.goto(url, wait_until="load")  # never "networkidle": the 2 s timer keeps polling
                try:
                    _run_the_flow(page, hub)
                except Exception as e:  # what the page and the app showed, to tell a bug from a slow machine
                    _shot(page, "failure")
                    shown = page.locator(".prose").filter(visible=True).all_inner_texts()
                    raise AssertionError(
                        f"{e}\n--- visible text blocks:\n{shown[-8:]}\n--- app log:\n{log.read_text()[-3000:]}"
                    ) from e
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            _stop_trainers(forgellm_home)  # a failed flow may leave its run training (by design it outlives the app)
    app_log = log.read_text(errors="replace")
    assert "Traceback" not in app_log, app_log[-3000:]
    # The Hub token (given to the app as HF_TOKEN) is in nothing the app or its trainer wrote.
    leaked = [
        path for path in forgellm_home.rglob("*")
        if path.is_file() and not path.is_symlink() and TOKEN.encode() in path.read_bytes()
    ]  # fmt: skip
    assert leaked == [], leaked


def _stop_trainers(home: Path) -> None:
    from forgellm import launcher, runs

    for run in runs.list_runs(home / "runs"):
        launcher.stop(run.path, wait_s=30)


def _run_the_flow(page, hub) -> None:
    # Training: the default config, Start.
    page.get_by_role("tab", name="Training").wait_for()
    page.get_by_role("button", name="Start training").wait_for()
    page.wait_for_function(  # the form is filled from the config once the page has loaded
        """() => [...document.querySelectorAll('input')].some(i => i.value === '400')"""
    )
    _shot(page, "1-training")
    page.get_by_role("button", name="Start training").click()
    started = page.get_by_text(re.compile(r"Started \S+")).filter(visible=True).first
    started.wait_for()
    run_name = re.search(r"Started (\S+)", started.inner_text()).group(1).strip("*")

    # Monitoring: the run is followed and its loss chart gains points.
    page.get_by_role("tab", name="Monitoring").click()
    page.wait_for_function(
        """() => { const t = (document.querySelector('#forge-cards') || {}).innerText || '';
                   const m = t.match(/([\\d,]+) \\/ ([\\d,]+)/); return m && +m[1].replace(/,/g, '') >= 20; }""",
        timeout=180_000,
    )
    first = page.evaluate(PLOT_POINTS_JS)
    page.wait_for_function(f"() => ({PLOT_POINTS_JS})() > {first}", timeout=120_000)
    assert first > 0
    _shot(page, "2-monitoring")

    # Stop from the Training tab; Monitoring says stopped.
    page.get_by_role("tab", name="Training").click()
    page.get_by_role("button", name="Stop", exact=True).click()
    page.get_by_text(re.compile("Stop requested")).filter(visible=True).first.wait_for()
    page.get_by_role("tab", name="Monitoring").click()
    page.get_by_text(re.compile(r"\bstopped\b")).filter(visible=True).first.wait_for(timeout=120_000)

    # Chat with the run's latest checkpoint: a reply streams in with its statistics.
    page.get_by_role("tab", name="Chat").click()
    _pick(page, "adapter", run_name)
    _pick(page, "checkpoint", "latest")
    page.get_by_text("Settings").filter(visible=True).first.click()
    template = page.get_by_label("chat template (overrides the model's)").filter(visible=True)
    template.fill("{{ messages[-1]['content'] }}")
    page.get_by_placeholder("Ask something and press Enter").fill("The queen bee")
    page.get_by_role("button", name="Send").click()
    page.get_by_text(re.compile(r"tokens/s")).filter(visible=True).first.wait_for(timeout=120_000)
    reply = page.locator('[data-testid="bot"]').last.inner_text()
    assert reply.strip(), "the reply is empty"
    _shot(page, "3-chat")

    # Publishing: fuse the same checkpoint (round-trip checked), then push to the local Hub server.
    page.get_by_role("tab", name="Publishing").click()
    _pick(page, "run", run_name)
    _pick(page, "checkpoint", "latest")
    page.get_by_role("button", name="Fuse (with round-trip check)").click()
    page.get_by_text(re.compile("Round-trip check")).filter(visible=True).first.wait_for(timeout=180_000)
    page.get_by_label("repo id").filter(visible=True).fill("alice/e2e-model")
    page.get_by_role("button", name=re.compile("^Push")).click()
    page.get_by_text(re.compile(r"pushed|alice/e2e-model")).filter(visible=True).last.wait_for(timeout=180_000)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "alice/e2e-model" not in hub.repos:
        page.wait_for_timeout(500)
    _shot(page, "4-publishing")
    repo = hub.repos.get("alice/e2e-model")
    assert repo is not None and repo.private and "model.safetensors" in repo.files and "README.md" in repo.files
