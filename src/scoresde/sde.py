r"""Forward SDEs, their reverse-time SDEs and probability-flow ODEs.

A forward SDE on ``t in [0, T]`` is

.. math:: dx = f(x, t)\,dt + g(t)\,dw.

Every class here exposes the interface of the reference code (``T``, ``sde``,
``marginal_prob``, ``prior_sampling``, ``prior_logp``, ``discretize``,
``reverse``), so any sampler and the likelihood work with any SDE, including one
you write yourself by subclassing :class:`SDE`.

Conventions
-----------
* ``t`` is a float, a 0-d tensor or a 1-D tensor of shape ``[B]``; data ``x`` is a
  floating-point tensor of shape ``[B, ...]`` (integer data is refused: it would
  truncate the times). Everything is computed on ``x``'s device and dtype.
* ``sde`` returns the drift (shape of ``x``) and the diffusion ``g(t)`` (shape ``[B]``).
* ``marginal_prob`` returns the mean (shape of ``x``) and std (shape ``[B]``) of the
  perturbation kernel :math:`p_{0t}(x_t | x_0) = N(\alpha(t) x_0, \sigma(t)^2 I)`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._checks import (
    TimeLike,
    batch_time,
    check_data,
    check_generator,
    check_memory,
    check_output,
    check_shape,
    expand_to,
    randn,
)
from .schedule import Schedule, bisect_increasing

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""A score function ``s(x, t) -> tensor shaped like x`` approximating grad_x log p_t(x)."""


