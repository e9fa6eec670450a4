"""Reporting API of the sandbox: campaign and flow values reports, flow series reports, from its events.

`POST /api/campaign-values-reports`, `/api/flow-values-reports`, `/api/flow-series-reports` (1/s, 2/m,
225/d each, from the spec subset like every limit). The body is checked as strictly as Klaviyo types it:
`data.type`, required `statistics` (the spec's enum), `timeframe` (a preset `key` or `start`/`end`, at
most a year; the offset of a custom time frame is ignored, as the spec says: the account's time zone,
UTC here, is used), `conversion_metric_id` (a metric of the account), `group_by` (the spec's enum; the
required attributes must be present), `filter` (`equals` / `contains-any` on the scalar attributes,
joined with `and(...)`), `interval` (series: hourly <= 7 days, daily <= 60 days, monthly <= 52 weeks).
Anything else is a 400 with a pointer into the body.

Values come from the account's events (base, written, late-released, deleted profiles' hidden), dated by
send (switch `report_time_basis`, default `send_date` as Klaviyo documents for the UI the API matches: a
campaign's events on its send time, a flow engagement on the profile's latest receipt of that message in the
5 days before it) or by their own `datetime` (`event_time`), in the time frame, attributed through their
properties (generate.py): a message event's
`$message` names the campaign or flow message it belongs to (Received Email, Sent SMS and Received Push
count as recipients, Opened Email as opens, Clicked Email as clicks); a conversion-metric event counts as
a conversion of the message in its `$attributed_message` (value: `$value`). The sandbox has no bounce,
failure, spam or unsubscribe events: those counts are 0 and delivered = recipients. Rates are fractions
(unique opens / delivered, ...; 0 when the denominator is 0). One result per grouping with any event in
the time frame, sorted by grouping; `report_page_rows` (semantics switch) results a page, further pages
through `links.next` (`?page_cursor=`), re-sent with the same body.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from klaviyo_dagster.sandbox.api import ReadApi, Request
from klaviyo_dagster.sandbox.generate import Send
from klaviyo_dagster.sandbox.paging import CursorError, decode_cursor, encode_cursor
from klaviyo_dagster.sandbox.params import bad
from klaviyo_dagster.sandbox.semantics import Switch, register
from klaviyo_dagster.sandbox.store import Store
from klaviyo_dagster.sandbox.timeline import dt_to_ms
from klaviyo_dagster.sandbox.writes import parse_body

UTC = timezone.utc
CAMPAIGN_VALUES = "POST /api/campaign-values-reports"
FLOW_VALUES = "POST /api/flow-values-reports"
FLOW_SERIES = "POST /api/flow-series-reports"

def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise ValueError("must be at least 1")
    return n


register(Switch(
    "report_page_rows", "500", convert=_positive, value_doc="<results per page>",
    test_values=("500", "2"),
    known="The Reporting API's values and series endpoints declare a `page_cursor` query parameter.",
    unknown="How many results (groupings) a page holds before `links.next` carries a `page_cursor`: "
            "not documented (500 here by default)."))


register(Switch(
    "report_time_basis", "send_date", values=("send_date", "event_time"),
    known="Klaviyo's Reporting API matches the UI, whose performance is \"calculated based on send date\" "
          "(the Query Metric Aggregates endpoint, by contrast, groups by the time an event occurred).",
    unknown="How an engagement is dated: `send_date` (default) a campaign's events count on its send time, a "
            "flow's open, click or conversion on the profile's latest receipt of that message within the 5 days "
            "before it (else its own time); `event_time` every event on its own `datetime`."))

ATTRIBUTION_WINDOW_MS = 5 * 86_400_000  # Klaviyo's default conversion window, also used to find a flow send


@dataclass(frozen=True)
class Kind:
    """One report endpoint: its resource type, groupings and how it finds a message's owner."""

    rtype: str
    owner: str  # "campaign" | "flow"
    group_by: tuple[str, ...]  # the spec's enum
    required: tuple[str, ...]
    default: tuple[str, ...]
    series: bool = False


