"""The ``klaviyo/subscriptions`` asset: reconcile a consent table with Klaviyo, as a deliberate, logged act.

Input rows: (email and/or phone_number, channel ``email`` | ``sms``, optional ``list_id``, desired ``state``
``subscribed`` | ``unsubscribed`` | ``suppressed`` | ``unsuppressed``, optional ``consented_at``, optional
``reason``). Consent changes are legal acts, so (:func:`run_subscriptions`):
1. the diff is against what this sync last handled (``subscription_state``), never against Klaviyo's
   current state: a person who unsubscribed through a link is not re-subscribed because an old row still
   says ``subscribed``; a row absent from the table changes nothing;
2. rows are validated (channel, state, email / E.164 syntax, suppressions are email only, consent
   times in the past); conflicting rows for one (channel, person, list) are rejected;
3. guards before any write: nothing is sent unless ``allow_consent_changes`` is set (dry runs plan
   without it); a run that would unsubscribe or suppress more than ``max_unsubscribe_share`` of a list's
   members (``profile_count``; for rows without a list, of the table's rows of that channel) is refused
   unless ``allow_large_unsubscribe``;
4. the current consent of every planned person is read first (``additional-fields[profile]=subscriptions``,
   100 a request): people already in the desired state are recorded ``already`` without a call, and the
   log keeps the state before;
5. changes go out as ``profile-subscription-bulk-create-jobs`` (<= 1,000; with ``historical_import`` and
   ``consented_at`` when the row has a consent time), ``-delete-jobs`` (<= 100),
   ``profile-suppression-bulk-create-jobs`` / ``-delete-jobs`` (<= 100 emails; their jobs are polled to
   ``complete``); each is confirmed by reading consent back. Subscribing to a double opt-in list without a
   consent time sends the person a confirmation request: nothing changes until they confirm, so it is
   recorded ``awaiting_confirmation`` and never sent again;
6. ``subscription_log`` records who (``changed_by``, else the run's user), what, from which state to
   which, the outcome and the source row's reason, per row and run: a ``sent`` row as soon as Klaviyo
   accepted the request (so a run that dies later leaves the act on record), then the outcome row.
"""

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue
from pydantic import Field

from klaviyo_dagster.activate import ledger, state
from klaviyo_dagster.activate.inputs import (
    ActivationRefused,
    ActivationTarget,
    build_activation_run_asset,
    table_columns,
)
from klaviyo_dagster.activate.render import frame_rows, to_json_value
from klaviyo_dagster.activate.validate import email_problem, phone_problem
from klaviyo_dagster.warehouse.subscriptions import (
    LOG,
    LOG_COLUMNS,
    STATE,
    STATE_COLUMNS,
    ConsentPlan,
    ensure_tables,
)

ACTIONS = {"subscribed": "subscribe", "unsubscribed": "unsubscribe", "suppressed": "suppress",
           "unsuppressed": "unsuppress"}
BATCH = {"subscribe": 1_000, "unsubscribe": 100, "suppress": 100, "unsuppress": 100}
PATHS = {"subscribe": "/api/profile-subscription-bulk-create-jobs",
         "unsubscribe": "/api/profile-subscription-bulk-delete-jobs",
         "suppress": "/api/profile-suppression-bulk-create-jobs",
         "unsuppress": "/api/profile-suppression-bulk-delete-jobs"}
TYPES = {a: p.rsplit("/", 1)[1][:-1] for a, p in PATHS.items()}  # e.g. profile-subscription-bulk-create-job
IDENTIFIER = {"email": "email", "sms": "phone_number"}


@dataclass(frozen=True)
class SubscriptionColumns:
    """Column names of a consent table (None disables an optional one)."""

    email: str | None = "email"
    phone_number: str | None = "phone_number"
    channel: str = "channel"
    state: str = "state"
    list_id: str | None = "list_id"
    consented_at: str | None = "consented_at"
    reason: str | None = "reason"


class SubscriptionsConfig(Config):
    """Run config of ``klaviyo/subscriptions``."""

    allow_consent_changes: bool = Field(default=False, description="The switch: without it nothing is sent.")
    dry_run: bool = Field(default=False, description="Plan and report (works without the switch); change nothing.")
    max_unsubscribe_share: float = Field(default=0.1, description="Largest share of a list one run may unsubscribe.")
    allow_large_unsubscribe: bool = Field(default=False, description="Skip the unsubscribe-share guard this run.")
    changed_by: str = Field(default="", description="Who is making these changes (recorded in the log).")
    custom_source: str = Field(default="klaviyo-dagster", description="Source stored on Klaviyo's consent records.")
    max_wait_s: float = Field(default=120.0, description="Longest wait for Klaviyo to show the changes.")


