"""Records -> rows: JSON:API resources of one page become column lists, ready for the staging table.

Work is done column by column over a page with list comprehensions (no per-row pandas, no per-row dict):
typed columns keep their scalar values (timestamps stay ISO strings, DuckDB casts them), JSON columns are
encoded with orjson so custom properties keep their types, relationship columns take the related id.
Attributes the table does not declare become extra JSON columns (schema evolution). For incremental
objects each row's partition is the UTC day of its cursor, and rows outside the window are dropped.

Raw pages (`fetch.RawPassPage`, the bytes Klaviyo sent) are not decoded here at all: they are gathered
into `JsonPages` chunks with a `JsonLayout` built from the same entry, and DuckDB parses, unnests, filters
and partitions them in the staging write (warehouse/json_pages.py), with the same rows and values. That is
the hot path: on the shared 2-core machine (load ~4-5) a 1,000-event page cost 8.5-9.5 ms of CPU to decode
with orjson alone, a partition through the Python path ~2.3x the bare fetch+decode loop's CPU, while
DuckDB's parse, unnest and insert cost 9-12 ms a page, outside the GIL (README, Performance). `Flattener.reads_raw` says whether an entry can take it
(every column an id, attribute, relationship or pass value; children read through a parent cannot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

from klaviyo_dagster.ingest.children import PARENT_KEY
from klaviyo_dagster.ingest.fetch import RawPassPage
from klaviyo_dagster.ingest.objects import PARTITION_COLUMN, Column, KlaviyoObject
from klaviyo_dagster.ingest.windows import Window
from klaviyo_dagster.warehouse import LOADED_AT
from klaviyo_dagster.warehouse.json_pages import JsonColumn, JsonLayout, JsonPages

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


# A raw chunk holds at most about this many body bytes (DuckDB needs ~2-3x that within the staging
# connection's memory limit, 128 MB by default; 25 pages of 1 MB ran out of 64 MB).
RAW_CHUNK_BYTES = 8 << 20
_RAW_KINDS = frozenset({"id", "attributes", "relationships", "pass"})


def _raw_path(col: Column) -> tuple[str, ...]:
    """Where ``col`` sits in a JSON:API resource (relationship columns: the related resource's id)."""
    kind, _, key = col.source.partition(".")
    if kind == "id":
        return ("id",)
    if kind == "relationships":
        return ("relationships", key, "data", "id")
    return ("attributes", *key.split("."))


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
        self._dropped = 0
        self._day_cache: dict[Any, str] = {}
        self._buf: dict[str, list[Any]] = {}
        self._buf_rows = 0
        self._raw: JsonPages | None = None
        self._raw_sent: list[JsonPages] = []  # staged raw chunks (bodies released), for their counts
        self._raw_page_rows = obj.page_size or 100

    @property
    def dropped(self) -> int:
        """Rows dropped because their cursor fell outside the window (raw chunks count once staged)."""
        return self._dropped + sum(c.dropped for c in self._raw_sent)

    # -- raw pages (DuckDB parses them) -------------------------------------------------------------
    @property
    def reads_raw(self) -> bool:
        """Whether raw pages of this entry can be staged by DuckDB (see the module docstring)."""
        cols = self.obj.columns
        if self.cursor_of_parent or any(c.source.partition(".")[0] not in _RAW_KINDS for c in cols):
            return False
        return JsonLayout.can_read([_raw_path(c) for c in cols if not c.source.startswith("pass.")])

    def layout(self) -> JsonLayout:
        """Where each column sits in a resource, for DuckDB (`JsonLayout`)."""
        columns = tuple(
            JsonColumn(c.name, c.sql_type, page_value=c.source.split(".", 1)[1])
            if c.source.startswith("pass.") else JsonColumn(c.name, c.sql_type, _raw_path(c))
            for c in self.obj.columns
        )  # fmt: skip
        window = (self.window.start, self.window.end) if self.window is not None else None
        partition = datetime.fromisoformat(self.partition_text) if self.partition_text else None
        cursor = ("attributes", self.cursor_key) if self.cursor_key else None
        return JsonLayout(columns, PARTITION_COLUMN, cursor=cursor, window=window if cursor else None,
                          partition=None if cursor else partition, extra_name=self._extra_name)

    def add_raw(self, page: RawPassPage) -> None:
        """Add one raw page to the current raw chunk."""
        if self._raw is None:
            self._raw = JsonPages(self.layout())
        self._raw.add(page.body, page.values, page.lower, page.upper)

    def _take_raw(self) -> JsonPages | None:
        chunk, self._raw = self._raw, None
        if chunk is not None:
            self._raw_sent.append(chunk)
        return chunk

    # -- per page --------------------------------------------------------------------------------
    def page_columns(self, records: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> dict[str, list]:
        """The column lists of one page (window filter and partition applied)."""
        recs = list(records)
        attrs = [r.get("attributes") or _EMPTY for r in recs]
        if self.cursor_key is not None:
            keep, parts = self._partitions(_parents(recs) if self.cursor_of_parent else attrs)
            if keep is not None:
                self._dropped += len(recs) - len(keep)
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
        raw = self._raw
        if raw is not None and (len(raw) * self._raw_page_rows >= self.chunk_rows or raw.size >= RAW_CHUNK_BYTES):
            return True
        return self._buf_rows >= self.chunk_rows

    def take(self) -> dict[str, list[Any]] | None:
        """The buffered chunk (None when empty); the buffer starts over."""
        if not self._buf_rows:
            return None
        chunk, self._buf, self._buf_rows = self._buf, {}, 0
        return chunk

    def chunks(
        self, pages: Iterable[tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]] | RawPassPage]
    ) -> Iterator[dict | JsonPages]:
        """Chunks from ``(records, pass values)`` pages (column dicts) and raw pages (`JsonPages`), each
        emitted once about ``chunk_rows`` are buffered."""
        for page in pages:
            if isinstance(page, RawPassPage):
                self.add_raw(page)
            else:
                self.add(*page)
            if self.full:
                for chunk in (self.take(), self._take_raw()):
                    if chunk is not None:
                        yield chunk
        for last in (self.take(), self._take_raw()):
            if last is not None:
                yield last
