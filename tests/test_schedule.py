"""The schedule view (``sde.schedule``) against the kernel formulas written out here, independently of the library.

VP:     B(t) = b0 t + (b1 - b0) t^2 / 2,  alpha = exp(-B/2),  sigma = sqrt(1 - exp(-B))
sub-VP: the same alpha,                   sigma = 1 - exp(-B)
VE:     alpha = 1,                        sigma = smin (smax/smin)^t
and for every SDE log_snr = log(alpha/sigma), edm_sigma = sigma/alpha = exp(-log_snr).
"""

import math

import pytest
import torch

import scoresde as sd
from scoresde.sde import SDE

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops: a second intra-op thread only waits

SDES = {
    "vp": sd.VPSDE(),
    "vp-flat": sd.VPSDE(beta_min=1.0, beta_max=1.0),  # beta_min == beta_max: B(t) is linear
    "vp-gentle": sd.VPSDE(beta_min=0.05, beta_max=5.0),
    "subvp": sd.SubVPSDE(),
    "subvp-flat": sd.SubVPSDE(beta_min=2.0, beta_max=2.0),
    "ve": sd.VESDE(),
    "ve-narrow": sd.VESDE(sigma_min=0.1, sigma_max=1.0),
    "ve-wide": sd.VESDE(sigma_min=1e-3, sigma_max=100.0),
}
# times spanning the sampling range, densest near the data
TIMES = torch.cat(
    [torch.logspace(-5, 0, 121, dtype=torch.float64), torch.linspace(0.05, 0.95, 19, dtype=torch.float64)]
)


def kernel(sde, t):
    """(alpha, sigma) from the formulas above, in float64 (``t`` a float64 tensor)."""
    if isinstance(sde, sd.VESDE):
        return torch.ones_like(t), sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    b0, b1 = sde.beta_min, sde.beta_max
    big_b = b0 * t + (b1 - b0) * t**2 / 2
    alpha = torch.exp(-big_b / 2)
    if isinstance(sde, sd.SubVPSDE):
        return alpha, -torch.expm1(-big_b)
    return alpha, torch.sqrt(-torch.expm1(-big_b))


def log_snr(sde, t):
    alpha, sigma = kernel(sde, t)
    return torch.log(alpha) - torch.log(sigma)


# -- a user's SDE: only T, sde and marginal_prob ------------------------------------------------------------------
C = 0.45 * math.pi


class CosineSDE(SDE):
    """A variance-preserving SDE with alpha = cos(C t), sigma = sin(C t) (C < pi/2 keeps alpha > 0 on [0, 1]).

    VP means d(alpha^2)/dt = -beta alpha^2, so beta(t) = 2 C tan(C t). Its inverses are closed forms
    (t = atan(exp(-lambda))/C, t = asin(sigma)/C) that the library does not know: it must bisect.
    """

    @property
    def T(self):
        return 1.0

    def sde(self, x, t):
        t = self._time(t, x)
        beta = 2 * C * torch.tan(C * t)
        return -0.5 * beta.reshape(-1, *[1] * (x.ndim - 1)) * x, torch.sqrt(beta)

    def marginal_prob(self, x0, t):
        t = self._time(t, x0)
        return torch.cos(C * t).reshape(-1, *[1] * (x0.ndim - 1)) * x0, torch.sin(C * t)


