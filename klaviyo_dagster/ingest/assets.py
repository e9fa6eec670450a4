"""One factory: every entry of the objects table becomes a partitioned Dagster asset with its checks.

Each entry is described to the translator (`DagsterKlaviyoTranslator`, default key ``klaviyo/<object>``,
group ``klaviyo_ingest``, kinds klaviyo + duckdb, ``dagster/table_name`` and ``dagster/column_schema`` from
the objects table) and the asset is built from the spec it returns, pool ``klaviyo_api`` (shared by
everything that calls one Klaviyo account). Incremental objects have daily partitions (a range backfill is
one run); snapshots (lists, segments, metrics, memberships) are unpartitioned: each run captures the
current state into the partition of the day it runs, and ``<table>_current`` shows the latest capture.
A run reads the partition's window (or the whole
range of a single-run backfill) page by page, flattens into chunks, stages them and replaces exactly those
partitions in one short warehouse transaction. Metadata: ``dagster/partition_row_count`` (rows this run
wrote), ``dagster/row_count`` (the table's rows), ``dagster/table_name``, ``dagster/column_schema`` (read
back from the table, so columns added by schema evolution show), a table preview, the API counters in one
``api`` entry, and the window read. Checks: primary key unique per partition, no null keys, cursor inside
its partition (incremental objects).
"""

import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
from klaviyo_dagster.ingest.objects import PARTITION_COLUMN, KlaviyoObject, get_object
from klaviyo_dagster.ingest.prefetch import prefetch
from klaviyo_dagster.ingest.preview import table_preview
from klaviyo_dagster.ingest.windows import Window, day_start, iso, parse_partition_key
from klaviyo_dagster.resources import KLAVIYO_POOL
from klaviyo_dagster.translator import DagsterKlaviyoTranslator, KlaviyoAssetProps, column_schema
from klaviyo_dagster.warehouse import LOADED_AT, Warehouse
from klaviyo_dagster.warehouse.checks import CURSOR_IN_PARTITION, KEY_NOT_NULL, PK_UNIQUE, partition_facts

UTC = timezone.utc
POOL = KLAVIYO_POOL
GROUP = "klaviyo_ingest"
KEY_PREFIX = "klaviyo"
CHECK_PK_UNIQUE = PK_UNIQUE
CHECK_KEY_NOT_NULL = KEY_NOT_NULL
CHECK_CURSOR_IN_PARTITION = CURSOR_IN_PARTITION
_FAIL_FAST = (KlaviyoAuthError, KlaviyoBadRequestError, KlaviyoNotFoundError)


@dataclass(frozen=True)
class IngestSettings:
    """Build-time settings shared by every ingest asset."""

    options: FetchOptions
    chunk_rows: int = 10_000
    # Pages fetched ahead in a background thread while the previous ones are flattened and staged (0: off).
    prefetch_pages: int = 1
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    translator: DagsterKlaviyoTranslator = field(default_factory=DagsterKlaviyoTranslator)
    # Resource keys of the account and the warehouse (a second account uses its own, e.g. klaviyo_eu).
    klaviyo_resource_key: str = "klaviyo"
    warehouse_resource_key: str = "warehouse"
    # Schema the tables land in (None: the warehouse resource's own schema, which definitions show as
    # ``default_schema``); catalog = the DuckDB file's stem, for `dagster/table_name`.
    schema: str | None = None
    default_schema: str = "klaviyo"
    catalog: str = "warehouse"
    pool: str = POOL

    def table_name(self, table: str) -> str:
        """Fully qualified ``catalog.schema.table`` as `dagster/table_name` shows it."""
        return f"{self.catalog}.{self.schema or self.default_schema}.{table}"


def asset_key(obj: KlaviyoObject | str, translator: DagsterKlaviyoTranslator | None = None) -> dg.AssetKey:
    """The key of an ingest asset (``klaviyo/<object>`` with the default translator)."""
    entry = obj if isinstance(obj, KlaviyoObject) else get_object(obj)
    return (translator or DagsterKlaviyoTranslator()).get_asset_key(ingest_props(entry, None))


