"""`gpufab report --html`: the saved report as one page, rendered in headless chromium.

The report is made the way bootstrap makes it (a Run of steps, the all-reduce's own figures,
build_report, saved as JSON and read back); chromium renders the page with the network shut,
and the numbers in its three pictures are read back from the DOM and compared with the JSON.
The screenshot is kept as tests/artifacts/report-html-unit.png.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import List, Sequence

import pytest

from browser import drawn_share, marks_of, read_page, render
from fabfile.core import htmlreport
from fabfile.core.chain import Run, Step
from fabfile.core.fanout import CHANGED, FAILED, OK, HostResult
from fabfile.core.inventory import Inventory, Node
from fabfile.core.progress import Progress
from fabfile.core.reporting import build_report
from fabfile.core.runreport import Report
from fabfile.ops import allreduce as ar
from helpers import one_error_line
from inprocess import run_cli

NODES = (Node("node1", "198.18.0.11", private="198.19.0.11", role="head", nid=0),
         Node("node2", "198.18.0.12", private="198.19.0.12", nid=1),
         Node("node3", "198.18.0.13", private="198.19.0.13", nid=2))

GROUP = ar.GroupResult(
    ("node1", "node2", "node3"), "gloo",
    sizes=[ar.SizeRow(1 << 20, 0.004, True, 3), ar.SizeRow(16 << 20, 0.031, True, 3), ar.SizeRow(64 << 20, 0.118, True, 3)],
    ranks=[ar.RankRow(i, n.name, "eth1", "eth1", "cpu") for i, n in enumerate(NODES)],
    links=[ar.Link("node2", "node1", 1.25e9, "builtin"), ar.Link("node3", "node1", 0.61e9, "builtin")])


def session() -> SimpleNamespace:
    return SimpleNamespace(connection=lambda n: SimpleNamespace(user="root"), sudo_password=lambda: None,
                           step_timeout=30, interrupt=lambda: None)


def sleeping(name: str, needs: Sequence[str], seconds: float, fail: Sequence[str] = ()) -> Step:
    def run(run: Run, nodes: Sequence[Node], settings: object) -> List[HostResult]:
        time.sleep(seconds)
        return [HostResult(n, FAILED, 1, reason="exit code 100") if n.name in fail else HostResult(n, CHANGED)
                for n in nodes]

    return Step(name, settings=lambda c, i, cli: None, run=run, needs=tuple(needs))


def allreduce_step() -> Step:
    """The all-reduce as the chain has it, its group's figures kept where its own `data` reads them."""
    def run(run: Run, nodes: Sequence[Node], settings: object) -> List[HostResult]:
        time.sleep(0.05)
        run.keep(ar.NAME, GROUP)
        return [HostResult(n, OK) for n in nodes]

    return Step(ar.NAME, settings=lambda c, i, cli: None, run=run, needs=("preflight",), data=ar.STEP.data,
                report=ar.STEP.report)


@pytest.fixture(scope="module")
def saved() -> Report:
    """A bootstrap's report, as `report` reads it back: docker fails on node3, the all-reduce ran."""
    steps = [sleeping("preflight", (), 0.05), sleeping("docker", ("preflight",), 0.3, fail=("node3",)),
             sleeping("images", ("docker",), 0.1), allreduce_step(),
             Step("verify", settings=lambda c, i, cli: None, run=lambda run, nodes, s: [HostResult(n, OK) for n in nodes])]
    run = Run(session(), Inventory(NODES), NODES, steps, {}, Progress(out=io.StringIO()), False, None)
    run.go()
    report = build_report(run, steps, "inventory/hosts.yaml", [], None)
    return Report.from_json(report.to_json(), "hosts.report.json")


@pytest.fixture(scope="module")
def rendered(saved, tmp_path_factory):
    where = tmp_path_factory.mktemp("html")
    page = where / "hosts.report.html"
    htmlreport.write_page(saved, str(page), "hosts.report.json")
    return page, render(page, where, "report-html-unit.png")


def test_the_run_records_each_hosts_step_from_its_start_to_its_result(saved):
    spans = saved.timings
    assert set(spans) == {"node1", "node2", "node3"}
    # node3's docker failed: images and verify never ran there, so they have no span; the others have every step.
    assert set(spans["node3"]) == {"preflight", "docker", "allreduce"}
    assert set(spans["node1"]) == set(spans["node2"]) == {"preflight", "docker", "images", "allreduce", "verify"}
    for host, steps in spans.items():
        assert all(0 <= start <= end for start, end in steps.values()), steps
        assert steps["docker"][0] >= steps["preflight"][1] and steps["docker"][1] - steps["docker"][0] >= 0.3
        if "verify" in steps:
            assert steps["verify"][0] >= max(end for step, (_, end) in steps.items() if step != "verify")
    # The all-reduce needs preflight only: it ran beside docker, not after it.
    assert spans["node1"]["allreduce"][0] < spans["node1"]["docker"][1]


