r"""Linear inverse problems with one unconditional score model: inpainting, colorization and
:math:`y = A x + n`, :math:`n \sim N(0, \sigma_y^2 I)` (paper section 5 and appendix I.4).

Every method plugs into :func:`scoresde.sample` through a hook or a score wrapper, so it
works with every fixed-grid sampler (and every sampler added later); none copies a loop.

* ``"projection"`` (the paper's replacement method, noiseless only): after every step to
  time ``s``, the state is projected onto the measurements forward-noised to ``s``,
  :math:`x \leftarrow x + A^+(y_s - Ax)` with :math:`y_s = \alpha(s) y + \sigma(s) A z`
  (fresh ``z``: a draw of :math:`p_s(A x_s \mid A x_0 = y)`). The start ``x_T`` is
  projected the same way, and after the final denoising step :math:`Ax = y` is imposed
  exactly. For inpainting this keeps the known pixels; for colorization it replaces the
  grey coordinate of the paper's orthogonal colour decoupling.
* ``"dps"`` (diffusion posterior sampling, Chung et al. 2023; noisy measurements): the
  score plus :math:`w\,\nabla_x \log N(y;\ A\hat x_0(x),\ \sigma_y^2 I)`, the gradient
  taken through the denoiser :math:`\hat x_0(x) = (x + \sigma^2 s_\theta(x,t))/\alpha`.
* ``"pigdm"`` (pseudo-inverse guided diffusion, Song et al. 2023; noiseless or noisy): the
  score plus :math:`w\,(\partial\hat x_0/\partial x)^\top A^\top (r_t^2 AA^\top + \sigma_y^2 I)^{-1}(y - A\hat x_0)`
  with :math:`r_t^2 = v\,\sigma^2/(\alpha^2 + v\sigma^2)`, the posterior variance of
  :math:`x_0` given :math:`x_t` for data of variance ``v`` (``data_var``, default 1).

* ``"ddnm"`` (range-null-space decomposition, Wang et al. 2023; noiseless or noisy): no
  gradient through the model. Tweedie's estimate is corrected in the range of :math:`A^\top`,
  :math:`\hat x_0' = \hat x_0 + A^\top (AA^\top + \lambda_t I)^{-1}(y - A\hat x_0)` with
  :math:`\lambda_t = \sigma_y^2 / r_t^2` (0 when noiseless: :math:`\hat x_0 + A^+(y - A\hat x_0)`),
  and the score is the one of that estimate, :math:`(\alpha\hat x_0' - x)/\sigma^2`. It is ΠGDM
  with the Jacobian :math:`\partial\hat x_0/\partial x` of Gaussian data of variance ``v``
  in place of the network's, so it is exact for such data and immune to the network's
  Jacobian errors, which :math:`1/\alpha(t)` amplifies near ``T``.

``dps`` and ``pigdm`` differentiate through the score model: each evaluation is one
forward and one backward pass, counted as one NFE. With noiseless measurements every
method ends with the exact projection :math:`x \leftarrow x + A^+(y - Ax)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._checks import check_in_range, check_number, check_shape, expand_to, randn_like
from .devices import api_device
from .guidance import MAX_SCALE
from .noise import SampleNoise
from .operators import ChannelMean, LinearOperator, MaskOperator, as_operator
from .sampling import sample
from .sampling.loop import StepInfo
from .score import takes_model, x0_from_score
from .sde import SDE, ScoreFn

METHODS = ("projection", "dps", "pigdm", "ddnm")
_RESERVED = ("x_init", "replace", "shape")


def projection_hook(
    sde: SDE, op: LinearOperator, y: Tensor, generator: torch.Generator | SampleNoise | None
) -> Callable[[StepInfo], Tensor]:
    r"""``replace`` hook of the projection method: :math:`x \leftarrow x + A^+(y_s - Ax)` after each step to
    ``s``, with :math:`y_s = \alpha(s) y + \sigma(s) A z`, and exactly :math:`Ax = y` at ``s = 0``."""

    def replace(info: StepInfo) -> Tensor:
        return op.project(info.x, noised_measurement(sde, op, y, info.x, info.s, generator))

    return replace


def noised_measurement(
    sde: SDE, op: LinearOperator, y: Tensor, x: Tensor, s: float, generator: torch.Generator | SampleNoise | None
) -> Tensor:
    r"""A draw of :math:`A x_s` given :math:`A x_0 = y`: :math:`\alpha(s) y + \sigma(s) A z` (``y`` at ``s = 0``)."""
    if s == 0.0:
        return y
    alpha, sigma, _ = sde.schedule.coeffs(s)  # host floats: no device sync inside the loop
    return alpha * y + sigma * op.forward(randn_like(x, generator))


def likelihood_guided(
    sde: SDE,
    score_fn: ScoreFn,
    op: LinearOperator,
    y: Tensor,
    noise_std: float,
    scale: float = 1.0,
    data_var: float | None = None,
) -> ScoreFn:
    r"""The score plus :math:`w\,\nabla_x \log N(y;\ A\hat x_0(x),\ r_t^2 AA^\top + \sigma_y^2 I)`.

    ``data_var=None`` gives DPS (:math:`r_t = 0`; needs :math:`\sigma_y > 0`); a number ``v``
    gives ΠGDM with :math:`r_t^2 = v\sigma^2/(\alpha^2 + v\sigma^2)`. The gradient is one
    vector-Jacobian product through the denoiser, computed with autograd even though the
    samplers run without it.
    """
    noise_var = float(noise_std) ** 2

    def guided(x: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            score = score_fn(xg, t)
            if not score.requires_grad:
                raise ValueError(f"the score function has no autograd path to x; {_AUTOGRAD_HINT}")
            pred = op.forward(x0_from_score(sde, xg, t, score))
            if data_var is None:
                weight = (y - pred).detach() / noise_var
            else:
                alpha, sigma = sde.marginal_coeffs(t, x)
                r2 = data_var * sigma**2 / (alpha**2 + data_var * sigma**2)
                weight = op.gram_solve((y - pred).detach(), r2, noise_var)
            (grad,) = torch.autograd.grad((pred * weight).sum(), xg)
        return score.detach() + scale * grad

    return guided


def null_space_corrected(
    sde: SDE, score_fn: ScoreFn, op: LinearOperator, y: Tensor, noise_std: float, data_var: float = 1.0
) -> ScoreFn:
    r"""DDNM: the score :math:`(\alpha \hat x_0' - x)/\sigma^2` of the corrected estimate
    :math:`\hat x_0' = \hat x_0 + A^\top (AA^\top + \lambda_t I)^{-1}(y - A\hat x_0)`,
    :math:`\lambda_t = \sigma_y^2 (\alpha^2 v + \sigma^2)/(v \sigma^2)` (the ΠGDM term with a Gaussian Jacobian)."""
    noise_var = float(noise_std) ** 2

    def corrected(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = sde.marginal_coeffs(t, x)
        lam = noise_var * (alpha**2 * data_var + sigma**2) / (data_var * sigma**2)
        a, s = expand_to(alpha, x), expand_to(sigma, x)
        x0 = (x + s**2 * score_fn(x, t)) / a  # Tweedie
        x0 = x0 + op.transpose(op.gram_solve(y - op.forward(x0), 1.0, lam)).reshape(x0.shape)
        return (a * x0 - x) / s**2

    return corrected


_AUTOGRAD_HINT = "dps and pigdm differentiate through it (use method='projection' for a score without gradients)"


@takes_model
def solve_inverse(
    sde: SDE,
    score_fn: ScoreFn,
    y: Tensor,
    A: Tensor | LinearOperator | tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]],
    noise_std: float = 0.0,
    method: str = "projection",
    *,
    shape: Sequence[int] | None = None,
    scale: float = 1.0,
    data_var: float = 1.0,
    sampler: str | Callable[..., Tensor] = "pc",
    generator: torch.Generator | SampleNoise | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    return_nfe: bool = False,
    sampler_options: Mapping[str, Any] | None = None,
    **options,
) -> Tensor | tuple[Tensor, int]:
    r"""Sample :math:`x \sim p(x \mid y)` for measurements :math:`y = Ax + n`, one sample per row of ``y``.

    Args:
        sde, score_fn: the forward SDE and the unconditional score model.
        y: ``[B, *measurement_shape]`` measurements (``[B, m]`` for a matrix ``A``).
        A: an ``[m, d]`` matrix acting on the flattened sample, a ``(forward, transpose)``
            pair of functions on batches, or a :class:`scoresde.operators.LinearOperator`.
        noise_std: :math:`\sigma_y`, the measurement noise (0: noiseless).
        method: ``"projection"`` (noiseless), ``"dps"`` (noisy), ``"pigdm"`` or ``"ddnm"`` (either); see the
            module docstring.
        shape: the shape of one sample (default ``(d,)`` for a matrix ``A``; required for a pair).
        scale: the guidance weight :math:`w` of ``dps`` and ``pigdm``.
        data_var: the data variance ``v`` in the :math:`r_t^2` of ``pigdm`` and ``ddnm``.
        sampler, generator, batch_size, device, dtype, return_nfe and ``**options``: as for
            :func:`scoresde.sample` (``steps``, ``grid``, ``eps``, ``denoise``, ``progress``,
            ``callback`` and the sampler's own options).
        sampler_options: sampler options whose names clash with this function's own
            (``sampler_options={"method": "heun"}`` for ``sampler="ode"``).

    Returns:
        ``[B, *shape]`` samples (and the NFE per sample path when ``return_nfe``).
    """
    op = as_operator(A)
    y = _check_measurements(y, "y")
    if shape is None:
        if not hasattr(op, "matrix"):
            raise ValueError("pass shape= (the shape of one sample) when A is not a matrix")
        shape = (op.matrix.shape[1],)
    data_shape = check_shape((1, *shape))[1:]
    op.check(data_shape, y)
    noise_std = check_number("noise_std", noise_std, minimum=0.0)
    scale = check_number("scale", scale, minimum=0.0, maximum=MAX_SCALE)
    data_var = check_number("data_var", data_var, minimum=0.0, strict=True)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(map(repr, METHODS))}")
    if method == "projection" and noise_std > 0:
        raise ValueError("the projection method needs noiseless measurements (noise_std=0); use 'dps' or 'pigdm'")
    if method == "dps" and noise_std == 0:
        raise ValueError("dps needs noisy measurements (noise_std > 0); use 'projection' or 'pigdm' when noiseless")
    if noise_std == 0:
        _check_consistent(op, y)
    if sampler_options is not None:
        clash = sorted(set(options) & set(sampler_options))
        if clash:
            raise ValueError(f"{clash} given both as keywords and in sampler_options")
        options = {**options, **dict(sampler_options)}
    reserved = sorted(set(options) & set(_RESERVED))
    if reserved:
        raise ValueError(f"solve_inverse sets {reserved} itself")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(generator, SampleNoise) and len(generator) != y.shape[0]:
        raise ValueError(f"the SampleNoise has {len(generator)} streams for {y.shape[0]} measurements")
    dtype = dtype or y.dtype
    device = api_device(device) or y.device

    total = y.shape[0]
    chunk = total if batch_size is None else int(batch_size)
    parts, nfe, gen = [], 0, generator
    for lo in range(0, total, chunk):
        hi = min(lo + chunk, total)
        gen = generator.subset(lo, hi) if isinstance(generator, SampleNoise) else generator
        yc = y[lo:hi].to(device=device, dtype=dtype)
        x = sde.prior_sampling((hi - lo, *data_shape), generator=gen, device=device, dtype=dtype)
        guided, hook = score_fn, None
        if method == "projection":
            x = op.project(x, noised_measurement(sde, op, yc, x, sde.T, gen))
            hook = projection_hook(sde, op, yc, gen)
        else:
            if method == "ddnm":
                guided = null_space_corrected(sde, score_fn, op, yc, noise_std, data_var)
            else:
                guided = likelihood_guided(
                    sde, score_fn, op, yc, noise_std, scale, None if method == "dps" else data_var
                )
            if noise_std == 0:
                hook = _final_projection(op, yc)
        out, n = sample(sde, guided, None, sampler=sampler, x_init=x, generator=gen, replace=hook, return_nfe=True,
                        **options)  # fmt: skip
        parts.append(out)
        nfe = max(nfe, n)
    if isinstance(generator, SampleNoise):
        generator.draws = gen.draws
    x = parts[0] if len(parts) == 1 else torch.cat(parts)
    return (x, nfe) if return_nfe else x


def _final_projection(op: LinearOperator, y: Tensor) -> Callable[[StepInfo], Tensor]:
    def replace(info: StepInfo) -> Tensor:
        return op.project(info.x, y) if info.s == 0.0 else info.x

    return replace


@takes_model
def inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    x_known: Tensor,
    mask: Tensor,
    method: str = "projection",
    data_range: tuple[float, float] | None = None,
    **kwargs,
) -> Tensor | tuple[Tensor, int]:
    """Fill in the unknown values of ``x_known`` (``[B, ...]``; ``mask`` 1 = known, broadcastable to it).

    The known values are forward-noised consistently from ``x_T`` on and kept exactly in
    the result, which is denoised everywhere. Takes the arguments of :func:`solve_inverse`
    (``method``, ``sampler``, ``steps``, ``generator``, ...). ``data_range`` (given by a
    :class:`scoresde.ScoreModel`; ``None``: unchecked) refuses values that are not model-space data.
    """
    x_known = check_in_range(_check_measurements(x_known, "x_known"), data_range, "x_known")
    op = MaskOperator(mask)
    return solve_inverse(sde, score_fn, x_known, op, method=method, shape=tuple(x_known.shape[1:]), **kwargs)


@takes_model
def colorize(
    sde: SDE,
    score_fn: ScoreFn,
    gray: Tensor,
    channels: int = 3,
    method: str = "projection",
    data_range: tuple[float, float] | None = None,
    **kwargs,
) -> Tensor | tuple[Tensor, int]:
    """Colour images from grey levels ``gray`` (``[B, 1, H, W]``, the channel mean in model space).

    The result ``[B, channels, H, W]`` has exactly the given channel mean. Takes the
    arguments of :func:`solve_inverse`; ``data_range`` as for :func:`inpaint`.
    """
    gray = check_in_range(_check_measurements(gray, "gray"), data_range, "gray")
    op = ChannelMean(channels)
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"gray must have shape [B, 1, H, W], got {tuple(gray.shape)}")
    return solve_inverse(sde, score_fn, gray, op, method=method, shape=(op.channels, *gray.shape[2:]), **kwargs)


# A noiseless y is refused when its least-squares solution x = A^+ y misses it by more than this share of |y|.
CONSISTENCY_RTOL = 1e-2


def _check_consistent(op: LinearOperator, y: Tensor) -> None:
    r"""Raise unless noiseless measurements can be met: :math:`\|AA^+y - y\| \le` ``CONSISTENCY_RTOL`` :math:`\|y\|`
    for every row (one pseudo-inverse; a ``y`` outside the range of ``A`` has no sample with :math:`Ax = y`)."""
    with torch.no_grad():
        miss = op.miss(y)
        size = y.reshape(y.shape[0], -1).norm(dim=1)
        worst = int((miss - CONSISTENCY_RTOL * size).argmax())
        if bool(miss[worst] > CONSISTENCY_RTOL * size[worst]):
            raise ValueError(f"no x satisfies A x = y for measurement row {worst} (|A A^+ y - y| = "
                             f"{float(miss[worst]):.3g} of |y| = {float(size[worst]):.3g}): noiseless measurements "
                             "must lie in the range of A; pass noise_std > 0 for measurements with noise")  # fmt: skip


def _check_measurements(y: object, name: str) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {y.dtype}")
    if y.ndim < 2 or y.shape[0] < 1:
        raise ValueError(f"{name} must be a batch [B, ...] with one row per sample, got shape {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return y
