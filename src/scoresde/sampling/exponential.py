r"""Exponential-integrator solvers: DPM-Solver, DPM-Solver++, UniPC and SDE-DPM-Solver++.

They need only the kernel coefficients :math:`\alpha(t), \sigma(t)` and
:math:`\lambda(t) = \log(\alpha/\sigma)` (the SDE's :class:`~scoresde.schedule.Schedule`), so
they serve VP, sub-VP, VE and any SDE with a Gaussian kernel. The network's score is read as a
data prediction :math:`D = (x + \sigma^2 s_\theta)/\alpha` (DPM-Solver++, UniPC) or a noise
prediction :math:`\epsilon = -\sigma s_\theta` (DPM-Solver). With :math:`h = \lambda_s - \lambda_t`
the probability-flow ODE from ``t`` to ``s`` is exactly

.. math::
    x_s = \frac{\sigma_s}{\sigma_t} x_t + \sigma_s \int_{\lambda_t}^{\lambda_s} e^{\lambda} D\,d\lambda
        = \frac{\alpha_s}{\alpha_t} x_t - \alpha_s \int_{\lambda_t}^{\lambda_s} e^{-\lambda} \epsilon\,d\lambda,

and the solvers approximate :math:`D` or :math:`\epsilon` by polynomials in :math:`\lambda`
through earlier evaluations (multistep) or intermediate ones (singlestep). The noise form is
the data form with :math:`(\sigma, \alpha, \lambda, D)` replaced by :math:`(\alpha, \sigma, -\lambda,
\epsilon)`, so one implementation serves both: a :class:`_Frame` holds the three numbers.

Every solver is a step function run by :func:`~scoresde.sampling.loop.run_steps` (hooks
included); multistep history lives in a closure made fresh for each call. Coefficients are
host floats from the schedule: the loops never read a device tensor.

NFE: one evaluation per step for the multistep solvers (UniPC's corrector reuses the next
step's evaluation), ``order`` per step for the singlestep ones; :func:`scoresde.sample` sizes
the grid so that ``steps`` is the total NFE, the final denoising evaluation included.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_options, randn_like, range_bounds
from ..sde import SDE, ScoreFn
from .loop import StepFn
from .spec import ORDER, OptionRule, SamplerSpec, fixed_grid

PREDICTIONS = ("data", "noise")
LOWER_ORDER_FINAL_BELOW = 15
"""Below this many steps, ``lower_order_final`` lowers the order of the last steps (as DPM-Solver does)."""


@dataclass(frozen=True)
class _Frame:
    """``x_s = (scale_s/scale_t) x_t - mult_s * ...`` in ``lam``: (σ, α, λ) for data, (α, σ, -λ) for noise."""

    scale: float
    mult: float
    lam: float


def _frame(sde: SDE, t: float, prediction: str) -> _Frame:
    alpha, sigma, lam = sde.schedule.coeffs(t)
    return _Frame(sigma, alpha, lam) if prediction == "data" else _Frame(alpha, sigma, -lam)


Correct = Callable[[Tensor], Tensor]
"""A correction of the data prediction (thresholding), applied to every evaluation of a data-prediction solver."""


def _model(sde: SDE, score_fn: ScoreFn, x: Tensor, t: float, prediction: str, correct: Correct | None = None) -> Tensor:
    r"""The data prediction :math:`(x + \sigma_t^2 s)/\alpha_t` (then ``correct``-ed) or the noise prediction
    :math:`-\sigma_t s`."""
    alpha, sigma, _ = sde.schedule.coeffs(t)
    score = score_fn(x, sde._time(t, x))
    if prediction != "data":
        return -sigma * score
    denoised = (x + sigma**2 * score) / alpha
    return denoised if correct is None else correct(denoised)


THRESHOLDS = ("none", "static", "dynamic")
DYNAMIC_RATIO = 0.995
"""The percentile of dynamic thresholding (Saharia et al. 2022; DPM-Solver++'s default)."""


def thresholding_fn(
    kind: str, data_range: Sequence[float] = (-1.0, 1.0), ratio: float = DYNAMIC_RATIO
) -> Correct | None:
    r"""The correction of a data prediction :math:`D` named ``kind``, for data in ``data_range = (lo, hi)``.

    With :math:`c = (lo + hi)/2`, :math:`w = (hi - lo)/2` and :math:`u = (D - c)/w`:

    * ``"static"``: :math:`D \leftarrow c + w\,\mathrm{clip}(u, -1, 1)` (clip to the data range);
    * ``"dynamic"`` (Saharia et al. 2022, as DPM-Solver++ uses it): per sample
      :math:`s = \max(1, \mathrm{quantile}_{\text{ratio}}|u|)`, :math:`D \leftarrow c + w\,\mathrm{clip}(u, -s, s)/s`,
      which leaves a prediction inside the range untouched and pulls a saturated one back into it;
    * ``"none"``: ``None`` (no correction).
    """
    check_options("thresholding", kind, THRESHOLDS)
    range_bounds(data_range)  # two finite numbers, lo < hi
    lo, hi = (float(v) for v in data_range)
    if not (isinstance(ratio, (int, float)) and 0.0 < ratio <= 1.0):
        raise ValueError(f"threshold_ratio must be in (0, 1], got {ratio!r}")
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    if kind == "none":
        return None
    if kind == "static":
        return lambda d: d.clamp(lo, hi)

    def dynamic(d: Tensor) -> Tensor:
        u = (d - centre) / half
        s = torch.quantile(u.abs().reshape(u.shape[0], -1).float(), ratio, dim=1).to(u.dtype).clamp_min(1.0)
        s = s.reshape(-1, *([1] * (u.ndim - 1)))
        return centre + half * (torch.maximum(torch.minimum(u, s), -s) / s)

    return dynamic


def check_solver_options(order: int, prediction: str, top: int = 3) -> None:
    if isinstance(order, bool) or order not in range(1, top + 1):
        allowed = "1, 2 or 3" if top == 3 else "1 or 2"
        raise ValueError(f"order must be {allowed}, got {order!r}")
    check_options("prediction", prediction, PREDICTIONS)


def step_order(order: int, index: int, history: int, steps: int, lower_order_final: bool) -> int:
    """Order of step ``index`` of ``steps``: at most the outputs available, lowered at the end of short runs."""
    k = min(order, history)
    if lower_order_final and steps < LOWER_ORDER_FINAL_BELOW:
        k = min(k, steps - index)
    return max(k, 1)


# -- DPM-Solver and DPM-Solver++ -------------------------------------------------------------------
def multistep_update(x: Tensor, ft: _Frame, fs: _Frame, history: Sequence[tuple[float, Tensor]],
                     order: int) -> Tensor:  # fmt: skip
    r"""One multistep DPM-Solver(++) step of ``order`` from ``t`` (frame ``ft``) to ``s``.

    ``history`` holds ``(lam, output)`` of the latest evaluations, newest last (at ``t``). With
    :math:`\varphi_1 = e^{-h} - 1`, :math:`\varphi_2 = \varphi_1/h + 1`, :math:`\varphi_3 = \varphi_2/h - 1/2`:

    * order 1 (DDIM): :math:`x_s = \frac{\sigma_s}{\sigma_t}x_t - \alpha_s\varphi_1 D_t`;
    * order 2: minus :math:`\frac{\alpha_s\varphi_1}{2r}(D_t - D_{t'})`, :math:`r = (\lambda_t - \lambda_{t'})/h`;
    * order 3: plus :math:`\alpha_s(\varphi_2 D_1 - \varphi_3 D_2)` with the divided differences
      :math:`D_1, D_2` of the last three outputs (Lu et al. 2022, Algorithm 2 and appendix).
    """
    h = fs.lam - ft.lam
    phi1 = math.expm1(-h)
    m0 = history[-1][1]
    out = (fs.scale / ft.scale) * x - (fs.mult * phi1) * m0
    if order == 2:
        r = (ft.lam - history[-2][0]) / h
        out = out - (0.5 * fs.mult * phi1 / r) * (m0 - history[-2][1])
    elif order == 3:
        (l2, m2), (l1, m1) = history[-3], history[-2]
        r0, r1 = (ft.lam - l1) / h, (l1 - l2) / h
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        out = out + (fs.mult * phi2) * d1 - (fs.mult * phi3) * d2
    return out


def singlestep_update(sde: SDE, score_fn: ScoreFn, x: Tensor, t: float, s: float, order: int,
                      prediction: str, correct: Correct | None = None) -> Tensor:  # fmt: skip
    r"""One singlestep DPM-Solver(++) step (order evaluations) from ``t`` to ``s``.

    Order 2 evaluates at :math:`\lambda_t + h/2`; order 3 at :math:`\lambda_t + h/3` and
    :math:`\lambda_t + 2h/3` (Lu et al. 2022, DPM-Solver-2 and -3):

    .. math::
        x_{u_1} = \tfrac{\sigma_{u_1}}{\sigma_t}x_t - \alpha_{u_1}\varphi_1(r_1h) D_t,\quad
        x_{u_2} = \tfrac{\sigma_{u_2}}{\sigma_t}x_t - \alpha_{u_2}\varphi_1(r_2h) D_t
                  + \tfrac{r_2}{r_1}\alpha_{u_2}\varphi_2(r_2h)(D_{u_1} - D_t),

    .. math::
        x_s = \tfrac{\sigma_s}{\sigma_t}x_t - \alpha_s\varphi_1(h) D_t
              + \tfrac{1}{r_2}\alpha_s\varphi_2(h)(D_{u_2} - D_t).
    """
    ft, fs = _frame(sde, t, prediction), _frame(sde, s, prediction)
    m_t = _model(sde, score_fn, x, t, prediction, correct)
    h = fs.lam - ft.lam

    def sign(lam: float) -> float:  # back from the frame's log-ratio to lambda
        return lam if prediction == "data" else -lam

    def moved(r: float, extra: Tensor | None = None, coef: float = 0.0) -> tuple[float, Tensor]:
        u = sde.schedule.t_from_log_snr(sign(ft.lam + r * h))
        fu = _frame(sde, u, prediction)
        hu = fu.lam - ft.lam
        xu = (fu.scale / ft.scale) * x - (fu.mult * math.expm1(-hu)) * m_t
        if extra is not None:
            xu = xu + (coef * fu.mult * (math.expm1(-hu) / hu + 1.0)) * extra
        return u, xu

    phi1 = math.expm1(-h)
    out = (fs.scale / ft.scale) * x - (fs.mult * phi1) * m_t
    if order == 1:
        return out
    if order == 2:
        u, xu = moved(0.5)
        m_u = _model(sde, score_fn, xu, u, prediction, correct)
        return out - (fs.mult * phi1) * (m_u - m_t)  # 0.5 / r1 = 1
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    u1, x_u1 = moved(r1)
    m_u1 = _model(sde, score_fn, x_u1, u1, prediction, correct)
    u2, x_u2 = moved(r2, m_u1 - m_t, r2 / r1)
    m_u2 = _model(sde, score_fn, x_u2, u2, prediction, correct)
    return out + (fs.mult * (phi1 / h + 1.0) / r2) * (m_u2 - m_t)


def singlestep_orders(order: int, budget: int) -> list[int]:
    """Orders of the singlestep steps spending exactly ``budget`` evaluations: ``order`` each, the remainder last."""
    full, rest = divmod(budget, order)
    return [order] * full + ([rest] if rest else [])


def _dpm(ts, order, multistep, lower_order_final, prediction, budget, correct: Correct | None = None) -> StepFn:
    """The step function of a DPM-Solver(++) run on the grid ``ts``."""
    steps = len(ts) - 1
    if not multistep:
        orders = singlestep_orders(order, budget) if budget is not None else [order] * steps
        if len(orders) != steps:
            raise ValueError(f"singlestep order {order} with a budget of {budget} evaluations needs "
                             f"{len(orders)} steps, the grid has {steps}")  # fmt: skip
        index = iter(orders)

        def single(sde, score_fn, x, t, s, generator):
            return singlestep_update(sde, score_fn, x, t, s, next(index), prediction, correct)

        return single
    history: list[tuple[float, Tensor]] = []
    state = {"index": 0}

    def multi(sde, score_fn, x, t, s, generator):
        ft, fs = _frame(sde, t, prediction), _frame(sde, s, prediction)
        history.append((ft.lam, _model(sde, score_fn, x, t, prediction, correct)))
        del history[:-3]
        k = step_order(order, state["index"], len(history), steps, lower_order_final)
        state["index"] += 1
        return multistep_update(x, ft, fs, history, k)

    return multi


THRESHOLD_RULES = {
    "thresholding": OptionRule(choices=THRESHOLDS),
    "threshold_ratio": OptionRule(check=lambda v: 0 < v <= 1, message="must be in (0, 1]"),
    "data_range": OptionRule(check=lambda v: _is_range(v), message="must be two numbers (lo, hi) with lo < hi"),
}
"""The options of thresholding, for the data-prediction solvers (``data_range`` is set from a ScoreModel)."""


def _is_range(value: object) -> bool:
    try:
        range_bounds(value)
    except (TypeError, ValueError):
        return False
    return len(value) == 2


def _threshold_of(options: Mapping[str, Any]) -> Correct | None:
    """The thresholding a data-prediction solver's ``options`` ask for (the spec's ``correct_denoised``)."""
    return thresholding_fn(options.get("thresholding", "none"), options.get("data_range", (-1.0, 1.0)),
                           options.get("threshold_ratio", DYNAMIC_RATIO))  # fmt: skip


MULTISTEP = SamplerSpec(
    grid="log_snr",
    evals_per_step=lambda options: 1 if options.get("multistep", True) else int(options.get("order", 2)),
    rules={"order": ORDER},
)
"""DPM-Solver and DPM-Solver++: a multistep run takes one evaluation a step, a singlestep one ``order``."""


@fixed_grid(
    dataclasses.replace(MULTISTEP, rules={**MULTISTEP.rules, **THRESHOLD_RULES}, correct_denoised=_threshold_of)
)
def dpm_solver_pp(
    sde: SDE,
    ts: Sequence[float],
    *,
    order: int = 2,
    multistep: bool = True,
    lower_order_final: bool = True,
    thresholding: str = "none",
    threshold_ratio: float = DYNAMIC_RATIO,
    data_range: tuple[float, float] = (-1.0, 1.0),
    budget: int | None = None,
) -> StepFn:
    r"""DPM-Solver++ (Lu et al. 2022): the probability-flow ODE in data prediction :math:`D`.

    ``order`` 1 (DDIM), 2 or 3; ``multistep=True`` (Adams-Bashforth-like, one evaluation per
    step, the recommended default) or ``False`` (singlestep, ``order`` evaluations per step).
    ``lower_order_final`` lowers the order of the last steps of short runs (< 15 steps).
    ``budget`` (set by :func:`scoresde.sample`) is the number of evaluations of a singlestep
    run; the remainder goes to a final lower-order step. See :func:`multistep_update` and
    :func:`singlestep_update` for the formulas. ``thresholding`` (``"static"`` or ``"dynamic"``, with
    ``threshold_ratio``) corrects every data prediction into ``data_range`` (:func:`thresholding_fn`).
    """
    check_solver_options(order, "data")
    correct = thresholding_fn(thresholding, data_range, threshold_ratio)
    return _dpm(ts, order, bool(multistep), bool(lower_order_final), "data", budget, correct)


@fixed_grid(MULTISTEP)
def dpm_solver(
    sde: SDE,
    ts: Sequence[float],
    *,
    order: int = 2,
    multistep: bool = True,
    lower_order_final: bool = True,
    budget: int | None = None,
) -> StepFn:
    r"""DPM-Solver (Lu et al. 2022): as :func:`dpm_solver_pp` in noise prediction :math:`\epsilon = -\sigma s_\theta`:
    :math:`x_s = \frac{\alpha_s}{\alpha_t}x_t - \sigma_s(e^{h} - 1)\epsilon_t` at order 1, and so on."""
    check_solver_options(order, "noise")
    return _dpm(ts, order, bool(multistep), bool(lower_order_final), "noise", budget)


# -- UniPC -------------------------------------------------------------------------------------------
def unipc_coefficients(rks: Sequence[float], hh: float, order: int) -> tuple[list[float], list[float]]:
    r"""UniPC's B(h) = bh2 weights (Zhao et al. 2023): ``(rhos_p, rhos_c)`` for predictor and corrector.

    ``rks``: the ratios :math:`r_k = (\lambda_{k} - \lambda_t)/h` of the ``order - 1`` earlier
    outputs, then 1 (the new one). With :math:`\hat h = -h`, :math:`B = e^{\hat h} - 1` and
    :math:`\varphi_{k+1} = \varphi_k/\hat h - 1/k!` from :math:`\varphi_1 = (e^{\hat h}-1)/\hat h - 1`,
    :math:`b_i = \varphi_i\, i!/B`; ``rhos_c`` solves :math:`R\rho = b` with :math:`R_{ij} = r_j^{i}`
    and ``rhos_p`` the system without the new output (``[1/2]`` at order 2).
    """
    phi_k = math.expm1(hh) / hh - 1.0
    b_h = math.expm1(hh)
    b, factorial = [], 1.0
    for i in range(1, order + 1):
        b.append(phi_k * factorial / b_h)
        factorial *= i + 1
        phi_k = phi_k / hh - 1.0 / factorial
    if order == 1:
        return [], [0.5]
    R = torch.tensor([[r**i for r in rks] for i in range(order)], dtype=torch.float64)
    bb = torch.tensor(b, dtype=torch.float64)
    rhos_c = torch.linalg.solve(R, bb).tolist()
    rhos_p = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], bb[:-1]).tolist()
    return rhos_p, rhos_c


