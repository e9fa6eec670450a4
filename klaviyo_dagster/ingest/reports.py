"""Reporting API assets: campaign and flow values and flow series per report day, within the daily budget.

Each entry with ``report=Report(...)`` (objects.py `REPORTS`) becomes a daily-partitioned asset. A run:

1. plans its requests: the run's days cut into runs of consecutive days of at most
   ``Report.days_per_request`` (values reports: one day a request, the timeframe being that UTC day; a
   daily series: up to 60 days a request). One request covers every campaign (flow): nothing is asked
   per campaign;
2. checks the plan against the day's budget (225 requests a day per account and endpoint, counted in the
   warehouse's ``report_budget`` table so several runs share it) and fails *before sending anything*
   when the plan would pass it, naming the fix (a smaller range, or the rest on another day);
3. resolves the conversion metric (default ``Placed Order``; a name or an id) through ``GET /api/metrics``;
4. sends the requests one by one, each counted before it is sent (pages and retries too), paced by
   the client's limiter at the endpoint's 2 a minute (the tier table, then the server's RateLimit headers);
5. replaces the run's partitions with one row per grouping (and series day) with any non-zero statistic.

The run log and metadata say how many requests the run used, how much of the day's budget is left and
how long the pacing takes (about 30 s a request after the first).
"""


import dataclasses
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import dagster as dg

from klaviyo_dagster.client import (
    KlaviyoAuthError,
    KlaviyoBadRequestError,
    KlaviyoError,
    KlaviyoNotFoundError,
)
from klaviyo_dagster.client.tiers import resolve_bucket
from klaviyo_dagster.ingest.assets import (
    IngestSettings,
    api_counters,
    ingest_props,
    key_checks,
    live_schema,
)
from klaviyo_dagster.ingest.objects import PARTITION_COLUMN, KlaviyoObject, Report, stat_type
from klaviyo_dagster.ingest.preview import table_preview
from klaviyo_dagster.ingest.windows import day_start, iso, parse_partition_key
from klaviyo_dagster.warehouse import Warehouse
from klaviyo_dagster.warehouse import report_budget as budget
from klaviyo_dagster.warehouse.checks import partition_facts

UTC = timezone.utc
DAY = timedelta(days=1)
DEFAULT_CONVERSION_METRIC = "Placed Order"
_FAIL_FAST = (KlaviyoAuthError, KlaviyoBadRequestError, KlaviyoNotFoundError)


@dataclass(frozen=True)
class ReportOptions:
    """Build options of the report assets: the conversion metric (name or id) and the statistics asked
    for (None: the entry's defaults)."""

    conversion_metric: str = DEFAULT_CONVERSION_METRIC
    statistics: tuple[str, ...] | None = None

    def statistics_of(self, report: Report) -> tuple[str, ...]:
        return self.statistics or report.statistics


@dataclass(frozen=True)
class ReportPlan:
    """The requests one run sends: a timeframe ``[start, end)`` per request, covering ``days``."""

    days: tuple[datetime, ...]
    timeframes: tuple[tuple[datetime, datetime], ...]
    days_per_request: int

    @property
    def requests(self) -> int:
        return len(self.timeframes)


def plan_requests(report: Report, days: Sequence[datetime]) -> ReportPlan:
    """Cut ``days`` (UTC midnights) into runs of consecutive days, at most ``days_per_request`` each."""
    ordered = sorted(set(days))
    frames: list[tuple[datetime, datetime]] = []
    for day in ordered:
        if frames and frames[-1][1] == day and (frames[-1][1] - frames[-1][0]) < report.days_per_request * DAY:
            frames[-1] = (frames[-1][0], day + DAY)
        else:
            frames.append((day, day + DAY))
    return ReportPlan(tuple(ordered), tuple(frames), report.days_per_request)


