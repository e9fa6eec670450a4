"""The ``klaviyo/event_import`` asset: send the rows of an events table to Klaviyo as events, exactly once.

Each row is one event: a metric name, profile identifiers (Klaviyo profile id, email, phone, external
id), a time, an optional value and currency, properties (a ``properties`` JSON/STRUCT column plus every
other unmapped column) and a ``unique_id`` (default: a hash of the row). Klaviyo keeps one event per
(profile, metric, unique_id), so a re-sent event is never created twice; the package still sends each
event once: its key (metric | identity | unique_id) is recorded when Klaviyo confirmed it.

Flow (:func:`run_event_import`, plain Python; :func:`build_event_import_asset` wraps it):
1. one DuckDB query keys and hashes every row, dedupes keys and anti-joins the confirmed keys of the
   state table, ordered by metric and time (so each job covers narrow time windows per metric);
2. rows are validated (identifier, email / E.164 syntax, metric name under 128 characters, time after
   1990 and at most a year ahead, at most 400 properties, no string over 100 KB); rejects are logged;
3. valid events are packed into ``POST /api/event-bulk-create-jobs`` (<= 1,000 events, <= 5 MB); a job
   Klaviyo refuses with 400 is split: the event its error points at (else halves) is set aside, the rest
   are sent again; a set-aside event is read back like the others (Klaviyo may refuse a unique_id it
   already holds): found, it is confirmed, else rejected with Klaviyo's reason;
4. the endpoint answers 202 and has no job to poll, so each job is confirmed by reading its events back
   (``GET /api/events`` by metric id and the job's time window, matched on ``event_properties.$event_id``,
   where Klaviyo keeps ``unique_id``) until all are seen or ``max_wait_s`` passed; unseen events are
   ``pending`` and are sent again next run (Klaviyo dedupes them on unique_id).
A changed row whose event was already confirmed is not sent (Klaviyo events are immutable): it is logged
``immutable`` so the table's owner can give it a new unique_id.
"""


import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue
from pydantic import Field

from klaviyo_dagster.activate import ledger, state
from klaviyo_dagster.activate.inputs import (
    ActivationTarget,
    build_activation_run_asset,
    pack_rows,
    table_columns,
)
from klaviyo_dagster.activate.isolate import EVENT_ROW_POINTER, send_isolating
from klaviyo_dagster.activate.jobs import MAX_JOB_BYTES, JobBatch, JobPacker, PackedProfile
from klaviyo_dagster.activate.render import to_json_value
from klaviyo_dagster.activate.validate import email_problem, phone_problem
from klaviyo_dagster.warehouse.event_import import (
    LOG,
    LOG_COLUMNS,
    STATE,
    STATE_COLUMNS,
    EventDiff,
    ensure_tables,
)

JOBS_PATH = "/api/event-bulk-create-jobs"
MAX_JOB_EVENTS = 1_000
MAX_PROPERTIES = 400
MAX_STRING_BYTES = 100 * 1024
MAX_METRIC_NAME = 127
HASH_VERSION = "1"
YEAR = pd.Timedelta(days=365)
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")


@dataclass(frozen=True)
class EventColumns:
    """Column names of an events table (None disables one). Unmapped columns become event properties."""

    metric: str = "metric"
    time: str = "time"
    unique_id: str | None = "unique_id"
    value: str | None = "value"
    value_currency: str | None = "value_currency"
    properties: str | None = "properties"
    profile_id: str | None = "klaviyo_profile_id"
    email: str | None = "email"
    phone_number: str | None = "phone_number"
    external_id: str | None = "external_id"
    exclude: tuple[str, ...] = ()

    def identifiers(self, available: list[str]) -> dict[str, str]:
        """{kind: column} of the identifier columns present, strongest first."""
        kinds = {"id": self.profile_id, "email": self.email, "phone_number": self.phone_number,
                 "external_id": self.external_id}
        return {k: c for k, c in kinds.items() if c and c in available}

    def mapped(self) -> set[str]:
        return {c for c in (self.metric, self.time, self.unique_id, self.value, self.value_currency, self.properties,
                            self.profile_id, self.email, self.phone_number, self.external_id) if c}


