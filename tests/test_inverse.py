"""Inverse problems (inpainting, colorization, y = A x + n) against the exact posteriors of Gaussian mixtures.

Under a linear measurement the posterior of a Gaussian mixture is a Gaussian mixture in closed form
(``GaussianMixture.posterior``); the tests compare sample moments and component frequencies with it.
"""

import inspect

import pytest
import torch

import scoresde as sd
from scoresde.inverse import colorize, inpaint, solve_inverse
from scoresde.operators import ChannelMean, FunctionOperator, MaskOperator, MatrixOperator
from scoresde.sampling import SAMPLERS
from scoresde.toy import GaussianMixture, demo_mixture, mixture_moments, sample_mixtures

SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(sigma_max=20.0), "cosine": sd.CosineVPSDE(),
        "rf": sd.RectifiedFlow(), "edm": sd.EDMSDE(sigma_max=20.0)}  # fmt: skip
FIXED_OPTIONS = {name: ({"method": "heun"} if name == "ode" else {}) for name in SAMPLERS}


def rotated(cases, ids, per_case=2):
    """Every (process, case) pair; in the default run each case runs on ``per_case`` processes, the processes taking
    the cases in turn (so every process meets several), the other pairs run with ``make test-slow``."""
    names, pairs = list(SDES), []
    for i, (case, case_id) in enumerate(zip(cases, ids, strict=True)):
        chosen = {names[(per_case * i + k) % len(names)] for k in range(per_case)}
        for name in names:
            marks = [] if name in chosen else [pytest.mark.slow]
            pairs.append(pytest.param(name, case, id=f"{case_id}-{name}", marks=marks))
    return pairs


# -- the exact posterior itself --------------------------------------------------------------------------------------
def test_mixture_posterior_matches_bayes_rule_on_a_grid():
    # 2-D mixture, y = x_0 + noise: compare with p(x | y) ∝ p(x) N(y; x_0, s^2) evaluated numerically on a grid
    gm = demo_mixture()
    A = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[-0.3]], dtype=torch.float64)
    grid = torch.linspace(-6, 6, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    logp = gm.log_prob(pts) - 0.5 * ((pts[:, 0] - y[0, 0]) / 0.7) ** 2
    p = torch.softmax(logp, 0)
    mean = (p[:, None] * pts).sum(0)
    cov = (p[:, None, None] * (pts - mean)[:, :, None] * (pts - mean)[:, None, :]).sum(0)
    w, mu, C = gm.posterior(A, y, noise_std=0.7)
    m, c = mixture_moments(w, mu, C)
    torch.testing.assert_close(m[0], mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(c[0], cov, atol=1e-5, rtol=0)


def test_sample_mixtures_has_the_mixture_moments():
    gm, A, x_true, _ = _problem()
    w, mu, covs = gm.posterior(A, x_true @ A.T)  # singular covariances (rank 12 - 5)
    n = 40_000
    x = sample_mixtures(w.expand(n, -1), mu.expand(n, -1, -1), covs, torch.Generator().manual_seed(0))
    mean, cov = (m[0] for m in mixture_moments(w, mu, covs))
    assert float(((x.mean(0) - mean).abs() / cov.diagonal().sqrt()).max()) < 0.03
    assert float(torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov)) < 0.03
    torch.testing.assert_close(x @ A.T, (x_true @ A.T).expand(n, -1))  # on the measurement: covs are singular


# -- operators -----------------------------------------------------------------------------------------------------
def test_operators_against_dense_linear_algebra():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    gram = A @ A.T
    for op in (MatrixOperator(A), FunctionOperator(lambda u: u @ A.T, lambda w: w @ A, iterations=40)):
        torch.testing.assert_close(op.pinv(v), v @ torch.linalg.pinv(A).T, rtol=1e-7, atol=1e-8)
        expected = torch.linalg.solve(0.3 * gram + 0.05 * torch.eye(5, dtype=torch.float64), v.T).T
        torch.testing.assert_close(op.gram_solve(v, 0.3, 0.05), expected, rtol=1e-7, atol=1e-8)
        projected = op.project(x, v)
        torch.testing.assert_close(projected @ A.T, v, rtol=1e-8, atol=1e-8)  # on the constraint...
        assert float(((projected - x) @ torch.linalg.svd(A).Vh[5:].T).abs().max()) < 1e-8  # ...moved in range(A^T)
    # a rank-deficient A: the pseudo-inverse
    low = torch.cat([A[:3], A[:2] + A[1:3]])
    torch.testing.assert_close(MatrixOperator(low).pinv(v), v @ torch.linalg.pinv(low).T, rtol=1e-6, atol=1e-7)
    # per-sample coefficients: one solve per row
    a = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    rows = [MatrixOperator(A).gram_solve(v[i : i + 1], float(a[i]), 0.2) for i in range(3)]
    torch.testing.assert_close(MatrixOperator(A).gram_solve(v, a, 0.2), torch.cat(rows))


def test_mask_and_channel_mean_operators():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    mask = (torch.rand(1, 3, 4, 4) > 0.5).double()
    y = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    out = MaskOperator(mask).project(x, y)
    assert torch.equal(out, torch.where(mask.bool(), y, x))
    gray = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    cm = ChannelMean(3)
    col = cm.project(x, gray)
    torch.testing.assert_close(col.mean(1, keepdim=True), gray)
    # the colour coordinates orthogonal to grey are untouched (the paper's decoupling)
    basis = torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(torch.einsum("kc,bchw->bkhw", basis, col), torch.einsum("kc,bchw->bkhw", basis, x))
    dense = torch.kron(torch.full((1, 3), 1 / 3, dtype=torch.float64), torch.eye(16, dtype=torch.float64))
    v = torch.randn(2, 16, dtype=torch.float64)
    expected = torch.linalg.solve(2.0 * dense @ dense.T + 0.1 * torch.eye(16, dtype=torch.float64), v.T).T
    torch.testing.assert_close(cm.gram_solve(v.reshape(2, 1, 4, 4), 2.0, 0.1).reshape(2, 16), expected)


# -- inpainting -----------------------------------------------------------------------------------------------------
def _inpaint_tv(sde, sampler, steps, dim, value, n=2000, **options):
    gm = demo_mixture()
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, dim] = value
    mask = torch.zeros(1, 2)
    mask[0, dim] = 1
    x = inpaint(sde, gm.score_fn(sde), known, mask, sampler=sampler, steps=steps, generator=sd.SampleNoise(0, n),
                sampler_options=options)  # fmt: skip
    assert torch.equal(x[:, dim], known[:, dim])  # kept exactly
    A = torch.zeros(1, 2, dtype=torch.float64)
    A[0, dim] = 1
    weights = gm.posterior(A, known[:1, dim : dim + 1])[0][0]
    freq = torch.bincount(gm.assign(x), minlength=3).double() / n
    return 0.5 * float((freq - weights).abs().sum())