class SubscriptionSettings(SubscriptionsConfig):
    """What to reconcile (the factory's arguments) and how: the run options are `SubscriptionsConfig`'s,
    defined once there; a run's settings are the factory's arguments plus its run config."""

    table: str
    columns: SubscriptionColumns = Field(default_factory=SubscriptionColumns)
    sync_name: str = "subscriptions"


@dataclass
class SubscriptionResult:
    """Counts of one run (becomes the materialization metadata)."""

    run_id: str
    changed_by: str = ""
    dry_run: bool = False
    rows: int = 0
    unchanged: int = 0
    planned: dict[str, int] = field(default_factory=dict)  # action -> rows
    already: int = 0
    sent: int = 0
    confirmed: int = 0
    awaiting_confirmation: int = 0
    pending: int = 0
    rejected: int = 0
    jobs: int = 0
    unsubscribe_share: dict[str, float] = field(default_factory=dict)  # list id (or channel:*) -> share
    duration_s: float = 0.0

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in (
            "changed_by", "dry_run", "rows", "unchanged", "already", "sent", "confirmed", "awaiting_confirmation",
            "pending", "rejected", "jobs")}
        out["planned"] = MetadataValue.json(self.planned)
        out["unsubscribe_share"] = MetadataValue.json({k: round(v, 4) for k, v in self.unsubscribe_share.items()})
        out["duration_s"] = round(self.duration_s, 3)
        return out


@dataclass
class Change:
    """One planned consent change."""

    channel: str
    identity: str  # the email (lower case) or phone number
    list_id: str | None
    to_state: str
    action: str
    consented_at: pd.Timestamp | None
    source_reason: str | None
    from_state: str | None = None
    outcome: str | None = None
    reason: str | None = None
    job_ref: str | None = None


def consent_state(subs: dict[str, Any] | None, channel: str) -> str:
    """A short description of a profile's consent on ``channel``: SUBSCRIBED, UNSUBSCRIBED, ... (+suppressions)."""
    if subs is None:
        return "NO_PROFILE"
    marketing = (subs.get(channel) or {}).get("marketing") or {}
    out = str(marketing.get("consent") or "UNKNOWN")
    reasons = sorted({s.get("reason") for s in marketing.get("suppression") or [] if s.get("reason")})
    return out + ("+" + "+".join(reasons) if reasons else "")


def satisfied(change: Change, subs: dict[str, Any] | None) -> bool:
    """Whether Klaviyo's current ``subscriptions`` already hold the desired state of ``change``."""
    if subs is None:
        return change.action == "unsuppress"  # no profile: nothing is suppressed
    marketing = (subs.get(change.channel) or {}).get("marketing") or {}
    user_suppressed = any(s.get("reason") == "USER_SUPPRESSED" for s in marketing.get("suppression") or [])
    # Unsubscribing from a list may only suppress the person for that list (a list member keeps its consent).
    list_suppressed = bool(change.list_id) and any(
        s.get("list_id") == change.list_id for s in marketing.get("list_suppressions") or [])
    return {"subscribe": marketing.get("consent") == "SUBSCRIBED" and not list_suppressed,
            "unsubscribe": marketing.get("consent") == "UNSUBSCRIBED" or list_suppressed,
            "suppress": user_suppressed, "unsuppress": not user_suppressed}[change.action]


def consent_plan(s: SubscriptionSettings, available: list[str]) -> ConsentPlan:
    """The warehouse plan of the consent table under ``s.columns``."""
    c = s.columns
    return ConsentPlan(table=s.table, available=available, email=c.email, phone_number=c.phone_number,
                       channel=c.channel, state=c.state, list_id=c.list_id, consented_at=c.consented_at,
                       reason=c.reason)


