"""The documentation site builds with `mkdocs build --strict`, and what it builds holds together:
every page has a title, every internal link reaches a built page, every image exists.
Skipped where MkDocs is not installed (it is the `docs` extra)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from helpers import ROOT

pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
pytest.importorskip("material", reason="the docs extra (mkdocs-material) is not installed")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.title = ""
        self._in_title = False
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "title":
            self._in_title = True
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, warnings
    yield out
    shutil.rmtree(out, ignore_errors=True)


def _pages(site: Path) -> dict[Path, _Page]:
    pages = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path] = page
    return pages


def _internal(url: str) -> bool:
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:", "data:")))


def _target(site: Path, page: Path, url: str) -> Path:
    path = unquote(urlsplit(url).path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    target = target.resolve()
    if target.is_dir() or path.endswith("/"):
        target = target / "index.html"
    return target


def test_the_site_has_every_page(site):
    expected = [
        "index.html",
        "getting-started/index.html",
        "commands/index.html",
        "configuration/index.html",
        "algorithms/index.html",
        "environments/index.html",
        "results/index.html",
        "results/minatar/index.html",
        "results/cartpole/index.html",
        "results/classic/index.html",
        "results/atari-throughput/index.html",
        "results/cleanrl/index.html",
        "results/atari100k/index.html",
        "sweeps/index.html",
        "resume/index.html",
        "how-it-works/index.html",
        "api/index.html",
    ]
    for rel in expected:
        assert (site / rel).is_file(), rel
    api = (site / "api/index.html").read_text(encoding="utf-8")
    assert "predict" in api and "make_env" in api, "the API page documents dqn_cli.api"


def test_every_page_has_a_title_and_its_links_and_images_resolve(site):
    pages = _pages(site)
    assert len(pages) >= 15
    problems = []
    for path, page in pages.items():
        rel = path.relative_to(site)
        if not page.title.strip():
            problems.append(f"{rel}: no <title>")
        for url in page.links:
            if not _internal(url) or url.startswith("#"):
                continue
            target = _target(site, path, url)
            if not target.exists():
                problems.append(f"{rel}: link {url} -> {target} is missing")
                continue
            fragment = urlsplit(url).fragment
            if fragment and target.suffix == ".html" and target in pages and fragment not in pages[target].ids:
                problems.append(f"{rel}: link {url}: no #{fragment} in {target.relative_to(site)}")
        for src in page.images:
            if _internal(src) and not _target(site, path, src).is_file():
                problems.append(f"{rel}: image {src} is missing")
        for url in page.links:  # the same-page anchors
            if url.startswith("#") and len(url) > 1 and unquote(url[1:]) not in page.ids:
                problems.append(f"{rel}: anchor {url} not on the page")
    assert not problems, "\n".join(problems)


def test_the_readme_links_to_pages_that_exist():
    """The README's relative links (docs/*.md, results/*.png) work on GitHub as they work here."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?:|#)([^)\s]+)\)", text)
    assert any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, missing
    # an anchor into a page names one of its headings, as GitHub and MkDocs slug them
    for target in (t for t in targets if "#" in t):
        page, anchor = target.split("#", 1)
        headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(), flags=re.MULTILINE)
        slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
        assert anchor in slugs, f"{target}: no heading makes #{anchor} ({sorted(slugs)})"


def test_the_figures_in_docs_img_are_the_ones_dqn_plot_wrote_under_results():
    """docs/img/ holds copies (MkDocs serves only docs/): each one with a namesake under results/
    must be that file, or the site shows a stale figure (make docs-figures copies them over)."""
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    by_name = {Path(p).name: ROOT / p for p in tracked if p.endswith(".png")}
    stale = [
        img.name
        for img in sorted((ROOT / "docs" / "img").glob("*.png"))
        if img.name in by_name and img.read_bytes() != by_name[img.name].read_bytes()
    ]
    assert not stale, f"docs/img/ differs from results/ for {stale}: run make docs-figures"


def test_the_configuration_reference_has_one_row_per_key_with_its_type_and_default(site):
    """docs/configuration.md names each key of the schema once; the build adds the type and the
    default `dqn train` runs with, from the schema and the YAML (scripts/mkdocs_hooks.py)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import mkdocs_hooks

    from dqn_cli.config import EvalCommandConfig, TrainConfig

    rows = mkdocs_hooks.reference_rows((ROOT / "docs" / "configuration.md").read_text())
    for section, schema in (("train", TrainConfig), ("eval", EvalCommandConfig)):
        named = [k for where, keys in rows if where == section for k in keys]
        keys = set(mkdocs_hooks.schema_types(schema))
        assert sorted(set(named) - keys) == [], f"{section}: rows for keys the schema does not have"
        assert sorted(keys - set(named)) == [], f"{section}: keys without a row in docs/configuration.md"
        assert len(named) == len(set(named)), f"{section}: a key with two rows"
    html = (site / "configuration" / "index.html").read_text()
    row = re.search(r"<td><code>env\.worker_restarts</code></td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", html)
    assert row and row.group(1).strip() == "int" and "3" in row.group(2), row and row.groups()
    row = re.search(r"<td><code>batch_size</code></td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", html)
    assert row and "384" in row.group(2)  # dqn train's (the CartPole preset's), not the schema's 64
