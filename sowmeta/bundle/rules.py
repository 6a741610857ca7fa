"""The rules a valid bundle keeps (docs/format.md, "Rules"): their names, and the checks on its numbers.

Every refusal of a bundle names the rule it breaks (``BundleError.rule``), so that another
reader can be compared with sowmeta's case by case (tests/conformance). The checks here take
tensors already read and raise ``RuleBroken``: the reader (``files.py``) turns it into a
``CorruptBundleError``, the writer (``Bundle.save``) into a refusal to write.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["RULES", "RuleBroken", "UNIT_ROUNDOFF", "check_counts", "check_rows", "check_pooling", "finite_globals", "bound_image_var"]

# name -> what it asks, in the order a reader checks them (docs/format.md lists the same, with the details)
RULES: dict[str, str] = {
    "manifest-json": "sowmeta.json is at most 64 MiB of UTF-8 I-JSON: one object, no key twice, no NaN or Infinity, no lone surrogate, integers within 2^53",
    "format-version": "format is sowmeta-bundle and format_version is 1.MINOR",
    "schema": "the manifest satisfies schemas/bundle-v1.schema.json",
    "labels": "model.labels is empty or has model.num_classes entries",
    "unique-names": "tap names are unique, and file names are unique",
    "tensor-list": "files[].tensors lists counts and every tap's four tensors exactly once, and nothing else but image_var",
    "image-var-every-tap": "<tap>/image_var is listed for every tap or for none",
    "empty-classes": "source.empty_classes is strictly ascending and below model.num_classes",
    "compression": "source.compression has jpeg_files <= files_sampled, and quality null exactly when jpeg_files is 0",
    "file-present": "every listed file is a regular file inside the bundle directory",
    "file-checksum": "every file has the size and sha256 its files[] entry records",
    "safetensors": "every file is valid safetensors: header, dtypes, shapes, offsets tiling the data exactly, no byte after",
    "file-metadata": "every file's __metadata__ has format sowmeta-bundle and the manifest's format_version",
    "file-digest": "(1.1+) every file's __metadata__.manifest_sha256 is the manifest's content digest",
    "file-tensors": "every file holds exactly the tensors its files[] entry lists",
    "tensor-shape": "counts is I64 [K]; mean, var, image_var are [K, C] and globals [C], of the manifest's dtype",
    "counts": "counts are >= 0, 0 exactly for the classes in source.empty_classes, and sum to source.images",
    "finite": "means are finite; variances are finite and >= 0",
    "empty-rows": "the rows of a class with no images are zeros",
    "image-var-bound": "image_var <= var, up to the stored rounding",
    "global-pooling": "global_mean and global_var are the count-weighted pooling of the rows, up to the stored rounding",
}

# Half an ulp of 1 (unit roundoff) and the smallest positive value of each stored dtype.
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11}
_SMALLEST = {"float32": 2.0**-149, "float16": 2.0**-24}
SLACK = 16.0  # tolerances are SLACK times the rounding a writer's single rounding can cause


class RuleBroken(ValueError):
    """Statistics that break ``rule``; the message says where (tap, class, channel) and how."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


def check_counts(counts: torch.Tensor, empty_classes: Sequence[int], images: int) -> None:
    """Rule ``counts`` on the whole ``counts`` tensor [K] (int64)."""
    if counts.numel() and int(counts.min()) < 0:
        k = int(torch.nonzero(counts < 0)[0])
        raise RuleBroken(f"class {k} has a negative image count ({int(counts[k])})", "counts")
    zero = set(torch.nonzero(counts == 0).flatten().tolist())
    listed = set(empty_classes)
    if zero != listed:
        k = min(zero ^ listed)
        said = "lists it in" if k in listed else "does not list it in"
        raise RuleBroken(f"class {k} has {int(counts[k])} images but the manifest {said} source.empty_classes", "counts")
    total = int(counts.sum())
    if total != images:
        raise RuleBroken(f"the counts sum to {total} images but source.images says {images}", "counts")


