"""Logic of the latency, hot-path and replay benchmark helpers (no timing assertions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from bench.latency_utilisation import deadline_for, utilisation, windows_for
from bench.replay import ReplayProcess
from bench.run import parse_only
from klaviyo_dagster.sandbox import run_sandbox

UTC = timezone.utc


def test_utilisation_counts_successful_sends_per_full_window_and_the_429_share() -> None:
    sends = [(0.5, 200), (61.0, 200), (62.0, 429), (70.0, 200), (119.9, 200), (125.0, 200)]
    out = utilisation(sends, steady_limit=4, started=0.5, ended=130.0)
    # whole windows inside [0.5, 130]: [60,120) only; the 429 is not a counted request
    assert out["requests_per_full_window"] == [3]
    assert out["utilisation_mean"] == 0.75
    assert (out["answers"], out["throttled_429"]) == (6, 1) and out["share_429"] == 1 / 6
    assert utilisation([], 4, 0, 10)["utilisation_mean"] is None


def test_deadline_leaves_the_asked_number_of_whole_windows() -> None:
    for started in (0.0, 12.3, 59.9, 60.0):
        end = deadline_for(started, 2)
        first = -(-started // 60) * 60
        assert end - first >= 120 and end - started < 3 * 60 + 1


def test_windows_for_events_one_full_day_others_the_whole_range() -> None:
    first, last = datetime(2026, 3, 1, 5, tzinfo=UTC), datetime(2026, 3, 3, 7, 30, tzinfo=UTC)
    wins = windows_for(first, last)
    assert wins["events"].start == datetime(2026, 3, 2, tzinfo=UTC)
    assert wins["events"].end - wins["events"].start == timedelta(days=1)
    assert wins["profiles"].start == datetime(2026, 3, 1, tzinfo=UTC) and wins["profiles"].end > last


def test_parse_only_knows_the_new_benchmarks() -> None:
    assert parse_only("latency,hot,overhead") == ["latency_utilisation", "hot_path", "overhead"]


def test_replay_records_once_then_serves_from_memory_and_refuses_the_unrecorded() -> None:
    with run_sandbox(span_days=3) as sb, ReplayProcess(sb.base_url) as rp:
        hdr = {"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"}
        path = "/api/metrics"
        first = requests.get(rp.base_url + path, headers=hdr, timeout=30)
        sb.reset_stats()
        again = requests.get(rp.base_url + path, headers=hdr, timeout=30)
        assert first.status_code == again.status_code == 200 and first.content == again.content
        assert sb.stats() == {}  # the second answer never reached the sandbox
        rp.freeze()
        missing = requests.get(rp.base_url + "/api/lists", headers=hdr, timeout=30)
        assert missing.status_code == 404 and "not recorded: /api/lists" in missing.text
        stats = rp.stats()
        assert (stats["pages"], stats["hits"], stats["misses"], stats["frozen"]) == (1, 1, 1, True)
