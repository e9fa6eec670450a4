"""Raw pages staged by DuckDB (the hot path) land exactly the rows the Python flattener lands.

Both engines stage the same pages into a `StagingArea`; the staged tables (every column, every row), the
columns added by schema evolution and the count of rows dropped outside the window must be equal. First on
hand-written pages that hold the awkward cases (an attribute the table does not declare, JSON nulls, a
missing relationship, a cursor outside the window, an unreadable cursor, sub-window bounds, pass values),
then over HTTP against the sandbox for several entries, concurrent and sequential.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.client.client import links_next
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.ingest.fetch import FetchOptions, RawPassPage, iter_pages
from klaviyo_dagster.ingest.flatten import Flattener
from klaviyo_dagster.ingest.objects import KlaviyoObject
from klaviyo_dagster.ingest.windows import Window, inside
from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.warehouse.staging import StagingArea

UTC = timezone.utc
D = datetime(2026, 7, 20, tzinfo=UTC)


def staged(obj: KlaviyoObject, flat: Flattener, pages: Iterable[Any], tmp: Any) -> tuple[list, list[str], int]:
    """(sorted staged rows, columns added, rows dropped) after staging ``pages`` through ``flat``."""
    with StagingArea(obj.sql_columns(), directory=str(tmp)) as area:
        for chunk in flat.chunks(pages):
            area.append(chunk)
        names = sorted(area.columns)
        cols = ", ".join(f'"{n}"::VARCHAR' for n in names)
        rows = sorted(area.conn.execute(f"SELECT {cols} FROM rows").fetchall(), key=repr)
        return [dict(zip(names, r, strict=True)) for r in rows], list(area.added), flat.dropped


def event(i: int, when: str | None, **attrs: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"type": "event", "id": f"ev{i}",
                           "attributes": {"datetime": when, "timestamp": 1_780_000_000 + i, "uuid": f"u-{i}",
                                          "event_properties": {"n": i, "x": [1.5, None, "é"]}, **attrs},
                           "relationships": {"profile": {"data": {"type": "profile", "id": f"p{i}"}},
                                             "metric": {"data": {"type": "metric", "id": "m1"}}}}
    return rec


def test_raw_pages_equal_the_python_flattener_on_awkward_records(tmp_path: Any) -> None:
    obj = get_object("events")
    window = Window(D, D + timedelta(days=1))
    page1 = [event(1, "2026-07-20T00:00:00+00:00"), event(2, "2026-07-19T23:59:59+00:00"),  # outside: dropped
             event(3, "2026-07-20T05:00:00.250000+00:00", loyalty={"tier": "gold"}),  # a new attribute
             event(4, "not a time"), event(5, None)]  # unreadable / missing cursors: dropped
    page1[0]["attributes"]["event_properties"] = None  # JSON null -> SQL NULL
    del page1[0]["relationships"]["metric"]  # missing relationship -> NULL
    page2 = [event(6, "2026-07-20T12:00:00Z", loyalty=None, score=3), event(7, "2026-07-20T13:00:00+02:00")]
    page3 = [event(8, "2026-07-20T20:00:00+00:00"), event(9, "2026-07-20T21:00:00+00:00")]
    lower, upper = D + timedelta(hours=11), D + timedelta(hours=20, minutes=30)  # page 3: a sub-window's page

    def body(records: list[dict], nxt: str | None = None) -> bytes:
        return orjson.dumps({"data": records, "links": {"self": "s", "next": nxt}})

    decoded = [(page1, {}), (page2, {}), (inside(page3, "datetime", lower, upper), {})]
    raw = [RawPassPage(body(page1, "n"), {}), RawPassPage(body(page2, "n"), {}),
           RawPassPage(body(page3), {}, lower, upper)]
    want = staged(obj, Flattener(obj, window=window, chunk_rows=2), decoded, tmp_path)
    flat = Flattener(obj, window=window, chunk_rows=2)
    assert flat.reads_raw
    got = staged(obj, flat, raw, tmp_path)
    assert got == want
    rows, added, dropped = got
    assert sorted(r["id"] for r in rows) == ["ev1", "ev3", "ev6", "ev7", "ev8"] and added == ["loyalty", "score"]
    assert dropped == 3  # ev2 (a second early), ev4 (unreadable), ev5 (missing); ev9 is another chain's


def test_links_next_reads_only_the_top_level_links() -> None:
    assert links_next(b'{"data":[{"links":{"next":"x"}}],"links":{"self":"a","next":"b"}}') == "b"
    assert links_next(b'{"data":[{"links":{"next":"x"}}],"links":{"self":"a"}}') is None
    assert links_next(b'{"data":[{"links":{"next":"x"}}]}') is None  # a nested links is not the page's
    assert links_next(b'{"links":{"next":"y"},"data":[],"included":[]}') == "y"  # other layouts: decoded
    assert links_next(b'{ "data": [], "links": {"next": "z"} }') == "z"
    with pytest.raises(orjson.JSONDecodeError):
        links_next(b'{"data":[{"id":1}')  # cut short


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    with run_sandbox(seed=42, scale="small", rate_limits="off") as h:
        yield h


@pytest.mark.parametrize(("name", "page_size", "concurrency"), [
    ("events", 100, 8), ("events", 100, 1), ("profiles", 20, 8), ("campaigns", 5, 4), ("lists", None, 4),
    ("list_memberships", None, 4), ("templates", None, 1),
])  # fmt: skip
def test_raw_pages_equal_decoded_pages_from_the_sandbox(
    handle: Any, tmp_path: Any, name: str, page_size: int | None, concurrency: int
) -> None:
    obj = get_object(name)
    if page_size:
        obj = replace(obj, page_size=page_size)
    first, last = handle.truth.date_range()
    end = last + timedelta(seconds=1)
    window = Window(end - timedelta(days=6), end) if obj.incremental else None

    def flattener() -> Flattener:
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return Flattener(obj, window=window, chunk_rows=300) if obj.incremental else Flattener(obj, partition=day)

    results = []
    for raw in (False, True):
        with KlaviyoClient(handle.api_key, base_url=handle.base_url, rate_limit_scale=0,
                           max_concurrency=concurrency) as client:
            flat = flattener()
            assert flat.reads_raw
            results.append(staged(obj, flat, iter_pages(client, obj, window, FetchOptions(), raw=raw), tmp_path))
    assert results[0][0], f"no {name} rows read"
    assert results[1] == results[0]
