"""Sampling from a score model: one entry point, :func:`sample`, over free-function samplers.

============================  =====================================================
``sampler``                   what it runs
============================  =====================================================
``"euler_maruyama"``          Euler-Maruyama on the reverse SDE
``"reverse_diffusion"``       reverse of the forward discretization (DDPM/SMLD rules)
``"ancestral"``               ancestral sampling (VP and VE)
``"pc"``                      predictor-corrector (Langevin / ALD corrector)
``"ode"``                     probability-flow ODE: adaptive ``rk45`` or fixed-step
``"ddim"``                    DDIM on the kernel (``eta`` for stochasticity)
``"dpm_solver++"``            DPM-Solver++ (data prediction), ``order`` 1-3, multi/singlestep
``"dpm_solver"``              DPM-Solver (noise prediction), ``order`` 1-3, multi/singlestep
``"unipc"``                   UniPC (bh2 predictor-corrector), ``order`` 1-3
``"edm_heun"``                EDM's Heun sampler (Karras et al. 2022), ``churn``
``"sde_dpm_solver++"``        SDE-DPM-Solver++(2M), stochastic
``"adaptive_sde"``            adaptive reverse SDE (Jolicoeur-Martineau et al. 2021)
============================  =====================================================

For the fast solvers (``dpm_solver++`` to ``sde_dpm_solver++``) ``steps`` is the total NFE
budget, the final denoising evaluation included (default 20); for the others it is the
number of grid steps.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._checks import check_count, check_eps, check_generator, check_memory, check_shape, range_bounds
from ..devices import api_device
from ..noise import SampleNoise
from ..score import CountedScore, ScoreModel, as_score_model, x0_from_score
from ..sde import SDE, ScoreFn
from .adaptive_sde import adaptive_sde
from .edm import edm_heun
from .exponential import dpm_solver, dpm_solver_pp, sde_dpm_solver_pp, unipc
from .grids import DEFAULT_RHO, GRIDS, MAX_STEPS, Grid, check_grid, time_grid
from .loop import Callback, ReplaceFn, StepInfo, run_steps
from .ode_samplers import ddim, ode, probability_flow_ode
from .optimize import optimize_grid
from .sde_samplers import (
    CORRECTORS,
    PREDICTORS,
    ald_corrector,
    ancestral,
    ancestral_step,
    euler_maruyama,
    euler_maruyama_step,
    langevin_corrector,
    pc,
    reverse_diffusion,
    reverse_diffusion_step,
)
from .spec import SamplerSpec, spec_of

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "pc": pc,
    "ode": ode,
    "ddim": ddim,
    "dpm_solver++": dpm_solver_pp,
    "dpm_solver": dpm_solver,
    "unipc": unipc,
    "edm_heun": edm_heun,
    "sde_dpm_solver++": sde_dpm_solver_pp,
    "adaptive_sde": adaptive_sde,
}
"""Sampler name -> sampler function (the table in the module docstring); ``sample(..., sampler=NAME)``."""
ADAPTIVE_STEPS = (
    "--steps does not apply to the adaptive samplers (adaptive_sde, ode's rk45: they pick their own steps); set "
    "--option rtol=/atol=, or --option method=euler|heun|rk4 for fixed steps"
)
"""The command line's answer to ``--steps`` with a sampler that picks its own steps."""
FAST_DEFAULT_NFE = 20
"""Default NFE budget of the fast solvers (their ``steps`` counts evaluations, not grid steps)."""


def default_grid(sampler: str | Callable[..., Tensor], sde: SDE | None = None) -> str:
    """The default grid of a sampler, from its spec (:mod:`scoresde.sampling.spec`): ``log_snr`` for the exponential
    integrators, ``karras`` for ``edm_heun`` (the grids their authors use), and for the paper's samplers the process's
    ``SDE.default_grid`` (``uniform`` in ``t``, the paper's; ``karras`` for EDM's process, whose time
    is its noise level)."""
    grid = spec_of(_resolve(sampler)).grid
    if grid is not None:
        return grid
    return "uniform" if sde is None else sde.default_grid


