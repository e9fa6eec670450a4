"""RateLimit-Limit in each form Klaviyo documents, and the L tier at 700/m or 750/m: the client adopts
whatever the server sends (unit level with an injected clock, then over HTTP against the sandbox)."""

from __future__ import annotations

import pytest
import requests

from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.client.ratelimit import BucketLimiter, adopt
from klaviyo_dagster.client.tiers import resolve_bucket
from klaviyo_dagster.sandbox import run_sandbox

L = [(75, 1.0), (750, 60.0)]


@pytest.mark.parametrize("header,windows,current", [
    ("75, 75;w=1, 700;w=60", [(75, 1.0), (700, 60.0)], 75),   # combined: the server's windows
    ("700;w=60", [(75, 1.0), (700, 60.0)], 700),               # one policy: the window of nearest length
    ("70;w=1", [(70, 1.0), (750, 60.0)], 70),
    ("700", [(75, 1.0), (700, 60.0)], 700),                    # bare: the window whose limit is nearest
    ("75", L, 75),
    ("72", [(72, 1.0), (750, 60.0)], 72),
])
def test_each_header_form_is_adopted(header, windows, current):
    limiter = BucketLimiter(L, clock=lambda: 0.0)
    limiter.observe({"RateLimit-Limit": header, "RateLimit-Remaining": "1", "RateLimit-Reset": "1"})
    assert limiter.limits() == windows
    assert limiter._current == current


def test_adopt_keeps_windows_for_an_unreadable_header():
    assert adopt(L, None, []) == ([], None)
    limiter = BucketLimiter(L, clock=lambda: 0.0)
    limiter.observe({"RateLimit-Limit": "lots"})
    assert limiter.limits() == L


def _limit_headers(sb, n):
    h = {"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"}
    with requests.Session() as s:
        return [s.get(sb.base_url + "/api/profiles", params={"page[size]": 1}, headers=h, timeout=10)
                .headers["RateLimit-Limit"] for _ in range(n)]


@pytest.mark.parametrize("form,first,later", [
    ("combined", "75, 75;w=1, 700;w=60", "700, 75;w=1, 700;w=60"),
    ("policy", "75;w=1", "700;w=60"),
    ("bare", "75", "700"),
])
def test_sandbox_sends_each_form_switchably(form, first, later):
    with run_sandbox(semantics={"ratelimit_header_form": form, "ratelimit_l_steady": "700"}) as sb:
        assert _limit_headers(sb, 1) == [first]
        # The tightest window is the steady one once most of it is spent: 12 requests a second for 57 s.
        limiter = sb.limiter
        sent = [limiter.check("GET /api/profiles", {}, 6000.0 + k / 12).headers["RateLimit-Limit"]
                for k in range(685)]
        assert sent[0] == first and sent[-1] == later
        sb.set_semantics(ratelimit_l_steady="750")
        assert _limit_headers(sb, 1) == [first.replace("700", "750")]


@pytest.mark.parametrize("form", ["combined", "policy", "bare"])
def test_client_adopts_the_sent_form_and_is_not_throttled_at_700(form):
    # Windows 0.05 s / 3 s: the client's own table says 750 per steady window, the server allows 700.
    # Four threads keep the client at its own steady pace (~735 a window), so it must learn 700 from the
    # headers to meet no 429; the bare and policy forms show it only once the steady window is the
    # tightest, so the client reads until it has adopted it (at most 3,000 requests) and a window more.
    from concurrent.futures import ThreadPoolExecutor

    scale = 0.05
    bucket = resolve_bucket("GET", "/api/profiles")
    with run_sandbox(rate_limits=f"scale:{scale}",
                     semantics={"ratelimit_header_form": form, "ratelimit_l_steady": "700"}) as sb:
        with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=scale, max_backoff=1) as client:
            state = client.limiter.bucket(bucket)
            adopted_after = None
            with ThreadPoolExecutor(4) as pool:
                for k in range(30):
                    list(pool.map(lambda _: client.get("/api/profiles", {"page[size]": "1"}), range(100)))
                    if adopted_after is None and state.limits()[1][0] == 700:
                        adopted_after = (k + 1) * 100
                    if adopted_after is not None and (k + 1) * 100 >= adopted_after + 800:
                        break
            stats = client.stats.snapshot()
    assert adopted_after is not None, state.limits()
    assert state.limits() == [(75, scale), (700, 60 * scale)]
    assert stats["throttled"] == 0, stats
