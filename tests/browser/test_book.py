"""The course book (``python3 run.py book``) in headless Chromium, served on loopback, fully offline.

Checks, on the site built into ``_build/book/`` (``TUTOR_BOOK_DIR`` overrides): every page loads with no
console error and no request to any host but the local server; every notebook page shows its figures
(each ``<img>`` has a non-zero natural size), its rendered math (MathJax served from the site) and a
Launch-on-Binder button with the URL documented in pyproject.toml (``[tool.tutor.book]``) and a download
of its ``.py``; every internal link and image resolves (anchors included); the theme's search finds a
term of notebook 04; the arrow keys move between pages.  Screenshots of the landing page and of one
notebook page go to ``$TUTOR_ARTIFACTS`` (default ``tests/browser/artifacts/``).

Skipped, with a line saying why, when Chromium or playwright is missing or the book is not built (CI
runs ``python3 run.py book`` first; see ``.ci/run``).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("TUTOR_BOOK_DIR", ROOT / "_build" / "book"))
CHROMIUM = os.environ.get("TUTOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TUTOR_ARTIFACTS", ROOT / "tests" / "browser" / "artifacts"))
SEARCH_TERM = "Mahalanobis"            # appears in notebook 04's text only

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="book browser test skipped: no Chromium found; install Debian's "
                       "`chromium` package or set TUTOR_CHROMIUM"),
    pytest.mark.skipif(not (SITE / "index.html").exists(), reason=f"book browser test skipped: no book in {SITE}; "
                       "build it with `python3 run.py book`"),
    pytest.mark.browser,
]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    pytest.importorskip("playwright", reason="book browser test skipped: the playwright package is missing "
                        "(pip install -e '.[test]')")
    handler = functools.partial(_Quiet, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        try:
            yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "browser": browser}
        finally:
            browser.close()
            httpd.shutdown()
            httpd.server_close()


def _pages() -> list[str]:
    return sorted(str(p.relative_to(SITE)) for p in SITE.rglob("*.html") if "_static" not in p.parts)


def _notebook_pages() -> list[str]:
    return [p for p in _pages() if re.match(r"notebooks/\d\d_\w+\.html$", p)]


def _open(site, path: str):
    """A new page with console errors and every request recorded; requests off the host are blocked."""
    context = site["browser"].new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log = {"errors": [], "offsite": [], "failed": []}
    host = urllib.parse.urlsplit(site["url"]).netloc

    def route(r):
        parts = urllib.parse.urlsplit(r.request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != host:
            log["offsite"].append(r.request.url)
            return r.abort()
        return r.continue_()

    context.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and log["errors"].append(m.text))
    page.on("pageerror", lambda e: log["errors"].append(str(e)))
    page.on("requestfailed", lambda r: urllib.parse.urlsplit(r.url).netloc == host and log["failed"].append(r.url))
    page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico")   # asked by the browser
            and log["failed"].append(f"{r.status} {r.url}"))
    page.goto(f"{site['url']}/{path}", wait_until="load")
    page.wait_for_load_state("networkidle")
    return context, page, log


WAIT_MATH_JS = """async () => {
  if (!window.MathJax || !MathJax.startup) return -1;
  await MathJax.startup.promise;
  return document.querySelectorAll('mjx-container').length;
}"""

IMAGES_JS = """async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return imgs.map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight]);
}"""


def test_every_page_loads_offline_without_console_errors(site):
    pages = _pages()
    assert {"index.html", "instructor.html", "data.html", "search.html"} <= set(pages)
    for path in pages:
        context, page, log = _open(site, path)
        try:
            page.evaluate(WAIT_MATH_JS)
            assert not log["offsite"], f"{path} requested other hosts: {log['offsite']}"
            assert not log["errors"], f"{path}: console errors {log['errors']}"
            assert not log["failed"], f"{path}: failed requests {log['failed']}"
        finally:
            context.close()


def test_notebook_pages_show_figures_math_binder_and_download(site):
    sys.path.insert(0, str(ROOT / "book"))
    from build import book_settings

    settings = book_settings()
    pages = _notebook_pages()
    assert len(pages) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.py")))
    for path in pages:
        context, page, log = _open(site, path)
        try:
            images = page.evaluate(IMAGES_JS)
            figures = [i for i in images if "_images/" in (i[0] or "")]
            assert figures, f"{path} shows no figure"
            broken = [i for i in images if i[1] == 0 or i[2] == 0]
            assert not broken, f"{path}: images with no size {broken}"
            assert page.evaluate(WAIT_MATH_JS) > 0, f"{path}: no math rendered by MathJax"
            raw_tex = page.evaluate("() => Array.from(document.querySelectorAll('.math'))"
                                    ".filter(e => !e.querySelector('mjx-container')).length")
            assert raw_tex == 0, f"{path}: {raw_tex} math element(s) left unrendered"
            stem = Path(path).stem
            expected = settings["binder_url"].format(path=f"notebooks/{stem}.py", github=settings["github"])
            assert page.get_attribute("a.tutor-binder", "href") == expected
            download = page.get_attribute("a.tutor-download", "href")
            with urllib.request.urlopen(urllib.parse.urljoin(page.url, download)) as r:
                assert r.read().decode() == (ROOT / "notebooks" / f"{stem}.py").read_text()
            assert not log["offsite"] and not log["errors"], (path, log)
        finally:
            context.close()


def test_every_internal_link_and_image_resolves(site):
    base = site["url"]
    ids_cache: dict[str, set[str]] = {}

    def ids(url: str) -> set[str]:
        if url not in ids_cache:
            with urllib.request.urlopen(url) as r:
                ids_cache[url] = set(re.findall(r'\bid="([^"]+)"', r.read().decode("utf-8", "replace")))
        return ids_cache[url]

    checked, missing = set(), []
    for path in _pages():
        html = (SITE / path).read_text(encoding="utf-8", errors="replace")
        page_url = f"{base}/{path}"
        for ref in re.findall(r'(?:href|src)="([^"]+)"', html):
            ref = ref.replace("&amp;", "&")
            if ref.startswith(("mailto:", "javascript:", "data:")) or re.match(r"^[a-z]+://", ref) and \
                    not ref.startswith(base):
                continue                                   # an external link: never fetched by the test
            url = urllib.parse.urljoin(page_url, ref)
            target, _, fragment = url.partition("#")
            target = target.split("?", 1)[0]
            if (target, fragment) in checked:
                continue
            checked.add((target, fragment))
            try:
                urllib.request.urlopen(target).close()
            except Exception as e:
                missing.append(f"{path}: {ref} ({e})")
                continue
            if fragment and target.endswith(".html") and urllib.parse.unquote(fragment) not in ids(target):
                missing.append(f"{path}: {ref} (no element with id {fragment!r})")
    assert len(checked) > 50
    assert not missing, "\n".join(missing[:30])


def test_search_finds_a_term_of_notebook_04(site):
    context, page, log = _open(site, f"search.html?q={SEARCH_TERM}")
    try:
        page.wait_for_selector("#search-results li a", timeout=30_000)
        hrefs = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.getAttribute('href'))")
        assert any("04_meta_variance_transfer" in h for h in hrefs), hrefs
        assert not log["offsite"] and not log["errors"], log
    finally:
        context.close()


def test_keyboard_navigation_and_screenshots(site):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context, page, log = _open(site, "index.html")
    try:
        page.screenshot(path=str(ARTIFACTS / "book_landing.png"))
        page.keyboard.press("ArrowRight")              # the theme's navigation_with_keys: next page
        page.wait_for_url(re.compile(r"notebooks/00_\w+\.html"), timeout=15_000)
        page.keyboard.press("ArrowLeft")
        page.wait_for_url(re.compile(r"/index\.html$"), timeout=15_000)
        page.keyboard.press("Tab")                     # the first Tab reaches a focusable link
        assert page.evaluate("() => document.activeElement && document.activeElement.tagName") in ("A", "BUTTON")
    finally:
        context.close()
    pages = _notebook_pages()
    context, page, log = _open(site, next((p for p in pages if "/04_" in p), pages[0]))
    try:
        page.evaluate(WAIT_MATH_JS)
        page.screenshot(path=str(ARTIFACTS / "book_notebook.png"))
    finally:
        context.close()
