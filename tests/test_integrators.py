"""ODE integrators against exact solutions."""

import math

import pytest
import torch

from scoresde.integrators import dopri5, fixed_step


def decay(rate):
    """dy/dt = -rate_i * y, per-sample rates, exact solution y0 exp(-rate (t - t0))."""

    def f(t, y, idx):
        r = rate if idx is None else rate[idx]
        return -r[:, None] * y

    return f


@pytest.mark.parametrize(("t0", "t1"), [(0.0, 2.0), (2.0, 0.5)])
@pytest.mark.parametrize("error_norm", ["sample", "batch"])
def test_dopri5_matches_the_exact_solution(t0, t1, error_norm):
    rate = torch.tensor([0.5, 1.0, 3.0, 10.0], dtype=torch.float64)
    y0 = torch.ones(4, 3, dtype=torch.float64)
    y1, nfe = dopri5(decay(rate), y0, t0, t1, rtol=1e-8, atol=1e-10, error_norm=error_norm)
    exact = torch.exp(-rate * (t1 - t0))[:, None].expand(4, 3)
    torch.testing.assert_close(y1, exact, rtol=2e-6, atol=1e-8)
    assert 8 < nfe < 2000


def test_dopri5_tolerance_controls_the_error():
    rate = torch.tensor([2.0], dtype=torch.float64)
    y0 = torch.ones(1, 1, dtype=torch.float64)
    errors, costs = [], []
    for tol in (1e-3, 1e-6, 1e-9):
        y1, nfe = dopri5(decay(rate), y0, 0.0, 3.0, rtol=tol, atol=tol)
        errors.append(abs(float(y1) - math.exp(-6.0)))
        costs.append(nfe)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-9
    assert costs[0] < costs[1] < costs[2]


def test_per_sample_control_is_independent_of_the_batch():
    """With per-sample error control a row's result does not depend on its neighbours."""
    rate = torch.tensor([1.0, 40.0], dtype=torch.float64)
    y0 = torch.ones(2, 2, dtype=torch.float64)
    together, _ = dopri5(decay(rate), y0, 0.0, 1.0, rtol=1e-5, atol=1e-5)
    alone, _ = dopri5(decay(rate[:1]), y0[:1], 0.0, 1.0, rtol=1e-5, atol=1e-5)
    assert torch.equal(together[:1], alone)
    batch_mode, _ = dopri5(decay(rate), y0, 0.0, 1.0, rtol=1e-5, atol=1e-5, error_norm="batch")
    assert not torch.equal(batch_mode[:1], alone)  # the stiff neighbour changes the shared steps


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_fixed_step_convergence_order(method, order):
    rate = torch.tensor([1.5], dtype=torch.float64)
    y0 = torch.ones(1, 1, dtype=torch.float64)
    errs = []
    for n in (20, 40):
        ts = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64).tolist()
        errs.append(abs(float(fixed_step(decay(rate), y0, ts, method)) - math.exp(-1.5)))
    assert math.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.15)


def test_dopri5_errors():
    def bad(t, y, idx):
        return torch.full_like(y, math.nan)

    with pytest.raises(FloatingPointError):
        dopri5(bad, torch.ones(2, 2), 0.0, 1.0)
    with pytest.raises(ValueError, match="error_norm"):
        dopri5(decay(torch.ones(2)), torch.ones(2, 2), 0.0, 1.0, error_norm="max")
    with pytest.raises(ValueError, match="rtol"):
        dopri5(decay(torch.ones(2)), torch.ones(2, 2), 0.0, 1.0, rtol=0.0)


def test_dopri5_agrees_with_scipy_rk45_on_a_nonlinear_system():
    """Lotka-Volterra, integrated independently by scipy's RK45 at tight tolerance."""
    integrate = pytest.importorskip("scipy.integrate")

    def lotka(t, y, idx=None):
        a, b = y[:, 0], y[:, 1]
        return torch.stack([1.5 * a - a * b, -3.0 * b + a * b], dim=1)

    y0 = torch.tensor([[10.0, 5.0], [1.0, 1.0], [4.0, 2.0]], dtype=torch.float64)
    ours, _ = dopri5(lotka, y0, 0.0, 4.0, rtol=1e-10, atol=1e-10)
    for row in range(3):
        ref = integrate.solve_ivp(
            lambda t, y: lotka(t, torch.tensor(y)[None])[0].numpy(), (0.0, 4.0), y0[row].numpy(),
            method="RK45", rtol=1e-11, atol=1e-11,
        )  # fmt: skip
        torch.testing.assert_close(ours[row], torch.tensor(ref.y[:, -1]), rtol=1e-7, atol=1e-7)


@pytest.mark.filterwarnings("ignore::scoresde.sampling.SamplingDivergenceWarning")  # an untrained network
def test_adaptive_sampling_of_a_network_is_batch_independent_in_float64():
    """The probability-flow rk45 chooses each sample's steps itself: in float64 a sample drawn in a batch of 8 is the
    one drawn in a batch of 4 to rounding (in float32 a flipped step acceptance may move it within the tolerance)."""
    import scoresde as sd

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 1, 3, padding=1))
    model = sd.ScoreModel(lambda_net(net), sd.VPSDE(), data_shape=(1, 4, 4)).double()
    eight = sd.sample(model, n=8, sampler="ode", generator=sd.SampleNoise(0, 8), dtype=torch.float64)
    four = sd.sample(model, n=4, sampler="ode", generator=sd.SampleNoise(0, 4), dtype=torch.float64)
    torch.testing.assert_close(eight[:4], four, atol=1e-11, rtol=0)


def lambda_net(net):
    class TimeFree(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(x) * (1 + t.reshape(-1, 1, 1, 1) / 1000)

    return TimeFree()
