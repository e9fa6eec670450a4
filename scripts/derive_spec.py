"""Derive the subset of Klaviyo's OpenAPI spec that this project relies on.

Reads Klaviyo's published spec (``../shared/klaviyo-openapi/stable.json`` by default) and writes
``klaviyo_dagster/spec/klaviyo_openapi_subset.json``: for each operation the package or the
sandbox uses, its parameters (schemas only), its filters (the ``x-klaviyo-filters`` extension: per field
the operators of each value form, single/list/none, and the value type; ``allowed`` is their union), the rate
limits (``x-klaviyo-ratelimit`` plus the ``additional-fields`` limits the spec states in prose),
the scopes, the request body and response schema references, and the closure of component schemas
they reference. Description prose and examples are dropped.

Run: ``python scripts/derive_spec.py [path/to/stable.json]``. The output is committed, so neither
users nor tests need the full spec.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "klaviyo-openapi" / "stable.json"
OUTPUT = ROOT / "klaviyo_dagster" / "spec" / "klaviyo_openapi_subset.json"

OPERATIONS: list[tuple[str, str]] = [
    ("get", "/api/profiles"),
    ("get", "/api/profiles/{id}"),
    ("get", "/api/events"),
    ("get", "/api/events/{id}"),
    ("get", "/api/lists"),
    ("post", "/api/lists"),
    ("get", "/api/lists/{id}"),
    ("get", "/api/lists/{id}/profiles"),
    ("get", "/api/lists/{id}/relationships/profiles"),
    ("post", "/api/lists/{id}/relationships/profiles"),
    ("delete", "/api/lists/{id}/relationships/profiles"),
    ("get", "/api/segments"),
    ("get", "/api/segments/{id}"),
    ("get", "/api/segments/{id}/profiles"),
    ("get", "/api/segments/{id}/relationships/profiles"),
    ("get", "/api/campaigns"),
    ("get", "/api/campaigns/{id}"),
    ("get", "/api/metrics"),
    ("get", "/api/metrics/{id}"),
    ("get", "/api/custom-metrics"),
    ("get", "/api/custom-metrics/{id}"),
    ("get", "/api/custom-metrics/{id}/metrics"),
    ("get", "/api/custom-metrics/{id}/relationships/metrics"),
    ("get", "/api/flows"),
    ("get", "/api/flows/{id}"),
    ("get", "/api/campaign-messages/{id}"),
    ("get", "/api/flow-actions/{id}"),
    ("get", "/api/flow-actions/{id}/flow-messages"),
    ("get", "/api/flow-messages/{id}"),
    ("get", "/api/tags"),
    ("get", "/api/tags/{id}"),
    ("get", "/api/templates"),
    ("get", "/api/templates/{id}"),
    ("get", "/api/profile-bulk-import-jobs"),
    ("post", "/api/profile-bulk-import-jobs"),
    ("get", "/api/profile-bulk-import-jobs/{job_id}"),
    ("get", "/api/profile-bulk-import-jobs/{id}/import-errors"),
    ("get", "/api/profile-bulk-import-jobs/{id}/profiles"),
    ("get", "/api/profile-bulk-import-jobs/{id}/relationships/profiles"),
    ("get", "/api/profile-bulk-import-jobs/{id}/lists"),
    ("get", "/api/profile-bulk-import-jobs/{id}/relationships/lists"),
    # activation beyond profiles and lists (issue 14): events, consent, data-privacy deletion
    ("post", "/api/events"),
    ("post", "/api/event-bulk-create-jobs"),
    ("post", "/api/profile-subscription-bulk-create-jobs"),
    ("post", "/api/profile-subscription-bulk-delete-jobs"),
    ("get", "/api/profile-suppression-bulk-create-jobs"),
    ("post", "/api/profile-suppression-bulk-create-jobs"),
    ("get", "/api/profile-suppression-bulk-create-jobs/{job_id}"),
    ("get", "/api/profile-suppression-bulk-delete-jobs"),
    ("post", "/api/profile-suppression-bulk-delete-jobs"),
    ("get", "/api/profile-suppression-bulk-delete-jobs/{job_id}"),
    ("post", "/api/data-privacy-deletion-jobs"),
    # Reporting API (issue 13): campaign and flow values, flow series (1/s, 2/m, 225/d each)
    ("post", "/api/campaign-values-reports"),
    ("post", "/api/flow-values-reports"),
    ("post", "/api/flow-series-reports"),
]

PROSE_KEYS = {"description", "example", "examples", "summary", "externalDocs"}
EXTRA_LIMIT_RE = re.compile(
    r"additional-fields\[(?P<type>[^\]]+)\]=(?P<field>[a-z_]+)`? parameter.*?"
    r"Burst: `(?P<burst>[^`]+)`<br>Steady: `(?P<steady>[^`]+)`",
    re.S,
)


def strip_prose(node: Any, in_properties: bool = False) -> Any:
    """Drop description prose and examples; keep property names even when they read 'description'."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not in_properties and key in PROSE_KEYS:
                continue
            out[key] = strip_prose(value, in_properties=(key == "properties" and not in_properties))
        return out
    if isinstance(node, list):
        return [strip_prose(v) for v in node]
    return node


