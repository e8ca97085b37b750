r"""Deterministic samplers: the probability-flow ODE and DDIM.

:func:`ode` integrates :math:`dx/dt = f(x,t) - \tfrac12 g(t)^2 s_\theta(x,t)` from ``T`` to
``eps``, either adaptively (``method="rk45"``, Dormand-Prince with ``rtol``/``atol``) or
on the fixed grid ``ts`` (``"euler"``, ``"heun"``, ``"rk4"``).

:func:`ddim` is DDIM written for any kernel :math:`N(\alpha(t)x_0, \sigma(t)^2 I)`: it
predicts :math:`\hat x_0` and :math:`\hat\epsilon` from the score and moves to the next
time along the kernel; ``eta`` adds the DDPM posterior noise (``eta=1`` is ancestral).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from .._checks import check_options, randn_like
from ..integrators import ERROR_NORMS, FIXED_METHODS, dopri5, one_step
from ..sde import SDE, ScoreFn
from .loop import Callback, ReplaceFn, StepFn, run_steps
from .spec import TOLERANCES, OptionRule, SamplerSpec, declare, fixed_grid

ODE_METHODS = ("rk45", *FIXED_METHODS)


def probability_flow_ode(sde: SDE, score_fn: ScoreFn):
    """The right-hand side ``F(t, x, idx)`` of the probability-flow ODE, for :mod:`scoresde.integrators`."""
    flow = sde.reverse(score_fn, probability_flow=True)

    def rhs(t: float | Tensor, x: Tensor, idx: Tensor | None) -> Tensor:
        return flow.sde(x, t)[0]

    return rhs


@declare(SamplerSpec(adaptive=lambda options: options.get("method", "rk45") == "rk45",
                    rules={"method": OptionRule(choices=ODE_METHODS), "error_norm": OptionRule(choices=ERROR_NORMS),
                           **TOLERANCES}))  # fmt: skip
def ode(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    ts: Sequence[float],
    *,
    method: str = "rk45",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    error_norm: str = "sample",
    progress: bool = False,
    callback: Callback | None = None,
    replace: ReplaceFn | None = None,
    rows: slice | None = None,
) -> Tensor:
    """Integrate the probability-flow ODE from ``ts[0]`` to ``ts[-1]``.

    ``method="rk45"`` is adaptive and uses only the grid's end points; ``error_norm``
    chooses per-sample (default) or whole-batch error control. It has no grid, so it
    takes neither hook (a clear error). The fixed-step methods take one step per grid
    interval through :func:`scoresde.sampling.loop.run_steps`, with its hooks.
    """
    check_options("method", method, ODE_METHODS)
    if method == "rk45":
        if callback is not None or replace is not None:
            raise ValueError("the adaptive rk45 solver has no fixed steps for callback/replace hooks; "
                             "use method='euler'|'heun'|'rk4' or another fixed-grid sampler")  # fmt: skip
        rhs = probability_flow_ode(sde, score_fn)
        return dopri5(rhs, x, ts[0], ts[-1], rtol=rtol, atol=atol, error_norm=error_norm, progress=progress)[0]

    def step(sde: SDE, score_fn: ScoreFn, x: Tensor, t: float, s: float, generator) -> Tensor:
        return one_step(probability_flow_ode(sde, score_fn), x, t, s, method)

    return run_steps(step, sde, score_fn, x, ts, None, progress, callback, replace, rows)


@fixed_grid(SamplerSpec(rules={"eta": OptionRule(check=lambda v: 0 <= v <= 1, message="must be in [0, 1]")}))
def ddim(
    sde: SDE,
    ts: Sequence[float],
    *,
    eta: float = 0.0,
) -> StepFn:
    r"""DDIM from ``t`` to ``s`` on each grid step:

    .. math::
        \hat x_0 = (x + \sigma_t^2 s_\theta)/\alpha_t,\quad \hat\epsilon = -\sigma_t s_\theta,\quad
        x \leftarrow \alpha_s \hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\epsilon + c z,

    with :math:`c^2 = \eta^2 \frac{\sigma_s^2}{\sigma_t^2}\big(\sigma_t^2 - (\alpha_t/\alpha_s)^2\sigma_s^2\big)`.
    """
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")

    def step(sde: SDE, score_fn: ScoreFn, x: Tensor, t: float, s: float, generator) -> Tensor:
        (alpha_t, sigma_t, _), (alpha_s, sigma_s, _) = sde.schedule.coeffs(t), sde.schedule.coeffs(s)
        score = score_fn(x, sde._time(t, x))
        x0 = (x + sigma_t**2 * score) / alpha_t
        eps = -sigma_t * score
        var = eta**2 * (sigma_s / sigma_t) ** 2 * max(sigma_t**2 - (alpha_t / alpha_s) ** 2 * sigma_s**2, 0.0)
        x = alpha_s * x0 + math.sqrt(max(sigma_s**2 - var, 0.0)) * eps
        if var > 0:
            x = x + math.sqrt(var) * randn_like(x, generator)
        return x

    return step