def is_adaptive(sampler: str | Callable[..., Tensor], options: dict | None = None) -> bool:
    """Whether the sampler picks its own steps (``adaptive_sde``, ``ode``'s ``rk45``): no ``steps``, no grid."""
    return bool(spec_of(_resolve(sampler)).adaptive(options or {}))


def evals_per_step(sampler: str | Callable[..., Tensor], options: dict | None = None) -> int | None:
    """Score evaluations per grid step of a fast solver (whose ``steps`` is an NFE budget); ``None`` otherwise."""
    per_step = spec_of(_resolve(sampler)).evals_per_step
    return None if per_step is None else int(per_step(options or {}))


_COMMON = ("generator", "progress", "callback", "replace", "rows", "budget")
_HOOKS = ("callback", "replace")


def default_eps(sde: SDE) -> float:
    """The process's sampling end time, :attr:`SDE.default_eps` (the paper's: 1e-5 for VE, 1e-3 for VP, sub-VP)."""
    return sde.default_eps


def sampler_options(sampler: str | Callable[..., Tensor]) -> tuple[str, ...]:
    """Names of the extra keyword options a sampler accepts."""
    fn = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON)


@torch.no_grad()
def sample(
    sde: SDE | ScoreModel,
    score_fn: ScoreFn | None = None,
    shape: Sequence[int] | None = None,
    sampler: str | Callable[..., Tensor] | None = None,
    steps: int | None = None,
    eps: float | None = None,
    generator: torch.Generator | SampleNoise | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_init: Tensor | None = None,
    denoise: bool = True,
    progress: bool = False,
    return_nfe: bool = False,
    grid: Grid | None = None,
    rho: float | None = None,
    batch_size: int | None = None,
    callback: Callback | None = None,
    replace: ReplaceFn | None = None,
    n: int | None = None,
    **options,
) -> Tensor | tuple[Tensor, int]:
    """Draw samples by integrating the reverse-time SDE or ODE from ``T`` to ``eps``.

    ``sample(model, n=64)`` samples a :class:`~scoresde.score.ScoreModel` (from :func:`scoresde.load`): the
    process, the score and the shape come from the model and, when no ``sampler`` is given, the sampler,
    its options, ``steps`` and ``eps`` too (its training config's ``[sampling]``); ``score_fn=`` may pass
    a transform of it (a guided score). ``sample(sde, score_fn, shape)`` samples any score function.

    Args:
        sde: the forward SDE, or a score model (then ``score_fn`` defaults to it and ``shape`` to
            ``(n, *model.data_shape)``; it sets the default ``device`` too).
        score_fn: ``s(x, t)`` approximating the score of the perturbed data.
        shape: ``(B, *data_dims)``; may be ``None`` when ``x_init`` is given (or with a model).
        sampler: a name from :data:`SAMPLERS` or a function with the same signature (default
            ``"pc"``; a model's configured sampler).
        steps: number of grid steps (default ``sde.N``); for the fast solvers (see
            :func:`evals_per_step`) the NFE budget, denoising included (default 20). The
            adaptive ``ode`` method ``rk45`` and ``adaptive_sde`` choose their own steps and
            reject this argument.
        eps: end time (default :func:`default_eps`, the process's: 1e-5 for VE, ``sigma_min`` for EDM, 1e-3 otherwise).
        generator: a ``torch.Generator`` (one noise stream for the batch: the same seed
            gives the same samples for the same batching) or a
            :class:`scoresde.noise.SampleNoise` (one stream per sample: sample ``i`` of
            seed ``s`` is the same in any batch, batch size or process).
        device, dtype: where to sample (default: ``x_init``'s, else CPU float32).
        x_init: start from this ``x_T`` instead of a prior draw (e.g. an ODE latent).
        denoise: end with one Tweedie step :math:`x_0 = (x + \\sigma^2 s)/\\alpha` at ``eps``
            (one more score evaluation), removing the noise left at ``eps``.
        progress: show a tqdm progress bar.
        return_nfe: also return the number of score evaluations per sample path (with
            several batches, the largest over the batches).
        grid: the time grid, one of :data:`GRIDS`, or an explicit decreasing sequence of
            times from ``T`` (its last time is the end time; ``steps`` is then not given).
            Default: :func:`default_grid` (``log_snr`` for the exponential integrators,
            ``karras`` for ``edm_heun``, the process's ``default_grid`` for the paper's samplers:
            ``uniform``, ``karras`` for :class:`~scoresde.sde.EDMSDE`).
        rho: the exponent of the ``karras`` grid (default 7).
        batch_size: draw at most this many samples at a time (bounded memory for any
            ``B``); the batches run one after the other and are concatenated.
        callback: ``callback(info)`` after every step, with a
            :class:`~scoresde.sampling.loop.StepInfo` (index, times, state, rows of the
            batch, denoised estimate); for trajectories and pictures.
        replace: ``replace(info) -> x`` may replace the state after every step and after
            the final denoising step (``info.s = 0``): the hook of inpainting and projections.
            Both hooks need a fixed-grid sampler (not the adaptive ``rk45``).
        n: the number of samples of a model (default: its configured ``n``); ``shape`` gives it otherwise.
        **options: sampler options, e.g. ``predictor``, ``corrector``, ``snr``,
            ``corrector_steps`` for ``pc``; ``method``, ``rtol``, ``atol`` for ``ode``;
            ``eta`` for ``ddim``; ``probability_flow`` for the SDE predictors.

    Returns:
        samples of ``shape`` (and the NFE when ``return_nfe``).

    Every sampler is batch-independent with a ``SampleNoise`` except the ``langevin``
    corrector, whose step size is a batch statistic (the paper's rule; ``ald`` is per sample);
    the adaptive ones to their own error in float32 (see ``scoresde.integrators``).
    """
    model = as_score_model(sde)
    if model is not None:
        sde, score_fn, shape, device, sampler, steps, eps, options = _model_defaults(
            model, sde, score_fn, shape, n, x_init, device, sampler, steps, eps, grid, options)  # fmt: skip
    elif n is not None:
        raise ValueError("n= sets the sample count of a score model (scoresde.load); with an SDE and a score "
                         "function pass shape=(n, *data_dims)")  # fmt: skip
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE or a ScoreModel, got {type(sde).__name__}")
    if score_fn is None:
        raise TypeError("sample(sde, score_fn, shape) needs a score function s(x, t)")
    sampler = "pc" if sampler is None else sampler
    device = api_device(device)
    fn = _resolve(sampler)
    allowed = sampler_options(fn)
    if model is not None:
        options = with_data_range(fn, options, model.data_range)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        name = sampler if isinstance(sampler, str) else getattr(sampler, "__name__", "sampler")
        raise ValueError(f"unknown option(s) {unknown} for sampler {name!r}; it accepts {list(allowed)}")
    _check_option_values(fn, sampler if isinstance(sampler, str) else getattr(fn, "__name__", "sampler"), options)
    adaptive = is_adaptive(fn, options)
    grid = default_grid(fn, sde) if grid is None else grid
    ts, evals = _grid(sde, fn, steps, eps, grid, rho, denoise, adaptive, options)
    eps = ts[-1]
    if batch_size is not None:
        check_count("batch_size", batch_size)
    check_generator(generator)
    if x_init is None:
        if shape is None:
            raise ValueError("pass a sample shape (B, *dims) or x_init")
        shape = check_shape(shape)
    else:
        _check_x_init(x_init, shape)
        shape = tuple(x_init.shape)
    if isinstance(generator, SampleNoise) and len(generator) != shape[0]:
        raise ValueError(f"the SampleNoise has {len(generator)} streams for {shape[0]} samples")
    check_memory(math.prod(shape), dtype or (torch.float32 if x_init is None else x_init.dtype),
                 f"{shape[0]:,} samples of shape {tuple(shape[1:])}", device)  # fmt: skip

    params = inspect.signature(fn).parameters
    hooks = {"callback": callback, "replace": replace}
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable, got {type(hook).__name__}")
        if hook is not None and name not in params:
            raise ValueError(f"sampler {getattr(fn, '__name__', fn)!r} does not take the {name} hook")
    if adaptive and (callback is not None or replace is not None):
        raise ValueError("the adaptive rk45 solver has no fixed steps for callback/replace hooks; "
                         "use method='euler'|'heun'|'rk4' or another fixed-grid sampler")  # fmt: skip
    stepper = spec_of(fn).stepper
    correct = spec_of(fn).correct_denoised(options) if spec_of(fn).correct_denoised is not None else None
    takes_budget = stepper is not None and "budget" in inspect.signature(stepper).parameters
    chunk = shape[0] if batch_size is None else int(batch_size)
    parts, nfe = [], 0
    for lo in range(0, shape[0], chunk):
        hi = min(lo + chunk, shape[0])
        gen = generator.subset(lo, hi) if isinstance(generator, SampleNoise) else generator
        if x_init is None:
            x = sde.prior_sampling((hi - lo, *shape[1:]), generator=gen, device=device or "cpu",
                                   dtype=dtype or torch.float32)  # fmt: skip
        else:
            x = x_init[lo:hi].to(device=device or x_init.device, dtype=dtype or x_init.dtype).clone()
        counted = CountedScore(score_fn)
        given = {"generator": gen, "progress": progress, **{k: v for k, v in hooks.items() if v is not None}}
        extra = {k: v for k, v in given.items() if k in params}
        if "rows" in params:
            extra["rows"] = slice(lo, hi)
        if "budget" in params:
            extra["budget"] = evals
        if stepper is not None:  # a fixed-grid sampler: its steps run here, through the one loop with the hooks
            step = stepper(sde, ts, **options, **({"budget": evals} if takes_budget else {}))
            x = run_steps(step, sde, counted, x, ts, gen, progress, callback, replace, slice(lo, hi))
        else:
            x = fn(sde, counted, x, ts, **options, **extra)
        if denoise:
            x = x0_from_score(sde, x, eps, counted(x, sde._time(eps, x)))
            x = x if correct is None else correct(x)
            if replace is not None:
                x = replace(StepInfo(len(ts) - 1, eps, 0.0, x, slice(lo, hi)))
        counted.check()
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(
                "sampling produced NaN or inf although every score was finite: the integration diverged; "
                "try more steps, a smaller snr or a different sampler"
            )
        parts.append(x)
        nfe = max(nfe, counted.nfe)
    if isinstance(generator, SampleNoise):
        generator.draws = gen.draws  # every batch made the same draws; later draws continue the streams
    x = parts[0] if len(parts) == 1 else torch.cat(parts)
    if model is not None and model.data_range is not None:
        warn_if_outside(x, model.data_range, stacklevel=3)  # sample's caller, past torch's no_grad wrapper
    return (x, nfe) if return_nfe else x


