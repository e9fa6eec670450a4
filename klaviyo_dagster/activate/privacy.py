"""The ``klaviyo/privacy_deletions`` asset: delete the profiles a table names, once each, and prove it.

Input rows carry identifiers of people whose data must be deleted (Klaviyo profile id, email, phone
number; any of them). Each identifier present becomes one ``POST /api/data-privacy-deletion-jobs``
(Klaviyo takes exactly one identifier a request and deletes every profile matching it; the endpoint
allows 3/s and 60/m, which the client paces). :func:`run_privacy_deletions`:
1. unpivots the identifiers, normalises them (emails lower case) and anti-joins the ledger
   ``privacy_deletions``, which holds one row per identifier, keyed by its SHA-256 hash: the ledger keeps
   no personal data of the people it deleted;
2. refuses to send anything unless ``allow_deletions`` is set, and more than ``max_deletions_per_run``
   unless ``allow_large_deletion`` (dry runs plan without either);
3. sends the requests, recording each as ``requested`` as soon as Klaviyo accepted it;
4. confirms by reading back (``any(<identifier>,[...])`` on ``GET /api/profiles``, 100 a request) until no
   profile matches: ``confirmed``; still present after ``max_wait_s``: ``pending``, requested again next
   run (a repeated deletion is harmless). Invalid identifiers are ``rejected`` once.
"""

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from dagster import AssetExecutionContext, AssetsDefinition, Config
from pydantic import Field

from klaviyo_dagster.activate import ledger, state
from klaviyo_dagster.activate.inputs import (
    ActivationRefused,
    ActivationTarget,
    build_activation_run_asset,
    table_columns,
)
from klaviyo_dagster.activate.validate import email_problem, phone_problem
from klaviyo_dagster.warehouse.privacy import (
    LEDGER,
    LEDGER_COLUMNS,
    DeletionPlan,
    ensure_tables,
    requested_at,
)

PATH = "/api/data-privacy-deletion-jobs"
FILTER_FIELD = {"id": "id", "email": "email", "phone_number": "phone_number"}


@dataclass(frozen=True)
class PrivacyColumns:
    """Identifier columns of a deletions table (None disables one)."""

    profile_id: str | None = "klaviyo_profile_id"
    email: str | None = "email"
    phone_number: str | None = "phone_number"

    def present(self, available: list[str]) -> dict[str, str]:
        kinds = {"id": self.profile_id, "email": self.email, "phone_number": self.phone_number}
        return {k: c for k, c in kinds.items() if c and c in available}


class PrivacyDeletionsConfig(Config):
    """Run config of ``klaviyo/privacy_deletions``."""

    allow_deletions: bool = Field(default=False, description="The switch: without it nothing is deleted.")
    dry_run: bool = Field(default=False, description="Plan and report (works without the switch); delete nothing.")
    max_deletions_per_run: int = Field(default=1_000, description="Most identifiers one run may delete.")
    allow_large_deletion: bool = Field(default=False, description="Skip the max_deletions_per_run guard this run.")
    changed_by: str = Field(default="", description="Who requested these deletions (recorded in the ledger).")
    max_wait_s: float = Field(default=120.0, description="Longest wait for the profiles to be gone.")


class PrivacySettings(PrivacyDeletionsConfig):
    """What to delete (the factory's arguments) and the switches: the run options are
    `PrivacyDeletionsConfig`'s, defined once there; a run's settings are the factory's arguments plus its run
    config."""

    table: str
    columns: PrivacyColumns = Field(default_factory=PrivacyColumns)
    sync_name: str = "privacy_deletions"


@dataclass
class PrivacyResult:
    """Counts of one run (becomes the materialization metadata)."""

    run_id: str
    changed_by: str = ""
    dry_run: bool = False
    identifiers: int = 0
    done_before: int = 0
    planned: int = 0
    requested: int = 0
    confirmed: int = 0
    pending: int = 0
    rejected: int = 0
    duration_s: float = 0.0

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in (
            "changed_by", "dry_run", "identifiers", "done_before", "planned", "requested", "confirmed", "pending",
            "rejected")}
        out["duration_s"] = round(self.duration_s, 3)
        return out


