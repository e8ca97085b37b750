"""Property-based checks (Hypothesis) of scoresde's public boundary against random shapes, dtypes, values and
argument values.

Every call must end in one of two ways: a correct result (a finite tensor of the right shape and dtype and, where a
closed form exists, the right number: the demo Gaussian mixture has an exact score, density and noisy classifier
under every linear process), or a clear error of the library's own kind: a ValueError, TypeError or
FloatingPointError whose message is one line and names the argument at fault. A torch traceback from deep inside
(RuntimeError, IndexError, AttributeError, ...), a multi-line message, a hang, a NaN result, a wrong shape or a
silently truncated number fails the property. The CLI must answer bad numbers with exit code 2 and one line on stderr
naming the flag, before it opens the checkpoint.

The runs are derandomized (reproducible) and small: 2-D data or 1x4x4 images, batches of at most 8, at most a few
sampler steps, the exact mixture score in place of a network.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import signal

import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import scoresde as sd
from scoresde.cli import main
from scoresde.losses import ddpm_loss, dsm_loss, smld_loss
from scoresde.sampling import SAMPLERS, is_adaptive
from scoresde.sampling.grids import MAX_STEPS
from scoresde.toy import demo_mixture

MIX = demo_mixture()
NAN, INF = math.nan, math.inf
CLEAN = (ValueError, TypeError, FloatingPointError)
TIME_LIMIT_S = 30  # one call taking longer than this counts as a hang

PROPERTY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
FEW = settings(PROPERTY, max_examples=12)

SDE_CLASSES = (sd.VPSDE, sd.SubVPSDE, sd.VESDE, sd.CosineVPSDE, sd.EDMSDE, sd.RectifiedFlow)
SDES = tuple(cls() for cls in SDE_CLASSES)
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.bool)
SPECIAL = (0.0, -0.0, -1.0, 1e-30, 1e30, -1e30, NAN, INF, -INF)
FIXED_GRID_SAMPLERS = tuple(name for name in SAMPLERS if not is_adaptive(name))
FAST_SOLVERS = ("dpm_solver++", "dpm_solver", "unipc", "edm_heun", "sde_dpm_solver++")


# -- helpers -----------------------------------------------------------------------------------------------------
class Hang(Exception):
    """Raised by the alarm when one call runs past TIME_LIMIT_S."""


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S):
    def expired(signum, frame):
        raise Hang(f"the call ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def names_any(message: str, names: tuple[str, ...]) -> bool:
    """Whether ``message`` names one of ``names`` as a word (``t`` in "t=2" but not in "at")."""
    return any(re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) for name in names)


def outcome(fn, names: tuple[str, ...]):
    """Call ``fn()``; return ``(result, None)``, or ``(None, error)`` for a clean error: a ValueError, TypeError or
    FloatingPointError with a one-line message naming one of ``names``. Anything else fails the test."""
    try:
        with time_limit():
            result = fn()
        event("result")
        return result, None
    except CLEAN as err:
        event(f"refused: {type(err).__name__}")
        message = str(err)
        assert message and "\n" not in message, f"{type(err).__name__} with a multi-line message: {message!r}"
        assert names_any(message, names), f"{type(err).__name__} names none of {names}: {message!r}"
        return None, err
    except Hang as err:
        pytest.fail(f"hang: {err}")
    except Exception as err:  # a torch traceback, an IndexError, an AttributeError, ...
        pytest.fail(f"not a clean error: {type(err).__name__}: {str(err)[:300]!r}")


def check_tensor(value: object, shape: tuple[int, ...], dtype: torch.dtype, what: str) -> torch.Tensor:
    """``value`` is a tensor of ``shape`` and ``dtype`` holding only finite numbers."""
    assert isinstance(value, torch.Tensor), f"{what}: not a tensor but {type(value).__name__}"
    assert tuple(value.shape) == tuple(shape), f"{what}: shape {tuple(value.shape)}, expected {tuple(shape)}"
    assert value.dtype == dtype, f"{what}: dtype {value.dtype}, expected {dtype}"
    assert bool(torch.isfinite(value.float()).all()), f"{what}: non-finite values {value}"
    return value


def must_refuse(err: Exception | None, why: str) -> None:
    assert err is not None, f"accepted an invalid input ({why}) instead of refusing it"


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}[dtype]


# -- strategies --------------------------------------------------------------------------------------------------
PLAIN = st.floats(-4.0, 4.0, allow_nan=False, width=32)


@st.composite
def tensors(draw, shape, dtypes=DTYPES, special: bool = True):
    """A tensor of ``shape``: plain values with, when ``special``, NaN, infinities, 0, -0, 1e-30 and +-1e30 mixed
    in, converted to one of ``dtypes``."""
    n = math.prod(shape)
    odd = special and draw(st.sampled_from((False, False, True)))
    element = st.one_of(PLAIN, st.sampled_from(SPECIAL)) if odd else PLAIN
    values = draw(st.lists(element, min_size=n, max_size=n))
    dtype = draw(st.sampled_from(dtypes))
    return torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)


ODD_SCALARS = st.sampled_from([NAN, INF, -INF, -1.0, 0.0, 1e30, 1e-300, True, "1", None, [1.0]])
BAD_COUNTS = st.sampled_from([0, -1, 2.5, NAN, INF, -INF, True, "3", 10**9, 10**30])
BAD_SIZES = st.sampled_from([0, -1, 2.5, NAN, INF, True, "3"])  # counts where any size >= 1 is fine
BAD_TOLERANCES = st.sampled_from([0.0, -1e-3, NAN, INF, "1e-3"])


def time_fraction():
    return st.one_of(
        st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from([-0.5, 1.5, 1e-30, NAN, INF, -INF, 1e30])
    )


@st.composite
def arguments(draw, valid: dict, invalid: dict):
    """Keyword arguments drawn from the ``valid`` strategies, at most one of them (named in the second item, else
    None) from its ``invalid`` strategy instead: ``(kwargs, odd)``."""
    odd = draw(st.sampled_from((None, None, *sorted(invalid))))
    return {key: draw(invalid[key] if key == odd else strategy) for key, strategy in valid.items()}, odd


# -- closed forms ------------------------------------------------------------------------------------------------
def kernel(sde, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha(t), sigma(t)) of each process, in float64, from its formula."""
    t = t.double()
    kind = type(sde)
    if kind in (sd.VPSDE, sd.SubVPSDE):
        b = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
        sigma = torch.sqrt(1 - torch.exp(-b)) if kind is sd.VPSDE else 1 - torch.exp(-b)
        return torch.exp(-0.5 * b), sigma
    if kind is sd.VESDE:
        return torch.ones_like(t), sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    if kind is sd.CosineVPSDE:
        theta = lambda u: 0.5 * math.pi * (u + sde.s) / (1 + sde.s)  # noqa: E731
        alpha = torch.cos(theta(t)) / math.cos(theta(0.0))
        return alpha, torch.sqrt(1 - alpha**2)
    if kind is sd.EDMSDE:
        return torch.ones_like(t), t
    return 1 - t, t  # RectifiedFlow


