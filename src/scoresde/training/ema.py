"""The exponential moving averages of the weights that training keeps."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


# -- EMA --------------------------------------------------------------------------------------
class EMA:
    r"""Exponential moving average of a model's floating-point parameters: ``e <- d_n e + (1 - d_n) p``.

    With ``warmup`` the decay of the ``n``-th update (``n = 0, 1, ...``) is
    :math:`d_n = \min(d, (1 + n) / (10 + n))`, so the average forgets the random
    initialisation within the first few hundred steps (the product of the early decays
    vanishes) and reaches the constant ``decay`` after about ``10 / (1 - d)`` updates.
    Without it, ``d^n`` of every averaged weight is still the initialisation after ``n``
    updates (8 % for ``d = 0.999`` after 2,500 steps). ``num_updates`` is checkpointed.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), weight)
        self.num_updates += 1

    @contextmanager
    def applied(self, model: nn.Module):
        """Temporarily swap the EMA weights into ``model``."""
        params = dict(model.named_parameters())
        backup = {k: params[k].detach().clone() for k in self.shadow}
        with torch.no_grad():
            for k, v in self.shadow.items():
                params[k].copy_(v)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    params[k].copy_(v)
