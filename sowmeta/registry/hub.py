"""The Hugging Face Hub backend: a bundle is a model repository holding ``sowmeta.json``, its files and a card.

A push is one commit (``create_commit``): the manifest, every file it lists and a generated
README.md, plus the deletion of bundle shards (``stats*.safetensors``) the new manifest no longer
lists. The Hub applies a commit whole or not at all, so an interrupted push leaves the previous
revision in place (and a branch the push created for it is deleted again). A pull is ``snapshot_download`` of ``sowmeta.json``, ``*.safetensors`` and
``README.md`` at one revision into ``<SOWMETA_CACHE>/hub`` (a Hugging Face cache), then a check of
the manifest (schema) and of every file's sha256; a damaged cached copy is downloaded once more
before the pull fails. A whole pull must finish within ``SOWMETA_HUB_DEADLINE`` seconds (default 3600). ``list_cached`` lists the bundles that cache holds.

Environment: ``HF_TOKEN`` (read by huggingface_hub), ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` (re-read
per call through ``sowmeta.env``; offline, a pull is served from the cache or fails with
``OfflineError``). huggingface_hub's errors become ``sowmeta.errors`` with a one-line fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub import errors as hf

from .. import env
from ..hub import http as hub_http
from ..hub.client import api as _api
from ..hub.client import endpoint, mapped as _mapped, offline as _offline, refuse_offline as _refuse_offline
from ..bundle import MANIFEST_NAME, Bundle, Manifest, verify_files
from ..bundle.files import check_contained
from ..errors import (
    BundleNotFoundError,
    NotFoundError,
    ChecksumError,
    ConfigError,
    CorruptBundleError,
    RegistryError,
    SchemaError,
)
from .card import DEFAULT_LICENSE, card_from_manifest, model_card_section, weights_file
from .export import CARD_NAME, export_bundle
from .hub_cache import list_cached
from .records import DEFAULT_REF, BundleEntry, PullResult, PushResult, check_ref, repo_and_subfolder

__all__ = ["HubRegistry", "push", "pull", "list_bundles", "list_cached", "endpoint"]

log = logging.getLogger(__name__)

_SHARD_RE = re.compile(r"^stats(-\d{5}-of-\d{5})?\.safetensors$")


def _reachable(url: str) -> None:
    """One request without retries, so that a dead endpoint fails at once instead of after huggingface_hub's backoff."""
    from huggingface_hub.utils import get_session

    get_session().get(f"{url}/api/models", params={"limit": 1})


def _ensure_repo(api: HfApi, name: str, *, private: bool) -> None:
    """Create the repository unless it exists; refuse ``private`` for an existing public one.

    ``repo_info`` comes first because ``create_repo(exist_ok=True)`` answers a 403 on an existing
    repository with a ``RepoUrl`` parsed against the import-time endpoint, which fails when
    HF_ENDPOINT was changed after import (huggingface_hub 2.4.0).
    """
    try:
        info = api.repo_info(name)
    except hf.GatedRepoError:
        raise
    except hf.RepositoryNotFoundError:
        try:
            api.create_repo(name, private=private)
            return
        except hf.HfHubHTTPError as exc:
            if exc.response is None or exc.response.status_code != 409:  # 409: created meanwhile
                raise
        info = api.repo_info(name)
    if private and not info.private:
        raise ConfigError(
            f"{name} already exists and is public; --private does not change an existing repository: "
            "make it private in its settings on the Hub, or push without --private"
        )


def _model_repo(api: HfApi, repo: str, weights: str | None, upload: Path | None, *, private: bool) -> None:
    """The model repository a subfolder bundle goes into must exist; it is created only when its weights come along."""
    try:
        api.repo_info(repo)
        return
    except hf.GatedRepoError:
        raise
    except hf.RepositoryNotFoundError:
        if upload is None:
            what = f"with its weights {weights}" if weights else "with its weights"
            raise NotFoundError(
                f"{repo} does not exist on the Hub: a bundle in a subfolder is published beside its model; create {repo} "
                f"{what} first, or push with_weights=FILE to upload them in the same commit"
            ) from None
    _ensure_repo(api, repo, private=private)


