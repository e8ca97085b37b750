"""Property-based tests (Hypothesis) at the public boundary: random shapes, dtypes, values (NaN, inf, huge, empty,
negative) and argument values give a correct result or a clear one-line error of the library's own kinds
(``ValueError``, ``TypeError``, ``FloatingPointError``), never a torch traceback, a hang or a silent wrong number.

Correct results are checked against closed forms: standard normal data keeps its law under the VP process, so its
score is ``-x`` at every time and its exact log-density is known; the demo mixture's exact score steers samples to
its modes. Examples are few and tiny, derandomized (the same cases on every run), so the file runs in seconds.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scoresde as sd
from scoresde.cli import main
from scoresde.losses import dsm_loss
from scoresde.toy import demo_mixture

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
CLEAN = (ValueError, TypeError, FloatingPointError)
SPECIAL = st.sampled_from([0.0, -1.0, 1e30, -1e30, math.inf, -math.inf, math.nan, 1e-300, 2.5])
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.bool])
SAMPLERS = st.sampled_from(["euler_maruyama", "reverse_diffusion", "pc", "ddim", "dpm_solver++", "unipc",
                            "sde_dpm_solver++", "edm_heun", "ode"])  # fmt: skip
VP = sd.VPSDE()
MIXTURE = demo_mixture()


def clean(call):
    """``call()``'s result, or ``None`` after a clean error: one of :data:`CLEAN` with a one-line message."""
    try:
        return call()
    except CLEAN as err:
        message = str(err)
        assert message and "\n" not in message, f"{type(err).__name__} over several lines: {message!r}"
        assert "Traceback" not in message
        return None


def gaussian_score(x, t):
    """The exact score of standard normal data under VP at any time (the law does not change): -x."""
    return -x


def tensor(values, shape, dtype):
    x = torch.tensor(values, dtype=torch.float64).reshape(shape)
    return x.to(dtype) if dtype != torch.bool else x > 0


@SETTINGS
@given(sampler=SAMPLERS, batch=st.integers(1, 5), dims=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       steps=st.one_of(st.integers(-2, 6), st.sampled_from([10**9, 2.5, math.nan])),
       eps=st.one_of(st.none(), st.sampled_from([1e-3, 0.0, -1.0, 1.0, 2.0, math.nan])))  # fmt: skip
def test_sample_gives_finite_samples_of_the_shape_or_a_clean_error(sampler, batch, dims, steps, eps):
    kwargs = {} if sampler == "ode" else {"steps": steps}
    x = clean(lambda: sd.sample(VP, gaussian_score, (batch, *dims), sampler=sampler, eps=eps,
                                generator=torch.Generator().manual_seed(0), **kwargs))  # fmt: skip
    if x is not None:
        assert x.shape == (batch, *dims) and bool(torch.isfinite(x).all())
        assert (isinstance(steps, int) and 0 < steps <= 100_000) or sampler == "ode"


@SETTINGS
@given(value=SPECIAL, dtype=DTYPES, sampler=st.sampled_from(["ddim", "pc", "dpm_solver++"]))
def test_sample_from_a_given_start_checks_it(value, dtype, sampler):
    x_init = tensor([value] * 6, (3, 2), dtype)
    x = clean(lambda: sd.sample(VP, gaussian_score, None, x_init=x_init, sampler=sampler, steps=4))
    if x is not None:
        assert x.shape == (3, 2) and bool(torch.isfinite(x).all())  # the linear score keeps even 1e30 finite
        assert dtype.is_floating_point and math.isfinite(value)  # half precision samples too; integers do not


@SETTINGS
@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), shape_off=st.booleans(), kind=st.sampled_from(["nan",
       "shape", "type"]))  # fmt: skip
def test_a_score_function_that_misbehaves_is_named(bad, shape_off, kind):
    def score(x, t):
        if kind == "type":
            return x.tolist()
        if kind == "shape":
            return x[:, :1]
        return torch.full_like(x, bad)

    with pytest.raises(CLEAN) as err:
        sd.sample(VP, score, (4, 2), sampler="ddim", steps=3)
    assert "score_fn" in str(err.value) and "\n" not in str(err.value)


@SETTINGS
@given(values=st.lists(st.floats(-4, 4), min_size=4, max_size=4))
def test_log_likelihood_of_gaussian_data_is_the_exact_density(values):
    """Standard normal data under VP: the exact log-density at eps is the standard normal one (the law is kept)."""
    x = torch.tensor(values, dtype=torch.float64).reshape(2, 2)
    logp, z, nfe = sd.log_likelihood(VP, gaussian_score, x, divergence="exact", rtol=1e-7, atol=1e-7)
    exact = -0.5 * (x**2).sum(1) - math.log(2 * math.pi)
    torch.testing.assert_close(logp, exact, atol=1e-4, rtol=0)
    assert z.shape == x.shape and nfe > 0


@SETTINGS
@given(value=SPECIAL, dtype=DTYPES, rtol=st.sampled_from([1e-5, 0.0, -1.0, 1e-300, math.nan]),
       eps=st.sampled_from([1e-5, 0.0, 1.0, -1.0]))  # fmt: skip
