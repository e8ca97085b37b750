"""Networks: the paper's parameter counts exactly, forward/backward passes, options."""

import itertools
import time

import pytest
import torch

from scoresde.nets import NCSNpp, TimeMLP, count_parameters, ddpm_cifar10, ddpmpp_cifar10, ddpmpp_small, ncsnpp_cifar10
from scoresde.nets.fir import downsample_2d, make_kernel, upsample_2d

PRESETS = {
    "ncsnpp_continuous_ve": (lambda: ncsnpp_cifar10(), 62_758_915),
    "ncsnpp_continuous_deep_ve": (lambda: ncsnpp_cifar10(deep=True), 107_587_075),
    "ddpmpp_continuous_vp": (lambda: ddpmpp_cifar10(), 61_804_419),
    "ddpmpp_continuous_deep": (lambda: ddpmpp_cifar10(deep=True), 106_632_579),
    "ddpm": (ddpm_cifar10, 35_218_947),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_cifar10_presets_parameter_counts_and_passes(name):
    factory, want = PRESETS[name]
    torch.manual_seed(0)
    net = factory()
    assert count_parameters(net) == want
    x = torch.randn(2, 3, 32, 32)
    label = torch.tensor([0.5, 20.0]) if net.embedding_type == "fourier" else torch.tensor([10.0, 900.0])
    start = time.perf_counter()
    out = net(x, label)
    out.square().mean().backward()
    assert out.shape == x.shape and torch.isfinite(out).all()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert time.perf_counter() - start < 60


def test_zero_initialized_output():
    net = ddpmpp_small(8, 1)
    with torch.no_grad():
        out = net(torch.randn(4, 1, 8, 8), torch.tensor([1.0, 10.0, 100.0, 999.0]))
    assert float(out.abs().max()) < 1e-4


@pytest.mark.parametrize(
    ("progressive", "progressive_input", "combine", "resblock", "fir"),
    [
        ("output_skip", "input_skip", "sum", "biggan", True),
        ("residual", "residual", "sum", "biggan", True),
        ("none", "input_skip", "cat", "biggan", False),
        ("output_skip", "none", "sum", "ddpm", True),
        ("residual", "input_skip", "cat", "ddpm", False),
    ],
)
def test_architecture_options(progressive, progressive_input, combine, resblock, fir):
    torch.manual_seed(0)
    net = NCSNpp(image_size=16, channels=2, nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                 progressive=progressive, progressive_input=progressive_input, progressive_combine=combine,
                 resblock_type=resblock, fir=fir, init_scale=1.0)  # fmt: skip
    x = torch.randn(3, 2, 16, 16)
    out = net(x, torch.tensor([0.1, 1.0, 10.0]))
    assert out.shape == x.shape and float(out.detach().abs().max()) > 0
    out.sum().backward()


def test_scale_by_sigma_and_centering():
    torch.manual_seed(0)
    net = NCSNpp(image_size=8, channels=1, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                 init_scale=1.0, dropout=0.0)  # fmt: skip
    x = torch.randn(2, 1, 8, 8)
    sig = torch.tensor([2.0, 2.0])
    a = net(x, sig)
    net.scale_by_sigma = False
    torch.testing.assert_close(a * 2.0, net(x, sig))


def test_fir_resampling_is_inverse_on_smooth_signals():
    k = make_kernel([1, 3, 3, 1])
    x = torch.ones(1, 2, 8, 8) * torch.linspace(0, 1, 8)
    up = upsample_2d(x, k)
    assert up.shape == (1, 2, 16, 16)
    back = downsample_2d(up, k)
    torch.testing.assert_close(back[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2], atol=0.05, rtol=0)


def test_network_input_errors():
    net = ddpmpp_small(8, 1)
    with pytest.raises(ValueError, match="expected images"):
        net(torch.randn(2, 3, 8, 8), torch.ones(2))
    with pytest.raises(ValueError, match="label"):
        net(torch.randn(2, 1, 8, 8), torch.ones(3))
    with pytest.raises(ValueError, match="progressive"):
        NCSNpp(progressive="skip")
    with pytest.raises(ValueError, match="divisible"):
        NCSNpp(image_size=30)


@pytest.mark.parametrize(("embedding", "size"), list(itertools.product(["fourier", "sinusoidal"], [2, 5])))
def test_time_mlp(embedding, size):
    net = TimeMLP(size, hidden=32, depth=2, embedding=embedding)
    out = net(torch.randn(7, size), torch.rand(7))
    assert out.shape == (7, size)
    with pytest.raises(ValueError):
        net(torch.randn(7, size + 1), torch.rand(7))


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (28, 1), (32, 3)])
def test_small_presets(size, channels):
    net = ddpmpp_small(size, channels)
    x = torch.randn(2, channels, size, size)
    assert net(x, torch.tensor([5.0, 500.0])).shape == x.shape
    assert count_parameters(net) < 5_000_000
