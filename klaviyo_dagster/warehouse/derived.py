"""Derived objects: views computed in the warehouse from tables already landed (no API calls).

``exclusions`` (from ``profiles_current``): one row per profile, channel, list (NULL for a global
suppression) and reason, with the suppression's timestamp, read from the profiles' ``subscriptions``:

- ``email``, global: ``subscriptions.email.marketing.suppression[] {reason, timestamp}`` (reasons
  HARD_BOUNCE, INVALID_EMAIL, SPAM_COMPLAINT, UNSUBSCRIBE, USER_SUPPRESSED), ``source`` = ``suppression``;
- ``email``, per list: ``subscriptions.email.marketing.list_suppressions[] {list_id, reason, timestamp}``,
  ``source`` = ``list_suppression``;
- ``sms``, global: the spec's SMS subscription has no suppression list; an SMS opt-out is
  ``subscriptions.sms.marketing.consent = UNSUBSCRIBED``, landed as reason ``UNSUBSCRIBE`` with the consent
  timestamp (else ``last_updated``), ``source`` = ``consent``.

A view over ``profiles_current`` follows it: a profile deleted in Klaviyo (in ``profiles_deleted``) or
merged away (a merge deletes its source profile; the sweep finds it) leaves both at once, and a suppression lifted in Klaviyo leaves with the profile's next
version. ``_partition`` and ``_loaded_at`` are the profile row's (its ``updated`` day, its load time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from klaviyo_dagster.warehouse.checks import KEY_NOT_NULL, PK_UNIQUE
from klaviyo_dagster.warehouse.current import CURRENT_VIEW_SUFFIX
from klaviyo_dagster.warehouse.duckdb_warehouse import Warehouse, _columns
from klaviyo_dagster.warehouse.sql import quote_ident


def exclusions_sql(view: str, source: str) -> str:
    """``CREATE OR REPLACE VIEW`` ``view`` of every suppression held in ``source`` (bare names inside the
    body, like the ``_current`` views)."""
    src = quote_ident(source + CURRENT_VIEW_SUFFIX)
    meta = "_partition, _loaded_at"

    def unnest(path: str) -> str:
        return (f"(SELECT id, unnest(json_extract(subscriptions, '$.{path}[*]')) AS s, {meta} "
                f"FROM {src} WHERE subscriptions IS NOT NULL)")

    sms = "subscriptions->'sms'->'marketing'"
    rows = f"""
        SELECT id AS profile_id, 'email' AS channel, NULL::VARCHAR AS list_id, s->>'reason' AS reason,
               (s->>'timestamp')::TIMESTAMPTZ AS "timestamp", 'suppression' AS source, {meta}
        FROM {unnest('email.marketing.suppression')}
        UNION ALL
        SELECT id, 'email', s->>'list_id', s->>'reason', (s->>'timestamp')::TIMESTAMPTZ, 'list_suppression', {meta}
        FROM {unnest('email.marketing.list_suppressions')}
        UNION ALL
        SELECT id, 'sms', NULL, 'UNSUBSCRIBE',
               coalesce({sms}->>'consent_timestamp', {sms}->>'last_updated')::TIMESTAMPTZ, 'consent', {meta}
        FROM {src} WHERE {sms}->>'consent' = 'UNSUBSCRIBED'
    """
    # One row per (profile, channel, list, reason): a reason repeated within one list keeps its latest time.
    return (
        f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM ({rows}) "
        'QUALIFY row_number() OVER (PARTITION BY profile_id, channel, list_id, reason ORDER BY "timestamp" DESC) = 1'
    )


# object name -> builder of its view (``view`` qualified, ``source`` the object it is derived from)
DERIVED_VIEWS: dict[str, Callable[[str, str], str]] = {"exclusions": exclusions_sql}


def derived_view_sql(name: str, view: str, source: str) -> str:
    """The view of derived object ``name``; a clear error names the known ones."""
    try:
        return DERIVED_VIEWS[name](view, source)
    except KeyError:
        raise ValueError(f"no view for derived object {name!r}; known: {', '.join(DERIVED_VIEWS)}") from None


class SourceMissing(LookupError):
    """The table a derived object is computed from has not landed yet."""


@dataclass(frozen=True)
class DerivedFacts:
    """What (re)creating a derived view reports: check violations, rows, columns, counts, a preview."""

    violations: dict[str, int]
    row_count: int
    columns: dict[str, str]
    counts: list[dict[str, Any]]
    preview: dict[str, list[Any]]


def create_derived_view(
    warehouse: Warehouse,
    name: str,
    source: str,
    primary_key: Sequence[str],
    nullable_key: Sequence[str] = (),
    count_by: Sequence[str] = (),
    preview_rows: int = 5,
) -> DerivedFacts:
    """(Re)create the view of derived object ``name`` over ``<source>_current`` and read its facts:
    ``primary_key_unique`` (one row per key, NULL key parts compared as values), ``primary_key_not_null``
    (key columns other than ``nullable_key``), rows, columns, row counts by ``count_by`` and a preview."""
    if not warehouse.table_exists(source + CURRENT_VIEW_SUFFIX):
        raise SourceMissing(
            f"{name} is derived from {warehouse.qualified(source + CURRENT_VIEW_SUFFIX)}, which does not exist "
            f"yet: materialize the {source} asset first (e.g. its latest partition)."
        )
    view = warehouse.qualified(name)
    with warehouse.transaction() as conn:
        conn.execute(derived_view_sql(name, view, source))
    pk = ", ".join(quote_ident(c) for c in primary_key)
    required = [c for c in primary_key if c not in set(nullable_key)]
    queries = {
        PK_UNIQUE: f"SELECT count(*) FROM (SELECT {pk} FROM {view} GROUP BY ALL HAVING count(*) > 1)",
        KEY_NOT_NULL: f"SELECT count(*) FROM {view} WHERE "
        + (" OR ".join(f"{quote_ident(c)} IS NULL" for c in required) or "false"),
    }
    with warehouse.connect() as conn:
        violations = {check: int(conn.execute(sql).fetchone()[0]) for check, sql in queries.items()}
        rows = int(conn.execute(f"SELECT count(*) FROM {view}").fetchone()[0])
        counts: list[dict[str, Any]] = []
        if count_by:
            by = ", ".join(quote_ident(c) for c in count_by)
            cur = conn.execute(f"SELECT {by}, count(*) AS rows FROM {view} GROUP BY ALL ORDER BY ALL")
            names = [d[0] for d in cur.description]
            counts = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        cur = conn.execute(f"SELECT * FROM {view} ORDER BY {pk} LIMIT {int(preview_rows)}")
        names = [d[0] for d in cur.description]
        fetched = cur.fetchall()
        preview = {n: [r[k] for r in fetched] for k, n in enumerate(names)}
        columns = _columns(conn, warehouse.catalog, warehouse.schema, name)
    return DerivedFacts(violations, rows, columns, counts, preview)
