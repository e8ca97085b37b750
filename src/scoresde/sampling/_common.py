"""Helpers shared by the samplers: host-side schedule coefficients and progress bars."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch

from ..sde import SDE

_PROBE = torch.zeros(1, 1, dtype=torch.float64)


def coeffs(sde: SDE, t: float) -> tuple[float, float]:
    r"""Kernel coefficients :math:`(\alpha(t), \sigma(t))` as Python floats (computed on the host)."""
    alpha, sigma = sde.marginal_coeffs(float(t), _PROBE)
    return float(alpha[0]), float(sigma[0])


def steps_of(ts: Sequence[float], progress: bool, desc: str = "sampling") -> Iterable[tuple[float, float]]:
    """Consecutive ``(t, s)`` pairs of a decreasing grid, optionally under a tqdm bar."""
    pairs = list(itertools.pairwise(ts))
    if not progress:
        return pairs
    from tqdm.auto import tqdm

    return tqdm(pairs, desc=desc, unit="step", leave=False)
