r"""Linear measurement operators :math:`y = A x` for inverse problems.

A sample ``x`` has shape ``[B, *data_shape]``; an operator maps it to measurements ``y``
of shape ``[B, *measurement_shape]`` and offers what the inverse-problem solvers of
:mod:`scoresde.inverse` need and nothing more:

* ``forward(x)`` = :math:`A x` and ``transpose(y)`` = :math:`A^\top y`;
* ``gram_solve(v, a, b)`` = :math:`(a\,AA^\top + b I)^{-1} v` (``a``, ``b`` floats or
  ``[B]`` tensors, one value per sample), the
  solve of the likelihood :math:`N(y; A\hat x_0, r^2 AA^\top + \sigma_y^2 I)`; with
  ``a = 1, b = 0`` on a rank-deficient :math:`AA^\top` it is the pseudo-inverse;
* ``pinv(y)`` = :math:`A^+ y = A^\top (AA^\top)^{-1} y`, and ``project(x, y)`` = the point
  :math:`x + A^+(y - Ax)` nearest to ``x`` with :math:`Ax = y`.

Four kinds: a dense ``[m, d]`` matrix acting on the flattened sample
(:class:`MatrixOperator`), a pair of functions (:class:`FunctionOperator`, solves by
conjugate gradients with a fixed number of iterations: no host sync), a 0/1 mask
(:class:`MaskOperator`, inpainting, kept exactly) and the channel mean
(:class:`ChannelMean`, colorization).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._checks import check_count

Coef = float | Tensor


def per_sample(c: Coef, like: Tensor) -> Coef:
    """A float as is; a ``[B]`` tensor reshaped to broadcast against ``like`` (``[B, ...]``)."""
    return c.reshape(-1, *([1] * (like.ndim - 1))) if isinstance(c, Tensor) else c


class LinearOperator:
    """Base class: subclasses implement ``forward``, ``transpose`` and ``gram_solve``."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def transpose(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def gram_solve(self, v: Tensor, a: Coef, b: Coef) -> Tensor:
        raise NotImplementedError

    def pinv(self, y: Tensor) -> Tensor:
        r""":math:`A^+ y = A^\top (AA^\top)^{+} y`."""
        return self.transpose(self.gram_solve(y, 1.0, 0.0))

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        r"""The point :math:`x + A^+(y - Ax)` nearest to ``x`` among those with :math:`Ax = y`."""
        return x + self.pinv(y - self.forward(x))

    def miss(self, y: Tensor) -> Tensor:
        r"""Per row, how far noiseless measurements ``y`` lie from the range of ``A``: :math:`\|AA^+y - y\|` (0 when
        some ``x`` has :math:`Ax = y`)."""
        return (self.forward(self.pinv(y)) - y).reshape(y.shape[0], -1).norm(dim=1)

    def check(self, data_shape: Sequence[int], y: Tensor) -> None:
        """Raise a clear error if ``y`` is not a batch of measurements of samples shaped ``data_shape``."""
        probe = torch.zeros((1, *data_shape), dtype=y.dtype, device=y.device)
        try:
            out = self.forward(probe)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            raise ValueError(f"the operator does not accept samples of shape {tuple(data_shape)}: {err}") from None
        if not isinstance(out, Tensor) or tuple(out.shape[1:]) != tuple(y.shape[1:]):
            got = tuple(out.shape[1:]) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"y has measurements of shape {tuple(y.shape[1:])}, A x gives {got}")
        back = self.transpose(out)
        if not isinstance(back, Tensor) or tuple(back.shape[1:]) != tuple(data_shape):
            got = tuple(back.shape[1:]) if isinstance(back, Tensor) else type(back).__name__
            raise ValueError(f"the transpose must map measurements back to shape {tuple(data_shape)}, got {got}")