def _checked_upload(path: str | Path | None, manifest: Manifest) -> Path | None:
    """The weights file ``with_weights`` names, once it is the file the bundle was recorded on (name and sha256)."""
    if path is None:
        return None
    from ..atomic import sha256_file

    src, wanted = Path(path), weights_file(manifest)
    if wanted is None:
        raise ConfigError(f"the bundle names its weights as {manifest.model.weights!r}, which sowmeta fetches itself: push without with_weights")
    if not src.is_file():
        raise ConfigError(f"with_weights: {src} is not a file; pass the weights file {wanted} the bundle was recorded on")
    if sha256_file(src) != manifest.model.weights_sha256:
        raise ConfigError(f"with_weights: {src} is not the weights file the bundle was recorded on ({wanted}, sha256 "
                          f"{manifest.model.weights_sha256[:16]}...); pass that file")
    return src


def _refuse_taken_tag(api: HfApi, repo: str, tag: str) -> None:
    """A tag never moves: refuse one the repository has before anything is committed."""
    try:
        taken = {t.name for t in api.list_repo_refs(repo).tags}
    except hf.RepositoryNotFoundError:
        return
    if tag in taken:
        raise RegistryError(f"{repo} already has a tag {tag!r}; tags never move: choose another tag (nothing was pushed)")


def _missing_weights(repo: str, sub: str, weights: str | None, existing: set[str], upload: Path | None) -> list[CommitOperationAdd]:
    """The commit's upload of the model's weights (with_weights), or nothing; a refusal when the bundle's weights are not there."""
    if weights is None or weights in existing or f"{sub}/{weights}" in existing:
        return []
    if upload is None:
        raise NotFoundError(
            f"{repo} does not hold {weights}, the weights the bundle was recorded on, so no one could synthesize from it: "
            f"upload them to {repo} first, or push with_weights={weights!r} (that file) to add them in the same commit"
        )
    return [CommitOperationAdd(path_in_repo=weights, path_or_fileobj=str(upload))]


def _create_branch(api: HfApi, name: str, branch: str) -> str | None:
    """Create ``branch`` from main; the commit it starts at if this call created it, None if it existed."""
    try:
        api.create_branch(name, branch=branch)
    except hf.HfHubHTTPError as exc:
        if exc.response is None or exc.response.status_code != 409:
            raise
        return None
    return api.repo_info(name, revision=branch).sha


def _drop_branch(api: HfApi, name: str, branch: str, start: str) -> None:
    """Delete a branch this push created if it still points where it started (the commit did not land)."""
    try:
        if api.repo_info(name, revision=branch).sha == start:
            api.delete_branch(name, branch=branch)
    except Exception:  # noqa: BLE001  (the push's own error is the one to report)
        log.warning("could not check or delete branch %s of %s after the failed push; check it on the Hub", branch, name)


def _card_is_ours(text: str) -> bool:
    return "library_name: sowmeta" in text.split("\n---", 1)[0]