KINDS = {
    CAMPAIGN_VALUES: Kind("campaign-values-report", "campaign",
                          ("campaign_id", "campaign_message_id", "campaign_message_name", "group", "group_name",
                           "send_channel", "tag_id", "tag_name", "text_message_format", "variation",
                           "variation_name"),
                          ("campaign_id", "campaign_message_id"), ("campaign_id", "campaign_message_id", "send_channel")),
    FLOW_VALUES: Kind("flow-values-report", "flow",
                      ("flow_id", "flow_message_id", "flow_message_name", "flow_name", "send_channel", "tag_id",
                       "tag_name", "text_message_format", "variation", "variation_name"),
                      ("flow_id", "flow_message_id"), ("flow_id", "flow_message_id", "send_channel")),
}
KINDS[FLOW_SERIES] = Kind("flow-series-report", "flow", KINDS[FLOW_VALUES].group_by, KINDS[FLOW_VALUES].required,
                          KINDS[FLOW_VALUES].default, series=True)
# Groupings the sandbox can compute (the others are valid Klaviyo groupings it does not model: a 400 says so).
SERVED_GROUPINGS = {"campaign_id", "campaign_message_id", "campaign_message_name", "send_channel", "flow_id",
                    "flow_message_id", "flow_message_name", "flow_name"}
CHANNEL_NAMES = {"email": "email", "sms": "sms", "mobile_push": "push-notification"}
RECEIVED = {"Received Email", "Sent SMS", "Received Push"}
INTERVAL_MAX_DAYS = {"hourly": 7, "daily": 60, "weekly": 366, "monthly": 52 * 7}
INTERVAL_STEP = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
FILTER_ATOM = re.compile(r'^(equals|contains-any)\((\w+),(.*)\)$')


@dataclass
class Acc:
    """Counters of one grouping (and interval)."""

    recipients: int = 0
    opens: int = 0
    clicks: int = 0
    conversions: int = 0
    value: float = 0.0
    segments: int = 0
    openers: set[str] = field(default_factory=set)
    clickers: set[str] = field(default_factory=set)
    converters: set[str] = field(default_factory=set)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 6) if b else 0.0


STATISTICS: dict[str, Callable[[Acc], float | int]] = {
    "recipients": lambda a: a.recipients,
    "delivered": lambda a: a.recipients,
    "delivery_rate": lambda a: 1.0 if a.recipients else 0.0,
    "opens": lambda a: a.opens,
    "opens_unique": lambda a: len(a.openers),
    "open_rate": lambda a: _ratio(len(a.openers), a.recipients),
    "clicks": lambda a: a.clicks,
    "clicks_unique": lambda a: len(a.clickers),
    "click_rate": lambda a: _ratio(len(a.clickers), a.recipients),
    "click_to_open_rate": lambda a: _ratio(len(a.clickers), len(a.openers)),
    "conversions": lambda a: a.conversions,
    "conversion_uniques": lambda a: len(a.converters),
    "conversion_value": lambda a: round(a.value, 2),
    "conversion_rate": lambda a: _ratio(len(a.converters), a.recipients),
    "average_order_value": lambda a: round(a.value / a.conversions, 2) if a.conversions else 0.0,
    "revenue_per_recipient": lambda a: round(a.value / a.recipients, 2) if a.recipients else 0.0,
    "message_segment_count_sum": lambda a: a.segments,
}
ZERO_STATISTICS = ("bounce_rate", "bounced", "bounced_or_failed", "bounced_or_failed_rate", "failed", "failed_rate",
                   "spam_complaint_rate", "spam_complaints", "text_message_credit_usage_amount", "text_message_roi",
                   "text_message_spend", "unsubscribe_rate", "unsubscribe_uniques", "unsubscribes")


