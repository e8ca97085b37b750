"""scoresde's fast samplers side by side with diffusers and k-diffusion: same score, same starting noise.

Every method below is driven by the SAME score function (the exact score of the 2-D demo
mixture, or the digits model) and starts from the SAME x_T (one N(0, I) draw per seed in
scoresde's convention, mapped exactly into each peer's state space). The peers get the
score through small adapters; every score evaluation is counted by one wrapper, so the
NFE columns are measured, not assumed.

Adapter conventions (the kernel is x_t = alpha(t) x0 + sigma(t) z; s(t) = sigma(t)/alpha(t)):

* diffusers' discrete-VP schedulers (DPMSolverMultistep, UniPCMultistep, EulerDiscrete):
  a 1000-entry table ``alphas_cumprod[k] = 1 / (1 + s(t_k)^2)`` with ``t_k = (k+1)/1000``
  (given as ``trained_betas``); for VP it is exactly ``alpha(t_k)^2``, for VE it is the
  variance-preserving rescaling of the same ODE. A timestep ``k`` (fractional for Karras
  sigmas) is mapped to its noise level by the scheduler's own rule (log-linear
  interpolation of the table) and then to the continuous time with that ``s``; the model
  output is the epsilon prediction ``-sigma(t) score(x_t, t)`` with
  ``x_t = alpha(t) sqrt(1 + s^2) x_vp`` (``= x_vp`` for VP).
* diffusers' ScoreSdeVeScheduler (VE only): the model returns the score at the VE noise
  level it is given; PC with one Langevin corrector step (2 NFE per step), ``snr=0.16``.
* k-diffusion: the denoiser ``D(x; s) = x + alpha(t) s^2 score(alpha(t) x, t)`` with
  ``s(t) = s`` (for VE ``x + s^2 score(x, t)``); its state is ``x_t / alpha(t)``.
* x_T: scoresde starts from ``x_T`` itself; diffusers' VP-table schedulers from
  ``x_T / (alpha(T) sqrt(1 + s(T)^2))``, the sigma-space ones (Euler, k-diffusion) from
  ``x_T / alpha(T)`` (their ``init_noise_sigma`` scaling, to within 1e-4).

Sections: (0) adapter check, every method at about 500 NFE against scoresde's RK45
endpoints of the same x_T; (1) NFE against the mixture errors (mode-weight TV,
within-mode std error, log-density gap) for VP and VE; (2) wall time per sample at 10 NFE;
(3) FD of the digits model (``outputs/digits/checkpoints``) at 10 and 20 NFE.

    python benchmarks/bench_peers.py [--n 20000] [--reference 200000] [--no-digits]
    python benchmarks/bench_peers.py --n 2000 --reference 20000 --no-check --no-digits --out /tmp/peers.md
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import scoresde as sd
from scoresde.sampling import GRIDS, SAMPLERS, default_eps, sampler_options
from scoresde.toy import demo_mixture, mixture_errors

ROOT = Path(__file__).parents[1]
NFES = [5, 6, 8, 10, 12, 15, 20, 30, 50]
CHECK_NFE = 500
TABLE_STEPS = 1000  # diffusers' discrete table: timestep k <-> t = (k + 1) / 1000
ADAPTIVE_FACTORS = [32.0, 16.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1]  # k-diffusion's rtol=0.05 f, atol=0.0078 f

# scoresde's side: (label, sampler, grid, options, steps). ``steps="nfe"``: steps is the NFE budget including
# the final denoising evaluation (the fast solvers); ``steps="grid"``: grid steps, NFE = steps + 1 (ddim).
# A sampler, grid or option this version of scoresde does not have is skipped with a note.
SCORESDE = [
    ("DDIM, log-SNR grid", "ddim", "log_snr", {}, "grid"),
    ("DPM-Solver++(2M), log-SNR grid", "dpm_solver++", "log_snr", {"order": 2, "multistep": True}, "nfe"),
    ("DPM-Solver++(3M), log-SNR grid", "dpm_solver++", "log_snr", {"order": 3, "multistep": True}, "nfe"),
    ("DPM-Solver++(3S), log-SNR grid", "dpm_solver++", "log_snr", {"order": 3, "multistep": False}, "nfe"),
    ("UniPC, log-SNR grid", "unipc", "log_snr", {}, "nfe"),
    ("EDM Heun, Karras grid", "edm_heun", "karras", {}, "nfe"),
]
BASELINE = "DDIM, log-SNR grid"  # the time ratios are against this scoresde row

# diffusers' discrete-VP schedulers: (label, class name, config); NFE = num_inference_steps
DIFFUSERS = [
    ("DPMSolverMultistep dpmsolver++ 2M", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("DPMSolverMultistep dpmsolver++ 2M, Karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("DPMSolverMultistep dpmsolver++ 3M", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    ("UniPCMultistep bh2", "UniPCMultistepScheduler", {"solver_type": "bh2"}),
    ("EulerDiscrete, Karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
]  # fmt: skip
SDE_VE_LABEL = "ScoreSdeVe PC (1 corrector step)"
KDIFF_LABELS = {
    "dpmpp_2m": "sample_dpmpp_2m, Karras",
    "heun": "sample_heun, Karras",
    "dpm_fast": "sample_dpm_fast (+ denoise)",
    "dpm_adaptive": "sample_dpm_adaptive (+ denoise)",
}


# -- the problem: one SDE, one counted score, one x_T ------------------------------------------
class Counter:
    """Counts score evaluations (one batched call each) and checks each output's shape."""

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.score_fn = score_fn
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        out = self.score_fn(x, t)
        if out.shape != x.shape:
            raise ValueError(f"score returned {tuple(out.shape)} for x {tuple(x.shape)}")
        return out