@pytest.mark.parametrize(("name", "value"), rotated([-1.5, -1.0, -2.0], ["-1.5", "-1.0", "-2.0"]))
def test_inpainting_reproduces_the_exact_conditional_component_probabilities(name, value):
    # x[1] known: components 0 and 1 share it and differ in the unknown x[0]; their exact odds depend on
    # the weights, the stds and the value (0.57/0.43 at -1.5, 0.64/0.36 at -1.0 and -2.0)
    assert _inpaint_tv(SDES[name], "euler_maruyama", 300, 1, value) < 0.06


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_inpainting_works_with_every_sampler_of_the_registry(sampler):
    if "replace" not in inspect.signature(SAMPLERS[sampler]).parameters:
        pytest.skip(f"{sampler} takes no replace hook (an adaptive sampler has no fixed steps)")
    sde = SDES["ve"] if sampler == "ancestral" else SDES["vp"]
    steps = 60 if sampler == "pc" else 150
    assert _inpaint_tv(sde, sampler, steps, 1, -1.5, n=1500, **FIXED_OPTIONS[sampler]) < 0.08


def test_inpainting_starts_from_forward_noised_known_values_and_denoises_everywhere():
    sde, gm = SDES["vp"], demo_mixture()
    known = torch.tensor([[0.0, -1.5]] * 400, dtype=torch.float64)
    mask = torch.tensor([[0.0, 1.0]])
    seen = []
    x = inpaint(sde, gm.score_fn(sde), known, mask, sampler="ddim", steps=20, generator=sd.SampleNoise(3, 400),
                callback=seen.append)  # fmt: skip
    first = seen[0]
    # after the first step the known coordinate is a draw of N(alpha(s) y, sigma(s)^2), not y itself
    alpha, sigma = (float(c[0]) for c in sde.marginal_coeffs(first.s, known[:1]))
    z = (first.x[:, 1] - alpha * -1.5) / sigma
    assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1) < 0.1
    # the unknown coordinate is denoised: its spread within each mode is the mode's std, no noise left
    labels = gm.assign(x)
    for k in (0, 1):
        assert float(x[labels == k, 0].std() / gm.stds[k, 0]) == pytest.approx(1.0, abs=0.15)


