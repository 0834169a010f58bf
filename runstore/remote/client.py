"""The HTTP client of the sync protocol: one request at a time, retried when transient.

Transient failures (connection errors, timeouts, 5xx, 429) are retried with capped, jittered
exponential backoff (tenacity), honouring Retry-After; when attempts run out the caller gets
TransientRemoteError. A 4xx is never retried: PermanentRemoteError with the server's message
(ConflictError for a name conflict under conflict_strategy='error'). Thread-safe: syncd shares
one Client between its upload threads.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from runstore import rules
from runstore.config import load_config
from runstore.errors import (
    ConflictError,
    NotLoggedInError,
    PermanentRemoteError,
    TransientRemoteError,
)
from runstore.protocol import API_PREFIX


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip()[:300] or response.reason_phrase), None
    if isinstance(body, dict):
        return str(body.get("detail", body))[:500], body.get("code")
    return str(body)[:500], None


class Client:
    """A connection to one runstore server as one user (from its token)."""

    def __init__(self, host: str, token: str, *, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None, max_attempts: int = 5,
                 max_backoff_s: float = 10.0, sleep: Callable[[float], None] = time.sleep
                 ) -> None:
        if not host or not token:
            raise NotLoggedInError("no server host or token. Try: runstore login --host URL "
                                   "--token TOKEN")
        if "://" not in host:
            host = "http://" + host
        self.host = host.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.host + API_PREFIX, transport=transport,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "runstore-client"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))
        self._user: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config=None, **kw: Any) -> Client:
        """A client from config + credentials (+ RUNSTORE_SERVER/RUNSTORE_TOKEN)."""
        config = config or load_config()
        if not config.host or not config.token:
            raise NotLoggedInError("not logged in to a runstore server. Try: runstore login "
                                   "--host URL --token TOKEN (or runstore.login(...))")
        kw.setdefault("timeout_s", config.timeout_s)
        return cls(config.host, config.token, **kw)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.host!r})"

    # -- requests --------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_random_exponential(multiplier=0.25, max=self.max_backoff_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return max(backoff, exc.retry_after)
        return backoff

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        # A Retry-After longer than we are willing to wait ends the attempts: the caller
        # (syncd) schedules the next try with TransientRemoteError.retry_after.
        if isinstance(exc, _Retryable) and (exc.retry_after or 0) > self.max_backoff_s:
            return True
        return stop_after_attempt(self.max_attempts)(state)

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None,
                content: Callable[[], bytes | Iterable[bytes]] | None = None,
                headers: dict[str, str] | None = None) -> Any:
        """One API call, retried while transient; returns the decoded JSON answer.

        ``content`` is a factory so that each attempt sends the body afresh.
        """
        retrying = Retrying(stop=self._stop, wait=self._wait,
                            retry=retry_if_exception_type(_Retryable), sleep=self._sleep,
                            reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, json, params, content, headers)
        except _Retryable as exc:
            raise TransientRemoteError(f"{method} {self.host}{API_PREFIX}{path}: {exc}",
                                       retry_after=exc.retry_after) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method, path, json, params, content, headers) -> Any:
        try:
            response = self._http.request(
                method, path, json=json, params=params,
                content=content() if content is not None else None, headers=headers)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            detail, _ = _detail(response)
            raise _Retryable(f"HTTP {response.status_code}: {detail}", _retry_after(response))
        if response.status_code >= 400:
            detail, code = _detail(response)
            if code == "name_conflict":
                raise ConflictError(detail, response.status_code)
            raise PermanentRemoteError(f"server refused {method} {path}: {detail} "
                                       f"(HTTP {response.status_code})", response.status_code)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def stream_to(self, path: str, sink: Callable[[bytes], None]) -> None:
        """GET path and feed the body to sink in chunks (not retried: callers restart)."""
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    detail, _ = _detail(response)
                    if response.status_code >= 500:
                        raise TransientRemoteError(f"GET {path}: {detail}")
                    raise PermanentRemoteError(f"server refused GET {path}: {detail}",
                                               response.status_code)
                for chunk in response.iter_bytes(1 << 20):
                    sink(chunk)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise TransientRemoteError(f"GET {path}: {exc}") from exc

    @property
    def user(self) -> str:
        """The user name the token belongs to (asked once)."""
        with self._lock:
            if self._user is None:
                self._user = self.request("GET", "/whoami")["user"]
            return self._user

    def folder_path(self, folder: str) -> str:
        """t9k's rule: a folder without a leading '/' is under /<user>/."""
        return rules.folder_path(folder, self.user)
