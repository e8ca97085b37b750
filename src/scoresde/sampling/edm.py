r"""EDM's sampler (Karras et al. 2022, Algorithm 2) for any SDE with a Gaussian kernel.

EDM integrates the probability-flow ODE in the scaled state :math:`\hat x = x/\alpha(t)` and
the noise level :math:`\hat\sigma = \sigma(t)/\alpha(t) = e^{-\lambda(t)}`, where it reads
:math:`d\hat x/d\hat\sigma = (\hat x - D(\hat x; \hat\sigma))/\hat\sigma` with the denoiser
:math:`D = (x + \sigma^2 s_\theta(x, t))/\alpha`. Each step is Heun's method (two evaluations).
``churn`` adds EDM's stochasticity: before the step the noise level is raised to
:math:`\hat\sigma(1 + \gamma)`, :math:`\gamma = \min(\text{churn}/N, \sqrt2 - 1)` for
:math:`\hat\sigma` in ``[churn_min, churn_max]``, by adding fresh noise of variance
:math:`\hat\sigma^2((1+\gamma)^2 - 1)` times ``churn_noise``\ :sup:`2`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from .._checks import randn_like
from ..sde import SDE, ScoreFn
from .loop import StepFn
from .spec import NON_NEGATIVE, SamplerSpec, fixed_grid


def _check_churn(churn: float, churn_min: float, churn_max: float, churn_noise: float) -> None:
    for name, value in (("churn", churn), ("churn_min", churn_min), ("churn_noise", churn_noise)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(churn_max, bool) or not isinstance(churn_max, (int, float)) or not churn_max >= churn_min:
        raise ValueError(f"churn_max must be a number >= churn_min={churn_min}, got {churn_max!r}")


@fixed_grid(SamplerSpec(grid="karras", evals_per_step=lambda options: 2, whole_steps=True,
                    rules={"churn": NON_NEGATIVE, "churn_min": NON_NEGATIVE, "churn_noise": NON_NEGATIVE}))  # fmt: skip
def edm_heun(
    sde: SDE,
    ts: Sequence[float],
    *,
    churn: float = 0.0,
    churn_min: float = 0.0,
    churn_max: float = math.inf,
    churn_noise: float = 1.0,
) -> StepFn:
    r"""Heun steps in :math:`(\hat x, \hat\sigma)` with optional churn (see the module docstring).

    From ``t`` to ``s``: :math:`d = (\hat x - D(\hat x; \hat\sigma_t))/\hat\sigma_t`, Euler
    :math:`\hat x' = \hat x + (\hat\sigma_s - \hat\sigma_t) d`, then the trapezoidal correction
    :math:`\hat x_s = \hat x + (\hat\sigma_s - \hat\sigma_t)(d + d')/2`. The final Euler step to
    :math:`\hat\sigma = 0` of EDM is :func:`scoresde.sample`'s denoising step.
    """
    _check_churn(churn, churn_min, churn_max, churn_noise)
    schedule = sde.schedule
    gamma_max = min(churn / (len(ts) - 1), math.sqrt(2.0) - 1.0)
    sigma_top = schedule.edm_sigma(sde.T)

    def denoised(score_fn: ScoreFn, x_hat: Tensor, t: float) -> Tensor:
        alpha, sigma, _ = schedule.coeffs(t)
        x_t = alpha * x_hat
        return (x_t + sigma**2 * score_fn(x_t, sde._time(t, x_t))) / alpha

    def step(sde: SDE, score_fn: ScoreFn, x: Tensor, t: float, s: float, generator) -> Tensor:
        alpha_t, _, lam_t = schedule.coeffs(t)
        alpha_s, _, lam_s = schedule.coeffs(s)
        sig_t, sig_s = math.exp(-lam_t), math.exp(-lam_s)
        x_hat = x / alpha_t
        if gamma_max > 0 and churn_min <= sig_t <= churn_max:
            raised = min(sig_t * (1.0 + gamma_max), sigma_top)
            if raised > sig_t:
                x_hat = x_hat + churn_noise * math.sqrt(raised**2 - sig_t**2) * randn_like(x_hat, generator)
                t, sig_t = schedule.t_from_edm_sigma(raised), raised
        d = (x_hat - denoised(score_fn, x_hat, t)) / sig_t
        x_next = x_hat + (sig_s - sig_t) * d
        d_next = (x_next - denoised(score_fn, x_next, s)) / sig_s
        return alpha_s * (x_hat + (0.5 * (sig_s - sig_t)) * (d + d_next))

    return step
