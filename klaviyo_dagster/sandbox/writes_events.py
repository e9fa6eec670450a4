"""Event writes of the sandbox: `POST /api/event-bulk-create-jobs` and `POST /api/events`.

Rules as the spec states them: a bulk job takes at most 1,000 events and 5 MB of payload, no string may
exceed 100 KB and no event more than 400 properties; every event needs a metric name (under 128
characters) and its profile an identifier; `time` lies after 1990 and at most a year ahead. A `unique_id`
repeated for the same profile and metric inside one request fails the whole request (400, nothing
processed). Both answer 202 with no body: the events are processed asynchronously (switch
`event_job_seconds`: by default 0.3 s plus 1 ms per 2 events for a bulk job, a third of it for a single
event), then appear in `GET /api/events` (with `unique_id` as `event_properties.$event_id`, `value` as
`$value`). Across requests an event whose (profile, metric,
unique_id) already exists is dropped, as Klaviyo dedupes on it; without `unique_id` the time truncated to
the second is the key. Unknown profiles are created, a profile carrying more than identifiers is updated,
and an unknown metric name creates the metric.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from klaviyo_dagster.sandbox.api import ReadApi, Request
from klaviyo_dagster.sandbox.ids import det_uuid, encode_ulid, short_id
from klaviyo_dagster.sandbox.params import ApiError, bad
from klaviyo_dagster.sandbox.semantics import Switch, parse_seconds, register
from klaviyo_dagster.sandbox.store import IDENTITY_FIELDS, Store
from klaviyo_dagster.sandbox.timeline import iso
from klaviyo_dagster.sandbox.writes import identifier_problem, parse_body

MAX_BULK_EVENTS = 1_000
MAX_PAYLOAD_BYTES = 5 * 1024 * 1024
MAX_STRING_BYTES = 100 * 1024
MAX_PROPERTIES = 400
MAX_METRIC_NAME = 127
PROFILE_KEYS = ("id", "email", "phone_number", "external_id", "anonymous_id", "_kx")
BULK_OP = "POST /api/event-bulk-create-jobs"
SINGLE_OP = "POST /api/events"
ACCEPTED = frozenset({BULK_OP, SINGLE_OP})  # answered 202 without a body
YEAR_MS = 366 * 86_400_000
MIN_MS = 631_152_000_000  # 1990-01-01


register(Switch(
    "event_unique_id_repeat", "request_400", values=("request_400", "drop"),
    known="The spec: a unique_id repeated for the same profile and metric makes the request fail and no event "
          "of it is processed; Klaviyo's guides: unique_id keeps an event from being recorded twice.",
    unknown="Whether that holds across requests: `request_400` a request repeating an event Klaviyo already "
            "holds is refused whole (400 pointing at the entry), `drop` it is accepted and the repeat ignored. "
            "A repeat inside one request is a 400 either way."))
register(Switch(
    "event_job_seconds", "0.3", convert=parse_seconds, value_doc="<seconds>", test_values=("0.3", "3"),
    known="Event writes answer 202 and are processed asynchronously; the spec gives no duration.",
    unknown="How long until accepted events appear in GET /api/events: a bulk job this many seconds (plus "
            "1 ms per 2 events) after its POST, a single event a third of it; the default is short to keep "
            "tests fast, set it above a read-back's wait to test events not yet readable."))


def _obj(node: Any, pointer: str, what: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise bad(f"{what} must be an object", pointer=pointer)
    return node


def _long_string(node: Any) -> bool:
    if isinstance(node, str):
        return len(node.encode()) > MAX_STRING_BYTES
    if isinstance(node, dict):
        return any(_long_string(v) for v in node.values())
    if isinstance(node, list):
        return any(_long_string(v) for v in node)
    return False


def _parse_time(value: Any, pointer: str, now_ms: int) -> int | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise bad(f"time {value!r} is not an ISO 8601 datetime, e.g. 2026-01-01T00:00:00+00:00",
                  pointer=pointer) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    ms = int(parsed.timestamp()) * 1000  # truncated to the second
    if ms < MIN_MS or ms > now_ms + YEAR_MS:
        raise bad(f"time {value!r} must be after 1990 and at most one year in the future", pointer=pointer)
    return ms


def check_profile(node: Any, pointer: str) -> tuple[str | None, dict[str, Any]]:
    """(profile id, attributes) of an event's `profile.data`; 400 without an identifier or with a bad one."""
    data = _obj(_obj(node, pointer, "profile").get("data"), f"{pointer}/data", "profile.data")
    if data.get("type") != "profile":
        raise bad("profile.data.type must be \"profile\"", pointer=f"{pointer}/data/type")
    attrs = _obj(data.get("attributes", {}), f"{pointer}/data/attributes", "profile.data.attributes")
    pid = data.get("id")
    if not (pid or any(attrs.get(k) for k in PROFILE_KEYS)):
        raise bad("the profile needs an identifier: id, email, phone_number, external_id or anonymous_id",
                  pointer=f"{pointer}/data/attributes")
    problem = identifier_problem(attrs)
    if problem is not None:
        raise bad(problem[1], pointer=f"{pointer}/data/attributes/{problem[0]}")
    return (pid if isinstance(pid, str) and pid else None), attrs


