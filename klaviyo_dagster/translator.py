"""`DagsterKlaviyoTranslator`: how every Klaviyo asset (ingest, models, activation) becomes an `AssetSpec`.

Like `DagsterSlingTranslator` / `DagsterFivetranTranslator`: the factories describe each asset as
`KlaviyoAssetProps` (what it is, which table it writes or reads) and ask the translator for its spec: key,
group, owners, tags, kinds, description, metadata (`dagster/table_name`, `dagster/column_schema`),
`automation_condition` and `freshness_policy`. Subclass it and override `get_asset_spec`, or pass options
(key prefix, group names, owners, tags, automation conditions by role or asset name); from YAML the
component's `translation` applies on top of the spec this returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg

if TYPE_CHECKING:
    from klaviyo_dagster.ingest.objects import KlaviyoObject

Role = Literal["ingest", "model", "activation"]

DEFAULT_KEY_PREFIX: tuple[str, ...] = ("klaviyo",)
DEFAULT_GROUPS: Mapping[str, str] = {
    "ingest": "klaviyo_ingest",
    "model": "klaviyo_models",
    "activation": "klaviyo_activation",
}
KINDS: Mapping[str, frozenset[str]] = {
    "ingest": frozenset({"klaviyo", "duckdb"}),
    "model": frozenset({"duckdb", "sql"}),
    "activation": frozenset({"klaviyo"}),
}


@dataclass(frozen=True)
class KlaviyoAssetProps:
    """What the translator knows about one asset.

    ``name``: the object (``profiles``) or activation (``profile_import``) name, or for models the table's
    name; ``table``: the warehouse table it writes (ingest, models) or reads (activation), fully qualified
    (``catalog.schema.table``) when known; ``object``: the objects-table entry (ingest only);
    ``column_schema``: the table's columns when known at definition time; ``deps``: upstream keys.
    """

    role: Role
    name: str
    description: str
    table: str | None = None
    object: KlaviyoObject | None = None
    column_schema: dg.TableSchema | None = None
    deps: tuple[dg.AssetKey, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Models are keyed by their table (``activation_inputs/profiles_enriched``), not under the prefix.
    key: dg.AssetKey | None = None


@dataclass
class DagsterKlaviyoTranslator:
    """Turns `KlaviyoAssetProps` into `AssetSpec`s; every option has Dagster's default meaning.

    - ``key_prefix``: keys are ``[*key_prefix, name]`` for ingest and activation assets (default ``klaviyo``;
      a second account uses e.g. ``["klaviyo_eu"]``);
    - ``group_names``: group per role (``ingest``, ``model``, ``activation``);
    - ``owners``, ``tags``: added to every asset;
    - ``automation_conditions`` / ``freshness_policies``: by asset name first, then by role.
    """

    key_prefix: Sequence[str] = DEFAULT_KEY_PREFIX
    group_names: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_GROUPS))
    owners: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    automation_conditions: Mapping[str, dg.AutomationCondition] = field(default_factory=dict)
    freshness_policies: Mapping[str, dg.FreshnessPolicy] = field(default_factory=dict)

    @property
    def name_prefix(self) -> str:
        """Prefix of job, schedule, sensor and pool names (``klaviyo`` by default, ``klaviyo_eu`` ...)."""
        return "_".join(self.key_prefix) or "klaviyo"

    def get_asset_key(self, props: KlaviyoAssetProps) -> dg.AssetKey:
        """``[*key_prefix, name]``, or the props' own key (models)."""
        return props.key or dg.AssetKey([*self.key_prefix, props.name])

    def _pick(self, table: Mapping[str, Any], props: KlaviyoAssetProps) -> Any:
        return table.get(props.name, table.get(props.role))

    def get_asset_spec(self, props: KlaviyoAssetProps) -> dg.AssetSpec:
        """The spec of one asset (override to follow your own conventions)."""
        metadata: dict[str, Any] = dict(props.metadata)
        if props.table and props.role != "activation":
            metadata["dagster/table_name"] = props.table
        if props.column_schema is not None:
            metadata["dagster/column_schema"] = props.column_schema
        group = dict(DEFAULT_GROUPS) | dict(self.group_names)
        return dg.AssetSpec(
            key=self.get_asset_key(props),
            description=props.description,
            group_name=group[props.role],
            owners=list(self.owners),
            tags=dict(self.tags),
            kinds=set(KINDS[props.role]),
            metadata=metadata,
            deps=list(props.deps),
            automation_condition=self._pick(self.automation_conditions, props),
            freshness_policy=self._pick(self.freshness_policies, props),
        )


def column_schema(
    columns: Mapping[str, str],
    primary_key: Sequence[str] = (),
    descriptions: Mapping[str, str] | None = None,
    nullable: Sequence[str] = (),
) -> dg.TableSchema:
    """A `TableSchema` from ``{column: sql type}``: primary-key columns (but those in ``nullable``) are
    non-null, and the key is a table constraint (``PRIMARY KEY (...)``)."""
    descriptions = descriptions or {}
    pk = set(primary_key) - set(nullable)
    cols = [
        dg.TableColumn(
            name=name,
            type=sql_type.lower(),
            description=descriptions.get(name),
            constraints=dg.TableColumnConstraints(nullable=False) if name in pk else None,
        )
        for name, sql_type in columns.items()
    ]
    # A key with a part that may be NULL is a unique key, not a primary key.
    kind = "UNIQUE" if set(nullable) & set(primary_key) else "PRIMARY KEY"
    constraints = dg.TableConstraints(other=[f"{kind} ({', '.join(primary_key)})"]) if primary_key else None
    return dg.TableSchema(columns=cols, constraints=constraints)
