"""Sandbox rate limits: the limiter's windows with an injected clock, then the same rules over HTTP."""

from __future__ import annotations

import re
import time

import pytest
import requests

from klaviyo_dagster.sandbox.ratelimit import RateLimiter, parse_mode, parse_rate
from klaviyo_dagster.spec import load_subset
from klaviyo_dagster_tests.sandbox.sandbox_http import call, sandbox

PA = {"additional-fields[profile]": ["predictive_analytics"]}


def drain(limiter: RateLimiter, op: str, query: dict, now: float, n: int) -> list:
    return [limiter.check(op, query, now) for _ in range(n)]


# --- pure logic, fake clock -------------------------------------------------------------------------


def test_parse_rate_and_mode() -> None:
    assert parse_rate("75/s") == (75, 1.0)
    assert parse_rate("750/m") == (750, 60.0)
    assert parse_rate("150/d") == (150, 86400.0)
    assert parse_mode("off") is None
    assert parse_mode("real") == 1.0
    assert parse_mode("scale:0.05") == 0.05
    for bad in ("fast", "scale:", "scale:0", "scale:-1", "scale:abc", ""):
        with pytest.raises(ValueError, match="'off', 'real' or 'scale:F'"):
            parse_mode(bad)
    with pytest.raises(ValueError, match="COUNT/UNIT"):
        parse_rate("75 per second")


def test_limits_come_from_the_spec() -> None:
    limiter = RateLimiter("real")
    subset = load_subset()
    for op_key, op in subset["operations"].items():
        burst, steady = parse_rate(op["ratelimit"]["burst"]), parse_rate(op["ratelimit"]["steady"])
        assert limiter.limits(op_key)[:2] == [burst, steady], op_key
    assert limiter.limits("GET /api/profiles") == [(75, 1.0), (750, 60.0)]
    assert limiter.limits("GET /api/profiles", PA) == [(10, 1.0), (150, 60.0)]
    assert limiter.limits("GET /api/lists/{id}", {"additional-fields[list]": ["profile_count"]}) == [
        (1, 1.0),
        (15, 60.0),
    ]
    assert limiter.limits("POST /api/lists") == [(10, 1.0), (150, 60.0), (150, 86400.0)]


def test_burst_window_refuses_then_reopens() -> None:
    limiter = RateLimiter("real")
    first = drain(limiter, "GET /api/flows", {}, 100.25, 3)  # flows: 3/s
    assert all(d.allowed for d in first)
    assert [d.headers["RateLimit-Remaining"] for d in first] == ["2", "1", "0"]
    refused = limiter.check("GET /api/flows", {}, 100.5)
    assert not refused.allowed and refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-Sandbox-Retry-After-Ms"] == "500"
    assert not any(h.startswith("RateLimit") for h in refused.headers)
    assert refused.error["code"] == "throttled" and refused.error["status"] == 429
    assert set(refused.error) >= {"id", "status", "code", "title", "detail"}
    assert "Expected available in 1 second" in refused.error["detail"]
    # The refusal was not counted; the next window (a fixed window, not a sliding one) is fresh.
    assert limiter.check("GET /api/flows", {}, 101.0).allowed
    # Other endpoints have their own buckets.
    assert limiter.check("GET /api/templates", {}, 100.5).allowed


def test_steady_window_over_many_bursts() -> None:
    limiter = RateLimiter("real")
    allowed = 0
    for second in range(60):  # campaigns: 10/s, 150/m
        allowed += sum(d.allowed for d in drain(limiter, "GET /api/campaigns", {}, 600 + second + 0.5, 10))
    assert allowed == 150
    refused = limiter.check("GET /api/campaigns", {}, 659.5)
    assert not refused.allowed
    assert refused.headers["Retry-After"] == "1"  # the steady window ends at 660
    refused = drain(limiter, "GET /api/campaigns", {}, 615.5, 1)[0]  # a clock going back: same window 10
    assert not refused.allowed and refused.headers["Retry-After"] == "45"
    assert limiter.check("GET /api/campaigns", {}, 660.0).allowed


def test_headers_name_the_tightest_window() -> None:
    limiter = RateLimiter("real")
    d = limiter.check("GET /api/profiles", {}, 10.0)
    assert d.headers == {"RateLimit-Limit": "75, 75;w=1, 750;w=60", "RateLimit-Remaining": "74", "RateLimit-Reset": "1"}
    # Late in a minute with most of the steady budget gone, the steady window is the tightest.
    for second in range(11, 20):
        drain(limiter, "GET /api/profiles", {}, second, 75)
    d = limiter.check("GET /api/profiles", {}, 20.0)
    assert d.headers["RateLimit-Limit"] == "750, 75;w=1, 750;w=60"
    assert d.headers["RateLimit-Remaining"] == str(750 - 1 - 9 * 75 - 1)
    assert d.headers["RateLimit-Reset"] == "40"


