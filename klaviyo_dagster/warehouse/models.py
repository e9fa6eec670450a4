"""The demo models' SQL: activation input tables built from the ingested Klaviyo tables.

Each table is rebuilt with one ``CREATE OR REPLACE TABLE ... AS`` (atomic in DuckDB).
"""

from __future__ import annotations

from typing import Any

from klaviyo_dagster.warehouse.sql import quote_ident, quote_table, sql_string, table_parts

_PASSTHROUGH = ("email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale",
                "title", "image")


def table_column_names(warehouse: Any, table: str) -> list[str]:
    """Column names of ``schema.table`` in order (empty when it does not exist)."""
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
        + _one_row_per_identity(profile_columns)
    )


def _one_row_per_identity(profile_columns: list[str]) -> str:
    """QUALIFY keeping one row per identity as activation keys it (email, else phone, else external id, else
    id): two Klaviyo profiles sharing an email (a merge pending, a re-created profile) would otherwise be two
    rows of one person, which the profile import warns about. The most recently updated one wins."""
    # '' counts as missing (NULL || ... is NULL), as in the profile import's identity.
    parts = [f"'email:' || nullif(lower(trim(p.{quote_ident('email')})), '')"] if "email" in profile_columns else []
    parts += [f"'{c}:' || nullif(trim(CAST(p.{quote_ident(c)} AS VARCHAR)), '')"
              for c in ("phone_number", "external_id") if c in profile_columns]
    order = "p.updated DESC NULLS LAST, p.id" if "updated" in profile_columns else "p.id"
    identity = "coalesce(" + ", ".join([*parts, "'id:' || p.id"]) + ")"
    return f" QUALIFY row_number() OVER (PARTITION BY {identity} ORDER BY {order}) = 1"


def build_profiles_enriched(warehouse: Any, table: str, source_schema: str, vip_min_orders: int) -> dict[str, int]:
    """(Re)build ``table``; returns its row count and VIP rows. A clear error when profiles are missing."""
    cols = table_column_names(warehouse, f"{source_schema}.profiles_current")
    if not cols:
        raise ValueError(f"{source_schema}.profiles_current does not exist: materialize the profiles asset first")
    warehouse.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table_parts(table)[0])}")
    warehouse.execute(f"CREATE OR REPLACE TABLE {quote_table(table)} AS "
                      + profiles_enriched_sql(cols, source_schema, vip_min_orders))
    rows, vips = warehouse.query(f"SELECT count(*), count(*) FILTER (customer_tier = 'vip') FROM {quote_table(table)}")[0]
    return {"rows": int(rows), "vip_rows": int(vips)}


def build_vip_audience(warehouse: Any, table: str, profiles_table: str, list_name: str, min_orders: int) -> int:
    """(Re)build the audience ``table``: profiles of ``profiles_table`` with ``min_orders`` orders, as members of
    list ``list_name``; returns its row count."""
    warehouse.execute(
        f"CREATE OR REPLACE TABLE {quote_table(table)} AS SELECT {sql_string(list_name)} AS list_name, "
        f"klaviyo_profile_id AS profile_id, email FROM {quote_table(profiles_table)} "
        f"WHERE order_count >= {int(min_orders)}"
    )
    return int(warehouse.query(f"SELECT count(*) FROM {quote_table(table)}")[0][0])


def describe_table(warehouse: Any, table: str) -> dict[str, str]:
    """``{column: type}`` of ``schema.table`` (for `dagster/column_schema`)."""
    return {r[0]: r[1] for r in warehouse.query(f"DESCRIBE SELECT * FROM {quote_table(table)}")}