# -- y = A x + n on a 12-D mixture -------------------------------------------------------------------------------------
def _problem():
    gen = torch.Generator().manual_seed(0)
    d, m = 12, 5
    means = 2.0 * torch.randn(3, d, generator=gen, dtype=torch.float64)
    stds = 0.3 + 0.4 * torch.rand(3, d, generator=gen, dtype=torch.float64)
    gm = GaussianMixture([0.5, 0.3, 0.2], means, stds)
    A = torch.randn(m, d, generator=gen, dtype=torch.float64) / d**0.5
    x_true = gm.sample(1, generator=gen, dtype=torch.float64)
    return gm, A, x_true, torch.randn(1, m, generator=gen, dtype=torch.float64)


def _moment_errors(x, gm, A, y, noise) -> tuple[float, float]:
    """Sample mean error in posterior stds (worst coordinate) and relative Frobenius covariance error,
    against the exact posterior of ``gm`` given the one measurement ``y``."""
    mean, cov = (m[0] for m in mixture_moments(*gm.posterior(A, y, noise)))
    mean_err = float(((x.mean(0) - mean).abs() / cov.diagonal().sqrt()).max())
    return mean_err, float(torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov))


# (method, noise_std, sampler, steps, tolerance on the mean in posterior stds, relative Frobenius error of the cov)
CASES = [
    ("projection", 0.0, "pc", 500, 0.2, 0.12),
    ("pigdm", 0.0, "euler_maruyama", 400, 0.3, 0.12),
    ("pigdm", 0.2, "euler_maruyama", 400, 0.4, 0.12),
    ("dps", 0.2, "euler_maruyama", 400, 0.7, 0.15),
]


@pytest.mark.parametrize(("name", "case"), rotated(CASES, [f"{c[0]}-{c[1]}" for c in CASES]))
def test_solve_inverse_matches_the_exact_posterior(name, case):
    method, noise, sampler, steps, mean_tol, cov_tol = case
    sde = SDES[name]
    gm, A, x_true, z = _problem()
    y = x_true @ A.T + noise * z
    n = 2000
    x = solve_inverse(sde, gm.score_fn(sde), y.expand(n, -1), A, noise, method, sampler=sampler, steps=steps,
                      generator=sd.SampleNoise(0, n))  # fmt: skip
    mean_err, cov_err = _moment_errors(x, gm, A, y, noise)
    assert mean_err < mean_tol and cov_err < cov_tol, (mean_err, cov_err)
    if noise == 0:
        assert float((x @ A.T - y).abs().max()) < 1e-6  # the measurements hold exactly


GAUSSIAN_CASES = [("ddnm", 0.0), ("ddnm", 0.3), ("pigdm", 0.0), ("pigdm", 0.3)]


@pytest.mark.parametrize(("name", "case"), rotated(GAUSSIAN_CASES, [f"{m}-{v}" for m, v in GAUSSIAN_CASES], 3))
def test_ddnm_and_pigdm_are_exact_for_gaussian_data_of_the_stated_variance(name, case):
    method, noise = case
    # for x ~ N(mu, v I), p(x0 | x_t) = N(x0_hat, r_t^2 I) exactly, so both approximations of p(y | x_t) are exact
    sde, gen = SDES[name], torch.Generator().manual_seed(3)
    v, d, n = 0.5, 12, 2000
    gm = GaussianMixture([1.0], torch.randn(1, d, generator=gen, dtype=torch.float64), v**0.5)
    A = torch.randn(5, d, generator=gen, dtype=torch.float64) / d**0.5
    y = gm.sample(1, generator=gen, dtype=torch.float64) @ A.T + noise * torch.randn(1, 5, generator=gen)
    x = solve_inverse(sde, gm.score_fn(sde), y.expand(n, -1), A, noise, method, data_var=v, sampler="euler_maruyama",
                      steps=300, generator=sd.SampleNoise(0, n))  # fmt: skip
    mean_err, cov_err = _moment_errors(x, gm, A, y, noise)
    assert mean_err < 0.12 and cov_err < 0.08, (mean_err, cov_err)


def test_function_pair_gives_the_matrix_result():
    sde = SDES["vp"]
    gm, A, x_true, _ = _problem()
    y = (x_true @ A.T).expand(64, -1)
    kwargs = dict(sampler="ddim", steps=30)
    by_matrix = solve_inverse(sde, gm.score_fn(sde), y, A, generator=sd.SampleNoise(5, 64), **kwargs)
    pair = (lambda u: u @ A.T, lambda w: w @ A)
    by_pair = solve_inverse(sde, gm.score_fn(sde), y, pair, shape=(12,), generator=sd.SampleNoise(5, 64), **kwargs)
    torch.testing.assert_close(by_pair, by_matrix, rtol=1e-6, atol=1e-6)


