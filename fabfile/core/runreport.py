"""The final report of a `bootstrap` run: a value printed, saved and shown again.

It is built from the run's results, saved as Markdown and JSON next to the
inventory, and `inv report` reads the JSON back without touching the nodes,
so it keeps the table's column titles with the rows: the steps that made
them need not be known to read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Tuple

from .errors import InputError

#: (key, title) of the columns every report has before the steps' own, and its last.
LEADING = (("node", "Node"), ("public", "Public IP"), ("private", "Private IP"), ("nid", "NID"), ("role", "Role"))
TRAILING = (("result", "Result"),)


@dataclass
class Report:
    """Everything the last bootstrap found: the table, the checks, what to type next."""

    created: str
    inventory: str
    steps: List[str]
    #: One dict per node, keyed by the columns' keys.
    nodes: List[Dict[str, Any]]
    #: (key, title) of every column, in order.
    columns: List[Tuple[str, str]] = field(default_factory=list)
    checks: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    access: List[str] = field(default_factory=list)
    summary: str = ""
    exit_code: int = 0
    #: Per node, per step: ok / changed / failed / not run.
    step_status: Dict[str, Dict[str, str]] = field(default_factory=dict)
    #: Per step that measures something (the all-reduce): its figures.
    results: Dict[str, Any] = field(default_factory=dict)
    #: Per node, per step it ran: [start, end], seconds since the run began (the progress lines' clock).
    #: Absent from reports saved before it was recorded: {} then.
    timings: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, path: str) -> "Report":
        try:
            data = json.loads(text)
            report = cls(**data)
            report.columns = [(str(k), str(t)) for k, t in report.columns]
            if not report.columns or not all(isinstance(row, dict) for row in report.nodes):
                raise ValueError("no columns")
            return report
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"not a gpufab report ({exc}); run bootstrap again to rewrite it", path=path) from None

    def to_text(self) -> str:
        return self._render("simple", lambda title: f"\n{title}", lambda item: f"  {item}")

    def to_markdown(self) -> str:
        head = f"# gpufab cluster report\n\n{self.created}, inventory `{self.inventory}`, steps: {', '.join(self.steps)}\n"
        return head + self._render("github", lambda title: f"\n## {title}\n", lambda item: f"- {item}", code=True)

    def _render(self, fmt: str, title: Any, item: Any, code: bool = False) -> str:
        rows = [[row.get(key, "-") for key, _ in self.columns] for row in self.nodes]
        from tabulate import tabulate  # only a task that prints a table pays for it
        parts = [tabulate(rows, headers=[t for _, t in self.columns], tablefmt=fmt)]
        sections: Iterable[Tuple[str, List[str]]] = (
            ("Verification", self.checks), ("Warnings", self.warnings), ("Quick access", self.access))
        for name, lines in sections:
            if not lines:
                continue
            parts.append(title(name))
            for line in lines:
                parts.append(item(f"`{line}`" if code and name == "Quick access" and not line.endswith(":") else line))
        if self.summary:
            parts += ["", self.summary]
        return "\n".join(parts) + "\n"
