"""Profile bulk import jobs: pack, submit, poll to the real outcome, read import errors.

Shared by every asset that imports profiles: :func:`submit_tracked` sends a batch through
:func:`isolate.send_isolating` (rows Klaviyo refuses are isolated, the rest sent at once) and writes each
job to the ledger (``state.record_job``) before its answer is used; :func:`resume_open_jobs` polls the
ledger's unfinished jobs at the start of the next run; :func:`job_verdict` says which rows Klaviyo confirmed.

:class:`JobPacker` fills jobs up to Klaviyo's caps (10,000 profiles and 5 MB of serialized body,
measured on the exact bytes orjson produces); :func:`submit_job` POSTs one
``profile-bulk-import-job``; :func:`wait_for_job` polls it with capped exponential backoff until it
is complete or cancelled or the bound runs out; :func:`import_errors` pages through its errors and
:func:`failed_identities` matches them back to rows through their ``original_payload``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from klaviyo_dagster.activate import state
from klaviyo_dagster.activate.isolate import IMPORT_ROW_POINTER, Isolation, error_reason, send_isolating
from klaviyo_dagster.activate.render import profile_identifiers
from klaviyo_dagster.client import KlaviyoNotFoundError

MAX_JOB_PROFILES = 10_000
# Klaviyo documents "5 MB"; we stay under the decimal reading, which is the stricter one.
MAX_JOB_BYTES = 5_000_000
JOBS_PATH = "/api/profile-bulk-import-jobs"
TERMINAL_STATUSES = ("complete", "cancelled")


@dataclass
class PackedProfile:
    """One validated row ready to send: its identity, content hash, profile resource and size."""

    identity: str
    content_hash: str
    profile: dict[str, Any]
    size: int


@dataclass
class JobBatch:
    """The profiles of one job and the exact size of the request body they make."""

    items: list[PackedProfile]
    body_bytes: int


def job_body(profiles: list[dict[str, Any]], list_id: str | None = None) -> dict[str, Any]:
    """The JSON:API body of POST /api/profile-bulk-import-jobs."""
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": profiles}},
    }
    if list_id:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return {"data": data}


class JobPacker:
    """Accumulates profiles and hands back a full :class:`JobBatch` when the next one would overflow."""

    def __init__(
        self,
        max_profiles: int = MAX_JOB_PROFILES,
        max_bytes: int = MAX_JOB_BYTES,
        list_id: str | None = None,
    ) -> None:
        if not 1 <= max_profiles <= MAX_JOB_PROFILES:
            raise ValueError(f"max_profiles must be between 1 and {MAX_JOB_PROFILES}, got {max_profiles}")
        if not 1 <= max_bytes <= MAX_JOB_BYTES:
            raise ValueError(f"max_bytes must be between 1 and {MAX_JOB_BYTES}, got {max_bytes}")
        self.max_profiles = max_profiles
        self.max_bytes = max_bytes
        # Body bytes with an empty profile array; each profile adds its size plus one comma.
        self.overhead = len(orjson.dumps(job_body([], list_id)))
        self._items: list[PackedProfile] = []
        self._bytes = self.overhead

    def _size_with(self, item: PackedProfile) -> int:
        return self._bytes + item.size + (1 if self._items else 0)

    def add(self, item: PackedProfile) -> JobBatch | None:
        """Add one profile; returns the previous batch when this one did not fit in it."""
        if self.overhead + item.size > self.max_bytes:
            raise ValueError(
                f"profile {item.identity} is {item.size} bytes and cannot fit a {self.max_bytes}-byte job"
            )
        full = None
        if self._items and (len(self._items) >= self.max_profiles or self._size_with(item) > self.max_bytes):
            full = self.flush()
        self._bytes = self._size_with(item)
        self._items.append(item)
        return full

    def flush(self) -> JobBatch | None:
        """The batch collected so far (None when empty), and start a new one."""
        if not self._items:
            return None
        batch = JobBatch(self._items, self._bytes)
        self._items, self._bytes = [], self.overhead
        return batch


def pack(items: Iterable[PackedProfile], **kwargs: Any) -> Iterator[JobBatch]:
    """Pack a stream of profiles into jobs (convenience over :class:`JobPacker`)."""
    packer = JobPacker(**kwargs)
    for item in items:
        full = packer.add(item)
        if full:
            yield full
    last = packer.flush()
    if last:
        yield last


def submit_job(client: Any, profiles: list[dict[str, Any]], list_id: str | None = None) -> str:
    """POST one bulk import job; returns its id."""
    doc = client.post(JOBS_PATH, job_body(profiles, list_id))
    try:
        return str(doc["data"]["id"])
    except (TypeError, KeyError) as exc:
        raise RuntimeError(
            f"POST {JOBS_PATH} answered without a job id ({str(doc)[:200]}); cannot track the import"
        ) from exc


@dataclass
class JobOutcome:
    """What Klaviyo finally said about a job (status 'timeout' when it did not finish in time)."""

    job_id: str
    status: str
    total_count: int = 0
    completed_count: int = 0
    failed_count: int = 0
    waited_s: float = 0.0
    polls: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)


def wait_for_job(
    client: Any,
    job_id: str,
    *,
    max_wait_s: float = 900.0,
    first_poll_s: float = 0.2,
    max_poll_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobOutcome:
    """Poll GET /api/profile-bulk-import-jobs/{id} until complete or cancelled, at most ``max_wait_s``."""
    start = clock()
    delay = first_poll_s
    polls = 0
    while True:
        doc = client.get(f"{JOBS_PATH}/{job_id}")
        polls += 1
        attrs = (doc or {}).get("data", {}).get("attributes", {}) or {}
        status = str(attrs.get("status", "unknown"))
        waited = clock() - start
        if status in TERMINAL_STATUSES or waited >= max_wait_s:
            return JobOutcome(
                job_id=job_id,
                status=status if status in TERMINAL_STATUSES else "timeout",
                total_count=int(attrs.get("total_count") or 0),
                completed_count=int(attrs.get("completed_count") or 0),
                failed_count=int(attrs.get("failed_count") or 0),
                waited_s=waited,
                polls=polls,
                attributes=attrs,
            )
        sleep(min(delay, max(0.0, max_wait_s - waited)))
        delay = min(delay * 2, max_poll_s)


def import_errors(client: Any, job_id: str) -> Iterator[dict[str, Any]]:
    """Every import error of a job (attributes dicts), page by page (100 a page)."""
    for page in client.paginate(f"{JOBS_PATH}/{job_id}/import-errors", {"page[size]": 100}):
        for err in page.get("data") or []:
            yield err.get("attributes") or {}


class IdentifierIndex:
    """Maps identifier values of a job's profiles back to row identities."""

    def __init__(self, items: Iterable[PackedProfile]) -> None:
        self._index: dict[tuple[str, str], str] = {}
        for item in items:
            for kind, value in profile_identifiers(item.profile).items():
                self._index.setdefault((kind, value), item.identity)

    def identity_of(self, payload: Mapping[str, Any] | None) -> str | None:
        """The row identity an import error's original_payload refers to, or None."""
        if not isinstance(payload, Mapping):
            return None
        for kind, value in profile_identifiers(payload).items():
            identity = self._index.get((kind, value))
            if identity is not None:
                return identity
        return None


