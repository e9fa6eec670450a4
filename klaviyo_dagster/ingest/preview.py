"""A few rows of a column chunk as a Dagster table (`TableMetadataValue`) for the materialization's preview.

Values keep their type when Dagster's table cells can hold it (str, int, float, bool); anything else
(timestamps, JSON) is shown as text, and long text is cut to ``MAX_CELL`` characters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

MAX_CELL = 80
_TYPES = {bool: "bool", int: "int", float: "float", str: "string"}


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or type(value) in (bool, int, float):
        return value
    text = str(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table_preview(columns: Mapping[str, Sequence[Any]], max_rows: int = 5) -> dg.TableMetadataValue:
    """The first ``max_rows`` rows of ``{column: values}`` as a table (an empty table when there are none)."""
    names = list(columns)
    n = min([max_rows, *(len(v) for v in columns.values())]) if names else 0
    rows = [{name: _cell(columns[name][i]) for name in names} for i in range(n)]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                next((_TYPES.get(type(r[name]), "string") for r in rows if r[name] is not None), "string"),
            )
            for name in names
        ]
    )
    return dg.MetadataValue.table(records=[dg.TableRecord(r) for r in rows], schema=schema)
