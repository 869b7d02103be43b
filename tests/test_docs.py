"""The documentation site (`make docs`): built once per session into a temporary folder, its HTML checked for
broken internal links and for every public name, and its pages opened in headless Chromium (Debian's
`chromium`; `make chromium` installs it, and the browser tests skip without it): the home page, a tutorial with
its plots, API pages with their maths, the search box, no console errors and no request leaving the machine."""
from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

import slowlearn
from slowlearn.cli import parser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def load_docs_module(name: str):
    """docs/<name>.py, which is not a package module (MkDocs and griffe load it by path)."""
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e .[dev] or .[docs])")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"mkdocs build failed:\n{build.stdout}\n{build.stderr}"
    return out


# --- the built HTML, without a browser ---

class PageLinks(HTMLParser):
    """The ids of one HTML page and the internal URLs it points to (href of a/link, src of img/script)."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        url = attrs.get("href") if tag in ("a", "link") else attrs.get("src") if tag in ("img", "script") else None
        if url and not urlsplit(url).scheme and not url.startswith("//"):
            self.urls.append(url)


def parse_site(site: Path) -> dict[str, PageLinks]:
    pages = {}
    for html in site.rglob("*.html"):
        parsed = PageLinks()
        parsed.feed(html.read_text(encoding="utf-8"))
        pages["/" + html.relative_to(site).as_posix()] = parsed
    return pages


def target_page(site: Path, page: str, url: str) -> str | None:
    """The site path (as keys of `parse_site`) or file that `url` on `page` points to; None if nothing is there."""
    path = unquote(urlsplit(urljoin(page, url)).path)
    file = site / path.lstrip("/")
    if file.is_dir():
        path, file = path.rstrip("/") + "/index.html", file / "index.html"
    return path if file.is_file() else None


def test_no_broken_internal_links_or_anchors(site):
    pages = parse_site(site)
    assert len(pages) > 15, sorted(pages)
    broken = []
    for page, links in pages.items():
        for url in links.urls:
            target = target_page(site, page, url)
            fragment = urlsplit(url).fragment
            if target is None:
                broken.append(f"{page}: {url} (no such file)")
            elif fragment and target in pages and unquote(fragment) not in pages[target].ids:
                broken.append(f"{page}: {url} (no id {fragment!r} on {target})")
    assert not broken, "broken links in the built site:\n" + "\n".join(broken)


def test_every_public_name_is_on_an_api_page(site):
    ids = set().union(*(p.ids for name, p in parse_site(site).items() if name.startswith("/reference/")))
    defining_path = load_docs_module("hooks").defining_path  # slowlearn.train.train: `train` is a module too
    missing = [name for name in slowlearn.__all__ if not {f"slowlearn.{name}", defining_path(name)} & ids]
    assert not missing, f"public names with no entry in the API reference: {missing}"


def test_the_cli_reference_is_generated_from_the_parser(site):
    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = next(a for a in parser()._actions if a.choices and "train" in a.choices).choices
    assert set(commands) == {"train", "lr-find", "export", "predict", "evaluate"}
    for name, command in commands.items():
        assert f"slowlearn {name}" in html
        for action in command._actions:
            for option in action.option_strings:
                assert option in html, f"slowlearn {name} {option} is not in the command-line reference"


def test_the_build_fails_when_a_public_name_has_no_api_entry(tmp_path, monkeypatch):
    exceptions = pytest.importorskip("mkdocs.exceptions", reason="the docs extra is not installed")
    hooks = load_docs_module("hooks")
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "loop.md").write_text("# Loop\n\n::: slowlearn.Learner\n")
    monkeypatch.setattr(hooks, "public_names", lambda: ["Learner", "Callback", "train"])
    (tmp_path / "reference" / "training.md").write_text("::: slowlearn.train.train\n")
    config = type("Config", (), {"docs_dir": str(tmp_path)})()
    with pytest.raises(exceptions.PluginError, match="Callback"):
        hooks.on_pre_build(config)
    (tmp_path / "reference" / "loop.md").write_text("::: slowlearn.Learner\n\n::: slowlearn.Callback\n")
    hooks.on_pre_build(config)


def test_docstrings_read_as_the_browser_shows_them():
    pytest.importorskip("latex2mathml", reason="the docs extra is not installed (pip install -e .[dev] or .[docs])")
    docstrings = load_docs_module("docstrings")
    text = ("Update.\n\n.. math::\n    a &= b \\\\\n    c &= d\n\nThen:\n  x     one\n  yy    two\n\n"
            ">>> [f(p) for p in (0., 1.)]\n[0.0, 1.0]\n\nArgs:\n    lr: the rate.\n")
    out = docstrings.tables_to_text(docstrings.doctests_to_code(docstrings.math_to_mathml(text)))
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in out and "mtable" in out
    assert "```pycon\n>>> [f(p) for p in (0., 1.)]\n[0.0, 1.0]\n```" in out
    assert "Then:\n\n```text\nx     one\nyy    two\n```" in out
    assert out.endswith("Args:\n    lr: the rate.\n")  # a Google section stays for mkdocstrings


# --- in the browser ---

@pytest.fixture(scope="session")
def base_url(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium is not installed ({CHROMIUM} not found): run `make chromium` or `apt-get install "
                    f"chromium`, or set CHROMIUM to its path")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, base_url):
    """Opens a page of the site; afterwards, checks that it logged no console error and asked nothing of any other
    host (the site works offline)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, outside = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    def route(r):
        if r.request.url.startswith(base_url) or r.request.url.startswith("data:"):
            return r.continue_()
        outside.append(r.request.url)
        return r.abort()
    page.route("**/*", route)

    def go(path: str):
        page.goto(base_url + path, wait_until="load")
        return page
    yield go
    page.wait_for_load_state("networkidle")
    page.close()
    assert not errors, f"console errors: {errors}"
    assert not outside, f"requests outside the site: {outside}"


