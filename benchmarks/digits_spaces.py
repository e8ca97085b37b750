"""Shared by the digits benchmarks: two feature spaces for the Frechet distance of 17-level digits and their floors.

FD in the shipped digits classifier's 64-d features and FD_pix in the raw 64 pixels, both of samples quantized to
the 17 levels, against the test digits; the floors are the same statistics of ``n`` training digits.
"""

from __future__ import annotations

import torch

from scoresde import metrics
from scoresde.build import load_dataset
from scoresde.config import Config
from scoresde.data import to_levels
from scoresde.features import digits_features, load_digits_classifier


class DigitsSpaces:
    """``fd(x)``: ``(FD, FD_pix)`` of model-space samples ``x`` against the test digits; ``floors``: those of ``n``
    training digits."""

    def __init__(self, cfg: Config, levels: int, data_range: tuple[float, float], n: int) -> None:
        self.net, self.levels, self.data_range = load_digits_classifier(), levels, data_range
        self.ref = self._spaces(load_dataset(cfg, cfg.eval.split).images)
        train = self._spaces(load_dataset(cfg, "train").images[:n])
        self.floors = tuple(metrics.frechet_distance(a, b) for a, b in zip(train, self.ref, strict=True))

    def _spaces(self, levels_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unit = (levels_x.double() + 0.5) / self.levels
        return digits_features(unit.float(), self.net)[0], unit.reshape(unit.shape[0], -1)

    def fd(self, x: torch.Tensor) -> tuple[float, float]:
        got = self._spaces(to_levels(x, self.levels, self.data_range))
        return tuple(metrics.frechet_distance(a, b) for a, b in zip(got, self.ref, strict=True))
