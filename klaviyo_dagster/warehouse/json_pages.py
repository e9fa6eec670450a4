"""Raw JSON:API pages -> staged rows, parsed and unnested by DuckDB (the ingest hot path).

A `JsonPages` chunk holds page bodies as Klaviyo sent them (bytes), each with its pass values (constant
columns) and the interior bounds of its sub-window; its `JsonLayout` says where each column sits in a
resource of ``data`` and of which type, which attribute is the cursor, and the window or fixed partition.
`stage_pages` then does in SQL, off the Python interpreter (DuckDB releases the GIL), what the Python
flattener does record by record, with the same results:

- one ``json_transform`` per page into a struct shaped by the layout (typed columns keep their values;
  JSON columns keep the value's JSON text, a JSON ``null`` or a missing member is SQL NULL; timestamps
  stay text until the insert casts them; a relationship column takes ``relationships.<name>.data.id``);
- records outside their sub-window's interior bounds are skipped (a neighbouring chain reads them), and
  of the rest, those whose cursor lies outside the window (or is missing or unreadable) are dropped and
  counted; each kept row's partition is the UTC day of its cursor (or the fixed snapshot partition);
- attribute keys the layout does not know become extra columns (schema evolution), named by the
  layout's ``extra_name`` in the order they first appear, holding the value's JSON text.

Rows are inserted BY NAME in page order, so "the last staged row of a key wins" means what it meant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from klaviyo_dagster.warehouse.sql import quote_ident

# DuckDB type a column is read as inside json_transform (the staging insert casts it to the declared type).
_READ_AS = {"JSON": "JSON", "BIGINT": "BIGINT", "INTEGER": "INTEGER", "BOOLEAN": "BOOLEAN", "DOUBLE": "DOUBLE"}
_ROWS = "_json_rows"


@dataclass(frozen=True)
class JsonColumn:
    """A staged column: ``path`` inside each resource of ``data`` (e.g. ``("attributes", "datetime")``),
    or, with ``page_value``, the value of that name the page carries (a pass value)."""

    name: str
    sql_type: str
    path: tuple[str, ...] = ()
    page_value: str | None = None


@dataclass(frozen=True)
class JsonLayout:
    """How the resources of a page become rows (see the module docstring)."""

    columns: tuple[JsonColumn, ...]
    partition_column: str
    cursor: tuple[str, ...] | None = None  # path of the cursor (incremental objects)
    window: tuple[datetime, datetime] | None = None  # [start, end) the cursor must lie in
    partition: datetime | None = None  # the fixed partition of a snapshot
    extras_under: str | None = "attributes"  # members of this object the layout does not name: extra columns
    extra_name: Callable[[str], str] = field(default=lambda key: key)

    def known(self) -> frozenset[str]:
        """Names of the members of ``extras_under`` that columns read."""
        return frozenset(c.path[1] for c in self.columns if len(c.path) > 1 and c.path[0] == self.extras_under)

    @staticmethod
    def can_read(paths: Sequence[tuple[str, ...]]) -> bool:
        """Whether one struct can hold these paths (no path is a prefix of another)."""
        given = set(paths)
        return not any(p[:i] in given for p in given for i in range(1, len(p)))


@dataclass
class JsonPages:
    """One chunk of raw pages; after staging, ``rows`` and ``dropped`` say what became of its records."""

    layout: JsonLayout
    bodies: list[bytes] = field(default_factory=list)
    values: list[Mapping[str, Any]] = field(default_factory=list)
    bounds: list[tuple[datetime | None, datetime | None]] = field(default_factory=list)
    rows: int = 0
    dropped: int = 0
    size: int = 0  # body bytes

    def add(self, body: bytes, values: Mapping[str, Any], lower: datetime | None = None,
            upper: datetime | None = None) -> None:
        self.size += len(body)
        self.bodies.append(body)
        self.values.append(values)
        self.bounds.append((lower, upper))

    def __len__(self) -> int:
        return len(self.bodies)


def _struct(layout: JsonLayout, extras: Sequence[str]) -> dict[str, Any]:
    """The json_transform structure of one resource."""
    root: dict[str, Any] = {}

    def put(path: tuple[str, ...], kind: str) -> None:
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node.setdefault(path[-1], kind)

    for col in layout.columns:
        if col.path:
            put(col.path, _READ_AS.get(col.sql_type.upper(), "VARCHAR"))
    if layout.cursor:
        put(layout.cursor, "VARCHAR")
    for key in extras:
        put((layout.extras_under or "", key), "JSON")
    return root


def _ref(path: Sequence[str]) -> str:
    return "r." + ".".join(quote_ident(p) for p in path)


def new_keys(conn: duckdb.DuckDBPyConnection, chunk: JsonPages) -> list[str]:
    """Members of ``extras_under`` in the chunk's resources that the layout does not know, first seen first."""
    layout = chunk.layout
    if layout.extras_under is None:
        return []
    keys = conn.execute(
        "SELECT key FROM (SELECT key, row_number() OVER () AS n FROM (SELECT unnest(flatten(json_keys("
        "decode(b), ?))) AS key FROM (SELECT unnest(?::BLOB[]) AS b))) WHERE key IS NOT NULL "
        "GROUP BY key ORDER BY min(n)",
        ["$.data[*]." + json.dumps(layout.extras_under), chunk.bodies],
    ).fetchall()
    known = layout.known()
    return [k for (k,) in keys if k not in known]


