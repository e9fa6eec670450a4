"""Activation: warehouse tables back into Klaviyo (profile imports, list membership), as Dagster assets.

``build_activation_definitions()`` returns the assets ``klaviyo/profile_import`` and
``klaviyo/list_membership_sync``, the demo model assets (or external specs for user tables), the job
``klaviyo_activation_job``, a table-change sensor and an hourly schedule (both STOPPED by default:
writing to a Klaviyo account is switched on deliberately). Resources ``klaviyo`` and ``warehouse``
come from the code location's definitions.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
)

from klaviyo_dagster.activate.demo_models import (
    DEFAULT_VIP_LIST,
    PROFILES_ENRICHED,
    VIP_AUDIENCE,
    build_demo_model_assets,
)
from klaviyo_dagster.activate.inputs import external_table_specs, table_asset_key
from klaviyo_dagster.activate.list_sync import (
    ActivationRefused,
    ListSyncResult,
    ListSyncSettings,
    build_list_sync_asset,
    run_list_sync,
)
from klaviyo_dagster.activate.profile_import import (
    ProfileImportResult,
    ProfileImportSettings,
    build_profile_import_asset,
    run_profile_import,
)
from klaviyo_dagster.activate.render import ProfileColumns

ACTIVATION_JOB = "klaviyo_activation_job"
ACTIVATION_SENSOR = "klaviyo_activation_inputs_sensor"

__all__ = [
    "ACTIVATION_JOB",
    "ACTIVATION_SENSOR",
    "ActivationRefused",
    "ListSyncResult",
    "ListSyncSettings",
    "ProfileColumns",
    "ProfileImportResult",
    "ProfileImportSettings",
    "build_activation_definitions",
    "run_list_sync",
    "run_profile_import",
]


def build_activation_definitions(
    profiles_table: str = PROFILES_ENRICHED,
    audience_table: str = VIP_AUDIENCE,
    *,
    profile_columns: ProfileColumns | None = None,
    audience_columns: ProfileColumns | None = None,
    list_id: str | None = None,
    list_name: str | None = None,
    known_profiles_table: str | None = "klaviyo.profiles_current",
    include_demo_models: bool = True,
    vip_min_orders: int = 3,
    vip_list_name: str = DEFAULT_VIP_LIST,
    updated_columns: Mapping[str, str | None] | None = None,
    sensor_default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    sensor_minimum_interval_seconds: int = 60,
    schedule_cron: str = "0 * * * *",
    schedule_default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> Definitions:
    """Activation assets, inputs, job, sensor and schedule.

    ``profiles_table`` / ``audience_table`` name the input tables (``schema.table``); tables that the
    demo models do not build are declared as external assets. ``updated_columns`` maps a watched
    table to its updated-at column for a cheap sensor fingerprint (default: content hash).
    """
    from klaviyo_dagster.automation.sensors import build_activation_schedule, build_table_change_sensor

    assets: list = []
    built: set[AssetKey] = set()
    if include_demo_models:
        demo = build_demo_model_assets(vip_min_orders=vip_min_orders, vip_list_name=vip_list_name)
        assets.extend(demo)
        built = {a.key for a in demo}
    external = [t for t in (profiles_table, audience_table) if table_asset_key(t) not in built]
    assets.extend(external_table_specs(external))
    profile_import = build_profile_import_asset(profiles_table, profile_columns)
    list_sync = build_list_sync_asset(
        audience_table, audience_columns, list_id=list_id, list_name=list_name,
        known_profiles_table=known_profiles_table,
    )
    assets.extend([profile_import, list_sync])
    job = define_asset_job(ACTIVATION_JOB, selection=[profile_import.key, list_sync.key],
                           description="Send changed profiles and converge list membership to the audience.")
    watched = {profiles_table: None, audience_table: None, **(updated_columns or {})}
    sensor = build_table_change_sensor(
        ACTIVATION_SENSOR, job, watched, minimum_interval_seconds=sensor_minimum_interval_seconds,
        default_status=sensor_default_status,
    )
    schedule = build_activation_schedule(job, schedule_cron, default_status=schedule_default_status)
    return Definitions(assets=assets, jobs=[job], sensors=[sensor], schedules=[schedule])
