"""An HTTP client for the backup server's API with bearer credentials,
timeouts, bounded retries and failover across the server's addresses.

Contract:
- a connection error, a timeout or a 5xx answer moves to the next address
  (in order, wrapping); after every address failed once, it waits (backoff
  doubling from `BACKOFF`, at most `MAX_BACKOFF`) and tries again, at most
  `rounds` rounds: then RemoteUnavailable. This is what lets a backup finish
  through another server process when one dies;
- `idempotent=False` requests (enrollment: a lost answer would burn the
  token) are retried only when the connection was never made;
- a server whose TLS certificate does not verify is RemoteError at once;
- a 4xx answer is RemoteError with the server's one-line `error`, never
  retried; the credentials never appear in a message.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import httpx

from strongroom.errors import RemoteError, RemoteRefused, RemoteUnavailable

BACKOFF = 0.2
MAX_BACKOFF = 5.0
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
_RETRY_STATUS = {500, 502, 503, 504}


def split_servers(values: list[str] | tuple[str, ...]) -> list[str]:
    """`--server` values, each possibly a comma list, as base URLs."""
    found = [s.strip().rstrip("/") for v in values for s in v.split(",") if s.strip()]
    for url in found:
        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"server address {url[:80]!r} is not an http:// or https:// URL")
    if not found:
        raise RemoteError("no server address given")
    return found


class Client:
    def __init__(
        self,
        servers: list[str],
        bearer: str | None = None,
        *,
        ca_cert: str | None = None,
        rounds: int = 6,
        http: httpx.Client | None = None,
    ) -> None:
        self.servers = list(servers)
        self._bearer = bearer
        self._rounds = rounds
        self._current = 0
        self._lock = threading.Lock()
        self._http = http or httpx.Client(timeout=TIMEOUT, verify=_trust(ca_cert))
        self.requests = 0  # answered requests, for statistics

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        headers = {}
        if self._bearer is not None:
            headers["Authorization"] = f"Bearer {self._bearer}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        delay = BACKOFF
        last = "no answer"
        for round_ in range(self._rounds):
            for _ in range(len(self.servers)):
                with self._lock:
                    base = self.servers[self._current]
                try:
                    answer = self._http.request(
                        method, base + path, json=json, content=content, headers=headers
                    )
                except httpx.ConnectError as err:
                    if _untrusted(err):  # permanent, and maybe not the server at all
                        raise RemoteError(
                            f"{base}: its TLS certificate is not trusted (--ca-cert?)"
                        ) from None
                    last = f"{base}: {type(err).__name__}"
                except httpx.TransportError as err:
                    if not idempotent:
                        raise RemoteError(
                            f"{base}: the connection broke ({type(err).__name__})"
                        ) from None
                    last = f"{base}: {type(err).__name__}"
                else:
                    if answer.status_code not in _RETRY_STATUS:
                        self.requests += 1
                        if answer.status_code >= 400:
                            raise RemoteRefused(
                                f"server {base}: {_error_line(answer)}", answer.status_code
                            )
                        return answer
                    last = f"{base}: {_error_line(answer)}"
                    if not idempotent:
                        raise RemoteError(f"server {last}")
                self._next(base)
            if round_ + 1 < self._rounds:
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        raise RemoteUnavailable(f"no backup server answers (last: {last})")

    def _next(self, failed: str) -> None:
        with self._lock:
            if self.servers[self._current] == failed:
                self._current = (self._current + 1) % len(self.servers)

    def get_json(self, path: str) -> Any:
        return self.request("GET", path).json()

    def post_json(self, path: str, doc: Any, *, idempotent: bool = True) -> Any:
        return self.request("POST", path, json=doc, idempotent=idempotent).json()


def _untrusted(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(err)


def _trust(ca_cert: str | None) -> ssl.SSLContext | bool:
    """The system's trusted authorities, or only the certificates of `ca_cert`."""
    if not ca_cert:
        return True
    try:
        return ssl.create_default_context(cafile=ca_cert)
    except (OSError, ssl.SSLError) as err:
        raise RemoteError(f"--ca-cert {ca_cert}: {err}") from None


def _error_line(answer: httpx.Response) -> str:
    try:
        text = str(answer.json().get("error", ""))
    except (ValueError, AttributeError):
        text = ""
    return f"{answer.status_code} {text or answer.reason_phrase}".splitlines()[0][:300]
