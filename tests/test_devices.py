"""Device placement: everything follows x's device and dtype (runs only where CUDA is present), and the sampler
loops never synchronise with the host (checked under CUDA's sync debug mode; the same helper also runs on the CPU,
so that it stays valid where no GPU is)."""

import inspect

import pytest
import torch

import scoresde as sd
from scoresde.sampling import SAMPLERS
from scoresde.toy import demo_mixture

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.SubVPSDE(), sd.VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("sampler", ["euler_maruyama", "reverse_diffusion", "pc", "ode", "ddim"])
def test_cuda_sampling_matches_cpu(sde, sampler):
    gm = demo_mixture()
    kw = {} if sampler == "ode" else {"steps": 50}
    cpu = sd.sample(sde, gm.score_fn(sde), (64, 2), sampler=sampler, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64, **kw)  # fmt: skip
    gpu = sd.sample(sde, gm.score_fn(sde), (64, 2), sampler=sampler, generator=torch.Generator().manual_seed(0),
                    device="cuda", dtype=torch.float64, **kw)  # fmt: skip
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-6)


@cuda
def test_cuda_discretize_and_likelihood():
    sde = sd.VESDE()
    x = torch.randn(8, 2, device="cuda")
    f, G = sde.discretize(x, torch.full((8,), 0.5, device="cuda"))
    assert f.device.type == G.device.type == "cuda"
    gm = demo_mixture()
    logp, z, _ = sd.log_likelihood(sde, gm.score_fn(sde), x.double(), divergence="exact")
    assert logp.device.type == z.device.type == "cuda"


# -- no host synchronisation inside the sampler loops --------------------------------------------------------------
LOOPED = {name: fn for name, fn in SAMPLERS.items() if "callback" in inspect.signature(fn).parameters}
LOOP_OPTIONS = {"ode": {"method": "heun"}, "ddim": {"eta": 0.5}, "edm_heun": {"churn": 10.0},
                "dpm_solver": {"order": 3}, "unipc": {"order": 3}}  # fmt: skip


class TinyEps(torch.nn.Module):
    """A noise predictor eps(x, t) = W2 tanh(W1 [x, t] + b1) + b2: no data-dependent control flow."""

    def __init__(self, dim: int = 2, width: int = 16) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(dim + 1, width)
        self.out = torch.nn.Linear(width, dim)

    def forward(self, x, label):
        return self.out(torch.tanh(self.inp(torch.cat([x, label[:, None].to(x.dtype)], dim=1))))


def run_loop(sde, name, device, noise, sync_mode=None):
    """Run sampler ``name`` (the function of SAMPLERS, not ``sample``, whose boundary checks read the device) on a
    network score, with ``x_T`` and the generator on ``device``; ``sync_mode`` is set around the loop alone."""
    torch.manual_seed(0)
    net = TinyEps().to(device)
    score = sd.ModelScore(net, sde, prediction="eps", time_input="t")
    generator = torch.Generator(device=device).manual_seed(0) if noise == "generator" else sd.SampleNoise(0, 32)
    x = sde.prior_sampling((32, 2), generator=generator, device=device)
    if noise == "sample_noise":  # its stream indices are copied to x's device once, at its first draw there
        generator.randn(x.shape, device=x.device)
    ts = sd.time_grid(sde, 8, sd.default_eps(sde), "log_snr")
    score(x, torch.full((32,), 0.5, device=device))  # warm-up: kernels and allocations before the loop
    fn = LOOPED[name]
    seen = []
    hooks = {"generator": generator, "callback": seen.append}
    kwargs = {k: v for k, v in hooks.items() if k in inspect.signature(fn).parameters}
    if sync_mode is not None:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode(sync_mode)
    try:
        out = fn(sde, score, x, ts, **LOOP_OPTIONS.get(name, {}), **kwargs)
    finally:
        if sync_mode is not None:
            torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape and out.device == x.device
    assert [info.index for info in seen] == list(range(8))
    assert bool(torch.isfinite(out).all())
    return out


@cuda
@pytest.mark.parametrize("noise", ["generator", "sample_noise"])
@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("name", list(LOOPED))
def test_sampler_loops_never_sync_with_the_host(name, sde, noise):
    run_loop(sde, name, "cuda", noise, sync_mode="error")


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("name", list(LOOPED))
def test_the_sync_check_runs_on_the_cpu_too(name, sde):
    a = run_loop(sde, name, "cpu", "sample_noise")
    b = run_loop(sde, name, "cpu", "sample_noise")
    assert torch.equal(a, b)
