"""Score parameterizations: every prediction type recovers the exact score of a mixture."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.toy import demo_mixture

SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()]


@pytest.mark.parametrize("sde", SDES, ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "score", "v"])
def test_every_prediction_type_gives_the_score(sde, prediction):
    gm = demo_mixture()
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    true_score = gm.score(x, t, sde)
    alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(t, x))
    eps = -sigma * true_score  # written out here, independently of the library's conversions
    x0 = (x + sigma**2 * true_score) / alpha
    v = alpha * eps - sigma * x0
    outputs = {"eps": eps, "x0": x0, "score": true_score, "v": v}

    def network(x_in, label):
        assert torch.equal(label, t)
        return outputs[prediction]

    got = sd.ModelScore(network, sde, prediction=prediction)(x, t)
    torch.testing.assert_close(got, true_score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sd.x0_from_score(sde, x, t, true_score), x0)
    torch.testing.assert_close(sd.eps_from_score(sde, x, t, true_score), eps)


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


def test_model_score_errors():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match="prediction"):
        sd.ModelScore(lambda x, t: x, sde, prediction="noise")
    with pytest.raises(ValueError, match="time_input"):
        sd.ModelScore(lambda x, t: x, sde, time_input="999t")
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
