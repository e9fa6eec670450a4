"""Data-privacy deletion of the sandbox: `POST /api/data-privacy-deletion-jobs` (3/s, 60/m).

The request names exactly one identifier: profile `id`, `email` or `phone_number` (several at once are a
400, as the spec says). It answers 202 without a body; ~0.5 s later every profile matching the identifier
is deleted with its list and segment memberships, consent and events (`Store.delete_profile`), so
`GET /api/profiles/{id}` answers 404 and identifier filters find nothing. An identifier that matches no
profile is accepted and changes nothing.
"""

from __future__ import annotations

from typing import Any

from klaviyo_dagster.sandbox.api import ReadApi, Request
from klaviyo_dagster.sandbox.params import bad
from klaviyo_dagster.sandbox.store import Store
from klaviyo_dagster.sandbox.writes import identifier_problem, parse_body

DELETE_OP = "POST /api/data-privacy-deletion-jobs"
ACCEPTED = frozenset({DELETE_OP})  # answered 202 without a body
DELETION_DELAY_MS = 500


class PrivacyWrites:
    """Handler of the deletion operation; the deletion itself is deferred through `Store.defer`."""

    def __init__(self, store: Store, reads: ReadApi) -> None:
        self.store = store
        self.reads = reads

    def handlers(self) -> dict[str, Any]:
        return {DELETE_OP: self.request_deletion}

    def request_deletion(self, req: Request) -> None:
        body = parse_body(req)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != "data-privacy-deletion-job":
            raise bad("'data' must be an object with \"type\": \"data-privacy-deletion-job\"", pointer="/data/type")
        prof = ((data.get("attributes") or {}).get("profile") or {}).get("data")
        if not isinstance(prof, dict) or prof.get("type") != "profile":
            raise bad("data.attributes.profile.data must be {\"type\": \"profile\", ...}",
                      pointer="/data/attributes/profile/data")
        attrs = prof.get("attributes") if isinstance(prof.get("attributes"), dict) else {}
        given = {k: v for k, v in (("id", prof.get("id")), ("email", attrs.get("email")),
                                   ("phone_number", attrs.get("phone_number"))) if v}
        if len(given) != 1:
            raise bad("name exactly one identifier of the profile to delete: id, email or phone_number "
                      f"(got {', '.join(given) or 'none'})", pointer="/data/attributes/profile/data")
        (field, value), = given.items()
        if not isinstance(value, str):
            raise bad(f"{field} must be a string", pointer="/data/attributes/profile/data")
        problem = identifier_problem({field: value}) if field != "id" else None
        if problem is not None:
            raise bad(problem[1], pointer=f"/data/attributes/profile/data/attributes/{problem[0]}")
        self.store.defer(DELETION_DELAY_MS, lambda: self._delete(field, value))

    def _delete(self, field: str, value: str) -> None:
        for pid in self.store.lookup(field, value):
            self.store.delete_profile(pid)
