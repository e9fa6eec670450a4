"""Klaviyo's rate-limit tiers and the client's own path -> tier table.

An independent reading of Klaviyo's documentation (shared API notes), not of the spec subset: tests hold
this table against the spec. Each endpoint (method + path template) is its own rate-limit bucket; some
query variants (``predictive_analytics`` on profiles, ``profile_count`` on a list or segment) are a
separate, lower bucket.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Tier(enum.Enum):
    """Klaviyo's published tiers: (burst per 1 s window, steady per 60 s window)."""

    XS = (1, 15)
    S = (3, 60)
    M = (10, 150)
    L = (75, 750)
    XL = (350, 3500)
    # The Reporting API's own limits (campaign/flow values and series reports; also 225 a day).
    REPORTING = (1, 2)

    @property
    def burst(self) -> int:
        return self.value[0]

    @property
    def steady(self) -> int:
        return self.value[1]

    @classmethod
    def coerce(cls, tier: Tier | str) -> Tier:
        """Accept a ``Tier`` or its name (``"L"``, ``"xl"``)."""
        if isinstance(tier, Tier):
            return tier
        try:
            return cls[str(tier).strip().upper()]
        except KeyError:
            names = ", ".join(t.name for t in cls)
            raise ValueError(f"unknown Klaviyo rate-limit tier {tier!r}: use one of {names}") from None


BURST_WINDOW_S = 1.0
STEADY_WINDOW_S = 60.0
DAILY_WINDOW_S = 86_400.0


@dataclass(frozen=True)
class Bucket:
    """One rate-limit bucket: the endpoint key, its tier, an optional daily cap, whether repeating a
    request whose outcome is unknown is safe (False for creates that would duplicate) and, when it is
    not, how to find out what happened (``on_unknown``, for the error message)."""

    key: str
    tier: Tier
    daily: int | None = None
    idempotent: bool = True
    on_unknown: str = ""

    def windows(self) -> list[tuple[int, float]]:
        """(limit, nominal window seconds) pairs, shortest window first."""
        out = [(self.tier.burst, BURST_WINDOW_S), (self.tier.steady, STEADY_WINDOW_S)]
        if self.daily:
            out.append((self.daily, DAILY_WINDOW_S))
        return out


@dataclass(frozen=True)
class Route:
    """A row of the path table: method, path template, tier, query variants, daily cap, idempotency."""

    method: str
    template: str
    tier: Tier
    # (query key prefix, value substring, tier): e.g. additional-fields[profile] with predictive_analytics.
    variants: tuple[tuple[str, str, Tier], ...] = ()
    daily: int | None = None
    idempotent: bool = True
    on_unknown: str = ""  # not idempotent: how a caller learns whether the write happened


def _creates(how: str) -> dict[str, Any]:
    """Route options of a write that creates something: never repeated blindly; ``how`` says how to look."""
    return {"idempotent": False, "on_unknown": how}


_PREDICTIVE = (("additional-fields[profile]", "predictive_analytics", Tier.M),)
_LIST_COUNT = (("additional-fields[list]", "profile_count", Tier.XS),)
_SEGMENT_COUNT = (("additional-fields[segment]", "profile_count", Tier.XS),)

