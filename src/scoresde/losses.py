r"""Denoising score matching losses.

Continuous-time DSM (paper eq. 7) with :math:`t \sim U(\epsilon, T)`, :math:`z \sim N(0, I)`,
:math:`x_t = \alpha(t) x_0 + \sigma(t) z`, whose conditional score is :math:`-z/\sigma(t)`:

* ``weighting="sigma2"`` (:math:`\lambda(t) = \sigma(t)^2`, the default):
  :math:`\ell = \| \sigma(t) s_\theta(x_t, t) + z \|^2`;
* ``weighting="likelihood"`` (:math:`\lambda(t) = g(t)^2`, Song et al. 2021b), whose
  expectation bounds the negative log-likelihood: :math:`\ell = g(t)^2 \| s_\theta(x_t, t) + z/\sigma(t) \|^2`.

With ``weighting="likelihood"``, ``importance_sampling=True`` (Song et al. 2021b, sec. 5)
draws :math:`t \sim p(t) \propto g(t)^2/\sigma(t)^2` on :math:`[\epsilon, T]` instead of
:math:`U(\epsilon, T)` and reweights by :math:`w(t) = \frac{1/(T-\epsilon)}{p(t)}`, so the loss keeps
exactly the expectation of the uniform-time likelihood-weighted loss with a much smaller variance:

.. math:: \ell = w(t)\, g(t)^2 \| s_\theta + z/\sigma(t) \|^2
          = \frac{Z}{T-\epsilon} \| \sigma(t) s_\theta(x_t, t) + z \|^2,
   \qquad Z = \int_\epsilon^T \frac{g(s)^2}{\sigma(s)^2}\,ds.

The times come from the inverse CDF (:func:`importance_times`; :func:`importance_normalizer` is
:math:`Z`). Closed forms, with :math:`B(t) = \int_0^t \beta` and :math:`F` an antiderivative of
:math:`g^2/\sigma^2` (so the CDF is :math:`(F(t) - F(\epsilon))/Z`):

* VP: :math:`g^2/\sigma^2 = \beta/(1-e^{-B})`, :math:`F = \log(e^{B}-1)`, inverse :math:`B = \log(1+e^F)`;
* sub-VP: :math:`g^2/\sigma^2 = \beta \coth(B/2)`, :math:`F = 2\log\sinh(B/2)`,
  inverse :math:`B = 2\,\mathrm{asinh}(e^{F/2})`;
  for both, :math:`t = B^{-1}` solves :math:`\beta_0 t + \tfrac12(\beta_1-\beta_0)t^2 = B`;
* VE: :math:`g^2/\sigma^2 = 2\log(\sigma_{max}/\sigma_{min})` is constant, so :math:`p` is uniform;
  (each process carries its closed form as ``importance_antiderivative`` / ``importance_inverse``);
* any other SDE (``importance_antiderivative = None``): :math:`g^2/\sigma^2` tabulated in float64 on a
  geometric-plus-linear grid of :math:`[\epsilon, T]`, cumulative trapezoid, and the piecewise-linear
  density inverted exactly per cell; the table is cached per ``(sde, eps, device)``.

``reduce="mean"`` averages over data dimensions; ``"sum"`` takes half the sum (the
reference's VE setting). The loss is then averaged over the batch.

Inputs are checked once per call at no extra cost: ``x0`` must be a finite
floating-point tensor, given noise must have its shape, given times must have shape
``[B]``, given levels must be integers in ``{0, ..., N-1}``, and the score/model must
return a tensor shaped like its input (a ``[B, 1]`` output would otherwise broadcast).

The discrete losses of the original papers are kept too: :func:`ddpm_loss` (noise
regression on DDPM's ``N`` levels) and :func:`smld_loss` (SMLD/NCSN on the ``N``
geometric noise levels of the VE SDE).

Class-conditional models: every loss takes ``y``, ``[B]`` class labels passed on to the
score function (``score_fn(x, t, y=y)``) or the network (``model(x, label, y)``).
For classifier-free guidance :func:`drop_labels` replaces each label by the null label
with probability ``p_uncond``, so one network learns the conditional and the unconditional score.
"""

from __future__ import annotations

import math
import weakref
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


