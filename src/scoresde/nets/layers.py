"""Building blocks of the NCSN++ / DDPM++ / DDPM U-Nets.

Initialization follows DDPM: variance scaling with fan-average and a uniform
distribution, zero biases; ``init_scale=0`` zero-initializes a layer (1e-10 scale) so
that every residual branch and the output start at (almost) zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fir import conv_downsample_2d, downsample_2d, make_kernel, upsample_2d, upsample_conv_2d


def variance_scaling_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """DDPM's init: uniform with variance ``scale / fan_avg`` (``scale=0`` means 1e-10)."""
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, padding: int | None = None,
         init_scale: float = 1.0) -> nn.Conv2d:  # fmt: skip
    """A 2-D convolution with DDPM initialization (``padding`` defaults to 'same' for stride 1)."""
    layer = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2 if padding is None else padding)
    variance_scaling_(layer.weight, init_scale)
    nn.init.zeros_(layer.bias)
    return layer


def dense(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    variance_scaling_(layer.weight, init_scale)
    nn.init.zeros_(layer.bias)
    return layer


def group_norm(channels: int, groups: str = "ncsnpp") -> nn.GroupNorm:
    """GroupNorm with ``min(C/4, 32)`` groups (NCSN++) or 32 groups (DDPM), eps 1e-6."""
    num = max(min(channels // 4, 32) if groups == "ncsnpp" else 32, 1)
    while channels % num:  # the reference sizes are multiples; for others take the nearest divisor below
        num -= 1
    return nn.GroupNorm(num_groups=num, num_channels=channels, eps=1e-6)


def sinusoidal_embedding(t: Tensor, dim: int, max_positions: int = 10_000) -> Tensor:
    """DDPM's positional embedding of a (float) time index: ``[sin(t w_k), cos(t w_k)]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_positions) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]`` with a fixed ``W ~ N(0, scale^2)``."""

    def __init__(self, embedding_size: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        proj = x[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class NIN(nn.Module):
    """A 1x1 'network in network' layer acting on the channel axis."""

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.W = nn.Parameter(variance_scaling_(torch.empty(out_dim, in_dim), init_scale).t().contiguous())
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[None, :, None, None]


class AttnBlock(nn.Module):
    """Single-head self-attention over spatial positions, with a residual connection."""

    checkpoint_unit = True  # training.grad_checkpointing recomputes this block in the backward pass

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0,
                 norm_groups: str = "ncsnpp") -> None:  # fmt: skip
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, norm_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hn = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(hn), self.NIN_1(hn), self.NIN_2(hn)
        weights = torch.einsum("bchw,bcij->bhwij", q, k) * c**-0.5
        weights = torch.softmax(weights.reshape(b, h, w, h * w), dim=-1).reshape(b, h, w, h, w)
        out = self.NIN_3(torch.einsum("bhwij,bcij->bchw", weights, v))
        return (x + out) / math.sqrt(2.0) if self.skip_rescale else x + out


class Upsample(nn.Module):
    """2x upsampling: nearest or FIR, optionally with a 3x3 convolution."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.fir, self.with_conv = fir, with_conv
        self.register_buffer("kernel", make_kernel(fir_kernel), persistent=False)
        if with_conv:
            self.Conv_0 = conv(in_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        if not self.fir:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.Conv_0(x) if self.with_conv else x
        if not self.with_conv:
            return upsample_2d(x, self.kernel)
        return upsample_conv_2d(x, self.Conv_0.weight, self.kernel) + self.Conv_0.bias[None, :, None, None]


class Downsample(nn.Module):
    """2x downsampling: average pooling or FIR, optionally with a strided 3x3 convolution."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.fir, self.with_conv = fir, with_conv
        self.register_buffer("kernel", make_kernel(fir_kernel), persistent=False)
        if with_conv:
            self.Conv_0 = conv(in_ch, out_ch, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        if not self.fir:
            if self.with_conv:
                return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
            return F.avg_pool2d(x, 2, stride=2)
        if not self.with_conv:
            return downsample_2d(x, self.kernel)
        return conv_downsample_2d(x, self.Conv_0.weight, self.kernel) + self.Conv_0.bias[None, :, None, None]


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block: GN-act-conv, time projection, GN-act-dropout-conv, 1x1 shortcut."""

    checkpoint_unit = True  # training.grad_checkpointing recomputes this block in the backward pass

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None, dropout: float = 0.1,
                 skip_rescale: bool = False, init_scale: float = 0.0, norm_groups: str = "ncsnpp") -> None:  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, norm_groups)
        self.Conv_0 = conv(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, norm_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.Conv_0(F.silu(self.GroupNorm_0(x)))
        if temb is not None and hasattr(self, "Dense_0"):
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if hasattr(self, "NIN_0"):
            x = self.NIN_0(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block with up/down-sampling inside (NCSN++'s ``biggan`` block)."""

    checkpoint_unit = True  # training.grad_checkpointing recomputes this block in the backward pass

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None, up: bool = False,
                 down: bool = False, dropout: float = 0.1, fir: bool = False, fir_kernel: Sequence[int] = (1, 3, 3, 1),
                 skip_rescale: bool = True, init_scale: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        out_ch = out_ch or in_ch
        self.up, self.down, self.fir = up, down, fir
        self.register_buffer("kernel", make_kernel(fir_kernel), persistent=False)
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv(in_ch, out_ch, kernel=1)
        self.skip_rescale = skip_rescale

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return upsample_2d(x, self.kernel) if self.fir else F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return downsample_2d(x, self.kernel) if self.fir else F.avg_pool2d(x, 2, stride=2)
        return x

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = F.silu(self.GroupNorm_0(x))
        h, x = self._resample(h), self._resample(x)
        h = self.Conv_0(h)
        if temb is not None and hasattr(self, "Dense_0"):
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class Combine(nn.Module):
    """Merge an input-pyramid image into a feature map: 1x1 conv, then sum or concatenation."""

    def __init__(self, in_ch: int, out_ch: int, method: str = "cat") -> None:
        super().__init__()
        self.Conv_0 = conv(in_ch, out_ch, kernel=1)
        self.method = method

    def forward(self, pyramid: Tensor, h: Tensor) -> Tensor:
        p = self.Conv_0(pyramid)
        return torch.cat([p, h], dim=1) if self.method == "cat" else p + h


# -- class conditioning ---------------------------------------------------------------------------
def class_embedding(num_classes: int, dim: int) -> nn.Embedding:
    """A learned embedding of the labels ``0 .. num_classes - 1`` plus row ``num_classes``, the null label.

    The null label ("no class") is what a network sees for unconditional evaluations, which
    classifier-free guidance needs. The table starts at zero and draws no random numbers, so a
    conditional network built from a seed starts out as the unconditional one from that seed.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (the number of classes), got {num_classes!r}")
    return nn.Embedding.from_pretrained(torch.zeros(num_classes + 1, dim), freeze=False)


def class_labels(y: Tensor | None, x: Tensor, num_classes: int | None) -> Tensor | None:
    """Check a network's class labels ``y`` (shapes and dtypes only, no sync); ``None`` stays ``None`` for an
    unconditional network and becomes the null label ``num_classes`` for a conditional one."""
    if num_classes is None:
        if y is not None:
            raise ValueError("this network is not class-conditional (built without num_classes); call it without y")
        return None
    if y is None:
        return torch.full((x.shape[0],), num_classes, dtype=torch.int64, device=x.device)
    if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = y.dtype if isinstance(y, Tensor) else type(y).__name__
        raise TypeError(f"y must be an integer tensor of class labels, got {got}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape [B]=[{x.shape[0]}], got {tuple(y.shape)}")
    return y.to(device=x.device, dtype=torch.int64)
