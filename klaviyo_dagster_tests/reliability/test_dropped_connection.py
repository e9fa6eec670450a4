"""A client that drops its connection while the sandbox reads its request costs one log line, no traceback."""

from __future__ import annotations

import logging
import socket
import struct
import time

import pytest

from klaviyo_dagster.sandbox import run_sandbox


def test_dropped_connection_is_one_log_line(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="klaviyo_dagster.sandbox")
    with run_sandbox(seed=3, scale="10:0") as sb:
        conn = socket.create_connection(("127.0.0.1", sb.port))
        conn.sendall(b"POST /api/profiles HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"data\":")
        time.sleep(0.05)  # the server is now blocked reading the rest of the body
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST: the read fails with ConnectionResetError
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("dropped" in r.getMessage() for r in caplog.records):
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and "ConnectionResetError" in lines[0] and "127.0.0.1" in lines[0]
    assert "\n" not in lines[0]
    assert "Traceback" not in capfd.readouterr().err