class SDE(abc.ABC):
    r"""Base class of a forward SDE :math:`dx = f(x,t)\,dt + g(t)\,dw` on ``[0, T]``.

    To add an SDE, subclass it and implement :attr:`T`, :meth:`sde` and
    :meth:`marginal_prob`. The prior defaults to :math:`N(0, s^2 I)` with ``s`` the
    marginal std at ``T`` (override :meth:`prior_std` or the prior methods to change
    it), :meth:`discretize` defaults to Euler-Maruyama, and :meth:`marginal_coeffs`
    reads :math:`\alpha(t), \sigma(t)` off :meth:`marginal_prob` (it assumes the
    kernel mean is linear in ``x0``, true for every SDE with drift ``a(t) x``).

    Args:
        N: number of discretization steps used by :meth:`discretize` when no step
            size is given (the discrete DDPM/SMLD schedules have ``N`` levels).

    Per-process defaults are class attributes, read by the samplers and the losses (never an
    ``isinstance`` on a concrete class):

    * :attr:`default_eps`: where sampling stops by default (1e-3; VE 1e-5, as in the paper);
    * :attr:`default_grid`: the time grid of the paper's samplers (``"uniform"`` in ``t``);
    * :attr:`ancestral_variance`: the noise of the ancestral step, ``"posterior"`` (the
      variance of :math:`q(x_s | x_t, x_0)`; SMLD's eq. 47; any kernel) or ``"forward"`` (DDPM's
      :math:`\beta`, for kernels with :math:`\alpha^2 + \sigma^2 = 1`); ``None``: no ancestral sampler;
    * :attr:`discrete_levels`: ``"ddpm"`` / ``"smld"`` when the process has the discrete noise
      levels of those papers (their losses and conventions), else ``None``;
    * ``importance_antiderivative`` / ``importance_inverse``: closed forms of an antiderivative
      :math:`F` of :math:`g^2/\sigma^2` and of its inverse, for importance-sampled times (``None``:
      the losses tabulate it).
    """

    default_eps: float = 1e-3
    default_grid: str = "uniform"
    ancestral_variance: str | None = "posterior"
    discrete_levels: str | None = None
    importance_antiderivative: Callable[[float], float] | None = None
    importance_inverse: Callable[[Tensor], Tensor] | None = None

    def __init__(self, N: int = 1000) -> None:
        try:
            ok = not isinstance(N, bool) and int(N) == N and N >= 2
        except (TypeError, ValueError, OverflowError):  # NaN, inf, strings
            ok = False
        if not ok:
            raise ValueError(f"N must be an integer >= 2, got {N!r}")
        self.N = int(N)

    # -- the interface a subclass implements ---------------------------------------
    @property
    @abc.abstractmethod
    def T(self) -> float:
        """End time of the forward process."""

    @abc.abstractmethod
    def sde(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Return ``(f(x, t), g(t))``: the drift shaped like ``x`` and the diffusion ``[B]``."""

    @abc.abstractmethod
    def marginal_prob(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        r"""Return the mean :math:`\alpha(t) x_0` and the std :math:`\sigma(t)` (``[B]``) of :math:`p_{0t}`."""

    # -- defaults derived from the above ------------------------------------------
    def marginal_coeffs(self, t: TimeLike, like: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`(\alpha(t), \sigma(t))`, each of shape ``[B]`` (``B = like.shape[0]``).

        The kernel is :math:`N(\alpha(t) x_0, \sigma(t)^2 I)`. The default evaluates
        :meth:`marginal_prob` at ``x0 = 1``.
        """
        t = batch_time(t, like, self.T)
        ones = torch.ones(like.shape[0], 1, dtype=like.dtype, device=like.device)
        mean, std = self.marginal_prob(ones, t)
        return mean[:, 0], std

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(d alpha/dt, d sigma/dt)`` at the 1-D times ``t``.

        The default differentiates :meth:`marginal_coeffs` with autograd (exact for any kernel
        written in torch operations); the library's processes override it with closed forms.
        """
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            coeffs = self.marginal_coeffs(tt, tt)
            return tuple(_derivative(c, tt) for c in coeffs)

    @property
    def schedule(self) -> Schedule:
        r"""The schedule view: :math:`\alpha, \sigma, \lambda` and inverses (:class:`~scoresde.schedule.Schedule`)."""
        return Schedule(self)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""The time with :math:`\lambda(t) = \log(\alpha(t)/\sigma(t)) =` ``lam`` (elementwise, 1-D).

        The default bisects on ``[0, T]`` (it assumes :math:`\lambda` decreases in ``t``, true for
        any SDE that adds noise); VP, sub-VP and VE override it with closed forms.
        """
        return bisect_increasing(lambda t: -self.schedule._log_snr(t), -lam, 0.0, self.T)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        r"""The time with kernel std :math:`\sigma(t) =` ``sigma`` (elementwise, 1-D; bisection by default)."""
        return bisect_increasing(lambda t: self.schedule._coeffs(t)[1], sigma, 0.0, self.T)

    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior ``p_T``."""
        probe = torch.zeros(1, 1, dtype=torch.float64)
        return float(self.marginal_coeffs(self.T, probe)[1])

    def prior_sampling(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw ``x_T ~ N(0, prior_std^2 I)`` of the given shape (``(B, *dims)`` of positive ints)."""
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype}")
        shape = check_shape(shape)
        check_generator(generator)
        check_memory(math.prod(shape), dtype or torch.get_default_dtype(), f"a prior draw of shape {shape}", device)
        return self.prior_std() * randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: Tensor) -> Tensor:
        r"""Log-density of the prior, :math:`-\frac{D}{2}\log(2\pi s^2) - \|z\|^2/(2 s^2)`, shape ``[B]``."""
        check_data(z, "z")
        s = self.prior_std()
        dims = z[0].numel()
        sq = z.reshape(z.shape[0], -1).pow(2).sum(1)
        return -0.5 * dims * math.log(2 * math.pi * s * s) - sq / (2 * s * s)

    def discretize(self, x: Tensor, t: TimeLike, dt: float | None = None) -> tuple[Tensor, Tensor]:
        r"""One forward step arriving at ``t``: :math:`x_t = x_{t-\Delta t} + f + G z`.

        The default is Euler-Maruyama, :math:`f = f(x,t)\Delta t`, :math:`G = g(t)\sqrt{\Delta t}`,
        with :math:`\Delta t = T/N` unless ``dt`` is given. Returns ``(f, G)``, ``G`` of shape ``[B]``.
        """
        dt = self._step(t, x, dt)
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with ``probability_flow=True``, the probability-flow ODE)."""
        return ReverseSDE(self, score_fn, probability_flow)

    # -- helpers --------------------------------------------------------------------
    def _time(self, t: TimeLike, x: Tensor) -> Tensor:
        return batch_time(t, x, self.T)

    def _step(self, t: TimeLike, x: Tensor, dt: float | None) -> float:
        """Validate a step ``dt`` (default ``T/N``) arriving at ``t``: it must not start before 0."""
        if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float))):
            raise TypeError(f"dt must be a number, got {type(dt).__name__} {dt!r:.40}")
        dt = self.T / self.N if dt is None else float(dt)
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a finite number > 0, got {dt}")
        times = batch_time(t, x, self.T)
        earliest = float(t) if isinstance(t, (int, float)) else float(times.min())  # no device sync for floats
        if earliest < dt * (1 - 1e-9) - 1e-12:
            raise ValueError(f"a step of dt={dt} arriving at t={earliest:g} would start before 0")
        return dt

    def _level(self, t: Tensor) -> Tensor:
        """Index ``floor(t (N-1) / T)`` of the discrete level at ``t`` (robust to round-off at exact levels)."""
        return torch.floor(t * (self.N - 1) / self.T + 1e-7).clamp(0, self.N - 1)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class ReverseSDE:
    r"""The reverse-time SDE or probability-flow ODE of a forward SDE, built from a score.

    Reverse SDE:  :math:`dx = [f(x,t) - g(t)^2 s(x,t)]\,dt + g(t)\,d\bar w` (full :math:`g^2`).

    Probability-flow ODE: :math:`dx = [f(x,t) - \tfrac12 g(t)^2 s(x,t)]\,dt` (exactly half),
    whose diffusion is a zero tensor of shape ``[B]``.

    Time runs backwards: a sampler integrates from ``T`` to ``eps`` with negative ``dt``.
    """

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False) -> None:
        if not isinstance(forward, SDE):
            raise TypeError(f"forward must be an SDE instance, got {type(forward).__name__}")
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)
        self.T = forward.T
        self.N = forward.N

    @property
    def _coef(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Return the reverse drift (shape of ``x``) and diffusion (``[B]``) at ``(x, t)``."""
        tt = self.forward._time(t, x)  # validates x and t before any user code runs
        drift, diffusion = self.forward.sde(x, t)
        score = check_output(self.score_fn(x, tt), x, "score_fn")
        drift = drift - expand_to(self._coef * diffusion**2, x) * score
        if self.probability_flow:
            diffusion = torch.zeros_like(diffusion)
        return drift, diffusion

    def discretize(self, x: Tensor, t: TimeLike, dt: float | None = None) -> tuple[Tensor, Tensor]:
        r"""Reverse of :meth:`SDE.discretize`: :math:`x_{t-\Delta t} = x_t - \bar f + \bar G z` with
        :math:`\bar f = f - c\,G^2 s(x,t)`, :math:`\bar G = G` (SDE, ``c = 1``) or ``0`` (ODE, ``c = 1/2``)."""
        tt = self.forward._time(t, x)
        f, G = self.forward.discretize(x, t, dt)
        score = check_output(self.score_fn(x, tt), x, "score_fn")
        rev_f = f - expand_to(self._coef * G**2, x) * score
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class LinearSDE(SDE):
    r"""A forward process defined by its Gaussian kernel: :math:`x_t = \alpha(t) x_0 + \sigma(t) z`.

    The kernel is the primitive; the SDE is derived from it. The process with these marginals is

    .. math:: dx = f(t)\,x\,dt + g(t)\,dw, \qquad f = \frac{d\log\alpha}{dt}, \qquad
              g^2 = \frac{d\sigma^2}{dt} - 2 f \sigma^2 = -2\sigma^2 \frac{d\lambda}{dt},

    with :math:`\lambda = \log(\alpha/\sigma)` the half log signal-to-noise ratio (decreasing in ``t``).
    Every sampler, the likelihood, guidance and the inverse problems then work with it.

    Two ways to make one:

    * **any path from two functions**: ``LinearSDE(alpha, sigma, T=1.0)`` with ``alpha(t)`` and
      ``sigma(t)`` differentiable torch functions of a 1-D time tensor (:math:`\alpha > 0` on
      ``[0, T]``, :math:`\sigma > 0` on ``(0, T]``, :math:`\lambda` decreasing); their
      derivatives come from autograd and the inverses ``t(lambda)``, ``t(sigma)`` from bisection
      (or pass closed forms as ``t_from_log_snr`` / ``t_from_sigma``);
    * **a subclass** implementing :meth:`kernel` (and, where it has them, closed forms of
      :meth:`kernel_derivatives`, :meth:`coefficients`, ``t_from_log_snr`` and ``t_from_sigma``),
      as :class:`VPSDE`, :class:`SubVPSDE`, :class:`VESDE`, :class:`RectifiedFlow`,
      :class:`CosineVPSDE` and :class:`EDMSDE` do.

    :meth:`discretize` is the exact transition of the kernel over a step. The prior is
    :math:`N(0, \sigma(T)^2 I)`.

    Args:
        alpha, sigma: the kernel's coefficients as functions of ``t`` (a 1-D tensor).
        T: end time of the process (where sampling starts).
        N: default number of discretization steps.
        eps: where sampling stops by default (:attr:`default_eps`; default 1e-3).
        t_from_log_snr, t_from_sigma: optional closed-form inverses (1-D tensor in, times out).
    """

    _CHECK_POINTS = 65  # times at which a user's kernel is checked on construction
    _MIN_ALPHA = 1e-6  # the smallest alpha(T) / alpha(0) a user's kernel may reach (float32 x0 estimates break below)

    def __init__(
        self,
        alpha: Callable[[Tensor], Tensor] | None = None,
        sigma: Callable[[Tensor], Tensor] | None = None,
        *,
        T: float = 1.0,
        N: int = 1000,
        eps: float | None = None,
        t_from_log_snr: Callable[[Tensor], Tensor] | None = None,
        t_from_sigma: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(N)
        if (alpha is None) != (sigma is None):
            raise ValueError("pass both alpha and sigma (the kernel x_t = alpha(t) x0 + sigma(t) z), or neither")
        for name, fn in (("alpha", alpha), ("sigma", sigma), ("t_from_log_snr", t_from_log_snr),
                         ("t_from_sigma", t_from_sigma)):  # fmt: skip
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a function of a 1-D time tensor, got {type(fn).__name__}")
        self._T = _check_end_time(T)
        self._alpha, self._sigma = alpha, sigma
        self._inverses = {"t_from_log_snr": t_from_log_snr, "t_from_sigma": t_from_sigma}
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < self._T):
            raise ValueError(f"eps must be a number in (0, T={self._T}), got {eps!r}")
        self._eps = None if eps is None else float(eps)
        if alpha is not None:
            self._check_kernel()

    @property
    def T(self) -> float:
        return self._T

    @property
    def default_eps(self) -> float:
        return SDE.default_eps if self._eps is None else self._eps

    def kernel(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(alpha(t), sigma(t))`` for a 1-D tensor of times in ``[0, T]`` (same shape, dtype, device)."""
        if self._alpha is None:
            raise NotImplementedError(f"{type(self).__name__} must implement kernel(t)")
        return self._alpha(t), self._sigma(t)

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(d alpha/dt, d sigma/dt)``; by autograd through :meth:`kernel` unless a subclass has closed forms."""
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            return tuple(_derivative(c, tt) for c in self.kernel(tt))

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(f(t), g(t)^2)`` of the SDE: :math:`f = \alpha'/\alpha`, :math:`g^2 = 2\sigma(\sigma' - f\sigma)`."""
        alpha, sigma = self.kernel(t)
        d_alpha, d_sigma = self.kernel_derivatives(t)
        f = d_alpha / alpha
        return f, 2.0 * sigma * (d_sigma - f * sigma)

    def sde(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        t = self._time(t, x)
        f, g2 = self.coefficients(t)
        return expand_to(f, x) * x, torch.sqrt(g2.clamp_min(0.0))

    def marginal_coeffs(self, t: TimeLike, like: Tensor) -> tuple[Tensor, Tensor]:
        return self.kernel(self._time(t, like))

    def marginal_prob(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.marginal_coeffs(t, x0)
        return expand_to(alpha, x0) * x0, sigma

    def discretize(self, x: Tensor, t: TimeLike, dt: float | None = None) -> tuple[Tensor, Tensor]:
        r"""The exact kernel transition arriving at ``t``: :math:`x_t = a\,x_{t-\Delta t} + b z` with
        :math:`a = \alpha(t)/\alpha(t-\Delta t)`, :math:`b^2 = \sigma(t)^2 - a^2\sigma(t-\Delta t)^2`,
        i.e. :math:`f = (a - 1)x`, :math:`G = b` (DDPM's rule for VP; ``dt`` defaults to ``T/N``)."""
        dt = self._step(t, x, dt)
        t = self._time(t, x)
        (alpha_t, sigma_t), (alpha_p, sigma_p) = self.kernel(t), self.kernel((t - dt).clamp_min(0.0))
        a = alpha_t / alpha_p
        return expand_to(a - 1.0, x) * x, torch.sqrt((sigma_t**2 - (a * sigma_p) ** 2).clamp_min(0.0))

    def importance_antiderivative(self, t: float) -> float:
        r"""An antiderivative of :math:`g^2/\sigma^2`: since :math:`g^2 = -2\sigma^2\lambda'`, :math:`F = -2\lambda(t)`
        for every linear process (importance-sampled times are uniform in the log-SNR)."""
        return -2.0 * self.schedule.log_snr(float(t))

    def importance_inverse(self, F: Tensor) -> Tensor:
        r"""The time with :math:`F(t) =` ``F``: :math:`t = t(\lambda = -F/2)`."""
        return self.t_from_log_snr(-0.5 * F)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        fn = self._inverses["t_from_log_snr"]
        return super().t_from_log_snr(lam) if fn is None else fn(lam)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        fn = self._inverses["t_from_sigma"]
        return super().t_from_sigma(sigma) if fn is None else fn(sigma)

    def _check_kernel(self) -> None:
        """A user's kernel, checked once in float64: shapes, alpha > 0, sigma > 0 after 0, lambda decreasing."""
        t = torch.linspace(0.0, self._T, self._CHECK_POINTS, dtype=torch.float64)
        try:
            alpha, sigma = self.kernel(t)
        except Exception as err:  # any failure of user code is reported in one line
            raise ValueError(f"the kernel functions failed on a tensor of times: {type(err).__name__}: {err}") from err
        for name, value in (("alpha", alpha), ("sigma", sigma)):
            if not isinstance(value, Tensor) or value.shape != t.shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{name}(t) must return a tensor shaped like t {tuple(t.shape)}, got {got}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name}(t) is not finite everywhere on [0, T={self._T}]")
        if not bool((alpha > 0).all()):
            raise ValueError(f"alpha(t) must be > 0 on [0, T={self._T}] (the signal may not vanish before T); "
                             f"its smallest value is {float(alpha.min()):.3g}")  # fmt: skip
        if float(alpha[-1]) < self._MIN_ALPHA * float(alpha[0]):
            raise ValueError(f"alpha(T) = {float(alpha[-1]):.2g}: the signal vanishes at the end time, where Tweedie's "
                             f"x0 = (x + sigma^2 s)/alpha is 0/0; end the process earlier (T where alpha(T) >= "
                             f"{self._MIN_ALPHA:g} alpha(0)), as RectifiedFlow and CosineVPSDE do")  # fmt: skip
        if not bool((sigma[1:] > 0).all()) or float(sigma[0]) < 0:
            raise ValueError(f"sigma(t) must be > 0 on (0, T={self._T}] and >= 0 at 0")
        lam = torch.log(alpha[1:]) - torch.log(sigma[1:])
        if not bool((lam[1:] < lam[:-1]).all()):
            raise ValueError("the log signal-to-noise ratio log(alpha/sigma) must decrease in t (noise is added)")

    def __repr__(self) -> str:
        if self._alpha is None:
            return super().__repr__()
        names = (getattr(f, "__name__", type(f).__name__) for f in (self._alpha, self._sigma))
        return f"LinearSDE(alpha={next(names)}, sigma={next(names)}, T={self._T}, N={self.N})"


def _check_end_time(T: object) -> float:
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not (math.isfinite(T) and T > 0):
        raise ValueError(f"T (the end time) must be a finite number > 0, got {T!r}")
    return float(T)


class _LinearBetaSDE(LinearSDE):
    r"""Shared schedule of VP and sub-VP: :math:`\beta(t) = \beta_0 + t(\beta_1-\beta_0)`, prior N(0, I)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000) -> None:
        super().__init__(N=N)
        beta_min, beta_max = float(beta_min), float(beta_max)
        if not 0 < beta_min <= beta_max < math.inf:
            raise ValueError(f"need 0 < beta_min <= beta_max < inf, got {beta_min}, {beta_max}")
        self.beta_min = beta_min
        self.beta_max = beta_max

    @property
    def T(self) -> float:
        return 1.0

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Tensor) -> Tensor:
        r""":math:`\int_0^t \beta(s)\,ds = \beta_0 t + \tfrac12(\beta_1-\beta_0)t^2`."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def t_from_integral_beta(self, ib: Tensor) -> Tensor:
        r"""Invert :meth:`integral_beta`: :math:`t = 2B / (\beta_0 + \sqrt{\beta_0^2 + 2(\beta_1-\beta_0)B})`."""
        t = 2.0 * ib / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * (self.beta_max - self.beta_min) * ib))
        return torch.where(torch.isinf(ib), ib, t)  # B = inf (sigma = 1, lambda = -inf): t = inf, clamped to T

    def prior_std(self) -> float:
        return 1.0