class MatrixOperator(LinearOperator):
    r"""A dense ``[m, d]`` matrix acting on the flattened sample: ``y [B, m]``.

    :math:`AA^\top = U \Lambda U^\top` is decomposed once (float64), so every solve is
    :math:`U \operatorname{diag}(1/(a\lambda + b)) U^\top v`, with zero where
    :math:`a\lambda + b` vanishes (a rank-deficient ``A``: the pseudo-inverse).
    """

    def __init__(self, matrix: Tensor, rcond: float = 1e-10) -> None:
        if not isinstance(matrix, Tensor) or matrix.ndim != 2 or not matrix.is_floating_point():
            raise ValueError("A must be a floating-point [m, d] matrix or a (forward, transpose) pair of functions")
        if not bool(torch.isfinite(matrix).all()):
            raise ValueError("A contains NaN or inf")
        self.matrix = matrix.detach()
        a64 = self.matrix.to(torch.float64)
        evals, evecs = torch.linalg.eigh(a64 @ a64.T)
        self._evals = evals.clamp_min(0.0)
        self._evecs = evecs
        self.rcond = rcond
        self._top = float(self._evals.max()) if evals.numel() else 0.0
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}

    def _on(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache and self._top > torch.finfo(like.dtype).max:
            raise ValueError(f"A's entries are too large for {like.dtype} (A A^T reaches {self._top:.3g}): scale A and "
                             "y down together, or solve in float64")  # fmt: skip
        if key not in self._cache:
            self._cache[key] = tuple(v.to(device=like.device, dtype=like.dtype)
                                     for v in (self.matrix, self._evals, self._evecs))  # fmt: skip
        return self._cache[key]

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self._on(x)[0].T

    def transpose(self, y: Tensor) -> Tensor:
        return y @ self._on(y)[0]

    def gram_solve(self, v: Tensor, a: Coef, b: Coef) -> Tensor:
        _, evals, evecs = self._on(v)
        a, b = per_sample(a, v), per_sample(b, v)
        denom = a * evals + b
        tol = self.rcond * (a * self._top + b)
        inv = torch.where(denom > tol, 1.0 / denom.clamp_min(1e-300), torch.zeros_like(denom))
        return ((v @ evecs) * inv) @ evecs.T

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        return (flat + self.pinv(y - self.forward(x))).reshape(x.shape)

    def miss(self, y: Tensor) -> Tensor:
        """As :meth:`LinearOperator.miss`, in float64 (``AA^T`` of large entries overflows float32)."""
        return super().miss(y.double()).to(y.dtype)

    def check(self, data_shape: Sequence[int], y: Tensor) -> None:
        d = math.prod(data_shape)
        if self.matrix.shape[1] != d:
            raise ValueError(f"A has {self.matrix.shape[1]} columns for samples of {d} values {tuple(data_shape)}")
        if y.ndim != 2 or y.shape[1] != self.matrix.shape[0]:
            raise ValueError(f"y must have shape [B, m={self.matrix.shape[0]}] for this A, got {tuple(y.shape)}")


class FunctionOperator(LinearOperator):
    r"""``A`` given as ``(forward, transpose)`` functions on batches.

    Solves with :math:`aAA^\top + bI` run ``iterations`` steps of conjugate gradients per
    sample (a fixed count: no data-dependent stopping, so no host-device sync).
    """

    def __init__(
        self, forward: Callable[[Tensor], Tensor], transpose: Callable[[Tensor], Tensor], iterations: int = 50
    ) -> None:
        if not (callable(forward) and callable(transpose)):
            raise TypeError("A as a pair must be two callables (forward, transpose)")
        if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        self._forward, self._transpose, self.iterations = forward, transpose, int(iterations)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x)

    def transpose(self, y: Tensor) -> Tensor:
        return self._transpose(y)

    def gram_solve(self, v: Tensor, a: Coef, b: Coef) -> Tensor:
        a, b = per_sample(a, v), per_sample(b, v)

        def gram(u: Tensor) -> Tensor:
            return a * self._forward(self._transpose(u)) + b * u

        def dot(p: Tensor, q: Tensor) -> Tensor:
            return (p * q).reshape(p.shape[0], -1).sum(1).reshape(-1, *([1] * (p.ndim - 1)))

        tiny = torch.finfo(v.dtype).tiny
        u = torch.zeros_like(v)
        r = v.clone()
        p = r.clone()
        rr = dot(r, r)
        for _ in range(self.iterations):
            gp = gram(p)
            step = rr / dot(p, gp).clamp_min(tiny)
            u = u + step * p
            r = r - step * gp
            rr_new = dot(r, r)
            p = r + (rr_new / rr.clamp_min(tiny)) * p
            rr = rr_new
        return u


