r"""Denoising score matching losses.

Continuous-time DSM (paper eq. 7) with :math:`z \sim N(0, I)`, :math:`x_t = \alpha(t) x_0 + \sigma(t) z`,
whose conditional score is :math:`-z/\sigma(t)`, with a weighting :math:`\lambda(t)` of the score error:

.. math:: \ell = \lambda(t) \| s_\theta(x_t, t) + z/\sigma(t) \|^2 = w(t)\,\| \sigma(t) s_\theta(x_t, t) + z \|^2,
   \qquad w = \lambda/\sigma^2.

Three independent choices make a training recipe: what the network predicts (``prediction`` of
:class:`~scoresde.score.ModelScore`: it is converted to the score before the loss, so it changes the
network's parameterization, not the objective), the weighting, and the time sampling.

Weightings (:func:`loss_weight` is :math:`w`; :math:`\hat\sigma = \sigma/\alpha`):

* ``"sigma2"`` (:math:`\lambda = \sigma^2`, the default): the eps-prediction MSE :math:`\|\hat\epsilon - \epsilon\|^2`;
* ``"likelihood"`` (:math:`\lambda = g^2`, Song et al. 2021b), whose expectation bounds the negative
  log-likelihood: :math:`\ell = g(t)^2 \| s_\theta(x_t, t) + z/\sigma(t) \|^2`;
* ``"edm"`` (Karras et al. 2022): :math:`\frac{\hat\sigma^2 + \sigma_d^2}{(\hat\sigma\sigma_d)^2}\|D_\theta - x_0\|^2`
  on the denoiser, i.e. :math:`w = (\sigma^2 + \alpha^2\sigma_d^2)/(\alpha\sigma_d)^2` (unit weight on the output
  of EDM's preconditioned network; ``sigma_data``);
* ``"velocity"``: the plain flow-matching MSE :math:`\|\hat u - u\|^2` of the velocity
  :math:`u = \alpha' x_0 + \sigma' z`, i.e. :math:`w = (\sigma' - \alpha'\sigma/\alpha)^2` (rectified flow:
  :math:`1/(1-t)^2`);
* ``"min_snr"`` (Hang et al. 2023): the eps-MSE times :math:`\min(\mathrm{SNR}, \gamma)/\mathrm{SNR}`,
  :math:`\mathrm{SNR} = \alpha^2/\sigma^2`, i.e. :math:`w = \min(1, \gamma\sigma^2/\alpha^2)` (``gamma``, default 5);
  in score space this is the same objective as min-SNR on the x0 or v losses.

Time samplings (:func:`sample_times`, density :func:`time_density`):

* ``"uniform"``: :math:`t \sim U(\epsilon, T)` (the paper's);
* ``"importance"``: :math:`p(t) \propto g^2/\sigma^2`, with ``weighting="likelihood"`` only and reweighted (below);
* ``"lognormal"`` (EDM: :math:`\ln\hat\sigma \sim N(-1.2, 1.2^2)`) and ``"logit_normal"`` (SD3:
  :math:`\mathrm{logit}\,t \sim N(0, 1)` in rectified-flow time): both are normal distributions of the
  log-SNR :math:`\lambda`, truncated to :math:`[\lambda(T), \lambda(\epsilon)]`, so they apply to every process.
  They are not reweighted (as in EDM and SD3): the density becomes part of the weighting, and the loss is
  the weighted DSM objective with :math:`\lambda_{eff}(t) = (T - \epsilon)\,p(t)\,\lambda(t)`
  (:func:`objective_weight` states it for every combination; the tests check it by quadrature).

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
    TimeLike,
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
from .score import SIGMA_DATA, _check_sigma_data
from .sde import SDE, VESDE, VPSDE, ScoreFn

WEIGHTINGS = ("sigma2", "likelihood", "edm", "velocity", "min_snr")
TIME_SAMPLINGS = ("uniform", "importance", "lognormal", "logit_normal")
REDUCTIONS = ("mean", "sum")
TIME_DEFAULTS: dict[str, tuple[float, float]] = {"lognormal": (-1.2, 1.2), "logit_normal": (0.0, 1.0)}
r"""(mean, std) of the normal times: EDM's :math:`\ln\hat\sigma \sim N(-1.2, 1.2^2)`, SD3's logit-normal(0, 1)."""
MIN_SNR_GAMMA = 5.0
r"""Hang et al.'s :math:`\gamma` of the min-SNR weighting."""


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


