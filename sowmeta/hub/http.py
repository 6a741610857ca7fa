"""huggingface_hub's HTTP client with timeouts on every request, and no waiting on a dead or slow endpoint.

huggingface_hub builds its ``httpx2.Client`` with ``timeout=None`` and many of its calls pass no
timeout, so an endpoint that accepts a connection and never answers hangs the client forever.
``install()`` gives the shared client a transport that bounds connect and read times
(``SOWMETA_HUB_TIMEOUT`` seconds, default 30) and, once a host has failed to answer, fails
further requests to it at once for a minute (``EndpointDown``, an ``httpx2.ConnectError``, so
huggingface_hub still falls back to its cache where it would on a refused connection). A read
timeout alone does not stop an answer that drips a byte at a time, so a body must also arrive at
``MIN_BYTES_PER_S`` on average once its first ``SOWMETA_HUB_TIMEOUT`` seconds have passed, and
within ``deadline(seconds)`` (a pull's, ``SOWMETA_HUB_DEADLINE``) every request must be done. A
``200`` HTML page where the Hub answers JSON or files (a proxy's sign-in page) is refused too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2

from .. import env

__all__ = ["EndpointDown", "TooSlow", "NotTheHub", "install", "forget_failures", "deadline", "MIN_BYTES_PER_S"]

DOWN_FOR_S = 60.0
MIN_BYTES_PER_S = 16 * 1024  # 128 kbit/s: below it, a body is taken for a stalled or hostile answer
_lock = threading.Lock()
_down: dict[str, tuple[float, EndpointDown]] = {}  # host -> (until, the failure)
_deadlines: list[tuple[float, float]] = []  # (monotonic end, seconds) of every deadline() in force, any thread
_installed = False


class EndpointDown(httpx2.ConnectError):
    """The host did not answer within the timeout (or refused), now or a moment ago."""


class TooSlow(EndpointDown):
    """The answer came too slowly: below ``MIN_BYTES_PER_S``, or past the deadline in force."""


class NotTheHub(EndpointDown):
    """A 200 answer that is an HTML page: something between the client and the Hub (a proxy) answered."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every request started inside the block, from any thread, must be answered in full within ``seconds`` of entering it."""
    entry = (time.monotonic() + seconds, seconds)
    with _lock:
        _deadlines.append(entry)
    try:
        yield
    finally:
        with _lock:
            _deadlines.remove(entry)


def _deadline_passed() -> float | None:
    """The seconds of a deadline in force that has passed, else None."""
    with _lock:
        passed = [s for end, s in _deadlines if time.monotonic() > end]
    return min(passed) if passed else None


def forget_failures() -> None:
    """Forget which hosts failed (tests, and a user who fixed the network, call this)."""
    with _lock:
        _down.clear()


def _limits() -> dict[str, float]:
    read = env.hub_timeout()
    return {"connect": min(10.0, read), "read": read, "write": read, "pool": read}


def _fail(host: str, exc: Exception) -> EndpointDown:
    if isinstance(exc, EndpointDown):
        why = str(exc)
    elif isinstance(exc, httpx2.TimeoutException):
        why = f"it did not answer within {env.hub_timeout():g} s"
    elif isinstance(exc, httpx2.ConnectError):
        why = "it refused the connection"
    else:
        why = f"the connection broke ({type(exc).__name__})"
    failure = exc if isinstance(exc, EndpointDown) else EndpointDown(why)
    with _lock:
        _down[host] = (time.monotonic() + DOWN_FOR_S, failure)
    return failure


class _Stream(httpx2.SyncByteStream):
    """A response body whose read errors mark the host as down, and that must keep to the rate floor and the deadline."""

    def __init__(self, inner: httpx2.SyncByteStream, host: str) -> None:
        self.inner, self.host = inner, host

    def __iter__(self) -> Iterator[bytes]:
        start, got, grace = time.monotonic(), 0, env.hub_timeout()
        try:
            for chunk in self.inner:
                got += len(chunk)
                elapsed = time.monotonic() - start
                if elapsed > grace and got < (elapsed - grace) * MIN_BYTES_PER_S:
                    raise TooSlow(f"its answer was sent too slowly ({got:,} bytes in {elapsed:.1f} s; after the first {grace:g} s "
                                  f"at least {MIN_BYTES_PER_S // 1024} KiB/s are needed); check the connection, or raise SOWMETA_HUB_TIMEOUT")
                passed = _deadline_passed()
                if passed is not None:
                    raise TooSlow(f"the transfer did not finish within SOWMETA_HUB_DEADLINE={passed:g} s; check the connection, or raise it")
                yield chunk
        except (httpx2.TimeoutException, httpx2.NetworkError) as exc:
            raise _fail(self.host, exc) from exc

    def close(self) -> None:
        self.inner.close()


class _BoundedTransport(httpx2.HTTPTransport):
    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        host = f"{request.url.host}:{request.url.port}" if request.url.port else str(request.url.host)
        with _lock:
            until, failure = _down.get(host, (0.0, None))
        if failure is not None and time.monotonic() < until:
            if type(failure) is EndpointDown:
                raise EndpointDown(f"{failure}, a moment ago")
            raise type(failure)(str(failure))  # too slow, or not the Hub: the same failure, said the same way
        passed = _deadline_passed()
        if passed is not None:
            raise TooSlow(f"the transfer did not finish within SOWMETA_HUB_DEADLINE={passed:g} s; check the connection, or raise it")
        limits = _limits()
        asked = dict(request.extensions.get("timeout") or {})
        request.extensions = {**request.extensions, "timeout": {k: asked.get(k) or v for k, v in limits.items()}}
        try:
            response = super().handle_request(request)
        except (httpx2.TimeoutException, httpx2.NetworkError) as exc:
            raise _fail(host, exc) from exc
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status_code == 200 and kind == "text/html" and not request.url.path.endswith((".html", ".htm")):
            response.close()
            raise _fail(host, NotTheHub("it answered with an HTML page, not as the Hub does (a proxy's or network's sign-in page?); "
                                        "sign in to the network, or check HF_ENDPOINT"))
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
