"""FIR up/down-sampling (StyleGAN2's ``upfirdn2d``) in plain torch: nothing compiled, nothing JIT-built.

``upfirdn2d`` zero-stuffs by ``up``, pads, convolves every channel with a 2-D FIR
kernel and keeps every ``down``-th sample. The resamplers built on it keep the
signal's mean (the kernel is normalized) and, with a convolution, fuse resampling and
a 3x3 convolution as in NCSN++.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def make_kernel(taps: Sequence[float], device=None, dtype=None) -> Tensor:
    """Outer product of a 1-D kernel with itself, normalized to sum 1."""
    k = torch.as_tensor(taps, dtype=dtype or torch.float32, device=device)
    if k.ndim == 1:
        k = k[:, None] * k[None, :]
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero-stuffing, pad (negative crops), FIR-filter each channel, downsample."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(x)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample_2d(x: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    """FIR upsampling by ``factor`` (output ``[B, C, fH, fW]``)."""
    k = kernel * factor**2
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    """FIR downsampling by ``factor`` (output ``[B, C, H/f, W/f]``)."""
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: Tensor, weight: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    """Fused 2x upsampling and convolution: a strided transposed convolution, then the FIR filter."""
    kh = weight.shape[-1]
    k = kernel * factor**2
    p = (k.shape[0] - factor) - (kh - 1)
    w = torch.flip(weight, [2, 3]).transpose(0, 1)  # [in, out, kh, kw] for conv_transpose2d
    x = F.conv_transpose2d(x, w, stride=factor)
    return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: Tensor, weight: Tensor, kernel: Tensor, factor: int = 2) -> Tensor:
    """Fused FIR filtering and strided convolution (2x downsampling)."""
    kh = weight.shape[-1]
    p = (kernel.shape[0] - factor) + (kh - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)