class Problem:
    """An SDE with its score and starting noise, and the time/noise-level maps the adapters share."""

    def __init__(self, name: str, sde: sd.SDE, score_fn, x_T: Tensor, seed: int = 0, eps: float | None = None):
        self.name, self.sde, self.x_T, self.seed = name, sde, x_T, seed
        self.score = Counter(score_fn)
        self.eps = default_eps(sde) if eps is None else eps
        self.T = float(sde.T)
        t_table = torch.arange(1, TABLE_STEPS + 1, dtype=torch.float64) / TABLE_STEPS
        alpha, sigma = sde.marginal_coeffs(t_table, t_table)
        self.log_s_table = torch.log(sigma / alpha).numpy()

    def coeffs(self, t: float) -> tuple[float, float]:
        """``(alpha(t), sigma(t))`` as host floats (float64)."""
        u = torch.tensor([t], dtype=torch.float64)
        alpha, sigma = self.sde.marginal_coeffs(u, u)
        return float(alpha.reshape(-1)[0]), float(sigma.reshape(-1)[0])

    def ratio(self, t: float) -> float:
        """The sigma-space noise level ``s(t) = sigma(t) / alpha(t)``."""
        alpha, sigma = self.coeffs(t)
        return sigma / alpha

    def time_of_ratio(self, s: float) -> float:
        """The time with ``s(t) = s``: closed forms for VP and VE, bisection otherwise."""
        sde = self.sde
        if isinstance(sde, sd.VESDE):
            t = math.log(s / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
        elif isinstance(sde, sd.VPSDE):  # s^2 = exp(B(t)) - 1, B(t) = b0 t + (b1 - b0) t^2 / 2
            b0, db = sde.beta_min, sde.beta_max - sde.beta_min
            big_b = math.log1p(s * s)
            t = 2.0 * big_b / (b0 + math.sqrt(b0 * b0 + 2.0 * db * big_b))
        else:
            lo, hi = 0.0, self.T
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if self.ratio(mid) < s else (lo, mid)
            t = 0.5 * (lo + hi)
        return min(max(t, 0.0), self.T)

    def score_at(self, x: Tensor, t: float) -> Tensor:
        return self.score(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))

    # -- adapters ----------------------------------------------------------------------------
    def table_betas(self) -> list[float]:
        """``trained_betas`` whose ``alphas_cumprod[k]`` is ``1 / (1 + s(t_k)^2)``, ``t_k = (k+1)/1000``."""
        cumprod = 1.0 / (1.0 + np.exp(2.0 * self.log_s_table))
        previous = np.concatenate([[1.0], cumprod[:-1]])
        return (1.0 - cumprod / previous).tolist()

    def eps_model(self, x_vp: Tensor, timestep) -> Tensor:
        """diffusers' epsilon model: timestep -> s by the table's log-linear rule -> t; ``-sigma(t) score``."""
        k = float(timestep)
        s = float(np.exp(np.interp(k, np.arange(TABLE_STEPS), self.log_s_table)))
        t = self.time_of_ratio(s)
        alpha, sigma = self.coeffs(t)
        x_t = x_vp * (alpha * math.sqrt(1.0 + s * s))
        return -sigma * self.score_at(x_t, t)

    def denoiser(self, x: Tensor, s_tensor: Tensor) -> Tensor:
        """k-diffusion's ``D(x; s)`` on the sigma-space state ``x = x_t / alpha(t)``."""
        s = float(s_tensor.reshape(-1)[0])
        t = self.time_of_ratio(s)
        alpha, sigma = self.coeffs(t)
        return x + (sigma * sigma / alpha) * self.score_at(alpha * x, t)

    def ve_score_model(self, x: Tensor, sigma: Tensor) -> Tensor:
        """ScoreSdeVePipeline's model: the score at the VE noise level ``sigma``."""
        return self.score_at(x, self.time_of_ratio(float(sigma.reshape(-1)[0])))

    def start(self, space: str) -> Tensor:
        """x_T mapped into a peer's state: ``"vp"`` (diffusers' discrete VP) or ``"sigma"`` (x_t / alpha)."""
        alpha, sigma = self.coeffs(self.T)
        scale = alpha if space == "sigma" else math.sqrt(alpha * alpha + sigma * sigma)
        return self.x_T / scale