def collect_refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            collect_refs(value, found)
    elif isinstance(node, list):
        for value in node:
            collect_refs(value, found)


def resolve(spec: dict, ref: str) -> Any:
    node: Any = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def filter_forms(op: dict) -> dict[str, dict]:
    """The operation's ``x-klaviyo-filters``: per field, operators per value form and the value type."""
    out: dict[str, dict] = {}
    for name, entry in (op.get("x-klaviyo-filters") or {}).items():
        forms = {form: list(ops) for form, ops in (entry.get("operators") or {}).items() if ops}
        out[name] = {"operators": forms}
        if "value" in entry:
            out[name]["value"] = strip_prose(entry["value"])
    return out


def allowed_operators(forms: dict[str, dict]) -> dict[str, list[str]]:
    """{field: [operators in any value form]}, in the order the spec lists them."""
    out: dict[str, list[str]] = {}
    for name, entry in forms.items():
        ops: list[str] = []
        for form_ops in entry["operators"].values():
            ops += [o for o in form_ops if o not in ops]
        out[name] = ops
    return out


def derive(spec: dict) -> dict:
    operations: dict[str, dict] = {}
    refs: set[str] = set()
    for method, path in OPERATIONS:
        op = spec["paths"][path][method]
        params: dict[str, dict] = {}
        for param in op.get("parameters", []):
            if "$ref" in param:
                param = resolve(spec, param["$ref"])
            entry = {
                "in": param["in"],
                "required": bool(param.get("required", False)),
                "schema": strip_prose(param.get("schema", {})),
            }
            if "explode" in param:
                entry["explode"] = param["explode"]
            if param["name"] == "filter":
                forms = filter_forms(op)
                entry["filters"] = forms
                entry["allowed"] = allowed_operators(forms)
            params[param["name"]] = entry
        ratelimit = dict(op.get("x-klaviyo-ratelimit", {}))
        extra_limits = {}
        for m in EXTRA_LIMIT_RE.finditer(op.get("description", "")):
            extra_limits[f"additional-fields[{m['type']}]={m['field']}"] = {
                "burst": m["burst"],
                "steady": m["steady"],
            }
        responses = {}
        for status, resp in op.get("responses", {}).items():
            resp_entry = strip_prose(resp)
            collect_refs(resp_entry, refs)
            responses[status] = resp_entry
        body = None
        if "requestBody" in op:
            body = strip_prose(op["requestBody"])
            collect_refs(body, refs)
        operations[f"{method.upper()} {path}"] = {
            "operationId": op["operationId"],
            "scopes": op.get("x-klaviyo-scopes", []),
            "ratelimit": ratelimit,
            "ratelimit_with": extra_limits,
            "parameters": params,
            "requestBody": body,
            "responses": responses,
        }
    # Closure of referenced components.
    components: dict[str, dict] = {}
    pending = sorted(refs)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, section, name = ref.split("/", 3)
        target = strip_prose(resolve(spec, ref))
        components.setdefault(section, {})[name] = target
        more: set[str] = set()
        collect_refs(target, more)
        pending.extend(sorted(more - seen))
    return {
        "source": "Klaviyo OpenAPI stable.json, derived by scripts/derive_spec.py",
        "revision": spec["info"]["version"],
        "openapi": spec["openapi"],
        "operations": operations,
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    }


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    spec = json.loads(source.read_text())
    subset = derive(spec)
    OUTPUT.write_text(json.dumps(subset, indent=1, sort_keys=False) + "\n")
    n_schemas = sum(len(v) for v in subset["components"].values())
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(subset['operations'])} operations, {n_schemas} components")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
