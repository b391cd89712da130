"""Diagnostics: problems found in user input, collected and shown together, each with where it is.

A Diagnostic has a severity, a one-line summary, optional detail, the file:line:col it points at
and the JSON path inside the document (``vms[2].name``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

PathKey = str | int
Path = tuple[PathKey, ...]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    summary: str
    location: Location | None = None
    path: Path = ()
    detail: str = ""

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        at = f" (at {json_path(self.path)})" if self.path else ""
        return f"{where}{self.severity.value}: {self.summary}{at}"

    def to_json(self) -> dict[str, object]:
        loc = self.location
        return {
            "severity": self.severity.value,
            "summary": self.summary,
            "detail": self.detail,
            "path": json_path(self.path),
            "file": loc.file if loc else None,
            "line": loc.line if loc else None,
            "column": loc.column if loc else None,
        }


def json_path(path: Sequence[PathKey]) -> str:
    """('vms', 2, 'name') → 'vms[2].name'."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "$"


def parse_path(text: str) -> Path:
    """'vms[2].name' → ('vms', 2, 'name'); '$' → () (json_path's inverse, for keys without
    dots or brackets)."""
    if text in ("", "$"):
        return ()
    parts = re.findall(r"\[(\d+)\]|\.?([^.\[]+)", text)
    return tuple(int(index) if index else key for index, key in parts)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


def sort_key(d: Diagnostic) -> tuple[int, int, str]:
    loc = d.location
    return (loc.line if loc else 0, loc.column if loc else 0, d.summary)