class VPSDE(_LinearBetaSDE):
    r"""Variance-preserving SDE, the continuous limit of DDPM.

    :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw`, :math:`\beta(t) = \beta_0 + t(\beta_1-\beta_0)`.

    Kernel: mean :math:`e^{-\frac12\int_0^t\beta}x_0`, variance :math:`1 - e^{-\int_0^t\beta}`.
    Prior :math:`N(0, I)`. :meth:`discretize` is the DDPM rule.
    """

    ancestral_variance = "forward"
    discrete_levels = "ddpm"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000) -> None:
        super().__init__(beta_min, beta_max, N)
        if self.beta_max / self.N >= 1.0:  # DDPM's largest beta; sqrt(1 - beta) of the discretization needs < 1
            raise ValueError(f"N={self.N} is too small for beta_max={self.beta_max}: DDPM's discrete betas "
                             f"beta_max/N must stay below 1 (N > {math.floor(self.beta_max)})")  # fmt: skip

    def kernel(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ib = self.integral_beta(t)
        return torch.exp(-0.5 * ib), torch.sqrt(-torch.expm1(-ib))

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""Closed form: :math:`\alpha' = -\tfrac12\beta\alpha`, :math:`\sigma' = \tfrac12\beta e^{-B}/\sigma`."""
        alpha, sigma = self.kernel(t)
        beta = self.beta(t)
        return -0.5 * beta * alpha, 0.5 * beta * alpha**2 / sigma

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * beta, beta

    def sde(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        t = self._time(t, x)
        beta = self.beta(t)
        return -0.5 * expand_to(beta, x) * x, torch.sqrt(beta)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""Closed form: :math:`e^{-2\lambda} = e^{B(t)} - 1`, so :math:`B = \mathrm{softplus}(-2\lambda)`."""
        return self.t_from_integral_beta(torch.nn.functional.softplus(-2.0 * lam))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        r"""Closed form: :math:`\sigma^2 = 1 - e^{-B(t)}`, so :math:`B = -\log(1 - \sigma^2)`."""
        return self.t_from_integral_beta(-torch.log1p(-(sigma**2)))

    def importance_antiderivative(self, t: float) -> float:
        r"""An antiderivative of :math:`g^2/\sigma^2 = \beta/(1-e^{-B})`: :math:`F = \log(e^B - 1)`."""
        return _log_expm1(float(self.integral_beta(t)))

    def importance_inverse(self, F: Tensor) -> Tensor:
        r"""The time with :math:`F(t) =` ``F``: :math:`B = \log(1 + e^F)` (stable), then ``t_from_integral_beta``."""
        return self.t_from_integral_beta(F.clamp_min(0) + torch.log1p(torch.exp(-F.abs())))

    def discrete_betas(self) -> Tensor:
        """DDPM's betas, ``linspace(beta_min/N, beta_max/N, N)`` (float64, CPU)."""
        return torch.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N, dtype=torch.float64)

    def discrete_alphas_cumprod(self) -> Tensor:
        """DDPM's ``alphas_cumprod = cumprod(1 - betas)`` (float64, CPU)."""
        return torch.cumprod(1.0 - self.discrete_betas(), 0)

    def step_beta(self, t: Tensor, dt: float | None) -> Tensor:
        r"""The per-step :math:`\beta` of the step arriving at ``t``.

        With ``dt=None`` it is DDPM's ``betas[i]``, ``i = floor(t (N-1) / T)``; with a
        step ``dt`` it is :math:`1 - \bar\alpha(t)/\bar\alpha(t-\Delta t)`, which reduces
        to DDPM's table on a uniform grid of ``N`` steps and stays exact for any grid.
        """
        if dt is None:
            i = self._level(t)
            return self.beta_min / self.N + i * (self.beta_max - self.beta_min) / (self.N * (self.N - 1))
        return -torch.expm1(-(self.integral_beta(t) - self.integral_beta(t - dt)))

    def discretize(self, x: Tensor, t: TimeLike, dt: float | None = None) -> tuple[Tensor, Tensor]:
        r"""DDPM rule: :math:`f = (\sqrt{1-\beta} - 1)x`, :math:`G = \sqrt{\beta}` (see :meth:`step_beta`)."""
        if dt is not None:
            self._step(t, x, dt)
        beta = self.step_beta(self._time(t, x), dt)
        return expand_to(torch.sqrt(1.0 - beta) - 1.0, x) * x, torch.sqrt(beta)


