"""The newer forward processes (cosine VP, rectified flow, EDM, a user's path) against closed forms.

Every formula here is written independently of the library: the kernels from their papers, the drift
and diffusion from f = d log(alpha)/dt and g^2 = d sigma^2/dt - 2 f sigma^2, the inverses by hand.
The samplers' accuracy on the exact-score mixture is in test_samplers.py and test_fast_solvers.py
(which run every sampler on these processes too).
"""

import math
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.toy import GaussianMixture

S = 0.008  # improved DDPM's cosine offset


def cosine_alpha(t):
    return math.cos((t + S) / (1 + S) * math.pi / 2) / math.cos(S / (1 + S) * math.pi / 2)


def trig_path():
    """A user's path from two functions: alpha = cos(pi t / 2), sigma = sin(pi t / 2) (v-diffusion), T = 0.995."""
    return sd.LinearSDE(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), T=0.995)


# (alpha, sigma, f, g^2) written out per process, as functions of a float t
FORMULAS = {
    "cosine": (
        cosine_alpha,
        lambda t: math.sqrt(1 - cosine_alpha(t) ** 2),
        lambda t: -math.pi / (2 * (1 + S)) * math.tan((t + S) / (1 + S) * math.pi / 2),
        lambda t: math.pi / (1 + S) * math.tan((t + S) / (1 + S) * math.pi / 2),
    ),
    "rf": (lambda t: 1 - t, lambda t: t, lambda t: -1 / (1 - t), lambda t: 2 * t / (1 - t)),
    "edm": (lambda t: 1.0, lambda t: t, lambda t: 0.0, lambda t: 2 * t),
    "trig": (
        lambda t: math.cos(math.pi * t / 2),
        lambda t: math.sin(math.pi * t / 2),
        lambda t: -math.pi / 2 * math.tan(math.pi * t / 2),
        lambda t: math.pi * math.tan(math.pi * t / 2),
    ),
}
PROCESSES = {"cosine": sd.CosineVPSDE(), "rf": sd.RectifiedFlow(), "edm": sd.EDMSDE(), "trig": trig_path()}
TIMES = {"cosine": [1e-3, 0.1, 0.5, 0.9, 0.99], "rf": [1e-3, 0.1, 0.5, 0.9, 0.99], "edm": [0.002, 0.5, 3.0, 40.0, 80.0],
         "trig": [1e-3, 0.1, 0.5, 0.9, 0.99]}  # fmt: skip