def check_rows(
    tap: str, classes: Sequence[int], counts: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, image_var: torch.Tensor | None,
    dtype: str, *, finite: bool = True, whole: bool = True,
) -> None:
    """Rules on the rows of ``classes`` of one tap (float32 [n, C]): ``finite``, and with ``whole`` ``empty-rows`` and ``image-var-bound``."""
    if finite:
        for what, rows in (("mean", mean), ("var", var), ("image_var", image_var)):
            if rows is None:
                continue
            ok = torch.isfinite(rows) if what == "mean" else torch.isfinite(rows) & (rows >= 0)
            if not bool(ok.all()):
                r, c = (int(v) for v in torch.nonzero(~ok)[0])
                raise RuleBroken(f"tap {tap!r}, class {classes[r]}, channel {c}: {what} is {float(rows[r, c])}", "finite")
    if not whole:
        return
    empty = counts == 0
    if bool(empty.any()):
        for what, rows in (("mean", mean), ("var", var), ("image_var", image_var)):
            if rows is not None and bool((rows[empty] != 0).any()):
                r = int(torch.nonzero(empty & (rows != 0).any(dim=1))[0])
                raise RuleBroken(f"tap {tap!r}: class {classes[r]} has no images but its {what} row is not zero", "empty-rows")
    if image_var is not None:
        eps = max(UNIT_ROUNDOFF[dtype], UNIT_ROUNDOFF["float32"])
        # in float32 with half the slack first: passing it implies passing the exact float64 test below
        if not bool((image_var - var - (SLACK / 2 * eps) * (var + mean * mean) > 0).any()):
            return
        over = image_var.double() - var.double() - bound_image_var(mean, var, dtype)
        if bool((over > 0).any()):
            r, c = (int(v) for v in torch.nonzero(over > 0)[0])
            raise RuleBroken(f"tap {tap!r}, class {classes[r]}, channel {c}: image_var {float(image_var[r, c])} exceeds var {float(var[r, c])}",
                             "image-var-bound")


def bound_image_var(mean: torch.Tensor, var: torch.Tensor, dtype: str) -> torch.Tensor:
    """How far ``image_var`` may exceed ``var``: the features' float32 rounding and the stored rounding (docs/format.md)."""
    eps = max(UNIT_ROUNDOFF[dtype], UNIT_ROUNDOFF["float32"])
    return SLACK * eps * (var.double() + mean.double().square()) + SLACK * _SMALLEST[dtype]


def check_pooling(
    tap: str, counts: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, global_mean: torch.Tensor, global_var: torch.Tensor, dtype: str
) -> None:
    """Rule ``global-pooling`` for one tap: every class's rows [K, C] against the globals [C], in float64."""
    present = counts > 0
    n = counts[present].to(torch.float64)
    total = float(n.sum())
    g_mean, g_var = global_mean.double(), global_var.double()
    if total == 0:
        pooled_mean = pooled_var = torch.zeros_like(g_mean)
        tol_mean = tol_var = torch.zeros_like(g_mean)
    else:
        w = n / total
        m, v = mean[present].double(), var[present].double()
        pooled_mean = w @ m
        spread = m - pooled_mean
        abs_m, abs_spread = m.abs(), spread.abs()
        weighted_var = w @ v
        pooled_var = weighted_var + w @ spread.square()
        abs_mean = w @ abs_m
        eps = SLACK * UNIT_ROUNDOFF[dtype]
        tiny = SLACK * _SMALLEST[dtype]
        tol_mean = eps * (abs_mean + g_mean.abs()) + tiny
        # sum_k w_k |m_k - P_m| (|m_k| + A) = w @ (|spread| |m|) + A (w @ |spread|); the second moments' terms: a writer derives
        # var from means of squares, so a channel far from 0 and nearly constant keeps an error of order eps * mean^2
        second = w @ m.square() + g_mean.square()
        tol_var = eps * (weighted_var + 2 * (w @ (abs_spread * abs_m) + abs_mean * (w @ abs_spread)) + g_var.abs() + second) + tiny
    for what, stored, pooled, tol in (("global_mean", g_mean, pooled_mean, tol_mean), ("global_var", g_var, pooled_var, tol_var)):
        off = (stored - pooled).abs() > tol
        if bool(off.any()):
            c = int(torch.nonzero(off)[0])
            raise RuleBroken(f"tap {tap!r}, channel {c}: {what} is {float(stored[c])}, the count-weighted pooling of the rows gives {float(pooled[c]):.9g}",
                             "global-pooling")


def finite_globals(tap: str, global_mean: torch.Tensor, global_var: torch.Tensor) -> None:
    """Rule ``finite`` on one tap's globals."""
    for what, row in (("global_mean", global_mean), ("global_var", global_var)):
        ok = torch.isfinite(row) & ((row >= 0) if what == "global_var" else True)
        if not bool(ok.all()):
            c = int(torch.nonzero(~ok)[0])
            raise RuleBroken(f"tap {tap!r}, channel {c}: {what} is {float(row[c])}", "finite")