def test_results_do_not_depend_on_batching():
    sde = SDES["ve"]
    gm, A, x_true, _ = _problem()
    y = (x_true @ A.T).expand(30, -1)
    kwargs = dict(sampler="euler_maruyama", steps=20)
    whole = solve_inverse(sde, gm.score_fn(sde), y, A, generator=sd.SampleNoise(7, 30), **kwargs)
    parts = solve_inverse(sde, gm.score_fn(sde), y, A, generator=sd.SampleNoise(7, 30), batch_size=7, **kwargs)
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12)


# -- colorization ----------------------------------------------------------------------------------------------------
def _colour_mixture():
    """3-channel 4x4 images: one brightness pattern in three hues of equal grey level, plus small noise.

    The grey image says nothing about the hue, so the exact posterior keeps the prior odds of the hues and,
    given the hue, pins the colour of every pixel: colorization must draw the hues at those odds and put
    each pixel's colour back.
    """
    gen = torch.Generator().manual_seed(1)
    hues = torch.tensor([[0.6, 0.0, -0.3], [-0.4, 0.5, 0.2], [-0.2, -0.3, 0.8]], dtype=torch.float64)  # grey 0.1
    pattern = 0.5 + 0.5 * torch.rand(1, 1, 4, 4, generator=gen, dtype=torch.float64)
    means = (hues[:, :, None, None] * pattern).reshape(3, -1)
    return GaussianMixture([0.45, 0.35, 0.2], means, 0.05)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in ("cosine", "edm") else [])
                                  for n in SDES])  # fmt: skip
def test_colorization_recovers_the_colours_of_the_exact_posterior(name):
    sde, gm, n = SDES[name], _colour_mixture(), 1500
    truth, labels = gm.sample(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64, return_labels=True)
    gray = truth.reshape(n, 3, 4, 4).mean(1, keepdim=True)
    x = colorize(sde, gm.score_fn(sde), gray, sampler="pc", steps=200, generator=sd.SampleNoise(0, n))
    assert x.shape == (n, 3, 4, 4)
    torch.testing.assert_close(x.mean(1, keepdim=True), gray, rtol=0, atol=1e-6)  # grey kept
    A = torch.kron(torch.full((1, 3), 1 / 3, dtype=torch.float64), torch.eye(16, dtype=torch.float64))
    weights, means, _ = gm.posterior(A, gray.reshape(n, -1))
    drawn = gm.assign(x.reshape(n, -1))
    freq = torch.bincount(drawn, minlength=3).double() / n
    assert 0.5 * float((freq - weights.mean(0)).abs().sum()) < 0.05  # hues at the exact posterior odds
    # given its hue, each pixel's colour is the exact posterior mean's, to within the data noise (std 0.05)
    chosen = means[torch.arange(n), drawn].reshape(n, 3, 4, 4)
    rmse = float(((x - chosen) ** 2).mean().sqrt())
    assert rmse < 0.06, rmse


# -- boundary checks -------------------------------------------------------------------------------------------------
def test_bad_input_is_a_clear_error_before_any_work():
    sde, gm = SDES["vp"], demo_mixture()
    score = gm.score_fn(sde)
    A = torch.randn(1, 2, dtype=torch.float64)
    y = torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="noiseless"):
        solve_inverse(sde, score, y, A, noise_std=0.1, method="projection")
    with pytest.raises(ValueError, match="noisy"):
        solve_inverse(sde, score, y, A, method="dps")
    with pytest.raises(ValueError, match="unknown method"):
        solve_inverse(sde, score, y, A, method="magic")
    with pytest.raises(ValueError, match="columns"):
        solve_inverse(sde, score, y, torch.randn(1, 3, dtype=torch.float64), shape=(2,))
    with pytest.raises(ValueError, match=r"\[B, m=1\]"):
        solve_inverse(sde, score, torch.zeros(4, 2, dtype=torch.float64), A)
    with pytest.raises(ValueError, match="shape="):
        solve_inverse(sde, score, y, (lambda u: u[:, :1], lambda w: torch.cat([w, 0 * w], 1)))
    with pytest.raises(ValueError, match="NaN"):
        solve_inverse(sde, score, torch.full((4, 1), float("nan")), A)
    with pytest.raises(ValueError, match="0 .unknown. and 1"):
        inpaint(sde, score, torch.zeros(4, 2), torch.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="broadcast"):
        inpaint(sde, score, torch.zeros(4, 2), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        colorize(sde, score, torch.zeros(4, 3, 2, 2))
    with pytest.raises(ValueError, match="sets"):
        inpaint(sde, score, torch.zeros(4, 2), torch.ones(1, 2), x_init=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="autograd"):
        solve_inverse(sde, lambda x, t: score(x, t).detach(), y, A, method="pigdm", sampler="ddim", steps=2)