class EventImportConfig(Config):
    """Run config of ``klaviyo/event_import``."""

    dry_run: bool = Field(default=False, description="Plan and report; send nothing, write no state.")
    max_job_events: int = Field(default=MAX_JOB_EVENTS, description="Events per bulk job (Klaviyo cap 1,000).")
    max_job_bytes: int = Field(default=MAX_JOB_BYTES, description="Body bytes per job (Klaviyo cap 5 MB).")
    max_jobs_in_flight: int = Field(default=4, description="Jobs sent before the oldest is confirmed.")
    max_wait_s: float = Field(default=300.0, description="Longest wait for one job's events to be readable.")
    backfill: bool = Field(default=False, description="Mark events as backfill: recorded, but they trigger no flows.")


class EventImportSettings(EventImportConfig):
    """What to send (the factory's arguments) and how: the run options are `EventImportConfig`'s, defined once
    there; a run's settings are the factory's arguments plus its run config."""

    table: str
    columns: EventColumns = Field(default_factory=EventColumns)
    sync_name: str = "event_import"
    chunk_rows: int = 5_000


@dataclass
class EventImportResult:
    """Counts and job facts of one run (becomes the materialization metadata)."""

    run_id: str
    dry_run: bool = False
    rows: int = 0
    duplicates: int = 0
    unchanged: int = 0
    immutable: int = 0
    sent: int = 0
    confirmed: int = 0
    rejected: int = 0
    pending: int = 0
    jobs: int = 0
    job_events: list[int] = field(default_factory=list)
    job_bytes: list[int] = field(default_factory=list)
    readback_requests: int = 0
    duration_s: float = 0.0

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in (
            "dry_run", "rows", "duplicates", "unchanged", "immutable", "sent", "confirmed", "rejected", "pending",
            "jobs", "readback_requests")}
        out["job_events"] = MetadataValue.json(self.job_events)
        out["job_bytes"] = MetadataValue.json(self.job_bytes)
        out["duration_s"] = round(self.duration_s, 3)
        return out


