"""A few rows of a column chunk as a markdown table for Dagster metadata (long values truncated)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MAX_CELL = 48


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def markdown_preview(columns: Mapping[str, Sequence[Any]], max_rows: int = 5) -> str:
    """``| col | ... |`` table of the first ``max_rows`` rows; "(no rows)" when empty."""
    if not columns:
        return "(no rows)"
    names = list(columns)
    n = min(max_rows, min(len(v) for v in columns.values()))
    if n == 0:
        return "(no rows)"
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for i in range(n):
        lines.append("| " + " | ".join(_cell(columns[name][i]) for name in names) + " |")
    return "\n".join(lines)
