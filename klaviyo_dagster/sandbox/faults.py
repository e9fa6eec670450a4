"""Seeded, switchable fault injection for the sandbox: error statuses, resets, truncated and slow answers.

The server asks `FaultInjector.pick(op_key)` once per API request and acts on the `Fault` it gets back
(None: answer normally). Same seed and same request order: same faults.

Spec string (CLI ``--faults``, ``run_sandbox(faults=...)``, ``configure({"spec": ...})``): rules separated
by commas, each ``[OPGLOB=]KIND:WHEN[@PARAM]``:

- ``KIND``: ``429`` (with ``Retry-After``), ``500``, ``502``, ``503`` (any 4xx/5xx status is accepted),
  ``reset`` (the connection is closed without an answer), ``truncate`` (the headers promise the whole
  body, only part of it is sent, then the connection closes), ``slow`` (the answer is delayed).
  Whether the request took effect: a status fault refuses it before it is handled (nothing is written);
  ``reset`` and ``truncate`` handle it first (a write is committed: a job or list is created, then the
  answer is lost or cut short); ``slow`` waits, then handles it (the write lands even when the client
  stopped waiting). Two more kinds make the other half of each pair, for
  writes whose outcome the client cannot know: ``reset-before`` (the connection is closed before the
  request is handled: nothing is written) and ``NNN-after`` such as ``503-after`` (the request is handled,
  its write committed, and the answer replaced by that status with an error body and no resource: a
  gateway timing out on a backend that finished). With both a client sees the same thing, whatever
  happened behind it.
- ``WHEN``: a share of requests, ``0.05`` (5 %); or ``nextN``: the next N matching requests
  (``503:next3``); or ``everyK``: every Kth matching request (``429:every10``: the 10th, 20th, ...).
- ``PARAM``: for ``slow`` the delay in seconds (default 1.0); for ``429`` the ``Retry-After`` seconds
  (default 1; ``@0``: no ``Retry-After`` header at all, counted as ``429-no-retry-after``); for ``truncate`` the fraction of the body that is sent (default 0.5).
- ``OPGLOB``: optional operation key glob (fnmatch), e.g. ``GET /api/profiles`` or ``GET /api/lists*``;
  without it the rule matches every operation.

Example: ``"429:0.05,503:0.02,reset:0.01,truncate:0.01,slow:0.02@0.5"`` makes 5 % of requests 429,
2 % 503, 1 % resets, 1 % truncated and 2 % half a second late; ``"GET /api/profiles=503:next3"`` fails
the next three profile reads with 503; ``"POST /api/profile-bulk-import-jobs=503-after:next1"`` creates
the next import job and answers 503 (the job exists, the client never learns its id).

How a request is decided: scheduled rules (``next``/``every``) are tried first, in the order given; then
one number drawn from the seeded RNG (one draw per request, whatever happens) is compared with the
cumulated shares of the share rules matching the operation, in the order given (so shares of rules
matching one operation should sum to at most 1; what lies beyond 1 never fires).

At runtime: `configure(config)` (also the admin route ``POST /__sandbox/faults`` with the same JSON
body, and ``handle.faults.configure(...)``) takes a dict with any of:

- ``"spec"``: a spec string, or ``"rules"``: a list of rule dicts ``{"kind": "503", "share": 0.1 |
  "next": 3 | "every": 10, "op": "GET /api/*", "param": 0.5}``; either replaces the rules (an empty
  string or list switches faults off) unless ``"append": true``;
- ``"seed"``: restart the RNG from this seed; ``"reset_counts": true``: zero `counts`.

`counts` says how many faults of each kind (``"429"``, ``"503"``, ``"reset"``, ...) were injected.
"""

from __future__ import annotations

import fnmatch
import math
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Fault", "FaultInjector", "FaultRule", "parse_spec"]

