"""THE declarative table of Klaviyo objects to ingest (like Singer stream definitions or a dlt rest_api config).

Each `KlaviyoObject` says where an object lives, how it is keyed, how a day of it is selected, how big a
page may be, which rate-limit tier it draws on, which columns it lands in and how one partition fans out
into several API passes. Adding an object means adding an entry here, not writing a function: `fetch`,
`flatten`, `assets` and the warehouse read everything from the entry.

Column sources: ``id``; ``attributes.<name>``; ``relationships.<name>`` (the related resource's id);
``pass.<name>`` (a value fixed by the fan-out pass, e.g. the campaign channel or the list id);
``parent.<name>`` (``id`` or an attribute of the parent record a child row was read through);
``<object>.<path>`` for derived objects (where in the source object's rows the value is found).
Sync modes: ``incremental`` (a partition = records whose cursor lies in [day, next day), filtered
server-side), ``snapshot`` (a partition = the state captured for that day), ``membership`` (a snapshot
of each list's or segment's members, one pass per group), ``derived`` (``derived=Derived(...)``: a view
computed in the warehouse from another object's ``_current`` view, SQL in warehouse/derived.py; no API
calls, and it follows that view's deletions and merges).

Children (``parent=Parent(...)``) are read through another entry's passes: ``include`` rows are the
resources the parent read carries in ``included`` (campaign messages, flow actions: no extra requests);
``linkage`` rows are the parent's relationship linkage (tag links); ``each`` reads ``path`` once per
linked id (flow messages: one request per flow action). An incremental child is partitioned by its
parent's cursor, so a day's run reads only the parents that changed that day, and its ``_current``
view keeps the rows of each parent's latest version. ``sweep=Sweep(...)`` adds a periodic id sweep:
``<name>_deleted`` and a ``_current`` view without the ids the latest sweep no longer saw.

Reports (``sync="report"``, ``report=Report(...)``, the `REPORTS` tuple) come from Klaviyo's Reporting API
(``POST`` a report query, 2 a minute and 225 a day per account): a daily partition per report day, one
request covering every campaign (flow) of ``Report.days_per_request`` days (ingest/reports.py plans the
requests within the day's budget). Their column sources are ``groupings.<name>``, ``statistics.<name>``,
``series.datetime`` (a series result's interval start) and ``pass.conversion_metric_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from klaviyo_dagster.client.tiers import Tier

SyncMode = Literal["incremental", "snapshot", "membership", "derived", "report"]

PARTITION_COLUMN = "_partition"


@dataclass(frozen=True)
class Column:
    """A typed warehouse column and where its value comes from in a JSON:API resource."""

    name: str
    source: str
    sql_type: str = "VARCHAR"

    @property
    def is_json(self) -> bool:
        return self.sql_type.upper() == "JSON"


@dataclass(frozen=True)
class FanOut:
    """One axis of passes: a filter clause per value; ``column`` also stores the value on each row.

    ``values`` are the defaults; ``option`` names a build option that may replace them (e.g. the
    channels to read, or the metric ids to select). An axis without values is left out (one pass).
    """

    name: str
    filter: str
    values: tuple[str, ...] = ()
    option: str | None = None
    column: str | None = None
    # Where chosen values may be looked up by name (e.g. metric names -> metric ids).
    lookup: str | None = None
    # (path, relationship) of groups of ``lookup`` resources a value may also name (custom metrics: groups of
    # metrics, which the events metric_id filter does not take): such a value stands for its members.
    groups_lookup: tuple[str, str] | None = None


@dataclass(frozen=True)
class AdditionalField:
    """A switchable ``additional-fields[...]`` value (column ``name``), with the tier it costs.

    ``path``: the field is served only by that single-resource read (``{id}``: the record's id), not by the
    collection (``profile_count`` on ``GET /api/lists/{id}``): one request per record, on ``tier``.
    """

    name: str
    param: str
    default: bool
    tier: Tier | None = None
    path: str | None = None


@dataclass(frozen=True)
class Groups:
    """Membership objects: where the groups (lists, segments) are listed, and the id column."""

    path: str
    column: str
    page_size: int | None = None


@dataclass(frozen=True)
class Parent:
    """How a child object is reached through its parent entry (see the module docstring).

    ``object``: the parent entry's name; ``relationship``: the JSON:API relationship on the parent
    (``campaign-messages``, ``tags``, ``flow-actions``); ``via``: ``include`` (rows = the included
    resources of that relationship), ``linkage`` (rows = the linkage entries, one per parent and linked
    id) or ``each`` (one read of the child's path per linked id, stamped as pass value ``key``).
    ``params``: added to the parent's passes besides ``include`` (sparse fieldsets that keep the parent
    read small: only what the child needs).
    """

    object: str
    relationship: str
    via: Literal["include", "linkage", "each"] = "include"
    key: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    # ``each``: linked resources whose included attribute (dotted path) has one of these values are not
    # read (e.g. flow actions that can carry no message: time delays, branches), saving their requests.
    skip: tuple[str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Sweep:
    """A periodic read of every id of an object, to find the ids Klaviyo deleted.

    ``params``: the query of the sweep's read (a small sparse fieldset: the sweep needs only ids).
    The sweeps run together in one weekly job (automation/schedules.py, ``sweep_cron`` to change it).
    """

    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Derived:
    """A derived object: a view over ``<source>_current`` (warehouse/derived.py has its SQL).

    ``nullable_key``: key columns that may be NULL (a global suppression has no list); ``count_by``: the
    columns whose row counts a run reports; ``needs``: the build option the source must have on (the
    object is left out, or refused when asked for by name, without it).
    """

    source: str
    nullable_key: tuple[str, ...] = ()
    count_by: tuple[str, ...] = ()
    needs: str | None = None


@dataclass(frozen=True)
class Report:
    """A Reporting API report: the JSON:API type of its query, what it groups by, the statistics asked for
    by default (``report_statistics`` replaces them), and how many days one request may cover (values
    reports aggregate their whole time frame, so one day; a daily series takes up to 60)."""

    type: str
    group_by: tuple[str, ...]
    statistics: tuple[str, ...]
    days_per_request: int = 1
    interval: str | None = None  # series reports: the interval of the series (one value per interval)
    daily_budget: int = 225  # requests a day per account (x-klaviyo-ratelimit `daily`)


@dataclass(frozen=True)
class KlaviyoObject:
    """One Klaviyo object: where it lives and how it lands in ``klaviyo.<name>``."""

    name: str
    path: str
    description: str
    sync: SyncMode
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...]
    tier: Tier
    page_size: int | None = None
    cursor: str | None = None
    # Operators of the server-side window filter [start, end). When the API has no greater-or-equal,
    # ``lower_slack_seconds`` widens the lower bound and rows before start are dropped client-side.
    lower_op: str = "greater-or-equal"
    upper_op: str = "less-than"
    lower_slack_seconds: int = 0
    params: Mapping[str, str] = field(default_factory=dict)
    fan_out: tuple[FanOut, ...] = ()
    additional_fields: tuple[AdditionalField, ...] = ()
    groups: Groups | None = None
    parent: Parent | None = None
    sweep: Sweep | None = None
    derived: Derived | None = None
    report: Report | None = None

    @property
    def incremental(self) -> bool:
        return self.sync == "incremental"

    @property
    def cursor_source(self) -> str | None:
        """Where a row's cursor value comes from: ``attributes.<cursor>`` or, for children, ``parent.<cursor>``."""
        if self.cursor is None:
            return None
        return f"{'parent' if self.parent is not None else 'attributes'}.{self.cursor}"

    @property
    def cursor_column(self) -> str | None:
        """The warehouse column holding the cursor (None for snapshots)."""
        if self.cursor is None:
            return None
        for col in self.columns:
            if col.source == self.cursor_source:
                return col.name
        raise ValueError(f"{self.name}: cursor {self.cursor!r} has no column")

    def column_from(self, source: str) -> str | None:
        """The name of the column whose source is ``source`` (None when there is none)."""
        return next((c.name for c in self.columns if c.source == source), None)

    def current_view(self) -> dict[str, Any]:
        """Keyword arguments for the warehouse's ``<name>_current`` view (see warehouse/current.py)."""
        version_of = None
        exclude: list[tuple[str, str]] = []
        if self.sweep is not None:
            exclude.append((self.primary_key[0], f"{self.name}_deleted"))
        if self.parent is not None:
            parent_key = self.column_from("parent.id")
            if parent_key is not None and self.cursor_column is not None:
                version_of = (parent_key, self.cursor_column)
            if parent_key is not None and get_object(self.parent.object).sweep is not None:
                exclude.append((parent_key, f"{self.parent.object}_deleted"))
        return {"version_of": version_of, "exclude_deleted": tuple(exclude)}

    def sql_columns(self) -> dict[str, str]:
        """``{column: type}`` for the warehouse, partition column included."""
        out = {c.name: c.sql_type for c in self.columns}
        out[PARTITION_COLUMN] = "TIMESTAMPTZ"
        return out


def _attrs(*specs: str) -> tuple[Column, ...]:
    """Columns from ``"name:TYPE"`` specs sourced from attributes of the same name (VARCHAR default)."""
    out = []
    for spec in specs:
        name, _, sql_type = spec.partition(":")
        out.append(Column(name, f"attributes.{name}", sql_type or "VARCHAR"))
    return tuple(out)


ID = Column("id", "id")
TS = "TIMESTAMPTZ"
PROFILE_ATTRS = _attrs(
    "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title",
    "image", f"created:{TS}", f"updated:{TS}", f"last_event_date:{TS}", "location:JSON", "properties:JSON",
)  # fmt: skip

def _profile_count(kind: str) -> AdditionalField:
    """``profile_count`` of a list (segment): one ``GET /api/<kind>s/{id}`` per group on the XS tier."""
    return AdditionalField("profile_count", f"additional-fields[{kind}]", default=False, tier=Tier.XS,
                           path=f"/api/{kind}s/{{id}}")


def _membership(kind: str) -> KlaviyoObject:
    """``<kind>_memberships``: a snapshot of every list's (segment's) members, one pass per group."""
    group = f"{kind}_id"
    return KlaviyoObject(
        name=f"{kind}_memberships",
        path=f"/api/{kind}s/{{group_id}}/profiles",
        description=f"Snapshot of every {kind}'s members: {kind} id, profile id and when the profile joined.",
        sync="membership",
        primary_key=(group, "profile_id"),
        page_size=100,
        tier=Tier.L,
        params={"fields[profile]": "joined_group_at"},
        columns=(
            Column(group, f"pass.{group}"),
            Column("profile_id", "id"),
            Column("joined_group_at", "attributes.joined_group_at", TS),
        ),
        groups=Groups(f"/api/{kind}s", group, page_size=10),
    )


_BASE: tuple[KlaviyoObject, ...] = (
    KlaviyoObject(
        name="profiles",
        path="/api/profiles",
        description="Klaviyo profiles, partitioned by the day they were last updated (`updated`). "
        "Subscriptions and predictive analytics are optional JSON columns.",
        sync="incremental",
        primary_key=("id",),
        cursor="updated",
        # /api/profiles allows only greater-than / less-than on `updated`.
        lower_op="greater-than",
        lower_slack_seconds=1,
        page_size=100,
        tier=Tier.L,
        columns=(
            ID,
            *PROFILE_ATTRS,
            Column("subscriptions", "attributes.subscriptions", "JSON"),
            Column("predictive_analytics", "attributes.predictive_analytics", "JSON"),
        ),  # fmt: skip
        sweep=Sweep({"fields[profile]": "id"}),
        additional_fields=(
            AdditionalField("subscriptions", "additional-fields[profile]", default=True),
            # Asking for predictive analytics moves the call to a slower bucket (10/s, 150/m).
            AdditionalField("predictive_analytics", "additional-fields[profile]", default=False, tier=Tier.M),
        ),
    ),
    KlaviyoObject(
        name="events",
        path="/api/events",
        description="Klaviyo events, partitioned by the day they happened (`datetime`), with profile and "
        "metric ids. Optionally restricted to selected metrics (one pass per metric).",
        sync="incremental",
        primary_key=("id",),
        cursor="datetime",
        page_size=1000,
        tier=Tier.XL,
        columns=(
            ID,
            *_attrs(f"datetime:{TS}", "timestamp:BIGINT", "uuid", "event_properties:JSON"),
            Column("profile_id", "relationships.profile"),
            Column("metric_id", "relationships.metric"),
        ),
        # /api/events filters metric_id with `equals` only: one pass per selected metric.
        fan_out=(
            FanOut("metric_id", 'equals(metric_id,"{value}")', option="event_metrics", lookup="/api/metrics",
                   groups_lookup=("/api/custom-metrics", "metrics")),
        ),
    ),
    KlaviyoObject(
        name="campaigns",
        path="/api/campaigns",
        sweep=Sweep({"fields[campaign]": "id"}),
        description="Klaviyo campaigns of every channel (email, sms, mobile_push), archived included, "
        "partitioned by the day they were last updated (`updated_at`).",
        sync="incremental",
        primary_key=("id",),
        cursor="updated_at",
        page_size=100,
        tier=Tier.M,
        columns=(
            ID,
            Column("channel", "pass.channel"),
            *_attrs(
                "name",
                "status",
                "archived:BOOLEAN",
                f"created_at:{TS}",
                f"scheduled_at:{TS}",
                f"updated_at:{TS}",
                f"send_time:{TS}",
                "audiences:JSON",
                "send_options:JSON",
                "tracking_options:JSON",
                "send_strategy:JSON",
            ),  # fmt: skip
        ),
        # The API requires one channel a request; archived campaigns only come when asked for.
        fan_out=(
            FanOut(
                "channel",
                "equals(messages.channel,'{value}')",
                values=("email", "sms", "mobile_push"),
                option="campaign_channels",
                column="channel",
            ),
            FanOut("archived", "equals(archived,{value})", values=("false", "true"), option="archived"),
        ),
    ),
    KlaviyoObject(
        name="flows",
        path="/api/flows",
        sweep=Sweep({"fields[flow]": "id"}),
        description="Klaviyo flows, archived included, partitioned by the day they were last updated.",
        sync="incremental",
        primary_key=("id",),
        cursor="updated",
        page_size=50,
        tier=Tier.S,
        columns=(
            ID,
            *_attrs("name", "status", "archived:BOOLEAN", "trigger_type", f"created:{TS}", f"updated:{TS}"),
        ),
        fan_out=(
            FanOut("archived", "equals(archived,{value})", values=("false", "true"), option="archived"),
        ),
    ),
    KlaviyoObject(
        name="templates",
        path="/api/templates",
        sweep=Sweep({"fields[template]": "id"}),
        description="Klaviyo templates (HTML, text, AMP), partitioned by the day they were last updated.",
        sync="incremental",
        primary_key=("id",),
        cursor="updated",
        page_size=10,
        tier=Tier.L,
        columns=(ID, *_attrs("name", "editor_type", "html", "text", "amp", f"created:{TS}", f"updated:{TS}")),
    ),
    KlaviyoObject(
        name="lists",
        path="/api/lists",
        description="Snapshot of Klaviyo lists as captured on the partition's day.",
        sync="snapshot",
        primary_key=("id",),
        page_size=10,
        tier=Tier.L,
        columns=(ID, *_attrs("name", "opt_in_process", f"created:{TS}", f"updated:{TS}", "profile_count:INTEGER")),
        # Opt-in (list_profile_count=True): only GET /api/lists/{id} serves it, at 1/s and 15/m.
        additional_fields=(_profile_count("list"),),
    ),
    KlaviyoObject(
        name="segments",
        path="/api/segments",
        description="Snapshot of Klaviyo segments (definition as JSON) as captured on the partition's day.",
        sync="snapshot",
        primary_key=("id",),
        page_size=10,
        tier=Tier.L,
        columns=(
            ID,
            *_attrs(
                "name",
                "definition:JSON",
                "is_active:BOOLEAN",
                "is_processing:BOOLEAN",
                "is_starred:BOOLEAN",
                f"created:{TS}",
                f"updated:{TS}",
                "profile_count:INTEGER",
            ),  # fmt: skip
        ),
        additional_fields=(_profile_count("segment"),),  # opt-in: segment_profile_count=True
    ),
    KlaviyoObject(
        name="metrics",
        path="/api/metrics",
        description="Snapshot of Klaviyo metrics (event types) and their integration.",
        sync="snapshot",
        primary_key=("id",),
        page_size=None,  # /api/metrics takes no page[size]; it answers up to 200 a page
        tier=Tier.M,
        columns=(ID, *_attrs("name", f"created:{TS}", f"updated:{TS}", "integration:JSON")),
    ),
    _membership("list"),
    _membership("segment"),
    KlaviyoObject(
        name="tags",
        path="/api/tags",
        description="Snapshot of Klaviyo tags and the tag group each belongs to.",
        sync="snapshot",
        primary_key=("id",),
        page_size=50,
        tier=Tier.S,
        params={"include": "tag-group"},
        columns=(ID, *_attrs("name"), Column("tag_group_id", "relationships.tag-group")),
    ),
)
_PARENTS = {o.name: o for o in _BASE}
# Flow action types that hold no message (the spec's action definitions without a message): their
# /flow-messages would be empty, so flow_messages does not spend an S-tier request on them.
NO_MESSAGE_ACTIONS = (
    "time-delay", "conditional-branch", "trigger-branch", "update-profile", "target-date",
    "countdown-delay", "back-in-stock-delay", "list-update", "multi-branch-split", "action-output-split",
)  # fmt: skip


def _child(**entry: Any) -> KlaviyoObject:
    """A child entry read through its parent's passes: path, tier, page size and window come from it."""
    link: Parent = entry["parent"]
    base = _PARENTS[link.object]
    defaults: dict[str, Any] = {"path": base.path, "tier": base.tier, "page_size": base.page_size}
    if entry.get("sync", "incremental") == "incremental":
        defaults.update(
            sync="incremental",
            cursor=base.cursor,
            lower_op=base.lower_op,
            upper_op=base.upper_op,
            lower_slack_seconds=base.lower_slack_seconds,
        )
    if link.via == "each" and "path" not in entry:
        raise ValueError(f"{entry['name']}: a child read once per linked id needs its own path")
    return KlaviyoObject(**{**defaults, **entry})


def _tag_links(parent: str, rtype: str) -> KlaviyoObject:
    """``<rtype>_tags``: which tags each campaign (flow, list, segment) carries, from ``include=tags``."""
    owner = f"{rtype}_id"
    return _child(
        name=f"{rtype}_tags",
        description=f"Snapshot of the tags on every {rtype}: one row per {rtype} and tag, read as "
        f"`include=tags` on the {parent} passes (no request per tag).",
        sync="snapshot",
        primary_key=(owner, "tag_id"),
        columns=(Column(owner, "parent.id"), Column("tag_id", "id")),
        # Only the linkage is needed: the smallest sparse fieldsets the spec allows.
        parent=Parent(parent, "tags", via="linkage", params={f"fields[{rtype}]": "id", "fields[tag]": "name"}),
    )


_CHILDREN: tuple[KlaviyoObject, ...] = (
    _child(
        name="campaign_messages",
        description="The messages of every campaign (channel, label, content, send times, template id), "
        "read as `include=campaign-messages` on the campaigns passes and partitioned by the campaign's "
        "`updated_at`, so a day's run reads only the campaigns that changed that day.",
        primary_key=("id",),
        columns=(
            ID,
            Column("campaign_id", "parent.id"),
            Column("campaign_updated_at", "parent.updated_at", TS),
            Column("channel", "attributes.definition.channel"),
            Column("label", "attributes.definition.label"),
            Column("content", "attributes.definition.content", "JSON"),
            Column("template_id", "relationships.template"),
            *_attrs("send_times:JSON", f"created_at:{TS}", f"updated_at:{TS}", "definition:JSON"),
        ),
        parent=Parent("campaigns", "campaign-messages", params={"fields[campaign]": "updated_at"}),
    ),
    _child(
        name="flow_actions",
        description="The actions of every flow (type and definition), read as `include=flow-actions` on "
        "the flows passes and partitioned by the flow's `updated`: a day's run reads only changed flows.",
        primary_key=("id",),
        columns=(
            ID,
            Column("flow_id", "parent.id"),
            Column("flow_updated", "parent.updated", TS),
            Column("action_type", "attributes.definition.type"),
            *_attrs(f"created:{TS}", f"updated:{TS}", "definition:JSON"),
        ),
        parent=Parent("flows", "flow-actions", params={"fields[flow]": "updated"}),
    ),
    _child(
        name="flow_messages",
        path="/api/flow-actions/{id}/flow-messages",
        description="The messages of every flow action, one read per action of the flows that changed "
        "(flow actions come from `include=flow-actions` on the flows passes), partitioned by the flow's "
        "`updated` so a day's run spends the 60/m tier only on changed flows.",
        primary_key=("id",),
        tier=Tier.S,
        page_size=50,
        columns=(
            ID,
            Column("flow_action_id", "pass.flow_action_id"),
            Column("flow_id", "parent.id"),
            Column("flow_updated", "parent.updated", TS),
            Column("template_id", "attributes.definition.template_id"),
            *_attrs("channel", f"created:{TS}", f"updated:{TS}", "definition:JSON"),
        ),
        parent=Parent(
            "flows",
            "flow-actions",
            via="each",
            key="flow_action_id",
            params={"fields[flow]": "updated", "fields[flow-action]": "definition"},
            skip=("definition.type", NO_MESSAGE_ACTIONS),
        ),
    ),
    _tag_links("campaigns", "campaign"),
    _tag_links("flows", "flow"),
    _tag_links("lists", "list"),
    _tag_links("segments", "segment"),
)

_SUPPRESSION = "profiles.subscriptions.email.marketing"
_DERIVED: tuple[KlaviyoObject, ...] = (
    KlaviyoObject(
        name="exclusions",
        path="/api/profiles",
        description="Exclusions: the global and list suppressions of every current profile, one row per profile, channel, "
        "list (NULL for a global suppression) and reason, with its timestamp: email `suppression[]` and "
        "`list_suppressions[]` and SMS opt-outs (SMS consent `UNSUBSCRIBED`; the spec gives SMS no "
        "suppression list). A view over `klaviyo.profiles_current` (their `subscriptions`): no API calls, "
        "and a profile deleted or merged away in Klaviyo leaves it with `profiles_current`.",
        sync="derived",
        primary_key=("profile_id", "channel", "list_id", "reason"),
        tier=Tier.L,  # no requests of its own: the profiles read it comes from draws on this tier
        columns=(
            Column("profile_id", "profiles.id"),
            Column("channel", "profiles.subscriptions.<email|sms>"),
            Column("list_id", f"{_SUPPRESSION}.list_suppressions[].list_id"),
            Column("reason", f"{_SUPPRESSION}.suppression[].reason"),
            Column("timestamp", f"{_SUPPRESSION}.suppression[].timestamp", TS),
            Column("source", "suppression | list_suppression | consent"),
        ),
        derived=Derived("profiles", nullable_key=("list_id",), count_by=("channel", "source", "reason"),
                        needs="profile_subscriptions"),
    ),
)

OBJECTS: tuple[KlaviyoObject, ...] = _BASE + _CHILDREN + _DERIVED

# Statistics asked for by default: counts and value (rates are derivable from them, and exact).
REPORT_STATISTICS = (
    "recipients", "delivered", "bounced", "opens", "opens_unique", "clicks", "clicks_unique",
    "conversions", "conversion_uniques", "conversion_value", "unsubscribes", "spam_complaints",
)  # fmt: skip
COUNT_STATISTICS = {"conversion_value", "average_order_value", "revenue_per_recipient", "text_message_spend",
                    "text_message_roi", "text_message_credit_usage_amount"}


def stat_type(name: str) -> str:
    """Warehouse type of a statistic: rates and money are DOUBLE, counts BIGINT."""
    return "DOUBLE" if name.endswith("_rate") or name in COUNT_STATISTICS else "BIGINT"


def _report(name: str, path: str, owner: str, report: Report, description: str) -> KlaviyoObject:
    """A Reporting API entry: grouping columns, the conversion metric, one column per default statistic."""
    groups = tuple(Column(g, f"groupings.{g}") for g in report.group_by)
    series = (Column("datetime", "series.datetime", TS),) if report.interval else ()
    return KlaviyoObject(
        name=name,
        path=path,
        description=description,
        sync="report",
        primary_key=(*report.group_by, *(c.name for c in series)),
        tier=Tier.REPORTING,
        columns=(
            *groups,
            *series,
            Column("conversion_metric_id", "pass.conversion_metric_id"),
            *(Column(s, f"statistics.{s}", stat_type(s)) for s in report.statistics),
        ),
        report=report,
    )


REPORTS: tuple[KlaviyoObject, ...] = (
    _report(
        "campaign_values", "/api/campaign-values-reports", "campaign",
        Report("campaign-values-report", ("campaign_id", "campaign_message_id", "send_channel"), REPORT_STATISTICS),
        "Campaign performance per report day (UTC): one row per campaign, message and channel with activity "
        "that day, from the Reporting API (`POST /api/campaign-values-reports`, timeframe = the day, "
        "conversions of the configured conversion metric, default Placed Order). One request per day.",
    ),
    _report(
        "flow_values", "/api/flow-values-reports", "flow",
        Report("flow-values-report", ("flow_id", "flow_message_id", "send_channel"), REPORT_STATISTICS),
        "Flow performance per report day (UTC): one row per flow, flow message and channel with activity "
        "that day (`POST /api/flow-values-reports`, timeframe = the day). One request per day.",
    ),
    _report(
        "flow_series", "/api/flow-series-reports", "flow",
        Report("flow-series-report", ("flow_id", "flow_message_id", "send_channel"), REPORT_STATISTICS,
               days_per_request=60, interval="daily"),
        "Flow performance as a daily series (`POST /api/flow-series-reports`, interval daily): one row per "
        "flow, message, channel and day; one request covers up to 60 days, so a backfill costs a sixtieth "
        "of flow_values' budget.",
    ),
)

OBJECTS_BY_NAME: dict[str, KlaviyoObject] = {o.name: o for o in (*OBJECTS, *REPORTS)}


def get_object(name: str) -> KlaviyoObject:
    """The entry called ``name``; a clear error lists the known names."""
    try:
        return OBJECTS_BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown Klaviyo object {name!r}: choose from {', '.join(OBJECTS_BY_NAME)}"
        ) from None
