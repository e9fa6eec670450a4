"""The operations the sandbox serves (every operation of the spec subset) and their path patterns.

`OPERATIONS` is the tuple of op keys ("GET /api/profiles", ...); `match(method, path)` resolves a request
path (with or without trailing slash) to (op_key, path ids), or raises ApiError 404/405.
"""

from __future__ import annotations

import re
from typing import Any

from klaviyo_dagster.sandbox.params import ApiError
from klaviyo_dagster.spec import load_subset


def _compile(operations: Any) -> list[tuple[re.Pattern[str], str, str]]:
    routes = []
    for op_key in operations:
        method, template = op_key.split(" ", 1)
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        routes.append((re.compile(f"^{pattern}$"), method, op_key))
    return routes


OPERATIONS: tuple[str, ...] = tuple(load_subset()["operations"])
_ROUTES = _compile(OPERATIONS)


def match(method: str, path: str) -> tuple[str, dict[str, str]]:
    """(op_key, path ids) for a request, or ApiError 404 (unknown path) / 405 (known path, other method)."""
    norm = path.rstrip("/") or "/"
    methods = []
    for pattern, m, op_key in _ROUTES:
        found = pattern.match(norm)
        if found:
            if m == method:
                return op_key, found.groupdict()
            methods.append(m)
    if methods:
        allowed = ", ".join(sorted(set(methods)))
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}; allowed: {allowed}",
                       headers={"Allow": allowed})
    raise ApiError(404, "not_found", f"no endpoint at {path}; Klaviyo endpoints live under /api/ "
                   "(e.g. /api/profiles/)")


def op_key_or_unmatched(method: str, path: str) -> str:
    """The op key for recording purposes: the matched operation, else "UNMATCHED"."""
    try:
        return match(method, path)[0]
    except ApiError:
        return "UNMATCHED"
