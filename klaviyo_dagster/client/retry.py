"""Bounded, jittered retries for Klaviyo calls, on tenacity.

An attempt that may succeed when repeated (429, 5xx, a broken connection, a truncated body) raises
``Retryable``, carrying the reason to log, the server's Retry-After if any, and how to build the final
``KlaviyoError`` once the attempts are spent. Everything else propagates at once (fail fast).
Waits: a 429 waits in the rate limiter (Retry-After plus jitter, shared by every caller of that
endpoint), so tenacity adds nothing; other failures back off with full jitter, capped at ``max_backoff``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from klaviyo_dagster.client.errors import KlaviyoError

FIRST_BACKOFF_S = 0.25


class Retryable(Exception):
    """An attempt failed in a way worth repeating."""

    def __init__(
        self, reason: str, make_final: Callable[[int], KlaviyoError], retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.make_final = make_final
        self.retry_after = retry_after


def make_retrying(
    max_retries: int,
    max_backoff: float,
    on_retry: Callable[[Retryable, int, float], None],
    sleep: Callable[[float], None] = time.sleep,
) -> Retrying:
    """A tenacity ``Retrying`` allowing ``max_retries`` repeats; ``on_retry(exc, attempt, wait)`` logs."""
    backoff = wait_random_exponential(multiplier=FIRST_BACKOFF_S, max=max_backoff)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return 0.0  # the rate limiter holds the bucket for Retry-After
        return float(backoff(state))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable):
            wait_s = exc.retry_after if exc.retry_after is not None else (state.upcoming_sleep or 0.0)
            on_retry(exc, state.attempt_number, wait_s)

    def give_up(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable):
            raise exc.make_final(state.attempt_number) from None
        raise exc  # pragma: no cover - only Retryable is retried

    return Retrying(
        retry=retry_if_exception_type(Retryable),
        stop=stop_after_attempt(max_retries + 1),
        wait=wait,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
        sleep=sleep,
    )
