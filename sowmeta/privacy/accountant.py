"""The Gaussian mechanism's noise multiplier for a target (epsilon, delta), from a maintained accountant.

One release of every sum at once is one step of the Gaussian mechanism with sampling rate 1; the
accountant (opacus's Rényi-DP accountant) finds the smallest noise multiplier sigma (noise std
over L2 sensitivity) whose privacy loss is within epsilon at delta. No formula is written here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Accounting", "noise_multiplier", "check_budget"]

ACCOUNTANT = "rdp"  # opacus.accountants.RDPAccountant: one Gaussian step at sample rate 1


@dataclass(frozen=True)
class Accounting:
    """The noise a target budget needs, and who said so."""

    epsilon: float
    delta: float
    sigma: float  # noise std = sigma x L2 sensitivity
    accountant: str  # e.g. "opacus.rdp"
    version: str  # the accountant library's version


def check_budget(epsilon: float | None, delta: float | None) -> None:
    """Refuse a budget that is not one: epsilon > 0 and finite, 0 < delta < 1, both given."""
    if epsilon is None and delta is None:
        return
    if epsilon is None or delta is None:
        raise ConfigError("differential privacy needs both --dp-epsilon and --dp-delta (e.g. --dp-epsilon 8 --dp-delta 1e-5, delta below 1/images)")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"--dp-epsilon {epsilon} is not a privacy budget; pass a finite number > 0 (leave DP out for no noise)")
    if not (0 < delta < 1):
        raise ConfigError(f"--dp-delta {delta} is not a probability in (0, 1); pass e.g. 1e-5, below 1/images")


def noise_multiplier(epsilon: float, delta: float) -> Accounting:
    """sigma such that one Gaussian release with noise std sigma x sensitivity is (epsilon, delta)-DP (opacus's RDP accountant)."""
    check_budget(epsilon, delta)
    try:
        import opacus
        from opacus.accountants.utils import get_noise_multiplier
    except ImportError:
        raise ConfigError("differential privacy needs opacus's accountant; install it with pip install 'sowmeta[dp]'") from None
    with warnings.catch_warnings():
        # opacus notes when the best Rényi order is at the end of its range: the bound then is looser, never wrong
        warnings.simplefilter("ignore", UserWarning)
        sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=1, accountant=ACCOUNTANT,
                                     epsilon_tolerance=0.001 * epsilon)
    return Accounting(float(epsilon), float(delta), float(sigma), f"opacus.{ACCOUNTANT}", opacus.__version__)


def spent_epsilon(sigma: float, delta: float) -> float:
    """The epsilon the accountant gives one Gaussian release with noise multiplier ``sigma`` at ``delta``."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, 1.0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta))
