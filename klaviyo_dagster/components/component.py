"""`KlaviyoComponent`: one Klaviyo account (ingest, optional activation) from a `defs.yaml`, for `dg`.

Built like dagster-sling's and dagster-fivetran's components (`dg.Component`, `dg.Model`, `dg.Resolvable`,
a scaffolder, a translator, `translation` in YAML). Its attributes are the factories' options
(`factories.py`): ``klaviyo`` (the `KlaviyoResource`), ``warehouse`` (the `WarehouseResource`, its schema the
tables' schema), ``key_prefix``, ``resource_key`` / ``warehouse_resource_key``, ``ingest``, ``activation`` and
``translation`` (applied to every asset's spec; template vars ``props``, a `KlaviyoAssetProps`, and ``spec``).

Secrets stay secrets: a resource value written as ``{{ env.NAME }}`` or ``{{ env('NAME', default) }}`` becomes
``dg.EnvVar("NAME")`` when NAME is set (the UI then shows the variable's name, the run reads its value), and
the default (or unset) when it is not. Any other template resolves as usual.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any

import dagster as dg
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver
from pydantic import ConfigDict, Field

from klaviyo_dagster.automation.schedules import (
    DEFAULT_CRON,
    DEFAULT_LOOKBACK_DAYS,
    DEFAULT_REPORT_CRON,
    DEFAULT_REPORT_LOOKBACK_DAYS,
)
from klaviyo_dagster.components.scaffolder import KlaviyoComponentScaffolder
from klaviyo_dagster.factories import build_activation_definitions, build_ingest_definitions
from klaviyo_dagster.ingest import CAMPAIGN_CHANNELS, DEFAULT_START_DATE
from klaviyo_dagster.ingest.reports import DEFAULT_CONVERSION_METRIC
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.translator import DagsterKlaviyoTranslator, KlaviyoAssetProps
from klaviyo_dagster.warehouse import WarehouseResource

_ENV_TEMPLATE = re.compile(
    r"""^\{\{\s*env(?:\.(?P<dot>\w+)|\(\s*['"](?P<call>\w+)['"]\s*(?:,\s*['"](?P<default>[^'"]*)['"]\s*)?\))\s*\}\}$"""
)


def _env_or_value(context: dg.ResolutionContext, value: Any) -> Any:
    """``{{ env.X }}`` -> EnvVar("X") when X is set (else its default or None); other values resolved."""
    if isinstance(value, str) and (m := _ENV_TEMPLATE.match(value.strip())):
        name = m.group("dot") or m.group("call")
        return dg.EnvVar(name) if os.environ.get(name) else m.group("default")
    return context.resolve_value(value)


def _resolve_fields(context: dg.ResolutionContext, model: Any) -> dict[str, Any]:
    raw = model if isinstance(model, Mapping) else model.model_dump(exclude_unset=True, by_alias=True)
    return {k: v for k, v in ((k, _env_or_value(context, v)) for k, v in raw.items()) if v is not None}


class KlaviyoAccountModel(dg.Model):
    """The Klaviyo account (`KlaviyoResource` fields)."""

    api_key: str | None = Field(None, description="Private API key: write `{{ env.KLAVIYO_API_KEY }}`.")
    base_url: str | None = Field(None, description="API root (default https://a.klaviyo.com).")
    revision: str | None = Field(None, description="Klaviyo API revision header.")
    max_retries: int | None = None
    max_backoff: float | None = None
    rate_limit_scale: float | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    max_concurrency: int | None = None


class WarehouseModel(dg.Model):
    """The warehouse (`WarehouseResource` fields); ``schema`` is where this account's tables land."""

    database: str | None = Field(None, description="DuckDB file (default $KLAVIYO_DUCKDB_PATH or data/warehouse.duckdb).")
    schema_: str = Field("klaviyo", alias="schema", description="Schema of the ingested tables.")


def _resolve_klaviyo(context: dg.ResolutionContext, model: Any) -> KlaviyoResource:
    return KlaviyoResource(**_resolve_fields(context, model))


def _resolve_warehouse(context: dg.ResolutionContext, model: Any) -> WarehouseResource:
    return WarehouseResource(**_resolve_fields(context, model))


class IngestModel(dg.Resolvable, dg.Model):
    """Options of `build_ingest_definitions`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    enabled: bool = True
    start_date: str = DEFAULT_START_DATE
    objects: list[str] | None = None
    event_metrics: list[str] | None = None
    profile_subscriptions: bool = True
    profile_predictive_analytics: bool = False
    list_profile_count: bool = False
    segment_profile_count: bool = False
    campaign_channels: list[str] = Field(default_factory=lambda: list(CAMPAIGN_CHANNELS))
    include_archived: bool = True
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    schedule: bool = True
    cron_schedule: str = DEFAULT_CRON
    reports: bool | list[str] = Field(
        False, description="Reporting API assets (campaign_values, flow_values, flow_series): true for all, or names.")
    conversion_metric: str = DEFAULT_CONVERSION_METRIC
    report_statistics: list[str] | None = None
    report_cron: str = DEFAULT_REPORT_CRON
    report_lookback_days: int = DEFAULT_REPORT_LOOKBACK_DAYS
    automation_condition: dg.Injected[dg.AutomationCondition] | None = Field(
        None, description="e.g. `{{ dg.AutomationCondition.on_cron('15 2 * * *') }}` on every ingest asset.")
    freshness_policy: dg.Injected[dg.FreshnessPolicy] | None = None


class ActivationModel(dg.Resolvable, dg.Model):
    """Options of `build_activation_definitions` (off unless ``enabled``: it writes to the account)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    enabled: bool = False
    profiles_table: str = "activation_inputs.profiles_enriched"
    audience_table: str = "activation_inputs.vip_audience"
    list_id: str | None = None
    list_name: str | None = None
    known_profiles_table: str | None = None
    include_demo_models: bool = False
    vip_min_orders: int = 3
    events_table: str | None = Field(None, description="Adds klaviyo/event_import reading this table.")
    consent_table: str | None = Field(
        None, description="Adds klaviyo/subscriptions (sends nothing without allow_consent_changes in run config).")
    deletions_table: str | None = Field(
        None, description="Adds klaviyo/privacy_deletions (deletes nothing without allow_deletions in run config).")
    automation_condition: dg.Injected[dg.AutomationCondition] | None = Field(
        None, description="e.g. `{{ dg.AutomationCondition.eager() }}` on both activation assets.")


class _ComponentTranslator(DagsterKlaviyoTranslator):
    """The component's translator: its ``get_asset_spec`` (overridable), then the YAML ``translation``."""

    def __init__(self, component: KlaviyoComponent) -> None:
        base = component.base_translator()
        super().__init__(key_prefix=base.key_prefix, automation_conditions=base.automation_conditions,
                         freshness_policies=base.freshness_policies)
        self.component = component

    def get_asset_spec(self, props: KlaviyoAssetProps) -> dg.AssetSpec:
        spec = self.component.get_asset_spec(props)
        translation = self.component.translation
        return translation(spec, props) if translation is not None else spec


@dg.scaffold_with(KlaviyoComponentScaffolder)
class KlaviyoComponent(dg.Component, dg.Model, dg.Resolvable):
    """A Klaviyo account as Dagster assets: every object ingested into DuckDB, optionally activation back.

    Scaffold with ``dg scaffold defs klaviyo_dagster.KlaviyoComponent klaviyo``; example:

    .. code-block:: yaml

        type: klaviyo_dagster.KlaviyoComponent
        attributes:
          klaviyo:
            api_key: "{{ env.KLAVIYO_API_KEY }}"
          warehouse:
            schema: klaviyo
          ingest:
            objects: [profiles, events, lists]
            automation_condition: "{{ dg.AutomationCondition.on_cron('15 2 * * *') }}"
          translation:
            owners: [team:crm]
    """

    # Typed Any for dg's resolver (it would inspect the resources' own fields); the values are a
    # KlaviyoResource and a WarehouseResource, built by the resolvers from the models shown in YAML.
    klaviyo: Annotated[Any, dg.Resolver(_resolve_klaviyo, model_field_type=KlaviyoAccountModel)] = Field(
        default_factory=KlaviyoResource, description="The Klaviyo account (KlaviyoResource)."
    )
    warehouse: Annotated[Any, dg.Resolver(_resolve_warehouse, model_field_type=WarehouseModel)] = Field(
        default_factory=WarehouseResource, description="Where the tables land (WarehouseResource)."
    )
    key_prefix: list[str] = Field(default_factory=lambda: ["klaviyo"], description="Asset key prefix.")
    resource_key: str = Field("klaviyo", description="Resource key of this account (another account: another key).")
    warehouse_resource_key: str = Field("warehouse", description="Resource key of this account's warehouse.")
    ingest: IngestModel = Field(default_factory=IngestModel)
    activation: ActivationModel = Field(default_factory=ActivationModel)
    translation: (
        Annotated[
            TranslationFn[KlaviyoAssetProps],
            TranslationFnResolver(template_vars_for_translation_fn=lambda props: {"props": props}),
        ]
        | None
    ) = Field(None, description="Asset attributes applied to every asset (template vars: props, spec).")

    def base_translator(self) -> DagsterKlaviyoTranslator:
        """The translator with this component's options (key prefix, automation conditions, freshness)."""
        conditions: dict[str, dg.AutomationCondition] = {}
        if self.ingest.automation_condition is not None:
            conditions["ingest"] = self.ingest.automation_condition
        if self.activation.automation_condition is not None:
            conditions["activation"] = self.activation.automation_condition
        freshness = {"ingest": self.ingest.freshness_policy} if self.ingest.freshness_policy else {}
        return DagsterKlaviyoTranslator(key_prefix=tuple(self.key_prefix), automation_conditions=conditions,
                                        freshness_policies=freshness)

    def get_asset_spec(self, props: KlaviyoAssetProps) -> dg.AssetSpec:
        """The spec of one asset before ``translation`` (override in a subclass to change the defaults)."""
        return self.base_translator().get_asset_spec(props)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        translator = _ComponentTranslator(self)
        resources = {self.resource_key: self.klaviyo, self.warehouse_resource_key: self.warehouse}
        keys = {"translator": translator, "klaviyo_resource_key": self.resource_key,
                "warehouse_resource_key": self.warehouse_resource_key}
        parts = []
        if self.ingest.enabled:
            i = self.ingest
            parts.append(build_ingest_definitions(
                start_date=i.start_date, objects=i.objects, event_metrics=i.event_metrics,
                profile_subscriptions=i.profile_subscriptions,
                profile_predictive_analytics=i.profile_predictive_analytics,
                list_profile_count=i.list_profile_count, segment_profile_count=i.segment_profile_count,
                campaign_channels=i.campaign_channels, include_archived=i.include_archived,
                lookback_days=i.lookback_days, reports=i.reports, conversion_metric=i.conversion_metric,
                report_statistics=i.report_statistics, report_cron=i.report_cron,
                report_lookback_days=i.report_lookback_days,
                schedule=i.schedule, cron_schedule=i.cron_schedule, resources=resources,
                schema=self.warehouse.schema_, **keys,
            ))  # fmt: skip
        if self.activation.enabled:
            a = self.activation
            parts.append(build_activation_definitions(
                a.profiles_table, a.audience_table, list_id=a.list_id, list_name=a.list_name,
                known_profiles_table=a.known_profiles_table, source_schema=self.warehouse.schema_,
                include_demo_models=a.include_demo_models, vip_min_orders=a.vip_min_orders,
                events_table=a.events_table, consent_table=a.consent_table, deletions_table=a.deletions_table,
                resources=resources, **keys,
            ))  # fmt: skip
        return dg.Definitions.merge(*parts, dg.Definitions(resources=resources))

