"""klaviyo-dagster: Dagster assets that ingest Klaviyo into a warehouse and activate warehouse tables back into Klaviyo.

Public names (imported on first use, so `klaviyo_dagster.sandbox` and the client stay light):
`KlaviyoComponent` (YAML: `dg scaffold defs klaviyo_dagster.KlaviyoComponent klaviyo`),
`DagsterKlaviyoTranslator`, `KlaviyoAssetProps`, `build_ingest_definitions`, `build_activation_definitions`,
`KlaviyoResource`, `WarehouseResource`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "KlaviyoComponent": "klaviyo_dagster.components",
    "DagsterKlaviyoTranslator": "klaviyo_dagster.translator",
    "KlaviyoAssetProps": "klaviyo_dagster.translator",
    "build_ingest_definitions": "klaviyo_dagster.factories",
    "build_activation_definitions": "klaviyo_dagster.factories",
    "KlaviyoResource": "klaviyo_dagster.resources",
    "WarehouseResource": "klaviyo_dagster.warehouse",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'klaviyo_dagster' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
