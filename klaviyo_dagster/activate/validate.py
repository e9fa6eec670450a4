"""Validate rendered profiles before they are sent: identifiers, email syntax, E.164 phones, size.

Each check returns a short reason string (None when the profile is fine); the reason lands in the
outcome log next to the row's identity, so a reader can fix the source table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# Klaviyo's documented per-profile limit in a bulk import job.
MAX_PROFILE_BYTES = 100 * 1024


# A strict subset of RFC 5322 dot-atom local parts: plain ASCII, no leading/trailing/double dots.
_SIMPLE_LOCAL = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*")


@lru_cache(maxsize=4096)
def _domain_problem(domain: str) -> str | None:
    try:
        validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def email_problem(email: str) -> str | None:
    """Why ``email`` is not a syntactically valid address (no DNS lookups), or None.

    email-validator decides; a plain ASCII local part only needs its domain checked, once per domain
    (the full check costs ~0.1 ms an address, most of it on the domain).
    """
    local, at, domain = email.rpartition("@")
    if at and len(local) <= 64 and len(email) <= 254 and _SIMPLE_LOCAL.fullmatch(local):
        reason = _domain_problem(domain)
        return None if reason is None else f"invalid email {email!r}: {reason}"
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"invalid email {email!r}: {exc}"
    return None


def phone_problem(phone: str) -> str | None:
    """Why ``phone`` is not a valid E.164 number (e.g. +14155552671), or None."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException as exc:
        return f"invalid phone_number {phone!r}: not E.164 ({exc}); write it as +<country code><number>"
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(parsed):
        return f"invalid phone_number {phone!r}: not a valid number for its country code"
    if e164 != phone:
        return f"invalid phone_number {phone!r}: not in E.164 form; send {e164}"
    return None


def profile_problem(profile: Mapping[str, Any], size_bytes: int) -> str | None:
    """Why a rendered profile must not be sent, or None. ``size_bytes`` is its serialized size."""
    attrs = profile.get("attributes", {})
    if not (profile.get("id") or attrs.get("email") or attrs.get("phone_number") or attrs.get("external_id")):
        return "no identifier: a profile needs an email, phone_number, external_id or Klaviyo profile id"
    email = attrs.get("email")
    if email is not None:
        reason = email_problem(email)
        if reason:
            return reason
    phone = attrs.get("phone_number")
    if phone is not None:
        reason = phone_problem(phone)
        if reason:
            return reason
    return size_problem(size_bytes)


def size_problem(size_bytes: int) -> str | None:
    """Why a profile of ``size_bytes`` serialized bytes is too large for a bulk import, or None."""
    if size_bytes > MAX_PROFILE_BYTES:
        return (
            f"profile is {size_bytes} bytes, over Klaviyo's {MAX_PROFILE_BYTES}-byte per-profile limit; "
            "drop or shorten custom properties"
        )
    return None
