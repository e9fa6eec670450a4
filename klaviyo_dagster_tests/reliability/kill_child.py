"""A real ingest run to be SIGKILLed by `test_sigkill.py`: `python -m ...kill_child CONFIG_JSON`.

Materializes one object over a partition range with the package's own assets and resources. The only
instrumentation is a `Warehouse` subclass that reports (to the marker file) when it reaches a point of the
write path and, at the chosen point, holds there for ``hold`` seconds, so the parent's SIGKILL lands
exactly in that phase: ``staged`` (a chunk is in the staging file), ``commit-begin`` (the warehouse
transaction is open), ``commit-inserted`` (old rows deleted and new ones inserted, not yet committed).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
import orjson

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource

CONFIG: dict[str, Any] = {}


def mark(point: str) -> None:
    with open(CONFIG["marker"], "a") as f:
        f.write(point + "\n")
    if CONFIG.get("pause_at") == point:
        time.sleep(float(CONFIG.get("hold", 30.0)))


class ReportingWarehouse(Warehouse):
    """`Warehouse` unchanged, plus marks at the points the parent kills at."""

    def replace_partitions(self, table, columns, partition_column, partition_values, chunks, **kw):  # type: ignore[no-untyped-def, override]
        def reported():
            for i, chunk in enumerate(chunks):
                yield chunk  # resumed once the chunk is appended to the staging file
                if i == 0:
                    mark("staged")

        return super().replace_partitions(table, columns, partition_column, partition_values, reported(), **kw)

    def _ensure_table(self, conn, table, columns):  # type: ignore[no-untyped-def, override]
        mark("commit-begin")
        return super()._ensure_table(conn, table, columns)

    def create_current_view(self, conn, table, *args, **kw):  # type: ignore[no-untyped-def, override]
        mark("commit-inserted")  # called inside the transaction, after the insert, before COMMIT
        return super().create_current_view(conn, table, *args, **kw)


class ReportingWarehouseResource(WarehouseResource):
    def get_warehouse(self, *args: Any, **kwargs: Any) -> Warehouse:
        warehouse = super().get_warehouse(*args, **kwargs)
        warehouse.__class__ = ReportingWarehouse  # the same object, reporting
        return warehouse


def main(argv: list[str]) -> int:
    CONFIG.update(orjson.loads(Path(argv[0]).read_bytes()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=[CONFIG["object"]], schedule=False, start_date=CONFIG["start_date"])
    resources = {
        "klaviyo": KlaviyoResource(api_key=CONFIG["api_key"], base_url=CONFIG["base_url"], max_backoff=0.05),
        "warehouse": ReportingWarehouseResource(database=CONFIG["database"]),
    }
    mark("started")
    result = dg.materialize(
        defs.assets,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": CONFIG["first"], "dagster/asset_partition_range_end": CONFIG["last"]},
        raise_on_error=False,
    )
    mark("done" if result.success else "failed")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
