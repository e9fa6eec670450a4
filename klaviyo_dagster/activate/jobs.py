"""Profile bulk import jobs: pack, submit, poll to the real outcome, read import errors.

Shared by every asset that imports profiles: :func:`submit_tracked` sends a batch through
:func:`isolate.send_isolating` (rows Klaviyo refuses are isolated, the rest sent at once), writing each
job to the ledger before its POST (``state.begin_submission``) and its id once Klaviyo answers;
:func:`resume_open_jobs` resolves submissions an earlier run left without an answer and polls the
ledger's unfinished jobs at the start of the next run; :func:`job_verdict` says which rows Klaviyo confirmed.

A POST whose outcome is unknown (the client raises ``KlaviyoUnknownOutcomeError``: a reset or timeout
after sending, a 5xx, a cut answer; the client never repeats this create itself) is resolved here:
:func:`locate_job` looks for the job among Klaviyo's recent ones (``sort=-created_at``, created since the
submission, same ``total_count``, same list, not already in the ledger), and once more after
``unknown_wait_s`` (a request still in flight at Klaviyo); found, the job is adopted (polled, never sent
again, its rows confirmed against the job's profiles); surely absent, the rows are sent again.

:class:`JobPacker` fills jobs up to Klaviyo's caps (10,000 profiles and 5 MB of serialized body,
measured on the exact bytes orjson produces); :func:`submit_job` POSTs one
``profile-bulk-import-job``; :func:`wait_for_job` polls it with capped exponential backoff until it
is complete or cancelled or the bound runs out; :func:`import_errors` pages through its errors and
:func:`failed_identities` matches them back to rows through their ``original_payload``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import pandas as pd

from klaviyo_dagster.activate import state
from klaviyo_dagster.activate.isolate import IMPORT_ROW_POINTER, Isolation, error_reason, send_isolating
from klaviyo_dagster.activate.render import profile_identifiers
from klaviyo_dagster.client import KlaviyoError, KlaviyoNotFoundError, KlaviyoUnknownOutcomeError

MAX_JOB_PROFILES = 10_000
# Klaviyo documents "5 MB"; we stay under the decimal reading, which is the stricter one.
MAX_JOB_BYTES = 5_000_000
JOBS_PATH = "/api/profile-bulk-import-jobs"
TERMINAL_STATUSES = ("complete", "cancelled")
# After an unknown outcome: how long a job may still appear (a request Klaviyo was still working on)
# before the rows are sent again, how far Klaviyo's clock may be from ours, how many pages of recent jobs
# (100 a page, newest first) are searched.
UNKNOWN_WAIT_S = 30.0
CLOCK_SKEW_S = 900.0
MAX_JOB_LIST_PAGES = 10


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
    """POST one bulk import job; returns its id (an answer without one is an unknown outcome)."""
    doc = client.post(JOBS_PATH, job_body(profiles, list_id))
    try:
        return str(doc["data"]["id"])
    except (TypeError, KeyError):
        raise KlaviyoUnknownOutcomeError(
            f"POST {JOBS_PATH}: outcome unknown: Klaviyo accepted it but answered without a job id "
            f"({str(doc)[:200]}); the job is looked up among the recent ones before the rows are sent again"
        ) from None


def _created(attrs: Mapping[str, Any]) -> pd.Timestamp | None:
    try:
        stamp = pd.Timestamp(attrs.get("created_at"))
    except (TypeError, ValueError):
        return None
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def _job_list_ids(client: Any, job_id: str) -> set[str]:
    doc = client.get(f"{JOBS_PATH}/{job_id}/relationships/lists")
    return {str(item.get("id")) for item in (doc.get("data") or []) if isinstance(item, dict)}


def find_submitted_job(client: Any, total: int, list_id: str | None, since: datetime | pd.Timestamp,
                       exclude: set[str]) -> str | None:
    """The id of a job that a POST of ``total`` profiles (to list ``list_id``) made at ``since`` may have
    created, or None: newest first back to ``since`` (less ``CLOCK_SKEW_S``), skipping ``exclude`` (jobs
    of the ledger), with ``total_count`` equal to ``total`` (else at most it, for a Klaviyo that counts
    only valid rows) and exactly that list. Of several, an exact count first, then the one created
    nearest ``since`` (the first attempt's job, not a later one nor an older job of someone else)."""
    since = pd.Timestamp(since)
    floor = since - timedelta(seconds=CLOCK_SKEW_S)
    params = {"sort": "-created_at", "page[size]": 100,
              "fields[profile-bulk-import-job]": "total_count,created_at"}
    candidates: list[tuple[int, float, str]] = []
    pages = client.paginate(JOBS_PATH, params)
    try:
        for number, page in enumerate(pages, 1):
            older = False
            for job in page.get("data") or []:
                attrs = job.get("attributes") or {}
                created = _created(attrs)
                if created is not None and created < floor:
                    older = True
                    break
                count = int(attrs.get("total_count") or 0)
                if str(job.get("id")) in exclude or not 0 < count <= total:
                    continue
                distance = abs((created - since).total_seconds()) if created is not None else CLOCK_SKEW_S
                candidates.append((0 if count == total else 1, distance, str(job["id"])))
            if older or number >= MAX_JOB_LIST_PAGES:
                break
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()
    wanted = {list_id} if list_id else set()
    for _, _, job_id in sorted(candidates):
        if _job_list_ids(client, job_id) == wanted:
            return job_id
    return None


def locate_job(client: Any, total: int, list_id: str | None, since: datetime | pd.Timestamp, exclude: set[str],
               wait_s: float, sleep: Callable[[float], None] = time.sleep) -> str | None:
    """:func:`find_submitted_job` now and, when absent, again after ``wait_s`` (a request still in flight
    at Klaviyo may create its job late); None means no job appeared: the rows may be sent again."""
    found = find_submitted_job(client, total, list_id, since, exclude)
    if found is None and wait_s > 0:
        sleep(wait_s)
        found = find_submitted_job(client, total, list_id, since, exclude)
    return found


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
    adopted: bool = False  # found after an unknown outcome: rows are confirmed against the job's profiles


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


def poll_job(client: Any, warehouse: Any, job_id: str, *, max_wait_s: float) -> JobOutcome:
    """:func:`wait_for_job` for a ledger job, marked ``adopted`` when the ledger says so."""
    outcome = wait_for_job(client, job_id, max_wait_s=max_wait_s)
    outcome.adopted = state.is_adopted(warehouse, job_id)
    return outcome


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
    if len(verdict.failed) >= outcome.failed_count and not verdict.unmatched and not outcome.adopted:
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
        elif outcome.adopted:
            verdict.pending[item.identity] = (
                f"job {outcome.job_id} was found after the POST's answer was lost and this row is not among its "
                "profiles (the job may not be ours): its outcome is unknown, it is sent again next run")
        else:
            verdict.pending[item.identity] = (
                f"job {outcome.job_id} reported {outcome.failed_count} failed rows but only "
                f"{len(verdict.failed)} import errors could be matched to rows, and this row is not among the "
                "job's profiles: its outcome is unknown, it is sent again next run")
    return verdict


def _submit_guarded(client: Any, warehouse: Any, ticket: str, since: pd.Timestamp, part: list[PackedProfile],
                    list_id: str | None, log: Any, unknown_wait_s: float, tally: Counter) -> str:
    """POST the job of ledger submission ``ticket``; after an unknown outcome find it or send it again
    (bounded by the client's ``max_retries``). Returns the job id, recorded 'open' in the ledger."""
    attempts = 1 + max(0, int(getattr(client, "max_retries", 3)))
    for attempt in range(1, attempts + 1):
        try:
            job_id = submit_job(client, [i.profile for i in part], list_id)
        except KlaviyoUnknownOutcomeError as exc:
            tally["unknown_outcomes"] += 1
            state.mark_unknown(warehouse, ticket, str(exc)[:2000])
            found = locate_job(client, len(part), list_id, since, state.known_job_ids(warehouse), unknown_wait_s)
            if found is not None:
                tally["adopted_jobs"] += 1
                state.confirm_submission(warehouse, ticket, found, adopted=True,
                                         note=f"adopted after an unknown outcome: {str(exc)[:500]}")
                _log(log, "warning", f"the answer to a {len(part)}-profile import job POST was lost ({exc}); "
                     f"found it at Klaviyo as job {found}: polling it, not sending the rows again")
                return found
            if attempt < attempts:
                tally["resent_jobs"] += 1
                _log(log, "warning", f"the answer to a {len(part)}-profile import job POST was lost ({exc}); no "
                     f"such job appeared at Klaviyo within {unknown_wait_s:g} s: sending the rows again "
                     f"(attempt {attempt + 1} of {attempts})")
            continue
        except KlaviyoError:
            state.drop_submission(warehouse, ticket)  # Klaviyo refused it (400, 401, 429 spent): no job exists
            raise
        state.confirm_submission(warehouse, ticket, job_id)
        return job_id
    raise KlaviyoUnknownOutcomeError(
        f"POST {JOBS_PATH}: outcome unknown {attempts} times for a {len(part)}-profile job, and no job appeared "
        f"at Klaviyo: its rows stay in the ledger ({state.IMPORT_JOBS}, status 'unknown'); the next run looks "
        "for the job again before sending them. Check Klaviyo's status and the network, then re-run")


def _log(log: Any, level: str, message: str) -> None:
    if log is not None and message:
        getattr(log, level)(message)


def submit_tracked(client: Any, warehouse: Any, sync_name: str, run_id: str, items: list[PackedProfile],
                   list_id: str | None = None, log: Any = None, *, unknown_wait_s: float = UNKNOWN_WAIT_S,
                   tally: Counter | None = None) -> Isolation[PackedProfile]:
    """Submit ``items`` as bulk import job(s), isolating rows Klaviyo refuses; every job is in the ledger
    before its POST and 'open' before this returns. ``accepted`` holds (rows, job id) per job. ``tally``
    counts ``unknown_outcomes``, ``adopted_jobs`` and ``resent_jobs``."""
    tally = tally if tally is not None else Counter()

    def send(part: list[PackedProfile]) -> str:
        rows = [(i.identity, i.content_hash, orjson.dumps(i.profile).decode()) for i in part]
        ticket, since = state.begin_submission(warehouse, sync_name, run_id, rows, list_id)
        job_id = _submit_guarded(client, warehouse, ticket, since, part, list_id, log, unknown_wait_s, tally)
        _log(log, "info", f"submitted profile import job {job_id}: {len(part)} profiles")
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


def resolve_submissions(client: Any, warehouse: Any, sync_name: str, unknown_wait_s: float = UNKNOWN_WAIT_S,
                        log: Any = None) -> Counter:
    """Settle submissions an earlier run left without an answer ('sending': it stopped during the POST;
    'unknown'): the job found at Klaviyo is adopted (then polled as open), else the rows leave the ledger
    and go again. Waits until ``unknown_wait_s`` after the submission before deciding a job is absent."""
    tally: Counter = Counter()
    for ticket, list_id, since, n in state.unresolved_submissions(warehouse, sync_name):
        age = (state.now_utc() - since).total_seconds()
        found = locate_job(client, n, list_id, since, state.known_job_ids(warehouse), max(0.0, unknown_wait_s - age))
        if found is not None:
            tally["adopted_jobs"] += 1
            state.confirm_submission(warehouse, ticket, found, adopted=True,
                                     note="adopted: found at Klaviyo after an earlier run lost the POST's answer")
            _log(log, "info", f"an earlier run's {n}-profile import job POST had no answer; found it as job {found}")
        else:
            tally["not_created"] += 1
            state.drop_submission(warehouse, ticket, note="no job appeared at Klaviyo for this POST: rows sent again")
            _log(log, "info", f"an earlier run's {n}-profile import job POST had no answer and created no job; "
                 "its rows are sent again")
    return tally


def resume_open_jobs(client: Any, warehouse: Any, sync_name: str, max_wait_s: float, *,
                     unknown_wait_s: float = UNKNOWN_WAIT_S, log: Any = None
                     ) -> Iterator[tuple[str, list[PackedProfile], JobOutcome | None]]:
    """(job id, rows, outcome) of every open ledger job of ``sync_name`` (after :func:`resolve_submissions`),
    polled up to ``max_wait_s``; outcome None when Klaviyo no longer knows the job (vanished: its rows
    must be sent again)."""
    resolve_submissions(client, warehouse, sync_name, unknown_wait_s, log)
    for job_id, _ in state.open_jobs(warehouse, sync_name):
        items = ledger_items(warehouse, job_id)
        try:
            outcome: JobOutcome | None = poll_job(client, warehouse, job_id, max_wait_s=max_wait_s)
        except KlaviyoNotFoundError:
            outcome = None
        yield job_id, items, outcome