@fixed_grid(SamplerSpec(grid="log_snr", evals_per_step=lambda options: 1,
                    rules={"order": ORDER, "prediction": OptionRule(choices=PREDICTIONS), **THRESHOLD_RULES},
                    correct_denoised=_threshold_of))  # fmt: skip
def unipc(
    sde: SDE,
    ts: Sequence[float],
    *,
    order: int = 2,
    prediction: str = "data",
    lower_order_final: bool = True,
    thresholding: str = "none",
    threshold_ratio: float = DYNAMIC_RATIO,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> StepFn:
    r"""UniPC (Zhao et al. 2023), bh2 variant: a multistep predictor UniP-``order`` and the corrector UniC.

    Each step predicts :math:`\tilde x_s = \frac{\sigma_s}{\sigma_t}x_t - \alpha_s\varphi_1 D_t
    - \alpha_s B(h)\sum_k \rho^p_k D_k` (:math:`D_k = (D_{t_k} - D_t)/r_k`), evaluates
    :math:`D_s` there (the next step's evaluation), and corrects
    :math:`x_s = \tilde x_s + \alpha_s B(h)(\sum_k \rho^p_k D_k - \sum_k\rho^c_k D_k - \rho^c_{new}(D_s - D_t))`;
    the last step is not corrected (it would cost an evaluation). One evaluation per step.
    ``prediction="noise"`` runs the same scheme on :math:`\epsilon`. ``thresholding`` as for
    :func:`dpm_solver_pp` (data prediction only).
    """
    check_solver_options(order, prediction)
    correct = thresholding_fn(thresholding, data_range, threshold_ratio)
    if correct is not None and prediction != "data":
        raise ValueError("thresholding corrects data predictions: use prediction='data' with it")
    steps = len(ts) - 1
    history: list[tuple[float, Tensor]] = []
    state = {"index": 0}

    def step(sde, score_fn, x, t, s, generator):
        ft, fs = _frame(sde, t, prediction), _frame(sde, s, prediction)
        if not history:
            history.append((ft.lam, _model(sde, score_fn, x, t, prediction, correct)))
        index = state["index"]
        state["index"] += 1
        k = step_order(order, index, len(history), steps, lower_order_final)
        h = fs.lam - ft.lam
        hh = -h
        m0 = history[-1][1]
        rks = [(lam - ft.lam) / h for lam, _ in history[-k:-1]]
        diffs = [(m - m0) / r for (_, m), r in zip(history[-k:-1], rks, strict=True)]
        rhos_p, rhos_c = unipc_coefficients([*rks, 1.0], hh, k)
        b_h = math.expm1(hh)
        base = (fs.scale / ft.scale) * x - (fs.mult * math.expm1(hh)) * m0
        pred = base
        for rho, d in zip(rhos_p, diffs, strict=False):
            pred = pred - (fs.mult * b_h * rho) * d
        if index == steps - 1:
            return pred
        m_s = _model(sde, score_fn, pred, s, prediction, correct)
        out = base - (fs.mult * b_h * rhos_c[-1]) * (m_s - m0)
        for rho, d in zip(rhos_c[:-1], diffs, strict=True):
            out = out - (fs.mult * b_h * rho) * d
        history.append((fs.lam, m_s))
        del history[:-3]
        return out

    return step


# -- SDE-DPM-Solver++ ------------------------------------------------------------------------------
@fixed_grid(SamplerSpec(grid="log_snr", evals_per_step=lambda options: 1,
                    rules={"order": OptionRule(check=lambda v: v in (1, 2), message="must be 1 or 2"),
                           **THRESHOLD_RULES}, correct_denoised=_threshold_of))  # fmt: skip
def sde_dpm_solver_pp(
    sde: SDE,
    ts: Sequence[float],
    *,
    order: int = 2,
    lower_order_final: bool = True,
    thresholding: str = "none",
    threshold_ratio: float = DYNAMIC_RATIO,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> StepFn:
    r"""SDE-DPM-Solver++(2M) (Lu et al. 2022): the reverse SDE in data prediction, one evaluation per step.

    .. math::
        x_s = \frac{\sigma_s}{\sigma_t}e^{-h}x_t + \alpha_s(1 - e^{-2h})\big(D_t + \tfrac{1}{2r}(D_t - D_{t'})\big)
              + \sigma_s\sqrt{1 - e^{-2h}}\,z

    (the second-order term only at ``order=2``, the midpoint form; :math:`r = (\lambda_t - \lambda_{t'})/h`);
    ``thresholding`` as for :func:`dpm_solver_pp`.
    """
    check_solver_options(order, "data", top=2)
    correct = thresholding_fn(thresholding, data_range, threshold_ratio)
    steps = len(ts) - 1
    history: list[tuple[float, Tensor]] = []
    state = {"index": 0}

    def step(sde, score_fn, x, t, s, generator):
        ft, fs = _frame(sde, t, "data"), _frame(sde, s, "data")
        history.append((ft.lam, _model(sde, score_fn, x, t, "data", correct)))
        del history[:-2]
        k = step_order(order, state["index"], len(history), steps, lower_order_final)
        state["index"] += 1
        h = fs.lam - ft.lam
        keep = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
        m0 = history[-1][1]
        if k == 2:
            r = (ft.lam - history[-2][0]) / h
            m0 = m0 + (0.5 / r) * (m0 - history[-2][1])
        out = (fs.scale / ft.scale * math.exp(-h)) * x + (fs.mult * keep) * m0
        return out + (fs.scale * math.sqrt(keep)) * randn_like(x, generator)

    return step
