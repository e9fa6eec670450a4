"""`make dev`: the Klaviyo sandbox and `dagster dev` together, stopped together.

Starts the sandbox as a child process, points the package at it (KLAVIYO_BASE_URL, KLAVIYO_API_KEY), gives
Dagster a project-local DAGSTER_HOME with a concurrency limit for the `klaviyo_api` pool, and runs
`dagster dev -w workspace.yaml`. Both children run in their own process groups: `dagster dev` started in the
background ignores SIGTERM, so on exit (Ctrl-C or an error) each group gets SIGINT, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGSTER_YAML = """\
# Written by `make dev` (klaviyo_dagster/devserver.py).
concurrency:
  pools:
    # Assets that call Klaviyo share the `klaviyo_api` pool; Klaviyo's limits are per account and endpoint.
    default_limit: {pool_limit}
telemetry:
  enabled: false
"""


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a child started in its own session: SIGINT to its group, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_sandbox(port: int, seed: int, scale: str, env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    """Start `python -m klaviyo_dagster.sandbox` and read the base URL and API key it prints."""
    proc = _start([sys.executable, "-m", "klaviyo_dagster.sandbox", "--port", str(port), "--seed", str(seed),
                   "--scale", scale], env)
    base_url = api_key = ""
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline and not (base_url and api_key):
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"the sandbox exited with code {proc.returncode}; is port {port} free?")
            continue
        if m := re.search(r"(http://127\.0\.0\.1:\d+)", line):
            base_url = base_url or m.group(1)
        if m := re.search(r"\b(pk_[A-Za-z0-9_]+)", line):
            api_key = api_key or m.group(1)
    if not (base_url and api_key):
        stop_group(proc)
        raise RuntimeError("the sandbox did not print its base URL and API key within 60 s")
    # Keep draining its output so a full pipe never blocks the sandbox.
    threading.Thread(target=_echo, args=(proc, "[sandbox] "), daemon=True).start()
    return proc, base_url, api_key


def _echo(proc: subprocess.Popen, prefix: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(prefix + line)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="sandbox port (default 8765)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", default="small")
    parser.add_argument("--ui-port", type=int, default=3000, help="Dagster UI port (default 3000)")
    parser.add_argument("--pool-limit", type=int, default=2, help="concurrency limit of the klaviyo_api pool")
    parser.add_argument("--dagster-home", type=Path, default=ROOT / ".dagster_home",
                        help="DAGSTER_HOME to write dagster.yaml into and run with (default .dagster_home/)")
    args = parser.parse_args(argv)
    # Started from a script or in the background, SIGINT may arrive ignored (SIG_IGN), and children would
    # inherit that: install real handlers first (Ctrl-C and SIGTERM both stop everything; children then
    # start with default dispositions and honour the SIGINT we send their groups).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)

    env = dict(os.environ)
    # The demo SQL models build activation's inputs from the sandbox's data (a real account's location has none).
    env.setdefault("KLAVIYO_DEMO_MODELS", "1")
    # Partitions from the first day the sandbox holds data (30 days back), unless chosen.
    env.setdefault("KLAVIYO_START_DATE", (datetime.now(timezone.utc) - timedelta(days=30)).strftime("%Y-%m-%d"))
    home = args.dagster_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(pool_limit=args.pool_limit))
    env["DAGSTER_HOME"] = str(home)

    sandbox, base_url, api_key = start_sandbox(args.port, args.seed, args.scale, env)
    env["KLAVIYO_BASE_URL"] = base_url
    env["KLAVIYO_API_KEY"] = api_key  # the sandbox's own key, not a secret
    print(f"sandbox: {base_url} (seed {args.seed}, scale {args.scale})", flush=True)
    dagster = _start([sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"),
                      "-h", "127.0.0.1", "-p", str(args.ui_port)], env)
    print(f"dagster UI: http://127.0.0.1:{args.ui_port}  (Ctrl-C stops both)", flush=True)
    try:
        assert dagster.stdout is not None
        for line in dagster.stdout:
            sys.stdout.write(line)
        return dagster.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(dagster)
        stop_group(sandbox)


if __name__ == "__main__":
    sys.exit(main())
