r"""Ground truth: a Gaussian mixture with exact scores and log-densities at every time.

Under any SDE whose kernel is :math:`N(\alpha(t)x_0, \sigma(t)^2 I)` (VP, sub-VP, VE and
every linear SDE) the perturbed mixture is again a mixture:

.. math:: p_t(x) = \sum_k w_k\, N\big(x;\ \alpha\mu_k,\ \alpha^2 s_k^2 + \sigma^2\big),

so :math:`\log p_t` and :math:`\nabla_x \log p_t` are known exactly. This makes it the
reference for every test, example and benchmark of the library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._checks import TimeLike, randn
from .sde import SDE


class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances.

    Args:
        weights: ``[K]`` positive mixture weights summing to 1.
        means: ``[K, D]`` component means.
        stds: per-component standard deviations: a scalar, ``[K]`` (isotropic) or ``[K, D]``.

    Data may be passed with any shape ``[B, ...]`` whose trailing size is ``D``.
    """

    def __init__(self, weights: Sequence[float] | Tensor, means: Sequence | Tensor, stds: float | Sequence | Tensor):
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape [K, D], got {tuple(mu.shape)}")
        k, d = mu.shape
        if w.shape != (k,) or bool((w <= 0).any()) or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must be {k} positive numbers summing to 1, got {w.tolist()}")
        s = torch.as_tensor(stds, dtype=torch.float64)
        if s.ndim == 0:
            s = s.expand(k, d)
        elif s.shape == (k,):
            s = s[:, None].expand(k, d)
        elif s.shape != (k, d):
            raise ValueError(f"stds must be a scalar, [K]={k} or [K, D]=[{k}, {d}], got {tuple(s.shape)}")
        if bool((s <= 0).any()):
            raise ValueError("stds must be positive")
        self.weights = w / w.sum()
        self.means = mu
        self.stds = s.contiguous()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        return_labels: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` samples ``[n, D]`` (and their component labels when asked)."""
        gen_device = generator.device if generator is not None else "cpu"
        labels = torch.multinomial(self.weights.to(gen_device), n, replacement=True, generator=generator)
        z = randn((n, self.dim), generator=generator, device=gen_device, dtype=torch.float64)
        labels = labels.cpu()
        x = self.means[labels] + self.stds[labels] * z.cpu()
        x = x.to(device=device, dtype=dtype)
        return (x, labels.to(x.device)) if return_labels else x

    def _components(self, x: Tensor, t: TimeLike | None, sde: SDE | None) -> tuple[Tensor, Tensor, Tensor]:
        """Flattened data ``[B, D]``, component means ``[B, K, D]`` and variances ``[B, K, D]`` at ``t``."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"data has {flat.shape[1]} dimensions per sample, the mixture has {self.dim}")
        mu = self.means.to(flat)[None]
        var = self.stds.to(flat)[None] ** 2
        if t is None:
            return flat, mu, var
        if sde is None:
            raise ValueError("pass the SDE that perturbs the data together with t")
        alpha, sigma = sde.marginal_coeffs(t, flat)
        alpha, sigma = alpha[:, None, None], sigma[:, None, None]
        return flat, alpha * mu, alpha**2 * var + sigma**2

    def _log_joint(self, x: Tensor, t: TimeLike | None, sde: SDE | None) -> tuple[Tensor, Tensor, Tensor]:
        flat, mu, var = self._components(x, t, sde)
        diff = flat[:, None, :] - mu
        log_normal = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        return torch.log(self.weights.to(flat))[None] + log_normal, diff, var

    def log_prob(self, x: Tensor, t: TimeLike | None = None, sde: SDE | None = None) -> Tensor:
        """Exact :math:`\\log p_t(x)` (``[B]``); the data density when ``t`` is None."""
        log_joint, _, _ = self._log_joint(x, t, sde)
        return torch.logsumexp(log_joint, dim=1)

    def score(self, x: Tensor, t: TimeLike, sde: SDE) -> Tensor:
        r"""Exact :math:`\nabla_x \log p_t(x)`, shaped like ``x``."""
        log_joint, diff, var = self._log_joint(x, t, sde)
        resp = torch.softmax(log_joint, dim=1)[:, :, None]
        return (-(resp * diff / var).sum(1)).reshape(x.shape)

    def score_fn(self, sde: SDE) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact score under ``sde`` as a ``score_fn(x, t)`` for samplers and likelihoods."""

        def exact_score(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, t, sde)

        return exact_score

    def class_log_prob(self, x: Tensor, t: TimeLike | None = None, sde: SDE | None = None) -> Tensor:
        r"""The exact noisy classifier :math:`\log p_t(k \mid x)` (``[B, K]``): the log-responsibilities of
        the components of the diffused mixture, taking the components as classes."""
        log_joint, _, _ = self._log_joint(x, t, sde)
        return torch.log_softmax(log_joint, dim=1)

    def classifier_fn(self, sde: SDE) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact noisy classifier under ``sde`` as ``classifier_logp(x, t) -> [B, K]`` (for guidance)."""

        def exact_classifier(x: Tensor, t: Tensor) -> Tensor:
            return self.class_log_prob(x, t, sde)

        return exact_classifier

    def posterior(self, A: Tensor, y: Tensor, noise_std: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
        r"""The exact posterior of :math:`x` given :math:`y = Ax + n`, :math:`n \sim N(0, \sigma_y^2 I)`: a mixture.

        With :math:`S_k = A\Sigma_k A^\top + \sigma_y^2 I`, component ``k`` has weight
        :math:`\propto w_k N(y; A\mu_k, S_k)`, mean :math:`\mu_k + \Sigma_k A^\top S_k^{-1}(y - A\mu_k)`
        and covariance :math:`\Sigma_k - \Sigma_k A^\top S_k^{-1} A \Sigma_k` (``A`` of full row rank).

        Args:
            A: ``[m, D]``; y: ``[B, m]``.

        Returns:
            weights ``[B, K]``, means ``[B, K, D]`` and covariances ``[K, D, D]`` (float64).
        """
        A = torch.as_tensor(A, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1, A.shape[0])
        cov = torch.diag_embed(self.stds**2)  # [K, D, D]
        gain_t = A @ cov  # [K, m, D] = A Sigma_k
        S = gain_t @ A.T + float(noise_std) ** 2 * torch.eye(A.shape[0], dtype=torch.float64)
        resid = y[:, None, :] - (self.means @ A.T)[None]  # [B, K, m]
        chol = torch.linalg.cholesky(S)
        solved = torch.cholesky_solve(resid.permute(1, 2, 0), chol)  # [K, m, B]
        means = self.means[None] + (gain_t.transpose(1, 2) @ solved).permute(2, 0, 1)
        covs = cov - gain_t.transpose(1, 2) @ torch.cholesky_solve(gain_t, chol)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)  # [K]
        maha = (resid.permute(1, 2, 0) * solved).sum(1).T  # [B, K]
        log_w = torch.log(self.weights)[None] - 0.5 * (maha + logdet[None] + A.shape[0] * math.log(2 * math.pi))
        return torch.softmax(log_w, dim=1), means, covs

    def assign(self, x: Tensor) -> Tensor:
        """Most likely component of each sample under the data density (``[B]`` labels)."""
        log_joint, _, _ = self._log_joint(x, None, None)
        return log_joint.argmax(1)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"


def demo_mixture() -> GaussianMixture:
    """The 2-D mixture of the demo, tests and benchmarks.

    Three well separated modes with unequal weights (0.5, 0.3, 0.2) and unequal
    isotropic stds (0.5, 0.4, 0.3); every pair of modes is more than 9 stds (of the wider one) apart.
    """
    return GaussianMixture(
        weights=[0.5, 0.3, 0.2],
        means=[[-2.5, -1.5], [2.5, -1.5], [0.0, 2.5]],
        stds=[0.5, 0.4, 0.3],
    )


def mixture_moments(weights: Tensor, means: Tensor, covs: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean ``[B, D]`` and covariance ``[B, D, D]`` of mixtures (weights ``[B, K]``, means ``[B, K, D]``,
    covariances ``[K, D, D]``): :math:`m = \sum_k w_k m_k`, :math:`C = \sum_k w_k (C_k + m_k m_k^\top) - m m^\top`."""
    mean = (weights[:, :, None] * means).sum(1)
    second = torch.einsum("bk,kij->bij", weights, covs) + torch.einsum("bk,bki,bkj->bij", weights, means, means)
    return mean, second - mean[:, :, None] * mean[:, None, :]


def sample_mixtures(weights: Tensor, means: Tensor, covs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from mixtures with full covariances (the output of :meth:`GaussianMixture.posterior`):
    weights ``[B, K]``, means ``[B, K, D]``, covariances ``[K, D, D]`` (may be singular) -> ``[B, D]``."""
    comp = torch.multinomial(weights, 1, generator=generator)[:, 0]
    evals, evecs = torch.linalg.eigh(covs)
    root = evecs * evals.clamp_min(0).sqrt()[:, None, :]  # a symmetric square root, fine for singular covariances
    z = torch.randn(weights.shape[0], means.shape[2], generator=generator, dtype=means.dtype)
    return means[torch.arange(weights.shape[0]), comp] + torch.einsum("bij,bj->bi", root[comp], z)


def mixture_errors(mixture: GaussianMixture, x: Tensor, reference: Tensor) -> dict[str, float]:
    """Compare samples ``x`` with true samples ``reference`` from ``mixture``.

    Returns:
        ``tv``: total variation between the fraction of samples assigned to each mode
        and the true weights; ``std``: the largest relative error of a within-mode
        standard deviation (over modes and dimensions), against the true stds;
        ``logp``: the gap between the mean data log-density of ``x`` and of ``reference``
        (nats per sample).
    """
    x = x.detach().to(torch.float64).reshape(x.shape[0], -1).cpu()
    if not bool(torch.isfinite(x).all()):
        return {"tv": float("nan"), "std": float("nan"), "logp": float("nan")}
    labels = mixture.assign(x)
    counts = torch.bincount(labels, minlength=mixture.n_components).double()
    tv = 0.5 * float((counts / counts.sum() - mixture.weights).abs().sum())
    worst = 0.0
    for k in range(mixture.n_components):
        members = x[labels == k]
        if members.shape[0] < 2:
            return {"tv": tv, "std": float("inf"), "logp": float("nan")}
        rel = (members.std(0) / mixture.stds[k] - 1.0).abs().max()
        worst = max(worst, float(rel))
    ref = reference.detach().to(torch.float64).reshape(reference.shape[0], -1).cpu()
    logp = float(mixture.log_prob(x).mean() - mixture.log_prob(ref).mean())
    return {"tv": tv, "std": worst, "logp": logp}
