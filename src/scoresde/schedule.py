r"""The schedule view of an SDE: everything a grid or a fast solver needs from the kernel.

Every SDE here has a Gaussian kernel :math:`p_{0t}(x_t | x_0) = N(\alpha(t) x_0, \sigma(t)^2 I)`.
Exponential-integrator solvers (DDIM, DPM-Solver, UniPC), EDM's sampler and the time grids
need only

* :math:`\alpha(t)`, :math:`\sigma(t)` and the half log signal-to-noise ratio
  :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)` (decreasing in ``t``);
* the inverses :math:`t(\lambda)` and :math:`t(\sigma)`.

:class:`Schedule` gives them for any :class:`~scoresde.sde.SDE` (``sde.schedule``), so one
solver serves VE, VP, sub-VP and a user's SDE. Each method takes a Python number (and
returns a float, computed in float64 on the host: what the sampler loops use, so they
never read a device tensor) or a tensor of any shape (and returns a tensor of the same
shape, dtype and device). The inverses use the SDE's closed forms
(:meth:`SDE.t_from_log_snr`, :meth:`SDE.t_from_sigma`: VP, sub-VP and VE have them) and
fall back to bisection for a user SDE that does not override them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, overload

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .sde import SDE

BISECTION_ITERS = 100
"""Bisection halvings of the generic inverses: ``T / 2^100`` is far below float64 resolution."""


def bisect_increasing(fn: Callable[[Tensor], Tensor], target: Tensor, lo: float, hi: float,
                      iters: int = BISECTION_ITERS) -> Tensor:  # fmt: skip
    """Solve ``fn(t) = target`` elementwise for ``t`` in ``[lo, hi]`` with ``fn`` increasing (clamped at the ends)."""
    a = torch.full_like(target, lo)
    b = torch.full_like(target, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        below = fn(mid) < target
        a = torch.where(below, mid, a)
        b = torch.where(below, b, mid)
    return 0.5 * (a + b)


class Schedule:
    r"""The kernel coefficients of ``sde`` and their inverses (see the module docstring).

    =====================  ======================================================================
    ``alpha(t)``           mean coefficient :math:`\alpha(t)`
    ``sigma(t)``           standard deviation :math:`\sigma(t)`
    ``log_snr(t)``         :math:`\lambda(t) = \log(\alpha(t)/\sigma(t))`
    ``edm_sigma(t)``       :math:`\sigma(t)/\alpha(t) = e^{-\lambda(t)}` (EDM's noise level)
    ``t_from_log_snr(l)``  the time with :math:`\lambda(t) = l`
    ``t_from_sigma(s)``    the time with :math:`\sigma(t) = s`
    ``t_from_edm_sigma``   the time with :math:`\sigma(t)/\alpha(t) = s`
    =====================  ======================================================================

    Inverses are clamped to ``[0, T]``.
    """

    def __init__(self, sde: SDE) -> None:
        self.sde = sde

    @overload
    def alpha(self, t: float) -> float: ...
    @overload
    def alpha(self, t: Tensor) -> Tensor: ...
    def alpha(self, t):
        return self._map(t, lambda u: self._coeffs(u)[0])

    @overload
    def sigma(self, t: float) -> float: ...
    @overload
    def sigma(self, t: Tensor) -> Tensor: ...
    def sigma(self, t):
        return self._map(t, lambda u: self._coeffs(u)[1])

    @overload
    def log_snr(self, t: float) -> float: ...
    @overload
    def log_snr(self, t: Tensor) -> Tensor: ...
    def log_snr(self, t):
        return self._map(t, self._log_snr)

    @overload
    def edm_sigma(self, t: float) -> float: ...
    @overload
    def edm_sigma(self, t: Tensor) -> Tensor: ...
    def edm_sigma(self, t):
        return self._map(t, lambda u: torch.exp(-self._log_snr(u)))

    @overload
    def t_from_log_snr(self, lam: float) -> float: ...
    @overload
    def t_from_log_snr(self, lam: Tensor) -> Tensor: ...
    def t_from_log_snr(self, lam):
        return self._map(lam, lambda v: self.sde.t_from_log_snr(v).clamp(0.0, self.sde.T))

    @overload
    def t_from_sigma(self, sigma: float) -> float: ...
    @overload
    def t_from_sigma(self, sigma: Tensor) -> Tensor: ...
    def t_from_sigma(self, sigma):
        return self._map(sigma, lambda v: self.sde.t_from_sigma(v).clamp(0.0, self.sde.T))

    @overload
    def t_from_edm_sigma(self, sigma: float) -> float: ...
    @overload
    def t_from_edm_sigma(self, sigma: Tensor) -> Tensor: ...
    def t_from_edm_sigma(self, sigma):
        return self._map(sigma, lambda v: self.sde.t_from_log_snr(-torch.log(v)).clamp(0.0, self.sde.T))

    def coeffs(self, t: float) -> tuple[float, float, float]:
        r"""``(alpha, sigma, log_snr)`` at the time ``t`` as host floats, in one evaluation."""
        u = torch.tensor([float(t)], dtype=torch.float64)
        alpha, sigma = self._coeffs(u)
        return float(alpha[0]), float(sigma[0]), float(torch.log(alpha[0]) - torch.log(sigma[0]))

    # -- internals -------------------------------------------------------------------
    def _coeffs(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.sde.marginal_coeffs(t, t)

    def _log_snr(self, t: Tensor) -> Tensor:
        alpha, sigma = self._coeffs(t)
        return torch.log(alpha) - torch.log(sigma)

    def _map(self, value, fn: Callable[[Tensor], Tensor]):
        """Apply ``fn`` (on a flat tensor) to a number (float64 on the host) or to a tensor of any shape."""
        if isinstance(value, Tensor):
            flat = value.reshape(-1)
            if not flat.is_floating_point():
                flat = flat.to(torch.get_default_dtype())
            return fn(flat).reshape(value.shape)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number or a tensor, got {type(value).__name__}")
        return float(fn(torch.tensor([float(value)], dtype=torch.float64))[0])

    def __repr__(self) -> str:
        return f"Schedule({self.sde!r})"
