"""The README and docs/ hold together: links resolve, the README stays short, every page is
listed in the index, and no commit hash appears that no results file names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
HEX = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{7,40}(?![0-9A-Za-z])")


def _prose(text: str) -> str:
    """Markdown without fenced code blocks, where brackets are code, not links."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    return LINK.findall(CODE_SPAN.sub("", _prose(text)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_follows_github() -> None:
    assert slug("Metrics (`:9095/metrics`)") == "metrics-9095metrics"
    assert slug("Trials tried and not adopted") == "trials-tried-and-not-adopted"
    assert slug("[0.1.0] - 2026-11-24") == "010---2026-11-24"


def test_links_ignore_code() -> None:
    text = "[a](a.md) `[b](b.md)`\n```\n[c](c.md)\n```\n[d](d.md#x)"
    assert links(text) == ["a.md", "d.md#x"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT)})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment})")
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


def test_index_lists_every_page() -> None:
    listed = set(links((DOCS / "index.md").read_text(encoding="utf-8")))
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "index.md"]
    assert [name for name in missing if name not in listed] == []


def test_readme_links_the_settings_reference_instead_of_a_table() -> None:
    text = README.read_text(encoding="utf-8")
    assert "docs/settings.md" in links(text)
    assert "| `DENSITYWATCH_" not in text


def test_no_commit_hash_but_those_results_files_name() -> None:
    named: set[str] = set()
    for result in (ROOT / "benchmarks" / "results").glob("*.md"):
        for sha in HEX.findall(result.read_text(encoding="utf-8")):
            named.update(sha[:n] for n in range(7, len(sha) + 1))
    stray = {
        f"{page.name}: {sha}"
        for page in PAGES
        for sha in HEX.findall(page.read_text(encoding="utf-8"))
        if re.search(r"[a-f]", sha) and re.search(r"\d", sha) and sha not in named
    }
    assert not stray, f"commit hashes in the docs: {sorted(stray)}"
