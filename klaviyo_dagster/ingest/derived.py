"""Derived objects (entries with ``derived=Derived(...)``): assets that (re)create a warehouse view over
another object's ``_current`` view, e.g. ``klaviyo/exclusions`` over ``profiles_current``.

They make no API calls: the asset depends on its source's asset, is unpartitioned (the view is always
current; a run refreshes its definition and reports what it holds) and lands in the snapshots job. Spec
from the translator like every ingest asset; checks: key unique, required key columns not NULL.
"""


import dataclasses
from typing import Any

import dagster as dg

from klaviyo_dagster.ingest.assets import (
    IngestSettings,
    api_counters,
    asset_key,
    ingest_props,
    key_checks,
    live_schema,
)
from klaviyo_dagster.ingest.objects import PARTITION_COLUMN, KlaviyoObject, get_object
from klaviyo_dagster.ingest.preview import table_preview
from klaviyo_dagster.warehouse import Warehouse
from klaviyo_dagster.warehouse.current import CURRENT_VIEW_SUFFIX
from klaviyo_dagster.warehouse.derived import SourceMissing, create_derived_view


def ensure_source(warehouse: Warehouse, source: KlaviyoObject) -> bool:
    """Create ``source``'s table (empty, its declared columns) and ``_current`` view when it has not landed
    yet, exactly as its own first run would; True when it had to. A view over it then fills as it lands."""
    if warehouse.table_exists(source.name + CURRENT_VIEW_SUFFIX):
        return False
    warehouse.replace_partitions(
        source.name, source.sql_columns(), PARTITION_COLUMN, [], iter(()), primary_key=source.primary_key,
        latest_by=[source.cursor_column] if source.incremental and source.cursor_column else None,
        **source.current_view(),
    )  # fmt: skip
    if not source.incremental:
        warehouse.create_latest_partition_view(source.name, PARTITION_COLUMN)
    return True


def build_derived_asset(obj: KlaviyoObject, settings: IngestSettings) -> dg.AssetsDefinition:
    """The asset (with its checks) of one derived entry."""
    derived = obj.derived
    assert derived is not None
    source_key = asset_key(derived.source, settings.translator)
    props = ingest_props(obj, settings)
    props = dataclasses.replace(
        props,
        deps=(source_key,),
        metadata={**props.metadata, "klaviyo/api_path": f"none (a view over {derived.source}_current)",
                  "klaviyo/rate_limit_tier": "none (no API calls)", "klaviyo/derived_from": derived.source},
    )
    spec = settings.translator.get_asset_spec(props)
    required = [c for c in obj.primary_key if c not in derived.nullable_key]
    checks = key_checks(spec.key, obj.primary_key, per_partition=False, not_null=required)

    @dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec],
        required_resource_keys={settings.warehouse_resource_key},
        check_specs=checks,
    )
    def _derive(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse = getattr(context.resources, settings.warehouse_resource_key).get_warehouse(settings.schema)
        if ensure_source(warehouse, get_object(derived.source)):
            context.log.info(  # not a problem: the view fills as the source lands
                f"{derived.source} has not landed yet: {obj.name} is a view over an empty "
                f"{derived.source}{CURRENT_VIEW_SUFFIX} for now and fills as {derived.source} lands (no re-run needed)")
        try:
            facts = create_derived_view(warehouse, obj.name, derived.source, obj.primary_key,
                                        derived.nullable_key, derived.count_by)
        except SourceMissing as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        counts = ", ".join(f"{'/'.join(str(r[c]) for c in derived.count_by)} {r['rows']}" for r in facts.counts)
        context.log.info(f"{warehouse.qualified(obj.name)}: {facts.row_count} rows from "
                         f"{derived.source}_current, 0 requests" + (f" ({counts})" if counts else ""))
        metadata: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(facts.row_count),
            "dagster/table_name": dg.MetadataValue.text(f"{warehouse.catalog}.{warehouse.schema}.{obj.name}"),
            "dagster/column_schema": dg.MetadataValue.table_schema(live_schema(obj, facts.columns)),
            "preview": table_preview(facts.preview),
            "api": dg.MetadataValue.json(api_counters({"requests": 0, "pages": 0, "retries": 0, "throttled": 0,
                                                        "errors": 0})),
            "derived_from": dg.MetadataValue.text(f"{warehouse.schema}.{derived.source}_current"),
        }
        if facts.counts:
            metadata["row_counts"] = dg.MetadataValue.json(
                [{k: (str(v) if k != "rows" else v) for k, v in r.items()} for r in facts.counts])
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(check_name=name, passed=bad == 0, severity=dg.AssetCheckSeverity.ERROR,
                                    metadata={"violations": dg.MetadataValue.int(bad)})
                for name, bad in facts.violations.items()
            ],
        )

    return _derive
