"""Sample-quality statistics against closed forms, scipy/numpy computations and torchmetrics."""

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from scipy import linalg, stats
from scipy.spatial.distance import cdist, pdist
from torch import nn

from scoresde import metrics
from scoresde.metrics import (
    energy_distance,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    kid,
    mmd,
    sliced_wasserstein,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rng(seed):
    return np.random.default_rng(seed)


def random_spd(r, d):
    a = r.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------- independent references


def poly_mmd2_loop(x, y, degree=3, gamma=None, coef0=1.0):
    """Unbiased MMD² with the polynomial kernel, written as plain Python loops."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma

    def k(a, b):
        return (gamma * float(np.dot(a, b)) + coef0) ** degree

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)


def rbf_mmd2_cdist(x, y, bandwidths, unbiased=True):
    """MMD² with a sum of RBF kernels from scipy's cdist; the V-statistic when ``unbiased=False``."""

    def gram(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    n, m = len(x), len(y)
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    off = (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return off - 2 * kxy.mean()


def wasserstein_1d_by_replication(a, b, p):
    """Exact W_p between two 1-D empirical distributions: replicate both to lcm(N, M) atoms and sort."""
    size = math.lcm(len(a), len(b))
    ra = np.sort(np.repeat(a, size // len(a)))
    rb = np.sort(np.repeat(b, size // len(b)))
    return float(np.mean(np.abs(ra - rb) ** p) ** (1 / p))


# ----------------------------------------------------------------------------- Fréchet distance


def test_gaussian_stats_match_numpy():
    f = rng(0).normal(size=(50, 4)) @ rng(1).normal(size=(4, 4)) + 3.0
    mu, cov = gaussian_stats(torch.from_numpy(f).float())
    assert mu.dtype == cov.dtype == torch.float64 and mu.shape == (4,) and cov.shape == (4, 4)
    f32 = f.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu.numpy(), f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(f32, rowvar=False), rtol=1e-10)
    mu_np, _ = gaussian_stats(f)  # numpy input
    np.testing.assert_allclose(mu_np.numpy(), f.mean(0), rtol=1e-12)


@pytest.mark.parametrize("d", [1, 5, 64])
def test_frechet_diagonal_gaussians_closed_form(d):
    # For diagonal covariances the trace term is sum(s1 s2), so d² = |m1 - m2|² + |s1 - s2|² with s the stds.
    r = rng(d)
    m1, m2 = r.normal(size=d), r.normal(size=d)
    s1, s2 = r.uniform(0.1, 3.0, size=d), r.uniform(0.1, 3.0, size=d)
    want = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    got = frechet_distance_from_stats(m1, np.diag(s1**2), m2, np.diag(s2**2))
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_frechet_full_covariances_against_scipy_sqrtm(seed):
    r = rng(seed)
    d = 30
    m1, m2 = r.normal(size=d), r.normal(size=d)
    s1, s2 = random_spd(r, d), random_spd(r, d)
    want = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    got = frechet_distance_from_stats(torch.from_numpy(m1), torch.from_numpy(s1), torch.from_numpy(m2), s2)
    assert got == pytest.approx(want, rel=1e-9)
    assert frechet_distance_from_stats(m2, s2, m1, s1) == pytest.approx(want, rel=1e-9)  # symmetric


@pytest.mark.parametrize("rank1, rank2", [(3, None), (3, 5), (4, 4), (1, 1)])
def test_frechet_rank_deficient_covariances(rank1, rank2):
    # With S1 = A Aᵀ and S2 = B Bᵀ the nonzero eigenvalues of S1^½ S2 S1^½ are those of (BᵀA)ᵀ(BᵀA),
    # so the trace of its square root is the nuclear norm of BᵀA (sum of singular values, numpy's SVD).
    r = rng(10 * rank1 + (rank2 or 0))
    d = 12
    a = r.normal(size=(d, rank1))
    b = np.linalg.cholesky(random_spd(r, d)) if rank2 is None else r.normal(size=(d, rank2))
    s1, s2 = a @ a.T, b @ b.T
    m1, m2 = r.normal(size=d), r.normal(size=d)
    nuclear = np.linalg.svd(b.T @ a, compute_uv=False).sum()
    want = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * nuclear
    # rounding-level eigenvalues must be dropped, not just clamped at 0: their square roots (~1e-8 each) would
    # shift the result by ~1e-6
    assert frechet_distance_from_stats(m1, s1, m2, s2) == pytest.approx(want, rel=1e-11)
    assert frechet_distance_from_stats(m2, s2, m1, s1) == pytest.approx(want, rel=1e-11)
    # identical singular Gaussians are at distance 0 (sqrtm-based formulas struggle here)
    assert frechet_distance_from_stats(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-12 * np.trace(s1))


def test_frechet_fewer_samples_than_features():
    # N < D: both sample covariances are singular; S = Xcᵀ Xc / (N - 1), so A = Xcᵀ / sqrt(N - 1) above.
    r = rng(7)
    x, y = r.normal(size=(6, 20)), 0.5 + 2.0 * r.normal(size=(9, 20))
    xc, yc = x - x.mean(0), y - y.mean(0)
    a, b = xc.T / np.sqrt(5), yc.T / np.sqrt(8)
    nuclear = np.linalg.svd(b.T @ a, compute_uv=False).sum()
    want = ((x.mean(0) - y.mean(0)) ** 2).sum() + (a * a).sum() + (b * b).sum() - 2 * nuclear
    assert frechet_distance(x, y) == pytest.approx(want, rel=1e-11)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-11)


def test_frechet_from_samples_converges_to_closed_form():
    # Diagonal Gaussians rotated by a common orthogonal Q (d² is invariant), so the covariances are full.
    n = 100_000
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5])
    truth = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()  # 2.5
    r = rng(3)
    q, _ = np.linalg.qr(r.normal(size=(3, 3)))
    x = (m1 + s1 * r.normal(size=(n, 3))) @ q.T
    y = (m2 + s2 * r.normal(size=(n, 3))) @ q.T
    # Delta method: the mean difference has per-axis variance (s1² + s2²)/n and moves d² by 2 Δm δ; a sample
    # std has relative variance 1/(2n) and moves d² by 2 (s1 - s2) δs. Second-order terms (mean noise, off-diagonal
    # covariance noise) are O(1/n) and covered by `slack`.
    var = ((4 * (m1 - m2) ** 2 + 2 * (s1 - s2) ** 2) * (s1**2 + s2**2)).sum() / n
    slack = 10 * (s1**2 + s2**2).sum() / n
    got = frechet_distance(torch.from_numpy(x), torch.from_numpy(y))
    assert abs(got - truth) < 4 * math.sqrt(var) + slack, (got, truth, math.sqrt(var))


# ----------------------------------------------------------------------------- KID


def test_kid_is_unbiased_and_the_v_statistic_is_not():
    # x and y from the same distribution: the U-statistic averages to 0, the V-statistic (diagonals kept) does not.
    reps, n, d = 300, 16, 4
    g = gen(0)
    u, v = [], []
    for _ in range(reps):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randn(n, d, generator=g, dtype=torch.float64)
        u.append(kid(x, y, subsets=1, subset_size=n, generator=g)[0])
        xn, yn = x.numpy(), y.numpy()
        k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
        v.append(k(xn, xn).mean() + k(yn, yn).mean() - 2 * k(xn, yn).mean())
    u, v = np.array(u), np.array(v)
    se_u, se_v = u.std(ddof=1) / np.sqrt(reps), v.std(ddof=1) / np.sqrt(reps)
    assert abs(u.mean()) < 3 * se_u, (u.mean(), se_u)
    assert v.mean() > 10 * se_v, (v.mean(), se_v)


def test_kid_matches_loop_computation():
    r = rng(1)
    x, y = r.normal(size=(9, 3)), r.normal(size=(9, 3)) + 0.5
    # subset_size >= N = M: every subset is the whole set (reordered), so all subsets give the same value
    mean, std = kid(x, y, subsets=3, subset_size=50, degree=2, gamma=0.3, coef0=0.5, generator=gen(0))
    assert mean == pytest.approx(poly_mmd2_loop(x, y, degree=2, gamma=0.3, coef0=0.5), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)
    mean, _ = kid(torch.from_numpy(x).float(), torch.from_numpy(y).float(), subsets=1, subset_size=9)
    x32, y32 = (a.astype(np.float32).astype(np.float64) for a in (x, y))
    assert mean == pytest.approx(poly_mmd2_loop(x32, y32), rel=1e-12)  # default: degree 3, gamma 1/D, coef0 1


def test_kid_subsets_are_uniform_draws_without_replacement():
    # 4 rows of x and 5 of y, subsets of 3: there are C(4,3) * C(5,3) = 40 equally likely subset pairs.
    r = rng(2)
    x, y = r.normal(size=(4, 2)), r.normal(size=(5, 2)) + 1.0
    values = np.array(
        [poly_mmd2_loop(x[list(i)], y[list(j)]) for i in combinations(range(4), 3) for j in combinations(range(5), 3)]
    )
    for seed in range(10):  # every single draw is one of the 40 values
        one, _ = kid(x, y, subsets=1, subset_size=3, generator=gen(seed))
        assert np.isclose(values, one, rtol=1e-12).any()
    draws = 2000
    mean, std = kid(x, y, subsets=draws, subset_size=3, generator=gen(0))
    assert abs(mean - values.mean()) < 4 * values.std() / np.sqrt(draws)
    assert std == pytest.approx(values.std(), rel=0.1)
    # the std is the population one (ddof=0): for two subsets mean ± std are the two values themselves
    mean, std = kid(x, y, subsets=2, subset_size=3, generator=gen(3))
    assert std > 0 and all(np.isclose(values, v, rtol=1e-9).any() for v in (mean + std, mean - std))
    seeded = lambda seed: kid(x, y, subsets=5, subset_size=3, generator=gen(seed))  # noqa: E731
    assert seeded(1) == seeded(1) != seeded(2)


class FeatureIdentity(nn.Module):
    """A torchmetrics feature extractor for precomputed features."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_frechet_and_kid_agree_with_torchmetrics():
    pytest.importorskip("torchmetrics")
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    d, n = 16, 300
    g = gen(5)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / 4
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix
    y = 0.2 + 1.3 * torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.T

    fid = FrechetInceptionDistance(feature=FeatureIdentity(d))
    fid.update(x, real=True)
    fid.update(y, real=False)
    assert frechet_distance(x, y) == pytest.approx(float(fid.compute()), rel=1e-8)

    tm_kid = KernelInceptionDistance(feature=FeatureIdentity(d), subsets=1, subset_size=n)
    tm_kid.update(x, real=True)
    tm_kid.update(y, real=False)
    tm_mean, tm_std = tm_kid.compute()
    mean, std = kid(x, y, subsets=1, subset_size=n)
    assert mean == pytest.approx(float(tm_mean), rel=1e-10)
    assert std == float(tm_std) == 0.0


# ----------------------------------------------------------------------------- MMD


def test_mmd_is_unbiased():
    reps, n, m = 300, 15, 25
    bandwidths = [0.5, 1.0]
    g = gen(1)
    u, v = [], []
    for _ in range(reps):
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        y = torch.randn(m, 2, generator=g, dtype=torch.float64)
        u.append(mmd(x, y, bandwidths=bandwidths))
        v.append(rbf_mmd2_cdist(x.numpy(), y.numpy(), bandwidths, unbiased=False))
    u, v = np.array(u), np.array(v)
    se_u, se_v = u.std(ddof=1) / np.sqrt(reps), v.std(ddof=1) / np.sqrt(reps)
    assert abs(u.mean()) < 3 * se_u, (u.mean(), se_u)
    assert v.mean() > 10 * se_v, (v.mean(), se_v)


def test_mmd_matches_closed_form_for_1d_gaussians():
    # For independent A ~ N(a, sa²), B ~ N(b, sb²): E exp(-(A - B)²/(2h²)) = h/sqrt(v) exp(-(a - b)²/(2v)),
    # v = h² + sa² + sb² (A - B ~ N(a - b, sa² + sb²) integrated against an unnormalized Gaussian).
    def mean_kernel(a, sa, b, sb, h):
        v = h * h + sa * sa + sb * sb
        return h / math.sqrt(v) * math.exp(-((a - b) ** 2) / (2 * v))

    m1, s1, m2, s2 = 0.0, 1.0, 0.7, 1.5
    bandwidths = [0.5, 2.0]
    truth = sum(
        mean_kernel(m1, s1, m1, s1, h) + mean_kernel(m2, s2, m2, s2, h) - 2 * mean_kernel(m1, s1, m2, s2, h)
        for h in bandwidths
    )
    g = gen(2)
    est = np.array(
        [
            mmd(
                m1 + s1 * torch.randn(600, 1, generator=g, dtype=torch.float64),
                m2 + s2 * torch.randn(400, 1, generator=g, dtype=torch.float64),
                bandwidths=bandwidths,
            )
            for _ in range(40)
        ]
    )
    se = est.std(ddof=1) / np.sqrt(len(est))
    assert se < truth / 20  # the check below is sharp
    assert abs(est.mean() - truth) < 4 * se, (est.mean(), truth, se)
    # a single bandwidth given as a float
    x = torch.randn(300, 1, generator=g, dtype=torch.float64)
    y = torch.randn(200, 1, generator=g, dtype=torch.float64) + 1
    assert mmd(x, y, bandwidths=0.7) == pytest.approx(rbf_mmd2_cdist(x.numpy(), y.numpy(), [0.7]), rel=1e-10)


def test_mmd_default_bandwidths_are_the_median_heuristic():
    r = rng(4)
    x, y = r.normal(size=(60, 2)), r.normal(size=(50, 2)) * 1.5 + 0.3
    median = np.median(pdist(np.concatenate([x, y])))
    want = rbf_mmd2_cdist(x, y, [f * median for f in (0.25, 0.5, 1.0, 2.0, 4.0)])
    assert mmd(x, y) == pytest.approx(want, rel=1e-10)
    # above 2000 pooled points the median comes from a fixed random subset of 2000: deterministic, close
    big_x, big_y = r.normal(size=(1200, 2)), r.normal(size=(900, 2)) + 0.5
    big_median = np.median(pdist(np.concatenate([big_x, big_y])))
    full = rbf_mmd2_cdist(big_x, big_y, [f * big_median for f in (0.25, 0.5, 1.0, 2.0, 4.0)])
    assert mmd(big_x, big_y) == mmd(big_x, big_y)
    assert mmd(big_x, big_y) == pytest.approx(full, rel=0.02)


# ----------------------------------------------------------------------------- sliced Wasserstein


@pytest.mark.parametrize("n, m", [(40, 40), (30, 45), (7, 12)])
def test_sliced_wasserstein_in_1d_is_the_exact_wasserstein(n, m):
    r = rng(n + m)
    a, b = r.normal(size=n), r.gamma(2.0, size=m)
    ta, tb = torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None]
    sw1 = sliced_wasserstein(ta, tb, n_projections=5, p=1, generator=gen(0))
    assert sw1 == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)
    for p in (2, 3):
        swp = sliced_wasserstein(ta, tb, n_projections=5, p=p, generator=gen(0))
        assert swp == pytest.approx(wasserstein_1d_by_replication(a, b, p), rel=1e-10)
    if n == m:  # the sorted-sample formula
        want = np.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))
        assert sliced_wasserstein(ta, tb, n_projections=1, p=2) == pytest.approx(want, rel=1e-12)


def test_sliced_wasserstein_of_a_shift_in_2d():
    # x ~ N(0, I), y ~ N(m, I). With equal sample means, W2²(P, Q + c) = W2²(P, Q) + c² in 1-D, so
    # SW2² = (mean over directions of (m·u)²) + O(1/n); over uniform directions E (m·u)² = |m|²/2: SW2 -> |m|/√2.
    # Monte Carlo over L directions: Var cos²θ = 1/8, so SW2² has std |m|² / sqrt(8 L); we allow 4 of those.
    n, n_dirs = 3000, 2000
    shift = torch.tensor([1.2, -1.6], dtype=torch.float64)  # |m| = 2
    g = gen(3)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x, y = x - x.mean(0), y - y.mean(0) + shift
    sw = sliced_wasserstein(x, y, n_projections=n_dirs, p=2, generator=g)
    norm2 = float(shift @ shift)
    assert abs(sw**2 - norm2 / 2) < 4 * norm2 / math.sqrt(8 * n_dirs), (sw, math.sqrt(norm2 / 2))


def test_sliced_wasserstein_of_a_scaling():
    # x ~ N(0, I), y ~ N(0, s² I) in 3-D: every projection is N(0, 1) vs N(0, s²), whose W2 is |1 - s| and whose
    # W1 is |1 - s| E|Z| = |1 - s| sqrt(2/π). Averaged over directions the sample scales are off by about
    # s sqrt(2/(3n)) ~ 0.01, so 0.03 is 3 to 5 of those; all directions are alike, so few suffice.
    n, s = 20_000, 2.0
    g = gen(4)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = s * torch.randn(n, 3, generator=g, dtype=torch.float64)
    assert sliced_wasserstein(x, y, n_projections=64, p=2, generator=g) == pytest.approx(abs(1 - s), abs=0.03)
    w1 = abs(1 - s) * math.sqrt(2 / math.pi)
    assert sliced_wasserstein(x, y, n_projections=64, p=1, generator=g) == pytest.approx(w1, abs=0.03)


# ----------------------------------------------------------------------------- energy distance


@pytest.mark.parametrize("n, m", [(50, 50), (37, 81), (1, 4)])
def test_energy_distance_1d_is_scipy_squared(n, m):
    # scipy.stats.energy_distance returns sqrt(2E|X-Y| - E|X-X'| - E|Y-Y'|) for the empirical distributions.
    r = rng(n * m)
    a, b = r.normal(size=n), r.exponential(size=m)
    want = stats.energy_distance(a, b) ** 2
    assert energy_distance(a[:, None], b[:, None]) == pytest.approx(want, rel=1e-10)


def test_energy_distance_in_several_dimensions_against_cdist():
    r = rng(5)
    x, y = r.normal(size=(70, 5)), r.normal(size=(40, 5)) + 0.3
    want = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert energy_distance(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(want, rel=1e-10)


def test_energy_distance_is_zero_only_for_identical_sets():
    x = torch.randn(200, 3, generator=gen(6), dtype=torch.float64) * 100
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-10)
    assert energy_distance(x, x[torch.randperm(200, generator=gen(7))]) == pytest.approx(0.0, abs=1e-10)
    assert energy_distance(x, x + 1e-3) > 0.0


# ----------------------------------------------------------------------------- blocking, bad input


@pytest.mark.parametrize("block", [1, 50, 200])
def test_blocked_pairwise_sums(monkeypatch, block):
    # Tiny blocks force the row-block loops (and the diagonal bookkeeping of the symmetric sums) to run.
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", block)
    r = rng(block)
    x, y = r.normal(size=(37, 3)), r.normal(size=(23, 3)) + 0.4
    assert energy_distance(x, y) == pytest.approx(
        2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean(), rel=1e-10
    )
    assert mmd(x, y, bandwidths=[0.3, 1.0]) == pytest.approx(rbf_mmd2_cdist(x, y, [0.3, 1.0]), rel=1e-10)
    assert kid(x[:23], y, subsets=2, subset_size=23)[0] == pytest.approx(poly_mmd2_loop(x[:23], y), rel=1e-10)
    want = wasserstein_1d_by_replication(x[:, 0], y[:, 0], 2)
    assert sliced_wasserstein(x[:, :1], y[:, :1], n_projections=7) == pytest.approx(want, rel=1e-10)


GOOD = torch.randn(10, 3, generator=gen(8))
ALL = [frechet_distance, kid, mmd, sliced_wasserstein, energy_distance]


def bad_sets():
    nan, inf = GOOD.clone(), GOOD.clone()
    nan[2, 1] = float("nan")
    inf[0, 0] = float("inf")
    return [
        ("x", GOOD[None], GOOD, "^x must have shape"),
        ("y", GOOD, GOOD[:, 0], "^y must have shape"),
        ("x", torch.empty(0, 3), GOOD, "^x needs at least"),
        ("dims", GOOD, torch.randn(10, 4), "^x and y must have the same feature dimension, got 3 and 4"),
        ("nan", nan, GOOD, "^x contains 1 non-finite"),
        ("inf", GOOD, inf, "^y contains 1 non-finite"),
    ]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", bad_sets(), ids=lambda c: c[0])
def test_bad_feature_sets_raise(fn, case):
    _, x, y, match = case
    with pytest.raises(ValueError, match=match) as err:
        fn(x, y)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fn", [frechet_distance, kid, mmd], ids=lambda f: f.__name__)
def test_statistics_that_need_two_samples(fn):
    with pytest.raises(ValueError, match="^y needs at least 2 samples, got 1"):
        fn(GOOD, GOOD[:1])
    assert sliced_wasserstein(GOOD, GOOD[:1]) > 0 and energy_distance(GOOD, GOOD[:1]) > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gaussian_stats(GOOD[:1]), "^features needs at least 2"),
        (lambda: gaussian_stats(GOOD[0]), "^features must have shape"),
        (lambda: kid(GOOD, GOOD, subsets=0), "^subsets must be an integer >= 1"),
        (lambda: kid(GOOD, GOOD, subset_size=1), "^subset_size must be an integer >= 2"),
        (lambda: kid(GOOD, GOOD, degree=0), "^degree must be"),
        (lambda: kid(GOOD, GOOD, gamma=-1.0), "^gamma must be"),
        (lambda: kid(GOOD, GOOD, coef0=float("nan")), "^coef0 must be"),
        (lambda: mmd(GOOD, GOOD, bandwidths=[1.0, -1.0]), "^bandwidths must be"),
        (lambda: mmd(GOOD, GOOD, bandwidths=[]), "^bandwidths must be"),
        (lambda: mmd(torch.ones(5, 2), torch.ones(5, 2)), "median pairwise distance"),
        (lambda: sliced_wasserstein(GOOD, GOOD, n_projections=0), "^n_projections must be"),
        (lambda: sliced_wasserstein(GOOD, GOOD, p=0.5), "^p must be"),
        (lambda: frechet_distance_from_stats(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4)), "^mu1 and"),
        (lambda: frechet_distance_from_stats(torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3)), "^cov1 must"),
        (lambda: frechet_distance_from_stats(torch.zeros(3, 1), torch.eye(3), torch.zeros(3), torch.eye(3)), "^mu1"),
        (
            lambda: frechet_distance_from_stats(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.ones(3, 3).triu()),
            "^cov2 must be a symmetric",
        ),
        (
            lambda: frechet_distance_from_stats(torch.zeros(3), torch.eye(3), torch.full((3,), math.nan), torch.eye(3)),
            "^mu2 contains",
        ),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_non_array_input_is_a_type_error():
    with pytest.raises(TypeError, match="^x must be a torch.Tensor or a numpy array"):
        frechet_distance("features", GOOD)