def identity_hash(kind: str, value: str) -> str:
    """The ledger key of an identifier: sha256 of ``kind:value`` (value normalised as in the table query)."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class _Run:
    def __init__(self, client: Any, warehouse: Any, settings: PrivacySettings, run_id: str, actor: str,
                 log: Any) -> None:
        self.client, self.warehouse, self.settings, self.log = client, warehouse, settings, log
        self.result = PrivacyResult(run_id=run_id, changed_by=actor, dry_run=settings.dry_run)

    def _ledger(self, rows: list[tuple[str, str, str, str | None, Any, Any]]) -> None:
        """rows: (hash, kind, outcome, reason, requested_at, confirmed_at)."""
        s, r = self.settings, self.result
        ledger.upsert_rows(self.warehouse, LEDGER, LEDGER_COLUMNS,
                           [(s.sync_name, h, k, o, why, req, conf, r.run_id, r.changed_by)
                            for h, k, o, why, req, conf in rows],
                           key=("sync_name", "identity_hash"))

    def execute(self) -> PrivacyResult:
        s, r = self.settings, self.result
        started = time.monotonic()
        ensure_tables(self.warehouse)
        available = table_columns(self.warehouse, s.table)
        if not s.columns.present(available):
            raise ValueError(f"deletions table {s.table!r} has none of the identifier columns "
                             f"{[c for c in (s.columns.profile_id, s.columns.email, s.columns.phone_number) if c]}; "
                             "rename a column or set PrivacyColumns")
        plan = DeletionPlan(s.table, s.columns.present(available))
        total, todo = plan.counts(self.warehouse, s.sync_name)
        r.identifiers, r.done_before, r.planned = total, total - todo, todo
        if not todo:
            r.duration_s = time.monotonic() - started
            return r
        if not s.dry_run and not s.allow_deletions:
            raise ActivationRefused(f"{todo} identifiers in {s.table!r} are due for deletion but deletions are "
                                    "switched off: nothing was sent. Review them with dry_run=True, then run with "
                                    "allow_deletions=True")
        if todo > s.max_deletions_per_run and not s.allow_large_deletion:
            message = (f"{todo} identifiers are due for deletion, over max_deletions_per_run={s.max_deletions_per_run}; "
                       "nothing was sent. Check the table, or run with allow_large_deletion=True")
            if not s.dry_run:
                raise ActivationRefused(message)
            self.log.warning("dry run: " + message)
        if s.dry_run:
            r.duration_s = time.monotonic() - started
            return r
        sent: dict[str, list[tuple[str, str]]] = {}  # kind -> [(value, hash)]
        for kind, value, digest in plan.todo(self.warehouse, s.sync_name):
            problem = email_problem(value) if kind == "email" else phone_problem(value) if kind == "phone_number" else None
            if problem:
                r.rejected += 1
                self._ledger([(digest, kind, "rejected", problem, None, None)])
                continue
            profile: dict[str, Any] = {"type": "profile", "attributes": {}}
            if kind == "id":
                profile["id"] = value
            else:
                profile["attributes"][kind] = value
            self.client.post(PATH, {"data": {"type": "data-privacy-deletion-job",
                                             "attributes": {"profile": {"data": profile}}}})
            r.requested += 1
            self._ledger([(digest, kind, "requested", None, state.now_utc(), None)])
            sent.setdefault(kind, []).append((value, digest))
        self._confirm(sent)
        r.duration_s = time.monotonic() - started
        return r

    def _confirm(self, sent: dict[str, list[tuple[str, str]]]) -> None:
        waiting = {kind: dict(items) for kind, items in sent.items()}
        gone: list[tuple[str, str]] = []

        def check() -> bool:
            for kind, items in waiting.items():
                present = set()
                for prof in ledger.profiles_matching(self.client, FILTER_FIELD[kind], list(items)):
                    value = prof["id"] if kind == "id" else (prof.get("attributes") or {}).get(kind)
                    present.add(value.lower() if kind == "email" and value else value)
                for value in [v for v in items if v not in present]:
                    gone.append((kind, items.pop(value)))
            return not any(waiting.values())

        polled = ledger.poll_until(check, max_wait_s=self.settings.max_wait_s)
        now = state.now_utc()
        rows = [(digest, kind, "confirmed", None, None, now) for kind, digest in gone]
        rows += [(digest, kind, "pending", f"profiles still present after {polled.waited_s:.0f} s; requested again "
                  "next run", None, None) for kind, items in waiting.items() for digest in items.values()]
        requested = requested_at(self.warehouse, self.settings.sync_name, self.result.run_id)
        self._ledger([(h, k, o, why, requested.get(h), conf) for h, k, o, why, _, conf in rows])
        self.result.confirmed = len(gone)
        self.result.pending = len(rows) - len(gone)
        self.log.info(f"privacy deletions: {len(gone)} confirmed gone, {self.result.pending} pending")


def run_privacy_deletions(client: Any, warehouse: Any, settings: PrivacySettings, run_id: str | None = None,
                          log: logging.Logger | Any = None, run_tags: dict[str, str] | None = None) -> PrivacyResult:
    """Request and confirm the deletions ``settings.table`` names; ActivationRefused when a switch says no."""
    who = ledger.actor(settings.changed_by, run_tags)
    return _Run(client, warehouse, settings, run_id or uuid.uuid4().hex, who,
                log or logging.getLogger(__name__)).execute()


def privacy_deletions_description(deletions_table: str) -> str:
    """What ``klaviyo/privacy_deletions`` does, for its asset description."""
    return (f"Deletes the Klaviyo profiles `{deletions_table}` names (data-privacy deletion, only when allow_deletions "
            f"is set); one hashed ledger row per identifier in {LEDGER}.")


def build_privacy_deletions_asset(deletions_table: str, columns: PrivacyColumns | None = None,
        key: str = "klaviyo/privacy_deletions", sync_name: str = "privacy_deletions",
        target: ActivationTarget | None = None) -> AssetsDefinition:
    """The ``klaviyo/privacy_deletions`` asset reading ``deletions_table`` (resources: ``target``'s)."""
    columns = columns or PrivacyColumns()

    def run(client: Any, warehouse: Any, config: PrivacyDeletionsConfig, context: AssetExecutionContext) -> PrivacyResult:
        settings = PrivacySettings(table=deletions_table, columns=columns, sync_name=sync_name, **config.model_dump())
        return run_privacy_deletions(client, warehouse, settings, context.run.run_id, context.log,
                                     dict(context.run.tags))

    unconfirmed = ("{pending} deletions were requested but the profiles are still present after {max_wait_s:.0f} s; "
                   "they are requested again next run")

    return build_activation_run_asset(key, deletions_table, privacy_deletions_description(deletions_table), target,
                                      PrivacyDeletionsConfig, run, unconfirmed)
