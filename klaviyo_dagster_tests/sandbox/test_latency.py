"""Sandbox latency model and page cache: parsing, seeded draws, runtime switching, and what HTTP shows.

No test measures time: the delay each answer was held is announced in `X-Sandbox-Latency-Ms`, and the
model's draws are checked as numbers.
"""

from __future__ import annotations

import math
import statistics

import pytest
import requests

from klaviyo_dagster.sandbox.latency import REALISTIC, LatencyModel, parse_latency
from klaviyo_dagster_tests.sandbox.sandbox_http import call, sandbox

EVENTS = {"page[size]": "1000", "filter": "greater-or-equal(datetime,2000-01-01T00:00:00Z)"}


# --- the model ------------------------------------------------------------------------------------------


def test_parse_forms() -> None:
    assert not parse_latency("off").enabled and not parse_latency(None).enabled and not parse_latency("0").enabled
    assert parse_latency("realistic") is REALISTIC
    spec = parse_latency("150ms+0.1ms/record")
    assert (spec.read.base, spec.read.per_record, spec.sigma) == (0.150, 0.0001, 0.35)
    assert spec.write == spec.read == spec.refusal
    fixed = parse_latency("0.2s~0")
    assert (fixed.read.base, fixed.read.per_record, fixed.sigma) == (0.2, 0.0, 0.0)
    assert parse_latency(" 20ms + 1ms / record ~ 0.5 ").sigma == 0.5


@pytest.mark.parametrize("bad", ["fast", "150", "150ms+0.1ms", "-5ms", "10ms~9"])
def test_parse_errors_name_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="latency|sigma"):
        parse_latency(bad)


def test_fixed_delay_is_base_plus_per_record() -> None:
    model = LatencyModel("100ms+1ms/record~0")
    assert model.delay("GET", 200, 0) == pytest.approx(0.100)
    assert model.delay("GET", 200, 50) == pytest.approx(0.150)
    assert LatencyModel("off").delay("GET", 200, 1000) == 0.0


def test_realistic_reads_have_a_200ms_median_and_a_heavy_tail() -> None:
    model = LatencyModel("realistic", seed=7)
    profiles = [model.delay("GET", 200, 100) for _ in range(4000)]
    events = [model.delay("GET", 200, 1000) for _ in range(4000)]
    assert statistics.median(profiles) >= 0.200
    assert statistics.median(events) == pytest.approx(0.300, rel=0.05)
    p99 = sorted(events)[int(0.99 * len(events))]
    assert p99 > 2 * statistics.median(events)  # log-normal tail
    assert min(events) > 0
    # writes and refusals have their own profiles
    assert statistics.median(model.delay("POST", 202, 0) for _ in range(2000)) == pytest.approx(0.25, rel=0.05)
    assert statistics.median(model.delay("GET", 429, 0) for _ in range(2000)) == pytest.approx(0.06, rel=0.05)


def test_draws_are_seeded() -> None:
    a = [LatencyModel("realistic", seed=3).delay("GET", 200, 10) for _ in range(1)]
    one, two, other = LatencyModel("realistic", 3), LatencyModel("realistic", 3), LatencyModel("realistic", 4)
    seq = [one.delay("GET", 200, 10) for _ in range(20)]
    assert seq == [two.delay("GET", 200, 10) for _ in range(20)]
    assert seq != [other.delay("GET", 200, 10) for _ in range(20)]
    assert a[0] == seq[0]


def test_set_keeps_the_old_spec_on_error() -> None:
    model = LatencyModel("50ms~0")
    with pytest.raises(ValueError):
        model.set("soon")
    assert model.delay("GET", 200) == pytest.approx(0.05)
    model.set("off")
    assert model.delay("GET", 200) == 0.0


# --- over HTTP ------------------------------------------------------------------------------------------


def _held_ms(resp: requests.Response) -> float | None:
    raw = resp.headers.get("X-Sandbox-Latency-Ms")
    return None if raw is None else float(raw)


def test_latency_off_by_default_and_switchable_at_runtime() -> None:
    with sandbox(span_days=5) as sb:
        assert _held_ms(call(sb, "GET", "/api/events", EVENTS)) is None
        sb.set_latency("20ms+0.01ms/record~0")
        assert sb.latency == "20ms+0.01ms/record~0"
        resp = call(sb, "GET", "/api/events", EVENTS)
        n = len(resp.json()["data"])
        assert n > 100
        assert _held_ms(resp) == pytest.approx(20 + 0.01 * n, abs=0.1)
        # the admin route switches it too, and refuses nonsense with the forms named
        admin = requests.post(f"{sb.base_url}/__sandbox/latency", json={"latency": "5ms~0"}, timeout=10)
        assert admin.status_code == 200 and admin.json()["read"]["base_ms"] == 5
        assert _held_ms(call(sb, "GET", "/api/metrics")) == pytest.approx(5.0, abs=0.05)
        bad = requests.post(f"{sb.base_url}/__sandbox/latency", json={"latency": "later"}, timeout=10)
        assert bad.status_code == 400 and "realistic" in bad.json()["error"]
        assert requests.get(f"{sb.base_url}/__sandbox/latency", timeout=10).json()["latency"] == "5ms~0"
        requests.post(f"{sb.base_url}/__sandbox/latency", json={"latency": "off"}, timeout=10)
        assert _held_ms(call(sb, "GET", "/api/metrics")) is None