def with_data_range(sampler: str | Callable[..., Tensor], options: dict, data_range: Sequence[float] | None) -> dict:
    """``options`` with ``data_range`` (a model's; ``None``: unknown) for a sampler that thresholds into it, unless
    they already set one."""
    if data_range is None or "data_range" not in sampler_options(_resolve(sampler)):
        return options
    return {"data_range": tuple(data_range), **options}


class SamplingDivergenceWarning(UserWarning):
    """Many sampled values lie far outside the model's data range: the sampler most likely diverged."""


DIVERGED_SHARE = 0.01
"""The share of sampled values beyond the widened data range above which :func:`sample` warns."""


def warn_if_outside(x: Tensor, data_range: Sequence[float], stacklevel: int = 2) -> float:
    """Warn (:class:`SamplingDivergenceWarning`) when more than :data:`DIVERGED_SHARE` of the values of ``x`` lie
    beyond ``data_range`` widened by a quarter of its width on each side; return that share (one host sync, once per
    run). ``stacklevel`` as for :func:`warnings.warn`, counted from the caller of this function."""
    lo, hi = range_bounds(data_range)
    share = float(((x < lo) | (x > hi)).float().mean()) if x.numel() else 0.0
    if share > DIVERGED_SHARE:
        message = (f"{share:.1%} of the sampled values lie beyond the data range {tuple(data_range)} by more than a "
                   "quarter of its width: the sampler diverged (typical of a fast solver on a briefly trained model, "
                   "or of too few steps); try thresholding='static' (dpm_solver++, unipc, sde_dpm_solver++), more "
                   "steps, or euler_maruyama")  # fmt: skip
        warnings.warn(message, SamplingDivergenceWarning, stacklevel=stacklevel + 1)
    return share


