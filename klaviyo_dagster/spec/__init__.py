"""The committed subset of Klaviyo's OpenAPI spec (derived by scripts/derive_spec.py).

Read by the sandbox and by tests; the client, ingest and activate code must not read it, so that they stay
an independent reading of the contract.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SUBSET_PATH = Path(__file__).with_name("klaviyo_openapi_subset.json")


@functools.lru_cache(maxsize=1)
def load_subset() -> dict[str, Any]:
    """Return the derived spec subset (operations, parameters, limits, component schemas)."""
    return json.loads(SUBSET_PATH.read_text())
