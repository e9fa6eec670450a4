"""Child process of the `memory` benchmark: materialize one partition, print peak RSS as JSON.

`python -m bench.memory_child OBJECT PARTITION DB_PATH` with KLAVIYO_BASE_URL / KLAVIYO_API_KEY set.
Prints one JSON line: rows, seconds, the RSS after imports (`baseline_rss_kb`) and the peak RSS of
this process (`ru_maxrss`, KiB on Linux).
"""

from __future__ import annotations

import os
import resource
import sys

import orjson


def main(argv: list[str]) -> int:
    name, partition, db = argv
    from bench.materialize import materialize_partition, quiet_dagster

    quiet_dagster()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = materialize_partition(name, partition, os.environ["KLAVIYO_BASE_URL"], os.environ["KLAVIYO_API_KEY"], db)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write(orjson.dumps({"rows": result["rows"], "seconds": result["seconds"],
                                   "baseline_rss_kb": baseline, "peak_rss_kb": peak}).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
