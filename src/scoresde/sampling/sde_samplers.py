r"""Reverse-SDE samplers: predictors, correctors and the predictor-corrector loop.

Every sampler is a free function ``sampler(sde, score_fn, x, ts, *, ..., generator)``
that walks a decreasing time grid ``ts`` (``T -> eps``) from the prior sample ``x``
and returns the final state. There is no hidden state: all randomness comes from
``generator``.

A predictor step moves from time ``t`` to ``s < t``; a corrector step holds the time
fixed. Following the paper's Algorithm 1, :func:`pc` runs the predictor and then the
corrector at the new time. The plain SDE samplers are :func:`pc` with no corrector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._checks import check_options, expand_to, randn_like
from ..sde import SDE, ScoreFn
from .loop import StepFn
from .spec import NON_NEGATIVE, POSITIVE, OptionRule, SamplerSpec, fixed_grid

MAX_CORRECTOR_STEPS = 100
"""The most corrector steps per predictor step (each one a score evaluation): a bound on the work."""

PredictorFn = Callable[..., Tensor]
CorrectorFn = Callable[..., Tensor]


# -- predictors ----------------------------------------------------------------------
def euler_maruyama_step(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: float,
    s: float,
    generator: torch.Generator | None = None,
    probability_flow: bool = False,
) -> Tensor:
    r"""Euler-Maruyama on the reverse SDE: :math:`x \leftarrow x + \bar f(x,t)\Delta t + g(t)\sqrt{-\Delta t}\,z`
    with :math:`\Delta t = s - t < 0` (no noise for the probability-flow ODE)."""
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    dt = s - t
    x = x + drift * dt
    if not probability_flow:
        x = x + expand_to(diffusion, x) * math.sqrt(-dt) * randn_like(x, generator)
    return x


def reverse_diffusion_step(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: float,
    s: float,
    generator: torch.Generator | None = None,
    probability_flow: bool = False,
) -> Tensor:
    r"""Reverse of the SDE's own discretization (:meth:`SDE.discretize` with step ``t - s``):
    :math:`x \leftarrow x - f + G^2 s_\theta + G z` (DDPM rule for VP, SMLD for VE, EM otherwise)."""
    rev_f, rev_g = sde.reverse(score_fn, probability_flow).discretize(x, t, dt=t - s)
    x = x - rev_f
    if not probability_flow:
        x = x + expand_to(rev_g, x) * randn_like(x, generator)
    return x


def ancestral_step(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: float,
    s: float,
    generator: torch.Generator | None = None,
    probability_flow: bool = False,
) -> Tensor:
    r"""Ancestral sampling: a draw from the kernel's posterior :math:`q(x_s | x_t, \hat x_0)` around Tweedie's estimate.

    With the step's transition :math:`x_t = a x_s + b z`, :math:`a = \alpha_t/\alpha_s`,
    :math:`b^2 = \sigma_t^2 - a^2\sigma_s^2`, the posterior mean is :math:`(x + b^2 s_\theta)/a` and the noise is
    the posterior's :math:`b^2\sigma_s^2/\sigma_t^2` (``sde.ancestral_variance = "posterior"``: paper eq. 47 for
    VE, :math:`x + (\sigma_t^2-\sigma_s^2)s_\theta + \sqrt{\sigma_s^2(\sigma_t^2-\sigma_s^2)}/\sigma_t\,z`, and every
    other process) or DDPM's :math:`b^2 = \beta` (``"forward"``, for kernels with :math:`\alpha^2 + \sigma^2 = 1`:
    VP, :math:`x \leftarrow (x + \beta s_\theta)/\sqrt{1-\beta} + \sqrt\beta\,z` with
    :math:`\beta = 1 - \bar\alpha_t/\bar\alpha_s`).
    """
    if probability_flow:
        raise ValueError("ancestral sampling has no probability-flow variant; use sampler='ode' or 'ddim'")
    if sde.ancestral_variance not in ("posterior", "forward"):
        raise TypeError(
            f"ancestral sampling needs {type(sde).__name__}.ancestral_variance to be 'posterior' or 'forward', got "
            f"{sde.ancestral_variance!r}; use 'reverse_diffusion', 'euler_maruyama' or 'ddim' (eta=1) instead"
        )
    score = score_fn(x, sde._time(t, x))
    (alpha_t, sigma_t, _), (alpha_s, sigma_s, _) = sde.schedule.coeffs(t), sde.schedule.coeffs(s)
    a = alpha_t / alpha_s
    if sde.ancestral_variance == "posterior":
        jump = sigma_t**2 - a**2 * sigma_s**2
        mean = (x + jump * score) / a
        std = math.sqrt(max(sigma_s**2 * jump / sigma_t**2, 0.0))
    else:
        beta = 1.0 - a**2
        mean = (x + beta * score) / math.sqrt(1.0 - beta)
        std = math.sqrt(beta)
    return mean + std * randn_like(x, generator)


def no_predictor(sde: SDE, score_fn: ScoreFn, x: Tensor, t: float, s: float, **_: object) -> Tensor:
    """The identity predictor: corrector-only sampling (annealed Langevin dynamics)."""
    return x


PREDICTORS: dict[str, PredictorFn] = {
    "euler_maruyama": euler_maruyama_step,
    "reverse_diffusion": reverse_diffusion_step,
    "ancestral": ancestral_step,
    "none": no_predictor,
}


# -- correctors ----------------------------------------------------------------------
def langevin_corrector(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: float,
    snr: float,
    n_steps: int = 1,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Langevin MCMC at fixed ``t`` (paper Algorithm 4/5).

    Each step: :math:`x \leftarrow x + \epsilon s_\theta + \sqrt{2\epsilon}\,z` with
    :math:`\epsilon = 2\alpha(r\|z\|/\|s_\theta\|)^2`, ``r`` the signal-to-noise ratio.
    The norms are per-sample L2 norms averaged over the batch, giving one step size for
    the batch as in the reference code (a per-sample :math:`\|s_\theta\|` would take huge
    steps wherever the score nearly vanishes, e.g. at a mode).
    """
    tt = sde._time(t, x)
    for _ in range(n_steps):
        grad = score_fn(x, tt)
        noise = randn_like(x, generator)
        grad_norm = grad.reshape(grad.shape[0], -1).norm(dim=1).mean()
        noise_norm = noise.reshape(noise.shape[0], -1).norm(dim=1).mean()
        step = 2 * alpha * (snr * noise_norm / grad_norm.clamp_min(1e-30)) ** 2
        x = x + step * grad + torch.sqrt(2 * step) * noise
    return x