class SubVPSDE(_LinearBetaSDE):
    r"""Sub-VP SDE: the VP drift with a damped diffusion.

    :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)(1 - e^{-2\int_0^t\beta})}\,dw`.

    Kernel: mean :math:`e^{-\frac12\int_0^t\beta}x_0`, **std** :math:`1 - e^{-\int_0^t\beta}`
    (so the variance is its square, below VP's). Prior :math:`N(0, I)`.
    :meth:`discretize` is Euler-Maruyama.
    """

    def kernel(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ib = self.integral_beta(t)
        return torch.exp(-0.5 * ib), -torch.expm1(-ib)

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""Closed form: :math:`\alpha' = -\tfrac12\beta\alpha`, :math:`\sigma' = \beta e^{-B} = \beta\alpha^2`."""
        alpha = self.kernel(t)[0]
        beta = self.beta(t)
        return -0.5 * beta * alpha, beta * alpha**2

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        beta = self.beta(t)
        return -0.5 * beta, beta * -torch.expm1(-2.0 * self.integral_beta(t))

    def sde(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        t = self._time(t, x)
        beta = self.beta(t)
        discount = -torch.expm1(-2.0 * self.integral_beta(t))
        return -0.5 * expand_to(beta, x) * x, torch.sqrt(beta * discount)

    def discretize(self, x: Tensor, t: TimeLike, dt: float | None = None) -> tuple[Tensor, Tensor]:
        """Euler-Maruyama (the reference code's sub-VP has no discrete rule of its own)."""
        return SDE.discretize(self, x, t, dt)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""Closed form: with :math:`\sigma = 1 - \alpha^2` and :math:`\sigma = \alpha e^{-\lambda}`,
        :math:`\sigma = 2 / (1 + \sqrt{1 + 4e^{2\lambda}})`, then :meth:`t_from_sigma`."""
        return self.t_from_sigma(2.0 / (1.0 + torch.sqrt(1.0 + 4.0 * torch.exp(2.0 * lam))))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        r"""Closed form: :math:`\sigma = 1 - e^{-B(t)}`, so :math:`B = -\log(1 - \sigma)`."""
        return self.t_from_integral_beta(-torch.log1p(-sigma))

    def importance_antiderivative(self, t: float) -> float:
        r"""An antiderivative of :math:`g^2/\sigma^2 = \beta\coth(B/2)`: :math:`F = 2\log\sinh(B/2)`."""
        b = float(self.integral_beta(t))
        return b + 2.0 * math.log(-math.expm1(-b)) - 2.0 * math.log(2.0)

    def importance_inverse(self, F: Tensor) -> Tensor:
        r"""The time with :math:`F(t) =` ``F``: :math:`B/2 = \mathrm{asinh}(e^{F/2})`, stable on both sides."""
        a = 0.5 * F
        pos, neg = a.clamp_min(0), a.clamp_max(0)
        half = torch.where(a > 0, pos + torch.log1p(torch.sqrt(1 + torch.exp(-2 * pos))), torch.asinh(torch.exp(neg)))
        return self.t_from_integral_beta(2.0 * half)


class VESDE(LinearSDE):
    r"""Variance-exploding SDE, the continuous limit of SMLD / NCSN.

    :math:`dx = \sqrt{d\sigma^2(t)/dt}\,dw` with
    :math:`\sigma(t) = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`, so
    :math:`g(t) = \sigma(t)\sqrt{2\log(\sigma_{max}/\sigma_{min})}`.

    Kernel: mean :math:`x_0`, std :math:`\sigma(t)` (the paper's convention: the data
    at ``t = 0`` already carries :math:`\sigma_{min}` of noise, so the kernel does not
    subtract :math:`\sigma(0)^2`; the dynamics are exactly consistent with it).
    Prior :math:`N(0, \sigma_{max}^2 I)`. :meth:`discretize` is the SMLD rule.
    """

    default_eps = 1e-5
    discrete_levels = "smld"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000) -> None:
        super().__init__(N=N)
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    @property
    def T(self) -> float:
        return 1.0

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def kernel(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma(t)

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""Closed form: :math:`\alpha' = 0`, :math:`\sigma' = \sigma\log(\sigma_{max}/\sigma_{min})`."""
        return torch.zeros_like(t), self.sigma(t) * math.log(self.sigma_max / self.sigma_min)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), self.sigma(t) ** 2 * (2 * math.log(self.sigma_max / self.sigma_min))

    def sde(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        t = self._time(t, x)
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g

    def marginal_prob(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        return x0, self.marginal_coeffs(t, x0)[1]

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""Closed form: :math:`\lambda = -\log\sigma(t)`."""
        return self.t_from_sigma(torch.exp(-lam))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        r"""Closed form: :math:`t = \log(\sigma/\sigma_{min}) / \log(\sigma_{max}/\sigma_{min})`."""
        return torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def prior_std(self) -> float:
        return self.sigma_max

    def importance_antiderivative(self, t: float) -> float:
        r""":math:`g^2/\sigma^2 = 2\log(\sigma_{max}/\sigma_{min})` is constant, :math:`F` linear in ``t``."""
        return 2.0 * math.log(self.sigma_max / self.sigma_min) * t

    def importance_inverse(self, F: Tensor) -> Tensor:
        return F / (2.0 * math.log(self.sigma_max / self.sigma_min))

    def discrete_sigmas(self) -> Tensor:
        """SMLD's ascending noise levels ``exp(linspace(log sigma_min, log sigma_max, N))`` (float64, CPU)."""
        return torch.exp(
            torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N, dtype=torch.float64)
        )

    def discretize(self, x: Tensor, t: TimeLike, dt: float | None = None) -> tuple[Tensor, Tensor]:
        r"""SMLD rule: :math:`f = 0`, :math:`G = \sqrt{\sigma_i^2 - \sigma_{i-1}^2}`.

        With ``dt=None`` the levels are SMLD's table at ``i = floor(t (N-1)/T)`` with
        :math:`\sigma_{-1} = 0`; with a step ``dt`` they are :math:`\sigma(t)` and :math:`\sigma(t - \Delta t)`.
        """
        if dt is not None:
            self._step(t, x, dt)
        t = self._time(t, x)
        if dt is None:
            i = self._level(t)
            ratio = math.log(self.sigma_max / self.sigma_min) / (self.N - 1)
            sigma = self.sigma_min * torch.exp(i * ratio)
            prev = torch.where(i > 0, self.sigma_min * torch.exp((i - 1) * ratio), torch.zeros_like(sigma))
        else:
            sigma, prev = self.sigma(t), self.sigma(t - dt)
        return torch.zeros_like(x), torch.sqrt(sigma**2 - prev**2)


class RectifiedFlow(LinearSDE):
    r"""The rectified-flow / flow-matching path :math:`x_t = (1 - t)x_0 + t z` (Liu et al. 2023, Lipman et al. 2023).

    :math:`\alpha = 1 - t`, :math:`\sigma = t`, so :math:`f = -1/(1-t)`, :math:`g^2 = 2t/(1-t)` and
    :math:`\lambda = \log((1-t)/t)`. The flow-matching target is the velocity
    :math:`u = \alpha' x_0 + \sigma' z = z - x_0` (``prediction="velocity"``), whose probability-flow
    ODE is the flow's :math:`dx/dt = u`.

    **The end time.** At ``t = 1`` the signal vanishes (:math:`\alpha = 0`): :math:`f` and :math:`g^2`
    are infinite, :math:`\lambda = -\infty`, and Tweedie's :math:`\hat x_0 = (x + \sigma^2 s)/\alpha`
    is 0/0, although the ODE velocity stays finite. The process therefore ends at ``T = 0.999``
    (default): every coefficient is finite there (:math:`g^2(T) \approx 2000`, :math:`\lambda(T) =
    -\log 999 \approx -6.9`, below VP's :math:`-5.0` at its end), the prior is
    :math:`N(0, \sigma(T)^2 I) = N(0, T^2 I)`, which differs from the exact marginal
    :math:`N(\alpha(T) x_0, \sigma(T)^2 I)` by a mean of :math:`10^{-3} x_0` (a prior-mismatch term of
    :math:`\approx 5\cdot10^{-7}\,E|x_0|^2` nats per dimension in the likelihood, below VP's
    :math:`\alpha(1)^2/2 \approx 2\cdot10^{-5}`), and the first step of every sampler starts from
    that draw: the exponential integrators at a finite :math:`\lambda(T)`, the Euler-Maruyama and
    predictor-corrector samplers from a finite diffusion, the ancestral sampler with the kernel's
    exact posterior. Sampling stops at ``eps = 1e-3`` (symmetric in :math:`\lambda`) by default.

    Args:
        T: end time in ``(0, 1)``.
        N: default number of discretization steps.
    """

    def __init__(self, T: float = 0.999, N: int = 1000) -> None:
        T = _check_end_time(T)
        if not T < 1.0:
            raise ValueError(f"T must be < 1 for the rectified-flow path (alpha(1) = 0), got {T}")
        super().__init__(T=T, N=N)

    def kernel(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1.0 - t, t.clone()

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.full_like(t, -1.0), torch.ones_like(t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`f = -1/(1-t)`, :math:`g^2 = 2t/(1-t)`."""
        return -1.0 / (1.0 - t), 2.0 * t / (1.0 - t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""Closed form: :math:`t = 1/(1 + e^{\lambda})`."""
        return torch.sigmoid(-lam)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        r"""Closed form: :math:`t = \sigma`."""
        return sigma.clone()

    def __repr__(self) -> str:
        return f"RectifiedFlow(T={self.T}, N={self.N})"


class CosineVPSDE(LinearSDE):
    r"""The cosine schedule of improved DDPM (Nichol & Dhariwal 2021) in continuous time, a VP process.

    :math:`\alpha(t) = \cos(\theta(t))/\cos(\theta(0))` with :math:`\theta(t) = \frac{\pi}{2}\frac{t + s}{1 + s}`,
    :math:`\sigma = \sqrt{1 - \alpha^2}`; :math:`f = \alpha'/\alpha = -\frac{\pi}{2(1+s)}\tan\theta(t)` and
    :math:`g^2 = -2f` (so :math:`\beta(t) = \frac{\pi}{1+s}\tan\theta(t)`). The signal vanishes at ``t = 1``
    (:math:`\beta \to \infty`), so the process ends at ``T = 0.9946`` as in DPM-Solver
    (:math:`\lambda(T) \approx -4.8`, close to the linear VP's :math:`-5.0`). Prior :math:`N(0, I)`.

    Args:
        s: the offset that keeps :math:`\beta` small near ``t = 0`` (0.008 in improved DDPM).
        T: end time in ``(0, 1)``.
        N: default number of discretization steps.
    """

    ancestral_variance = "forward"

    def __init__(self, s: float = 0.008, T: float = 0.9946, N: int = 1000) -> None:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and s > 0):
            raise ValueError(f"s must be a finite number > 0, got {s!r}")
        T = _check_end_time(T)
        if not T < 1.0:
            raise ValueError(f"T must be < 1 for the cosine schedule (alpha(1) = 0), got {T}")
        super().__init__(T=T, N=N)
        self.s = float(s)

    def _theta(self, t: Tensor) -> Tensor:
        return (0.5 * math.pi / (1.0 + self.s)) * (t + self.s)

    def kernel(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\alpha = \cos\theta/\cos\theta_0` and :math:`\sigma^2 = 1 - \alpha^2 =
        \sin(\theta - \theta_0)\sin(\theta + \theta_0)/\cos^2\theta_0` (no cancellation near ``t = 0``)."""
        theta0 = 0.5 * math.pi * self.s / (1.0 + self.s)
        shift = (0.5 * math.pi / (1.0 + self.s)) * t  # theta - theta0, without the cancellation near t = 0
        alpha = torch.cos(self._theta(t)) / math.cos(theta0)
        var = torch.sin(shift) * torch.sin(shift + 2 * theta0) / math.cos(theta0) ** 2
        return alpha, torch.sqrt(var.clamp_min(0.0))

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\alpha' = f\alpha`, :math:`\sigma' = -\alpha\alpha'/\sigma`."""
        alpha, sigma = self.kernel(t)
        d_alpha = self.coefficients(t)[0] * alpha
        return d_alpha, -alpha * d_alpha / sigma

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        f = -(0.5 * math.pi / (1.0 + self.s)) * torch.tan(self._theta(t))
        return f, -2.0 * f

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""Closed form: :math:`\alpha^2 = \mathrm{sigmoid}(2\lambda)`, :math:`\theta = \arccos(\alpha\cos\theta_0)`."""
        return self._t_from_alpha(torch.sqrt(torch.sigmoid(2.0 * lam)))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        r"""Closed form: :math:`\alpha = \sqrt{1 - \sigma^2}`."""
        return self._t_from_alpha(torch.sqrt((1.0 - sigma**2).clamp_min(0.0)))

    def _t_from_alpha(self, alpha: Tensor) -> Tensor:
        c0 = math.cos(0.5 * math.pi * self.s / (1.0 + self.s))
        theta = torch.acos((alpha * c0).clamp(-1.0, 1.0))
        return theta * (2.0 * (1.0 + self.s) / math.pi) - self.s

    def prior_std(self) -> float:
        return 1.0

    def __repr__(self) -> str:
        return f"CosineVPSDE(s={self.s}, T={self.T}, N={self.N})"


class EDMSDE(LinearSDE):
    r"""EDM's process (Karras et al. 2022): :math:`\alpha = 1`, :math:`\sigma(t) = t`, time *is* the noise level.

    :math:`f = 0`, :math:`g^2 = 2t`, :math:`\lambda = -\log t`. The process runs on
    ``[0, T = sigma_max]``; sampling starts from the prior :math:`N(0, \sigma_{max}^2 I)` and stops
    at ``eps = sigma_min`` by default. A uniform grid in ``t`` would be uniform in the noise level,
    so the paper's samplers default to EDM's ``karras`` grid on this process.

    Args:
        sigma_min: the smallest noise level of the samplers (default end time).
        sigma_max: the largest noise level, the end time ``T``.
        N: default number of discretization steps.
    """

    default_grid = "karras"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, N: int = 1000) -> None:
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        super().__init__(T=sigma_max, N=N, eps=sigma_min)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def kernel(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t.clone()

    def kernel_derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), torch.ones_like(t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), 2.0 * t

    def sde(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        t = self._time(t, x)
        return torch.zeros_like(x), torch.sqrt(2.0 * t)

    def marginal_prob(self, x0: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        return x0, self.marginal_coeffs(t, x0)[1]

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        r"""Closed form: :math:`t = e^{-\lambda}`."""
        return torch.exp(-lam)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        r"""Closed form: :math:`t = \sigma`."""
        return sigma.clone()


def _derivative(value: Tensor, t: Tensor) -> Tensor:
    """d value / d t elementwise for a 1-D ``value`` computed from ``t`` (zero where it does not depend on ``t``)."""
    if not value.requires_grad:
        return torch.zeros_like(t).detach()
    (grad,) = torch.autograd.grad(value.sum(), t, retain_graph=True, allow_unused=True)
    return torch.zeros_like(t).detach() if grad is None else grad.detach()


def _log_expm1(b: float) -> float:
    """``log(exp(b) - 1)`` for ``b > 0`` without overflow."""
    return b + math.log(-math.expm1(-b))
