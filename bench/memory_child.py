"""Child process of the `memory` benchmark: materialize one partition, print peak RSS as JSON.

`python -m bench.memory_child OBJECT PARTITION DB_PATH` with KLAVIYO_BASE_URL / KLAVIYO_API_KEY set.
Prints one JSON line: rows, seconds, the peak RSS after imports (`baseline_rss_kb`) and at the end
(`peak_rss_kb`), in KiB. The peak is the kernel's high-water mark of this process's address space
(`VmHWM` in /proc/self/status). Not `ru_maxrss`: Linux carries it over from the forking parent across
exec, so a child of a big parent reports the parent's peak.
"""

from __future__ import annotations

import os
import resource
import sys

import orjson


def peak_rss_kb() -> int:
    """Peak resident set size of this process so far, KiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str]) -> int:
    name, partition, db = argv
    from bench.materialize import materialize_partition, quiet_dagster

    quiet_dagster()
    baseline = peak_rss_kb()
    result = materialize_partition(name, partition, os.environ["KLAVIYO_BASE_URL"], os.environ["KLAVIYO_API_KEY"], db)
    peak = peak_rss_kb()
    sys.stdout.write(orjson.dumps({"rows": result["rows"], "seconds": result["seconds"],
                                   "baseline_rss_kb": baseline, "peak_rss_kb": peak}).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