def ald_corrector(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    t: float,
    snr: float,
    n_steps: int = 1,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Annealed Langevin dynamics (NCSN): step :math:`\epsilon = 2\alpha(r\,\sigma(t))^2`."""
    tt = sde._time(t, x)
    sigma = sde.schedule.sigma(float(t))
    step = 2 * alpha * (snr * sigma) ** 2
    for _ in range(n_steps):
        grad = score_fn(x, tt)
        x = x + step * grad + math.sqrt(2 * step) * randn_like(x, generator)
    return x


CORRECTORS: dict[str, CorrectorFn | None] = {"langevin": langevin_corrector, "ald": ald_corrector, "none": None}


def corrector_alpha(sde: SDE, t_prev: float, t: float) -> float:
    r"""The corrector's :math:`\alpha`: the signal retention :math:`(\alpha(t_{prev})/\alpha(t))^2` of the
    step just taken. It is the reference code's per-step :math:`1-\beta_i` for VP, 1 for VE,
    and is defined for sub-VP and any user SDE too."""
    return (sde.schedule.alpha(float(t_prev)) / sde.schedule.alpha(float(t))) ** 2


# -- samplers -----------------------------------------------------------------------
@fixed_grid(SamplerSpec(rules={"predictor": OptionRule(choices=tuple(PREDICTORS)),
                              "corrector": OptionRule(choices=tuple(CORRECTORS)), "snr": POSITIVE,
                              "corrector_steps": NON_NEGATIVE}))  # fmt: skip
def pc(
    sde: SDE,
    ts: Sequence[float],
    *,
    predictor: str | PredictorFn = "reverse_diffusion",
    corrector: str | CorrectorFn = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    probability_flow: bool = False,
) -> StepFn:
    """Predictor-corrector sampling (paper Algorithm 1): for each step ``t -> s`` of the grid,
    one predictor step, then ``corrector_steps`` corrector steps at ``s``.

    ``predictor``: ``"euler_maruyama"``, ``"reverse_diffusion"``, ``"ancestral"``, ``"none"`` or a
    function with the signature of :func:`euler_maruyama_step`. ``corrector``: ``"langevin"``,
    ``"ald"``, ``"none"`` or a function with the signature of :func:`langevin_corrector`.
    ``callback`` and ``replace`` are the hooks of :func:`scoresde.sampling.loop.run_steps`.
    """
    predict = _lookup("predictor", predictor, PREDICTORS)
    correct = _lookup("corrector", corrector, CORRECTORS)
    if correct is not None:
        if not (isinstance(snr, (int, float)) and snr > 0):
            raise ValueError(f"snr must be a positive number, got {snr!r}")
        if int(corrector_steps) != corrector_steps or corrector_steps < 0:
            raise ValueError(f"corrector_steps must be a non-negative integer, got {corrector_steps!r}")
        if corrector_steps > MAX_CORRECTOR_STEPS:
            raise ValueError(f"corrector_steps must be at most {MAX_CORRECTOR_STEPS} (the paper uses 1), got "
                             f"{corrector_steps:,}")  # fmt: skip
    n_correct = int(corrector_steps) if correct is not None else 0

    def step(sde: SDE, score_fn: ScoreFn, x: Tensor, t: float, s: float, generator) -> Tensor:
        x = predict(sde, score_fn, x, t, s, generator=generator, probability_flow=probability_flow)
        if n_correct > 0:
            alpha = corrector_alpha(sde, t, s)
            x = correct(sde, score_fn, x, s, snr=snr, n_steps=n_correct, alpha=alpha, generator=generator)
        return x

    return step


def _predictor_only(predictor: str, doc: str) -> Callable[..., Tensor]:
    """A sampler running one predictor and no corrector, with the ``probability_flow`` option."""

    def steps(sde: SDE, ts: Sequence[float], *, probability_flow: bool = False) -> StepFn:
        return pc.spec.stepper(sde, ts, predictor=predictor, corrector="none", probability_flow=probability_flow)

    steps.__name__ = steps.__qualname__ = predictor
    steps.__doc__ = doc
    return fixed_grid(SamplerSpec())(steps)


euler_maruyama = _predictor_only(
    "euler_maruyama",
    "Euler-Maruyama on the reverse SDE (Euler on the probability-flow ODE with ``probability_flow=True``).",
)
reverse_diffusion = _predictor_only(
    "reverse_diffusion",
    "The reverse-diffusion predictor alone: the reverse of the forward SDE's own discretization.",
)


@fixed_grid(SamplerSpec())
def ancestral(sde: SDE, ts: Sequence[float]) -> StepFn:
    """Ancestral sampling (DDPM's sampler for VP, paper eq. 47 for VE)."""
    return pc.spec.stepper(sde, ts, predictor="ancestral", corrector="none")


def _lookup(kind: str, value: str | Callable, table: dict) -> Callable | None:
    if callable(value):
        return value
    check_options(kind, value, tuple(table))
    return table[value]
