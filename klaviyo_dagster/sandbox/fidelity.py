"""Spec fidelity: record what the sandbox answers and validate it against the OpenAPI response schemas.

`ResponseRecorder` keeps, thread-safely and within a memory budget, the response bodies the sandbox sends
(every body until a key's quota is full, then a uniform sample), keyed by operation, status and query shape
(the query's parameter names plus the values of `fields[...]`, `additional-fields[...]` and `include`, the
parameters that change what a body holds), and counts all of them. A sandbox records when it is given a
recorder (`run_sandbox(recorder=...)`) or, when the environment variable `KLAVIYO_SANDBOX_RECORD=1` is
set, into the process-wide `global_recorder()` (the test suite's fidelity plugin sets it).

`SpecValidator` validates a body against its operation's response schema in the spec subset:
`operations[op]["responses"][status]` (else ``"4XX"``/``"5XX"``, else ``"default"``), `$ref`s to
`components/responses` followed, then `content["application/vnd.api+json"]["schema"]`, checked with
openapi-schema-validator's OAS 3.0 validator for responses (`OAS30ReadValidator`: `nullable`, formats
such as `date-time`) through a `referencing` registry holding the subset, so every `$ref` into
`components` resolves. Extra properties pass unless a schema forbids them. `validate_recorded` checks
everything a recorder holds and returns every violation with operation, status, JSON pointer and message.

Two readings of the spec, both because a real Klaviyo answer would fail otherwise:
- `oneOf` is checked as "at least one of": Klaviyo's spec lists channel variants without a discriminator
  whose schemas overlap (`send_options` `{"use_smart_sending": true}` is a valid Email, SMS and Push
  variant at once), so "exactly one" cannot hold for any body. A value matching none still fails.
- With a sparse fieldset (`fields[TYPE]=...` in the query) the answer carries only the asked attributes,
  so `required` is not enforced inside `attributes` for such answers (types and formats still are).

Speed: a body is first screened by jsonschema-rs (a compiled validator, ~50x faster) against the same
schemas read as plain JSON Schema (`nullable: true` as `type: [T, "null"]`, `oneOf` as `anyOf`). That
reading is never more lenient than openapi-schema-validator's (it may be stricter: `required` inside a
sparse fieldset's `attributes`, `enum` with `nullable`, formats it checks and the other does not), so a
body it passes is valid; every other body goes to openapi-schema-validator, whose verdict and messages
are the ones reported.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

__all__ = [
    "ENV_VAR",
    "FidelityReport",
    "RecordedResponse",
    "ResponseRecorder",
    "SpecValidator",
    "Violation",
    "global_recorder",
    "iter_declared_query_params",
    "recorder_from_env",
    "validate_recorded",
]

ENV_VAR = "KLAVIYO_SANDBOX_RECORD"
MEDIA_TYPE = "application/vnd.api+json"
_SUBSET_URI = "urn:klaviyo-dagster:spec-subset"
_SHAPE_PREFIXES = ("fields[", "additional-fields[", "include")


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """One recorded answer: operation key, method, status, body bytes and the query it answered."""

    op_key: str
    method: str
    status: int
    body: bytes
    query: tuple[tuple[str, tuple[str, ...]], ...]


class _Slot:
    """The bodies kept for one (op, status, shape) key: the first `per_key` distinct ones, then a sample."""

    __slots__ = ("seen", "kept", "hashes", "bytes")

    def __init__(self) -> None:
        self.seen = 0
        self.bytes = 0
        self.kept: list[RecordedResponse] = []
        self.hashes: set[int] = set()


class ResponseRecorder:
    """Thread-safe, bounded store of sandbox responses for the fidelity check.

    `per_key` / `max_key_bytes`: bodies and bytes kept per (operation, status, query shape) key (distinct
    bodies first, then a uniform reservoir sample of the rest); `max_keys`: how many keys; `max_bytes`:
    total body bytes kept. Beyond the bounds responses are only counted (`dropped` says how many).
    `counts` counts every response by (operation, status). Validation runs at about 30 MB/s (the screen; 2-4 MB/s
    for bodies it sends on to openapi-schema-validator), so the
    default bounds keep the end-of-session check within seconds to tens of seconds.
    """

    def __init__(
        self,
        per_key: int = 10,
        max_keys: int = 4096,
        max_bytes: int = 32 * 1024 * 1024,
        max_key_bytes: int = 2 * 1024 * 1024,
        seed: int = 0,
    ) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.max_key_bytes = max_key_bytes
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._slots: dict[tuple[str, int, tuple[Any, ...]], _Slot] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._bytes = 0
        self.dropped = 0

    @staticmethod
    def _shape(query: Mapping[str, Sequence[str]]) -> tuple[Any, ...]:
        return tuple(
            (name, tuple(values) if name.startswith(_SHAPE_PREFIXES) else ())
            for name, values in sorted(query.items())
        )

    def record(
        self, op_key: str, method: str, status: int, body: bytes, query: Mapping[str, Sequence[str]]
    ) -> None:
        """Record one response the sandbox sends (the whole body it means to send)."""
        body = bytes(body)
        shape = self._shape(query)
        key = (op_key, int(status), shape)
        digest = hash(body)
        with self._lock:
            pair = (op_key, int(status))
            self._counts[pair] = self._counts.get(pair, 0) + 1
            slot = self._slots.get(key)
            if slot is None:
                if len(self._slots) >= self.max_keys:
                    self.dropped += 1
                    return
                slot = self._slots[key] = _Slot()
            slot.seen += 1
            if digest in slot.hashes:
                return  # the same body is already kept: validating it again proves nothing new
            size = len(body)
            if len(slot.kept) < self.per_key and slot.bytes + size <= self.max_key_bytes:
                index = len(slot.kept)
            elif slot.kept:
                index = self._rng.randrange(slot.seen)  # reservoir: keep with probability kept/seen
                if index >= len(slot.kept):
                    return
            else:
                self.dropped += 1  # a single body larger than a key's budget
                return
            freed = len(slot.kept[index].body) if index < len(slot.kept) else 0
            if slot.bytes - freed + size > self.max_key_bytes or self._bytes - freed + size > self.max_bytes:
                self.dropped += 1
                return
            item = RecordedResponse(
                op_key, method.upper(), int(status), body, tuple((k, tuple(v)) for k, v in query.items())
            )
            if index == len(slot.kept):
                slot.kept.append(item)
            else:
                slot.hashes.discard(hash(slot.kept[index].body))
                slot.kept[index] = item
            slot.hashes.add(digest)
            slot.bytes += size - freed
            self._bytes += size - freed

    def responses(self) -> list[RecordedResponse]:
        """A snapshot of the kept responses."""
        with self._lock:
            return [item for slot in self._slots.values() for item in slot.kept]

    @property
    def counts(self) -> dict[tuple[str, int], int]:
        """Every recorded response counted by (operation key, status); a copy."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        """How many responses were recorded (kept or not)."""
        with self._lock:
            return sum(self._counts.values())

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._slots.clear()
            self._counts.clear()
            self._bytes = 0
            self.dropped = 0


_GLOBAL: ResponseRecorder | None = None
_GLOBAL_LOCK = threading.Lock()


def global_recorder() -> ResponseRecorder:
    """The process-wide recorder that sandboxes use when `KLAVIYO_SANDBOX_RECORD=1`."""
    global _GLOBAL
    with _GLOBAL_LOCK:
        if _GLOBAL is None:
            _GLOBAL = ResponseRecorder(per_key=10**9, max_keys=10**6, max_bytes=2**31, max_key_bytes=2**31)
        return _GLOBAL


def recorder_from_env() -> ResponseRecorder | None:
    """`global_recorder()` when `KLAVIYO_SANDBOX_RECORD` is 1/true/yes, else None."""
    if os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on"):
        return global_recorder()
    return None


@dataclass(frozen=True, slots=True)
class Violation:
    """One way a body breaks its schema: where (`pointer`, a JSON pointer into the body) and why."""

    op_key: str
    status: int
    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.op_key} -> {self.status} at {self.pointer or '/'}: {self.message}"


@dataclass(slots=True)
class FidelityReport:
    """What `validate_recorded` checked: bodies validated, responses recorded and every violation."""

    checked: int = 0
    recorded: int = 0
    dropped: int = 0
    operations: set[str] = field(default_factory=set)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self, limit: int = 50) -> str:
        head = (
            f"sandbox fidelity: {self.checked} distinct bodies validated out of {self.recorded} responses "
            f"recorded over {len(self.operations)} operations ({self.dropped} beyond the recorder's bounds); "
            f"{len(self.violations)} schema violations"
        )
        lines = [head] + [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)


def _plain_json_schema(node: Any) -> Any:
    """The subset's OAS 3.0 schemas read as plain JSON Schema (draft 4) for the fast screen: `nullable: true`
    beside a `type` becomes `type: [T, "null"]`, `oneOf` becomes `anyOf` (the module docstring says why)."""
    if isinstance(node, list):
        return [_plain_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _plain_json_schema(value) for key, value in node.items()}
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if isinstance(out.get("oneOf"), list):
        variants = out.pop("oneOf")
        if "anyOf" in out:
            out["allOf"] = [*out.get("allOf", []), {"anyOf": variants}]
        else:
            out["anyOf"] = variants
    return out


def _pointer(path: Sequence[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


class SpecValidator:
    """Validate response bodies against the spec subset's response schemas (see the module docstring)."""

    def __init__(self, subset: Mapping[str, Any] | None = None) -> None:
        from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4

        if subset is None:
            from klaviyo_dagster.spec import load_subset

            subset = load_subset()
        self.subset = subset
        self._registry = Registry().with_resource(
            _SUBSET_URI, Resource.from_contents(subset, default_specification=DRAFT4)
        )
        from jsonschema.validators import extend

        # "oneOf" as "anyOf" (see the module docstring); the class's own anyOf keeps nullable handling.
        self._validator_class = extend(OAS30ReadValidator, {"oneOf": OAS30ReadValidator.VALIDATORS["anyOf"]})
        self._format_checker = oas30_format_checker
        self._validators: dict[str, Any] = {}
        self._screens: dict[str, Any] = {}
        self._plain: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _resolve_response(self, response: Mapping[str, Any], pointer: str) -> tuple[Mapping[str, Any], str]:
        """Follow a response object's `$ref` into components; returns it and its JSON pointer."""
        seen = 0
        while "$ref" in response:
            ref = response["$ref"]
            if not ref.startswith("#/") or seen > 8:
                raise ValueError(f"unsupported response $ref {ref!r}")
            pointer = ref[1:]
            target: Any = self.subset
            for part in pointer[1:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            response, seen = target, seen + 1
        return response, pointer

    def schema_pointer(self, op_key: str, status: int) -> str | None:
        """JSON pointer (in the subset) of the body schema for `op_key` answering `status`.

        None when the spec declares that answer without a body (204). Raises KeyError when the spec does
        not know the operation or does not declare the status.
        """
        op = self.subset["operations"].get(op_key)
        if op is None:
            raise KeyError(f"{op_key!r} is not an operation of the spec subset")
        responses = op.get("responses", {})
        for key in (str(status), f"{status // 100}XX", "default"):
            if key in responses:
                break
        else:
            raise KeyError(f"{op_key!r} does not declare status {status} (declared: {sorted(responses)})")
        esc = op_key.replace("~", "~0").replace("/", "~1")
        response, pointer = self._resolve_response(responses[key], f"/operations/{esc}/responses/{key}")
        content = response.get("content") or {}
        if not content:
            return None
        if MEDIA_TYPE not in content or "schema" not in content[MEDIA_TYPE]:
            raise KeyError(f"{op_key!r} -> {status}: no {MEDIA_TYPE} schema in the spec")
        return f"{pointer}/content/{MEDIA_TYPE.replace('/', '~1')}/schema"

    def _validator(self, pointer: str) -> Any:
        with self._lock:
            validator = self._validators.get(pointer)
            if validator is None:
                ref = f"{_SUBSET_URI}#{quote(pointer, safe='/~')}"
                validator = self._validators[pointer] = self._validator_class(
                    {"$ref": ref}, registry=self._registry, format_checker=self._format_checker
                )
            return validator

    def screen(self, pointer: str) -> Any:
        """The jsonschema-rs validator of `pointer` over the plain JSON Schema reading (see the module docstring)."""
        import jsonschema_rs

        with self._lock:
            screen = self._screens.get(pointer)
            if screen is None:
                if self._plain is None:
                    self._plain = _plain_json_schema(self.subset)
                root = {**self._plain, "$ref": "#" + quote(pointer, safe="/~")}
                screen = self._screens[pointer] = jsonschema_rs.Draft4Validator(root, validate_formats=True)
            return screen

    def validate(
        self, op_key: str, status: int, body: bytes | str | Any, query: Mapping[str, Any] | Sequence[Any] = ()
    ) -> list[Violation]:
        """Every violation of `body` (bytes, text or parsed JSON) against its schema; [] when valid.

        `query` (a mapping or (name, values) pairs) tells whether the answer used a sparse fieldset.
        """
        try:
            pointer = self.schema_pointer(op_key, status)
        except (KeyError, ValueError) as exc:
            if op_key not in self.subset["operations"] and status >= 400:
                # An answer outside any operation (unknown path): still a JSON:API error document.
                pointer = "/components/responses/ClientError/content/application~1vnd.api+json/schema"
            else:
                return [Violation(op_key, status, "", str(exc.args[0] if exc.args else exc))]
        raw = body.encode() if isinstance(body, str) else body
        if pointer is None:
            if raw:
                return [Violation(op_key, status, "", "the spec declares no body for this answer, one was sent")]
            return []
        if isinstance(raw, (bytes, bytearray, memoryview)):
            if not raw:
                return [Violation(op_key, status, "", "empty body where the spec declares a JSON:API document")]
            try:
                document = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                return [Violation(op_key, status, "", f"body is not JSON: {exc}")]
        else:
            document = raw
        if self.screen(pointer).is_valid(document):
            return []
        names = query.keys() if isinstance(query, Mapping) else [pair[0] for pair in query]
        sparse = any(name.startswith("fields[") for name in names)
        violations = []
        for error in self._validator(pointer).iter_errors(document):
            if sparse and error.validator == "required" and "attributes" in error.absolute_path:
                continue
            message = error.message
            if error.context:
                from jsonschema.exceptions import best_match

                best = best_match(error.context)
                message += f" (closest: at {_pointer(best.absolute_path) or '/'}: {best.message})"
            violations.append(Violation(op_key, status, _pointer(error.absolute_path), message))
        return violations


def validate_recorded(recorder: ResponseRecorder, validator: SpecValidator | None = None) -> FidelityReport:
    """Validate every body `recorder` kept; the report lists every violation (op, status, pointer, message)."""
    validator = validator or SpecValidator()
    report = FidelityReport(recorded=recorder.total, dropped=recorder.dropped)
    for item in recorder.responses():
        report.checked += 1
        report.operations.add(item.op_key)
        report.violations.extend(validator.validate(item.op_key, item.status, item.body, item.query))
    return report


def iter_declared_query_params(op: Mapping[str, Any]) -> Iterator[str]:
    """The query parameter names the spec declares for one operation of the subset."""
    for name, param in op.get("parameters", {}).items():
        if param.get("in") == "query":
            yield name
