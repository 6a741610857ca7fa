"""Two gloo processes, each collecting its shard, merge to the single-process result."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sowmeta.bundle import Bundle


def _worker(rank: int, world: int, init: str, folder: str, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_collect import loaded_tiny

    from sowmeta.collectors import collect

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        bundle, report = collect(loaded_tiny(), folder, batch_size=2)
        assert report.images == 15, report.images  # merged count, on every rank
        if rank == 0:
            bundle.save(out)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(image_folder: Path, tmp_path: Path):
    from test_collect import loaded_tiny

    from sowmeta.collectors import collect

    init = f"file://{tmp_path / 'rendezvous'}"
    out = tmp_path / "dist-bundle"
    mp.spawn(_worker, args=(2, init, str(image_folder), str(out)), nprocs=2, join=True)
    single, _ = collect(loaded_tiny(), image_folder, batch_size=5)
    merged = Bundle.load(out)
    assert merged.counts.tolist() == single.counts.tolist()
    for tap in single.stats:
        torch.testing.assert_close(merged.stats[tap].mean, single.stats[tap].mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(merged.stats[tap].var, single.stats[tap].var, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(merged.stats[tap].global_var, single.stats[tap].global_var, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(merged.stats[tap].image_var, single.stats[tap].image_var, rtol=1e-6, atol=1e-7)


def test_torchrun_cli_equals_single_process(image_folder: Path, tmp_path: Path):
    """`torchrun --nproc-per-node 2 sowmeta collect ...` writes the single-process bundle."""
    import os
    import shutil
    import subprocess

    from click.testing import CliRunner

    from sowmeta.cli.main import main

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    sowmeta_bin = shutil.which("sowmeta", path=str(Path(sys.executable).parent))
    if torchrun is None or sowmeta_bin is None:
        import pytest

        pytest.skip("torchrun or the sowmeta entry point is not installed beside this python")
    args = ["collect", "--model", "conftest:tiny_net", "--weights", "none", "--crop", "12", "--workers", "0", "--data", str(image_folder)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", sowmeta_bin, *args, "--out", str(tmp_path / "tr"), "--batch-size", "3"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one"), "--batch-size", "7"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    a, b = Bundle.load(tmp_path / "tr"), Bundle.load(tmp_path / "one")
    assert a.counts.tolist() == b.counts.tolist() == [5, 5, 5, 0]
    for tap in b.stats:
        torch.testing.assert_close(a.stats[tap].mean, b.stats[tap].mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a.stats[tap].var, b.stats[tap].var, rtol=1e-6, atol=1e-7)