# The table. Read endpoints from the notes' read table, writes from its write table; single-resource GETs
# take their collection's tier except GET /api/events/{id} (M, not the collection's XL).
# Repeating a write after an unknown outcome (a reset or timeout once the request was sent, a 5xx, a cut
# answer): safe for set operations (list membership adds/removes, consent and suppression states, a
# deletion), for events (Klaviyo records one event per profile, metric and unique_id, or per second
# without one: the spec's EventCreate docs) and for every GET; not for creates, which would make a second
# list or a second import job for the same rows (`_creates`: the client raises KlaviyoUnknownOutcomeError).
ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/profiles", Tier.L, _PREDICTIVE),
    Route("GET", "/api/profiles/{id}", Tier.L),
    Route("GET", "/api/events", Tier.XL),
    Route("GET", "/api/events/{id}", Tier.M),
    Route("GET", "/api/campaigns", Tier.M),
    Route("GET", "/api/campaigns/{id}", Tier.M),
    Route("GET", "/api/metrics", Tier.M),
    Route("GET", "/api/metrics/{id}", Tier.M),
    Route("GET", "/api/custom-metrics", Tier.S),
    Route("GET", "/api/custom-metrics/{id}", Tier.S),
    Route("GET", "/api/custom-metrics/{id}/metrics", Tier.S),
    Route("GET", "/api/custom-metrics/{id}/relationships/metrics", Tier.S),
    Route("GET", "/api/flows", Tier.S),
    Route("GET", "/api/flows/{id}", Tier.S),
    Route("GET", "/api/campaign-messages/{id}", Tier.M),
    Route("GET", "/api/flow-actions/{id}", Tier.S),
    Route("GET", "/api/flow-actions/{id}/flow-messages", Tier.S),
    Route("GET", "/api/flow-messages/{id}", Tier.S),
    Route("GET", "/api/tags", Tier.S),
    Route("GET", "/api/tags/{id}", Tier.S),
    Route("GET", "/api/templates", Tier.L),
    Route("GET", "/api/templates/{id}", Tier.L),
    Route("GET", "/api/lists", Tier.L),
    Route("POST", "/api/lists", Tier.M, daily=150, **_creates(
        "look the name up before creating it again (find-or-create)")),
    Route("GET", "/api/lists/{id}", Tier.L, _LIST_COUNT),
    Route("GET", "/api/lists/{id}/profiles", Tier.L, _PREDICTIVE),
    Route("GET", "/api/lists/{id}/relationships/profiles", Tier.L, _PREDICTIVE),
    Route("POST", "/api/lists/{id}/relationships/profiles", Tier.M),
    Route("DELETE", "/api/lists/{id}/relationships/profiles", Tier.M),
    Route("GET", "/api/segments", Tier.L),
    Route("GET", "/api/segments/{id}", Tier.L, _SEGMENT_COUNT),
    Route("GET", "/api/segments/{id}/profiles", Tier.L),
    Route("GET", "/api/segments/{id}/relationships/profiles", Tier.L),
    Route("GET", "/api/profile-bulk-import-jobs", Tier.M),
    Route("POST", "/api/profile-bulk-import-jobs", Tier.M, **_creates(
        "find the job among the recent ones (GET /api/profile-bulk-import-jobs?sort=-created_at, same "
        "total_count) and poll it, or send the rows again only when no such job appeared")),
    Route("GET", "/api/profile-bulk-import-jobs/{id}", Tier.M),
    Route("GET", "/api/profile-bulk-import-jobs/{id}/import-errors", Tier.M),
    Route("GET", "/api/profile-bulk-import-jobs/{id}/profiles", Tier.M),
    Route("GET", "/api/profile-bulk-import-jobs/{id}/relationships/profiles", Tier.M),
    Route("GET", "/api/profile-bulk-import-jobs/{id}/lists", Tier.M),
    Route("GET", "/api/profile-bulk-import-jobs/{id}/relationships/lists", Tier.M),
    # events, consent and deletion (activate/event_import.py, subscriptions.py, privacy.py); all safe to
    # repeat: events dedupe on unique_id, consent and suppression changes set a state, a deletion repeats
    # harmlessly (a suppression job repeated is a second job with the same effect; its caller polls its own).
    Route("POST", "/api/events", Tier.XL),
    Route("POST", "/api/event-bulk-create-jobs", Tier.M),
    Route("POST", "/api/profile-subscription-bulk-create-jobs", Tier.L),
    Route("POST", "/api/profile-subscription-bulk-delete-jobs", Tier.L),
    Route("GET", "/api/profile-suppression-bulk-create-jobs", Tier.L),
    Route("POST", "/api/profile-suppression-bulk-create-jobs", Tier.L),
    Route("GET", "/api/profile-suppression-bulk-create-jobs/{id}", Tier.L),
    Route("GET", "/api/profile-suppression-bulk-delete-jobs", Tier.L),
    Route("POST", "/api/profile-suppression-bulk-delete-jobs", Tier.L),
    Route("GET", "/api/profile-suppression-bulk-delete-jobs/{id}", Tier.L),
    Route("POST", "/api/data-privacy-deletion-jobs", Tier.S),
    # Reporting API (ingest/reports.py): 1/s, 2/m and 225 a day per account and endpoint; a query repeats safely.
    Route("POST", "/api/campaign-values-reports", Tier.REPORTING, daily=225),
    Route("POST", "/api/flow-values-reports", Tier.REPORTING, daily=225),
    Route("POST", "/api/flow-series-reports", Tier.REPORTING, daily=225),
)

