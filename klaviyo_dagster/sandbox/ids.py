"""Deterministic hashing, a tiny fast PRNG, and Klaviyo-looking ids for the sandbox.

Every generated value is a pure function of (seed, kind, index), so any record can be rebuilt on demand.
Long ids (profiles, events, campaigns, jobs) are 26-character ULIDs: a 48-bit millisecond timestamp,
then 80 bits that carry the (masked) index and a check value, so `decode_ulid` maps an id back to its
index in O(1) and rejects ids the sandbox never issued. Short ids (lists, metrics, flows, ...) are
6-character base62 strings.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_M64 = (1 << 64) - 1
_M40 = (1 << 40) - 1
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_RE = re.compile(f"[{CROCKFORD}]{{26}}")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def mix(x: int) -> int:
    """SplitMix64 finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=4096)
def tag(text: str) -> int:
    """A stable 64-bit number for a short label (no dependence on PYTHONHASHSEED)."""
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & _M64
    return h


@functools.lru_cache(maxsize=4096)
def _kind_key(seed: int, kind: str) -> int:
    return mix(seed ^ tag(kind))


def h(seed: int, kind: str, index: int, salt: int = 0) -> int:
    """Hash of (seed, kind, index, salt)."""
    return mix(_kind_key(seed, kind) ^ mix(index * 0x9E3779B1 + salt))


class Rng:
    """A small deterministic generator (SplitMix64 stream); far cheaper to create than random.Random."""

    __slots__ = ("state",)

    def __init__(self, state: int) -> None:
        self.state = state & _M64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def random(self) -> float:
        return (self.next() >> 11) / 9007199254740992.0

    def chance(self, p: float) -> bool:
        return self.random() < p

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.next() % len(seq)]

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()


def rng(seed: int, kind: str, index: int) -> Rng:
    """The generator for record `index` of `kind`."""
    return Rng(h(seed, kind, index))


_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CROCKFORD)
_FROM_CROCKFORD = str.maketrans(CROCKFORD, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


@functools.lru_cache(maxsize=256)
def _mask(seed: int, kind: str) -> int:
    return h(seed, kind + ":mask", 0) & _M40


def encode_ulid(seed: int, kind: str, ms: int, index: int) -> str:
    """A ULID whose time part is `ms` and whose random part encodes `index` (see `decode_ulid`)."""
    check = h(seed, kind + ":check", index) & _M40
    value = ((ms & ((1 << 48) - 1)) << 80) | (check << 40) | ((index ^ _mask(seed, kind)) & _M40)
    # 160 bits -> 32 base32 digits; the first 6 encode the 30 leading zero bits.
    return base64.b32encode(value.to_bytes(20, "big")).decode()[6:].translate(_TO_CROCKFORD)


def decode_ulid(seed: int, kind: str, text: str) -> int | None:
    """The index encoded in a ULID issued by `encode_ulid` for this seed and kind, else None."""
    if len(text) != 26 or not _ULID_RE.fullmatch(text):
        return None
    value = int.from_bytes(base64.b32decode("AAAAAA" + text.translate(_FROM_CROCKFORD)), "big")
    index = (value ^ _mask(seed, kind)) & _M40
    if (value >> 40) & _M40 != h(seed, kind + ":check", index) & _M40:
        return None
    return index


def short_id(seed: int, kind: str, index: int, length: int = 6) -> str:
    """A base62 id such as Klaviyo's list or metric ids ("Y6nRLr")."""
    value = h(seed, kind + ":short", index)
    out = []
    for _ in range(length):
        out.append(BASE62[value % 62])
        value //= 62
    return "".join(out)


def det_uuid(seed: int, kind: str, index: int) -> str:
    """A deterministic UUID (version 4 layout)."""
    value = (h(seed, kind, index, 1) << 64) | h(seed, kind, index, 2)
    return str(uuid.UUID(int=value, version=4))
