"""One worker of the multiprocess backfill in `test_backfill.py`: `python -m ...backfill_child CONFIG_JSON`.

Materializes its share of the partitions (one run per partition, several objects per run, like a Dagster
backfill of daily partitions) into the shared DuckDB file and prints one JSON line: runs, failures, run seconds and
every DuckDB lock-wait message the warehouse logged.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import dagster as dg
import orjson

from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource


class LockMessages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "lock" in text.lower() and "DuckDB" in text:
            self.messages.append(f"{record.levelname}: {text}")


def main(argv: list[str]) -> int:
    cfg = orjson.loads(Path(argv[0]).read_bytes())
    locks = LockMessages()
    logging.getLogger().addHandler(locks)
    logging.getLogger().setLevel(logging.DEBUG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=cfg["objects"], schedule=False, start_date=cfg["start_date"])
    resources = {
        "klaviyo": KlaviyoResource(api_key=cfg["api_key"], base_url=cfg["base_url"]),
        "warehouse": WarehouseResource(database=cfg["database"]),
    }
    out = {"runs": 0, "failures": [], "seconds": []}
    for key in cfg["partitions"]:
        began = time.monotonic()
        result = dg.materialize(defs.assets, resources=resources, instance=dg.DagsterInstance.ephemeral(),
                                partition_key=key, raise_on_error=False)
        out["runs"] += 1
        out["seconds"].append(round(time.monotonic() - began, 2))
        if not result.success:
            out["failures"].append(key)
    out["lock_messages"] = locks.messages
    print(orjson.dumps(out).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
