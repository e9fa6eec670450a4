"""`python -m bench.readme`: the README's Performance table, written from bench/results.json (no figure typed).

Rewrites the lines between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` in README.md: one
row per figure of the results file, with its value, target, whether it is met, the CPU share of the
server(s) it read (sandbox or replay child: while measuring, when the figure recorded that, and over its
whole benchmark, data generation included) and the load average before and after it, then its note.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.common import fmt_value

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def rows(results: dict[str, Any]) -> list[str]:
    """Markdown table lines for every figure in ``results`` (secondary figures after their parent)."""
    figs = results.get("benchmarks", {})
    order: list[str] = []
    for name, fig in figs.items():
        if name in order:
            continue
        order.append(name)
        order.extend(e for e in fig.get("extra", []) if e in figs and e not in order)
    out = ["| benchmark | value | target | met | server CPU | load 1 min | what |", "|---|---|---|---|---|---|---|"]
    for name in order:
        f = figs[name]
        m = f.get("measurements", {})
        whole = m.get("server_cpu_share_of_benchmark")
        measuring = next((m[k] for k in ("server_cpu_share", "sandbox_cpu_share") if isinstance(m.get(k), (int, float))),
                         None)
        load = m.get("load_avg_1_before_after")
        cells = [f"`{name}`", fmt_value(f.get("value"), f.get("unit", "ratio")),
                 f"{f.get('direction')} {fmt_value(f.get('target'), f.get('unit', 'ratio'))}",
                 "yes" if f.get("met") else "**no**",
                 _share(measuring, whole),
                 f"{load[0]:g} / {load[1]:g}" if load else "n/a", (f.get("note") or "").replace("|", "/")]
        out.append("| " + " | ".join(cells) + " |")
    machine = results.get("machine", {})
    before, after = (machine.get(k, {}).get("load_avg_1_5_15") for k in ("before", "after"))
    cpus = machine.get("before", {}).get("cpu_count")
    out += ["", f"Run of {results.get('timestamp', '?')}: {len(figs)} figures in "
            f"{(results.get('total_seconds') or 0) / 60:.1f} min on {cpus} cores; load average (1, 5, 15 min) "
            f"{before} before, {after} after" + (" (a --quick run)" if results.get("quick") else "")
            + (f"; {len(results['partial_runs'])} earlier partial run(s) merged" if results.get("partial_runs") else "")
            + "."]
    return out


def _share(measuring: float | None, whole: float | None) -> str:
    """The server CPU cell: while measuring (when the figure recorded it) and over the whole benchmark."""
    parts = []
    if measuring is not None:
        parts.append(f"{measuring:.1%} measuring")
    if isinstance(whole, (int, float)):
        parts.append(f"{whole:.1%} whole bench" if measuring is not None else f"{whole:.1%}")
    return ", ".join(parts) or "n/a"


def render(readme: str, results: dict[str, Any]) -> str:
    """``readme`` with the table between the markers replaced."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + "\n".join(rows(results)) + "\n" + END + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(HERE / "results.json"))
    parser.add_argument("--readme", default=str(HERE.parent / "README.md"))
    args = parser.parse_args(argv)
    results = orjson.loads(Path(args.results).read_bytes())
    path = Path(args.readme)
    path.write_text(render(path.read_text(), results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