class MaskOperator(LinearOperator):
    """Inpainting: ``mask`` (1 = known) broadcast over the batch; measurements have the data's shape.

    ``project`` puts the measured values in place exactly (``torch.where``), leaving the rest.
    """

    def __init__(self, mask: Tensor) -> None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
        values = mask.detach()
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError("mask must hold only 0 (unknown) and 1 (known)")
        self.known = values.bool()

    def _mask(self, like: Tensor) -> Tensor:
        return self.known.to(like.device).expand_as(like)

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(self._mask(x), x, torch.zeros_like(x))

    transpose = forward

    def gram_solve(self, v: Tensor, a: Coef, b: Coef) -> Tensor:
        known = self._mask(v)
        a, b = per_sample(a, v), per_sample(b, v)
        denom = torch.where(known, a + b + torch.zeros_like(v), b + torch.zeros_like(v))
        inv = torch.where(denom > 0, 1.0 / denom.clamp_min(1e-300), torch.zeros_like(v))
        return v * inv

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.where(self._mask(x), y.to(x.dtype), x)

    def miss(self, y: Tensor) -> Tensor:
        """Zero: ``y`` holds the known values where the mask is 1 and is ignored elsewhere, so any ``y`` is met."""
        return torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)

    def check(self, data_shape: Sequence[int], y: Tensor) -> None:
        if tuple(y.shape[1:]) != tuple(data_shape):
            raise ValueError(f"x_known has samples of shape {tuple(y.shape[1:])}, expected {tuple(data_shape)}")
        if self.known.ndim > y.ndim:
            raise ValueError(f"mask of shape {tuple(self.known.shape)} has more dimensions than x_known "
                             f"{tuple(y.shape)}")  # fmt: skip
        try:
            torch.broadcast_shapes(tuple(self.known.shape), tuple(y.shape))
        except RuntimeError:
            shapes = f"{tuple(self.known.shape)} does not broadcast to {tuple(y.shape)}"
            raise ValueError(f"mask of shape {shapes}") from None
        if self.known.ndim == len(y.shape) and self.known.shape[0] not in (1, y.shape[0]):
            raise ValueError(f"mask has {self.known.shape[0]} rows for {y.shape[0]} samples")


class ChannelMean(LinearOperator):
    r"""Colorization: the mean over the channels of ``[B, C, H, W]`` images, ``y [B, 1, H, W]``.

    :math:`AA^\top = I/C`, so :math:`A^+ y` copies ``y`` into every channel and
    ``project`` sets the channel mean to ``y`` keeping the two colour coordinates orthogonal
    to it: the paper's orthogonal colour decoupling, where the grey coordinate
    :math:`(r+g+b)/\sqrt 3` is replaced and the others are left to the model.
    """

    def __init__(self, channels: int = 3) -> None:
        self.channels = check_count("channels", channels, 2)

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=1, keepdim=True)

    def transpose(self, y: Tensor) -> Tensor:
        return (y / self.channels).expand(y.shape[0], self.channels, *y.shape[2:])

    def gram_solve(self, v: Tensor, a: Coef, b: Coef) -> Tensor:
        a, b = per_sample(a, v), per_sample(b, v)
        return v / (a / self.channels + b)

    def check(self, data_shape: Sequence[int], y: Tensor) -> None:
        if y.ndim != 4 or y.shape[1] != 1:
            raise ValueError(f"gray must have shape [B, 1, H, W], got {tuple(y.shape)}")


def as_operator(A: Tensor | LinearOperator | tuple[Callable, Callable]) -> LinearOperator:
    """An ``[m, d]`` matrix, a ``(forward, transpose)`` pair or an operator, as a :class:`LinearOperator`."""
    if isinstance(A, LinearOperator):
        return A
    if isinstance(A, Tensor):
        return MatrixOperator(A)
    if isinstance(A, (tuple, list)) and len(A) == 2:
        return FunctionOperator(*A)
    kind = type(A).__name__
    raise TypeError(f"A must be an [m, d] matrix, a (forward, transpose) pair or a LinearOperator, got {kind}")
