"""Custom metrics in the sandbox: `GET /api/custom-metrics[/{id}]` and their member metrics.

A custom metric groups other metrics (`definition.metric_groups[].metric_id`), e.g. all order metrics as
one revenue measure. The sandbox builds a few from its metrics, deterministic from the seed. The spec says
the events `metric_id` filter does not take custom metrics: `ReadApi.get_events` answers such a filter with
a 400 that says to filter on the member metrics instead (it reads `custom_metric_ids`, set here).
"""

from __future__ import annotations

from typing import Any

from klaviyo_dagster.sandbox.ids import h
from klaviyo_dagster.sandbox.params import ApiError, Params
from klaviyo_dagster.sandbox.render import collection, rel, resource, single

# name, aggregation method, member metric names, value property
DEFINITIONS = [
    ("Revenue (all orders)", "value", ("Placed Order", "Fulfilled Order"), "$value"),
    ("Email engagement", "count", ("Opened Email", "Clicked Email"), None),
    ("Checkout funnel", "count", ("Added to Cart", "Started Checkout", "Placed Order"), None),
]


class CustomMetrics:
    """The account's custom metrics and the handlers of their operations."""

    def __init__(self, reads: Any, seed: int) -> None:
        self.reads = reads
        by_name = {m["attributes"]["name"]: m for m in reads.store.base.metrics}
        self.records: dict[str, dict[str, Any]] = {}
        for k, (name, method, members, value_property) in enumerate(DEFINITIONS):
            metrics = [by_name[n] for n in members if n in by_name]
            if not metrics:
                continue
            created = max(m["attributes"]["created"] for m in metrics)
            rid = f"{h(seed, 'custom-metric', k):016x}{h(seed, 'custom-metric', k, 1):016x}"  # 32 hex digits
            self.records[rid] = {"type": "custom-metric", "id": rid, "metric_ids": [m["id"] for m in metrics],
                                 "attributes": {"name": name, "created": created, "updated": created,
                                                "definition": {"aggregation_method": method, "metric_groups": [
                                                    {"metric_id": m["id"], "metric_filters": None,
                                                     "value_property": value_property} for m in metrics]}}}
        reads.custom_metric_ids = set(self.records)

    def resource(self, rec: dict[str, Any], p: Params) -> dict[str, Any]:
        path = f"/api/custom-metrics/{rec['id']}/"
        data = [{"type": "metric", "id": m} for m in rec["metric_ids"]] if "metrics" in p.include else None
        rels = {"metrics": rel(self.reads.base_url, path, "metrics", data)}
        return resource("custom-metric", rec["id"], rec["attributes"], self.reads.base_url, path, p.fields, rels)

    def _get(self, rid: str) -> dict[str, Any]:
        rec = self.records.get(rid)
        if rec is None:
            raise ApiError(404, "not_found", f"A custom metric with id {rid!r} does not exist in this account; "
                           "list them with GET /api/custom-metrics")
        return rec

    # ---- handlers ---------------------------------------------------------------------------------------
    def get_all(self, req: Any) -> dict[str, Any]:
        p = req.params
        data = [self.resource(r, p) for r in self.records.values()]
        return collection(data, self.reads.base_url, req.path, p.raw, None)

    def get_one(self, req: Any) -> dict[str, Any]:
        p = req.params
        return single(self.resource(self._get(req.ids["id"]), p), self.reads.base_url, req.path, p.raw)

    def get_metrics(self, req: Any, ids_only: bool) -> dict[str, Any]:
        p, store = req.params, self.reads.store
        rec = self._get(req.ids["id"])
        if ids_only:
            data = [{"type": "metric", "id": m} for m in rec["metric_ids"]]
        else:
            data = [self.reads.simple_resource(store.metric_by_id[m], p) for m in rec["metric_ids"]]
        return collection(data, self.reads.base_url, req.path, p.raw, None)
