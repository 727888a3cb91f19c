"""A gpufab HTML page as Debian's chromium renders it, headless and with the network shut.

`render` loads the page from its file with every way out closed (names resolve nowhere,
every request goes to a proxy on a closed port, no background or component traffic), dumps
the DOM chromium built and takes a screenshot; `read_page` reads back what the tests check:
the pictures, their marks (each with the numbers it carries), and every address the page
could fetch from. The screenshots are kept in tests/artifacts/ (not committed).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Tuple

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

#: Headless as root, and nothing reaches out: without the background-networking flags chromium
#: tries the network on its own; the resolver and proxy rules make sure nothing the page names does.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--hide-scrollbars")


@dataclass
class Rendered:
    dom: str
    screenshot: Path


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "chromium is missing: scripts/install installs it (apt package chromium)"
    return found


def render(page: Path, workdir: Path, screenshot_name: str, width: int = 1280, height: int = 2600) -> Rendered:
    """One chromium run: the DOM it built (stdout) and a screenshot into tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot_name
    if shot.exists():
        shot.unlink()
    profile = workdir / f"chromium-profile-{len(list(workdir.glob('chromium-profile-*')))}"
    profile.mkdir(parents=True)  # a new, empty profile for every run
    done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", f"--screenshot={shot}",
                           f"--window-size={width},{height}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
    return Rendered(done.stdout, shot)


@dataclass
class Page:
    #: data-picture of every picture drawn, in order.
    pictures: List[str] = field(default_factory=list)
    #: data-missing -> what the page says instead of the picture.
    missing: Dict[str, str] = field(default_factory=dict)
    #: Every mark: its attributes, and its tooltip under "title".
    marks: List[Dict[str, str]] = field(default_factory=list)
    #: (tag, attribute, value) of every src/href/action anywhere in the page.
    addresses: List[Tuple[str, str, str]] = field(default_factory=list)
    tags: Dict[str, int] = field(default_factory=dict)
    text: str = ""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._into: Dict[str, str] = {}
        self._key = ""

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        found = {k: v or "" for k, v in attrs}
        self.page.tags[tag] = self.page.tags.get(tag, 0) + 1
        for key, value in found.items():
            if key in ("src", "href", "xlink:href", "action", "srcset", "poster", "data"):
                self.page.addresses.append((tag, key, value))
        if "data-picture" in found:
            self.page.pictures.append(found["data-picture"])
        if "mark" in found.get("class", "").split():
            self.page.marks.append(found)
            self._into, self._key = found, ""
        elif tag == "title" and self._into:
            self._key = "title"
            self._into["title"] = ""
        if "data-missing" in found:
            self._into, self._key = self.page.missing, found["data-missing"]
            self.page.missing[self._key] = ""

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if self._key and tag in ("title", "p"):
            self._into, self._key = {}, ""

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        self.page.text += data
        if self._key:
            self._into[self._key] = self._into.get(self._key, "") + data


def read_page(dom: str) -> Page:
    reader = _Reader()
    reader.feed(dom)
    return reader.page


def marks_of(page: Page, picture: str) -> List[Dict[str, str]]:
    return [m for m in page.marks if m.get("id", "").startswith(f"{picture}-mark-")]


def drawn_share(screenshot: Path) -> Tuple[float, bool]:
    """How much of the screenshot is not white, and whether pure red (a failed host's step) is in it."""
    from matplotlib.image import imread

    pixels = imread(str(screenshot))[:, :, :3]
    inked = float((pixels.sum(axis=2) < 2.9).mean())
    red = bool(((pixels[:, :, 0] > 0.95) & (pixels[:, :, 1] < 0.1) & (pixels[:, :, 2] < 0.1)).any())
    return inked, red
