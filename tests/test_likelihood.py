"""Exact likelihood through the probability-flow ODE against closed-form log-densities."""

import math

import pytest
import torch

import scoresde as sd
from scoresde.toy import GaussianMixture

# sigma_max = 100 follows the paper's rule (above the largest pairwise data distance, ~10 here):
# the prior N(0, sigma_max^2 I) then matches p_T to O(|x|^2 / sigma_max^2) nats.
SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(sigma_max=100.0)}
EPS = 1e-5


def with_exact_prior(sde, gm, logp, z):
    """Swap the prior log-density for the exact log p_T(z): isolates the ODE and divergence error."""
    return logp - sde.prior_logp(z) + gm.log_prob(z, sde.T, sde)


def gaussian(dim=6):
    return GaussianMixture([1.0], [[0.5 - 0.2 * i for i in range(dim)]], [[0.4 + 0.1 * i for i in range(dim)]])


def mixture_12d():
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    stds = 0.3 + 0.5 * torch.rand(3, 12, generator=gen, dtype=torch.float64)
    return GaussianMixture([0.5, 0.3, 0.2], means, stds)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("make", [gaussian, mixture_12d], ids=["gaussian", "mixture12d"])
def test_exact_divergence_matches_the_true_log_density(sde_name, make):
    sde, gm = SDES[sde_name], make()
    x = gm.sample(48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logp, z, nfe = sd.log_likelihood(sde, gm.score_fn(sde), x, divergence="exact", eps=EPS)
    true = gm.log_prob(x, EPS, sde)
    per_dim = (logp - true).abs() / gm.dim
    assert float(per_dim.max()) < 0.01, float(per_dim.max())
    assert float((logp - gm.log_prob(x)).abs().max()) / gm.dim < 0.01  # and the data density itself
    solver_error = (with_exact_prior(sde, gm, logp, z) - true).abs() / gm.dim
    assert float(solver_error.max()) < 1e-3, float(solver_error.max())
    assert z.shape == x.shape and nfe > 10


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(sde_name, noise):
    sde, gm = SDES[sde_name], mixture_12d()
    x = gm.sample(256, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logp, z, _ = sd.log_likelihood(
        sde, gm.score_fn(sde), x, noise=noise, generator=torch.Generator().manual_seed(3), rtol=1e-4, atol=1e-4
    )
    err = with_exact_prior(sde, gm, logp, z) - gm.log_prob(x, EPS, sde)
    stderr = float(err.std()) / math.sqrt(err.numel())
    assert float(err.std()) > 1e-3  # the estimate is genuinely stochastic here
    assert abs(float(err.mean())) < 4 * stderr, (float(err.mean()), stderr)


def test_more_probes_reduce_the_variance():
    sde, gm = SDES["vp"], mixture_12d()
    x = gm.sample(128, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    true = gm.log_prob(x, EPS, sde)
    spread = []
    for probes in (1, 8):
        logp, _, _ = sd.log_likelihood(sde, gm.score_fn(sde), x, n_probes=probes, rtol=1e-4, atol=1e-4,
                                       generator=torch.Generator().manual_seed(5))  # fmt: skip
        spread.append(float((logp - true).std()))
    assert spread[1] < 0.55 * spread[0]  # ~1/sqrt(8) = 0.35 expected


def test_isotropic_gaussian_hutchinson_is_exact():
    """The Jacobian is a scaled identity, so a Rademacher probe gives the exact trace (reference check)."""
    sde = SDES["vp"]
    gm = GaussianMixture([1.0], [[0.0] * 192], 0.5)
    x = gm.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64).reshape(4, 3, 8, 8)
    logp, z, _ = sd.log_likelihood(sde, gm.score_fn(sde), x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4, 3, 8, 8)
    bpd = -logp / (192 * math.log(2))
    true = -gm.log_prob(x, EPS, sde) / (192 * math.log(2))
    assert float((bpd - true).abs().max()) < 1e-4


def test_one_forward_per_function_evaluation():
    sde, gm = SDES["vp"], mixture_12d()
    x = gm.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for kw in ({"divergence": "exact"}, {"n_probes": 3}):
        _, _, nfe = sd.log_likelihood(sde, gm.score_fn(sde), x, method="euler", steps=10, **kw)
        assert nfe == 10
    _, _, nfe = sd.log_likelihood(sde, gm.score_fn(sde), x, method="heun", steps=10)
    assert nfe == 20


def test_a_sample_likelihood_does_not_depend_on_its_batch():
    sde, gm = SDES["vp"], mixture_12d()
    x = gm.sample(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[1:] *= 4.0  # far-away neighbours that need many more steps
    together, _, _ = sd.log_likelihood(sde, gm.score_fn(sde), x, divergence="exact")
    alone, _, _ = sd.log_likelihood(sde, gm.score_fn(sde), x[:1], divergence="exact")
    torch.testing.assert_close(together[:1], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_encode_decode_round_trip(sde_name):
    sde, gm = SDES[sde_name], gaussian(4)
    x = gm.sample(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z, nfe = sd.encode(sde, gm.score_fn(sde), x)
    _, z_ll, _ = sd.log_likelihood(sde, gm.score_fn(sde), x, divergence="exact")
    torch.testing.assert_close(z, z_ll, rtol=1e-3, atol=1e-3 * sde.prior_std())
    # the flow carries p_eps onto (nearly) the prior
    assert float(z.std()) == pytest.approx(sde.prior_std(), rel=0.1)
    x_back, _ = sd.decode(sde, gm.score_fn(sde), z)
    torch.testing.assert_close(x_back, x, rtol=0, atol=2e-3)


def test_bits_per_dim_two_independent_ways():
    """8-bit data from a known density on [0, 1]: the library on [-1, 1] and on [0, 1] models
    agree with the closed-form bits/dim of the dequantized data."""
    dims = 3 * 2 * 2
    gen = torch.Generator().manual_seed(0)
    means = 0.5 + 0.15 * torch.randn(2, dims, generator=gen, dtype=torch.float64)
    unit = GaussianMixture([0.6, 0.4], means, 0.08)  # density of u on [0, 1]
    centred = GaussianMixture([0.6, 0.4], 2 * means - 1, 0.16)  # density of y = 2u - 1
    u = unit.sample(64, generator=gen, dtype=torch.float64).clamp(0, 1 - 1e-9)
    levels = torch.floor(256 * u).reshape(64, 3, 2, 2).to(torch.uint8)
    sde = SDES["vp"]

    def library(gm, data_range):
        bpd, _, _ = sd.bits_per_dim(sde, gm.score_fn(sde), levels.double(), data_range=data_range,
                                    divergence="exact", generator=torch.Generator().manual_seed(9))  # fmt: skip
        return bpd

    on_pm1, on_01 = library(centred, (-1.0, 1.0)), library(unit, (0.0, 1.0))
    noise = torch.rand(levels.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    dequantized = (levels.double() + noise) / 256
    closed_form = -(unit.log_prob(dequantized) - dims * math.log(256)) / (dims * math.log(2))
    # per sample the gap is the VP prior mismatch (mean e^{-1/2 int beta} x at T, ~0.01 nats here)
    torch.testing.assert_close(on_pm1, closed_form, rtol=0, atol=5e-3)
    torch.testing.assert_close(on_01, closed_form, rtol=0, atol=5e-3)
    assert abs(float(on_pm1.mean() - closed_form.mean())) < 1e-3
    assert abs(float(on_01.mean() - closed_form.mean())) < 1e-3
    assert 0 < float(closed_form.mean()) < 8


def test_bpd_offsets_are_the_reference_constants():
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.equal(sd.bpd_from_logp(zero, 10, 256, (-1.0, 1.0)), torch.full((3,), 7.0, dtype=torch.float64))
    assert torch.equal(sd.bpd_from_logp(zero, 10, 256, (0.0, 1.0)), torch.full((3,), 8.0, dtype=torch.float64))
    digits = sd.bpd_from_logp(zero, 64, 17, (0.0, 1.0))
    torch.testing.assert_close(digits, torch.full((3,), math.log2(17), dtype=torch.float64))


def test_dequantize():
    k = torch.tensor([[0, 255, 17]], dtype=torch.uint8)
    u = sd.dequantize(k, 256, generator=torch.Generator().manual_seed(0))
    assert bool(((u * 256).floor() == k.float()).all())


def test_likelihood_errors():
    sde, gm = SDES["vp"], gaussian(3)
    score = gm.score_fn(sde)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="non-finite"):
        sd.log_likelihood(sde, score, torch.full((2, 3), math.nan))
    with pytest.raises(ValueError, match="divergence"):
        sd.log_likelihood(sde, score, x, divergence="trace")
    with pytest.raises(ValueError, match="noise"):
        sd.log_likelihood(sde, score, x, noise="uniform")
    with pytest.raises(ValueError, match="n_probes"):
        sd.log_likelihood(sde, score, x, n_probes=0)
    with pytest.raises(ValueError, match="eps"):
        sd.log_likelihood(sde, score, x, eps=0.0)
    with pytest.raises(ValueError, match="integers"):
        sd.bits_per_dim(sde, score, torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="integers"):
        sd.bits_per_dim(sde, score, torch.full((2, 3), 256.0))
    with pytest.raises(FloatingPointError):
        sd.log_likelihood(sde, lambda x, t: x * math.nan, x)


def test_a_score_without_an_autograd_path_is_an_error():
    # under no_grad (or detached) the divergence would silently be the drift's alone: ~5 nats/dim off
    sde, gm = SDES["vp"], gaussian()
    exact = gm.score_fn(sde)

    def detached(x, t):
        return exact(x, t).detach()

    x = gm.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="autograd"):
        sd.log_likelihood(sde, detached, x, rtol=1e-3, atol=1e-3)
    with pytest.raises(TypeError, match="floating-point"):
        sd.log_likelihood(sde, exact, torch.zeros(4, 6, dtype=torch.int64))


def test_likelihood_does_not_depend_on_batching_with_per_sample_probes():
    sde, gm = SDES["vp"], mixture_12d()
    x = gm.sample(60, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kw = {"rtol": 1e-4, "atol": 1e-4}
    logp, z, _ = sd.log_likelihood(sde, gm.score_fn(sde), x, generator=sd.SampleNoise(1, 60), **kw)
    batched, zb, nfe = sd.log_likelihood(sde, gm.score_fn(sde), x, generator=sd.SampleNoise(1, 60), batch_size=25, **kw)
    shard, _, _ = sd.log_likelihood(sde, gm.score_fn(sde), x[40:], generator=sd.SampleNoise(1, range(40, 60)), **kw)
    torch.testing.assert_close(batched, logp, rtol=0, atol=1e-9)
    torch.testing.assert_close(zb, z, rtol=0, atol=1e-9)
    torch.testing.assert_close(shard, logp[40:], rtol=0, atol=1e-9)
    assert nfe > 10


def test_bits_per_dim_batches_dequantization_per_sample():
    sde = SDES["vp"]
    gm = GaussianMixture([1.0], [[0.0] * 4], [[0.5] * 4])
    images = torch.randint(0, 17, (30, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    kw = {"levels": 17, "rtol": 1e-4, "atol": 1e-4}
    one, _, _ = sd.bits_per_dim(sde, gm.score_fn(sde), images, generator=sd.SampleNoise(2, 30), **kw)
    two, _, _ = sd.bits_per_dim(sde, gm.score_fn(sde), images, generator=sd.SampleNoise(2, 30), batch_size=7, **kw)
    torch.testing.assert_close(two, one, rtol=0, atol=1e-6)


def test_slerp_against_closed_forms():
    e1, e2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    torch.testing.assert_close(sd.slerp(e1, e2, 0.5), torch.tensor([[0.5**0.5, 0.5**0.5, 0.0]]))
    mid = sd.slerp(3 * e1, 3 * e2, 1 / 3)  # 30 degrees along the quarter circle of radius 3
    torch.testing.assert_close(mid, torch.tensor([[3 * math.cos(math.pi / 6), 3 * math.sin(math.pi / 6), 0.0]]))
    assert torch.equal(sd.slerp(e1, e2, 0.0), e1) and torch.allclose(sd.slerp(e1, e2, 1.0), e2)
    torch.testing.assert_close(sd.slerp(e1, 2 * e1, 0.25), 1.25 * e1)  # parallel: the straight line
    with pytest.raises(ValueError, match="weight"):
        sd.slerp(e1, e2, 1.5)


def test_interpolation_path_starts_and_ends_at_the_inputs():
    sde, gm = SDES["vp"], gaussian(dim=4)
    x = gm.sample(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    path, nfe = sd.interpolate(sde, gm.score_fn(sde), x[:3], x[3:], n=5, rtol=1e-6, atol=1e-6)
    assert path.shape == (5, 3, 4) and nfe > 10
    torch.testing.assert_close(path[0], x[:3], rtol=0, atol=1e-3)
    torch.testing.assert_close(path[-1], x[3:], rtol=0, atol=1e-3)
