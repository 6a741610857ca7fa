"""Differentially private collection and the audit: clipping, noise scale, the membership test, the bound.

Every figure is checked against a recomputation by another route: per-image features read by a
forward hook in float64, clipped by the formula of docs/privacy.md written out here, and the noise
multiplier asked of opacus directly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import loaded_tiny, write_image_folder

pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
pytest.importorskip("opacus", reason="differential privacy needs opacus (pip install 'sowmeta[dp]')")

from sowmeta.collectors import CollectOptions, collect, collect_seeds  # noqa: E402
from sowmeta.collectors.private import PrivateRecorder, plan_privacy  # noqa: E402
from sowmeta.errors import ConfigError  # noqa: E402
from sowmeta.models.taps import resolve_taps  # noqa: E402
from sowmeta.privacy.membership import advantage_bound, separation  # noqa: E402

TAPS = ("bn1", "bn2")


def _images(per_class: int, classes: int = 4, seed: int = 0, loud: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``classes`` classes, the first ``loud`` of them scaled x6 so that clipping bites."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.randn(len(y), 3, 12, 12, generator=g) + torch.linspace(-1, 1, classes)[y].view(-1, 1, 1, 1)
    x[:loud] *= 6
    return x, y


def _reference(module: torch.nn.Module, x: torch.Tensor, clip: float) -> dict[str, tuple[float, torch.Tensor, torch.Tensor]]:
    """Per tap: the bound B, and each image's clipped mean m and mean square s [N, C], in float64 from a forward hook."""
    named = dict(module.named_modules())
    feats: dict[str, torch.Tensor] = {}
    hooks = [named[t].register_forward_pre_hook(lambda m_, a, t=t: feats.__setitem__(t, a[0].double())) for t in TAPS]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    out = {}
    for t in TAPS:
        bn = named[t]
        bound = clip * float(((bn.running_mean.double() ** 2 + bn.running_var.double()) ** 2).mean() ** 0.25)
        m, s = feats[t].mean(dim=(2, 3)), (feats[t] ** 2).mean(dim=(2, 3))
        energy = (s**2).mean(dim=1) ** 0.25
        factor = torch.clamp(bound / energy, max=1.0).unsqueeze(1)
        out[t] = (bound, m * factor, s * factor**2)
    return out


def _recorded_sums(model, x: torch.Tensor, y: torch.Tensor, clip: float):
    """The library's clipped sums after one pass (the recorder ``collect`` uses with differential privacy)."""
    module = model.module.eval()
    taps = resolve_taps(module, "bn-inputs")
    plan = plan_privacy(CollectOptions(dp_epsilon=1.0, dp_delta=1e-5, dp_clip=clip), module, taps)
    rec = PrivateRecorder(module, taps, 4, plan)
    rec.allocate({t.name: dict(module.named_modules())[t.module].num_features for t in taps})
    with rec.hooks(), torch.no_grad():
        for i in range(0, len(y), 5):
            rec.set_labels(y[i:i + 5])
            module(x[i:i + 5])
    rec.reduce()
    return rec.sums


def test_clipped_sums_match_a_float64_recomputation_and_one_image_moves_them_by_at_most_the_sensitivity():
    model = loaded_tiny()
    x, y = _images(per_class=5)
    clip = 1.2
    sums = _recorded_sums(model, x, y, clip)
    ref = _reference(model.module, x, clip)
    assert sums.counts.tolist() == torch.bincount(y, minlength=4).double().tolist()
    assert sums.sensitivity == pytest.approx(math.sqrt(1 + 3 * len(TAPS)))
    clipped = 0
    for t, (bound, m, s) in ref.items():
        expect = [torch.zeros(4, m.shape[1], dtype=torch.float64).index_add_(0, y, v) for v in (m, s, m**2)]
        for got, want in zip((sums.taps[t].s1, sums.taps[t].s2, sums.taps[t].s3), expect):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        clipped += int((((s**2).mean(1) ** 0.25) > bound * (1 - 1e-9)).sum())
    assert clipped >= 2, "the test needs images that clipping bounds"
    # removing image j changes its class's count by 1 and each tap's sums by its clipped moments:
    # scaled by the stated bounds (1, B sqrt(C), B^2 sqrt(C), B^2 sqrt(C)) the whole change is <= sqrt(1 + 3 T)
    worst = 0.0
    for j in range(len(y)):
        sq = 1.0
        for bound, m, s in ref.values():
            root = math.sqrt(m.shape[1])
            parts = (m[j].norm() / (bound * root), s[j].norm() / (bound**2 * root), (m[j] ** 2).norm() / (bound**2 * root))
            assert max(float(p) for p in parts) <= 1 + 1e-9
            sq += sum(float(p) ** 2 for p in parts)
        worst = max(worst, math.sqrt(sq))
    assert worst <= sums.sensitivity + 1e-9
    assert worst > 0.5 * sums.sensitivity  # the loud images come near it: the bound is not vacuous here


