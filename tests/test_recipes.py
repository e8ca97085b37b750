"""Training recipes: weightings, time samplings and predictions as three independent choices.

* Each loss's expectation equals the weighted DSM objective it states (:func:`objective_weight`): Monte Carlo
  means of ``dsm_loss`` against the quadrature of lambda_eff(t) E||s_theta - grad log p_0t||^2, both written here
  from the formulas (Gaussian data, a deliberately wrong Gaussian score, so the error term is not zero).
* The time samplings draw the stated distributions (against scipy's truncated normal, independently).
* For Gaussian data the minimiser of each loss converts to the exact score, for every prediction and process.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import scoresde as sd
from scoresde.losses import dsm_loss, loss_weight, objective_weight, sample_times, time_density, training_noise

M, V = 0.4, 0.6**2  # data N(M, V) per dimension
M_WRONG, V_WRONG = 0.7, 1.5 * 0.6**2  # the model's Gaussian: a score with a known, non-zero error
D = 2
SIGMA_DATA, GAMMA = 0.6, 5.0
PROCESSES = {"vp": sd.VPSDE(), "cosine": sd.CosineVPSDE(), "rf": sd.RectifiedFlow(), "edm": sd.EDMSDE()}


def coeffs(sde, t):
    """(alpha, sigma, alpha', sigma', g^2) at float t, from the closed forms written here."""
    if isinstance(sde, sd.RectifiedFlow):
        return 1 - t, t, -1.0, 1.0, 2 * t / (1 - t)
    if isinstance(sde, sd.EDMSDE):
        return 1.0, t, 0.0, 1.0, 2 * t
    if isinstance(sde, sd.CosineVPSDE):
        th = (t + sde.s) / (1 + sde.s) * math.pi / 2
        a = math.cos(th) / math.cos(sde.s / (1 + sde.s) * math.pi / 2)
        f = -math.pi / (2 * (1 + sde.s)) * math.tan(th)
        s = math.sqrt(1 - a * a)
        return a, s, f * a, -a * f * a / s, -2 * f
    b0, b1 = sde.beta_min, sde.beta_max
    big_b, beta = b0 * t + (b1 - b0) * t * t / 2, b0 + (b1 - b0) * t
    a = math.exp(-big_b / 2)
    s = math.sqrt(1 - a * a)
    return a, s, -beta * a / 2, beta * a * a / (2 * s), beta


def weight(sde, t, weighting):
    """lambda(t) of the score-space DSM objective, per weighting."""
    a, s, da, ds, g2 = coeffs(sde, t)
    return {
        "sigma2": s * s,
        "likelihood": g2,
        "edm": (s * s / a**2 + SIGMA_DATA**2) / (s * s / a**2 * SIGMA_DATA**2) * (s / a) ** 4 * a * a,
        "velocity": s * s * (ds - da * s / a) ** 2,
        "min_snr": s * s * min(a * a / (s * s), GAMMA) / (a * a / (s * s)),
    }[weighting]


def density(sde, kind, eps):
    """p(t) on [eps, T] for a time sampling, normalised by quadrature (a function of float t)."""
    if kind == "uniform":
        return lambda t: 1.0 / (sde.T - eps)

    def raw(t):
        a, s, da, ds, g2 = coeffs(sde, t)
        lam, dlam = math.log(a / s), da / a - ds / s  # log-SNR and its derivative
        if kind == "importance":
            return g2 / (s * s)
        mean, std = {"lognormal": (1.2, 1.2), "logit_normal": (0.0, 1.0)}[kind]  # lambda ~ N(-m, s^2)
        return math.exp(-0.5 * ((lam - mean) / std) ** 2) * abs(dlam)

    z = quad(raw, sde, eps)
    return lambda t: raw(t) / z


def quad(fn, sde, eps):
    """The integral of ``fn`` over [eps, T], split where the integrands change scale."""
    points = [eps, *(p for p in (1e-2, 0.1, 0.5, 0.9, 10.0) if eps < p < sde.T), sde.T]
    return sum(integrate.quad(fn, lo, hi, limit=200)[0] for lo, hi in itertools.pairwise(points))


def error_term(sde, t):
    """E_{x0, z} (s_theta(x_t) + z/sigma)^2 per dimension for the wrong Gaussian score, in closed form."""
    a, s, *_ = coeffs(sde, t)
    big_v = a * a * V_WRONG + s * s
    return a * a * (V + (M - M_WRONG) ** 2) / big_v**2 + (1 / s - s / big_v) ** 2


def wrong_score(sde):
    def score(x, t):
        alpha, sigma = (c[:, None] for c in sde.marginal_coeffs(t, x))
        return -(x - alpha * M_WRONG) / (alpha**2 * V_WRONG + sigma**2)

    return score


# (process, weighting, time sampling): every weighting and every time sampling, over the processes
CASES = [
    ("vp", "sigma2", "uniform"), ("vp", "likelihood", "importance"), ("vp", "min_snr", "uniform"),
    ("vp", "edm", "lognormal"), ("cosine", "min_snr", "uniform"), ("cosine", "velocity", "logit_normal"),
    ("rf", "velocity", "logit_normal"), ("rf", "velocity", "uniform"), ("rf", "sigma2", "lognormal"),
    ("rf", "likelihood", "importance"), ("edm", "edm", "lognormal"), ("edm", "min_snr", "logit_normal"),
    ("edm", "likelihood", "importance"), ("edm", "edm", "uniform"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "weighting", "kind"), CASES, ids=["-".join(c) for c in CASES])
def test_the_loss_is_the_stated_weighted_dsm_objective(name, weighting, kind, one_thread):
    sde, eps = PROCESSES[name], 1e-3
    gen = torch.Generator().manual_seed(0)
    chunks, size = 40, 5000
    score = wrong_score(sde)
    values = []
    for _ in range(chunks):
        x0 = M + math.sqrt(V) * torch.randn(size, D, generator=gen, dtype=torch.float64)
        values.append(float(dsm_loss(sde, score, x0, weighting, eps=eps, generator=gen, time_sampling=kind,
                                     sigma_data=SIGMA_DATA, gamma=GAMMA)))  # fmt: skip
    mc, se = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(chunks))
    p = density(sde, kind, eps)
    reweighted = kind in ("uniform", "importance")  # importance draws are reweighted to the uniform objective

    def integrand(t):
        lam_eff = weight(sde, t, weighting) * (1.0 if reweighted else (sde.T - eps) * p(t))
        return lam_eff * error_term(sde, t) / (sde.T - eps)

    expected = quad(integrand, sde, eps)
    assert abs(mc - expected) < 4 * se + 1e-3 * abs(expected), (mc, se, expected)
    # the library's statement of the objective is the one written here
    ts = torch.tensor([2e-3, 0.05, 0.3, 0.7, 0.95], dtype=torch.float64) * sde.T
    mine = torch.tensor([weight(sde, float(t), weighting) * (1.0 if reweighted else (sde.T - eps) * p(float(t)))
                         for t in ts], dtype=torch.float64)  # fmt: skip
    got = objective_weight(sde, ts, weighting, kind, eps, sigma_data=SIGMA_DATA, gamma=GAMMA)
    torch.testing.assert_close(got, mine, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_loss_weights_against_the_formulas(name):
    sde = PROCESSES[name]
    ts = torch.tensor([2e-3, 0.05, 0.3, 0.7, 0.95], dtype=torch.float64) * sde.T
    for weighting in ("sigma2", "likelihood", "edm", "velocity", "min_snr"):
        mine = torch.tensor([weight(sde, float(t), weighting) / coeffs(sde, float(t))[1] ** 2 for t in ts],
                            dtype=torch.float64)  # fmt: skip
        got = loss_weight(sde, ts, weighting, sigma_data=SIGMA_DATA, gamma=GAMMA)
        torch.testing.assert_close(got, mine, rtol=1e-8, atol=0, msg=weighting)
    rf_velocity = loss_weight(sd.RectifiedFlow(), torch.tensor([0.5]), "velocity")
    assert float(rf_velocity) == pytest.approx(4.0)  # 1 / (1 - t)^2: the plain velocity MSE


@pytest.mark.parametrize(
    ("name", "kind", "variable", "mean", "std"),
    [
        ("edm", "lognormal", lambda t, sde: np.log(t), -1.2, 1.2),  # ln sigma ~ N(-1.2, 1.2^2)
        ("rf", "logit_normal", lambda t, sde: np.log(t / (1 - t)), 0.0, 1.0),  # logit t ~ N(0, 1)
        ("vp", "lognormal", lambda t, sde: -sde.schedule.log_snr(torch.tensor(t)).numpy(), -1.2, 1.2),
        ("rf", "lognormal", lambda t, sde: np.log(t / (1 - t)), 0.5, 0.8),  # a chosen mean and std
    ],
    ids=["edm-lognormal", "rf-logit_normal", "vp-lognormal", "rf-lognormal-0.5-0.8"],
)
def test_time_samplings_draw_the_stated_truncated_normal(name, kind, variable, mean, std):
    sde, eps = PROCESSES[name], 1e-3
    custom = {"time_mean": mean, "time_std": std} if (mean, std) == (0.5, 0.8) else {}
    t = sample_times(sde, torch.zeros(20_000, 1, dtype=torch.float64), eps, torch.Generator().manual_seed(0), kind,
                     **custom).numpy()  # fmt: skip
    assert t.min() >= eps and t.max() <= sde.T
    u = variable(t, sde)
    lo, hi = variable(np.array([eps]), sde)[0], variable(np.array([sde.T]), sde)[0]
    law = stats.truncnorm((lo - mean) / std, (hi - mean) / std, loc=mean, scale=std)
    assert stats.kstest(u, law.cdf).pvalue > 1e-3
    assert stats.kstest(u, stats.norm(mean + 0.1, std).cdf).pvalue < 1e-6  # a shifted law is rejected
    # the density integrates to one on [eps, T] and matches the histogram's mass in a few bins
    edges = np.quantile(t, [0.0, 0.2, 0.5, 0.8, 1.0])
    for a, b in itertools.pairwise(edges):
        grid = torch.linspace(float(a), float(b), 2001, dtype=torch.float64)
        dens = time_density(sde, grid, kind, eps, **custom).numpy()
        assert np.trapezoid(dens, grid.numpy()) == pytest.approx(np.mean((t >= a) & (t <= b)), abs=0.015)


def test_importance_times_on_the_new_processes_are_uniform_in_log_snr():
    """g^2/sigma^2 = -2 lambda' for every linear process: importance-sampled times are uniform in lambda."""
    for sde in (sd.RectifiedFlow(), sd.EDMSDE(), sd.CosineVPSDE()):
        eps = 1e-3
        t = sample_times(sde, torch.zeros(20_000, 1, dtype=torch.float64), eps, torch.Generator().manual_seed(1),
                         "importance")  # fmt: skip
        lam = sde.schedule.log_snr(t).numpy()
        lo, hi = sde.schedule.log_snr(sde.T), sde.schedule.log_snr(eps)
        assert stats.kstest(lam, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


PREDICTION_CASES = [
    ("vp", "eps", "sigma2"), ("vp", "v", "min_snr"), ("cosine", "v", "min_snr"), ("cosine", "x0", "sigma2"),
    ("rf", "velocity", "velocity"), ("rf", "x0", "sigma2"), ("rf", "edm", "edm"), ("edm", "edm", "edm"),
    ("edm", "eps", "likelihood"), ("edm", "score", "sigma2"), ("vp", "velocity", "velocity"), ("vp", "edm", "edm"),
]  # fmt: skip


class Linear(torch.nn.Module):
    """out = a x_in + b per dimension: rich enough for the exact score of Gaussian data at one time."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(D, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros(D, dtype=torch.float64))

    def forward(self, x, label):
        return self.a * x + self.b


@pytest.mark.parametrize(
    ("name", "prediction", "weighting"), PREDICTION_CASES, ids=["-".join(c) for c in PREDICTION_CASES]
)
def test_the_minimiser_of_each_loss_converts_to_the_exact_score(name, prediction, weighting, one_thread):
    """At a fixed time the loss is quadratic in (a, b); its minimiser, read through the prediction's conversion,
    is the exact score of the diffused Gaussian N(alpha M, alpha^2 V + sigma^2)."""
    sde = PROCESSES[name]
    gen = torch.Generator().manual_seed(3)
    n, t_value = 100_000, 0.5 * sde.T
    x0 = M + math.sqrt(V) * torch.randn(n, D, generator=gen, dtype=torch.float64)
    z = torch.randn(n, D, generator=gen, dtype=torch.float64)
    noise = {"t": torch.full((n,), t_value, dtype=torch.float64), "z": z}
    net = Linear()
    score = sd.ModelScore(net, sde, prediction=prediction, sigma_data=SIGMA_DATA)
    opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = dsm_loss(sde, score, x0, weighting, sigma_data=SIGMA_DATA, **noise)
        loss.backward()
        return loss

    opt.step(closure)
    a, s, *_ = coeffs(sde, t_value)
    spread = math.sqrt(a * a * V + s * s)  # x_t's std: compare within two of it
    x = torch.linspace(a * M - 2 * spread, a * M + 2 * spread, 9, dtype=torch.float64)[:, None].expand(-1, D)
    exact = -(x - a * M) / (a * a * V + s * s)
    with torch.no_grad():
        got = score(x, t_value)
    scale = 1 / spread  # the score's typical size
    assert float((got - exact).abs().max()) < 0.02 * scale, ((got - exact).abs().max(), scale)


def test_training_noise_draws_the_loss_times():
    sde = sd.RectifiedFlow()
    x0 = torch.zeros(64, 3)
    for kind in ("uniform", "lognormal", "logit_normal"):
        drawn = training_noise("dsm", sde, x0, 1e-3, torch.Generator().manual_seed(5), time_sampling=kind)
        direct = sample_times(sde, x0, 1e-3, torch.Generator().manual_seed(5), kind)
        assert torch.equal(drawn["t"], direct)


def test_recipe_errors_are_one_line_and_early():
    sde, x = sd.RectifiedFlow(), torch.zeros(4, 2)

    def score(x, t):
        raise AssertionError("no evaluation before the arguments are checked")

    cases = [
        (dict(weighting="edm", sigma_data=-1.0), "sigma_data must be a finite number > 0"),
        (dict(weighting="min_snr", gamma=0.0), r"gamma \(min-SNR weighting\) must be a finite number > 0"),
        (dict(time_sampling="beta"), "unknown time_sampling 'beta'"),
        (dict(weighting="velocity", time_sampling="importance"), "time_sampling='importance' needs weighting="),
        (dict(time_sampling="lognormal", time_std=0.0), "time_std of lognormal times must be > 0"),
        (dict(time_sampling="uniform", time_mean=1.0), "time_mean and time_std set the lognormal"),
        (dict(time_sampling="logit_normal", importance_sampling=True), "cannot be combined"),
        (dict(weighting="snr"), "unknown weighting 'snr'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            dsm_loss(sde, score, x, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="is for the 'dsm' loss"):
        training_noise("ddpm", sd.VPSDE(), x, time_sampling="lognormal")
    with pytest.raises(ValueError, match="put no mass on"):
        sample_times(sd.VPSDE(), x, 0.5, None, "lognormal", time_mean=30.0, time_std=0.1)
