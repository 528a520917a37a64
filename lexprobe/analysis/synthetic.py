"""Synthetic performance curves shaped like real Pythia development, for validating inflection detection.

``PUBLISHED_MEAN`` holds the mean best-layer R^2 (layer > 0, vs human relatedness) over the original study's 9
published seeds at its 16 checkpoints; :func:`pythia_curve` interpolates it linearly in log10(step + 1) to any
steps and adds independent Gaussian noise per checkpoint with the seed-to-seed SD of the published data. On these
curves the rise starts between steps 512 and 1000, as the study reports for every size and seed.
"""

from __future__ import annotations

import numpy as np

STUDY_STEPS: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 10000, 50000, 100000, 143000)
_KNOTS = (0, 256, 512, 1000, 10000, 50000, 100000, 143000)
PUBLISHED_MEAN: dict[str, tuple[float, ...]] = {  # at _KNOTS; flat at ~0.005 over steps 0-256
    "pythia-14m": (0.005, 0.005, 0.007, 0.062, 0.136, 0.157, 0.114, 0.119),
    "pythia-410m": (0.005, 0.005, 0.031, 0.204, 0.416, 0.506, 0.488, 0.474),
}
EARLY_SD: dict[str, tuple[float, float]] = {"pythia-14m": (0.005, 0.005), "pythia-410m": (0.001, 0.009)}
LATE_SD = (0.02, 0.04)  # seed-to-seed SD after step 512, both sizes
ONSET_WINDOW = (512, 1000)  # the study: the rise happens between these checkpoints


def mean_curve(model: str, steps: np.ndarray) -> np.ndarray:
    """The published mean curve of ``model`` at ``steps`` (linear in log10(step + 1) between checkpoints)."""
    x = np.log10(np.asarray(steps, float) + 1)
    return np.interp(x, np.log10(np.asarray(_KNOTS, float) + 1), PUBLISHED_MEAN[model])


def noise_sd(model: str, steps: np.ndarray, late: float = float(np.mean(LATE_SD))) -> np.ndarray:
    """Seed-to-seed SD per checkpoint: ``EARLY_SD`` (steps <= 256, step 512) then ``late`` (default 0.03, the
    middle of the published 0.02-0.04)."""
    steps = np.asarray(steps, float)
    first, at512 = EARLY_SD[model]
    return np.where(steps <= 256, first, np.where(steps <= 512, at512, late))


def pythia_curve(model: str, steps: np.ndarray, rng: np.random.Generator, late: float = float(np.mean(LATE_SD)),
                 n: int | None = None) -> np.ndarray:
    """One noisy seed curve (or ``n`` of them, shape (n, len(steps))) of ``model`` at ``steps``."""
    steps = np.asarray(steps, float)
    shape = (len(steps),) if n is None else (n, len(steps))
    return mean_curve(model, steps) + rng.normal(0, 1, shape) * noise_sd(model, steps, late)