def _opacus_sigma(epsilon: float, delta: float) -> float:
    """The accountant's noise multiplier for one release, and a check that it spends epsilon (to 0.1 %) and no more."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=1, accountant="rdp",
                                 epsilon_tolerance=0.001 * epsilon)
    accountant = RDPAccountant()
    accountant.history = [(sigma, 1.0, 1)]
    assert epsilon * 0.998 <= accountant.get_epsilon(delta) <= epsilon
    return sigma


def test_noise_has_the_accountants_scale_over_repeated_releases():
    model = loaded_tiny()
    x, y = _images(per_class=5)
    sums = _recorded_sums(model, x, y, 1.5)
    sigma = _opacus_sigma(2.0, 1e-5)
    g = torch.Generator().manual_seed(1)
    draws = [sums.noisy(sigma, g) for _ in range(300)]
    expect = sigma * math.sqrt(1 + 3 * len(TAPS))
    counts = torch.stack([c for c, _ in draws]) - sums.counts
    assert float(counts.std()) == pytest.approx(expect, rel=0.05)
    for t in TAPS:
        bound, width = sums.taps[t].bound, sums.taps[t].s1.shape[1]
        for i, (clean, scale) in enumerate(((sums.taps[t].s1, bound * width**0.5), (sums.taps[t].s2, bound**2 * width**0.5), (sums.taps[t].s3, bound**2 * width**0.5))):
            noise = torch.stack([d[1][t][i] for d in draws]) - clean
            assert float(noise.std()) / scale == pytest.approx(expect, rel=0.03), (t, i)
            assert abs(float(noise.mean())) / scale < 0.05 * expect


def test_noise_has_the_accountants_scale_over_repeated_collections():
    """Thirty whole collections: each released class mean x released count, less the clipped sum, is the noise."""
    model = loaded_tiny()
    x, y = _images(per_class=40, loud=0)
    clean = _recorded_sums(model, x, y, 1.5)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    noise = {t: [] for t in TAPS}
    for _ in range(30):
        bundle, _ = collect(model, loader, dp_epsilon=4.0, dp_delta=1e-5, dp_clip=1.5)
        assert bundle.manifest.source.privacy["noise_multiplier"] == pytest.approx(_opacus_sigma(4.0, 1e-5), rel=1e-6)
        for t in TAPS:
            noise[t].append(bundle.stats[t].mean.double() * bundle.counts.double().unsqueeze(1) - clean.taps[t].s1)
    expect = _opacus_sigma(4.0, 1e-5) * math.sqrt(1 + 3 * len(TAPS))
    for t in TAPS:
        scale = clean.taps[t].bound * clean.taps[t].s1.shape[1] ** 0.5
        assert float(torch.stack(noise[t]).std()) / scale == pytest.approx(expect, rel=0.06), t


def test_the_manifest_records_the_guarantee_and_the_bundle_stays_valid(tmp_path: Path):
    from sowmeta.bundle import Bundle

    x, y = _images(per_class=30, loud=0)
    bundle, report = collect(loaded_tiny(), DataLoader(TensorDataset(x, y), batch_size=16), dp_epsilon=8.0, dp_delta=1e-5, out=tmp_path / "b")
    p = Bundle.load(tmp_path / "b").manifest.source.privacy
    assert p["mechanism"] == "gaussian" and p["epsilon"] == 8.0 and p["delta"] == 1e-5 and p["clip"] == 1.5
    assert p["accountant"]["name"] == "opacus.rdp" and p["accountant"]["version"]
    assert p["sensitivity"] == pytest.approx(math.sqrt(7))
    assert Bundle.read_manifest(tmp_path / "b").format_version == "1.5"
    for t in TAPS:  # post-processing: variances >= 0 and image_var <= var, as the format requires
        s = bundle.stats[t]
        assert bool((s.var >= 0).all()) and bool((s.image_var <= s.var).all())


def test_collectors_that_cannot_keep_the_bound_refuse(tmp_path: Path):
    x, y = _images(per_class=3)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    with pytest.raises(ConfigError, match="both --dp-epsilon and --dp-delta"):
        collect(loaded_tiny(), loader, dp_epsilon=1.0)
    with pytest.raises(ConfigError, match="finite number"):
        collect(loaded_tiny(), loader, dp_epsilon=math.inf, dp_delta=1e-5)
    with pytest.raises(ConfigError, match="--fuse"):
        collect(loaded_tiny(), loader, dp_epsilon=1.0, dp_delta=1e-5, fuse=True)
    with pytest.raises(ConfigError, match="not the input of a BatchNorm"):
        collect(loaded_tiny(), loader, dp_epsilon=1.0, dp_delta=1e-5, taps="conv3")
    seeds = write_image_folder(tmp_path / "seeds", classes=2, per_class=1)
    with pytest.raises(ConfigError, match="not for seed images"):
        collect_seeds(loaded_tiny(), seeds, dp_epsilon=1.0, dp_delta=1e-5)


def test_a_missing_accountant_is_one_line(monkeypatch: pytest.MonkeyPatch):
    import builtins

    real = builtins.__import__

    def no_opacus(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if name.startswith("opacus"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_opacus)
    from sowmeta.privacy.accountant import noise_multiplier

    with pytest.raises(ConfigError, match=r"pip install 'sowmeta\[dp\]'"):
        noise_multiplier(1.0, 1e-5)


def test_advantage_and_auc_agree_with_brute_force():
    g = torch.Generator().manual_seed(3)
    members, others = torch.randn(40, generator=g) + 0.8, torch.randn(50, generator=g)
    others[:5] = members[:5]  # ties across the groups
    r = separation(members, others, shuffles=20)
    pairs = (members.unsqueeze(1) > others.unsqueeze(0)).double() + 0.5 * (members.unsqueeze(1) == others.unsqueeze(0)).double()
    assert r.auc == pytest.approx(float(pairs.mean()))
    best = max(float((members >= t).double().mean() - (others >= t).double().mean()) for t in torch.cat([members, others]))
    assert r.advantage == pytest.approx(best)


@pytest.mark.parametrize("epsilon,delta", [(0.5, 1e-5), (1.0, 1e-5), (8.0, 1e-3)])
def test_the_advantage_bound_is_the_largest_gap_dp_allows(epsilon: float, delta: float):
    """Brute force over FPR: the largest TPR - FPR with TPR <= e^eps FPR + delta and 1 - FPR <= e^eps (1 - TPR) + delta."""
    fpr = torch.linspace(0, 1, 200001, dtype=torch.float64)
    e = math.exp(epsilon)
    tpr = torch.minimum(torch.minimum(e * fpr + delta, 1 - (1 - fpr - delta) / e), torch.ones_like(fpr))
    assert advantage_bound(epsilon, delta) == pytest.approx(float((tpr - fpr).max()), abs=1e-5)


def _audit_folders(tmp_path: Path, per_class: int) -> tuple[Path, Path]:
    pool = write_image_folder(tmp_path / "pool", classes=4, per_class=2 * per_class, seed=5)
    members, others = tmp_path / "members", tmp_path / "others"
    for d in sorted(pool.iterdir()):
        files = sorted(d.iterdir())
        for dest, part in ((members, files[:per_class]), (others, files[per_class:])):
            (dest / d.name).mkdir(parents=True)
            for f in part:
                f.rename(dest / d.name / f.name)
    return members, others


def test_the_membership_test_finds_one_seed_per_class(tmp_path: Path):
    """Scenario C: the bundle is its seed's own moments, and the test tells the seed from the others."""
    from sowmeta.privacy import audit

    members, others = _audit_folders(tmp_path, per_class=1)
    collect_seeds(loaded_tiny(), members, keep_rejected=True, out=tmp_path / "c")
    others_more = write_image_folder(tmp_path / "more", classes=4, per_class=6, seed=9)
    r = audit(tmp_path / "c", members=members, non_members=others_more, model="conftest:tiny_net", weights="none")
    assert r.scenario == "C" and r.membership.members == 4
    assert r.membership.advantage == 1.0 and r.membership.auc == 1.0


