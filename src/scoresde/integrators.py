r"""ODE integrators in plain torch, on the tensor's own device.

Both the probability-flow sampler and the likelihood integrate a batch of ODEs
:math:`dy/dt = F(t, y)` with these functions. ``F`` is called as ``F(t, y, idx)``:

* ``t``: a Python float (fixed-step methods) or a ``[B']`` tensor of per-sample times;
* ``y``: the ``[B', ...]`` states of the rows being advanced;
* ``idx``: ``None`` when ``y`` is the whole batch, else the ``[B']`` row indices, so
  that ``F`` can look up per-sample side data (e.g. Hutchinson probes).

:func:`fixed_step` runs Euler, Heun or classical RK4 on a given grid.
:func:`dopri5` is an adaptive Dormand-Prince 5(4) solver (the method of scipy's
``RK45``) with either per-sample error control (the default: each sample takes its
own steps, so a sample's computation is its own) or one error norm for the whole
batch (scipy's behaviour on a flattened state). Per-sample control makes a result
independent of the batch up to the rounding of ``f``: exactly where ``f`` works row by
row, to about 1e-13 in float64; in float32 the rounding of a network's batched kernels
(about 1e-7) can flip a step's acceptance, and the result then moves within the
solver's own error (up to 0.03 per pixel on the digits model at ``rtol=1e-5``): use
float64, or a fixed-step method, for results that must not depend on the batching.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._checks import check_options

ODEFunc = Callable[[float | Tensor, Tensor, Tensor | None], Tensor]
FIXED_METHODS = ("euler", "heun", "rk4")
ERROR_NORMS = ("sample", "batch")

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980; Hairer, Norsett & Wanner, Table II.5.2).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))


RTOL_ULPS = 4
"""The smallest relative tolerance of :func:`dopri5`, in units of the state dtype's machine epsilon."""


def min_rtol(dtype: torch.dtype) -> float:
    """The smallest ``rtol`` :func:`dopri5` accepts for states of ``dtype`` (float32: 4.8e-7, float64: 8.9e-16)."""
    return RTOL_ULPS * torch.finfo(dtype).eps


def fixed_step(f: ODEFunc, y: Tensor, ts: Sequence[float], method: str = "euler", progress: bool = False) -> Tensor:
    """Integrate from ``ts[0]`` to ``ts[-1]`` with ``len(ts) - 1`` steps of ``method``.

    Costs per step: 1 evaluation (euler), 2 (heun), 4 (rk4).
    """
    check_options("method", method, FIXED_METHODS)
    for t, s in _progress(list(itertools.pairwise(ts)), progress):
        y = one_step(f, y, t, s, method)
    return y


def one_step(f: ODEFunc, y: Tensor, t: float, s: float, method: str) -> Tensor:
    """One step of Euler, Heun or classical RK4 from ``t`` to ``s`` (``method`` already checked)."""
    h = s - t
    k1 = f(t, y, None)
    if method == "euler":
        return y + h * k1
    if method == "heun":
        k2 = f(s, y + h * k1, None)
        return y + 0.5 * h * (k1 + k2)
    k2 = f(t + h / 2, y + (h / 2) * k1, None)
    k3 = f(t + h / 2, y + (h / 2) * k2, None)
    k4 = f(s, y + h * k3, None)
    return y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


