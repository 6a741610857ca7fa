"""The Hugging Face Hub from sowmeta: one client (bounded timeouts, the standard cache), errors mapped to sowmeta's.

Used by the registry's Hub backend (bundles) and by the model sources and weights that live
on the Hub (``hf-hub:`` models, ``hf://`` weights). ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are
re-read per call (huggingface_hub reads them once, at import); downloads go to the standard
Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
so ``hf cache`` lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub import errors as hf

from .. import env
from . import http as hub_http
from ..errors import (
    AuthError,
    ConfigError,
    GatedRepoError,
    NetworkError,
    NotFoundError,
    OfflineError,
    RegistryError,
    RevisionNotFoundError,
    SowmetaError,
    first_line,
)
from ..version import __version__

__all__ = ["endpoint", "offline", "api", "mapped", "refuse_offline", "fetch_file", "fetch_snapshot", "commit_of"]

log = logging.getLogger(__name__)


def endpoint() -> str:
    """The Hub URL in use: ``HF_ENDPOINT`` now, else huggingface_hub's default."""
    return env.hf_endpoint() or constants.ENDPOINT


def offline() -> bool:
    """``HF_HUB_OFFLINE`` now (the environment) or at import (huggingface_hub's constant)."""
    return env.hf_offline() or constants.HF_HUB_OFFLINE


def api(token: str | None = None) -> HfApi:
    """An ``HfApi`` for the endpoint in use, over the bounded HTTP client (``token``: else HF_TOKEN or the saved login).

    The timeouts are read here first, so that a mistyped ``SOWMETA_HUB_TIMEOUT`` or ``SOWMETA_HUB_DEADLINE`` is one
    line before any request, not an error deep inside huggingface_hub."""
    env.hub_timeout()
    env.hub_deadline()
    hub_http.install()
    return HfApi(endpoint=endpoint(), token=token, library_name="sowmeta", library_version=__version__)


