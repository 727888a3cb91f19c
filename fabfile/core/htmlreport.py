"""`report --html`: the saved report as one self-contained page, with its pictures.

The page is read on a laptop after the rental is gone, maybe offline, so nothing in it is
fetched: no script at all, the CSS inline, the pictures inline SVG that matplotlib draws (text
kept as text, so the browser's own fonts serve). Every mark that carries a figure (a busbw
point, a link cell, a host's step) gets a `<title>` (the browser's tooltip) and `data-*`
attributes with the report's own numbers, so a reader, or a test in a browser, reads the
figure back from the page rather than guessing it from pixels.

The pictures are drawn from the report's shapes, not from steps: a `results` entry with
`sizes` (bytes, busbw_bytes_per_s) is a run of busbw against message size, one with `links`
(from, to, bytes_per_s) feeds the link matrix, and `timings` is the timeline. A report saved
before one was recorded says so where the picture would be.

matplotlib is imported here only, and this module only by `report --html`: listing the tasks
or any other command never pays for it.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from .errors import InputError
from .files import render
from .localfs import read_text, write_if_changed
from .runfiles import RunFiles, check_own_output
from .runreport import Report

TEMPLATE = "report/report.html.j2"
#: Marks a page gpufab wrote: only such a file is replaced by another (-o never overwrites a stranger).
GENERATOR = "gpufab report --html"
NOT_RECORDED = "not recorded in this report"
#: Names an HTML page never has: an inventory, or a report or failed-hosts file of gpufab.

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"


def page_path(files: RunFiles) -> str:
    """`inventory/lab.report.json` -> `inventory/lab.report.html`: beside the report it shows."""
    return files.json[: -len(".json")] + ".html"


def check_page_path(path: str, inventory: str, files: RunFiles) -> None:
    """-o must name a page of its own (core.runfiles.check_own_output), and never a file that is not a
    page gpufab wrote."""
    check_own_output(path, inventory, files, "the page", f"default {page_path(files)}")
    old = read_text(path)
    if old and GENERATOR not in old[:2000]:
        raise InputError("exists and is not a page of `gpufab report --html`; it would be replaced: "
                         "give another -o, or move this one away", path=path)


def write_page(report: Report, path: str, source: str) -> str:
    """Render the whole page first, then write it in one rename (a failure leaves nothing behind);
    the line that says so, with the pictures drawn. `source`: the JSON report it was read from."""
    try:
        text = page(report)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:  # a report edited or cut short
        raise InputError(f"holds figures gpufab did not write ({type(exc).__name__}: {exc}); "
                         "run bootstrap again to rewrite it", path=source) from None
    write_if_changed(path, text)
    drawn = re.findall(r'<svg [^>]*data-picture="([a-z]+)"', text)
    return f"report: wrote {path} ({len(drawn)} pictures: {', '.join(drawn) or 'none recorded'})"


# --------------------------------------------------------------------------- the data of each picture


@dataclass(frozen=True)
class BusbwRun:
    """One all-reduce run of the report: busbw per message size."""

    key: str
    label: str
    points: Tuple[Tuple[int, float], ...]


@dataclass
class Picture:
    """One picture of the page: its SVG, or why there is none."""

    name: str
    title: str
    svg: str = ""
    missing: str = ""
    notes: List[str] = field(default_factory=list)


def busbw_runs(report: Report) -> List[BusbwRun]:
    runs = []
    for key, data in report.results.items():
        if not isinstance(data, dict) or not data.get("sizes"):
            continue
        points = tuple(sorted((int(s["bytes"]), float(s["busbw_bytes_per_s"])) for s in data["sizes"]))
        nodes = data.get("nodes") or []
        label = f"{key}: {len(nodes)} nodes, {data.get('backend', '?')}"
        runs.append(BusbwRun(key, label, points))
    return runs


def why_no_runs(report: Report) -> str:
    """What the report says instead of sizes (a step that did not run says why)."""
    reasons = [str(d["not_run"]) for d in report.results.values() if isinstance(d, dict) and d.get("not_run")]
    failed = [f"{k}: failed ({', '.join(f'{n}: {w}' for n, w in d['failures'].items())})"
              for k, d in report.results.items() if isinstance(d, dict) and d.get("failures")]
    return "; ".join(reasons + failed)


def links(report: Report) -> Dict[Tuple[str, str], float]:
    """(from, to) -> bytes per second, every measured link of every run (the slowest where measured twice)."""
    found: Dict[Tuple[str, str], float] = {}
    for data in report.results.values():
        if not isinstance(data, dict):
            continue
        for link in data.get("links") or []:
            pair = (str(link["from"]), str(link["to"]))
            rate = float(link["bytes_per_s"])
            found[pair] = min(rate, found.get(pair, rate))
    return found


def node_names(report: Report) -> List[str]:
    return [str(row.get("node")) for row in report.nodes]


# --------------------------------------------------------------------------- drawing


def gbps(value: float) -> str:
    return f"{value / 1e9:.2f}"


def size_label(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


class Marks:
    """The figures' data marks: gid -> (tooltip, data attributes), put on the SVG after drawing."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.found: Dict[str, Tuple[str, Dict[str, str]]] = {}

    def add(self, tooltip: str, **data: Any) -> str:
        gid = f"{self.prefix}-mark-{len(self.found)}"
        self.found[gid] = (tooltip, {f"data-{k.replace('_', '-')}": str(v) for k, v in data.items()})
        return gid


def figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any, marks: Marks, picture: str) -> str:
    """The figure as inline SVG: text as text, ids its own, the marks titled and carrying their numbers."""
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(out.getvalue())
    for meta in root.findall(f"{{{SVG_NS}}}metadata"):
        root.remove(meta)
    # Three figures share one page: every id (clip paths, markers, matplotlib's own) gets the picture's prefix.
    renamed = {}
    for el in root.iter():
        gid = el.get("id")
        if gid is not None and gid not in marks.found:
            renamed[gid] = f"{picture}-{gid}"
            el.set("id", renamed[gid])
    ref = re.compile(r"url\(#([^)]+)\)")
    for el in root.iter():
        for key, value in list(el.attrib.items()):
            if "url(#" in value:
                el.set(key, ref.sub(lambda m: f"url(#{renamed.get(m.group(1), m.group(1))})", value))
            elif key in ("href", f"{{{XLINK_NS}}}href") and value.startswith("#"):
                el.set(key, "#" + renamed.get(value[1:], value[1:]))
        tooltip_data = marks.found.get(el.get("id", ""))
        if tooltip_data is not None:
            tooltip, data = tooltip_data
            el.set("class", "mark")
            for key, value in data.items():
                el.set(key, value)
            title = ET.Element(f"{{{SVG_NS}}}title")
            title.text = tooltip
            el.insert(0, title)
    root.set("data-picture", picture)
    root.set("role", "img")
    return ET.tostring(root, encoding="unicode")


def busbw_picture(report: Report) -> Picture:
    pic = Picture("busbw", "busbw against message size")
    runs = busbw_runs(report)
    if not runs:
        why = why_no_runs(report)
        pic.missing = NOT_RECORDED + (f" ({why})" if why else "")
        return pic
    marks = Marks("busbw")
    fig = figure(7, 3.6)
    ax = fig.add_subplot()
    for run in runs:
        xs = [b for b, _ in run.points]
        ys = [v / 1e9 for _, v in run.points]
        (line,) = ax.plot(xs, ys, "-", label=run.label)
        for b, v in run.points:
            gid = marks.add(f"{run.label}: busbw {gbps(v)} GB/s at {size_label(b)}", run=run.key, bytes=b,
                            busbw_bytes_per_s=repr(v))
            ax.plot([b], [v / 1e9], "o", color=line.get_color(), gid=gid)
            ax.annotate(gbps(v), (b, v / 1e9), textcoords="offset points", xytext=(0, 6), ha="center")
    sizes = sorted({b for run in runs for b, _ in run.points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [size_label(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlabel("message size")
    ax.set_ylabel("busbw (GB/s)")
    ax.set_ylim(bottom=0, top=max(v for run in runs for _, v in run.points) / 1e9 * 1.2)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    pic.svg = to_svg(fig, marks, pic.name)
    return pic


def link_picture(report: Report) -> Picture:
    pic = Picture("links", "pairwise links (TCP, one stream), coloured against the fastest; the slowest framed")
    found = links(report)
    if not found:
        pic.missing = NOT_RECORDED
        return pic
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    names = node_names(report)
    names += sorted({n for pair in found for n in pair} - set(names))
    slowest = min(found, key=lambda pair: found[pair])
    fastest = max(found.values())
    norm = Normalize(vmin=0, vmax=fastest / 1e9)
    cmap = colormaps["RdYlGn"]
    marks = Marks("links")
    side = max(2.8, 0.9 * len(names) + 1.6)
    fig = figure(side + 1.2, side)
    ax = fig.add_subplot()
    for i, sender in enumerate(names):
        for j, receiver in enumerate(names):
            rate = found.get((sender, receiver))
            if rate is None:
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor="#eeeeee", edgecolor="white"))
                ax.text(j + 0.5, i + 0.5, "" if i == j else "-", ha="center", va="center", color="#999999")
                continue
            is_slowest = (sender, receiver) == slowest
            gid = marks.add(f"{sender} \u2192 {receiver}: {gbps(rate)} GB/s" + (" (slowest)" if is_slowest else ""),
                            sender=sender, receiver=receiver, bytes_per_s=repr(rate),
                            slowest="true" if is_slowest else "false")
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=cmap(norm(rate / 1e9)),
                                   edgecolor="black" if is_slowest else "white", linewidth=3 if is_slowest else 1,
                                   zorder=3 if is_slowest else 1, gid=gid))
            ax.text(j + 0.5, i + 0.5, gbps(rate) + ("\nslowest" if is_slowest else ""), ha="center", va="center",
                    zorder=4)
    ax.set_xlim(0, len(names))
    ax.set_ylim(len(names), 0)
    ax.set_aspect("equal")
    ax.set_xticks([k + 0.5 for k in range(len(names))], names)
    ax.set_yticks([k + 0.5 for k in range(len(names))], names)
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="GB/s", shrink=0.8)
    pic.svg = to_svg(fig, marks, pic.name)
    pic.notes.append(f"slowest: {slowest[0]} \u2192 {slowest[1]}, {gbps(found[slowest])} GB/s")
    return pic