def drift_rate_and_g2(sde, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(t), g(t)^2) with drift f(t) x, from each process's formula (float64)."""
    t = t.double()
    kind = type(sde)
    if kind in (sd.VPSDE, sd.SubVPSDE):
        beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
        b = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
        return -0.5 * beta, beta if kind is sd.VPSDE else beta * (1 - torch.exp(-2 * b))
    if kind is sd.VESDE:
        return torch.zeros_like(t), kernel(sde, t)[1] ** 2 * 2 * math.log(sde.sigma_max / sde.sigma_min)
    if kind is sd.CosineVPSDE:
        f = -(0.5 * math.pi / (1 + sde.s)) * torch.tan(0.5 * math.pi * (t + sde.s) / (1 + sde.s))
        return f, -2 * f
    if kind is sd.EDMSDE:
        return torch.zeros_like(t), 2 * t
    return -1 / (1 - t), 2 * t / (1 - t)


def gaussian_score(sde):
    """Exact score of N(0, I) data under ``sde``: -x / (alpha^2 + sigma^2), for images of any shape."""

    def score(x, t):
        alpha, sigma = sde.marginal_coeffs(t, x)
        return -x / (alpha**2 + sigma**2).reshape(-1, *([1] * (x.ndim - 1)))

    return score


class ExactConditionalNet(torch.nn.Module):
    """A class-conditional "network" ``net(x, t, y)`` returning the exact score of the mixture's component ``y``
    (label 3, the null label: of the whole mixture), for a ModelScore with ``prediction="score"``."""

    num_classes = 3

    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def forward(self, x, t, y):
        alpha, sigma = self.sde.marginal_coeffs(t, x)
        return torch.where((y == 3)[:, None], MIX.score(x, t, self.sde), component_score(x, alpha, sigma, y))


def component_score(x, alpha, sigma, labels):
    """Score of mixture component ``labels`` (per row) of the diffused mixture."""
    k = labels.clamp_max(2)
    mu = MIX.means.to(x)[k] * alpha[:, None]
    var = MIX.stds.to(x)[k] ** 2 * alpha[:, None] ** 2 + sigma[:, None] ** 2
    return -(x - mu) / var


# -- sampling ----------------------------------------------------------------------------------------------------
SAMPLE_VALID = {
    "steps": st.integers(3, 5),
    "eps": st.one_of(st.none(), st.floats(1e-4, 0.5), st.sampled_from([1e-8, 0.999])),  # a share of T
    "dtype": st.sampled_from((None, torch.float32, torch.float64, torch.bfloat16, torch.float16)),
    "rtol": st.sampled_from((None, 1e-3, 1e-2, 10.0)),
}
SAMPLE_INVALID = {
    "steps": BAD_COUNTS,
    "eps": st.sampled_from([0.0, -1e-3, 1.0, 2.0, NAN, INF, "0.1", 1e-300]),  # below 1e-8 T: not resolved
    "dtype": st.sampled_from((torch.int64, torch.bool, "float32")),
    "rtol": BAD_TOLERANCES,
}


@PROPERTY
@given(
    sde=st.sampled_from(SDES),
    sampler=st.sampled_from(sorted(SAMPLERS)),
    batch=st.integers(1, 8),
    args=arguments(SAMPLE_VALID, SAMPLE_INVALID),
)
@example(SDES[1], "sde_dpm_solver++", 1, ({"steps": 4, "eps": 1e-300, "dtype": None, "rtol": None}, "eps"))
@example(SDES[0], "ddim", 1, ({"steps": 3, "eps": "0.1", "dtype": None, "rtol": None}, "eps"))
@example(SDES[0], "ode", 1, ({"steps": 3, "eps": None, "dtype": None, "rtol": "1e-3"}, "rtol"))
def test_sample_gives_finite_samples_of_the_shape_or_a_clean_error(sde, sampler, batch, args):
    """sample() with every sampler and process, valid steps, eps (a share of T, down to 1e-300 T), dtypes and
    adaptive tolerances, or one of them invalid: finite samples of the shape and dtype, or a refusal naming it."""
    kwargs, odd = args
    adaptive = is_adaptive(sampler)
    steps = None if adaptive and odd != "steps" else kwargs["steps"]
    eps = kwargs["eps"] * sde.T if is_real(kwargs["eps"]) and math.isfinite(kwargs["eps"]) else kwargs["eps"]
    rtol = kwargs["rtol"]
    options = {} if rtol is None or not adaptive else {"rtol": rtol, "atol": rtol}
    if odd == "rtol" and not adaptive:
        odd = None  # the fixed-step samplers take no rtol: the call is valid
    x, err = outcome(
        lambda: sd.sample(
            sde,
            MIX.score_fn(sde),
            (batch, 2),
            sampler=sampler,
            steps=steps,
            eps=eps,
            dtype=kwargs["dtype"],
            generator=torch.Generator().manual_seed(0),
            **options,
        ),
        (odd, "atol") if odd == "rtol" else (odd,) if odd else ("steps", "eps", "dtype", "rtol", "atol", "score_fn"),
    )
    if odd is not None:
        must_refuse(err, f"{odd}={kwargs[odd]!r}")
        return
    if err is not None:  # a valid call may fail only in half precision: an adaptive rtol finer than the dtype
        low = kwargs["dtype"] in (torch.bfloat16, torch.float16)  # resolves, or a 3-step integration overflowing it
        assert low and (isinstance(err, FloatingPointError) or "rtol" in str(err)), f"refused a valid call: {err}"
        return
    check_tensor(x, (batch, 2), kwargs["dtype"] or torch.float32, f"sample({sampler})")


