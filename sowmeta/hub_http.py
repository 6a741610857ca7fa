"""huggingface_hub's HTTP client with timeouts on every request, and no waiting on a dead endpoint.

huggingface_hub builds its ``httpx2.Client`` with ``timeout=None`` and many of its calls pass no
timeout, so an endpoint that accepts a connection and never answers hangs the client forever.
``install()`` gives the shared client a transport that bounds connect and read times
(``SOWMETA_HUB_TIMEOUT`` seconds, default 30) and, once a host has failed to answer, fails
further requests to it at once for a minute (``EndpointDown``, an ``httpx2.ConnectError``, so
huggingface_hub still falls back to its cache where it would on a refused connection).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx2

from . import env

__all__ = ["EndpointDown", "install", "forget_failures"]

DOWN_FOR_S = 60.0
_lock = threading.Lock()
_down: dict[str, tuple[float, str]] = {}  # host -> (until, why)
_installed = False


class EndpointDown(httpx2.ConnectError):
    """The host did not answer within the timeout (or refused), now or a moment ago."""


def forget_failures() -> None:
    """Forget which hosts failed (tests, and a user who fixed the network, call this)."""
    with _lock:
        _down.clear()


def _limits() -> dict[str, float]:
    read = env.hub_timeout()
    return {"connect": min(10.0, read), "read": read, "write": read, "pool": read}


def _fail(host: str, exc: Exception) -> EndpointDown:
    if isinstance(exc, httpx2.TimeoutException):
        why = f"it did not answer within {env.hub_timeout():g} s"
    elif isinstance(exc, httpx2.ConnectError):
        why = "it refused the connection"
    else:
        why = f"the connection broke ({type(exc).__name__})"
    with _lock:
        _down[host] = (time.monotonic() + DOWN_FOR_S, why)
    return EndpointDown(why)


class _Stream(httpx2.SyncByteStream):
    """A response body whose read errors also mark the host as down."""

    def __init__(self, inner: httpx2.SyncByteStream, host: str) -> None:
        self.inner, self.host = inner, host

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.inner
        except (httpx2.TimeoutException, httpx2.NetworkError) as exc:
            raise _fail(self.host, exc) from exc

    def close(self) -> None:
        self.inner.close()


class _BoundedTransport(httpx2.HTTPTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        host = f"{request.url.host}:{request.url.port}" if request.url.port else str(request.url.host)
        with _lock:
            until, why = _down.get(host, (0.0, ""))
        if time.monotonic() < until:
            raise EndpointDown(f"{why}, a moment ago")
        limits = _limits()
        asked = dict(request.extensions.get("timeout") or {})
        request.extensions = {**request.extensions, "timeout": {k: asked.get(k) or v for k, v in limits.items()}}
        try:
            response = super().handle_request(request)
        except (httpx2.TimeoutException, httpx2.NetworkError) as exc:
            raise _fail(host, exc) from exc
        response.stream = _Stream(response.stream, host)  # type: ignore[arg-type]
        return response


def _client() -> httpx2.Client:
    from huggingface_hub.utils._http import hf_request_event_hook

    return httpx2.Client(event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=None, transport=_BoundedTransport())


def install() -> None:
    """Make huggingface_hub's shared client use the bounded transport (once per process)."""
    global _installed
    if _installed:
        return
    from huggingface_hub import set_client_factory

    set_client_factory(_client)
    _installed = True
