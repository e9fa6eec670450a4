"""Demo models (opt-in): SQL assets that build activation's input tables from the ingested Klaviyo tables.

- ``activation_inputs/profiles_enriched``: one row per ingested profile with its identifiers, standard
  attributes, and computed custom properties (order_count, last_order_at, customer_tier);
- ``activation_inputs/vip_audience``: the people with at least ``min_orders`` Placed Order events, as
  members of one list (by name), so ingest -> model -> activate -> re-ingest closes the loop.
The SQL lives in `warehouse/models.py`; here are the assets (specs from the translator, group
``klaviyo_models``). `make demo` and `make dev` switch them on; a real account's code location does not.
"""

from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from klaviyo_dagster.activate.inputs import table_asset_key
from klaviyo_dagster.translator import DagsterKlaviyoTranslator, KlaviyoAssetProps, column_schema
from klaviyo_dagster.warehouse.models import build_profiles_enriched, build_vip_audience, describe_table

PROFILES_ENRICHED = "activation_inputs.profiles_enriched"
VIP_AUDIENCE = "activation_inputs.vip_audience"
DEFAULT_VIP_LIST = "VIP customers (klaviyo-dagster)"


def _table_metadata(warehouse: object, table: str) -> dict[str, object]:
    columns = describe_table(warehouse, table)
    return {
        "dagster/table_name": MetadataValue.text(f"{warehouse.catalog}.{table}"),  # type: ignore[attr-defined]
        "dagster/column_schema": MetadataValue.table_schema(column_schema(columns)),
    }


def build_demo_model_assets(
    source_schema: str = "klaviyo",
    vip_min_orders: int = 3,
    vip_list_name: str = DEFAULT_VIP_LIST,
    *,
    translator: DagsterKlaviyoTranslator | None = None,
    upstream: Sequence[AssetKey] | None = None,
    warehouse_resource_key: str = "warehouse",
    catalog: str = "warehouse",
) -> list[AssetsDefinition]:
    """The two demo model assets. ``upstream``: keys of the profiles, events and metrics assets (default:
    the translator's ingest keys)."""
    translator = translator or DagsterKlaviyoTranslator()
    deps = tuple(upstream or (AssetKey([*translator.key_prefix, n]) for n in ("profiles", "events", "metrics")))

    def spec(table: str, description: str, deps: tuple[AssetKey, ...]):
        return translator.get_asset_spec(KlaviyoAssetProps(
            role="model", name=table.split(".")[-1], key=table_asset_key(table), description=description,
            table=f"{catalog}.{table}", deps=deps))

    enriched_spec = spec(PROFILES_ENRICHED, "Ingested profiles with order_count, last_order_at and customer_tier "
                         "(demo model).", deps)
    audience_spec = spec(VIP_AUDIENCE, f"Profiles with at least {vip_min_orders} Placed Order events, as members "
                         f"of list {vip_list_name!r} (demo model).", (enriched_spec.key,))

    @multi_asset(name=enriched_spec.key.to_python_identifier(), specs=[enriched_spec],
                 required_resource_keys={warehouse_resource_key})
    def profiles_enriched(context: AssetExecutionContext) -> MaterializeResult:
        wh = getattr(context.resources, warehouse_resource_key).get_warehouse()
        counts = build_profiles_enriched(wh, PROFILES_ENRICHED, source_schema, vip_min_orders)
        return MaterializeResult(metadata={
            "dagster/row_count": counts["rows"], "vip_rows": counts["vip_rows"],
            **_table_metadata(wh, PROFILES_ENRICHED)})

    @multi_asset(name=audience_spec.key.to_python_identifier(), specs=[audience_spec],
                 required_resource_keys={warehouse_resource_key})
    def vip_audience(context: AssetExecutionContext) -> MaterializeResult:
        wh = getattr(context.resources, warehouse_resource_key).get_warehouse()
        rows = build_vip_audience(wh, VIP_AUDIENCE, PROFILES_ENRICHED, vip_list_name, vip_min_orders)
        return MaterializeResult(metadata={"dagster/row_count": rows, "list_name": vip_list_name,
                                           **_table_metadata(wh, VIP_AUDIENCE)})

    return [profiles_enriched, vip_audience]
