"""``SynthConfig``: every knob of a synthesis run, with the paper's ImageNet defaults and CIFAR ones."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import ConfigError
from ..named import Registry
from ..options import documented, option

__all__ = ["SynthConfig", "MODES", "PRESETS"]

MODES = ("cc", "global", "di")
MAX_LR = 10.0  # Adam on normalized pixels: beyond this every step saturates the image
MAX_WEIGHT = 1e6  # loss weights beyond this overflow float32 losses
# The fields runs were first keyed by. A field added since is left out of the fingerprint at its
# default, so the run key of an unfinished run from before still matches (a resumed run never
# mixes settings) and a new field needs no entry here.
_FIRST_KEYED = ("mode", "iterations", "batch_size", "mixed", "lr", "betas", "warmup", "alpha_ce", "alpha_tv", "alpha_l2", "alpha_cc", "feature_loss",
                "first_tap_multiplier", "tap_weights", "jitter", "flip", "multires", "init", "init_noise", "amp", "channels_last", "seed", "save_every")
PRESETS: Registry[Callable[..., SynthConfig]] = Registry("synthesis preset")


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


def _feature_losses() -> list[str]:
    from .losses import FEATURE_LOSSES

    return FEATURE_LOSSES.names()


def _parameterizations() -> list[str]:
    from .param import PARAMETERIZATIONS

    return PARAMETERIZATIONS.names()


@documented
@dataclass(frozen=True)
class SynthConfig:
    """Objective, optimizer and schedule of a synthesis run.

    The defaults are the paper's ImageNet setting (lr 0.25, alpha_TV 1e-4, alpha_l2 1e-5,
    alpha_CC 0.01, equal lambda_l for every tap, jitter 30, 2k iterations; ``SynthConfig.paper()``);
    ``SynthConfig.imagenet()`` and ``SynthConfig.cifar()`` give the settings that work for 224 px
    ImageNet and 32 px CIFAR models (the ``auto`` preset picks by input size). Every field is also an option of
    ``sowmeta synthesize`` (``--batch-size`` for ``batch_size``), whose help shows each preset's value.
    """

    mode: str = field(default="cc", metadata=option(
        "cc: the bundle's class-conditional statistics; global: the bundle's class-independent ones; di: the model's "
        "BatchNorm running statistics (DeepInversion).", choices=MODES))
    iterations: int = field(default=2000, metadata=option("Optimization steps per batch.", low=1))
    batch_size: int = field(default=64, metadata=option("Images optimized together.", low=1))
    mixed: bool | None = field(default=None, metadata=option(
        "Mix classes within a batch (statistics per class group); --single-class: one class per batch. Unset: single-class "
        "batches for cc, mixed ones for global and di.", flag="--mixed", off="--single-class"))
    lr: float = field(default=0.25, metadata=option("Adam learning rate (warmup, then cosine decay to 0)."))
    betas: tuple[float, float] = field(default=(0.5, 0.9), metadata=option("Adam's betas (DeepInversion's).", metavar="B1 B2"))
    warmup: int = field(default=0, metadata=option("Iterations of linear learning-rate warmup.", low=0))
    alpha_ce: float = field(default=1.0, metadata=option("Weight of the cross-entropy of the target class."))
    alpha_tv: float = field(default=1e-4, metadata=option("Weight of the total-variation prior."))
    alpha_l2: float = field(default=1e-5, metadata=option("Weight of the L2 image prior."))
    alpha_cc: float = field(default=0.01, metadata=option("Weight of the statistics term (matching the target statistics at every tap)."))
    alpha_image_var: float = field(default=0.0, metadata=option(
        "Weight, relative to --alpha-cc, of the spread term: in each class group of a batch, the variance of the images' own "
        "means at every tap meets the class's recorded one (mode cc, bundles of format 1.3), so images differ from each other "
        "in tone as real ones do (0: off)."))
    feature_loss: str = field(default="eq7", metadata=option("F_l, the distance of feature statistics (eq7: paper Eq. 7).", choices=_feature_losses))
    first_tap_multiplier: float = field(default=1.0, metadata=option(
        "Extra weight of the first tap (DeepInversion's first-BN multiplier; 1: the paper's equal lambda_l)."))
    tap_weights: dict[str, float] = field(default_factory=dict, metadata=option(
        "lambda_l of the taps a name or glob matches, TAP=WEIGHT; repeatable (other taps weigh 1).", flag="--tap-weight",
        multiple=True, parse=parse_tap_weights, metavar="TAP=W"))
    jitter: int = field(default=30, metadata=option("Random shift of the image before each forward pass, in pixels.", low=0))
    jitter_wrap: bool = field(default=True, metadata=option(
        "The shift rolls the image around (DeepInversion's); --no-jitter-wrap: the image is the centre of a canvas JITTER px "
        "larger on every side, each step shows the model a window of the image's size from it, and the margin is dropped "
        "at the end (canvas.py)."))
    flip: bool = field(default=True, metadata=option("Random horizontal flips."))
    multires: float = field(default=0.0, metadata=option("Fraction of the iterations run at half resolution (DeepInversion's fast setting).",
                                                          low=0, high=1, high_open=True))
    zoom: float = field(default=0.0, metadata=option(
        "Random-resized crop before each forward pass: the crop's side is in [1 - ZOOM, 1] of the image's (0: off; "
        "Plug-In Inversion's).", low=0, high=1, high_open=True))
    color_shift: float = field(default=0.0, metadata=option(
        "Random per-image, per-channel contrast in [1 - C, 1] and offset inside the pixel range before each forward pass "
        "(0: off; Plug-In Inversion's).", low=0, high=1, high_open=True))
    tap_decay: float = field(default=1.0, metadata=option(
        "lambda_l of the last tap relative to the first, geometric in between (1: equal)."))
    param: str = field(default="pixel", metadata=option(
        "How the image is optimized: pixel (the paper's) or fourier (a decorrelated-colour spectrum, param.py).", choices=_parameterizations))
    jpeg_quality: int = field(default=0, metadata=option(
        "Match the statistics through a JPEG encoding of this quality, that of the files they came from (`collect` notes "
        "it); the CE reads the images themselves, and each step runs both through the model (0: off).", low=0, high=100))
    jpeg_subsampling: str = field(default="4:2:0", metadata=option("Chroma subsampling of that encoding.", choices=("4:2:0", "4:2:2", "4:4:4")))
    init: str = field(default="noise", metadata=option(
        "Start from noise, or from images: a folder <label>/<image> of seed images or sketches (synthesize's init_images).",
        by_hand=True))
    init_noise: float = field(default=0.2, metadata=option("Std of the noise added to initial images."))
    amp: str = field(default="none", metadata=option(
        "Autocast: none, bf16 (CUDA, or a CPU with AVX512-BF16 or AMX) or fp16 (CUDA).", choices=("none", "bf16", "fp16")))
    channels_last: bool | None = field(default=None, metadata=option(
        "Run the model in the channels-last memory format; --no-channels-last: never. Unset: on CUDA only.",
        flag="--channels-last", off="--no-channels-last"))
    seed: int = field(default=0, metadata=option("Seeds jitter, flips and the initial noise, so that runs repeat."))
    save_every: int = field(default=0, metadata=option("Keep the images every N iterations (0: never).", low=0))
    check_fingerprint: bool = field(default=True, metadata=option(
        "Check that the model's weights are the ones the bundle was recorded on; --no-fingerprint-check accepts other weights "
        "of the same architecture (taps, channels and structure are still checked).", flag="--fingerprint-check"))

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
        from .jpeg_view import SUBSAMPLINGS  # the codec's table (imports torch; the CLI reads this module without it)

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
        from .losses import get_feature_loss
        from .param import get_parameterization

        get_feature_loss(self.feature_loss)
        get_parameterization(self.param)

    @classmethod
    def paper(cls, **overrides: Any) -> SynthConfig:
        """The paper's ImageNet setting: pixels optimized at lr 0.25 for 2,000 iterations (the record's defaults)."""
        return cls(**overrides)

    @classmethod
    def imagenet(cls, **overrides: Any) -> SynthConfig:
        """A setting for 224 px ImageNet models: the image as a decorrelated-colour spectrum (``param="fourier"``) at lr 0.1
        for 200 iterations, the paper's weights otherwise.

        Chosen on EfficientNet-Lite0 with EfficientNet-Lite1 as the judge (docs/results.md, "ImageNet"): at 200 iterations,
        pixels at the paper's lr leave a purple high-frequency texture (9.9x the real photographs' high-frequency power,
        8.2x their total variation); the spectrum's 1/f prior gives 0.91x and 1.60x on 43 classes it was not tuned on.
        """
        return cls(**{**dict(param="fourier", lr=0.1, iterations=200), **overrides})

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

    parse_tap_weights = staticmethod(parse_tap_weights)

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
        for f in fields(self):
            if f.name in d and f.name not in _FIRST_KEYED and getattr(self, f.name) == f.default:
                del d[f.name]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


PRESETS.register("imagenet", SynthConfig.imagenet)
PRESETS.register("cifar", SynthConfig.cifar)
PRESETS.register("paper", SynthConfig.paper)
