"""Every sampler, driven by the exact score of a 2-D mixture, reproduces the mixture.

Acceptance: mode weights within 0.03 total variation, within-mode stds within 8 %,
mean data log-density within 0.06 nats of true samples, for VP, sub-VP, VE and the newer
processes (cosine VP, rectified flow, EDM; the paper's samplers run on EDM's karras grid, its default).
"""

import itertools
import math

import pytest
import torch

import scoresde as sd
from scoresde.toy import mixture_errors

N_SAMPLES = 16_000
SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(), "cosine": sd.CosineVPSDE(),
        "rf": sd.RectifiedFlow(), "edm": sd.EDMSDE()}  # fmt: skip
# The reverse-diffusion rule with probability_flow is first order in the per-step signal decay a = alpha_t/alpha_s
# (x <- (2 - a) x + ..., where the flow's linear part is x / a): where the signal falls fast near T (cosine and
# rectified flow) 1,000 uniform steps miss (|logp| 0.13 and 0.68; VP 0.037); 2,000 log-SNR steps meet it
# (0.028, 0.049).
BUDGET = {(name, "reverse_diffusion", True): (2000, "log_snr") for name in ("cosine", "rf")}
# (sampler, steps, options): the step counts the README quotes for these tolerances
CASES = [
    ("euler_maruyama", 1000, {}),
    ("reverse_diffusion", 1000, {}),
    ("ancestral", 1000, {}),
    ("pc", 1000, {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}),
    ("pc", 1000, {"predictor": "euler_maruyama", "corrector": "ald", "snr": 0.16}),
    ("pc", 500, {"predictor": "ancestral", "corrector": "langevin", "snr": 0.1, "corrector_steps": 2}),
    ("euler_maruyama", 1000, {"probability_flow": True}),
    ("reverse_diffusion", 1000, {"probability_flow": True}),
    ("ode", None, {"method": "rk45"}),
    ("ode", 1000, {"method": "euler"}),
    ("ode", 50, {"method": "heun"}),
    ("ode", 25, {"method": "rk4"}),
    ("ddim", 100, {}),
    ("ddim", 500, {"eta": 1.0}),
]


def case_id(case):
    name, steps, opts = case
    return "-".join([name, str(steps), *(f"{k}={v}" for k, v in opts.items())])


ROTATED = ("vp", "subvp", "cosine", "ve", "edm", "rf")  # VE takes the paper's PC sampler (reverse diffusion + Langevin)


def matrix():
    """Every (process, sampler) pair. Every process runs every short sampler in the default run; each long
    (>= 500-step) sampler runs on one process, the processes taking them in turn; the other pairs run with
    ``make test-slow``."""
    pairs = []
    for i, case in enumerate(CASES):
        long = case[1] is not None and case[1] >= 500
        for name in SDES:
            slow = long and name != ROTATED[i % len(ROTATED)]
            pairs.append(pytest.param(name, case, id=f"{case_id(case)}-{name}",
                                      marks=[pytest.mark.slow] if slow else []))  # fmt: skip
    return pairs


@pytest.mark.parametrize(("sde_name", "case"), matrix())
def test_sampler_reproduces_the_mixture(sde_name, case, mixture, reference):
    sde = SDES[sde_name]
    name, steps, options = case
    steps, grid = BUDGET.get((sde_name, name, options.get("probability_flow", False)), (steps, None))
    x = sd.sample(
        sde, mixture.score_fn(sde), (N_SAMPLES, 2), sampler=name, steps=steps, grid=grid,
        generator=torch.Generator().manual_seed(7), **options,
    )  # fmt: skip
    errors = mixture_errors(mixture, x, reference)
    assert errors["tv"] < 0.03, errors
    assert errors["std"] < 0.08, errors
    assert abs(errors["logp"]) < 0.06, errors


