"""THE declarative table of Klaviyo objects to ingest (like Singer stream definitions or a dlt rest_api config).

Each `KlaviyoObject` says where an object lives, how it is keyed, how a day of it is selected, how big a
page may be, which rate-limit tier it draws on, which columns it lands in and how one partition fans out
into several API passes. Adding an object means adding an entry here, not writing a function: `fetch`,
`flatten`, `assets` and the warehouse read everything from the entry.

Column sources: ``id``; ``attributes.<name>``; ``relationships.<name>`` (the related resource's id);
``pass.<name>`` (a value fixed by the fan-out pass, e.g. the campaign channel or the list id).
Sync modes: ``incremental`` (a partition = records whose cursor lies in [day, next day), filtered
server-side), ``snapshot`` (a partition = the state captured for that day), ``membership`` (a snapshot
of each list's or segment's members, one pass per group).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from klaviyo_dagster.client.tiers import Tier

SyncMode = Literal["incremental", "snapshot", "membership"]

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
    """A switchable ``additional-fields[...]`` value (column ``name``, JSON), with the tier it costs."""

    name: str
    param: str
    default: bool
    tier: Tier | None = None


@dataclass(frozen=True)
class Groups:
    """Membership objects: where the groups (lists, segments) are listed, and the id column."""

    path: str
    column: str
    page_size: int | None = None


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

    @property
    def incremental(self) -> bool:
        return self.sync == "incremental"

    @property
    def cursor_column(self) -> str | None:
        """The warehouse column holding the cursor (None for snapshots)."""
        if self.cursor is None:
            return None
        for col in self.columns:
            if col.source == f"attributes.{self.cursor}":
                return col.name
        raise ValueError(f"{self.name}: cursor {self.cursor!r} has no column")

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


OBJECTS: tuple[KlaviyoObject, ...] = (
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
        columns=(ID, *_attrs("name", "opt_in_process", f"created:{TS}", f"updated:{TS}")),
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
            ),  # fmt: skip
        ),
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
)


OBJECTS_BY_NAME: dict[str, KlaviyoObject] = {o.name: o for o in OBJECTS}


def get_object(name: str) -> KlaviyoObject:
    """The entry called ``name``; a clear error lists the known names."""
    try:
        return OBJECTS_BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown Klaviyo object {name!r}: choose from {', '.join(OBJECTS_BY_NAME)}"
        ) from None