@PROPERTY
@given(
    sde=st.sampled_from(SDES),
    sampler=st.sampled_from(("ddim", "euler_maruyama", "dpm_solver++", "edm_heun", "pc")),
    x_init=st.integers(1, 6).flatmap(lambda b: tensors((b, 2))),
)
def test_sample_from_a_given_start_keeps_its_shape_and_dtype(sde, sampler, x_init):
    """sample(x_init=...) with NaN, inf, 1e30, zeros and every dtype in the start: finite samples of its shape and
    dtype, or a clean error naming x_init (or the inputs that are far out of range)."""
    x, err = outcome(
        lambda: sd.sample(
            sde,
            MIX.score_fn(sde),
            None,
            x_init=x_init,
            sampler=sampler,
            steps=4,
            generator=torch.Generator().manual_seed(0),
        ),
        ("x_init", "inputs"),
    )
    if not x_init.is_floating_point() or not bool(torch.isfinite(x_init).all()):
        must_refuse(err, f"x_init of {x_init.dtype} {x_init.tolist()}")
    if err is None:
        check_tensor(x, tuple(x_init.shape), x_init.dtype, f"sample({sampler}, x_init)")


# -- the processes -----------------------------------------------------------------------------------------------
@st.composite
def times(draw, sde, batch: int):
    """A time argument: a float (a share of T, in or outside [0, T]), a tensor of the right or a wrong shape, or a
    value of a wrong type."""
    kind = draw(
        st.sampled_from(("float", "float", "tensor", "tensor", "scalar_tensor", "int_tensor", "wrong_len", "2d", "odd"))
    )
    u = draw(time_fraction())
    if kind == "float":
        return u * sde.T if math.isfinite(u) else u
    if kind in ("tensor", "scalar_tensor"):
        values = [draw(time_fraction()) * sde.T for _ in range(batch)] if kind == "tensor" else u * sde.T
        return torch.tensor(values, dtype=draw(st.sampled_from((torch.float32, torch.float64))))
    if kind == "int_tensor":
        return torch.tensor([draw(st.integers(-1, 2)) for _ in range(batch)])
    if kind == "wrong_len":
        return torch.full((batch + 1,), 0.5 * sde.T)
    if kind == "2d":
        return torch.full((batch, 1), 0.5 * sde.T)
    return draw(st.sampled_from((None, "0.5", True, 10**400, [0.5], torch.tensor([True] * batch))))


def valid_time(t, sde, batch: int) -> bool:
    """The documented contract of a time: a finite real in [0, T], or a real tensor of shape () or [B] in [0, T]."""
    if isinstance(t, torch.Tensor):
        if t.dtype == torch.bool or t.shape not in ((), (batch,)):
            return False
        values = t.double()
        return bool(torch.isfinite(values).all()) and bool(((values >= 0) & (values <= sde.T)).all())
    try:
        return is_real(t) and math.isfinite(t) and 0 <= t <= sde.T
    except OverflowError:  # an int beyond any float
        return False


@PROPERTY
@given(
    data=st.data(),
    cls=st.sampled_from(SDE_CLASSES),
    n=st.sampled_from((2, 10, 1000)),
    batch=st.integers(0, 5),
    x=st.sampled_from(((2,), (1, 2, 2))),
)
def test_process_methods_match_their_closed_forms(data, cls, n, batch, x):
    """marginal_prob, marginal_coeffs, sde and discretize of every process, at times in and outside [0, T] (floats,
    tensors, ints, wrong shapes and types) on data of every dtype, including NaN, infinities and empty batches."""
    sde, err = outcome(lambda: cls(N=n), ("N",))
    if err is not None:  # VP's DDPM discretization needs N > beta_max: refused, naming N
        return
    x = data.draw(tensors((batch, *x)), label="x")
    t = data.draw(times(sde, batch), label="t")
    names = ("t", "x")
    floating = x.is_floating_point()
    ok_t = valid_time(t, sde, batch)

    mp, err = outcome(lambda: sde.marginal_prob(x, t), names)
    if not floating or not ok_t:
        must_refuse(err, f"marginal_prob(x of {x.dtype}, t={t!r})")
        return
    if err is not None:
        return  # refused a valid call: allowed only with a clean error naming it (checked above)
    mean, std = mp
    assert mean.shape == x.shape and mean.dtype == x.dtype and std.shape == (batch,), (mean.shape, std.shape)
    tt = (torch.as_tensor(t, dtype=torch.float64).expand(batch)).to(x.dtype).double()
    alpha, sigma = kernel(sde, tt)
    tol = tolerance(x.dtype)
    torch.testing.assert_close(std.double(), sigma, rtol=tol, atol=tol)
    finite = torch.isfinite(x)
    flat_alpha = alpha.reshape(-1, *([1] * (x.ndim - 1))).expand_as(x)
    expected = flat_alpha * x.double()
    torch.testing.assert_close(mean.double()[finite], expected[finite], rtol=tol, atol=tol)
    assert bool(torch.isfinite(mean[finite]).all()), "marginal_prob turned finite data into NaN or inf"

    out, err = outcome(lambda: sde.sde(x, t), names)
    if err is None:
        drift, diffusion = out
        f, g2 = drift_rate_and_g2(sde, tt)
        torch.testing.assert_close(diffusion.double() ** 2, g2, rtol=10 * tol, atol=10 * tol)
        expected = f.reshape(-1, *([1] * (x.ndim - 1))) * x.double()
        torch.testing.assert_close(drift.double()[finite], expected[finite], rtol=10 * tol, atol=10 * tol)

    out, err = outcome(lambda: sde.discretize(x, t), (*names, "dt"))
    if err is None:
        f, G = out
        assert f.shape == x.shape and G.shape == (batch,)
        assert bool(torch.isfinite(f[finite]).all()) and bool(torch.isfinite(G).all()), (
            f"discretize(x, t={t!r}) of {sde!r} gave NaN or inf: f={f.tolist()}, G={G.tolist()}"
        )


