"""Helpers shared by the samplers: host-side schedule coefficients and progress bars."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch

from ..integrators import _progress
from ..sde import SDE

_PROBE = torch.zeros(1, 1, dtype=torch.float64)


def coeffs(sde: SDE, t: float) -> tuple[float, float]:
    r"""Kernel coefficients :math:`(\alpha(t), \sigma(t))` as Python floats (computed on the host)."""
    alpha, sigma = sde.marginal_coeffs(float(t), _PROBE)
    return float(alpha[0]), float(sigma[0])


def steps_of(ts: Sequence[float], progress: bool, desc: str = "sampling") -> Iterable[tuple[float, float]]:
    """Consecutive ``(t, s)`` pairs of a decreasing grid, optionally under a tqdm bar."""
    return _progress(list(itertools.pairwise(ts)), progress, desc)