class _Run:
    """One reconciliation run."""

    def __init__(self, client: Any, warehouse: Any, settings: SubscriptionSettings, run_id: str, actor: str,
                 log: Any) -> None:
        self.client, self.warehouse, self.settings, self.log = client, warehouse, settings, log
        self.result = SubscriptionResult(run_id=run_id, changed_by=actor, dry_run=settings.dry_run)
        self.lists: dict[str, dict[str, Any]] = {}

    # -- planning ----------------------------------------------------------------------------------------
    def _validate(self, row: dict[str, Any]) -> tuple[Change | None, str | None]:
        channel, desired, ident = row["__channel"], row["__state"], row["__identity"]
        if channel not in IDENTIFIER:
            return None, f"channel {channel!r} is not 'email' or 'sms'"
        if desired not in ACTIONS:
            return None, f"state {desired!r} is not one of {', '.join(ACTIONS)}"
        if row["__states"] > 1:
            return None, "the table asks for different states of this person on this channel and list"
        if not ident:
            return None, f"no {IDENTIFIER[channel]} for the {channel} channel"
        problem = email_problem(ident) if channel == "email" else phone_problem(ident)
        if problem:
            return None, problem
        action = ACTIONS[desired]
        if channel != "email" and action in ("suppress", "unsuppress"):
            return None, "Klaviyo suppressions are by email only; use unsubscribed for sms"
        at = row["__consented_at"]
        when = None
        if at is not None and not pd.isna(at):
            when = pd.Timestamp(at)
            when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
            if when > pd.Timestamp.now(tz="UTC"):
                return None, f"consented_at {when.isoformat()} is in the future"
        return Change(channel, ident, row["__list"], desired, action, when, row["__reason"]), None

    def _list(self, list_id: str) -> dict[str, Any]:
        if list_id not in self.lists:
            doc = self.client.get(f"/api/lists/{list_id}", {"additional-fields[list]": "profile_count"})
            self.lists[list_id] = (doc.get("data") or {}).get("attributes") or {}
        return self.lists[list_id]

    def _guard(self, changes: list[Change]) -> None:
        s, r = self.settings, self.result
        removing: dict[str, int] = {}
        for ch in changes:
            if ch.action in ("unsubscribe", "suppress"):
                key = ch.list_id or f"{ch.channel}:*"
                removing[key] = removing.get(key, 0) + 1
        for key, n in removing.items():
            if key.endswith(":*"):
                channel = key[:-2]
                total = self.plan.channel_rows(self.warehouse, channel)
                what = f"the table's {total} {channel} rows"
            else:
                total = int(self._list(key).get("profile_count") or 0)
                what = f"list {key}'s {total} members"
            share = n / total if total else 1.0
            r.unsubscribe_share[key] = share
            if share > s.max_unsubscribe_share and not s.allow_large_unsubscribe:
                message = (f"this run would unsubscribe or suppress {n} people, {share:.0%} of {what}, over the "
                           f"{s.max_unsubscribe_share:.0%} limit of one run; nothing was changed. Check the consent "
                           "table, or run with allow_large_unsubscribe=True (or raise max_unsubscribe_share)")
                if s.dry_run:
                    self.log.warning("dry run: " + message)
                else:
                    raise ActivationRefused(message)

    def _current(self, changes: Iterable[Change]) -> dict[tuple[str, str], dict[str, Any]]:
        """{(channel, identity): subscriptions} as Klaviyo holds them now."""
        by_field: dict[str, set[str]] = {}
        for ch in changes:
            by_field.setdefault(IDENTIFIER[ch.channel], set()).add(ch.identity)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for fld, values in by_field.items():
            for prof in ledger.profiles_matching(self.client, fld, sorted(values), subscriptions=True):
                attrs = prof.get("attributes") or {}
                value = attrs.get(fld)
                value = value.lower() if fld == "email" and value else value
                for channel in ("email",) if fld == "email" else ("sms",):
                    out.setdefault((channel, value), attrs.get("subscriptions") or {})
        return out

    # -- run ---------------------------------------------------------------------------------------------
    def execute(self) -> SubscriptionResult:
        s, r = self.settings, self.result
        started = time.monotonic()
        ensure_tables(self.warehouse)
        self.available = table_columns(self.warehouse, s.table)
        missing = [c for c in (s.columns.channel, s.columns.state) if c not in self.available]
        if missing or not any(c and c in self.available for c in (s.columns.email, s.columns.phone_number)):
            raise ValueError(f"consent table {s.table!r} needs channel, state and email or phone_number columns "
                             f"(missing: {missing or 'email/phone_number'}); rename them or set SubscriptionColumns")
        self.plan = consent_plan(s, self.available)
        rows, distinct, todo = self.plan.counts(self.warehouse, s.sync_name)
        r.rows, r.unchanged = rows, distinct - todo
        changes, rejects = [], []
        for chunk in self.plan.todo(self.warehouse, s.sync_name):
            for raw in frame_rows(chunk):
                row = {k: (v if k == "__consented_at" else to_json_value(v)) for k, v in raw.items()}
                change, reason = self._validate(row)
                if change is None:
                    rejects.append(Change(str(row["__channel"]), str(row["__identity"]), row["__list"],
                                          str(row["__state"]), "none", None, row["__reason"], outcome="rejected",
                                          reason=reason))
                else:
                    changes.append(change)
                    r.planned[change.action] = r.planned.get(change.action, 0) + 1
        r.rejected = len(rejects)
        if changes and not s.allow_consent_changes and not s.dry_run:
            raise ActivationRefused(
                f"{len(changes)} consent changes are planned ({r.planned}) but consent changes are switched off: "
                "nothing was sent. Review them with dry_run=True, then run with allow_consent_changes=True")
        self._guard(changes)
        before = self._current(changes) if changes else {}
        for ch in changes:
            subs = before.get((ch.channel, ch.identity))
            ch.from_state = consent_state(subs, ch.channel)
            if not ch.list_id and satisfied(ch, subs):
                ch.outcome = "already"
        r.already = sum(1 for ch in changes if ch.outcome == "already")
        if s.dry_run:
            r.duration_s = time.monotonic() - started
            return r
        self._record(rejects)
        self._record([ch for ch in changes if ch.outcome == "already"])
        to_send = [ch for ch in changes if ch.outcome is None]
        self._send(to_send)
        self._confirm([ch for ch in to_send if ch.outcome is None])
        self._record(to_send)
        for ch in to_send:
            if ch.outcome == "confirmed":
                r.confirmed += 1
            elif ch.outcome == "awaiting_confirmation":
                r.awaiting_confirmation += 1
            elif ch.outcome == "pending":
                r.pending += 1
        r.duration_s = time.monotonic() - started
        return r

    def _body(self, action: str, group: list[Change], list_id: str | None, historical: bool) -> dict[str, Any]:
        rows = []
        for ch in group:
            attrs: dict[str, Any] = {IDENTIFIER[ch.channel]: ch.identity}
            if action in ("subscribe", "unsubscribe"):
                params: dict[str, Any] = {"consent": "SUBSCRIBED" if action == "subscribe" else "UNSUBSCRIBED"}
                if action == "subscribe" and ch.consented_at is not None:
                    params["consented_at"] = ch.consented_at.strftime("%Y-%m-%dT%H:%M:%S+00:00")
                attrs["subscriptions"] = {ch.channel: {"marketing": params}}
            rows.append({"type": "profile", "attributes": attrs})
        data: dict[str, Any] = {"type": TYPES[action], "attributes": {"profiles": {"data": rows}}}
        if action == "subscribe":
            data["attributes"]["custom_source"] = self.settings.custom_source
            if historical:
                data["attributes"]["historical_import"] = True
        if list_id and action in ("subscribe", "unsubscribe"):
            data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
        return {"data": data}

    def _send(self, changes: list[Change]) -> None:
        groups: dict[tuple[str, str, str | None, bool], list[Change]] = {}
        for ch in changes:
            historical = ch.action == "subscribe" and ch.consented_at is not None
            list_id = ch.list_id if ch.action in ("subscribe", "unsubscribe") else None
            groups.setdefault((ch.action, ch.channel, list_id, historical), []).append(ch)
        for (action, channel, list_id, historical), group in groups.items():
            double = (action == "subscribe" and list_id and not historical
                      and self._list(list_id).get("opt_in_process") == "double_opt_in")
            for start in range(0, len(group), BATCH[action]):
                batch = group[start:start + BATCH[action]]
                self.result.jobs += 1
                doc = self.client.post(PATHS[action], self._body(action, batch, list_id, historical))
                job_id = str(((doc or {}).get("data") or {}).get("id") or "") or None
                ref = job_id or f"{self.result.run_id}:{self.result.jobs}"
                self.result.sent += len(batch)
                self.log.info(f"{action} {channel}{' list ' + list_id if list_id else ''}: {len(batch)} people ({ref})")
                if job_id:  # suppression jobs can be polled to their real end
                    self._wait_job(action, job_id)
                for ch in batch:
                    ch.job_ref = ref
                self._log(batch, outcome="sent")  # the act is on record before its outcome is known
                for ch in batch:
                    if double:
                        ch.outcome = "awaiting_confirmation"
                        ch.reason = (f"list {list_id} uses double opt-in: Klaviyo asked the person to confirm; "
                                     "consent changes when they do (not sent again)")

    def _wait_job(self, action: str, job_id: str) -> None:
        status: dict[str, Any] = {}

        def complete() -> bool:
            doc = self.client.get(f"{PATHS[action]}/{job_id}")
            status.update((doc.get("data") or {}).get("attributes") or {})
            return status.get("status") in ("complete", "cancelled")

        polled = ledger.poll_until(complete, max_wait_s=self.settings.max_wait_s)
        if not polled.done or status.get("status") == "cancelled":
            self.log.warning(f"{action} job {job_id} is {status.get('status')} after {polled.waited_s:.0f} s")

    def _confirm(self, changes: list[Change]) -> None:
        if not changes:
            return
        waiting = list(changes)

        def check() -> bool:
            nonlocal waiting
            now = self._current(waiting)
            still = []
            for ch in waiting:
                if satisfied(ch, now.get((ch.channel, ch.identity))):
                    ch.outcome = "confirmed"
                else:
                    still.append(ch)
            waiting = still
            return not waiting

        polled = ledger.poll_until(check, max_wait_s=self.settings.max_wait_s)
        for ch in waiting:
            ch.outcome = "pending"
            ch.reason = f"Klaviyo does not show the change after {polled.waited_s:.0f} s; sent again next run"

    def _log(self, changes: list[Change], outcome: str | None = None) -> None:
        s, r, now = self.settings, self.result, state.now_utc()
        ledger.append_rows(self.warehouse, LOG, LOG_COLUMNS, [
            (r.run_id, s.sync_name, r.changed_by, ch.channel, ch.identity, ch.list_id, ch.action, ch.from_state,
             ch.to_state, outcome or ch.outcome, None if outcome else ch.reason, ch.source_reason, ch.job_ref, now)
            for ch in changes])

    def _record(self, changes: list[Change]) -> None:
        if not changes:
            return
        s, now = self.settings, state.now_utc()
        self._log(changes)
        done = [ch for ch in changes if ch.outcome in ("confirmed", "already", "awaiting_confirmation", "rejected")]
        ledger.upsert_rows(self.warehouse, STATE, STATE_COLUMNS, [
            (s.sync_name, ch.channel, ch.identity, ch.list_id, ch.to_state, ch.outcome, now) for ch in done],
            key=("sync_name", "channel", "identity", "list_id"))