@dataclass
class Case:
    """One method: ``run(problem, budget) -> samples``; ``budgets`` overrides the NFE list (adaptive tolerances)."""

    label: str
    library: str
    run: Callable[[Problem, float], Tensor]
    sdes: tuple[str, ...] = ("vp", "ve")
    adaptive: bool = False
    note: str = ""
    stochastic: bool = False
    digits: bool = True


# -- scoresde ------------------------------------------------------------------------------------
def scoresde_cases(notes: list[str]) -> list[Case]:
    cases = []
    for label, sampler, grid, options, steps_kind in SCORESDE:
        if sampler not in SAMPLERS:
            notes.append(f"scoresde `{sampler}` ({label}) skipped: not in scoresde.sampling.SAMPLERS of this version")
            continue
        if isinstance(grid, str) and grid not in GRIDS:
            notes.append(f"scoresde `{sampler}` ({label}) skipped: grid {grid!r} not in scoresde.sampling.GRIDS")
            continue
        unknown = sorted(set(options) - set(sampler_options(sampler)))
        if unknown:
            notes.append(f"scoresde `{sampler}` ({label}) skipped: it does not take the option(s) {unknown}")
            continue

        def run(problem: Problem, budget: float, sampler=sampler, grid=grid, options=options, kind=steps_kind):
            steps = int(budget) - 1 if kind == "grid" else int(budget)
            generator = torch.Generator().manual_seed(problem.seed)
            return sd.sample(problem.sde, problem.score, None, sampler=sampler, steps=steps, grid=grid,
                             x_init=problem.x_T, eps=problem.eps, generator=generator, **options)  # fmt: skip

        opts = ", ".join(f"{k}={v}" for k, v in options.items())
        cases.append(Case(f"{label}" + (f" ({opts})" if opts else ""), "scoresde", run,
                          stochastic=bool(options.get("churn", 0))))  # fmt: skip
    return cases