def test_the_page_renders_the_three_pictures_with_the_reports_numbers(saved, rendered):
    _, shown = rendered
    page = read_page(shown.dom)
    assert page.pictures == ["busbw", "links", "timeline"] and page.missing == {}
    data = json.loads(saved.to_json())
    # busbw against message size: every size of the run, its busbw exactly, its tooltip in GB/s.
    sizes = data["results"]["allreduce"]["sizes"]
    points = marks_of(page, "busbw")
    assert {(int(m["data-bytes"]), float(m["data-busbw-bytes-per-s"])) for m in points} == \
        {(s["bytes"], s["busbw_bytes_per_s"]) for s in sizes}
    for m in points:
        assert f"busbw {float(m['data-busbw-bytes-per-s']) / 1e9:.2f} GB/s at " in m["title"], m
    assert {m["data-run"] for m in points} == {"allreduce"}
    # The link matrix: each measured link, and the slowest pair named as the slowest.
    cells = marks_of(page, "links")
    links = data["results"]["allreduce"]["links"]
    assert {(m["data-sender"], m["data-receiver"], float(m["data-bytes-per-s"])) for m in cells} == \
        {(link["from"], link["to"], link["bytes_per_s"]) for link in links}
    slowest = min(links, key=lambda link: link["bytes_per_s"])
    assert [(m["data-sender"], m["data-receiver"]) for m in cells if m["data-slowest"] == "true"] == \
        [(slowest["from"], slowest["to"])]
    assert "node3 \u2192 node1: 0.61 GB/s (slowest)" in [m["title"] for m in cells]
    assert "slowest: node3 \u2192 node1, 0.61 GB/s" in page.text
    # The timeline: every host's every step, from and to where the JSON says, with its status.
    bars = marks_of(page, "timeline")
    assert {(m["data-node"], m["data-step"]): (float(m["data-start"]), float(m["data-end"])) for m in bars} == \
        {(host, step): tuple(span) for host, steps in data["timings"].items() for step, span in steps.items()}
    assert {(m["data-node"], m["data-step"], m["data-status"]) for m in bars if m["data-status"] == "failed"} == \
        {("node3", "docker", "failed")}
    # The node table and the verification lines are the report's.
    assert "failed at docker: exit code 100" in page.text
    assert data["checks"] and all(line in page.text for line in data["checks"])


def test_the_page_fetches_nothing_and_is_drawn(rendered):
    path, shown = rendered
    page = read_page(shown.dom)
    # Nothing to fetch: no script, stylesheet, frame or image file; every address a fragment of the page itself
    # or inline data (the colour bar's scale).
    assert not {"script", "link", "iframe", "img", "object", "embed"} & set(page.tags), page.tags
    assert page.addresses and all(value.startswith(("#", "data:image/png;base64,")) for _, _, value in page.addresses)
    assert "http://" not in path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "") \
        .replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    # Rendered with the network shut (tests/browser.py): pictures drawn, the failed step's red frame among them.
    inked, red = drawn_share(shown.screenshot)
    assert inked > 0.05 and red, (inked, red)


def test_a_report_saved_before_the_timings_says_so_where_the_pictures_would_be(saved, tmp_path):
    old = json.loads(saved.to_json())
    del old["timings"]
    old["results"] = {"allreduce": {"not_run": "not run: torch not found on node2 (set train_python)"}}
    report = Report.from_json(json.dumps(old), "old.report.json")
    text = htmlreport.page(report)
    page = read_page(text)
    assert page.pictures == []
    assert page.missing == {
        "busbw": "not recorded in this report (not run: torch not found on node2 (set train_python))",
        "links": "not recorded in this report", "timeline": "not recorded in this report"}


def test_text_from_the_nodes_is_escaped(saved):
    report = Report.from_json(saved.to_json(), "r.json")
    report.checks = ["Ray: <script>alert(1)</script> & more"]
    text = htmlreport.page(report)
    assert "<script>" not in text and "Ray: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text


# --------------------------------------------------------------------------- the command


@pytest.fixture
def cluster(saved, tmp_path):
    """An inventory's folder holding the saved report (no node is touched by `report`)."""
    (tmp_path / "hosts.yaml").write_text("nodes:\n  - {name: node1, public: 198.18.0.11}\n")
    (tmp_path / "hosts.report.json").write_text(saved.to_json())
    (tmp_path / "hosts.report.md").write_text(saved.to_markdown())
    (tmp_path / "hosts.failed").write_text("node3\n")
    return tmp_path


