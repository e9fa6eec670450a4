"""One factory: every entry of the objects table becomes a partitioned Dagster asset with its checks.

Asset ``klaviyo/<object>``: daily partitions, pool ``klaviyo_api`` (shared by everything that calls
Klaviyo), group ``klaviyo_ingest``, kinds klaviyo + duckdb. A run reads the partition's window (or the
whole range of a single-run backfill) page by page, flattens into chunks, stages them and replaces
exactly those partitions in one short warehouse transaction. Metadata: rows, pages, requests, retries,
429s, window, duration, a preview. Checks: primary key unique per partition, no null keys, cursor inside
its partition (incremental objects).
"""

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from klaviyo_dagster.client import (
    KlaviyoAuthError,
    KlaviyoBadRequestError,
    KlaviyoError,
    KlaviyoNotFoundError,
)
from klaviyo_dagster.ingest.fetch import FetchOptions, iter_pages
from klaviyo_dagster.ingest.flatten import Flattener
from klaviyo_dagster.ingest.objects import PARTITION_COLUMN, KlaviyoObject
from klaviyo_dagster.ingest.prefetch import prefetch
from klaviyo_dagster.ingest.preview import markdown_preview
from klaviyo_dagster.ingest.windows import Window, iso, parse_partition_key, snapshot_refusal
from klaviyo_dagster.resources import KLAVIYO_POOL
from klaviyo_dagster.warehouse import Warehouse
from klaviyo_dagster.warehouse.sql import quote_ident

UTC = timezone.utc
POOL = KLAVIYO_POOL
GROUP = "klaviyo_ingest"
KEY_PREFIX = "klaviyo"
CHECK_PK_UNIQUE = "primary_key_unique"
CHECK_KEY_NOT_NULL = "primary_key_not_null"
CHECK_CURSOR_IN_PARTITION = "cursor_in_partition"
_FAIL_FAST = (KlaviyoAuthError, KlaviyoBadRequestError, KlaviyoNotFoundError)


@dataclass(frozen=True)
class IngestSettings:
    """Build-time settings shared by every ingest asset."""

    options: FetchOptions
    snapshot_max_lag: timedelta = timedelta(days=1)
    chunk_rows: int = 10_000
    # Pages fetched ahead in a background thread while the previous ones are flattened and staged (0: off).
    prefetch_pages: int = 1
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


def asset_key(obj: KlaviyoObject | str) -> dg.AssetKey:
    """``klaviyo/<object>``."""
    return dg.AssetKey([KEY_PREFIX, obj if isinstance(obj, str) else obj.name])


def build_ingest_asset(
    obj: KlaviyoObject, partitions_def: dg.PartitionsDefinition, settings: IngestSettings
) -> dg.AssetsDefinition:
    """The asset (with its checks) for one objects-table entry."""
    key = asset_key(obj)
    checks = [
        dg.AssetCheckSpec(CHECK_PK_UNIQUE, asset=key, description=f"{obj.primary_key} unique per partition"),
        dg.AssetCheckSpec(CHECK_KEY_NOT_NULL, asset=key, description=f"no NULL in {obj.primary_key}"),
    ]
    if obj.incremental:
        checks.append(
            dg.AssetCheckSpec(
                CHECK_CURSOR_IN_PARTITION,
                asset=key,
                description=f"`{obj.cursor_column}` lies in [partition day, next day)",
            )
        )

    with warnings.catch_warnings():
        # BackfillPolicy is marked beta in this Dagster line; single-run backfills are what we want.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _decorate(obj, key, checks, partitions_def, settings)


def _decorate(
    obj: KlaviyoObject,
    key: dg.AssetKey,
    checks: list[dg.AssetCheckSpec],
    partitions_def: dg.PartitionsDefinition,
    settings: IngestSettings,
) -> dg.AssetsDefinition:
    @dg.asset(
        key=key,
        description=obj.description,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run() if obj.incremental else dg.BackfillPolicy.multi_run(1),
        pool=POOL,
        group_name=GROUP,
        kinds={"klaviyo", "duckdb"},
        required_resource_keys={"klaviyo", "warehouse"},
        check_specs=checks,
        metadata={
            "table": f"klaviyo.{obj.name}",
            "sync_mode": obj.sync,
            "primary_key": ", ".join(obj.primary_key),
            "cursor": obj.cursor or "",
            "api_path": obj.path,
            "page_size": obj.page_size or 0,
            "rate_limit_tier": obj.tier.name,
        },
    )
    def _ingest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return materialize_object(context, obj, settings)

    return _ingest


