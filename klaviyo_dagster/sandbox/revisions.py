"""Klaviyo's published API revisions, what changed that the sandbox depends on, and which ones it serves.

The `revision` header selects a snapshot of Klaviyo's API. The sandbox models the shapes of its spec
(the subset's `revision`, 2026-07-15) and of the revisions back to `OLDEST_SERVED` whose differences it
knows and reproduces (the parameters a revision lacks are refused on it). Every other revision gets a
400 naming the revisions it serves, never another revision's shapes:

- newer than the spec (e.g. 2026-10-15, where campaigns are OmniCampaigns): the sandbox cannot know it;
- retired (two years after release, by the sandbox clock): Klaviyo no longer serves it;
- published but older than `OLDEST_SERVED`: its shapes differ in ways the sandbox does not model
  (2026-01-15 removed `anonymous_id` from profiles, for one);
- never published (1999-01-01, 2026-07-16) or a pre-release (`.pre`): not a stable Klaviyo revision.

Sources of `PUBLISHED`: the stable revisions named in the CHANGELOG of Klaviyo's official Python SDK
(klaviyo/klaviyo-api-python, CHANGELOG.md at v24.0.0: one revision per SDK release line, 2023-01-24 on),
cross-checked against the revision selector of developers.klaviyo.com (pages such as
/en/v2023-02-22/docs/changelog_) and the SDK 24.0.0 wheel's `_REVISION` (2026-07-15). `CHANGES`: the
notes in ../shared/klaviyo-api-notes.md (page[size] revisions), the Node SDK's v21.0.1 release notes
(events page[size], revision 2026-01-15) and the Python SDK CHANGELOG (23.0.0: template `definition`;
24.0.0: `has(metric)` on events, plural `conversations`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

SOURCE = ("klaviyo/klaviyo-api-python CHANGELOG.md (v24.0.0), developers.klaviyo.com revision selector, "
          "klaviyo-api-node v21.0.1 release notes, ../shared/klaviyo-api-notes.md")

PUBLISHED: tuple[str, ...] = (
    "2023-01-24", "2023-02-22", "2023-06-15", "2023-07-15", "2023-08-15", "2023-09-15", "2023-10-15",
    "2023-12-15", "2024-02-15", "2024-05-15", "2024-06-15", "2024-07-15", "2024-10-15", "2025-01-15",
    "2025-04-15", "2025-07-15", "2025-10-15", "2026-01-15", "2026-04-15", "2026-07-15",
)
SPEC_REVISION = PUBLISHED[-1]  # tests hold this equal to the spec subset's revision
OLDEST_SERVED = "2026-01-15"
SERVED: tuple[str, ...] = tuple(r for r in PUBLISHED if r >= OLDEST_SERVED)
SUPPORT_YEARS = 2  # stable for a year, deprecated for a year, then retired

_FORM = re.compile(r"(\d{4}-\d{2}-\d{2})(\.[A-Za-z0-9_-]+)?")


@dataclass(frozen=True)
class Change:
    """Something a revision added that the sandbox depends on: a query parameter (optionally one value of
    it) or a filter (field, operator) on some operations. Before `revision` it does not exist."""

    revision: str
    operations: tuple[str, ...]
    parameter: str
    value: str | None = None  # one value of a list-valued parameter (include, additional-fields[...])
    filter: tuple[str, str] | None = None  # (field, operator) of a `filter` condition
    note: str = ""


CHANGES: tuple[Change, ...] = (
    Change("2026-01-15", ("GET /api/events",), "page[size]",
           note="events page[size] (default 200, up to 1000) arrived in 2026-01-15"),
    Change("2026-04-15", ("GET /api/lists", "GET /api/segments", "GET /api/templates", "GET /api/campaigns"),
           "page[size]", note="page[size] on lists, segments, templates and campaigns arrived in 2026-04-15"),
    Change("2026-04-15", ("GET /api/templates", "GET /api/templates/{id}"), "additional-fields[template]",
           value="definition", note="template definitions (drag-and-drop templates) arrived in 2026-04-15"),
    Change("2026-07-15", ("GET /api/events",), "filter", filter=("metric", "has"),
           note="has(metric) on events arrived in 2026-07-15 (events of unresolvable metrics are listed since)"),
    Change("2026-07-15", ("GET /api/profiles", "GET /api/profiles/{id}"), "include", value="conversations",
           note="include=conversations (plural) replaced 2026-04-15's include=conversation in 2026-07-15"),
    Change("2026-07-15", ("GET /api/profiles", "GET /api/profiles/{id}"), "fields[conversation]",
           note="conversations on profiles are served from 2026-07-15"),
)


class RevisionError(ValueError):
    """A revision the sandbox does not serve; the message names the ones it does."""


def _served_text() -> str:
    return f"this sandbox serves revisions {', '.join(SERVED)} (its spec is {SPEC_REVISION}); send e.g. " \
           f"'revision: {SPEC_REVISION}'"


def _retired_on(revision: str) -> date:
    d = date.fromisoformat(revision)
    return d.replace(year=d.year + SUPPORT_YEARS)


def resolve(header: str | None, now_ms: int) -> str:
    """The revision a request is served as; RevisionError when the sandbox cannot serve it faithfully."""
    if header is None or not header.strip():
        raise RevisionError(f"the revision header is required: {_served_text()}")
    text = header.strip()
    m = _FORM.fullmatch(text)
    if not m:
        raise RevisionError(f"revision {header!r} is not YYYY-MM-DD or YYYY-MM-DD.suffix; {_served_text()}")
    day, suffix = m.group(1), m.group(2)
    try:
        date.fromisoformat(day)
    except ValueError:
        raise RevisionError(f"revision {header!r} is not a calendar date; {_served_text()}") from None
    if suffix:
        raise RevisionError(f"revision {text!r} is a pre-release ({suffix}), which the sandbox does not model; "
                            f"{_served_text()}")
    if day > SPEC_REVISION:
        raise RevisionError(f"revision {day} is newer than the spec this sandbox was built from "
                            f"({SPEC_REVISION}); its shapes are unknown here; {_served_text()}")
    if day not in PUBLISHED:
        raise RevisionError(f"revision {day} is not a revision Klaviyo has published; {_served_text()}")
    today = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).date()
    retired = _retired_on(day)
    if retired <= today:
        raise RevisionError(f"revision {day} was retired on {retired.isoformat()} (Klaviyo retires a revision "
                            f"{SUPPORT_YEARS} years after its release); {_served_text()}")
    if day not in SERVED:
        raise RevisionError(f"revision {day} is published but older than {OLDEST_SERVED}, whose shapes the "
                            f"sandbox reproduces (2026-01-15 removed profile anonymous_id, among others); "
                            f"{_served_text()}")
    return day


def lacking(op_key: str, revision: str, raw: dict[str, str], filters: list[tuple[str, str]]) -> Change | None:
    """The first change this request relies on that `revision` does not have yet, or None.

    `raw`: the query (last value per key); `filters`: the (field, operator) pairs of its filter.
    """
    for change in CHANGES:
        if revision >= change.revision or op_key not in change.operations:
            continue
        if change.filter is not None:
            if change.filter in filters:
                return change
            continue
        if change.parameter not in raw:
            continue
        if change.value is None:
            return change
        if change.value in [v.strip() for v in raw[change.parameter].split(",")]:
            return change
    return None


def lacking_detail(change: Change, revision: str) -> str:
    what = (f"filter {change.filter[1]}({change.filter[0]})" if change.filter else
            f"{change.parameter}={change.value}" if change.value else change.parameter)
    return (f"{what} is not available on revision {revision} ({change.note}); send 'revision: "
            f"{change.revision}' or later, or leave it out")
