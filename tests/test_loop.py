"""The one sampler loop: callback and state-replacement hooks for every fixed-grid sampler."""

import itertools
from inspect import signature

import pytest
import torch

import scoresde as sd
from scoresde.sampling import SAMPLERS, StepInfo
from scoresde.toy import demo_mixture

FIXED = {
    name: ({"method": "heun"} if name == "ode" else {})
    for name in SAMPLERS
    if "callback" in signature(SAMPLERS[name]).parameters
}


@pytest.mark.parametrize("name", list(FIXED))
def test_every_fixed_grid_sampler_reports_each_step(name):
    sde, gm = sd.VPSDE(), demo_mixture()
    seen: list[StepInfo] = []
    grid = sd.time_grid(sde, 12, 1e-3)  # an explicit grid: 12 steps whether steps counts steps or NFE
    x = sd.sample(sde, gm.score_fn(sde), (40, 2), sampler=name, grid=grid, denoise=False, callback=seen.append,
                  generator=sd.SampleNoise(0, 40), **FIXED[name])  # fmt: skip
    assert [info.index for info in seen] == list(range(12))
    assert all(a.s == b.t for a, b in itertools.pairwise(seen)) and seen[-1].s == pytest.approx(1e-3)
    assert torch.equal(seen[-1].x, x) and seen[0].rows == slice(0, 40)
    # the same samples as without the hook: observing changes nothing
    plain = sd.sample(sde, gm.score_fn(sde), (40, 2), sampler=name, grid=grid, denoise=False,
                      generator=sd.SampleNoise(0, 40), **FIXED[name])  # fmt: skip
    assert torch.equal(plain, x)


def test_the_denoised_estimate_is_tweedie_at_the_step_start():
    sde, gm = sd.VPSDE(), demo_mixture()
    start = sde.prior_sampling((30, 2), generator=sd.SampleNoise(4, 30), dtype=torch.float64)
    seen: list[StepInfo] = []
    sd.sample(sde, gm.score_fn(sde), None, sampler="ddim", steps=8, x_init=start, callback=seen.append)
    states = [start] + [info.x for info in seen[:-1]]
    for info, x_t in zip(seen, states, strict=True):
        alpha, sigma = (float(c[0]) for c in sde.marginal_coeffs(info.t, x_t))
        expected = (x_t + sigma**2 * gm.score(x_t, info.t, sde)) / alpha
        torch.testing.assert_close(info.x0_hat, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(FIXED))
def test_replace_holds_a_coordinate_through_the_final_denoising(name):
    sde, gm = sd.VESDE(sigma_max=10.0), demo_mixture()
    calls = []

    def pin(info: StepInfo) -> torch.Tensor:
        calls.append(info.s)
        x = info.x.clone()
        x[:, 0] = 0.25
        return x

    x = sd.sample(sde, gm.score_fn(sde), (20, 2), sampler=name, grid=sd.time_grid(sde, 6, 1e-5), replace=pin,
                  batch_size=8, generator=sd.SampleNoise(1, 20), **FIXED[name])  # fmt: skip
    assert bool((x[:, 0] == 0.25).all())
    assert calls.count(0.0) == 3 and len(calls) == 3 * 7  # 3 batches x (6 steps + the denoising step)


def test_hooks_are_checked():
    sde, gm = sd.VPSDE(), demo_mixture()
    with pytest.raises(ValueError, match="rk45"):
        sd.sample(sde, gm.score_fn(sde), (4, 2), sampler="ode", callback=print)
    with pytest.raises(TypeError, match="callable"):
        sd.sample(sde, gm.score_fn(sde), (4, 2), sampler="ddim", steps=3, replace=3)

    def bare(sde, score_fn, x, ts, *, generator=None, progress=False):
        return x

    with pytest.raises(ValueError, match="hook"):
        sd.sample(sde, gm.score_fn(sde), (4, 2), sampler=bare, steps=3, callback=print)
