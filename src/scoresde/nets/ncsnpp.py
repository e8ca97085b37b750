"""NCSN++ / DDPM++ (Song et al. 2021, appendix H) and the DDPM U-Net, in plain PyTorch.

One class covers the paper's architecture family; the presets below reproduce the
CIFAR-10 models' parameter counts exactly. The network is called as ``net(x, label)``
with ``label`` of shape ``[B]``: the noise level sigma for Fourier embeddings (its log
is embedded) or a time index (e.g. ``999 t``) for positional embeddings. With
``num_classes`` it is class-conditional, ``net(x, label, y)``: a learned embedding of the
class ``y`` (``[B]`` integers; ``num_classes`` or ``y=None`` is the null label) is added to
the time embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..sde import VESDE
from .layers import (
    AttnBlock,
    Combine,
    Downsample,
    GaussianFourierProjection,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    Upsample,
    class_embedding,
    class_labels,
    conv,
    dense,
    group_norm,
    sinusoidal_embedding,
)

PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")


class NCSNpp(nn.Module):
    """The NCSN++ / DDPM++ U-Net.

    Args:
        image_size, channels: input resolution and channels.
        nf: base channel count; ``ch_mult``: channel multiplier per resolution.
        num_res_blocks: residual blocks per resolution; ``attn_resolutions``: resolutions with attention.
        dropout: dropout rate in residual blocks.
        resblock_type: ``"biggan"`` (resampling inside residual blocks) or ``"ddpm"``.
        fir, fir_kernel: FIR resampling (NCSN++) instead of nearest / average pooling.
        skip_rescale: divide residual sums by sqrt(2).
        progressive: output pyramid, ``"none"``, ``"output_skip"`` or ``"residual"``.
        progressive_input: input pyramid, ``"none"``, ``"input_skip"`` or ``"residual"``.
        progressive_combine: ``"sum"`` or ``"cat"`` for ``input_skip``.
        embedding_type: ``"fourier"`` (label = sigma, embeds log sigma) or ``"positional"`` (label = time index).
        fourier_scale: std of the fixed Fourier frequencies.
        scale_by_sigma: divide the output by the noise level sigma, as NCSN++ for VE does: by the
            label itself, or with ``index_sigmas`` by ``sigmas[label]``.
        index_sigmas: ``(sigma_min, sigma_max, N)`` for networks fed an integer noise-level index
            (the reference's discrete-time VE models): ``label`` indexes the descending sigmas
            ``sigma_i = sigma_max (sigma_min / sigma_max)^(i / (N - 1))``, ``i = 0 .. N - 1``.
        conditional: use the time embedding at all.
        resamp_with_conv: resampling layers of the ``ddpm`` block type carry a 3x3 convolution.
        init_scale: scale of the zero-initialized output layers (0 = zero init).
        norm_groups: ``"ncsnpp"`` (``min(C/4, 32)`` groups) or ``"ddpm"`` (32 groups).
        centered: the data are in [-1, 1]; if False the network maps [0, 1] data to [-1, 1] first.
        num_classes: make the network class-conditional on ``num_classes`` classes (embedding
            rows ``0 .. num_classes``, the last one the null label); ``None``: unconditional.
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resblock_type: str = "biggan",
        fir: bool = True,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        progressive: str = "none",
        progressive_input: str = "residual",
        progressive_combine: str = "sum",
        embedding_type: str = "fourier",
        fourier_scale: float = 16.0,
        scale_by_sigma: bool = True,
        conditional: bool = True,
        resamp_with_conv: bool = True,
        init_scale: float = 0.0,
        norm_groups: str = "ncsnpp",
        centered: bool = True,
        num_classes: int | None = None,
        index_sigmas: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        _check(resblock_type, ("biggan", "ddpm"), "resblock_type")
        _check(progressive, PROGRESSIVE, "progressive")
        _check(progressive_input, PROGRESSIVE_INPUT, "progressive_input")
        _check(progressive_combine, ("sum", "cat"), "progressive_combine")
        _check(embedding_type, ("fourier", "positional"), "embedding_type")
        if num_classes is not None and not conditional:
            raise ValueError("num_classes needs conditional=True (the class embedding is added to the time embedding)")
        if image_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"image_size {image_size} must be divisible by 2^(len(ch_mult)-1)")
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if index_sigmas is None:
            self.sigmas = None
        else:
            sigma_min, sigma_max, n = index_sigmas
            descending = VESDE(sigma_min, sigma_max, int(n)).discrete_sigmas().flip(0)
            self.register_buffer("sigmas", descending, persistent=False)
        self.nf, self.embedding_type, self.conditional = nf, embedding_type, conditional
        self.num_classes = num_classes
        self.num_res_blocks, self.attn_resolutions = num_res_blocks, tuple(attn_resolutions)
        self.num_resolutions = len(ch_mult)
        self.resblock_type, self.skip_rescale = resblock_type, skip_rescale
        self.progressive, self.progressive_input = progressive, progressive_input
        self.scale_by_sigma, self.centered, self.image_size, self.channels = (
            scale_by_sigma,
            centered,
            image_size,
            channels,
        )
        temb_dim = 4 * nf

        def attn(ch: int) -> AttnBlock:
            return AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale, norm_groups=norm_groups)

        def resblock(in_ch: int, out_ch: int | None = None, up: bool = False, down: bool = False) -> nn.Module:
            if resblock_type == "ddpm":
                return ResnetBlockDDPM(in_ch, out_ch, temb_dim, dropout, skip_rescale, init_scale, norm_groups)
            return ResnetBlockBigGAN(in_ch, out_ch, temb_dim, up, down, dropout, fir, fir_kernel, skip_rescale,
                                     init_scale)  # fmt: skip

        if embedding_type == "fourier":
            self.fourier = GaussianFourierProjection(nf, fourier_scale)
            embed_dim = 2 * nf
        else:
            embed_dim = nf
        if conditional:
            self.temb = nn.Sequential(dense(embed_dim, temb_dim), nn.SiLU(), dense(temb_dim, temb_dim))
        if num_classes is not None:
            self.class_embed = class_embedding(num_classes, temb_dim)

        resolutions = [image_size // 2**i for i in range(self.num_resolutions)]
        self.conv_in = conv(channels, nf)
        self.down = nn.ModuleList()
        skips, in_ch, pyramid_ch = [nf], nf, channels
        for level, mult in enumerate(ch_mult):
            blocks = nn.ModuleDict()
            blocks["res"] = nn.ModuleList()
            blocks["attn"] = nn.ModuleList()
            for _ in range(num_res_blocks):
                out_ch = nf * mult
                blocks["res"].append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if resolutions[level] in self.attn_resolutions:
                    blocks["attn"].append(attn(in_ch))
                skips.append(in_ch)
            if level != self.num_resolutions - 1:
                if resblock_type == "ddpm":
                    blocks["resample"] = Downsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel)
                else:
                    blocks["resample"] = resblock(in_ch, down=True)
                if progressive_input == "input_skip":
                    blocks["pyramid"] = Combine(pyramid_ch, in_ch, progressive_combine)
                    if progressive_combine == "cat":
                        in_ch *= 2
                elif progressive_input == "residual":
                    blocks["pyramid"] = Downsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel)
                    pyramid_ch = in_ch
                skips.append(in_ch)
            self.down.append(blocks)
        if progressive_input == "input_skip":
            self.pyramid_down = Downsample(channels, fir=fir, fir_kernel=fir_kernel)

        in_ch = skips[-1]
        self.mid = nn.ModuleList([resblock(in_ch), attn(in_ch), resblock(in_ch)])

        self.up = nn.ModuleList()
        pyramid_ch = 0
        for level in reversed(range(self.num_resolutions)):
            blocks = nn.ModuleDict()
            blocks["res"] = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                blocks["res"].append(resblock(in_ch + skips.pop(), out_ch))
                in_ch = out_ch
            if resolutions[level] in self.attn_resolutions:
                blocks["attn"] = attn(in_ch)
            if progressive == "output_skip":
                blocks["pyramid"] = nn.Sequential(
                    group_norm(in_ch), nn.SiLU(), conv(in_ch, channels, init_scale=init_scale)
                )
            elif progressive == "residual":
                if level == self.num_resolutions - 1:
                    blocks["pyramid"] = nn.Sequential(group_norm(in_ch), nn.SiLU(), conv(in_ch, in_ch))
                else:
                    blocks["pyramid"] = Upsample(pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel)
                pyramid_ch = in_ch
            if level != 0:
                if resblock_type == "ddpm":
                    blocks["resample"] = Upsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel)
                else:
                    blocks["resample"] = resblock(in_ch, up=True)
            self.up.append(blocks)
        assert not skips
        if progressive == "output_skip":
            self.pyramid_up = Upsample(channels, fir=fir, fir_kernel=fir_kernel)
        else:
            self.head = nn.Sequential(group_norm(in_ch, norm_groups), nn.SiLU(),
                                      conv(in_ch, channels, init_scale=init_scale))  # fmt: skip

    def forward(self, x: Tensor, label: Tensor, y: Tensor | None = None) -> Tensor:
        """Return a tensor shaped like ``x`` (the prediction) for noise labels ``label`` of shape ``[B]``
        and, for a class-conditional network, class labels ``y`` (``[B]``; ``None``: the null label)."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images [B, {self.channels}, H, W], got {tuple(x.shape)}")
        if label.shape != (x.shape[0],):
            raise ValueError(f"label must have shape [B]=[{x.shape[0]}], got {tuple(label.shape)}")
        y = class_labels(y, x, self.num_classes)
        if self.embedding_type == "fourier":
            emb = self.fourier(torch.log(label))
        else:
            emb = sinusoidal_embedding(label, self.nf)
        temb = self.temb(emb.to(x.dtype)) if self.conditional else None
        if y is not None:
            temb = temb + self.class_embed(y)
        if not self.centered:
            x = 2 * x - 1.0

        pyramid = x if self.progressive_input != "none" else None
        hs = [self.conv_in(x)]
        for level, blocks in enumerate(self.down):
            attn = iter(blocks["attn"])
            for res in blocks["res"]:
                h = res(hs[-1], temb)
                if h.shape[-1] in self.attn_resolutions:
                    h = next(attn)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                h = blocks["resample"](hs[-1]) if self.resblock_type == "ddpm" else blocks["resample"](hs[-1], temb)
                if self.progressive_input == "input_skip":
                    pyramid = self.pyramid_down(pyramid)
                    h = blocks["pyramid"](pyramid, h)
                elif self.progressive_input == "residual":
                    pyramid = self._sum(blocks["pyramid"](pyramid), h)
                    h = pyramid
                hs.append(h)

        h = self.mid[0](hs[-1], temb)
        h = self.mid[1](h)
        h = self.mid[2](h, temb)

        out_pyramid = None
        for i, blocks in enumerate(self.up):
            level = self.num_resolutions - 1 - i
            for res in blocks["res"]:
                h = res(torch.cat([h, hs.pop()], dim=1), temb)
            if "attn" in blocks:
                h = blocks["attn"](h)
            if self.progressive == "output_skip":
                branch = blocks["pyramid"](h)
                out_pyramid = branch if out_pyramid is None else self.pyramid_up(out_pyramid) + branch
            elif self.progressive == "residual":
                if level == self.num_resolutions - 1:
                    out_pyramid = blocks["pyramid"](h)
                else:
                    out_pyramid = self._sum(blocks["pyramid"](out_pyramid), h)
                    h = out_pyramid
            if level != 0:
                h = blocks["resample"](h) if self.resblock_type == "ddpm" else blocks["resample"](h, temb)
        assert not hs
        h = out_pyramid if self.progressive == "output_skip" else self.head(h)
        if self.scale_by_sigma:
            sigma = label if self.sigmas is None else self.sigmas[label.long()]
            h = h / sigma.reshape(-1, 1, 1, 1).to(h)
        return h

    def _sum(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b


def _check(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(allowed)}")


# -- presets ------------------------------------------------------------------------------
def ncsnpp_cifar10(deep: bool = False, **overrides) -> NCSNpp:
    """NCSN++ continuous (VE) of the paper: 62,758,915 parameters (107,587,075 deep)."""
    cfg = {"num_res_blocks": 8 if deep else 4, "embedding_type": "fourier", "fir": True,
           "progressive_input": "residual", "scale_by_sigma": True} | overrides  # fmt: skip
    return NCSNpp(**cfg)


def ddpmpp_cifar10(deep: bool = False, **overrides) -> NCSNpp:
    """DDPM++ continuous (VP and sub-VP): 61,804,419 parameters (106,632,579 deep)."""
    cfg = {"num_res_blocks": 8 if deep else 4, "embedding_type": "positional", "fir": False,
           "progressive_input": "none", "scale_by_sigma": False} | overrides  # fmt: skip
    return NCSNpp(**cfg)


def ddpm_cifar10(**overrides) -> NCSNpp:
    """The original DDPM U-Net (Ho et al. 2020) as configured in the paper: 35,218,947 parameters.

    Two DDPM residual blocks per resolution, GroupNorm(32), convolutional resampling,
    attention at 16x16, no skip rescaling, positional time embedding.
    """
    cfg = {"num_res_blocks": 2, "resblock_type": "ddpm", "fir": False, "skip_rescale": False,
           "progressive_input": "none", "embedding_type": "positional", "scale_by_sigma": False,
           "norm_groups": "ddpm"} | overrides  # fmt: skip
    return NCSNpp(**cfg)


def ddpmpp_small(image_size: int, channels: int, **overrides) -> NCSNpp:
    """A CPU-sized DDPM++ for small images (8x8 digits, 28x28 MNIST, 32x32 CIFAR-10)."""
    if image_size <= 8:
        cfg = {"nf": 64, "ch_mult": (1, 2), "num_res_blocks": 2, "attn_resolutions": (4,)}
    elif image_size <= 28:
        cfg = {"nf": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 2, "attn_resolutions": (7,)}
    else:
        cfg = {"nf": 32, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 2, "attn_resolutions": (8,)}
    cfg |= {"image_size": image_size, "channels": channels, "dropout": 0.0, "embedding_type": "positional",
            "fir": False, "progressive_input": "none", "scale_by_sigma": False}  # fmt: skip
    return NCSNpp(**(cfg | overrides))


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not (the reference counts include the fixed Fourier W)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["NCSNpp", "count_parameters", "ddpm_cifar10", "ddpmpp_cifar10", "ddpmpp_small", "ncsnpp_cifar10"]
