"""SDE classes against closed forms, DDPM/SMLD tables and independent simulations."""

import itertools
import math

import numpy as np
import pytest
import torch

import scoresde as sd

SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()]
IDS = ["vp", "subvp", "ve"]


def closed_form(sde, t):
    """Mean coefficient and std written out from the paper's appendix B, independently of the library."""
    if isinstance(sde, sd.VESDE):
        return np.ones_like(t), sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    b0, b1 = sde.beta_min, sde.beta_max
    integral = b0 * t + 0.5 * (b1 - b0) * t**2
    mean = np.exp(-0.5 * integral)
    if isinstance(sde, sd.SubVPSDE):
        return mean, 1.0 - np.exp(-integral)
    return mean, np.sqrt(1.0 - np.exp(-integral))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_closed_forms(sde):
    t = np.array([1e-5, 1e-3, 0.1, 0.5, 0.9, 1.0])
    x0 = torch.linspace(-2, 2, 6, dtype=torch.float64)[:, None, None].expand(6, 2, 3)
    mean, std = sde.marginal_prob(x0, torch.tensor(t))
    coef, want_std = closed_form(sde, t)
    np.testing.assert_allclose(std.numpy(), want_std, rtol=1e-10)
    np.testing.assert_allclose(mean.numpy(), coef[:, None, None] * x0.numpy(), rtol=1e-10)


def test_reference_numbers():
    """The numbers the reference code's users know (score_sde.md, section 2a)."""
    vp, subvp = sd.VPSDE(), sd.SubVPSDE()
    x = torch.zeros(1, 1, dtype=torch.float64)
    assert float(vp.marginal_prob(x, 1e-3)[1]) == pytest.approx(0.01049, abs=5e-6)
    # the reference lists 0.001007 at t=1e-5, the float32 value of 1 - exp(-1.000995e-6); in float64 it is:
    assert float(vp.marginal_prob(x, 1e-5)[1]) == pytest.approx(math.sqrt(1.000995e-6), rel=1e-6)
    assert float(vp.marginal_coeffs(1.0, x)[0]) == pytest.approx(0.00657, abs=5e-6)
    assert float(subvp.marginal_prob(x, 1e-3)[1]) == pytest.approx(1.10e-4, rel=5e-3)
    assert float(subvp.marginal_prob(x, 0.5)[1]) == pytest.approx(0.921, abs=5e-4)