def _model_defaults(model: ScoreModel, given: object, score_fn: ScoreFn | None, shape: Sequence[int] | None,
                    n: int | None, x_init: Tensor | None, device: torch.device | str | None,
                    sampler: str | Callable[..., Tensor] | None, steps: int | None, eps: float | None,
                    grid: Grid | None, options: dict) -> tuple:  # fmt: skip
    """``sample``'s arguments completed from a score model: its process, the model as the score (or the given
    transform of it), the shape ``(n, *data_shape)``, its device, and its configured sampler, steps, eps and
    options when no sampler is given (options given here override the configured ones)."""
    if x_init is None and shape is None:
        if model.data_shape is None:
            raise ValueError("this ScoreModel does not know its data shape; pass shape=(B, *dims)")
        count = model.sampling.get("n", 64) if n is None else n
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"n must be a positive integer (the number of samples), got {count!r}")
        shape = (count, *model.data_shape)
    elif n is not None:
        raise ValueError("pass n or shape (or x_init), not both")
    if device is None and x_init is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    if sampler is None and model.sampling.get("sampler") is not None:
        sampler = model.sampling["sampler"]
        options = dict(model.sampling.get("options", {})) | options
        fixed = grid is not None and not isinstance(grid, str)  # an explicit grid fixes the steps and the end time
        if steps is None and not fixed and not is_adaptive(sampler, options):
            steps = model.sampling.get("steps")
        if eps is None and not fixed:
            eps = model.sampling.get("eps")
    return model.sde, given if score_fn is None else score_fn, shape, device, sampler, steps, eps, options


