r"""Denoising score matching losses.

Continuous-time DSM (paper eq. 7) with :math:`t \sim U(\epsilon, T)`, :math:`z \sim N(0, I)`,
:math:`x_t = \alpha(t) x_0 + \sigma(t) z`, whose conditional score is :math:`-z/\sigma(t)`:

* ``weighting="sigma2"`` (:math:`\lambda(t) = \sigma(t)^2`, the default):
  :math:`\ell = \| \sigma(t) s_\theta(x_t, t) + z \|^2`;
* ``weighting="likelihood"`` (:math:`\lambda(t) = g(t)^2`, Song et al. 2021b), whose
  expectation bounds the negative log-likelihood: :math:`\ell = g(t)^2 \| s_\theta(x_t, t) + z/\sigma(t) \|^2`.

``reduce="mean"`` averages over data dimensions; ``"sum"`` takes half the sum (the
reference's VE setting). The loss is then averaged over the batch.

Inputs are checked once per call at no extra cost: ``x0`` must be a finite
floating-point tensor, given noise must have its shape, given times must have shape
``[B]``, given levels must be integers in ``{0, ..., N-1}``, and the score/model must
return a tensor shaped like its input (a ``[B, 1]`` output would otherwise broadcast).

The discrete losses of the original papers are kept too: :func:`ddpm_loss` (noise
regression on DDPM's ``N`` levels) and :func:`smld_loss` (SMLD/NCSN on the ``N``
geometric noise levels of the VE SDE).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import (
    batch_time,
    check_data,
    check_eps,
    check_finite,
    check_like,
    check_options,
    check_output,
    expand_to,
    randn_like,
)
from .sde import SDE, VESDE, VPSDE, ScoreFn

WEIGHTINGS = ("sigma2", "likelihood")
REDUCTIONS = ("mean", "sum")


def _reduce(per_element: Tensor, reduce: str) -> Tensor:
    flat = per_element.reshape(per_element.shape[0], -1)
    return flat.mean(1) if reduce == "mean" else 0.5 * flat.sum(1)


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    u = torch.rand(n, generator=generator, device=device, dtype=like.dtype).to(like.device)
    return low + (high - low) * u


def _check_sde(sde: object, loss: str, kind: type[SDE] = SDE) -> None:
    """One-line TypeError unless ``sde`` is an instance of ``kind``, naming the loss to use instead."""
    if isinstance(sde, kind):
        return
    if isinstance(sde, type):
        got = f"the class {sde.__name__} (instantiate it, e.g. {sde.__name__}())"
    else:
        got = type(sde).__name__
    if kind is SDE or not isinstance(sde, SDE):
        raise TypeError(f"{loss} needs an SDE instance such as {kind.__name__}(), got {got}")
    what = "DDPM's discrete beta schedule" if kind is VPSDE else "SMLD's geometric noise levels"
    instead = "dsm_loss, which works with every SDE"
    if isinstance(sde, VESDE):
        instead += ", or smld_loss"
    elif isinstance(sde, VPSDE):
        instead += ", or ddpm_loss"
    raise TypeError(f"{loss} needs a {kind.__name__} ({what}), got {got}; use {instead}")


def _check_levels(labels: Tensor, x0: Tensor) -> Tensor:
    """Shape and dtype of given discrete levels (no sync); returns them on ``x0``'s device."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be an integer tensor of shape [B], got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor of discrete levels, got {labels.dtype}")
    if labels.shape != x0.shape[:1]:
        raise ValueError(f"labels must have shape [B]=[{x0.shape[0]}], got shape {tuple(labels.shape)}")
    return labels.to(x0.device)


def _check_finite_and_levels(x0: Tensor, labels: Tensor | None, n_levels: int) -> None:
    """``x0`` finite and ``labels`` in ``{0..n_levels-1}``, with a single host-device sync for both."""
    bad = ~torch.isfinite(x0).all()
    if labels is not None:
        bad = bad | (labels < 0).any() | (labels >= n_levels).any()
    if bool(bad):
        check_finite(x0, "training data")
        lo, hi = (int(v) for v in torch.aminmax(labels))
        raise ValueError(f"labels must be levels in {{0, ..., {n_levels - 1}}}, got values in [{lo}, {hi}]")