def dopri5(
    f: ODEFunc,
    y0: Tensor,
    t0: float,
    t1: float,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    error_norm: str = "sample",
    max_steps: int = 100_000,
    progress: bool = False,
) -> tuple[Tensor, int]:
    r"""Adaptive Dormand-Prince 5(4) from ``t0`` to ``t1`` (either direction).

    A step is accepted when the RMS of :math:`e_i / (atol + rtol\max(|y_i|, |\hat y_i|))`
    is at most 1, over each sample's entries (``error_norm="sample"``) or over the whole
    batch (``"batch"``). The step size then scales by :math:`0.9\,r^{-1/5}` clipped to
    ``[0.2, 10]``. The first step comes from Hairer's starting-step heuristic.

    Returns:
        ``(y1, n_evals)``: the state at ``t1`` and the number of calls to ``f``.
    """
    check_options("error_norm", error_norm, ERROR_NORMS)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r:.40}")
    least = min_rtol(y0.dtype)
    if rtol < least:
        raise ValueError(f"rtol={rtol:g} is below what {str(y0.dtype).removeprefix('torch.')} resolves (at least "
                         f"{least:.2g}, {RTOL_ULPS} units of its precision): the steps would shrink without end; "
                         "use a larger rtol or float64 data")  # fmt: skip
    per_sample = error_norm == "sample"
    batch = y0.shape[0]
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    tdtype = torch.float32 if y0.device.type == "mps" else torch.float64

    def rms(v: Tensor) -> Tensor:
        if per_sample:
            return v.reshape(v.shape[0], -1).pow(2).mean(1).sqrt()
        return v.pow(2).mean().sqrt().expand(v.shape[0])

    def call(t: Tensor, y: Tensor, idx: Tensor | None) -> Tensor:
        out = f(t.to(y.dtype), y, idx)
        if out.shape != y.shape:
            raise ValueError(f"the ODE function returned shape {tuple(out.shape)} for a state of {tuple(y.shape)}")
        return out

    y = y0.clone()
    t = torch.full((batch,), float(t0), dtype=tdtype, device=y0.device)
    if span == 0.0:
        return y, 0
    k1 = call(t, y, None)
    h = _initial_step(call, t, y, k1, direction, span, rtol, atol, rms)
    n_evals = 2
    h = torch.minimum(h.to(tdtype), torch.full_like(h, span, dtype=tdtype))
    done = torch.zeros(batch, dtype=torch.bool, device=y0.device)
    bar = _bar(span, progress)
    for _ in range(max_steps):
        active = (~done).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        full = active.numel() == batch
        idx = None if full else active
        ta, ya, ha, ka = (t, y, h, k1) if full else (t[active], y[active], h[active], k1[active])
        hb = _as_state(direction * ha, ya)
        ks = [ka]
        for c, a in zip(_C[1:], _A[1:], strict=True):
            y_stage = ya + hb * sum(coef * k for coef, k in zip(a, ks, strict=True) if coef != 0.0)
            ks.append(call(ta + direction * c * ha, y_stage, idx))
        n_evals += 6
        y_new = y_stage  # the 7th stage input is the 5th-order solution (FSAL)
        err = hb * sum(e * k for e, k in zip(_E, ks, strict=True) if e != 0.0)
        scale = atol + rtol * torch.maximum(ya.abs(), y_new.abs())
        ratio = rms(err / scale)
        if not bool(torch.isfinite(ratio).all()):
            raise FloatingPointError("the ODE right-hand side produced NaN or inf during adaptive integration")
        accept = ratio <= 1.0
        remaining = span - (ta - t0) * direction
        finished = accept & (ha >= remaining * (1 - 1e-12))
        t_new = torch.where(accept, ta + direction * ha, ta)
        t_new = torch.where(finished, torch.full_like(t_new, float(t1)), t_new)
        factor = torch.clamp(0.9 * ratio.to(tdtype).clamp_min(1e-30) ** -0.2, 0.2, 10.0)
        factor = torch.where(accept, factor, factor.clamp_max(1.0))
        h_new = torch.minimum(ha * factor, (span - (t_new - t0) * direction).clamp_min(1e-300))
        acc = _as_state(accept, ya)
        y_upd = torch.where(acc, y_new, ya)
        k_upd = torch.where(acc, ks[-1], ka)
        if full:
            t, y, h, k1, done = t_new, y_upd, h_new, k_upd, finished
        else:
            t[active], y[active], h[active], k1[active] = t_new, y_upd, h_new, k_upd
            done[active] = finished
        if bar is not None:
            bar.update(max(0.0, span - float((span - (t - t0) * direction).max()) - bar.n))
        if bool((h_new[~finished] < 1e-14 * max(1.0, abs(t1))).any()):
            raise FloatingPointError("adaptive step size underflow: the ODE is too stiff for these tolerances")
    else:
        raise RuntimeError(f"dopri5 did not reach t1={t1} within max_steps={max_steps} steps")
    if bar is not None:
        bar.close()
    return y, n_evals


def _initial_step(
    call, t: Tensor, y: Tensor, f0: Tensor, direction: float, span: float, rtol: float, atol: float, rms
) -> Tensor:
    """Hairer, Norsett & Wanner's starting step size (one extra evaluation of ``f``)."""
    scale = atol + rtol * y.abs()
    d0, d1 = rms(y / scale), rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-30))
    h0 = h0.clamp_max(span)
    y1 = y + _as_state(direction * h0, y) * f0
    f1 = call(t + direction * h0.to(t.dtype), y1, None)
    d2 = rms((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / dmax.clamp_min(1e-30)) ** 0.2)
    return torch.minimum(100 * h0, h1)


def _as_state(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.dtype if v.dtype != torch.bool else torch.bool).reshape(-1, *([1] * (like.ndim - 1)))


def _progress(items: list, enabled: bool, desc: str = "sampling"):
    """``items``, under a tqdm progress bar when ``enabled``."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="step", leave=False)


def _bar(span: float, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=span, desc="ode", unit="t", leave=False, bar_format="{l_bar}{bar}| t {n:.3f}/{total:.3f}")