# -- weightings and time samplings ---------------------------------------------------------------------
def loss_weight(sde: SDE, t: Tensor, weighting: str, sigma_data: float = SIGMA_DATA,
                gamma: float = MIN_SNR_GAMMA) -> Tensor:  # fmt: skip
    r"""The factor :math:`w(t) = \lambda(t)/\sigma(t)^2` of :math:`\|\sigma s_\theta + z\|^2` for a weighting
    :math:`\lambda(t)` of the score-space DSM objective (``[B]`` for times ``[B]``; see the module docstring)."""
    check_options("weighting", weighting, WEIGHTINGS)
    if weighting == "sigma2":
        return torch.ones_like(t)
    alpha, sigma = sde.marginal_coeffs(t, t)
    if weighting == "likelihood":
        return sde.sde(torch.zeros_like(t)[:, None], t)[1] ** 2 / sigma**2
    if weighting == "edm":
        scaled = alpha * _check_sigma_data(sigma_data)
        return (sigma**2 + scaled**2) / scaled**2
    if weighting == "velocity":
        d_alpha, d_sigma = sde.kernel_derivatives(sde._time(t, t))
        return (d_sigma - d_alpha * sigma / alpha) ** 2
    gamma = _check_gamma(gamma)
    return (gamma * sigma**2 / alpha**2).clamp_max(1.0)


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma (min-SNR weighting) must be a finite number > 0, got {gamma!r}")
    return float(gamma)


def _normal_log_snr(time_sampling: str, mean: float | None, std: float | None) -> tuple[float, float]:
    r"""``(mu, s)`` of :math:`\lambda \sim N(\mu, s^2)` for the normal time samplings (both normal in log-SNR)."""
    default_mean, default_std = TIME_DEFAULTS[time_sampling]
    mean = default_mean if mean is None else mean
    std = default_std if std is None else std
    for name, value in (("time_mean", mean), ("time_std", std)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} of {time_sampling} times must be a finite number, got {value!r}")
    if not std > 0:
        raise ValueError(f"time_std of {time_sampling} times must be > 0, got {std!r}")
    return -float(mean), float(std)