def definition_schema(obj: KlaviyoObject) -> dg.TableSchema:
    """The table's columns as declared in the objects table (+ partition and load time), key constrained."""
    return live_schema(obj, {**obj.sql_columns(), LOADED_AT: "TIMESTAMPTZ"})


def ingest_props(obj: KlaviyoObject, settings: "IngestSettings | None") -> KlaviyoAssetProps:
    """What the translator is told about the asset of ``obj``."""
    return KlaviyoAssetProps(
        role="ingest",
        name=obj.name,
        description=obj.description,
        table=settings.table_name(obj.name) if settings else None,
        object=obj,
        column_schema=definition_schema(obj),
        metadata={
            "klaviyo/api_path": obj.path,
            "klaviyo/sync_mode": obj.sync,
            "klaviyo/rate_limit_tier": obj.tier.name,
        },
    )


def key_checks(key: dg.AssetKey, primary_key: Sequence[str], *, per_partition: bool = True,
               not_null: Sequence[str] | None = None) -> list[dg.AssetCheckSpec]:
    """The key checks every landed table carries: the primary key unique (per partition, or in the whole
    table), and the key columns (``not_null``, default all of ``primary_key``) never NULL."""
    scope = " per partition" if per_partition else ""
    required = tuple(primary_key if not_null is None else not_null)
    return [
        dg.AssetCheckSpec(CHECK_PK_UNIQUE, asset=key, description=f"{tuple(primary_key)} unique{scope}"),
        dg.AssetCheckSpec(CHECK_KEY_NOT_NULL, asset=key, description=f"no NULL in {required}"),
    ]


def build_ingest_asset(
    obj: KlaviyoObject, partitions_def: dg.PartitionsDefinition, settings: IngestSettings
) -> dg.AssetsDefinition:
    """The asset (with its checks) for one objects-table entry."""
    spec = settings.translator.get_asset_spec(ingest_props(obj, settings))
    key = spec.key
    checks = key_checks(key, obj.primary_key)
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
        return _decorate(obj, spec, checks, partitions_def, settings)


