r"""Class-conditional sampling: classifier guidance and classifier-free guidance.

Conditioning is one more gradient in the reverse SDE (paper section 5): by Bayes' rule

.. math:: \nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y \mid x),

so a score model plus a *noisy* classifier :math:`p_t(y \mid x)` (one trained on perturbed
data at every time, :mod:`scoresde.classifier`) gives the conditional score.
:func:`classifier_guided` builds it, with a guidance scale :math:`w` on the classifier term.

A class-conditional model trained with label dropout (the null label in place of the class
with probability ``training.p_uncond``) gives both :math:`s(x, t \mid y)` and
:math:`s(x, t) = s(x, t \mid \varnothing)`, and :func:`classifier_free_guided` combines them
(Ho & Salimans 2022) as :math:`s + w\,(s(\cdot \mid y) - s)`: the implicit classifier
:math:`\nabla_x \log p_t(y \mid x) = s(\cdot \mid y) - s` takes the place of a trained one.

Both use one convention: ``w = 0`` is the unconditional score, ``w = 1`` the exact
conditional score, ``w > 1`` sharpens the classes (it samples
:math:`\propto p_t(x)\,p_t(y \mid x)^w`). The results are ordinary score functions, so every
sampler of :func:`scoresde.sample` works with them; the samplers run without autograd, and
classifier guidance enables it for the classifier's gradient only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import batch_time, check_number
from .score import batch_class_labels, check_class_labels
from .sde import ScoreFn

ClassifierFn = Callable[[Tensor, Tensor], Tensor]
"""``classifier_logp(x, t) -> [B, K]`` log-probabilities of the K classes at time ``t``."""


MAX_SCALE = 1000.0
"""The largest guidance weight taken: above it the guided score swamps the model's (samples of 1e30 for 1e30), a
typo rather than a recipe (classifier-free guidance is used up to about 20, classifier guidance up to about 100)."""
LOGP_TOLERANCE = 1e-3
"""How far from 1 the classifier's probabilities may sum (checked once, at the first call)."""


def classifier_guided(score_fn: ScoreFn, classifier_logp: ClassifierFn, y: int | Tensor, scale: float = 1.0) -> ScoreFn:
    r"""The guided score :math:`s(x, t) + w\,\nabla_x \log p_t(y \mid x)`.

    Args:
        score_fn: the unconditional score ``s(x, t)``.
        classifier_logp: ``(x, t) -> [B, K]`` log-probabilities (log-softmax of a noisy
            classifier's logits), differentiable in ``x``.
        y: the requested class: an int for every sample, or a ``[B]`` integer tensor (then
            sample the whole batch at once: with ``batch_size`` the labels would not fit).
        scale: the guidance weight :math:`w \ge 0` (1: the exact conditional).
    """
    if not callable(score_fn) or not callable(classifier_logp):
        raise TypeError("score_fn and classifier_logp must be callables (x, t) -> tensor")
    check_number("scale", scale, minimum=0.0, maximum=MAX_SCALE)
    if isinstance(y, bool) or not isinstance(y, (int, Tensor)):
        raise TypeError(f"y must be an int or a [B] integer tensor, got {type(y).__name__}")
    if isinstance(y, Tensor) and (y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool):
        raise ValueError(f"y must be an int or a [B] integer tensor, got {y.dtype} of shape {tuple(y.shape)}")
    if isinstance(y, int) and y < 0:
        raise ValueError(f"y must be a class index >= 0, got {y}")
    checked: set[int | str] = set()

    def guided(x: Tensor, t: Tensor) -> Tensor:
        score = score_fn(x, t)
        if scale == 0:
            return score
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = classifier_logp(xg, t)
            labels = _labels(y, logp, x, checked)
            if "log-probabilities" not in checked:  # one host sync, at the first call only
                total = torch.logsumexp(logp.detach().double(), dim=1)
                tolerance = max(LOGP_TOLERANCE, 4 * torch.finfo(logp.dtype).eps)  # bfloat16 rounds at 4e-3
                if not bool((total.abs() <= tolerance).all()):
                    raise ValueError("classifier_logp must return log-probabilities (a log_softmax: each row's "
                                     f"exp sums to 1); its rows' exp sum to {float(total.exp().min()):.4g} .. "
                                     f"{float(total.exp().max()):.4g}")  # fmt: skip
                checked.add("log-probabilities")
            chosen = logp.gather(1, labels[:, None]).sum()
            if not chosen.requires_grad:
                raise ValueError("classifier_logp has no autograd path to x (computed under no_grad or detached)")
            (grad,) = torch.autograd.grad(chosen, xg)
        return score + scale * grad.to(score.dtype)

    return guided


def _labels(y: int | Tensor, logp: Tensor, x: Tensor, checked: set[int | str]) -> Tensor:
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


def classifier_free_guided(model_score: ScoreFn, y: int | Tensor, scale: float = 1.0) -> ScoreFn:
    r"""The classifier-free guided score :math:`s(x, t) + w\,(s(x, t \mid y) - s(x, t))`.

    ``w = 0`` is the unconditional score :math:`s(x, t) = s(x, t \mid \varnothing)` (the null
    label), ``w = 1`` the plain conditional score, ``w > 1`` stronger guidance. For ``w`` other
    than 0 and 1 each evaluation is ONE network call on the doubled batch ``[x, x]`` with the
    labels ``[y, null]``; at 0 and 1 a single call on ``x`` with the null label or ``y``.

    Args:
        model_score: the score of a class-conditional model: a
            :class:`scoresde.score.ModelScore` (or any ``score(x, t, y=labels)`` with an int
            attribute ``num_classes``, whose null label is ``num_classes``).
        y: the requested class: an int for every sample, or a ``[B]`` integer tensor (then
            sample the whole batch at once: with ``batch_size`` the labels would not fit).
        scale: the guidance weight :math:`w \ge 0`.
    """
    if not callable(model_score):
        raise TypeError(f"model_score must be a callable score(x, t, y=labels), got {type(model_score).__name__}")
    check_number("scale", scale, minimum=0.0, maximum=MAX_SCALE)
    num_classes = getattr(model_score, "num_classes", None)
    if num_classes is None:
        raise ValueError("classifier-free guidance needs a class-conditional model (trained with "
                         "model.net.num_classes and training.p_uncond > 0); for an unconditional model use "
                         "classifier_guided with a noisy classifier")  # fmt: skip
    y = check_class_labels(y, num_classes)
    null = num_classes

    def guided(x: Tensor, t: Tensor) -> Tensor:
        if scale == 0:
            return model_score(x, t, y=null)
        if scale == 1:
            return model_score(x, t, y=y)
        batch = x.shape[0]
        labels = batch_class_labels(y, x, num_classes)
        t = batch_time(t, x)
        both = model_score(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([labels, torch.full_like(labels, null)]))
        cond, uncond = both[:batch], both[batch:]
        return uncond + scale * (cond - uncond)

    return guided
