r"""Exact log-likelihoods, bits/dim and latent codes through the probability-flow ODE.

The probability-flow ODE :math:`dx/dt = \tilde f(x,t) = f(x,t) - \tfrac12 g(t)^2 s_\theta(x,t)`
is a continuous normalizing flow. Along its trajectories the instantaneous change of
variables gives :math:`d\log p_t(x_t)/dt = -\nabla\cdot\tilde f(x_t,t)`, hence

.. math:: \log p_\epsilon(x) = \log p_T(x_T) + \int_\epsilon^T \nabla\cdot\tilde f(x_t, t)\,dt,

integrated forward from the data ``x`` at ``eps`` to its latent ``z = x_T``.

The divergence is either exact (``divergence="exact"``: the full Jacobian trace, ``D``
vector-Jacobian products per evaluation, for small ``D``) or the Skilling-Hutchinson
estimate :math:`v^\top (\partial\tilde f/\partial x) v` with probes ``v`` drawn once per
solve (``E[vv^T] = I``; Rademacher or Gaussian), which is unbiased. Either way each
function evaluation costs one network forward plus the vector-Jacobian products of
that same forward (the reference code runs the network twice).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._checks import (
    check_count,
    check_eps,
    check_finite,
    check_options,
    rand_like,
    randn_like,
    range_bounds,
)
from .flow_multistep import ADAMS_ORDERS, adams_flow, likelihood_grid
from .integrators import ERROR_NORMS, FIXED_METHODS, dopri5, fixed_step
from .noise import SampleNoise
from .sampling import sample
from .sampling.grids import check_grid, time_grid
from .score import CountedScore, as_score_model, takes_model
from .sde import SDE, ScoreFn

DIVERGENCES = ("hutchinson", "exact")
NOISES = ("rademacher", "gaussian")
METHODS = ("adams", "rk45", *FIXED_METHODS)
"""Integrators of :func:`log_likelihood`: ``"adams"`` (fixed grid, exponential multistep in log-SNR time:
:mod:`scoresde.flow_multistep`), ``"rk45"`` (adaptive Dormand-Prince, the reference) and the fixed-step
``"euler"``, ``"heun"``, ``"rk4"`` in plain time."""
DEFAULT_EPS = 1e-5
"""Start time of :func:`log_likelihood`'s integration unless told: the paper's."""
ADAMS_STEPS = 39
"""Default steps of ``method="adams"``: 40 network evaluations (one at the start, one at the end of each
step), enough for 1e-3 nats/dim on the mixtures of ``benchmarks/bench_likelihood.py``."""
MAX_LIKELIHOOD_STEPS = 100_000
TRUNCATIONS = ("none", "decoder")
r"""How :func:`log_likelihood` treats stopping at ``eps`` > 0. ``"none"`` (the paper's protocol): the model's density
at time ``eps``, :math:`p^\theta_\epsilon`, evaluated at the data itself. ``"decoder"``: the variational bound of
the model that draws :math:`x_\epsilon \sim p^\theta_\epsilon` and decodes
:math:`x \sim N(x_\epsilon/\alpha_\epsilon, (\sigma_\epsilon/\alpha_\epsilon)^2 I)`, with the forward kernel as the
encoder: :math:`\log p(x) \ge E_z[\log p^\theta_\epsilon(\alpha_\epsilon x + \sigma_\epsilon z)] + D\log\alpha_\epsilon`
(one ``z`` per sample from the generator: an unbiased estimate of the bound). With the exact score the first
scores :math:`\log p_\epsilon(x)` (the data's density smoothed by the kernel) instead of :math:`\log p_0(x)`, which
is off in either direction; the second is a lower bound on :math:`\log p_0(x)` (their gaps per SDE:
``benchmarks/results/likelihood.md``)."""


@takes_model
def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    divergence: str = "hutchinson",
    noise: str = "rademacher",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    generator: torch.Generator | SampleNoise | None = None,
    method: str = "rk45",
    steps: int | None = None,
    error_norm: str = "sample",
    batch_size: int | None = None,
    order: int = 3,
    truncation: str = "none",
    fresh_probes: bool | None = None,
    grid: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Log-density of ``x`` under the model, in nats per sample.

    Args:
        sde, score_fn: the forward SDE and the score model. The score must be differentiable
            in ``x`` (the divergence is its Jacobian trace): a score computed under
            ``torch.no_grad`` or detached is an error, not a silently wrong likelihood.
        x: data ``[B, ...]`` in the model's input space (for images, see :func:`bits_per_dim`).
        divergence: ``"hutchinson"`` (unbiased estimate) or ``"exact"`` (full trace).
        noise: Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``.
        n_probes: Hutchinson probes per sample, averaged (all share one forward pass; one batched
            vector-Jacobian product each).
        rtol, atol: tolerances of the adaptive solver (scipy's RK45 defaults of the paper).
        eps: start time of the integration (default: the paper's 1e-5, or the end of ``grid``).
        generator: draws the probes: a ``torch.Generator`` or a
            :class:`scoresde.noise.SampleNoise` (one stream per sample: with the default
            per-sample error control a sample's result then does not depend on its batch, up to
            float rounding: see ``scoresde.integrators``).
        method: ``"rk45"`` (adaptive, ``rtol``/``atol``), ``"adams"`` (``steps`` steps of the exponential
            Adams predictor-corrector of :mod:`scoresde.flow_multistep` on its log-SNR grid: ``steps + 1``
            evaluations; 39 by default, 40 NFE; its Hutchinson probes are drawn afresh at every evaluation,
            which lowers the estimate's variance and keeps it unbiased), or a fixed-step method
            ``"euler"``, ``"heun"``, ``"rk4"`` with ``steps`` (default 100) steps uniform in time.
        error_norm: per-``"sample"`` or whole-``"batch"`` error control for ``rk45``.
        order: the ``"adams"`` predictor's order, 1 to 4 (its corrector is one higher).
        truncation: ``"none"`` or ``"decoder"``: what the result is at ``eps`` > 0 (see :data:`TRUNCATIONS`).
        fresh_probes: ``"adams"`` only: new Hutchinson probes at every evaluation (the default: independent
            estimates, lower variance) or, with ``False``, one set per solve as the other methods use.
        grid: ``"adams"`` only: its times instead of the default grid, decreasing from ``T`` to ``eps`` as
            ``sample``'s grids are (e.g. from :func:`optimize_likelihood_grid`); it sets ``steps`` and ``eps``.
        batch_size: solve at most this many samples at a time (bounded memory for any ``B``).

    Returns:
        ``(logp, z, nfe)``: ``logp`` of shape ``[B]``, the latent ``z = x_T`` shaped like
        ``x``, and the number of function evaluations (each one network forward; with
        several batches, the largest over the batches).
    """
    check_options("divergence", divergence, DIVERGENCES)
    check_options("noise", noise, NOISES)
    check_options("method", method, METHODS)
    check_options("truncation", truncation, TRUNCATIONS)
    times = None
    if grid is not None:
        if method != "adams":
            raise ValueError(f"grid= is a grid of method 'adams'; method {method!r} does not take one")
        if steps is not None:
            raise ValueError("grid= sets the steps (its length minus one); do not pass steps too")
        times = check_grid(sde, grid)[::-1]  # increasing from eps to T
        if eps is not None and not math.isclose(check_eps(eps, sde.T), times[0], rel_tol=1e-9):
            raise ValueError(f"the grid ends at {times[0]:g}, but eps={eps:g}: leave eps out or pass the grid's end")
        eps, steps = times[0], len(times) - 1
    if method == "adams":
        if order not in ADAMS_ORDERS or isinstance(order, bool):
            raise ValueError(f"order must be one of {list(ADAMS_ORDERS)} for method 'adams', got {order!r}")
        what = "steps" if grid is None else "the grid's steps"
        steps = check_count(what, ADAMS_STEPS if steps is None else steps, order, MAX_LIKELIHOOD_STEPS)
    elif method != "rk45":
        steps = check_count("steps", 100 if steps is None else steps, 1, MAX_LIKELIHOOD_STEPS)
    check_options("error_norm", error_norm, ERROR_NORMS)
    n_probes = check_count("n_probes", n_probes)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of shape [B, *dims]")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype} (for integer images use bits_per_dim)")
    if torch.finfo(x.dtype).bits < 32:
        raise TypeError(f"the likelihood needs float32 or float64 data, got {x.dtype} (half precision puts its "
                        "log-density off by a few hundredths of a nat per dimension): pass x.float()")  # fmt: skip
    check_finite(x, "x")
    eps = check_eps(DEFAULT_EPS if eps is None else eps, sde.T)
    if times is None and method == "adams":
        times = likelihood_grid(sde.schedule, sde.T, eps, steps)
    if batch_size is not None:
        check_count("batch_size", batch_size)
    if x.shape[0] == 0:
        raise ValueError("x has no samples (an empty batch)")
    if isinstance(generator, SampleNoise) and len(generator) != x.shape[0]:
        raise ValueError(f"the SampleNoise has {len(generator)} streams for {x.shape[0]} samples")
    chunk = x.shape[0] if batch_size is None else int(batch_size)
    logps, zs, nfe = [], [], 0
    for lo in range(0, x.shape[0], chunk):
        hi = min(lo + chunk, x.shape[0])
        gen = generator.subset(lo, hi) if isinstance(generator, SampleNoise) else generator
        start = x[lo:hi]
        if truncation == "decoder":  # the encoder's draw x_eps = alpha x + sigma z (first draw of each stream)
            alpha, sigma = sde.schedule.alpha(eps), sde.schedule.sigma(eps)
            start = alpha * start + sigma * randn_like(start, gen)
        logp, z, n = _solve(sde, score_fn, start, divergence, noise, int(n_probes), rtol, atol, eps, gen, method,
                            steps, error_norm, order, fresh_probes is not False, times)  # fmt: skip
        if truncation == "decoder":
            logp = logp + start[0].numel() * math.log(alpha)
        logps.append(logp)
        zs.append(z)
        nfe = max(nfe, n)
    if isinstance(generator, SampleNoise):
        generator.draws = gen.draws
    return torch.cat(logps), torch.cat(zs), nfe


def likelihood_options(method: str, steps: int | None, probes: int, truncation: str, rtol: float,
                       atol: float) -> dict:  # fmt: skip
    """The :func:`log_likelihood` keywords of a config's ``[eval]`` (or the CLI's flags), checked: one-line
    errors before any data is read or network evaluated."""
    check_options("likelihood method", method, METHODS)
    check_options("truncation", truncation, TRUNCATIONS)
    check_count("probes", probes)
    kw: dict = {"method": method, "n_probes": probes, "truncation": truncation}
    if method == "rk45":
        kw |= {"rtol": rtol, "atol": atol}
    else:
        kw["steps"] = check_count("steps", steps, 3 if method == "adams" else 1, MAX_LIKELIHOOD_STEPS)
    return kw


def describe_likelihood(kw: dict, divergence: str = "hutchinson") -> str:
    """What produced a likelihood and which bound it is, in words (the CLI's and the report's line)."""
    method = kw.get("method", "rk45")
    if method == "rk45":
        how = f"RK45 rtol {kw.get('rtol', 1e-5):g} atol {kw.get('atol', 1e-5):g}"
    elif kw.get("grid") is not None:
        how = f"{method} on a tuned grid of {len(kw['grid']) - 1} steps"
    else:
        how = f"{method} {kw['steps']} steps"
    probes = kw.get("n_probes", 1)
    div = "exact divergence" if divergence == "exact" else f"Hutchinson, {probes} probe{'s' if probes > 1 else ''}"
    bound = ("Gaussian-decoder bound at eps" if kw.get("truncation") == "decoder"
             else "the model's density at eps")  # fmt: skip
    return f"{how}, {div}; {bound}"


def _solve(
    sde: SDE, score_fn: ScoreFn, x: Tensor, divergence: str, noise: str, n_probes: int, rtol: float, atol: float,
    eps: float, generator: torch.Generator | SampleNoise | None, method: str, steps: int | None, error_norm: str,
    order: int = 3, fresh: bool = True, times: list[float] | None = None,
) -> tuple[Tensor, Tensor, int]:  # fmt: skip
    """One batch of :func:`log_likelihood` (arguments already validated)."""
    shape, batch = x.shape, x.shape[0]
    dims = x[0].numel()
    counted = CountedScore(score_fn)

    def differentiable(xs: Tensor, t: Tensor) -> Tensor:
        score = counted(xs, t)
        if not score.requires_grad:
            raise ValueError(
                "score_fn returned a score with no autograd path to x (computed under torch.no_grad or detached); "
                "the likelihood needs its Jacobian: call the network with gradients enabled"
            )
        return score

    if method == "adams":
        schedule = sde.schedule
        fixed = None
        if divergence == "hutchinson" and not fresh:
            fixed = torch.stack([_probe(x, noise, generator) for _ in range(n_probes)])

        def evaluate(xs: Tensor, t: float, node: int) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                xs = xs.detach().requires_grad_(True)
                eps_hat = differentiable(xs, torch.full((xs.shape[0],), t, dtype=xs.dtype, device=xs.device))
                eps_hat = eps_hat * -schedule.sigma(t)
                if divergence == "exact":
                    div = _exact_divergence(eps_hat, xs)
                else:  # fresh probes at every node: independent estimates, combined with fixed weights
                    v = fixed
                    if v is None:
                        v = torch.stack([_probe(xs, noise, generator) for _ in range(n_probes)])
                    div = _hutchinson_divergence(eps_hat, xs, v)
            return eps_hat.detach(), div.detach()

        z, log_det = adams_flow(evaluate, schedule, x.detach(), times, order)
        counted.check()
        return sde.prior_logp(z) + log_det, z, counted.nfe

    flow = sde.reverse(differentiable, probability_flow=True)
    probes = None
    if divergence == "hutchinson":
        probes = torch.stack([_probe(x, noise, generator) for _ in range(n_probes)])

    def rhs(t: float | Tensor, y: Tensor, idx: Tensor | None) -> Tensor:
        xs = y[:, :dims].reshape(y.shape[0], *shape[1:])
        with torch.enable_grad():
            xs = xs.detach().requires_grad_(True)
            drift = flow.sde(xs, t)[0]
            if probes is None:
                div = _exact_divergence(drift, xs)
            else:
                v = probes if idx is None else probes[:, idx]
                div = _hutchinson_divergence(drift, xs, v)
        return torch.cat([drift.detach().reshape(y.shape[0], dims), div.detach()[:, None]], dim=1)

    y0 = torch.cat([x.detach().reshape(batch, dims), torch.zeros(batch, 1, dtype=x.dtype, device=x.device)], 1)
    if method == "rk45":
        y1, _ = dopri5(rhs, y0, eps, sde.T, rtol=rtol, atol=atol, error_norm=error_norm)
    else:
        y1 = fixed_step(rhs, y0, time_grid(sde, steps, eps)[::-1], method=method)
    counted.check()
    z = y1[:, :dims].reshape(shape)
    logp = sde.prior_logp(z) + y1[:, dims]
    return logp, z, counted.nfe


def _probe(x: Tensor, noise: str, generator: torch.Generator | None) -> Tensor:
    z = randn_like(x, generator)
    return z if noise == "gaussian" else torch.sign(z)


def _hutchinson_divergence(out: Tensor, inp: Tensor, probes: Tensor) -> Tensor:
    r"""Mean over probes of :math:`v^\top J v`, each from one vector-Jacobian product."""
    vjps = _vjps(out, inp, probes)
    return (vjps * probes).reshape(probes.shape[0], probes.shape[1], -1).sum(-1).mean(0)


def _exact_divergence(out: Tensor, inp: Tensor) -> Tensor:
    """Trace of the per-sample Jacobian of ``out`` w.r.t. ``inp`` (``D`` vector-Jacobian products)."""
    batch, dims = inp.shape[0], inp[0].numel()
    basis = torch.eye(dims, dtype=inp.dtype, device=inp.device)[:, None, :].expand(dims, batch, dims)
    rows = _vjps(out, inp, basis.reshape(dims, *inp.shape))
    return rows.reshape(dims, batch, dims).diagonal(dim1=0, dim2=2).sum(-1)


def _vjps(out: Tensor, inp: Tensor, cotangents: Tensor) -> Tensor:
    """Stacked vector-Jacobian products ``c^T d(out)/d(inp)`` for each ``c`` in ``cotangents``."""
    try:
        (grads,) = torch.autograd.grad(out, inp, cotangents, retain_graph=True, is_grads_batched=True)
        return grads
    except RuntimeError:  # an op without a batching rule: one backward pass per cotangent
        return torch.stack([torch.autograd.grad(out, inp, c, retain_graph=True)[0] for c in cotangents])


def dequantize(levels_x: Tensor, levels: int = 256, generator: torch.Generator | SampleNoise | None = None) -> Tensor:
    r"""Uniform dequantization of integer data ``k`` in ``{0, ..., levels-1}``: :math:`u = (k + U)/L \in [0, 1)`."""
    k = levels_x if levels_x.is_floating_point() else levels_x.to(torch.get_default_dtype())
    return (k + rand_like(k, generator)) / levels


def bpd_from_logp(logp: Tensor, dims: int, levels: int = 256, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    r"""Convert a model log-density (nats, in the scaled space) to bits per dimension.

    The model sees :math:`y = lo + (hi - lo)\,u` with :math:`u = (k + U)/L \in [0,1)` the
    dequantized data of ``L = levels`` levels. The density of the unit-width variable
    :math:`k + U` is :math:`p(k+U) = p_y(y)\,(hi-lo)^D / L^D`, so

    .. math:: \mathrm{bpd} = -\frac{\log p_y(y)}{D\ln 2} - \log_2(hi - lo) + \log_2 L.

    For 8-bit data (``L = 256``) the offset :math:`\log_2 L - \log_2(hi-lo)` is 7 on
    ``[-1, 1]`` and 8 on ``[0, 1]``: the reference code's "+7" constant, derived.
    Since :math:`E_U[-\log_2 p(k+U)]` upper-bounds the discrete model's code length,
    the result is an upper bound on the discrete negative log-likelihood in bits.
    """
    lo, hi = data_range
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {data_range}")
    return -logp / (dims * math.log(2.0)) - math.log2(hi - lo) + math.log2(levels)


MAX_LEVELS = 2**16
"""The most data levels :func:`bits_per_dim` takes (16-bit images)."""


@takes_model
def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    levels: int | None = None,
    data_range: tuple[float, float] | None = None,
    dequantize_data: bool = True,
    generator: torch.Generator | SampleNoise | None = None,
    **likelihood_options,
) -> tuple[Tensor, Tensor, int]:
    """Bits per dimension of integer data ``x`` (values ``0 .. levels-1``, e.g. uint8 images).

    The data are uniformly dequantized (``(k + U)/levels``; with ``dequantize_data=False``
    the bin centres ``(k + 1/2)/levels``), mapped linearly onto ``data_range`` (the range
    the model was trained on), scored with :func:`log_likelihood`, and converted with
    :func:`bpd_from_logp`. Average several calls (the paper uses 5) to reduce the
    dequantization and Hutchinson noise.

    ``levels`` and ``data_range`` default to a score model's (:func:`scoresde.load`), else 256 and (-1, 1).

    Returns:
        ``(bpd [B], z, nfe)``.
    """
    model = as_score_model(score_fn)
    if levels is None:
        levels = model.levels if model is not None and model.levels is not None else 256
    if data_range is None:
        data_range = model.data_range if model is not None and model.data_range is not None else (-1.0, 1.0)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of shape [B, *dims] holding integer levels")
    levels = check_count("levels", levels, 2, MAX_LEVELS)
    range_bounds(data_range)  # an increasing pair of finite numbers, before the solve
    if x.is_floating_point() and torch.finfo(x.dtype).bits < 32:
        raise TypeError(f"x holds levels as {x.dtype}; pass integers (or float32/float64)")
    values = x.to(torch.float64)
    if bool((values != values.round()).any()) or bool((values < 0).any()) or bool((values > levels - 1).any()):
        raise ValueError(f"x must hold integers in [0, {levels - 1}] (raw levels, before scaling)")
    u = dequantize(values, levels, generator).to(torch.float64) if dequantize_data else (values + 0.5) / levels
    lo, hi = data_range
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    y = (lo + (hi - lo) * u).to(dtype)
    logp, z, nfe = log_likelihood(sde, score_fn, y, generator=generator, **likelihood_options)
    return bpd_from_logp(logp, y[0].numel(), levels, data_range), z, nfe


LIKELIHOOD_REFERENCE_STEPS = 400
"""Steps of the reference solve of :func:`optimize_likelihood_grid` (``"adams"`` on the default grid)."""
LIKELIHOOD_GRID_SWEEPS = 4
"""Passes of :func:`optimize_likelihood_grid`'s search over the interior times."""


@takes_model
def optimize_likelihood_grid(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    steps: int = ADAMS_STEPS,
    *,
    eps: float | None = None,
    order: int = 3,
    divergence: str = "hutchinson",
    seed: int = 0,
    reference_steps: int = LIKELIHOOD_REFERENCE_STEPS,
    sweeps: int = LIKELIHOOD_GRID_SWEEPS,
    batch_size: int | None = None,
    report: Callable[[str], None] | None = None,
) -> list[float]:
    r"""A grid of ``method="adams"`` with ``steps`` steps tuned for ``score_fn`` on the data ``x``.

    Starting from the default grid (:func:`scoresde.flow_multistep.likelihood_grid`), a pattern search over the
    log-SNR of each interior time (``scoresde.sampling.optimize.refine_points``, ``sweeps`` passes) minimises

    .. math:: J = \frac{1}{nD} \sum_i |\log p_{\text{grid}}(x_i) - \log p_{\text{ref}}(x_i)|,

    with the reference the same solver at ``reference_steps`` steps. Every solve uses the same Hutchinson probes
    (one set per sample, drawn from ``seed``; or the exact divergence), so ``J`` is the integration's error alone.
    Each trial is one solve of ``steps + 1`` evaluations on ``x``: tune on a few dozen training points, then check on
    held-out data. Returns a decreasing list of times from ``T`` to ``eps``, for ``log_likelihood(..., grid=)``
    (and, saved with ``scoresde.sampling.optimize.save_grid``, for ``scoresde likelihood --grid``).
    """
    from .sampling.optimize import refine_points

    check_count("sweeps", sweeps, 0)
    reference_steps = check_count("reference_steps", reference_steps, 10, MAX_LIKELIHOOD_STEPS)
    eps = check_eps(DEFAULT_EPS if eps is None else eps, sde.T)
    common = {"method": "adams", "divergence": divergence, "order": order, "fresh_probes": False,
              "batch_size": batch_size}  # fmt: skip

    def solve(**kw) -> Tensor:
        generator = torch.Generator(device=x.device).manual_seed(seed)  # the same probes for every solve
        return log_likelihood(sde, score_fn, x, generator=generator, **common, **kw)[0].double()

    initial = likelihood_grid(sde.schedule, sde.T, eps, steps)
    solve(eps=eps, steps=steps)  # checks every argument before the reference solve
    reference = solve(eps=eps, steps=reference_steps)
    schedule, dims = sde.schedule, x[0].numel()

    def objective(lams: list[float]) -> float:
        times = [eps, *(schedule.t_from_log_snr(v) for v in lams[1:-1]), sde.T]
        if any(b <= a for a, b in itertools.pairwise(times)):
            return math.inf
        err = float((solve(grid=times[::-1]) - reference).abs().mean()) / dims
        return err if math.isfinite(err) else math.inf

    lam = [schedule.log_snr(t) for t in initial]
    first = objective(lam)
    if report is not None:
        report(f"default grid: mean |error| {first:.4g} nats/dim against {reference_steps} steps")
    lam, _ = refine_points(lam, objective, first, sweeps, report, "mean |error| (nats/dim)")
    return [sde.T, *(schedule.t_from_log_snr(v) for v in lam[-2:0:-1]), eps]


@takes_model
def encode(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    error_norm: str = "sample",
) -> tuple[Tensor, int]:
    """Latent code ``z = x_T`` of data ``x`` (at time ``eps``): the probability-flow ODE run forward.

    Returns ``(z, nfe)``. :func:`decode` inverts it up to the solver tolerance.
    """
    check_finite(x, "x")
    eps = check_eps(eps, sde.T)
    counted = CountedScore(score_fn)
    flow = sde.reverse(counted, probability_flow=True)
    with torch.no_grad():
        z, _ = dopri5(lambda t, y, idx: flow.sde(y, t)[0], x, eps, sde.T, rtol=rtol, atol=atol, error_norm=error_norm)
    counted.check()
    return z, counted.nfe


@takes_model
def decode(
    sde: SDE,
    score_fn: ScoreFn,
    z: Tensor,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    error_norm: str = "sample",
) -> tuple[Tensor, int]:
    """Data at time ``eps`` for the latent ``z``: the probability-flow ODE run backward (no denoising).

    Returns ``(x, nfe)``.
    """
    x, nfe = sample(sde, score_fn, None, sampler="ode", x_init=z, eps=eps, denoise=False, return_nfe=True,
                    rtol=rtol, atol=atol, error_norm=error_norm)  # fmt: skip
    return x, nfe


def slerp(z0: Tensor, z1: Tensor, weight: float) -> Tensor:
    r"""Spherical interpolation of latents, per sample (rows of ``[B, ...]``):

    .. math:: \frac{\sin((1-w)\theta)}{\sin\theta} z_0 + \frac{\sin(w\theta)}{\sin\theta} z_1,
        \quad \cos\theta = \frac{\langle z_0, z_1\rangle}{\|z_0\|\|z_1\|},

    which keeps Gaussian latents at a typical norm (a straight line would pass near the
    origin, a region the prior never produces); nearly parallel pairs fall back to the line.
    """
    if not (isinstance(z0, Tensor) and isinstance(z1, Tensor)) or z0.shape != z1.shape or z0.ndim < 2:
        raise ValueError("z0 and z1 must be tensors of the same shape [B, ...]")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be a number in [0, 1], got {weight!r}")
    a, b = z0.reshape(z0.shape[0], -1).double(), z1.reshape(z1.shape[0], -1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))[:, None]
    small = theta < 1e-6
    safe = torch.where(small, torch.ones_like(theta), theta)
    ca = torch.where(small, torch.full_like(theta, 1.0 - weight), torch.sin((1.0 - weight) * safe) / torch.sin(safe))
    cb = torch.where(small, torch.full_like(theta, float(weight)), torch.sin(weight * safe) / torch.sin(safe))
    return (ca * a + cb * b).to(z0.dtype).reshape(z0.shape)