def _read_text(api: HfApi, repo: str, path: str, revision: str) -> str | None:
    """A text file of the repository at ``revision`` (None when it has none); read through a throwaway cache,
    so that the user's cache gains no ref for a revision they did not pull."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sowmeta-card-") as tmp:
        try:
            local = api.hf_hub_download(repo, path, revision=revision, cache_dir=tmp)
        except hf.RemoteEntryNotFoundError:
            return None
        return Path(local).read_text(encoding="utf-8")


def _commit_ops(api: HfApi, name: str, branch: str, src: Path, manifest: Manifest, *, upload: Path | None, license: str,
                update_model_card: bool) -> list[CommitOperationAdd | CommitOperationDelete]:
    """The one commit of a push: the bundle's files and card, stale shards deleted, the weights (``with_weights``) and the
    model card's section when asked for; refusals (a model card of its own, missing weights) before anything is sent."""
    repo, sub = repo_and_subfolder(name)
    prefix = f"{sub}/" if sub else ""
    existing = set(api.list_repo_files(repo, revision=branch))
    if not sub and CARD_NAME in existing and not _card_is_ours(_read_text(api, repo, CARD_NAME, branch) or ""):
        raise ConfigError(
            f"{repo} has a model card of its own, which a bundle never replaces; push into a subfolder "
            f"({repo}/sowmeta), optionally with update_model_card=True to link it from that card"
        )
    weights = _missing_weights(repo, sub, weights_file(manifest), existing, upload) if sub else []
    weights_in_repo = bool(manifest.model.weights) and (manifest.model.weights in existing or bool(weights))
    card = card_from_manifest(manifest, name, license=license, manifest_size=(src / MANIFEST_NAME).stat().st_size, weights_in_repo=weights_in_repo)
    ops: list[CommitOperationAdd | CommitOperationDelete] = [
        CommitOperationAdd(path_in_repo=prefix + MANIFEST_NAME, path_or_fileobj=str(src / MANIFEST_NAME)),
        *(CommitOperationAdd(path_in_repo=prefix + f.name, path_or_fileobj=str(src / f.name)) for f in manifest.files),
        CommitOperationAdd(path_in_repo=prefix + CARD_NAME, path_or_fileobj=card.encode("utf-8")),
    ]
    keep = {op.path_in_repo for op in ops}
    stale = [p for p in sorted(existing - keep) if p.startswith(prefix) and _SHARD_RE.match(p[len(prefix):])]
    ops += [CommitOperationDelete(path_in_repo=p) for p in stale] + weights
    if update_model_card:
        section = model_card_section(_read_text(api, repo, CARD_NAME, branch), name, manifest, license=license)
        ops.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=section.encode("utf-8")))
    return ops


def _tag(api: HfApi, repo: str, tag: str, commit: str) -> None:
    """Tag the pushed commit; a tag taken meanwhile (after the check before the commit) leaves it untagged, said so."""
    try:
        api.create_tag(repo, tag=tag, revision=commit)
    except hf.HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 409:
            raise RegistryError(f"{repo} gained a tag {tag!r} during this push; tags never move: the commit {commit} was "
                                "pushed untagged, tag it with another name") from None
        raise


def push(
    bundle_dir: str | Path,
    name: str,
    *,
    revision: str | None = None,
    tag: str | None = None,
    private: bool = False,
    message: str | None = None,
    license: str = DEFAULT_LICENSE,
    update_model_card: bool = False,
    with_weights: str | Path | None = None,
    token: str | None = None,
) -> PushResult:
    """Publish the bundle at ``bundle_dir`` as ``name`` (``ORG/NAME[/SUBFOLDER]``) in one commit on branch ``revision``.

    With a subfolder, the commit touches only ``SUBFOLDER/`` (manifest, data files, the bundle's
    own card ``SUBFOLDER/README.md``): the repository's other files, its model card included, stay
    byte-identical, unless ``update_model_card`` adds (or refreshes) one delimited section to the
    root README linking the bundle. The model's repository must exist and hold the weights file the
    manifest names (when only that file provides them), unless ``with_weights`` uploads it in the same
    commit. Without a subfolder the bundle's card is the repository's README, and a repository whose
    card is not a sowmeta card is refused (push into a subfolder). A taken ``tag`` is refused before
    anything is committed.

    Args:
        bundle_dir: a bundle directory; it is verified (schema, sha256) before anything is sent.
        name: ``ORG/NAME`` or ``ORG/NAME/SUBFOLDER``; the repository is created if needed.
        revision: the branch to commit to (default main; created from main if missing).
        tag: also tag the new commit (a tag never moves: an existing one is refused, before any commit).
        private: create the repository private (an existing public repository is refused).
        message: the commit message.
        license: the card's license id.
        update_model_card: add or refresh the sowmeta section of the root README.md.
        with_weights: the weights file the bundle was recorded on (its sha256 is checked), uploaded to the
            repository's root in the same commit when it is not there (subfolder bundles only).
        token: a Hub token (default: HF_TOKEN or the one ``hf auth login`` saved).

    Raises:
        AuthError, GatedRepoError, NotFoundError, NetworkError, RegistryError, ConfigError, BundleError.
    """
    repo, sub = repo_and_subfolder(name)
    branch = DEFAULT_REF if revision is None else check_ref(revision)
    if tag is not None:
        check_ref(tag)
    if (update_model_card or with_weights is not None) and not sub:
        what = "update_model_card links a bundle in a subfolder from" if update_model_card else "with_weights uploads weights beside a bundle in a subfolder of"
        raise ConfigError(f"{what} the model's repository; push to ORG/NAME/SUBFOLDER")
    src = Path(bundle_dir)
    manifest = Bundle.read_manifest(src)
    check_contained(src, manifest)
    verify_files(src, manifest)
    upload = _checked_upload(with_weights, manifest)
    m = manifest.model
    summary = message or f"sowmeta: publish {m.architecture} bundle ({m.num_classes} classes, {len(manifest.taps)} taps)" + (f" in {sub}/" if sub else "")
    _refuse_offline(f"pushing {name}@{branch}")
    api, url = _api(token), endpoint()
    with _mapped(f"pushing {name}@{branch}", repo, url):
        if sub:
            _model_repo(api, repo, weights_file(manifest), upload, private=private)
        else:
            _ensure_repo(api, repo, private=private)
        if tag is not None:
            _refuse_taken_tag(api, repo, tag)
        start = _create_branch(api, repo, branch) if branch != DEFAULT_REF else None
        try:
            ops = _commit_ops(api, name, branch, src, manifest, upload=upload, license=license, update_model_card=update_model_card)
            info = api.create_commit(repo, ops, commit_message=summary, revision=branch)
        except BaseException:
            if start is not None:  # a new branch at main's bundle would be a wrong revision: remove it
                _drop_branch(api, repo, branch, start)
            raise
        if tag is not None:
            _tag(api, repo, tag, info.oid)
    log.info("pushed %s@%s -> commit %s (%s)", name, branch, info.oid, url)
    return PushResult(name=name, revision=tag or branch, commit=info.oid, backend="hub", url=info.commit_url)