# -- importance sampling of the time for the likelihood weighting --------------------------------
_GRID = 4096  # points of each half (geometric, linear) of the generic table
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # sde -> {(repr, eps, device, dtype): table}


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _table(sde: SDE, eps: float, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, float]:
    """Grid, ``g^2/sigma^2`` on it and its cumulative trapezoid (on ``device``), and ``Z``; cached."""
    key = (repr(sde), eps, str(device), dtype)
    try:
        cache = _TABLES.setdefault(sde, {})
    except TypeError:  # an unhashable or non-weakref-able user SDE: no cache
        cache = {}
    if key in cache:
        return cache[key]
    T = float(sde.T)
    grid = torch.cat([
        torch.logspace(math.log10(eps), math.log10(T), _GRID, dtype=torch.float64),
        torch.linspace(eps, T, _GRID, dtype=torch.float64),
    ])  # fmt: skip
    grid = torch.unique(grid.clamp(eps, T))  # sorted
    probe = torch.zeros(grid.shape[0], 1, dtype=torch.float64)
    g = sde.sde(probe, grid)[1]
    sigma = sde.marginal_coeffs(grid, probe)[1]
    ratio = torch.broadcast_to(torch.as_tensor(g, dtype=torch.float64) ** 2 / sigma.to(torch.float64) ** 2, grid.shape)
    if not bool(torch.isfinite(ratio).all() & (ratio >= 0).all()) or not float(ratio.max()) > 0:
        raise ValueError(f"importance sampling needs a finite, non-negative, not all zero g(t)^2/sigma(t)^2 on "
                         f"[eps, T]=[{eps:g}, {T:g}] for {type(sde).__name__}")  # fmt: skip
    cdf = torch.cat(
        [torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (ratio[1:] + ratio[:-1]) * grid.diff(), 0)]
    )
    entry = (grid.to(device, dtype), ratio.to(device, dtype), cdf.to(device, dtype), float(cdf[-1]))
    cache[key] = entry
    return entry


def importance_normalizer(sde: SDE, eps: float = 1e-5) -> float:
    r""":math:`Z = \int_\epsilon^T g(t)^2/\sigma(t)^2\,dt`, the normalizer of the importance density (host float)."""
    _check_sde(sde, "importance_normalizer")
    eps = check_eps(eps, sde.T)
    F = sde.importance_antiderivative
    if F is not None:
        return F(sde.T) - F(eps)
    return _table(sde, eps, torch.device("cpu"), torch.float64)[3]


def _from_uniform(sde: SDE, eps: float, u: Tensor) -> Tensor:
    r"""Map ``u ~ U(0, 1)`` through the inverse CDF of :math:`p(t) \propto g^2/\sigma^2` (tensor ops, no sync)."""
    F, T = sde.importance_antiderivative, float(sde.T)
    if F is not None:
        f0, f1 = F(eps), F(T)
        t = sde.importance_inverse(f0 + (f1 - f0) * u)
    else:
        grid, ratio, cdf, z = _table(sde, eps, u.device, u.dtype)
        c = u * z
        i = (torch.searchsorted(cdf, c, right=True) - 1).clamp(0, grid.shape[0] - 2)
        h = grid[i + 1] - grid[i]
        r0, r1 = ratio[i], ratio[i + 1]
        d = (c - cdf[i]).clamp_min(0)
        # mass r0 s + (r1 - r0) s^2 / (2h) = d in the cell (linear density): the stable root
        root = torch.sqrt((r0 * r0 + 2 * (r1 - r0) * d / h).clamp_min(0))
        s = 2 * d / (r0 + root).clamp_min(torch.finfo(u.dtype).tiny)
        t = grid[i] + torch.minimum(s, h)
    return t.clamp(eps, T)


def importance_times(sde: SDE, x0: Tensor, eps: float = 1e-5, generator: torch.Generator | None = None) -> Tensor:
    r"""Draw ``[B]`` times from :math:`p(t) \propto g(t)^2/\sigma(t)^2` on ``[eps, T]`` (in ``x0``'s dtype and device).

    One uniform draw per sample from ``generator`` (on its device, in float64 there unless it
    is an MPS device) is mapped through the inverse CDF (see the module docstring).
    """
    _check_sde(sde, "importance_times")
    check_data(x0, "x0")
    eps = check_eps(eps, sde.T)
    device = generator.device if generator is not None else x0.device
    u = torch.rand(x0.shape[0], generator=generator, device=device, dtype=_work_dtype(device))
    return _from_uniform(sde, eps, u).to(device=x0.device, dtype=x0.dtype)


def _check_importance(importance_sampling: bool, weighting: str | None, loss: str = "dsm") -> bool:
    if not isinstance(importance_sampling, bool):
        raise TypeError(f"importance_sampling must be a bool, got {importance_sampling!r}")
    if importance_sampling and loss != "dsm":
        raise ValueError(
            f"importance_sampling=True is for the 'dsm' loss with weighting='likelihood', got loss {loss!r}"
        )
    if importance_sampling and weighting is not None and weighting != "likelihood":
        raise ValueError(f"importance_sampling=True needs weighting='likelihood', got weighting={weighting!r}")
    return importance_sampling


