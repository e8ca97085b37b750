r"""One independent noise stream per sample, so that samples do not depend on batching.

A sampler draws its noise through a *generator*. With a ``torch.Generator`` the noise
of a batch is one stream, so sample ``i`` changes when the batch changes. A
:class:`SampleNoise` gives every sample its own stream instead: the ``k``-th draw of
sample ``i`` under seed ``s`` is a fixed function of ``(s, i, k)``, whatever batch,
process or device it is drawn in. Drawing 1,000 samples in one batch, in ten batches
of 100 or across ``torchrun`` ranks gives the same samples.

The streams are counter-based (no state but a draw counter): the Philox4x32-10 block
cipher of Salmon et al. (2011, "Parallel random numbers: as easy as 1, 2, 3") maps
the 64-bit key ``s`` and the 128-bit counter ``(j, k, i)`` (``j`` the position within
the draw, ``k`` the draw number, ``i`` the sample index) to four 32-bit words;
uniforms are ``(w + 1/2) / 2^32`` and normals come from the Box-Muller transform of
two uniforms (float64 maths, then cast). Everything runs as vectorised integer tensor
operations on the sample's device: no Python loop over samples, no host round trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)
_ROUNDS = 10
LIKELIHOOD_DRAWS = 2**31
"""First draw number of the likelihood's streams (dequantization, probes), so that scoring data point
``i`` never reuses the draws of sample ``i`` under the same seed (sampling stays below 2^31 draws)."""


def _mulhilo(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """High and low 32-bit words of the 64-bit products of 32-bit words ``a`` and ``b`` (int64 tensors).

    The product is formed in int64, where a value of 2^63 or more wraps to a negative
    number with the same 64 bits (two's complement, as on every torch backend; the
    known-answer tests of the cipher check it); the shift-and-mask recovers both words.
    """
    product = a * b
    return (product >> 32) & _MASK32, product & _MASK32


def philox4x32(counter: Sequence[Tensor], key: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox4x32-10 on int64 tensors holding 32-bit words: four counter words, two 32-bit key words.

    Constants enter as full tensors: torch's integer kernels are far slower with a Python scalar operand.
    """
    c0, c1, c2, c3 = counter
    m0, m1 = (torch.full_like(c0, m) for m in _MULTIPLIERS)
    k0, k1 = torch.empty_like(c0), torch.empty_like(c0)
    key0, key1 = key
    for r in range(_ROUNDS):
        if r:
            key0, key1 = (key0 + _WEYL[0]) & _MASK32, (key1 + _WEYL[1]) & _MASK32
        k0.fill_(key0)
        k1.fill_(key1)
        hi0, lo0 = _mulhilo(m0, c0)
        hi1, lo1 = _mulhilo(m1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


class SampleNoise:
    """Independent per-sample noise streams, usable wherever a sampler takes a ``generator``.

    Args:
        seed: the run's seed (any integer in ``[0, 2^64)``).
        indices: the global indices of the samples of this batch (``range(start, stop)``,
            a sequence or a ``[B]`` integer tensor); an int ``n`` means ``range(n)``.

    ``randn(shape)`` / ``rand(shape)`` need ``shape[0] == len(indices)``; each call is one
    draw of every stream. ``subset(lo, hi)`` gives the streams of rows ``lo:hi``, at the
    same draw position, for splitting a batch.
    """

    def __init__(self, seed: int, indices: int | range | Sequence[int] | Tensor, draws: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
        if isinstance(indices, int):
            indices = range(indices)
        idx = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.int64)
        if idx.ndim != 1 or (idx.numel() and int(idx.min()) < 0):
            raise ValueError("indices must be non-negative sample indices, one per row")
        self.seed = seed
        self.indices = idx
        self.draws = int(draws)
        self._on_device: dict[torch.device, Tensor] = {}  # indices copied once per device, not once per draw

    def __len__(self) -> int:
        return self.indices.numel()

    def __repr__(self) -> str:
        n = len(self)
        first = int(self.indices[0]) if n else 0
        return f"SampleNoise(seed={self.seed}, samples={n}, first={first}, draws={self.draws})"

    def subset(self, lo: int, hi: int) -> SampleNoise:
        """The streams of rows ``lo:hi`` (sharing nothing with ``self`` afterwards)."""
        return SampleNoise(self.seed, self.indices[lo:hi], self.draws)

    def _words(self, shape: Sequence[int], device: torch.device | str | None) -> Tensor:
        """``[B, 4 * ceil(D / 4)]`` uniform 32-bit words (int64) for one draw of every stream."""
        batch = int(shape[0])
        if batch != len(self):
            raise ValueError(f"a draw of shape {tuple(shape)} needs {batch} streams, this SampleNoise has {len(self)}")
        dims = math.prod(int(s) for s in shape[1:])
        blocks = (dims + 3) // 4
        device = torch.device(device) if device is not None else torch.device("cpu")
        j = torch.arange(blocks, dtype=torch.int64, device=device)[None, :].expand(batch, blocks)
        if device not in self._on_device:
            self._on_device[device] = self.indices.to(device)
        i = self._on_device[device][:, None].expand(batch, blocks)
        k = torch.full_like(j, self.draws & _MASK32)
        counter = ((j & _MASK32).contiguous(), k, (i & _MASK32).contiguous(), ((i >> 32) & _MASK32).contiguous())
        key = (self.seed & _MASK32, (self.seed >> 32) & _MASK32)
        self.draws += 1
        return torch.stack(philox4x32(counter, key), dim=-1).reshape(batch, 4 * blocks)

    def rand(
        self, shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Uniform ``(0, 1)`` values of ``shape``, row ``b`` from stream ``indices[b]``."""
        dims = math.prod(int(s) for s in shape[1:])
        u = (self._words(shape, device)[:, :dims].to(torch.float64) + 0.5) / 2.0**32
        return u.to(dtype or torch.get_default_dtype()).reshape(tuple(shape))

    def randn(
        self, shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Standard normal values of ``shape`` (Box-Muller on pairs of uniforms), row ``b`` from ``indices[b]``."""
        dims = math.prod(int(s) for s in shape[1:])
        u = (self._words(shape, device).to(torch.float64) + 0.5) / 2.0**32
        u1, u2 = u[:, 0::2], u[:, 1::2]
        radius = torch.sqrt(-2.0 * torch.log(u1))
        angle = 2.0 * math.pi * u2
        z = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1).reshape(u.shape[0], -1)
        return z[:, :dims].to(dtype or torch.get_default_dtype()).reshape(tuple(shape))

    def randint(self, high: int, device: torch.device | str | None = None) -> Tensor:
        """One integer in ``[0, high)`` per stream (``[B]``, int64), e.g. a random level per sample."""
        u = self.rand((len(self), 1), device, torch.float64)[:, 0]
        return torch.floor(u * high).clamp_max(high - 1).to(torch.int64)