def test_predictive_analytics_has_its_own_lower_bucket() -> None:
    limiter = RateLimiter("real")
    results = drain(limiter, "GET /api/profiles", PA, 50.1, 11)
    assert [d.allowed for d in results] == [True] * 10 + [False]
    assert results[0].headers["RateLimit-Limit"] == "10, 10;w=1, 150;w=60"
    # Comma-joined values count too; plain profile reads are unaffected.
    combined = {"additional-fields[profile]": ["subscriptions,predictive_analytics"]}
    assert not limiter.check("GET /api/profiles", combined, 50.2).allowed
    assert limiter.check("GET /api/profiles", {"additional-fields[profile]": ["subscriptions"]}, 50.2).allowed


def test_daily_cap_on_list_creation() -> None:
    limiter = RateLimiter("real")
    allowed = 0
    start = 86400.0 * 20000
    for minute in range(20):  # 10/s and 150/m would allow far more than 150 in 20 minutes
        for burst in range(15):
            allowed += sum(d.allowed for d in drain(limiter, "POST /api/lists", {}, start + 60 * minute + burst, 10))
    assert allowed == 150
    refused = limiter.check("POST /api/lists", {}, start + 3600)
    assert not refused.allowed
    assert refused.headers["Retry-After"] == str(86400 - 3600)
    assert limiter.check("POST /api/lists", {}, start + 86400).allowed


def test_off_mode_allows_everything_with_honest_headers() -> None:
    limiter = RateLimiter("off")
    results = drain(limiter, "GET /api/flows", {}, 7.5, 10)
    assert all(d.allowed for d in results)
    assert [d.headers["RateLimit-Remaining"] for d in results] == ["2", "1"] + ["0"] * 8
    assert results[0].headers["RateLimit-Limit"] == "3, 3;w=1, 60;w=60"


def test_scale_mode_shrinks_windows_and_reports_precise_waits() -> None:
    limiter = RateLimiter("scale:0.1")
    assert limiter.limits("GET /api/flows") == [(3, pytest.approx(0.1)), (60, pytest.approx(6.0))]
    results = drain(limiter, "GET /api/flows", {}, 1000.02, 4)
    assert [d.allowed for d in results] == [True, True, True, False]
    assert results[0].headers["RateLimit-Limit"] == "3, 3;w=0.1, 60;w=6"
    refused = results[3]
    assert refused.headers["Retry-After"] == "1"  # whole seconds, rounded up
    assert refused.headers["X-Sandbox-Retry-After-Ms"] == "80"
    assert refused.retry_after == pytest.approx(0.08)
    assert limiter.check("GET /api/flows", {}, 1000.15).allowed  # next 0.1 s window


def test_set_mode_switches_and_restarts_windows() -> None:
    limiter = RateLimiter("real")
    drain(limiter, "GET /api/flows", {}, 5.0, 3)
    assert not limiter.check("GET /api/flows", {}, 5.0).allowed
    limiter.set_mode("off")
    assert limiter.mode == "off" and limiter.check("GET /api/flows", {}, 5.0).allowed
    limiter.set_mode("real")
    assert limiter.check("GET /api/flows", {}, 5.0).allowed  # counters restarted
    with pytest.raises(ValueError):
        limiter.set_mode("fast")
    assert limiter.mode == "real"


def test_unknown_operation_passes_without_headers() -> None:
    d = RateLimiter("real").check("GET /__sandbox/stats", {}, 1.0)
    assert d.allowed and d.headers == {}


