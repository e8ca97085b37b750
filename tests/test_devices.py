"""Device placement: everything follows x's device and dtype (runs only where CUDA is present)."""

import pytest
import torch

import scoresde as sd
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
