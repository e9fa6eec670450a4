"""`make bench` / `python -m bench.run [--only a,b] [--quick] [--out PATH]`.

Runs the benchmarks (default: all, in the order below), prints a table of ratios and writes every figure,
with the raw measurements, the settings and machine info, to `bench/results.json`. `--quick` shrinks data
and windows for development (figures then are not the published ones; results go to
`data/bench-results.quick.json`, which git ignores, unless --out is given).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

import orjson

from bench.common import Figure, machine_info, now_iso, table
from bench.sandbox_proc import SERVER_CPU

BENCHMARKS = {  # key -> module (each has run(quick=...) -> list[Figure])
    "rate_limit_utilisation": "bench.rate_limit",
    "vs_naive": "bench.vs_naive",
    "latency_utilisation": "bench.latency_utilisation",
    "hot_path": "bench.hot_path",
    "overhead": "bench.overhead",
    "memory": "bench.memory",
    "activation": "bench.activation",
    "concurrency": "bench.concurrency",
    "recovery_after_throttling": "bench.recovery",
}
ALIASES = {"latency": "latency_utilisation", "hot": "hot_path", "rate_limit": "rate_limit_utilisation",
           "rate": "rate_limit_utilisation", "naive": "vs_naive", "recovery": "recovery_after_throttling"}
HERE = Path(__file__).resolve().parent


def parse_only(text: str | None) -> list[str]:
    """`--only` value -> benchmark keys in run order; a clear error for unknown names."""
    if not text:
        return list(BENCHMARKS)
    wanted = []
    for raw in text.split(","):
        name = ALIASES.get(raw.strip(), raw.strip())
        if not name:
            continue
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {raw!r}: choose from {', '.join(BENCHMARKS)}")
        wanted.append(name)
    return [k for k in BENCHMARKS if k in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small data and fewer windows (development)")
    parser.add_argument("--out", help="results file (default bench/results.json, or results.quick.json)")
    args = parser.parse_args(argv)
    keys = parse_only(args.only)
    out = Path(args.out) if args.out else (HERE.parent / "data" / "bench-results.quick.json" if args.quick
                                           else HERE / "results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine_before = machine_info()
    figures: list[Figure] = []
    failures: dict[str, str] = {}
    for key in keys:
        print(f"[{time.perf_counter() - started:6.0f} s] {key} ...", flush=True)
        t0 = time.perf_counter()
        SERVER_CPU.clear()
        load_before = os.getloadavg()
        try:
            module = importlib.import_module(BENCHMARKS[key])
            figs = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failures[key] = f"{type(exc).__name__}: {exc}"
            figs = [Figure(key, None, float("nan"), ">=", note=f"FAILED: {type(exc).__name__}: {exc}")]
        wall = time.perf_counter() - t0
        server_cpu = sum(c for _, c in SERVER_CPU)
        for f in figs:
            f.seconds = f.seconds or wall
            for one in (f, *f.extra):  # every figure says how busy its server(s) and the machine were
                one.measurements.setdefault("server_cpu_share_of_benchmark", round(server_cpu / wall, 4))
                one.measurements.setdefault("server_cpu_s", round(server_cpu, 2))
                one.measurements.setdefault("load_avg_1_before_after", [round(load_before[0], 2),
                                                                        round(os.getloadavg()[0], 2)])
        figures.extend(figs)
        print(f"[{time.perf_counter() - started:6.0f} s] {key} done in {time.perf_counter() - t0:.0f} s", flush=True)
    total = time.perf_counter() - started
    results = {
        "timestamp": now_iso(),
        "quick": args.quick,
        "total_seconds": round(total, 1),
        "machine": {"before": machine_before, "after": machine_info()},
        "benchmarks": {f.name: f.to_json() for fig in figures for f in (fig, *fig.extra)},
        "failures": failures,
    }
    # Secondary figures are listed once at the top level; drop their copies nested in the parent.
    for f in figures:
        results["benchmarks"][f.name]["extra"] = [e.name for e in f.extra]
    if args.only and out.exists() and not args.quick:
        previous = orjson.loads(out.read_bytes())
        previous.setdefault("benchmarks", {}).update(results["benchmarks"])
        previous.update({k: v for k, v in results.items() if k != "benchmarks"})
        results = previous
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY,
                                 default=str) + b"\n")
    print()
    print(table(figures))
    print(f"\n{len(figures)} benchmarks in {total:.0f} s; results in {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