def test_check_is_thread_safe() -> None:
    import threading

    limiter = RateLimiter("real")
    allowed = []

    def worker() -> None:
        allowed.append(sum(limiter.check("GET /api/profiles", {}, 3.5).allowed for _ in range(100)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 75


# --- over HTTP ----------------------------------------------------------------------------------------
# Wall-clock windows: the assertions hold whatever the machine's speed (they count, they never time).

LIMIT_RE = re.compile(r"^(\d+), (\d+;w=[\d.]+)(, \d+;w=[\d.]+)+$")


def until_throttled(handle, path: str, params=None, method: str = "GET", body=None, cap: int = 1000):
    """Send requests until the first 429; returns (allowed responses, the 429)."""
    allowed = []
    with requests.Session() as session:
        for _ in range(cap):
            response = call(handle, method, path, params, body, session=session)
            if response.status_code == 429:
                return allowed, response
            assert response.status_code < 300, response.text
            allowed.append(response)
    raise AssertionError(f"no 429 from {method} {path} after {cap} requests")


def assert_throttled(response) -> None:
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert int(response.headers["X-Sandbox-Retry-After-Ms"]) >= 1
    assert not [h for h in response.headers if h.lower().startswith("ratelimit")]
    (error,) = response.json()["errors"]
    assert (error["status"], error["code"]) == (429, "throttled")
    assert error["detail"].startswith("Request was throttled.")


def test_http_real_limits_throttle_flows() -> None:
    with sandbox(rate_limits="real") as handle:
        allowed, refused = until_throttled(handle, "/api/flows")
        # 3/s: at least one full burst window passed before the refusal; 60/m bounds the total.
        assert 3 <= len(allowed) <= 120
        assert_throttled(refused)
        first = allowed[0].headers
        assert LIMIT_RE.match(first["RateLimit-Limit"]) and first["RateLimit-Limit"].endswith("3;w=1, 60;w=60")
        assert int(first["RateLimit-Remaining"]) in (0, 1, 2) and int(first["RateLimit-Reset"]) >= 1
        # Another endpoint has its own budget.
        assert call(handle, "GET", "/api/templates").status_code == 200


def test_http_predictive_analytics_lower_limit() -> None:
    with sandbox(rate_limits="real") as handle:
        pa = {"additional-fields[profile]": "predictive_analytics", "page[size]": "1"}
        allowed, refused = until_throttled(handle, "/api/profiles", pa)
        assert 10 <= len(allowed) <= 300  # 10/s, 150/m
        assert_throttled(refused)
        assert allowed[0].headers["RateLimit-Limit"].endswith("10;w=1, 150;w=60")
        plain = call(handle, "GET", "/api/profiles", {"page[size]": "1"})
        assert plain.status_code == 200
        assert plain.headers["RateLimit-Limit"].endswith("75;w=1, 750;w=60")


def test_http_scaled_steady_window_and_daily_list_cap() -> None:
    # scale:0.1: flows burst 3 per 0.1 s, steady 60 per 6 s; list creation 10 per 0.1 s, 150 per 6 s
    # and 150 per 8640 s. The client waits what X-Sandbox-Retry-After-Ms says on short refusals.
    with sandbox(rate_limits="scale:0.1") as handle:
        allowed = steady_refusals = 0
        with requests.Session() as session:
            while steady_refusals == 0 and allowed < 600:
                response = call(handle, "GET", "/api/flows", session=session)
                if response.status_code == 200:
                    allowed += 1
                    continue
                assert_throttled(response)
                wait_ms = int(response.headers["X-Sandbox-Retry-After-Ms"])
                assert wait_ms <= 6000
                if wait_ms > 100:  # longer than a burst window: the steady window is full
                    steady_refusals += 1
                else:
                    time.sleep(wait_ms / 1000)
        assert steady_refusals == 1 and 60 <= allowed < 600

        created, daily = 0, None
        with requests.Session() as session:
            while daily is None and created < 600:
                body = {"data": {"type": "list", "attributes": {"name": f"cap {created}"}}}
                response = call(handle, "POST", "/api/lists", json_body=body, session=session)
                if response.status_code == 201:
                    created += 1
                    continue
                assert_throttled(response)
                wait_ms = int(response.headers["X-Sandbox-Retry-After-Ms"])
                if wait_ms > 6000:  # longer than the steady window: the daily cap
                    daily = response
                else:
                    time.sleep(wait_ms / 1000)
        # 150 a day (at most two daily windows can be involved, however slow the machine).
        assert daily is not None and 150 <= created <= 300
        assert int(daily.headers["Retry-After"]) > 6


def test_http_off_mode_and_runtime_switch() -> None:
    with sandbox(rate_limits="off") as handle:
        responses = []
        with requests.Session() as session:
            # Until a window has run out (at the latest after 2 x 60 requests), then 5 more: all served.
            while len(responses) < 130 and "0" not in [r.headers["RateLimit-Remaining"] for r in responses[-1:]]:
                responses.append(call(handle, "GET", "/api/flows", session=session))
            responses += [call(handle, "GET", "/api/flows", session=session) for _ in range(5)]
        assert {r.status_code for r in responses} == {200}
        assert responses[-6].headers["RateLimit-Remaining"] == "0"
        assert responses[0].headers["RateLimit-Limit"].endswith("3;w=1, 60;w=60")
        handle.set_rate_limits("real")
        _, refused = until_throttled(handle, "/api/flows")
        assert_throttled(refused)
        handle.set_rate_limits("off")
        assert call(handle, "GET", "/api/flows").status_code == 200
