"""Losses against closed forms on Gaussian data with the exact score."""

import itertools
import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.losses import ddpm_loss, dsm_loss, smld_loss, training_noise
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


class UncheckedOU(sd.SDE):
    """A user SDE that validates nothing itself: dx = -x/2 dt + dw, written with raw tensor math."""

    @property
    def T(self):
        return 1.0

    def sde(self, x, t):
        return -0.5 * x, torch.ones_like(torch.as_tensor(t, dtype=x.dtype))

    def marginal_prob(self, x0, t):
        alpha = torch.exp(-0.5 * t)
        return alpha.reshape(alpha.shape[0], *[1] * (x0.ndim - 1)) * x0, torch.sqrt(-torch.expm1(-t))


def _one_line(err):
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE(), UncheckedOU()], ids=["vp", "ve", "user"])
def test_dsm_loss_checks_shapes(sde):
    """A [B, 1] score, a wrongly shaped z and [B, 1] or [B-1] times used to broadcast silently."""
    x = torch.randn(4, 3)
    exact = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match=r"^score_fn must return a tensor shaped like x \(4, 3\), got \(4, 1\)$") as e:
        dsm_loss(sde, lambda x, t: x[:, :1], x)
    _one_line(e)
    with pytest.raises(ValueError, match=r"score_fn must return a tensor shaped like x \(4, 3\), got NoneType"):
        dsm_loss(sde, lambda x, t: None, x)
    for z in (torch.randn(4, 1), torch.randn(3), torch.randn(1, 4, 3)):
        with pytest.raises(ValueError, match=r"^z must have the shape of x0 \(4, 3\)") as e:
            dsm_loss(sde, exact, x, z=z)
        _one_line(e)
    with pytest.raises(TypeError, match="z must be a floating-point tensor"):
        dsm_loss(sde, exact, x, z=torch.ones(4, 3, dtype=torch.int64))
    for t in (torch.full((4, 1), 0.5), torch.full((3,), 0.5), torch.full((4, 3), 0.5)):
        with pytest.raises(ValueError, match=r"^t must be .* shape \[B\]=\[4\]") as e:
            dsm_loss(sde, exact, x, t=t)
        _one_line(e)
    seen = []
    dsm_loss(sde, lambda x, t: seen.append((t.shape, t.dtype)) or -x, x, t=torch.tensor(0.5, dtype=torch.float64))
    assert seen == [((4,), torch.float32)]  # a 0-d time is broadcast to the batch in x0's dtype


def test_losses_refuse_non_float_data():
    """uint8 images used to fail deep inside torch (dsm) or silently zero alphas_cumprod (ddpm)."""
    x = torch.ones(4, 3, dtype=torch.uint8)
    for call in (
        lambda: dsm_loss(sd.VPSDE(), lambda x, t: x, x),
        lambda: ddpm_loss(sd.VPSDE(), lambda x, t: x.float(), x, noise=torch.randn(4, 3)),
        lambda: smld_loss(sd.VESDE(), lambda x, t: x, x),
        lambda: training_noise("dsm", sd.VPSDE(), x),
        lambda: training_noise("ddpm", sd.VPSDE(), x),
    ):
        with pytest.raises(TypeError, match=r"^x0 must be a floating-point tensor, got torch.uint8") as e:
            call()
        _one_line(e)