MAX_POINTS = 1000
"""The most points :func:`interpolate` decodes along each path (all of them in one batch)."""


@takes_model
def interpolate(
    sde: SDE,
    score_fn: ScoreFn,
    x0: Tensor,
    x1: Tensor,
    n: int = 8,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> tuple[Tensor, int]:
    """Decode ``n`` points along the spherical path between the latents of ``x0`` and ``x1``.

    Both ``[B, ...]`` batches are encoded with the probability-flow ODE, their latents are
    interpolated with :func:`slerp` at ``n`` evenly spaced weights from 0 to 1, and all of
    them are decoded in one batch. Returns ``(path [n, B, ...], nfe)``; ``path[0]`` and
    ``path[-1]`` reproduce ``x0`` and ``x1`` up to the solver tolerance.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_POINTS:
        raise ValueError(f"n must be an integer from 2 to {MAX_POINTS:,} (points along each path), got {n!r}")
    if not (isinstance(x0, Tensor) and isinstance(x1, Tensor)) or x0.shape != x1.shape:
        raise ValueError("x0 and x1 must be tensors of the same shape [B, ...]")
    z, nfe_enc = encode(sde, score_fn, torch.cat([x0, x1]), eps=eps, rtol=rtol, atol=atol)
    z0, z1 = z[: x0.shape[0]], z[x0.shape[0] :]
    weights = [i / (n - 1) for i in range(int(n))]
    latents = torch.cat([slerp(z0, z1, w) for w in weights])
    x, nfe_dec = decode(sde, score_fn, latents, eps=eps, rtol=rtol, atol=atol)
    return x.reshape(int(n), *x0.shape), nfe_enc + nfe_dec
