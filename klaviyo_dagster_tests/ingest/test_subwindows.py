"""Sub-windows and concurrent chains: every record read exactly once at any boundary, against the sandbox.

The split itself is checked instant by instant (boundaries, whole seconds, profiles' greater-than lower bound
widened by a second); then over HTTP: boundaries placed exactly on records' cursors, every id read once;
and the whole concurrent path (probe, split, fan-out) equals the sandbox's truth, also under 429s.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.ingest import get_object
from klaviyo_dagster.ingest.fetch import (
    MAX_SUBWINDOWS,
    PAGES_PER_SUBWINDOW,
    FetchOptions,
    Pass,
    iter_pages,
    plan_passes,
    sub_window_chain,
    subwindow_parts,
)
from klaviyo_dagster.ingest.flatten import Flattener
from klaviyo_dagster.ingest.windows import Window, estimate_pages, inside, iso, split, split_at
from klaviyo_dagster.sandbox import run_sandbox

UTC = timezone.utc
TRUTH = {"profiles": ("profile", "updated"), "events": ("event", "datetime"), "flows": ("flow", "updated"),
         "campaigns": ("campaign", "updated_at"), "templates": ("template", "updated")}


@pytest.fixture(scope="module")
def handle() -> Iterator[Any]:
    with run_sandbox(seed=42, scale="small", rate_limits="off") as h:
        yield h


def client_for(handle: Any, **kw: Any) -> KlaviyoClient:
    return KlaviyoClient(handle.api_key, base_url=handle.base_url, rate_limit_scale=0, max_backoff=0.05, **kw)


def whole_range(handle: Any, days: int | None = None) -> Window:
    """The data's whole range (or its last ``days`` days: events are costly to generate)."""
    first, last = handle.truth.date_range()
    end = last + timedelta(seconds=1)
    start = first.replace(hour=0, minute=0, second=0, microsecond=0) if days is None else end - timedelta(days=days)
    return Window(start, end)


# --- the split, instant by instant ----------------------------------------------------------------------


def _server_gt_lt(stamp: datetime, sub: Window) -> bool:
    """What /api/profiles sends for greater-than(updated, start - 1s),less-than(updated, end)."""
    return sub.start - timedelta(seconds=1) < stamp < sub.end


@pytest.mark.parametrize("seed", range(5))
def test_split_covers_every_second_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(86_400))
    window = Window(start, start + timedelta(seconds=rng.randrange(10, 200_000), microseconds=rng.randrange(10**6)))
    subs = split(window, rng.randrange(2, 70))
    assert subs[0].start == window.start and subs[-1].end == window.end
    assert all(a.end == b.start for a, b in zip(subs, subs[1:], strict=False))  # no gap, no overlap
    assert all(s.start.microsecond == 0 for s in subs[1:])  # interior cuts on whole seconds
    stamps = {window.start, window.end - timedelta(microseconds=1)} | {s.start for s in subs}
    stamps |= {s.start - timedelta(seconds=1) for s in subs} | {s.end - timedelta(seconds=1) for s in subs}
    stamps |= {window.start + timedelta(seconds=rng.randrange(int((window.end - window.start).total_seconds())))
               for _ in range(300)}
    for stamp in stamps:
        if not window.start <= stamp < window.end:
            continue
        half_open = [s for s in subs if s.start <= stamp < s.end]
        assert len(half_open) == 1, stamp
        # profiles: the server widens the lower bound by a second; the chain drops what is below start
        rec = [{"attributes": {"updated": stamp.isoformat()}}]
        read = [s for s in subs if _server_gt_lt(stamp, s) and inside(rec, "updated", s.start, s.end)]
        assert read == half_open


def test_split_at_keeps_only_interior_boundaries_in_order() -> None:
    w = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    noon = datetime(2026, 1, 1, 12, tzinfo=UTC)
    subs = split_at(w, [noon, w.start, w.end, noon, datetime(2025, 1, 1, tzinfo=UTC)])
    assert subs == [Window(w.start, noon), Window(noon, w.end)]
    assert split(w, 1) == [w] and split(Window(w.start, w.start), 5) == [Window(w.start, w.start)]