def materialize_object(
    context: dg.AssetExecutionContext, obj: KlaviyoObject, settings: IngestSettings
) -> dg.MaterializeResult:
    """Fetch, flatten, stage and swap in the partition(s) of ``context`` for ``obj``."""
    started = datetime.now(UTC)
    now = settings.now()
    keys = list(context.partition_keys)
    values = [parse_partition_key(k) for k in keys]
    span = context.partition_time_window
    window = Window(span.start, span.end)
    if obj.incremental:
        fetch_window: Window | None = window.clamp(now)
        flattener = Flattener(obj, window=fetch_window, chunk_rows=settings.chunk_rows)
    else:
        if len(keys) != 1:
            raise dg.Failure(
                description=f"{obj.name} is a snapshot: materialize one partition per run (got {len(keys)}).",
                allow_retries=False,
            )
        refusal = snapshot_refusal(window, now, settings.snapshot_max_lag)
        if refusal:
            raise dg.Failure(description=f"{obj.name}: {refusal}", allow_retries=False)
        fetch_window = None
        flattener = Flattener(obj, partition=values[0], chunk_rows=settings.chunk_rows)

    warehouse: Warehouse = context.resources.warehouse.get_warehouse()
    preview: dict[str, list[Any]] = {}
    try:
        with (
            context.resources.klaviyo.get_client(context.log) as client,
            closing(prefetch(iter_pages(client, obj, fetch_window, settings.options), settings.prefetch_pages)) as pages,
        ):
            chunks = _keep_preview(flattener.chunks(pages), preview)
            result = warehouse.replace_partitions(
                obj.name,
                obj.sql_columns(),
                PARTITION_COLUMN,
                values,
                chunks,
                primary_key=obj.primary_key,
                latest_by=[obj.cursor_column] if obj.incremental and obj.cursor_column else None,
                **obj.current_view(),
            )
            stats = client.stats.snapshot()
    except _FAIL_FAST as exc:
        raise dg.Failure(description=f"{obj.name}: {exc}", allow_retries=False) from exc
    except KlaviyoError as exc:
        raise dg.Failure(
            description=f"{obj.name}: {exc} The warehouse table was left as it was; re-run the partition."
        ) from exc

    check_results = run_checks(warehouse, obj, values)
    duration = (datetime.now(UTC) - started).total_seconds()
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(result.rows),
        "table": dg.MetadataValue.text(result.table),
        "rows": dg.MetadataValue.int(result.rows),
        "pages": dg.MetadataValue.int(stats["pages"]),
        "requests": dg.MetadataValue.int(stats["requests"]),
        "retries": dg.MetadataValue.int(stats["retries"]),
        "throttled_429": dg.MetadataValue.int(stats["throttled"]),
        "errors_retried": dg.MetadataValue.int(stats["errors"]),
        "rate_limit_wait_s": dg.MetadataValue.float(float(stats.get("wait_seconds", 0.0))),
        "partitions": dg.MetadataValue.text(f"{keys[0]}..{keys[-1]}" if len(keys) > 1 else keys[0]),
        "duration_s": dg.MetadataValue.float(round(duration, 3)),
        "deduplicated": dg.MetadataValue.int(result.deduplicated),
        "preview": dg.MetadataValue.md(markdown_preview(preview)),
    }
    if fetch_window is not None:
        metadata["cursor_field"] = dg.MetadataValue.text(obj.cursor or "")
        metadata["cursor_window"] = dg.MetadataValue.json(fetch_window.as_dict())
        metadata["dropped_outside_window"] = dg.MetadataValue.int(flattener.dropped)
    else:
        metadata["captured_at"] = dg.MetadataValue.text(iso(now))
    if result.columns_added:
        metadata["columns_added"] = dg.MetadataValue.json(result.columns_added)
    context.log.info(
        f"{result.table}: {result.rows} rows into {len(keys)} partition(s) from {stats['pages']} pages "
        f"({stats['requests']} requests, {stats['retries']} retries, {stats['throttled']} 429s) in {duration:.1f}s"
    )
    return dg.MaterializeResult(metadata=metadata, check_results=check_results)


def _keep_preview(chunks: Iterator[dict[str, list[Any]]], preview: dict[str, list[Any]], n: int = 5):
    for chunk in chunks:
        if not preview:
            preview.update({name: list(values[:n]) for name, values in chunk.items()})
        yield chunk


def run_checks(
    warehouse: Warehouse, obj: KlaviyoObject, values: Sequence[datetime]
) -> list[dg.AssetCheckResult]:
    """The asset checks over the partitions just written (one short read)."""
    table = warehouse.qualified(obj.name)
    part = quote_ident(PARTITION_COLUMN)
    where = f"{part} IN (SELECT unnest(?::TIMESTAMPTZ[]))"
    pk = ", ".join(quote_ident(c) for c in obj.primary_key)
    queries: dict[str, str] = {
        CHECK_PK_UNIQUE: f"SELECT count(*) FROM (SELECT {pk}, {part} FROM {table} WHERE {where} "
        f"GROUP BY {pk}, {part} HAVING count(*) > 1)",
        CHECK_KEY_NOT_NULL: f"SELECT count(*) FROM {table} WHERE {where} AND ("
        + " OR ".join(f"{quote_ident(c)} IS NULL" for c in obj.primary_key)
        + ")",
    }
    if obj.incremental and obj.cursor_column:
        cur = quote_ident(obj.cursor_column)
        queries[CHECK_CURSOR_IN_PARTITION] = (
            f"SELECT count(*) FROM {table} WHERE {where} AND "
            f"({cur} IS NULL OR {cur} < {part} OR {cur} >= {part} + INTERVAL 1 DAY)"
        )
    results = []
    with warehouse.connect() as conn:
        for name, sql in queries.items():
            bad = conn.execute(sql, [list(values)]).fetchone()[0]
            results.append(
                dg.AssetCheckResult(
                    check_name=name,
                    passed=bad == 0,
                    metadata={"violations": dg.MetadataValue.int(int(bad))},
                    severity=dg.AssetCheckSeverity.ERROR,
                )
            )
    return results


def build_ingest_assets(
    objects: Sequence[KlaviyoObject],
    partitions_def: dg.PartitionsDefinition,
    settings: IngestSettings,
) -> list[dg.AssetsDefinition]:
    """One asset per entry."""
    return [build_ingest_asset(obj, partitions_def, settings) for obj in objects]


def ingest_asset_keys(objects: Sequence[KlaviyoObject] | Mapping[str, KlaviyoObject]) -> list[dg.AssetKey]:
    """The asset keys of ``objects``."""
    items = objects.values() if isinstance(objects, Mapping) else objects
    return [asset_key(o) for o in items]
