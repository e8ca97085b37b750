r"""Sample-quality statistics between two feature sets.

Every function takes two sets of features ``x`` of shape ``[N, D]`` and ``y`` of shape
``[M, D]`` (torch tensors or numpy arrays; the features of real and of generated samples,
e.g. Inception pool features for images or the raw coordinates of a 2-D toy) and returns a
Python float. All arithmetic is done in float64 on the device of ``x``; nothing here builds
an autograd graph.

- :func:`frechet_distance` (FID on Inception features): the Fréchet distance between the
  Gaussians fitted to the two sets.
- :func:`kid` (KID on Inception features): the unbiased MMD² with the cubic polynomial kernel,
  averaged over random subsets.
- :func:`mmd`: the unbiased MMD² with a sum of Gaussian RBF kernels, for low-dimensional data.
- :func:`sliced_wasserstein`: the sliced Wasserstein-p distance over random directions.
- :func:`energy_distance`: the squared energy distance between the two empirical distributions.

The kernel statistics sum the pairwise kernel matrices in row blocks, so memory stays
bounded (a few tens of MB) for sets of 50k samples; their cost is still ``O(N²D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._checks import check_finite, randn

# Largest number of entries of one block of a pairwise matrix (float64: 32 MiB).
_BLOCK_ELEMENTS = 1 << 22

#: Multiples of the median pairwise distance used as RBF bandwidths by :func:`mmd` by default.
MMD_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)

# At most this many pooled points enter the median heuristic (a fixed-seed random subset).
_MEDIAN_MAX_POINTS = 2000

Kernel = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- validation


def _features(x: Any, name: str, min_samples: int = 2) -> Tensor:
    """``x`` as a detached float64 tensor of shape ``[N, D]`` with ``N >= min_samples`` finite rows."""
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}") from err
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape [N, D] (samples x features), got shape {tuple(t.shape)}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(t.shape)}")
    if t.shape[0] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples, got {t.shape[0]}")
    t = t.to(torch.float64)
    check_finite(t, name)
    return t


def _pair(x: Any, y: Any, min_samples: int = 2) -> tuple[Tensor, Tensor]:
    """Validate two feature sets with the same feature dimension; ``y`` is moved to ``x``'s device."""
    x = _features(x, "x", min_samples)
    y = _features(y, "y", min_samples)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y.to(x.device)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _real(value: Any, name: str, minimum: float, strict: bool) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number, got {value!r}") from err
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}")
    return v


# ----------------------------------------------------------------------------- Fréchet distance


def gaussian_stats(features: Any) -> tuple[Tensor, Tensor]:
    r"""Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``features`` ``[N, D]``, ``N >= 2``.

    .. math:: \mu = \frac1N \sum_i f_i, \qquad \Sigma = \frac{1}{N-1} \sum_i (f_i - \mu)(f_i - \mu)^\top.
    """
    f = _features(features, "features")
    mu = f.mean(0)
    centered = f - mu
    cov = centered.T @ centered / (f.shape[0] - 1)
    return mu, cov


def _stats_args(mu: Any, cov: Any, which: str, dim: int | None) -> tuple[Tensor, Tensor]:
    mu_name, cov_name = f"mu{which}", f"cov{which}"
    m = mu.detach() if isinstance(mu, Tensor) else torch.as_tensor(mu)
    c = cov.detach() if isinstance(cov, Tensor) else torch.as_tensor(cov)
    if m.ndim != 1 or m.shape[0] < 1:
        raise ValueError(f"{mu_name} must be a vector [D], got shape {tuple(m.shape)}")
    d = m.shape[0]
    if dim is not None and d != dim:
        raise ValueError(f"mu1 and mu2 must have the same dimension, got {dim} and {d}")
    if c.shape != (d, d):
        raise ValueError(f"{cov_name} must have shape [D, D]=[{d}, {d}] to match {mu_name}, got {tuple(c.shape)}")
    m, c = m.to(torch.float64), c.to(torch.float64)
    check_finite(m, mu_name)
    check_finite(c, cov_name)
    scale = float(c.abs().max())
    if float((c - c.T).abs().max()) > 1e-4 * scale:
        raise ValueError(f"{cov_name} must be a symmetric matrix")
    return m, c


def _drop_rounding(evals: Tensor) -> Tensor:
    """PSD eigenvalues with those below the rounding level ``D * eps * max|λ|`` (zeros in exact arithmetic) set to 0.

    Singular covariances (fewer samples than features) have many zero eigenvalues that
    ``eigh`` returns as ±1e-16-sized noise; their square roots (~1e-8 each) would bias the
    trace term, so they are removed.
    """
    noise = torch.finfo(evals.dtype).eps * evals.shape[-1] * evals.abs().max()
    return torch.where(evals > noise, evals, 0.0)


