"""A bundle reference becomes a verified local directory once per run: the manifest is read once and every file
hashed at most once before synthesis starts, whether the bundle is a directory or a registry name."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import loaded_tiny, write_image_folder

from sowmeta.bundle import files as bundle_files
from sowmeta.bundle.manifest import Manifest
from sowmeta.cli.main import main
from sowmeta.collectors import collect
from sowmeta.registry import push


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every manifest parsed (Manifest.from_dict, which every reader goes through) and every file hashed in full."""
    seen: dict[str, list[str]] = {"manifests": [], "hashes": []}
    parse, sha = Manifest.from_dict.__func__, bundle_files.sha256_file  # type: ignore[attr-defined]

    def counting_parse(cls, data, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["manifests"].append(str(kwargs.get("path", "")))
        return parse(cls, data, *args, **kwargs)

    def counting_sha(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["hashes"].append(Path(path).name)
        return sha(path, *args, **kwargs)

    monkeypatch.setattr(Manifest, "from_dict", classmethod(counting_parse))
    monkeypatch.setattr(bundle_files, "sha256_file", counting_sha)
    return seen


@pytest.fixture
def tiny_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    folder = write_image_folder(tmp_path / "data", classes=4, per_class=3, size=12)
    collect(loaded_tiny(), folder, out=tmp_path / "b", batch_size=6)
    return tmp_path / "b"


def _synthesize(bundle: str, out: Path) -> None:
    args = ["synthesize", "--bundle", bundle, "--model", "conftest:tiny_net", "--weights", "none", "--classes", "0,1", "--per-class", "2",
            "--iterations", "2", "--batch-size", "2", "--no-fingerprint-check", "--out", str(out), "-q", "--allow-low-confidence"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output


def test_a_registry_name_is_pulled_read_and_hashed_once(tiny_bundle: Path, tmp_path: Path, counted: dict[str, list[str]]):
    push(tiny_bundle, "me/tiny")
    counted["manifests"].clear(), counted["hashes"].clear()
    _synthesize("me/tiny", tmp_path / "s.h5")
    assert len(counted["manifests"]) == 1, counted["manifests"]  # the pull's read; every later stage takes it from there
    assert sorted(counted["hashes"]) == ["stats.safetensors"]  # the pull's verification, nothing after it


def test_a_directory_is_read_once_and_its_files_hashed_at_most_once(tiny_bundle: Path, tmp_path: Path, counted: dict[str, list[str]],
                                                                    monkeypatch: pytest.MonkeyPatch):
    import time

    from sowmeta.bundle import verified

    monkeypatch.setattr(verified, "RACY_SECONDS", 0.05)  # a file written within this of its check is checked again next time
    time.sleep(0.1)
    counted["manifests"].clear(), counted["hashes"].clear()
    _synthesize(str(tiny_bundle), tmp_path / "s.h5")
    assert len(counted["manifests"]) == 1, counted["manifests"]
    assert counted["hashes"] in ([], ["stats.safetensors"])  # remembered from the collect that wrote it, or hashed once
    counted["manifests"].clear(), counted["hashes"].clear()
    _synthesize(str(tiny_bundle), tmp_path / "t.h5")  # a second run: verified before and unchanged
    assert len(counted["manifests"]) == 1 and counted["hashes"] == []


def test_the_api_locates_a_name_once_too(tiny_bundle: Path, counted: dict[str, list[str]]):
    from sowmeta import SynthConfig, synthesize

    push(tiny_bundle, "me/tiny")
    counted["manifests"].clear(), counted["hashes"].clear()
    synthesize("me/tiny", loaded_tiny(), classes=[0], per_class=1, config=SynthConfig(iterations=1, batch_size=1, check_fingerprint=False))
    assert len(counted["manifests"]) == 1 and counted["hashes"] == ["stats.safetensors"]
