"""The sandbox is as strict as Klaviyo: paging as the official SDK does it, revisions, per-revision parameters.

Raw HTTP against the shared sandbox (no client code): each rule is one Klaviyo behaviour a lenient server
would hide (see the README's sandbox section).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from klaviyo_dagster.sandbox import revisions
from klaviyo_dagster.spec import load_subset

REVISION = "2026-07-15"


@pytest.fixture(scope="module")
def http(klaviyo_sandbox):
    s = requests.Session()
    s.headers.update({"Authorization": f"Klaviyo-API-Key {klaviyo_sandbox.api_key}", "revision": REVISION})
    yield s
    s.close()


def get(http, sb, path, params=None, revision=None):
    headers = {"revision": revision} if revision else None
    return http.get(sb.base_url + path, params=params, headers=headers, timeout=30)


def error_of(r):
    err = r.json()["errors"][0]
    assert err["status"] == r.status_code
    return err


# --- paging -----------------------------------------------------------------------------------------------


def test_cursor_with_a_leading_equals_sign_is_served_like_the_sdk_sends_it(http, klaviyo_sandbox):
    first = get(http, klaviyo_sandbox, "/api/profiles/", {"page[size]": 5}).json()
    nxt = first["links"]["next"]
    token = parse_qs(urlsplit(nxt).query)["page[cursor]"][0]
    plain = get(http, klaviyo_sandbox, "/api/profiles/", {"page[size]": 5, "page[cursor]": token}).json()
    # klaviyo-api splits links.next on 'page%5Bcursor%5D' and keeps the '=': page[cursor]=%3D<token>
    sdk = get(http, klaviyo_sandbox, "/api/profiles/", {"page[size]": 5, "page[cursor]": "=" + token})
    assert sdk.status_code == 200, sdk.text
    ids = [d["id"] for d in sdk.json()["data"]]
    assert ids == [d["id"] for d in plain["data"]] and len(ids) == 5
    assert not set(ids) & {d["id"] for d in first["data"]}
    # Its own links carry a clean cursor again.
    assert "%3D" not in sdk.json()["links"]["next"].split("page%5Bcursor%5D=")[1][:3]


def test_a_cursor_the_server_did_not_issue_is_still_refused(http, klaviyo_sandbox):
    r = get(http, klaviyo_sandbox, "/api/profiles/", {"page[cursor]": "=not-a-cursor"})
    assert r.status_code == 400 and error_of(r)["source"] == {"parameter": "page[cursor]"}


# --- revisions --------------------------------------------------------------------------------------------


def test_the_revision_list_ends_at_the_spec_and_says_where_it_came_from():
    assert revisions.SPEC_REVISION == load_subset()["revision"] == REVISION
    assert list(revisions.PUBLISHED) == sorted(set(revisions.PUBLISHED))
    assert revisions.SERVED == ("2026-01-15", "2026-04-15", "2026-07-15")
    assert "klaviyo-api-python" in revisions.SOURCE
    ops = set(load_subset()["operations"])
    for change in revisions.CHANGES:  # every change names operations the sandbox serves
        assert change.revision in revisions.PUBLISHED and set(change.operations) <= ops, change


@pytest.mark.parametrize("revision,needle", [
    ("2026-10-15", "newer than the spec"),
    ("1999-01-01", "not a revision Klaviyo has published"),
    ("2026-05-01", "not a revision Klaviyo has published"),
    ("2023-07-15", "was retired on 2025-07-15"),
    ("2025-10-15", "older than 2026-01-15"),
    ("2026-07-15.pre", "pre-release"),
    ("2026-02-30", "not a calendar date"),
    ("latest", "not YYYY-MM-DD"),
])
def test_a_revision_the_sandbox_cannot_serve_faithfully_is_a_clear_400(http, klaviyo_sandbox, revision, needle):
    r = get(http, klaviyo_sandbox, "/api/campaigns/", {"filter": "equals(messages.channel,'email')"}, revision)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["source"] == {"parameter": "revision"}
    assert needle in err["detail"]
    assert "serves revisions 2026-01-15, 2026-04-15, 2026-07-15" in err["detail"]


@pytest.mark.parametrize("path,params,revision,ok", [
    ("/api/events/", {"page[size]": 5}, "2026-01-15", True),
    ("/api/lists/", {"page[size]": 5}, "2026-01-15", False),
    ("/api/lists/", {"page[size]": 5}, "2026-04-15", True),
    ("/api/segments/", {"page[size]": 5}, "2026-01-15", False),
    ("/api/templates/", {"page[size]": 5}, "2026-01-15", False),
    ("/api/campaigns/", {"page[size]": 5, "filter": "equals(messages.channel,'email')"}, "2026-01-15", False),
    ("/api/campaigns/", {"page[size]": 5, "filter": "equals(messages.channel,'email')"}, "2026-04-15", True),
    ("/api/templates/", {"additional-fields[template]": "definition"}, "2026-01-15", False),
    ("/api/templates/", {"additional-fields[template]": "definition"}, "2026-04-15", True),
    ("/api/events/", {"filter": "has(metric)"}, "2026-04-15", False),
    ("/api/events/", {"filter": "has(metric)"}, "2026-07-15", True),
    ("/api/events/", {"filter": "has(profile)"}, "2026-01-15", True),
    ("/api/profiles/", {"include": "conversations"}, "2026-04-15", False),
])
def test_parameters_a_revision_lacks_are_refused_on_it(http, klaviyo_sandbox, path, params, revision, ok):
    r = get(http, klaviyo_sandbox, path, params, revision)
    if ok:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert f"not available on revision {revision}" in err["detail"]
    name = next(k for k in params if k != "filter" or "page[size]" not in params)
    assert err["source"]["parameter"] == name