_DISCRETE = {"ddpm": ("VPSDE", "DDPM's discrete beta schedule"), "smld": ("VESDE", "SMLD's geometric noise levels")}


def _check_sde(sde: object, loss: str, levels: str | None = None) -> None:
    """One-line TypeError unless ``sde`` is an SDE instance (with the discrete ``levels`` of DDPM or SMLD when
    given, see :attr:`SDE.discrete_levels`), naming the loss to use instead."""
    if isinstance(sde, SDE) and (levels is None or sde.discrete_levels == levels):
        return
    if isinstance(sde, type):
        got = f"the class {sde.__name__} (instantiate it, e.g. {sde.__name__}())"
    else:
        got = type(sde).__name__
    name, what = _DISCRETE[levels] if levels is not None else ("SDE", "")
    if levels is None or not isinstance(sde, SDE):
        raise TypeError(f"{loss} needs an SDE instance such as {name}(), got {got}")
    instead = "dsm_loss, which works with every SDE"
    other = {"ddpm": "ddpm_loss", "smld": "smld_loss"}.get(sde.discrete_levels)
    if other is not None:
        instead += f", or {other}"
    raise TypeError(f"{loss} needs a {name} ({what}), got {got}; use {instead}")


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


def _check_classes(y: Tensor | None, x0: Tensor) -> Tensor | None:
    """Shape and dtype of class labels (no sync); returns them on ``x0``'s device."""
    if y is None:
        return None
    if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = y.dtype if isinstance(y, Tensor) else type(y).__name__
        raise TypeError(f"y must be an integer tensor of class labels of shape [B], got {got}")
    if y.shape != x0.shape[:1]:
        raise ValueError(f"y must have shape [B]=[{x0.shape[0]}], got shape {tuple(y.shape)}")
    return y.to(x0.device)