def timeline_picture(report: Report) -> Picture:
    pic = Picture("timeline", "per-host step timeline of the last bootstrap (seconds since it began)")
    timings = {host: spans for host, spans in report.timings.items() if spans}
    if not timings:
        pic.missing = NOT_RECORDED
        return pic
    from matplotlib import colormaps

    hosts = [n for n in node_names(report) if n in timings] + sorted(set(timings) - set(node_names(report)))
    steps = [s for s in report.steps if any(s in timings[h] for h in hosts)]
    steps += sorted({s for h in hosts for s in timings[h]} - set(steps))
    palette = colormaps["tab20"]
    colour = {s: palette(k % 20) for k, s in enumerate(steps)}
    # Steps run side by side on a host: each host gets a band of lanes, a span in the first lane free by then.
    lanes = {host: lanes_of(timings[host]) for host in hosts}
    bands, top = {}, 0
    for host in hosts:
        bands[host] = top
        top += max(lanes[host].values(), default=0) + 1
    marks = Marks("timeline")
    fig = figure(9.5, max(2.4, 0.3 * top + 1.4))
    ax = fig.add_subplot()
    end = max(span[1] for h in hosts for span in timings[h].values()) or 1.0
    for host in hosts:
        for step, (start, stop) in timings[host].items():
            row = bands[host] + lanes[host][step]
            status = report.step_status.get(host, {}).get(step, "")
            gid = marks.add(f"{host} {step}: {start:.1f}s \u2192 {stop:.1f}s ({stop - start:.1f}s, {status or '?'})",
                            node=host, step=step, start=repr(float(start)), end=repr(float(stop)), status=status)
            failed = status in ("failed", "unreachable")
            ax.barh(row, max(stop - start, end / 400), left=start, height=0.8, color=colour[step],
                    edgecolor="red" if failed else "white", linewidth=2 if failed else 0.5,
                    hatch="//" if failed else None, gid=gid)
            if stop - start > end / 12:
                took = f"{stop - start:.0f}s" if stop - start >= 10 else f"{stop - start:.1f}s"
                ax.text((start + stop) / 2, row, f"{step} {took}", ha="center", va="center", fontsize=7)
    for host in hosts[1:]:
        ax.axhline(bands[host] - 0.5, color="#888888", linewidth=0.8)
    ax.set_yticks([bands[h] + max(lanes[h].values(), default=0) / 2 for h in hosts], hosts)
    ax.set_ylim(top - 0.5, -0.5)
    ax.set_xlim(0, end * 1.02)
    ax.set_xlabel("seconds since the bootstrap began")
    ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colour[s], label=s) for s in steps], loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=7, frameon=False)
    pic.svg = to_svg(fig, marks, pic.name)
    return pic


def lanes_of(spans: Dict[str, List[float]]) -> Dict[str, int]:
    """step -> lane on one host's band: by start, each in the first lane whose last span has ended."""
    ends: List[float] = []
    out = {}
    for step, (start, stop) in sorted(spans.items(), key=lambda item: (item[1][0], item[1][1])):
        lane = next((k for k, e in enumerate(ends) if e <= start), len(ends))
        if lane == len(ends):
            ends.append(stop)
        ends[lane] = stop
        out[step] = lane
    return out


#: Text as <text> (the page's numbers readable, the browser's fonts used); ids the same on every run.
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "gpufab", "font.size": 9}


def page(report: Report) -> str:
    import matplotlib

    with matplotlib.rc_context(STYLE):
        pictures = [busbw_picture(report), link_picture(report), timeline_picture(report)]
    rows = [[str(row.get(key, "-")) for key, _ in report.columns] for row in report.nodes]
    return render(TEMPLATE, report=report, generator=GENERATOR, headers=[t for _, t in report.columns], rows=rows,
                  pictures=pictures)