def _grid(sde: SDE, fn: Callable[..., Tensor], steps: int | None, eps: float | None, grid: Grid, rho: float | None,
          denoise: bool, adaptive: bool, options: dict) -> tuple[list[float], int | None]:  # fmt: skip
    """The time grid of a run and, for a fast solver, the evaluations its integration may spend."""
    per_step = evals_per_step(fn, options)
    if rho is not None and grid != "karras":
        raise ValueError(f"rho sets the karras grid; it does nothing with grid={grid!r:.40}")
    if not isinstance(grid, str):
        if adaptive:
            raise ValueError("the adaptive solvers pick their own steps; they take no explicit grid")
        if steps is not None:
            raise ValueError("pass either steps or an explicit grid (its length sets the steps), not both")
        ts = check_grid(sde, grid)
        if eps is not None and abs(check_eps(eps, sde.T) - ts[-1]) > 1e-12:
            raise ValueError(f"eps={eps} differs from the explicit grid's end time {ts[-1]}")
        return ts, None if per_step is None else per_step * (len(ts) - 1)
    eps = check_eps(default_eps(sde) if eps is None else eps, sde.T)
    if adaptive:
        if steps is not None:
            fixed = ", or method='euler'|'heun'|'rk4'" if fn is ode else ""
            raise ValueError(f"the {getattr(fn, '__name__', 'adaptive')} sampler picks its own steps; pass "
                             f"rtol/atol{fixed}")  # fmt: skip
        return [sde.T, eps], None
    rho = DEFAULT_RHO if rho is None else rho
    if per_step is None:
        return time_grid(sde, sde.N if steps is None else steps, eps, grid, rho), None
    grid_steps, evals = budget_steps(fn, FAST_DEFAULT_NFE if steps is None else steps, denoise, options)
    return time_grid(sde, grid_steps, eps, grid, rho), evals