def failed_identities(
    errors: Iterable[Mapping[str, Any]], items: Iterable[PackedProfile]
) -> tuple[dict[str, str], list[str]]:
    """({identity: reason} for errors matched to rows, [reasons of errors matched to no row])."""
    index = IdentifierIndex(items)
    failed: dict[str, str] = {}
    unmatched: list[str] = []
    for err in errors:
        reason = error_reason(err)
        identity = index.identity_of(err.get("original_payload"))
        if identity is None:
            unmatched.append(reason)
        else:
            failed.setdefault(identity, reason)
    return failed, unmatched


def job_profile_identifiers(client: Any, job_id: str) -> set[tuple[str, str]]:
    """(kind, value) of every identifier of the profiles a completed job created or updated, page by page."""
    params = {"page[size]": 100, "fields[profile]": "email,phone_number,external_id"}
    seen: set[tuple[str, str]] = set()
    for page in client.paginate(f"{JOBS_PATH}/{job_id}/profiles", params):
        for item in page.get("data") or []:
            seen.update(profile_identifiers({"id": item.get("id"), **(item.get("attributes") or {})}).items())
    return seen


@dataclass
class JobVerdict:
    """Each row of a finished job: imported (Klaviyo confirmed), failed (with reason) or pending (unknown)."""

    imported: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # reasons of import errors that named no row
    checked_profiles: bool = False