@dataclass
class Budget:
    """The day's report budget of one account and endpoint, as the warehouse counts it."""

    warehouse: Warehouse
    account: str
    endpoint: str
    day: date
    limit: int
    used_before: int = 0
    spent: int = 0

    @property
    def left(self) -> int:
        return self.limit - self.used_before - self.spent

    def spend(self, n: int = 1) -> None:
        """Count ``n`` requests before they are sent; `budget.BudgetSpent` when the day has no room."""
        budget.spend(self.warehouse, self.account, self.endpoint, self.day, n, limit=self.limit)
        self.spent += n

    def record_sent(self, n: int) -> None:
        """Count ``n`` attempts already sent (the client's retries): they count even past the limit."""
        budget.spend(self.warehouse, self.account, self.endpoint, self.day, n)
        self.spent += n

    def as_metadata(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "account": self.account, "day": self.day.isoformat(),
                "daily_budget": self.limit, "used_before_run": self.used_before, "used_by_run": self.spent,
                "used_today": self.used_before + self.spent, "left_today": self.left}


def over_budget_message(obj: KlaviyoObject, plan: ReportPlan, used: int, limit: int, day: date) -> str:
    """Why a run was refused before sending, and what to do instead."""
    room = max(0, limit - used)
    per = plan.days_per_request
    fits = room * per
    first, last = plan.days[0].date(), plan.days[-1].date()
    what = "one request per day" if per == 1 else f"one request per {per} consecutive days"
    fix = (f"materialize a smaller range (at most {fits} day(s) fit in what is left today)" if room else
           "wait for the budget to reset at 00:00 UTC")
    return (
        f"{obj.name}: this run needs {plan.requests} request(s) to POST {obj.path} ({what}; {len(plan.days)} "
        f"partition(s) {first}..{last}), but Klaviyo allows {limit} a day per account and {used} were already "
        f"used today ({day} UTC), leaving {room}. Nothing was sent. Fix: {fix}, or spread the backfill over "
        f"several days (e.g. {fits} day(s) today and the rest from tomorrow)"
        + ("; flow_series covers 60 days a request and is the cheaper way to backfill flows." if per == 1 and
           obj.name == "flow_values" else ".")
    )


def resolve_metric(client: Any, wanted: str) -> str:
    """The id of the conversion metric named ``wanted`` (an exact name, or an id)."""
    found: list[tuple[str, str]] = []
    for doc in client.paginate("/api/metrics"):
        for m in doc.get("data") or ():
            name = (m.get("attributes") or {}).get("name")
            if m.get("id") == wanted:
                return str(m["id"])
            if name == wanted:
                found.append((str(m["id"]), name))
            elif name:
                found.append(("", name))
    ids = [i for i, _ in found if i]
    if not ids:
        names = sorted({n for _, n in found})[:20]
        raise dg.Failure(
            description=f"conversion metric {wanted!r} is neither a metric name nor a metric id of this account; "
            f"set conversion_metric to one of: {', '.join(names)}",
            allow_retries=False,
        )
    return ids[0]


def request_body(obj: KlaviyoObject, frame: tuple[datetime, datetime], metric_id: str,
                 statistics: Sequence[str]) -> dict[str, Any]:
    """The JSON:API query of one request."""
    report = obj.report
    assert report is not None
    attrs: dict[str, Any] = {
        "statistics": list(statistics),
        "timeframe": {"start": frame[0].isoformat(), "end": frame[1].isoformat()},
        "conversion_metric_id": metric_id,
        "group_by": list(report.group_by),
    }
    if report.interval:
        attrs["interval"] = report.interval
    return {"data": {"type": report.type, "attributes": attrs}}