@PROPERTY
@given(
    sde=st.sampled_from(SDES),
    shape=st.one_of(
        st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
        st.sampled_from([(2, -1), (0, 2), (2.5, 2), (2, 2.0), 3, "2,2", (10**12, 10**6), (True, 2)]),
    ),
    dtype=st.sampled_from((None, *DTYPES)),
    generator=st.sampled_from(("torch", None, 3, "seed")),
)
def test_prior_sampling_draws_the_asked_shape_or_refuses_it(sde, shape, dtype, generator):
    """prior_sampling with shapes of negative, float, bool or huge sizes, every dtype and bad generators."""
    gen = torch.Generator().manual_seed(0) if generator == "torch" else generator
    z, err = outcome(lambda: sde.prior_sampling(shape, generator=gen, dtype=dtype), ("shape", "dtype", "generator"))
    sizes_ok = isinstance(shape, tuple) and all(is_int(s) and s >= 0 for s in shape) and math.prod(shape) < 10**8
    if not sizes_ok or (dtype is not None and not dtype.is_floating_point) or generator in (3, "seed"):
        must_refuse(err, f"prior_sampling({shape!r}, dtype={dtype}, generator={generator!r})")
    if err is None:
        check_tensor(z, shape, dtype or torch.float32, "prior_sampling")


@PROPERTY
@given(sde=st.sampled_from(SDES), z=st.integers(0, 5).flatmap(lambda b: tensors((b, 2), special=False)))
def test_prior_logp_is_the_gaussian_log_density(sde, z):
    """prior_logp(z) = -D/2 log(2 pi s^2) - |z|^2 / (2 s^2), for every dtype and for empty batches."""
    logp, err = outcome(lambda: sde.prior_logp(z), ("z",))
    if not z.is_floating_point():
        must_refuse(err, f"prior_logp of {z.dtype}")
        return
    if err is None:
        s = sde.prior_std()
        expected = -math.log(2 * math.pi * s * s) - z.double().pow(2).sum(1) / (2 * s * s)
        assert logp.shape == (z.shape[0],)
        torch.testing.assert_close(logp.double(), expected, rtol=tolerance(z.dtype), atol=tolerance(z.dtype))


@PROPERTY
@given(
    sde=st.sampled_from(SDES),
    t=st.one_of(st.floats(1e-9, 1e-3), st.sampled_from((1e-7, 5.9e-8))),
    dtype=st.sampled_from((torch.float32, torch.float64)),
)
def test_kernel_std_keeps_its_precision_near_time_zero(sde, t, dtype):
    """sigma(t) of every process near t = 0, where the losses divide by it: within 1e-3 of its closed form, relative
    (a float32 sigma that cancels to 0 turns dsm_loss into NaN or inf)."""
    sigma = sde.marginal_prob(torch.zeros(1, 2, dtype=dtype), t)[1].double()
    exact = kernel(sde, torch.tensor([t], dtype=dtype))[1]
    torch.testing.assert_close(sigma, exact, rtol=1e-3, atol=0)


# -- likelihood --------------------------------------------------------------------------------------------------
LIKELIHOOD_VALID = {
    "x": st.sampled_from(("float64", "float64", "float32", "empty")),
    "method": st.sampled_from(("rk45", "rk45", "euler", "rk4")),
    "rtol": st.sampled_from((1e-3, 1e-4)),
    "steps": st.integers(1, 6),
    "n_probes": st.integers(1, 3),
    "batch_size": st.sampled_from((None, 1, 3)),
}
LIKELIHOOD_INVALID = {
    "x": st.sampled_from(("int64", "bool", "bfloat16", "float16", "nan", "inf", "1-D", "list")),
    "method": st.sampled_from(("rk5", "", None)),
    "rtol": BAD_TOLERANCES,
    "steps": BAD_COUNTS,
    "n_probes": BAD_SIZES,
    "batch_size": BAD_SIZES,
}


