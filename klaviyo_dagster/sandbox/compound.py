"""JSON:API compound documents for the sandbox: `include` linkage and `included`, for every operation.

JSON:API says: for each relationship named in `include`, every primary resource carries that relationship's
resource linkage (`relationships.<name>.data`: an array of `{type, id}` for to-many, an identifier or null
for to-one, empty when nothing is linked), and the linked resources come once each in `included`, with the
sparse fieldsets `fields[<type>]` applied. `Compound.apply(doc, params)` enforces this on every answer
whose request named `include`, after the handler ran:

- linkage a handler already set (campaign messages, flow actions, tags, an event's profile and metric, a
  profile's lists) is kept; a relationship without `data` gets its linkage from `linkage()` (a record field
  listing the linked ids) or, when the sandbox holds nothing of that kind (push tokens, conversations,
  attributions, flow triggers), the empty linkage of its cardinality, read from the spec's response schema;
- every linked resource the sandbox holds and `included` lacks is rendered by `render()` and appended;
  none appears twice.
"""

from __future__ import annotations

from typing import Any

from klaviyo_dagster.sandbox.api import PLURAL
from klaviyo_dagster.sandbox.params import Params
from klaviyo_dagster.sandbox.render import rel
from klaviyo_dagster.spec import load_subset

# Record fields that list the ids linked through a relationship, per relationship name.
ID_FIELDS = {"campaign-messages": "message_ids", "flow-actions": "action_ids", "tags": "tag_ids",
             "flow-messages": "message_ids", "metrics": "metric_ids"}
# Where records of a linked type live on the sandbox's base data (attribute name).
COLLECTIONS = {"campaign": "campaigns", "campaign-message": "campaign_messages", "flow": "flows",
               "flow-action": "flow_actions", "flow-message": "flow_messages", "template": "templates",
               "tag": "tags", "tag-group": "tag_groups"}


def _cardinalities(subset: dict[str, Any]) -> dict[tuple[str, str], bool]:
    """(resource type, relationship) -> True when to-many, from every *ResponseObjectResource schema."""
    schemas = subset["components"].get("schemas", {})
    out: dict[tuple[str, str], bool] = {}
    for name, schema in schemas.items():
        if not name.endswith("ResponseObjectResource"):
            continue
        props = schema.get("properties", {})
        enum_ref = (props.get("type") or {}).get("$ref", "")
        enum = schemas.get(enum_ref.rsplit("/", 1)[-1], {}).get("enum") or []
        rels = (props.get("relationships") or {}).get("properties") or {}
        for rtype in enum:
            for rel_name, rel_schema in rels.items():
                data = (rel_schema.get("properties") or {}).get("data") or {}
                out.setdefault((rtype, rel_name), data.get("type") == "array")
    return out


class Compound:
    """Linkage and `included` for the resources a `ReadApi` renders (see module docstring)."""

    def __init__(self, reads: Any, custom: Any, subset: dict[str, Any] | None = None) -> None:
        self.reads = reads
        self.custom = custom  # custom_metrics.CustomMetrics
        self.to_many = _cardinalities(subset or load_subset())

    # ---- linkage ---------------------------------------------------------------------------------------
    def _record(self, rtype: str, rid: str) -> dict[str, Any] | None:
        """The raw record of a resource (small collections and groups), or None."""
        store = self.reads.store
        if rtype in ("list", "segment"):
            st = store.group(rtype, rid)
            return None if st is None else self.reads.group_rec(st)
        if rtype == "custom-metric":
            return self.custom.records.get(rid)
        name = COLLECTIONS.get(rtype)
        if name is None:
            return None
        return next((r for r in getattr(store.base, name, ()) or () if r["id"] == rid), None)

    def linkage(self, rtype: str, rid: str, name: str) -> Any:
        """The linkage of `name` on resource (rtype, rid): what the sandbox holds, else the empty linkage."""
        many = self.to_many.get((rtype, name), True)
        rec = self._record(rtype, rid)
        field = ID_FIELDS.get(name)
        if rec is not None and field and rec.get(field) is not None:
            ltype = name[:-1] if name.endswith("s") else name
            return [{"type": ltype, "id": i} for i in rec[field]]
        return [] if many else None

    # ---- included --------------------------------------------------------------------------------------
    def render(self, rtype: str, rid: str, p: Params) -> dict[str, Any] | None:
        """A linked resource as `included` shows it (with `fields[rtype]`), or None if the sandbox lacks it."""
        reads, store = self.reads, self.reads.store
        if rtype == "profile":
            rec = store.profile(rid)
            return None if rec is None else reads.profile_resource(rec, p, with_rels=False)
        if rtype == "metric":
            rec = store.metric_by_id.get(rid)
            return None if rec is None else reads.simple_resource(rec, p)
        rec = self._record(rtype, rid)
        if rec is None:
            return None
        if rtype == "custom-metric":
            return self.custom.resource(rec, p)
        return reads.simple_resource(rec, p)

    def apply(self, doc: dict[str, Any], p: Params) -> dict[str, Any]:
        """Give `doc` (a collection or single document) full linkage and `included` for `p.include`."""
        if not p.include or "data" not in doc:
            return doc
        primary = doc["data"] if isinstance(doc["data"], list) else [doc["data"]]
        included: list[dict[str, Any]] = list(doc.get("included") or [])
        seen = {(r["type"], r["id"]) for r in included} | {(r["type"], r["id"]) for r in primary}
        wanted: list[tuple[str, str]] = []
        for res in primary:
            rels = res.setdefault("relationships", {})
            path = f"/api/{PLURAL.get(res['type'], res['type'] + 's')}/{res['id']}/"
            for name in p.include:
                entry = rels.get(name)
                if entry is None:
                    entry = rels[name] = rel(self.reads.base_url, path, name)
                if "data" not in entry:
                    entry["data"] = self.linkage(res["type"], res["id"], name)
                data = entry["data"]
                for ident in data if isinstance(data, list) else [data] if data else []:
                    key = (ident["type"], ident["id"])
                    if key not in seen:
                        seen.add(key)
                        wanted.append(key)
        for rtype, rid in wanted:
            rendered = self.render(rtype, rid, p)
            if rendered is not None:
                included.append(rendered)
        doc["included"] = included
        return doc