def run_subscriptions(client: Any, warehouse: Any, settings: SubscriptionSettings, run_id: str | None = None,
                      log: logging.Logger | Any = None, run_tags: dict[str, str] | None = None) -> SubscriptionResult:
    """Reconcile ``settings.table`` with Klaviyo consent; raises ActivationRefused when a switch or guard says no."""
    who = ledger.actor(settings.changed_by, run_tags)
    return _Run(client, warehouse, settings, run_id or uuid.uuid4().hex, who,
                log or logging.getLogger(__name__)).execute()


def subscriptions_description(consent_table: str) -> str:
    """What ``klaviyo/subscriptions`` does, for its asset description."""
    return (f"Reconciles email/SMS consent and suppressions with `{consent_table}` (only when allow_consent_changes "
            f"is set); who changed what in {LOG}.")


def build_subscriptions_asset(consent_table: str, columns: SubscriptionColumns | None = None,
        key: str = "klaviyo/subscriptions", sync_name: str = "subscriptions",
        target: ActivationTarget | None = None) -> AssetsDefinition:
    """The ``klaviyo/subscriptions`` asset reading ``consent_table`` (resources: ``target``'s)."""
    columns = columns or SubscriptionColumns()

    def run(client: Any, warehouse: Any, config: SubscriptionsConfig,
            context: AssetExecutionContext) -> SubscriptionResult:
        settings = SubscriptionSettings(table=consent_table, columns=columns, sync_name=sync_name,
                                        **config.model_dump())
        return run_subscriptions(client, warehouse, settings, context.run.run_id, context.log, dict(context.run.tags))

    unconfirmed = ("{pending} consent changes were sent but Klaviyo does not show them after {max_wait_s:.0f} s; "
                   "they are sent again next run")

    return build_activation_run_asset(key, consent_table, subscriptions_description(consent_table), target,
                                      SubscriptionsConfig, run, unconfirmed)
