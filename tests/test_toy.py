"""The Gaussian-mixture ground truth against torch.distributions and autograd."""

import pytest
import torch
from torch import distributions as D

import scoresde as sd
from scoresde.toy import GaussianMixture, mixture_errors

SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()]


def torch_mixture(gm, alpha, sigma):
    """The perturbed mixture built with torch.distributions, independently of the library."""
    comp = D.Independent(D.Normal(alpha * gm.means, torch.sqrt(alpha**2 * gm.stds**2 + sigma**2)), 1)
    return D.MixtureSameFamily(D.Categorical(gm.weights), comp)


@pytest.mark.parametrize("sde", SDES, ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("t", [1e-3, 0.3, 0.8])
def test_log_prob_and_score_are_exact(sde, t):
    gm = GaussianMixture(
        [0.2, 0.5, 0.3],
        [[0.0, 1.0, 2.0], [-2.0, 0.5, 0.0], [1.0, -1.0, 3.0]],
        [[0.3, 0.5, 1.0], [1.0, 0.2, 0.4], [0.7, 0.7, 0.7]],
    )
    x = 2 * torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alpha, sigma = (float(c[0]) for c in sde.marginal_coeffs(t, x[:1]))
    want = torch_mixture(gm, alpha, sigma)
    torch.testing.assert_close(gm.log_prob(x, t, sde), want.log_prob(x))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(want.log_prob(xg).sum(), xg)
    torch.testing.assert_close(gm.score(x, t, sde), grad)


def test_data_density_and_sampling():
    gm = sd.toy.demo_mixture()
    x, labels = gm.sample(50_000, generator=torch.Generator().manual_seed(0), return_labels=True, dtype=torch.float64)
    torch.testing.assert_close(gm.log_prob(x), torch_mixture(gm, 1.0, 0.0).log_prob(x))
    freq = torch.bincount(labels, minlength=3).double() / 50_000
    torch.testing.assert_close(freq, gm.weights, atol=0.01, rtol=0)
    errors = mixture_errors(gm, x, gm.sample(50_000, generator=torch.Generator().manual_seed(1)))
    assert errors["tv"] < 0.01 and errors["std"] < 0.03 and abs(errors["logp"]) < 0.03
    same = gm.sample(10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(same, gm.sample(10, generator=torch.Generator().manual_seed(5)))


def test_mixture_errors_detect_wrong_samples():
    gm = sd.toy.demo_mixture()
    ref = gm.sample(20_000, generator=torch.Generator().manual_seed(0))
    wide = GaussianMixture(gm.weights, gm.means, gm.stds * 1.2).sample(
        20_000, generator=torch.Generator().manual_seed(1)
    )
    assert mixture_errors(gm, wide, ref)["std"] > 0.15
    skewed = GaussianMixture([0.6, 0.2, 0.2], gm.means, gm.stds).sample(
        20_000, generator=torch.Generator().manual_seed(1)
    )
    assert mixture_errors(gm, skewed, ref)["tv"] > 0.08


def test_validation():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([0.5, 0.6], [[0.0], [1.0]], 1.0)
    with pytest.raises(ValueError, match="means"):
        GaussianMixture([1.0], [0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture([1.0], [[0.0, 1.0]], [1.0, 2.0, 3.0])
    gm = sd.toy.demo_mixture()
    with pytest.raises(ValueError, match="dimensions"):
        gm.log_prob(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="SDE"):
        gm.log_prob(torch.zeros(3, 2), 0.5)
