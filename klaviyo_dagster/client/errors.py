"""Klaviyo client exceptions and the messages that name the cause and the fix.

Every message is built from the method, the path (never the query string, which may carry e-mail
addresses in filters) and Klaviyo's JSON:API ``errors`` body. The API key never appears: the client
scrubs any text it did not build itself.
"""

from __future__ import annotations

from typing import Any

import orjson

from klaviyo_dagster.client.tiers import scope_hint

# The revision whose shapes this package reads (campaigns, filters, page sizes): sent by default.
BUILT_FOR_REVISION = "2026-07-15"


class KlaviyoError(Exception):
    """A Klaviyo call failed. ``status``, ``code`` and ``detail`` come from the response when there was one."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        url: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail
        self.url = url
        # Every JSON:API error object of the answer (code, detail, source.pointer...): activation matches
        # a 400's pointers back to the rows it sent.
        self.errors = list(errors or [])

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across Dagster's process boundary
        return (type(self), (self.message, self.status, self.code, self.detail, self.url, self.errors))


class KlaviyoAuthError(KlaviyoError):
    """401 (key rejected) or 403 (key lacks a scope)."""


class KlaviyoBadRequestError(KlaviyoError):
    """400: Klaviyo refused a parameter or body."""


class KlaviyoNotFoundError(KlaviyoError):
    """404: no resource at that path."""


class KlaviyoRateLimitError(KlaviyoError):
    """429 still answered after the retries (or a wait longer than the client is allowed to sleep)."""


class KlaviyoServerError(KlaviyoError):
    """5xx or an unreadable body still answered after the retries."""


class KlaviyoConnectionError(KlaviyoError):
    """Klaviyo could not be reached, or the connection broke, after the retries."""


class KlaviyoUnknownOutcomeError(KlaviyoError):
    """A write that is not safe to repeat (it creates something) failed after it was sent: the connection
    broke or timed out, Klaviyo answered 5xx, or its answer was cut short. Klaviyo may or may not have
    carried it out, so the client did not repeat it; the caller looks the result up before sending again.
    ``status`` is the answer's status when there was one (None for a broken connection)."""


def all_errors(body: bytes) -> list[dict[str, Any]]:
    """The JSON:API error objects of a response body ([] when the body is not an errors document)."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def first_error(body: bytes) -> dict[str, Any]:
    """The first JSON:API error object of a response body, or {} when the body is not one."""
    errors = all_errors(body)
    return errors[0] if errors else {}


def _summary(status: int, err: dict[str, Any]) -> str:
    code = err.get("code") or ""
    detail = err.get("detail") or err.get("title") or ""
    head = f"{status} {code}".strip()
    return f"{head}: {detail}" if detail else head


def error_for_status(
    status: int, body: bytes, method: str, path: str, url: str, *, revision: str, attempts: int = 1
) -> KlaviyoError:
    """Build the exception for a final non-2xx answer (``attempts`` > 1 when retries were spent)."""
    err = first_error(body)
    code = err.get("code")
    detail = err.get("detail") or err.get("title")
    source = err.get("source") if isinstance(err.get("source"), dict) else {}
    what = f"{method} {path}"
    summary = _summary(status, err)
    kw: dict[str, Any] = dict(status=status, code=code, detail=detail, url=url, errors=all_errors(body))
    if status == 401:
        return KlaviyoAuthError(
            f"Klaviyo rejected the API key ({summary}) on {what}: check KLAVIYO_API_KEY is a private key "
            "(pk_...) for this account, not a public site id, and that it has not been revoked",
            **kw,
        )
    if status == 403:
        scopes = " and ".join(scope_hint(method, path)) or "the scope this endpoint needs"
        return KlaviyoAuthError(
            f"Klaviyo refused {what} ({summary}): the API key lacks the scope {scopes}; create a private "
            "key with that access in Klaviyo (Settings > API keys) and set KLAVIYO_API_KEY to it",
            **kw,
        )
    if status == 400 and source.get("parameter") == "revision":
        return KlaviyoBadRequestError(
            f"Klaviyo refused {what} for its revision header ({summary}): this client sent revision "
            f"{revision}; this package was built for and tested against revision {BUILT_FOR_REVISION}: "
            f"leave KlaviyoResource.revision at its default ({BUILT_FOR_REVISION}) or set it to a revision "
            "the server names as served",
            **kw,
        )
    if status == 400:
        where = ""
        if source.get("parameter"):
            where = f"; parameter {source['parameter']!r}"
        elif source.get("pointer"):
            where = f"; body field {source['pointer']!r}"
        return KlaviyoBadRequestError(
            f"Klaviyo refused {what} as a bad request ({summary}{where}): fix that "
            f"{'parameter' if source.get('parameter') else 'input'} (allowed filters, sort fields and "
            f"page sizes differ per endpoint and revision; this client sends revision {revision})",
            **kw,
        )
    if status == 404:
        return KlaviyoNotFoundError(
            f"Klaviyo has nothing at {what} ({summary}): check the id in the path exists in this account "
            "and the base URL points at Klaviyo's API",
            **kw,
        )
    if status == 429:
        return KlaviyoRateLimitError(
            f"Klaviyo kept throttling {what} (429) after {attempts} attempts: another run or app is "
            "sharing this account's rate limit; run fewer Klaviyo jobs at once, or raise max_retries "
            "or max_backoff",
            **kw,
        )
    if status >= 500:
        return KlaviyoServerError(
            f"Klaviyo failed {what} with {summary} after {attempts} attempts: Klaviyo may be degraded "
            "(see status.klaviyo.com); re-run later, or raise max_retries",
            **kw,
        )
    return KlaviyoError(
        f"Klaviyo answered {what} with {summary}: the request was not accepted; check the call "
        f"against Klaviyo's API reference for revision {revision}",
        **kw,
    )