class ReportApi:
    """Handlers of the three Reporting API operations."""

    def __init__(self, store: Store, reads: ReadApi) -> None:
        self.store = store
        self.reads = reads
        self._sends: dict[str, Send] = {s.message_id: s for pool in store.base.sends.values() for s in pool}
        flow_messages = store.base.index("flow_messages")
        self._message_names = {mid: (m["attributes"]["definition"].get("subject_line") or "")
                               for mid, m in flow_messages.items()}

    def handlers(self) -> dict[str, Any]:
        return {op: (lambda q, op=op: self.report(q, op)) for op in KINDS}

    # ---- request ---------------------------------------------------------------------------------------
    def report(self, req: Request, op_key: str) -> dict[str, Any]:
        kind = KINDS[op_key]
        body = parse_body(req)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != kind.rtype:
            raise bad(f"'data' must be an object with \"type\": \"{kind.rtype}\"", pointer="/data/type")
        attrs = data.get("attributes")
        if not isinstance(attrs, dict):
            raise bad("'data.attributes' must be an object", pointer="/data/attributes")
        known = {"statistics", "timeframe", "conversion_metric_id", "group_by", "filter"} | (
            {"interval"} if kind.series else set())
        for name in attrs:
            if name not in known:
                raise bad(f"'{name}' is not an attribute of a {kind.rtype}; allowed: {', '.join(sorted(known))}",
                          pointer=f"/data/attributes/{name}")
        stats = self._statistics(attrs.get("statistics"))
        start, end = self._timeframe(attrs.get("timeframe"))
        metric = attrs.get("conversion_metric_id")
        if not isinstance(metric, str) or not metric:
            raise bad("conversion_metric_id is required: the id of the metric conversions count (e.g. Placed "
                      "Order's)", pointer="/data/attributes/conversion_metric_id")
        names = {m["id"]: m["attributes"]["name"] for m in self.store.all_metrics()}
        if metric not in names:
            raise bad(f"conversion_metric_id {metric!r} is not a metric of this account",
                      pointer="/data/attributes/conversion_metric_id")
        group_by = self._group_by(kind, attrs.get("group_by"))
        conds = self._filter(kind, attrs.get("filter"))
        buckets: list[datetime] = []
        if kind.series:
            buckets = self._intervals(attrs.get("interval"), start, end)
        groups = self._aggregate(kind, start, end, metric, names, group_by, conds, buckets)
        return self._render(req, kind, groups, group_by, stats, buckets)

    def _statistics(self, value: Any) -> list[str]:
        allowed = set(STATISTICS) | set(ZERO_STATISTICS)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise bad("statistics must be a non-empty list of statistic names (e.g. [\"opens\", \"open_rate\"])",
                      pointer="/data/attributes/statistics")
        for k, v in enumerate(value):
            if v not in allowed:
                raise bad(f"'{v}' is not a statistic; allowed: {', '.join(sorted(allowed))}",
                          pointer=f"/data/attributes/statistics/{k}")
        return list(dict.fromkeys(value))

    def _timeframe(self, value: Any) -> tuple[datetime, datetime]:
        ptr = "/data/attributes/timeframe"
        if not isinstance(value, dict):
            raise bad("timeframe must be {\"key\": ...} or {\"start\": ..., \"end\": ...}", pointer=ptr)
        if "key" in value:
            if set(value) != {"key"}:
                raise bad("a timeframe with a key takes nothing else", pointer=ptr)
            return self._preset(value["key"])
        if set(value) != {"start", "end"}:
            raise bad("a custom timeframe needs exactly start and end", pointer=ptr)
        bounds = []
        for name in ("start", "end"):
            raw = value[name]
            try:
                # The offset is ignored: the account's time zone (UTC in the sandbox) applies, as the spec says.
                bounds.append(datetime.fromisoformat(str(raw).replace("Z", "+00:00")).replace(tzinfo=UTC))
            except ValueError:
                raise bad(f"timeframe {name} {raw!r} is not an ISO 8601 datetime", pointer=f"{ptr}/{name}") from None
        start, end = bounds
        if end <= start:
            raise bad("timeframe end must be after its start", pointer=f"{ptr}/end")
        if end - start > timedelta(days=366):
            raise bad("a timeframe may span at most one year", pointer=ptr)
        return start, end

    def _preset(self, key: Any) -> tuple[datetime, datetime]:
        now = datetime.fromtimestamp(self.store.clock_ms() / 1000, tz=UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        week = today - timedelta(days=today.weekday())
        month = today.replace(day=1)
        prev_month = (month - timedelta(days=1)).replace(day=1)
        year = month.replace(month=1)
        presets = {
            "today": (today, now), "yesterday": (today - timedelta(days=1), today),
            "last_7_days": (today - timedelta(days=7), today), "last_30_days": (today - timedelta(days=30), today),
            "last_90_days": (today - timedelta(days=90), today), "last_365_days": (today - timedelta(days=365), today),
            "this_week": (week, now), "last_week": (week - timedelta(days=7), week), "this_month": (month, now),
            "last_month": (prev_month, month), "this_year": (year, now),
            "last_year": (year.replace(year=year.year - 1), year),
            "last_3_months": (today - timedelta(days=91), today), "last_12_months": (today - timedelta(days=365), today),
        }
        if key not in presets:
            raise bad(f"timeframe key {key!r} is not one of {', '.join(sorted(presets))}",
                      pointer="/data/attributes/timeframe/key")
        return presets[key]

    def _group_by(self, kind: Kind, value: Any) -> tuple[str, ...]:
        ptr = "/data/attributes/group_by"
        if value is None:
            return kind.default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("group_by must be a list of attribute names", pointer=ptr)
        for k, v in enumerate(value):
            if v not in kind.group_by:
                raise bad(f"'{v}' is not a grouping of a {kind.rtype}; allowed: {', '.join(kind.group_by)}",
                          pointer=f"{ptr}/{k}")
            if v not in SERVED_GROUPINGS:
                raise bad(f"grouping by '{v}' is valid in Klaviyo but not modelled by the sandbox; group by "
                          f"{', '.join(g for g in kind.group_by if g in SERVED_GROUPINGS)}", pointer=f"{ptr}/{k}")
        missing = [r for r in kind.required if r not in value]
        if missing:
            raise bad(f"group_by must include {', '.join(kind.required)} (missing {', '.join(missing)})", pointer=ptr)
        return tuple(dict.fromkeys(value))

    def _filter(self, kind: Kind, value: Any) -> dict[str, set[str]]:
        ptr = "/data/attributes/filter"
        if value is None:
            return {}
        if not isinstance(value, str) or not value.strip():
            raise bad("filter must be a filter string, e.g. equals(campaign_id,\"abc\")", pointer=ptr)
        text = value.strip()
        atoms = [text]
        if text.startswith("and(") and text.endswith(")"):
            atoms = _split_args(text[4:-1])
        scalar = {g for g in kind.group_by if g not in ("tag_id", "tag_name", "group", "group_name")}
        out: dict[str, set[str]] = {}
        for atom in atoms:
            m = FILTER_ATOM.match(atom.strip())
            if not m:
                raise bad(f"invalid filter {atom!r}: use equals(attr,\"v\") or contains-any(attr,[\"a\",\"b\"]), "
                          "joined with and(...)", pointer=ptr)
            op, attr, raw = m.groups()
            if attr not in scalar:
                raise bad(f"cannot filter a {kind.rtype} on {attr!r}; scalar attributes: {', '.join(sorted(scalar))}",
                          pointer=ptr)
            if attr in out:
                raise bad(f"only one filter can be used per attribute ({attr})", pointer=ptr)
            values = _filter_values(op, raw)
            if values is None or len(values) > 100:
                raise bad(f"invalid value in {atom!r}: equals takes one quoted string, contains-any a list of "
                          "at most 100", pointer=ptr)
            if attr not in SERVED_GROUPINGS:
                raise bad(f"filtering on '{attr}' is not modelled by the sandbox", pointer=ptr)
            out[attr] = values
        return out

    def _intervals(self, value: Any, start: datetime, end: datetime) -> list[datetime]:
        ptr = "/data/attributes/interval"
        if value not in INTERVAL_MAX_DAYS:
            raise bad(f"interval must be one of {', '.join(INTERVAL_MAX_DAYS)}", pointer=ptr)
        if end - start > timedelta(days=INTERVAL_MAX_DAYS[value]):
            raise bad(f"with interval {value} the timeframe may span at most {INTERVAL_MAX_DAYS[value]} days",
                      pointer=ptr)
        out, t = [], start
        while t < end:
            out.append(t)
            if value == "monthly":
                t = (t.replace(day=1) + timedelta(days=32)).replace(day=1)
            else:
                t = t + INTERVAL_STEP[value]
        return out

    # ---- values ----------------------------------------------------------------------------------------
    def _events(self, lo: int, hi: int, wanted: set[int]) -> Iterator[dict[str, Any]]:
        store, base = self.store, self.store.base
        with store.lock:
            for _, ref in store.event_source().walk(None, None, False, lo, hi - 1):
                if ref[0] == "b" and base.event_metric(ref[1]) not in wanted:
                    continue
                rec = store.event_by_ref(ref)
                if rec is not None:
                    yield rec

    def _aggregate(self, kind: Kind, start: datetime, end: datetime, metric: str, names: dict[str, str],
                   group_by: tuple[str, ...], conds: dict[str, set[str]],
                   buckets: list[datetime]) -> dict[tuple[str, ...], list[Acc]]:
        store = self.store
        relevant = RECEIVED | {"Opened Email", "Clicked Email"}
        wanted = {k for k, mid in enumerate(store.metric_ids) if names.get(mid) in relevant or mid == metric}
        edges = [dt_to_ms(b) for b in buckets]
        width = max(1, len(edges))
        lo, hi = dt_to_ms(start), dt_to_ms(end)
        by_send = store.semantics is None or store.semantics.get("report_time_basis") == "send_date"
        groups: dict[tuple[str, ...], list[Acc]] = defaultdict(lambda: [Acc() for _ in range(width)])
        # Dated by send: a campaign's events come after its send, a flow engagement within the window after
        # the receipt it belongs to, so the walk starts there and runs to now.
        walk_lo, walk_hi = (lo - ATTRIBUTION_WINDOW_MS, store.clock_ms() + 1) if by_send else (lo, hi)
        receipts: dict[tuple[str, str], int] = {}  # (profile, flow message) -> latest receipt so far
        for rec in self._events(walk_lo, walk_hi, wanted):
            props = rec["attributes"].get("event_properties") or {}
            name = names.get(rec["_metric_id"])
            is_conversion = rec["_metric_id"] == metric
            send = self._sends.get(props.get("$attributed_message" if is_conversion else "$message"))
            if send is None or (send.campaign_id if kind.owner == "campaign" else send.flow_id) is None:
                continue
            ms = _ms(rec["attributes"]["datetime"])
            received = name in RECEIVED and props.get("$message") == send.message_id
            if by_send and send.sent_ms is not None:
                ms = send.sent_ms
            elif by_send:
                key = (rec["_profile_id"], send.message_id)
                if received:
                    receipts[key] = ms
                else:
                    got = receipts.get(key)
                    ms = got if got is not None and ms - got <= ATTRIBUTION_WINDOW_MS else ms
            if not lo <= ms < hi:
                continue
            row = self._grouping(send)
            if any(row.get(attr) not in values for attr, values in conds.items()):
                continue
            slot = 0
            if edges:
                while slot + 1 < len(edges) and edges[slot + 1] <= ms:
                    slot += 1
            acc = groups[tuple(row[g] for g in group_by)][slot]
            who = rec["_profile_id"]
            if is_conversion:
                acc.conversions += 1
                acc.converters.add(who)
                try:
                    acc.value += float(props.get("$value") or 0)
                except (TypeError, ValueError):
                    pass
            if received:
                acc.recipients += 1
                acc.segments += int(props.get("Segments") or 0) if name == "Sent SMS" else 0
            elif name == "Opened Email":
                acc.opens += 1
                acc.openers.add(who)
            elif name == "Clicked Email":
                acc.clicks += 1
                acc.clickers.add(who)
        return dict(sorted(groups.items()))

    def _grouping(self, send: Send) -> dict[str, str]:
        row = {"send_channel": CHANNEL_NAMES[send.channel], "campaign_message_name": send.name,
               "flow_name": send.name}
        if send.campaign_id:
            row.update(campaign_id=send.campaign_id, campaign_message_id=send.message_id)
        if send.flow_id:
            row.update(flow_id=send.flow_id, flow_message_id=send.message_id,
                       flow_message_name=self._message_names.get(send.message_id, ""))
        return row

    def _render(self, req: Request, kind: Kind, groups: dict[tuple[str, ...], list[Acc]],
                group_by: tuple[str, ...], stats: list[str], buckets: list[datetime]) -> dict[str, Any]:
        rows = list(groups.items())
        size = int(self.store.semantics.get("report_page_rows")) if self.store.semantics else 500
        offset = 0
        token = req.params.raw.get("page_cursor")
        if token is not None:
            try:
                cursor = decode_cursor(token.lstrip("="))
                offset = int(cursor["o"])
                if cursor.get("k") != kind.rtype or offset < 0:
                    raise ValueError
            except (CursorError, KeyError, TypeError, ValueError):
                raise bad("page_cursor is not a cursor this server issued for this report; follow links.next as "
                          "returned, with the same body", parameter="page_cursor") from None
        page = rows[offset:offset + size]
        results = []
        for key, accs in page:
            values: dict[str, Any] = {}
            for s in stats:
                fn = STATISTICS.get(s)
                series = [fn(a) if fn else 0 for a in accs]
                values[s] = series if kind.series else series[0]
            results.append({"groupings": dict(zip(group_by, key, strict=True)), "statistics": values})
        attributes: dict[str, Any] = {"results": results}
        if kind.series:
            attributes["date_times"] = [b.isoformat() for b in buckets]
        wanted = req.params.fields.get(kind.rtype)
        if wanted:
            attributes = {k: v for k, v in attributes.items() if k in wanted}
        rid = encode_cursor({"k": kind.rtype, "n": len(rows)})[:24]
        self_url = f"{self.reads.base_url}{req.path}"
        links = {"self": self_url + (f"?{urlencode(req.params.raw)}" if req.params.raw else "")}
        if offset + size < len(rows):
            nxt = {**req.params.raw, "page_cursor": encode_cursor({"k": kind.rtype, "o": offset + size})}
            links["next"] = f"{self_url}?{urlencode(nxt)}"
        return {"data": {"type": kind.rtype, "id": rid, "attributes": attributes,
                         "relationships": self._relationships(kind, group_by, page)},
                "links": links}

    def _relationships(self, kind: Kind, names: tuple[str, ...],
                       page: list[tuple[tuple[str, ...], list[Acc]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        owner_key = f"{kind.owner}_id"
        owners = list(dict.fromkeys(key[names.index(owner_key)] for key, _ in page))
        out[f"{kind.owner}s"] = {"data": [{"type": kind.owner, "id": o} for o in owners]}
        if kind.owner == "flow":
            messages = list(dict.fromkeys(key[names.index("flow_message_id")] for key, _ in page))
            out["flow-messages"] = {"data": [{"type": "flow-message", "id": m} for m in messages]}
        return out


def _ms(text: str) -> int:
    return dt_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments of a filter expression (brackets, parens and quotes kept)."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return [a for a in out if a.strip()]


def _filter_values(op: str, raw: str) -> set[str] | None:
    raw = raw.strip()
    quoted = re.compile(r'^\s*(["\'])(.*?)\1\s*$')
    if op == "equals":
        m = quoted.match(raw)
        return {m.group(2)} if m else None
    if not (raw.startswith("[") and raw.endswith("]")):
        return None
    items = _split_args(raw[1:-1])
    out = set()
    for item in items:
        m = quoted.match(item)
        if not m:
            return None
        out.add(m.group(2))
    return out

