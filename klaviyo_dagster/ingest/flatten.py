"""Records -> rows: JSON:API resources of one page become column lists, ready for the staging table.

Work is done column by column over a page with list comprehensions (no per-row pandas, no per-row dict):
typed columns keep their scalar values (timestamps stay ISO strings, DuckDB casts them), JSON columns are
encoded with orjson so custom properties keep their types, relationship columns take the related id.
Attributes the table does not declare become extra JSON columns (schema evolution). For incremental
objects each row's partition is the UTC day of its cursor, and rows outside the window are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

from klaviyo_dagster.ingest.children import PARENT_KEY
from klaviyo_dagster.ingest.objects import PARTITION_COLUMN, Column, KlaviyoObject
from klaviyo_dagster.ingest.windows import Window
from klaviyo_dagster.warehouse import LOADED_AT

UTC = timezone.utc
_EMPTY: Mapping[str, Any] = {}
_dumps = orjson.dumps
_fromiso = datetime.fromisoformat


def _json(value: Any) -> str | None:
    return None if value is None else _dumps(value).decode()


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return _dumps(value).decode() if isinstance(value, (dict, list)) else str(value)


def _related_ids(records: list[Mapping[str, Any]], name: str) -> list[str | None]:
    """``relationships.<name>.data.id`` of each record (None where absent)."""
    out: list[str | None] = []
    append = out.append
    for r in records:
        try:
            append(r["relationships"][name]["data"]["id"])
        except (KeyError, TypeError):
            append(None)
    return out


def _parse_utc(raw: Any) -> datetime | None:
    """An ISO 8601 cursor value as an aware UTC datetime (None when missing or unreadable)."""
    if not raw or not isinstance(raw, str):
        return None
    try:
        stamp = _fromiso(raw)
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


ColumnBuilder = Callable[[list[Mapping[str, Any]], list[Mapping[str, Any]], Mapping[str, Any]], list[Any]]


def _getter(key: str) -> Callable[[Mapping[str, Any]], Any]:
    """``mapping -> value`` for ``key``; a dotted key walks into nested objects (``definition.channel``)."""
    if "." not in key:
        return lambda m: m.get(key)
    parts = key.split(".")

    def get(m: Mapping[str, Any]) -> Any:
        value: Any = m
        for part in parts:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value

    return get


def _parents(recs: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r.get(PARENT_KEY) or _EMPTY for r in recs]


def _builder(col: Column) -> ColumnBuilder:
    """A function (records, attributes, pass values) -> column values for one page."""
    kind, _, key = col.source.partition(".")
    sql_type = col.sql_type.upper()
    if kind == "id":
        return lambda recs, attrs, extra: [r.get("id") for r in recs]
    if kind == "relationships":
        return lambda recs, attrs, extra: _related_ids(recs, key)
    if kind == "pass":
        return lambda recs, attrs, extra: [extra.get(key)] * len(recs)
    if kind not in ("attributes", "parent"):
        raise ValueError(f"column {col.name}: unknown source {col.source!r}")
    get = _getter(key)
    convert = _json if sql_type == "JSON" else _text if sql_type == "VARCHAR" else None
    if kind == "parent":
        if convert is None:
            return lambda recs, attrs, extra: [get(p) for p in _parents(recs)]
        return lambda recs, attrs, extra: [convert(get(p)) for p in _parents(recs)]
    if convert is None:
        return lambda recs, attrs, extra: [get(a) for a in attrs]
    return lambda recs, attrs, extra: [convert(get(a)) for a in attrs]


class Flattener:
    """Accumulates pages of one object into column chunks of about ``chunk_rows`` rows.

    ``window`` (incremental objects) drops rows whose cursor falls outside it and assigns each row the
    UTC day of its cursor as partition; ``partition`` (snapshots) is stamped on every row instead.
    """

    def __init__(
        self,
        obj: KlaviyoObject,
        *,
        window: Window | None = None,
        partition: datetime | None = None,
        chunk_rows: int = 10_000,
    ) -> None:
        if obj.incremental and window is None:
            raise ValueError(f"{obj.name} is incremental: a window is required")
        if not obj.incremental and partition is None:
            raise ValueError(f"{obj.name} is a snapshot: a partition is required")
        self.obj = obj
        self.window = window
        self.partition_text = partition.astimezone(UTC).isoformat() if partition is not None else None
        self.chunk_rows = chunk_rows
        self.names = [c.name for c in obj.columns]
        self.builders = [_builder(c) for c in obj.columns]
        self.known_attributes = frozenset(
            c.source.split(".")[1] for c in obj.columns if c.source.startswith("attributes.")
        )
        taken = {c.name.lower() for c in obj.columns} | {PARTITION_COLUMN, LOADED_AT}
        self._taken = taken
        self.extra_columns: dict[str, str] = {}  # attribute -> column name
        self.cursor_key = obj.cursor
        # Children are partitioned by their parent's cursor (``_parent`` of each record).
        self.cursor_of_parent = obj.parent is not None
        self.rows = 0
        self.dropped = 0
        self._day_cache: dict[Any, str] = {}
        self._buf: dict[str, list[Any]] = {}
        self._buf_rows = 0

    # -- per page --------------------------------------------------------------------------------
    def page_columns(self, records: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> dict[str, list]:
        """The column lists of one page (window filter and partition applied)."""
        recs = list(records)
        attrs = [r.get("attributes") or _EMPTY for r in recs]
        if self.cursor_key is not None:
            keep, parts = self._partitions(_parents(recs) if self.cursor_of_parent else attrs)
            if keep is not None:
                self.dropped += len(recs) - len(keep)
                recs = [recs[i] for i in keep]
                attrs = [attrs[i] for i in keep]
        else:
            parts = [self.partition_text] * len(recs)
        cols = {
            name: build(recs, attrs, extra) for name, build in zip(self.names, self.builders, strict=True)
        }
        cols[PARTITION_COLUMN] = parts
        known = self.known_attributes
        if not all(known.issuperset(a) for a in attrs):
            unknown: dict[str, None] = {}
            for a in attrs:
                for k in a:
                    if k not in known:
                        unknown.setdefault(k, None)
            for key in unknown:
                cols[self._extra_name(key)] = [_json(a.get(key)) for a in attrs]
        return cols

    def _extra_name(self, key: str) -> str:
        name = self.extra_columns.get(key)
        if name is None:
            name = key if key.lower() not in self._taken else f"attr_{key}"
            self._taken.add(name.lower())
            self.extra_columns[key] = name
        return name

    def _partitions(self, attrs: list[Mapping[str, Any]]) -> tuple[list[int] | None, list[str]]:
        """(indices to keep or None for all, partition value per kept row)."""
        window = self.window
        assert window is not None
        start, end, key, cache = window.start, window.end, self.cursor_key, self._day_cache
        # Fast path: Klaviyo's own format (whole seconds, +00:00) compares correctly as text.
        start_text, end_text = start.isoformat(), end.isoformat()
        fast = len(start_text) == 25 and len(end_text) == 25
        parts: list[str] = []
        keep: list[int] | None = None
        for i, a in enumerate(attrs):
            raw = a.get(key)
            if fast and type(raw) is str and len(raw) == 25 and raw.endswith("+00:00"):
                inside = start_text <= raw < end_text
                day_key: Any = raw[:10]
            else:
                stamp = _parse_utc(raw)
                inside = stamp is not None and start <= stamp < end
                day_key = stamp.date().isoformat() if stamp is not None else None
            if not inside:
                if keep is None:
                    keep = list(range(i))
                continue
            if keep is not None:
                keep.append(i)
            text = cache.get(day_key)
            if text is None:
                text = cache[day_key] = f"{day_key}T00:00:00+00:00"
            parts.append(text)
        return keep, parts

    # -- chunking --------------------------------------------------------------------------------
    def add(self, records: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] = _EMPTY) -> None:
        """Flatten one page into the current chunk."""
        cols = self.page_columns(records, extra)
        n = len(cols[PARTITION_COLUMN])
        if n == 0:
            return
        buf = self._buf
        for name, values in cols.items():
            column = buf.get(name)
            if column is None:
                buf[name] = [None] * self._buf_rows + values
            else:
                column.extend(values)
        self._buf_rows += n
        for column in buf.values():
            if len(column) < self._buf_rows:
                column.extend([None] * (self._buf_rows - len(column)))
        self.rows += n

    @property
    def full(self) -> bool:
        return self._buf_rows >= self.chunk_rows

    def take(self) -> dict[str, list[Any]] | None:
        """The buffered chunk (None when empty); the buffer starts over."""
        if not self._buf_rows:
            return None
        chunk, self._buf, self._buf_rows = self._buf, {}, 0
        return chunk

    def chunks(
        self, pages: Iterable[tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]]
    ) -> Iterator[dict]:
        """Chunks from ``(records, pass values)`` pages, each emitted once about ``chunk_rows`` are buffered."""
        for records, extra in pages:
            self.add(records, extra)
            if self.full:
                yield self.take()  # type: ignore[misc]
        last = self.take()
        if last is not None:
            yield last
