"""Score parameterizations: every prediction type recovers the exact score of a mixture."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.toy import demo_mixture

SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), sd.CosineVPSDE(), sd.RectifiedFlow(), sd.EDMSDE()]
SDE_IDS = ["vp", "subvp", "ve", "cosine", "rf", "edm"]
SIGMA_DATA = 0.7


def kernel_derivatives(sde, t, h=1e-6):
    """(d alpha/dt, d sigma/dt) by central differences of the kernel (independent of the library's derivatives)."""
    (ap, sp), (am, sm) = (sde.marginal_coeffs(u, u) for u in (t + h, t - h))
    return (ap - am) / (2 * h), (sp - sm) / (2 * h)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("prediction", ["eps", "x0", "score", "v", "velocity", "edm"])
def test_every_prediction_type_gives_the_score(sde, prediction):
    gm = demo_mixture()
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    t = (torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05) * sde.T
    true_score = gm.score(x, t, sde)
    alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(t, x))
    eps = -sigma * true_score  # written out here, independently of the library's conversions
    x0 = (x + sigma**2 * true_score) / alpha
    v = alpha * eps - sigma * x0
    d_alpha, d_sigma = (c[:, None] for c in kernel_derivatives(sde, t))
    velocity = d_alpha * x0 + d_sigma * eps  # u = alpha' x0 + sigma' eps
    edm_sigma = sigma / alpha  # EDM in the scaled state x / alpha: D(x / alpha) = x0
    c_skip = SIGMA_DATA**2 / (edm_sigma**2 + SIGMA_DATA**2)
    c_out = edm_sigma * SIGMA_DATA / torch.sqrt(edm_sigma**2 + SIGMA_DATA**2)
    c_in = 1 / torch.sqrt(edm_sigma**2 + SIGMA_DATA**2)
    edm = (x0 - c_skip * x / alpha) / c_out
    outputs = {"eps": eps, "x0": x0, "score": true_score, "v": v, "velocity": velocity, "edm": edm}

    def network(x_in, label):
        assert torch.equal(label, t)
        torch.testing.assert_close(x_in, c_in * x / alpha if prediction == "edm" else x, rtol=1e-12, atol=0)
        return outputs[prediction]

    got = sd.ModelScore(network, sde, prediction=prediction, sigma_data=SIGMA_DATA)(x, t)
    torch.testing.assert_close(got, true_score, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(sd.x0_from_score(sde, x, t, true_score), x0)
    torch.testing.assert_close(sd.eps_from_score(sde, x, t, true_score), eps)
    # the inverse map gives the output back
    back = sd.output_from_score(sde, x, t, true_score, prediction, sigma_data=SIGMA_DATA)
    torch.testing.assert_close(back, outputs[prediction], rtol=1e-7, atol=1e-9)


def test_time_inputs_are_explicit():
    sde = sd.VESDE()
    seen = {}

    def network(x, label):
        seen["label"] = label
        return torch.zeros_like(x)

    x = torch.zeros(2, 3, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    sd.ModelScore(network, sde, prediction="score", time_input="t", time_scale=999)(x, t)
    torch.testing.assert_close(seen["label"], 999 * t)
    sd.ModelScore(network, sde, prediction="score", time_input="sigma")(x, t)
    torch.testing.assert_close(seen["label"], 0.01 * 5000**t)
    sd.ModelScore(network, sde, prediction="score", time_input="log_sigma")(x, t)
    torch.testing.assert_close(seen["label"], torch.log(0.01 * 5000**t))
    sd.ModelScore(network, sde, prediction="score", time_input=lambda t: 1 - t)(x, t)
    torch.testing.assert_close(seen["label"], 1 - t)
    sd.ModelScore(network, sde, prediction="score", time_input="c_noise", time_scale=250)(x, t)
    torch.testing.assert_close(seen["label"], 250 * 0.25 * torch.log(0.01 * 5000**t))  # EDM's ln(sigma) / 4
    rf = sd.RectifiedFlow()
    sd.ModelScore(network, rf, prediction="score", time_input="c_noise")(x, t)
    torch.testing.assert_close(seen["label"], 0.25 * torch.log(t / (1 - t)))  # ln(sigma / alpha) / 4


def test_model_score_errors():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="prediction"):
        sd.ModelScore(lambda x, t: x, sde, prediction="noise")
    with pytest.raises(ValueError, match="time_input"):
        sd.ModelScore(lambda x, t: x, sde, time_input="999t")
    with pytest.raises(ValueError, match="sigma_data must be a finite number > 0"):
        sd.ModelScore(lambda x, t: x, sde, prediction="edm", sigma_data=0.0)
    bad = sd.ModelScore(lambda x, t: x[:, :1], sde)
    with pytest.raises(ValueError, match="shaped like x"):
        bad(torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="lie in|outside"):
        sd.ModelScore(lambda x, t: x, sde)(torch.zeros(2, 3), torch.tensor([0.5, 1.5]))


def test_counted_score_counts_and_checks():
    counted = sd.CountedScore(lambda x, t: torch.zeros_like(x))
    for _ in range(3):
        counted(torch.zeros(2, 2), torch.zeros(2))
    assert counted.nfe == 3
    nan = sd.CountedScore(lambda x, t: torch.full_like(x, math.nan))
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        nan(torch.zeros(2, 2), torch.zeros(2))
    wrong = sd.CountedScore(lambda x, t: torch.zeros(3))
    with pytest.raises(ValueError, match="shaped like x"):
        wrong(torch.zeros(2, 2), torch.zeros(2))
