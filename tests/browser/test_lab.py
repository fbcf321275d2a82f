"""The notebooks as students meet them: JupyterLab in headless Chromium, driven by Playwright.

For every notebook: double-click it in JupyterLab's file browser, check that it opened *as a
notebook* (the settings ``run.py`` installs), Run All, wait for the kernel, assert that no cell
shows an error; then move every control of every widget once (slider by keyboard, dropdown,
checkbox) and assert that its figure changed and no error appeared.  Screenshots go to
``$TUTOR_ARTIFACTS`` (default ``tests/browser/artifacts/``).

The notebooks are served from a temporary copy with autosave off, so nothing in ``notebooks/`` is
touched.  Needs Chromium (Debian's ``chromium``; ``.ci/run`` installs it) and the ``playwright``
package (the ``[test]`` extra); no browser is downloaded.  Skipped, with one line saying how to
enable it, when Chromium is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
CHROMIUM = os.environ.get("TUTOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TUTOR_ARTIFACTS", ROOT / "tests" / "browser" / "artifacts"))
RUN_TIMEOUT = float(os.environ.get("TUTOR_BROWSER_TIMEOUT", 480))      # seconds per notebook

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="browser test skipped: no Chromium found; install Debian's "
                       "`chromium` package (apt-get install chromium) or set TUTOR_CHROMIUM to enable it"),
    pytest.mark.browser,
]

USER_SETTINGS = {   # the test's own settings folder: every cell in the page, no autosave, no dialogs
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("playwright", reason="browser test skipped: the playwright package is missing "
                        "(pip install -e '.[test]')")
    overrides = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    if "Jupytext Notebook" not in (overrides.read_text() if overrides.exists() else ""):
        pytest.fail(f"{overrides} does not make jupytext the default viewer: run the suite with `python3 run.py test` "
                    "(it installs the settings `python3 run.py lab` uses)")
    tmp = tmp_path_factory.mktemp("lab")
    served = tmp / "notebooks"
    served.mkdir()
    for name in NOTEBOOKS:
        shutil.copy2(ROOT / "notebooks" / name, served / name)
    settings = tmp / "settings"
    for rel, values in USER_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MPLBACKEND", "TUTOR_HEADLESS", "TUTOR_WIDGET_SWEEP", "JUPYTER_CONFIG_DIR")}
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               TUTOR_NO_NETWORK="1", OMP_WAIT_POLICY="PASSIVE")
    log = open(tmp / "lab.log", "w")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={served}", "--LabApp.expose_app_in_browser=True",
           "--allow-root"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=served)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {(tmp / 'lab.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        try:
            yield {"url": url, "token": token, "browser": browser, "log": tmp / "lab.log"}
        finally:
            browser.close()
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


ERRORS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const out = [];
  panel.content.widgets.forEach((cell, i) => {
    if (cell.model.type !== 'code') return;
    for (const o of cell.model.outputs.toJSON()) {
      if (o.output_type === 'error') out.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
    }
  });
  return out;
}"""

BUSY_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const pending = panel.content.widgets.filter(c => c.model.type === 'code' &&
      (c.promptNode && c.promptNode.textContent.includes('*'))).length;
  return {status: kernel ? kernel.status : 'none', pending};
}"""


def _wait_idle(page, timeout: float, settle: float = 2.0) -> None:
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        state = page.evaluate(BUSY_JS)
        if state["status"] == "idle" and state["pending"] == 0:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since >= settle:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(500)
    raise AssertionError(f"the notebook did not finish within {timeout:.0f} s (kernel {state})")


def _figures(widget) -> list[str]:
    return widget.locator(".widget-output img").evaluate_all("imgs => imgs.map(i => i.src)")


def _move_controls(page, widget, label: str) -> list[str]:
    """Move every control of one ipywidgets `interactive` once; return the names of controls whose
    figure did not change."""
    problems = []
    controls = widget.locator(".widget-slider, .widget-dropdown, .widget-checkbox")
    for i in range(controls.count()):
        control = controls.nth(i)
        labels = control.locator(".widget-label")
        name = labels.first.inner_text() if labels.count() else f"#{i}"
        before = _figures(widget)
        kind = control.get_attribute("class") or ""
        if "widget-slider" in kind:
            handle = control.locator(".noUi-handle").first
            handle.focus()
            value = control.locator(".widget-readout").first.inner_text()
            handle.press("ArrowRight")
            if control.locator(".widget-readout").first.inner_text() == value:   # at its maximum: go down
                handle.press("ArrowLeft")
        elif "widget-dropdown" in kind:
            select = control.locator("select").first
            options = select.locator("option").all_inner_texts()
            current = select.evaluate("s => s.options[s.selectedIndex].text")
            select.select_option(label=next(o for o in options if o != current))
        else:
            control.locator("input[type=checkbox]").first.click()
        deadline = time.time() + 90
        while time.time() < deadline and _figures(widget) == before:
            page.wait_for_timeout(300)
        _wait_idle(page, 120, settle=1.0)
        if _figures(widget) == before:
            problems.append(f"{label}: moving {name!r} did not change the figure")
        errors = widget.locator(".widget-output .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        text = " ".join(errors.all_inner_texts())
        if "Traceback" in text or "Error" in text.split("\n")[0:1]:
            problems.append(f"{label}: moving {name!r} raised: {text[:500]}")
    return problems


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab_and_every_widget_responds(lab, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = lab["browser"].new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{lab['url']}/lab?token={lab['token']}")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started !== undefined", timeout=90_000)
        item = page.locator(".jp-DirListing-item", has=page.locator(".jp-DirListing-itemText", has_text=name))
        item.first.wait_for(timeout=90_000)
        item.first.dblclick()
        panel = page.locator(".jp-NotebookPanel:visible")
        panel.first.wait_for(timeout=60_000)
        assert page.locator(".jp-FileEditor:visible").count() == 0, f"{name} opened in the text editor"
        page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
            return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
                   w.sessionContext.session.kernel.status === 'idle'; }""", timeout=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_timeout(2000)
        _wait_idle(page, RUN_TIMEOUT)
        page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}.png"))
        errors = page.evaluate(ERRORS_JS)
        assert not errors, f"{name}: cells raised errors after Run All: {errors}"
        problems = []
        widgets = page.locator(".widget-interact")
        for w in range(widgets.count()):
            widget = widgets.nth(w)
            widget.scroll_into_view_if_needed()
            problems += _move_controls(page, widget, f"{name} widget {w + 1}")
        page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-widgets.png"))
        errors = page.evaluate(ERRORS_JS)
        assert not errors and not problems, f"{name}: {errors} {problems}"
        assert widgets.count() >= 1, f"{name} has no widget"
    finally:
        context.close()
        _shutdown_kernels(lab)          # a closed page leaves its kernel running (and busy with widget callbacks)


def _shutdown_kernels(lab) -> None:
    """Shut down every kernel of the test server (REST API), so the next notebook gets the CPU to itself."""
    import urllib.request

    headers = {"Authorization": f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(f"{lab['url']}/api/kernels", headers=headers), timeout=30) as r:
        kernels = json.loads(r.read())
    for k in kernels:
        req = urllib.request.Request(f"{lab['url']}/api/kernels/{k['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()