def test_home_page(open_page):
    page = open_page("")
    assert page.title() == "slowlearn"
    assert page.locator("article h1").inner_text().rstrip("¶") == "slowlearn"
    assert "make demo" in page.locator("article").inner_text()
    nav = page.locator("nav.md-nav--primary").inner_text()
    for section in ("Guides", "Tutorials", "API reference", "Your own images", "Use your trained model"):
        assert section in nav


def test_tutorial_page_shows_its_plots(open_page):
    page = open_page("tutorials/02_schedulers/")
    assert "One-cycle training" in page.locator("article").inner_text()
    images = page.locator(".jp-RenderedImage img")
    assert images.count() >= 3
    plot = images.first
    plot.scroll_into_view_if_needed()
    assert plot.is_visible()
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 0
    assert plot.bounding_box()["width"] > 100


def test_api_page_documents_the_learner(open_page):
    page = open_page("reference/loop/")
    learner = page.locator("[id='slowlearn.Learner']")
    assert learner.is_visible()
    method = page.locator("[id='slowlearn.Learner.fit_one_cycle']")
    assert method.count() == 1 and "fit_one_cycle" in method.inner_text()
    assert "lr_max" in page.locator("article").inner_text()  # its signature


def test_api_page_draws_the_update_rules(open_page):
    page = open_page("reference/optimizers/")
    formulas = page.locator("article math")
    assert formulas.count() == 7  # one per optimizer
    formulas.nth(1).scroll_into_view_if_needed()
    box = formulas.nth(1).bounding_box()  # MomentumSGD's, three aligned lines
    assert box["width"] > 200 and box["height"] > 50


def test_search_finds_fit_one_cycle(open_page):
    page = open_page("")
    page.locator("label.md-search__icon, .md-search__input").first.click()
    page.locator("input.md-search__input").press_sequentially("fit_one_cycle")  # keys, as typed (fill: no search)
    results = page.locator(".md-search-result__item")
    results.first.wait_for(timeout=15_000)
    texts = results.all_inner_texts()
    assert any("fit_one_cycle" in text for text in texts), texts
    links = page.locator(".md-search-result__item a").evaluate_all("links => links.map(a => a.href)")
    targets = {urlsplit(link).path + "#" + urlsplit(link).fragment for link in links}
    assert "/reference/loop/#slowlearn.Learner.fit_one_cycle" in targets, links
