"""Fixtures for the registry tests: tiny real bundles, an isolated environment, a Hub-compatible server.

``tests/conftest.py`` imports these with ``from registry_fixtures import *``; the registry test
modules also import the ones they use, so they run whether or not conftest does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from torch import nn

__all__ = [
    "HUB_USER",
    "HUB_ORG",
    "HUB_TOKEN",
    "OTHER_TOKEN",
    "make_tiny_bundle",
    "bundle_bytes",
    "registry_env",
    "make_bundle",
    "fake_hub",
]

HUB_USER, HUB_ORG = "alice", "sowmeta-test"
HUB_TOKEN = "hf_test_alice_write"  # alice may write to alice/* and sowmeta-test/*
OTHER_TOKEN = "hf_test_bob"  # bob may write to bob/* only
UNREACHABLE = "http://127.0.0.1:9"  # a closed local port: a stray request fails at once, never the internet


def make_tiny_bundle(path: Path, *, seed: int = 0, num_classes: int = 3, base_model: str | None = None,
                     shard_bytes: int | None = None) -> Path:
    """Build and save a real bundle through the public API: a Conv-BN model, bn-input taps, random data."""
    from sowmeta.bundle import Bundle, ModelRecord, SourceRecord
    from sowmeta.models import fingerprint
    from sowmeta.models.preprocess import Preprocessing
    from sowmeta.moments.class_moments import ClassMoments
    from sowmeta.models.taps import probe_channels, resolve_taps, tap_hooks

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
    ).eval()
    taps = resolve_taps(model, "bn-inputs")
    channels = probe_channels(model, taps, 8)
    moments = {t.name: ClassMoments.zeros(num_classes, channels[t.name]) for t in taps}
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * num_classes, 3, 8, 8, generator=g)
    labels = torch.arange(2 * num_classes) % num_classes

    def record(tap, feat: torch.Tensor) -> None:  # noqa: ANN001
        moments[tap.name].update(feat, labels)

    with torch.no_grad(), tap_hooks(model, taps, record):
        model(x)
    record_ = ModelRecord(
        architecture="tiny-seq", fingerprint=fingerprint(model), num_classes=num_classes,
        labels=[f"class-{k}" for k in range(num_classes)], base_model=base_model,
    )
    bundle = Bundle.from_moments(
        moments, taps, model=record_, preprocessing=Preprocessing(crop=8),
        source=SourceRecord(scenario="A", collector="after-training", data="random", images=0),
    )
    kwargs = {"shard_bytes": shard_bytes} if shard_bytes is not None else {}
    bundle.save(path, **kwargs)
    return path


def bundle_bytes(path: Path) -> dict[str, bytes]:
    """``sowmeta.json`` and every file its manifest lists, read straight from disk."""
    manifest = json.loads((path / "sowmeta.json").read_bytes())
    names = ["sowmeta.json", *(f["name"] for f in manifest["files"])]
    return {n: (path / n).read_bytes() for n in names}


@pytest.fixture
def registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Send every cache (sowmeta, local registry, Hugging Face) to tmp_path and cut the Hub off."""
    import huggingface_hub.constants as hf_constants
    from huggingface_hub.utils import _detect_agent, close_session, disable_progress_bars, enable_progress_bars

    base = tmp_path / "env"
    monkeypatch.setenv("SOWMETA_CACHE", str(base / "sowmeta"))
    monkeypatch.setenv("SOWMETA_REGISTRY", str(base / "registry"))
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(base / "hf" / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub read these at import: point them away from the user's files and the internet.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(base / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(base / "hf" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(base / "hf" / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(base / "hf" / "stored_tokens"))
    monkeypatch.setattr(_detect_agent, "_registry", _detect_agent._EMPTY_REGISTRY)
    disable_progress_bars()
    yield base
    enable_progress_bars()
    close_session()


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    """``make_bundle(seed=0, **kw)`` -> a fresh bundle directory under tmp_path (see ``make_tiny_bundle``)."""
    count = iter(range(1_000_000))

    def make(seed: int = 0, **kwargs: object) -> Path:
        return make_tiny_bundle(tmp_path / "bundles" / f"b{next(count)}-s{seed}", seed=seed, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def fake_hub(registry_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A Hub-compatible server on 127.0.0.1; HF_ENDPOINT points at it and HF_TOKEN is alice's write token."""
    server = HubServer(tokens={HUB_TOKEN: HUB_USER, OTHER_TOKEN: "bob"}, orgs={HUB_USER: {HUB_ORG}}).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    yield server
    server.stop()
