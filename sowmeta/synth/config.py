"""``SynthConfig``: every knob of a synthesis run, with the paper's ImageNet defaults and CIFAR ones."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError
from ..named import Registry
from .jpeg_view import SUBSAMPLINGS
from .losses import get_feature_loss
from .param import get_parameterization

__all__ = ["SynthConfig", "MODES", "PRESETS"]

MODES = ("cc", "global", "di")
MAX_LR = 10.0  # Adam on normalized pixels: beyond this every step saturates the image
MAX_WEIGHT = 1e6  # loss weights beyond this overflow float32 losses
# fields added after runs were first keyed: left out of the fingerprint at these values, so the
# run key of an unfinished run from before still matches (a resumed run never mixes settings)
_LATER_FIELDS = {"alpha_image_var": 0.0, "param": "pixel", "zoom": 0.0, "color_shift": 0.0, "tap_decay": 1.0, "jpeg_quality": 0, "jpeg_subsampling": "4:2:0", "jitter_wrap": True}
PRESETS: Registry[Callable[..., SynthConfig]] = Registry("synthesis preset")


@dataclass(frozen=True)
class SynthConfig:
    """Objective, optimizer and schedule of a synthesis run.

    The defaults are the paper's ImageNet setting (lr 0.25, alpha_TV 1e-4, alpha_l2 1e-5,
    alpha_CC 0.01, equal lambda_l for every tap, jitter 30, 2k iterations); ``SynthConfig.cifar()``
    gives the setting that works for 32 px CIFAR models.

    Attributes:
        mode: ``cc`` (class-conditional statistics of the bundle), ``global`` (the bundle's
            class-independent statistics) or ``di`` (BatchNorm running statistics: DeepInversion).
        mixed: batches mix classes (statistics per class group) instead of one class per batch.
            Default: single-class batches for ``cc``, mixed for ``global``/``di``.
        alpha_image_var: weight of the spread term relative to the statistics term (mode ``cc``, bundles
            of format 1.3): the variance of the per-image means within each class group of a batch
            meets the class's recorded one, so that images differ from each other in tone and content
            as much as real ones do, instead of each taking the class's whole spread (0: off).
        feature_loss: the F_l registered under this name (``eq7`` = paper Eq. 7, ``kl``).
        tap_weights: lambda_l per tap name (fnmatch globs allowed); unnamed taps weigh 1.
        first_tap_multiplier: extra weight of the first tap (DeepInversion's first-BN multiplier;
            1 = the paper's equal lambda_l).
        tap_decay: lambda_l of the last tap relative to the first, geometric in between
            (lambda_l times tap_decay^(l / (L - 1))); 1 = no decay with depth.
        jitter: the random shift of the image before each forward pass, in pixels.
        jitter_wrap: the shift rolls the image cyclically (DeepInversion's), so each edge is seen next
            to the opposite one; False: the image is the centre of a canvas ``jitter`` px larger on every
            side, each step shows the model a window of the image's size from it, and the margin is
            dropped at the end (``canvas.py``).
        multires: fraction of the iterations run at half resolution (DeepInversion's fast setting).
        zoom: random-resized crop before each forward pass: the crop's side is in
            [1 - zoom, 1] of the image's (0: off; Plug-In Inversion's augmentation).
        color_shift: random per-image, per-channel contrast in [1 - color_shift, 1] and offset
            inside the pixel range before each forward pass (0: off; Plug-In Inversion's).
        param: how the image is optimized: ``pixel`` (the paper's) or ``fourier`` (a
            decorrelated-colour spectrum, as feature-visualization libraries do); see ``param.py``.
        jpeg_quality: statistics collected from JPEG files of this quality (1-100) are matched by
            the images encoded that way and decoded (differentiably, ``jpeg_view.py``), and the CE
            by the images themselves; each step runs both through the model (0: off).
        jpeg_subsampling: the chroma subsampling of that encoding (``4:2:0``, ``4:2:2``, ``4:4:4``).
        init: ``noise`` or ``images`` (seed images / sketches given to ``synthesize(init_images=)``).
        init_noise: std of the noise added to initial images when ``init="images"``.
        amp: ``none``, ``bf16`` or ``fp16`` autocast (CUDA only).
        save_every: keep the images every N iterations (0: never).
    """

    mode: str = "cc"
    iterations: int = 2000
    batch_size: int = 64
    mixed: bool | None = None
    lr: float = 0.25
    betas: tuple[float, float] = (0.5, 0.9)
    warmup: int = 0
    alpha_ce: float = 1.0
    alpha_tv: float = 1e-4
    alpha_l2: float = 1e-5
    alpha_cc: float = 0.01
    alpha_image_var: float = 0.0
    feature_loss: str = "eq7"
    first_tap_multiplier: float = 1.0
    tap_weights: dict[str, float] = field(default_factory=dict)
    jitter: int = 30
    jitter_wrap: bool = True
    flip: bool = True
    multires: float = 0.0
    zoom: float = 0.0
    color_shift: float = 0.0
    tap_decay: float = 1.0
    param: str = "pixel"
    jpeg_quality: int = 0
    jpeg_subsampling: str = "4:2:0"
    init: str = "noise"
    init_noise: float = 0.2
    amp: str = "none"
    channels_last: bool = True
    seed: int = 0
    save_every: int = 0
    check_fingerprint: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.iterations < 1 or self.batch_size < 1:
            raise ConfigError(f"iterations and batch size must be at least 1 (got {self.iterations}, {self.batch_size})")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise ConfigError(f"learning rate must be a number in (0, {MAX_LR}], not {self.lr}; the presets use 0.1-0.25")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"Adam betas must be two numbers in [0, 1), not {self.betas}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, not {self.amp!r}")
        if self.init not in ("noise", "images"):
            raise ConfigError(f"init must be 'noise' or 'images', not {self.init!r}")
        if not 0 <= self.multires < 1:
            raise ConfigError(f"multires is a fraction of the iterations in [0, 1), not {self.multires}")
        for name in ("zoom", "color_shift"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ConfigError(f"{name} is a fraction in [0, 1) (0: off), not {value}")
        if not (isinstance(self.jpeg_quality, int) and not isinstance(self.jpeg_quality, bool) and 0 <= self.jpeg_quality <= 100):
            raise ConfigError(f"jpeg_quality is the data's JPEG quality, an integer in 1-100 (0: off), not {self.jpeg_quality!r}")
        if self.jpeg_subsampling not in SUBSAMPLINGS:
            raise ConfigError(f"jpeg_subsampling is one of {', '.join(SUBSAMPLINGS)}, not {self.jpeg_subsampling!r}")
        if not (isinstance(self.tap_decay, (int, float)) and 0 < self.tap_decay <= MAX_WEIGHT):
            raise ConfigError(f"tap_decay is the last tap's weight relative to the first, in (0, {MAX_WEIGHT:g}] (1: equal), not {self.tap_decay}")
        if not isinstance(self.jitter_wrap, bool):
            raise ConfigError(f"jitter_wrap is true (roll the image, DeepInversion's) or false (a window over a larger canvas), not {self.jitter_wrap!r}")
        if self.save_every < 0 or self.jitter < 0 or self.warmup < 0:
            raise ConfigError("save_every, jitter and warmup must not be negative")
        weights = {
            "alpha_ce": self.alpha_ce,
            "alpha_tv": self.alpha_tv,
            "alpha_l2": self.alpha_l2,
            "alpha_cc": self.alpha_cc,
            "alpha_image_var": self.alpha_image_var,
            "first_tap_multiplier": self.first_tap_multiplier,
            "init_noise": self.init_noise,
            **{f"tap weight {k!r}": v for k, v in self.tap_weights.items()},
        }
        for name, value in weights.items():
            if not (isinstance(value, (int, float)) and 0 <= value <= MAX_WEIGHT):  # also catches NaN and inf
                raise ConfigError(f"{name} must be a number in [0, {MAX_WEIGHT:g}], not {value}")
        get_feature_loss(self.feature_loss)
        get_parameterization(self.param)

    @classmethod
    def imagenet(cls, **overrides: Any) -> SynthConfig:
        """The paper's ImageNet setting (224 px models)."""
        return cls(**overrides)

    @classmethod
    def cifar(cls, **overrides: Any) -> SynthConfig:
        """A setting for 32 px CIFAR models: small jitter, strong statistics and smoothness terms, the spread term.

        Chosen on cifar-resnet56 by the independent cifar-resnet20's accuracy, the per-class
        Frechet distance to real test images and the images' total variation against real ones
        (docs/results.md): alpha_TV 1e-4 leaves high-frequency noise at 32 px (twice the real
        images' total variation); 5e-2 at batch 50-64 matches it. The spread term (alpha_image_var 1)
        brought the images closer to real ones in both judges' features (studies/cifar10-log.md, 7.11); jitter without
        wrap-around took away most of the bright frame the statistics term drew (studies/cifar10-log.md, 7.12).
        """
        base = dict(lr=0.1, alpha_tv=5e-2, alpha_l2=0.0, alpha_cc=1.0, alpha_image_var=1.0, first_tap_multiplier=10.0, jitter=2, jitter_wrap=False,
                    batch_size=64)
        return cls(**{**base, **overrides})

    @classmethod
    def preset(cls, name: str, *, crop: int | None = None, **overrides: Any) -> SynthConfig:
        """The preset registered as ``name`` in ``PRESETS`` with ``overrides``; ``auto`` picks by input size ``crop``."""
        return PRESETS.get(cls.preset_name(name, crop))(**overrides)

    @staticmethod
    def preset_name(name: str, crop: int | None) -> str:
        """The preset ``name`` stands for: ``auto`` is ``cifar`` for inputs of 64 px or less, else ``imagenet``."""
        if name != "auto":
            PRESETS.get(name)
            return name
        if crop is None:
            raise ConfigError("preset 'auto' needs the model's input size; pass crop=")
        return "cifar" if crop <= 64 else "imagenet"

    @staticmethod
    def parse_tap_weights(items: Sequence[str]) -> dict[str, float]:
        """``["layer1.*=0.5", "bn1=2"]`` (the CLI's ``--tap-weight``) as a ``tap_weights`` dict."""
        out = {}
        for item in items:
            name, sep, value = item.rpartition("=")
            try:
                out[name] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name:
                raise ConfigError(f"--tap-weight takes TAP=WEIGHT (a name or glob, then a number), not {item!r}")
        return out

    @property
    def canvas_margin(self) -> int:
        """Pixels of canvas around the image on every side: the jitter when it does not wrap, else 0."""
        return 0 if self.jitter_wrap else self.jitter

    @property
    def mixed_batches(self) -> bool:
        return self.mode != "cc" if self.mixed is None else self.mixed

    def replace(self, **changes: Any) -> SynthConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown synthesis option(s): {', '.join(unknown)}")
        if "betas" in d:
            d = {**d, "betas": tuple(d["betas"])}
        return cls(**d)

    def fingerprint(self) -> str:
        """sha256 of the settings that change the images (what a resumed run must share)."""
        d = self.to_dict()
        d.pop("check_fingerprint")
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


PRESETS.register("imagenet", SynthConfig.imagenet)
PRESETS.register("cifar", SynthConfig.cifar)
