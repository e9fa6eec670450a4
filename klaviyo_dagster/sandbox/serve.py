"""Command-line serving of the sandbox: shared by `klaviyo-dagster sandbox` and `python -m klaviyo_dagster.sandbox`.

Prints the base URL and the API key it accepts (a sandbox key, never a real one), then serves until
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time

from klaviyo_dagster.sandbox import run_sandbox
from klaviyo_dagster.sandbox.semantics import SWITCHES, parse_semantics


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765, 0 = any free port)")
    parser.add_argument("--seed", type=int, default=42, help="data seed (default 42)")
    parser.add_argument("--scale", default="small",
                        help="small (2,000 profiles / 20,000 events), medium (50k/500k), large (1M/10M) "
                             "or PROFILES:EVENTS (default small)")
    parser.add_argument("--rate-limits", default="off", help="off, real or scale:F (default off)")
    parser.add_argument("--faults", default=None, help="fault spec, e.g. '503:0.05,reset:0.01' (default none)")
    parser.add_argument("--api-key", default=None, help="the private key to accept (default: a deterministic pk_...)")
    parser.add_argument("--span-days", type=float, default=30.0, help="days of history ending now (default 30)")
    parser.add_argument("--late-events-after", type=float, default=None,
                        help="release the late-arriving events this many seconds after start (default: only "
                             "on POST /__sandbox/late-events)")
    parser.add_argument("--latency", default="off",
                        help="answer delays: off, realistic (reads ~200 ms + 0.1 ms/record, heavy tail) or "
                             "BASE[+PER/record][~SIGMA], e.g. 150ms+0.1ms/record (default off)")
    parser.add_argument("--page-cache-mb", type=float, default=256.0,
                        help="MB of rendered pages kept by URL so re-reads cost no generation (default 256, 0 = off)")
    parser.add_argument("--semantics", default=None,
                        help="switches for behaviours Klaviyo leaves open, e.g. 'list_add_unknown_id=ignore,"
                             "import_invalid_row=job_error' (default: the strictest answer each; "
                             f"switches: {', '.join(f'{s.name}={s.describe_values()}' for s in SWITCHES.values())})")
    return parser


def serve(args: argparse.Namespace) -> int:
    """Run a sandbox until interrupted."""
    try:
        semantics = parse_semantics(args.semantics)
    except ValueError as e:
        raise SystemExit(f"--semantics: {e}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    with run_sandbox(seed=args.seed, scale=args.scale, rate_limits=args.rate_limits, port=args.port,
                     api_key=args.api_key, faults=args.faults, span_days=args.span_days,
                     late_release_after=args.late_events_after, latency=args.latency,
                     page_cache_mb=args.page_cache_mb, semantics=semantics) as sb:
        print(f"Klaviyo sandbox (seed {args.seed}, scale {args.scale}, rate limits {args.rate_limits}, "
              f"latency {args.latency}) "
              f"ready in {time.monotonic() - started:.2f}s", flush=True)
        print(f"base_url: {sb.base_url}", flush=True)
        print(f"api_key:  {sb.api_key}", flush=True)
        print(f"export KLAVIYO_BASE_URL={sb.base_url} KLAVIYO_API_KEY={sb.api_key}", flush=True)
        print(f"semantics: {','.join(f'{k}={v}' for k, v in sb.semantics.snapshot().items())}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m klaviyo_dagster.sandbox",
                                                   description="Serve the offline Klaviyo sandbox."))
    return serve(parser.parse_args(argv))
