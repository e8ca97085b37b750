"""The adaptive reverse-SDE solver (Jolicoeur-Martineau et al. 2021) driven by exact scores.

Acceptance as in test_samplers: mode weights within 0.03 total variation, within-mode stds within 8 %,
mean log-density within 0.06 nats of true samples, with at most 400 NFE (20 % of PC-1000's 2001).
The per-sample error norm of the paper averages over a sample's entries; on 2-D data it depends on the
very noise draw it judges, and rejections then bias the samples (measured below, strict xfail). On
64-D data the demo mixture's 2-D marginal meets the criteria, as do Gaussian data in closed form.
"""

import math

import pytest
import torch

import scoresde as sd
from scoresde.sampling import adaptive_sde
from scoresde.toy import GaussianMixture, mixture_errors

SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}
MAX_NFE = 400


def _meets_criteria(errors):
    return errors["tv"] < 0.03 and errors["std"] < 0.08 and abs(errors["logp"]) < 0.06


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="2-D per-sample error control: rejections select the noise (std +44 % VP)",
)
@pytest.mark.parametrize("sde_name", list(SDES))
def test_two_dimensional_mixture_at_the_paper_tolerances(sde_name, mixture, reference, one_thread):
    # measured with seed 7: VP 261 NFE, std error 0.44; sub-VP 255, 0.54; VE 395, 0.82 (tv 0.065)
    sde = SDES[sde_name]
    x, nfe = sd.sample(sde, mixture.score_fn(sde), (4000, 2), sampler="adaptive_sde",
                       generator=torch.Generator().manual_seed(7), return_nfe=True)  # fmt: skip
    assert nfe <= MAX_NFE and _meets_criteria(mixture_errors(mixture, x, reference))


@pytest.mark.parametrize("sde_name", list(SDES))
def test_mixture_marginal_of_64_dimensional_data(sde_name, mixture, reference, one_thread):
    # the demo mixture in the first two coordinates, N(0, 0.5^2) in 62 more (the same under every mode)
    dim = 64
    means = torch.zeros(3, dim, dtype=torch.float64)
    means[:, :2] = mixture.means
    stds = torch.full((3, dim), 0.5, dtype=torch.float64)
    stds[:, :2] = mixture.stds
    data = GaussianMixture(mixture.weights, means, stds)
    sde = SDES[sde_name]
    x, nfe = sd.sample(sde, data.score_fn(sde), (4000, dim), sampler="adaptive_sde",
                       generator=torch.Generator().manual_seed(7), return_nfe=True)  # fmt: skip
    errors = mixture_errors(mixture, x[:, :2], reference)  # measured: NFE 179 / 191 / 297 (VP / sub-VP / VE)
    assert nfe <= MAX_NFE and _meets_criteria(errors), (nfe, errors)
    assert float(x[:, 2:].std(0).pow(2).mean().sqrt()) == pytest.approx(0.5, rel=0.02)


def _gaussian(dim=64):
    mean = torch.zeros(dim, dtype=torch.float64)
    mean[1::2] = 2.5
    return GaussianMixture([1.0], mean[None], torch.linspace(0.2, 1.0, dim, dtype=torch.float64)[None])


@pytest.mark.parametrize("sde_name", list(SDES))
def test_gaussian_data_in_closed_form(sde_name, one_thread):
    # after the final Tweedie step at eps the samples are N(m, (alpha s^2)^2 / (alpha^2 s^2 + sigma^2))
    sde, data, n = SDES[sde_name], _gaussian(), 1000
    x = sd.sample(sde, data.score_fn(sde), (n, 64), sampler="adaptive_sde", generator=sd.SampleNoise(0, n),
                  dtype=torch.float64)  # fmt: skip
    alpha, sigma = (float(c[0]) for c in sde.marginal_coeffs(sd.sampling.default_eps(sde), x[:1]))
    s = data.stds[0]
    std = alpha * s**2 / (alpha**2 * s**2 + sigma**2).sqrt()
    ratio = x.std(0) / std
    assert abs(float(ratio.mean()) - 1) < 0.02 and float((ratio - 1).abs().max()) < 0.12
    z = (x.mean(0) - data.means[0]) / (std / math.sqrt(n))  # standard normal for an exact sampler
    assert float(z.pow(2).mean().sqrt()) < 1.3


def test_tighter_tolerances_cost_more_evaluations(one_thread):
    sde, data = SDES["vp"], _gaussian()

    def nfe(**tolerances):
        return sd.sample(sde, data.score_fn(sde), (100, 64), sampler="adaptive_sde", return_nfe=True,
                         generator=sd.SampleNoise(1, 100), **tolerances)[1]  # fmt: skip

    loose, default, tight = nfe(rtol=0.2, atol=0.03), nfe(), nfe(rtol=0.01, atol=0.002)
    assert loose < default < tight