# Endpoints not in the table: Klaviyo's most common tier for secondary endpoints. RateLimit-* headers
# from the first response correct it.
DEFAULT_TIER = Tier.M

_ID = re.compile(r"^\{[^}]+\}$")


def _split(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


def _build_index() -> dict[tuple[str, int], list[tuple[tuple[str | None, ...], Route]]]:
    index: dict[tuple[str, int], list[tuple[tuple[str | None, ...], Route]]] = {}
    for route in ROUTES:
        parts = tuple(None if _ID.match(p) else p for p in _split(route.template))
        index.setdefault((route.method, len(parts)), []).append((parts, route))
    return index


_INDEX = _build_index()


@functools.lru_cache(maxsize=1024)
def find_route(method: str, path: str) -> Route | None:
    """The table row for ``method path`` (``path`` with concrete ids, trailing slash tolerated)."""
    parts = _split(path.split("?", 1)[0])
    for pattern, route in _INDEX.get((method.upper(), len(parts)), ()):
        if all(p is None or p == q for p, q in zip(pattern, parts, strict=True)):
            return route
    return None


def _param_has(params: Mapping[str, Any] | None, key: str, needle: str) -> bool:
    if not params:
        return False
    value = params.get(key)
    if value is None:
        return False
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return needle in str(value)


def resolve_bucket(
    method: str, path: str, params: Mapping[str, Any] | None = None, tier: Tier | str | None = None
) -> Bucket:
    """The rate-limit bucket a request falls in: from ``tier`` when given, else from the table."""
    method = method.upper()
    route = find_route(method, path)
    if route is None:
        key = f"{method} {'/' + '/'.join(_split(path))}"
        return Bucket(key, Tier.coerce(tier) if tier is not None else DEFAULT_TIER)
    key = f"{method} {route.template}"
    chosen = route.tier
    for param, needle, variant_tier in route.variants:
        if _param_has(params, param, needle):
            key = f"{key} [{needle}]"
            chosen = variant_tier
            break
    if tier is not None:
        chosen = Tier.coerce(tier)
    return Bucket(key, chosen, route.daily, route.idempotent, route.on_unknown)


# Resources whose scopes are not named after them (superset of what each method needs).
_SCOPE_NAMES: dict[str, tuple[str, ...]] = {
    "event-bulk-create-jobs": ("events",),
    "profile-subscription-bulk-create-jobs": ("lists", "profiles", "subscriptions"),
    "profile-subscription-bulk-delete-jobs": ("lists", "profiles", "subscriptions"),
    "profile-suppression-bulk-create-jobs": ("profiles", "subscriptions"),
    "profile-suppression-bulk-delete-jobs": ("subscriptions",),
    "data-privacy-deletion-jobs": ("data-privacy",),
    # Messages and actions are read with their campaign's or flow's scope.
    "campaign-messages": ("campaigns",),
    "flow-actions": ("flows",),
    "flow-messages": ("flows",),
    "campaign-values-reports": ("campaigns",),
    "flow-values-reports": ("flows",),
    "flow-series-reports": ("flows",),
}


def scope_hint(method: str, path: str) -> list[str]:
    """The API-key scopes an endpoint most likely needs, for 403 messages (e.g. ``["flows:read"]``)."""
    parts = _split(path.split("?", 1)[0])
    if len(parts) < 2:
        return []
    # Report queries are POSTs that only read (their scope is campaigns:read / flows:read).
    access = "read" if method.upper() == "GET" or parts[1].endswith("-reports") else "write"
    resource = parts[1]
    if resource == "profile-bulk-import-jobs":
        if len(parts) > 3:
            names = ["lists"] if parts[-1] == "lists" else ["profiles"]
        else:
            names = ["profiles", "lists"]
    elif resource in _SCOPE_NAMES:
        names = list(_SCOPE_NAMES[resource])
    else:
        names = ["metrics" if resource == "custom-metrics" else resource]  # custom metrics need metrics:read
        if len(parts) > 3 and parts[-1] == "profiles":
            names.append("profiles")
    return [f"{name}:{access}" for name in names]
