"""Losses against closed forms on Gaussian data with the exact score."""

import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.losses import ddpm_loss, dsm_loss, smld_loss
from scoresde.toy import GaussianMixture

S = 0.7  # data std
D = 3
GAUSS = GaussianMixture([1.0], [[0.0] * D], S)


def expected_dsm(sde, weighting, eps=1e-5, n=20001):
    """E_t of the per-dimension loss with the exact score, by quadrature (trapezoid on a fine grid).

    For x0 ~ N(0, S^2) the kernel gives v = alpha^2 S^2 + sigma^2, and with the exact score
    E||sigma s + z||^2 / D = alpha^2 S^2 / v.
    """
    t = np.linspace(eps, sde.T, n)
    alpha, sigma = (c.numpy() for c in sde.marginal_coeffs(torch.tensor(t), torch.zeros(n, 1, dtype=torch.float64)))
    v = alpha**2 * S**2 + sigma**2
    per_dim = alpha**2 * S**2 / v
    if weighting == "likelihood":
        g2 = sde.sde(torch.zeros(n, 1, dtype=torch.float64), torch.tensor(t))[1].numpy() ** 2
        per_dim = per_dim * g2 / sigma**2
    return np.trapezoid(per_dim, t) / (sde.T - eps)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
def test_dsm_loss_matches_its_closed_form(sde, weighting):
    gen = torch.Generator().manual_seed(0)
    x0 = GAUSS.sample(200_000, generator=gen, dtype=torch.float64)
    losses = torch.stack([dsm_loss(sde, GAUSS.score_fn(sde), x0[i::8], weighting, generator=gen) for i in range(8)])
    want = expected_dsm(sde, weighting)
    stderr = float(losses.std()) / math.sqrt(8)
    assert float(losses.mean()) == pytest.approx(want, abs=5 * stderr + 1e-3 * want)
    summed = dsm_loss(sde, GAUSS.score_fn(sde), x0, weighting, reduce="sum", generator=torch.Generator().manual_seed(1))
    mean = dsm_loss(sde, GAUSS.score_fn(sde), x0, weighting, reduce="mean", generator=torch.Generator().manual_seed(1))
    assert float(summed) == pytest.approx(0.5 * D * float(mean), rel=1e-12)


def test_dsm_is_minimized_by_the_true_score():
    """With common random numbers the loss along s_c = c * s_true is a parabola with its minimum at c = 1."""
    sde = sd.VPSDE()
    gm = sd.toy.demo_mixture()
    x0 = gm.sample(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cs = [0.8, 1.0, 1.2]
    vals = []
    for c in cs:
        score = gm.score_fn(sde)
        vals.append(float(dsm_loss(sde, lambda x, t, c=c, s=score: c * s(x, t), x0,
                                   generator=torch.Generator().manual_seed(3))))  # fmt: skip
    a, b, _ = np.polyfit(cs, vals, 2)
    assert -b / (2 * a) == pytest.approx(1.0, abs=0.03)


def test_ddpm_loss_matches_its_closed_form():
    sde = sd.VPSDE()
    abar_table = sde.discrete_alphas_cumprod()

    def posterior_eps(x, labels):  # E[eps | x_l] for Gaussian data
        abar = abar_table[labels.long()][:, None]
        return (1 - abar).sqrt() * x / (abar * S**2 + 1 - abar)

    x0 = GAUSS.sample(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = float(ddpm_loss(sde, posterior_eps, x0, generator=torch.Generator().manual_seed(1)))
    abar = abar_table.numpy()
    want = np.mean(1 - (1 - abar) / (abar * S**2 + 1 - abar))
    assert loss == pytest.approx(want, rel=0.01)


def test_smld_loss_matches_its_closed_form():
    sde = sd.VESDE()
    x0 = GAUSS.sample(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = float(smld_loss(sde, GAUSS.score_fn(sde), x0, generator=torch.Generator().manual_seed(1)))
    sig = sde.discrete_sigmas().numpy()
    want = 0.5 * D * np.mean(S**2 / (S**2 + sig**2))
    assert loss == pytest.approx(want, rel=0.01)


def test_loss_errors():
    sde = sd.VPSDE()
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(sde, GAUSS.score_fn(sde), x, weighting="snr")
    with pytest.raises(ValueError, match="reduce"):
        dsm_loss(sde, GAUSS.score_fn(sde), x, reduce="max")
    with pytest.raises(ValueError, match="non-finite"):
        dsm_loss(sde, GAUSS.score_fn(sde), torch.full((4, 3), math.nan))
    with pytest.raises(ValueError, match="eps"):
        dsm_loss(sde, GAUSS.score_fn(sde), x, eps=0.0)
    with pytest.raises(TypeError):
        ddpm_loss(sd.VESDE(), lambda x, t: x, x)
    with pytest.raises(TypeError):
        smld_loss(sd.VPSDE(), lambda x, t: x, x)