def _reference_path(sde, score_fn, x, seed, index, eps, rtol=0.05, atol=0.0078, h=0.01, safety=0.9, r=0.9):
    """Algorithm 1 for one sample, written out in Python floats with the sample's own noise stream."""
    noise, reverse = sd.SampleNoise(seed, [index]), sde.reverse(score_fn)
    t, x_prev, h = sde.T, x.clone(), min(h, sde.T - eps)
    while True:
        z = noise.randn(x.shape, dtype=x.dtype)
        last = h >= (t - eps) * (1 - 1e-12)
        s = eps if last else t - h
        drift, g = reverse.sde(x, torch.tensor([t], dtype=x.dtype))
        x1 = x - h * drift + math.sqrt(h) * g * z
        drift, g = reverse.sde(x1, torch.tensor([s], dtype=x.dtype))
        x2 = 0.5 * (x1 + x - h * drift + math.sqrt(h) * g * z)
        delta = torch.clamp(rtol * torch.maximum(x1.abs(), x_prev.abs()), min=atol)
        err = float(((x1 - x2) / delta).pow(2).mean().sqrt())
        if err <= 1:
            x, x_prev, t = x2, x1, s
            if last:
                return x
        h = min(t - eps, safety * h * max(err, 1e-10) ** -r)


def test_every_sample_follows_its_own_algorithm_1_path(mixture, one_thread):
    sde, eps = SDES["ve"], 1e-5
    score = mixture.score_fn(sde)
    x_T = sde.prior_sampling((6, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = adaptive_sde(sde, score, x_T, [sde.T, eps], generator=sd.SampleNoise(5, 6))
    for i in (0, 3, 5):
        expected = _reference_path(sde, score, x_T[i : i + 1], 5, i, eps)
        torch.testing.assert_close(out[i : i + 1], expected, rtol=1e-9, atol=1e-9)


def test_samples_do_not_depend_on_batching_and_seeds_reproduce(mixture, one_thread):
    sde = SDES["vp"]
    score = mixture.score_fn(sde)

    def draw(noise, **kw):
        return sd.sample(sde, score, (len(noise), 2), sampler="adaptive_sde", generator=noise, **kw)

    whole = sd.SampleNoise(3, 8)
    one = draw(whole)
    assert whole.draws == 1 + 10_000  # the prior draw, then max_steps draws whatever the batch needed
    halves = [sd.SampleNoise(3, range(0, 4)), sd.SampleNoise(3, range(4, 8))]
    assert torch.equal(torch.cat([draw(noise) for noise in halves]), one)
    assert torch.equal(draw(sd.SampleNoise(3, 8).subset(4, 8)), one[4:])
    assert torch.equal(draw(sd.SampleNoise(3, 8), batch_size=3), one)
    assert torch.equal(draw(sd.SampleNoise(3, 8), progress=True), one)
    assert not torch.equal(draw(sd.SampleNoise(4, 8)), one)

    def seeded(seed):
        return sd.sample(sde, score, (64, 2), sampler="adaptive_sde", generator=torch.Generator().manual_seed(seed))

    assert torch.equal(seeded(0), seeded(0)) and not torch.equal(seeded(0), seeded(1))


def test_nfe_is_two_per_iteration_plus_denoising(mixture):
    sde = SDES["vp"]
    calls = []

    def spy(x, t):
        calls.append(1)
        return mixture.score(x, t, sde)

    _, nfe = sd.sample(sde, spy, (16, 2), sampler="adaptive_sde", return_nfe=True)
    assert nfe == len(calls) and nfe % 2 == 1 and nfe > 11


def test_bad_options_give_one_line_errors(mixture):
    sde = SDES["vp"]
    score = mixture.score_fn(sde)

    def run(**kw):
        return sd.sample(sde, score, (4, 2), sampler="adaptive_sde", **kw)

    bad = [
        ({"rtol": 0.0}, "rtol"),
        ({"atol": -1.0}, "atol"),
        ({"h_init": math.nan}, "h_init"),
        ({"safety": 1.5}, r"safety must be (a number )?in \(0, 1\]"),
        ({"exponent": math.inf}, "exponent"),
        ({"max_steps": 0}, "max_steps must be a positive integer"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"steps": 100}, "picks its own steps"),
        ({"callback": print}, "does not take the callback hook"),
        ({"replace": lambda info: info.x}, "does not take the replace hook"),
        ({"snr": 0.1}, "unknown option"),
    ]
    for kw, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            run(**kw)
        assert "\n" not in str(err.value)
    with pytest.raises(RuntimeError, match="max_steps=3"):
        run(max_steps=3)
    with pytest.raises(ValueError, match="runs from ts"):
        adaptive_sde(sde, score, torch.zeros(4, 2), [1e-3, 1.0])

    def broken(x, t):
        return torch.where(t[:, None] < 0.5, torch.full_like(x, math.nan), -x)

    with pytest.raises(FloatingPointError, match="stopped 4 sample"):
        adaptive_sde(sde, broken, torch.zeros(4, 2), [1.0, 1e-3])