def _sym_sqrt(a: Tensor) -> Tensor:
    """Square root of the symmetric PSD matrix ``a`` (see :func:`_drop_rounding`)."""
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * _drop_rounding(evals).sqrt()) @ evecs.T


def frechet_distance_from_stats(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    r"""Fréchet (2-Wasserstein²) distance between :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)`.

    .. math::
        d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
              - 2 \operatorname{tr}\big( (\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2} \big).

    The trace term is computed with two symmetric eigendecompositions in float64:
    :math:`\Sigma_1^{1/2}` from ``eigh(Σ1)``, then the eigenvalues of the symmetric PSD
    matrix :math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}`, whose square roots are summed;
    in both steps eigenvalues below ``D * eps * max|λ|`` (negative or rounding-level ones,
    zeros in exact arithmetic) are set to 0. Unlike ``sqrtm(Σ1 Σ2)`` this needs no inverse and is
    exact for singular covariances (fewer samples than features). Covariances are
    symmetrized; the result is clamped at 0 (it is a squared distance, not the distance).
    """
    m1, c1 = _stats_args(mu1, cov1, "1", None)
    m2, c2 = _stats_args(mu2, cov2, "2", m1.shape[0])
    m2, c2 = m2.to(m1.device), c2.to(m1.device)
    c1 = 0.5 * (c1 + c1.T)
    c2 = 0.5 * (c2 + c2.T)
    root1 = _sym_sqrt(c1)
    inner = root1 @ c2 @ root1
    inner = 0.5 * (inner + inner.T)
    trace_sqrt = _drop_rounding(torch.linalg.eigvalsh(inner)).sqrt().sum()
    diff = m1 - m2
    d2 = diff @ diff + torch.trace(c1) + torch.trace(c2) - 2.0 * trace_sqrt
    return max(float(d2), 0.0)


def frechet_distance(x: Any, y: Any) -> float:
    """Fréchet distance between the Gaussians fitted to ``x`` ``[N, D]`` and ``y`` ``[M, D]`` (``N, M >= 2``).

    Like FID it is the squared 2-Wasserstein distance between the fitted Gaussians; with
    Inception pool features it is the FID. See :func:`gaussian_stats` and
    :func:`frechet_distance_from_stats`.
    """
    x, y = _pair(x, y)
    return frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y))


# ----------------------------------------------------------------------------- kernel statistics