def test_nfe_is_counted_honestly(mixture):
    sde = sd.VPSDE()
    score = mixture.score_fn(sde)

    def nfe(**kw):
        return sd.sample(sde, score, (8, 2), return_nfe=True, generator=torch.Generator().manual_seed(0), **kw)[1]

    assert nfe(sampler="euler_maruyama", steps=10) == 11  # 10 steps + the denoising step
    assert nfe(sampler="euler_maruyama", steps=10, denoise=False) == 10
    assert nfe(sampler="pc", steps=10, corrector="none", denoise=False) == 10
    assert nfe(sampler="pc", steps=10, corrector_steps=2, denoise=False) == 30
    assert nfe(sampler="ode", steps=10, method="rk4", denoise=False) == 40
    assert nfe(sampler="ode", steps=10, method="heun", denoise=False) == 20
    assert nfe(sampler="ddim", steps=10, denoise=False) == 10
    calls = []

    def spy(x, t):
        calls.append(1)
        return score(x, t)

    _, counted = sd.sample(sde, spy, (8, 2), sampler="ode", return_nfe=True)
    assert counted == len(calls) and counted > 10


@pytest.mark.parametrize("name", ["euler_maruyama", "pc", "ancestral", "ddim", "ode"])
def test_same_seed_same_samples_bit_for_bit(name, mixture):
    sde = sd.VESDE()
    kw = {"steps": 30} if name != "ode" else {}
    if name == "ddim":
        kw["eta"] = 0.5

    def run(seed):
        return sd.sample(
            sde, mixture.score_fn(sde), (64, 2), sampler=name, generator=torch.Generator().manual_seed(seed), **kw
        )

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_float64_and_x_init(mixture):
    sde = sd.VPSDE()
    z = sde.prior_sampling((32, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sd.sample(sde, mixture.score_fn(sde), None, sampler="ode", x_init=z)
    assert x.dtype == torch.float64 and x.shape == (32, 2)
    again = sd.sample(sde, mixture.score_fn(sde), (32, 2), sampler="ode", x_init=z)
    assert torch.equal(x, again)


def test_bad_input_gives_clear_errors(mixture):
    sde = sd.VPSDE()
    score = mixture.score_fn(sde)
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        sd.sample(sde, score, (4, 2), sampler="heun")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['snr'\]"):
        sd.sample(sde, score, (4, 2), sampler="ode", snr=0.1)
    with pytest.raises(ValueError, match="unknown predictor"):
        sd.sample(sde, score, (4, 2), sampler="pc", predictor="leapfrog", steps=3)
    with pytest.raises(ValueError, match="unknown corrector"):
        sd.sample(sde, score, (4, 2), sampler="pc", corrector="hmc", steps=3)
    with pytest.raises(ValueError, match="unknown method"):
        sd.sample(sde, score, (4, 2), sampler="ode", method="dopri8", steps=3)
    with pytest.raises(ValueError, match="picks its own steps"):
        sd.sample(sde, score, (4, 2), sampler="ode", steps=100)
    with pytest.raises(ValueError, match="eps"):
        sd.sample(sde, score, (4, 2), sampler="ddim", eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        sd.sample(sde, score, (4, 2), sampler="ddim", eps=2.0)
    with pytest.raises(ValueError, match="steps"):
        sd.sample(sde, score, (4, 2), sampler="ddim", steps=0)
    with pytest.raises(ValueError, match="shape"):
        sd.sample(sde, score, (4,), sampler="ddim", steps=3)
    with pytest.raises(ValueError, match="x_init has shape"):
        sd.sample(sde, score, (4, 2), sampler="ddim", steps=3, x_init=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="x_init contains NaN"):
        sd.sample(sde, score, None, sampler="ddim", steps=3, x_init=torch.full((5, 2), math.nan))
    with pytest.raises(ValueError, match="snr"):
        sd.sample(sde, score, (4, 2), sampler="pc", steps=3, snr=-1.0)
    with pytest.raises(ValueError, match="eta"):
        sd.sample(sde, score, (4, 2), sampler="ddim", steps=3, eta=2.0)
    with pytest.raises(ValueError, match="grid"):
        sd.sample(sde, score, (4, 2), sampler="ddim", steps=3, grid="cosine")
    with pytest.raises(ValueError, match="dimensions"):  # the mixture refuses 3-D data
        sd.sample(sde, score, (4, 3), sampler="ddim", steps=3)
    with pytest.raises(TypeError, match="SDE"):
        sd.sample("vp", score, (4, 2))


def test_ancestral_needs_a_variance_rule(mixture):
    class NoAncestral(sd.SubVPSDE):
        ancestral_variance = None

    sde = NoAncestral()
    with pytest.raises(TypeError, match="ancestral_variance to be 'posterior' or 'forward'"):
        sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler="ancestral", steps=3)


def test_non_finite_scores_are_reported(mixture):
    sde = sd.VPSDE()

    def broken(x, t):
        s = mixture.score(x, t, sde)
        return s if float(t[0]) > 0.5 else s * math.inf

    with pytest.raises(FloatingPointError, match=r"NaN or inf at t=0\.4"):
        sd.sample(sde, broken, (4, 2), sampler="euler_maruyama", steps=10)
    with pytest.raises(ValueError, match="shaped like x"):
        sd.sample(sde, lambda x, t: x.sum(1), (4, 2), sampler="ddim", steps=3)


def test_divergence_is_reported(mixture):
    sde = sd.VESDE()
    with pytest.raises(FloatingPointError, match="diverged"):
        sd.sample(sde, lambda x, t: torch.full_like(x, 1e38), (4, 2), sampler="euler_maruyama", steps=3)


@pytest.mark.parametrize("grid", ["uniform", "quadratic", "log_snr"])
def test_time_grids(grid):
    for sde in SDES.values():
        ts = sd.time_grid(sde, 20, 1e-3, grid)
        assert len(ts) == 21 and ts[0] == sde.T and ts[-1] == 1e-3
        assert all(a > b for a, b in itertools.pairwise(ts))
    if grid == "log_snr":
        sde = SDES["vp"]
        ts = sd.time_grid(sde, 20, 1e-3, grid)
        lam = sde.schedule.log_snr(torch.tensor(ts, dtype=torch.float64))
        diffs = lam[1:] - lam[:-1]
        torch.testing.assert_close(diffs, diffs.mean().expand(20), rtol=1e-6, atol=1e-9)


def test_fewer_steps_with_a_quadratic_grid(mixture, reference):
    """VP DDIM at 25 steps on the quadratic grid already meets the tolerances (quoted in the README)."""
    sde = sd.VPSDE()
    x = sd.sample(sde, mixture.score_fn(sde), (N_SAMPLES, 2), sampler="ddim", steps=25, grid="quadratic",
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    errors = mixture_errors(mixture, x, reference)
    assert errors["tv"] < 0.03 and errors["std"] < 0.08 and abs(errors["logp"]) < 0.06, errors


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_corrector_only_annealed_langevin(sde_name, mixture, reference):
    """The paper's C2000: no predictor, two Langevin steps at each of 1000 noise levels."""
    sde = SDES[sde_name]
    x = sd.sample(sde, mixture.score_fn(sde), (N_SAMPLES, 2), sampler="pc", predictor="none", corrector="langevin",
                  snr=0.16, corrector_steps=2, steps=1000, generator=torch.Generator().manual_seed(0))  # fmt: skip
    errors = mixture_errors(mixture, x, reference)
    assert errors["tv"] < 0.03 and errors["std"] < 0.08 and abs(errors["logp"]) < 0.06, errors


def test_progress_bars_do_not_change_results(mixture, capsys):
    sde = sd.VPSDE()
    for sampler, kw in (("pc", {"steps": 5}), ("ode", {}), ("ddim", {"steps": 5})):
        a = sd.sample(sde, mixture.score_fn(sde), (16, 2), sampler=sampler, progress=True,
                      generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
        b = sd.sample(sde, mixture.score_fn(sde), (16, 2), sampler=sampler,
                      generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
        assert torch.equal(a, b)