def test_inside_compares_other_formats_as_datetimes() -> None:
    lo, hi = datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 11, tzinfo=UTC)
    recs = [{"attributes": {"t": v}} for v in ("2026-01-01T10:00:00Z", "2026-01-01T09:59:59.5+00:00",
                                              "2026-01-01T12:00:00+02:00", "2026-01-01T11:00:00+00:00", None)]
    kept = [r["attributes"]["t"] for r in inside(recs, "t", lo, hi)]
    assert kept == ["2026-01-01T10:00:00Z", "2026-01-01T12:00:00+02:00", None]  # 12:00+02:00 is 10:00Z
    assert inside(recs, "t", None, None) is recs


# --- over HTTP: boundaries exactly on records -----------------------------------------------------------


@pytest.mark.parametrize("name", ["profiles", "events"])
def test_boundaries_on_record_cursors_read_every_record_once(handle: Any, name: str) -> None:
    obj = replace(get_object(name), page_size=200 if name == "events" else 50)
    rtype, field = TRUTH[name]
    window = whole_range(handle, 8 if name == "events" else None)
    truth = handle.truth.records(rtype, field, window.start, window.end)
    stamps = sorted({datetime.fromisoformat(r["attributes"][field]) for r in truth})
    rng = random.Random(1)
    cuts = sorted(rng.sample(stamps[1:-1], 12))  # every cut sits exactly on some record's cursor
    subs = split_at(window, cuts)
    with client_for(handle) as client:
        (one,) = list(plan_passes(client, obj, window, FetchOptions()))
        seen: Counter[str] = Counter()
        for sub in subs:
            chain = sub_window_chain(client, obj, one, sub)
            for records, _ in chain.run(lambda c: None):
                for rec in records:
                    stamp = datetime.fromisoformat(rec["attributes"][field])
                    # the outer bounds are the flattener's: inside the window every record is in its sub-window
                    if window.start <= stamp < window.end:
                        assert sub.start <= stamp < sub.end
                        seen[rec["id"]] += 1
    assert seen == Counter(r["id"] for r in truth)


def test_narrowed_pass_keeps_fan_out_clauses(handle: Any) -> None:
    obj = get_object("campaigns")
    window = whole_range(handle)
    with client_for(handle) as client:
        passes = list(plan_passes(client, obj, window, FetchOptions()))
    sub = Window(window.start, window.start + timedelta(days=1))
    narrow = passes[0].narrowed(obj, sub)
    assert narrow.params["filter"] == ",".join(
        [*passes[0].clauses, f"greater-or-equal(updated_at,{iso(sub.start)}),less-than(updated_at,{iso(sub.end)})"])
    assert isinstance(narrow, Pass) and narrow.window == sub and narrow.values == passes[0].values


# --- the concurrent path end to end ---------------------------------------------------------------------


def read_ids(client: KlaviyoClient, name: str, window: Window, page_size: int | None = None) -> Counter[str]:
    obj = get_object(name)
    if page_size:
        obj = replace(obj, page_size=page_size)
    flat = Flattener(obj, window=window, chunk_rows=500)
    ids: Counter[str] = Counter()
    for chunk in flat.chunks(iter_pages(client, obj, window, FetchOptions())):
        ids.update(chunk["id"])
    return ids


@pytest.mark.parametrize(("name", "page_size"), [("profiles", 10), ("events", 100), ("campaigns", 5),
                                                  ("flows", 5), ("templates", None)])
def test_concurrent_split_reads_exactly_the_truth(handle: Any, name: str, page_size: int | None) -> None:
    rtype, field = TRUTH[name]
    window = whole_range(handle, 8 if name == "events" else None)
    truth = Counter(r["id"] for r in handle.truth.records(rtype, field, window.start, window.end))
    with client_for(handle, max_concurrency=8) as client:
        got = read_ids(client, name, window, page_size)
        snap = client.pool.snapshot()
    assert got == truth
    if name in ("profiles", "events"):  # many pages: the window was split into concurrent sub-windows
        assert snap["chains"] > 4 and snap["peak_running"] > 1
    with client_for(handle, max_concurrency=1) as client:  # sequential reads the same
        assert read_ids(client, name, window, page_size) == truth
        assert client.pool.snapshot()["chains"] == 0


