"""Classifier guidance against the exact noisy classifier and conditionals of a Gaussian mixture."""

import pytest
import torch

import scoresde as sd
from scoresde.guidance import classifier_guided
from scoresde.toy import demo_mixture

SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(sigma_max=20.0), "cosine": sd.CosineVPSDE(),
        "rf": sd.RectifiedFlow(), "edm": sd.EDMSDE(sigma_max=20.0)}  # fmt: skip


@pytest.mark.parametrize("name", list(SDES))
def test_guided_score_at_scale_one_is_the_exact_conditional_score(name):
    # grad log p_t(x) + grad log p_t(y | x) = grad log p_t(x | y): the score of component y, diffused
    sde, gm = SDES[name], demo_mixture()
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    t = 0.02 + 0.9 * torch.rand(64, generator=gen, dtype=torch.float64)
    for y in range(gm.n_components):
        guided = classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), y, scale=1.0)
        alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(t, x))
        var = alpha**2 * gm.stds[y] ** 2 + sigma**2
        exact = -(x - alpha * gm.means[y]) / var
        torch.testing.assert_close(guided(x, t), exact, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    "sampler, steps, options",
    [("euler_maruyama", 300, {}), ("ddim", 50, {}), ("ode", None, {"error_norm": "batch"})],
)
def test_guided_samples_land_in_the_requested_component(sampler, steps, options):
    sde, gm = sd.VPSDE(), demo_mixture()
    labels = torch.arange(600) % 3
    guided = classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), labels, scale=1.0)
    x = sd.sample(sde, guided, (600, 2), sampler=sampler, steps=steps, generator=sd.SampleNoise(1, 600), **options)
    hit = float((gm.assign(x) == labels).double().mean())
    assert hit >= 0.99, hit
    # the requested component's spread is kept (exact conditional, not a collapse onto the mean)
    for k in range(3):
        assert float(x[labels == k].std(0).max() / gm.stds[k, 0]) == pytest.approx(1.0, abs=0.15)


def test_scale_zero_is_the_unconditional_score_and_bad_input_is_clear():
    sde, gm = sd.VPSDE(), demo_mixture()
    x, t = torch.randn(5, 2), torch.full((5,), 0.5)
    assert torch.equal(classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), 1, scale=0.0)(x, t),
                       gm.score_fn(sde)(x, t))  # fmt: skip
    with pytest.raises(ValueError, match="scale"):
        classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), 0, scale=-1.0)
    with pytest.raises(ValueError, match="3 classes"):
        classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), 3)(x, t)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), torch.tensor([0, 1, 2, 5, 0]))(x, t)
    with pytest.raises(ValueError, match="whole batch"):
        classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), torch.tensor([0, 1]))(x, t)
    with pytest.raises(ValueError, match="autograd"):
        classifier_guided(gm.score_fn(sde), lambda x, t: gm.classifier_fn(sde)(x, t).detach(), 0)(x, t)
    with pytest.raises(TypeError):
        classifier_guided(gm.score_fn(sde), gm.classifier_fn(sde), 1.5)