def _rows(obj: KlaviyoObject, doc: dict[str, Any], metric_id: str, frame: tuple[datetime, datetime],
          statistics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per result (and series point) with any non-zero statistic."""
    report = obj.report
    assert report is not None
    attrs = (doc.get("data") or {}).get("attributes") or {}
    results = attrs.get("results") or []
    points: list[datetime | None] = [None]
    if report.interval:
        points = [datetime.fromisoformat(str(t).replace("Z", "+00:00")).astimezone(UTC)
                  for t in attrs.get("date_times") or ()]
    out = []
    for result in results:
        groupings = result.get("groupings") or {}
        stats = result.get("statistics") or {}
        for k, point in enumerate(points):
            values = {s: (stats.get(s)[k] if isinstance(stats.get(s), list) else stats.get(s)) for s in statistics}
            if not any(values.values()):
                continue
            stamp = point or frame[0]
            row: dict[str, Any] = {g: groupings.get(g) for g in report.group_by}
            if report.interval:
                row["datetime"] = stamp
            row["conversion_metric_id"] = metric_id
            row.update(values)
            row[PARTITION_COLUMN] = day_start(stamp)
            out.append(row)
    return out


def fetch_rows(client: Any, obj: KlaviyoObject, plan: ReportPlan, metric_id: str, statistics: Sequence[str],
               ledger: Budget) -> Iterator[list[dict[str, Any]]]:
    """Rows of every planned request, page by page; each request is counted in ``ledger`` before it is
    sent, and an attempt the client repeated (a 5xx, a broken connection) after it."""
    bucket = resolve_bucket("POST", obj.path).key
    for frame in plan.timeframes:
        body = request_body(obj, frame, metric_id, statistics)
        cursor: str | None = None
        while True:
            ledger.spend(1)
            before = client.stats.by_endpoint[bucket]
            path = obj.path + (f"?page_cursor={quote(cursor, safe='')}" if cursor else "")
            try:
                doc = client.post(path, body) or {}
            finally:
                repeated = client.stats.by_endpoint[bucket] - before - 1
                if repeated > 0:
                    ledger.record_sent(repeated)
            yield _rows(obj, doc, metric_id, frame, statistics)
            nxt = (doc.get("links") or {}).get("next")
            cursor = (parse_qs(urlsplit(nxt).query).get("page_cursor") or [None])[0] if nxt else None
            if not cursor:
                break


def report_columns(obj: KlaviyoObject, statistics: Sequence[str]) -> dict[str, str]:
    """``{column: type}`` of the entry plus any configured statistic it does not declare."""
    out = obj.sql_columns()
    for s in statistics:
        out.setdefault(s, stat_type(s))
    return out


def pacing_interval(client: Any, obj: KlaviyoObject) -> float:
    """Seconds between two requests of this endpoint at its steady rate, as the client's limiter paces
    them (the tier table's 2/min until a response's RateLimit headers say otherwise); 0 with pacing off."""
    if not client.limiter.enabled:
        return 0.0
    return float(client.limiter.bucket(resolve_bucket("POST", obj.path)).interval)


def build_report_asset(
    obj: KlaviyoObject, partitions_def: dg.PartitionsDefinition, settings: IngestSettings, options: ReportOptions
) -> dg.AssetsDefinition:
    """The daily-partitioned asset (with key checks) of one report entry."""
    props = ingest_props(obj, settings)
    assert obj.report is not None
    props = dataclasses.replace(props, metadata={
        **props.metadata, "klaviyo/daily_budget": obj.report.daily_budget,
        "klaviyo/days_per_request": obj.report.days_per_request})
    spec = settings.translator.get_asset_spec(props)
    checks = key_checks(spec.key, obj.primary_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.multi_asset(
            name=spec.key.to_python_identifier(),
            specs=[spec],
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run(),
            pool=settings.pool,
            required_resource_keys={settings.klaviyo_resource_key, settings.warehouse_resource_key},
            check_specs=checks,
        )
        def _report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            return materialize_report(context, obj, settings, options)

    return _report


def materialize_report(
    context: dg.AssetExecutionContext, obj: KlaviyoObject, settings: IngestSettings, options: ReportOptions
) -> dg.MaterializeResult:
    """Plan, check the budget, fetch and replace the run's partitions of one report entry."""
    report = obj.report
    assert report is not None
    started = datetime.now(UTC)
    now = settings.now()
    days = [parse_partition_key(k) for k in context.partition_keys]
    plan = plan_requests(report, days)
    statistics = options.statistics_of(report)
    resources = context.resources
    warehouse: Warehouse = getattr(resources, settings.warehouse_resource_key).get_warehouse(settings.schema)
    endpoint = f"POST {obj.path}"
    today = now.astimezone(UTC).date()
    ledger = Budget(warehouse, settings.pool, endpoint, today, report.daily_budget)
    ledger.used_before = budget.used(warehouse, settings.pool, endpoint, today)
    if ledger.used_before + plan.requests > report.daily_budget:
        raise dg.Failure(
            description=over_budget_message(obj, plan, ledger.used_before, report.daily_budget, today),
            metadata={"report_budget": dg.MetadataValue.json(ledger.as_metadata()),
                      "planned_requests": dg.MetadataValue.int(plan.requests)},
            allow_retries=False,
        )
    preview: list[dict[str, Any]] = []  # the first rows, for the metadata's table preview
    try:
        with getattr(resources, settings.klaviyo_resource_key).get_client(context.log) as client:
            interval = pacing_interval(client, obj)
            pacing = (f"pacing ~{interval:.0f} s a request (about {math.ceil((plan.requests - 1) * interval)} s)"
                      if interval else "client pacing off")
            context.log.info(
                f"{obj.name}: {plan.requests} request(s) for {len(plan.days)} day(s) "
                f"({report.days_per_request} day(s) a request); {endpoint} budget today ({today} UTC): "
                f"{ledger.used_before} of {report.daily_budget} used, {ledger.left - plan.requests} left after "
                f"this run; {pacing}"
            )
            metric_id = resolve_metric(client, options.conversion_metric)

            def chunks() -> Iterator[list[dict[str, Any]]]:
                for rows in fetch_rows(client, obj, plan, metric_id, statistics, ledger):
                    if not preview:
                        preview.extend(rows[:5])
                    yield rows

            result = warehouse.replace_partitions(
                obj.name, report_columns(obj, statistics), PARTITION_COLUMN, list(plan.days), chunks(),
                primary_key=(*obj.primary_key, PARTITION_COLUMN),
            )
            stats = client.stats.snapshot()
    except budget.BudgetSpent as exc:
        raise dg.Failure(
            description=f"{obj.name}: stopped before a request the day's budget has no room for ({exc}; "
            f"another run used it meanwhile). The warehouse table was left as it was; re-run after 00:00 UTC "
            "or with fewer partitions.",
            metadata={"report_budget": dg.MetadataValue.json(ledger.as_metadata())},
            allow_retries=False,
        ) from exc
    except _FAIL_FAST as exc:
        raise dg.Failure(description=f"{obj.name}: {exc}", allow_retries=False) from exc
    except KlaviyoError as exc:
        raise dg.Failure(
            description=f"{obj.name}: {exc} The warehouse table was left as it was; re-run the partition(s).",
            metadata={"report_budget": dg.MetadataValue.json(ledger.as_metadata())},
        ) from exc

    facts = partition_facts(warehouse, obj.name, PARTITION_COLUMN, list(plan.days), obj.primary_key)
    check_results = [
        dg.AssetCheckResult(check_name=name, passed=bad == 0, metadata={"violations": dg.MetadataValue.int(bad)})
        for name, bad in facts.violations.items()
    ]
    columns = {k: [r.get(k) for r in preview] for k in (preview[0] if preview else {})}
    context.log.info(
        f"{result.table}: {result.rows} rows into {len(plan.days)} partition(s) from {ledger.spent} request(s) "
        f"to {endpoint}; budget today {ledger.used_before + ledger.spent}/{report.daily_budget} used, "
        f"{ledger.left} left ({(datetime.now(UTC) - started).total_seconds():.1f}s)"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/partition_row_count": dg.MetadataValue.int(result.rows),
            "dagster/row_count": dg.MetadataValue.int(facts.row_count),
            "dagster/table_name": dg.MetadataValue.text(f"{warehouse.catalog}.{result.table}"),
            "dagster/column_schema": dg.MetadataValue.table_schema(live_schema(obj, facts.columns)),
            "preview": table_preview(columns),
            "api": dg.MetadataValue.json(api_counters(stats)),
            "report_requests": dg.MetadataValue.int(ledger.spent),
            "report_budget": dg.MetadataValue.json(ledger.as_metadata()),
            "report_days": dg.MetadataValue.json([d.date().isoformat() for d in plan.days]),
            "conversion_metric_id": dg.MetadataValue.text(metric_id),
            "timeframes": dg.MetadataValue.json([[iso(a), iso(b)] for a, b in plan.timeframes]),
        },
        check_results=check_results,
    )
