r"""Fixed-grid exponential multistep integration of the probability-flow ODE and its log-determinant.

With the kernel :math:`x_t = \alpha(t) x_0 + \sigma(t) z`, write :math:`y = x/\alpha`, the noise level
:math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda}` and the noise prediction
:math:`\hat\epsilon(x, t) = -\sigma(t)\, s(x, t)`. The probability-flow ODE is then free of its linear part,

.. math:: \frac{dy}{d\tilde\sigma} = \hat\epsilon(\alpha y, t), \qquad
          \frac{d\ell}{d\tilde\sigma} = \nabla_y\!\cdot\hat\epsilon(\alpha y, t)
          = -\alpha\sigma\,\nabla_x\!\cdot s(x, t),

and the instantaneous change of variables gives, with the linear drift's divergence integrated exactly,

.. math:: \log p_\epsilon(x) = \log p_T(x_T) + D \log\frac{\alpha(T)}{\alpha(\epsilon)} + \ell(T),
          \qquad \ell(\epsilon) = 0.

:func:`adams_flow` integrates both on a fixed grid of times (by default uniform in :math:`\lambda`): each step
fits the last ``order`` evaluations of :math:`(\hat\epsilon, \nabla\cdot\hat\epsilon)` with a polynomial in
:math:`\lambda` and integrates it against :math:`d\tilde\sigma = -e^{-\lambda} d\lambda` exactly (the
exponential Adams-Bashforth predictor, as in DEIS), evaluates the network once at the predicted point, and
corrects the step with the polynomial through that new evaluation too (Adams-Moulton, one order higher, the
evaluation reused as the next step's history, as UniPC does): one network evaluation per step, plus one at the
start. The step weights are host floats computed once per grid; the divergence values enter :math:`\ell`
linearly with those weights, so an unbiased divergence estimate at every node gives an unbiased :math:`\ell`
for the trajectory, whichever probes each node draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .schedule import Schedule

ADAMS_ORDERS = (1, 2, 3, 4)
"""Orders of the predictor :func:`adams_flow` takes (the corrector is one order higher)."""

GRID_KNEE = 4.0
"""Half log-SNR (log alpha/sigma) above which :func:`likelihood_grid` takes longer steps."""
GRID_STRETCH = 6.67
"""How many times longer (in half log-SNR) :func:`likelihood_grid`'s steps are above :data:`GRID_KNEE`."""

_GAUSS_POINTS = 16
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_GAUSS_POINTS)

FlowEval = Callable[[Tensor, float, int], tuple[Tensor, Tensor]]
"""``evaluate(x, t, node) -> (eps_hat, div)``: the noise prediction at ``(x, t)`` and the divergence of
``eps_hat`` with respect to ``x`` (``[B]``; exact or an unbiased estimate) at grid node ``node``."""


def step_weights(lams: Sequence[float], lo: float, hi: float) -> list[float]:
    r"""Weights ``w_j`` with :math:`\sum_j w_j f(\lambda_j) = \int_{lo}^{hi} P(\lambda)\,(-e^{-\lambda})\,d\lambda`
    for ``P`` the polynomial through the points :math:`(\lambda_j, f(\lambda_j))` (Lagrange basis integrals, by
    16-point Gauss-Legendre quadrature in float64: exact for the polynomial and to rounding for the
    exponential over any step a grid takes)."""
    nodes = np.asarray(lams, dtype=np.float64)
    mid, half = 0.5 * (hi + lo), 0.5 * (hi - lo)
    q = mid + half * _GL_NODES
    wq = half * _GL_WEIGHTS * -np.exp(-q)
    weights = []
    for j, lj in enumerate(nodes):
        basis = np.ones_like(q)
        for m, lm in enumerate(nodes):
            if m != j:
                basis *= (q - lm) / (lj - lm)
        weights.append(float((wq * basis).sum()))
    return weights


def likelihood_grid(schedule: Schedule, T: float, eps: float, steps: int) -> list[float]:
    r"""``steps + 1`` increasing times from ``eps`` to ``T``: uniform in :math:`\lambda`, with steps
    :data:`GRID_STRETCH` times longer above :data:`GRID_KNEE` (noise below 2 % of the data's scale, for data in
    [-1, 1], where the flow barely moves): the default grid of :func:`adams_flow`, chosen on the main-job model
    and on mixtures under every process (``benchmarks/bench_likelihood.py``,
    ``benchmarks/bench_likelihood_digits.py``)."""
    lam_eps, lam_T = schedule.log_snr(eps), schedule.log_snr(T)
    knee = min(max(GRID_KNEE, lam_T), lam_eps)
    above, below = (lam_eps - knee) / GRID_STRETCH, knee - lam_T  # arc lengths of the two parts
    lams = []
    for k in range(steps + 1):
        arc = (above + below) * k / steps
        lams.append(lam_eps - arc * GRID_STRETCH if arc <= above else knee - (arc - above))
    grid = [float(schedule.t_from_log_snr(v)) for v in lams]
    grid[0], grid[-1] = eps, T
    return grid


def adams_flow(evaluate: FlowEval, schedule: Schedule, x: Tensor, ts: Sequence[float], order: int = 3,
               corrector: bool = True) -> tuple[Tensor, Tensor]:  # fmt: skip
    r"""Integrate the probability-flow ODE and its log-determinant from ``x`` at ``ts[0]`` over the increasing
    times ``ts`` (see the module docstring); ``(x_T, log_det)`` with ``log_det`` the ``[B]`` sum
    :math:`D \log(\alpha(T)/\alpha(\epsilon)) + \ell(T)` to add to :math:`\log p_T(x_T)`.

    ``order``: the predictor's order (the first steps use as many past evaluations as they have); with
    ``corrector`` each step is corrected with the evaluation at its end (order + 1; that evaluation is the next
    step's history, so only the last one is extra). Network evaluations: one per step and one at the start
    (without the corrector the last step's end is not evaluated).
    """
    lam = [schedule.log_snr(t) for t in ts]
    alpha = [schedule.alpha(t) for t in ts]
    dims = x[0].numel()
    y = x / alpha[0]
    ell = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def node(i: int, ys: Tensor) -> tuple[float, Tensor, Tensor]:
        eps_hat, div = evaluate(alpha[i] * ys, ts[i], i)
        return lam[i], eps_hat, alpha[i] * div  # div_y eps_hat = alpha div_x eps_hat

    def advance(past: list[tuple[float, Tensor, Tensor]], i: int) -> tuple[Tensor, Tensor]:
        w = step_weights([h[0] for h in past], lam[i], lam[i + 1])
        return (y + sum(wj * h[1] for wj, h in zip(w, past, strict=True)),
                ell + sum(wj * h[2] for wj, h in zip(w, past, strict=True)))  # fmt: skip

    history = [node(0, y)]
    steps = len(ts) - 1
    for i in range(steps):
        y_next, ell_next = advance(history[-order:], i)  # predictor
        if corrector or i < steps - 1:
            history = [*history[-order:], node(i + 1, y_next)]
        if corrector:
            y_next, ell_next = advance(history, i)
        y, ell = y_next, ell_next
    return alpha[-1] * y, ell + dims * (math.log(alpha[-1]) - math.log(alpha[0]))
