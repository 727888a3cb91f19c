"""The README and docs/ hold together: every relative link lands on a file and a heading.

README.md is the front page (at most 250 lines); the reference is docs/, one page
per area, each linked from the README. A link `[text](path#anchor)` or
`[text](#anchor)` must name a file that exists (relative to the linking file)
and, with an anchor, a heading of that file as GitHub spells its anchors:
lowercase, spaces to '-', punctuation other than '-' and '_' dropped, a repeated
heading suffixed -1, -2, ... Links with a scheme (https:, mailto:) are not
followed. Pure file reading: no network, no markdown library.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
#: `[text](target)` and `![alt](target)`; the target has no spaces (an optional "title" after one is dropped).
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(path: Path) -> Iterator[Tuple[int, str]]:
    """The file's lines outside fenced code blocks, numbered from 1."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    seen: Dict[str, int] = {}
    found: Set[str] = set()
    for _, line in prose_lines(path):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, target) of every link in the file's prose, inline code left out."""
    for number, line in prose_lines(path):
        for m in LINK.finditer(INLINE_CODE.sub("", line)):
            yield number, m.group(1)


def relative_links(path: Path) -> List[Tuple[int, str]]:
    return [(n, t) for n, t in links(path) if t and not SCHEME.match(t)]


def test_the_anchor_rule_is_github_s():
    assert slug("GPUs: `gpu.doctor` and `fleet`") == "gpus-gpudoctor-and-fleet"
    assert slug("The doctor: `inv gpu.doctor [--deep] [--json]`") == "the-doctor-inv-gpudoctor---deep---json"
    assert slug("Your own steps: `steps:` and `inv script.run`") == "your-own-steps-steps-and-inv-scriptrun"
    assert slug("NVIDIA's container toolkit (the docker step)") == "nvidias-container-toolkit-the-docker-step"
    assert slug("Two commands (fresh Debian 12, as root)") == "two-commands-fresh-debian-12-as-root"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_lands_on_a_file_and_a_heading(page: Path):
    broken = []
    for number, target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(ROOT)}:{number}: ({target})"
        if not dest.exists():
            broken.append(f"{where}: no such file {file_part}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_the_readme_is_at_most_250_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the reference belongs in docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for _, t in relative_links(README) if t.partition("#")[0]}
    missing = [str(p.relative_to(ROOT)) for p in DOCS if p.resolve() not in linked]
    assert DOCS, "docs/ has no pages"
    assert not missing, f"not linked from README.md: {', '.join(missing)}"