def _decorate(
    obj: KlaviyoObject,
    spec: dg.AssetSpec,
    checks: list[dg.AssetCheckSpec],
    partitions_def: dg.PartitionsDefinition,
    settings: IngestSettings,
) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec],
        # Snapshots are not partitioned: Klaviyo serves only the current state, so the only day a run can
        # capture is today; a past day is never offered (no partition that no run could fill).
        partitions_def=partitions_def if obj.incremental else None,
        backfill_policy=dg.BackfillPolicy.single_run() if obj.incremental else None,
        pool=settings.pool,
        required_resource_keys={settings.klaviyo_resource_key, settings.warehouse_resource_key},
        check_specs=checks,
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
    if obj.incremental:
        keys = list(context.partition_keys)
        values = [parse_partition_key(k) for k in keys]
        span = context.partition_time_window
        fetch_window: Window | None = Window(span.start, span.end).clamp(now)
        flattener = Flattener(obj, window=fetch_window, chunk_rows=settings.chunk_rows)
    else:
        # A capture of the current state lands in the partition of the day it was taken (UTC), replacing
        # an earlier capture of the same day; earlier days keep their own captures.
        values = [day_start(now)]
        keys = [values[0].date().isoformat()]
        fetch_window = None
        flattener = Flattener(obj, partition=values[0], chunk_rows=settings.chunk_rows)

    resources = context.resources
    warehouse: Warehouse = getattr(resources, settings.warehouse_resource_key).get_warehouse(settings.schema)
    klaviyo = getattr(resources, settings.klaviyo_resource_key)
    try:
        with (
            klaviyo.get_client(context.log) as client,
            closing(prefetch(iter_pages(client, obj, fetch_window, settings.options, raw=flattener.reads_raw),
                             settings.prefetch_pages)) as pages,
        ):
            result = warehouse.replace_partitions(
                obj.name,
                obj.sql_columns(),
                PARTITION_COLUMN,
                values,
                flattener.chunks(pages),
                primary_key=obj.primary_key,
                latest_by=[obj.cursor_column] if obj.incremental and obj.cursor_column else None,
                **obj.current_view(),
            )
            stats = client.stats.snapshot()
        if not obj.incremental:
            warehouse.create_latest_partition_view(obj.name, PARTITION_COLUMN)
    except _FAIL_FAST as exc:
        raise dg.Failure(description=f"{obj.name}: {exc}", allow_retries=False) from exc
    except KlaviyoError as exc:
        raise dg.Failure(
            description=f"{obj.name}: {exc} The warehouse table was left as it was; re-run the partition."
        ) from exc

    facts = partition_facts(
        warehouse, obj.name, PARTITION_COLUMN, values, obj.primary_key,
        obj.cursor_column if obj.incremental else None,
    )  # fmt: skip
    check_results = [
        dg.AssetCheckResult(
            check_name=name,
            passed=bad == 0,
            metadata={"violations": dg.MetadataValue.int(bad)},
            severity=dg.AssetCheckSeverity.ERROR,
        )
        for name, bad in facts.violations.items()
    ]
    duration = (datetime.now(UTC) - started).total_seconds()
    metadata: dict[str, Any] = {
        "dagster/partition_row_count": dg.MetadataValue.int(result.rows),
        "dagster/row_count": dg.MetadataValue.int(facts.row_count),
        "dagster/table_name": dg.MetadataValue.text(f"{warehouse.catalog}.{result.table}"),
        "dagster/column_schema": dg.MetadataValue.table_schema(live_schema(obj, facts.columns)),
        "preview": table_preview(result.preview),
        "api": dg.MetadataValue.json(api_counters(stats)),
    }
    if fetch_window is not None:
        metadata["cursor_window"] = dg.MetadataValue.json(fetch_window.as_dict())
        if flattener.dropped:
            metadata["dropped_outside_window"] = dg.MetadataValue.int(flattener.dropped)
    else:
        metadata["captured_at"] = dg.MetadataValue.text(iso(now))
        metadata["capture_day"] = dg.MetadataValue.text(keys[0])
    if result.deduplicated:
        metadata["deduplicated"] = dg.MetadataValue.int(result.deduplicated)
    if result.columns_added:
        metadata["columns_added"] = dg.MetadataValue.json(result.columns_added)
    context.log.info(
        f"{result.table}: {result.rows} rows into {len(keys)} partition(s) from {stats['pages']} pages "
        f"({stats['requests']} requests, {stats['retries']} retries, {stats['throttled']} 429s) in {duration:.1f}s"
    )
    return dg.MaterializeResult(metadata=metadata, check_results=check_results)


def api_counters(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The client's counters of one run, grouped under one metadata entry."""
    return {
        "requests": int(stats["requests"]),
        "pages": int(stats["pages"]),
        "retries": int(stats["retries"]),
        "throttled_429": int(stats["throttled"]),
        "errors_retried": int(stats["errors"]),
        "rate_limit_wait_s": round(float(stats.get("wait_seconds", 0.0)), 3),
    }


def live_schema(obj: KlaviyoObject, columns: Mapping[str, str]) -> dg.TableSchema:
    """The table's columns as the warehouse has them now (declared ones described, evolved ones marked)."""
    declared = {c.name: f"from `{c.source}`" for c in obj.columns}
    declared[PARTITION_COLUMN] = "UTC day of the partition"
    declared[LOADED_AT] = "when the row was written"
    descriptions = {n: declared.get(n, "added by schema evolution (an attribute Klaviyo started sending)") for n in columns}
    if obj.derived is not None:  # a view: its own key (some parts may be NULL), no partition in it
        return column_schema(columns, obj.primary_key, descriptions, nullable=obj.derived.nullable_key)
    return column_schema(columns, (*obj.primary_key, PARTITION_COLUMN), descriptions)


def ingest_asset_keys(objects: Sequence[KlaviyoObject] | Mapping[str, KlaviyoObject]) -> list[dg.AssetKey]:
    """The asset keys of ``objects`` (default translator)."""
    items = objects.values() if isinstance(objects, Mapping) else objects
    return [asset_key(o) for o in items]