_WHEN = re.compile(r"^(?:(?P<next>next)(?P<n>\d+)|(?P<every>every)(?P<k>\d+)|(?P<share>\d*\.?\d+(?:e-?\d+)?))$")
_DEFAULT_PARAM = {"slow": 1.0, "429": 1.0, "truncate": 0.5}
_NAMED_KINDS = ("reset", "reset-before", "truncate", "slow")
_AFTER = re.compile(r"^(\d{3})-after$")


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to inject into an answer.

    `kind`: ``status`` (answer `status` with a JSON:API error body; for 429 add ``Retry-After:
    retry_after``), ``reset`` (close the connection without answering), ``truncate`` (send the headers
    with the full Content-Length and only the first `fraction` of the body, then close), ``slow`` (sleep
    `delay` seconds, then answer normally). `label` is the rule's kind as written (``"503"``, ``"slow"``).
    `after_write`: the request is handled (its write committed) before the fault acts; status and reset
    faults set it from their kind (``503-after``; ``reset``, while ``reset-before`` does not), truncate
    and slow always act after handling.
    """

    kind: str
    label: str
    status: int | None = None
    delay: float = 0.0
    retry_after: int = 1
    fraction: float = 0.5
    after_write: bool = False


@dataclass(slots=True)
class FaultRule:
    """One rule: `kind` (``"429"``, ``"503"``, ``"reset"``, ...), exactly one of `share`, `next`, `every`,
    an optional `op` glob and an optional `param` (delay, Retry-After or kept fraction)."""

    kind: str
    share: float | None = None
    next: int | None = None
    every: int | None = None
    op: str | None = None
    param: float | None = None
    seen: int = 0  # matching requests so far (for `every`)

    def __post_init__(self) -> None:
        self.kind = str(self.kind).strip().lower()
        after = _AFTER.match(self.kind)
        status = after.group(1) if after else self.kind
        if self.kind not in _NAMED_KINDS and not (status.isdigit() and 400 <= int(status) <= 599):
            raise ValueError(
                f"fault kind {self.kind!r} is not a 4xx/5xx status (429, 500, 502, 503; NNN-after such as "
                f"503-after answers it once the write is committed) nor one of {', '.join(_NAMED_KINDS)}"
            )
        whens = [w for w in (self.share, self.next, self.every) if w is not None]
        if len(whens) != 1:
            raise ValueError(f"fault rule {self.kind!r} needs exactly one of share, next, every")
        if self.share is not None and not 0.0 <= float(self.share) <= 1.0:
            raise ValueError(f"fault share {self.share!r} for {self.kind!r} must lie in [0, 1] (0.05 means 5 %)")
        if self.next is not None and int(self.next) < 0:
            raise ValueError(f"fault rule {self.kind!r}: next must be >= 0, got {self.next!r}")
        if self.every is not None and int(self.every) < 1:
            raise ValueError(f"fault rule {self.kind!r}: every must be >= 1, got {self.every!r}")
        if self.param is not None:
            self.param = float(self.param)
            if self.param < 0 or (self.kind == "truncate" and self.param >= 1):
                raise ValueError(
                    f"fault parameter {self.param!r} for {self.kind!r} is out of range "
                    "(seconds >= 0; for truncate a fraction in [0, 1))"
                )
        if self.op is not None and not str(self.op).strip():
            self.op = None

    def matches(self, op_key: str) -> bool:
        return self.op is None or fnmatch.fnmatchcase(op_key, self.op)

    def fault(self) -> Fault:
        base_kind = self.kind[:-len("-after")] if _AFTER.match(self.kind) else self.kind
        param = self.param if self.param is not None else _DEFAULT_PARAM.get(base_kind, 0.0)
        if self.kind == "slow":
            return Fault(kind="slow", label="slow", delay=param)
        if self.kind == "truncate":
            return Fault(kind="truncate", label="truncate", fraction=param)
        if self.kind in ("reset", "reset-before"):
            return Fault(kind="reset", label=self.kind, after_write=self.kind == "reset")
        after = _AFTER.match(self.kind)
        status = int(after.group(1) if after else self.kind)
        if status == 429 and param == 0:  # a 429 without Retry-After: the client must pick its own wait
            return Fault(kind="status", label="429-no-retry-after", status=429, retry_after=0,
                         after_write=bool(after))
        retry_after = max(1, math.ceil(param)) if status == 429 else 1
        return Fault(kind="status", label=self.kind, status=status, retry_after=retry_after, after_write=bool(after))

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "seen"}


def parse_spec(spec: str) -> list[FaultRule]:
    """Parse a spec string (see the module docstring) into rules; a clear ValueError when malformed."""
    rules: list[FaultRule] = []
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        op = None
        if "=" in item:
            op, _, item = item.partition("=")
            op = op.strip()
        kind, sep, rest = item.partition(":")
        when, _, param = rest.partition("@")
        match = _WHEN.match(when.strip()) if sep else None
        if not match:
            raise ValueError(
                f"fault rule {raw.strip()!r} is not [OPGLOB=]KIND:WHEN[@PARAM], with WHEN a share (0.05), "
                "nextN or everyK; e.g. '503:0.02', 'slow:0.1@0.5', 'GET /api/profiles=429:next3'"
            )
        try:
            param_value = float(param) if param.strip() else None
        except ValueError:
            raise ValueError(f"fault rule {raw.strip()!r}: parameter {param!r} is not a number") from None
        rules.append(
            FaultRule(
                kind=kind,
                share=float(match["share"]) if match["share"] else None,
                next=int(match["n"]) if match["next"] else None,
                every=int(match["k"]) if match["every"] else None,
                op=op,
                param=param_value,
            )
        )
    return rules


def _rules_from(config: Mapping[str, Any]) -> list[FaultRule] | None:
    if "spec" in config and "rules" in config:
        raise ValueError("fault config: give either 'spec' or 'rules', not both")
    if "spec" in config:
        return parse_spec(config["spec"] or "")
    if "rules" in config:
        rules = config["rules"] or []
        if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
            raise ValueError("fault config: 'rules' must be a list of objects like {'kind': '503', 'share': 0.1}")
        allowed = {"kind", "share", "next", "every", "op", "param"}
        built = []
        for rule in rules:
            unknown = set(rule) - allowed
            if unknown:
                raise ValueError(f"fault rule {dict(rule)!r}: unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
            if "kind" not in rule:
                raise ValueError(f"fault rule {dict(rule)!r} has no 'kind' (e.g. '503', 'reset', 'slow')")
            built.append(FaultRule(**rule))
        return built
    return None


class FaultInjector:
    """Decides, per request, whether and how to fail it. Thread-safe; deterministic for a seed.

    `FaultInjector(seed=0, spec=None)`: `spec` is a spec string, a config dict (see `configure`) or None
    (no faults). `pick(op_key)` -> `Fault | None`; `counts` -> faults injected by kind.
    """

    def __init__(self, seed: int = 0, spec: str | Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._counts: dict[str, int] = {}
        self._requests = 0
        if isinstance(spec, str):
            self.configure({"spec": spec})
        elif spec is not None:
            self.configure(spec)

    def configure(self, config: Mapping[str, Any]) -> None:
        """Change the rules, seed or counters at runtime (keys: spec | rules, append, seed, reset_counts).

        Raises ValueError (nothing changed) when the config is malformed.
        """
        if not isinstance(config, Mapping):
            raise ValueError("fault config must be a JSON object, e.g. {\"spec\": \"503:0.1\"}")
        unknown = set(config) - {"spec", "rules", "append", "seed", "reset_counts"}
        if unknown:
            raise ValueError(
                f"fault config: unknown keys {sorted(unknown)}; allowed: spec, rules, append, seed, reset_counts"
            )
        rules = _rules_from(config)
        seed = config.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"fault config: seed must be an integer, got {seed!r}")
        with self._lock:
            if rules is not None:
                self._rules = (self._rules + rules) if config.get("append") else rules
            if seed is not None:
                self._seed = seed
                self._rng = random.Random(seed)
            if config.get("reset_counts"):
                self._counts = {}
                self._requests = 0

    def clear(self) -> None:
        """Switch every fault off (counts are kept)."""
        self.configure({"rules": []})

    def fail_next(self, n: int, kind: str | int = 503, op: str | None = None, param: float | None = None) -> None:
        """Add a rule failing the next `n` requests (to operations matching `op`) with `kind`."""
        self.configure({"rules": [{"kind": str(kind), "next": n, "op": op, "param": param}], "append": True})

    def pick(self, op_key: str) -> Fault | None:
        """Decide the fault (or None) for one request to `op_key`, e.g. ``"GET /api/profiles"``."""
        with self._lock:
            self._requests += 1
            roll = self._rng.random()
            chosen: FaultRule | None = None
            for rule in self._rules:
                if rule.share is not None or not rule.matches(op_key):
                    continue
                if rule.every is not None:
                    # Every matching request counts, whether or not an earlier rule fires.
                    rule.seen += 1
                    if chosen is None and rule.seen % rule.every == 0:
                        chosen = rule
                elif chosen is None and rule.next:
                    rule.next -= 1
                    chosen = rule
            if chosen is None:
                cumulated = 0.0
                for rule in self._rules:
                    if rule.share is None or not rule.matches(op_key):
                        continue
                    cumulated += rule.share
                    if roll < cumulated:
                        chosen = rule
                        break
            if chosen is None:
                return None
            fault = chosen.fault()
            self._counts[fault.label] = self._counts.get(fault.label, 0) + 1
            return fault

    @property
    def counts(self) -> dict[str, int]:
        """Faults injected so far by kind (``{"503": 2, "reset": 1}``); a copy."""
        with self._lock:
            return dict(self._counts)

    @property
    def seed(self) -> int:
        return self._seed

    def snapshot(self) -> dict[str, Any]:
        """State for the admin stats route: seed, rules (with what is left of `next`), counts, requests."""
        with self._lock:
            return {
                "seed": self._seed,
                "rules": [rule.describe() for rule in self._rules],
                "counts": dict(self._counts),
                "requests": self._requests,
            }
