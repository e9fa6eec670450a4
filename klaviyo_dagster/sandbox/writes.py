"""Write endpoints of the sandbox: list creation, list membership, profile bulk import jobs.

Limits as Klaviyo documents them: a bulk import job takes at most 10,000 profiles and 5 MB of payload
(100 KB per profile); the good rows create or update profiles when the job completes (identity: `id`, else
email, then phone number, then external id). List membership calls take at most 1,000 profile ids.
Where Klaviyo's behaviour is unknown, the sandbox's switches (semantics.py) decide:
`import_invalid_row` (an invalid row: the whole POST a 400 pointing at the row(s) or at none, or 202 and an
import error with `original_payload`), `identity_conflict` (identifiers of different profiles: the row
fails with `duplicate_profile`, or is merged), `unknown_import_id` (a row `id` naming no profile: the row
fails, or is identified by its other identifiers), `import_error_payload` (import errors carry the row
as sent, or null), `list_add_unknown_id` (a membership call naming an
unknown profile id: 400 for the call, or the id is ignored), `import_job_seconds` (job duration),
`import_job_total_count` (a job's `total_count`: every posted profile, or only those not refused at once).
"""

from __future__ import annotations

from typing import Any

import orjson
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from klaviyo_dagster.sandbox.api import ReadApi, Request, not_found
from klaviyo_dagster.sandbox.ids import det_uuid
from klaviyo_dagster.sandbox.paging import offset_page
from klaviyo_dagster.sandbox.params import ApiError, bad
from klaviyo_dagster.sandbox.render import collection, rel, resource, single
from klaviyo_dagster.sandbox.store import IDENTITY_FIELDS, Job, Store
from klaviyo_dagster.sandbox.timeline import iso

MAX_JOB_PROFILES = 10_000
MAX_JOB_BYTES = 5 * 1024 * 1024
MAX_PROFILE_BYTES = 100 * 1024
MAX_MEMBERS_PER_CALL = 1_000
JOB_TTL_MS = 7 * 86_400_000


def parse_body(req: Request) -> Any:
    if not req.body:
        raise bad("this endpoint needs a JSON:API request body", pointer="/data")
    try:
        return orjson.loads(req.body)
    except orjson.JSONDecodeError as e:
        raise bad(f"request body is not valid JSON: {e}", pointer="/") from None


def _data(body: Any, rtype: str, many: bool = False) -> Any:
    data = body.get("data") if isinstance(body, dict) else None
    if many:
        if not isinstance(data, list):
            raise bad("'data' must be a list of {\"type\": \"profile\", \"id\": ...} objects", pointer="/data")
        for k, item in enumerate(data):
            if not isinstance(item, dict) or item.get("type") != rtype or not isinstance(item.get("id"), str):
                raise bad(f"data[{k}] must be {{\"type\": \"{rtype}\", \"id\": \"...\"}}", pointer=f"/data/{k}")
        return data
    if not isinstance(data, dict) or data.get("type") != rtype:
        raise bad(f"'data' must be an object with \"type\": \"{rtype}\"", pointer="/data/type")
    if not isinstance(data.get("attributes"), dict):
        raise bad("'data.attributes' must be an object", pointer="/data/attributes")
    return data


ROW_TITLES = {"profile_too_large": "Profile too large.", "duplicate_profile": "Conflicting profile identifiers.",
              "not_found": "Profile not found."}


def row_error(k: int, code: str, detail: str, row: Any, field: str | None = None) -> dict[str, Any]:
    """An import error for row `k`; `field` "id" points at the row's id, others at one of its attributes."""
    pointer = f"/data/attributes/profiles/data/{k}"
    if field:
        pointer += "/id" if field == "id" else f"/attributes/{field}"
    return {"code": code, "title": ROW_TITLES.get(code, "Invalid profile."),
            "detail": detail, "source": {"pointer": pointer}, "original_payload": row}


