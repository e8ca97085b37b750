"""Each sampler declares its spec beside its code (default grid, adaptive or not, evaluations per step, option
rules); sample() and the option checks read it, and a sampler of one's own takes part by declaring one."""

import itertools

import pytest
import torch

import scoresde as sd
from scoresde.sampling import SAMPLERS, run_steps
from scoresde.sampling.options import check_sampler_options
from scoresde.sampling.spec import DEFAULT_SPEC, OptionRule, SamplerSpec, declare, fixed_grid, spec_of
from scoresde.toy import demo_mixture

EXPECTED = {  # sampler -> (default grid on VP, adaptive with its defaults, evaluations per step)
    "euler_maruyama": ("uniform", False, None), "reverse_diffusion": ("uniform", False, None),
    "ancestral": ("uniform", False, None), "pc": ("uniform", False, None), "ode": ("uniform", True, None),
    "ddim": ("uniform", False, None), "dpm_solver++": ("log_snr", False, 1), "dpm_solver": ("log_snr", False, 1),
    "unipc": ("log_snr", False, 1), "edm_heun": ("karras", False, 2), "sde_dpm_solver++": ("log_snr", False, 1),
    "adaptive_sde": ("uniform", True, None),
}  # fmt: skip


def test_every_registered_sampler_declares_what_the_library_assumes_of_it():
    assert set(EXPECTED) == set(SAMPLERS)
    for name, (grid, adaptive, per_step) in EXPECTED.items():
        assert sd.sampling.default_grid(name, sd.VPSDE()) == grid, name
        assert sd.sampling.is_adaptive(name) is adaptive, name
        assert sd.sampling.evals_per_step(name) == per_step, name
    assert not sd.sampling.is_adaptive("ode", {"method": "heun"})
    assert sd.sampling.evals_per_step("dpm_solver++", {"multistep": False, "order": 3}) == 3
    assert sd.sampling.default_grid("pc", sd.EDMSDE()) == "karras"  # the paper's samplers follow the process


def test_option_rules_come_from_each_samplers_spec():
    with pytest.raises(ValueError, match="snr of sampler 'pc' must be a finite number > 0"):
        check_sampler_options("pc", {"snr": -1.0})
    with pytest.raises(ValueError, match="order of sampler 'sde_dpm_solver\\+\\+' must be 1 or 2"):
        check_sampler_options("sde_dpm_solver++", {"order": 3})
    assert check_sampler_options("dpm_solver++", {"order": 3}) == {"order": 3}
    with pytest.raises(ValueError, match="method of sampler 'ode' must be one of"):
        check_sampler_options("ode", {"method": "dopri8"})


def test_a_sampler_of_ones_own_takes_part_through_its_spec():
    """A Heun sampler written here: two evaluations a step, an NFE budget, the log-SNR grid by default."""
    sde, mixture = sd.VPSDE(), demo_mixture()

    @declare(SamplerSpec(grid="log_snr", evals_per_step=lambda options: 2, whole_steps=True,
                         rules={"gain": OptionRule(check=lambda v: v > 0, message="must be > 0")}))  # fmt: skip
    def heun(sde, score_fn, x, ts, *, gain: float = 1.0, generator=None, progress=False, callback=None,
             replace=None, rows=None):  # fmt: skip
        def flow(score, x, t):  # dx/dt = f - g^2 s / 2
            tt = torch.full((x.shape[0],), t, dtype=x.dtype)
            drift, diffusion = sde.sde(x, tt)
            return drift - 0.5 * diffusion[:, None] ** 2 * score(x, tt)

        def step(sde, score, x, t, s, generator):
            d1 = flow(score, x, t)
            return x + (s - t) * gain * 0.5 * (d1 + flow(score, x + (s - t) * d1, s))

        return run_steps(step, sde, score_fn, x, ts, generator, progress, callback, replace, rows)

    seen = []
    x, nfe = sd.sample(sde, mixture.score_fn(sde), (2000, 2), sampler=heun, steps=41, return_nfe=True,
                       callback=lambda info: seen.append(info.s))  # fmt: skip
    assert nfe == 41 and len(seen) == 20  # 40 evaluations in 20 whole steps, then the denoising one
    log_snr = [sde.schedule.log_snr(s) for s in [sde.T, *seen]]
    gaps = torch.tensor([b - a for a, b in itertools.pairwise(log_snr)])
    assert torch.allclose(gaps, gaps.mean(), rtol=1e-6)  # its declared default grid: equal log-SNR steps
    assert abs(float(x.mean(0)[0]) - float(mixture.weights @ mixture.means[:, 0])) < 0.1
    assert spec_of(lambda *a: None) is DEFAULT_SPEC


def test_a_step_factory_becomes_a_sampler_with_the_hooks():
    """fixed_grid: the factory's options become the sampler's, the hooks are the loop's; the same Heun as above."""
    sde, mixture = sd.VPSDE(), demo_mixture()

    @fixed_grid(SamplerSpec(evals_per_step=lambda options: 2, whole_steps=True))
    def heun(sde, ts, *, gain: float = 1.0):
        def flow(score, x, t):
            tt = torch.full((x.shape[0],), t, dtype=x.dtype)
            drift, diffusion = sde.sde(x, tt)
            return drift - 0.5 * diffusion[:, None] ** 2 * score(x, tt)

        def step(sde, score, x, t, s, generator):
            d1 = flow(score, x, t)
            return x + (s - t) * gain * 0.5 * (d1 + flow(score, x + (s - t) * d1, s))

        return step

    assert sd.sampling.sampler_options(heun) == ("gain",) and heun.__name__ == "heun"
    known = torch.zeros(500, 2)
    mask = torch.tensor([[1.0, 0.0]])
    x, nfe = sd.inpaint(sde, mixture.score_fn(sde), known, mask, sampler=heun, steps=31, return_nfe=True)
    assert nfe == 31 and torch.equal(x[:, 0], known[:, 0])  # the replace hook ran after every step
    with pytest.raises(ValueError, match="unknown option"):
        sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler=heun, steps=5, snr=0.1)
    # the direct call of a built-in sampler keeps its signature: (sde, score_fn, x, ts, *, options, hooks)
    direct = sd.sampling.ddim(sde, mixture.score_fn(sde), torch.randn(8, 2), [1.0, 0.5, 0.01], eta=0.0)
    assert direct.shape == (8, 2)