def _pages(chunk: JsonPages) -> tuple[str, list[Any]]:
    """A subquery of the chunk's pages (``doc``, ``lo``, ``hi``, a ``v_<name>`` per pass value) and its params."""
    names = [c.page_value for c in chunk.layout.columns if c.page_value is not None]
    lists = "".join(f", unnest(?::VARCHAR[]) AS {quote_ident('v_' + n)}" for n in names)
    params: list[Any] = [chunk.bodies, [lo for lo, _ in chunk.bounds], [hi for _, hi in chunk.bounds]]
    params += [[None if v.get(n) is None else str(v.get(n)) for v in chunk.values] for n in names]
    sql = f"(SELECT unnest(?::BLOB[]) AS doc, unnest(?::TIMESTAMPTZ[]) AS lo, unnest(?::TIMESTAMPTZ[]) AS hi{lists})"
    return sql, params


def stage_pages(conn: duckdb.DuckDBPyConnection, table: str, chunk: JsonPages, extras: Sequence[str]) -> int:
    """Insert the chunk's rows into ``table`` (columns named by the layout, ``extras`` already added).

    Sets ``chunk.rows`` and ``chunk.dropped``; returns the rows.
    """
    layout = chunk.layout
    select, params = [], []
    for col in layout.columns:
        source = quote_ident("v_" + col.page_value) if col.page_value is not None else _ref(col.path)
        select.append(f"{source} AS {quote_ident(col.name)}")
    for key in extras:
        select.append(f"{_ref((layout.extras_under or '', key))} AS {quote_ident(layout.extra_name(key))}")
    part = quote_ident(layout.partition_column)
    if layout.cursor:
        cursor = f"TRY_CAST({_ref(layout.cursor)} AS TIMESTAMPTZ)"
        select.append(f"date_trunc('day', {cursor}) AS {part}")
        select.append(f"({cursor} IS NULL OR ((lo IS NULL OR {cursor} >= lo) AND (hi IS NULL OR {cursor} < hi))) "
                      "AS _interior")
        if layout.window is not None:
            select.append(f"coalesce({cursor} >= ?::TIMESTAMPTZ AND {cursor} < ?::TIMESTAMPTZ, FALSE) AS _inside")
            params += list(layout.window)
        else:
            select.append(f"{cursor} IS NOT NULL AS _inside")
    else:
        select.append(f"?::TIMESTAMPTZ AS {part}")
        params.append(layout.partition)
        select.append("TRUE AS _interior, TRUE AS _inside")
    structure = json.dumps({"data": [_struct(layout, extras)]}).replace("'", "''")
    carried = ", ".join(["lo", "hi", *(quote_ident("v_" + c.page_value) for c in layout.columns if c.page_value)])
    pages, page_params = _pages(chunk)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {_ROWS} AS SELECT {', '.join(select)} FROM (SELECT {carried}, "
        f"unnest(json_transform(decode(doc), '{structure}').data) AS r FROM {pages})",
        [*params, *page_params],
    )
    names = [quote_ident(c.name) for c in layout.columns]
    names += [quote_ident(layout.extra_name(k)) for k in extras] + [part]
    dropped = conn.execute(f"SELECT count(*) FROM {_ROWS} WHERE _interior AND NOT _inside").fetchone()
    rows = conn.execute(
        f"INSERT INTO {quote_ident(table)} BY NAME SELECT {', '.join(names)} FROM {_ROWS} "
        "WHERE _interior AND _inside"
    ).fetchone()
    conn.execute(f"DROP TABLE {_ROWS}")
    chunk.dropped = int(dropped[0]) if dropped else 0
    chunk.rows = int(rows[0]) if rows else 0
    chunk.bodies, chunk.values, chunk.bounds = [], [], []  # staged: the bytes are not needed any more
    return chunk.rows