def test_ddpm_loss_checks_shapes_and_levels():
    sde = sd.VPSDE()
    x = torch.randn(4, 3)
    eps_model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match=r"^model must return a tensor shaped like x \(4, 3\), got \(4, 1\)$"):
        ddpm_loss(sde, lambda x, t: x[:, :1], x)
    with pytest.raises(ValueError, match=r"^noise must have the shape of x0 \(4, 3\), got \(4, 1\)$"):
        ddpm_loss(sde, eps_model, x, noise=torch.randn(4, 1))
    for labels in (torch.zeros(4, 1, dtype=torch.long), torch.zeros(3, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"^labels must have shape \[B\]=\[4\]"):
            ddpm_loss(sde, eps_model, x, labels=labels)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        ddpm_loss(sde, eps_model, x, labels=torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        ddpm_loss(sde, eps_model, x, labels=torch.tensor([True, False, True, False]))
    # -1 used to index the last level silently, N raised a bare IndexError
    for labels in (torch.tensor([-1, 0, 1, 2]), torch.tensor([0, 1, 2, 1000])):
        with pytest.raises(ValueError, match=r"^labels must be levels in \{0, \.\.\., 999\}") as e:
            ddpm_loss(sde, eps_model, x, labels=labels)
        _one_line(e)
    with pytest.raises(ValueError, match="non-finite"):
        ddpm_loss(sde, eps_model, torch.full((4, 3), math.nan), labels=torch.tensor([0, 1, 2, 3]))


def test_smld_loss_checks_shapes_and_levels():
    sde = sd.VESDE()
    x = torch.randn(4, 3)
    score = GAUSS.score_fn(sde)
    with pytest.raises(ValueError, match=r"^score_fn must return a tensor shaped like x \(4, 3\), got \(4, 1\)$"):
        smld_loss(sde, lambda x, t: x[:, :1], x)
    with pytest.raises(ValueError, match=r"^z must have the shape of x0 \(4, 3\), got \(4, 1\)$"):
        smld_loss(sde, score, x, z=torch.randn(4, 1))
    with pytest.raises(ValueError, match=r"^labels must have shape \[B\]=\[4\]"):
        smld_loss(sde, score, x, labels=torch.zeros(4, 1, dtype=torch.long))
    # fractional levels used to be silently interpolated between noise levels
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        smld_loss(sde, score, x, labels=torch.tensor([1.5, 0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"^labels must be levels in \{0, \.\.\., 999\}"):
        smld_loss(sde, score, x, labels=torch.tensor([-1, 0, 1, 2]))


def test_discrete_losses_name_the_sde_they_need():
    x = torch.zeros(4, 3)
    for sde in (sd.VESDE(), sd.SubVPSDE()):
        with pytest.raises(TypeError, match=r"^ddpm_loss needs a VPSDE .*got \w+; use dsm_loss") as e:
            ddpm_loss(sde, lambda x, t: x, x)
        _one_line(e)
    for sde in (sd.VPSDE(), sd.SubVPSDE()):
        with pytest.raises(TypeError, match=r"^smld_loss needs a VESDE .*got \w+; use dsm_loss") as e:
            smld_loss(sde, lambda x, t: x, x)
        _one_line(e)
    with pytest.raises(TypeError, match=r"needs an SDE instance .*instantiate it"):
        dsm_loss(sd.VPSDE, lambda x, t: x, x)


def test_given_noise_keeps_the_draws_and_matches_drawn_noise():
    """Passing the output of training_noise reproduces the loss drawn from the same generator."""
    x = GAUSS.sample(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name, sde, loss, fn in (
        ("dsm", sd.VPSDE(), dsm_loss, GAUSS.score_fn(sd.VPSDE())),
        ("ddpm", sd.VPSDE(), ddpm_loss, lambda x, t: 0.1 * x),
        ("smld", sd.VESDE(), smld_loss, GAUSS.score_fn(sd.VESDE())),
    ):
        drawn = loss(sde, fn, x, generator=torch.Generator().manual_seed(5))
        given = loss(sde, fn, x, **training_noise(name, sde, x, generator=torch.Generator().manual_seed(5)))
        assert float(drawn) == float(given)


def test_training_noise_checks_eps():
    """eps > T used to draw times outside [0, T] that failed later with a message about t."""
    with pytest.raises(ValueError, match="eps must satisfy"):
        training_noise("dsm", sd.VPSDE(), torch.zeros(4, 3), eps=2.0)


# -- importance sampling of the time (likelihood weighting) -------------------------------------
def _ratio_formula(sde):
    """g^2/sigma^2 written out independently of the library's sampler (numpy scalars/arrays)."""
    if isinstance(sde, UncheckedOU):
        return lambda t: 1.0 / -np.expm1(-t)
    if isinstance(sde, sd.VESDE):
        return lambda t: 2.0 * math.log(sde.sigma_max / sde.sigma_min) + 0.0 * t
    b0, b1 = sde.beta_min, sde.beta_max

    def beta_and_integral(t):
        return b0 + t * (b1 - b0), b0 * t + 0.5 * (b1 - b0) * t**2

    if isinstance(sde, sd.SubVPSDE):
        return lambda t: (lambda b, B: b * -np.expm1(-2 * B) / np.expm1(-B) ** 2)(*beta_and_integral(t))
    return lambda t: (lambda b, B: b / -np.expm1(-B))(*beta_and_integral(t))


IS_SDES = [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE(), UncheckedOU(), sd.VPSDE(beta_min=0.5, beta_max=0.5)]
IS_IDS = ["vp", "subvp", "ve", "user", "vp-const-beta"]


@pytest.mark.parametrize("sde", IS_SDES, ids=IS_IDS)
def test_importance_sampled_times_have_density_g2_over_sigma2(sde, one_thread):
    """KS test of the drawn t against the CDF of g^2/sigma^2 on [eps, T], integrated with quad."""
    from scipy import integrate, stats

    eps = 1e-5
    r = _ratio_formula(sde)
    grid = torch.linspace(eps, sde.T, 101, dtype=torch.float64)
    probe = torch.zeros(101, 1, dtype=torch.float64)
    lib = (sde.sde(probe, grid)[1] ** 2 / sde.marginal_coeffs(grid, probe)[1] ** 2).numpy()
    np.testing.assert_allclose(r(grid.numpy()), lib, rtol=1e-9)  # the formula is the SDE's g^2/sigma^2
    x0 = torch.zeros(4000, 2, dtype=torch.float64)
    t = training_noise("dsm", sde, x0, eps, torch.Generator().manual_seed(0), importance_sampling=True)["t"]
    assert t.shape == (4000,) and t.dtype == torch.float64
    assert float(t.min()) >= eps and float(t.max()) <= sde.T
    ts = np.sort(t.numpy())
    knots = np.concatenate([[eps], ts, [sde.T]])
    pieces = [integrate.quad(r, a, b, epsabs=0, epsrel=1e-10)[0] for a, b in itertools.pairwise(knots)]
    cum = np.cumsum(pieces)
    z = cum[-1]
    assert z == pytest.approx(sd.losses.importance_normalizer(sde, eps), rel=1e-6)
    cdf = dict(zip(ts, cum[:-1] / z, strict=True))
    assert stats.kstest(ts, lambda v: np.array([cdf[x] for x in np.atleast_1d(v)])).pvalue > 1e-3
    # a uniform draw is rejected whenever the density is not flat (the test can fail)
    if not isinstance(sde, sd.VESDE):
        uniform = np.sort(np.random.default_rng(0).uniform(eps, sde.T, 4000))
        knots = np.concatenate([[eps], uniform])
        cum_u = np.cumsum([integrate.quad(r, a, b, epsrel=1e-10)[0] for a, b in itertools.pairwise(knots)])
        assert stats.kstest(cum_u / z, "uniform").pvalue < 1e-6


def test_importance_sampling_generic_path_matches_the_closed_forms(one_thread):
    """A process without a closed-form importance density is tabulated; it must agree with the closed form."""

    class MyVP(sd.VPSDE):
        importance_antiderivative = None

    class MySubVP(sd.SubVPSDE):
        importance_antiderivative = None

    u = torch.rand(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for closed, generic in ((sd.VPSDE(), MyVP()), (sd.SubVPSDE(), MySubVP())):
        for eps in (1e-5, 1e-3):
            z_closed = sd.losses.importance_normalizer(closed, eps)
            assert sd.losses.importance_normalizer(generic, eps) == pytest.approx(z_closed, rel=1e-5)
            t_closed = sd.losses._from_uniform(closed, eps, u)
            t_generic = sd.losses._from_uniform(generic, eps, u)
            torch.testing.assert_close(t_generic, t_closed, rtol=1e-4, atol=0)


@pytest.mark.parametrize("sde", IS_SDES[:4], ids=IS_IDS[:4])
def test_importance_sampled_likelihood_loss_is_unbiased(sde, one_thread):
    """Exact Gaussian score: the importance-sampled and uniform-time losses have the same mean
    (also against the quadrature of the expectation); for VP the variance drops sharply."""
    from scipy import integrate

    chunks, size, eps = 200, 500, 1e-5
    gen = torch.Generator().manual_seed(0)
    x0 = GAUSS.sample(chunks * size, generator=gen, dtype=torch.float64)
    score = GAUSS.score_fn(sde)
    means = {}
    for is_on in (False, True):
        vals = torch.stack([
            dsm_loss(sde, score, x0[i * size:(i + 1) * size], "likelihood", eps=eps, generator=gen,
                     importance_sampling=is_on)
            for i in range(chunks)
        ]).numpy()  # fmt: skip
        means[is_on] = (vals.mean(), vals.std(ddof=1) / math.sqrt(chunks), vals.var(ddof=1))
    (m_u, se_u, var_u), (m_is, se_is, var_is) = means[False], means[True]
    assert abs(m_is - m_u) < 4 * math.hypot(se_u, se_is)
    r = _ratio_formula(sde)

    def integrand(t):  # E||sigma s + z||^2 / D = alpha^2 S^2 / (alpha^2 S^2 + sigma^2) for the exact score
        alpha, sigma = (float(c) for c in sde.marginal_coeffs(t, torch.zeros(1, 1, dtype=torch.float64)))
        return r(t) * alpha**2 * S**2 / (alpha**2 * S**2 + sigma**2)

    want = integrate.quad(integrand, eps, sde.T, points=[1e-4, 1e-3, 1e-2, 1e-1], limit=200)[0] / (sde.T - eps)
    assert m_is == pytest.approx(want, abs=4 * se_is)
    if isinstance(sde, sd.VPSDE):
        assert var_is < 0.1 * var_u
    given = dsm_loss(sde, score, x0[:64], "likelihood", eps=eps, importance_sampling=True,
                     **training_noise("dsm", sde, x0[:64], eps, torch.Generator().manual_seed(5), True))  # fmt: skip
    drawn = dsm_loss(sde, score, x0[:64], "likelihood", eps=eps, importance_sampling=True,
                     generator=torch.Generator().manual_seed(5))  # fmt: skip
    assert float(drawn) == float(given)  # training_noise draws the loss's t


def test_importance_sampling_errors():
    from scoresde.build import LOSSES
    from scoresde.config import ConfigError, from_dict

    sde, x = sd.VPSDE(), torch.zeros(4, 3)
    with pytest.raises(
        ValueError, match=r"^importance_sampling=True needs weighting='likelihood', got weighting='sigma2'$"
    ):
        dsm_loss(sde, GAUSS.score_fn(sde), x, importance_sampling=True)
    for loss in ("ddpm", "smld"):
        with pytest.raises(ValueError, match=r"^importance_sampling=True is for the 'dsm' loss") as e:
            training_noise(loss, sd.VESDE() if loss == "smld" else sde, x, importance_sampling=True)
        _one_line(e)
    with pytest.raises(TypeError, match="importance_sampling must be a bool"):
        dsm_loss(sde, GAUSS.score_fn(sde), x, "likelihood", importance_sampling="yes")

    class Degenerate(UncheckedOU):  # sigma(t) = 0 on the whole range: g^2/sigma^2 is infinite
        def marginal_prob(self, x0, t):
            return x0, torch.zeros_like(t)

    with pytest.raises(ValueError, match=r"^importance sampling needs a finite") as e:
        training_noise("dsm", Degenerate(), x, importance_sampling=True)
    _one_line(e)
    for training in ({"importance_sampling": True}, {"importance_sampling": True, "loss": "ddpm",
                                                     "weighting": "likelihood"}):  # fmt: skip
        with pytest.raises(ConfigError, match=r"^training.importance_sampling = true needs training.loss 'dsm' and"):
            from_dict({"training": training})
    cfg = from_dict({"training": {"importance_sampling": True, "weighting": "likelihood"}})
    assert LOSSES["dsm"](cfg, sde, GAUSS.score_fn(sde), None).keywords["importance_sampling"] is True
    assert LOSSES["dsm"](from_dict({}), sde, GAUSS.score_fn(sde), None).keywords["importance_sampling"] is False