def _pairwise_sum(a: Tensor, b: Tensor | None, kernel: Kernel, block_scale: int = 1) -> Tensor:
    """:math:`\\sum_{i,j} k(a_i, b_j)` in row blocks; with ``b=None`` the sum over ``i != j`` of ``k(a_i, a_j)``.

    ``kernel`` maps blocks ``[r, D]``, ``[c, D]`` to ``[r, c]`` and must be symmetric. For
    ``b=None`` only the upper block triangle is evaluated and the off-diagonal part doubled.
    A kernel whose intermediates are ``block_scale`` times a block gets blocks that many times smaller.
    """
    total = a.new_zeros(())
    n = a.shape[0]
    budget = _BLOCK_ELEMENTS // block_scale
    if b is None:
        rows = max(1, budget // n)
        for i in range(0, n, rows):
            k = kernel(a[i : i + rows], a[i:])
            r = k.shape[0]
            square = k[:, :r]
            total = total + 2.0 * k[:, r:].sum() + (square.sum() - square.diagonal().sum())
        return total
    rows = max(1, budget // b.shape[0])
    for i in range(0, n, rows):
        total = total + kernel(a[i : i + rows], b).sum()
    return total


def _mmd2_unbiased(x: Tensor, y: Tensor, kernel: Kernel, block_scale: int = 1) -> float:
    r"""Unbiased MMD² U-statistic (``N, M >= 2``):

    .. math::
        \frac{1}{N(N-1)} \sum_{i \ne j} k(x_i, x_j) + \frac{1}{M(M-1)} \sum_{i \ne j} k(y_i, y_j)
        - \frac{2}{NM} \sum_{i, j} k(x_i, y_j).
    """
    n, m = x.shape[0], y.shape[0]
    kxx = _pairwise_sum(x, None, kernel, block_scale) / (n * (n - 1))
    kyy = _pairwise_sum(y, None, kernel, block_scale) / (m * (m - 1))
    kxy = _pairwise_sum(x, y, kernel, block_scale) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[r, c]`` through ``|a|² + |b|² - 2 a·b`` (clamped at 0)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_(min=0.0)


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    if generator is None:
        return torch.randperm(n).to(device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def kid(
    x: Any,
    y: Any,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    r"""Kernel Inception Distance (Bińkowski et al. 2018): mean and std of the unbiased MMD² over subsets.

    The kernel is polynomial, :math:`k(a, b) = (\gamma\, a \cdot b + c_0)^{\text{degree}}`
    with :math:`\gamma = 1/D` by default. Each of the ``subsets`` rounds draws
    ``s = min(subset_size, N, M)`` rows of ``x`` and ``s`` rows of ``y`` without
    replacement (from ``generator``, so a seeded generator makes the result reproducible)
    and computes the unbiased MMD² U-statistic (see :func:`mmd`) between them.

    Returns:
        ``(mean, std)`` over the subsets; ``std`` is the population standard deviation
        (``ddof=0``, as in the reference KID code and torchmetrics), 0 for one subset. The
        mean is an unbiased estimate of the population MMD², so it can be slightly negative.
    """
    x, y = _pair(x, y)
    subsets = _positive_int(subsets, "subsets")
    subset_size = _positive_int(subset_size, "subset_size", 2)
    degree = _positive_int(degree, "degree")
    g = 1.0 / x.shape[1] if gamma is None else _real(gamma, "gamma", 0.0, strict=True)
    c0 = _real(coef0, "coef0", 0.0, strict=False)

    def poly(a: Tensor, b: Tensor) -> Tensor:
        return (g * (a @ b.T) + c0).pow_(degree)

    s = min(subset_size, x.shape[0], y.shape[0])
    values = torch.empty(subsets, dtype=torch.float64)
    for i in range(subsets):
        xs = x[_randperm(x.shape[0], generator, x.device)[:s]]
        ys = y[_randperm(y.shape[0], generator, x.device)[:s]]
        values[i] = _mmd2_unbiased(xs, ys, poly)
    return float(values.mean()), float(values.std(unbiased=False))


def _median_pairwise_distance(x: Tensor, y: Tensor) -> float:
    """Median Euclidean distance over pairs of distinct points of the pooled sample (at most 2000 points)."""
    z = torch.cat([x, y])
    if z.shape[0] > _MEDIAN_MAX_POINTS:
        keep = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(0))[:_MEDIAN_MAX_POINTS]
        z = z[keep.to(z.device)]
    return float(torch.quantile(torch.pdist(z), 0.5))


def mmd(x: Any, y: Any, bandwidths: float | Sequence[float] | Tensor | None = None) -> float:
    r"""Unbiased MMD² between ``x`` ``[N, D]`` and ``y`` ``[M, D]`` with a sum of Gaussian RBF kernels.

    .. math::
        k(a, b) = \sum_{h \in \text{bandwidths}} \exp\!\Big(-\frac{\lVert a - b \rVert^2}{2h^2}\Big),
        \qquad
        \widehat{\mathrm{MMD}}^2 = \frac{\sum_{i \ne j} k(x_i, x_j)}{N(N-1)} + \frac{\sum_{i \ne j} k(y_i, y_j)}{M(M-1)}
        - \frac{2}{NM} \sum_{i,j} k(x_i, y_j).

    The estimate is unbiased (its mean over independent draws of ``x`` and ``y`` is the
    population MMD², 0 when both come from the same distribution), so it can be negative.

    Args:
        bandwidths: one or more positive bandwidths ``h``. By default (``None``) the median
            heuristic: ``h = f * median`` for ``f`` in :data:`MMD_BANDWIDTH_FACTORS`
            ``(0.25, 0.5, 1, 2, 4)``, where ``median`` is the median Euclidean distance between
            distinct points of the pooled sample ``x ∪ y`` (of a fixed-seed random subset of
            2000 pooled points when there are more). The estimate is then unbiased given the
            bandwidths. Meant for low-dimensional data such as 2-D toys.
    """
    x, y = _pair(x, y)
    if bandwidths is None:
        median = _median_pairwise_distance(x, y)
        if median <= 0.0:
            raise ValueError("the median pairwise distance of x and y is 0; pass bandwidths explicitly")
        h = torch.tensor([f * median for f in MMD_BANDWIDTH_FACTORS], dtype=torch.float64)
    else:
        h = torch.as_tensor(bandwidths, dtype=torch.float64).reshape(-1)
        if h.numel() == 0 or not bool(torch.isfinite(h).all()) or bool((h <= 0).any()):
            raise ValueError(f"bandwidths must be one or more finite positive numbers, got {h.tolist()}")
    neg_inv = (-0.5 / (h * h)).to(x.device)

    def rbf(a: Tensor, b: Tensor) -> Tensor:
        # one exp over [r, c, B] (the blocks are B times smaller) instead of one per bandwidth
        return torch.exp(_sq_dists(a, b)[..., None] * neg_inv).sum(-1)

    return _mmd2_unbiased(x, y, rbf, block_scale=h.numel())


def energy_distance(x: Any, y: Any) -> float:
    r"""Squared energy distance between the empirical distributions of ``x`` ``[N, D]`` and ``y`` ``[M, D]``.

    .. math::
        \mathcal{E}^2 = 2\,\mathbb{E}\lVert X - Y \rVert - \mathbb{E}\lVert X - X' \rVert
          - \mathbb{E}\lVert Y - Y' \rVert
        = \frac{2}{NM}\sum_{i,j} \lVert x_i - y_j \rVert - \frac{1}{N^2}\sum_{i,j} \lVert x_i - x_j \rVert
          - \frac{1}{M^2}\sum_{i,j} \lVert y_i - y_j \rVert,

    with Euclidean norms and all pairs averaged (the V-statistic), so it is 0 exactly when
    the two sets are equal as multisets and positive otherwise (clamped at 0 against
    rounding). This is the *square* of ``scipy.stats.energy_distance``, which in 1-D returns
    :math:`\sqrt{2}` times the L2 distance between the empirical CDFs, i.e. :math:`\mathcal{E}`.
    Distances are computed by explicit differences (``torch.cdist`` without the matrix
    product shortcut), so near-identical points are not hit by cancellation.
    """
    x, y = _pair(x, y, min_samples=1)
    n, m = x.shape[0], y.shape[0]

    def dist(a: Tensor, b: Tensor) -> Tensor:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")

    exy = _pairwise_sum(x, y, dist) / (n * m)
    exx = _pairwise_sum(x, None, dist) / (n * n)
    eyy = _pairwise_sum(y, None, dist) / (m * m)
    return max(float(2.0 * exy - exx - eyy), 0.0)


# ----------------------------------------------------------------------------- sliced Wasserstein


def _quantile_grid(n: int, m: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Pieces on which both empirical quantile functions are constant: widths and the sorted indices.

    The breakpoints are ``i/n`` and ``j/m``; on the piece ``(t_{k-1}, t_k]`` the quantile
    function of ``n`` sorted values is the value ``floor(u n)`` (0-based) for any inner ``u``.
    """
    t = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    t = torch.sort(t).values
    prev = torch.cat([t.new_zeros(1), t[:-1]])
    mid = 0.5 * (t + prev)
    ix = torch.floor(mid * n).long().clamp_(max=n - 1)
    iy = torch.floor(mid * m).long().clamp_(max=m - 1)
    return (t - prev).to(device), ix.to(device), iy.to(device)


def sliced_wasserstein(
    x: Any, y: Any, n_projections: int = 256, p: float = 2.0, generator: torch.Generator | None = None
) -> float:
    r"""Sliced Wasserstein-p distance between the empirical distributions of ``x`` ``[N, D]`` and ``y`` ``[M, D]``.

    .. math::
        SW_p = \Big(\frac1L \sum_{l=1}^{L} W_p^p\big(u_l^\top x,\ u_l^\top y\big)\Big)^{1/p},
        \qquad W_p^p(\mu, \nu) = \int_0^1 \lvert F_\mu^{-1}(t) - F_\nu^{-1}(t) \rvert^p\, dt,

    over ``L = n_projections`` directions :math:`u_l` drawn uniformly on the unit sphere
    (normalized Gaussians from ``generator``). The 1-D distances are exact: with ``N = M``
    the mean of :math:`\lvert x_{(i)} - y_{(i)} \rvert^p` over the sorted projections;
    otherwise the integral of the two step quantile functions over the merged breakpoints
    ``i/N`` and ``j/M``. In 1-D the directions are ``±1`` and the result is the exact
    :math:`W_p`. It is a distance (not its p-th power).
    """
    x, y = _pair(x, y, min_samples=1)
    n_projections = _positive_int(n_projections, "n_projections")
    p = _real(p, "p", 1.0, strict=False)
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    dirs = randn((n_projections, d), generator=generator, device=x.device, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    grid = None if n == m else _quantile_grid(n, m, x.device)
    chunk = max(1, _BLOCK_ELEMENTS // (2 * (n + m)))
    total = x.new_zeros(())
    for i in range(0, n_projections, chunk):
        u = dirs[i : i + chunk].T
        px = torch.sort(x @ u, dim=0).values
        py = torch.sort(y @ u, dim=0).values
        if grid is None:
            total = total + (px - py).abs().pow(p).mean(0).sum()
        else:
            widths, ix, iy = grid
            total = total + (widths[:, None] * (px[ix] - py[iy]).abs().pow(p)).sum()
    return float(total / n_projections) ** (1.0 / p)
