"""`python -m klaviyo_dagster.sandbox` / `klaviyo-dagster sandbox`: prints a base URL and a key it accepts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "klaviyo_dagster.sandbox"],
    [sys.executable, "-m", "klaviyo_dagster.cli", "sandbox"],
])
def test_cli_prints_url_and_key_and_serves(argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(argv + ["--port", "0", "--seed", "3", "--scale", "50:200", "--api-key", "pk_cli_test"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        lines = []
        while len(lines) < 3:
            line = proc.stdout.readline()
            assert line, "".join(lines) + (proc.stdout.read() or "")
            lines.append(line)
        text = "".join(lines)
        base_url = re.search(r"base_url: (http://127\.0\.0\.1:\d+)", text).group(1)
        assert "api_key:  pk_cli_test" in text
        r = requests.get(f"{base_url}/api/profiles/", timeout=10,
                         headers={"Authorization": "Klaviyo-API-Key pk_cli_test", "revision": "2026-07-15"})
        assert r.status_code == 200 and len(r.json()["data"]) == 20
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