def job_body(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON:API body of POST /api/event-bulk-create-jobs."""
    return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": entries}}}}


class EventPacker(JobPacker):
    """The bulk import packer (count and exact-byte caps) over the event job's envelope."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        if not 1 <= max_events <= MAX_JOB_EVENTS:
            raise ValueError(f"max_job_events must be between 1 and {MAX_JOB_EVENTS}, got {max_events}")
        super().__init__(max_profiles=max_events, max_bytes=max_bytes)
        self.overhead = self._bytes = len(orjson.dumps(job_body([])))


def event_diff(s: EventImportSettings, available: list[str]) -> EventDiff:
    """The warehouse diff of the events table: every column but the excluded ones is hashed."""
    c = s.columns
    return EventDiff(
        table=s.table, hash_version=HASH_VERSION, metric=c.metric, time=c.time,
        unique_id=c.unique_id if c.unique_id and c.unique_id in available else None,
        identifiers=c.identifiers(available),
        hashed_columns=[col for col in available if col not in c.exclude and not col.startswith("__")])


def _long_string(value: Any) -> bool:
    if isinstance(value, str):
        return len(value.encode()) > MAX_STRING_BYTES
    if isinstance(value, dict):
        return any(_long_string(v) for v in value.values())
    if isinstance(value, list):
        return any(_long_string(v) for v in value)
    return False


def _utc(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass
class PendingEvent:
    """One rendered event on its way: key, hash, metric, unique_id, time and its bulk entry."""

    key: str
    content_hash: str
    metric: str
    unique_id: str
    time: pd.Timestamp
    entry: dict[str, Any]


def render_event(row: dict[str, Any], s: EventImportSettings, available: list[str],
                 now: pd.Timestamp) -> tuple[PendingEvent | None, str | None]:
    """(event, None) for a sendable row, (None, reason) for one that must not be sent."""
    c = s.columns
    metric = row["__metric"]
    if not metric:
        return None, f"no metric name in column {c.metric!r}"
    if len(metric) > MAX_METRIC_NAME:
        return None, f"metric name is {len(metric)} characters; Klaviyo takes less than 128"
    profile: dict[str, Any] = {"type": "profile", "attributes": {}}
    for kind, col in c.identifiers(available).items():
        value = to_json_value(row.get(col))
        if value is None or not str(value).strip():
            continue
        value = str(int(value) if isinstance(value, float) and value.is_integer() else value).strip()
        if kind == "id":
            profile["id"] = value
        else:
            problem = email_problem(value) if kind == "email" else phone_problem(value) if kind == "phone_number" else None
            if problem:
                return None, problem
            profile["attributes"][kind] = value
    if "id" not in profile and not profile["attributes"]:
        return None, "no identifier: an event needs a Klaviyo profile id, email, phone_number or external_id"
    when = _utc(row.get(c.time)) if c.time in available else None
    if when is None:
        return None, f"no time in column {c.time!r}: every event needs its time (so a re-run finds it again)"
    if when < EARLIEST or when > now + YEAR:
        return None, f"time {when.isoformat()} is before 1990 or more than a year ahead; Klaviyo refuses it"
    props: dict[str, Any] = {}
    if c.properties and c.properties in available:
        raw = to_json_value(row.get(c.properties))
        if isinstance(raw, str):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None, f"column {c.properties!r} is not a JSON object"
        if isinstance(raw, dict):
            props.update(raw)
        elif raw is not None:
            return None, f"column {c.properties!r} is not a JSON object"
    for col in available:
        if col not in c.mapped() and col not in c.exclude and not col.startswith("__"):
            value = to_json_value(row.get(col))
            if value is not None:
                props[col] = value
    if len(props) > MAX_PROPERTIES:
        return None, f"{len(props)} properties; Klaviyo takes at most {MAX_PROPERTIES} an event"
    if _long_string(props):
        return None, "a property string is over 100 KB; Klaviyo refuses it"
    attrs: dict[str, Any] = {"properties": props, "time": when.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                             "unique_id": row["__unique_id"],
                             "metric": {"data": {"type": "metric", "attributes": {"name": metric}}}}
    value = to_json_value(row.get(c.value)) if c.value and c.value in available else None
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"value {value!r} is not a number"
        attrs["value"] = value
    currency = to_json_value(row.get(c.value_currency)) if c.value_currency and c.value_currency in available else None
    if currency:
        attrs["value_currency"] = str(currency)
    if s.backfill:
        attrs["backfill"] = True
    entry = {"type": "event-bulk-create", "attributes": {"profile": {"data": profile},
                                                         "events": {"data": [{"type": "event", "attributes": attrs}]}}}
    return PendingEvent(row["__key"], row["__hash"], metric, row["__unique_id"], when.floor("s"), entry), None


@dataclass
class _Job:
    ref: str
    items: list[PendingEvent]
    confirmed: dict[str, str] = field(default_factory=dict)  # key -> Klaviyo event id
    refused: dict[str, str] = field(default_factory=dict)  # key -> Klaviyo's 400 (checked: it may already exist)

    def accepted_confirmed(self) -> bool:
        return all(e.key in self.confirmed for e in self.items if e.key not in self.refused)


class _Run:
    """One event import run."""

    def __init__(self, client: Any, warehouse: Any, settings: EventImportSettings, run_id: str, log: Any) -> None:
        self.client, self.warehouse, self.settings, self.log = client, warehouse, settings, log
        self.result = EventImportResult(run_id=run_id, dry_run=settings.dry_run)
        self.inflight: deque[_Job] = deque()
        self.metric_ids: dict[str, str] = {}

    def execute(self) -> EventImportResult:
        s, r = self.settings, self.result
        started = time.monotonic()
        ensure_tables(self.warehouse)
        available = table_columns(self.warehouse, s.table)
        missing = [col for col in (s.columns.metric, s.columns.time) if col not in available]
        if missing or not s.columns.identifiers(available):
            raise ValueError(
                f"events table {s.table!r} needs a metric column, a time column and an identifier column "
                f"(missing: {missing or 'identifier: klaviyo_profile_id, email, phone_number or external_id'}); "
                "rename the columns or set them in EventColumns"
            )
        diff = event_diff(s, available)
        counts = diff.counts(self.warehouse, s.sync_name)
        r.rows, r.duplicates, r.unchanged, r.immutable = (counts.rows, counts.rows - counts.keys, counts.unchanged,
                                                          counts.immutable)
        if r.immutable:
            self._log_immutable(diff)
        now = pd.Timestamp.now(tz="UTC")
        packer = EventPacker(s.max_job_events, s.max_job_bytes)

        def render(row: dict[str, Any]) -> PackedProfile | tuple[str, str, str]:
            event, reason = render_event(row, s, available, now)
            if event is None:
                return row["__key"], row["__hash"], str(reason)
            size = len(orjson.dumps(event.entry))
            if packer.overhead + size > s.max_job_bytes:
                return event.key, event.content_hash, f"event is {size} bytes; a job takes 5 MB"
            return PackedProfile(event.key, event.content_hash, event, size)  # type: ignore[arg-type]

        pack_rows(diff.to_send(self.warehouse, s.sync_name, s.chunk_rows), render, packer, self._submit, self._reject)
        while self.inflight:
            self._confirm(self.inflight.popleft())
        r.duration_s = time.monotonic() - started
        return r

    # -- sending -----------------------------------------------------------------------------------------
    def _reject(self, rejects: list[tuple[str, str, str]], job_ref: str | None = None) -> None:
        self.result.rejected += len(rejects)
        if not rejects or self.settings.dry_run:
            return
        now, s = state.now_utc(), self.settings
        ledger.append_rows(self.warehouse, LOG, LOG_COLUMNS,
                           [(self.result.run_id, s.sync_name, k, "rejected", reason, job_ref, now) for k, _, reason in rejects])
        ledger.upsert_rows(self.warehouse, STATE, STATE_COLUMNS,  # not again until the row changes
                           [(s.sync_name, k, h, "rejected", None, job_ref, now) for k, h, _ in rejects],
                           key=("sync_name", "event_key"))

    def _log_immutable(self, diff: EventDiff) -> None:
        if self.settings.dry_run:
            return
        keys = diff.immutable_keys(self.warehouse, self.settings.sync_name)
        now, s = state.now_utc(), self.settings
        reason = ("row changed after Klaviyo confirmed its event; events are immutable, so it was not sent again "
                  "(give the changed event a new unique_id to send it)")
        ledger.append_rows(self.warehouse, LOG, LOG_COLUMNS,
                           [(self.result.run_id, s.sync_name, k, "immutable", reason, None, now) for k in keys])
        self.log.warning(f"{len(keys)} rows of {s.table} changed after their event was confirmed; not sent again")

    def _submit(self, batch: JobBatch) -> None:
        r = self.result
        items: list[PendingEvent] = [i.profile for i in batch.items]  # type: ignore[misc]
        r.jobs += 1
        r.job_events.append(len(items))
        r.job_bytes.append(batch.body_bytes)
        r.sent += len(items)
        if self.settings.dry_run:
            return
        ref = f"{r.run_id}:{r.jobs}"
        job = _Job(ref, items)
        sent = self._post(items, job)
        r.sent -= len(job.refused)
        if sent:
            self.log.info(f"event job {ref}: {len(sent)} events, {batch.body_bytes} bytes")
            now = state.now_utc()
            ledger.upsert_rows(self.warehouse, STATE, STATE_COLUMNS,
                               [(self.settings.sync_name, e.key, e.content_hash, "sent", None, ref, now) for e in sent],
                               key=("sync_name", "event_key"))
        self.inflight.append(job)
        while len(self.inflight) >= max(1, self.settings.max_jobs_in_flight):
            self._confirm(self.inflight.popleft())

    def _post(self, items: list[PendingEvent], job: _Job) -> list[PendingEvent]:
        """POST the events; rows a 400 names (else found by bisection) are set aside, the rest sent at once.

        A set-aside event is not yet rejected: Klaviyo may refuse a request whose unique_id it already holds
        (the spec: "the request will fail"), so the read-back decides whether it is there (confirmed) or not.
        """
        isolation = send_isolating(lambda part: self.client.post(JOBS_PATH, job_body([e.entry for e in part])),
                                   items, EVENT_ROW_POINTER)
        for event, reason in isolation.rejected:
            job.refused[event.key] = reason
        return [e for part, _ in isolation.accepted for e in part]

    # -- confirming --------------------------------------------------------------------------------------
    def _metric_id(self, name: str) -> str | None:
        if name not in self.metric_ids:
            for page in self.client.paginate("/api/metrics", {"fields[metric]": "name"}):
                self.result.readback_requests += 1
                for m in page.get("data") or []:
                    self.metric_ids[(m.get("attributes") or {}).get("name")] = m["id"]
        return self.metric_ids.get(name)

    def _read_back(self, job: _Job) -> bool:
        waiting: dict[str, dict[str, PendingEvent]] = {}
        for e in job.items:
            if e.key not in job.confirmed:
                waiting.setdefault(e.metric, {})[e.unique_id] = e
        for metric, by_uid in waiting.items():
            metric_id = self._metric_id(metric)
            if metric_id is None:
                continue  # the metric appears with its first processed event
            times = [e.time for e in by_uid.values()]
            lo = min(times).strftime("%Y-%m-%dT%H:%M:%SZ")
            hi = (max(times) + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            params = {"filter": f'equals(metric_id,"{metric_id}"),greater-or-equal(datetime,{lo}),'
                                f"less-than(datetime,{hi})",
                      "fields[event]": "event_properties", "page[size]": 1000}
            for page in self.client.paginate("/api/events", params):
                self.result.readback_requests += 1
                for ev in page.get("data") or []:
                    uid = ((ev.get("attributes") or {}).get("event_properties") or {}).get("$event_id")
                    hit = by_uid.get(str(uid)) if uid is not None else None
                    if hit is not None:
                        job.confirmed[hit.key] = ev["id"]
        return job.accepted_confirmed()

    def _confirm(self, job: _Job) -> None:
        s, r = self.settings, self.result
        polled = ledger.poll_until(lambda: self._read_back(job), max_wait_s=s.max_wait_s)
        now = state.now_utc()
        log_rows, state_rows = [], []
        for e in job.items:
            if e.key in job.confirmed:
                state_rows.append((s.sync_name, e.key, e.content_hash, "confirmed", job.confirmed[e.key], job.ref, now))
                already = "Klaviyo already held it (its repeat was refused)" if e.key in job.refused else None
                log_rows.append((r.run_id, s.sync_name, e.key, "confirmed", already, job.ref, now))
            elif e.key in job.refused:
                log_rows.append((r.run_id, s.sync_name, e.key, "rejected", job.refused[e.key], job.ref, now))
                state_rows.append((s.sync_name, e.key, e.content_hash, "rejected", None, job.ref, now))
                r.rejected += 1
            else:
                log_rows.append((r.run_id, s.sync_name, e.key, "pending",
                                 f"not readable in Klaviyo after {polled.waited_s:.0f} s; sent again next run "
                                 "(Klaviyo dedupes it on unique_id)", job.ref, now))
        ledger.upsert_rows(self.warehouse, STATE, STATE_COLUMNS, state_rows, key=("sync_name", "event_key"))
        ledger.append_rows(self.warehouse, LOG, LOG_COLUMNS, log_rows)
        n_confirmed = sum(1 for row in log_rows if row[3] == "confirmed")
        r.confirmed += n_confirmed
        r.pending += sum(1 for row in log_rows if row[3] == "pending")
        len_confirmed = n_confirmed
        self.log.info(f"event job {job.ref}: {len_confirmed} of {len(job.items)} confirmed after "
                      f"{polled.polls} reads ({polled.waited_s:.1f} s)")


def run_event_import(client: Any, warehouse: Any, settings: EventImportSettings, run_id: str | None = None,
                     log: logging.Logger | Any = None) -> EventImportResult:
    """Send the new events of ``settings.table`` and confirm them; returns counts and job facts."""
    return _Run(client, warehouse, settings, run_id or uuid.uuid4().hex, log or logging.getLogger(__name__)).execute()


def event_import_description(events_table: str) -> str:
    """What ``klaviyo/event_import`` does, for its asset description."""
    return (f"Sends new rows of `{events_table}` to Klaviyo as events (once each, confirmed by reading them back); "
            f"outcomes in {LOG}, sent events in {STATE}.")


def build_event_import_asset(events_table: str, columns: EventColumns | None = None,
        key: str = "klaviyo/event_import", sync_name: str = "event_import",
        target: ActivationTarget | None = None) -> AssetsDefinition:
    """The ``klaviyo/event_import`` asset reading ``events_table`` (resources: ``target``'s)."""
    columns = columns or EventColumns()

    def run(client: Any, warehouse: Any, config: EventImportConfig, context: AssetExecutionContext) -> EventImportResult:
        settings = EventImportSettings(table=events_table, columns=columns, sync_name=sync_name, **config.model_dump())
        return run_event_import(client, warehouse, settings, context.run.run_id, context.log)

    unconfirmed = ("{pending} events were sent but not readable in Klaviyo within {max_wait_s:.0f} s; they are sent "
                   "again next run (Klaviyo dedupes them on unique_id). Raise max_wait_s if Klaviyo is slow today")

    return build_activation_run_asset(key, events_table, event_import_description(events_table), target,
                                      EventImportConfig, run, unconfirmed)
