"""``audit``: how much a bundle leaks about the images it was collected from, measured.

Membership: the likelihood-ratio test of ``membership.py`` on the members (the images collected)
and non-members (images of the same classes that were not), read from class folders as
``collect`` reads them. Reconstruction (with a synthesis file): ``reconstruction.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..bundle import Bundle, load_model_for
from ..data.class_folders import map_class_folders
from ..data.folders import folder_loader, plan_loader, scan_image_folder
from ..data.image_sets import load_images
from ..devices import check_device
from ..errors import DataError
from ..models import LoadedModel, load_model
from ..moments import central_moments, recording_taps
from .membership import ClassDensities, MembershipResult, advantage_bound, separation
from .reconstruction import ReconstructionResult, penultimate, reconstruction, save_pairs

__all__ = ["AuditReport", "audit", "read_folder", "member_scores"]


@dataclass
class AuditReport:
    """What ``sowmeta audit`` reports: the bundle's shape, the membership test, and (with a synthesis file) reconstruction."""

    bundle: str
    scenario: str
    classes: int  # classes with statistics
    images_per_class: float  # mean over those classes
    privacy: dict[str, Any] | None
    membership: MembershipResult
    reconstruction: ReconstructionResult | None = None
    notes: list[str] = field(default_factory=list)


def read_folder(path: str | Path, model: LoadedModel, limit_per_class: int | None, device: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A class folder's images as ``collect`` reads them (normalized, N x 3 x H x W) and their class indices in ``model``."""
    index = scan_image_folder(path, limit_per_class)
    labels = model.labels or [str(i) for i in range(model.num_classes or len(index.classes))]
    mapping = map_class_folders(index.classes, labels, len(labels))
    samples = [(p, mapping.indices[y]) for p, y in index.samples]
    prep = model.preprocessing
    plan = plan_loader(prep.crop, device, batch_size=batch_size, workers=0, resize=prep.resize, interpolation=prep.interpolation)
    xs, ys = [], []
    for x, y, bad in folder_loader(samples, prep, plan):
        if x is not None:
            xs.append(x)
            ys.append(y)
    if not xs:
        raise DataError(f"no image of {path} could be read")
    return torch.cat(xs), torch.cat(ys)


def member_scores(bundle: Bundle, model: LoadedModel, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each image's likelihood-ratio score (``membership.py``) from its per-image moments at the bundle's taps."""
    densities = ClassDensities.of(bundle)
    taps = [t.tap for t in bundle.manifest.taps]
    module = model.module.eval()
    out = []
    for i in range(0, len(x), batch_size):
        labels = y[i:i + batch_size]
        score = torch.zeros(len(labels), dtype=torch.float64)

        def record(tap: Any, feat: torch.Tensor, native: Any) -> None:
            nonlocal score
            m = central_moments(feat.detach(), tap.axis, native_moments=native).mean
            score = score + densities.score(tap.name, m.cpu(), labels)

        with recording_taps(module, taps, record, contract="central"), torch.no_grad():
            module(x[i:i + batch_size])
        out.append(score)
    return torch.cat(out)


def _bound(privacy: dict[str, Any] | None) -> float | None:
    return None if not privacy else advantage_bound(float(privacy["epsilon"]), float(privacy["delta"]))


def _reconstruct(synthesis: str | Path, judge: LoadedModel, sets: tuple[torch.Tensor, ...], model: LoadedModel,
                 pairs: str | Path | None) -> ReconstructionResult:
    """Synthesized images against members and non-members in ``judge``'s features and in pixels."""
    xs, ys = load_images(synthesis, size=model.preprocessing.crop)
    synth = xs.float() / 255
    members, y_mem, non, y_non = (model.preprocessing.denormalize(sets[0]).clamp(0, 1), sets[1],
                                  model.preprocessing.denormalize(sets[2]).clamp(0, 1), sets[3])
    feats = tuple(penultimate(judge.module.eval(), judge.preprocessing.normalize(p)) for p in (synth, members, non))
    result, closest = reconstruction(synth, members, non, (ys, y_mem, y_non), feats)  # type: ignore[arg-type]
    if pairs is not None:
        result = ReconstructionResult(**{**vars(result), "pairs": str(save_pairs(pairs, synth, members, non, closest))})
    return result


def audit(
    bundle: str | Path, *, members: str | Path, non_members: str | Path, model: str | None = None, weights: str | None = None,
    synthesis: str | Path | None = None, judge: str | None = None, judge_weights: str | None = None, limit_per_class: int | None = 100,
    pairs: str | Path | None = None, batch_size: int = 128, device: str = "cpu",
) -> AuditReport:
    """Measure what ``bundle`` reveals about its ``members`` against ``non_members`` (class folders of the same classes).

    ``limit_per_class`` images of each class are read from each folder (the first by file name;
    None: all). With ``synthesis`` (an HDF5 file synthesized from the bundle) and a ``judge``
    model, nearest-image distances are measured too, and ``pairs`` gets a PNG of the closest ones.
    """
    dev = check_device(device)
    b = Bundle.load(bundle)
    loaded = load_model_for(b.manifest, model=model, weights=weights)
    loaded.module.to(dev)
    mem = read_folder(members, loaded, limit_per_class, dev, batch_size)
    non = read_folder(non_members, loaded, limit_per_class, dev, batch_size)
    src = b.manifest.source
    scores = [member_scores(b, loaded, x, y, batch_size) for x, y in (mem, non)]
    present = b.counts[b.counts > 0]
    report = AuditReport(str(bundle), src.scenario, int(len(present)), float(present.double().mean()) if len(present) else 0.0,
                         src.privacy, separation(*scores, bound=_bound(src.privacy)))
    if synthesis is not None:
        judged = loaded if judge is None else load_model(judge, weights="DEFAULT" if judge_weights is None else judge_weights)
        if judge is None:
            report.notes.append("reconstruction judged in the bundle's own model's features; pass --judge for an independent one")
        report.reconstruction = _reconstruct(synthesis, judged, (*mem, *non), loaded, pairs)
    if not math.isfinite(report.membership.advantage):
        raise DataError("the membership scores are not finite; is this the model the bundle was recorded on?")
    return report
