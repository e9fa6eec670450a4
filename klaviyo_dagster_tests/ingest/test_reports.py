"""Reporting API assets against the real sandbox: values equal what the events table implies, one request
per report and day (a series: one per 60 days), the daily budget counted in the warehouse and refused
before sending, and the pacing the client takes from the endpoint's real RateLimit headers."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from klaviyo_dagster.client import KlaviyoClient
from klaviyo_dagster.client.tiers import resolve_bucket
from klaviyo_dagster.factories import build_ingest_definitions
from klaviyo_dagster.ingest.objects import get_object
from klaviyo_dagster.ingest.reports import pacing_interval, plan_requests, request_body
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import Warehouse, WarehouseResource, report_budget
from klaviyo_dagster_tests.sandbox.sandbox_http import call

UTC = timezone.utc
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
ACCOUNT = "klaviyo_api"  # the account's pool name: the budget is counted per account
CAMPAIGN_OP = "POST /api/campaign-values-reports"
FLOW_OP = "POST /api/flow-values-reports"
SERIES_OP = "POST /api/flow-series-reports"
RECEIVED = ("Received Email", "Sent SMS", "Received Push")


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


DAY = today() - timedelta(days=3)  # a complete day inside the sandbox's 30 days of data


def run(handle: Any, db: Path, names: list[str], *, start: datetime, end: datetime | None = None,
        **build: Any) -> dg.ExecuteInProcessResult:
    """Materialize ``names`` for the day ``start`` or the single-run range [start..end]."""
    build.setdefault("start_date", today() - timedelta(days=40))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(objects=names, schedule=False, deletion_sweeps=False, **build)
    resources = {"klaviyo": KlaviyoResource(api_key=handle.api_key, base_url=handle.base_url, max_backoff=0.05,
                                            rate_limit_scale=0),
                 "warehouse": WarehouseResource(database=str(db))}
    kwargs: dict[str, Any] = {"partition_key": start.strftime("%Y-%m-%d")}
    if end is not None:
        kwargs = {"tags": {RANGE_START: start.strftime("%Y-%m-%d"), RANGE_END: end.strftime("%Y-%m-%d")}}
    if all(not get_object(n).incremental and get_object(n).report is None for n in names):
        kwargs = {}
    return dg.materialize(defs.assets, resources=resources, instance=dg.DagsterInstance.ephemeral(),
                          raise_on_error=False, **kwargs)


def meta(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    mats = result.asset_materializations_for_node(f"klaviyo__{name}")
    return {k: v.value for k, v in mats[0].metadata.items()}


def failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.event_specific_data.error.to_string()) for e in result.all_events
                     if e.is_failure and getattr(e.event_specific_data, "error", None))


def send_days(handle: Any) -> dict[str, datetime]:
    """Campaign message id -> the UTC day its (sent) campaign went out."""
    sent = {c["id"]: c["attributes"]["send_time"] for c in handle.truth.records("campaign")
            if c["attributes"]["status"] == "Sent" and c["attributes"].get("send_time")}
    return {m: day_of(sent[c]) for c, m in handle.truth.links("campaign", "campaign-messages") if c in sent}


def day_of(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def landed(klaviyo_sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Events from before the report days through today and the metrics, then the three reports (campaign
    values for a day a campaign went out, flow values for DAY, the series for DAY-2..DAY)."""
    emails = {m for c, m in klaviyo_sandbox.truth.links("campaign", "campaign-messages")
              if " email campaign" in next(r for r in klaviyo_sandbox.truth.records("campaign")
                                            if r["id"] == c)["attributes"]["name"]}
    days = sorted({d for m, d in send_days(klaviyo_sandbox).items()
                   if m in emails and today() - timedelta(days=20) <= d < DAY})
    campaign_day = days[-1]
    db = tmp_path_factory.mktemp("reports") / "wh.duckdb"
    assert run(klaviyo_sandbox, db, ["events"], start=min(campaign_day, DAY) - timedelta(days=6), end=today()).success
    assert run(klaviyo_sandbox, db, ["metrics"], start=DAY).success
    klaviyo_sandbox.reset_stats()
    values = run(klaviyo_sandbox, db, ["campaign_values"], start=campaign_day)
    assert values.success, failure(values)
    flows = run(klaviyo_sandbox, db, ["flow_values"], start=DAY)
    assert flows.success, failure(flows)
    series = run(klaviyo_sandbox, db, ["flow_series"], start=DAY - timedelta(days=2), end=DAY)
    assert series.success, failure(series)
    return {"db": db, "stats": dict(klaviyo_sandbox.stats()), "values": values, "series": series,
            "wh": Warehouse(str(db)), "campaign_day": campaign_day}