# -- forward coefficients ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SDES))
def test_alpha_sigma_log_snr_and_edm_sigma_match_the_formulas(name):
    sde = SDES[name]
    schedule = sde.schedule
    alpha, sigma = kernel(sde, TIMES)
    torch.testing.assert_close(schedule.alpha(TIMES), alpha, rtol=1e-13, atol=0)
    torch.testing.assert_close(schedule.sigma(TIMES), sigma, rtol=1e-12, atol=0)
    torch.testing.assert_close(schedule.log_snr(TIMES), torch.log(alpha / sigma), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(schedule.edm_sigma(TIMES), sigma / alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(schedule.edm_sigma(TIMES), torch.exp(-schedule.log_snr(TIMES)), rtol=1e-13, atol=0)
    # floats give the same numbers
    for t in (1e-5, 0.3, 1.0):
        ref_alpha, ref_sigma = (float(c) for c in kernel(sde, torch.tensor(t, dtype=torch.float64)))
        assert schedule.alpha(t) == pytest.approx(ref_alpha, rel=1e-13)
        assert schedule.sigma(t) == pytest.approx(ref_sigma, rel=1e-12)
        assert schedule.log_snr(t) == pytest.approx(math.log(ref_alpha / ref_sigma), rel=1e-12, abs=1e-12)
        assert schedule.edm_sigma(t) == pytest.approx(ref_sigma / ref_alpha, rel=1e-12)
        assert schedule.coeffs(t) == pytest.approx((ref_alpha, ref_sigma, math.log(ref_alpha / ref_sigma)), rel=1e-12)


def test_user_sde_coefficients_come_from_its_marginal_prob():
    sde = CosineSDE()
    schedule = sde.schedule
    torch.testing.assert_close(schedule.alpha(TIMES), torch.cos(C * TIMES), rtol=1e-14, atol=0)
    torch.testing.assert_close(schedule.sigma(TIMES), torch.sin(C * TIMES), rtol=1e-14, atol=0)
    cot = torch.cos(C * TIMES) / torch.sin(C * TIMES)
    torch.testing.assert_close(schedule.log_snr(TIMES), torch.log(cot), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(schedule.edm_sigma(TIMES), 1 / cot, rtol=1e-12, atol=0)


# -- inverses -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SDES))
def test_closed_form_inverses_round_trip_and_agree_with_bisection(name):
    sde = SDES[name]
    schedule = sde.schedule
    alpha, sigma = kernel(sde, TIMES)
    lam = torch.log(alpha) - torch.log(sigma)
    torch.testing.assert_close(schedule.t_from_log_snr(lam), TIMES, rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule.t_from_sigma(sigma), TIMES, rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule.t_from_edm_sigma(sigma / alpha), TIMES, rtol=0, atol=1e-12)
    # the SDE's closed forms are its own: the base class's generic bisection finds the same times
    assert type(sde).t_from_log_snr is not SDE.t_from_log_snr
    assert type(sde).t_from_sigma is not SDE.t_from_sigma
    torch.testing.assert_close(SDE.t_from_log_snr(sde, lam), sde.t_from_log_snr(lam), rtol=0, atol=1e-12)
    torch.testing.assert_close(SDE.t_from_sigma(sde, sigma), sde.t_from_sigma(sigma), rtol=0, atol=1e-12)
    torch.testing.assert_close(SDE.t_from_log_snr(sde, lam), TIMES, rtol=0, atol=1e-12)
    # floats
    for t in (1e-5, 0.25, 0.999):
        a, s = (float(c) for c in kernel(sde, torch.tensor(t, dtype=torch.float64)))
        assert schedule.t_from_log_snr(math.log(a / s)) == pytest.approx(t, rel=0, abs=1e-12)
        assert schedule.t_from_sigma(s) == pytest.approx(t, rel=0, abs=1e-12)
        assert schedule.t_from_edm_sigma(s / a) == pytest.approx(t, rel=0, abs=1e-12)


def test_user_sde_gets_bisection_inverses():
    sde = CosineSDE()
    schedule = sde.schedule
    lam = torch.log(torch.cos(C * TIMES) / torch.sin(C * TIMES))
    # the closed forms of this SDE, which the library never sees
    torch.testing.assert_close(torch.atan(torch.exp(-lam)) / C, TIMES, rtol=0, atol=1e-13)
    torch.testing.assert_close(schedule.t_from_log_snr(lam), TIMES, rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule.t_from_sigma(torch.sin(C * TIMES)), TIMES, rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule.t_from_edm_sigma(torch.exp(-lam)), TIMES, rtol=0, atol=1e-12)
    for lam_value in (-1.5, 0.0, 1.5, 8.0):
        expected = math.atan(math.exp(-lam_value)) / C
        assert schedule.t_from_log_snr(lam_value) == pytest.approx(expected, rel=0, abs=1e-12)
    assert schedule.t_from_sigma(0.5) == pytest.approx(math.asin(0.5) / C, rel=0, abs=1e-12)
    # a grid built on it is equally spaced in the log-SNR written here
    ts = torch.tensor(sd.time_grid(sde, 10, 1e-3, "log_snr"), dtype=torch.float64)
    steps = torch.diff(torch.log(torch.cos(C * ts) / torch.sin(C * ts)))
    torch.testing.assert_close(steps, steps.mean().expand(10), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine"])
def test_inverses_are_clamped_to_the_time_range(name):
    sde = CosineSDE() if name == "cosine" else SDES[name]
    schedule = sde.schedule
    lams = torch.tensor([-50.0, -40.0, -19.0, -10.0, 0.0, 10.0, 40.0, 50.0], dtype=torch.float64)
    times = schedule.t_from_log_snr(lams)
    assert bool(torch.isfinite(times).all()), times
    assert bool((times >= 0).all()) and bool((times <= 1).all())
    assert bool((torch.diff(times) <= 0).all())  # lambda decreases in t
    assert times[0] == times[1] == times[2] == 1.0  # noisier than the prior: T
    assert float(times[-1]) == pytest.approx(0.0, abs=1e-12)  # cleaner than any time: 0
    assert schedule.t_from_log_snr(-40.0) == 1.0
    assert schedule.t_from_edm_sigma(1e9) == 1.0
    assert 0.0 <= schedule.t_from_log_snr(40.0) <= 1e-12
    big = 1e4 if name == "ve" else 1.0 - 1e-15  # sigma of VP-like kernels stays below 1
    assert schedule.t_from_sigma(big) == 1.0


def test_sigma_outside_the_ve_range_is_clamped():
    schedule = SDES["ve"].schedule
    assert schedule.t_from_sigma(1e-6) == 0.0  # below sigma_min
    assert schedule.t_from_sigma(1e3) == 1.0  # above sigma_max
    assert schedule.t_from_edm_sigma(1e-9) == 0.0


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine"])
def test_limits_of_the_inverses_clamp(name):
    sde = CosineSDE() if name == "cosine" else SDES[name]
    schedule = sde.schedule
    assert 0.0 <= schedule.t_from_log_snr(math.inf) <= 1e-12  # bisection stops 2^-100 short of 0
    assert schedule.t_from_log_snr(-math.inf) == 1.0
    if name != "ve":  # sigma -> 1 as t grows (the cosine SDE reaches it only after T)
        assert schedule.t_from_sigma(1.0) == 1.0


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_zero_edm_sigma_is_time_zero_as_a_float_and_as_a_tensor(name):
    schedule = SDES[name].schedule
    assert float(schedule.t_from_edm_sigma(torch.zeros(1, dtype=torch.float64))[0]) == 0.0
    assert schedule.t_from_edm_sigma(0.0) == 0.0


# -- numbers in, numbers out; tensors keep their shape and dtype ------------------------------------------------
METHODS = ("alpha", "sigma", "log_snr", "edm_sigma", "t_from_log_snr", "t_from_sigma", "t_from_edm_sigma")
ARGUMENT = {"alpha": 0.4, "sigma": 0.4, "log_snr": 0.4, "edm_sigma": 0.4, "t_from_log_snr": 1.2,
            "t_from_sigma": 0.3, "t_from_edm_sigma": 0.3}  # fmt: skip


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine"])
@pytest.mark.parametrize("method", METHODS)
def test_float_in_float_out_and_tensor_shape_and_dtype_kept(name, method):
    sde = CosineSDE() if name == "cosine" else SDES[name]
    fn = getattr(sde.schedule, method)
    value = ARGUMENT[method]
    out = fn(value)
    assert type(out) is float and math.isfinite(out)
    if method in ("alpha", "sigma", "log_snr", "edm_sigma"):
        assert type(fn(1)) is float  # an int time
    for dtype in (torch.float32, torch.float64):
        for shape in ((), (5,), (2, 3), (2, 1, 4)):
            arg = torch.full(shape, value, dtype=dtype)
            res = fn(arg)
            assert isinstance(res, torch.Tensor) and res.shape == arg.shape and res.dtype == dtype
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(res.double(), torch.full(shape, out, dtype=torch.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("method", METHODS)
def test_bools_and_strings_are_refused(method):
    fn = getattr(SDES["vp"].schedule, method)
    with pytest.raises(TypeError, match="number or a tensor"):
        fn("0.5")
    with pytest.raises(TypeError, match="number or a tensor"):
        fn(True)