def test_run_sandbox_latency_and_errors_get_the_refusal_profile() -> None:
    with sandbox(latency="realistic") as sb:
        ok = call(sb, "GET", "/api/metrics")
        bad = call(sb, "GET", "/api/metrics", {"foo": "1"})
        assert ok.status_code == 200 and bad.status_code == 400
        assert _held_ms(ok) is not None and _held_ms(bad) is not None
        assert _held_ms(ok) > 0 and math.isfinite(_held_ms(bad))


def test_admin_routes_are_not_delayed() -> None:
    with sandbox(latency="1s~0") as sb:
        assert "X-Sandbox-Latency-Ms" not in requests.get(f"{sb.base_url}/__sandbox/health", timeout=10).headers


# --- page cache -----------------------------------------------------------------------------------------


def test_page_cache_serves_identical_pages_and_forgets_them_when_data_changes() -> None:
    with sandbox(span_days=5, page_cache_mb=64) as sb:
        first = call(sb, "GET", "/api/events", EVENTS)
        again = call(sb, "GET", "/api/events", EVENTS)
        assert first.content == again.content
        stats = sb.page_cache_stats()
        assert (stats["hits"], stats["misses"], stats["pages"]) == (1, 1, 1)
        # following links.next is cached by its own URL
        nxt = first.json()["links"]["next"]
        hdr = {"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"}
        assert requests.get(nxt, headers=hdr, timeout=30).content == requests.get(nxt, headers=hdr, timeout=30).content
        assert sb.page_cache_stats()["pages"] == 2
        # rate-limit headers still come fresh on a cached answer
        assert "RateLimit-Limit" in again.headers
        # a write empties it, and the next read shows the change
        newest = {"sort": "-created"}
        assert call(sb, "GET", "/api/lists", newest).json()["data"][0]["attributes"]["name"] != "cache"
        created = call(sb, "POST", "/api/lists", json_body={"data": {"type": "list", "attributes": {"name": "cache"}}})
        assert created.status_code == 201
        assert sb.page_cache_stats()["pages"] == 0
        assert call(sb, "GET", "/api/lists", newest).json()["data"][0]["attributes"]["name"] == "cache"


def test_late_events_released_show_through_the_cache() -> None:
    with sandbox(span_days=5, page_cache_mb=64) as sb:
        window = {"filter": "greater-or-equal(datetime,2000-01-01T00:00:00Z)", "page[size]": "1000"}

        def count() -> int:
            total, url, hdr = 0, None, {"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"}
            resp = call(sb, "GET", "/api/events", window)
            while True:
                doc = resp.json()
                total += len(doc["data"])
                url = doc["links"].get("next")
                if not url:
                    return total
                resp = requests.get(url, headers=hdr, timeout=30)

        before = count()
        assert count() == before and sb.page_cache_stats()["hits"] > 0
        assert sb.late_events_pending() > 0
        released = sb.release_late_events()
        assert count() == before + released
        # switching rate limits or latency keeps the pages (the data did not change) ...
        assert sb.page_cache_stats()["pages"] > 0
        requests.post(f"{sb.base_url}/__sandbox/rate-limits", json={"mode": "off"}, timeout=10)
        requests.post(f"{sb.base_url}/__sandbox/latency", json={"latency": "off"}, timeout=10)
        assert sb.page_cache_stats()["pages"] > 0
        # ... a release over the admin route empties it
        requests.post(f"{sb.base_url}/__sandbox/late-events", json={}, timeout=10)
        assert sb.page_cache_stats()["pages"] == 0


def test_page_cache_is_bounded_in_bytes() -> None:
    from klaviyo_dagster.sandbox.pagecache import PageCache

    class Body:
        def __init__(self, n: int) -> None:
            self.body = b"x" * n

    cache = PageCache(1000)
    for i in range(10):
        cache.put(i, Body(300))
    snap = cache.snapshot()
    assert snap["bytes"] <= 1000 and snap["pages"] == 3 and snap["evictions"] == 7
    assert cache.get(0) is None and cache.get(9) is not None
    cache.put("big", Body(2000))
    assert cache.get("big") is None
    token = cache.generation
    cache.clear()
    cache.put("stale", Body(10), token)
    assert cache.get("stale") is None
    assert not PageCache(0).enabled
