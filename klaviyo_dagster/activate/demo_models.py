"""Demo models: SQL assets that build activation's input tables from the ingested Klaviyo tables.

- ``activation_inputs/profiles_enriched``: one row per ingested profile with its identifiers, standard
  attributes, and computed custom properties (order_count, last_order_at, customer_tier);
- ``activation_inputs/vip_audience``: the people with at least ``min_orders`` Placed Order events, as
  members of one list (by name), so ingest -> model -> activate -> re-ingest closes the loop.
Each table is rebuilt with one ``CREATE OR REPLACE TABLE ... AS`` (atomic in DuckDB).
"""


from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from klaviyo_dagster.activate.inputs import quote_ident, quote_table, sql_string, table_asset_key, table_parts

PROFILES_ENRICHED = "activation_inputs.profiles_enriched"
VIP_AUDIENCE = "activation_inputs.vip_audience"
DEFAULT_VIP_LIST = "VIP customers (klaviyo-dagster)"
_PASSTHROUGH = ("email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale",
                "title", "image")


def _columns(warehouse: Any, table: str) -> list[str]:
    schema, name = table_parts(table)
    rows = warehouse.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [schema, name])
    return [r[0] for r in rows]


def profiles_enriched_sql(profile_columns: list[str], source_schema: str, vip_min_orders: int) -> str:
    """SELECT building the enriched profiles table from ``<source_schema>.profiles_current`` and events."""
    s = quote_ident(source_schema)
    picked = ", ".join(f"p.{quote_ident(c)}" for c in _PASSTHROUGH if c in profile_columns)
    location = ", ".join(
        f"json_extract_string(p.location, '$.{f}') AS {quote_ident('location_' + f)}" for f in ("city", "country", "region")
    ) if "location" in profile_columns else ""
    return (
        f"SELECT p.id AS klaviyo_profile_id{', ' + picked if picked else ''}{', ' + location if location else ''}, "
        "coalesce(o.order_count, 0) AS order_count, o.last_order_at, "
        f"CASE WHEN coalesce(o.order_count, 0) >= {int(vip_min_orders)} THEN 'vip' "
        "WHEN coalesce(o.order_count, 0) > 0 THEN 'customer' ELSE 'prospect' END AS customer_tier "
        f"FROM {s}.profiles_current p LEFT JOIN ("
        "SELECT e.profile_id, count(DISTINCT e.id) AS order_count, max(e.datetime) AS last_order_at "
        f"FROM {s}.events e JOIN {s}.metrics m ON m.id = e.metric_id "
        "WHERE m.name = 'Placed Order' GROUP BY e.profile_id) o ON o.profile_id = p.id"
    )


def build_demo_model_assets(
    source_schema: str = "klaviyo",
    vip_min_orders: int = 3,
    vip_list_name: str = DEFAULT_VIP_LIST,
) -> list[AssetsDefinition]:
    """The two demo model assets (resource ``warehouse``)."""

    @asset(
        key=table_asset_key(PROFILES_ENRICHED),
        deps=[AssetKey([source_schema, n]) for n in ("profiles", "events", "metrics")],
        group_name="activation_inputs",
        kinds={"duckdb", "sql"},
        required_resource_keys={"warehouse"},
        description="Ingested profiles with order_count, last_order_at and customer_tier (demo model).",
    )
    def profiles_enriched(context: AssetExecutionContext) -> MaterializeResult:
        wh = context.resources.warehouse.get_warehouse()
        cols = _columns(wh, f"{source_schema}.profiles_current")
        if not cols:
            raise ValueError(f"{source_schema}.profiles_current does not exist: materialize klaviyo/profiles first")
        wh.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table_parts(PROFILES_ENRICHED)[0])}")
        wh.execute(f"CREATE OR REPLACE TABLE {quote_table(PROFILES_ENRICHED)} AS "
                   + profiles_enriched_sql(cols, source_schema, vip_min_orders))
        rows, vips = wh.query(f"SELECT count(*), count(*) FILTER (customer_tier = 'vip') "
                              f"FROM {quote_table(PROFILES_ENRICHED)}")[0]
        return MaterializeResult(metadata={"rows": int(rows), "vip_rows": int(vips)})

    @asset(
        key=table_asset_key(VIP_AUDIENCE),
        deps=[profiles_enriched],
        group_name="activation_inputs",
        kinds={"duckdb", "sql"},
        required_resource_keys={"warehouse"},
        description=f"Profiles with at least {vip_min_orders} Placed Order events, as members of "
        f"list {vip_list_name!r} (demo model).",
    )
    def vip_audience(context: AssetExecutionContext) -> MaterializeResult:
        wh = context.resources.warehouse.get_warehouse()
        wh.execute(
            f"CREATE OR REPLACE TABLE {quote_table(VIP_AUDIENCE)} AS SELECT {sql_string(vip_list_name)} AS list_name, "
            f"klaviyo_profile_id AS profile_id, email FROM {quote_table(PROFILES_ENRICHED)} "
            f"WHERE order_count >= {int(vip_min_orders)}"
        )
        rows = wh.query(f"SELECT count(*) FROM {quote_table(VIP_AUDIENCE)}")[0][0]
        return MaterializeResult(metadata={"rows": int(rows), "list_name": vip_list_name})

    return [profiles_enriched, vip_audience]
