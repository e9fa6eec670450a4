"""KlaviyoClient: one pooled requests session speaking Klaviyo's JSON:API.

Auth and revision headers, connect/read timeouts, paging through ``links.next``, client-side rate
limiting per endpoint bucket, bounded jittered retries for 429/5xx/broken connections/truncated bodies,
fail-fast 400/401/403/404 with messages naming cause and fix, counters in ``stats``. A write the route
table marks as a create (``tiers.ROUTES``, ``idempotent=False``: a new list, a new import job) is repeated
only when Klaviyo surely did not act (429, a connection that never opened); any other failure once it was
sent raises ``KlaviyoUnknownOutcomeError`` naming what happened and how to find out. The API key lives
only in the session's auth hook; every message built from foreign text is scrubbed of it.

Bodies are read in one call from the connection (``stream=True`` + ``raw.read``: a 1 MB page costs ~0.8 ms
of CPU instead of ~1.7 ms through ``Response.content``'s 10 KB chunks). ``paginate_raw`` yields the page
bytes undecoded (`RawPage`) for callers that hand them to DuckDB: only the top-level ``links`` member is
decoded to follow ``links.next`` (see `links_next`).
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter

from klaviyo_dagster.client.errors import (
    BUILT_FOR_REVISION,
    KlaviyoAuthError,
    KlaviyoConnectionError,
    KlaviyoError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
    KlaviyoUnknownOutcomeError,
    all_errors,
    error_for_status,
    first_error,
)
from klaviyo_dagster.client.pool import ChainPool
from klaviyo_dagster.client.ratelimit import RateLimiter, WaitTooLong
from klaviyo_dagster.client.retry import Retryable, make_retrying
from klaviyo_dagster.client.stats import ClientStats
from klaviyo_dagster.client.tiers import STEADY_WINDOW_S, Bucket, Tier, resolve_bucket

DEFAULT_BASE_URL = "https://a.klaviyo.com"
DEFAULT_REVISION = BUILT_FOR_REVISION  # the revision this package was built for
JSONAPI = "application/vnd.api+json"
MISSING_KEY_MESSAGE = (
    "KLAVIYO_API_KEY is not set: export a private API key (pk_...) or start the sandbox with "
    "`klaviyo-dagster sandbox`"
)
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?$")
_QUERY = re.compile(r"\?[^\s)'\"]*")  # query strings may carry e-mail filters: keep them out of messages
_RETRY_STATUSES = frozenset({408, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})

Params = Mapping[str, Any] | list[tuple[str, Any]] | None


class _KeyAuth(requests.auth.AuthBase):
    """Sets the Authorization header per request; its repr never shows the key."""

    def __init__(self, key: str) -> None:
        self._value = f"Klaviyo-API-Key {key}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._value
        return request

    def __repr__(self) -> str:
        return "<Klaviyo-API-Key redacted>"


@dataclass(frozen=True)
class RawPage:
    """One page as Klaviyo sent it: the body bytes (a JSON:API document) and its ``links.next``."""

    body: bytes
    next_url: str | None


class KlaviyoClient:
    """A Klaviyo API client: ``paginate``, ``get``, ``post``, ``delete``; see CONTRACTS.md."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        revision: str = DEFAULT_REVISION,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_retries: int = 8,
        max_backoff: float = 60.0,
        rate_limit_scale: float = 1.0,
        logger: logging.Logger | logging.LoggerAdapter | Any | None = None,
        *,
        pool_size: int = 8,
        max_concurrency: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = (api_key or "").strip() if isinstance(api_key, str) or api_key is None else None
        if key is None:
            raise KlaviyoAuthError("api_key must be a string: pass the private API key (pk_...)")
        if not key:
            raise KlaviyoAuthError(MISSING_KEY_MESSAGE)
        if any(c.isspace() or ord(c) < 32 for c in key):
            raise KlaviyoAuthError(
                "KLAVIYO_API_KEY contains whitespace or control characters: copy the private key "
                "(pk_...) again without line breaks or quotes"
            )
        self._secret = key
        self.log = logger or logging.getLogger("klaviyo_dagster.client")
        if not key.startswith("pk_"):
            self.log.warning(
                "KLAVIYO_API_KEY does not start with pk_: Klaviyo's API needs a private key, not the "
                "6-character public site id"
            )
        parts = urlsplit((base_url or "").strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise KlaviyoError(
                f"base_url {base_url!r} is not an http(s) URL: set KLAVIYO_BASE_URL to "
                f"{DEFAULT_BASE_URL} or to the sandbox's URL (http://127.0.0.1:PORT)"
            )
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._netloc = parts.netloc
        if not _REVISION.match(revision or ""):
            raise KlaviyoError(
                f"revision {revision!r} is not of the form YYYY-MM-DD[.suffix]: use e.g. {DEFAULT_REVISION}"
            )
        self.revision = revision
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not value > 0:
                raise KlaviyoError(f"{name} must be > 0 seconds, got {value!r}")
        if max_retries < 0 or max_backoff < 0:
            raise KlaviyoError(f"max_retries and max_backoff must be >= 0, got {max_retries}, {max_backoff}")
        self.timeout = (float(connect_timeout), float(read_timeout))
        self.max_retries = int(max_retries)
        self.max_backoff = float(max_backoff)
        self.rate_limit_scale = float(rate_limit_scale)
        # The longest sleep before a request: max_backoff, or a steady window (waiting one out is normal).
        self._max_wait = max(self.max_backoff, STEADY_WINDOW_S * (self.rate_limit_scale or 1.0) * 1.1)
        self.stats = ClientStats()
        try:
            self.limiter = RateLimiter(self.rate_limit_scale, sleep=sleep)
        except ValueError as exc:
            raise KlaviyoError(f"{exc}: use 1.0 for Klaviyo, the sandbox's factor for a scaled sandbox") from None
        self._retrying = make_retrying(self.max_retries, self.max_backoff, self._on_retry, sleep)

        self.session = requests.Session()
        # Concurrent cursor chains (ingest): one bounded pool per client, chains adapted per endpoint.
        self.pool = ChainPool(max_workers=max(1, int(max_concurrency)))
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, self.pool.max_workers), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.auth = _KeyAuth(key)
        # Resolve proxy and CA settings from the environment once, not on every request (requests scans
        # os.environ per call when trust_env is on); this also keeps ~/.netrc from touching the header.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            self.session.verify = ca_bundle
        self.session.trust_env = False
        self.session.headers.update({"revision": revision, "Accept": JSONAPI})
        self._write_headers = {"Content-Type": JSONAPI}

    # -- public API ------------------------------------------------------------------------------
    def paginate(self, path: str, params: Params = None, *, tier: Tier | str | None = None) -> Iterator[dict]:
        """Yield one decoded JSON:API document per page, following ``links.next`` until it is null."""
        for doc, _ in self._pages(path, params, tier, raw=False):
            yield doc

    def paginate_raw(self, path: str, params: Params = None, *, tier: Tier | str | None = None) -> Iterator[RawPage]:
        """Like `paginate`, but each page comes undecoded (`RawPage`: body bytes and ``links.next``)."""
        for body, nxt in self._pages(path, params, tier, raw=True):
            yield RawPage(body, nxt)

    def _pages(self, path: str, params: Params, tier: Tier | str | None, *, raw: bool) -> Iterator[tuple[Any, Any]]:
        bucket = resolve_bucket("GET", path, _as_mapping(params), tier)
        url: str | None = self._url(path)
        query = params
        while url is not None:
            got = self._call("GET", url, path, bucket, query, None, raw=raw)
            query = None
            doc, nxt = got if raw and got is not None else (got, None)
            if not isinstance(doc, (dict, bytes)):
                raise KlaviyoServerError(
                    f"Klaviyo answered GET {path} without a JSON:API document: expected an object with "
                    "`data`; check KLAVIYO_BASE_URL points at Klaviyo's API",
                    url=self.base_url + path,
                )
            if not raw:
                links = doc.get("links")
                nxt = links.get("next") if isinstance(links, dict) else None
            self.stats.pages += 1
            yield doc, nxt or None
            if nxt:
                nxt = self._rebase(nxt)
                if nxt == url:
                    raise KlaviyoServerError(
                        f"Klaviyo's links.next for GET {path} repeats the current page: stopping to avoid a "
                        "loop; re-run, and report it if it persists",
                        url=url,
                    )
            url = nxt or None

    def bucket_key(self, method: str, path: str, params: Params = None, tier: Tier | str | None = None) -> str:
        """The rate-limit bucket a call counts against (chains of one bucket share its adaptive limit)."""
        return resolve_bucket(method, path, _as_mapping(params), tier).key

    def get(self, path: str, params: Params = None, *, tier: Tier | str | None = None) -> dict:
        """GET one document."""
        bucket = resolve_bucket("GET", path, _as_mapping(params), tier)
        doc = self._call("GET", self._url(path), path, bucket, params, None)
        return doc if isinstance(doc, dict) else {}

    def post(self, path: str, body: Any, *, tier: Tier | str | None = None) -> dict | None:
        """POST a JSON:API body; return the decoded answer, or None for 204 / an empty body."""
        bucket = resolve_bucket("POST", path, None, tier)
        return self._call("POST", self._url(path), path, bucket, None, orjson.dumps(body))

    def delete(self, path: str, body: Any = None, *, tier: Tier | str | None = None) -> None:
        """DELETE, with a JSON:API body when given (e.g. list relationship removals)."""
        bucket = resolve_bucket("DELETE", path, None, tier)
        data = orjson.dumps(body) if body is not None else None
        self._call("DELETE", self._url(path), path, bucket, None, data)

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def __enter__(self) -> KlaviyoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KlaviyoClient(base_url={self.base_url!r}, revision={self.revision!r}, api_key=<redacted>)"

    # -- internals ---------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return self._rebase(path)
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def _rebase(self, url: str) -> str:
        """Keep absolute links on our base URL: the key is only ever sent to ``base_url``."""
        parts = urlsplit(url)
        if parts.netloc == self._netloc and url.startswith(self.base_url):
            return url
        rebased = self.base_url + parts.path
        return f"{rebased}?{parts.query}" if parts.query else rebased

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "<redacted>") if self._secret else text

    def _on_retry(self, exc: Retryable, attempt: int, wait: float) -> None:
        self.stats.retries += 1
        self.log.warning(
            "Klaviyo %s; retry %d/%d in %.2f s", self._scrub(exc.reason), attempt, self.max_retries, wait
        )

    def _call(
        self, method: str, url: str, path: str, bucket: Bucket, params: Params, data: bytes | None,
        *, raw: bool = False,
    ) -> Any:
        return self._retrying.copy()(self._attempt, method, url, path, bucket, params, data, raw)

    def _attempt(
        self, method: str, url: str, path: str, bucket: Bucket, params: Params, data: bytes | None,
        raw: bool = False,
    ) -> Any:
        stats = self.stats
        try:
            waited = self.limiter.acquire(bucket, self._max_wait)
            stats.wait_seconds += waited
        except WaitTooLong as exc:
            raise self._too_long(method, path, exc.wait, url) from None
        stats.requests += 1
        stats.by_endpoint[bucket.key] += 1
        what = f"{method} {path.split('?', 1)[0]}"
        try:
            resp = self.session.request(
                method,
                url,
                params=params,
                data=data,
                headers=self._write_headers if data is not None else None,
                timeout=self.timeout,
                stream=True,
            )
            content = _read_body(resp)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError) as exc:
            stats.errors += 1
            raise KlaviyoError(
                f"Could not send {what}: {self._scrub(str(exc))}; check KLAVIYO_BASE_URL and the path"
            ) from None
        except (requests.exceptions.RequestException, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
            stats.errors += 1
            kind = type(exc).__name__
            detail = _QUERY.sub("", self._scrub(str(exc)))[:300]

            def final(attempts: int, kind: str = kind, detail: str = detail) -> KlaviyoError:
                return KlaviyoConnectionError(
                    f"Could not complete {what} against {self.base_url} after {attempts} attempts "
                    f"({kind}: {detail}): check KLAVIYO_BASE_URL, network access and timeouts "
                    f"(connect {self.timeout[0]} s, read {self.timeout[1]} s)",
                    url=url,
                )

            if not bucket.idempotent and not _before_send(exc):
                raise self._unknown_outcome(
                    what, bucket, f"the connection broke or timed out after the request was sent ({kind}: {detail})",
                    url=url) from None
            raise Retryable(f"{what}: {kind}", final) from None

        status = resp.status_code
        self.pool.observe(bucket.key, waited, status)
        if status < 300:
            if "RateLimit-Limit" in resp.headers:
                changed = self.limiter.observe(bucket, resp.headers)
                if changed:
                    self.log.info(
                        "Klaviyo rate limits for %s: %s (pacing to the server's figures)",
                        bucket.key,
                        ", ".join(f"{n} per {w:g} s" for n, w in changed),
                    )
            if status == 204 or not content:
                return None
            try:
                if raw:
                    return content, links_next(content)
                return orjson.loads(content)
            except orjson.JSONDecodeError:
                stats.errors += 1
                size = len(content)
                if not bucket.idempotent:
                    raise self._unknown_outcome(
                        what, bucket, f"Klaviyo accepted it ({status}) but its answer was cut short ({size} bytes "
                        "of unreadable JSON), so what it created is unknown", status=status, url=url) from None

                def unreadable(attempts: int) -> KlaviyoError:
                    return KlaviyoServerError(
                        f"Klaviyo sent an unreadable JSON body ({size} bytes, cut short?) for {what} after "
                        f"{attempts} attempts: the connection may be unstable; re-run later or raise "
                        "max_retries",
                        status=status,
                        url=url,
                    )

                raise Retryable(f"{what}: unreadable body of {size} bytes", unreadable) from None

        stats.errors += 1
        body = content

        def final_error(attempts: int) -> KlaviyoError:
            err = error_for_status(status, body, method, path, url, revision=self.revision, attempts=attempts)
            err.message = self._scrub(err.message)
            err.args = (err.message,)
            return err

        if status == 429:
            stats.throttled += 1
            wait = self._retry_after(resp.headers)
            if wait > max(self._max_wait, self.limiter.bucket(bucket).patience):
                detail = first_error(body).get("detail") or ""
                raise self._too_long(method, path, wait, url, f"Klaviyo answered 429{': ' + detail if detail else ''}")
            jitter = random.uniform(0.0, 0.1 * wait + 0.002)
            self.limiter.bucket(bucket).throttled(wait + jitter)
            raise Retryable(f"{what}: 429 throttled (Retry-After {wait:.3f} s)", final_error, wait + jitter)
        if status in _RETRY_STATUSES:
            if not bucket.idempotent:
                err = first_error(body)
                said = err.get("detail") or err.get("title") or resp.reason or ""
                raise self._unknown_outcome(
                    what, bucket, f"Klaviyo answered {status}{': ' + said if said else ''} after the request "
                    "was sent", status=status, url=url, code=err.get("code"), detail=err.get("detail"),
                    errors=all_errors(body))
            raise Retryable(f"{what}: {status} {resp.reason or ''}".rstrip(), final_error)
        raise final_error(1)

    def _unknown_outcome(self, what: str, bucket: Bucket, cause: str, **kw: Any) -> KlaviyoUnknownOutcomeError:
        """The error for a create whose outcome is unknown: a repeat could duplicate it, so none is made
        (sorted once, here: connect failures before sending and 429s are repeated, everything else
        that leaves a sent create in doubt lands here)."""
        how = bucket.on_unknown or "look the resource up before sending it again"
        return KlaviyoUnknownOutcomeError(
            self._scrub(
                f"{what}: outcome unknown: {cause}, so Klaviyo may or may not have carried it out. It was "
                f"not repeated, because a repeat could create a duplicate: {how}, then re-run"
            ),
            **kw,
        )

    def _too_long(self, method: str, path: str, wait: float, url: str, why: str = "") -> KlaviyoRateLimitError:
        """The error for a wait longer than the client may sleep (a spent daily cap)."""
        why = why or "the endpoint's rate limit, as this client counted it, is spent"
        return KlaviyoRateLimitError(
            self._scrub(
                f"{method} {path.split('?', 1)[0]} may not be called for another {wait:.0f} s ({why}), "
                f"longer than max_backoff ({self.max_backoff:g} s): a daily cap (e.g. 150 list creations "
                "a day) is likely spent; retry after that wait"
            ),
            status=429,
            url=url,
        )

    def _retry_after(self, headers: Mapping[str, str]) -> float:
        """Seconds to wait after a 429: the sandbox's precise ms header, else Retry-After (scaled)."""
        precise = headers.get("X-Sandbox-Retry-After-Ms")
        if precise:
            try:
                return max(0.0, float(precise) / 1000.0)
            except ValueError:
                pass
        raw = headers.get("Retry-After")
        if raw:
            try:
                return max(0.0, float(raw)) * (self.rate_limit_scale or 1.0)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(raw)
                    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
                except (TypeError, ValueError):
                    pass
        return self.rate_limit_scale or 1.0  # one burst window


def _read_body(resp: requests.Response) -> bytes:
    """The whole body in one read (decoded if compressed); the connection goes back to the pool."""
    try:
        return resp.raw.read(decode_content=True) or b""
    finally:
        resp.raw.release_conn()


_LINKS = b'"links":'


def links_next(body: bytes) -> str | None:
    """``links.next`` of a JSON:API document given as bytes, decoding as little of it as it can.

    Fast path: the document's last member is ``"links": {...}`` (Klaviyo's and the sandbox's compact
    layout): the text after the last ``"links":`` must then be one JSON object followed only by the closing
    brace, which it cannot be for a nested ``links`` (more closing brackets follow one) nor inside a string
    (an unescaped quote ends a string). Anything else (whitespace, ``included`` after ``links``) decodes
    the whole document. Raises ``orjson.JSONDecodeError`` on a body that is not JSON; the decoded body must
    be an object.
    """
    at = body.rfind(_LINKS)
    if at > 0 and body[:1] == b"{" and body[-1:] == b"}" and body[at - 1 : at] == b",":
        try:
            links = orjson.loads(body[at + len(_LINKS) : -1])
        except orjson.JSONDecodeError:
            links = None
        if isinstance(links, dict):
            nxt = links.get("next")
            return nxt if isinstance(nxt, str) else None
    doc = orjson.loads(body)
    if not isinstance(doc, dict):
        raise orjson.JSONDecodeError("not a JSON object", "", 0)
    links = doc.get("links")
    nxt = links.get("next") if isinstance(links, dict) else None
    return nxt if isinstance(nxt, str) else None


def _before_send(exc: BaseException) -> bool:
    """Whether a transport error happened before any byte of the request left (connect refused or timed
    out, name not resolved): then nothing reached Klaviyo and a repeat is safe for any write."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)  # requests wraps urllib3's MaxRetryError(reason=...)
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def _as_mapping(params: Params) -> Mapping[str, Any] | None:
    if params is None or isinstance(params, Mapping):
        return params
    merged: dict[str, Any] = {}
    for key, value in params:
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    return merged
