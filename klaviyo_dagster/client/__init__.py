"""Plain-Python Klaviyo API client (no Dagster imports): paging, rate limiting, retries, clear errors."""

from klaviyo_dagster.client.client import DEFAULT_BASE_URL, DEFAULT_REVISION, KlaviyoClient
from klaviyo_dagster.client.errors import (
    KlaviyoAuthError,
    KlaviyoBadRequestError,
    KlaviyoConnectionError,
    KlaviyoError,
    KlaviyoNotFoundError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
    KlaviyoUnknownOutcomeError,
)
from klaviyo_dagster.client.stats import ClientStats
from klaviyo_dagster.client.tiers import Tier

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_REVISION",
    "ClientStats",
    "KlaviyoAuthError",
    "KlaviyoBadRequestError",
    "KlaviyoClient",
    "KlaviyoConnectionError",
    "KlaviyoError",
    "KlaviyoNotFoundError",
    "KlaviyoRateLimitError",
    "KlaviyoServerError",
    "KlaviyoUnknownOutcomeError",
    "Tier",
]