class RowErrors(ApiError):
    """A 400 for a whole request carrying one JSON:API error per bad row (import_invalid_row=request_400)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(400, "invalid", errors[0]["detail"])
        self.errors = errors

    def doc(self) -> dict[str, Any]:
        out = []
        for e in self.errors:
            one = ApiError(400, e["code"], e["detail"], pointer=e["source"]["pointer"], title=e["title"])
            out.append(one.error())
        return {"errors": out}


def identifier_problem(attrs: dict[str, Any]) -> tuple[str, str] | None:
    """(field, detail) when `email` or `phone_number` in `attrs` is not valid (E.164 for phones), else None."""
    email, phone = attrs.get("email"), attrs.get("phone_number")
    if email is not None:
        try:
            validate_email(email, check_deliverability=False)
        except (EmailNotValidError, TypeError) as e:
            return "email", f"Invalid email address {email!r}: {e}"
    if phone is not None:
        try:
            ok = phonenumbers.is_valid_number(phonenumbers.parse(phone, None))
            ok = ok and phonenumbers.format_number(phonenumbers.parse(phone, None),
                                                   phonenumbers.PhoneNumberFormat.E164) == phone
        except (phonenumbers.NumberParseException, TypeError):
            ok = False
        if not ok:
            return "phone_number", (f"Invalid phone number {phone!r}: phone numbers must be valid and "
                                    "in E.164 format, e.g. +14155550123")
    return None


def check_row(k: int, row: Any) -> dict[str, Any] | None:
    """An import error for row `k`, or None when the row can be imported."""
    if not isinstance(row, dict) or row.get("type") != "profile" or not isinstance(row.get("attributes"), dict):
        return row_error(k, "invalid", "each profile must be {\"type\": \"profile\", \"attributes\": {...}}", row)
    if len(orjson.dumps(row)) > MAX_PROFILE_BYTES:
        return row_error(k, "profile_too_large", "a profile may be at most 100 KB; trim its properties", row)
    attrs = row["attributes"]
    email, phone = attrs.get("email"), attrs.get("phone_number")
    problem = identifier_problem(attrs)
    if problem is not None:
        return row_error(k, "invalid", problem[1], row, problem[0])
    if not (row.get("id") or email or phone or attrs.get("external_id") or attrs.get("_kx")):
        return row_error(k, "invalid", "a profile needs an identifier: id, email, phone_number, external_id "
                         "or _kx", row)
    return None


class WriteApi:
    """Handlers for the write operations and the bulk import job reads."""

    def __init__(self, store: Store, reads: ReadApi) -> None:
        self.store = store
        self.reads = reads
        self.base_url = reads.base_url
        store.row_check = self.identity_error

    # ---- lists ----------------------------------------------------------------------------------------
    def create_list(self, req: Request) -> dict[str, Any]:
        data = _data(parse_body(req), "list")
        name = data["attributes"].get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad("a list needs a non-empty 'name'", pointer="/data/attributes/name")
        opt_in = data["attributes"].get("opt_in_process")
        if opt_in not in (None, "single_opt_in", "double_opt_in"):
            raise bad("opt_in_process must be 'single_opt_in' or 'double_opt_in'",
                      pointer="/data/attributes/opt_in_process")
        st = self.store.create_list(name, opt_in)
        rec = self.reads.group_rec(st)
        return single(self.reads.simple_resource(rec, req.params), self.base_url, req.path, req.params.raw)

    def change_members(self, req: Request, add: bool) -> None:
        st = self.store.group("list", req.ids["id"])
        if st is None:
            raise not_found("list", req.ids["id"])
        items = _data(parse_body(req), "profile", many=True)
        if len(items) > MAX_MEMBERS_PER_CALL:
            raise bad(f"at most {MAX_MEMBERS_PER_CALL} profiles per call, got {len(items)}; split the ids "
                      "into chunks of 1,000", pointer="/data")
        pids = [it["id"] for it in items]
        missing = [pid for pid in pids if self.store.profile(pid) is None]
        if missing and self.store.semantics.get("list_add_unknown_id") == "ignore":
            pids = [pid for pid in pids if self.store.profile(pid) is not None]  # silently dropped
        elif missing:
            raise bad(f"{len(missing)} profile id(s) do not exist in this account, e.g. {missing[0]!r}; "
                      "import the profiles first", pointer="/data")
        self.store.change_members(st, pids, add)
        return None

    # ---- bulk import jobs -----------------------------------------------------------------------------
    def create_job(self, req: Request) -> dict[str, Any]:
        if len(req.body) > MAX_JOB_BYTES:
            raise ApiError(413, "too_large", f"bulk import payload is {len(req.body)} bytes; the limit is 5 MB "
                           "per request: send fewer profiles per job")
        data = _data(parse_body(req), "profile-bulk-import-job")
        profiles = data["attributes"].get("profiles")
        rows = profiles.get("data") if isinstance(profiles, dict) else None
        if not isinstance(rows, list):
            raise bad("data.attributes.profiles.data must be a list of profiles",
                      pointer="/data/attributes/profiles/data")
        if len(rows) > MAX_JOB_PROFILES:
            raise bad(f"a bulk import job takes at most {MAX_JOB_PROFILES} profiles, got {len(rows)}; "
                      "split them into several jobs", pointer="/data/attributes/profiles/data")
        if not rows:
            raise bad("a bulk import job needs at least one profile", pointer="/data/attributes/profiles/data")
        list_ids = []
        lists_rel = (data.get("relationships") or {}).get("lists")
        if lists_rel is not None:
            for k, item in enumerate((lists_rel or {}).get("data") or []):
                if not isinstance(item, dict) or item.get("type") != "list":
                    raise bad("relationships.lists.data items must be {\"type\": \"list\", \"id\": ...}",
                              pointer=f"/data/relationships/lists/data/{k}")
                if self.store.group("list", item.get("id")) is None:
                    raise not_found("list", str(item.get("id")))
                list_ids.append(item["id"])
        good, index, errors = [], [], []
        mode = self.store.semantics.get("import_invalid_row")
        with self.store.lock:
            for k, row in enumerate(rows):
                err = check_row(k, row)
                if err is None and mode != "job_error":
                    err = self.identity_error(k, row)  # the job would refuse it: so does the request
                if err is None:
                    good.append(row)
                    index.append(k)
                else:
                    errors.append(err)
        if errors and mode == "request_400":
            raise RowErrors(errors)
        if errors and mode == "request_400_first":
            raise RowErrors(errors[:1])
        if errors and mode == "request_400_no_pointer":
            raise bad(f"{len(errors)} of the {len(rows)} profiles are invalid; fix them and send the job again",
                      pointer="/data/attributes/profiles")
        job = self.store.create_job(good, errors, list_ids, index)
        job.sent = [_identifiers(row) for row in rows]
        return single(self.job_resource(job, req), self.base_url, req.path + job.id + "/", {})

    def identity_error(self, k: int, row: dict[str, Any]) -> dict[str, Any] | None:
        """The import error for row `k` under identity_conflict / unknown_import_id, or None (also the
        store's `row_check` at job completion, when the account may have changed since the POST)."""
        attrs = row.get("attributes") or {}
        pid = row.get("id") or None
        sem = self.store.semantics
        if pid is not None and self.store.profile(pid) is None:
            if sem.get("unknown_import_id") == "error":
                return row_error(k, "not_found", f"profile id {pid!r} does not exist in this account; send the "
                                 "row without 'id' to identify it by email, phone number or external id",
                                 row, "id")
            pid = None
        if sem.get("identity_conflict") != "error":
            return None
        owners = {"id": pid} if pid else {}
        for f in IDENTITY_FIELDS:
            hits = self.store.lookup(f, attrs.get(f)) if attrs.get(f) else []
            if hits:
                owners[f] = hits[0]
        if len(set(owners.values())) > 1:
            said = ", ".join(f"{f} -> {p}" for f, p in owners.items())
            return row_error(k, "duplicate_profile", f"the row's identifiers belong to different profiles ({said}); "
                             "send only the identifiers of one profile", row)
        return None

    def job_resource(self, job: Job, req: Request) -> dict[str, Any]:
        now = self.store.clock_ms()
        status = job.status(now)
        done = status == "complete"
        attrs = {"status": status, "created_at": iso(job.created_ms), "total_count": job.total,
                 "completed_count": len(job.profile_ids) if done else 0,
                 "failed_count": len(job.errors) if done else 0,
                 "completed_at": iso(job.done_ms) if done else None,
                 "expires_at": iso(job.created_ms + JOB_TTL_MS),
                 "started_at": iso(job.started_ms) if now >= job.started_ms else None}
        path = f"/api/profile-bulk-import-jobs/{job.id}/"
        rels = {"lists": rel(self.base_url, path, "lists", [{"type": "list", "id": g} for g in job.list_ids]),
                "profiles": rel(self.base_url, path, "profiles"),
                "import-errors": rel(self.base_url, path, "import-errors", related_only=True)}
        return resource("profile-bulk-import-job", job.id, attrs, self.base_url, path, req.params.fields, rels)

    def _job(self, req: Request) -> Job:
        jid = req.ids.get("job_id") or req.ids["id"]
        job = self.store.jobs.get(jid)
        if job is None:
            raise not_found("profile-bulk-import-job", jid)
        return job

    def get_job(self, req: Request) -> dict[str, Any]:
        job = self._job(req)
        p = req.params
        included = None
        if "lists" in p.include:
            included = [self.reads.simple_resource(self.reads.group_rec(self.store.groups["list"][g]), p)
                        for g in job.list_ids if g in self.store.groups["list"]]
        return single(self.job_resource(job, req), self.base_url, req.path, p.raw, included)

    def get_jobs(self, req: Request) -> dict[str, Any]:
        now = self.store.clock_ms()
        recs = [{"type": "profile-bulk-import-job", "id": j.id, "attributes": {
            "status": j.status(now), "created_at": iso(j.created_ms)}, "_job": j} for j in self.store.jobs.values()]
        return self.reads.memory_collection(req, recs, 20, lambda r: self.job_resource(r["_job"], req),
                                            default_sort="created_at")

    def get_job_errors(self, req: Request) -> dict[str, Any]:
        job = self._job(req)
        p = req.params
        errors = job.errors if job.applied else []
        if self.store.semantics.get("import_error_payload") == "null":
            errors = [{**e, "original_payload": None} for e in errors]
        items = [{"type": "import-error", "id": det_uuid(0, job.id, k), "attributes": e}
                 for k, e in enumerate(errors)]
        page = offset_page(items, p.cursor, p.size or 20)
        data = [{"type": "import-error", "id": it["id"],
                 "attributes": _project_error(it["attributes"], p.fields.get("import-error"))} for it in page.items]
        return collection(data, self.base_url, req.path, p.raw, page)

    def get_job_profiles(self, req: Request, ids_only: bool) -> dict[str, Any]:
        job = self._job(req)
        p = req.params
        page = offset_page(job.profile_ids, p.cursor, p.size or 20)
        if ids_only:
            data = [{"type": "profile", "id": pid} for pid in page.items]
        else:
            data = []
            for pid in page.items:
                rec = self.store.profile(pid)
                if rec is not None:
                    data.append(self.reads.profile_resource(rec, p))
        return collection(data, self.base_url, req.path, p.raw, page)

    def get_job_lists(self, req: Request, ids_only: bool) -> dict[str, Any]:
        job = self._job(req)
        p = req.params
        sts = [self.store.groups["list"][g] for g in job.list_ids if g in self.store.groups["list"]]
        if ids_only:
            data = [{"type": "list", "id": st.group.id} for st in sts]
        else:
            data = [self.reads.simple_resource(self.reads.group_rec(st), p) for st in sts]
        return collection(data, self.base_url, req.path, p.raw, None)


def _identifiers(row: Any) -> dict[str, Any]:
    """The identifiers a POSTed row carries (``id`` and identity attributes), for ground truth."""
    if not isinstance(row, dict):
        return {}
    attrs = row.get("attributes") if isinstance(row.get("attributes"), dict) else {}
    out = {f: attrs[f] for f in ("email", "phone_number", "external_id") if attrs.get(f)}
    if row.get("id"):
        out["id"] = row["id"]
    return out


def _project_error(attrs: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
    if not wanted:
        return attrs
    return {k: v for k, v in attrs.items() if k in wanted or (k == "source" and "source.pointer" in wanted)}