def budget_steps(sampler: str | Callable[..., Tensor], budget: int, denoise: bool = True,
                 options: dict | None = None) -> tuple[int, int]:  # fmt: skip
    """``(grid steps, evaluations of the integration)`` of a fast solver with an NFE ``budget``.

    The final denoising step takes one evaluation; a singlestep solver's last step takes the
    remainder; EDM's Heun steps take two each (an odd budget is used whole).
    """
    fn = _resolve(sampler)
    per_step = evals_per_step(fn, options)
    if per_step is None:
        raise ValueError(f"{getattr(fn, '__name__', fn)!r} is not a fast solver with an NFE budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"steps (the NFE budget of this solver) must be a positive integer, got {budget!r:.40}")
    if budget > MAX_STEPS:
        raise ValueError(f"steps (the NFE budget of this solver) must be at most {MAX_STEPS:,}, got {budget:,}")
    evals = budget - (1 if denoise else 0)
    whole = spec_of(fn).whole_steps
    grid_steps = evals // per_step if whole else -(-evals // per_step)
    if grid_steps < 1:
        least = (per_step if whole else 1) + (1 if denoise else 0)
        raise ValueError(f"steps={budget} is below this solver's least NFE budget, {least} (steps counts "
                         "score evaluations here, the final denoising one included)")  # fmt: skip
    return grid_steps, evals


def _check_option_values(fn: Callable[..., Tensor], name: str, options: dict) -> None:
    """The options' types, before any work: a boolean option takes only True/False (``"no"`` is not False), an
    integer option only an integer, a named choice one of the sampler's declared choices (a function where a name is
    expected, a predictor of one's own, passes), a number must be finite and pass the sampler's declared rule."""
    params = inspect.signature(fn).parameters
    rules = spec_of(fn).rules
    for key, value in options.items():
        default, rule, suffix = params[key].default, rules.get(key), f" for sampler {name!r}, got {value!r}"
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{key} must be True or False{suffix}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        integer = number and isinstance(value, int)
        if isinstance(default, float) and not number and value is not None:
            raise ValueError(f"{key} must be a number{suffix}")
        if isinstance(default, int) and not isinstance(default, bool) and not integer:
            raise ValueError(f"{key} {rule.message if rule is not None and rule.message else 'must be an integer'}"
                             f"{suffix}")  # fmt: skip
        if rule is not None and rule.choices is not None and isinstance(value, str) and value not in rule.choices:
            raise ValueError(f"unknown {key} {value!r} for sampler {name!r}; choose one of "
                             f"{', '.join(map(repr, rule.choices))}")  # fmt: skip
        if number and not math.isfinite(value):  # snr=inf would reach the network as an inf state
            raise ValueError(f"{key} {rule.message if rule is not None and rule.message else 'must be finite'}"
                             f"{suffix}")  # fmt: skip
        if (number or isinstance(value, (tuple, list))) and rule is not None and not rule.passes(value):
            raise ValueError(f"{key} {rule.message}{suffix}")


def _check_x_init(x_init: Tensor, shape: Sequence[int] | None) -> None:
    if not isinstance(x_init, Tensor):
        raise TypeError(f"x_init must be a tensor, got {type(x_init).__name__}")
    if shape is not None and tuple(check_shape(shape)) != tuple(x_init.shape):
        raise ValueError(f"x_init has shape {tuple(x_init.shape)} but shape={tuple(shape)} was requested")
    check_shape(x_init.shape)
    if not x_init.is_floating_point():
        raise TypeError(f"x_init must be a floating-point tensor, got {x_init.dtype}")
    if not bool(torch.isfinite(x_init).all()):
        raise ValueError("x_init contains NaN or inf")


def _resolve(sampler: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    if callable(sampler):
        return sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    return SAMPLERS[sampler]


__all__ = [
    "CORRECTORS",
    "GRIDS",
    "PREDICTORS",
    "SAMPLERS",
    "SamplerSpec",
    "StepInfo",
    "adaptive_sde",
    "ald_corrector",
    "ancestral",
    "ancestral_step",
    "budget_steps",
    "ddim",
    "default_eps",
    "default_grid",
    "dpm_solver",
    "dpm_solver_pp",
    "edm_heun",
    "euler_maruyama",
    "euler_maruyama_step",
    "evals_per_step",
    "is_adaptive",
    "langevin_corrector",
    "ode",
    "optimize_grid",
    "pc",
    "probability_flow_ode",
    "reverse_diffusion",
    "reverse_diffusion_step",
    "run_steps",
    "sample",
    "sampler_options",
    "sde_dpm_solver_pp",
    "spec_of",
    "time_grid",
    "unipc",
]
