"""The seeds' worked example (seed 001, "Probability-flow-ODE single-step integration").

VP SDE with constant beta = 1: dx = -1/2 x dt + dW, i.e. ``VPSDE(beta_min=1, beta_max=1)``.
"""

import math

import pytest
import torch

import scoresde as sd

SDE = sd.VPSDE(beta_min=1.0, beta_max=1.0)


def eps_model(value):
    """A 'trained noise predictor' that outputs a constant."""
    return lambda x, label: torch.full_like(x, value)


def test_single_step_of_the_probability_flow_ode():
    x = torch.tensor([[1.2]], dtype=torch.float64)
    # Step 1: retention e^{-1/4} = 0.779, variance 1 - e^{-1/2} = 0.393, std 0.627
    alpha, sigma = SDE.marginal_coeffs(0.5, x)
    assert float(alpha) == pytest.approx(0.779, abs=5e-4)
    assert float(sigma) ** 2 == pytest.approx(0.393, abs=5e-4)
    assert float(sigma) == pytest.approx(0.627, abs=5e-4)
    # Step 2: score = -0.8 / 0.627 = -1.27
    score_fn = sd.ModelScore(eps_model(0.8), SDE, prediction="eps")
    score = score_fn(x, 0.5)
    assert float(score) == pytest.approx(-1.27, abs=0.006)
    # Step 3: probability-flow drift -0.6 + 0.635 = 0.035. The seed rounds the score to -1.27 first;
    # with that score the drift is exactly 0.035, with the unrounded score it is 0.0376.
    flow = SDE.reverse(lambda x, t: torch.full_like(x, -1.27), probability_flow=True)
    assert float(flow.sde(x, 0.5)[0]) == pytest.approx(0.035, abs=1e-12)
    exact_drift = float(SDE.reverse(score_fn, probability_flow=True).sde(x, 0.5)[0])
    assert exact_drift == pytest.approx(-0.6 + 0.5 * 0.8 / math.sqrt(1 - math.exp(-0.5)), abs=1e-12)
    assert exact_drift == pytest.approx(0.035, abs=0.003)
    # Step 4: one backward Euler step of 0.05 lands at 1.198
    x_next = sd.integrators.fixed_step(sd.sampling.probability_flow_ode(SDE, score_fn), x, [0.5, 0.45], method="euler")
    assert float(x_next) == pytest.approx(1.198, abs=5e-4)
    assert float(x_next) == pytest.approx(1.2 - 0.05 * exact_drift, abs=1e-12)


@pytest.mark.parametrize(("t", "std", "score"), [(0.25, 0.470, -1.28), (0.5, 0.627, -0.96), (0.75, 0.727, -0.83)])
def test_three_timestep_conversion_table(t, std, score):
    x = torch.tensor([[0.3]], dtype=torch.float64)
    assert float(SDE.marginal_coeffs(t, x)[1]) == pytest.approx(std, abs=1e-3)
    got = float(sd.ModelScore(eps_model(0.6), SDE, prediction="eps")(x, t))
    assert got == pytest.approx(score, abs=0.005)
    assert got == pytest.approx(-0.6 / math.sqrt(1 - math.exp(-t)), rel=1e-12)
