"""The reference loop: the paging strategy the Lakeflow Klaviyo seed documents, for `vs_naive` only.

Fixed sleep between pages (0.15 s), 20 records a page, and on a 429 a sleep of `Retry-After` whole seconds.
`time_scale` scales every sleep by the sandbox's factor F, so the loop keeps the same shape against a
time-scaled sandbox (`rate_limits="scale:F"`): there, one Klaviyo second lasts F wall seconds, so the
Retry-After wait is `ceil(wait / F)` Klaviyo seconds, i.e. that many times F wall seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import orjson
import requests

PAGE_SIZE = 20
SLEEP_S = 0.15


@dataclass
class NaiveStats:
    requests: int = 0
    pages: int = 0
    records: int = 0
    throttled: int = 0
    slept_s: float = 0.0
    page_times: list[tuple[float, int]] = field(default_factory=list)  # (send time, records)


def retry_after_wall(headers: Mapping[str, str], time_scale: float) -> float:
    """Wall seconds the seed sleeps after a 429: Retry-After whole Klaviyo seconds, times the scale."""
    precise = headers.get("X-Sandbox-Retry-After-Ms")
    if precise is not None and time_scale != 1.0:
        return math.ceil(float(precise) / 1000.0 / time_scale - 1e-9) * time_scale
    return float(headers.get("Retry-After") or 1) * time_scale


def naive_pages(base_url: str, api_key: str, path: str, params: Mapping[str, str], *, time_scale: float = 1.0,
                stats: NaiveStats | None = None, revision: str = "2026-07-15") -> Iterator[list[dict]]:
    """Yield each page's records, paging the seed's way until links.next is empty."""
    stats = stats if stats is not None else NaiveStats()
    session = requests.Session()
    session.headers.update({"Authorization": f"Klaviyo-API-Key {api_key}", "revision": revision,
                            "Accept": "application/vnd.api+json"})
    url: str | None = f"{base_url}{path}"
    query: Mapping[str, str] | None = {**params, "page[size]": str(PAGE_SIZE)}
    try:
        while url:
            sent = time.time()
            resp = session.get(url, params=query, timeout=60)
            stats.requests += 1
            if resp.status_code == 429:
                stats.throttled += 1
                wait = retry_after_wall(resp.headers, time_scale)
                stats.slept_s += wait
                time.sleep(wait)
                continue
            resp.raise_for_status()
            doc = orjson.loads(resp.content)
            data = doc.get("data") or []
            stats.pages += 1
            stats.records += len(data)
            stats.page_times.append((sent, len(data)))
            yield data
            query = None
            url = (doc.get("links") or {}).get("next")
            if url:
                stats.slept_s += SLEEP_S * time_scale
                time.sleep(SLEEP_S * time_scale)
    finally:
        session.close()
