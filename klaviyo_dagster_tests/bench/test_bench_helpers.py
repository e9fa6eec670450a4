"""Logic of the benchmark helpers (no timing assertions): window counting, targets, the factor rule,
the naive seed loop against the sandbox, the results of a figure, `--only` parsing."""

from __future__ import annotations

import math

import pytest

from bench.common import Figure, full_windows, meets, ratio, table, window_counts
from bench.naive import PAGE_SIZE, NaiveStats, naive_pages, retry_after_wall
from bench.rate_limit import F_GRID, choose_factor
from bench.run import BENCHMARKS, parse_only


def test_window_counts_are_fixed_windows_of_the_clock() -> None:
    assert window_counts([0.0, 0.5, 0.99, 1.0, 2.5, 2.9], 1.0) == {0: 3, 1: 1, 2: 2}
    assert window_counts([5.9, 6.0, 11.99, 12.0], 6.0) == {0: 1, 1: 2, 2: 1}
    with pytest.raises(ValueError, match="window must be > 0"):
        window_counts([1.0], 0)


def test_full_windows_keep_only_windows_inside_the_run_and_count_empty_ones() -> None:
    times = [10.2, 10.4, 11.0, 11.5, 13.1, 14.9, 15.2]
    # run from 10.2 to 15.3: whole windows are [11,12), [12,13), [13,14), [14,15)
    assert full_windows(times, 1.0, started=10.2, ended=15.3) == [2, 0, 1, 1]
    # a run starting exactly on a boundary counts that window
    assert full_windows(times, 1.0, started=10.0, ended=12.0) == [2, 2]
    assert full_windows(times, 1.0, started=10.5, ended=11.5) == []


def test_meets_and_ratio() -> None:
    assert meets(0.96, 0.95, ">=") and not meets(0.94, 0.95, ">=")
    assert meets(0.0, 0.01, "<=") and not meets(0.02, 0.01, "<=")
    assert meets(1.0, 1.0, "==") and not meets(1.01, 1.0, "==")
    assert not meets(None, 1.0, ">=") and not meets(math.nan, 1.0, "<=")
    with pytest.raises(ValueError, match="direction"):
        meets(1.0, 1.0, ">")
    assert ratio(3, 4) == 0.75 and ratio(1, 0) is None


def test_figure_json_and_table_show_secondary_figures() -> None:
    share = Figure("share_429", 0.02, 0.01, "<=", unit="share", note="429s")
    fig = Figure("util", 0.97, 0.95, ">=", measurements={"windows": [1, 2]}, extra=[share], note="main")
    data = fig.to_json()
    assert data["met"] is True and data["extra"][0]["met"] is False
    assert data["measurements"] == {"windows": [1, 2]}
    text = table([fig])
    assert "util" in text and "share_429" in text and "2.00%" in text and "NO" in text


def test_choose_factor_is_the_smallest_grid_value_that_keeps_the_machine_out_of_the_way() -> None:
    # 750 requests a window at 10 ms CPU and 10 ms wall each: 7.5 s of work a window;
    # half a core and half the reader's time -> the window must last >= 15 s -> F >= 0.25.
    assert choose_factor(750, 0.010, 0.010, cpu_budget=0.5, duty=0.5) == 0.25
    # wall time binds when it is the larger cost
    assert choose_factor(750, 0.001, 0.020, cpu_budget=0.5, duty=0.5) == 0.5
    # cheap requests never go below the floor
    assert choose_factor(60, 0.001, 0.001) == 0.1
    # beyond the grid: whole numbers
    assert choose_factor(3500, 0.060, 0.060, cpu_budget=0.5, duty=0.5) == 7.0
    for f in F_GRID:
        assert choose_factor(750, 0.0, 0.0, floor=f) == f


def test_retry_after_wall_scales_whole_klaviyo_seconds() -> None:
    assert retry_after_wall({"Retry-After": "2"}, 1.0) == 2.0
    assert retry_after_wall({"Retry-After": "1"}, 0.25) == 0.25
    # a scaled sandbox says the exact wall wait: 0.3 s at F=0.25 is 1.2 Klaviyo seconds -> 2 whole ones
    assert retry_after_wall({"Retry-After": "1", "X-Sandbox-Retry-After-Ms": "300"}, 0.25) == 0.5
    assert retry_after_wall({}, 0.5) == 0.5


def test_naive_loop_reads_every_profile_twenty_a_page(klaviyo_sandbox) -> None:
    stats = NaiveStats()
    ids: list[str] = []
    for page in naive_pages(klaviyo_sandbox.base_url, klaviyo_sandbox.api_key, "/api/profiles", {},
                            time_scale=0.001, stats=stats):
        assert len(page) <= PAGE_SIZE
        ids.extend(r["id"] for r in page)
    truth = {r["id"] for r in klaviyo_sandbox.truth.records("profile")}
    assert len(ids) == len(set(ids)) == len(truth) and set(ids) == truth
    assert stats.pages == math.ceil(len(truth) / PAGE_SIZE) == stats.requests
    assert stats.records == len(truth) and stats.throttled == 0


def test_naive_loop_waits_out_429s_and_still_reads_everything(klaviyo_sandbox_factory) -> None:
    sb = klaviyo_sandbox_factory(scale="200:100", faults="GET /api/profiles=429:next2@1")
    stats = NaiveStats()
    records = sum(len(p) for p in naive_pages(sb.base_url, sb.api_key, "/api/profiles", {}, time_scale=0.01,
                                              stats=stats))
    assert records == len(sb.truth.records("profile")) == stats.records
    assert stats.throttled == 2 and stats.requests == stats.pages + 2
    assert stats.slept_s >= 2 * 0.01  # Retry-After 1 s, scaled


def test_parse_only_keeps_run_order_and_rejects_unknown_names() -> None:
    assert parse_only(None) == list(BENCHMARKS)
    assert parse_only("memory,overhead") == ["overhead", "memory"]
    assert parse_only("naive, rate_limit") == ["rate_limit_utilisation", "vs_naive"]
    with pytest.raises(SystemExit, match="unknown benchmark 'speed'"):
        parse_only("speed")


def test_lock_waits_parse_the_warehouse_log_lines() -> None:
    from bench.concurrency import lock_waits

    lines = ["Got the DuckDB write lock on /tmp/x/together.duckdb after 3.2 s", "something else", None,
             "Got the DuckDB write lock on data/klaviyo.duckdb after 0.0 s"]
    assert lock_waits(lines) == [3.2, 0.0]