def job_verdict(client: Any, outcome: JobOutcome, items: list[PackedProfile]) -> JobVerdict:
    """Sort a finished job's rows by what Klaviyo confirmed.

    Import errors are matched to rows by their ``original_payload`` identifiers. When every failure
    Klaviyo counted is matched, the other rows are imported. When not (a null ``original_payload``, an
    identifier Klaviyo normalised), the job's profiles are read: rows among them are imported, rows an
    unmatched error points at (``source.pointer`` .../data/N) are failed, the rest stay pending (sent again
    next run), never counted done on a guess.
    """
    verdict = JobVerdict()
    if outcome.status == "cancelled":
        verdict.pending = {i.identity: f"job {outcome.job_id} was cancelled by Klaviyo; sent again next run"
                           for i in items}
        return verdict
    errors = list(import_errors(client, outcome.job_id)) if (
        outcome.failed_count or "failed_count" not in outcome.attributes) else []
    index = IdentifierIndex(items)
    pointed: dict[str, str] = {}
    for err in errors:
        reason = error_reason(err)
        identity = index.identity_of(err.get("original_payload"))
        if identity is not None:
            verdict.failed.setdefault(identity, reason)
            continue
        verdict.unmatched.append(reason)
        source = err.get("source") if isinstance(err.get("source"), Mapping) else {}
        match = IMPORT_ROW_POINTER.match(str(source.get("pointer") or ""))
        if match and int(match.group(1)) < len(items):
            pointed.setdefault(items[int(match.group(1))].identity, reason)
    if len(verdict.failed) >= outcome.failed_count and not verdict.unmatched:
        verdict.imported = [i.identity for i in items if i.identity not in verdict.failed]
        return verdict
    verdict.checked_profiles = True
    present = job_profile_identifiers(client, outcome.job_id)
    for item in items:
        if item.identity in verdict.failed:
            continue
        if any(pair in present for pair in profile_identifiers(item.profile).items()):
            verdict.imported.append(item.identity)
        elif item.identity in pointed:
            verdict.failed[item.identity] = pointed[item.identity]
        else:
            verdict.pending[item.identity] = (
                f"job {outcome.job_id} reported {outcome.failed_count} failed rows but only "
                f"{len(verdict.failed)} import errors could be matched to rows, and this row is not among the "
                "job's profiles: its outcome is unknown, it is sent again next run")
    return verdict


def submit_tracked(client: Any, warehouse: Any, sync_name: str, run_id: str, items: list[PackedProfile],
                   list_id: str | None = None, log: Any = None) -> Isolation[PackedProfile]:
    """Submit ``items`` as bulk import job(s), isolating rows Klaviyo refuses; every job is in the ledger
    (open) before this returns. ``accepted`` holds (rows, job id) per job."""

    def send(part: list[PackedProfile]) -> str:
        job_id = submit_job(client, [i.profile for i in part], list_id)
        state.record_job(warehouse, job_id, sync_name, run_id,
                         [(i.identity, i.content_hash, orjson.dumps(i.profile).decode()) for i in part], list_id)
        if log is not None:
            log.info(f"submitted profile import job {job_id}: {len(part)} profiles")
        return job_id

    isolation = send_isolating(send, items, IMPORT_ROW_POINTER)
    if log is not None and isolation.rejected:
        log.warning(f"Klaviyo refused {len(isolation.rejected)} rows of a {len(items)}-row job request "
                    f"({isolation.extra_calls} extra calls to isolate them); the rest were sent")
    return isolation


def ledger_items(warehouse: Any, job_id: str) -> list[PackedProfile]:
    """The rows of a ledger job, as sent."""
    return [PackedProfile(identity, content_hash, orjson.loads(profile), len(profile))
            for identity, content_hash, profile in state.job_rows(warehouse, job_id)]


def resume_open_jobs(client: Any, warehouse: Any, sync_name: str, max_wait_s: float
                     ) -> Iterator[tuple[str, list[PackedProfile], JobOutcome | None]]:
    """(job id, rows, outcome) of every open ledger job of ``sync_name``, polled up to ``max_wait_s``;
    outcome None when Klaviyo no longer knows the job (vanished: its rows must be sent again)."""
    for job_id, _ in state.open_jobs(warehouse, sync_name):
        items = ledger_items(warehouse, job_id)
        try:
            outcome: JobOutcome | None = wait_for_job(client, job_id, max_wait_s=max_wait_s)
        except KlaviyoNotFoundError:
            outcome = None
        yield job_id, items, outcome