def expected(wh: Warehouse, owner: str, day: datetime, basis: str,
             sent: dict[str, datetime]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (flow id or "", message id): the statistics the landed events imply for ``day``, each event dated
    by ``basis``: ``event_time`` its own datetime; ``send_date`` a campaign message's send day (``sent``), a
    flow engagement the profile's latest receipt of that message within 5 days before it (else itself)."""
    q = wh.qualified
    rows = wh.query(f"""
        WITH ev AS (
            SELECT e.profile_id, m.name AS metric, e.datetime AS t, e.event_properties AS p
            FROM {q('events')} e JOIN {q('metrics_current')} m ON m.id = e.metric_id
            WHERE m.name IN ('Received Email', 'Sent SMS', 'Received Push', 'Opened Email', 'Clicked Email',
                             'Placed Order')),
        msg AS (
            SELECT profile_id, t, metric,
                   json_extract_string(p, CASE WHEN metric = 'Placed Order' THEN '$."$attributed_message"'
                                          ELSE '$."$message"' END) AS message,
                   json_extract_string(p, CASE WHEN metric = 'Placed Order' THEN '$."$attributed_flow"'
                                          ELSE '$."$flow"' END) AS flow,
                   CAST(json_extract(p, '$."$value"') AS DOUBLE) AS value
            FROM ev),
        sends AS (SELECT * FROM msg WHERE message IS NOT NULL),
        receipts AS (SELECT profile_id, message, t AS rt FROM sends WHERE metric IN {RECEIVED})
        SELECT s.message, s.flow, s.metric, s.profile_id, s.value,
               CASE WHEN s.metric NOT IN {RECEIVED} AND r.rt IS NOT NULL AND s.t - r.rt <= INTERVAL 5 DAY
                    THEN r.rt ELSE s.t END AS flow_basis, s.t
        FROM sends s ASOF LEFT JOIN receipts r
          ON s.profile_id = r.profile_id AND s.message = r.message AND s.t > r.rt""")
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for message, flow, metric, profile, value, flow_basis, t in rows:
        if (flow is not None) != (owner == "flow"):
            continue
        if basis == "event_time":
            when = t
        elif flow is not None:
            when = flow_basis
        else:
            when = sent.get(message)
        if when is None or not day <= when < day + timedelta(days=1):
            continue
        a = acc.setdefault((flow or "", message), {"recipients": 0, "opens": 0, "openers": set(), "clicks": 0,
                                                  "conversions": 0, "conversion_value": 0.0})
        if metric in RECEIVED:
            a["recipients"] += 1
        elif metric == "Opened Email":
            a["opens"] += 1
            a["openers"].add(profile)
        elif metric == "Clicked Email":
            a["clicks"] += 1
        else:
            a["conversions"] += 1
            a["conversion_value"] += value or 0.0
    return {k: {"recipients": a["recipients"], "opens": a["opens"], "opens_unique": len(a["openers"]),
                "clicks": a["clicks"], "conversions": a["conversions"],
                "conversion_value": round(a["conversion_value"], 2)} for k, a in acc.items()}


def landed_values(wh: Warehouse, table: str, owner: str, day: datetime, extra: str = "") -> dict:
    q = wh.qualified
    rows = wh.query(f"""SELECT {owner}_id, {owner if owner == 'flow' else 'campaign'}_message_id, recipients, opens,
                        opens_unique, clicks, conversions, round(conversion_value, 2)
                        FROM {q(table)} WHERE _partition = ? {extra}""", [day])
    keys = ("recipients", "opens", "opens_unique", "clicks", "conversions", "conversion_value")
    return {(r[0], r[1]): dict(zip(keys, r[2:], strict=True)) for r in rows}


def test_campaign_values_equal_what_the_events_table_implies(landed: dict[str, Any], klaviyo_sandbox: Any) -> None:
    # Default report_time_basis=send_date: the day's campaigns with every engagement since they went out.
    wh, day, sent = landed["wh"], landed["campaign_day"], send_days(klaviyo_sandbox)
    owner_of = {m: c for c, m in klaviyo_sandbox.truth.links("campaign", "campaign-messages")}
    want = {(owner_of[m], m): v for (_, m), v in expected(wh, "campaign", day, "send_date", sent).items()}
    got = landed_values(wh, "campaign_values", "campaign", day)
    assert got == want
    assert got and sum(v["opens"] for v in got.values()) > 0
    assert {sent[m] for _, m in got} == {day}  # only campaigns sent that day
    md = meta(landed["values"], "campaign_values")
    assert md["dagster/partition_row_count"] == len(got)
    assert md["report_requests"] == 1 and md["conversion_metric_id"]


def test_flow_values_and_series_equal_the_events_table(landed: dict[str, Any], klaviyo_sandbox: Any) -> None:
    wh = landed["wh"]
    want = expected(wh, "flow", DAY, "send_date", send_days(klaviyo_sandbox))
    got = landed_values(wh, "flow_values", "flow", DAY)
    assert got == want and len(got) >= 5 and sum(v["conversions"] for v in got.values()) > 0
    series = landed_values(wh, "flow_series", "flow", DAY)
    assert series == got  # the daily series' point for DAY is that day's values
    days = wh.query(f"SELECT DISTINCT _partition, datetime FROM {wh.qualified('flow_series')} ORDER BY 1")
    assert [d[0] for d in days] == [DAY - timedelta(days=k) for k in (2, 1, 0)]
    assert all(p == t for p, t in days)  # each row's interval start is its partition


def test_values_by_event_time_equal_the_events_table_too(landed: dict[str, Any], klaviyo_sandbox: Any) -> None:
    # The other plausible reading of the time frame: each event on its own datetime. Same package, same
    # requests; the reports land in a schema of their own beside the events.
    wh, sent = landed["wh"], send_days(klaviyo_sandbox)
    owner_of = {m: c for c, m in klaviyo_sandbox.truth.links("campaign", "campaign-messages")}
    with klaviyo_sandbox.semantics_override(report_time_basis="event_time"):
        result = run(klaviyo_sandbox, landed["db"], ["campaign_values", "flow_values"], start=DAY, schema="by_event")
    assert result.success, failure(result)
    campaigns = landed_values(wh, "by_event.campaign_values", "campaign", DAY)
    assert campaigns == {(owner_of[m], m): v for (_, m), v in expected(wh, "campaign", DAY, "event_time", sent).items()}
    assert len({sent[m] for _, m in campaigns}) > 1  # campaigns sent on many days, engaged with on DAY
    flows = landed_values(wh, "by_event.flow_values", "flow", DAY)
    assert flows == expected(wh, "flow", DAY, "event_time", sent)
    # Dated by send, opens and clicks move to the day their receipt came (about a quarter of the groupings).
    assert flows != landed_values(wh, "flow_values", "flow", DAY)


def test_one_request_per_report_and_day_and_the_budget_counted(landed: dict[str, Any]) -> None:
    stats = landed["stats"]
    assert (stats.get(CAMPAIGN_OP), stats.get(FLOW_OP), stats.get(SERIES_OP)) == (1, 1, 1)  # 3 days: 1 request
    wh = landed["wh"]
    day = datetime.now(UTC).date()
    assert [report_budget.used(wh, ACCOUNT, op, day) for op in (CAMPAIGN_OP, FLOW_OP, SERIES_OP)] == [1, 1, 1]
    budget = meta(landed["series"], "flow_series")["report_budget"]
    assert budget == {"endpoint": SERIES_OP, "account": ACCOUNT, "day": day.isoformat(), "daily_budget": 225,
                      "used_before_run": 0, "used_by_run": 1, "used_today": 1, "left_today": 224}


def test_a_range_pages_and_shares_the_budget_across_runs(klaviyo_sandbox: Any, tmp_path: Path) -> None:
    db = tmp_path / "wh.duckdb"
    klaviyo_sandbox.reset_stats()
    with klaviyo_sandbox.semantics_override(report_page_rows=5):
        first = run(klaviyo_sandbox, db, ["flow_values"], start=DAY - timedelta(days=1), end=DAY)
        assert first.success, failure(first)
        pages = klaviyo_sandbox.stats()[FLOW_OP]
        md = meta(first, "flow_values")
        # Each day is one query of ceil(results / 5) pages (results: the groupings with any activity).
        assert pages == sum(-(-n // 5) for n in _rows_per_day(db, "flow_values")) and pages > 4
        assert md["report_requests"] == pages and md["dagster/partition_row_count"] > 20
        second = run(klaviyo_sandbox, db, ["flow_values"], start=DAY)  # another run, same day: shares it
        assert second.success, failure(second)
    used = meta(second, "flow_values")["report_budget"]
    assert used["used_before_run"] == pages and used["used_today"] == klaviyo_sandbox.stats()[FLOW_OP]


def _rows_per_day(db: Path, table: str) -> list[int]:
    wh = Warehouse(str(db))
    return [r[0] for r in wh.query(f"SELECT count(*) FROM {wh.qualified(table)} GROUP BY _partition")]


def test_a_repeated_request_counts_twice(klaviyo_sandbox: Any, tmp_path: Path) -> None:
    # A 503 the client retries: Klaviyo counted both attempts, and so does the budget.
    db = tmp_path / "wh.duckdb"
    klaviyo_sandbox.reset_stats()
    klaviyo_sandbox.faults.configure({"spec": f"{FLOW_OP}=503:next1", "reset_counts": True})
    try:
        result = run(klaviyo_sandbox, db, ["flow_values"], start=DAY)
    finally:
        klaviyo_sandbox.faults.configure({"spec": ""})
    assert result.success, failure(result)
    md = meta(result, "flow_values")
    assert klaviyo_sandbox.stats()[FLOW_OP] == 2 and md["api"]["retries"] == 1
    assert md["report_requests"] == 2 and md["report_budget"]["used_today"] == 2
    assert report_budget.used(Warehouse(str(db)), ACCOUNT, FLOW_OP, datetime.now(UTC).date()) == 2


def test_over_budget_fails_before_sending_and_names_the_fix(klaviyo_sandbox: Any, tmp_path: Path) -> None:
    db = tmp_path / "wh.duckdb"
    klaviyo_sandbox.reset_stats()
    # A 300-day backfill of values: 300 requests > 225 a day.
    result = run(klaviyo_sandbox, db, ["flow_values"], start=today() - timedelta(days=300), end=today() - timedelta(days=1),
                 start_date=today() - timedelta(days=400))
    text = failure(result)
    assert not result.success
    assert "needs 300 request(s) to POST /api/flow-values-reports" in text and "225 a day" in text
    assert "at most 225 day(s)" in text and "spread the backfill over several days" in text
    assert "flow_series covers 60 days a request" in text
    assert not klaviyo_sandbox.stats().get(FLOW_OP) and not klaviyo_sandbox.stats().get("GET /api/metrics")
    # Runs earlier today used 223: a 3-day run (3 requests) no longer fits; 2 days do.
    wh = Warehouse(str(db))
    report_budget.spend(wh, ACCOUNT, FLOW_OP, datetime.now(UTC).date(), 223)
    refused = run(klaviyo_sandbox, db, ["flow_values"], start=DAY - timedelta(days=2), end=DAY)
    assert not refused.success and "223 were already used today" in failure(refused)
    assert "at most 2 day(s) fit" in failure(refused) and not klaviyo_sandbox.stats().get(FLOW_OP)
    # ... with statistics of one's own: a rate the entry does not declare lands as a DOUBLE column.
    fits = run(klaviyo_sandbox, db, ["flow_values"], start=DAY - timedelta(days=1), end=DAY,
               report_statistics=["recipients", "opens_unique", "open_rate"])
    assert fits.success, failure(fits)
    assert klaviyo_sandbox.stats()[FLOW_OP] == 2
    assert meta(fits, "flow_values")["report_budget"]["left_today"] == 0
    assert wh.columns("flow_values")["open_rate"] == "DOUBLE"
    rates = wh.query(f"SELECT recipients, opens_unique, open_rate, opens FROM {wh.qualified('flow_values')}")
    assert rates and all(r[2] == (round(r[1] / r[0], 6) if r[0] else 0.0) and r[3] is None for r in rates)
    # The series covers the same 300 days in 5 requests: within the budget.
    assert plan_requests(get_object("flow_series").report, [today() - timedelta(days=k) for k in range(300)]).requests == 5


def test_pacing_follows_the_endpoints_real_rate_limit_headers(klaviyo_sandbox: Any) -> None:
    # The sandbox (rate limits off) still sends the real policies: 1/s, 2/m, 225/d. One request, no waiting:
    # the client adopts them and would send the next one ~30 s later.
    obj = get_object("campaign_values")
    metric = call(klaviyo_sandbox, "GET", "/api/metrics").json()["data"][0]["id"]
    with KlaviyoClient(klaviyo_sandbox.api_key, base_url=klaviyo_sandbox.base_url) as client:
        client.post(obj.path, request_body(obj, (DAY, DAY + timedelta(days=1)), metric, ["opens"]))
        state = client.limiter.bucket(resolve_bucket("POST", obj.path))
        assert state.limits() == [(1, 1.0), (2, 60.0), (225, 86400.0)]
        assert 30.0 <= pacing_interval(client, obj) <= 31.0
        now = state._clock()
        assert 29.0 <= state.reserve() - now <= 32.0  # the second request's slot (reserved, not sent)


@pytest.mark.parametrize(("attributes", "pointer"), [
    ({"statistics": ["nonsense"]}, "/data/attributes/statistics/0"),
    ({"group_by": ["send_channel"]}, "/data/attributes/group_by"),
    ({"conversion_metric_id": "XXXXXX"}, "/data/attributes/conversion_metric_id"),
    ({"timeframe": {"start": "2026-01-01T00:00:00+00:00", "end": "2027-06-01T00:00:00+00:00"}},
     "/data/attributes/timeframe"),
    ({"interval": "hourly", "timeframe": {"key": "last_30_days"}}, "/data/attributes/interval"),
    ({"filter": "greater-than(flow_id,\"x\")"}, "/data/attributes/filter"),
])
def test_the_sandbox_refuses_bad_report_queries(klaviyo_sandbox: Any, attributes: dict, pointer: str) -> None:
    obj = get_object("flow_series")
    metric = call(klaviyo_sandbox, "GET", "/api/metrics").json()["data"][0]["id"]
    body = request_body(obj, (DAY, DAY + timedelta(days=1)), metric, ["opens"])
    body["data"]["attributes"].update(attributes)
    answer = call(klaviyo_sandbox, "POST", obj.path, json_body=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"][0]["source"]["pointer"] == pointer


def test_a_filter_narrows_the_report(klaviyo_sandbox: Any) -> None:
    obj = get_object("flow_values")
    metric = call(klaviyo_sandbox, "GET", "/api/metrics").json()["data"][0]["id"]
    body = request_body(obj, (DAY, DAY + timedelta(days=1)), metric, ["recipients"])
    everything = call(klaviyo_sandbox, "POST", obj.path, json_body=body).json()["data"]["attributes"]["results"]
    flow = everything[0]["groupings"]["flow_id"]
    body["data"]["attributes"]["filter"] = f'and(equals(flow_id,"{flow}"),contains-any(send_channel,["email"]))'
    some = call(klaviyo_sandbox, "POST", obj.path, json_body=body).json()["data"]["attributes"]["results"]
    assert some == [r for r in everything if r["groupings"]["flow_id"] == flow]




def test_reports_have_their_own_job_and_daily_schedule() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = build_ingest_definitions(
            objects=["events"], reports=True, deletion_sweeps=False, start_date="2026-01-01",
            resources={"klaviyo": KlaviyoResource(api_key="pk_test"), "warehouse": WarehouseResource(database=":memory:")})
        jobs = {n: defs.resolve_job_def(n) for n in ("klaviyo_reporting_job", "klaviyo_ingest_incremental_job")}
    reports = {f"klaviyo/{n}" for n in ("campaign_values", "flow_values", "flow_series")}
    selected = {n: {k.to_user_string() for k in j.asset_layer.executable_asset_keys} for n, j in jobs.items()}
    assert selected == {"klaviyo_reporting_job": reports, "klaviyo_ingest_incremental_job": {"klaviyo/events"}}
    schedule = defs.resolve_schedule_def("klaviyo_reporting_daily")
    tick = datetime(2026, 3, 5, 2, 45, tzinfo=UTC)
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    # One range run: yesterday and the 3 lookback days before it (late attribution), every report asset.
    assert [(r.partition_key, r.asset_selection, r.tags.get(RANGE_START), r.tags.get(RANGE_END))
            for r in requests] == [(None, None, "2026-03-01", "2026-03-04")]
    spec = next(s for a in defs.assets for s in a.specs if s.key.to_user_string() == "klaviyo/flow_series")
    assert spec.metadata["klaviyo/rate_limit_tier"] == "REPORTING" and spec.metadata["klaviyo/daily_budget"] == 225
    with pytest.raises(ValueError, match="not reports"):
        build_ingest_definitions(reports=["events"])


def test_the_component_builds_reports_from_yaml() -> None:
    import yaml

    from klaviyo_dagster.components import KlaviyoComponent
    from klaviyo_dagster.components.scaffolder import default_attributes

    attrs = default_attributes()
    attrs["ingest"].update(objects=["flows"], reports=["flow_series"], conversion_metric="Fulfilled Order",
                           report_statistics=["recipients", "open_rate"])
    attrs["translation"] = {"owners": ["team:crm"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        defs = dg.component_defs(component=KlaviyoComponent.resolve_from_yaml(yaml.safe_dump(attrs)))
    keys = {s.key.to_user_string(): s for a in defs.assets for s in a.specs}
    assert {"klaviyo/flows", "klaviyo/flow_series"} <= set(keys)
    assert keys["klaviyo/flow_series"].owners == ["team:crm"]  # the translation applies to reports too
    assert {s.name for s in defs.schedules or ()} >= {"klaviyo_reporting_daily", "klaviyo_ingest_daily"}


def test_the_dagster_cli_lands_the_same_values(landed: dict[str, Any], klaviyo_sandbox: Any, tmp_path: Path) -> None:
    # The code location with KLAVIYO_REPORTS=1, real pacing (one request per report: no wait).
    db = tmp_path / "cli.duckdb"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "KLAVIYO_BASE_URL": klaviyo_sandbox.base_url,
           "KLAVIYO_API_KEY": klaviyo_sandbox.api_key, "KLAVIYO_DUCKDB_PATH": str(db),
           "KLAVIYO_START_DATE": (today() - timedelta(days=40)).strftime("%Y-%m-%d"), "KLAVIYO_REPORTS": "1"}
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "klaviyo_dagster.definitions",
           "--select", "klaviyo/flow_values,klaviyo/flow_series", "--partition", DAY.strftime("%Y-%m-%d")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "budget today" in done.stderr and "of 225 used" in done.stderr  # the run log says what it used
    assert "pacing ~31 s a request" in done.stderr  # 2/min from the tier table (+2 % margin)
    cli, inproc = Warehouse(str(db)), landed["wh"]
    for table in ("flow_values", "flow_series"):
        assert landed_values(cli, table, "flow", DAY) == landed_values(inproc, table, "flow", DAY) != {}
    used = cli.query(f"SELECT endpoint, requests FROM {cli.qualified('report_budget')} ORDER BY 1")
    assert used == [(SERIES_OP, 1), (FLOW_OP, 1)]