def check_event(attrs: Any, pointer: str, now_ms: int) -> dict[str, Any]:
    """A normalised event (metric name, time ms or None, value, properties, unique_id) or 400."""
    attrs = _obj(attrs, pointer, "event attributes")
    props = attrs.get("properties")
    if not isinstance(props, dict):
        raise bad("event attributes need 'properties' (an object, may be empty)", pointer=f"{pointer}/properties")
    if len(props) > MAX_PROPERTIES:
        raise bad(f"an event may carry at most {MAX_PROPERTIES} properties, got {len(props)}",
                  pointer=f"{pointer}/properties")
    if _long_string(props):
        raise bad("no string of an event may exceed 100 KB", pointer=f"{pointer}/properties")
    metric = _obj(_obj(attrs.get("metric"), f"{pointer}/metric", "metric").get("data"),
                  f"{pointer}/metric/data", "metric.data")
    name = _obj(metric.get("attributes"), f"{pointer}/metric/data/attributes", "metric attributes").get("name")
    if metric.get("type") != "metric" or not isinstance(name, str) or not name.strip():
        raise bad("metric.data must be {\"type\": \"metric\", \"attributes\": {\"name\": ...}}",
                  pointer=f"{pointer}/metric/data")
    if len(name) > MAX_METRIC_NAME:
        raise bad("a metric name must be less than 128 characters", pointer=f"{pointer}/metric/data/attributes/name")
    value = attrs.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise bad("value must be a number", pointer=f"{pointer}/value")
    unique_id = attrs.get("unique_id")
    if unique_id is not None and not isinstance(unique_id, str):
        raise bad("unique_id must be a string", pointer=f"{pointer}/unique_id")
    return {"metric": name, "time": _parse_time(attrs.get("time"), f"{pointer}/time", now_ms), "value": value,
            "properties": props, "unique_id": unique_id or None}


