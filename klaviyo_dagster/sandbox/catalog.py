"""The sandbox's small collections, built once at start: metrics, lists, segments, campaigns (and their
messages), flows (and their actions and the actions' messages), templates, tags and tag groups,
deterministic from the seed.

Sizes grow with the profile count (12 lists / 60 campaigns / 24 flows at small scale). Timestamps come
from a `Timeline` over the data span, so some records sit on UTC midnights; some campaigns and flows are
archived; flows cover every status and trigger type; campaigns every channel. Tags are linked to some
campaigns, flows, lists and segments (none, one or several each); some tags are linked to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from klaviyo_dagster.sandbox.ids import det_uuid, encode_ulid, h, rng, short_id
from klaviyo_dagster.sandbox.timeline import DAY_MS, Timeline, iso

INTEGRATIONS = {
    "klaviyo": {"object": "integration", "id": "0rG4eQ", "key": "klaviyo", "name": "Klaviyo", "category": "Internal"},
    "shopify": {"object": "integration", "id": "0eMvjm", "key": "shopify", "name": "Shopify", "category": "eCommerce"},
    "api": {"object": "integration", "id": "7FtS4J", "key": "api", "name": "API", "category": "API"},
}
# name, integration, weight in the event stream
METRICS = [
    ("Placed Order", "shopify", 6), ("Started Checkout", "shopify", 6), ("Added to Cart", "api", 8),
    ("Viewed Product", "api", 18), ("Active on Site", "api", 18), ("Received Email", "klaviyo", 20),
    ("Opened Email", "klaviyo", 12), ("Clicked Email", "klaviyo", 5), ("Sent SMS", "klaviyo", 3),
    ("Received Push", "klaviyo", 2), ("Fulfilled Order", "shopify", 3), ("Subscribed to List", "klaviyo", 1),
]

LIST_NAMES = ["Newsletter", "VIP Customers", "Welcome Series", "SMS Subscribers", "Winback", "Product Launch",
              "Sale Alerts", "Loyalty Members", "Event Invitees", "Wholesale", "Beta Testers", "Preview Access"]
SEGMENT_NAMES = ["Engaged 30 Days", "Repeat Buyers", "High CLV", "At Risk", "New Subscribers",
                 "Cart Abandoners", "Email Openers", "SMS Engaged"]
FLOW_TRIGGERS = ["Added to List", "Date Based", "Low Inventory", "Metric", "Price Drop", "Unconfigured"]
FLOW_STATUSES = ["draft", "manual", "live"]
CAMPAIGN_STATUSES = ["Sent", "Sent", "Sent", "Draft", "Scheduled", "Cancelled", "Sending"]
TAG_GROUPS = [("Default", False, True), ("Season", True, False), ("Team", False, False)]
TAG_NAMES = ["spring", "summer", "fall", "holiday", "retention", "acquisition", "vip", "promo", "welcome",
             "winback", "growth", "lifecycle", "unused", "archive"]

@dataclass
class SmallSizes:
    lists: int
    segments: int
    campaigns: int
    flows: int
    templates: int


def small_sizes(profiles: int) -> SmallSizes:
    if profiles >= 500_000:
        return SmallSizes(lists=60, segments=40, campaigns=900, flows=120, templates=200)
    if profiles >= 20_000:
        return SmallSizes(lists=30, segments=20, campaigns=300, flows=60, templates=100)
    return SmallSizes(lists=12, segments=8, campaigns=60, flows=24, templates=40)


@dataclass
class Group:
    """A list or a segment: its resource attributes and base membership rule."""

    kind: str  # "list" | "segment"
    index: int
    id: str
    attributes: dict[str, Any]
    share: int  # members per 10,000 profiles
    offset_ms: int  # joined_group_at = profile created + offset
    tag_ids: list[str] = field(default_factory=list)


@dataclass
class Catalog:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, list[Group]] = field(default_factory=dict)
    templates: list[dict[str, Any]] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    campaign_messages: list[dict[str, Any]] = field(default_factory=list)
    flows: list[dict[str, Any]] = field(default_factory=list)
    flow_actions: list[dict[str, Any]] = field(default_factory=list)
    flow_messages: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    tag_groups: list[dict[str, Any]] = field(default_factory=list)

    def index(self, name: str) -> dict[str, dict[str, Any]]:
        """``{id: record}`` of collection ``name`` (e.g. "flow_actions"), built once."""
        cache = self.__dict__.setdefault("_indexes", {})
        found = cache.get(name)
        if found is None:
            found = cache[name] = {r["id"]: r for r in getattr(self, name)}
        return found


def build_catalog(seed: int, n_profiles: int, data_start: int, data_end: int, span_ms: int) -> Catalog:
    """Every small collection of the account."""
    out = Catalog()
    sizes = small_sizes(n_profiles)
    old = data_start - 400 * DAY_MS
    out.metrics = []
    for k, (name, integ, _) in enumerate(METRICS):
        created = old + k * 7 * DAY_MS
        out.metrics.append({"type": "metric", "id": short_id(seed, "metric", k), "attributes": {
            "name": name, "created": iso(created), "updated": iso(created + 30 * DAY_MS),
            "integration": dict(INTEGRATIONS[integ])}})

    def times(n: int, k: int) -> tuple[int, int]:
        tl = Timeline(data_start - span_ms, data_end, max(n, 2))
        created = tl.at(k)
        r = rng(seed, "small-updated", k)
        updated = min(data_end, created + r.below(20) * DAY_MS) if k % 4 else created
        return created, updated

    out.groups = {"list": [], "segment": []}
    for kind, count, names in (("list", sizes.lists, LIST_NAMES), ("segment", sizes.segments, SEGMENT_NAMES)):
        for k in range(count):
            created, updated = times(count, k)
            r = rng(seed, f"{kind}-attrs", k)
            name = names[k % len(names)] + ("" if k < len(names) else f" {k // len(names) + 1}")
            if kind == "list":
                attrs = {"name": name, "created": iso(created), "updated": iso(updated),
                         "opt_in_process": r.choice(["single_opt_in", "double_opt_in"])}
            else:
                attrs = {"name": name, "created": iso(created), "updated": iso(updated),
                         "is_active": k % 5 != 4, "is_processing": False, "is_starred": k % 3 == 0}
            share = [4000, 1500, 600, 250, 80, 20][k % 6]
            out.groups[kind].append(Group(kind, k, short_id(seed, kind, k), attrs, share,
                                           (k % 3) * DAY_MS))

    out.templates = []
    for k in range(sizes.templates):
        created, updated = times(sizes.templates, k)
        name = f"Template {k + 1}: " + ["Welcome", "Sale", "Newsletter", "Order Confirmation", "Winback"][k % 5]
        out.templates.append({"type": "template", "id": short_id(seed, "template", k), "attributes": {
            "name": name, "editor_type": ["CODE", "SYSTEM_DRAGGABLE", "USER_DRAGGABLE"][k % 3],
            "html": f"<html><body><h1>{name}</h1><p>Hello {{{{ first_name|default:'there' }}}}</p></body></html>",
            "text": f"{name}\n\nHello {{{{ first_name|default:'there' }}}}", "amp": None,
            "created": iso(created), "updated": iso(updated)}})

    out.campaigns, out.campaign_messages = [], []
    lists = out.groups["list"]
    for k in range(sizes.campaigns):
        created, updated = times(sizes.campaigns, k)
        r = rng(seed, "campaign", k)
        channel = ["email", "email", "email", "sms", "sms", "mobile_push"][k % 6]
        status = r.choice(CAMPAIGN_STATUSES)
        scheduled = None if status == "Draft" else min(data_end, created + (1 + r.below(3)) * DAY_MS)
        updated = max(updated, scheduled or 0)
        cid = encode_ulid(seed, "campaign", created, k)
        mid = encode_ulid(seed, "campaign-message", created, k)
        send_options = {"use_smart_sending": r.chance(0.7)}
        attrs: dict[str, Any] = {
            "name": f"{['Spring', 'Summer', 'Fall', 'Holiday', 'Flash'][k % 5]} {channel} campaign #{k + 1}",
            "status": status, "archived": k % 7 == 3,
            "audiences": {"included": [lists[k % len(lists)].id], "excluded": []},
            "send_options": send_options,
            "send_strategy": ({"method": "static", "datetime": iso(scheduled)} if scheduled
                              else {"method": "immediate"}),
            "created_at": iso(created), "scheduled_at": iso(scheduled), "updated_at": iso(updated),
            "send_time": iso(scheduled) if status == "Sent" else None,
        }
        if channel == "email":
            attrs["tracking_options"] = {"add_tracking_params": True, "is_tracking_clicks": True,
                                         "is_tracking_opens": True}
            definition: dict[str, Any] = {"channel": "email", "label": attrs["name"], "content": {
                "subject": "Our newest arrivals", "preview_text": "Just landed", "from_email": "hello@example.com",
                "from_label": "Example Shop", "reply_to_email": None, "cc_email": None, "bcc_email": None}}
        elif channel == "sms":
            attrs["tracking_options"] = {"add_tracking_params": False}
            definition = {"channel": "sms", "content": {"body": "Flash sale today! Reply STOP to opt out",
                                                        "media_url": None},
                          "render_options": {"shorten_links": True, "add_org_prefix": True,
                                             "add_info_link": True, "add_opt_out_language": False}}
        else:
            definition = {"channel": "mobile_push", "notification_type": "standard",
                          "content": {"title": "New drop", "body": "See what's new"}}
        out.campaigns.append({"type": "campaign", "id": cid, "attributes": attrs, "channel": channel,
                               "message_ids": [mid], "tag_ids": []})
        out.campaign_messages.append({"type": "campaign-message", "id": mid, "attributes": {
            "definition": definition,
            "send_times": [{"datetime": iso(scheduled), "is_local": False}] if scheduled else [],
            "created_at": iso(created), "updated_at": iso(updated)}, "campaign_id": cid,
            "template_id": out.templates[k % len(out.templates)]["id"],
            "image_id": str(10_000_000 + h(seed, "campaign-image", k) % 89_999_999)})

    out.flows, out.flow_actions = [], []
    action_seq = 0
    for k in range(sizes.flows):
        created, updated = times(sizes.flows, k)
        fid = short_id(seed, "flow", k)
        trigger = FLOW_TRIGGERS[k % len(FLOW_TRIGGERS)]
        action_ids = []
        n_actions = 1 + k % 4
        for _ in range(n_actions):
            aid = str(10_000_000 + h(seed, "flow-action", action_seq) % 89_999_999)
            action_seq += 1
            action_ids.append(aid)
        actions = []
        for a, aid in enumerate(action_ids):
            nxt = action_ids[a + 1] if a + 1 < len(action_ids) else None
            if a % 2 == 0:
                definition = {"id": aid, "type": "send-email", "links": {"next": nxt}, "data": {"message": {
                    "from_email": "hello@example.com", "from_label": "Example Shop",
                    "subject_line": f"Step {a + 1}", "preview_text": None,
                    "template_id": out.templates[(k + a) % len(out.templates)]["id"],
                    "smart_sending_enabled": True, "transactional": False, "add_tracking_params": True}}}
            else:
                definition = {"id": aid, "type": "time-delay", "links": {"next": nxt},
                              "data": {"unit": "days", "value": 1 + a}}
            message_ids = []
            if a % 2 == 0:  # a send-email action has one message (an A/B-tested one, two)
                for v in range(2 if (k + a) % 5 == 0 else 1):
                    msg_id = short_id(seed, "flow-message", len(out.flow_messages))
                    message_ids.append(msg_id)
                    message = dict(definition["data"]["message"])
                    message["subject_line"] = f"{message['subject_line']}{' (B)' if v else ''}"
                    out.flow_messages.append({"type": "flow-message", "id": msg_id, "attributes": {
                        "channel": "email", "created": iso(created), "updated": iso(updated),
                        "definition": message}, "action_id": aid, "template_id": message["template_id"]})
            actions.append({"type": "flow-action", "id": aid, "attributes": {
                "created": iso(created), "updated": iso(updated), "definition": definition},
                "flow_id": fid, "message_ids": message_ids})
        out.flow_actions.extend(actions)
        out.flows.append({"type": "flow", "id": fid, "attributes": {
            "name": f"{trigger} flow #{k + 1}", "status": FLOW_STATUSES[(k + k // 6) % 3],
            "archived": k % 5 == 2, "created": iso(created), "updated": iso(updated),
            "trigger_type": trigger}, "action_ids": action_ids, "tag_ids": []})

    _build_tags(out, seed)

    return out


def _build_tags(out: Catalog, seed: int) -> None:
    """Tag groups, tags, and each tag's links to campaigns, flows, lists and segments (stored on them)."""
    out.tag_groups = [{"type": "tag-group", "id": det_uuid(seed, "tag-group", g), "attributes": {
        "name": name, "exclusive": exclusive, "default": default}, "tag_ids": []}
        for g, (name, exclusive, default) in enumerate(TAG_GROUPS)]
    out.tags = []
    for k, name in enumerate(TAG_NAMES):
        group = out.tag_groups[k % len(out.tag_groups)]
        tid = det_uuid(seed, "tag", k)
        group["tag_ids"].append(tid)
        out.tags.append({"type": "tag", "id": tid, "attributes": {"name": name}, "tag_group_id": group["id"]})
    linkable = [t["id"] for t in out.tags if t["attributes"]["name"] not in ("unused", "archive")]
    owners: list[dict[str, Any] | Group] = [*out.campaigns, *out.flows, *out.groups["list"], *out.groups["segment"]]
    for k, owner in enumerate(owners):
        n = h(seed, "tag-links", k) % 4  # 0..3 tags (a quarter carry none)
        chosen = [linkable[(h(seed, "tag-pick", k, j)) % len(linkable)] for j in range(n)]
        ids = list(dict.fromkeys(chosen))
        if isinstance(owner, Group):
            owner.tag_ids = ids
        else:
            owner["tag_ids"] = ids