def env(folder: Path) -> dict:
    return {"GPUFAB_INVENTORY": str(folder / "hosts.yaml")}


def contents(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_html_writes_the_page_beside_the_report_and_again_over_its_own(cluster):
    done = run_cli("gpufab", "report", "--html", env=env(cluster))
    assert done.returncode == 0, done.stderr
    page = cluster / "hosts.report.html"
    assert done.stdout == f"report: wrote {page} (3 pictures: busbw, links, timeline)\n"
    assert read_page(page.read_text()).pictures == ["busbw", "links", "timeline"]
    other = cluster / "out" / "page.html"
    again = run_cli("gpufab", "report", "--html", "-o", str(other), env=env(cluster))
    assert again.returncode == 0, again.stderr
    assert other.read_text() == page.read_text()
    over = run_cli("gpufab", "report", "--html", "--output", str(other), env=env(cluster))  # its own page: replaced
    assert over.returncode == 0, over.stderr


@pytest.mark.parametrize("args,message", [
    (("--html", "--format", "pdf"), "--format: unknown format 'pdf' (one of: text, markdown, json)"),
    (("--format", "json", "--html"), "--format: not with --html: the page holds the whole report"),
    (("-o", "x.html"), "--output: goes with --html (the text formats print to stdout)"),
    (("--html", "-o", "{d}/hosts.yaml"), "{d}/hosts.yaml: is the inventory: give the page a file of its own"),
    (("--html", "-o", "{d}/hosts.report.json"), "{d}/hosts.report.json: is the JSON report: give the page"),
    (("--html", "-o", "{d}/hosts.report.md"), "{d}/hosts.report.md: is the Markdown report: give the page"),
    (("--html", "-o", "{d}/hosts.failed"), "{d}/hosts.failed: is the failed-hosts file: give the page"),
    (("--html", "-o", "{d}/other.report.json"), "{d}/other.report.json: is an inventory or report file of gpufab"),
    (("--html", "-o", "{d}/lab.yaml"), "{d}/lab.yaml: is an inventory or report file of gpufab, by its name"),
    (("--html", "-o", "{d}/hosts.failed/page.html"), "{d}/hosts.failed/page.html: cannot write here: {d}/hosts.failed"
                                                     " is not a writable directory"),
    (("--html", "-o", "{d}"), "{d}: is a directory, not a file"),
    (("--html", "-o", "{d}/notes.txt"), "{d}/notes.txt: exists and is not a page of `gpufab report --html`"),
])
def test_bad_html_options_are_one_line_and_write_nothing(cluster, args, message):
    (cluster / "notes.txt").write_text("mine\n")
    before = contents(cluster)
    line = one_error_line(run_cli("gpufab", "report", *[a.format(d=cluster) for a in args], env=env(cluster)))
    assert line.startswith("gpufab: error: " + message.format(d=cluster)), line
    assert contents(cluster) == before


def test_an_unwritable_page_is_named_for_a_user_and_nothing_is_written(cluster):
    from inprocess import Unprivileged

    locked = cluster / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    before = contents(cluster)
    user = Unprivileged()
    try:
        line = one_error_line(user.cli("inv", "report", "--html", "-o", str(locked / "page.html"), env=env(cluster)))
    finally:
        user.close()
    assert line == f"gpufab: error: {locked}/page.html: cannot write here: {locked} is not a writable directory"
    assert contents(cluster) == before and list(locked.iterdir()) == []


def test_report_h_is_still_the_help_and_writes_nothing(cluster):
    before = contents(cluster)
    done = run_cli("gpufab", "report", "-h", env=env(cluster))
    assert done.returncode == 0 and "--html" in done.stdout and "-o STRING, --output=STRING" in done.stdout
    assert contents(cluster) == before


def test_no_report_yet_is_one_line_and_no_page(tmp_path):
    line = one_error_line(run_cli("gpufab", "report", "--html", env=env(tmp_path)))
    assert line == f"gpufab: error: {tmp_path}/hosts.report.json: no report yet: run bootstrap first"
    assert list(tmp_path.iterdir()) == []


def test_a_report_edited_or_cut_short_by_hand_is_one_line_naming_it_and_no_page(cluster):
    data = json.loads((cluster / "hosts.report.json").read_text())
    data["results"]["allreduce"]["sizes"] = [{"bytes": 1024}]  # a figure without its busbw
    (cluster / "hosts.report.json").write_text(json.dumps(data))
    before = contents(cluster)
    proc = run_cli("gpufab", "report", "--html", env=env(cluster))
    assert "hosts.report.json: holds figures gpufab did not write" in one_error_line(proc)
    assert contents(cluster) == before
