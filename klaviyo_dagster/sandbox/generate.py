"""The sandbox's base data: a deterministic, lazily generated Klaviyo account.

Profiles and events (the big collections) are never stored: `BaseData.profile(i)` and `BaseData.event(i)`
rebuild record `i` from (seed, index). Their cursor timestamps (profile `created`/`updated`, event
`datetime`) are monotone in the index (see timeline.py), and emails, phone numbers, external ids and ids
encode the index, so lookups are O(1) and windows are binary searches. The small collections are built
once at start (catalog.py). List and segment membership puts one member in each bucket of consecutive
profile indices, so the k-th member is O(1) and `joined_group_at` is monotone in k.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from klaviyo_dagster.sandbox.catalog import LIST_NAMES, METRICS, Catalog, Group, build_catalog
from klaviyo_dagster.sandbox.ids import (
    decode_ulid,
    det_uuid,
    encode_ulid,
    h,
    rng,
)
from klaviyo_dagster.sandbox.timeline import DAY_MS, Timeline, iso

SCALES: dict[str, tuple[int, int]] = {
    "small": (2_000, 20_000),
    "medium": (50_000, 500_000),
    "large": (1_000_000, 10_000_000),
}


def parse_scale(scale: str) -> tuple[int, int]:
    """`small`, `medium`, `large` or `PROFILES:EVENTS` -> (profiles, events)."""
    if scale in SCALES:
        return SCALES[scale]
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", scale or "")
    if not m:
        raise ValueError(f"scale {scale!r} is not small, medium, large or PROFILES:EVENTS (e.g. 1000000:10000000)")
    profiles, events = int(m.group(1)), int(m.group(2))
    if profiles < 1 or events < 0:
        raise ValueError(f"scale {scale!r} needs at least one profile and zero or more events")
    return profiles, events


FIRST = ["james", "mary", "robert", "patricia", "john", "jennifer", "michael", "linda", "david", "elizabeth",
         "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah", "carlos", "karen",
         "ana", "lucas", "mei", "hiroshi", "fatima", "omar", "ingrid", "sven", "priya", "arjun", "chloe", "noah"]
LAST = ["smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez", "martinez",
        "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor", "moore", "jackson", "martin",
        "lee", "perez", "thompson", "white", "nguyen", "kim", "patel", "mueller", "rossi", "dubois"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "shop.example.io"]
CITIES = [  # city, region, country, zip, timezone, lat, lon, area code
    ("New York", "NY", "United States", "10001", "America/New_York", 40.7506, -73.9972, "212"),
    ("Los Angeles", "CA", "United States", "90012", "America/Los_Angeles", 34.0614, -118.2385, "310"),
    ("San Francisco", "CA", "United States", "94103", "America/Los_Angeles", 37.7726, -122.4099, "415"),
    ("Boston", "MA", "United States", "02108", "America/New_York", 42.3576, -71.0630, "617"),
    ("Chicago", "IL", "United States", "60601", "America/Chicago", 41.8858, -87.6181, "312"),
    ("Seattle", "WA", "United States", "98101", "America/Los_Angeles", 47.6114, -122.3305, "206"),
    ("Austin", "TX", "United States", "78701", "America/Chicago", 30.2711, -97.7437, "512"),
    ("Denver", "CO", "United States", "80202", "America/Denver", 39.7527, -104.9992, "303"),
    ("Atlanta", "GA", "United States", "30303", "America/New_York", 33.7525, -84.3915, "404"),
    ("Miami", "FL", "United States", "33130", "America/New_York", 25.7663, -80.2043, "305"),
]
AREA_CODES = [c[7] for c in CITIES]
EXCHANGES = [e for e in range(200, 1000) if e % 100 != 11]
PRODUCTS = [  # id, name, price, category
    ("SKU-1001", "Classic Tee", 24.0, "Apparel"), ("SKU-1002", "Hoodie", 58.0, "Apparel"),
    ("SKU-1003", "Running Shoes", 120.0, "Footwear"), ("SKU-1004", "Water Bottle", 18.5, "Accessories"),
    ("SKU-1005", "Backpack", 89.99, "Accessories"), ("SKU-1006", "Yoga Mat", 35.0, "Fitness"),
    ("SKU-1007", "Sunglasses", 145.0, "Accessories"), ("SKU-1008", "Rain Jacket", 135.0, "Apparel"),
    ("SKU-1009", "Socks 3-Pack", 15.0, "Apparel"), ("SKU-1010", "Smart Watch", 249.0, "Electronics"),
]
PLANS = ["free", "basic", "plus", "pro"]
INTERESTS = ["running", "yoga", "hiking", "fashion", "tech", "travel", "cooking", "music"]

_METRIC_PICK = [i for i, (_, _, w) in enumerate(METRICS) for _ in range(w)]

ATTRIBUTED_SHARE = 35  # percent of Placed Order events attributed to an email send


@dataclass(frozen=True)
class Send:
    """A message events can belong to: a sent campaign's message or a flow's message."""

    message_id: str
    channel: str  # email | sms | mobile_push (campaign channels)
    name: str
    campaign_id: str | None = None
    flow_id: str | None = None
    sent_ms: int | None = None  # a campaign's send time (flows send all the time: None)


def sends_by_channel(catalog: Catalog) -> dict[str, list[Send]]:
    """``{channel: [Send]}``: flow messages (email) first, then the messages of sent campaigns by send time,
    so the sends an event at time t can belong to are a prefix (`BaseData.eligible_sends`)."""
    out: dict[str, list[Send]] = {"email": [], "sms": [], "mobile_push": []}
    actions = {a["id"]: a for a in catalog.flow_actions}
    flows = {f["id"]: f for f in catalog.flows}
    for m in catalog.flow_messages:
        flow = flows[actions[m["action_id"]]["flow_id"]]
        out["email"].append(Send(m["id"], "email", flow["attributes"]["name"], flow_id=flow["id"]))
    messages = {m["id"]: m for m in catalog.campaign_messages}
    campaign_sends: list[Send] = []
    for c in catalog.campaigns:
        sent = c["attributes"].get("send_time")
        if c["attributes"]["status"] != "Sent" or not sent:
            continue
        sent_ms = int(datetime.fromisoformat(sent).timestamp() * 1000)
        for mid in c["message_ids"]:
            if mid in messages:
                campaign_sends.append(Send(mid, c["channel"], c["attributes"]["name"], campaign_id=c["id"],
                                           sent_ms=sent_ms))
    for send in sorted(campaign_sends, key=lambda x: (x.sent_ms, x.message_id)):
        out[send.channel].append(send)
    return out


LATE_WINDOW_MS = 3 * DAY_MS  # late events carry a datetime within the last 3 days of data
LATE_STRIDE = 50  # one event in LATE_STRIDE of that window arrives late


@dataclass(kw_only=True)
class BaseData(Catalog):
    """Everything the sandbox serves before any write, generated from `seed`: the small collections
    (the `Catalog` fields, built in `__post_init__`) and the lazily generated profiles and events."""

    seed: int
    n_profiles: int
    n_events: int
    now_ms: int
    span_ms: int = 30 * DAY_MS

    def __post_init__(self) -> None:
        self.data_end = self.now_ms - self.now_ms % 60_000 - 60_000
        self.data_start = self.data_end - self.span_ms
        self.updated_tl = Timeline(self.data_start, self.data_end, self.n_profiles)
        self.created_tl = Timeline(self.data_start - self.span_ms, self.data_end - self.span_ms // 2,
                                   self.n_profiles)
        self.event_tl = Timeline(self.data_start, self.data_end, self.n_events)
        self.late_from = self.event_tl.first_at_or_after(self.data_end - LATE_WINDOW_MS)
        self.late_count = max(0, (self.n_events - self.late_from + LATE_STRIDE - 1) // LATE_STRIDE)
        catalog = build_catalog(self.seed, self.n_profiles, self.data_start, self.data_end, self.span_ms)
        for f in fields(Catalog):
            setattr(self, f.name, getattr(catalog, f.name))
        self.sends = sends_by_channel(self)
        self._send_times = {ch: [x.sent_ms for x in pool if x.sent_ms is not None] for ch, pool in self.sends.items()}

    # ---- profiles -------------------------------------------------------------------------------------
    def profile_id(self, i: int) -> str:
        return encode_ulid(self.seed, "profile", self.created_tl.at(i), i)

    def profile_index(self, profile_id: str) -> int | None:
        i = decode_ulid(self.seed, "profile", profile_id)
        return i if i is not None and i < self.n_profiles else None

    # One hash decides a profile's identity: name, domain, city and which identifiers it has.
    def _ident(self, i: int) -> tuple[str, str, str, int, bool, bool, bool]:
        """(first, last, domain, city index, has email, has phone, has external id) of profile `i`."""
        v = h(self.seed, "profile-ident", i)
        has_email = (v >> 16) % 100 >= 3
        has_phone = (v >> 24) % 100 < 65 or not has_email
        return (FIRST[v % len(FIRST)], LAST[(v >> 5) % len(LAST)], DOMAINS[(v >> 10) % len(DOMAINS)],
                (v >> 13) % len(CITIES), has_email, has_phone, (v >> 31) & 1 == 0)

    def _email(self, i: int, ident: tuple[str, str, str, int, bool, bool, bool]) -> str | None:
        return f"{ident[0]}.{ident[1]}{i}@{ident[2]}" if ident[4] else None

    def _phone(self, i: int, ident: tuple[str, str, str, int, bool, bool, bool]) -> str | None:
        if not ident[5]:
            return None
        return f"+1{AREA_CODES[ident[3]]}{EXCHANGES[(i // 10_000) % len(EXCHANGES)]}{i % 10_000:04d}"

    def email(self, i: int) -> str | None:
        return self._email(i, self._ident(i))

    def phone(self, i: int) -> str | None:
        return self._phone(i, self._ident(i))

    def external_id(self, i: int) -> str | None:
        return f"cust_{i:08d}" if self._ident(i)[6] else None

    def index_from_email(self, email: str) -> list[int]:
        m = re.fullmatch(r"[a-z]+\.[a-z]+(\d+)@[a-z.]+", email or "")
        return [int(m.group(1))] if m and int(m.group(1)) < self.n_profiles else []

    def index_from_phone(self, phone: str) -> list[int]:
        m = re.fullmatch(r"\+1\d{3}(\d{3})(\d{4})", phone or "")
        if not m or int(m.group(1)) not in EXCHANGES:
            return []
        base = EXCHANGES.index(int(m.group(1))) * 10_000 + int(m.group(2))
        step = len(EXCHANGES) * 10_000
        return list(range(base, self.n_profiles, step))

    def index_from_external_id(self, external_id: str) -> list[int]:
        m = re.fullmatch(r"cust_(\d{8})", external_id or "")
        return [int(m.group(1))] if m and int(m.group(1)) < self.n_profiles else []

    def profile(self, i: int) -> tuple[str, dict[str, Any]]:
        """(id, attributes) of base profile `i`."""
        ident = self._ident(i)
        first, last = ident[0], ident[1]
        r = rng(self.seed, "profile", i)
        city = CITIES[ident[3]]
        created = self.created_tl.at(i)
        updated = self.updated_tl.at(i)
        props: dict[str, Any] = {
            "plan": r.choice(PLANS),
            "loyalty_points": r.below(5000),
            "lifetime_value": round(r.uniform(0, 2500), 2),
            "vip": r.chance(0.1),
            "interests": [INTERESTS[(r.below(8) + k) % 8] for k in range(r.below(4))],
            "preferences": {"frequency": r.choice(["daily", "weekly", "monthly"]),
                            "channels": ["email"] + (["sms"] if r.chance(0.4) else []),
                            "sizes": {"top": r.choice(["S", "M", "L", "XL"]), "shoe": 36 + r.below(12)}},
            "signup_source": r.choice(["checkout", "popup", "footer", "import", "instagram"]),
        }
        if r.chance(0.3):  # a property whose type changes between profiles
            props["favorite_size"] = r.choice(["M", "L"]) if r.chance(0.5) else 8 + r.below(6)
        if r.chance(0.2):
            props["birthday"] = f"{1960 + r.below(45)}-{1 + r.below(12):02d}-{1 + r.below(28):02d}"
        if r.chance(0.15):
            props["referral_code"] = None
        attrs = {
            "email": self._email(i, ident),
            "phone_number": self._phone(i, ident),
            "external_id": f"cust_{i:08d}" if ident[6] else None,
            "first_name": first.title(),
            "last_name": last.title(),
            "organization": r.choice([None, "Acme Inc", "Globex", "Initech", "Umbrella"]),
            "locale": r.choice(["en-US", "en-US", "es-US", "fr-FR", "de-DE"]),
            "title": r.choice([None, "Engineer", "Designer", "Manager", "Founder"]),
            "image": None if r.chance(0.8) else f"https://images.example.com/avatars/{i}.png",
            "created": iso(created),
            "updated": iso(updated),
            "last_event_date": iso(updated - r.below(7) * DAY_MS) if r.chance(0.85) else None,
            "location": {
                "address1": f"{1 + r.below(999)} Main St", "address2": None if r.chance(0.7) else "Apt 4",
                "city": city[0], "country": city[2], "latitude": city[5], "longitude": city[6],
                "region": city[1], "zip": city[3], "timezone": city[4], "ip": f"203.0.113.{r.below(255)}",
            },
            "properties": props,
        }
        return self.profile_id(i), attrs

    def profile_extra(self, i: int, name: str, attrs: dict[str, Any]) -> dict[str, Any]:
        """`subscriptions` or `predictive_analytics` of profile `i` (asked for via additional-fields)."""
        return profile_extra(self.seed, i, name, attrs, [g.id for g in self.groups.get("list", ())])

    # ---- events ---------------------------------------------------------------------------------------
    # Message events carry their send in `$message` (the campaign or flow message id, of a campaign sent by
    # then) and, for flow sends, `$flow`; one Placed Order in ATTRIBUTED_SHARE carries the send it is attributed to as
    # `$attributed_message` (+ `$attributed_flow`, `$attributed_channel`). The Reporting API endpoints
    # (reports.py) aggregate these; hashes, not the event's rng, pick them, so other values stay put.
    def eligible_sends(self, channel: str, ms: int) -> int:
        """How many sends of ``channel`` an event at ``ms`` can belong to: every flow message and the
        campaigns sent by then (a prefix of ``sends[channel]``)."""
        times = self._send_times[channel]
        return len(self.sends[channel]) - len(times) + bisect.bisect_right(times, ms)

    def _send_props(self, channel: str, i: int, ms: int) -> dict[str, Any]:
        n = self.eligible_sends(channel, ms)
        if not n:
            return {}
        s = self.sends[channel][h(self.seed, f"send-{channel}", i) % n]
        return {"$message": s.message_id}

    def attribution(self, i: int, ms: int) -> dict[str, Any]:
        """The attribution properties of conversion event `i` at ``ms`` (empty for an unattributed one)."""
        n = self.eligible_sends("email", ms)
        if not n or h(self.seed, "order-attributed", i) % 100 >= ATTRIBUTED_SHARE:
            return {}
        s = self.sends["email"][h(self.seed, "order-attributed-send", i) % n]
        out = {"$attributed_message": s.message_id, "$attributed_channel": "email"}
        if s.flow_id:
            out["$attributed_flow"] = s.flow_id
        return out

    def is_late(self, i: int) -> bool:
        return i >= self.late_from and (i - self.late_from) % LATE_STRIDE == 0

    def late_indices(self) -> range:
        return range(self.late_from, self.n_events, LATE_STRIDE)

    def event_metric(self, i: int) -> int:
        return _METRIC_PICK[h(self.seed, "event-metric", i) % len(_METRIC_PICK)]

    def event_profile(self, i: int) -> int:
        return h(self.seed, "event-profile", i) % self.n_profiles

    def event_id(self, i: int) -> str:
        return encode_ulid(self.seed, "event", self.event_tl.at(i), i)

    def event_index(self, event_id: str) -> int | None:
        i = decode_ulid(self.seed, "event", event_id)
        return i if i is not None and i < self.n_events else None

    def event(self, i: int) -> dict[str, Any]:
        """Base event `i`: id, datetime (ms), metric index, profile index, properties, uuid."""
        ms = self.event_tl.at(i)
        m = self.event_metric(i)
        r = rng(self.seed, "event", i)
        name = METRICS[m][0]
        props: dict[str, Any] = {}
        if name in ("Placed Order", "Started Checkout", "Added to Cart", "Fulfilled Order"):
            items = []
            for _ in range(1 + r.below(3)):
                p = r.choice(PRODUCTS)
                q = 1 + r.below(3)
                items.append({"ProductID": p[0], "ProductName": p[1], "Quantity": q, "ItemPrice": p[2],
                              "RowTotal": round(p[2] * q, 2), "Categories": [p[3]]})
            value = round(sum(it["RowTotal"] for it in items), 2)
            props = {"value": value, "$value": value, "Items": items, "ItemNames": [it["ProductName"] for it in items],
                     "Item Count": sum(it["Quantity"] for it in items), "Currency": "USD"}
            if name in ("Placed Order", "Fulfilled Order"):
                props["OrderId"] = f"ORD-{100000 + i}"
                props["DiscountCode"] = r.choice([None, "WELCOME10", "VIP20"])
            if name == "Placed Order":
                props.update(self.attribution(i, ms))
        elif name == "Viewed Product":
            p = r.choice(PRODUCTS)
            props = {"ProductID": p[0], "ProductName": p[1], "Price": p[2], "Categories": [p[3]],
                     "URL": f"https://shop.example.com/products/{p[0].lower()}"}
        elif name == "Active on Site":
            props = {"page": r.choice(["/", "/collections/new", "/cart", "/pages/about"]),
                     "browser": r.choice(["Chrome", "Safari", "Firefox"]), "os": r.choice(["macOS", "iOS", "Android"])}
        elif name in ("Received Email", "Opened Email", "Clicked Email"):
            # Which send it belongs to: a sent email campaign's message or a flow's email message.
            n = self.eligible_sends("email", ms)
            k = r.below(n) if n else -1
            flows = len(self.sends["email"]) - len(self._send_times["email"])
            if 0 <= k < flows and h(self.seed, "flow-affinity", i) % 2 == 0:
                # Half the flow-message events go to the profile's own flow message, so a profile that
                # received one also opens and clicks it (what reports dated by send attribute to the receipt).
                k = h(self.seed, "profile-flow", self.event_profile(i)) % flows
            s = self.sends["email"][k] if k >= 0 else None
            props = {"Campaign Name": s.name if s else "Welcome", "Subject": "Our newest arrivals",
                     "$message": s.message_id if s else None, "Email Domain": r.choice(DOMAINS)}
            if s is not None and s.flow_id:
                props["$flow"] = s.flow_id
            if name == "Clicked Email":
                props["URL"] = "https://shop.example.com/collections/new?utm_source=klaviyo"
            if name == "Opened Email":
                props["machine_open"] = r.chance(0.3)
        elif name == "Sent SMS":
            props = {"Message Body": "Flash sale: 20% off today only", "Message Type": "campaign",
                     "Carrier Deliverability": r.choice(["delivered", "pending"]), "Segments": 1 + r.below(2)}
            props.update(self._send_props("sms", i, ms))
        elif name == "Received Push":
            props = {"Title": "New drop", "Platform": r.choice(["ios", "android"])}
            props.update(self._send_props("mobile_push", i, ms))
        else:
            props = {"List": LIST_NAMES[r.below(len(LIST_NAMES))], "method": "form"}
        props["$event_id"] = f"{i}"
        return {"id": self.event_id(i), "ms": ms, "metric": m, "profile": self.event_profile(i),
                "properties": props, "uuid": det_uuid(self.seed, "event-uuid", i)}

    # ---- groups ---------------------------------------------------------------------------------------
    # Membership: profile indices are cut into buckets of 10,000/share consecutive indices and each bucket
    # holds exactly one member at a hashed position, so the k-th member's index is O(1), increasing in k.
    def member_index(self, group: Group, k: int) -> int:
        """Profile index of the k-th base member of `group`."""
        start = k * 10_000 // group.share
        width = (k + 1) * 10_000 // group.share - start
        return start + h(self.seed, f"member:{group.kind}:{group.index}", k) % width

    def member_total(self, group: Group) -> int:
        """How many base members `group` has."""
        if group.share <= 0:
            return 0
        k = self.n_profiles * group.share // 10_000 + 1
        while k > 0 and self.member_index(group, k - 1) >= self.n_profiles:
            k -= 1
        return k

    def member_k(self, group: Group, i: int) -> int | None:
        """k when profile `i` is the k-th base member of `group`, else None."""
        if group.share <= 0 or i >= self.n_profiles:
            return None
        k = i * group.share // 10_000
        for cand in (k - 1, k, k + 1):
            if cand >= 0 and self.member_index(group, cand) == i:
                return cand
        return None

    def joined_ms(self, group: Group, i: int) -> int:
        return self.created_tl.at(i) + group.offset_ms

    # ---- small collections ----------------------------------------------------------------------------


# Global email suppressions of subscribed profiles beyond the unsubscribes: (reason, share in 10,000), the
# spec's EmailMarketingSuppression.reason enum; a spam complaint or a user suppression also unsubscribes.
_SUPPRESSIONS = (("HARD_BOUNCE", 300), ("SPAM_COMPLAINT", 80), ("INVALID_EMAIL", 100), ("USER_SUPPRESSED", 150))
_UNSUBSCRIBING = ("SPAM_COMPLAINT", "USER_SUPPRESSED")
_LIST_SUPPRESSION_REASONS = ("UNSUBSCRIBE", "USER_SUPPRESSED", "SPAM_COMPLAINT")


def _between(r: Any, start: str | None, end: str | None) -> str | None:
    """An ISO time in [start, end] (whole seconds), or start."""
    if not start:
        return start
    lo = int(datetime.fromisoformat(start).timestamp())
    hi = int(datetime.fromisoformat(end).timestamp()) if end else lo
    return iso((lo + r.below(max(1, hi - lo + 1))) * 1000)


def _suppressions(seed: int, i: int, attrs: dict[str, Any], email: dict[str, Any], sms: dict[str, Any],
                  list_ids: Sequence[str]) -> None:
    """Add suppressions to profile `i`'s email marketing (global and per list) and SMS opt-outs, from their
    own random stream (the other consent draws are left as they were)."""
    r = rng(seed, "profile-suppressions", i)
    created, updated = attrs.get("created"), attrs.get("updated")
    pick = r.below(10_000)
    for reason, share in _SUPPRESSIONS:
        if pick < share:
            if attrs.get("email") and email["consent"] != "NEVER_SUBSCRIBED":
                email["suppression"] = [*email["suppression"], {"reason": reason, "timestamp": _between(r, created, updated)}]
                if reason in _UNSUBSCRIBING:
                    email["consent"] = "UNSUBSCRIBED"
            break
        pick -= share
    if list_ids and attrs.get("email") and r.chance(0.04):
        chosen = sorted({list_ids[r.below(len(list_ids))] for _ in range(1 + r.below(2))})
        email["list_suppressions"] = [
            {"list_id": lid, "reason": r.choice(_LIST_SUPPRESSION_REASONS), "timestamp": _between(r, created, updated)}
            for lid in chosen
        ]
    email["can_receive_email_marketing"] = (email["consent"] == "SUBSCRIBED" and bool(attrs.get("email"))
                                            and not email["suppression"])
    if attrs.get("phone_number") and r.chance(0.08):
        # SMS has no suppression list in the spec (SMSMarketing: consent only): an opt-out is consent UNSUBSCRIBED.
        sms.update(can_receive_sms_marketing=False, consent="UNSUBSCRIBED", method="TEXT", method_detail="STOP",
                   consent_timestamp=_between(r, created, updated))


def profile_extra(seed: int, i: int, name: str, attrs: dict[str, Any],
                  list_ids: Sequence[str] = ()) -> dict[str, Any]:
    """Deterministic subscriptions / predictive analytics for profile `i` (also used for new profiles)."""
    r = rng(seed, "profile-" + name, i)
    created = attrs.get("created")
    if name == "subscriptions":
        consent = r.choice(["SUBSCRIBED", "SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED"])
        sms = r.choice(["SUBSCRIBED", "NEVER_SUBSCRIBED", "NEVER_SUBSCRIBED"]) if attrs.get("phone_number") else "NEVER_SUBSCRIBED"
        email_marketing: dict[str, Any] = {
            "can_receive_email_marketing": consent == "SUBSCRIBED" and bool(attrs.get("email")),
            "consent": consent, "consent_timestamp": created if consent != "NEVER_SUBSCRIBED" else None,
            "last_updated": created, "method": "FORM" if consent != "NEVER_SUBSCRIBED" else None,
            "method_detail": None, "custom_method_detail": None, "double_optin": r.chance(0.3),
            "suppression": [], "list_suppressions": [],
        }
        if consent == "UNSUBSCRIBED" and r.chance(0.5):
            email_marketing["suppression"] = [{"reason": "UNSUBSCRIBE", "timestamp": created}]
        sms_marketing = {"can_receive_sms_marketing": sms == "SUBSCRIBED", "consent": sms,
                         "consent_timestamp": created if sms == "SUBSCRIBED" else None,
                         "method": "TEXT" if sms == "SUBSCRIBED" else None, "method_detail": None,
                         "last_updated": created}
        _suppressions(seed, i, attrs, email_marketing, sms_marketing, list_ids)
        return {
            "email": {"marketing": email_marketing},
            "sms": {"marketing": sms_marketing,
                    "transactional": {"can_receive_sms_transactional": sms == "SUBSCRIBED", "consent": sms,
                                      "consent_timestamp": None, "method": None, "method_detail": None,
                                      "last_updated": created}},
            "mobile_push": {"marketing": {"can_receive_push_marketing": False, "consent": "NEVER_SUBSCRIBED",
                                          "consent_timestamp": None}},
        }
    orders = r.below(12)
    aov = round(r.uniform(20, 180), 2)
    return {
        "historic_clv": round(orders * aov, 2), "predicted_clv": round(r.uniform(0, 800), 2),
        "total_clv": round(orders * aov + r.uniform(0, 800), 2), "historic_number_of_orders": orders,
        "predicted_number_of_orders": round(r.uniform(0, 5), 2),
        "average_days_between_orders": round(r.uniform(10, 120), 1) if orders > 1 else None,
        "average_order_value": aov if orders else 0.0, "churn_probability": round(r.random(), 2),
        "expected_date_of_next_order": created if orders > 1 else None,
        "ranked_channel_affinity": ["email", "sms", "push"][: 1 + r.below(3)],
    }
