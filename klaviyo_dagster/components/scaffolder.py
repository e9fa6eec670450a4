"""`dg scaffold defs klaviyo_dagster.KlaviyoComponent <path>`: a `defs.yaml` holding every option of the
factories with today's defaults, resources read from the environment, and a `translation` example.

Optional parameters (``--json-params``): ``objects`` (names to ingest), ``start_date``, ``key_prefix``,
``schema``, ``activation`` (switch the activation assets on).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import BaseModel

from klaviyo_dagster.automation.schedules import (
    DEFAULT_CRON,
    DEFAULT_LOOKBACK_DAYS,
    DEFAULT_REPORT_CRON,
    DEFAULT_REPORT_LOOKBACK_DAYS,
)
from klaviyo_dagster.ingest import CAMPAIGN_CHANNELS, DEFAULT_START_DATE, OBJECTS
from klaviyo_dagster.ingest.reports import DEFAULT_CONVERSION_METRIC
from klaviyo_dagster.warehouse import DATABASE_ENV, DEFAULT_DATABASE


class KlaviyoScaffoldParams(BaseModel):
    """What `dg scaffold defs ... --json-params` may preset."""

    objects: list[str] | None = None
    start_date: str | None = None
    key_prefix: list[str] | None = None
    schema_name: str | None = None
    activation: bool = False


def default_attributes(params: KlaviyoScaffoldParams | None = None) -> dict[str, Any]:
    """The ``attributes`` block of a fresh defs.yaml (every factory option, at its default)."""
    p = params or KlaviyoScaffoldParams()
    return {
        "klaviyo": {
            "api_key": "{{ env.KLAVIYO_API_KEY }}",
            "base_url": "{{ env('KLAVIYO_BASE_URL', 'https://a.klaviyo.com') }}",
        },
        "warehouse": {
            "database": f"{{{{ env('{DATABASE_ENV}', '{DEFAULT_DATABASE}') }}}}",
            "schema": p.schema_name or "klaviyo",
        },
        "key_prefix": p.key_prefix or ["klaviyo"],
        "ingest": {
            "start_date": p.start_date or DEFAULT_START_DATE,
            "objects": p.objects or [o.name for o in OBJECTS],
            "event_metrics": None,
            "profile_subscriptions": True,
            "profile_predictive_analytics": False,
            "list_profile_count": False,
            "segment_profile_count": False,
            "campaign_channels": list(CAMPAIGN_CHANNELS),
            "include_archived": True,
            "lookback_days": DEFAULT_LOOKBACK_DAYS,
            "schedule": True,
            "cron_schedule": DEFAULT_CRON,
            "reports": False,
            "conversion_metric": DEFAULT_CONVERSION_METRIC,
            "report_statistics": None,
            "report_cron": DEFAULT_REPORT_CRON,
            "report_lookback_days": DEFAULT_REPORT_LOOKBACK_DAYS,
            "automation_condition": None,
        },
        "activation": {
            "enabled": p.activation,
            "profiles_table": "activation_inputs.profiles_enriched",
            "audience_table": "activation_inputs.vip_audience",
            "list_id": None,
            "list_name": None,
            "include_demo_models": False,
            "vip_min_orders": 3,
            "automation_condition": None,
        },
        "translation": {
            "tags": {"klaviyo/role": "{{ props.role }}"},
        },
    }


class KlaviyoComponentScaffolder(dg.Scaffolder[KlaviyoScaffoldParams]):
    """Writes defs.yaml for `KlaviyoComponent`."""

    @classmethod
    def get_scaffold_params(cls) -> type[KlaviyoScaffoldParams]:
        return KlaviyoScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[KlaviyoScaffoldParams]) -> None:
        dg.scaffold_component(request, default_attributes(request.params))