def random_levels(n_levels: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform integer levels ``{0, ..., n_levels-1}``, one per sample of ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randint(0, n_levels, (like.shape[0],), generator=generator, device=device).to(like.device)


def training_noise(
    loss: str, sde: SDE, x0: Tensor, eps: float = 1e-5, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Draw every random input of a loss for the batch ``x0`` (keyword arguments of that loss)."""
    check_data(x0, "x0")
    _check_sde(sde, "training_noise")
    if loss == "dsm":
        eps = check_eps(eps, sde.T)
        return {"t": _uniform(x0.shape[0], eps, sde.T, x0, generator), "z": randn_like(x0, generator)}
    if loss == "ddpm":
        return {"labels": random_levels(sde.N, x0, generator), "noise": randn_like(x0, generator)}
    if loss == "smld":
        return {"labels": random_levels(sde.N, x0, generator), "z": randn_like(x0, generator)}
    raise ValueError(f"unknown loss {loss!r}; choose 'dsm', 'ddpm' or 'smld'")


def dsm_loss(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    weighting: str = "sigma2",
    reduce: str = "mean",
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    z: Tensor | None = None,
) -> Tensor:
    """Continuous denoising score matching (see the module docstring); returns a scalar.

    ``t`` (``[B]``) and ``z`` (shaped like ``x0``) may be passed in, e.g. to share one draw
    across data-parallel processes; otherwise they are drawn from ``generator``.
    """
    _check_sde(sde, "dsm_loss")
    check_options("weighting", weighting, WEIGHTINGS)
    check_options("reduce", reduce, REDUCTIONS)
    check_data(x0, "x0")
    eps = check_eps(eps, sde.T)
    t = None if t is None else batch_time(t, x0, name="t")  # shape and dtype; the SDE checks its range
    z = None if z is None else check_like(z, x0, "z", "x0")
    check_finite(x0, "training data")
    t = _uniform(x0.shape[0], eps, sde.T, x0, generator) if t is None else t
    z = randn_like(x0, generator) if z is None else z
    mean, std = sde.marginal_prob(x0, t)
    std_b = expand_to(std, x0)
    xt = mean + std_b * z
    score = check_output(score_fn(xt, t), xt, "score_fn")
    if weighting == "sigma2":
        return _reduce((score * std_b + z) ** 2, reduce).mean()
    g2 = sde.sde(torch.zeros_like(x0), t)[1] ** 2
    return (_reduce((score + z / std_b) ** 2, reduce) * g2).mean()


def ddpm_loss(
    sde: VPSDE,
    model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    reduce: str = "mean",
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    r"""DDPM's :math:`L_{simple}`: ``model(x, l)`` predicts the noise at level ``l ~ U{0..N-1}``.

    :math:`x_l = \sqrt{\bar\alpha_l}x_0 + \sqrt{1-\bar\alpha_l}\epsilon`, loss :math:`\|\hat\epsilon - \epsilon\|^2`.
    To sample, wrap the model as ``ModelScore(model, sde, "eps", time_input="t", time_scale=N-1)``.
    """
    _check_sde(sde, "ddpm_loss", VPSDE)
    check_options("reduce", reduce, REDUCTIONS)
    check_data(x0, "x0")
    given = None if labels is None else _check_levels(labels, x0)
    noise = None if noise is None else check_like(noise, x0, "noise", "x0")
    _check_finite_and_levels(x0, given, sde.N)
    labels = random_levels(sde.N, x0, generator) if given is None else given
    noise = randn_like(x0, generator) if noise is None else noise
    abar = sde.discrete_alphas_cumprod().to(x0.device, x0.dtype)[labels]
    noisy = expand_to(abar.sqrt(), x0) * x0 + expand_to((1 - abar).sqrt(), x0) * noise
    out = check_output(model(noisy, labels.to(x0.dtype)), noisy, "model")
    return _reduce((out - noise) ** 2, reduce).mean()


def smld_loss(
    sde: VESDE,
    score_fn: ScoreFn,
    x0: Tensor,
    reduce: str = "sum",
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    z: Tensor | None = None,
) -> Tensor:
    r"""SMLD / NCSN: DSM at the ``N`` discrete noise levels :math:`\sigma_i` of the VE SDE, weight :math:`\sigma_i^2`.

    Level ``i`` is the time ``t_i = i/(N-1)`` (so :math:`\sigma(t_i) = \sigma_i` exactly), and
    the score function is called there.
    """
    _check_sde(sde, "smld_loss", VESDE)
    check_options("reduce", reduce, REDUCTIONS)
    check_data(x0, "x0")
    given = None if labels is None else _check_levels(labels, x0)
    z = None if z is None else check_like(z, x0, "z", "x0")
    _check_finite_and_levels(x0, given, sde.N)
    labels = random_levels(sde.N, x0, generator) if given is None else given
    t = labels.to(x0.dtype) * (sde.T / (sde.N - 1))
    sigma = expand_to(sde.marginal_coeffs(t, x0)[1], x0)
    z = randn_like(x0, generator) if z is None else z
    xt = x0 + sigma * z
    score = check_output(score_fn(xt, t), xt, "score_fn")
    return _reduce((score * sigma + z) ** 2, reduce).mean()
