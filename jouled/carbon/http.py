"""HTTP for carbon providers: httpx with timeouts, bounded retries with backoff on 5xx/timeouts, 429 Retry-After."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from jouled.carbon.base import AuthError, ProviderError

log = logging.getLogger("jouled.carbon")


class HttpError(ProviderError):
    """A non-retryable HTTP status (4xx other than 429, or 5xx after the retries)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HttpAuthError(AuthError):
    """401 Unauthorized."""

    status = 401


def _retry_after_s(value: str | None, now_s: float) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    v = value.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


def _snippet(text: str, n: int = 80) -> str:
    s = " ".join(text.split())
    return s if len(s) <= n else s[: n - 1] + "…"


class HttpFetcher:
    """GET JSON from one provider's base URL, with the provider's name in every error message."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.sleep = sleep
        self.client = client or httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=True)
        self.timeout_s = timeout_s
        self.requests = 0  # requests sent, for tests and health

    def close(self) -> None:
        self.client.close()

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * (2**attempt)))

    def get_json(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> Any:
        url = f"{self.base_url}{path}"
        what = f"{self.provider} GET {path}"
        last = ""
        for attempt in range(self.retries + 1):
            wait: float | None = None
            try:
                self.requests += 1
                r = self.client.get(url, params=params, headers=headers, auth=auth)
            except httpx.TimeoutException:
                last = f"{what}: timed out after {self.timeout_s:g} s"
                wait = self._backoff(attempt)
            except httpx.TransportError as e:
                last = f"{what}: {type(e).__name__} ({_snippet(str(e)) or 'connection failed'})"
                wait = self._backoff(attempt)
            else:
                if r.status_code == 429:
                    ra = _retry_after_s(r.headers.get("Retry-After"), time.time())
                    wait = ra if ra is not None else self._backoff(attempt)
                    last = f"{what}: HTTP 429 rate limited (Retry-After {r.headers.get('Retry-After', 'absent')})"
                    if wait > self.max_retry_after_s:
                        raise ProviderError(f"{last}: waiting {wait:g} s exceeds the {self.max_retry_after_s:g} s bound")
                elif r.status_code >= 500:
                    last = f"{what}: HTTP {r.status_code} {_snippet(r.text)}".rstrip()
                    wait = self._backoff(attempt)
                elif r.status_code == 401:
                    raise HttpAuthError(f"{what}: HTTP 401 unauthorized — check the token/credentials")
                elif r.status_code >= 400:
                    raise HttpError(f"{what}: HTTP {r.status_code} {_snippet(r.text)}".rstrip(), r.status_code)
                else:
                    try:
                        return r.json()
                    except ValueError:
                        raise ProviderError(f"{what}: answered garbage, not JSON: {_snippet(r.text)!r}") from None
            if attempt < self.retries:
                log.debug("%s; retrying in %.3g s", last, wait)
                self.sleep(wait)
        raise ProviderError(f"{last} (gave up after {self.retries + 1} tries)")


# ---- answer checking: every surprise in a provider's JSON becomes a one-line ProviderError ----------------


def expect_dict(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ProviderError(f"{what}: unexpected answer, expected a JSON object, got {type(obj).__name__}")
    return obj


def expect_list(obj: Any, what: str) -> list[Any]:
    if not isinstance(obj, list):
        raise ProviderError(f"{what}: unexpected answer, expected a JSON list, got {type(obj).__name__}")
    return obj


def expect_num(obj: dict[str, Any], key: str, what: str) -> float:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProviderError(f"{what}: unexpected answer, '{key}' is {v!r}, expected a number")
    return float(v)


def expect_time_ns(obj: dict[str, Any], key: str, what: str) -> int:
    from jouled.carbon.base import parse_iso_ns

    v = obj.get(key)
    if not isinstance(v, str):
        raise ProviderError(f"{what}: unexpected answer, '{key}' is {v!r}, expected an ISO 8601 time")
    try:
        return parse_iso_ns(v)
    except ValueError:
        raise ProviderError(f"{what}: unexpected answer, '{key}' = {v!r} is not an ISO 8601 time") from None
