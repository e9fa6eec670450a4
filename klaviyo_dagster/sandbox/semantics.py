"""Switches for the behaviours Klaviyo leaves open: one registry, one value per switch per sandbox.

Where Klaviyo's spec and docs do not say what happens (a list add naming an unknown profile id, an
invalid row in a bulk import, ...), the sandbox offers every plausible answer as a switch, so the package
can be tested under each. Every switch has a name, its plausible values, a default (the strictest
plausible answer, so a package tested against the default meets the hardest case), and a note saying what
is known and what is not.

    run_sandbox(semantics={"list_add_unknown_id": "ignore"})     # or "list_add_unknown_id=ignore,k=v"
    handle.set_semantics("import_invalid_row=job_error")           # returns the previous values
    with handle.semantics_override(identity_conflict="merge"): ...
    klaviyo-dagster sandbox --semantics import_job_seconds=30
    POST /__sandbox/semantics {"identity_conflict": "merge"}   (GET shows the current values)

Unknown names and values raise ValueError (a 400 on the admin route) naming the switch and its values.
Other sandbox modules read a value with `semantics.get(name)`; `register(Switch(...))` adds a switch.
`switch_table_markdown()` renders the README table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SWITCHES", "Semantics", "Switch", "parse_semantics", "plausible_values", "register",
           "switch_table_markdown"]


@dataclass(frozen=True)
class Switch:
    """One open behaviour. `values` lists the plausible answers (None: free-form, checked by `convert`)."""

    name: str
    default: str
    known: str
    unknown: str
    values: tuple[str, ...] | None = None
    convert: Callable[[str], Any] | None = None  # raw string -> value; raises ValueError when invalid
    value_doc: str = ""  # how the values read in docs when `values` is None, e.g. "<seconds>"
    test_values: tuple[str, ...] = field(default=())  # values tests should cover when `values` is None

    def parse(self, raw: Any) -> Any:
        text = str(raw).strip()
        if self.values is not None:
            if text not in self.values:
                raise ValueError(f"semantics switch {self.name!r} takes {'|'.join(self.values)}, got {text!r}")
            return text
        assert self.convert is not None
        try:
            return self.convert(text)
        except ValueError as e:
            raise ValueError(f"semantics switch {self.name!r} takes {self.value_doc}, got {text!r}: {e}") from None

    def describe_values(self) -> str:
        return "|".join(self.values) if self.values is not None else self.value_doc


SWITCHES: dict[str, Switch] = {}


def register(switch: Switch) -> Switch:
    """Add a switch to the registry (its default must parse)."""
    switch.parse(switch.default)
    SWITCHES[switch.name] = switch
    return switch


def parse_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("a non-negative number of seconds")
    return value


register(Switch(
    "list_add_unknown_id", "400", values=("400", "ignore"),
    known="POST/DELETE /api/lists/{id}/relationships/profiles take up to 1,000 profile ids and answer 204.",
    unknown="What a call naming a profile id that does not exist (merged, deleted, never there) does: "
            "400 for the whole call (pointer `/data`, no row named) or 204 ignoring that id."))
register(Switch(
    "import_invalid_row", "request_400",
    values=("request_400", "request_400_first", "request_400_no_pointer", "job_error"),
    known="A public connector's recorded fixture shows the whole POST /api/profile-bulk-import-jobs "
          "answered 400 with `source.pointer` `/data/attributes/profiles/data/N/attributes/email`; the spec "
          "also has per-row import errors (GET .../import-errors, with `original_payload`).",
    unknown="Which of the two happens when, and whether a 400 names every bad row: `request_400` one "
            "error per bad row, `request_400_first` only the first, `request_400_no_pointer` a 400 with no "
            "row pointer, `job_error` 202 and the row reported as an import error."))
register(Switch(
    "identity_conflict", "error", values=("error", "merge"),
    known="Klaviyo's profile endpoints answer 409 `duplicate_profile` when identifiers (id, email, phone, "
          "external id) point at different existing profiles.",
    unknown="What a bulk import row does then: `error` the row fails (import error `duplicate_profile`, "
            "or a 400 pointing at it when import_invalid_row is a request_400 form), `merge` the first "
            "matching profile (id, email, phone, external id) takes the row's identifiers."))
register(Switch(
    "unknown_import_id", "error", values=("error", "create"),
    known="A bulk import row may carry `id` to update a known profile.",
    unknown="A row whose `id` names no profile: `error` the row fails (import error `not_found`), `create` "
            "the id is ignored and the row is identified by its other identifiers (created if none match)."))
register(Switch(
    "import_error_payload", "null", values=("null", "original"),
    known="Each import error of GET /api/profile-bulk-import-jobs/{id}/import-errors has `original_payload` "
          "in the spec.",
    unknown="Whether it is filled: peers report errors with a null `original_payload` (or identifiers "
            "normalised by Klaviyo), which match no row; `null` sends null, `original` the row as sent."))
register(Switch(
    "import_job_total_count", "posted", values=("posted", "valid"),
    known="A bulk import job has `total_count`, `completed_count` and `failed_count`; GET "
          "/api/profile-bulk-import-jobs lists jobs (sort by `created_at`, filter on `status`).",
    unknown="What `total_count` counts when the job holds rows refused at submission: `posted` every "
            "profile of the POST, `valid` only those accepted for processing (a client finding its job by "
            "total_count after a lost answer must not rely on one reading)."))
register(Switch(
    "import_job_seconds", "0.3", convert=parse_seconds, value_doc="<seconds>", test_values=("0.3", "4"),
    known="Bulk import jobs go queued -> processing -> complete; the spec gives no duration.",
    unknown="How long a job takes: seconds to many minutes on a busy account. The job completes this many "
            "seconds (plus 1 ms per 20 profiles) after creation; the default is short to keep tests fast, "
            "set it above your `max_wait_s` to test waiting."))


register(Switch(
    "ratelimit_header_form", "combined", values=("combined", "policy", "bare"),
    known="Answers under the limit carry RateLimit-Limit/-Remaining/-Reset; a public client's logs show "
          "`RateLimit-Limit: 10, 10;w=1, 150;w=60`; Klaviyo's docs also show the `n;w=s` policy form and a "
          "bare number.",
    unknown="Which form an endpoint sends when: `combined` the logged form (the tightest window's limit, "
            "then every window's policy), `policy` only the tightest window's `n;w=s`, `bare` only its limit."))
register(Switch(
    "ratelimit_l_steady", "750", values=("750", "700"),
    known="The 2026-07-15 spec gives the L tier (profiles, lists, segments, templates, members) 75/s and "
          "750/m; Klaviyo's rate-limit guide lists L as 75/s, 700/m.",
    unknown="Which one Klaviyo enforces: `750` the spec (the ground truth the sandbox is built from), `700` "
            "the guide. A client that paces by its own table at 750/m meets 429s under `700` unless it adopts "
            "the server's RateLimit-Limit."))


def parse_semantics(spec: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """`"k=v,k=v"` or a mapping -> {name: parsed value}; ValueError naming the problem for anything unknown."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        items: list[tuple[str, Any]] = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"semantics {part!r} is not NAME=VALUE; switches: {_names()}")
            items.append((name.strip(), value.strip()))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        raise ValueError(f"semantics must be 'k=v,k=v' or a mapping, got {type(spec).__name__}")
    out: dict[str, Any] = {}
    for name, value in items:
        switch = SWITCHES.get(str(name))
        if switch is None:
            raise ValueError(f"unknown semantics switch {name!r}; switches: {_names()}")
        out[switch.name] = switch.parse(value)
    return out