def drop_labels(y: Tensor, p_uncond: float, null: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Label dropout for classifier-free guidance: each label becomes the null label ``null`` with
    probability ``p_uncond`` (one uniform draw per label from ``generator``; no draw when ``p_uncond = 0``).

    .. math:: \tilde y_i = \varnothing \text{ if } u_i < p_{uncond} \text{ else } y_i, \qquad u_i \sim U[0, 1)
    """
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must be a probability in [0, 1), got {p_uncond!r}")
    if p_uncond == 0:
        return y
    device = generator.device if generator is not None else y.device
    u = torch.rand(y.shape[0], generator=generator, device=device).to(y.device)
    return torch.where(u < p_uncond, torch.full_like(y, null), y)


def _score(score_fn: ScoreFn, xt: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    """``score_fn(xt, t)``, with ``y=y`` for class labels; checked to be shaped like ``xt``."""
    out = score_fn(xt, t) if y is None else score_fn(xt, t, y=y)
    return check_output(out, xt, "score_fn")


def random_levels(n_levels: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform integer levels ``{0, ..., n_levels-1}``, one per sample of ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randint(0, n_levels, (like.shape[0],), generator=generator, device=device).to(like.device)


def training_noise(
    loss: str,
    sde: SDE,
    x0: Tensor,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    importance_sampling: bool = False,
) -> dict[str, Tensor]:
    """Draw every random input of a loss for the batch ``x0`` (keyword arguments of that loss).

    With ``importance_sampling=True`` (``"dsm"`` only) the times are those :func:`dsm_loss` draws
    with ``weighting="likelihood", importance_sampling=True``; pass the same flag to the loss.
    """
    check_data(x0, "x0")
    _check_sde(sde, "training_noise")
    if loss in ("dsm", "ddpm", "smld"):
        _check_importance(importance_sampling, None, loss)
    if loss == "dsm":
        eps = check_eps(eps, sde.T)
        if importance_sampling:
            t = importance_times(sde, x0, eps, generator)
        else:
            t = _uniform(x0.shape[0], eps, sde.T, x0, generator)
        return {"t": t, "z": randn_like(x0, generator)}
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
    importance_sampling: bool = False,
    y: Tensor | None = None,
) -> Tensor:
    r"""Continuous denoising score matching (see the module docstring); returns a scalar.

    ``t`` (``[B]``) and ``z`` (shaped like ``x0``) may be passed in, e.g. to share one draw
    across data-parallel processes; otherwise they are drawn from ``generator``. ``y``: class
    labels ``[B]`` of a class-conditional model, passed as ``score_fn(x, t, y=y)``.

    ``importance_sampling=True`` (only with ``weighting="likelihood"``) draws
    :math:`t \sim p(t) \propto g(t)^2/\sigma(t)^2` on ``[eps, T]`` and returns the mean of
    :math:`\frac{Z}{T-\epsilon}\|\sigma(t) s_\theta(x_t, t) + z\|^2`, :math:`Z = \int_\epsilon^T g^2/\sigma^2\,dt`:
    the same expectation as the uniform-time likelihood-weighted loss. Given ``t`` must then
    come from that density (``training_noise(..., importance_sampling=True)``).
    """
    _check_sde(sde, "dsm_loss")
    check_options("weighting", weighting, WEIGHTINGS)
    check_options("reduce", reduce, REDUCTIONS)
    _check_importance(importance_sampling, weighting)
    check_data(x0, "x0")
    eps = check_eps(eps, sde.T)
    t = None if t is None else batch_time(t, x0, name="t")  # shape and dtype; the SDE checks its range
    z = None if z is None else check_like(z, x0, "z", "x0")
    y = _check_classes(y, x0)
    check_finite(x0, "training data")
    if t is None:
        t = (
            importance_times(sde, x0, eps, generator)
            if importance_sampling
            else _uniform(x0.shape[0], eps, sde.T, x0, generator)
        )
    z = randn_like(x0, generator) if z is None else z
    mean, std = sde.marginal_prob(x0, t)
    std_b = expand_to(std, x0)
    xt = mean + std_b * z
    score = _score(score_fn, xt, t, y)
    if weighting == "sigma2":
        return _reduce((score * std_b + z) ** 2, reduce).mean()
    if importance_sampling:  # w(t) g^2 ||s + z/sigma||^2 with w = (1/(T-eps))/p(t), p = (g^2/sigma^2)/Z
        return _reduce((score * std_b + z) ** 2, reduce).mean() * (importance_normalizer(sde, eps) / (sde.T - eps))
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
    y: Tensor | None = None,
) -> Tensor:
    r"""DDPM's :math:`L_{simple}`: ``model(x, l)`` predicts the noise at level ``l ~ U{0..N-1}``.

    :math:`x_l = \sqrt{\bar\alpha_l}x_0 + \sqrt{1-\bar\alpha_l}\epsilon`, loss :math:`\|\hat\epsilon - \epsilon\|^2`.
    To sample, wrap the model as ``ModelScore(model, sde, "eps", time_input="t", time_scale=N-1)``.
    ``labels`` are the discrete noise levels; ``y`` class labels, passed as ``model(x, l, y)``.
    """
    _check_sde(sde, "ddpm_loss", "ddpm")
    check_options("reduce", reduce, REDUCTIONS)
    check_data(x0, "x0")
    given = None if labels is None else _check_levels(labels, x0)
    noise = None if noise is None else check_like(noise, x0, "noise", "x0")
    y = _check_classes(y, x0)
    _check_finite_and_levels(x0, given, sde.N)
    labels = random_levels(sde.N, x0, generator) if given is None else given
    noise = randn_like(x0, generator) if noise is None else noise
    abar = sde.discrete_alphas_cumprod().to(x0.device, x0.dtype)[labels]
    noisy = expand_to(abar.sqrt(), x0) * x0 + expand_to((1 - abar).sqrt(), x0) * noise
    levels = labels.to(x0.dtype)
    out = check_output(model(noisy, levels) if y is None else model(noisy, levels, y), noisy, "model")
    return _reduce((out - noise) ** 2, reduce).mean()


def smld_loss(
    sde: VESDE,
    score_fn: ScoreFn,
    x0: Tensor,
    reduce: str = "sum",
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    z: Tensor | None = None,
    y: Tensor | None = None,
) -> Tensor:
    r"""SMLD / NCSN: DSM at the ``N`` discrete noise levels :math:`\sigma_i` of the VE SDE, weight :math:`\sigma_i^2`.

    Level ``i`` is the time ``t_i = i/(N-1)`` (so :math:`\sigma(t_i) = \sigma_i` exactly), and
    the score function is called there. ``y``: class labels, passed as ``score_fn(x, t, y=y)``.
    """
    _check_sde(sde, "smld_loss", "smld")
    check_options("reduce", reduce, REDUCTIONS)
    check_data(x0, "x0")
    given = None if labels is None else _check_levels(labels, x0)
    z = None if z is None else check_like(z, x0, "z", "x0")
    y = _check_classes(y, x0)
    _check_finite_and_levels(x0, given, sde.N)
    labels = random_levels(sde.N, x0, generator) if given is None else given
    t = labels.to(x0.dtype) * (sde.T / (sde.N - 1))
    sigma = expand_to(sde.marginal_coeffs(t, x0)[1], x0)
    z = randn_like(x0, generator) if z is None else z
    xt = x0 + sigma * z
    score = _score(score_fn, xt, t, y)
    return _reduce((score * sigma + z) ** 2, reduce).mean()
