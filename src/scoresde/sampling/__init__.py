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
============================  =====================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._checks import check_eps, check_shape
from ..score import CountedScore, x0_from_score
from ..sde import SDE, VESDE, ScoreFn
from .grids import GRIDS, time_grid
from .ode_samplers import ddim, ode, probability_flow_ode
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

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "pc": pc,
    "ode": ode,
    "ddim": ddim,
}
_COMMON = ("generator", "progress")


def default_eps(sde: SDE) -> float:
    """The paper's sampling end time: 1e-5 for VE, 1e-3 otherwise (VP, sub-VP)."""
    return 1e-5 if isinstance(sde, VESDE) else 1e-3


def sampler_options(sampler: str | Callable[..., Tensor]) -> tuple[str, ...]:
    """Names of the extra keyword options a sampler accepts."""
    fn = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _COMMON)


@torch.no_grad()
def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int] | None,
    sampler: str | Callable[..., Tensor] = "pc",
    steps: int | None = None,
    eps: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_init: Tensor | None = None,
    denoise: bool = True,
    progress: bool = False,
    return_nfe: bool = False,
    grid: str = "uniform",
    **options,
) -> Tensor | tuple[Tensor, int]:
    """Draw samples by integrating the reverse-time SDE or ODE from ``T`` to ``eps``.

    Args:
        sde: the forward SDE.
        score_fn: ``s(x, t)`` approximating the score of the perturbed data.
        shape: ``(B, *data_dims)``; may be ``None`` when ``x_init`` is given.
        sampler: a name from :data:`SAMPLERS` or a function with the same signature.
        steps: number of grid steps (default ``sde.N``). The adaptive ``ode`` method
            ``rk45`` chooses its own steps and rejects this argument.
        eps: end time (default :func:`default_eps`: 1e-5 for VE, 1e-3 otherwise).
        generator: a ``torch.Generator``; the same seed gives the same samples.
        device, dtype: where to sample (default: ``x_init``'s, else CPU float32).
        x_init: start from this ``x_T`` instead of a prior draw (e.g. an ODE latent).
        denoise: end with one Tweedie step :math:`x_0 = (x + \\sigma^2 s)/\\alpha` at ``eps``
            (one more score evaluation), removing the noise left at ``eps``.
        progress: show a tqdm progress bar.
        return_nfe: also return the number of score evaluations.
        grid: the time grid, one of :data:`GRIDS`.
        **options: sampler options, e.g. ``predictor``, ``corrector``, ``snr``,
            ``corrector_steps`` for ``pc``; ``method``, ``rtol``, ``atol`` for ``ode``;
            ``eta`` for ``ddim``; ``probability_flow`` for the SDE predictors.

    Returns:
        samples of ``shape`` (and the NFE when ``return_nfe``).
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    fn = _resolve(sampler)
    allowed = sampler_options(fn)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        name = sampler if isinstance(sampler, str) else getattr(sampler, "__name__", "sampler")
        raise ValueError(f"unknown option(s) {unknown} for sampler {name!r}; it accepts {list(allowed)}")
    eps = check_eps(default_eps(sde) if eps is None else eps, sde.T)
    adaptive = fn is ode and options.get("method", "rk45") == "rk45"
    if adaptive and steps is not None:
        raise ValueError(
            "the adaptive rk45 ODE solver picks its own steps; pass rtol/atol, or method='euler'|'heun'|'rk4'"
        )
    ts = [sde.T, eps] if adaptive else time_grid(sde, sde.N if steps is None else steps, eps, grid)

    x = _initial_state(sde, shape, x_init, generator, device, dtype)
    counted = CountedScore(score_fn)
    params = inspect.signature(fn).parameters
    extra = {k: v for k, v in (("generator", generator), ("progress", progress)) if k in params}
    x = fn(sde, counted, x, ts, **options, **extra)
    if denoise:
        x = x0_from_score(sde, x, eps, counted(x, sde._time(eps, x)))
    counted.check()
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            "sampling produced NaN or inf although every score was finite: the integration diverged; "
            "try more steps, a smaller snr or a different sampler"
        )
    return (x, counted.nfe) if return_nfe else x


def _resolve(sampler: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    if callable(sampler):
        return sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    return SAMPLERS[sampler]


def _initial_state(
    sde: SDE,
    shape: Sequence[int] | None,
    x_init: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    if x_init is None:
        if shape is None:
            raise ValueError("pass a sample shape (B, *dims) or x_init")
        shape = check_shape(shape)
        return sde.prior_sampling(shape, generator=generator, device=device or "cpu", dtype=dtype or torch.float32)
    if not isinstance(x_init, Tensor):
        raise TypeError(f"x_init must be a tensor, got {type(x_init).__name__}")
    if shape is not None and tuple(check_shape(shape)) != tuple(x_init.shape):
        raise ValueError(f"x_init has shape {tuple(x_init.shape)} but shape={tuple(shape)} was requested")
    check_shape(x_init.shape)
    if not bool(torch.isfinite(x_init).all()):
        raise ValueError("x_init contains NaN or inf")
    return x_init.to(device=device or x_init.device, dtype=dtype or x_init.dtype).clone()


__all__ = [
    "CORRECTORS",
    "GRIDS",
    "PREDICTORS",
    "SAMPLERS",
    "ald_corrector",
    "ancestral",
    "ancestral_step",
    "ddim",
    "default_eps",
    "euler_maruyama",
    "euler_maruyama_step",
    "langevin_corrector",
    "ode",
    "pc",
    "probability_flow_ode",
    "reverse_diffusion",
    "reverse_diffusion_step",
    "sample",
    "sampler_options",
    "time_grid",
]