class EventWrites:
    """Handlers of the event write operations; effects are deferred through `Store.defer`."""

    def __init__(self, store: Store, reads: ReadApi) -> None:
        self.store = store
        self.reads = reads
        self.seq = 0

    def handlers(self) -> dict[str, Any]:
        return {BULK_OP: self.bulk_create, SINGLE_OP: self.create}

    # ---- requests --------------------------------------------------------------------------------------
    def _payload(self, req: Request) -> Any:
        if len(req.body) > MAX_PAYLOAD_BYTES:
            raise ApiError(413, "too_large", f"the payload is {len(req.body)} bytes; the limit is 5 MB per request: "
                           "send fewer events per job")
        return parse_body(req)

    def bulk_create(self, req: Request) -> None:
        body = self._payload(req)
        data = _obj(_obj(body, "/", "the body").get("data"), "/data", "data")
        if data.get("type") != "event-bulk-create-job":
            raise bad("data.type must be \"event-bulk-create-job\"", pointer="/data/type")
        attrs = _obj(data.get("attributes"), "/data/attributes", "data.attributes")
        entries = _obj(attrs.get("events-bulk-create"), "/data/attributes/events-bulk-create",
                       "events-bulk-create").get("data")
        if not isinstance(entries, list) or not entries:
            raise bad("events-bulk-create.data must be a non-empty list", pointer="/data/attributes/events-bulk-create/data")
        now = self.store.clock_ms()
        batch: list[tuple[str | None, dict[str, Any], list[dict[str, Any]]]] = []
        total = 0
        for k, entry in enumerate(entries):
            ptr = f"/data/attributes/events-bulk-create/data/{k}"
            entry = _obj(entry, ptr, "each entry")
            if entry.get("type") != "event-bulk-create":
                raise bad("each entry's type must be \"event-bulk-create\"", pointer=f"{ptr}/type")
            e_attrs = _obj(entry.get("attributes"), f"{ptr}/attributes", "entry attributes")
            pid, p_attrs = check_profile(e_attrs.get("profile"), f"{ptr}/attributes/profile")
            events = _obj(e_attrs.get("events"), f"{ptr}/attributes/events", "events").get("data")
            if not isinstance(events, list) or not events:
                raise bad("events.data must be a non-empty list", pointer=f"{ptr}/attributes/events/data")
            total += len(events)
            if total > MAX_BULK_EVENTS:
                raise bad(f"a bulk create job takes at most {MAX_BULK_EVENTS} events; split them into several jobs",
                          pointer="/data/attributes/events-bulk-create/data")
            checked = []
            for j, ev in enumerate(events):
                eptr = f"{ptr}/attributes/events/data/{j}"
                ev = _obj(ev, eptr, "each event")
                if ev.get("type") != "event":
                    raise bad("each event's type must be \"event\"", pointer=f"{eptr}/type")
                checked.append(check_event(ev.get("attributes"), f"{eptr}/attributes", now))
            batch.append((pid, p_attrs, checked))
        self._refuse_repeats(batch)
        self._refuse_known(batch, "/data/attributes/events-bulk-create/data/{k}")
        self.store.defer(self._delay_ms() + total // 2, lambda: self._apply(batch))

    def create(self, req: Request) -> None:
        data = _obj(_obj(self._payload(req), "/", "the body").get("data"), "/data", "data")
        if data.get("type") != "event":
            raise bad("data.type must be \"event\"", pointer="/data/type")
        attrs = _obj(data.get("attributes"), "/data/attributes", "data.attributes")
        pid, p_attrs = check_profile(attrs.get("profile"), "/data/attributes/profile")
        event = check_event(attrs, "/data/attributes", self.store.clock_ms())
        self._refuse_known([(pid, p_attrs, [event])], "/data/attributes/unique_id")
        self.store.defer(self._delay_ms() // 3, lambda: self._apply([(pid, p_attrs, [event])]))

    def _delay_ms(self) -> int:
        """The bulk job processing time the `event_job_seconds` switch sets, in ms."""
        return int(self.store.semantics.get("event_job_seconds") * 1000)

    def _refuse_known(self, batch: list[tuple[str | None, dict[str, Any], list[dict[str, Any]]]], pointer: str) -> None:
        """Under event_unique_id_repeat=request_400: 400 when an event repeats one Klaviyo already holds."""
        s = self.store
        if s.semantics.get("event_unique_id_repeat") != "request_400":
            return
        metric_ids = {m["attributes"]["name"]: m["id"] for m in s.all_metrics()}
        for k, (pid, p_attrs, events) in enumerate(batch):
            found = s.find_profile(pid, {key: v for key, v in p_attrs.items() if v is not None})
            for ev in events:
                mid = metric_ids.get(ev["metric"])
                uid = ev["unique_id"] or (iso(ev["time"]) if ev["time"] is not None else None)
                if found and mid and uid and (found, mid, uid) in s.event_keys:
                    raise bad(f"an event with unique_id {uid!r} already exists for this profile and metric "
                              f"({ev['metric']!r}); no events of this request were processed",
                              pointer=pointer.format(k=k))

    @staticmethod
    def _refuse_repeats(batch: list[tuple[str | None, dict[str, Any], list[dict[str, Any]]]]) -> None:
        """400 when one request repeats a unique_id for the same profile and metric (nothing is processed)."""
        seen: set[tuple[str, str, str]] = set()
        for pid, p_attrs, events in batch:
            who = pid or next((f"{k}:{p_attrs[k]}" for k in PROFILE_KEYS if p_attrs.get(k)), "")
            for ev in events:
                if ev["unique_id"] is None:
                    continue
                key = (who, ev["metric"], ev["unique_id"])
                if key in seen:
                    raise bad(f"unique_id {ev['unique_id']!r} is repeated for the same profile and metric "
                              f"({ev['metric']!r}) in this request; no events were processed",
                              pointer="/data/attributes/events-bulk-create/data")
                seen.add(key)

    # ---- effects ---------------------------------------------------------------------------------------
    def _metric_id(self, name: str) -> str:
        s = self.store
        for m in s.all_metrics():
            if m["attributes"]["name"] == name:
                return m["id"]
        now = s.clock_ms()
        salt = len(s.metrics_new) + 1
        mid = short_id(s.base.seed, "metric-created", salt)
        while mid in s.metric_by_id:
            salt += 1_000_003
            mid = short_id(s.base.seed, "metric-created", salt)
        rec = {"type": "metric", "id": mid, "attributes": {
            "name": name, "created": iso(now), "updated": iso(now),
            "integration": {"object": "integration", "id": "0eMvjm", "key": "api", "name": "API",
                            "category": "API"}}}
        s.metrics_new.append(rec)
        s.metric_by_id[mid] = rec
        return mid

    def _profile_id(self, pid: str | None, attrs: dict[str, Any]) -> str:
        s = self.store
        clean = {k: v for k, v in attrs.items() if v is not None}
        found = s.find_profile(pid, clean)
        extra = set(clean) - set(IDENTITY_FIELDS) - {"anonymous_id", "_kx"}
        if found is not None and not extra:
            return found
        return s.upsert_profile(found, clean, None)

    def _apply(self, batch: list[tuple[str | None, dict[str, Any], list[dict[str, Any]]]]) -> None:
        s = self.store
        now = s.clock_ms()
        for pid, p_attrs, events in batch:
            profile_id = self._profile_id(pid, p_attrs)
            for ev in events:
                ms = ev["time"] if ev["time"] is not None else now - now % 1000
                metric_id = self._metric_id(ev["metric"])
                unique_id = ev["unique_id"] or iso(ms)
                key = (profile_id, metric_id, unique_id)
                if key in s.event_keys:
                    continue  # Klaviyo dedupes on (profile, metric, unique_id)
                s.event_keys.add(key)
                self.seq += 1
                eid = encode_ulid(s.base.seed, "event-written", ms, self.seq)
                props = dict(ev["properties"])
                props["$event_id"] = unique_id
                if ev["value"] is not None:
                    props["$value"] = ev["value"]
                s.events_new[eid] = {
                    "type": "event", "id": eid,
                    "attributes": {"timestamp": ms // 1000, "event_properties": props, "datetime": iso(ms),
                                   "uuid": det_uuid(s.base.seed, "event-written-uuid", self.seq)},
                    "_metric_id": metric_id, "_profile_id": profile_id, "_profile_index": None}
                s.events_overlay.put(eid, ms)


__all__ = ["ACCEPTED", "EventWrites", "check_event", "check_profile"]
