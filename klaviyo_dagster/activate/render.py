"""Render warehouse rows into Klaviyo profile resources for bulk import.

A :class:`ProfileColumns` names the identifier columns of the input table; :func:`build_render_plan`
maps every column once to its place in the profile (identifier, standard attribute, location field,
custom property, or excluded), and :func:`render_profile` turns one row into
``{"type": "profile", "id"?: ..., "attributes": {...}}`` with nulls omitted (a null in a bulk import
does not clear a field in Klaviyo, so it is never sent).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

STANDARD_ATTRIBUTES = ("first_name", "last_name", "organization", "locale", "title", "image")
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "latitude",
    "longitude",
    "ip",
)
# Klaviyo attributes that must be strings (identifiers and standard attributes).
_STRING_KINDS = {"email", "phone_number", "external_id", "id", "attribute"}


@dataclass(frozen=True)
class ProfileColumns:
    """Names of the identifier columns in a profiles (or audience) table; None disables one."""

    email: str | None = "email"
    phone_number: str | None = "phone_number"
    external_id: str | None = "external_id"
    profile_id: str | None = "klaviyo_profile_id"
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def identifier_columns(self, available: Sequence[str]) -> dict[str, str]:
        """{kind: column} for the identifier columns present in ``available``."""
        kinds = {
            "external_id": self.external_id,
            "email": self.email,
            "phone_number": self.phone_number,
            "id": self.profile_id,
        }
        return {k: c for k, c in kinds.items() if c and c in available}


@dataclass(frozen=True)
class RenderPlan:
    """Where each column of the input goes: (column, kind, key) with kind in
    id | email | phone_number | external_id | attribute | location | properties_json | property."""

    targets: tuple[tuple[str, str, str], ...]

    @property
    def columns(self) -> list[str]:
        return [c for c, _, _ in self.targets]

    def signature(self) -> str:
        """A stable description of the mapping; part of the content hash, so a mapping change resends."""
        return orjson.dumps(self.targets).decode()


def build_render_plan(columns: Sequence[str], mapping: ProfileColumns) -> RenderPlan:
    """Decide once per table where each column lands in the rendered profile."""
    ids = {c: k for k, c in mapping.identifier_columns(columns).items()}
    targets: list[tuple[str, str, str]] = []
    for col in columns:
        if col in mapping.exclude or col.startswith("__"):
            continue
        if col in ids:
            targets.append((col, ids[col], ids[col]))
        elif col in STANDARD_ATTRIBUTES:
            targets.append((col, "attribute", col))
        elif col.startswith("location_") and col[len("location_") :] in LOCATION_FIELDS:
            targets.append((col, "location", col[len("location_") :]))
        elif col in LOCATION_FIELDS:
            targets.append((col, "location", col))
        elif col == "properties":
            targets.append((col, "properties_json", col))
        else:
            targets.append((col, "property", col))
    return RenderPlan(tuple(targets))


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value) or math.isinf(value)
    # pandas.NA / NaT and numpy NaN without importing pandas here.
    try:
        return bool(value != value)  # NaN-like values are unequal to themselves
    except (TypeError, ValueError):
        return False


def to_json_value(value: Any) -> Any:
    """Convert a warehouse value (numpy, pandas, Decimal, datetime, nested) to plain JSON types."""
    if _is_null(value):
        return None
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        out = {str(k): to_json_value(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return to_json_value(item())
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy arrays (DuckDB LIST columns)
        value = value.tolist()
    if isinstance(value, list | tuple | set):
        return [to_json_value(v) for v in value]
    return str(value)


def _as_string(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def render_profile(row: Mapping[str, Any], plan: RenderPlan) -> dict[str, Any]:
    """One input row -> a Klaviyo profile resource for a bulk import job (nulls omitted)."""
    attributes: dict[str, Any] = {}
    location: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    profile_id: str | None = None
    for col, kind, key in plan.targets:
        value = to_json_value(row.get(col))
        if value is None or (isinstance(value, str) and kind in _STRING_KINDS and not value.strip()):
            continue
        if kind in _STRING_KINDS:
            value = _as_string(value).strip()
        if kind == "id":
            profile_id = value
        elif kind in ("email", "phone_number", "external_id", "attribute"):
            attributes[key] = value
        elif kind == "location":
            location[key] = value if key in ("latitude", "longitude") else _as_string(value)
        elif kind == "properties_json":
            if isinstance(value, str):
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError:
                    value = {"properties": value}
            if isinstance(value, dict):
                properties.update(value)
        else:
            properties[key] = value
    if location:
        attributes["location"] = location
    if properties:
        attributes["properties"] = properties
    resource: dict[str, Any] = {"type": "profile"}
    if profile_id is not None:
        resource["id"] = profile_id
    resource["attributes"] = attributes
    return resource


def frame_rows(frame: Any) -> Iterator[dict[str, Any]]:
    """Rows of a pandas DataFrame as dicts of plain Python values (faster than ``to_dict("records")``)."""
    columns = [str(c) for c in frame.columns]
    for values in zip(*(frame[c].tolist() for c in frame.columns), strict=True):
        yield dict(zip(columns, values, strict=True))


def profile_identifiers(profile: Mapping[str, Any]) -> dict[str, str]:
    """The identifiers a rendered profile (or an import error's original_payload) carries."""
    attrs = profile.get("attributes") if isinstance(profile.get("attributes"), Mapping) else profile
    out: dict[str, str] = {}
    pid = profile.get("id")
    if isinstance(pid, str) and pid:
        out["id"] = pid
    for key in ("email", "phone_number", "external_id"):
        value = attrs.get(key) if isinstance(attrs, Mapping) else None
        if isinstance(value, str) and value:
            out[key] = value.strip().lower() if key == "email" else value.strip()
    return out