def _names() -> str:
    return ", ".join(f"{s.name}={s.describe_values()}" for s in SWITCHES.values())


def plausible_values(name: str) -> tuple[str, ...]:
    """The values a test should run the package under for switch `name`."""
    switch = SWITCHES[name]
    return switch.values if switch.values is not None else switch.test_values or (switch.default,)


class Semantics:
    """The current value of every switch for one sandbox (thread-safe)."""

    def __init__(self, spec: str | Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.set(spec)

    def get(self, name: str) -> Any:
        with self._lock:
            if name in self._values:
                return self._values[name]
        switch = SWITCHES.get(name)
        if switch is None:
            raise KeyError(f"unknown semantics switch {name!r}; switches: {_names()}")
        return switch.parse(switch.default)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def set(self, spec: str | Mapping[str, Any] | None) -> dict[str, Any]:
        """Apply changes (all or none); returns the previous values of the switches changed."""
        changes = parse_semantics(spec)
        with self._lock:
            previous = {k: self._values.get(k, SWITCHES[k].parse(SWITCHES[k].default)) for k in changes}
            self._values.update(changes)
            listeners = list(self._listeners)
        for fn in listeners:
            fn(dict(changes))
        return previous

    def reset(self) -> None:
        """Every switch back to its default."""
        with self._lock:
            self._values.clear()
            listeners = list(self._listeners)
        for fn in listeners:
            fn({})

    def snapshot(self) -> dict[str, Any]:
        """{name: current value} for every registered switch."""
        return {name: self.get(name) for name in SWITCHES}

    def subscribe(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call `fn(changes)` after every set/reset (for switches a component caches)."""
        with self._lock:
            self._listeners.append(fn)


def switch_table_markdown() -> str:
    """The README table of switches (every module's: the server imports all that register one)."""
    import klaviyo_dagster.sandbox.server  # noqa: F401
    lines = ["| switch | values | default | known | unknown (what the values cover) |", "|---|---|---|---|---|"]
    for s in SWITCHES.values():
        lines.append(f"| `{s.name}` | `{s.describe_values()}` | `{s.default}` | {s.known} | {s.unknown} |")
    return "\n".join(lines)