def pull(
    name: str,
    *,
    revision: str | None = None,
    to: str | Path | None = None,
    token: str | None = None,
) -> PullResult:
    """Download ``name`` (``ORG/NAME[/SUBFOLDER]``) at ``revision`` (branch, tag or commit; default main), verify it, return its directory.

    Only the bundle's own files are downloaded: its manifest and card, then exactly the data files
    the manifest lists (never a model's weights beside it), into the standard Hugging Face cache.

    Args:
        name: ``ORG/NAME`` or ``ORG/NAME/SUBFOLDER`` on the Hub.
        revision: what to pin; the resolved commit hash is in the result.
        to: copy the verified bundle to this new (or empty) directory instead of returning the cache path.
        token: a Hub token (default: HF_TOKEN or the one ``hf auth login`` saved).

    Raises:
        NotFoundError, RevisionNotFoundError, GatedRepoError, AuthError, NetworkError, OfflineError,
        BundleNotFoundError (no sowmeta.json there), SchemaError, ChecksumError.
    """
    repo, sub = repo_and_subfolder(name)
    rev = DEFAULT_REF if revision is None else check_ref(revision)
    prefix = f"{sub}/" if sub else ""
    offline = _offline()
    api, url = _api(token), endpoint()

    def download(patterns: list[str], at: str, force: bool = False) -> Path:
        with _mapped(f"pulling {name}@{rev}", repo, url, offline=offline):
            return Path(api.snapshot_download(repo, revision=at, cache_dir=env.hf_hub_cache(), allow_patterns=patterns,
                                              local_files_only=offline, force_download=force))

    def fetch(at: str, force: bool) -> tuple[Path, str, Manifest]:
        """Download the manifest and card, then exactly the files the manifest lists; the bundle folder, commit and manifest."""
        root = download([prefix + MANIFEST_NAME, prefix + CARD_NAME], at, force)
        folder = root / sub if sub else root
        if not (folder / MANIFEST_NAME).is_file():
            raise BundleNotFoundError(f"{name}@{rev} on {url} has no {MANIFEST_NAME}: it is not a sowmeta bundle", path=str(folder))
        manifest = Bundle.read_manifest(folder)
        download([prefix + f.name for f in manifest.files], root.name, force)
        return folder, root.name, manifest  # the Hugging Face cache keeps each revision under snapshots/<commit hash>

    with hub_http.deadline(env.hub_deadline()):
        folder, commit, manifest = _fetch_verified(fetch, rev, name, url, offline)
    path = export_bundle(folder, manifest, to) if to is not None else folder
    log.info("pulled %s@%s (commit %s) -> %s", name, rev, commit, path)
    return PullResult(name=name, revision=rev, commit=commit, path=path, backend="hub", manifest=manifest)