@pytest.mark.parametrize("name", list(PROCESSES))
def test_kernel_drift_and_diffusion_match_the_formulas(name):
    sde, (alpha, sigma, f, g2) = PROCESSES[name], FORMULAS[name]
    t = torch.tensor(TIMES[name], dtype=torch.float64)
    x0 = torch.linspace(-2, 2, t.shape[0], dtype=torch.float64)[:, None].expand(-1, 3)
    mean, std = sde.marginal_prob(x0, t)
    want_alpha = torch.tensor([alpha(v) for v in TIMES[name]], dtype=torch.float64)
    torch.testing.assert_close(std, torch.tensor([sigma(v) for v in TIMES[name]], dtype=torch.float64), rtol=1e-12,
                               atol=0)  # fmt: skip
    torch.testing.assert_close(mean, want_alpha[:, None] * x0, rtol=1e-12, atol=1e-15)
    drift, diffusion = sde.sde(x0, t)
    want_f = torch.tensor([f(v) for v in TIMES[name]], dtype=torch.float64)
    torch.testing.assert_close(drift, want_f[:, None] * x0, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(diffusion**2, torch.tensor([g2(v) for v in TIMES[name]], dtype=torch.float64),
                               rtol=1e-9, atol=0)  # fmt: skip


@pytest.mark.parametrize("name", list(PROCESSES))
def test_the_moment_equations_hold_to_1e8(name):
    """d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2: the SDE's f and g against its own kernel,
    the derivatives of the kernel taken by autograd (not by the class's derivative formulas)."""
    sde = PROCESSES[name]
    t = torch.tensor(TIMES[name][1:], dtype=torch.float64, requires_grad=True)
    alpha, sigma = (c + 0 * t for c in sde.marginal_coeffs(t, t.detach()))  # EDM's alpha = 1 has no graph
    d_alpha = torch.autograd.grad(alpha.sum(), t, retain_graph=True)[0]
    d_var = torch.autograd.grad((sigma**2).sum(), t)[0]
    ones = torch.ones(t.shape[0], 1, dtype=torch.float64)
    drift, g = sde.sde(ones, t.detach())
    f = drift[:, 0]
    torch.testing.assert_close(d_alpha, f * alpha.detach(), rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(d_var, 2 * f * sigma.detach() ** 2 + g**2, rtol=1e-8, atol=1e-12)
    # and the class's closed-form derivatives agree with autograd
    closed = sde.kernel_derivatives(t.detach())
    torch.testing.assert_close(closed[0], d_alpha, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(2 * sigma.detach() * closed[1], d_var, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_schedule_inverses_round_trip(name):
    sde = PROCESSES[name]
    schedule = sde.schedule
    t = torch.tensor(TIMES[name], dtype=torch.float64)
    torch.testing.assert_close(schedule.t_from_log_snr(schedule.log_snr(t)), t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(schedule.t_from_sigma(schedule.sigma(t)), t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(schedule.t_from_edm_sigma(schedule.edm_sigma(t)), t, rtol=1e-10, atol=1e-12)
    for v in TIMES[name]:  # host floats, as the sampler loops read them
        assert schedule.t_from_log_snr(schedule.log_snr(v)) == pytest.approx(v, rel=1e-10)


def test_closed_form_inverses_agree_with_bisection():
    """The same kernels as user paths (bisection inverses) give the closed forms' times."""
    t = torch.tensor([0.01, 0.3, 0.7, 0.98], dtype=torch.float64)
    for closed in (sd.CosineVPSDE(), sd.RectifiedFlow(), sd.EDMSDE()):
        generic = sd.LinearSDE(lambda u, c=closed: c.kernel(u)[0], lambda u, c=closed: c.kernel(u)[1], T=closed.T)
        u = t * closed.T
        lam, sig = closed.schedule.log_snr(u), closed.schedule.sigma(u)
        torch.testing.assert_close(generic.schedule.t_from_log_snr(lam), closed.schedule.t_from_log_snr(lam),
                                   rtol=1e-10, atol=1e-12)  # fmt: skip
        torch.testing.assert_close(generic.schedule.t_from_sigma(sig), closed.schedule.t_from_sigma(sig),
                                   rtol=1e-10, atol=1e-12)  # fmt: skip


def test_end_times_priors_and_defaults():
    rf, cos, edm = sd.RectifiedFlow(), sd.CosineVPSDE(), sd.EDMSDE()
    assert (rf.T, cos.T, edm.T) == (0.999, 0.9946, 80.0)
    assert rf.prior_std() == pytest.approx(0.999) and cos.prior_std() == 1.0 and edm.prior_std() == 80.0
    assert sd.default_eps(rf) == 1e-3 and sd.default_eps(cos) == 1e-3 and sd.default_eps(edm) == 0.002
    assert rf.schedule.log_snr(rf.T) == pytest.approx(-math.log(999), rel=1e-12)
    assert cos.schedule.log_snr(cos.T) == pytest.approx(-4.78, abs=0.01)  # near the linear VP's -5.03
    assert sd.sampling.default_grid("pc", edm) == "karras" and sd.sampling.default_grid("pc", rf) == "uniform"
    assert repr(rf) == "RectifiedFlow(T=0.999, N=1000)" and repr(cos) == "CosineVPSDE(s=0.008, T=0.9946, N=1000)"
    assert repr(edm) == "EDMSDE(N=1000, sigma_min=0.002, sigma_max=80.0)"
    z = rf.prior_sampling((4000, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(z.std()) == pytest.approx(0.999, rel=0.03)
    want = -0.5 * 3 * math.log(2 * math.pi * 0.999**2) - (z**2).sum(1) / (2 * 0.999**2)
    torch.testing.assert_close(rf.prior_logp(z), want)


@pytest.mark.parametrize("name", ["cosine", "rf", "trig"])
def test_a_simulated_forward_sde_has_the_kernel_moments(name):
    """Fine Euler-Maruyama on dx = f x dt + g dw from x0 = 0.7 to t = 0.6: mean alpha x0, std sigma."""
    sde = PROCESSES[name]
    gen = torch.Generator().manual_seed(0)
    n, steps, t_end = 40_000, 600, 0.6
    x = torch.full((n, 1), 0.7, dtype=torch.float64)
    dt = t_end / steps
    for i in range(steps):
        drift, g = sde.sde(x, (i + 0.5) * dt)
        x = x + drift * dt + g[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    alpha, sigma = FORMULAS[name][0](t_end), FORMULAS[name][1](t_end)
    assert float(x.mean()) == pytest.approx(0.7 * alpha, abs=4 * sigma / math.sqrt(n) + 2e-3)
    assert float(x.std()) == pytest.approx(sigma, rel=0.02)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_discretize_is_the_exact_kernel_transition(name):
    """Steps of sde.discretize telescope to the kernel: alpha and sigma^2 at the end equal the closed forms."""
    sde = PROCESSES[name]
    ts = [sde.T * k / 50 for k in range(1, 50)] + [sde.T]
    coef, var = 1.0, 0.0
    ones = torch.ones(1, 1, dtype=torch.float64)
    for s, t in zip([0.0, *ts[:-1]], ts, strict=True):
        f, G = sde.discretize(ones, t, dt=t - s)
        a = 1.0 + float(f)
        coef, var = a * coef, a * a * var + float(G) ** 2
    alpha, sigma = FORMULAS[name][0], FORMULAS[name][1]
    assert coef == pytest.approx(alpha(sde.T), rel=1e-9)
    assert math.sqrt(var + (sigma(0.0)) ** 2 * coef**2) == pytest.approx(sigma(sde.T), rel=1e-9)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_exact_likelihood_matches_the_true_log_density(name):
    """The probability-flow ODE with the exact divergence reproduces log p_eps of a 6-D Gaussian mixture."""
    sde = PROCESSES[name]
    gm = GaussianMixture([0.6, 0.4], [[0.5, -0.3, 0.2, 0.0, -0.6, 0.4], [-0.4, 0.5, -0.2, 0.3, 0.1, -0.5]],
                         [0.3, 0.45])  # fmt: skip
    x = gm.sample(24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = 1e-5
    logp, z, nfe = sd.log_likelihood(sde, gm.score_fn(sde), x, divergence="exact", eps=eps)
    exact_prior = logp - sde.prior_logp(z) + gm.log_prob(z, sde.T, sde)  # isolates the ODE from the prior
    assert float(((exact_prior - gm.log_prob(x, eps, sde)).abs() / gm.dim).max()) < 1e-3
    assert float(((logp - gm.log_prob(x, eps, sde)).abs() / gm.dim).max()) < 2e-3  # the prior's mismatch too
    assert nfe > 10


def test_encode_decode_round_trip_on_rectified_flow():
    sde, gm = sd.RectifiedFlow(), GaussianMixture([1.0], [[0.3, -0.2]], [0.5])
    x = gm.sample(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z, _ = sd.encode(sde, gm.score_fn(sde), x)
    back, _ = sd.decode(sde, gm.score_fn(sde), z)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-4)


def test_a_user_path_is_checked_on_construction():
    cos, sin = (lambda t: torch.cos(0.5 * math.pi * t)), (lambda t: torch.sin(0.5 * math.pi * t))
    with pytest.raises(ValueError, match=r"^alpha\(T\) = 6.1e-17: the signal vanishes at the end time"):
        sd.LinearSDE(cos, sin)  # alpha(1) = 0 (6e-17 in floating point)
    with pytest.raises(ValueError, match=r"^alpha\(t\) must be > 0 on \[0, T=1.0\]"):
        sd.LinearSDE(lambda t: 1 - 2 * t, sin)
    with pytest.raises(ValueError, match="must decrease in t"):
        sd.LinearSDE(lambda t: 0.5 + t, lambda t: 1 - 0.5 * t, T=0.9)  # the signal grows
    with pytest.raises(ValueError, match=r"sigma\(t\) must return a tensor shaped like t"):
        sd.LinearSDE(cos, lambda t: torch.tensor(1.0), T=0.9)
    with pytest.raises(ValueError, match=r"^the kernel functions failed"):
        sd.LinearSDE(cos, lambda t: t.nonexistent(), T=0.9)
    with pytest.raises(ValueError, match="pass both alpha and sigma"):
        sd.LinearSDE(cos)
    with pytest.raises(TypeError, match="alpha must be a function"):
        sd.LinearSDE(1.0, sin)
    with pytest.raises(ValueError, match="T .the end time. must be a finite number > 0"):
        sd.LinearSDE(cos, sin, T=float("nan"))
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, T=0.9\)"):
        sd.LinearSDE(cos, sin, T=0.9, eps=0.95)
    with pytest.raises(ValueError, match="T must be < 1 for the rectified-flow path"):
        sd.RectifiedFlow(T=1.0)
    with pytest.raises(ValueError, match="T must be < 1 for the cosine schedule"):
        sd.CosineVPSDE(T=1.0)
    with pytest.raises(ValueError, match="need 0 < sigma_min < sigma_max"):
        sd.EDMSDE(sigma_min=1.0, sigma_max=0.5)
    path = sd.LinearSDE(cos, sin, T=0.9, eps=0.01)
    assert sd.default_eps(path) == 0.01 and repr(path) == "LinearSDE(alpha=<lambda>, sigma=<lambda>, T=0.9, N=1000)"


def test_a_user_path_gets_closed_form_inverses_when_given():
    calls = []

    def inverse(lam):
        calls.append(1)
        return torch.atan(torch.exp(-lam)) * 2 / math.pi  # tan(pi t / 2) = e^-lambda

    path = sd.LinearSDE(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), T=0.99,
                        t_from_log_snr=inverse)  # fmt: skip
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(path.schedule.t_from_log_snr(path.schedule.log_snr(t)), t)
    assert calls


# -- the new digits configs through every CLI command -------------------------------------------------------------
TINY = ["training.n_iters=2", "training.snapshot_every=2", "training.log_every=1", "training.batch_size=16",
        "sampling.steps=4"]  # fmt: skip
CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    from scoresde.config import load_config
    from scoresde.train import train

    runs = {}
    for name in ("edm", "rf", "cosine"):
        runs[name] = train(load_config(CONFIGS / f"digits_{name}.toml", TINY), tmp_path_factory.mktemp(name),
                           progress=False)  # fmt: skip
    return runs


@pytest.mark.parametrize("name", ["edm", "rf", "cosine"])
def test_every_cli_command_runs_on_the_new_processes(name, digits_runs, tmp_path, capsys):
    from scoresde.cli import main

    ckpt = digits_runs[name]

    def run(*args):
        assert main(["--threads", "1", *map(str, args)]) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    run("sample", ckpt, "--sampler", "unipc", "--steps", 5, "-n", 8, "--out", tmp_path / "fast.npz")
    run("sample", ckpt, "--sampler", "pc", "--steps", 4, "-n", 8, "--out", tmp_path / "pc.png")
    if name != "rf":  # the rest is process-independent plumbing, run once (its maths is tested on the mixture)
        return
    assert "bits/dim" in run("likelihood", ckpt, "--rtol", "1e-2", "--atol", "1e-2", "--batch-size", 300)
    run("sample", ckpt, "--sampler", "ancestral", "--steps", 4, "-n", 4, "--out", tmp_path / "anc.npz")
    run("evaluate", ckpt, "--sampler", "dpm_solver++", "--steps", 5, "-n", 20, "--no-likelihood", "--out",
        tmp_path / "report.json")  # fmt: skip
    run("optimize-grid", ckpt, "--sampler", "unipc", "--steps", 4, "-n", 4)
    run("sample", ckpt, "--sampler", "unipc", "--grid", "unipc-4", "-n", 4, "--out", tmp_path / "tuned.npz")
    run("inpaint", ckpt, "-n", 3, "--steps", 4, "--missing", "left", "--out", tmp_path / "inpainted.npz")
    run("encode", ckpt, "-n", 2, "--out", tmp_path / "latents.npz")
    run("decode", ckpt, tmp_path / "latents.npz", "--out", tmp_path / "decoded.npz")
    run("interpolate", ckpt, "-n", 1, "--points", 3, "--out", tmp_path / "path.npz")


def test_the_trainer_draws_the_configured_times_and_weights(tmp_path, monkeypatch):
    """Every recipe key reaches the training step: the times come from training.time_sampling (with its mean and
    std), the loss gets the weighting, gamma and sigma_data (a key that nothing reads would train the default)."""
    import scoresde.losses
    from scoresde.config import load_config
    from scoresde.train import train

    seen = []
    real_times, real_weight = scoresde.losses.sample_times, scoresde.losses.loss_weight

    def times(*args, **kwargs):
        t = real_times(*args, **kwargs)
        seen.append(("times", args[4:], t))
        return t

    def weight(sde, t, weighting, sigma_data=None, gamma=None):
        seen.append(("weight", (weighting, sigma_data, gamma), None))
        return real_weight(sde, t, weighting, sigma_data, gamma)

    monkeypatch.setattr(scoresde.losses, "sample_times", times)
    monkeypatch.setattr(scoresde.losses, "loss_weight", weight)
    recipe = ["training.time_sampling=lognormal", "training.time_mean=0.7", "training.time_std=0.3",
              "training.weighting=min_snr", "training.min_snr_gamma=2.5", "model.sigma_data=0.9"]  # fmt: skip
    train(load_config(CONFIGS / "digits_edm.toml", [*TINY, *recipe]), tmp_path / "run", progress=False)
    drawn = [entry for entry in seen if entry[0] == "times"]
    assert drawn and all(args == ("lognormal", 0.7, 0.3) for _, args, _ in drawn)
    sigma = torch.cat([t for *_, t in drawn])  # EDM: time is the noise level, ln sigma ~ N(0.7, 0.3^2)
    assert float(torch.log(sigma).mean()) == pytest.approx(0.7, abs=0.2)
    assert all(args == ("min_snr", 0.9, 2.5) for kind, args, _ in seen if kind == "weight")
    assert any(kind == "weight" for kind, _, _ in seen)
