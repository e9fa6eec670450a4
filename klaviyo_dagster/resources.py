"""KlaviyoResource: the Dagster resource that configures and hands out a KlaviyoClient.

Pass the key as ``EnvVar("KLAVIYO_API_KEY")``: Dagster then stores and displays only the variable's name
(``{"env": "KLAVIYO_API_KEY"}``) in run config and the UI, and reads the value in the run's process. A
literal string would be shown in the UI's resource view, so never pass one. Left unset, the key and the
base URL are read from ``KLAVIYO_API_KEY`` / ``KLAVIYO_BASE_URL`` when a client is made.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from klaviyo_dagster.client import DEFAULT_BASE_URL, DEFAULT_REVISION, KlaviyoClient

# The Dagster concurrency pool every asset that calls Klaviyo joins: Klaviyo's limits are per account and
# endpoint, so concurrent runs must not multiply the load (set its limit in dagster.yaml).
KLAVIYO_POOL = "klaviyo_api"


class KlaviyoResource(ConfigurableResource):
    """Klaviyo API access for assets: ``with klaviyo.get_client(context.log) as client: ...``."""

    api_key: str | None = Field(
        default=None,
        description="Private API key (pk_...). Pass EnvVar('KLAVIYO_API_KEY'); unset reads that variable.",
    )
    base_url: str | None = Field(
        default=None,
        description=f"API root; unset reads KLAVIYO_BASE_URL, else {DEFAULT_BASE_URL}.",
    )
    revision: str = Field(default=DEFAULT_REVISION, description="Klaviyo API revision header.")
    connect_timeout: float = Field(default=10.0, description="Seconds to establish a connection.")
    read_timeout: float = Field(default=60.0, description="Seconds to wait for a response.")
    max_retries: int = Field(default=8, description="Repeats after a 429, 5xx or broken connection.")
    max_backoff: float = Field(default=60.0, description="Longest wait between repeats, in seconds.")
    rate_limit_scale: float = Field(
        default=1.0,
        description="Multiplies the client's rate-limit windows (a time-scaled sandbox: its factor); "
        "0 switches client-side pacing off (429s are still waited out).",
    )
    max_concurrency: int = Field(
        default=16,
        ge=1,
        description="Most cursor chains one run reads at once (sub-windows and fan-out passes); each "
        "endpoint's share adapts: grown while latency holds it back, halved on 429. 1 reads sequentially.",
    )

    def resolved_base_url(self) -> str:
        """The base URL in force: config, else KLAVIYO_BASE_URL, else Klaviyo's."""
        return (self.base_url or os.environ.get("KLAVIYO_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    def get_client(self, logger: logging.Logger | logging.LoggerAdapter | Any | None = None) -> KlaviyoClient:
        """A new client (close it, or use it as a context manager); raises KlaviyoError on bad config."""
        return KlaviyoClient(
            self.api_key or os.environ.get("KLAVIYO_API_KEY") or "",
            base_url=self.resolved_base_url(),
            revision=self.revision,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_retries=self.max_retries,
            max_backoff=self.max_backoff,
            rate_limit_scale=self.rate_limit_scale,
            logger=logger,
            max_concurrency=self.max_concurrency,
        )