def _fetch_verified(fetch: Callable[[str, bool], tuple[Path, str, Manifest]], rev: str, name: str, url: str, offline: bool) -> tuple[Path, str, Manifest]:
    """Fetch, then verify every file against the manifest fetched; a damaged cached copy is downloaded once more before the pull fails."""
    commit = rev
    try:
        folder, commit, manifest = fetch(rev, False)
        verify_files(folder, manifest)
    except (SchemaError, ChecksumError, CorruptBundleError) as exc:
        if offline:
            raise type(exc)(f"{exc.detail}; the cached copy is damaged: unset HF_HUB_OFFLINE and pull again", path=exc.path, rule=exc.rule) from None
        log.warning("cached copy of %s@%s failed verification (%s); downloading it again", name, rev, exc)
        try:
            folder, commit, manifest = fetch(commit, True)
            verify_files(folder, manifest)
        except (SchemaError, ChecksumError, CorruptBundleError) as again:
            raise type(again)(
                f"{again.detail}; downloaded twice from {url}: the published revision is damaged, ask its publisher to push it again",
                path=again.path, rule=again.rule,
            ) from None
    return folder, commit, manifest


def list_bundles(*, author: str | None = None) -> list[BundleEntry]:
    """The Hub repositories tagged ``sowmeta`` (optionally of one user or organization), newest first."""
    _refuse_offline("listing sowmeta bundles on the Hub")
    api, url = _api(), endpoint()
    with _mapped("listing sowmeta bundles", author or "", url):
        _reachable(url)
        models = list(api.list_models(filter="sowmeta", author=author, expand=["sha", "lastModified", "private"]))
    entries = [
        BundleEntry(
            name=m.id,
            commit=m.sha,
            backend="hub",
            refs=(DEFAULT_REF,) if m.sha else (),
            url=f"{url}/{m.id}",
            updated=m.last_modified.isoformat().replace("+00:00", "Z") if m.last_modified else None,
            private=m.private,
        )
        for m in models
    ]
    return sorted(entries, key=lambda e: e.updated or "", reverse=True)


def resolve(name: str, revision: str | None = None) -> str:
    """The commit ``name@revision`` (default main) points at on the Hub now."""
    repo, _ = repo_and_subfolder(name)
    rev = DEFAULT_REF if revision is None else check_ref(revision)
    _refuse_offline(f"resolving {name}@{rev}")
    api, url = _api(), endpoint()
    with _mapped(f"resolving {name}@{rev}", repo, url):
        return str(api.repo_info(repo, revision=rev).sha)


class HubRegistry:
    """The Hugging Face Hub (``HF_ENDPOINT``) as a ``Backend``."""

    kind = "hub"
    root = None

    def __init__(self, *, why: str = "registry argument") -> None:
        self.why = why

    def push(self, bundle_dir: str | Path, name: str, *, revision: str | None = None, message: str | None = None, **options: Any) -> PushResult:
        return push(bundle_dir, name, revision=revision, message=message, **options)

    def pull(self, name: str, *, revision: str | None = None, to: str | Path | None = None, token: str | None = None) -> PullResult:
        return pull(name, revision=revision, to=to, token=token)

    def list(self, *, author: str | None = None) -> list[BundleEntry]:
        return list_bundles(author=author)

    def resolve(self, name: str, revision: str | None = None) -> str:
        return resolve(name, revision)

    def __repr__(self) -> str:
        return f"HubRegistry({endpoint()!r}, why={self.why!r})"