# -- diffusers -----------------------------------------------------------------------------------
def diffusers_cases(notes: list[str]) -> list[Case]:
    try:
        import diffusers
    except ImportError as err:
        notes.append(f"diffusers not installed ({err}); `make bench-peers` installs the peers extra")
        return []
    cases = []
    for label, cls_name, config in DIFFUSERS:
        cls = getattr(diffusers, cls_name)
        space = "sigma" if cls_name == "EulerDiscreteScheduler" else "vp"

        def run(problem: Problem, budget: float, cls=cls, config=config, space=space) -> Tensor:
            scheduler = cls(num_train_timesteps=TABLE_STEPS, trained_betas=problem.table_betas(),
                            prediction_type="epsilon", **config)  # fmt: skip
            scheduler.set_timesteps(int(budget))
            x = problem.start(space)
            for k in scheduler.timesteps:
                eps = problem.eps_model(scheduler.scale_model_input(x, k), k)
                x = scheduler.step(eps, k, x).prev_sample
            return x

        cases.append(Case(label, f"diffusers {diffusers.__version__}", run))

    def run_ve(problem: Problem, budget: float) -> Tensor:
        sde = problem.sde
        steps = max(int(budget) // 2, 1)
        scheduler = diffusers.ScoreSdeVeScheduler(num_train_timesteps=steps, snr=0.16, sigma_min=sde.sigma_min,
                                                  sigma_max=sde.sigma_max, sampling_eps=problem.eps,
                                                  correct_steps=1)  # fmt: skip
        scheduler.set_timesteps(steps, sampling_eps=problem.eps)
        scheduler.set_sigmas(steps, sampling_eps=problem.eps)
        generator = torch.Generator().manual_seed(problem.seed)
        x = problem.start("sigma")
        mean = x
        for i, t in enumerate(scheduler.timesteps):
            sigma = scheduler.sigmas[i]
            for _ in range(scheduler.config.correct_steps):
                x = scheduler.step_correct(problem.ve_score_model(x, sigma), x, generator=generator).prev_sample
            out = scheduler.step_pred(problem.ve_score_model(x, sigma), t, x, generator=generator)
            x, mean = out.prev_sample, out.prev_sample_mean
        return mean  # the pipeline's output: the last predictor mean (a Tweedie step at sigma_min)

    cases.append(Case(SDE_VE_LABEL, f"diffusers {diffusers.__version__}", run_ve, sdes=("ve",), stochastic=True,
                      digits=False))  # fmt: skip
    return cases


# -- k-diffusion ---------------------------------------------------------------------------------
def load_k_diffusion(notes: list[str]):
    """``k_diffusion.sampling`` and a label. The genuine import first; if the package's ``__init__`` fails (it
    imports scikit-image, clean-fid, CLIP, jsonmerge, dctorch and torchvision, none needed by the samplers), load
    ``sampling.py`` (and the ``utils.py`` it imports) alone, with an empty STUB module for torchvision when there
    is none (no CPU wheel here; ``utils`` only uses it in image-conversion helpers the samplers never call)."""
    try:
        from k_diffusion import sampling

        return sampling, "k-diffusion"
    except ImportError as err:
        first_error = err
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        notes.append(f"k-diffusion not installed ({first_error}); `make bench-peers` installs it")
        return None, ""
    for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
        del sys.modules[name]
    shell = types.ModuleType("k_diffusion")
    shell.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = shell
    stubbed = []
    if importlib.util.find_spec("torchvision") is None:
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    try:
        sampling = importlib.import_module("k_diffusion.sampling")
    except ImportError as err:
        notes.append(f"k-diffusion does not import here, even as sampling.py alone: {err}")
        return None, ""
    finally:
        for name in stubbed:  # the stub must not leak into anything imported later
            del sys.modules[name]
    why = f"package `__init__` skipped ({type(first_error).__name__}: {first_error})"
    stub = "; torchvision replaced by an empty STUB module" if stubbed else ""
    notes.append(f"k-diffusion: `k_diffusion/sampling.py` loaded alone, its samplers unchanged; {why}{stub}")
    return sampling, "k-diffusion" + (" (torchvision stub)" if stubbed else " (sampling.py only)")


def kdiffusion_cases(notes: list[str]) -> list[Case]:
    ks, tag = load_k_diffusion(notes)
    if ks is None:
        return []
    try:
        from importlib.metadata import version

        tag = tag.replace("k-diffusion", f"k-diffusion {version('k-diffusion')}", 1)
    except Exception:
        pass

    def sigma_range(problem: Problem) -> tuple[float, float]:
        return problem.ratio(problem.eps), problem.ratio(problem.T)

    def dpmpp_2m(problem: Problem, budget: float) -> Tensor:
        s_min, s_max = sigma_range(problem)
        sigmas = ks.get_sigmas_karras(int(budget), s_min, s_max, rho=7.0)
        return ks.sample_dpmpp_2m(problem.denoiser, problem.start("sigma"), sigmas, disable=True)

    def heun(problem: Problem, budget: float) -> Tensor:  # n sigmas: 2n - 1 NFE (Euler on the last step to 0)
        s_min, s_max = sigma_range(problem)
        sigmas = ks.get_sigmas_karras(max((int(budget) + 1) // 2, 1), s_min, s_max, rho=7.0)
        return ks.sample_heun(problem.denoiser, problem.start("sigma"), sigmas, disable=True)

    def finish(problem: Problem, x: Tensor, s_min: float) -> Tensor:
        """These two stop at sigma_min; one more evaluation (Tweedie) ends at x0 like every other method."""
        return problem.denoiser(x, torch.full((x.shape[0],), s_min, dtype=x.dtype))

    def dpm_fast(problem: Problem, budget: float) -> Tensor:
        s_min, s_max = sigma_range(problem)
        x = ks.sample_dpm_fast(problem.denoiser, problem.start("sigma"), s_min, s_max, max(int(budget) - 1, 1),
                               disable=True)  # fmt: skip
        return finish(problem, x, s_min)

    def dpm_adaptive(problem: Problem, factor: float) -> Tensor:
        s_min, s_max = sigma_range(problem)
        x = ks.sample_dpm_adaptive(problem.denoiser, problem.start("sigma"), s_min, s_max, rtol=0.05 * factor,
                                   atol=0.0078 * factor, disable=True)  # fmt: skip
        return finish(problem, x, s_min)

    return [
        Case(KDIFF_LABELS["dpmpp_2m"], tag, dpmpp_2m),
        Case(KDIFF_LABELS["heun"], tag, heun),
        Case(KDIFF_LABELS["dpm_fast"], tag, dpm_fast),
        Case(KDIFF_LABELS["dpm_adaptive"], tag, dpm_adaptive, adaptive=True,
             note="rtol = 0.05 f, atol = 0.0078 f (k-diffusion's defaults at f = 1)"),
    ]  # fmt: skip


# -- running -------------------------------------------------------------------------------------
def run_case(case: Case, problem: Problem, budget: float) -> dict:
    """One run: samples, counted NFE (per sample path) and wall time; a failure is recorded, not raised."""
    before = problem.score.calls
    start = time.perf_counter()
    try:
        with torch.no_grad():
            x = case.run(problem, budget)
    except Exception as err:  # a peer or a new sampler failing is a result, not a crash of the benchmark
        return {"budget": budget, "error": f"{type(err).__name__}: {str(err)[:120]}"}
    seconds = time.perf_counter() - start
    return {"budget": budget, "x": x, "nfe": problem.score.calls - before, "seconds": seconds}


def mixture_problem(name: str, n: int, seed: int) -> tuple[Problem, object]:
    sde = {"vp": sd.VPSDE, "ve": sd.VESDE}[name]()
    mixture = demo_mixture()
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return Problem(name, sde, mixture.score_fn(sde), z * sde.prior_std()), mixture


def fmt(value: float, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "nan" if value is None or math.isnan(value) else "inf"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def check_section(cases: list[Case], problems: dict, reference: Tensor) -> list[str]:
    """Each method at about CHECK_NFE evaluations: distance of its samples to scoresde's RK45 endpoints of the
    same x_T (the probability-flow ODE solved to 1e-5), and the mixture errors."""
    lines = [f"## 0. Adapter check: every method at about {CHECK_NFE} NFE", "",
             "Distances are per sample, to scoresde's adaptive RK45 solution (rtol = atol = 1e-5) of the "
             "probability-flow ODE from the same x_T: the deterministic solvers converge to the same points "
             "(median and 99th percentile of |x - x_RK45|); the stochastic ones (PC) only in distribution. "
             "The errors are the section-1 errors; the RK45 row is the noise floor of this sample size.", "",
             "| SDE | method | library | NFE | median dist | p99 dist | TV | std err | logp err |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, (problem, mixture) in problems.items():
        before = problem.score.calls
        ode = sd.sample(problem.sde, problem.score, None, sampler="ode", x_init=problem.x_T, eps=problem.eps,
                        rtol=1e-5, atol=1e-5)  # fmt: skip
        nfe = problem.score.calls - before
        e = mixture_errors(mixture, ode, reference)
        lines.append(f"| {name.upper()} | scoresde PF-ODE RK45 (1e-5) | scoresde | {nfe} | 0 | 0 | {fmt(e['tv'])} "
                     f"| {fmt(e['std'])} | {fmt(e['logp'], True)} |")  # fmt: skip
        for case in cases:
            if name not in case.sdes:
                continue
            budget = 0.02 if case.adaptive else CHECK_NFE
            r = run_case(case, problem, budget)
            if "error" in r:
                lines.append(f"| {name.upper()} | {case.label} | {case.library} | - | failed: {r['error']} ||||||")
                continue
            dist = (r["x"].double() - ode.double()).norm(dim=1)
            med, p99 = float(dist.median()), float(torch.quantile(dist, 0.99))
            e = mixture_errors(mixture, r["x"], reference)
            label = case.label + (", f = 0.02" if case.adaptive else "")
            lines.append(f"| {name.upper()} | {label} | {case.library} | {r['nfe']} | {med:.2e} | {p99:.2e} "
                         f"| {fmt(e['tv'])} | {fmt(e['std'])} | {fmt(e['logp'], True)} |")  # fmt: skip
            print(lines[-1], flush=True)
    return lines


def curves(cases: list[Case], problems: dict, reference: Tensor, nfes: list[int]) -> dict:
    """results[sde][label] = list of run records with the mixture errors (samples dropped)."""
    results: dict = {}
    for name, (problem, mixture) in problems.items():
        results[name] = {}
        for case in cases:
            if name not in case.sdes:
                continue
            rows = []
            for budget in ADAPTIVE_FACTORS if case.adaptive else nfes:
                r = run_case(case, problem, budget)
                if "x" in r:
                    r |= mixture_errors(mixture, r.pop("x"), reference)
                rows.append(r)
            results[name][case.label] = rows
            done = ", ".join(f"{r.get('nfe', '-')}:{fmt(r.get('tv', float('nan')))}" for r in rows)
            print(f"{name} {case.label}: NFE:TV {done}", flush=True)
    return results


def curve_tables(cases: list[Case], results: dict, nfes: list[int]) -> list[str]:
    lines = ["## 1. NFE against error on the 2-D mixture (exact score)", "",
             "Columns are NFE budgets; a cell shows the error, and the measured NFE in brackets where it differs "
             "from the budget (Heun: 2n - 1; the PC sampler: 2 per step). TV: total variation of the mode "
             "weights; std err: worst relative within-mode std error; logp err: mean data log-density of the "
             "samples minus that of the reference (nats; negative = too spread). Lower |error| is better.",
             ""]  # fmt: skip
    library = {c.label: c.library for c in cases}
    adaptive = [c for c in cases if c.adaptive]
    for name, per_case in results.items():
        for key, title in (("tv", "TV"), ("std", "std err"), ("logp", "logp err")):
            lines += [f"### {name.upper()}: {title}", "",
                      "| method | library | " + " | ".join(str(n) for n in nfes) + " |",
                      "|---|---|" + "---|" * len(nfes)]  # fmt: skip
            for label, rows in per_case.items():
                if any(c.label == label and c.adaptive for c in cases):
                    continue
                cells = []
                for r in rows:
                    if "error" in r:
                        cells.append("failed")
                        continue
                    cell = fmt(r[key], key == "logp")
                    cells.append(cell + (f" ({r['nfe']})" if r["nfe"] != r["budget"] else ""))
                lines.append(f"| {label} | {library[label]} | " + " | ".join(cells) + " |")
            lines.append("")
        for case in adaptive:
            rows = per_case.get(case.label, [])
            if not rows:
                continue
            lines += [f"### {name.upper()}: {case.label}, tolerances as the NFE proxy ({case.note})", "",
                      "| f | NFE | TV | std err | logp err |", "|---|---|---|---|---|"]  # fmt: skip
            for r in rows:
                if "error" in r:
                    lines.append(f"| {r['budget']} | failed: {r['error']} ||||")
                else:
                    lines.append(f"| {r['budget']} | {r['nfe']} | {fmt(r['tv'])} | {fmt(r['std'])} "
                                 f"| {fmt(r['logp'], True)} |")  # fmt: skip
            lines.append("")
    return lines


def timing_section(cases: list[Case], problems: dict, results: dict, repeats: int) -> list[str]:
    """Wall time per sample at 10 NFE (best of ``repeats``), against scoresde's DDIM in the same run."""
    lines = [f"## 2. Wall time per sample at 10 NFE (best of {repeats})", "",
             "The mixture score is cheap (a few ms per call for the whole batch), so these times are mostly "
             "each library's per-step overhead; with a network, the score dominates and all are close.", "",
             "| SDE | method | library | NFE | µs / sample | time / scoresde DDIM |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, (problem, _) in problems.items():
        n = problem.x_T.shape[0]
        timed = []
        for case in cases:
            if name not in case.sdes:
                continue
            budget = 10
            if case.adaptive:  # the tolerance whose NFE came closest to 10 in section 1
                rows = [r for r in results.get(name, {}).get(case.label, []) if "nfe" in r]
                if not rows:
                    continue
                budget = min(rows, key=lambda r: abs(r["nfe"] - 10))["budget"]
            runs = [run_case(case, problem, budget) for _ in range(repeats)]
            if any("error" in r for r in runs):
                continue
            timed.append((case, min(r["seconds"] for r in runs), runs[0]["nfe"], budget))
        base = next((s for c, s, _, _ in timed if c.label.startswith(BASELINE)), None)
        for case, seconds, nfe, budget in timed:
            ratio = f"{seconds / base:.2f}" if base else "-"
            label = case.label + (f", f = {budget}" if case.adaptive else "")
            lines.append(f"| {name.upper()} | {label} | {case.library} | {nfe} | {1e6 * seconds / n:.2f} | {ratio} |")
    return lines


def digits_section(cases: list[Case], checkpoint: Path, n: int, seed: int, nfes=(10, 20)) -> list[str]:
    """FD (digits-classifier features, against the test digits) of ``n`` samples per method."""
    from scoresde import metrics
    from scoresde.build import build_score, data_shape, load_dataset
    from scoresde.data import data_levels, to_levels
    from scoresde.features import digits_features
    from scoresde.model import load_for_inference

    cfg, sde, model = load_for_inference(checkpoint)
    score = build_score(model, sde, cfg)
    levels = data_levels(cfg.data.dataset)
    test, train = load_dataset(cfg, "test"), load_dataset(cfg, "train")
    f_test = digits_features((test.images.float() + 0.5) / test.levels)[0]
    f_floor = digits_features((train.images[:n].float() + 0.5) / train.levels)[0]
    floor = metrics.frechet_distance(f_floor, f_test)
    z = torch.randn(n, *data_shape(cfg), generator=torch.Generator().manual_seed(seed))
    problem = Problem("digits", sde, score, z * sde.prior_std(), seed=seed, eps=cfg.sampling.eps or None)

    def fd(x: Tensor) -> float:
        unit = ((to_levels(x, levels, tuple(cfg.data.data_range)).float() + 0.5) / levels).float()
        return metrics.frechet_distance(digits_features(unit)[0], f_test)

    shown = checkpoint.resolve().relative_to(ROOT) if checkpoint.resolve().is_relative_to(ROOT) else checkpoint
    lines = [f"## 3. Digits model: FD at {' and '.join(map(str, nfes))} NFE", "",
             f"Checkpoint `{shown}` (EMA weights), {n} samples per method from the same x_T (seed {seed}), "
             f"FD in the shipped digits classifier's features against the {len(test.images)} test digits. Floor: "
             f"{n} training digits against the test digits, FD {floor:.2f}.", "",
             "| method | library | " + " | ".join(f"FD @ {b} (NFE)" for b in nfes) + " | FD / floor @ "
             f"{nfes[0]} | time (s) @ {nfes[0]} |", "|---|---|" + "---|" * len(nfes) + "---|---|",
             f"| floor: {n} training digits | - | " + " | ".join(f"{floor:.2f}" for _ in nfes)
             + " | 1.00 | - |"]  # fmt: skip
    for case in cases:
        if "vp" not in case.sdes or not case.digits:
            continue
        budgets = [16.0, 1.0] if case.adaptive else list(nfes)
        cells, first = [], None
        for budget in budgets:
            r = run_case(case, problem, budget)
            if "error" in r:
                cells.append(f"failed: {r['error']}")
                continue
            value = fd(r["x"])
            first = first or (value, r["seconds"])
            cells.append(f"{value:.2f} ({r['nfe']})")
        label = case.label + (" (f = 16, f = 1)" if case.adaptive else "")
        ratio = f"{first[0] / floor:.2f}" if first else "-"
        secs = f"{first[1]:.1f}" if first else "-"
        lines.append(f"| {label} | {case.library} | " + " | ".join(cells) + f" | {ratio} | {secs} |")
        print(lines[-1], flush=True)
    return lines


def plot(cases: list[Case], results: dict, path: Path) -> str:
    """NFE against each error, one row per SDE: scoresde solid, diffusers dashed, k-diffusion dotted."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot (it is in the peers extra)"
    from scoresde.plotting import atomic_write

    styles = {"scoresde": "-", "diffusers": "--", "k-diffusion": ":"}
    library = {c.label: c.library for c in cases}
    colour = {c.label: plt.cm.tab20(i % 20) for i, c in enumerate(cases)}  # one colour per method in every panel
    sdes = list(results)
    fig, axes = plt.subplots(len(sdes), 3, figsize=(15, 4.6 * len(sdes)), squeeze=False)
    for row, name in enumerate(sdes):
        for col, (key, title) in enumerate((("tv", "mode-weight TV"), ("std", "within-mode std error"),
                                            ("logp", "|log-density gap| (nats)"))):  # fmt: skip
            ax = axes[row][col]
            for label, rows in results[name].items():
                pts = sorted((r["nfe"], abs(r[key])) for r in rows if "nfe" in r and math.isfinite(r[key]))
                if not pts:
                    continue
                style = styles[library[label].split()[0]]
                ax.plot([p[0] for p in pts], [max(p[1], 1e-5) for p in pts], style, marker="o", markersize=3,
                        color=colour[label], label=f"{label} [{library[label].split()[0]}]")  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(4, 120)
            ax.set_title(f"{name.upper()}: {title}")
            ax.set_xlabel("NFE")
            ax.grid(True, which="both", alpha=0.3)
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.02 + 0.018 * math.ceil(len(labels) / 3), 1, 1))
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=90))
    plt.close(fig)
    return f"plot: `{path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path}`"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="mixture samples per run")
    parser.add_argument("--reference", type=int, default=200_000, help="reference sample size")
    parser.add_argument("--nfe", type=int, nargs="+", default=NFES)
    parser.add_argument("--sde", nargs="+", default=["vp", "ve"], choices=["vp", "ve"])
    parser.add_argument("--only", default="", help="comma-separated substrings of method labels to keep")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best of)")
    parser.add_argument("--no-check", action="store_true", help="skip section 0 (the adapter check)")
    parser.add_argument("--no-digits", action="store_true", help="skip section 3 (the digits model)")
    parser.add_argument("--no-mixture", action="store_true", help="skip sections 0-2 and the plot (digits only)")
    parser.add_argument("--digits-n", type=int, default=1000)
    parser.add_argument("--checkpoint", default=str(ROOT / "outputs" / "digits" / "checkpoints"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peers.md"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "peers_nfe.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    notes: list[str] = []
    cases = scoresde_cases(notes) + diffusers_cases(notes) + kdiffusion_cases(notes)
    if args.only:
        keep = [s.strip() for s in args.only.split(",") if s.strip()]
        cases = [c for c in cases if any(k in c.label for k in keep) or c.label.startswith(BASELINE)]
    reference = demo_mixture().sample(args.reference, generator=torch.Generator().manual_seed(1),
                                      dtype=torch.float64)  # fmt: skip
    problems = {name: mixture_problem(name, args.n, seed=0) for name in args.sde}
    versions = [f"torch {torch.__version__}", f"scoresde {getattr(sd, '__version__', '(source tree)')}"]
    versions += sorted({c.library for c in cases if c.library != "scoresde"})
    head = [f"# scoresde and its peers on the same score and the same x_T ({time.strftime('%Y-%m-%d')})", "",
            f"`python benchmarks/bench_peers.py` ({'; '.join(versions)}); CPU, {args.threads} thread(s); "
            + ("" if args.no_mixture else f"2-D mixture: {args.n} samples per run from one x_T (seed 0), reference "
               f"{args.reference} true samples. ") + "Adapters and conventions: the script's docstring.",
            ""]  # fmt: skip
    for note in notes:
        print("note:", note)
    sections: list[str] = []
    results: dict = {}
    if not args.no_mixture:
        if not args.no_check:
            sections += [*check_section(cases, problems, reference), ""]
        results = curves(cases, problems, reference, args.nfe)
        sections += curve_tables(cases, results, args.nfe)
        sections += [*timing_section(cases, problems, results, args.repeats), ""]
    if not args.no_digits:
        checkpoint = Path(args.checkpoint)
        if checkpoint.exists():
            sections += [*digits_section(cases, checkpoint, args.digits_n, seed=0), ""]
        else:
            notes.append(f"digits section skipped: no checkpoint at {checkpoint} (run `make demo` first)")
    if args.plot and results:
        notes.append(plot(cases, results, Path(args.plot)))
    notes.append(f"total time {time.perf_counter() - started:.0f} s")
    text = "\n".join(head + [f"- {note}" for note in notes] + [""] + sections)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