def test_a_private_bundle_stays_below_the_bound_where_the_plain_one_leaks(tmp_path: Path):
    from sowmeta.privacy import audit

    members, others = _audit_folders(tmp_path, per_class=6)
    plain, _ = collect(loaded_tiny(), members, out=tmp_path / "plain")
    private, _ = collect(loaded_tiny(), members, dp_epsilon=0.5, dp_delta=1e-5, out=tmp_path / "dp")
    kw = dict(members=members, non_members=others, model="conftest:tiny_net", weights="none")
    leak = audit(tmp_path / "plain", **kw).membership
    guarded = audit(tmp_path / "dp", **kw).membership
    assert guarded.bound == pytest.approx(advantage_bound(0.5, 1e-5))
    assert leak.advantage > guarded.bound  # six images per class: the plain statistics give their images away
    assert guarded.advantage <= guarded.bound


def test_audit_cli_reports_membership_and_reconstruction(tmp_path: Path):
    import json

    import h5py
    import numpy as np
    from click.testing import CliRunner

    from sowmeta.cli.main import main

    members, others = _audit_folders(tmp_path, per_class=3)
    collect_seeds(loaded_tiny(), members, keep_rejected=True, out=tmp_path / "b")
    # a "synthesis" that copies the members exactly: every nearest image is a member, at pixel distance 0
    from sowmeta.data.image_sets import load_images

    x, y = load_images(members)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["images"] = x.permute(0, 2, 3, 1).numpy()
        f["labels"] = y.numpy().astype(np.int64)
    tiny = ["--model", "conftest:tiny_net", "--weights", "none"]
    r = CliRunner().invoke(main, ["audit", str(tmp_path / "b"), *tiny, "--members", str(members), "--non-members", str(others),
                                  "--synthesis", str(tmp_path / "s.h5"), "--pairs", str(tmp_path / "p.png"), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["scenario"] == "B" and out["membership"]["members"] == 12
    rec = out["reconstruction"]
    assert rec["pixel_member"] < 1e-6 and rec["pixel_non_member"] > 0.01 and rec["closer_to_member"] == 1.0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(main, ["audit", str(tmp_path / "b"), *tiny, "--members", str(members), "--non-members", str(others),
                                  "--pairs", str(tmp_path / "p.png")])
    assert r.exit_code == 1 and "pass --synthesis too" in r.output


def test_collect_cli_offers_the_budget_and_the_card_states_it(tmp_path: Path):
    from click.testing import CliRunner

    from sowmeta.cli.main import main
    from sowmeta.registry.card import render_card

    data = write_image_folder(tmp_path / "data", classes=3, per_class=8)
    tiny = ["--model", "conftest:tiny_net", "--weights", "none", "--crop", "12", "--workers", "0", "--data", str(data)]
    r = CliRunner().invoke(main, ["collect", *tiny, "--out", str(tmp_path / "b"), "--dp-epsilon", "2", "--dp-delta", "1e-4", "--dp-clip", "2", "--json"])
    assert r.exit_code == 0, r.output
    card = render_card(tmp_path / "b", "me/tiny-dp")
    assert "(2, 0.0001)-DP for adding or removing one image" in card and "clipped at 2x" in card
    r = CliRunner().invoke(main, ["collect", *tiny, "--out", str(tmp_path / "c"), "--dp-epsilon", "2"])
    assert r.exit_code == 1 and "needs both --dp-epsilon and --dp-delta" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "c").exists()