@pytest.mark.parametrize("sde", [*SDES, sd.VPSDE(1.0, 1.0)], ids=[*IDS, "ou"])
def test_marginals_solve_the_moment_odes(sde):
    """For dx = a(t) x dt + g dw the kernel obeys d(alpha)/dt = a alpha and d(var)/dt = 2 a var + g^2."""
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)
    h = 1e-6
    ones = torch.ones(5, 1, dtype=torch.float64)
    drift, g = sde.sde(ones, t)
    a = drift[:, 0]
    alpha, sigma = sde.marginal_coeffs(t, ones)
    alpha_p, sigma_p = sde.marginal_coeffs(t + h, ones)
    alpha_m, sigma_m = sde.marginal_coeffs(t - h, ones)
    dalpha = (alpha_p - alpha_m) / (2 * h)
    dvar = (sigma_p**2 - sigma_m**2) / (2 * h)
    torch.testing.assert_close(dalpha, a * alpha, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dvar, 2 * a * sigma**2 + g**2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_a_simulated_forward_sde(sde):
    """Simulate the forward SDE with fine Euler-Maruyama and compare the empirical moments."""
    gen = torch.Generator().manual_seed(0)
    n, steps, t_end = 40_000, 400, 0.3
    x = torch.full((n, 1), 0.7, dtype=torch.float64)
    dt = t_end / steps
    for i in range(steps):
        drift, g = sde.sde(x, i * dt)
        x = x + drift * dt + g[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    mean, std = sde.marginal_prob(torch.full((1, 1), 0.7, dtype=torch.float64), t_end)
    if isinstance(sde, sd.VESDE):  # the kernel std includes sigma_min, the simulation starts noise-free
        std = torch.sqrt(std**2 - sde.sigma_min**2)
    assert float(x.mean()) == pytest.approx(float(mean), abs=4 * float(std) / math.sqrt(n) + 1e-3)
    assert float(x.std()) == pytest.approx(float(std), rel=0.02)


def test_vp_discretize_is_ddpm_at_n1000():
    """DDPM's betas linspace(1e-4, 0.02, 1000) and alphas_cumprod, computed independently."""
    sde = sd.VPSDE()
    betas = np.linspace(1e-4, 0.02, 1000)
    alphas_cumprod = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(sde.discrete_alphas_cumprod().numpy(), alphas_cumprod, rtol=1e-12)
    i = np.arange(1000)
    t = torch.tensor(i / 999.0, dtype=torch.float64)
    x = torch.full((1000, 1), 2.0, dtype=torch.float64)
    f, G = sde.discretize(x, t)
    np.testing.assert_allclose(G.numpy() ** 2, betas, rtol=1e-9)
    np.testing.assert_allclose(f[:, 0].numpy(), (np.sqrt(1 - betas) - 1) * 2.0, rtol=1e-9)
    # the continuous kernel at t_i = (i + 1)/N tracks DDPM's alphas_cumprod
    abar = sde.marginal_coeffs(torch.tensor((i + 1) / 1000.0), x)[0].numpy() ** 2
    np.testing.assert_allclose(abar, alphas_cumprod, atol=2e-3)


def test_ve_discretize_is_smld_at_n1000():
    sde = sd.VESDE()
    sigmas = np.exp(np.linspace(np.log(0.01), np.log(50.0), 1000))
    np.testing.assert_allclose(sde.discrete_sigmas().numpy(), sigmas, rtol=1e-12)
    t = torch.tensor(np.arange(1000) / 999.0)
    f, G = sde.discretize(torch.ones(1000, 3, dtype=torch.float64), t)
    prev = np.concatenate([[0.0], sigmas[:-1]])
    np.testing.assert_allclose(G.numpy() ** 2, sigmas**2 - prev**2, rtol=1e-9)
    assert float(f.abs().max()) == 0.0


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["vp", "ve"])
def test_discretize_with_a_step_telescopes_to_the_kernel(sde):
    """Composing the step rule over any grid reproduces the exact kernel variance (no drift error)."""
    grid = np.sort(np.random.default_rng(0).uniform(0.01, 1.0, 37))
    grid = np.concatenate([[0.01], grid, [1.0]])
    ones = torch.ones(1, 1, dtype=torch.float64)
    keep, var = 1.0, float(sde.marginal_coeffs(0.01, ones)[1]) ** 2
    for s, t in itertools.pairwise(grid):
        if t - s < 1e-12:
            continue
        f, G = sde.discretize(ones, float(t), dt=float(t - s))
        a = 1.0 + float(f[0, 0])
        keep, var = keep * a, a * a * var + float(G[0]) ** 2
    alpha_end, sigma_end = sde.marginal_coeffs(1.0, ones)
    alpha_start = float(sde.marginal_coeffs(0.01, ones)[0])
    assert keep * alpha_start == pytest.approx(float(alpha_end), rel=1e-9)
    assert var == pytest.approx(float(sigma_end) ** 2, rel=1e-9)


def test_subvp_discretize_is_euler_maruyama():
    sde = sd.SubVPSDE()
    x = torch.randn(4, 2, dtype=torch.float64)
    f, G = sde.discretize(x, 0.5)
    drift, g = sde.sde(x, 0.5)
    torch.testing.assert_close(f, drift / 1000)
    torch.testing.assert_close(G, g * math.sqrt(1 / 1000))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_sde_and_probability_flow_coefficients(sde):
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.full((5,), 0.4, dtype=torch.float64)
    score = torch.randn(5, 3, dtype=torch.float64)
    drift, g = sde.sde(x, t)
    rev_drift, rev_g = sde.reverse(lambda x, t: score).sde(x, t)
    torch.testing.assert_close(rev_drift, drift - g[:, None] ** 2 * score)
    torch.testing.assert_close(rev_g, g)
    ode_drift, ode_g = sde.reverse(lambda x, t: score, probability_flow=True).sde(x, t)
    torch.testing.assert_close(ode_drift, drift - 0.5 * g[:, None] ** 2 * score)
    assert isinstance(ode_g, torch.Tensor) and ode_g.shape == (5,) and float(ode_g.abs().max()) == 0.0
    f, G = sde.discretize(x, t)
    rf, rG = sde.reverse(lambda x, t: score, probability_flow=True).discretize(x, t)
    torch.testing.assert_close(rf, f - 0.5 * G[:, None] ** 2 * score)
    assert rG.shape == (5,) and float(rG.abs().max()) == 0.0


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior(sde):
    gen = torch.Generator().manual_seed(3)
    z = sde.prior_sampling((7, 2, 4, 4), generator=gen, dtype=torch.float64)
    assert z.shape == (7, 2, 4, 4) and z.dtype == torch.float64
    z2 = sde.prior_sampling((7, 2, 4, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(z, z2)
    scale = sde.sigma_max if isinstance(sde, sd.VESDE) else 1.0
    want = torch.distributions.Normal(0.0, scale).log_prob(z).reshape(7, -1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), want)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_time_broadcasting_dtype_and_errors(sde):
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    m1, s1 = sde.marginal_prob(x, 0.3)
    m2, s2 = sde.marginal_prob(x, torch.tensor(0.3))
    m3, s3 = sde.marginal_prob(x, torch.full((4,), 0.3))
    assert m1.dtype == s1.dtype == torch.float64 and s1.shape == (4,)
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(s1, s3)
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        sde.marginal_prob(x, torch.full((3,), 0.3))
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        sde.sde(x, torch.full((4, 1), 0.3))
    with pytest.raises(ValueError, match="outside|lie in"):
        sde.sde(x, 1.5)
    with pytest.raises(ValueError, match="outside|lie in"):
        sde.marginal_prob(x, torch.tensor([0.1, 0.2, -0.1, 0.3]))
    with pytest.raises(ValueError, match="outside|lie in"):
        sde.sde(x, float("nan"))
    with pytest.raises(ValueError, match="start before 0"):
        sde.discretize(x, 0.01, dt=0.1)


def test_constructor_validation():
    with pytest.raises(ValueError):
        sd.VPSDE(beta_min=-1)
    with pytest.raises(ValueError):
        sd.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        sd.VPSDE(N=1)


class OrnsteinUhlenbeck(sd.SDE):
    """A user-defined SDE: dx = -x/2 dt + dw, written only with T, sde and marginal_prob."""

    @property
    def T(self):
        return 2.0

    def sde(self, x, t):
        t = self._time(t, x)
        return -0.5 * x, torch.ones_like(t)

    def marginal_prob(self, x0, t):
        t = self._time(t, x0)
        return torch.exp(-0.5 * t).reshape(-1, *[1] * (x0.ndim - 1)) * x0, torch.sqrt(1 - torch.exp(-t))


def test_user_defined_sde_gets_the_defaults():
    sde = OrnsteinUhlenbeck()
    x = torch.randn(3, 2, dtype=torch.float64)
    alpha, sigma = sde.marginal_coeffs(torch.full((3,), 1.2, dtype=torch.float64), x)
    torch.testing.assert_close(alpha, torch.full((3,), math.exp(-0.6), dtype=torch.float64))
    torch.testing.assert_close(sigma, torch.full((3,), math.sqrt(1 - math.exp(-1.2)), dtype=torch.float64))
    assert sde.prior_std() == pytest.approx(math.sqrt(1 - math.exp(-2.0)))
    f, G = sde.discretize(x, 1.0)  # Euler-Maruyama with dt = T/N
    torch.testing.assert_close(f, -0.5 * x * 2.0 / 1000)
    torch.testing.assert_close(G, torch.full((3,), math.sqrt(2.0 / 1000), dtype=torch.float64))
    with pytest.raises(TypeError):
        sd.SDE()  # abstract


def test_float32_times_at_a_non_representable_T():
    """T = 0.999 is not a float32 number; float32 time tensors at T must still be accepted."""

    class Short(sd.VPSDE):
        @property
        def T(self):
            return 0.999

    sde = Short()
    x = torch.zeros(3, 2)
    sde.sde(x, torch.full((3,), 0.999))
    sde.marginal_prob(x, 0.999)
    with pytest.raises(ValueError):
        sde.sde(x, torch.full((3,), 0.9995))


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool], ids=["int64", "uint8", "bool"])
@pytest.mark.parametrize("sde", [*SDES, OrnsteinUhlenbeck()], ids=[*IDS, "user"])
def test_non_float_data_is_refused(sde, dtype):
    """Integer data used to truncate t to its dtype (VP std 0 at t=0.5); every method refuses it in one line."""
    x = torch.ones(4, 3, dtype=dtype)
    score = lambda x, t: x  # noqa: E731
    calls = {
        "sde": lambda: sde.sde(x, 0.5),
        "marginal_prob": lambda: sde.marginal_prob(x, 0.5),
        "marginal_coeffs": lambda: sde.marginal_coeffs(0.5, x),
        "discretize": lambda: sde.discretize(x, 0.5),
        "discretize dt": lambda: sde.discretize(x, 0.5, dt=0.1),
        "reverse sde": lambda: sde.reverse(score).sde(x, 0.5),
        "reverse ode": lambda: sde.reverse(score, probability_flow=True).sde(x, 0.5),
        "reverse discretize": lambda: sde.reverse(score).discretize(x, 0.5),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^x must be a floating-point tensor, got {dtype}") as err:
            call()
        assert "\n" not in str(err.value), name
    with pytest.raises(TypeError, match=rf"^z must be a floating-point tensor, got {dtype}"):
        sde.prior_logp(x)
    with pytest.raises(TypeError, match="floating-point"):
        sde.prior_sampling((2, 3), dtype=dtype)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_integer_and_float64_times_are_converted_to_the_data_dtype(sde):
    """Integer time tensors are times (0 and T here); float64 times with float32 data give float32 results."""
    x = torch.randn(2, 3)
    m_int, s_int = sde.marginal_prob(x, torch.tensor([0, 1]))
    m_flt, s_flt = sde.marginal_prob(x, torch.tensor([0.0, 1.0]))
    assert s_int.dtype == m_int.dtype == torch.float32
    torch.testing.assert_close(s_int, s_flt)
    torch.testing.assert_close(m_int, m_flt)
    m64, s64 = sde.marginal_prob(x, torch.tensor([0.25, 1.0], dtype=torch.float64))
    assert m64.dtype == s64.dtype == torch.float32
    torch.testing.assert_close(s64, sde.marginal_prob(x, torch.tensor([0.25, 1.0]))[1])
    with pytest.raises(ValueError, match="lie in"):
        sde.marginal_prob(x, torch.tensor([0, 2]))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_bool_and_complex_times_are_refused(sde):
    """A bool time tensor used to become 1.0/0.0 silently, a complex one lost its imaginary part."""
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match="t must be a real"):
        sde.marginal_prob(x, torch.tensor([True, False]))
    with pytest.raises(TypeError, match="t must be a real"):
        sde.sde(x, torch.tensor([0.5, 0.5], dtype=torch.complex64))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_sde_checks_the_score_shape(sde):
    """A score of shape [B, 1] used to broadcast silently against the drift [B, D]."""
    x = torch.randn(4, 3)
    for bad in (lambda x, t: x[:, :1], lambda x, t: x[0], lambda x, t: None):
        for rev in (sde.reverse(bad), sde.reverse(bad, probability_flow=True)):
            with pytest.raises(ValueError, match=r"score_fn must return a tensor shaped like x \(4, 3\)"):
                rev.sde(x, 0.5)
            with pytest.raises(ValueError, match=r"score_fn must return a tensor shaped like x \(4, 3\)"):
                rev.discretize(x, 0.5)
    with pytest.raises(TypeError, match="callable"):
        sde.reverse(None)


def test_constructors_refuse_infinite_and_non_integer_parameters():
    """An infinite beta_max or sigma_max used to be accepted (prior std inf); N=nan raised a bare int() error."""
    with pytest.raises(ValueError, match="beta_max"):
        sd.VPSDE(beta_max=math.inf)
    with pytest.raises(ValueError, match="beta_max"):
        sd.SubVPSDE(beta_max=math.inf)
    with pytest.raises(ValueError, match="sigma_max"):
        sd.VESDE(sigma_max=math.inf)
    for n in (math.nan, math.inf, "1000", 2.5, True):
        with pytest.raises(ValueError, match="N must be an integer >= 2"):
            sd.VPSDE(N=n)