def test_log_likelihood_checks_its_inputs(value, dtype, rtol, eps):
    x = tensor([value, 0.5, -0.5, 0.1], (2, 2), dtype)
    out = clean(lambda: sd.log_likelihood(VP, gaussian_score, x, divergence="exact", rtol=rtol, eps=eps))
    if out is not None:
        assert bool(torch.isfinite(out[0]).all())
        assert dtype in (torch.float32, torch.float64) and rtol >= 1e-6 and 0 < eps < 1


@SETTINGS
@given(levels=st.sampled_from([2, 17, 256, 1, 2.5, -3, True]),
       data_range=st.sampled_from([(-1.0, 1.0), (0.0, 1.0), (1.0, -1.0), (0.0, 0.0), (math.nan, 1.0),
                                   (-math.inf, 1.0)]),
       top=st.integers(0, 300))  # fmt: skip
def test_bits_per_dim_checks_levels_and_range_before_the_solve(levels, data_range, top):
    calls = []

    def score(x, t):
        calls.append(1)
        return gaussian_score(x, t)

    k = torch.tensor([[0, top], [top // 2, 1]])
    out = clean(lambda: sd.bits_per_dim(VP, score, k, levels=levels, data_range=data_range, divergence="exact",
                                        rtol=1e-4, atol=1e-4))  # fmt: skip
    if out is None:
        assert not calls  # refused before the first score evaluation
    else:
        assert bool(torch.isfinite(out[0]).all()) and top < levels and data_range[0] < data_range[1]


@SETTINGS
@given(t=st.sampled_from([0.5, 0.0, -0.1, 1.5, math.nan, math.inf]), score_value=st.sampled_from([0.0, math.nan]),
       weighting=st.sampled_from(["sigma2", "likelihood", "edm", "velocity", "min_snr", "bogus"]))  # fmt: skip
def test_dsm_loss_is_finite_or_refused(t, score_value, weighting):
    x0 = MIXTURE.sample(8, generator=torch.Generator().manual_seed(0))

    def score(x, time):
        return gaussian_score(x, time) + score_value

    loss = clean(lambda: dsm_loss(VP, score, x0, weighting=weighting, t=torch.full((8,), t)))
    if loss is not None:
        assert bool(torch.isfinite(loss)) and 0 < t <= 1 and score_value == 0.0


@SETTINGS
@given(y=SPECIAL, noise_std=st.sampled_from([0.0, 0.1, -0.1, math.nan, math.inf]),
       method=st.sampled_from(["projection", "dps", "pigdm", "ddnm", "bogus"]),
       scale=st.sampled_from([1.0, 0.0, -1.0, 1e30, math.nan]))  # fmt: skip
def test_solve_inverse_meets_the_measurement_or_refuses(y, noise_std, method, scale):
    A = torch.tensor([[1.0, 1.0]])
    measured = torch.full((3, 1), y)
    x = clean(lambda: sd.solve_inverse(VP, MIXTURE.score_fn(VP), measured, A, noise_std=noise_std, method=method,
                                       scale=scale, sampler="ddim", steps=5,
                                       generator=torch.Generator().manual_seed(0)))  # fmt: skip
    if x is not None:
        assert x.shape == (3, 2) and bool(torch.isfinite(x).all()) and abs(y) < 1e6
        if noise_std == 0:  # noiseless: the samples meet the measurement
            torch.testing.assert_close(x.sum(1), measured[:, 0], atol=1e-4, rtol=1e-4)


@SETTINGS
@given(scale=st.sampled_from([0.0, 1.0, 7.5, 1000.0, 1001.0, -1.0, math.nan, math.inf]),
       label=st.sampled_from([0, 2, 3, -1]))  # fmt: skip
def test_guidance_transforms_check_weights_and_labels(scale, label):
    guided = clean(lambda: sd.classifier_guided(MIXTURE.score_fn(VP), MIXTURE.classifier_fn(VP), label, scale))
    if guided is None:
        return
    x = clean(lambda: sd.sample(VP, guided, (64, 2), sampler="ddim", steps=20,
                                generator=torch.Generator().manual_seed(0)))  # fmt: skip
    if x is not None:  # at weight 0 the classifier is never asked, so any label >= 0 gives the plain samples
        assert 0 <= scale <= 1000 and label >= 0 and (label < 3 or scale == 0) and bool(torch.isfinite(x).all())


@SETTINGS
@given(option=st.sampled_from(["--steps", "-n", "--eps", "--guidance", "--seed", "--batch-size"]),
       value=st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "1e30", "2.5", "", "ten", "1e400", "-0"]),
                       st.text(min_size=1, max_size=6)))  # fmt: skip
def test_the_command_line_refuses_bad_numbers_in_one_line(option, value, capsys):
    code = main(["sample", "no/such/checkpoint", option, value, "--out", "x.png"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err and "\n" not in err and "Traceback" not in err, err
