"""Activation: warehouse tables back into Klaviyo (profile imports, list membership, events, consent,
privacy deletions), as Dagster assets.

``build_activation_assets()`` returns the assets ``klaviyo/profile_import`` and
``klaviyo/list_membership_sync`` (specs from `DagsterKlaviyoTranslator`, group ``klaviyo_activation``), the
demo model assets when asked for (``include_demo_models``), and external specs for input tables nothing
here builds. The job, the table-change sensor and the schedule are added one layer up
(``klaviyo_dagster.build_activation_definitions`` in `factories.py`, using `automation/`); activation never
imports automation.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import AssetKey, AssetsDefinition, AssetSpec

from klaviyo_dagster.activate.demo_models import (
    DEFAULT_VIP_LIST,
    PROFILES_ENRICHED,
    VIP_AUDIENCE,
    build_demo_model_assets,
)
from klaviyo_dagster.activate.event_import import (
    EventColumns,
    EventImportResult,
    EventImportSettings,
    build_event_import_asset,
    event_import_description,
    run_event_import,
)
from klaviyo_dagster.activate.inputs import ActivationTarget, table_asset_key
from klaviyo_dagster.activate.list_sync import (
    ActivationRefused,
    ListSyncResult,
    ListSyncSettings,
    build_list_sync_asset,
    list_sync_description,
    run_list_sync,
)
from klaviyo_dagster.activate.privacy import (
    PrivacyColumns,
    PrivacyResult,
    PrivacySettings,
    build_privacy_deletions_asset,
    privacy_deletions_description,
    run_privacy_deletions,
)
from klaviyo_dagster.activate.profile_import import (
    ProfileImportResult,
    ProfileImportSettings,
    build_profile_import_asset,
    profile_import_description,
    run_profile_import,
)
from klaviyo_dagster.activate.render import ProfileColumns
from klaviyo_dagster.activate.subscriptions import (
    SubscriptionColumns,
    SubscriptionResult,
    SubscriptionSettings,
    build_subscriptions_asset,
    run_subscriptions,
    subscriptions_description,
)
from klaviyo_dagster.translator import DagsterKlaviyoTranslator, KlaviyoAssetProps

ACTIVATION_JOB = "klaviyo_activation_job"
ACTIVATION_SENSOR = "klaviyo_activation_inputs_sensor"

__all__ = [
    "ACTIVATION_JOB",
    "ACTIVATION_SENSOR",
    "ActivationRefused",
    "ActivationTarget",
    "EventColumns",
    "EventImportResult",
    "EventImportSettings",
    "ListSyncResult",
    "ListSyncSettings",
    "PrivacyColumns",
    "PrivacyResult",
    "PrivacySettings",
    "ProfileColumns",
    "ProfileImportResult",
    "ProfileImportSettings",
    "SubscriptionColumns",
    "SubscriptionResult",
    "SubscriptionSettings",
    "build_activation_assets",
    "run_event_import",
    "run_list_sync",
    "run_privacy_deletions",
    "run_profile_import",
    "run_subscriptions",
]


def build_activation_assets(
    profiles_table: str = PROFILES_ENRICHED,
    audience_table: str = VIP_AUDIENCE,
    *,
    profile_columns: ProfileColumns | None = None,
    audience_columns: ProfileColumns | None = None,
    list_id: str | None = None,
    list_name: str | None = None,
    known_profiles_table: str | None = None,
    source_schema: str = "klaviyo",
    include_demo_models: bool = False,
    vip_min_orders: int = 3,
    vip_list_name: str = DEFAULT_VIP_LIST,
    translator: DagsterKlaviyoTranslator | None = None,
    klaviyo_resource_key: str = "klaviyo",
    warehouse_resource_key: str = "warehouse",
    pool: str | None = None,
    catalog: str = "warehouse",
    upstream: Sequence[AssetKey] | None = None,
    events_table: str | None = None,
    event_columns: EventColumns | None = None,
    consent_table: str | None = None,
    consent_columns: SubscriptionColumns | None = None,
    deletions_table: str | None = None,
    deletion_columns: PrivacyColumns | None = None,
) -> list[AssetsDefinition | AssetSpec]:
    """Activation assets, their inputs (demo models or external specs).

    ``events_table`` / ``consent_table`` / ``deletions_table`` (off unless named) add ``klaviyo/event_import``,
    ``klaviyo/subscriptions`` and ``klaviyo/privacy_deletions``; the last two send nothing until their run
    config switches them on. The two assets of the activation job stay last (factories.py selects them).

    ``profiles_table`` / ``audience_table`` name the input tables (``schema.table``); tables that the
    demo models do not build are declared as external assets. ``known_profiles_table`` defaults to
    ``<source_schema>.profiles_current`` (the ingested profiles of the same account).
    """
    translator = translator or DagsterKlaviyoTranslator()
    prefix = translator.name_prefix
    pool = pool or ("klaviyo_api" if prefix == "klaviyo" else f"{prefix}_api")
    assets: list[AssetsDefinition | AssetSpec] = []
    built: set[AssetKey] = set()
    if include_demo_models:
        demo = build_demo_model_assets(source_schema, vip_min_orders, vip_list_name, translator=translator,
                                       upstream=upstream, warehouse_resource_key=warehouse_resource_key,
                                       catalog=catalog)
        assets.extend(demo)
        built = {a.key for a in demo}
    extra_tables = [t for t in (events_table, consent_table, deletions_table) if t]
    for table in dict.fromkeys((*extra_tables, profiles_table, audience_table)):
        if table_asset_key(table) not in built:
            assets.append(translator.get_asset_spec(KlaviyoAssetProps(
                role="model", name=table.split(".")[-1], key=table_asset_key(table), table=f"{catalog}.{table}",
                description=f"Upstream warehouse table `{table}` (built outside this package).")))

    def target(name: str, table: str, description: str) -> ActivationTarget:
        spec = translator.get_asset_spec(KlaviyoAssetProps(
            role="activation", name=name, description=description, table=table,
            deps=(table_asset_key(table),)))
        return ActivationTarget(spec, klaviyo_resource_key, warehouse_resource_key, pool)

    # A second account keeps its own sync state and list registry (the state tables are shared, keyed by sync
    # name and, for the lists it creates, by account: the key prefix).
    def sync(name: str) -> str:
        return name if prefix == "klaviyo" else f"{prefix}:{name}"

    for table, build, describe, name, columns in (
        (events_table, build_event_import_asset, event_import_description, "event_import", event_columns),
        (consent_table, build_subscriptions_asset, subscriptions_description, "subscriptions", consent_columns),
        (deletions_table, build_privacy_deletions_asset, privacy_deletions_description, "privacy_deletions",
         deletion_columns),
    ):
        if table:
            assets.append(build(table, columns, sync_name=sync(name),  # type: ignore[operator]
                                target=target(name, table, describe(table))))
    sync_name = sync("profile_import")
    assets.append(build_profile_import_asset(
        profiles_table, profile_columns, sync_name=sync_name,
        target=target("profile_import", profiles_table, profile_import_description(profiles_table))))
    assets.append(build_list_sync_asset(
        audience_table, audience_columns, list_id=list_id, list_name=list_name,
        known_profiles_table=known_profiles_table or f"{source_schema}.profiles_current", account=prefix,
        target=target("list_membership_sync", audience_table, list_sync_description(audience_table))))
    return assets
