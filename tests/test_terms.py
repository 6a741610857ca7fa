"""Terms compose: a user's ``Term`` joins the objective without engine code, sees what the built-in terms see,
and is weighed into the loss like them; bad terms are refused up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import loaded_tiny, write_image_folder

from sowmeta.collectors import collect
from sowmeta.errors import ConfigError
from sowmeta.synth import Step, SynthConfig, Term, synthesize

CONFIG = SynthConfig(iterations=4, batch_size=4, lr=0.1, jitter=0, flip=False, alpha_tv=1e-3, alpha_l2=1e-4, check_fingerprint=False)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("terms")
    collect(loaded_tiny(), write_image_folder(tmp / "data", classes=4, per_class=3), out=tmp / "b", batch_size=6)
    return tmp / "b"


def _tv_float64(x: torch.Tensor) -> float:
    """DeepInversion's R_TV recomputed in numpy float64: the Frobenius norms of the four neighbour differences, summed."""
    a = x.detach().double().numpy()
    d1 = a[:, :, :, :-1] - a[:, :, :, 1:]
    d2 = a[:, :, :-1, :] - a[:, :, 1:, :]
    d3 = a[:, :, 1:, :-1] - a[:, :, :-1, 1:]
    d4 = a[:, :, :-1, :-1] - a[:, :, 1:, 1:]
    return float(sum(np.linalg.norm(d.ravel()) for d in (d1, d2, d3, d4)))


def _ce_float64(step: Step) -> float:
    logits = step.logits.detach().double().numpy()
    labels = step.labels.numpy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def test_a_users_terms_see_the_step_the_built_in_ones_see(bundle_dir: Path):
    """Two weightless terms recompute CE and R_TV by another route from the Step: every iteration they equal the engine's."""
    seen: list[dict[str, float]] = []
    mine = [Term("ce_again", 0.0, lambda s: torch.tensor(_ce_float64(s))), Term("tv_again", 0.0, lambda s: torch.tensor(_tv_float64(s.x)))]
    synthesize(bundle_dir, loaded_tiny(), classes=[0, 1], per_class=2, config=CONFIG, terms=mine,
               progress=lambda p: seen.append(p.iteration.terms) if p.iteration else None)
    assert seen and all({"ce", "tv", "l2", "stats", "ce_again", "tv_again"} <= set(t) for t in seen)
    for t in seen:
        assert t["ce_again"] == pytest.approx(t["ce"], rel=1e-5) and t["tv_again"] == pytest.approx(t["tv"], rel=1e-4)


def test_a_users_term_is_weighed_into_the_loss_and_moves_the_images(bundle_dir: Path):
    """The reported total is the weighted sum over all terms, the user's included; a term rewarding dark images darkens them."""
    seen: list[dict[str, float]] = []
    dark = Term("brightness", 50.0, lambda s: s.x.mean())
    config = SynthConfig(**{**CONFIG.__dict__, "iterations": 10})
    plain = synthesize(bundle_dir, loaded_tiny(), classes=[0, 1], per_class=2, config=config)
    darker = synthesize(bundle_dir, loaded_tiny(), classes=[0, 1], per_class=2, config=config, terms=[dark],
                        progress=lambda p: seen.append(p.iteration.terms) if p.iteration else None)
    weights = {"ce": config.alpha_ce, "tv": config.alpha_tv, "l2": config.alpha_l2, "stats": config.alpha_cc, "brightness": 50.0}
    for t in seen:
        assert t["total"] == pytest.approx(sum(w * t[k] for k, w in weights.items()), rel=1e-5)
    assert float(darker.images().mean()) < float(plain.images().mean()) - 0.05


@pytest.mark.parametrize(
    "terms, match",
    [
        ([Term("tv", 1.0, lambda s: s.x.mean())], "two terms are named 'tv'"),
        ([Term("a", 1.0, lambda s: s.x.mean()), Term("a", 2.0, lambda s: s.x.mean())], "two terms are named 'a'"),
        ([Term("a", float("nan"), lambda s: s.x.mean())], "term 'a' has weight nan"),
        ([Term("a", 1.0, "x.mean()")], "value must be a function"),  # type: ignore[arg-type]
        ([("a", 1.0, len)], "not a tuple"),
    ],
)
def test_bad_terms_are_refused_before_any_work(bundle_dir: Path, tmp_path: Path, terms: list, match: str):
    with pytest.raises(ConfigError, match=match):
        synthesize(bundle_dir, loaded_tiny(), classes=[0], per_class=1, config=CONFIG, terms=terms, out=tmp_path / "s.h5")
    assert not list(tmp_path.iterdir())


def test_a_resumed_run_must_have_the_same_terms(bundle_dir: Path):
    """The run key a partial file must match names the user's terms (and is what it always was without them)."""
    from sowmeta.synth.job import resolve_job
    from sowmeta.synth.plan import plan_run

    def key(terms: list[Term]) -> str:
        job = resolve_job(bundle_dir, loaded_tiny(), classes=[0], config=CONFIG, terms=terms)
        return plan_run(job, 2).run_key

    plain, with_term, heavier = key([]), key([Term("a", 1.0, torch.mean)]), key([Term("a", 2.0, torch.mean)])
    assert len({plain, with_term, heavier}) == 3