def _translate(exc: BaseException, what: str, repo: str, url: str, *, offline: bool) -> SowmetaError | None:
    """Map one huggingface_hub / httpx2 exception to a sowmeta error with a one-line message."""
    if isinstance(exc, hf.GatedRepoError):
        return GatedRepoError(
            f"{repo} is gated on {url}: request access at {url}/{repo}, then set HF_TOKEN to a token of the approved account"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return RevisionNotFoundError(f"{what}: {url} has no such branch, tag or commit; check the revision (default main)")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return NotFoundError(
            f"{what}: {url} has no repository {repo}, or it is private and the token (HF_TOKEN or `hf auth login`) "
            "cannot see it; check the name or set HF_TOKEN"
        )
    if isinstance(exc, hf.OfflineModeIsEnabled) or (isinstance(exc, hf.LocalEntryNotFoundError) and offline):
        return OfflineError(
            f"{what}: not in the cache and HF_HUB_OFFLINE=1 forbids downloading; pull it once online or unset HF_HUB_OFFLINE"
        )
    if isinstance(exc, hf.HfHubHTTPError):
        code = exc.response.status_code if exc.response is not None else 0
        detail = first_line(exc.server_message)
        status = f"({code}: {detail})" if detail else f"({code})"
        if code == 401:
            return AuthError(f"{what}: {url} refused the credentials {status}; set HF_TOKEN to a valid token or run `hf auth login`")
        if code == 403:
            return AuthError(f"{what}: {url} denied access {status}; use a token with write access to {repo.split('/')[0]}")
        if code == 429 or code >= 500:
            return NetworkError(f"{what}: {url} answered {status}; retry later")
        return RegistryError(f"{what}: {url} answered {status}")
    if isinstance(exc, hf.LocalEntryNotFoundError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, hf.HfHubHTTPError):  # the Hub answered with an error and nothing was cached
            return _translate(cause, what, repo, url, offline=offline)
        if isinstance(cause, (hub_http.TooSlow, hub_http.NotTheHub)):  # their text says what to do
            return NetworkError(f"{what}: {url}: {first_line(str(cause))}")
        if isinstance(cause, hub_http.EndpointDown):
            return NetworkError(f"{what}: cannot reach {url}: {first_line(str(cause))}, and nothing is cached; check the connection or HF_ENDPOINT")
        reason = f" ({type(cause).__name__})" if cause is not None else ""
        return NetworkError(f"{what}: cannot reach {url}{reason} and nothing is cached; check the connection or HF_ENDPOINT")
    if isinstance(exc, (hub_http.TooSlow, hub_http.NotTheHub)):
        return NetworkError(f"{what}: {url}: {first_line(str(exc))}")
    if isinstance(exc, hub_http.EndpointDown):
        return NetworkError(f"{what}: cannot reach {url}: {first_line(str(exc))}; check the connection or HF_ENDPOINT, or raise SOWMETA_HUB_TIMEOUT")
    if isinstance(exc, httpx2.TransportError):
        if what.startswith("pushing") and not isinstance(exc, httpx2.ConnectError):
            return NetworkError(
                f"{what}: the connection to {url} broke ({type(exc).__name__}); a Hub commit is all or nothing, "
                "so the repository keeps its previous revision unless the commit completed: push again"
            )
        if not isinstance(exc, httpx2.ConnectError):  # connected, then the answer broke off (a body shorter than announced)
            return NetworkError(f"{what}: the connection to {url} broke during the answer ({type(exc).__name__}: {first_line(str(exc))}); retry")
        return NetworkError(f"{what}: cannot reach {url} ({type(exc).__name__}); check the connection or HF_ENDPOINT and retry")
    if isinstance(exc, OSError) and "consistency check failed" in str(exc).lower():  # huggingface_hub: a file shorter than announced
        return NetworkError(f"{what}: the connection to {url} gave a file of another size than announced ({first_line(str(exc))}); retry")
    if isinstance(exc, hf.HFValidationError):
        return ConfigError(f"{what}: {first_line(str(exc))}")
    return None


@contextmanager
def mapped(what: str, repo: str, url: str, *, offline: bool = False) -> Iterator[None]:
    try:
        yield
    except SowmetaError:
        raise
    except Exception as exc:
        mapped = _translate(exc, what, repo, url, offline=offline)
        if mapped is None:
            raise
        log.debug("%s failed", what, exc_info=True)
        raise mapped from exc


def refuse_offline(what: str) -> None:
    """Raise ``OfflineError`` when HF_HUB_OFFLINE forbids talking to the Hub."""
    if offline():
        raise OfflineError(f"{what}: HF_HUB_OFFLINE=1 forbids talking to the Hub; unset HF_HUB_OFFLINE")


def commit_of(path: Path) -> str:
    """The commit a file or folder of the Hugging Face cache belongs to (``.../snapshots/<commit>/...``)."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else ""


def fetch_file(repo: str, filename: str, *, revision: str | None = None) -> Path:
    """One file of a Hub model repository, downloaded into the standard cache (or found there offline)."""
    rev = revision or "main"
    url, off = endpoint(), offline()
    with mapped(f"downloading {repo}@{rev}/{filename}", repo, url, offline=off):
        return Path(api().hf_hub_download(repo, filename, revision=rev, cache_dir=env.hf_hub_cache(), local_files_only=off))


def fetch_snapshot(repo: str, *, revision: str | None = None, patterns: list[str] | None = None, force: bool = False) -> Path:
    """The files of a Hub model repository matching ``patterns`` at ``revision``, in the standard cache; their folder."""
    rev = revision or "main"
    url, off = endpoint(), offline()
    with mapped(f"downloading {repo}@{rev}", repo, url, offline=off):
        return Path(api().snapshot_download(repo, revision=rev, cache_dir=env.hf_hub_cache(), allow_patterns=patterns,
                                            local_files_only=off, force_download=force))