def likelihood_data(kind: str, batch: int):
    """Mixture samples in float64, or a variant of them: another dtype, a NaN or inf entry, empty, 1-D or a list."""
    x = MIX.sample(batch, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if kind in ("nan", "inf"):
        x[0, 1] = NAN if kind == "nan" else INF
        return x
    if kind == "empty":
        return x[:0]
    if kind == "1-D":
        return x[:, 0]
    if kind == "list":
        return x.tolist()
    return x.to(getattr(torch, kind))


@FEW
@given(batch=st.integers(1, 4), args=arguments(LIKELIHOOD_VALID, LIKELIHOOD_INVALID))
def test_log_likelihood_is_the_exact_density_or_a_clean_error(batch, args):
    """log_likelihood (exact divergence) of mixture samples with valid data, solver, tolerance, steps, probes and
    batch size, or one of them invalid: log p_eps(x) of the mixture to 0.05 nats, or a refusal naming the argument.
    An empty batch may give an empty result."""
    kwargs, odd = args
    if odd == "steps" and kwargs["method"] == "rk45":
        kwargs["method"] = "euler"  # steps belong to the fixed-step methods
    if odd == "rtol":
        kwargs["method"] = "rk45"  # and tolerances to the adaptive one
    sde = sd.VPSDE()
    x = likelihood_data(kwargs["x"], batch)
    result, err = outcome(
        lambda: sd.log_likelihood(
            sde,
            MIX.score_fn(sde),
            x,
            divergence="exact",
            rtol=kwargs["rtol"],
            atol=kwargs["rtol"],
            method=kwargs["method"],
            steps=kwargs["steps"],
            n_probes=kwargs["n_probes"],
            batch_size=kwargs["batch_size"],
        ),
        (odd, "atol") if odd == "rtol" else (odd,) if odd else ("x",),
    )
    if odd is not None:
        must_refuse(err, f"{odd}={kwargs[odd]!r}")
        return
    if kwargs["x"] == "empty" and err is not None:
        return  # refusing an empty batch (with a clean error naming x) is fine too
    assert err is None, f"refused a valid call: {err}"
    logp, z, nfe = result
    check_tensor(logp, (x.shape[0],), x.dtype, "logp")
    check_tensor(z, tuple(x.shape), x.dtype, "z")
    if kwargs["method"] == "rk45" and x.dtype == torch.float64:
        torch.testing.assert_close(logp, MIX.log_prob(x, 1e-5, sde), rtol=0, atol=0.05)


@FEW
@given(
    batch=st.integers(0, 3),
    levels=st.sampled_from((None, 2, 17, 256, None, 2, 17, 256, 1, 2.5, True, 10**30)),
    values=st.sampled_from(("in", "in", "in", "in", "negative", "above", "fraction", "nan")),
    dtype=st.sampled_from((torch.int64, torch.uint8, torch.float32, torch.float64, torch.bfloat16, torch.bool)),
    data_range=st.sampled_from(
        ((-1.0, 1.0), (0.0, 1.0), (-1.0, 1.0), (0.0, 1.0), (1.0, -1.0), (NAN, 1.0), (0.0, 1.0, 2.0), "ab", 1.0)
    ),
)
def test_bits_per_dim_of_integer_levels(batch, levels, values, dtype, data_range):
    """bits_per_dim of bin centres (no dequantization) for every levels, data_range and dtype: the exact mixture's
    bits/dim, -log p(y)/(D ln 2) - log2(hi - lo) + log2(L), or a clean error naming the argument."""
    sde = sd.VPSDE()
    top = 256 if levels is None else levels
    k = torch.arange(batch * 2, dtype=torch.float64).reshape(batch, 2) % 2
    k = {"in": k, "negative": k - 3, "above": k + 1e4, "fraction": k + 0.5, "nan": k * NAN}[values]
    x = k.to(dtype)
    k = x.double()  # the levels as stored (uint8 wraps negatives around, bool makes 0/1)
    result, err = outcome(
        lambda: sd.bits_per_dim(
            sde,
            MIX.score_fn(sde),
            x,
            levels=levels,
            data_range=data_range,
            dequantize_data=False,
            divergence="exact",
            rtol=1e-4,
            atol=1e-4,
        ),
        ("x", "levels", "data_range"),
    )
    range_ok = isinstance(data_range, tuple) and len(data_range) == 2 and data_range[0] < data_range[1]
    levels_ok = levels is None or (is_int(levels) and 2 <= levels <= 2**31)
    values_ok = bool((k == k.round()).all()) and bool((k >= 0).all()) and (not levels_ok or bool((k < top).all()))
    if not (range_ok and levels_ok and values_ok) or dtype == torch.bfloat16:
        must_refuse(err, f"bits_per_dim(levels={levels!r}, data_range={data_range!r}, x={x.tolist()} of {dtype})")
    if err is not None:
        return
    bpd, _, _ = result
    assert bpd.shape == (batch,) and bool(torch.isfinite(bpd).all()), bpd
    lo, hi = data_range
    y = lo + (hi - lo) * (k + 0.5) / top
    expected = -MIX.log_prob(y, 1e-5, sde) / (2 * math.log(2)) - math.log2(hi - lo) + math.log2(top)
    torch.testing.assert_close(bpd.double(), expected, rtol=0, atol=0.05)


# -- losses ------------------------------------------------------------------------------------------------------
@PROPERTY
@given(
    data=st.data(),
    sde=st.sampled_from(SDES),
    weighting=st.sampled_from(("sigma2", "sigma2", "likelihood", "edm", "velocity", "min_snr")),
    batch=st.integers(0, 6),
    dtype=st.sampled_from(DTYPES),
)
def test_dsm_loss_is_the_weighted_score_error(data, sde, weighting, batch, dtype):
    """dsm_loss with given times (in and outside (0, T], tiny, NaN) and noise (with special values) on every dtype
    and empty batches: a finite, non-negative scalar, equal to mean((sigma s + z)^2) for the sigma2 weighting."""
    x0 = MIX.sample(max(batch, 1), generator=torch.Generator().manual_seed(2), dtype=torch.float64)[:batch]
    if data.draw(st.sampled_from((False, False, True)), label="special x0"):
        x0 = x0 + data.draw(tensors((batch, 2), dtypes=(torch.float64,)), label="added")
    x0 = x0.to(dtype)
    u = data.draw(
        st.one_of(st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.sampled_from([0.0, 1e-7, 1e-30, 1.5, -0.5, NAN])),
        label="t/T",
    )
    t = torch.full((batch,), u * sde.T if math.isfinite(u) else u, dtype=torch.float64)
    z = torch.randn(batch, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    if data.draw(st.sampled_from((False, False, True)), label="special z"):
        z = data.draw(tensors((batch, 2), dtypes=(torch.float64,)), label="z")
    z = z.to(dtype) if dtype.is_floating_point else z
    loss, err = outcome(
        lambda: dsm_loss(sde, MIX.score_fn(sde), x0, weighting=weighting, t=t, z=z),
        ("x0", "t", "z", "training data", "score_fn"),
    )
    x0_ok = x0.is_floating_point() and bool(torch.isfinite(x0).all())
    if not x0_ok or not (0 < u <= 1) or not bool(torch.isfinite(z).all()):
        must_refuse(err, f"dsm_loss(x0 of {dtype}, t={u} T, z={z.tolist()})")
    if err is not None:
        return
    assert loss.shape == () and bool(torch.isfinite(loss)) and float(loss) >= 0, f"dsm_loss = {loss}"
    if weighting == "sigma2" and batch > 0 and dtype in (torch.float32, torch.float64):
        alpha, sigma = kernel(sde, t.to(dtype))
        xt = alpha[:, None] * x0.double() + sigma[:, None] * z.double()
        expected = ((sigma[:, None] * MIX.score(xt, t, sde) + z.double()) ** 2).mean()
        torch.testing.assert_close(loss.double(), expected, rtol=1e-3, atol=1e-4)


@PROPERTY
@given(
    data=st.data(),
    loss=st.sampled_from(("ddpm", "smld")),
    batch=st.integers(0, 6),
    output=st.sampled_from(("zero", "zero", "nan", "inf", "huge")),
)
def test_discrete_losses_are_finite_or_refused(data, loss, batch, output):
    """ddpm_loss and smld_loss on data with special values and every dtype, empty batches, and a model that returns
    NaN, inf or 1e30: a finite non-negative scalar, or a clean error."""
    x0 = data.draw(tensors((batch, 2)), label="x0")
    fill = {"zero": 0.0, "nan": NAN, "inf": INF, "huge": 1e30}[output]
    model = lambda x, level: torch.full(x.shape, fill, dtype=torch.float64).to(x.dtype)  # noqa: E731
    sde = sd.VPSDE() if loss == "ddpm" else sd.VESDE()
    fn = ddpm_loss if loss == "ddpm" else smld_loss
    value, err = outcome(lambda: fn(sde, model, x0), ("x0", "training data", "model", "score_fn"))
    if not x0.is_floating_point() or not bool(torch.isfinite(x0).all()) or output in ("nan", "inf"):
        must_refuse(err, f"{loss}_loss(x0 of {x0.dtype} {x0.tolist()}, model returning {fill})")
    if err is None:
        assert value.shape == () and bool(torch.isfinite(value)) and float(value) >= 0, f"{loss}_loss = {value}"


# -- inverse problems --------------------------------------------------------------------------------------------
INVERSE_VALID = {
    "A": st.lists(st.sampled_from((0.0, 1.0, -1.0, 0.5, 2.0, 1.0, 1e30, 1e-30)), min_size=4, max_size=4),
    "method": st.sampled_from(("projection", "pigdm", "ddnm", "dps")),
    "noise_std": st.sampled_from((0.1, 0.1, 1e-30, 1e30)),  # 0 for projection, as drawn for dps, either otherwise
    "scale": st.sampled_from((1.0, 1.0, 0.0, 1000.0)),
    "data_var": st.sampled_from((1.0, 1.0, 1e-30, 1e30)),
    "dtype": st.sampled_from((torch.float32, torch.float64, torch.bfloat16, torch.float16)),
}
INVERSE_INVALID = {
    "A": st.sampled_from((NAN, INF, -INF)),  # put into A[0, 0]
    "method": st.sampled_from(("bogus", None)),
    "noise_std": st.sampled_from((NAN, -1.0, INF, "0.1")),
    "scale": st.sampled_from((NAN, -1.0, 1e30, "1")),
    "data_var": st.sampled_from((0.0, -1.0, NAN, INF)),
}


@FEW
@given(
    rows=st.sampled_from(((1, 0), (0, 1), (1, 1))),
    batch=st.integers(1, 4),
    noiseless=st.booleans(),
    sampler=st.sampled_from(("ddim", "pc", "dpm_solver++", "euler_maruyama")),
    args=arguments(INVERSE_VALID, INVERSE_INVALID),
)
@example(
    (0, 1),
    1,
    True,
    "ddim",
    (
        {
            "A": [0.0, 0.0, 0.0, 1e30],
            "method": "projection",
            "noise_std": 0.1,
            "scale": 1.0,
            "data_var": 1.0,
            "dtype": torch.float32,
        },
        None,
    ),
)
def test_solve_inverse_meets_noiseless_measurements(rows, batch, noiseless, sampler, args):
    """solve_inverse with matrices holding 0, +-1, 1e30 or 1e-30, every method, noise_std, scale and data_var from
    1e-30 to 1e30 and every float dtype, or one argument invalid: samples meeting A x = y when noiseless (y = A x_true
    is feasible), or a clean error naming the argument (never calling feasible measurements infeasible)."""
    kwargs, odd = args
    method, dtype = kwargs["method"], kwargs["dtype"]
    noise_std = kwargs["noise_std"]
    if odd != "noise_std" and (method == "projection" or (noiseless and method != "dps")):
        noise_std = 0.0
    sde = sd.VPSDE()
    entries = [1.0, 0.0, 0.0, 1.0] if odd == "A" else kwargs["A"]
    entries = [1e4 if v == 1e30 and dtype == torch.float16 else v for v in entries]  # float16 ends at 65504
    A = torch.tensor(entries, dtype=torch.float64).reshape(2, 2)[[i for i, keep in enumerate(rows) if keep]]
    if odd == "A":
        A[0, 0] = kwargs["A"]
    x_true = MIX.sample(batch, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = (x_true @ A.nan_to_num(0.0).T).to(dtype)
    x, err = outcome(
        lambda: sd.solve_inverse(
            sde,
            MIX.score_fn(sde),
            y,
            A.to(dtype),
            noise_std=noise_std,
            method=method,
            scale=kwargs["scale"],
            data_var=kwargs["data_var"],
            sampler=sampler,
            steps=4,
            generator=torch.Generator().manual_seed(0),
        ),
        (odd,) if odd else ("A", "y", "noise_std", "scale", "data_var"),
    )
    if odd is not None:
        must_refuse(err, f"{odd}={kwargs[odd]!r}")
        return
    if err is not None:
        assert "no x satisfies" not in str(err), f"feasible measurements y = A x_true refused: {err}"
        return
    check_tensor(x, (batch, 2), dtype, f"solve_inverse({method})")
    if noise_std == 0:
        size = y.double().abs().amax().clamp_min(1.0)
        met = (x.double() @ A.T) / size
        torch.testing.assert_close(met, y.double() / size, rtol=0, atol=10 * tolerance(dtype))


@PROPERTY
@given(
    data=st.data(),
    batch=st.integers(1, 4),
    mask_shape=st.sampled_from(((1, 2), (2,), (1, 2), (4, 2), (3,), (1, 1, 2), (0, 2))),
    mask_dtype=st.sampled_from((torch.float32, torch.bool, torch.int64, torch.float64)),
    odd_mask=st.sampled_from((None, None, None, 0.5, NAN)),
)
def test_inpaint_keeps_the_known_values(data, batch, mask_shape, mask_dtype, odd_mask):
    """inpaint with masks of matching, broadcast and wrong shapes and of every dtype (and non-binary masks), on
    known values with special entries: finite samples equal to x_known where the mask is 1, or a clean error."""
    sde = sd.VPSDE()
    x_known = data.draw(tensors((batch, 2), dtypes=(torch.float32, torch.float64, torch.float16, torch.int64)))
    mask = data.draw(tensors(mask_shape, dtypes=(torch.float64,), special=False)).gt(0).to(mask_dtype)
    if odd_mask is not None and mask.numel():
        mask = mask.double()
        mask.view(-1)[0] = odd_mask
    x, err = outcome(
        lambda: sd.inpaint(
            sde, MIX.score_fn(sde), x_known, mask, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0)
        ),
        ("mask", "x_known", "inputs"),
    )
    if err is not None:
        return
    check_tensor(x, tuple(x_known.shape), x_known.dtype, "inpaint")
    known = mask.bool().expand_as(x_known)
    assert torch.equal(x[known], x_known[known]), "inpaint changed known values"


@FEW
@given(
    batch=st.integers(1, 3),
    args=arguments(
        {
            "gray": st.sampled_from((0.0, 0.5, -1.0, 1e3)),
            "channels": st.sampled_from((3, 2, 4, 3.0)),
            "dtype": st.sampled_from((torch.float32, torch.float64, torch.float16)),
        },
        {
            "gray": st.sampled_from((NAN, INF)),
            "channels": st.sampled_from((1, 0, 2.5, NAN, INF, "3", True)),
            "dtype": st.sampled_from((torch.int64, torch.bool)),
        },
    ),
)
def test_colorize_keeps_the_channel_mean(batch, args):
    """colorize of 1x4x4 grey images (N(0, I) data, exact score) with valid or one invalid grey value, channel count
    or dtype: images whose channel mean is the grey image, or a clean error naming the argument."""
    kwargs, odd = args
    sde, dtype, channels = sd.VPSDE(), kwargs["dtype"], kwargs["channels"]
    g = torch.full((batch, 1, 4, 4), kwargs["gray"], dtype=torch.float64).to(dtype)
    x, err = outcome(
        lambda: sd.colorize(
            sde,
            gaussian_score(sde),
            g,
            channels=channels,
            sampler="ddim",
            steps=3,
            generator=torch.Generator().manual_seed(0),
        ),
        {"gray": ("gray",), "channels": ("channels",), "dtype": ("gray",), None: ("gray", "inputs")}[odd],
    )
    if odd is not None:
        must_refuse(err, f"{odd}={kwargs[odd]!r}")
        return
    if err is not None:
        return
    check_tensor(x, (batch, int(channels), 4, 4), dtype, "colorize")
    tol = 10 * tolerance(dtype)
    torch.testing.assert_close(x.double().mean(1, keepdim=True), g.double(), rtol=tol, atol=tol)


# -- guidance ----------------------------------------------------------------------------------------------------
GUIDANCE_VALID = {
    "y": st.sampled_from((0, 1, 2, "tensor")),
    "scale": st.one_of(st.floats(0, 20), st.sampled_from((0.0, 1.0, 1000.0))),
    "t": st.floats(0.0, 1.0),
}
GUIDANCE_INVALID = {
    "y": st.sampled_from((-1, 3, "short", "2d", "float tensor", 1.0, True, None)),
    "scale": st.sampled_from((NAN, INF, -1.0, 1e30, True, "2", torch.tensor(2.0))),
    "t": st.sampled_from((-0.5, 1.5, NAN, INF)),
}


@PROPERTY
@given(
    kind=st.sampled_from(("classifier_free", "classifier")),
    batch=st.integers(1, 5),
    dtype=st.sampled_from((torch.float32, torch.float64, torch.bfloat16, torch.float16)),
    x=st.lists(PLAIN, min_size=10, max_size=10),
    args=arguments(GUIDANCE_VALID, GUIDANCE_INVALID),
)
@example("classifier", 1, torch.bfloat16, [3.5, 3.0] + [0.0] * 8, ({"y": 0, "scale": 1.0, "t": 0.0}, None))
def test_guided_scores_match_their_closed_form(kind, batch, dtype, x, args):
    """classifier_free_guided and classifier_guided with the exact conditional scores and classifier, for every float
    dtype, label form, scale up to 1000 and time in [0, T], or one of them invalid: s + w (s_y - s), or a clean
    error naming the argument."""
    kwargs, odd = args
    sde, y, scale = sd.VPSDE(), kwargs["y"], kwargs["scale"]
    y = (
        {
            "tensor": torch.arange(batch) % 3,
            "short": torch.zeros(batch + 1, dtype=torch.int64),
            "2d": torch.zeros(batch, 1, dtype=torch.int64),
            "float tensor": torch.zeros(batch),
        }.get(y, y)
        if isinstance(y, str)
        else y
    )
    x = torch.tensor(x[: 2 * batch], dtype=torch.float64).reshape(batch, 2).to(dtype)
    t = torch.full((batch,), kwargs["t"])

    def guided():
        if kind == "classifier_free":
            model = sd.ModelScore(ExactConditionalNet(sde), sde, prediction="score")
            fn = sd.classifier_free_guided(model, y, scale)
        else:
            fn = sd.classifier_guided(MIX.score_fn(sde), MIX.classifier_fn(sde), y, scale)
        return fn(x, t)

    out, err = outcome(guided, ("y", "class", "labels") if odd == "y" else (odd,) if odd else ("y", "scale", "t"))
    if odd is not None and not (odd == "y" and scale == 0):  # at scale 0 the labels are not used
        must_refuse(err, f"{odd}={kwargs[odd]!r}")
        return
    if err is not None:
        return
    check_tensor(out, (batch, 2), dtype, f"{kind}_guided")
    tt = t.to(dtype).double()
    alpha, sigma = sde.marginal_coeffs(tt, x.double())
    labels = torch.full((batch,), y) if isinstance(y, int) else y
    s = MIX.score(x.double(), tt, sde)
    expected = s if scale == 0 else s + scale * (component_score(x.double(), alpha, sigma, labels) - s)
    tol = 20 * tolerance(dtype) * (1 + scale)
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


# -- command line ------------------------------------------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), time_limit():
        code = main(argv)
    return code, err.getvalue()


NUMBER_TEXT = st.one_of(
    st.integers(-3, 10).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "0",
            "-1",
            "1e3",
            "2.5",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "abc",
            "",
            "0x10",
            "10000000000",
            "100001",
            "1e-30",
            "True",
        ]
    ),
)


