r"""Steering one unconditional score model after training: classifier guidance.

Conditioning is one more gradient in the reverse SDE (paper section 5): by Bayes' rule

.. math:: \nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y \mid x),

so a score model plus a *noisy* classifier :math:`p_t(y \mid x)` (one trained on perturbed
data at every time) gives the conditional score. :func:`classifier_guided` builds it,
with a guidance scale :math:`w` on the classifier term (``w = 1`` is the exact conditional;
larger values sharpen the classes). The result is an ordinary score function, so every
sampler of :func:`scoresde.sample` works with it; the samplers run without autograd, and
the guide enables it for the classifier's gradient only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .sde import ScoreFn

ClassifierFn = Callable[[Tensor, Tensor], Tensor]
"""``classifier_logp(x, t) -> [B, K]`` log-probabilities of the K classes at time ``t``."""


def classifier_guided(score_fn: ScoreFn, classifier_logp: ClassifierFn, y: int | Tensor, scale: float = 1.0) -> ScoreFn:
    r"""The guided score :math:`s(x, t) + w\,\nabla_x \log p_t(y \mid x)`.

    Args:
        score_fn: the unconditional score ``s(x, t)``.
        classifier_logp: ``(x, t) -> [B, K]`` log-probabilities (log-softmax of a noisy
            classifier's logits), differentiable in ``x``.
        y: the requested class: an int for every sample, or a ``[B]`` integer tensor (then
            sample the whole batch at once: with ``batch_size`` the labels would not fit).
        scale: the guidance weight :math:`w \ge 0`.
    """
    if not callable(score_fn) or not callable(classifier_logp):
        raise TypeError("score_fn and classifier_logp must be callables (x, t) -> tensor")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    if isinstance(y, bool) or not isinstance(y, (int, Tensor)):
        raise TypeError(f"y must be an int or a [B] integer tensor, got {type(y).__name__}")
    if isinstance(y, Tensor) and (y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool):
        raise ValueError(f"y must be an int or a [B] integer tensor, got {y.dtype} of shape {tuple(y.shape)}")
    if isinstance(y, int) and y < 0:
        raise ValueError(f"y must be a class index >= 0, got {y}")
    checked: set[int] = set()

    def guided(x: Tensor, t: Tensor) -> Tensor:
        score = score_fn(x, t)
        if scale == 0:
            return score
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = classifier_logp(xg, t)
            labels = _labels(y, logp, x, checked)
            chosen = logp.gather(1, labels[:, None]).sum()
            if not chosen.requires_grad:
                raise ValueError("classifier_logp has no autograd path to x (computed under no_grad or detached)")
            (grad,) = torch.autograd.grad(chosen, xg)
        return score + scale * grad.to(score.dtype)

    return guided


def _labels(y: int | Tensor, logp: Tensor, x: Tensor, checked: set[int]) -> Tensor:
    """``y`` as ``[B]`` int64 labels on ``x``'s device, checked against the classifier's output once."""
    batch = x.shape[0]
    if not isinstance(logp, Tensor) or logp.ndim != 2 or logp.shape[0] != batch:
        got = tuple(logp.shape) if isinstance(logp, Tensor) else type(logp).__name__
        raise ValueError(f"classifier_logp must return log-probabilities [B, K] with B={batch}, got {got}")
    classes = logp.shape[1]
    if isinstance(y, int):
        if y >= classes:
            raise ValueError(f"class {y} requested from a classifier of {classes} classes")
        return torch.full((batch,), y, dtype=torch.int64, device=x.device)
    if y.shape[0] != batch:
        raise ValueError(
            f"y has {y.shape[0]} labels for a batch of {batch} (per-sample labels need the whole batch in every "
            "call: no batch_size, and for the adaptive ode solver error_norm='batch'; or pass one int class)"
        )
    if classes not in checked:  # one host sync, at the first call only
        if bool((y < 0).any()) or bool((y >= classes).any()):
            lo, hi = int(y.min()), int(y.max())
            raise ValueError(f"y must hold class indices in [0, {classes}), got values in [{lo}, {hi}]")
        checked.add(classes)
    return y.to(device=x.device, dtype=torch.int64)
