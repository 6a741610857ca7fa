"""The reader keeps reading every released format version (golden files in the layout of sowmeta 0.1.0).

The files were written by hand in each version's layout; their global statistics are the
count-weighted pooling of their rows, as the format requires (rule ``global-pooling``).
"""

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
    torch.testing.assert_close(b.stats["linear:in"].global_var, torch.tensor([29 / 9, 29 / 9]))
    assert [t.kind for t in b.manifest.taps] == ["bn-input", "input"]


def test_reads_format_1_1_with_token_taps():
    b = Bundle.load(GOLDEN / "bundle-v1.1", classes=[2, 0])
    m = b.manifest
    assert m.format_version == "1.1" and m.model.structure == "sha256:" + "ef" * 32 and m.source.empty_classes == [1]
    assert [(t.name, t.kind, t.axis, t.prefix_tokens) for t in m.taps] == [("stem", "conv-output", 1, 0), ("blocks.0", "block-output", -1, 1)]
    assert b.counts.tolist() == [5, 2]
    torch.testing.assert_close(b.stats["blocks.0"].mean, torch.tensor([[-1.0, 0.75], [3.0, 4.0]]))
    torch.testing.assert_close(b.stats["blocks.0"].var, torch.tensor([[2.0, 0.0625], [0.25, 1.5]]))
    torch.testing.assert_close(b.stats["stem"].global_var, torch.tensor([89 / 98, 83 / 49]))
    assert [t.tap.axis for t in m.taps] == [1, -1]  # the records rebuild the taps the synthesis engine hooks
    assert m.source.compression is None  # before 1.2: not recorded


def test_reads_format_1_2_with_the_source_compression():
    b = Bundle.load(GOLDEN / "bundle-v1.2", classes=[0])
    m = b.manifest
    assert m.format_version == "1.2" and m.source.compression == {
        "files_sampled": 3, "jpeg_files": 2, "quality": 75, "subsampling": "4:2:0", "width": 32, "height": 32
    }
    torch.testing.assert_close(b.stats["blocks.0"].mean, torch.tensor([[3.0, 4.0]]))
    assert not m.has_image_var and b.stats["blocks.0"].image_var is None  # before 1.3: not recorded


def test_a_1_0_bundle_reads_as_channel_axis_1():
    m = Bundle.read_manifest(GOLDEN / "bundle-v1.0")
    assert [(t.axis, t.prefix_tokens) for t in m.taps] == [(1, 0), (1, 0)]


def test_golden_globals_are_the_pooled_rows():
    """Pooled by hand from each golden file's rows (float64), as docs/format.md defines: the stored globals match."""
    for version in ("1.0", "1.1", "1.2"):
        b = Bundle.load(GOLDEN / f"bundle-v{version}")
        n = b.counts.double().unsqueeze(1)
        for s in b.stats.values():
            mean, var = s.mean.double(), s.var.double()
            pooled_mean = (n * mean).sum(0) / n.sum()
            pooled_var = (n * (var + (mean - pooled_mean).square())).sum(0) / n.sum()
            torch.testing.assert_close(s.global_mean.double(), pooled_mean, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(s.global_var.double(), pooled_var, rtol=1e-6, atol=1e-7)