def _int_text(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float_text(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


CLI_FLAGS = {  # flag: (command, is the text a valid value)
    "--steps": ("sample", lambda v: (n := _int_text(v)) is not None and 1 <= n <= MAX_STEPS),
    "-n": ("sample", lambda v: (n := _int_text(v)) is not None and n >= 1),
    "--batch-size": ("sample", lambda v: (n := _int_text(v)) is not None and n >= 1),
    "--seed": ("sample", lambda v: (n := _int_text(v)) is not None and 0 <= n < 2**63),
    "--guidance": ("sample", lambda v: (f := _float_text(v)) is not None and 0 <= f <= 1000),
    "--rho": ("sample", lambda v: (f := _float_text(v)) is not None and 0 < f < INF),
    "--rtol": ("likelihood", lambda v: (f := _float_text(v)) is not None and 0 < f < INF),
    "--atol": ("likelihood", lambda v: (f := _float_text(v)) is not None and 0 < f < INF),
    "--repeats": ("likelihood", lambda v: (n := _int_text(v)) is not None and n >= 1),
    "--first": ("likelihood", lambda v: (n := _int_text(v)) is not None and n >= 0),
}


@PROPERTY
@given(flag=st.sampled_from(sorted(CLI_FLAGS)), value=NUMBER_TEXT)
def test_cli_refuses_bad_numbers_in_one_line_naming_the_flag(flag, value, tmp_path_factory):
    """``scoresde sample/likelihood missing FLAG VALUE``: a bad number exits 2 with one stderr line naming the flag,
    before the (missing) checkpoint is looked at; a good one gets as far as the missing checkpoint."""
    command, valid = CLI_FLAGS[flag]
    missing = str(tmp_path_factory.getbasetemp() / "no_such_checkpoint")
    code, err = run_cli([command, missing, f"{flag}={value}" if flag.startswith("--") else f"{flag}{value}"])
    line = err.strip()
    assert code == 2 and line and "\n" not in line and "Traceback" not in line, (code, err)
    if valid(value):
        assert "no_such_checkpoint" in line, f"{flag} {value!r} is valid, yet: {line}"
    else:
        assert flag in line, f"{flag} {value!r} is invalid, yet the message does not name {flag}: {line}"


@PROPERTY
@given(
    sampler=st.sampled_from(sorted(SAMPLERS)),
    key=st.sampled_from(("rtol", "snr", "eta", "corrector_steps", "order", "probability_flow", "method", "churn")),
    value=st.sampled_from(("abc", "nan", "inf", "-1", "0", "1.5", "yes", "1e400", "rk5")),
)
def test_cli_checks_sampler_options_before_opening_the_checkpoint(sampler, key, value, tmp_path_factory):
    """``scoresde sample missing --sampler S --option KEY=VALUE``: with the sampler named, an option that
    parse_sampler_options refuses exits 2 with one line naming the option, before the missing checkpoint."""
    from scoresde.sampling.options import parse_sampler_options

    missing = str(tmp_path_factory.getbasetemp() / "no_such_checkpoint")
    code, err = run_cli(["sample", missing, "--sampler", sampler, "--option", f"{key}={value}"])
    line = err.strip()
    assert code == 2 and line and "\n" not in line and "Traceback" not in line, (code, err)
    try:
        parse_sampler_options(sampler, [f"{key}={value}"])
    except ValueError:
        assert key in line, f"--option {key}={value} for {sampler} is invalid, yet: {line}"
