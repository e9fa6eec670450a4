"""`recovery_after_throttling`: how fast the client's pace returns after a burst of 429s.

One sandbox account with Klaviyo's tier shapes scaled in time (`scale:F`, steady window W = 60*F s). Our
client (paced, told F) reads `GET /api/metrics` (tier M: 10/s burst, 150/min steady) in a loop. After one
window alone, "another app" on the same account (an unpaced client in a thread) hammers the endpoint for
half a window: the account's budget is spent and our client meets 429s. The other app then stops at T0.

Figures: the requests our client got answered in the second steady window after T0, [T0+W, T0+2W), over
the tier's steady limit (target >= 0.9: back to the tier's pace within two windows), and how many windows
after T0 the sliding one-window rate first reached 0.9 of the limit. The sandbox's and the client's CPU
share of one core over the run is reported next to them (the sandbox must not be the bottleneck).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.common import Figure
from bench.sandbox_proc import SandboxProcess
from klaviyo_dagster.client import KlaviyoClient, KlaviyoError
from klaviyo_dagster.client.tiers import STEADY_WINDOW_S, Tier

PATH = "/api/metrics"
TIER = Tier.M


def _hammer(sb: SandboxProcess, stop: threading.Event, counts: dict[str, int]) -> None:
    """The other app: no pacing, no patience (one try per call), as fast as it can."""
    with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=0, max_retries=0) as other:
        while not stop.is_set():
            try:
                other.get(PATH)
                counts["ok"] += 1
            except KlaviyoError:
                counts["refused"] += 1


def first_recovered(ok_sends: list[float], t0: float, window: float, limit: int, share: float = 0.9) -> float | None:
    """Windows after ``t0`` at which the sliding one-window count of answered requests first reaches
    ``share * limit`` (None: never within the run)."""
    j = 0
    for i, t in enumerate(ok_sends):
        if t < t0:
            continue
        while ok_sends[j] < t - window:
            j += 1
        if i - j + 1 >= share * limit:
            return (t - t0) / window
    return None


def measure(factor: float = 0.1, after_windows: int = 3) -> dict[str, Any]:
    w = STEADY_WINDOW_S * factor
    limit = TIER.steady
    sends: list[tuple[float, int]] = []

    def hook(resp: Any, *args: Any, **kwargs: Any) -> None:
        sends.append((time.time() - resp.elapsed.total_seconds(), resp.status_code))

    with SandboxProcess(scale="200:0", rate_limits=f"scale:{factor:g}") as sb:
        other = {"ok": 0, "refused": 0}
        stop = threading.Event()
        cpu0, client_cpu0, wall0 = sb.cpu_seconds(), time.process_time(), time.perf_counter()
        with KlaviyoClient(sb.api_key, base_url=sb.base_url, rate_limit_scale=factor, max_backoff=5 * w) as client:
            client.session.hooks["response"].append(hook)
            started = time.time()
            storm_at, t0, end = started + w, started + 1.5 * w, started + (1.5 + after_windows) * w
            thread = None
            while time.time() < end:
                now = time.time()
                if thread is None and now >= storm_at:
                    thread = threading.Thread(target=_hammer, args=(sb, stop, other), daemon=True)
                    thread.start()
                if thread is not None and not stop.is_set() and now >= t0:
                    stop.set()
                    t0 = now
                client.get(PATH)
            stats = client.stats.snapshot()
        if thread is not None:
            stop.set()
            thread.join(timeout=10)
        wall = time.perf_counter() - wall0
        sandbox_cpu = sb.cpu_seconds() - cpu0
        client_cpu = time.process_time() - client_cpu0
    ok = sorted(t for t, s in sends if s < 300)
    throttled = sum(1 for t, s in sends if s == 429)
    second = sum(1 for t in ok if t0 + w <= t < t0 + 2 * w)
    first = sum(1 for t in ok if t0 <= t < t0 + w)
    before = sum(1 for t in ok if started <= t < started + w)
    return {
        "factor": factor,
        "steady_window_s": w,
        "steady_limit": limit,
        "tier": TIER.name,
        "answered_in_window_before_storm": before,
        "answered_in_first_window_after": first,
        "answered_in_second_window_after": second,
        "pace_second_window": second / limit,
        "windows_to_0_9": first_recovered(ok, t0, w, limit),
        "our_429s": throttled,
        "our_requests": stats["requests"],
        "our_wait_seconds": stats["wait_seconds"],
        "other_app": other,
        "wall_s": round(wall, 2),
        "sandbox_cpu_share": round(sandbox_cpu / wall, 3),
        "client_cpu_share": round(client_cpu / wall, 3),
    }


def run(quick: bool = False) -> list[Figure]:
    started = time.perf_counter()
    result = measure(factor=0.1, after_windows=3)
    print(f"  recovery: second window after the storm {result['answered_in_second_window_after']}/"
          f"{result['steady_limit']}, 0.9 reached after {result['windows_to_0_9']} windows, "
          f"{result['our_429s']} 429s; sandbox CPU {result['sandbox_cpu_share']:.0%}", flush=True)
    windows = result["windows_to_0_9"]
    extra = Figure("recovery_windows_to_0_9", windows, 2.0, "<=", unit="windows",
                   note="steady windows after the storm until the sliding rate is 0.9 of the tier")
    return [Figure("recovery_after_throttling", result["pace_second_window"], 0.9, ">=",
                   measurements=result, extra=[extra], seconds=time.perf_counter() - started,
                   settings={"path": PATH, "tier": TIER.name, "factor": 0.1, "storm_windows": 0.5},
                   note=f"answered in the 2nd steady window after a 429 storm / tier limit; sandbox CPU "
                        f"{result['sandbox_cpu_share']:.0%}, client CPU {result['client_cpu_share']:.0%} of a core")]
