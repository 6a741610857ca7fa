"""The reader keeps reading every released format version (golden files written by sowmeta 0.1.0)."""

from __future__ import annotations

from pathlib import Path

import torch

from sowmeta.bundle import Bundle

GOLDEN = Path(__file__).parent / "golden"


def test_reads_format_1_0():
    b = Bundle.load(GOLDEN / "bundle-v1.0", classes=[2, 0])
    assert b.manifest.format_version == "1.0" and b.manifest.model.architecture == "golden-net"
    assert b.counts.tolist() == [3, 1]
    torch.testing.assert_close(b.stats["features.1"].mean, torch.tensor([[1.0, 1.25], [0.0, 0.25]]))
    torch.testing.assert_close(b.stats["features.1"].var, torch.tensor([[0.625, 0.75], [0.125, 0.25]]))
    torch.testing.assert_close(b.stats["linear:in"].mean, torch.tensor([[-4.0, -5.0], [-0.0, -1.0]]))
    torch.testing.assert_close(b.stats["linear:in"].global_var, torch.tensor([3.0, 3.25]))
    assert [t.kind for t in b.manifest.taps] == ["bn-input", "input"]