def test_memberships_fan_out_concurrently(handle: Any) -> None:
    obj = get_object("list_memberships")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with client_for(handle) as client:
        flat = Flattener(obj, partition=day)
        pairs: Counter[tuple[str, str]] = Counter()
        for chunk in flat.chunks(iter_pages(client, obj, None, FetchOptions())):
            pairs.update(zip(chunk["list_id"], chunk["profile_id"], strict=True))
        snap = client.pool.snapshot()
    lists = handle.truth.records("list")
    expected = Counter((lst["id"], pid) for lst in lists for pid, _ in handle.truth.members("list", lst["id"]))
    assert pairs == expected and snap["chains"] == len(lists) > 1


def test_429s_shrink_the_chains_and_lose_nothing(handle: Any) -> None:
    window = whole_range(handle, 8)
    truth = Counter(r["id"] for r in handle.truth.records("event", "datetime", window.start, window.end))
    # Three 429s once the chains have grown (each holds the bucket for the sandbox's whole-second Retry-After).
    handle.faults.configure({"spec": "GET /api/events=429:next3"})
    try:
        with client_for(handle, max_concurrency=12, max_retries=20) as client:
            got = read_ids(client, "events", window, page_size=100)
            snap = client.pool.snapshot()
            stats = client.stats.snapshot()
    finally:
        handle.faults.configure({"spec": ""})
    assert got == truth
    (state,) = [v for k, v in snap["by_endpoint"].items() if "events" in k]
    assert stats["throttled"] == 3 and stats["retries"] == 3
    assert state["cuts"] >= 1 and state["peak"] <= 12


def test_subwindow_parts_of_a_first_page_within_one_second() -> None:
    first = [{"attributes": {"updated": "2026-11-30T10:00:00+00:00"}}] * 10
    estimate, _ = estimate_pages(first, "updated", Window(datetime(2026, 11, 30, tzinfo=UTC),
                                                          datetime(2026, 12, 1, tzinfo=UTC)))
    assert estimate == float("inf")
    assert subwindow_parts(estimate) == MAX_SUBWINDOWS
    assert subwindow_parts(5.0) == 2 and subwindow_parts(PAGES_PER_SUBWINDOW * 10.0) == 10


def test_profiles_updated_in_the_same_second_are_read_once_each() -> None:
    """A bulk import updates many profiles at one instant: the first page spans no time at all."""
    with run_sandbox(seed=7, scale="small", rate_limits="off", semantics="import_job_seconds=0") as h:
        # The generated data ends a minute before the sandbox's clock: this window holds only the import.
        start = datetime.fromtimestamp(h.now_ms() // 1000, tz=UTC)
        window = Window(start, start + timedelta(hours=1))
        with client_for(h, max_concurrency=8) as client:
            rows = [{"type": "profile", "attributes": {"email": f"same-second-{i}@example.com"}} for i in range(120)]
            body = {"data": {"type": "profile-bulk-import-job",
                             "attributes": {"profiles": {"data": rows}}}}
            job = client.post("/api/profile-bulk-import-jobs", body)["data"]["id"]
            for _ in range(200):
                status = client.get(f"/api/profile-bulk-import-jobs/{job}")["data"]["attributes"]["status"]
                if status == "complete":
                    break
                time.sleep(0.05)
            assert status == "complete"
            truth = Counter(r["id"] for r in h.truth.records("profile", "updated", window.start, window.end))
            got = read_ids(client, "profiles", window, page_size=10)
            chains = client.pool.snapshot()["chains"]
    assert len(truth) == 120 and got == truth
    assert chains > 2  # the dense window was split