def _phi(x: float) -> float:
    """The standard normal CDF (host float; exact 0 and 1 at -inf and inf)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _truncation(sde: SDE, eps: float, mu: float, s: float) -> tuple[float, float]:
    r"""CDF values of the ends :math:`\lambda(T) < \lambda(\epsilon)` of the truncated normal in :math:`\lambda`."""
    lam_lo, lam_hi = sde.schedule.log_snr(float(sde.T)), sde.schedule.log_snr(eps)
    a, b = _phi((lam_lo - mu) / s), _phi((lam_hi - mu) / s)
    if not b > a:
        raise ValueError(f"the normal times N({mu:g}, {s:g}^2) in log-SNR put no mass on [eps, T] = [{eps:g}, "
                         f"{sde.T:g}] (log-SNR [{lam_lo:.3g}, {lam_hi:.3g}])")  # fmt: skip
    return a, b


def check_time_sampling(time_sampling: str, weighting: str | None = None, importance_sampling: bool = False,
                        time_mean: float | None = None, time_std: float | None = None,
                        loss: str = "dsm") -> str:  # fmt: skip
    """Validate a time sampling (and its combination with ``weighting``, the ``loss`` and the legacy
    ``importance_sampling`` flag); returns the effective one (``importance_sampling=True`` is ``"importance"``)."""
    check_options("time_sampling", time_sampling, TIME_SAMPLINGS)
    if not isinstance(importance_sampling, bool):
        raise TypeError(f"importance_sampling must be a bool, got {importance_sampling!r}")
    what = "importance_sampling=True" if importance_sampling else f"time_sampling={time_sampling!r}"
    if importance_sampling:
        if time_sampling not in ("uniform", "importance"):
            raise ValueError(f"importance_sampling=True is time_sampling='importance'; it cannot be combined with "
                             f"time_sampling={time_sampling!r}")  # fmt: skip
        time_sampling = "importance"
    if time_sampling != "uniform" and loss != "dsm":
        raise ValueError(f"{what} is for the 'dsm' loss (continuous times), got loss {loss!r}")
    if time_sampling == "importance" and weighting is not None and weighting != "likelihood":
        raise ValueError(f"{what} needs weighting='likelihood', got weighting={weighting!r}")
    if time_sampling in TIME_DEFAULTS:
        _normal_log_snr(time_sampling, time_mean, time_std)
    elif time_mean is not None or time_std is not None:
        raise ValueError(f"time_mean and time_std set the lognormal and logit_normal times, not {time_sampling!r}")
    return time_sampling


def sample_times(sde: SDE, x0: Tensor, eps: float = 1e-5, generator: torch.Generator | None = None,
                 time_sampling: str = "uniform", time_mean: float | None = None,
                 time_std: float | None = None) -> Tensor:  # fmt: skip
    r"""Draw ``[B]`` training times on ``[eps, T]`` (one uniform draw per sample from ``generator``).

    * ``"uniform"``: :math:`t \sim U(\epsilon, T)`;
    * ``"importance"``: :math:`p(t) \propto g^2/\sigma^2` (:func:`importance_times`), uniform in log-SNR;
    * ``"lognormal"`` (EDM): :math:`\ln\hat\sigma \sim N(m, s^2)` in EDM's noise level :math:`\hat\sigma = \sigma/\alpha
      = e^{-\lambda}`, i.e. :math:`\lambda \sim N(-m, s^2)` (default :math:`m = -1.2, s = 1.2`);
    * ``"logit_normal"`` (Esser et al. 2024): :math:`\mathrm{logit}(t) \sim N(m, s^2)` in rectified-flow time,
      where :math:`\lambda = -\mathrm{logit}(t)`, i.e. :math:`\lambda \sim N(-m, s^2)` (default :math:`m = 0, s = 1`).

    Both normal samplings are thus normal in :math:`\lambda`, which carries them to every process: the
    draw is truncated to :math:`[\lambda(T), \lambda(\epsilon)]` (inverse CDF, so no mass piles up at the
    ends) and mapped to :math:`t(\lambda)` by the schedule view. :func:`time_density` is the density.
    """
    time_sampling = check_time_sampling(time_sampling, None, False, time_mean, time_std)
    eps = check_eps(eps, sde.T)
    if time_sampling == "uniform":
        return _uniform(x0.shape[0], eps, sde.T, x0, generator)
    if time_sampling == "importance":
        return importance_times(sde, x0, eps, generator)
    mu, s = _normal_log_snr(time_sampling, time_mean, time_std)
    a, b = _truncation(sde, eps, mu, s)
    device = generator.device if generator is not None else x0.device
    u = torch.rand(x0.shape[0], generator=generator, device=device, dtype=_work_dtype(device))
    lam = mu + s * torch.special.ndtri((a + (b - a) * u).clamp(a, b))
    return sde.schedule.t_from_log_snr(lam).clamp(eps, sde.T).to(device=x0.device, dtype=x0.dtype)


def time_density(sde: SDE, t: Tensor, time_sampling: str = "uniform", eps: float = 1e-5,
                 time_mean: float | None = None, time_std: float | None = None) -> Tensor:  # fmt: skip
    r"""The density :math:`p(t)` on ``[eps, T]`` of :func:`sample_times` at the times ``t`` (``[B]``).

    With :math:`|\lambda'| = g^2/(2\sigma^2)`: uniform :math:`1/(T-\epsilon)`; importance
    :math:`(g^2/\sigma^2)/Z`; the normal samplings
    :math:`\varphi((\lambda(t)-\mu)/s)\,|\lambda'(t)|/(s\,(\Phi_b - \Phi_a))`.
    """
    time_sampling = check_time_sampling(time_sampling, None, False, time_mean, time_std)
    eps = check_eps(eps, sde.T)
    if time_sampling == "uniform":
        return torch.full_like(t, 1.0 / (sde.T - eps))
    sigma = sde.marginal_coeffs(t, t)[1]
    ratio = sde.sde(torch.zeros_like(t)[:, None], t)[1] ** 2 / sigma**2  # g^2 / sigma^2 = 2 |lambda'|
    if time_sampling == "importance":
        return ratio / importance_normalizer(sde, eps)
    mu, s = _normal_log_snr(time_sampling, time_mean, time_std)
    a, b = _truncation(sde, eps, mu, s)
    z = (sde.schedule.log_snr(t) - mu) / s
    return torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) * (0.5 * ratio) / (s * (b - a))


def objective_weight(sde: SDE, t: Tensor, weighting: str = "sigma2", time_sampling: str = "uniform",
                     eps: float = 1e-5, sigma_data: float = SIGMA_DATA, gamma: float = MIN_SNR_GAMMA,
                     time_mean: float | None = None, time_std: float | None = None) -> Tensor:  # fmt: skip
    r"""The weight :math:`\lambda_{eff}(t)` of the DSM objective a loss optimises (see the module docstring):

    .. math:: E[\ell] = \frac{1}{D(T-\epsilon)} \int_\epsilon^T \lambda_{eff}(t)\,
              E_{x_0, z}\|s_\theta(x_t, t) - \nabla\log p_{0t}(x_t | x_0)\|^2\,dt

    (``reduce="mean"``; ``D`` data dimensions), with :math:`\lambda_{eff} = \lambda` for uniform and importance
    times (the latter reweighted) and :math:`\lambda_{eff} = (T-\epsilon)\,p(t)\,\lambda(t)` for the normal times,
    which are not reweighted (as in EDM and SD3): their density becomes part of the weighting.
    """
    time_sampling = check_time_sampling(time_sampling, weighting, False, time_mean, time_std)
    lam = sde.marginal_coeffs(t, t)[1] ** 2 * loss_weight(sde, t, weighting, sigma_data, gamma)
    if time_sampling in ("uniform", "importance"):
        return lam
    return lam * (sde.T - eps) * time_density(sde, t, time_sampling, eps, time_mean, time_std)


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


def positive_time(t: TimeLike, x0: Tensor, T: float) -> Tensor:
    """Given training times as ``[B]``, each in ``(0, T]``: at ``t = 0`` the kernel adds no noise and the loss of
    every weighting is undefined (``0 * inf``)."""
    t = batch_time(t, x0, T, name="t")
    if t.device.type == "cpu" and not bool((t > 0).all()):
        raise ValueError(f"t must lie in (0, T={T}]: at t = 0 the data are not noised and the loss is undefined; "
                         "draw times from [eps, T]")  # fmt: skip
    return t


def _score(score_fn: ScoreFn, xt: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    """``score_fn(xt, t)``, with ``y=y`` for class labels; checked to be shaped like ``xt``."""
    out = check_output(score_fn(xt, t) if y is None else score_fn(xt, t, y=y), xt, "score_fn")
    _check_finite_output(out, "score_fn")
    return out


def _check_finite_output(out: Tensor, what: str) -> None:
    """On the CPU (where it costs no device sync), a one-line error for a non-finite network output."""
    if out.device.type == "cpu" and not bool(torch.isfinite(out.detach()).all()):
        raise FloatingPointError(f"{what} returned NaN or inf on noised training data; the loss would be too "
                                 "(a diverged model, or data far outside its range)")  # fmt: skip


def _finite_loss(loss: Tensor) -> Tensor:
    """The loss, after (on the CPU) a one-line error if it overflowed: finite outputs too large to square."""
    if loss.device.type == "cpu" and not bool(torch.isfinite(loss.detach()).all()):
        raise FloatingPointError(f"the loss overflowed to {float(loss.detach().reshape(-1)[0])} in {loss.dtype}: the "
                                 "network's outputs are far too large (a diverged model), or the dtype too narrow "
                                 "for this weighting")  # fmt: skip
    return loss


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
    time_sampling: str = "uniform",
    time_mean: float | None = None,
    time_std: float | None = None,
) -> dict[str, Tensor]:
    """Draw every random input of a loss for the batch ``x0`` (keyword arguments of that loss).

    For ``"dsm"`` the times come from :func:`sample_times` (``time_sampling``; ``importance_sampling=True``
    is ``time_sampling="importance"``): pass the same choice to :func:`dsm_loss`.
    """
    check_data(x0, "x0")
    _check_sde(sde, "training_noise")
    if loss not in ("dsm", "ddpm", "smld"):
        raise ValueError(f"unknown loss {loss!r}; choose 'dsm', 'ddpm' or 'smld'")
    time_sampling = check_time_sampling(time_sampling, None, importance_sampling, time_mean, time_std, loss)
    if loss == "dsm":
        t = sample_times(sde, x0, eps, generator, time_sampling, time_mean, time_std)
        return {"t": t, "z": randn_like(x0, generator)}
    if loss == "ddpm":
        return {"labels": random_levels(sde.N, x0, generator), "noise": randn_like(x0, generator)}
    return {"labels": random_levels(sde.N, x0, generator), "z": randn_like(x0, generator)}


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
    time_sampling: str = "uniform",
    sigma_data: float = SIGMA_DATA,
    gamma: float = MIN_SNR_GAMMA,
    time_mean: float | None = None,
    time_std: float | None = None,
) -> Tensor:
    r"""Continuous denoising score matching (see the module docstring); returns a scalar.

    The per-sample loss is :math:`w(t)\|\sigma(t) s_\theta(x_t, t) + z\|^2` with :math:`w = \lambda/\sigma^2`
    (:func:`loss_weight`) for the ``weighting`` :math:`\lambda`: ``"sigma2"`` (:math:`\sigma^2`, the eps-MSE),
    ``"likelihood"`` (:math:`g^2`), ``"edm"`` (EDM's :math:`(\hat\sigma^2 + \sigma_d^2)/(\hat\sigma\sigma_d)^2` on the
    denoiser: :math:`w = (\sigma^2 + \alpha^2\sigma_d^2)/(\alpha\sigma_d)^2`), ``"velocity"`` (the plain velocity
    MSE: :math:`w = (\sigma' - \alpha'\sigma/\alpha)^2`) or ``"min_snr"`` (Hang et al. 2023:
    :math:`w = \min(1, \gamma/\mathrm{SNR})`, ``gamma``). The times follow ``time_sampling``
    (:func:`sample_times`); :func:`objective_weight` states the weighted DSM objective whose expectation the loss is.

    ``t`` (``[B]``) and ``z`` (shaped like ``x0``) may be passed in, e.g. to share one draw
    across data-parallel processes; otherwise they are drawn from ``generator``. ``y``: class
    labels ``[B]`` of a class-conditional model, passed as ``score_fn(x, t, y=y)``.

    ``importance_sampling=True`` (``time_sampling="importance"``; only with ``weighting="likelihood"``) draws
    :math:`t \sim p(t) \propto g(t)^2/\sigma(t)^2` on ``[eps, T]`` and returns the mean of
    :math:`\frac{Z}{T-\epsilon}\|\sigma(t) s_\theta(x_t, t) + z\|^2`, :math:`Z = \int_\epsilon^T g^2/\sigma^2\,dt`:
    the same expectation as the uniform-time likelihood-weighted loss. Given ``t`` must then
    come from that density (``training_noise(..., importance_sampling=True)``).
    """
    _check_sde(sde, "dsm_loss")
    check_options("weighting", weighting, WEIGHTINGS)
    check_options("reduce", reduce, REDUCTIONS)
    time_sampling = check_time_sampling(time_sampling, weighting, importance_sampling, time_mean, time_std)
    if weighting == "edm":
        _check_sigma_data(sigma_data)
    if weighting == "min_snr":
        _check_gamma(gamma)
    check_data(x0, "x0")
    eps = check_eps(eps, sde.T)
    t = None if t is None else positive_time(t, x0, sde.T)
    z = None if z is None else check_like(z, x0, "z", "x0")
    y = _check_classes(y, x0)
    check_finite(x0, "training data")
    if t is None:
        t = sample_times(sde, x0, eps, generator, time_sampling, time_mean, time_std)
    z = randn_like(x0, generator) if z is None else z
    mean, std = sde.marginal_prob(x0, t)
    std_b = expand_to(std, x0)
    xt = mean + std_b * z
    score = _score(score_fn, xt, t, y)
    if weighting == "sigma2":
        return _finite_loss(_reduce((score * std_b + z) ** 2, reduce).mean())
    if time_sampling == "importance":  # w(t) g^2 ||s + z/sigma||^2 with w = (1/(T-eps))/p(t), p = (g^2/sigma^2)/Z
        return _finite_loss(
            _reduce((score * std_b + z) ** 2, reduce).mean() * (importance_normalizer(sde, eps) / (sde.T - eps))
        )
    if weighting == "likelihood":
        g2 = sde.sde(torch.zeros_like(x0), t)[1] ** 2
        return _finite_loss((_reduce((score + z / std_b) ** 2, reduce) * g2).mean())
    weight = loss_weight(sde, t, weighting, sigma_data, gamma)
    return _finite_loss((_reduce((score * std_b + z) ** 2, reduce) * weight).mean())


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
    _check_finite_output(out, "model")
    return _finite_loss(_reduce((out - noise) ** 2, reduce).mean())


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
    return _finite_loss(_reduce((score * sigma + z) ** 2, reduce).mean())
